//! The outbox's reading side (issue 15) over a real sled directory and over the simulated
//! storage with crashes: what is journaled for it, stable ids, the cursor, and trims that keep
//! what is unpublished.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{open_db, spec, Rng};
use surge_engine::{CreateOrder, Engine, EngineConfig, Initiator, ManualClock, OrderStatus, TransitionOptions};
use surge_persistence::outbox::{OutboxEntry, OutboxItem, OutboxLog, OutboxRetention};
use surge_persistence::sim::{SimConfig, SimStore};
use surge_persistence::{DurableEngine, PersistenceConfig};

fn cfg(dir: &std::path::Path, outbox: Option<OutboxRetention>) -> PersistenceConfig {
    PersistenceConfig { outbox, snapshot_every_secs: 3_600, ..PersistenceConfig::new(dir) }
}

fn engine_cfg() -> EngineConfig {
    EngineConfig { shard_count: 2, ..EngineConfig::default() }
}

fn create(engine: &Engine, user: &str, key: &str) -> Arc<surge_engine::Order> {
    let req = CreateOrder { user_id: user.into(), items: vec![("tee".into(), 1)], idempotency_key: key.into() };
    engine.create_order(req).wait().expect("create order")
}

/// One order paid, one canceled, on a fresh SKU.
fn story(engine: &Engine) -> (surge_engine::OrderId, surge_engine::OrderId) {
    engine.create_sku(spec("tee", 1_990, 10, None)).wait().expect("create sku");
    let (a, b) = (create(engine, "alice", "k1"), create(engine, "bob", "k1"));
    engine.pay(a.order_id, "psp-1", a.total, TransitionOptions::default()).wait().expect("pay");
    engine.cancel_order(b.order_id, Initiator::User, TransitionOptions::default()).wait().expect("cancel");
    (a.order_id, b.order_id)
}

fn all_after(log: &OutboxLog, after: u64) -> Vec<OutboxEntry> {
    let page = log.read_after(after, usize::MAX).expect("read the outbox");
    assert_eq!(page.through_lsn, log.durable_lsn().max(after), "a full read passes every durable record");
    page.entries
}

/// (subject kind, order or SKU id, status) of an entry: what a publisher derives a subject from.
fn shape(e: &OutboxEntry) -> (String, String) {
    match &e.item {
        OutboxItem::OrderCreated(o) => ("order.created".into(), o.order_id.0.to_string()),
        OutboxItem::OrderChanged(o) => (format!("order.{}", o.status.as_str()), o.order_id.0.to_string()),
        OutboxItem::Stock(sku, _) => ("stock".into(), format!("{}:{}", sku.sku_id, sku.available)),
        OutboxItem::Wallet { user_id, account, .. } => {
            (format!("wallet.{}", account.asset.as_str()), user_id.to_string())
        }
    }
}

