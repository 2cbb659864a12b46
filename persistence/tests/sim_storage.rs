//! The real durable engine (real WAL writer, real recovery, real snapshots and trimming) over
//! the simulated disk `SimStore` (issue 11 item 3): a seeded workload with random crashes
//! (drop the engine, crash the store: only synced data survives, sometimes a torn prefix of the
//! rest) and storage faults (write errors, ENOSPC, fsync errors under
//! `StorageFailurePolicy::Halt`, then a crash and reopen). After every recovery: every order
//! acknowledged is there with its acknowledged history (payments included), idempotent retries
//! find their orders, the audit and stock conservation hold. The same seed gives the same
//! surviving states (digests). Every failure prints its seed.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Rng, SKUS, USERS};
use surge_engine::{
    CreateOrder, Engine, EngineConfig, EngineError, Initiator, ManualClock, Order, OrderEventKind, OrderId,
    OrderStatus, TransitionOptions,
};
use surge_persistence::sim::{FaultRates, SimConfig, SimStore};
use surge_persistence::{DurableEngine, PersistenceConfig, PersistenceError, Storage, StorageFailurePolicy};

/// Prints the seed when a test panics while it is alive.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("sim_storage failed with seed {} (rerun: SIM_SEED={} cargo test ...)", self.0, self.0);
        }
    }
}

/// One simulation's knobs.
#[derive(Clone, Copy)]
struct Knobs {
    seed: u64,
    steps: usize,
    shard_count: usize,
    crash_rate: f64,
    faults: FaultRates,
    torn: f64,
}

/// What one run left behind: the engine digest after each recovery, and the disk's digest.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    recovered_digests: Vec<u64>,
    store_digest: u64,
    recoveries: usize,
    faults: u64,
    /// Recoveries that started from a snapshot.
    from_snapshot: usize,
    /// Orders in the archive at the end.
    archived: usize,
}

/// What clients were told, kept across crashes.
#[derive(Default)]
struct Ledger {
    orders: BTreeMap<OrderId, Arc<Order>>,
    creates: Vec<(CreateOrder, OrderId)>,
}

struct Sim {
    knobs: Knobs,
    rng: Rng,
    store: SimStore,
    clock: Arc<ManualClock>,
    db: Option<DurableEngine>,
    ledger: Ledger,
    outcome: Outcome,
}

fn chance(rng: &mut Rng, p: f64) -> bool {
    ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
}

impl Sim {
    fn new(knobs: Knobs) -> Self {
        let config =
            SimConfig { faults: knobs.faults, torn_write_probability: knobs.torn, ..SimConfig::new(knobs.seed) };
        let outcome = Outcome {
            recovered_digests: Vec::new(),
            store_digest: 0,
            recoveries: 0,
            faults: 0,
            from_snapshot: 0,
            archived: 0,
        };
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let rng = Rng::new(knobs.seed ^ 0xA5A5);
        Self { knobs, rng, store: SimStore::new(config), clock, db: None, ledger: Ledger::default(), outcome }
    }

    fn engine_cfg(&self) -> EngineConfig {
        EngineConfig {
            shard_count: self.knobs.shard_count,
            payment_timeout_ms: 60_000,
            auto_complete_ms: 120_000,
            archive_after_ms: 30_000,
            ..EngineConfig::default()
        }
    }

    /// Open over the store; a fault during recovery (archive rewrite, repairs) is a crash too.
    fn open(&mut self) {
        let pcfg = PersistenceConfig {
            storage_failure_policy: StorageFailurePolicy::Halt,
            snapshot_every_events: u64::MAX / 2,
            snapshot_every_secs: u64::MAX / 4,
            ..PersistenceConfig::new("unused")
        };
        for _ in 0..100 {
            let (s, w) = (Arc::new(self.store.clone()), Box::new(self.store.clone()));
            match DurableEngine::open_on(s, w, pcfg.clone(), self.engine_cfg(), self.clock.clone()) {
                Ok(db) => {
                    self.db = Some(db);
                    return;
                }
                Err(PersistenceError::Io(_)) => {
                    self.store.crash();
                }
                Err(e) => panic!("seed {}: recovery failed: {e}", self.knobs.seed),
            }
        }
        panic!("seed {}: 100 opens in a row failed", self.knobs.seed);
    }

    fn engine(&self) -> Engine {
        match &self.db {
            Some(db) => db.engine().clone(),
            None => panic!("seed {}: no engine open", self.knobs.seed),
        }
    }

    /// Drop the engine, lose what was not synced, reopen, check everything acknowledged.
    fn crash_and_recover(&mut self) {
        drop(self.db.take());
        self.store.crash();
        self.open();
        self.outcome.recoveries += 1;
        if self.db.as_ref().is_some_and(|db| db.recovery().snapshot_lsn.is_some()) {
            self.outcome.from_snapshot += 1;
        }
        self.check_recovered();
    }

