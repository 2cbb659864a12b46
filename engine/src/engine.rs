//! [`Engine`]: the cloneable handle users hold.
//!
//! It validates requests (nothing invalid reaches an actor), applies the sold-out fast path,
//! routes commands to shard mailboxes, and serves queries from read models.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use rust_decimal::Decimal;

use crate::audit::AuditReport;
use crate::clock::{Clock, SystemClock};
use crate::config::EngineConfig;
use crate::domain::{
    CreateOrder, DisputeResolution, Initiator, ListOrders, Order, OrderId, OrderPage, SkuSpec, SkuUpdate, SkuView,
    TransitionOptions,
};
use crate::error::{EngineError, EngineResult};
use crate::event::{ChangeObserver, JournalFactory, NullJournal, OrderArchive, StorageGate};
use crate::order::OrderCommand;
use crate::pending::Pending;
use crate::shard::{shard_for_key, OrderMsg, ReadModels, Reply, Shard, ShardMsg, ShardParts, SkuMsg};
use crate::snowflake::shard_of;
use crate::state::EngineState;
use crate::state_machine::OrderEventKind;
use crate::stats::{EngineStats, ShardCounters};

/// Longest SKU id, user id and payment id, in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Longest name, reason or tracking number, in bytes.
pub const TEXT_BYTES_MAX: usize = 256;
/// Largest unit price: 10^12 currency units (`create_sku`, `update_sku`). With at most
/// [`PRICE_SCALE_MAX`] decimal places, a price's mantissa stays below 10^16, so even 255 line
/// items × `u32::MAX` units × `PRICE_MAX` (about 1.1 × 10^28) stay below `Decimal::MAX`
/// (about 7.9 × 10^28): no order total can overflow (issue 10, item 3).
pub const PRICE_MAX: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0);
/// Most decimal places of a price: 4, the most minor units of any ISO 4217 currency.
pub const PRICE_SCALE_MAX: u32 = 4;
/// Largest stock of a SKU, in units (`initial_stock`, and `stocked_total` after any
/// `adjust_stock`): 10^15, far above any real inventory and the load generator's 10^12, far
/// below `u64::MAX`, so no stock counter can overflow.
pub const STOCK_MAX: u64 = 1_000_000_000_000_000;