#[test]
fn every_change_is_read_once_in_log_order_with_stable_ids_and_nothing_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&cfg(dir.path(), Some(OutboxRetention::default())), &engine_cfg(), None).unwrap();
    let log = db.outbox().expect("outbox on");
    let start = log.cursor();
    let (a, b) = story(db.engine());
    db.engine().wait_durable().unwrap();
    let entries = all_after(&log, start);
    let shapes: Vec<(String, String)> = entries.iter().map(shape).collect();
    let order = |id: surge_engine::OrderId| -> Vec<&str> {
        shapes.iter().filter(|(_, s)| *s == id.0.to_string()).map(|(k, _)| k.as_str()).collect()
    };
    assert_eq!(order(a), ["order.created", "order.paid"], "{shapes:?}");
    assert_eq!(order(b), ["order.created", "order.canceled"], "{shapes:?}");
    // Stock: the SKU's creation (10) and the release of the canceled order's unit (9 after two
    // reservations and one release); reservations and confirms are not published.
    let stock: Vec<&str> = shapes.iter().filter(|(k, _)| k == "stock").map(|(_, s)| s.as_str()).collect();
    assert_eq!(stock, ["tee:10", "tee:9"], "{shapes:?}");
    let ids: Vec<(u64, u32)> = entries.iter().map(|e| (e.lsn, e.index)).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids unique and in log order");
    assert_eq!(all_after(&log, start), entries, "a second read gives the same entries and ids");
    let lsn_of_paid = entries.iter().find(|e| shape(e).0 == "order.paid").map(|e| e.lsn).unwrap();
    assert!(all_after(&log, lsn_of_paid).iter().all(|e| e.lsn > lsn_of_paid), "read after a cursor");
    db.close().unwrap();

    // The same story with the outbox off journals nothing for it.
    let off = tempfile::tempdir().unwrap();
    let db = open_db(&cfg(off.path(), None), &engine_cfg(), None).unwrap();
    assert!(db.outbox().is_none());
    story(db.engine());
    db.close().unwrap();
    let on = open_db(&cfg(off.path(), Some(OutboxRetention::default())), &engine_cfg(), None).unwrap();
    let log = on.outbox().unwrap();
    assert_eq!(log.cursor(), log.durable_lsn(), "first time on: the cursor starts at the end of the log");
    assert!(all_after(&log, 0).iter().all(|e| matches!(e.item, OutboxItem::OrderCreated(_))), "no outbox copies");
    on.close().unwrap();
}

#[test]
fn the_cursor_and_the_log_id_survive_a_restart_and_the_cursor_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), Some(OutboxRetention::default()));
    let db = open_db(&c, &engine_cfg(), None).unwrap();
    story(db.engine());
    db.engine().wait_durable().unwrap();
    let log = db.outbox().unwrap();
    let entries = all_after(&log, log.cursor());
    let mid = entries[entries.len() / 2].lsn;
    log.save_cursor(mid).unwrap();
    log.save_cursor(mid - 1).unwrap();
    assert_eq!(log.cursor(), mid, "never back");
    let rest: Vec<OutboxEntry> = entries.iter().filter(|e| e.lsn > mid).cloned().collect();
    let log_id = log.log_id();
    assert_ne!(log_id, 0, "a log id is drawn at the first open");
    drop(log);
    db.close().unwrap();
    let db = open_db(&c, &engine_cfg(), None).unwrap();
    let log = db.outbox().unwrap();
    assert_eq!(log.cursor(), mid);
    assert_eq!(log.log_id(), log_id, "the log id is the directory's, across restarts");
    let other = tempfile::tempdir().unwrap();
    let db2 = open_db(&cfg(other.path(), Some(OutboxRetention::default())), &engine_cfg(), None).unwrap();
    assert_ne!(db2.outbox().unwrap().log_id(), log_id, "another directory, another log id");
    db2.close().unwrap();
    assert_eq!(all_after(&log, log.cursor()), rest, "after a restart: exactly what was not published");
    db.close().unwrap();
}

#[test]
fn snapshots_keep_unpublished_records_until_max_lag_bytes() {
    for (max_lag_bytes, kept) in [(1 << 30, true), (0, false)] {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&cfg(dir.path(), Some(OutboxRetention { max_lag_bytes })), &engine_cfg(), None).unwrap();
        let log = db.outbox().unwrap();
        let start = log.cursor();
        story(db.engine());
        db.engine().wait_durable().unwrap();
        let before = all_after(&log, start);
        // Two snapshots: the second trims what the first covers (two generations).
        db.snapshot_now().unwrap();
        create(db.engine(), "carol", "k1");
        db.snapshot_now().unwrap();
        let after = all_after(&log, start);
        if kept {
            assert_eq!(&after[..before.len()], &before[..], "unpublished records kept");
            assert_eq!(log.records_dropped(), 0);
        } else {
            assert!(after.len() < before.len(), "past max_lag_bytes the trim goes on");
            assert!(log.records_dropped() > 0, "and counts what it dropped");
        }
        // Once published, the next snapshots trim them.
        log.save_cursor(log.durable_lsn()).unwrap();
        db.snapshot_now().unwrap();
        db.snapshot_now().unwrap();
        assert!(all_after(&log, start).len() < before.len(), "published records are trimmed");
        db.close().unwrap();
    }
}

