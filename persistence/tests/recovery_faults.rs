//! Fault injection at the storage boundary: a `LogStore` whose `append` or `flush` fails on
//! demand, with `StorageFailurePolicy::Halt` so the process survives (the default, `FailStop`,
//! exits; see `fail_stop.rs` and the root crate's `recovery_enospc.rs`). After the first failure
//! nothing is acknowledged on that handle again, even once the fault is gone (fsyncgate): writes
//! are refused with `storage_unavailable`, reads go on, the writer never touches the store again.
//! Reopening the directory runs recovery: everything acknowledged is there and the store serves.

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
use surge_persistence::{
    DurableEngine, LogStore, PersistenceConfig, PersistenceError, SledStore, StorageFailurePolicy,
};

#[derive(Default)]
struct Faults {
    fail_append: AtomicBool,
    fail_flush: AtomicBool,
    appends_refused: AtomicU64,
    flushes_refused: AtomicU64,
    /// Calls of append, archive or flush after the first refusal (must stay 0).
    calls_after_failure: AtomicU64,
}

impl Faults {
    fn failed_before(&self) -> bool {
        self.appends_refused.load(Ordering::SeqCst) + self.flushes_refused.load(Ordering::SeqCst) > 0
    }

    fn call(&self) {
        if self.failed_before() {
            self.calls_after_failure.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The real store, failing `append` or `flush` while the shared flags say so.
struct FaultyStore {
    inner: SledStore,
    faults: Arc<Faults>,
}

impl LogStore for FaultyStore {
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        self.faults.call();
        if self.faults.fail_append.load(Ordering::SeqCst) {
            self.faults.appends_refused.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("injected: append refused (disk full)"));
        }
        self.inner.append(records)
    }

    fn archive(&mut self, orders: &[Arc<Order>]) -> io::Result<()> {
        self.faults.call();
        self.inner.archive(orders)
    }

    fn flush(&mut self, sync: bool) -> io::Result<()> {
        self.faults.call();
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
    PersistenceConfig { storage_failure_policy: StorageFailurePolicy::Halt, ..PersistenceConfig::new(dir) }
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

/// Every write is refused, for a while: the failed handle never recovers by itself.
fn assert_writes_stay_refused(engine: &Engine, pending: &Order) {
    let none = TransitionOptions::default;
    for round in 0..5 {
        let key = format!("bob-{round}");
        assert_unavailable(engine.create_order(CreateOrder::new("bob", &[("mug", 1)], &key)).wait(), "create");
        assert_unavailable(engine.pay(pending.order_id, "psp-x", pending.total, none()).wait(), "pay");
        assert_unavailable(engine.cancel_order(pending.order_id, Initiator::User, none()).wait(), "cancel");
        assert_unavailable(engine.adjust_stock("mug", "adj-mug-5", 5, "restock").wait(), "adjust_stock");
        assert_unavailable(engine.create_sku(spec("new", 100, 1, None)).wait(), "create_sku");
        let update = SkuUpdate { price: Some(Decimal::new(1, 0)), ..SkuUpdate::default() };
        assert_unavailable(engine.update_sku("mug", update).wait(), "update_sku");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads keep working on the failed handle.
fn assert_reads_work(engine: &Engine, pending: &Order, mug_before: &surge_engine::SkuView) {
    assert_eq!(engine.get_sku("new").unwrap_err().code(), "unknown_sku", "a refused create_sku ran");
    let m = engine.get_sku("mug").expect("get_sku while failed");
    assert_eq!(m.price, mug_before.price, "a refused update_sku ran");
    assert_eq!(m.stocked_total, mug_before.stocked_total, "a refused adjust_stock ran");
    assert_eq!(m.available + m.reserved + m.sold, m.stocked_total);
    let o = engine.get_order(pending.order_id).expect("get_order while failed");
    assert_eq!(o.status, OrderStatus::PendingPayment);
    let bobs = ListOrders { user_id: "bob".into(), status: None, limit: 10, before: None };
    assert!(engine.list_orders(&bobs).unwrap().orders.is_empty(), "a refused create_order ran");
    let mine = ListOrders { user_id: pending.user_id.to_string(), status: None, limit: 100, before: None };
    assert!(engine.list_orders(&mine).expect("list_orders").orders.iter().any(|o| o.order_id == pending.order_id));
    assert_eq!(engine.list_skus().len(), SKUS.len());
}

/// Retry `req` (same idempotency key, as a client told "outcome unknown" should) on the reopened
/// engine: it succeeds at once (the earlier attempt either reached the log or did not).
fn create_after_reopen(engine: &Engine, req: &CreateOrder) -> Arc<Order> {
    engine.create_order(req.clone()).wait().unwrap_or_else(|e| panic!("retry after reopen: {e:?}"))
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
    let before = state_of(&engine);
    assert_eq!(failures(&db), 0);

    // (a) The fault hits an accepted request: its answer is storage_unavailable, never Ok.
    fault.set(&faults, true);
    let victim_req = CreateOrder::new("victim", &[("mug", 1), ("sticker", 2)], "victim-1");
    assert_unavailable(engine.create_order(victim_req.clone()).wait(), "in-flight create_order");
    assert_eq!(fault.refused(&faults), 1, "the injected fault was hit once");
    assert_eq!(failures(&db), 1);

    // (b) The fault goes away, but the handle stays failed: nothing is acknowledged on it again,
    // and the writer never calls the store again (no retry on a handle whose state is unknown).
    fault.set(&faults, false);
    assert_writes_stay_refused(&engine, &pending);
    assert_reads_work(&engine, &pending, &mug);
    assert_eq!(faults.calls_after_failure.load(Ordering::SeqCst), 0, "the failed store was written again");
    assert_eq!(failures(&db), 1);
    // No snapshot through the failed handle either (memory may hold what the log lacks).
    assert!(matches!(db.snapshot_now(), Err(PersistenceError::StorageFailed)));
    drop(engine);
    assert!(matches!(db.close(), Err(PersistenceError::StorageFailed)), "close reports the failure");

    // (c) Reopen = recovery: everything acknowledged is there, the audit holds, and it serves.
    let db = open_db(&cfg, &engine_cfg(), None).expect("reopen");
    let e = db.engine();
    assert_ledger_present(e, &ledger);
    assert_healthy(e);
    let victim = create_after_reopen(e, &victim_req);
    if fault_loses_the_victim(fault) {
        // The append never reached sled: the state is exactly the acknowledged one plus the retry.
        assert!(state_of(e).orders.len() == before.orders.len() + 1, "the victim was logged on a refused append");
    }
    assert_eq!(victim.items.len(), 2);
    let again = e.create_order(victim_req.clone()).wait().expect("idempotent after reopen");
    assert_eq!(again.order_id, victim.order_id);
    let none = TransitionOptions::default();
    let paid = e.pay(pending.order_id, "psp-after", pending.total, none).wait().expect("pay after reopen");
    assert_eq!(paid.status, OrderStatus::Paid);
    ledger.record(&paid);
    run_workload(e, &mut Rng::new(0xFA_0002), &mut ledger, "after", 60);
    let served = state_of(e);
    drop(db);

    // (d) And what the reopened store acknowledged survives the next restart too.
    let db = open_db(&cfg, &engine_cfg(), None).expect("second reopen");
    assert_eq!(db.recovery().fixes, 0, "{:?}", db.recovery());
    assert_ledger_present(db.engine(), &ledger);
    assert!(state_of(db.engine()) == served, "state after the second restart differs");
    assert_healthy(db.engine());
    db.close().unwrap();
}

/// A refused append never reached sled; a refused flush may still reach the disk (sled flushes
/// what it holds when dropped): either way the outcome was reported unknown.
fn fault_loses_the_victim(fault: Fault) -> bool {
    matches!(fault, Fault::Append)
}

#[test]
fn flush_failure_refuses_writes_for_good_and_reopen_recovers() {
    single_fault(Fault::Flush);
}

#[test]
fn append_failure_refuses_writes_for_good_and_reopen_recovers() {
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

/// One phase: clients write through a faulty handle until `fault` strikes. A crash image taken
/// while the handle is failed holds every write acknowledged before it; nothing is acknowledged
/// after; `close` reports the failure. Returns the clients' logs.
fn phase_with_fault(cfg: &PersistenceConfig, phase: usize, fault: Fault) -> Vec<ClientLog> {
    let faults = Arc::new(Faults::default());
    let db = open_faulty(cfg, &faults);
    let engine = db.engine().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let epoch = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (engine, stop, progress, epoch) = (engine.clone(), stop.clone(), progress.clone(), epoch.clone());
            thread::spawn(move || client(engine, phase * 10 + t, stop, progress, epoch))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.load(Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "phase {phase}: clients made no progress while storage was healthy");
        thread::sleep(Duration::from_millis(2));
    }
    fault.set(&faults, true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while failures(&db) == 0 {
        assert!(Instant::now() < deadline, "phase {phase}: the fault was never hit");
        thread::sleep(Duration::from_millis(1));
    }
    // Acks that read an epoch of 0 arrived before this bump, hence before the image.
    epoch.fetch_add(1, Ordering::SeqCst);
    let image = tempfile::tempdir().unwrap();
    crash_image(cfg.data_dir.as_path(), image.path());
    // The fault heals; the handle must not: the clients keep hearing storage_unavailable.
    fault.set(&faults, false);
    let seen = progress.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    let logs: Vec<ClientLog> = clients.into_iter().map(|h| h.join().expect("client")).collect();
    let unavailable: u64 = logs.iter().map(|l| l.codes.get("storage_unavailable").copied().unwrap_or(0)).sum();
    assert!(unavailable > 0, "phase {phase}: the clients never ran into the failure");
    // An ack already released when the failure was detected may still be counted just after.
    assert!(progress.load(Ordering::SeqCst) <= seen + 4, "phase {phase}: acknowledged after the failure");
    assert_eq!(faults.calls_after_failure.load(Ordering::SeqCst), 0, "phase {phase}: failed store written again");
    drop(engine);
    assert!(matches!(db.close(), Err(PersistenceError::StorageFailed)));

    let db = open_db(&PersistenceConfig::new(image.path()), &engine_cfg(), None).expect("open crash image");
    let mut checked = 0;
    for (_, id, status) in logs.iter().flat_map(|l| &l.acks).filter(|(at, ..)| *at == 0) {
        let o = db.engine().get_order(*id).unwrap_or_else(|_| panic!("phase {phase}: acknowledged {id} missing"));
        if *status == OrderStatus::Paid {
            assert_eq!(o.status, OrderStatus::Paid, "phase {phase}: acknowledged payment of {id} missing");
        }
        checked += 1;
    }
    assert!(checked >= 40, "phase {phase}: only {checked} acknowledged before the image");
    assert_healthy(db.engine());
    db.close().unwrap();
    logs
}

/// Clients keep writing through three storage failures (append, flush, append), each ending its
/// handle; each time the directory is reopened (recovery) and the next clients carry on. Every
/// write acknowledged in any phase is in the final store, and its audit holds.
#[test]
fn concurrent_clients_through_repeated_faults_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = pcfg(dir.path());
    {
        let db = open_db(&cfg, &engine_cfg(), None).expect("open");
        for (id, cents, _, limit) in SKUS {
            db.engine().create_sku(spec(id, *cents, 100_000, *limit)).wait().unwrap();
        }
        db.close().unwrap();
    }
    let mut logs = Vec::new();
    for (phase, fault) in [Fault::Append, Fault::Flush, Fault::Append].into_iter().enumerate() {
        logs.extend(phase_with_fault(&cfg, phase, fault));
    }
    let db = open_db(&cfg, &engine_cfg(), None).expect("reopen");
    let e = db.engine();
    let mut acked = 0;
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
            acked += 1;
        }
    }
    assert!(acked >= 60, "the clients got only {acked} orders through");
    // The reopened store serves.
    let fresh = e.create_order(CreateOrder::new("sentinel", &[("sticker", 1)], "last")).wait().expect("serves");
    assert_eq!(fresh.status, OrderStatus::PendingPayment);
    assert_healthy(e);
    db.close().unwrap();
}

/// Issue 10, item 7: a client told `storage_unavailable` (outcome unknown) retries its
/// `adjust_stock` with the same `adjustment_id`; the stock is added once, whether or not the
/// first attempt reached the log. Before `adjustment_id` existed the retry added it twice.
#[test]
fn adjust_stock_retried_after_storage_unavailable_applies_once() {
    for fault in [Fault::Append, Fault::Flush] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = pcfg(dir.path());
        let faults = Arc::new(Faults::default());
        let db = open_faulty(&cfg, &faults);
        let engine = db.engine().clone();
        create_skus(&engine);
        let mug = engine.get_sku("mug").unwrap();

        fault.set(&faults, true);
        assert_unavailable(engine.adjust_stock("mug", "po-77", 5, "restock").wait(), "adjust_stock hit by the fault");
        assert_eq!(fault.refused(&faults), 1, "the injected fault was hit");
        fault.set(&faults, false);
        // The handle stays failed (fail-stop): the retry is refused until the store is reopened.
        assert_unavailable(engine.adjust_stock("mug", "po-77", 5, "restock").wait(), "retry on the failed handle");
        drop(engine);
        let _ = db.close();

        // Reopen (recovery), then the retry, as a client told "outcome unknown" does.
        let db = open_db(&cfg, &engine_cfg(), None).expect("reopen");
        let e = db.engine();
        let healed = e.adjust_stock("mug", "po-77", 5, "restock").wait().expect("retry after reopen");
        assert_eq!(healed.stocked_total, mug.stocked_total + 5, "{fault:?}: the retry added the stock a second time");
        assert_eq!(healed.available, mug.available + 5);
        let other = e.adjust_stock("mug", "po-77", 6, "restock").wait();
        assert_eq!(other.unwrap_err().code(), "idempotency_conflict");
        assert_healthy(e);
        db.close().unwrap();

        let db = open_db(&cfg, &engine_cfg(), None).expect("second reopen");
        let again = db.engine().adjust_stock("mug", "po-77", 5, "restock").wait().expect("retry after restart");
        assert_eq!(again.stocked_total, mug.stocked_total + 5, "the record survived the restart");
        db.close().unwrap();
    }
}

/// A wallet payment and a credit whose group commit hits the fault answer
/// `storage_unavailable` (outcome unknown); after the reopen, retrying them with the same
/// transfer ids takes the money once: the order is paid, the wallet debited by the total, never
/// twice, nothing left frozen, whether or not the failed write reached the disk (issue 14).
fn wallet_retry_after_fault(fault: Fault) {
    use surge_engine::wallet::WalletPayment;
    let dir = tempfile::tempdir().unwrap();
    let cfg = pcfg(dir.path());
    let faults = Arc::new(Faults::default());
    let db = open_faulty(&cfg, &faults);
    let engine = db.engine().clone();
    create_skus(&engine);
    engine.wallet_credit("wally", "CNY", Decimal::new(100_000, 2), "top-1").wait().expect("credit");
    let order = engine.create_order(CreateOrder::new("wally", &[("mug", 1)], "k1")).wait().expect("order");
    let pay = WalletPayment {
        order_id: order.order_id,
        legs: vec![("CNY".into(), order.total)],
        transfer_id: "pay-1".into(),
        expected_version: None,
        owner: None,
    };
    fault.set(&faults, true);
    assert_unavailable(engine.pay_with_wallet(&pay).wait(), "pay_with_wallet during the fault");
    fault.set(&faults, false);
    assert_unavailable(engine.wallet_credit("wally", "CNY", Decimal::ONE, "top-2").wait(), "credit after the fault");
    drop(engine);
    let _ = db.close();

    let db = open_db(&cfg, &engine_cfg(), None).expect("reopen");
    let e = db.engine();
    let paid = e.pay_with_wallet(&pay).wait().expect("the retry pays (or finds it paid)");
    assert_eq!(paid.status, OrderStatus::Paid);
    let again = e.pay_with_wallet(&pay).wait().expect("and a second retry answers the same");
    assert_eq!(again.order_id, paid.order_id);
    let credit = e.wallet_credit("wally", "CNY", Decimal::ONE, "top-2").wait().expect("the credit retried");
    let expected = Decimal::new(100_000, 2) - order.total + Decimal::ONE;
    assert_eq!(credit.account.balance, expected, "money taken once, credited once");
    let w = e.get_wallet("wally").wait().unwrap();
    let cny = w.accounts.iter().find(|a| a.asset.as_str() == "CNY").unwrap();
    assert_eq!((cny.balance, cny.frozen), (expected, Decimal::ZERO));
    assert_healthy(e);
    db.close().unwrap();
}

#[test]
fn wallet_payment_retried_after_a_flush_failure_pays_once() {
    wallet_retry_after_fault(Fault::Flush);
}

#[test]
fn wallet_payment_retried_after_an_append_failure_pays_once() {
    wallet_retry_after_fault(Fault::Append);
}