    fn check_recovered(&mut self) {
        let seed = self.knobs.seed;
        let engine = self.engine();
        engine.settle();
        let report = engine.audit();
        assert!(report.is_healthy(), "seed {seed}: audit after recovery: {:#?}", report.violations);
        for v in engine.list_skus() {
            assert_eq!(v.available + v.reserved + v.sold, v.stocked_total, "seed {seed}: conservation: {v:?}");
        }
        for (id, want) in &mut self.ledger.orders {
            let got =
                engine.get_order(*id).unwrap_or_else(|e| panic!("seed {seed}: acknowledged order {id} lost: {e}"));
            let n = want.history.len();
            assert!(
                got.history.len() >= n && got.history[..n] == want.history[..],
                "seed {seed}: order {id} lost a step"
            );
            if want.payment.is_some() {
                assert_eq!(got.payment, want.payment, "seed {seed}: order {id} lost its payment");
            }
            *want = got;
        }
        for (req, id) in self.ledger.creates.iter().step_by(7) {
            if !live(&self.ledger.orders[id]) {
                continue; // archived orders drop their idempotency record (retention)
            }
            match engine.create_order(req.clone()).wait() {
                Ok(o) => {
                    assert_eq!(o.order_id, *id, "seed {seed}: idempotency record lost for {}", req.idempotency_key)
                }
                Err(e) => assert_eq!(e.code(), "storage_unavailable", "seed {seed}: retry of {id}: {e}"),
            }
        }
        let state = engine.snapshot().unwrap_or_else(|e| panic!("seed {seed}: engine snapshot: {e}")).0;
        self.outcome.recovered_digests.push(state.digest());
    }
}

fn none() -> TransitionOptions {
    TransitionOptions::default()
}

/// The answer of one write: applied (and acknowledged), refused by the rules, or the storage
/// failed (the handle is halted: crash and recover).
enum Answer {
    Done(Arc<Order>),
    Refused,
    StorageFailed,
}

fn answer(r: Result<Arc<Order>, EngineError>) -> Answer {
    match r {
        Ok(o) => Answer::Done(o),
        Err(e) if e.code() == "storage_unavailable" => Answer::StorageFailed,
        Err(_) => Answer::Refused,
    }
}

impl Sim {
    fn pick(&mut self, status: OrderStatus) -> Option<Arc<Order>> {
        let c: Vec<&Arc<Order>> = self.ledger.orders.values().filter(|o| o.status == status).collect();
        (!c.is_empty()).then(|| c[self.rng.below(c.len())].clone())
    }

    fn create(&mut self, step: usize) -> Answer {
        let user = format!("user-{}", self.rng.below(USERS));
        let n = 1 + self.rng.below(3);
        let mut items: Vec<(&str, u32)> = Vec::new();
        while items.len() < n {
            let (sku, ..) = SKUS[self.rng.below(SKUS.len())];
            if !items.iter().any(|(s, _)| *s == sku) {
                items.push((sku, 1 + self.rng.below(3) as u32));
            }
        }
        let req = CreateOrder::new(&user, &items, &format!("k-{step}"));
        let a = answer(self.engine().create_order(req.clone()).wait());
        if let Answer::Done(o) = &a {
            self.ledger.creates.push((req, o.order_id));
        }
        a
    }

