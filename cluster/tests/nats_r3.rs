//! A Surge node on three real `nats-server` processes in one JetStream cluster (R3 stream and
//! lease bucket): one NATS server is killed with SIGKILL under load, and the node keeps serving
//! (R3 tolerates one loss) with every acknowledged order (issue 16).

#[allow(dead_code)] // not every test uses every helper
#[path = "../../events/tests/outbox/nats.rs"]
mod nats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nats::NatsServer;
use surge_cluster::lease::LeaseConfig;
use surge_cluster::node::{serve, NodeConfig};
use surge_cluster::partition_log::PartitionLogConfig;
use surge_engine::{CreateOrder, Decimal, Engine, EngineError, OrderId, SaleRules, SkuSpec};

fn cfg(node: &str) -> NodeConfig {
    NodeConfig {
        lease: LeaseConfig { lease_ms: 15_000, safety_ms: 2_000, replicas: 3, ..LeaseConfig::new(node) },
        log: PartitionLogConfig { replicas: 3, ..PartitionLogConfig::default() },
        ..NodeConfig::new(node, 2)
    }
}

/// Orders of one unit, one after the other, until `stop`: the acknowledged ones, and how many
/// calls failed (a failure is allowed while the client reconnects: its outcome is unknown).
fn sell_until(e: &Engine, stop: &AtomicBool) -> (Vec<OrderId>, usize) {
    let (mut acked, mut failed) = (Vec::new(), 0);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        match e.create_order(CreateOrder::new(&format!("u{i}"), &[("phone", 1)], "k")).wait() {
            Ok(o) => acked.push(o.order_id),
            Err(EngineError::StorageUnavailable { .. }) => failed += 1,
            Err(other) => panic!("order {i}: {other}"),
        }
    }
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_keeps_serving_when_one_of_three_nats_servers_is_killed() {
    let mut servers = NatsServer::cluster(3);
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    let client = async_nats::connect(urls.clone()).await.expect("connect");
    let node = serve(client, cfg("node-a")).await.expect("the node serves on R3");
    let e = node.engine().clone();
    let spec = SkuSpec {
        sku_id: "phone".into(),
        name: "Phone".into(),
        price: Decimal::new(99_900, 2),
        initial_stock: 1_000_000,
        rules: SaleRules::default(),
    };
    tokio::task::spawn_blocking({
        let e = e.clone();
        move || e.create_sku(spec).wait().expect("sku")
    })
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::task::spawn_blocking({
        let (e, stop) = (e.clone(), stop.clone());
        move || sell_until(&e, &stop)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Kill the server the node's client is most likely on, and one that is surely in the
    // stream's Raft group: with three servers and R3, every server is.
    servers[0].stop();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = load.await.unwrap();
    assert!(!node.lost(), "one lost NATS server of three must not cost the node its leases");
    // It still serves after the loss, with every acknowledged order.
    let after = tokio::task::spawn_blocking({
        let (e, acked) = (e.clone(), acked.clone());
        move || {
            let fresh = e.create_order(CreateOrder::new("after", &[("phone", 1)], "k")).wait();
            let missing = acked.iter().filter(|id| e.get_order(**id).is_err()).count();
            (fresh, missing)
        }
    })
    .await
    .unwrap();
    eprintln!("{} orders acknowledged, {failed} failed while the client reconnected", acked.len());
    assert!(after.0.is_ok(), "the node serves after one NATS server died: {:?}", after.0);
    assert_eq!(after.1, 0, "every acknowledged order is there");
    assert!(acked.len() > 20, "the load ran: {} orders", acked.len());
    node.stop().await;
}
