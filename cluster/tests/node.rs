//! Cluster nodes on a real `nats-server` (started on a loopback port in a temp dir; the tests
//! fail, never skip, without one on PATH): partitions spread over the live nodes, sagas across
//! nodes, failover of a crashed node's partitions, and a clean hand-over.

#[allow(dead_code)] // not every test uses every helper
#[path = "../../events/tests/outbox/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use nats::NatsServer;
use surge_cluster::lease::LeaseConfig;
use surge_cluster::node::{serve, NodeConfig, Serving};
use surge_engine::{
    CreateOrder, Decimal, Engine, EngineConfig, OrderId, OrderStatus, SaleRules, SkuSpec, TransitionOptions,
};

const PARTITIONS: u32 = 4;
const LEASE_MS: u64 = 800;

fn cfg(node: &str) -> NodeConfig {
    NodeConfig {
        lease: LeaseConfig { lease_ms: LEASE_MS, safety_ms: 200, ..LeaseConfig::new(node) },
        engine: EngineConfig { saga_timeout_ms: 1_000, ..EngineConfig::default() },
        control_ms: 50,
        ..NodeConfig::new(node, PARTITIONS)
    }
}

async fn start(url: &str, node: &str) -> Serving {
    serve(async_nats::connect(url).await.expect("connect"), cfg(node)).await.expect("the node serves")
}

/// Wait until `pred` holds (polling), or fail with `what`.
async fn eventually(what: &str, limit: Duration, mut pred: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The engine of whichever node hosts `shard`.
async fn host<'a>(nodes: &[&'a Serving], shard: usize) -> &'a Engine {
    for n in nodes {
        if n.hosted().await.contains(&(shard as u32)) {
            return n.engine();
        }
    }
    panic!("no node hosts partition {shard}");
}

/// Node a alone (it hosts every partition), then b: each ends with half the partitions.
async fn two_nodes(url: &str) -> (Serving, Serving) {
    let a = start(url, "node-a").await;
    assert_eq!(a.hosted().await, vec![0, 1, 2, 3], "a node alone hosts every partition");
    let b = start(url, "node-b").await;
    eventually("a gives half of the partitions to b", Duration::from_secs(10), async || {
        a.hosted().await.len() == 2 && b.hosted().await.len() == 2
    })
    .await;
    (a, b)
}

/// The phone SKU, created on the node hosting its partition.
async fn create_phone(nodes: &[&Serving]) {
    let e = host(nodes, nodes[0].engine().sku_shard_of("phone")).await.clone();
    tokio::task::spawn_blocking(move || e.create_sku(phone()).wait().expect("sku")).await.unwrap();
}

fn phone() -> SkuSpec {
    SkuSpec {
        sku_id: "phone".into(),
        name: "Phone".into(),
        price: Decimal::new(99_900, 2),
        initial_stock: 100,
        rules: SaleRules::default(),
    }
}

/// Sell one unit to each of `users` through the node hosting each user's partition; pay every
/// other: the acknowledged (order, paid).
async fn sell(nodes: &[&Serving], users: std::ops::Range<usize>, tag: &str) -> Vec<(OrderId, bool)> {
    let mut acked = Vec::new();
    for i in users {
        let user = format!("{tag}-{i}");
        let e = host(nodes, nodes[0].engine().user_shard(&user)).await.clone();
        let got = tokio::task::spawn_blocking(move || {
            let o = e.create_order(CreateOrder::new(&user, &[("phone", 1)], "k")).wait().ok()?;
            let paid = i % 2 == 0
                && e.pay(o.order_id, &format!("p-{user}"), o.total, TransitionOptions::default()).wait().is_ok();
            Some((o.order_id, paid))
        })
        .await
        .expect("join");
        acked.extend(got);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_over_the_nodes_and_sagas_cross_them() {
    let nats = NatsServer::start();
    let (a, b) = two_nodes(&nats.url()).await;
    let nodes = [&a, &b];
    create_phone(&nodes).await;
    let acked = sell(&nodes, 0..40, "u").await;
    assert_eq!(acked.len(), 40, "every order is acknowledged, whichever node hosts its user");
    let remote = acked.iter().filter(|(id, _)| !b.engine().hosts(b.engine().order_shard(*id))).count();
    assert!(remote > 0 && remote < 40, "users on both nodes: {remote} of 40 on a");
    let e = host(&nodes, a.engine().sku_shard_of("phone")).await.clone();
    let phone = tokio::task::spawn_blocking(move || e.get_sku("phone").expect("phone")).await.unwrap();
    assert_eq!((phone.reserved, phone.sold, phone.available), (20, 20, 60), "{phone:?}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_partitions_are_taken_over_with_every_acknowledged_order() {
    let nats = NatsServer::start();
    let (a, b) = two_nodes(&nats.url()).await;
    let nodes = [&a, &b];
    create_phone(&nodes).await;
    let acked = sell(&nodes, 0..30, "u").await;
    assert_eq!(acked.len(), 30);
    // a crashes (no release): b takes its partitions once their leases expire.
    let crashed_at = Instant::now();
    a.crash().await;
    eventually("b hosts every partition", Duration::from_secs(10), async || b.hosted().await.len() == 4).await;
    let failover = crashed_at.elapsed();
    // Within lease_ms plus replay: the expiry clock started at a's last renewal.
    assert!(failover < Duration::from_millis(LEASE_MS * 2), "took {failover:?}");
    let e = b.engine().clone();
    let (phone, missing) = tokio::task::spawn_blocking(move || {
        let missing: Vec<_> = acked
            .iter()
            .filter(|(id, paid)| e.get_order(*id).map_or(true, |o| *paid && o.status != OrderStatus::Paid))
            .collect();
        (e.get_sku("phone").expect("phone"), missing.len())
    })
    .await
    .unwrap();
    assert_eq!(missing, 0, "every acknowledged order (and payment) survives the failover");
    assert_eq!(phone.available + phone.reserved + phone.sold, 100, "exactly the stock, never more");
    assert_eq!((phone.reserved, phone.sold), (15, 15), "the acknowledged orders hold their units: {phone:?}");
    // b sells the rest, and not one unit more.
    let more = sell(&[&b], 100..200, "v").await;
    assert_eq!(more.len(), 70, "only the 70 units left are sold");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_hands_its_partitions_over_at_once() {
    let nats = NatsServer::start();
    let (a, b) = two_nodes(&nats.url()).await;
    let t = Instant::now();
    a.stop().await;
    eventually("b hosts every partition", Duration::from_secs(10), async || b.hosted().await.len() == 4).await;
    assert!(t.elapsed() < Duration::from_millis(LEASE_MS), "released leases are free at once: {:?}", t.elapsed());
    assert!(!b.lost());
    b.stop().await;
}
