//! Helpers shared by the persistence integration tests: SKU setup, a seeded workload that keeps a
//! ledger of what was acknowledged, and open/reopen helpers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use surge_engine::{
    Clock, CreateOrder, Decimal, Engine, EngineConfig, EngineState, Initiator, Order, OrderEventKind, OrderId,
    OrderStatus, SaleRules, SkuSpec, TransitionOptions,
};
use surge_persistence::{DurableEngine, PersistenceConfig, PersistenceError, SledStore};

/// The SKUs every workload uses: (id, price in cents, stock, per-user limit).
pub const SKUS: &[(&str, i64, u64, Option<u32>)] =
    &[("tee", 1990, 60, Some(3)), ("phone", 59990, 8, None), ("mug", 1250, 40, None), ("sticker", 99, 300, None)];

pub const USERS: usize = 10;

/// A small deterministic PRNG (splitmix64): no dependency, same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Engine settings of the tests: several shards, so sagas cross threads.
pub fn engine_cfg() -> EngineConfig {
    EngineConfig { shard_count: 3, ..EngineConfig::default() }
}

pub fn spec(sku_id: &str, price_cents: i64, stock: u64, per_user_limit: Option<u32>) -> SkuSpec {
    SkuSpec {
        sku_id: sku_id.into(),
        name: format!("{sku_id} (test)"),
        price: Decimal::new(price_cents, 2),
        initial_stock: stock,
        rules: SaleRules { per_user_limit, ..SaleRules::default() },
    }
}

pub fn create_skus(engine: &Engine) {
    for (id, cents, stock, limit) in SKUS {
        let view = engine.create_sku(spec(id, *cents, *stock, *limit)).wait().expect("create sku");
        assert_eq!(view.available, *stock);
    }
}

/// True for sled's "another handle still holds the database" error.
pub fn is_lock_contention(e: &PersistenceError) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// Retry `open` for at most 10 s while sled reports its file lock still held, and only then.
///
/// A reopen in the same process can find the lock still taken: dropping a `DurableEngine`
/// without `close` does not wait for its WAL writer thread (see
/// `reopen_immediately_after_drop_succeeds`), and even after `close` or after dropping a
/// `SledStore`, sled's background I/O tasks may still hold the file for a moment (see
/// `reopen_immediately_after_close_succeeds`). Any other error is returned at once.
pub fn retry_on_lock<T>(mut open: impl FnMut() -> Result<T, PersistenceError>) -> Result<T, PersistenceError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Err(e) if is_lock_contention(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Open (or reopen) a data directory, with the system clock or `clock`.
pub fn open_db(
    cfg: &PersistenceConfig,
    engine_cfg: &EngineConfig,
    clock: Option<Arc<dyn Clock>>,
) -> Result<DurableEngine, PersistenceError> {
    retry_on_lock(|| match &clock {
        Some(c) => DurableEngine::open_with(cfg.clone(), engine_cfg.clone(), c.clone(), |s| Box::new(s)),
        None => DurableEngine::open(cfg.clone(), engine_cfg.clone()),
    })
}

/// Open the raw WAL store of a data directory nothing else holds.
pub fn open_store(dir: &std::path::Path) -> SledStore {
    retry_on_lock(|| SledStore::open(dir)).expect("open the sled store")
}

/// The engine's full state after it settled.
pub fn state_of(engine: &Engine) -> EngineState {
    engine.settle();
    engine.snapshot().expect("engine snapshot").0
}

/// Audit must be healthy and every SKU must conserve stock.
pub fn assert_healthy(engine: &Engine) {
    engine.settle();
    let report = engine.audit();
    assert!(report.is_healthy(), "audit violations: {:#?}", report.violations);
    for v in engine.list_skus() {
        assert_eq!(v.available + v.reserved + v.sold, v.stocked_total, "conservation broken on {v:?}");
    }
}

/// What clients were told.
#[derive(Default)]
pub struct Ledger {
    /// The last acknowledged state of every order acknowledged as created.
    pub orders: BTreeMap<OrderId, Arc<Order>>,
    /// Every acknowledged create request, with the order it created.
    pub creates: Vec<(CreateOrder, OrderId)>,
    /// Business rejections of create_order, by code.
    pub rejections: BTreeMap<&'static str, usize>,
    /// Successful stock adjustments.
    pub adjustments: usize,
}

impl Ledger {
    pub fn record(&mut self, o: &Arc<Order>) {
        self.orders.insert(o.order_id, o.clone());
    }

    fn pick(&self, rng: &mut Rng, pred: impl Fn(&Order) -> bool) -> Option<Arc<Order>> {
        let c: Vec<&Arc<Order>> = self.orders.values().filter(|o| pred(o)).collect();
        if c.is_empty() {
            None
        } else {
            Some(c[rng.below(c.len())].clone())
        }
    }

    pub fn max_id(&self) -> OrderId {
        *self.orders.keys().next_back().expect("some orders")
    }

    pub fn count(&self, status: OrderStatus) -> usize {
        self.orders.values().filter(|o| o.status == status).count()
    }
}

fn create(engine: &Engine, ledger: &mut Ledger, req: CreateOrder) -> Result<Arc<Order>, &'static str> {
    match engine.create_order(req.clone()).wait() {
        Ok(o) => {
            assert_eq!(o.status, OrderStatus::PendingPayment);
            ledger.record(&o);
            ledger.creates.push((req, o.order_id));
            Ok(o)
        }
        Err(e) => {
            let code = e.code();
            assert!(
                matches!(code, "sold_out" | "insufficient_stock" | "purchase_limit_exceeded"),
                "unexpected create_order error {e:?}"
            );
            *ledger.rejections.entry(code).or_default() += 1;
            Err(code)
        }
    }
}

