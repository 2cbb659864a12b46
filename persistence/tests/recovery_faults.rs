//! Fault injection at the storage boundary: a `LogStore` whose `append` or `flush` fails on
//! demand. While the log cannot be written nothing is acknowledged, writes are refused with
//! `storage_unavailable` and reads go on; once storage heals, writes resume, and everything ever
//! acknowledged survives a restart.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use surge_engine::{
    CreateOrder, Decimal, Engine, EngineError, Initiator, ListOrders, Order, OrderId, OrderStatus, SkuUpdate,
    SystemClock, TransitionOptions,
};
use surge_persistence::{DurableEngine, LogStore, PersistenceConfig, SledStore};

#[derive(Default)]
struct Faults {
    fail_append: AtomicBool,
    fail_flush: AtomicBool,
    appends_refused: AtomicU64,
    flushes_refused: AtomicU64,
}

/// The real store, failing `append` or `flush` while the shared flags say so.
struct FaultyStore {
    inner: SledStore,
    faults: Arc<Faults>,
}

impl LogStore for FaultyStore {
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        if self.faults.fail_append.load(Ordering::SeqCst) {
            self.faults.appends_refused.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("injected: append refused (disk full)"));
        }
        self.inner.append(records)
    }

    fn flush(&mut self, sync: bool) -> io::Result<()> {
        if self.faults.fail_flush.load(Ordering::SeqCst) {
            self.faults.flushes_refused.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("injected: flush refused (EIO)"));
        }
        self.inner.flush(sync)
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Append,
    Flush,
}

impl Fault {
    fn set(self, faults: &Faults, on: bool) {
        match self {
            Fault::Append => faults.fail_append.store(on, Ordering::SeqCst),
            Fault::Flush => faults.fail_flush.store(on, Ordering::SeqCst),
        }
    }

    fn refused(self, faults: &Faults) -> u64 {
        match self {
            Fault::Append => faults.appends_refused.load(Ordering::SeqCst),
            Fault::Flush => faults.flushes_refused.load(Ordering::SeqCst),
        }
    }
}

fn pcfg(dir: &Path) -> PersistenceConfig {
    PersistenceConfig { retry_interval_ms: 20, ..PersistenceConfig::new(dir) }
}

fn open_faulty(cfg: &PersistenceConfig, faults: &Arc<Faults>) -> DurableEngine {
    let f = faults.clone();
    DurableEngine::open_with(cfg.clone(), engine_cfg(), Arc::new(SystemClock), move |s| {
        Box::new(FaultyStore { inner: s, faults: f })
    })
    .expect("open with a faulty store")
}

fn failures(db: &DurableEngine) -> u64 {
    db.wal_stats().failures.load(Ordering::SeqCst)
}

fn assert_unavailable<T: std::fmt::Debug>(r: Result<T, EngineError>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.code(), "storage_unavailable", "{what}: {e:?}"),
        Ok(v) => panic!("{what} succeeded while the log cannot be written: {v:?}"),
    }
}

/// Poll (at most 5 s) until the writer has failed at least `n` times in all.
fn wait_for_failures(db: &DurableEngine, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while failures(db) < n {
        assert!(Instant::now() < deadline, "the writer did not retry: {} failures", failures(db));
        thread::sleep(Duration::from_millis(2));
    }
}