/// A handle to a running engine. Cheap to clone; every clone talks to the same shards. The
/// shards stop when the last clone is dropped (or at [`Engine::shutdown`]).
///
/// Commands return a [`Pending`]: `.await` it, or `.wait()` on a plain thread. Queries
/// (`get_order`, `list_orders`, `get_sku`) answer at once from read models and never queue
/// behind a busy actor.
///
/// # Example
/// ```
/// use surge_engine::{CreateOrder, Engine, EngineConfig, SkuSpec, SaleRules};
/// use rust_decimal::Decimal;
///
/// let engine = Engine::in_memory(EngineConfig::default()).unwrap();
/// engine.create_sku(SkuSpec {
///     sku_id: "phone".into(), name: "Phone".into(), price: Decimal::new(59990, 2),
///     initial_stock: 1, rules: SaleRules::default(),
/// }).wait().unwrap();
///
/// let order = engine.create_order(CreateOrder::new("alice", &[("phone", 1)], "k1")).wait().unwrap();
/// assert_eq!(order.total, Decimal::new(59990, 2));
/// let late = engine.create_order(CreateOrder::new("bob", &[("phone", 1)], "k1")).wait();
/// assert_eq!(late.unwrap_err().code(), "sold_out");
///
/// let paid = engine.pay(order.order_id, "psp-1", order.total, Default::default()).wait().unwrap();
/// assert_eq!(paid.status.as_str(), "paid");
/// assert_eq!(engine.get_sku("phone").unwrap().sold, 1);
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<EngineConfig>,
    shard_count: usize,
    clock: Arc<dyn Clock>,
    gate: Arc<StorageGate>,
    archive: Option<Arc<dyn OrderArchive>>,
    external: Vec<Sender<ShardMsg>>,
    internal: Vec<Sender<ShardMsg>>,
    read: Arc<ReadModels>,
    threads: Vec<JoinHandle<()>>,
    /// Monitoring counters, one per shard.
    counters: Vec<Arc<ShardCounters>>,
    /// Shard threads that have exited (each after dropping its journal).
    exited: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for tx in &self.internal {
            let _ = tx.send(ShardMsg::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Builds an [`Engine`] with an injected clock and journal.
pub struct EngineBuilder {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    journal: JournalFactory,
    gate: Arc<StorageGate>,
    state: EngineState,
    archive: Option<Arc<dyn OrderArchive>>,
    observer: Option<Arc<dyn ChangeObserver>>,
}

impl EngineBuilder {
    /// Use this clock (tests pass a [`crate::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Use these journals, one per shard (the persistence crate passes its WAL).
    pub fn journal(mut self, factory: JournalFactory) -> Self {
        self.journal = factory;
        self
    }

    /// Share this storage gate with the journals: while it is raised, writes are refused.
    pub fn storage_gate(mut self, gate: Arc<StorageGate>) -> Self {
        self.gate = gate;
        self
    }

    /// Archive terminal orders after `archive_after_ms` and read them back from `archive`.
    /// Without one (mode `none`), orders stay in memory.
    pub fn archive(mut self, archive: Arc<dyn OrderArchive>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// Tell `observer` about every durable change (subscriptions).
    pub fn observer(mut self, observer: Arc<dyn ChangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Start from recovered state instead of empty.
    pub fn state(mut self, state: EngineState) -> Self {
        self.state = state;
        self
    }

    /// Start the shard threads.
    ///
    /// # Errors
    /// `invalid_config` for a bad configuration or if a thread cannot be spawned.
    pub fn start(mut self) -> EngineResult<Engine> {
        self.config.validate()?;
        let n = self.config.effective_shard_count();
        let config = Arc::new(EngineConfig { shard_count: n, ..self.config });
        let read = Arc::new(ReadModels::default());
        let (mut external, mut external_rx) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut internal, mut internal_rx) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(config.mailbox_capacity);
            external.push(tx);
            external_rx.push(rx);
            let (tx, rx) = crossbeam_channel::unbounded();
            internal.push(tx);
            internal_rx.push(rx);
        }
        // Place recovered actors by id, so the shard count may differ from the last run.
        let mut parts: Vec<EngineState> = (0..n).map(|_| EngineState::default()).collect();
        for (k, v) in std::mem::take(&mut self.state.skus) {
            parts[shard_for_key(&k, n)].skus.insert(k, v);
        }
        for (k, v) in std::mem::take(&mut self.state.orders) {
            parts[shard_of(k.0, n)].orders.insert(k, v);
        }
        let exited = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counters: Vec<Arc<ShardCounters>> = (0..n).map(|_| Arc::default()).collect();
        let mut shards = Vec::with_capacity(n);
        // New ids stay above archived ones too (they are not in the recovered state).
        let id_floor = self.archive.as_ref().and_then(|a| a.highest_id());
        for ((id, (ext, int)), initial) in external_rx.into_iter().zip(internal_rx).enumerate().zip(parts) {
            let mut shard = Shard::new(ShardParts {
                id,
                config: config.clone(),
                clock: self.clock.clone(),
                external: ext,
                internal: int,
                peers: internal.clone(),
                read: read.clone(),
                journal: (self.journal)(id),
                initial,
                archive_enabled: self.archive.is_some(),
                archive: self.archive.clone(),
                observer: self.observer.clone(),
                counters: counters[id].clone(),
            })?;
            if let Some(floor) = id_floor {
                shard.observe_id(floor);
            }
            shards.push(shard);
        }
        let mut inner = Inner {
            config,
            shard_count: n,
            clock: self.clock,
            gate: self.gate,
            archive: self.archive,
            external,
            internal,
            read,
            threads: Vec::new(),
            counters,
            exited: exited.clone(),
        };
        for (id, shard) in shards.into_iter().enumerate() {
            let exited = exited.clone();
            let t = std::thread::Builder::new()
                .name(format!("surge-shard-{id}"))
                .spawn(move || {
                    // A panic in a shard is a broken invariant: end the process (fail-stop) rather
                    // than leave sagas waiting on a dead shard behind a server that looks alive.
                    crate::fatal::run_or_fail_stop(&format!("shard-{id}"), || shard.run());
                    exited.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
                .map_err(|e| EngineError::InvalidConfig { message: format!("cannot spawn shard thread: {e}") })?;
            inner.threads.push(t);
        }
        Ok(Engine { inner: Arc::new(inner) })
    }
}

/// A price must be 0..=[`PRICE_MAX`] with at most [`PRICE_SCALE_MAX`] decimal places.
fn check_price(price: Decimal) -> EngineResult<()> {
    if price.is_sign_negative() {
        return Err(EngineError::invalid("price must not be negative"));
    }
    if price > PRICE_MAX || price.scale() > PRICE_SCALE_MAX {
        return Err(EngineError::invalid(format!(
            "price must be at most {PRICE_MAX} with at most {PRICE_SCALE_MAX} decimal places"
        )));
    }
    Ok(())
}

fn check_text(what: &str, value: &str, max: usize) -> EngineResult<()> {
    if value.is_empty() || value.len() > max {
        return Err(EngineError::invalid(format!("{what} must be 1..={max} bytes")));
    }
    Ok(())
}

impl Engine {
    /// An engine with the system clock and no durability (mode `none`).
    ///
    /// # Errors
    /// `invalid_config`.
    pub fn in_memory(config: EngineConfig) -> EngineResult<Engine> {
        Self::builder(config).start()
    }

    /// A builder, to inject a clock or a journal.
    pub fn builder(config: EngineConfig) -> EngineBuilder {
        EngineBuilder {
            config,
            clock: Arc::new(SystemClock),
            journal: Box::new(|_| Box::new(NullJournal::default())),
            gate: Arc::new(StorageGate::default()),
            state: EngineState::default(),
            archive: None,
            observer: None,
        }
    }

    /// The configuration in force (with `shard_count` resolved).
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine clock, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn submit<T>(&self, shard: usize, make: impl FnOnce(Reply<T>) -> ShardMsg) -> Pending<T> {
        if self.inner.gate.is_failed() {
            return Pending::ready(Err(EngineError::StorageUnavailable {
                message: "the log cannot be written; writes are refused until storage recovers (see logs)".into(),
            }));
        }
        let (tx, rx) = oneshot::channel();
        match self.inner.external[shard].try_send(make(tx)) {
            Ok(()) => Pending::waiting(rx),
            Err(TrySendError::Full(_)) => Pending::ready(Err(EngineError::Overloaded)),
            Err(TrySendError::Disconnected(_)) => Pending::ready(Err(EngineError::ShuttingDown)),
        }
    }

    fn sku_shard(&self, sku_id: &str) -> usize {
        shard_for_key(sku_id, self.inner.shard_count)
    }

    // ---- SKUs -------------------------------------------------------------------------------

    /// Create a SKU with its initial stock and rules.
    ///
    /// # Errors
    /// `invalid_request` (empty or long id/name, negative price, a price above [`PRICE_MAX`] or
    /// with more than [`PRICE_SCALE_MAX`] decimal places, `initial_stock` above [`STOCK_MAX`],
    /// sale window ends before it starts), `sku_already_exists`.
    pub fn create_sku(&self, spec: SkuSpec) -> Pending<SkuView> {
        let check = || -> EngineResult<()> {
            check_text("sku_id", &spec.sku_id, ID_BYTES_MAX)?;
            check_text("name", &spec.name, TEXT_BYTES_MAX)?;
            check_price(spec.price)?;
            if spec.initial_stock > STOCK_MAX {
                return Err(EngineError::invalid(format!("initial_stock must be at most {STOCK_MAX}")));
            }
            if let (Some(a), Some(b)) = (spec.rules.sale_starts_at_ms, spec.rules.sale_ends_at_ms) {
                if b <= a {
                    return Err(EngineError::invalid("sale_ends_at_ms must be after sale_starts_at_ms"));
                }
            }
            Ok(())
        };
        if let Err(e) = check() {
            return Pending::ready(Err(e));
        }
        let sku_id: Arc<str> = Arc::from(spec.sku_id.as_str());
        self.submit(self.sku_shard(&sku_id), |r| ShardMsg::Sku(sku_id, SkuMsg::Create(spec, r)))
    }

    /// Change a SKU's name, price or rules. Existing orders keep their snapshot.
    ///
    /// # Errors
    /// `unknown_sku`, `invalid_request` (as [`Engine::create_sku`]).
    pub fn update_sku(&self, sku_id: &str, update: SkuUpdate) -> Pending<SkuView> {
        if let Some(name) = &update.name {
            if let Err(e) = check_text("name", name, TEXT_BYTES_MAX) {
                return Pending::ready(Err(e));
            }
        }
        if let Some(Err(e)) = update.price.map(check_price) {
            return Pending::ready(Err(e));
        }
        let Some(shared) = self.inner.read.skus.get(sku_id).map(|s| s.clone()) else {
            return Pending::ready(Err(EngineError::UnknownSku { sku_id: sku_id.to_owned() }));
        };
        self.submit(shared.shard, |r| ShardMsg::Sku(shared.sku_id.clone(), SkuMsg::Update(update, r)))
    }

    /// Add (`delta > 0`) or remove (`delta < 0`) stock, with a reason for the audit trail.
    ///
    /// Idempotent by `adjustment_id` (the caller's id for this adjustment, 1..=64 bytes, unique
    /// per SKU): a retry with the same id, delta and reason, say after `storage_unavailable` or
    /// a timeout, has no second effect and answers the SKU as it is now. The record is logged
    /// with the adjustment and kept in snapshots; each SKU remembers its newest
    /// [`ADJUSTMENT_IDS_PER_SKU_MAX`](crate::ADJUSTMENT_IDS_PER_SKU_MAX) ids (DESIGN.md
    /// "Idempotency": never do a thing twice).
    ///
    /// ```
    /// # use surge_engine::{Engine, EngineConfig, SkuSpec, SaleRules, Decimal};
    /// # let engine = Engine::in_memory(EngineConfig::default()).unwrap();
    /// # engine.create_sku(SkuSpec { sku_id: "tee".into(), name: "Tee".into(), price: Decimal::ONE,
    /// #     initial_stock: 0, rules: SaleRules::default() }).wait().unwrap();
    /// assert_eq!(engine.adjust_stock("tee", "po-17", 50, "restock").wait().unwrap().available, 50);
    /// // A retry is answered, not applied again.
    /// assert_eq!(engine.adjust_stock("tee", "po-17", 50, "restock").wait().unwrap().available, 50);
    /// let other = engine.adjust_stock("tee", "po-17", 60, "restock").wait();
    /// assert_eq!(other.unwrap_err().code(), "idempotency_conflict");
    /// ```
    ///
    /// # Errors
    /// `unknown_sku`; `invalid_adjustment` if available would go below 0;
    /// `idempotency_conflict` if `adjustment_id` was used with another delta or reason;
    /// `invalid_request` for a zero delta, a missing reason or a missing or long id.
    pub fn adjust_stock(&self, sku_id: &str, adjustment_id: &str, delta: i64, reason: &str) -> Pending<SkuView> {
        if let Err(e) = check_text("adjustment_id", adjustment_id, ID_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        if delta == 0 {
            return Pending::ready(Err(EngineError::invalid("delta must not be 0")));
        }
        if let Err(e) = check_text("reason", reason, TEXT_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        let Some(shared) = self.inner.read.skus.get(sku_id).map(|s| s.clone()) else {
            return Pending::ready(Err(EngineError::UnknownSku { sku_id: sku_id.to_owned() }));
        };
        let (reason, adjustment_id) = (Box::from(reason), Box::from(adjustment_id));
        self.submit(shared.shard, |reply| {
            ShardMsg::Sku(shared.sku_id.clone(), SkuMsg::Adjust { adjustment_id, delta, reason, reply })
        })
    }

    /// Counters and rules of one SKU (consistent snapshot; never torn).
    ///
    /// # Errors
    /// `unknown_sku`.
    pub fn get_sku(&self, sku_id: &str) -> EngineResult<SkuView> {
        self.inner
            .read
            .skus
            .get(sku_id)
            .map(|s| s.view())
            .ok_or_else(|| EngineError::UnknownSku { sku_id: sku_id.to_owned() })
    }

    /// Every SKU, sorted by id.
    pub fn list_skus(&self) -> Vec<SkuView> {
        let mut all: Vec<SkuView> = self.inner.read.skus.iter().map(|s| s.view()).collect();
        all.sort_by(|a, b| a.sku_id.cmp(&b.sku_id));
        all
    }

    // ---- orders -----------------------------------------------------------------------------

    /// Validate a create request without running it.
    fn check_create(&self, req: &CreateOrder) -> EngineResult<()> {
        let cfg = &self.inner.config;
        check_text("user_id", &req.user_id, ID_BYTES_MAX)?;
        check_text("idempotency_key", &req.idempotency_key, IDEMPOTENCY_KEY_BYTES_MAX)?;
        if req.items.is_empty() || req.items.len() > cfg.order_items_max {
            return Err(EngineError::invalid(format!("an order has 1..={} items", cfg.order_items_max)));
        }
        for (i, (sku_id, qty)) in req.items.iter().enumerate() {
            check_text("sku_id", sku_id, ID_BYTES_MAX)?;
            if *qty == 0 || *qty > cfg.item_qty_max {
                return Err(EngineError::invalid(format!("qty must be 1..={}", cfg.item_qty_max)));
            }
            if req.items[..i].iter().any(|(s, _)| s == sku_id) {
                return Err(EngineError::invalid(format!("sku {sku_id} appears twice")));
            }
        }
        Ok(())
    }

    /// Create an order: reserve every line item (a saga), snapshot prices, compute the total.
    ///
    /// Idempotent by `(user_id, idempotency_key)`: a retry with the same items returns the same
    /// order. Business rejections are not recorded, so a retry after `sold_out` runs again.
    ///
    /// # Errors
    /// `invalid_request`; `unknown_sku`, `sold_out`, `insufficient_stock`,
    /// `purchase_limit_exceeded`, `sale_not_started`, `sale_ended`, `sku_paused` (the first
    /// rejection in item order, with its sku_id; nothing stays reserved); `idempotency_conflict`;
    /// `overloaded`.
    pub fn create_order(&self, req: CreateOrder) -> Pending<Arc<Order>> {
        if let Err(e) = self.check_create(&req) {
            return Pending::ready(Err(e));
        }
        // Sold-out fast path: the first item's published counters and rules decide a rejection
        // without a round trip to its SKU actor (which stays the authority). Only the first
        // item, so the answer is still the first rejection in item order; and the rejection
        // still passes the user's shard, so a retry of an order that took the last unit finds
        // its idempotency record and gets its order, not `sold_out`.
        let fast_reject = match self.inner.read.skus.get(&*req.items[0].0) {
            None => Some(EngineError::UnknownSku { sku_id: req.items[0].0.to_string() }),
            Some(s) => s.fast_reject(self.inner.clock.now_ms()),
        };
        let shard = shard_for_key(&req.user_id, self.inner.shard_count);
        self.submit(shard, |r| ShardMsg::CreateOrder(req, r, fast_reject))
    }

    fn command(&self, order_id: OrderId, cmd: OrderCommand) -> Pending<Arc<Order>> {
        if let Some(reason) = &cmd.opts.reason {
            if reason.len() > TEXT_BYTES_MAX {
                return Pending::ready(Err(EngineError::invalid("reason must be at most 256 bytes")));
            }
        }
        let shard = shard_of(order_id.0, self.inner.shard_count);
        self.submit(shard, |r| ShardMsg::Order(order_id, OrderMsg::Command(cmd, Some(r))))
    }

    /// Move an order by an event that takes no parameters (`cancel`, `start_packing`,
    /// `deliver`, `complete`, `request_refund`, `confirm_refund`, `reject_refund`,
    /// `open_dispute`), as `by`.
    ///
    /// # Errors
    /// `unknown_order`, `invalid_transition` (with from and event), `version_conflict`,
    /// `invalid_request` for events that need parameters (use [`Engine::pay`],
    /// [`Engine::ship`], [`Engine::resolve_dispute`]) or are the engine's own
    /// (`payment_deadline`, `auto_complete`).
    pub fn transition(
        &self,
        order_id: OrderId,
        event: OrderEventKind,
        by: Initiator,
        opts: TransitionOptions,
    ) -> Pending<Arc<Order>> {
        use OrderEventKind as E;
        if matches!(event, E::Pay | E::Ship | E::ResolveDispute | E::PaymentDeadline | E::AutoComplete) {
            return Pending::ready(Err(EngineError::invalid(format!("{event} cannot be sent through transition()"))));
        }
        self.command(order_id, OrderCommand { opts, ..OrderCommand::new(event, by) })
    }

    /// Payment callback from the PSP. Idempotent by `payment_id`: the same payment twice is
    /// acknowledged once.
    ///
    /// # Errors
    /// `amount_mismatch` (amount ≠ total), `already_paid` (a *different* payment for a paid
    /// order: refund it), `order_not_payable` (canceled or otherwise closed: refund it),
    /// `unknown_order`, `version_conflict`, `invalid_request`.
    pub fn pay(
        &self,
        order_id: OrderId,
        payment_id: &str,
        amount: Decimal,
        opts: TransitionOptions,
    ) -> Pending<Arc<Order>> {
        if let Err(e) = check_text("payment_id", payment_id, ID_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        let cmd = OrderCommand {
            opts,
            payment: Some((Box::from(payment_id), amount)),
            ..OrderCommand::new(OrderEventKind::Pay, Initiator::Psp)
        };
        self.command(order_id, cmd)
    }

    /// Cancel an unpaid order (user or admin); its reservations are released before the reply.
    ///
    /// # Errors
    /// As [`Engine::transition`].
    pub fn cancel_order(&self, order_id: OrderId, by: Initiator, opts: TransitionOptions) -> Pending<Arc<Order>> {
        self.transition(order_id, OrderEventKind::Cancel, by, opts)
    }

    /// Hand a paid or packing order to the carrier.
    ///
    /// # Errors
    /// As [`Engine::transition`]; `invalid_request` for an empty or long tracking number.
    pub fn ship(&self, order_id: OrderId, tracking_number: &str, opts: TransitionOptions) -> Pending<Arc<Order>> {
        if let Err(e) = check_text("tracking_number", tracking_number, TEXT_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        let cmd = OrderCommand {
            opts,
            tracking_number: Some(Box::from(tracking_number)),
            ..OrderCommand::new(OrderEventKind::Ship, Initiator::Admin)
        };
        self.command(order_id, cmd)
    }

    /// Resolve a dispute: to `completed` or to `refunding`.
    ///
    /// # Errors
    /// As [`Engine::transition`].
    pub fn resolve_dispute(
        &self,
        order_id: OrderId,
        resolution: DisputeResolution,
        opts: TransitionOptions,
    ) -> Pending<Arc<Order>> {
        let cmd = OrderCommand {
            opts,
            resolution: Some(resolution),
            ..OrderCommand::new(OrderEventKind::ResolveDispute, Initiator::Admin)
        };
        self.command(order_id, cmd)
    }

    /// One order, from the read model.
    ///
    /// # Errors
    /// `unknown_order`.
    pub fn get_order(&self, order_id: OrderId) -> EngineResult<Arc<Order>> {
        if let Some(o) = self.inner.read.orders.get(&order_id) {
            return Ok(o.clone());
        }
        self.inner.archive.as_ref().and_then(|a| a.get(order_id)).ok_or(EngineError::UnknownOrder { order_id })
    }

    /// One page of a user's orders, newest first, optionally only one status. Pass the page's
    /// `next_before` as the next query's `before` to continue; it is `None` on the last page.
    /// Costs O(`limit`) whatever the user's order count (see [`crate::LIST_SCAN_FACTOR`] for
    /// filtered pages), live and archived orders alike.
    ///
    /// # Errors
    /// `invalid_request` if `limit` is 0 or above `list_limit_max`.
    ///
    /// # Example
    /// ```
    /// use surge_engine::{CreateOrder, Engine, EngineConfig, ListOrders, SkuSpec, SaleRules};
    /// use rust_decimal::Decimal;
    ///
    /// let engine = Engine::in_memory(EngineConfig::default()).unwrap();
    /// engine.create_sku(SkuSpec {
    ///     sku_id: "tee".into(), name: "T-shirt".into(), price: Decimal::new(1990, 2),
    ///     initial_stock: 10, rules: SaleRules::default(),
    /// }).wait().unwrap();
    /// for k in ["k1", "k2", "k3"] {
    ///     engine.create_order(CreateOrder::new("ann", &[("tee", 1)], k)).wait().unwrap();
    /// }
    /// let mut q = ListOrders { user_id: "ann".into(), status: None, limit: 2, before: None };
    /// let first = engine.list_orders(&q).unwrap();
    /// assert_eq!(first.orders.len(), 2);
    /// q.before = first.next_before;
    /// let last = engine.list_orders(&q).unwrap();
    /// assert_eq!((last.orders.len(), last.next_before), (1, None));
    /// ```
    pub fn list_orders(&self, q: &ListOrders) -> EngineResult<OrderPage> {
        let archive = self.inner.archive.as_deref();
        crate::listing::page(&self.inner.read, archive, q, self.inner.config.list_limit_max).map(|(page, _)| page)
    }

    /// Block until every shard is idle: all sagas, side effects and due timers have run. For
    /// tests and simulations (after moving a [`crate::ManualClock`]) and for orderly shutdown;
    /// gives up after 10,000 rounds if callers keep submitting.
    pub fn settle(&self) {
        for _ in 0..10_000 {
            let mut waits = Vec::with_capacity(self.inner.shard_count);
            for tx in &self.inner.internal {
                let (btx, brx) = oneshot::channel();
                if tx.send(ShardMsg::Barrier(btx)).is_err() {
                    return;
                }
                waits.push(brx);
            }
            let busy = waits.into_iter().map(|w| w.recv().unwrap_or(false)).fold(false, |a, b| a | b);
            if !busy {
                return;
            }
        }
    }

    /// Check every actor's state against every other's (see [`crate::audit`]). Call after
    /// [`Engine::settle`]. Costs a full copy of the state: a test and operations tool, not a
    /// hot-path call.
    pub fn audit(&self) -> AuditReport {
        let mut waits = Vec::with_capacity(self.inner.shard_count);
        for tx in &self.inner.internal {
            let (atx, arx) = oneshot::channel();
            if tx.send(ShardMsg::Audit(atx)).is_ok() {
                waits.push(arx);
            }
        }
        let shards = waits.into_iter().filter_map(|w| w.recv().ok()).collect();
        crate::audit::check(shards)
    }

    /// Capture every shard's state and its journal position (the cut: the log holds every event
    /// of shard `i` up to its `cuts[i]`-th batch in this state). Shards are captured one after
    /// another, not at one instant; replaying the log after each shard's cut and then
    /// [`EngineState::reconcile`] gives a consistent state. Blocks each shard while it copies.
    pub fn snapshot(&self) -> EngineResult<(EngineState, Vec<u64>)> {
        let mut waits = Vec::with_capacity(self.inner.shard_count);
        for tx in &self.inner.internal {
            let (stx, srx) = oneshot::channel();
            tx.send(ShardMsg::Snapshot(stx)).map_err(|_| EngineError::ShuttingDown)?;
            waits.push(srx);
        }
        let mut state = EngineState::default();
        let mut cuts = Vec::with_capacity(waits.len());
        for w in waits {
            let (part, cut) = w.recv().map_err(|_| EngineError::ShuttingDown)?;
            state.merge(part);
            cuts.push(cut);
        }
        Ok((state, cuts))
    }

    /// Stop every shard now, even while other clones of this handle exist (their later calls
    /// answer `shutting_down`). Each shard finishes the batch it is in and hands it to its
    /// journal; sagas still waiting on another shard are left to recovery's reconciliation.
    /// Waits at most `timeout` for the shards to exit; returns true if they all did.
    pub fn shutdown(&self, timeout: std::time::Duration) -> bool {
        for tx in &self.inner.internal {
            let _ = tx.send(ShardMsg::Shutdown);
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.inner.exited.load(std::sync::atomic::Ordering::SeqCst) >= self.inner.shard_count {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Number of shard threads.
    pub fn shard_count(&self) -> usize {
        self.inner.shard_count
    }

    /// Monitoring counters: per-shard mailbox depth and messages handled, orders created, order
    /// transitions by (from, to). Reads atomics and channel lengths only: cheap, never blocks a
    /// shard.
    pub fn stats(&self) -> EngineStats {
        let depths = self.inner.external.iter().zip(&self.inner.internal).map(|(e, i)| (e.len(), i.len()));
        EngineStats::read(&self.inner.counters, depths)
    }

    /// Live orders in the read model (all statuses).
    pub fn order_count(&self) -> usize {
        self.inner.read.orders.len()
    }
}