    /// One workload step; `None` when it had nothing to do.
    fn step(&mut self, step: usize) -> Option<Answer> {
        let engine = self.engine();
        let r = self.rng.below(100);
        Some(match r {
            0..=39 => self.create(step),
            40..=54 => {
                let o = self.pick(OrderStatus::PendingPayment)?;
                let psp = format!("psp-{step}");
                let first = answer(engine.pay(o.order_id, &psp, o.total, none()).wait());
                match first {
                    // The payment provider calls back twice: no second effect.
                    Answer::Done(_) => answer(engine.pay(o.order_id, &psp, o.total, none()).wait()),
                    other => other,
                }
            }
            55..=62 => answer(
                engine.cancel_order(self.pick(OrderStatus::PendingPayment)?.order_id, Initiator::User, none()).wait(),
            ),
            63..=70 => {
                answer(engine.ship(self.pick(OrderStatus::Paid)?.order_id, &format!("TRK-{step}"), none()).wait())
            }
            71..=76 => {
                let id = self.pick(OrderStatus::Shipped)?.order_id;
                answer(engine.transition(id, OrderEventKind::Deliver, Initiator::Admin, none()).wait())
            }
            77..=81 => {
                let id = self.pick(OrderStatus::Paid)?.order_id;
                match answer(engine.transition(id, OrderEventKind::RequestRefund, Initiator::User, none()).wait()) {
                    Answer::Done(_) => {
                        answer(engine.transition(id, OrderEventKind::ConfirmRefund, Initiator::Admin, none()).wait())
                    }
                    other => other,
                }
            }
            82..=87 => {
                let (sku, ..) = SKUS[self.rng.below(SKUS.len())];
                let delta = 1 + self.rng.below(5) as i64;
                match engine.adjust_stock(sku, &format!("adj-{step}"), delta, "restock").wait() {
                    Ok(_) => return None,
                    Err(e) if e.code() == "storage_unavailable" => Answer::StorageFailed,
                    Err(e) => panic!("seed {}: restock refused: {e}", self.knobs.seed),
                }
            }
            88..=93 => {
                // Deadlines expire, auto-complete fires, terminal orders are archived.
                self.clock.advance_ms(5_000 + self.rng.below(40_000) as i64);
                return None;
            }
            _ => {
                let (req, id) = self.ledger.creates.get(self.rng.below(self.ledger.creates.len().max(1)))?.clone();
                if !engine.get_order(id).is_ok_and(|o| live(&o)) {
                    return None; // archived orders drop their idempotency record (retention)
                }
                let a = answer(engine.create_order(req).wait());
                if let Answer::Done(o) = &a {
                    assert_eq!(o.order_id, id, "seed {}: a retry made a new order", self.knobs.seed);
                }
                a
            }
        })
    }
}

/// Non-terminal orders are never archived, so their idempotency records must still answer.
fn live(o: &Order) -> bool {
    !matches!(o.status, OrderStatus::Completed | OrderStatus::Canceled | OrderStatus::Refunded)
}

impl Sim {
    /// Create the SKUs, retrying across storage failures (a create that survived answers
    /// `sku_exists`).
    fn setup(&mut self) {
        for (id, cents, stock, limit) in SKUS {
            loop {
                match self.engine().create_sku(common::spec(id, *cents, *stock, *limit)).wait() {
                    Err(e) if e.code() == "storage_unavailable" => self.crash_and_recover(),
                    Ok(_) => break,
                    Err(e) if e.code() == "sku_exists" => break,
                    Err(e) => panic!("seed {}: create_sku: {e}", self.knobs.seed),
                }
            }
        }
    }

    /// A snapshot (and WAL trim) through the real code; a storage fault there fails only the
    /// snapshot, a halted writer means the handle must be reopened.
    fn snapshot(&mut self) {
        let r = match &self.db {
            Some(db) => db.snapshot_now(),
            None => return,
        };
        if let Err(PersistenceError::StorageFailed) = r {
            self.crash_and_recover();
        }
    }

    fn record(&mut self, o: Arc<Order>) {
        self.ledger.orders.insert(o.order_id, o);
    }

    fn run(mut self) -> Outcome {
        let _guard = SeedGuard(self.knobs.seed);
        self.open();
        self.setup();
        for step in 0..self.knobs.steps {
            if chance(&mut self.rng, self.knobs.crash_rate) {
                self.crash_and_recover();
            }
            // Simulated time moves on (ids take their millisecond from the clock).
            self.clock.advance_ms(1);
            if step % 40 == 39 {
                self.snapshot();
            }
            let a = self.step(step);
            self.engine().settle();
            match a {
                Some(Answer::Done(o)) => self.record(o),
                Some(Answer::StorageFailed) => self.crash_and_recover(),
                Some(Answer::Refused) | None => {}
            }
        }
        self.crash_and_recover();
        self.outcome.archived = self.db.as_ref().map_or(0, |db| db.archived_order_count());
        drop(self.db.take());
        let s = self.store.stats();
        self.outcome.faults = s.write_errors + s.no_space_errors + s.fsync_errors;
        self.outcome.store_digest = self.store.digest();
        self.outcome
    }
}

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => default.collect(),
    }
}

fn knobs(seed: u64, shard_count: usize) -> Knobs {
    Knobs { seed, steps: 400, shard_count, crash_rate: 0.02, faults: FaultRates::uniform(0.003), torn: 0.5 }
}

#[test]
fn crashes_and_storage_faults_lose_nothing_acknowledged() {
    let (mut recoveries, mut faults, mut from_snapshot, mut archived) = (0, 0, 0, 0);
    let seeds = seeds(0..16);
    for &seed in &seeds {
        let out = Sim::new(knobs(seed, 3)).run();
        recoveries += out.recoveries;
        faults += out.faults;
        from_snapshot += out.from_snapshot;
        archived += out.archived;
    }
    eprintln!(
        "{} seeds: {recoveries} recoveries ({from_snapshot} from a snapshot), {faults} storage faults, {archived} \
         orders archived",
        seeds.len()
    );
    assert!(from_snapshot > 0 && archived > 0, "snapshots and archiving must happen during the run");
    assert!(
        recoveries > seeds.len() && faults > 0,
        "the simulation must crash and fault: {recoveries} recoveries, {faults} faults"
    );
}