/// Rejections every phase produces on purpose: a per-user limit and a sold-out SKU.
pub fn scripted_rejections(engine: &Engine, ledger: &mut Ledger, tag: &str) {
    let greedy = format!("greedy-{tag}");
    create(engine, ledger, CreateOrder::new(&greedy, &[("tee", 3)], &format!("{tag}-greedy-1")))
        .expect("three tees are within the limit");
    let over = create(engine, ledger, CreateOrder::new(&greedy, &[("tee", 1)], &format!("{tag}-greedy-2")));
    assert_eq!(over.unwrap_err(), "purchase_limit_exceeded");
    let left = engine.get_sku("phone").expect("phone").available;
    if left > 0 {
        let whale = format!("whale-{tag}");
        create(engine, ledger, CreateOrder::new(&whale, &[("phone", left as u32)], &format!("{tag}-whale")))
            .expect("buy every phone left");
    }
    let late = create(engine, ledger, CreateOrder::new("late", &[("phone", 1)], &format!("{tag}-late")));
    assert_eq!(late.unwrap_err(), "sold_out");
}

fn ok(r: Result<Arc<Order>, surge_engine::EngineError>, what: &str) -> Arc<Order> {
    r.unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
}

/// A seeded mix of creates (some rejected), payments, cancels, shipping, deliveries, refunds,
/// stock adjustments and idempotent retries. Every answer is checked and recorded in `ledger`.
pub fn run_workload(engine: &Engine, rng: &mut Rng, ledger: &mut Ledger, tag: &str, steps: usize) {
    use OrderStatus as S;
    let none = TransitionOptions::default;
    for step in 0..steps {
        let r = rng.below(100);
        match r {
            0..=44 => {
                let user = format!("user-{}", rng.below(USERS));
                let n = 1 + rng.below(2);
                let mut items: Vec<(&str, u32)> = Vec::new();
                while items.len() < n {
                    let (sku, ..) = SKUS[rng.below(SKUS.len())];
                    if !items.iter().any(|(s, _)| *s == sku) {
                        items.push((sku, 1 + rng.below(2) as u32));
                    }
                }
                let _ = create(engine, ledger, CreateOrder::new(&user, &items, &format!("{tag}-{step}")));
            }
            45..=59 => {
                if let Some(o) = ledger.pick(rng, |o| o.status == S::PendingPayment) {
                    let paid = ok(engine.pay(o.order_id, &format!("psp-{tag}-{step}"), o.total, none()).wait(), "pay");
                    assert_eq!(paid.status, S::Paid);
                    ledger.record(&paid);
                }
            }
            60..=69 => {
                if let Some(o) = ledger.pick(rng, |o| o.status == S::PendingPayment) {
                    let c = ok(engine.cancel_order(o.order_id, Initiator::User, none()).wait(), "cancel");
                    assert_eq!(c.status, S::Canceled);
                    ledger.record(&c);
                }
            }
            70..=77 => {
                if let Some(o) = ledger.pick(rng, |o| o.status == S::Paid) {
                    let o = if rng.below(2) == 0 {
                        let p = engine.transition(o.order_id, OrderEventKind::StartPacking, Initiator::Admin, none());
                        ok(p.wait(), "start_packing")
                    } else {
                        o
                    };
                    let s = ok(engine.ship(o.order_id, &format!("TRK-{tag}-{step}"), none()).wait(), "ship");
                    assert_eq!(s.status, S::Shipped);
                    ledger.record(&s);
                }
            }
            78..=83 => {
                if let Some(o) = ledger.pick(rng, |o| o.status == S::Shipped) {
                    let d = engine.transition(o.order_id, OrderEventKind::Deliver, Initiator::Admin, none());
                    let d = ok(d.wait(), "deliver");
                    assert_eq!(d.status, S::Delivered);
                    ledger.record(&d);
                }
            }
            84..=89 => {
                let (sku, ..) = SKUS[rng.below(SKUS.len())];
                let available = engine.get_sku(sku).expect("sku").available;
                let delta = if rng.below(3) == 0 && available > 0 { -1 } else { 1 + rng.below(4) as i64 };
                let v = engine
                    .adjust_stock(sku, &format!("{tag}-{step}"), delta, &format!("{tag} step {step}"))
                    .wait()
                    .expect("adjust");
                assert_eq!(v.available as i64, available as i64 + delta);
                ledger.adjustments += 1;
            }
            90..=94 => {
                if !ledger.creates.is_empty() {
                    let (req, id) = ledger.creates[rng.below(ledger.creates.len())].clone();
                    let again = ok(engine.create_order(req).wait(), "idempotent retry");
                    assert_eq!(again.order_id, id, "idempotent retry made a new order");
                    assert_eq!(again.status, ledger.orders[&id].status, "idempotent retry changed the order");
                }
            }
            _ => {
                if let Some(o) = ledger.pick(rng, |o| o.status == S::Paid) {
                    let t = engine.transition(o.order_id, OrderEventKind::RequestRefund, Initiator::User, none());
                    let rf = ok(t.wait(), "request_refund");
                    assert_eq!(rf.status, S::Refunding);
                    let t = engine.transition(o.order_id, OrderEventKind::ConfirmRefund, Initiator::Admin, none());
                    let done = ok(t.wait(), "confirm_refund");
                    assert_eq!(done.status, S::Refunded);
                    ledger.record(&done);
                }
            }
        }
    }
}

/// Every acknowledged order is present after recovery, exactly as last acknowledged.
pub fn assert_ledger_present(engine: &Engine, ledger: &Ledger) {
    for (id, want) in &ledger.orders {
        let got = engine.get_order(*id).unwrap_or_else(|e| panic!("acknowledged order {id} lost: {e:?}"));
        assert_eq!(&*got, &**want, "order {id} differs from what was acknowledged");
    }
}