/// A model run over the simulated storage: random orders, payments, cancels, snapshots, cursor
/// saves and crashes (unsynced writes lost). After every crash, every entry that was durable and
/// after the cursor is still read, with the same id and the same content; ids never repeat.
#[test]
fn cursor_trim_and_crashes_never_lose_or_change_an_unpublished_entry() {
    for seed in 1..=6u64 {
        if let Err(e) = std::panic::catch_unwind(|| model_run(seed)) {
            eprintln!("outbox model failed with seed {seed}");
            std::panic::resume_unwind(e);
        }
    }
}

fn open_sim(sim: &SimStore, clock: &Arc<ManualClock>) -> DurableEngine {
    let c = PersistenceConfig { outbox: Some(OutboxRetention::default()), ..PersistenceConfig::new("unused") };
    DurableEngine::open_on(Arc::new(sim.clone()), Box::new(sim.clone()), c, engine_cfg(), clock.clone())
        .expect("open over the simulated storage")
}

fn model_run(seed: u64) {
    let mut rng = Rng::new(seed);
    let sim = SimStore::new(SimConfig::new(seed));
    let clock = Arc::new(ManualClock::new(1_000));
    let mut db = open_sim(&sim, &clock);
    db.engine().create_sku(spec("tee", 1_990, 1_000_000, None)).wait().unwrap();
    // Every entry ever read, by id: an id names one entry forever.
    let mut seen: BTreeMap<(u64, u32), OutboxEntry> = BTreeMap::new();
    let mut open: Vec<surge_engine::OrderId> = Vec::new();
    for step in 0..300u64 {
        let engine = db.engine().clone();
        match rng.below(10) {
            0..=3 => open.push(create(&engine, &format!("u{}", rng.below(50)), &format!("k{step}")).order_id),
            4 | 5 if !open.is_empty() => {
                let id = open.swap_remove(rng.below(open.len()));
                let o = engine.get_order(id).unwrap();
                let _ = engine.pay(id, &format!("p{step}"), o.total, TransitionOptions::default()).wait();
            }
            6 if !open.is_empty() => {
                let id = open.swap_remove(rng.below(open.len()));
                let _ = engine.cancel_order(id, Initiator::User, TransitionOptions::default()).wait();
            }
            7 => {
                db.snapshot_now().unwrap();
            }
            8 => {
                let log = db.outbox().unwrap();
                let target = log.cursor() + rng.below(20) as u64;
                log.save_cursor(target.min(log.durable_lsn())).unwrap();
            }
            _ => {
                // Crash: what was read durable and unpublished must come back unchanged.
                engine.wait_durable().unwrap();
                let log = db.outbox().unwrap();
                let durable = all_after(&log, log.cursor());
                let cursor = log.cursor();
                drop((log, engine));
                db.close_without_snapshot();
                sim.crash();
                db = open_sim(&sim, &clock);
                let log = db.outbox().unwrap();
                // A cursor save the crash lost only means publishing again (deduplicated).
                assert!(log.cursor() <= cursor, "seed {seed} step {step}: the cursor moved ahead");
                let again: Vec<OutboxEntry> =
                    all_after(&log, log.cursor()).into_iter().filter(|e| e.lsn > cursor).collect();
                assert_eq!(&again[..durable.len()], &durable[..], "seed {seed} step {step}: after the crash");
                open.retain(|id| db.engine().get_order(*id).is_ok_and(|o| o.status == OrderStatus::PendingPayment));
                continue;
            }
        }
        let log = db.outbox().unwrap();
        for e in all_after(&log, log.cursor()) {
            let prev = seen.entry((e.lsn, e.index)).or_insert_with(|| e.clone());
            assert_eq!(*prev, e, "seed {seed} step {step}: id {}-{} names two entries", e.lsn, e.index);
        }
    }
    db.close().unwrap();
}