#[test]
fn the_same_seed_gives_the_same_surviving_state() {
    for seed in seeds(100..104) {
        // One shard: the writer's group commits (and so the store's operations) do not depend
        // on thread timing, so the whole run is a function of the seed.
        let first = Sim::new(knobs(seed, 1)).run();
        let second = Sim::new(knobs(seed, 1)).run();
        assert!(first.recoveries > 1, "seed {seed}: {first:?}");
        assert_eq!(first, second, "seed {seed}: two runs of one seed differ");
    }
}

/// The real snapshot fallback over the simulated disk: a damaged newest snapshot is skipped,
/// recovery starts from the previous one and replays the log it kept.
#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_previous_one() {
    let seed = 7;
    let _guard = SeedGuard(seed);
    let mut sim =
        Sim::new(Knobs { steps: 0, crash_rate: 0.0, faults: FaultRates::default(), torn: 0.0, ..knobs(seed, 2) });
    sim.open();
    sim.setup();
    for round in 0..3 {
        for step in 0..40 {
            if let Some(Answer::Done(o)) = sim.step(round * 100 + step) {
                sim.record(o);
            }
            sim.clock.advance_ms(1);
        }
        sim.engine().settle();
        sim.snapshot();
    }
    let newest = sim.store.snapshots().list().unwrap().last().map(|(n, _)| *n).unwrap();
    assert_eq!(sim.store.snapshots().list().unwrap().len(), 2, "two generations are kept");
    assert!(sim.store.damage_snapshot(newest));
    sim.crash_and_recover();
    let db = sim.db.as_ref().unwrap();
    assert_eq!(db.recovery().snapshots_rejected, 1, "{:?}", db.recovery());
    assert!(db.recovery().snapshot_lsn.is_some_and(|l| l < newest), "{:?}", db.recovery());
}

/// A crash may keep an `order_archived` record but not its archive entry; recovery writes the
/// entry again. That write must be on disk before a snapshot covers the record: recovery skips
/// covered records, so after the next crash nothing would bring the order back.
#[test]
fn an_archive_entry_recovery_writes_again_is_durable_before_a_snapshot_covers_its_record() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let ecfg = EngineConfig { shard_count: 2, archive_after_ms: 30_000, ..EngineConfig::default() };
    let pcfg = PersistenceConfig::new("unused");
    let open = |store: &SimStore| {
        let (s, w) = (Arc::new(store.clone()), Box::new(store.clone()));
        DurableEngine::open_on(s, w, pcfg.clone(), ecfg.clone(), clock.clone()).expect("open")
    };
    // A log holding a canceled order and its `order_archived`, and an archive entry for it.
    let first = SimStore::new(SimConfig::new(1));
    let db = open(&first);
    db.engine().create_sku(common::spec("tee", 1990, 5, None)).wait().unwrap();
    let req = CreateOrder::new("alice", &[("tee", 1)], "k-1");
    let order = db.engine().create_order(req).wait().unwrap();
    db.engine().cancel_order(order.order_id, Initiator::User, none()).wait().unwrap();
    clock.advance_ms(31_000);
    db.engine().settle();
    assert_eq!(db.archived_order_count(), 1);
    db.close_without_snapshot();
    // The same log without the archive entry: what a crash between the two may leave.
    let store = SimStore::new(SimConfig::new(2));
    let mut records = Vec::new();
    first
        .for_each_record(&mut |lsn, bytes| {
            records.push((lsn, bytes.to_vec()));
            Ok(())
        })
        .unwrap();
    let mut writer = store.clone();
    surge_persistence::LogStore::append(&mut writer, &records).unwrap();
    surge_persistence::LogStore::flush(&mut writer, true).unwrap();
    assert_eq!(store.archived_count(), 0);
    // Recovery writes the entry again; a snapshot then covers the record; power fails.
    let db = open(&store);
    assert_eq!(db.recovery().archived_rewritten, 1);
    db.snapshot_now().unwrap();
    drop(db);
    store.crash();
    let db = open(&store);
    assert!(db.recovery().records_skipped > 0, "the snapshot covers the record: {:?}", db.recovery());
    let got = db.engine().get_order(order.order_id).expect("the archived order survives");
    assert_eq!(got.status, OrderStatus::Canceled);
}
