//! Failover between two nodes on a real `nats-server` (started on a free loopback port in a temp
//! dir; the tests fail, never skip, without one on PATH).

#[allow(dead_code)] // not every test uses every helper
#[path = "../../events/tests/outbox/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use nats::NatsServer;
use surge_cluster::lease::LeaseConfig;
use surge_cluster::node::{serve, NodeConfig};
use surge_engine::{CreateOrder, Decimal, Engine, OrderId, OrderStatus, SaleRules, SkuSpec, TransitionOptions};

const PARTITIONS: u32 = 3;

fn cfg(node: &str) -> NodeConfig {
    NodeConfig {
        lease: LeaseConfig { lease_ms: 600, safety_ms: 200, ..LeaseConfig::new(node) },
        ..NodeConfig::new(node, PARTITIONS)
    }
}

async fn js(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"))
}

/// Sell `n` orders of one unit on `e` (blocking calls off the runtime): the acknowledged ones,
/// paid every other.
async fn sell(e: &Engine, tag: &str, n: usize) -> Vec<(OrderId, bool)> {
    let e = e.clone();
    let tag = tag.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        for i in 0..n {
            let Ok(o) = e.create_order(CreateOrder::new(&format!("{tag}-{i}"), &[("phone", 1)], "k")).wait() else {
                break;
            };
            let paid = i % 2 == 0
                && e.pay(o.order_id, &format!("p-{tag}-{i}"), o.total, TransitionOptions::default()).wait().is_ok();
            acked.push((o.order_id, paid));
        }
        acked
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_a_crashed_node_with_every_acknowledged_order_and_exact_stock() {
    let nats = NatsServer::start();
    let a = serve(&js(&nats.url()).await, cfg("node-a")).await.expect("node a serves");
    let e = a.engine().clone();
    tokio::task::spawn_blocking(move || {
        let spec = SkuSpec {
            sku_id: "phone".into(),
            name: "Phone".into(),
            price: Decimal::new(99_900, 2),
            initial_stock: 100,
            rules: SaleRules::default(),
        };
        e.create_sku(spec).wait().expect("sku");
    })
    .await
    .unwrap();
    // b stands by: it cannot serve while a renews.
    let url = nats.url();
    let standby = tokio::spawn(async move { serve(&js(&url).await, cfg("node-b")).await });
    let acked = sell(a.engine(), "a", 60).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!standby.is_finished(), "b must not serve while a holds the leases");
    // a crashes mid-sale (no release): b takes over once the leases expire.
    let crashed_at = Instant::now();
    a.crash().await;
    let b = tokio::time::timeout(Duration::from_secs(10), standby)
        .await
        .expect("failover in time")
        .unwrap()
        .expect("b serves");
    let failover = crashed_at.elapsed();
    assert!(failover < Duration::from_millis(600 * 3), "took {failover:?}");
    let e = b.engine().clone();
    let (phone, missing) = tokio::task::spawn_blocking(move || {
        e.settle();
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
    assert_eq!(phone.reserved + phone.sold, 60, "the 60 acknowledged orders hold their units");
    // b sells the rest, and not one unit more.
    let more = sell(b.engine(), "b", 60).await;
    assert_eq!(more.len(), 40, "only the 40 units left are sold");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_hands_over_at_once() {
    let nats = NatsServer::start();
    let a = serve(&js(&nats.url()).await, cfg("node-a")).await.expect("a");
    a.stop().await;
    let t = Instant::now();
    let b = serve(&js(&nats.url()).await, cfg("node-b")).await.expect("b");
    assert!(t.elapsed() < Duration::from_millis(500), "released leases are free at once: {:?}", t.elapsed());
    assert!(!b.lost());
    b.stop().await;
}