/// Retry `req` (same idempotency key, as a client told "outcome unknown" should) for at most 5 s
/// until it succeeds; every failure on the way must be `storage_unavailable`.
fn create_until_ok(engine: &Engine, req: &CreateOrder) -> Arc<Order> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match engine.create_order(req.clone()).wait() {
            Ok(o) => return o,
            Err(e) => {
                assert_eq!(e.code(), "storage_unavailable", "while healing: {e:?}");
                assert!(Instant::now() < deadline, "writes did not resume after storage healed");
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn single_fault(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = pcfg(dir.path());
    let faults = Arc::new(Faults::default());
    let db = open_faulty(&cfg, &faults);
    let engine = db.engine().clone();
    create_skus(&engine);
    let mut ledger = Ledger::default();
    run_workload(&engine, &mut Rng::new(0xFA_0001), &mut ledger, "before", 60);
    engine.settle();
    let pending = ledger.orders.values().find(|o| o.status == OrderStatus::PendingPayment).cloned().expect("pending");
    let mug = engine.get_sku("mug").unwrap();
    assert_eq!(failures(&db), 0);

    // (a) The fault hits an accepted request: its answer is storage_unavailable, never Ok.
    fault.set(&faults, true);
    let victim_req = CreateOrder::new("victim", &[("mug", 1), ("sticker", 2)], "victim-1");
    assert_unavailable(engine.create_order(victim_req.clone()).wait(), "in-flight create_order");
    assert!(failures(&db) >= 1);
    assert!(fault.refused(&faults) >= 1, "the injected fault was hit");

    // While failing, every write is refused...
    assert_unavailable(engine.create_order(CreateOrder::new("bob", &[("mug", 1)], "bob-1")).wait(), "create");
    let none = TransitionOptions::default;
    assert_unavailable(engine.pay(pending.order_id, "psp-x", pending.total, none()).wait(), "pay");
    assert_unavailable(engine.cancel_order(pending.order_id, Initiator::User, none()).wait(), "cancel");
    assert_unavailable(engine.adjust_stock("mug", 5, "restock").wait(), "adjust_stock");
    assert_unavailable(engine.create_sku(spec("new", 100, 1, None)).wait(), "create_sku");
    let update = SkuUpdate { price: Some(Decimal::new(1, 0)), ..SkuUpdate::default() };
    assert_unavailable(engine.update_sku("mug", update).wait(), "update_sku");
    // Refused means not executed: nothing of it reached memory either.
    assert_eq!(engine.get_sku("new").unwrap_err().code(), "unknown_sku");
    assert_eq!(engine.get_sku("mug").unwrap().price, mug.price);
    let bobs = ListOrders { user_id: "bob".into(), status: None, limit: 10, before: None };
    assert!(engine.list_orders(&bobs).unwrap().orders.is_empty());
    // ... and keeps being refused while the writer retries and fails.
    let seen = failures(&db);
    wait_for_failures(&db, seen + 3);
    assert_unavailable(engine.create_order(CreateOrder::new("bob", &[("mug", 1)], "bob-2")).wait(), "create");

    // Reads keep working.
    let m = engine.get_sku("mug").expect("get_sku while failing");
    assert_eq!(m.stocked_total, mug.stocked_total);
    assert_eq!(m.available + m.reserved + m.sold, m.stocked_total);
    assert_eq!(
        engine.get_order(pending.order_id).expect("get_order while failing").status,
        OrderStatus::PendingPayment
    );
    let mine = engine
        .list_orders(&ListOrders { user_id: pending.user_id.to_string(), status: None, limit: 100, before: None })
        .expect("list_orders while failing");
    assert!(mine.orders.iter().any(|o| o.order_id == pending.order_id));
    assert_eq!(engine.list_skus().len(), SKUS.len());

    // (b) Heal: the retried request (same key) now succeeds, and it is the same order as the one
    // whose outcome was unknown (it was applied in memory, then logged by the writer's retry).
    fault.set(&faults, false);
    let victim = create_until_ok(&engine, &victim_req);
    assert_eq!(victim.status, OrderStatus::PendingPayment);
    assert_eq!(victim.items.len(), 2);
    let again = engine.create_order(victim_req.clone()).wait().expect("idempotent after heal");
    assert_eq!(again.order_id, victim.order_id);
    // Writes resume for everything.
    let paid = engine.pay(pending.order_id, "psp-after", pending.total, none()).wait().expect("pay after heal");
    assert_eq!(paid.status, OrderStatus::Paid);
    ledger.record(&paid);
    run_workload(&engine, &mut Rng::new(0xFA_0002), &mut ledger, "after", 60);
    let before = state_of(&engine);
    let failed = failures(&db);
    drop(engine);
    drop(db);

    // (c) Everything acknowledged, before and after the fault, is there after a restart.
    let db = open_db(&cfg, &engine_cfg(), None).expect("reopen");
    assert_eq!(db.recovery().fixes, 0, "{:?}", db.recovery());
    let e = db.engine();
    assert_ledger_present(e, &ledger);
    assert_eq!(e.get_order(victim.order_id).expect("the healed order").user_id.as_ref(), "victim");
    let p = e.get_order(pending.order_id).unwrap().payment.clone().expect("the payment after the heal");
    assert_eq!(&*p.payment_id, "psp-after");
    assert!(state_of(e) == before, "state after restart differs ({failed} write failures before)");
    assert_healthy(e);
    db.close().unwrap();
}

#[test]
fn flush_failure_refuses_writes_keeps_reads_and_heals() {
    single_fault(Fault::Flush);
}

#[test]
fn append_failure_refuses_writes_keeps_reads_and_heals() {
    single_fault(Fault::Append);
}

/// What one client thread was told.
#[derive(Default)]
struct ClientLog {
    /// Acknowledged orders with the status last acknowledged.
    acked: BTreeMap<OrderId, (CreateOrder, OrderStatus)>,
    /// Every acknowledgement: (epoch read right after the reply arrived, order, status).
    acks: Vec<(u64, OrderId, OrderStatus)>,
    codes: BTreeMap<&'static str, u64>,
}

fn client(
    engine: Engine,
    t: usize,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut rng = Rng::new(0xC11E_0000 + t as u64);
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let r = if rng.below(3) == 0 && !log.acked.is_empty() {
            // Pay one of ours that is still pending.
            let pending: Vec<OrderId> =
                log.acked.iter().filter(|(_, (_, s))| *s == OrderStatus::PendingPayment).map(|(id, _)| *id).collect();
            let Some(&id) = pending.get(rng.below(pending.len().max(1))) else { continue };
            let total = engine.get_order(id).expect("own order").total;
            // One payment id per order: a retry after "outcome unknown" is a duplicate, not a
            // second payment.
            engine.pay(id, &format!("psp-{id}"), total, TransitionOptions::default()).wait().map(|o| {
                assert_eq!(o.status, OrderStatus::Paid);
                log.acked.get_mut(&id).expect("own").1 = OrderStatus::Paid;
                log.acks.push((epoch.load(Ordering::SeqCst), id, OrderStatus::Paid));
            })
        } else {
            let (sku, ..) = SKUS[rng.below(SKUS.len())];
            let items = if sku == "sticker" { vec![("sticker", 1)] } else { vec![(sku, 1), ("sticker", 1)] };
            let req = CreateOrder::new(&format!("c{t}-u{}", i % 7), &items, &format!("c{t}-{i}"));
            engine.create_order(req.clone()).wait().map(|o| {
                assert_eq!(o.status, OrderStatus::PendingPayment);
                assert!(log.acked.insert(o.order_id, (req, o.status)).is_none(), "order id acknowledged twice");
                log.acks.push((epoch.load(Ordering::SeqCst), o.order_id, o.status));
            })
        };
        if r.is_ok() {
            progress.fetch_add(1, Ordering::SeqCst);
        }
        if let Err(e) = r {
            let code = e.code();
            assert!(
                matches!(code, "storage_unavailable" | "sold_out" | "insufficient_stock" | "purchase_limit_exceeded"),
                "client {t}: unexpected {e:?}"
            );
            *log.codes.entry(code).or_default() += 1;
            if code == "storage_unavailable" {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    log
}

/// Copy a data directory as it is on disk right now: what a crash at this instant would leave.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            crash_image(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Clients keep writing while storage fails and heals three times (append, flush, append).
/// While an append fault holds (sled is not written at all), a crash image of the directory is
/// taken: every write acknowledged before it must be in it, so nothing is acknowledged before it
/// is durable. After the last heal, the in-memory state (failed requests included: their outcome
/// was "unknown") is exactly what a restart recovers.
#[test]
fn concurrent_clients_through_repeated_faults_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = pcfg(dir.path());
    let faults = Arc::new(Faults::default());
    let db = open_faulty(&cfg, &faults);
    let engine = db.engine().clone();
    for (id, cents, _, limit) in SKUS {
        engine.create_sku(spec(id, *cents, 100_000, *limit)).wait().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let epoch = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (engine, stop, progress, epoch) = (engine.clone(), stop.clone(), progress.clone(), epoch.clone());
            thread::spawn(move || client(engine, t, stop, progress, epoch))
        })
        .collect();
    // Wait (at most 10 s) until the clients got `n` more acknowledged writes through.
    let wait_progress = |n: u64| {
        let (start, deadline) = (progress.load(Ordering::SeqCst), Instant::now() + Duration::from_secs(10));
        while progress.load(Ordering::SeqCst) < start + n {
            assert!(Instant::now() < deadline, "clients made no progress while storage was healthy");
            thread::sleep(Duration::from_millis(2));
        }
    };

    let mut images = Vec::new();
    let mut sentinel = 0;
    for fault in [Fault::Append, Fault::Flush, Fault::Append] {
        // Let the clients get some writes through, then break storage.
        sentinel += 1;
        let ok = create_until_ok(&engine, &CreateOrder::new("sentinel", &[("sticker", 1)], &format!("s{sentinel}")));
        assert_eq!(ok.status, OrderStatus::PendingPayment);
        wait_progress(40);
        let seen = failures(&db);
        fault.set(&faults, true);
        wait_for_failures(&db, seen + 3);
        assert_unavailable(engine.adjust_stock("mug", 1, "during fault").wait(), "adjust_stock during fault");
        if let Fault::Append = fault {
            // Acks read an epoch below `k` only if they arrived before this bump, hence before
            // the image is taken.
            let k = epoch.fetch_add(1, Ordering::SeqCst) + 1;
            let image = tempfile::tempdir().unwrap();
            crash_image(dir.path(), image.path());
            images.push((k, image));
        }
        fault.set(&faults, false);
    }
    sentinel += 1;
    create_until_ok(&engine, &CreateOrder::new("sentinel", &[("sticker", 1)], &format!("s{sentinel}")));
    wait_progress(40);
    stop.store(true, Ordering::SeqCst);
    let logs: Vec<ClientLog> = clients.into_iter().map(|h| h.join().expect("client")).collect();
    // A last acknowledged write: everything submitted before it is in the log.
    let last = create_until_ok(&engine, &CreateOrder::new("sentinel", &[("sticker", 1)], "last"));
    let before = state_of(&engine);
    let unavailable: u64 = logs.iter().map(|l| l.codes.get("storage_unavailable").copied().unwrap_or(0)).sum();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    assert!(unavailable > 0, "the clients never ran into a fault");
    assert!(acked >= 40, "the clients got only {acked} orders through");
    drop(engine);
    drop(db);

    // Crashes during the faults: everything acknowledged before is there.
    assert_eq!(images.len(), 2);
    for (k, image) in &images {
        let db = open_db(&PersistenceConfig::new(image.path()), &engine_cfg(), None).expect("open crash image");
        let e = db.engine();
        let mut checked = 0;
        for (_, id, status) in logs.iter().flat_map(|l| &l.acks).filter(|(at, ..)| at < k) {
            let o = e.get_order(*id).unwrap_or_else(|_| panic!("crash image {k}: acknowledged order {id} missing"));
            if *status == OrderStatus::Paid {
                assert_eq!(o.status, OrderStatus::Paid, "crash image {k}: acknowledged payment of {id} missing");
            }
            checked += 1;
        }
        assert!(checked > 0, "crash image {k}: nothing acknowledged before it");
        assert_healthy(e);
        db.close().unwrap();
    }

    let db = open_db(&cfg, &engine_cfg(), None).expect("reopen");
    let e = db.engine();
    assert_eq!(db.recovery().fixes, 0, "{:?}", db.recovery());
    for log in &logs {
        for (id, (req, status)) in &log.acked {
            let o = e.get_order(*id).unwrap_or_else(|_| panic!("acknowledged order {id} lost"));
            assert_eq!(o.user_id, req.user_id);
            assert!(o.same_items(&req.items), "order {id} items differ");
            match status {
                OrderStatus::Paid => assert_eq!(o.status, OrderStatus::Paid, "acknowledged payment of {id} lost"),
                // A payment answered storage_unavailable may or may not have happened.
                _ => assert!(matches!(o.status, OrderStatus::PendingPayment | OrderStatus::Paid), "{o:?}"),
            }
        }
    }
    assert!(e.get_order(last.order_id).is_ok());
    assert!(state_of(e) == before, "recovered state differs from the state before the restart");
    assert_healthy(e);
    db.close().unwrap();
}

/// The writer counts the events of a group commit from its submissions, but after a failure it
/// commits the retried records with an empty submission list (`account(&[], ..)`): the events
/// written by a successful retry are never added to `WalStats::events`, which also drives
/// `snapshot_every_events`.
#[test]
fn events_written_by_a_retry_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = pcfg(dir.path());
    let faults = Arc::new(Faults::default());
    let db = open_faulty(&cfg, &faults);
    let engine = db.engine().clone();
    create_skus(&engine);
    engine.create_order(CreateOrder::new("alice", &[("mug", 1)], "a-1")).wait().unwrap();
    Fault::Flush.set(&faults, true);
    let req = CreateOrder::new("victim", &[("mug", 1), ("sticker", 1)], "v-1");
    assert_unavailable(engine.create_order(req.clone()).wait(), "in-flight create_order");
    Fault::Flush.set(&faults, false);
    create_until_ok(&engine, &req);
    engine.settle();
    let counted = db.wal_stats().events.load(Ordering::SeqCst);
    let records = db.wal_stats().durable_lsn.load(Ordering::SeqCst);
    drop(engine);
    drop(db);

    let db = open_db(&cfg, &engine_cfg(), None).expect("reopen");
    assert_eq!(db.recovery().records_replayed, records);
    assert_eq!(db.recovery().events_replayed, counted, "events in the log vs events the writer counted");
    db.close().unwrap();
}
