//! Partition snapshots in a real JetStream object store, and the subject trimmed behind them
//! (a real `nats-server` on loopback; the tests fail, never skip, without one on PATH).

#[allow(dead_code)] // not every test uses every helper
#[path = "../../events/tests/outbox/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use nats::NatsServer;
use surge_cluster::journal::replay_partition;
use surge_cluster::lease::LeaseConfig;
use surge_cluster::node::{serve, NodeConfig};
use surge_cluster::partition_log::{PartitionLogConfig, PartitionLogs};
use surge_cluster::snapshot::{compact, Snapshots};
use surge_engine::{CreateOrder, Decimal, EngineConfig, OrderId, SaleRules, SkuSpec};

const PARTITIONS: u32 = 2;

fn cfg(node: &str, every: u64) -> NodeConfig {
    NodeConfig {
        lease: LeaseConfig { lease_ms: 800, safety_ms: 200, ..LeaseConfig::new(node) },
        engine: EngineConfig { saga_timeout_ms: 1_000, ..EngineConfig::default() },
        control_ms: 50,
        snapshot_every_messages: every,
        ..NodeConfig::new(node, PARTITIONS)
    }
}

async fn js(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"))
}

/// One order per user, one at a time (each its own group commit): the acknowledged ids.
async fn sell(e: &surge_engine::Engine, n: usize, tag: &str) -> Vec<OrderId> {
    let (e, tag) = (e.clone(), tag.to_owned());
    tokio::task::spawn_blocking(move || {
        (0..n)
            .filter_map(|i| e.create_order(CreateOrder::new(&format!("{tag}{i}"), &[("tee", 1)], "k")).wait().ok())
            .map(|o| o.order_id)
            .collect()
    })
    .await
    .expect("join")
}

async fn create_tee(e: &surge_engine::Engine) {
    let e = e.clone();
    let spec = SkuSpec {
        sku_id: "tee".into(),
        name: "Tee".into(),
        price: Decimal::new(1_500, 2),
        initial_stock: 10_000,
        rules: SaleRules::default(),
    };
    tokio::task::spawn_blocking(move || e.create_sku(spec).wait().expect("sku")).await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_plus_the_tail_replays_to_the_same_state_and_the_subject_is_trimmed() {
    let nats = NatsServer::start();
    let node = serve(async_nats::connect(nats.url()).await.unwrap(), cfg("node-a", u64::MAX)).await.unwrap();
    create_tee(node.engine()).await;
    sell(node.engine(), 60, "u").await;
    let js = js(&nats.url()).await;
    let logs = PartitionLogs::open(&js, PartitionLogConfig::default()).await.unwrap();
    let snaps = Snapshots::open(&js, 1).await.unwrap();
    let p = node.engine().sku_shard_of("tee") as u32;
    let (full, _, base) = replay_partition(&logs, &snaps, p, PARTITIONS as usize).await.unwrap();
    assert_eq!(base, 0, "no snapshot yet");
    let before = logs.read_after(p, 0).await.unwrap().len();
    // First compaction: a snapshot; nothing purged (two generations: there was none before).
    let first = compact(&logs, &snaps, p, 1, || true).await.unwrap().expect("a snapshot");
    assert_eq!(first.purged_below, 0);
    let (from_snapshot, _, base) = replay_partition(&logs, &snaps, p, PARTITIONS as usize).await.unwrap();
    assert_eq!(base, first.snapshot_seq);
    assert_eq!(from_snapshot.digest(), full.digest(), "snapshot + tail = the whole log");
    // More writes, a second compaction: the subject is trimmed behind the first snapshot.
    sell(node.engine(), 40, "v").await;
    let (full2, _, _) = replay_partition(&logs, &snaps, p, PARTITIONS as usize).await.unwrap();
    let second = compact(&logs, &snaps, p, 1, || true).await.unwrap().expect("a snapshot");
    assert_eq!(second.purged_below, first.snapshot_seq);
    let left = logs.read_after(p, 0).await.unwrap();
    assert!(left.len() < before, "trimmed: {} messages left of {before}+", left.len());
    assert!(left.iter().all(|(seq, _)| *seq >= first.snapshot_seq), "nothing below the older snapshot stays");
    assert_eq!(snaps.sequences(p).await.unwrap(), vec![first.snapshot_seq, second.snapshot_seq], "two generations");
    let (after, _, _) = replay_partition(&logs, &snaps, p, PARTITIONS as usize).await.unwrap();
    assert_eq!(after.digest(), full2.digest(), "the trimmed log still replays to the same state");
    // A lease no longer valid: the snapshot is written, nothing purged.
    sell(node.engine(), 10, "w").await;
    let third = compact(&logs, &snaps, p, 1, || false).await.unwrap().expect("a snapshot");
    assert_eq!(third.purged_below, 0, "no purge without a valid lease");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_snapshots_as_it_goes_and_a_successor_takes_over_from_the_snapshot() {
    let nats = NatsServer::start();
    let a = serve(async_nats::connect(nats.url()).await.unwrap(), cfg("node-a", 20)).await.unwrap();
    create_tee(a.engine()).await;
    let acked = sell(a.engine(), 120, "u").await;
    assert_eq!(acked.len(), 120);
    let js = js(&nats.url()).await;
    let snaps = Snapshots::open(&js, 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut snapshotted = 0;
    while snapshotted < PARTITIONS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        snapshotted = 0;
        for p in 0..PARTITIONS {
            snapshotted += u32::from(!snaps.sequences(p).await.unwrap().is_empty());
        }
    }
    assert_eq!(snapshotted, PARTITIONS, "every partition snapshotted after 20 appends");
    a.crash().await;
    let b = serve(async_nats::connect(nats.url()).await.unwrap(), cfg("node-b", 20)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.hosted().await.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "b takes every partition over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = b.engine().clone();
    let missing = tokio::task::spawn_blocking(move || acked.iter().filter(|id| e.get_order(**id).is_err()).count())
        .await
        .unwrap();
    assert_eq!(missing, 0, "every acknowledged order, from snapshot and tail");
    let e = b.engine().clone();
    let tee = tokio::task::spawn_blocking(move || e.get_sku("tee").expect("tee")).await.unwrap();
    assert_eq!((tee.reserved, tee.available), (120, 9_880));
    b.stop().await;
}
