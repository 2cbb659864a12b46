//! The engine journaling to partition logs on a real `nats-server` (started on a free loopback
//! port in a temp dir; the tests fail, never skip, without one on PATH).

#[allow(dead_code)] // not every test uses every helper
#[path = "../../events/tests/outbox/nats.rs"]
mod nats;

use std::sync::Arc;
use std::time::Duration;

use nats::NatsServer;
use surge_cluster::journal::{self, Journals};
use surge_cluster::partition_log::{PartitionLogConfig, PartitionLogs};
use surge_engine::cluster::{ClusterHooks, PeerLink, PeerMsg, Placement};
use surge_engine::{
    CreateOrder, Decimal, Engine, EngineConfig, EngineState, Initiator, SaleRules, SkuSpec, TransitionOptions,
};

const SHARDS: usize = 3;

async fn logs(url: &str) -> PartitionLogs {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    PartitionLogs::open(&js, PartitionLogConfig::default()).await.expect("open the stream")
}

/// Every shard is local here: a message to another node would be a bug.
struct NoPeers;

impl PeerLink for NoPeers {
    fn send(&self, shard: usize, _msg: PeerMsg) {
        panic!("shard {shard} is local: nothing goes over the link");
    }
}

/// A clustered engine hosting every partition, its journals open (each fenced).
async fn engine(logs: &PartitionLogs, state: EngineState) -> Engine {
    let journals = Journals::new(logs.clone());
    for p in 0..SHARDS as u32 {
        journals.open(p).await.expect("open the partition's journal");
    }
    let hooks = ClusterHooks { placement: Arc::new(Placement::new(SHARDS, true)), link: Arc::new(NoPeers) };
    // A saga step waiting on a fenced partition gives up after 1 s (10 s by default).
    let cfg = EngineConfig { shard_count: SHARDS, saga_timeout_ms: 1_000, ..EngineConfig::default() };
    Engine::builder(cfg).state(state).journal(journals.factory()).cluster(hooks).start().expect("engine")
}

/// Blocking engine calls off the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

fn sale(e: &Engine, tag: &str) {
    for i in 0..30 {
        let req = CreateOrder::new(&format!("{tag}-u{i}"), &[("tee", 1), ("cap", 1)], &format!("{tag}-{i}"));
        let o = e.create_order(req).wait().expect("order");
        match i % 3 {
            0 => drop(
                e.pay(o.order_id, &format!("psp-{tag}-{i}"), o.total, TransitionOptions::default())
                    .wait()
                    .expect("pay"),
            ),
            1 => {
                drop(e.cancel_order(o.order_id, Initiator::User, TransitionOptions::default()).wait().expect("cancel"))
            }
            _ => {}
        }
    }
}

/// A deposed owner acknowledges nothing: its own append is refused (`storage_unavailable`), or
/// the step waiting on another partition's refused append gives up (`unavailable`).
fn assert_refused<T: std::fmt::Debug>(r: Result<T, surge_engine::EngineError>) {
    let code = r.map_err(|e| e.code()).err();
    assert!(matches!(code, Some("storage_unavailable" | "unavailable")), "a deposed owner acknowledged: {code:?}");
}

fn spec(id: &str) -> SkuSpec {
    SkuSpec {
        sku_id: id.into(),
        name: id.into(),
        price: Decimal::new(990, 2),
        initial_stock: 1_000,
        rules: SaleRules::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replays_exactly_what_was_acknowledged_and_goes_on() {
    let nats = NatsServer::start();
    let l = logs(&nats.url()).await;
    let e = engine(&l, EngineState::default()).await;
    let before = blocking(move || {
        e.create_sku(spec("tee")).wait().expect("sku");
        e.create_sku(spec("cap")).wait().expect("sku");
        sale(&e, "a");
        e.settle();
        let state = e.snapshot().expect("snapshot").0;
        assert!(e.shutdown(Duration::from_secs(5)));
        state
    })
    .await;
    let (state, fixes) = journal::replay(&l, SHARDS).await.expect("replay");
    assert!(fixes.is_empty(), "a clean log needs no repair: {fixes:?}");
    assert_eq!(state.digest(), before.digest(), "the replayed state is the acknowledged state");
    // Each partition on its own replays to its part of that state, with nothing to repair.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let snaps = surge_cluster::snapshot::Snapshots::open(&js, 1).await.expect("snapshots");
    for p in 0..SHARDS as u32 {
        let (part, fixes, _) = journal::replay_partition(&l, &snaps, p, SHARDS).await.expect("replay a partition");
        assert!(fixes.is_empty(), "partition {p}: {fixes:?}");
        assert!(part.orders.keys().all(|id| state.orders.contains_key(id)));
    }
    // A new owner (the same node restarted, or another) goes on from there.
    let e = engine(&l, state).await;
    blocking(move || {
        sale(&e, "b");
        e.settle();
        assert!(e.audit().is_healthy(), "{:?}", e.audit().violations);
        let tee = e.get_sku("tee").expect("tee");
        assert_eq!((tee.available + tee.reserved + tee.sold, tee.sold), (1_000, 20));
        assert!(e.shutdown(Duration::from_secs(5)));
    })
    .await;
    let (state, _) = journal::replay(&l, SHARDS).await.expect("replay");
    assert_eq!(state.orders.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_node_acknowledges_nothing_more() {
    let nats = NatsServer::start();
    let l = logs(&nats.url()).await;
    let old = engine(&l, EngineState::default()).await;
    let old2 = old.clone();
    blocking(move || {
        old2.create_sku(spec("tee")).wait().expect("sku");
        old2.create_sku(spec("cap")).wait().expect("sku");
    })
    .await;
    // A new owner takes the partitions over (its lease won) and writes.
    let new = engine(&l, EngineState::default()).await;
    let (state, _) = journal::replay(&l, SHARDS).await.expect("replay");
    drop(new);
    let new = engine(&l, state).await;
    blocking(move || sale(&new, "new")).await;
    // The old owner, paused until now, tries to sell: fenced, so nothing is acknowledged.
    let state = late_sale_is_refused(&l, old).await;
    assert!(state.orders.values().all(|o| *o.user_id != *"late"), "its write left no trace");
}

/// The deposed `old` sells once: refused; the log's state after it.
async fn late_sale_is_refused(l: &PartitionLogs, old: Engine) -> EngineState {
    let refused = blocking(move || {
        let req = CreateOrder::new("late", &[("tee", 1)], "late-1");
        old.create_order(req).wait()
    })
    .await;
    assert_refused(refused);
    journal::replay(l, SHARDS).await.expect("replay").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_fences_every_partition_before_it_writes_anything() {
    let nats = NatsServer::start();
    let l = logs(&nats.url()).await;
    let old = engine(&l, EngineState::default()).await;
    let old2 = old.clone();
    blocking(move || old2.create_sku(spec("tee")).wait().map(drop).expect("sku")).await;
    // A new owner takes over and has written nothing of its own yet.
    let new = engine(&l, EngineState::default()).await;
    // The old owner, paused until now: refused on every partition, written to or not.
    let state = late_sale_is_refused(&l, old).await;
    assert!(state.orders.is_empty(), "its write left no trace");
    drop(new);
}
