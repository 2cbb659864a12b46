//! Shard threads: each hosts many SKU and order actors and drains its mailboxes in batches.
//!
//! # Shape
//! A shard owns plain `HashMap`s of actors (virtual actors, as Orleans grains or LMAX's single
//! writer): no actor is a task or a thread, so millions of live orders cost memory only. It
//! receives from two channels:
//!
//! * `external`, bounded (`mailbox_capacity`): requests from [`crate::Engine`] handles. A full
//!   mailbox is answered `overloaded` by the sender at once.
//! * `internal`, from other shards: saga steps (reserve, confirm, release, their answers),
//!   barriers and shutdown. It is unbounded by type but bounded by construction: every internal
//!   message is caused by an external request (at most `order_items_max` each) or by a timer (at
//!   most `timers_per_tick_max` per tick), and internal messages are drained first, so sagas in
//!   flight finish before new ones start. It must never block or drop, or a saga could deadlock or
//!   leak stock.
//!
//! # Batches
//! One loop turn handles up to `batch_size_max` messages, then *flushes*: the batch's events go
//! to the [`Journal`], and only after it returns are the batch's replies and cross-shard
//! messages released. This is where group commit slots in.
//!
//! # Sagas
//! `create_order` runs on the shard of the *user* (which owns the user's idempotency records and
//! orders): it mints the order id, asks every SKU actor to reserve concurrently, and when all have
//! answered either creates the order or releases what was granted (compensation, idempotent) and
//! returns the first rejection in item order.

use std::collections::{BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use dashmap::DashMap;
use rust_decimal::Decimal;

use crate::clock::Clock;
use crate::config::{ms_i64, EngineConfig};
use crate::domain::{
    CreateOrder, HistoryEntry, Initiator, LineItem, Order, OrderId, OrderStatus, SkuId, SkuSpec, SkuUpdate, SkuView,
    UserId,
};
use crate::error::{EngineError, EngineResult};
use crate::event::{ChangeObserver, Event, Journal, OrderArchive, OrderEvent, SkuEvent};
use crate::order::{self, Decision, OrderCommand};
use crate::publish::BatchPublication;
use crate::sku::{Grant, SkuActor, SkuShared, SkuState};
use crate::snowflake::Snowflake;
use crate::state::EngineState;
use crate::state_machine::{OrderEventKind, StockEffect, TimerEffect};
use crate::stats::ShardCounters;

/// Where a caller waits for its answer.
pub(crate) type Reply<T> = oneshot::Sender<EngineResult<T>>;

/// The SKU actor's messages.
pub(crate) enum SkuMsg {
    Create(SkuSpec, Reply<SkuView>),
    Update(SkuUpdate, Reply<SkuView>),
    Adjust {
        adjustment_id: Box<str>,
        delta: i64,
        reason: Box<str>,
        reply: Reply<SkuView>,
    },
    Reserve {
        order_id: OrderId,
        user_id: UserId,
        qty: u32,
        item: u8,
        reply_shard: usize,
    },
    Confirm {
        order_id: OrderId,
        reply_shard: usize,
    },
    Release {
        order_id: OrderId,
        reply_shard: usize,
    },
    Restock {
        order_id: OrderId,
        reply_shard: usize,
    },
    /// The order was archived: drop its sold holding (no answer).
    Forget {
        order_id: OrderId,
    },
    /// The archived order was restored: hold its sold units again (no answer).
    Remember {
        order_id: OrderId,
        user_id: UserId,
        qty: u32,
    },
}

/// The order actor's messages.
pub(crate) enum OrderMsg {
    /// A state-machine event; timers send it without a reply.
    Command(OrderCommand, Option<Reply<Arc<Order>>>),
    /// A SKU actor's answer to `Reserve` for line item `item`.
    Reserved { item: u8, result: Result<Grant, EngineError> },
    /// A SKU actor finished a confirm, release or restock.
    StockDone,
}

/// Everything a shard's mailboxes carry.
pub(crate) enum ShardMsg {
    Sku(SkuId, SkuMsg),
    Order(OrderId, OrderMsg),
    /// Start a create-order saga (sent to the user's shard).
    /// The third field is the fast path's verdict: given unless the key names an existing order.
    CreateOrder(CreateOrder, Reply<Arc<Order>>, Option<EngineError>),
    /// Answer `true` if this shard did or has work since the previous barrier.
    Barrier(oneshot::Sender<bool>),
    /// Flush, then report this shard's state and journal position (snapshot cut).
    Snapshot(oneshot::Sender<(EngineState, u64)>),
    /// Report every actor's state for [`crate::Engine::audit`].
    Audit(oneshot::Sender<ShardAudit>),
    Shutdown,
}

/// One SKU actor's state as the audit sees it.
pub(crate) struct SkuAudit {
    pub view: SkuView,
    /// (order, user, units, sold?)
    pub holdings: Vec<(OrderId, UserId, u32, bool)>,
    pub user_units: Vec<(UserId, u32)>,
    pub sold_archived: u64,
}

/// Everything one shard holds, for the audit.
pub(crate) struct ShardAudit {
    pub skus: Vec<SkuAudit>,
    pub orders: Vec<Arc<Order>>,
    pub in_flight: usize,
}

/// A HashMap with aHash (random keys per process: fast, and not floodable by chosen ids).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
type FastDashMap<K, V> = DashMap<K, V, ahash::RandomState>;

/// Read models: what queries read without messaging actors (dashmap is for reads only; no stock
/// decision ever reads it).
#[derive(Default)]
pub(crate) struct ReadModels {
    pub orders: FastDashMap<OrderId, Arc<Order>>,
    /// A user's order ids in creation order (ids increase, all minted by the user's shard).
    /// Most users have one or two orders: inline, no heap allocation.
    pub user_orders: FastDashMap<UserId, smallvec::SmallVec<[OrderId; 2]>>,
    pub skus: FastDashMap<SkuId, Arc<SkuShared>>,
}

/// The shard that hosts the actor keyed by `key` (SKU ids, user ids). Fixed-key SipHash, so the
/// placement is the same in every process.
pub(crate) fn shard_for_key(key: &str, shard_count: usize) -> usize {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    key.hash(&mut h);
    (h.finish() % shard_count.max(1) as u64) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    PaymentDeadline,
    AutoComplete,
    Archive,
}

struct Saga {
    user_id: UserId,
    items: Vec<(SkuId, u32)>,
    idempotency_key: Arc<str>,
    grants: Vec<Option<Result<Grant, EngineError>>>,
    /// Set once compensation started: the rejection to return when it ends.
    compensating: Option<EngineError>,
}

enum FlightState {
    Creating(Box<Saga>),
    /// A transition waiting for its stock effects; the answer to give when they are done.
    Effect(Arc<Order>),
}

/// An order with messages out to SKU actors. Commands for it wait in `queued` so an order still
/// handles one thing at a time, including its side effects.
struct InFlight {
    waiters: Vec<Reply<Arc<Order>>>,
    acks_left: usize,
    state: FlightState,
    queued: VecDeque<OrderMsg>,
}

enum Deferred {
    Order(Reply<Arc<Order>>, EngineResult<Arc<Order>>),
    Sku(Reply<SkuView>, EngineResult<SkuView>),
    Barrier(oneshot::Sender<bool>, bool),
}

/// One shard's state. Runs on its own thread ([`Shard::run`]).
pub(crate) struct Shard {
    id: usize,
    shard_count: usize,
    config: Arc<EngineConfig>,
    clock: Arc<dyn Clock>,
    external: Receiver<ShardMsg>,
    internal: Receiver<ShardMsg>,
    peers: Vec<Sender<ShardMsg>>,
    read: Arc<ReadModels>,
    journal: Box<dyn Journal>,
    ids: Snowflake,
    skus: FastMap<SkuId, SkuActor>,
    orders: FastMap<OrderId, Arc<Order>>,
    in_flight: FastMap<OrderId, InFlight>,
    idempotency: FastMap<(UserId, Arc<str>), OrderId>,
    timers: BTreeSet<(i64, OrderId, TimerKind)>,
    local: VecDeque<ShardMsg>,
    events: Vec<Event>,
    outbox: Vec<(usize, ShardMsg)>,
    replies: Vec<Deferred>,
    handled_since_barrier: u64,
    /// Orders archived in this batch: they leave the read models once the batch is durable
    /// (and the archive has them), so a reader always finds them in one place or the other.
    archived: Vec<Arc<Order>>,
    archive_enabled: bool,
    /// Where archived orders are read back (commands on them; see `find_order`).
    archive: Option<Arc<dyn OrderArchive>>,
    /// Told about durable changes (subscriptions); `None` costs nothing.
    observer: Option<Arc<dyn ChangeObserver>>,
    /// Orders changed in this batch (new state; true if created): published when durable.
    changed_orders: Vec<(Arc<Order>, bool)>,
    /// SKUs changed in this batch, each once (their actors are marked dirty).
    dirty_skus: Vec<SkuId>,
    /// Monitoring counters (this thread is their only writer).
    counters: Arc<ShardCounters>,
}

/// Channels and shared parts a shard is built from.
pub(crate) struct ShardParts {
    pub id: usize,
    pub config: Arc<EngineConfig>,
    pub clock: Arc<dyn Clock>,
    pub external: Receiver<ShardMsg>,
    pub internal: Receiver<ShardMsg>,
    pub peers: Vec<Sender<ShardMsg>>,
    pub read: Arc<ReadModels>,
    pub journal: Box<dyn Journal>,
    /// Recovered actors that live on this shard.
    pub initial: EngineState,
    /// Whether terminal orders are archived (only with an archive to read them back from).
    pub archive_enabled: bool,
    /// The archive, read for commands on archived orders.
    pub archive: Option<Arc<dyn OrderArchive>>,
    pub observer: Option<Arc<dyn ChangeObserver>>,
    pub counters: Arc<ShardCounters>,
}

impl Shard {
    pub fn new(p: ShardParts) -> EngineResult<Self> {
        let shard_count = p.peers.len();
        Ok(Self {
            id: p.id,
            shard_count,
            ids: Snowflake::new(p.config.node_id, p.id, shard_count)?,
            config: p.config,
            clock: p.clock,
            external: p.external,
            internal: p.internal,
            peers: p.peers,
            read: p.read,
            journal: p.journal,
            skus: FastMap::default(),
            orders: FastMap::default(),
            in_flight: FastMap::default(),
            idempotency: FastMap::default(),
            timers: BTreeSet::new(),
            local: VecDeque::new(),
            events: Vec::new(),
            outbox: Vec::new(),
            replies: Vec::new(),
            handled_since_barrier: 0,
            archived: Vec::new(),
            archive_enabled: p.archive_enabled,
            archive: p.archive,
            observer: p.observer,
            changed_orders: Vec::new(),
            dirty_skus: Vec::new(),
            counters: p.counters,
        }
        .install(p.initial))
    }

    /// Host recovered actors: SKUs, orders, and everything derived from orders (idempotency
    /// records, timers, read models, the id generator's floor). Logs nothing: these came from
    /// the log.
    fn install(mut self, state: EngineState) -> Self {
        for (sku_id, st) in state.skus {
            let actor = SkuActor::new(st, self.id, true);
            self.read.skus.insert(sku_id.clone(), actor.shared().clone());
            self.skus.insert(sku_id, actor);
        }
        for (id, order) in state.orders {
            self.ids.observe(id.0);
            self.index_order(&order);
            match order.status {
                OrderStatus::PendingPayment => {
                    self.timers.insert((order.payment_deadline_ms, id, TimerKind::PaymentDeadline));
                }
                s if s.is_terminal() && self.archive_enabled => {
                    let at = order.updated_at_ms.saturating_add(ms_i64(self.config.archive_after_ms));
                    self.timers.insert((at, id, TimerKind::Archive));
                }
                OrderStatus::Delivered => {
                    self.timers.insert((
                        auto_complete_at(&order, self.config.auto_complete_ms),
                        id,
                        TimerKind::AutoComplete,
                    ));
                }
                _ => {}
            }
            self.orders.insert(id, order);
        }
        self
    }

    /// Never mint an id at or below `id` (an archived order's, after recovery).
    pub fn observe_id(&mut self, id: OrderId) {
        self.ids.observe(id.0);
    }

    /// Idempotency record and read models of an order.
    fn index_order(&mut self, order: &Arc<Order>) {
        let id = order.order_id;
        self.idempotency.insert((order.user_id.clone(), order.idempotency_key.clone()), id);
        self.index_order_reads(order);
    }

    /// Read models of a recovered order (durable: published at once).
    fn index_order_reads(&mut self, order: &Arc<Order>) {
        let id = order.order_id;
        self.read.orders.insert(id, order.clone());
        // In place: a different shard count may spread a user's orders over several shards.
        crate::publish::index_user_order(&self.read, order);
    }

    /// The shard loop: block for a message (or a tick), drain a batch, fire timers, flush.
    pub fn run(mut self) {
        let tick = Duration::from_millis(self.config.tick_interval_ms);
        let batch_max = self.config.batch_size_max;
        loop {
            let first = crossbeam_channel::select! {
                recv(self.internal) -> m => m.ok(),
                recv(self.external) -> m => m.ok(),
                default(tick) => None,
            };
            let mut stop = false;
            let mut handled = 0usize;
            if let Some(m) = first {
                stop |= self.handle(m);
                handled += 1;
            }
            while handled < batch_max && !stop {
                let m = match self.internal.try_recv() {
                    Ok(m) => m,
                    Err(_) => match self.external.try_recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    },
                };
                stop |= self.handle(m);
                handled += 1;
                self.drain_local();
            }
            self.drain_local();
            self.fire_timers();
            self.drain_local();
            self.flush();
            self.counters.handled(handled as u64);
            if stop {
                return;
            }
        }
    }

    fn drain_local(&mut self) {
        while let Some(m) = self.local.pop_front() {
            self.handle(m);
        }
    }

    /// Handle one message; true means stop.
    fn handle(&mut self, msg: ShardMsg) -> bool {
        if !matches!(msg, ShardMsg::Barrier(_)) {
            self.handled_since_barrier += 1;
        }
        match msg {
            ShardMsg::Sku(sku_id, m) => self.handle_sku(sku_id, m),
            ShardMsg::Order(order_id, m) => self.handle_order(order_id, m),
            ShardMsg::CreateOrder(req, reply, fast_reject) => self.start_saga(req, reply, fast_reject),
            ShardMsg::Barrier(tx) => {
                let now = self.clock.now_ms();
                let timers_due = self.timers.first().is_some_and(|t| t.0 <= now);
                let busy = self.handled_since_barrier > 0 || !self.in_flight.is_empty() || timers_due;
                self.handled_since_barrier = 0;
                self.replies.push(Deferred::Barrier(tx, busy));
            }
            ShardMsg::Snapshot(tx) => {
                // Submit what this batch did so far, so the cut and the state agree.
                self.drain_local();
                self.flush();
                let state = EngineState {
                    skus: self.skus.iter().map(|(k, a)| (k.clone(), a.state().clone())).collect(),
                    orders: self.orders.iter().map(|(k, o)| (*k, o.clone())).collect(),
                };
                let _ = tx.send((state, self.journal.position()));
            }
            ShardMsg::Audit(tx) => {
                let skus = self
                    .skus
                    .values()
                    .map(|a| SkuAudit {
                        view: a.view(),
                        holdings: a.holdings().map(|(o, u, q, s)| (o, u.clone(), q, s)).collect(),
                        user_units: a.user_units().map(|(u, n)| (u.clone(), n)).collect(),
                        sold_archived: a.sold_archived(),
                    })
                    .collect();
                let orders = self.orders.values().cloned().collect();
                let _ = tx.send(ShardAudit { skus, orders, in_flight: self.in_flight.len() });
            }
            ShardMsg::Shutdown => return true,
        }
        false
    }

    /// Route a message to a shard: handled in this batch if local, sent at flush otherwise.
    fn send(&mut self, shard: usize, msg: ShardMsg) {
        if shard == self.id {
            self.local.push_back(msg);
        } else {
            self.outbox.push((shard, msg));
        }
    }

    fn reply_order(&mut self, reply: Option<Reply<Arc<Order>>>, result: EngineResult<Arc<Order>>) {
        if let Some(r) = reply {
            self.replies.push(Deferred::Order(r, result));
        }
    }

    /// Release the batch: journal first, then messages and replies.
    fn flush(&mut self) {
        if !self.events.is_empty() || !self.replies.is_empty() {
            let events = std::mem::take(&mut self.events);
            let replies = std::mem::take(&mut self.replies);
            let archived = std::mem::take(&mut self.archived);
            let read = self.read.clone();
            let observer = self.observer.clone();
            let publication = self.take_publication();
            // Submit before sending the batch's messages: the log stays causally ordered.
            self.journal.submit(
                self.id,
                events,
                Box::new(move |result| {
                    if result.is_ok() {
                        publication.publish(&read);
                    }
                    for order in archived {
                        let id = order.order_id;
                        // Unless it was restored meanwhile (then the read model holds a newer
                        // state of it, which stays).
                        if read.orders.remove_if(&id, |_, o| Arc::ptr_eq(o, &order)).is_none() {
                            continue;
                        }
                        if let Some(mut ids) = read.user_orders.get_mut(&order.user_id) {
                            ids.retain(|x| *x != id);
                        }
                    }
                    if let (Some(obs), Ok(())) = (&observer, &result) {
                        for (o, _) in &publication.orders {
                            obs.order_changed(o);
                        }
                        for sku in &publication.skus {
                            obs.stock_changed(sku.sku_id());
                        }
                    }
                    release(replies, result)
                }),
            );
        }
        for (shard, msg) in self.outbox.drain(..) {
            // Only fails when the peer has exited (shutdown): nothing is left to tell.
            let _ = self.peers[shard].send(msg);
        }
    }

    /// What this batch changed, for the read models (one publication per dirty SKU).
    fn take_publication(&mut self) -> BatchPublication {
        let mut skus = Vec::with_capacity(self.dirty_skus.len());
        for sku_id in self.dirty_skus.drain(..) {
            if let Some(actor) = self.skus.get_mut(&sku_id) {
                skus.push(actor.take_publication());
            }
        }
        BatchPublication { orders: std::mem::take(&mut self.changed_orders), skus }
    }

    // ---- SKU actors -------------------------------------------------------------------------

    fn handle_sku(&mut self, sku_id: SkuId, msg: SkuMsg) {
        let now = self.clock.now_ms();
        let unknown = || EngineError::UnknownSku { sku_id: sku_id.to_string() };
        match msg {
            SkuMsg::Create(spec, reply) => {
                let result = if self.skus.contains_key(&sku_id) {
                    Err(EngineError::SkuAlreadyExists { sku_id: sku_id.to_string() })
                } else {
                    let event = SkuEvent::Created {
                        sku_id: sku_id.clone(),
                        name: Arc::from(spec.name),
                        price: spec.price,
                        initial_stock: spec.initial_stock,
                        rules: spec.rules,
                    };
                    self.apply_sku(event);
                    self.skus.get(&sku_id).map(|a| a.view()).ok_or_else(unknown)
                };
                self.replies.push(Deferred::Sku(reply, result));
            }
            SkuMsg::Update(update, reply) => {
                let result = match self.skus.get(&sku_id) {
                    None => Err(unknown()),
                    Some(actor) => {
                        let cur = actor.state().view();
                        let mut rules = cur.rules;
                        if let Some(v) = update.per_user_limit {
                            rules.per_user_limit = v;
                        }
                        if let Some(v) = update.sale_starts_at_ms {
                            rules.sale_starts_at_ms = v;
                        }
                        if let Some(v) = update.sale_ends_at_ms {
                            rules.sale_ends_at_ms = v;
                        }
                        if let Some(v) = update.paused {
                            rules.paused = v;
                        }
                        let event = SkuEvent::Updated {
                            sku_id: sku_id.clone(),
                            name: update.name.map(Arc::from).unwrap_or(cur.name),
                            price: update.price.unwrap_or(cur.price),
                            rules,
                        };
                        self.apply_sku(event);
                        self.skus.get(&sku_id).map(|a| a.view()).ok_or_else(unknown)
                    }
                };
                self.replies.push(Deferred::Sku(reply, result));
            }
            SkuMsg::Adjust { adjustment_id, delta, reason, reply } => {
                let result = match self.skus.get(&sku_id).map(|a| a.decide_adjust(&adjustment_id, delta, &reason)) {
                    None => Err(unknown()),
                    Some(Err(e)) => Err(e),
                    Some(Ok(event)) => {
                        // `None`: a retry of an adjustment already applied; answer the SKU as is.
                        if let Some(event) = event {
                            self.apply_sku(event);
                        }
                        self.skus.get(&sku_id).map(|a| a.view()).ok_or_else(unknown)
                    }
                };
                self.replies.push(Deferred::Sku(reply, result));
            }
            SkuMsg::Reserve { order_id, user_id, qty, item, reply_shard } => {
                let result = match self.skus.get(&sku_id) {
                    None => Err(unknown()),
                    Some(actor) => actor.state().decide_reserve(order_id, &user_id, qty, now).map(|(grant, event)| {
                        if let Some(e) = event {
                            self.apply_sku(e);
                        }
                        grant
                    }),
                };
                self.send(reply_shard, ShardMsg::Order(order_id, OrderMsg::Reserved { item, result }));
            }
            SkuMsg::Confirm { order_id, reply_shard } => {
                let event = self.skus.get(&sku_id).and_then(|a| a.decide_confirm(order_id));
                self.stock_done(event, order_id, reply_shard);
            }
            SkuMsg::Release { order_id, reply_shard } => {
                let event = self.skus.get(&sku_id).and_then(|a| a.decide_release(order_id));
                self.stock_done(event, order_id, reply_shard);
            }
            SkuMsg::Forget { order_id } => {
                if let Some(e) = self.skus.get(&sku_id).and_then(|a| a.decide_forget(order_id)) {
                    self.apply_sku(e);
                }
            }
            SkuMsg::Remember { order_id, user_id, qty } => {
                if let Some(e) = self.skus.get(&sku_id).and_then(|a| a.decide_remember(order_id, &user_id, qty)) {
                    self.apply_sku(e);
                }
            }
            SkuMsg::Restock { order_id, reply_shard } => {
                let event = self.skus.get(&sku_id).and_then(|a| a.decide_restock(order_id));
                self.stock_done(event, order_id, reply_shard);
            }
        }
    }

    /// Apply a confirm/release/restock (none if it was already done: idempotent) and tell the
    /// order actor.
    fn stock_done(&mut self, event: Option<SkuEvent>, order_id: OrderId, reply_shard: usize) {
        if let Some(e) = event {
            self.apply_sku(e);
        }
        self.send(reply_shard, ShardMsg::Order(order_id, OrderMsg::StockDone));
    }

    /// Apply a SKU event to its actor (creating it for `Created`), mark it for publication at
    /// the end of the batch, and journal it.
    fn apply_sku(&mut self, event: SkuEvent) {
        if let SkuEvent::Created { sku_id, .. } = &event {
            if let Some(actor) = SkuState::from_created(&event).map(|st| SkuActor::new(st, self.id, false)) {
                self.skus.insert(sku_id.clone(), actor);
                self.dirty_skus.push(sku_id.clone());
            }
        } else if let Some(actor) = self.skus.get_mut(sku_id_of(&event)) {
            if actor.apply(&event) {
                self.dirty_skus.push(sku_id_of(&event).clone());
            }
        }
        self.events.push(Event::Sku(event));
    }

    // ---- order actors -----------------------------------------------------------------------

    fn start_saga(&mut self, req: CreateOrder, reply: Reply<Arc<Order>>, fast_reject: Option<EngineError>) {
        let key: (UserId, Arc<str>) = (req.user_id.clone(), Arc::from(req.idempotency_key.as_str()));
        if let Some(&existing) = self.idempotency.get(&key) {
            if let Some(f) = self.in_flight.get_mut(&existing) {
                if let FlightState::Creating(saga) = &f.state {
                    if saga.items == req.items {
                        f.waiters.push(reply);
                    } else {
                        self.replies
                            .push(Deferred::Order(reply, Err(EngineError::IdempotencyConflict { order_id: existing })));
                    }
                    return;
                }
            }
            if let Some(order) = self.orders.get(&existing) {
                let result = if order.same_items(&req.items) {
                    Ok(order.clone())
                } else {
                    Err(EngineError::IdempotencyConflict { order_id: existing })
                };
                self.replies.push(Deferred::Order(reply, result));
                return;
            }
        }
        if let Some(e) = fast_reject {
            self.replies.push(Deferred::Order(reply, Err(e)));
            return;
        }
        let order_id = OrderId(self.ids.next_id(&*self.clock));
        let n = req.items.len();
        for (i, (sku_id, qty)) in req.items.iter().enumerate() {
            let shard = shard_for_key(sku_id, self.shard_count);
            let msg = SkuMsg::Reserve {
                order_id,
                user_id: req.user_id.clone(),
                qty: *qty,
                item: i as u8,
                reply_shard: self.id,
            };
            self.send(shard, ShardMsg::Sku(sku_id.clone(), msg));
        }
        let saga = Saga {
            user_id: req.user_id,
            items: req.items,
            idempotency_key: key.1.clone(),
            grants: (0..n).map(|_| None).collect(),
            compensating: None,
        };
        self.idempotency.insert(key, order_id);
        self.in_flight.insert(
            order_id,
            InFlight {
                waiters: vec![reply],
                acks_left: n,
                state: FlightState::Creating(Box::new(saga)),
                queued: VecDeque::new(),
            },
        );
    }

    fn handle_order(&mut self, order_id: OrderId, msg: OrderMsg) {
        match msg {
            OrderMsg::Reserved { item, result } => {
                let Some(f) = self.in_flight.get_mut(&order_id) else {
                    return;
                };
                if let FlightState::Creating(saga) = &mut f.state {
                    if let Some(slot) = saga.grants.get_mut(usize::from(item)) {
                        *slot = Some(result);
                    }
                }
                f.acks_left = f.acks_left.saturating_sub(1);
                if f.acks_left == 0 {
                    self.land(order_id);
                }
            }
            OrderMsg::StockDone => {
                let Some(f) = self.in_flight.get_mut(&order_id) else {
                    return;
                };
                f.acks_left = f.acks_left.saturating_sub(1);
                if f.acks_left == 0 {
                    self.land(order_id);
                }
            }
            OrderMsg::Command(cmd, reply) => {
                // A deadline that has passed takes effect before anything else the order hears,
                // whether or not its timer has fired yet: the outcome never depends on timing.
                if cmd.kind != OrderEventKind::PaymentDeadline && !self.in_flight.contains_key(&order_id) {
                    let now = self.clock.now_ms();
                    let expired = self
                        .orders
                        .get(&order_id)
                        .is_some_and(|o| o.status == OrderStatus::PendingPayment && now >= o.payment_deadline_ms);
                    if expired {
                        let deadline = OrderCommand::new(OrderEventKind::PaymentDeadline, Initiator::System);
                        self.run_command(order_id, deadline, None);
                    }
                }
                if let Some(f) = self.in_flight.get_mut(&order_id) {
                    f.queued.push_back(OrderMsg::Command(cmd, reply));
                    return;
                }
                self.run_command(order_id, cmd, reply);
            }
        }
    }

    /// Every answer for an in-flight order is in: finish the saga step or the transition.
    fn land(&mut self, order_id: OrderId) {
        let Some(f) = self.in_flight.remove(&order_id) else {
            return;
        };
        let InFlight { waiters, state, queued, .. } = f;
        match state {
            FlightState::Effect(order) => {
                for w in waiters {
                    self.replies.push(Deferred::Order(w, Ok(order.clone())));
                }
            }
            FlightState::Creating(mut saga) => {
                if let Some(err) = saga.compensating.take() {
                    self.idempotency.remove(&(saga.user_id.clone(), saga.idempotency_key.clone()));
                    for w in waiters {
                        self.replies.push(Deferred::Order(w, Err(err.clone())));
                    }
                } else {
                    // A total that would overflow is a rejection like any other: compensate.
                    match first_rejection(&saga).map_or_else(|| self.build_order(order_id, &saga), Err) {
                        Err(err) => {
                            let acks_left = self.reject_saga(order_id, &mut saga, err.clone());
                            if acks_left > 0 {
                                let state = FlightState::Creating(saga);
                                self.in_flight.insert(order_id, InFlight { waiters, acks_left, state, queued });
                                return;
                            }
                            for w in waiters {
                                self.replies.push(Deferred::Order(w, Err(err.clone())));
                            }
                        }
                        Ok(order) => {
                            self.apply_order_created(order.clone());
                            for w in waiters {
                                self.replies.push(Deferred::Order(w, Ok(order.clone())));
                            }
                        }
                    }
                }
            }
        }
        for m in queued {
            self.handle_order(order_id, m);
        }
    }

    /// A saga failed with `err`. If nothing was granted, forget its key and return 0 (answer at
    /// once). Otherwise start compensation (release every grant, newest first; the answer waits
    /// for the releases) and return how many releases were sent.
    fn reject_saga(&mut self, order_id: OrderId, saga: &mut Saga, err: EngineError) -> usize {
        let granted: Vec<SkuId> = saga
            .items
            .iter()
            .zip(&saga.grants)
            .filter(|(_, g)| matches!(g, Some(Ok(_))))
            .map(|((s, _), _)| s.clone())
            .collect();
        if granted.is_empty() {
            self.idempotency.remove(&(saga.user_id.clone(), saga.idempotency_key.clone()));
            return 0;
        }
        for sku_id in granted.iter().rev() {
            let msg = SkuMsg::Release { order_id, reply_shard: self.id };
            self.send(shard_for_key(sku_id, self.shard_count), ShardMsg::Sku(sku_id.clone(), msg));
        }
        saga.compensating = Some(err);
        granted.len()
    }

    /// The order a fully granted saga creates.
    ///
    /// # Errors
    /// `invalid_request` if a subtotal or the total overflows `Decimal` (prices are bounded at
    /// the boundary by `PRICE_MAX`, but state recovered from older data may hold any price).
    fn build_order(&self, order_id: OrderId, saga: &Saga) -> EngineResult<Arc<Order>> {
        let now = self.clock.now_ms();
        let mut items = Vec::with_capacity(saga.items.len());
        let mut total = Decimal::ZERO;
        for ((sku_id, qty), grant) in saga.items.iter().zip(&saga.grants) {
            let Some(Ok(g)) = grant else { continue };
            let overflow = || EngineError::invalid(format!("the order total overflows (sku {sku_id})"));
            let subtotal = g.unit_price.checked_mul(Decimal::from(*qty)).ok_or_else(overflow)?;
            total = total.checked_add(subtotal).ok_or_else(overflow)?;
            items.push(LineItem {
                sku_id: sku_id.clone(),
                name: g.name.clone(),
                qty: *qty,
                unit_price: g.unit_price,
                subtotal,
            });
        }
        // Exactly one entry's capacity: most orders never move (a flash sale's losers cancel).
        let history = vec![HistoryEntry {
            from: None,
            to: OrderStatus::PendingPayment,
            at_ms: now,
            by: Initiator::User,
            reason: None,
        }];
        Ok(Arc::new(Order {
            order_id,
            user_id: saga.user_id.clone(),
            items,
            total,
            status: OrderStatus::PendingPayment,
            version: 1,
            created_at_ms: now,
            updated_at_ms: now,
            payment_deadline_ms: now.saturating_add(ms_i64(self.config.payment_timeout_ms)),
            payment: None,
            tracking_number: None,
            shipped: false,
            refund_return_to: None,
            history,
            idempotency_key: saga.idempotency_key.clone(),
        }))
    }

    /// Install a created order: actor, read models, deadline timer, journal (the saga already
    /// recorded its idempotency key).
    fn apply_order_created(&mut self, order: Arc<Order>) {
        let id = order.order_id;
        // The saga recorded the idempotency key when it started; the read models get the order
        // when the batch is durable.
        self.timers.insert((order.payment_deadline_ms, id, TimerKind::PaymentDeadline));
        self.orders.insert(id, order.clone());
        self.changed_orders.push((order.clone(), true));
        self.counters.order_created();
        self.events.push(Event::Order(OrderEvent::Created(order)));
    }

    fn run_command(&mut self, order_id: OrderId, cmd: OrderCommand, reply: Option<Reply<Arc<Order>>>) {
        let now = self.clock.now_ms();
        // Timers (by `System`) never need an archived order: they skip the archive read.
        let Some((order, archived)) = self.find_order(order_id, cmd.by != Initiator::System) else {
            self.reply_order(reply, Err(EngineError::UnknownOrder { order_id }));
            return;
        };
        // An archived order is judged like a live one in its terminal status: a late `pay`
        // answers `order_not_payable` (or as a duplicate), other moves `invalid_transition`.
        let (event, rule) = match order::decide(&order, &cmd, now, self.config.dispute_window_ms) {
            Err(e) => return self.reply_order(reply, Err(e)),
            Ok(Decision::Duplicate) => return self.reply_order(reply, Ok(order)),
            Ok(Decision::Transition(event, rule)) => (event, rule),
        };
        if archived {
            // Only `open_dispute` within the window gets here: bring the order back first.
            self.restore_order(order.clone());
        }
        let next = order::apply(&order, &event);
        self.counters.transition(order.status, next.status);
        if order.status == OrderStatus::PendingPayment {
            self.timers.remove(&(order.payment_deadline_ms, order_id, TimerKind::PaymentDeadline));
        }
        // Delivered (by `deliver`, or back after a rejected refund): auto-complete is due
        // `auto_complete_ms` after the delivery, however the order got back here.
        if rule.timer == TimerEffect::AutoComplete || next.status == OrderStatus::Delivered {
            self.timers.insert((
                auto_complete_at(&next, self.config.auto_complete_ms),
                order_id,
                TimerKind::AutoComplete,
            ));
        }
        if next.status.is_terminal() && self.archive_enabled {
            let at = now.saturating_add(ms_i64(self.config.archive_after_ms));
            self.timers.insert((at, order_id, TimerKind::Archive));
        }
        self.orders.insert(order_id, next.clone());
        self.changed_orders.push((next.clone(), false));
        self.events.push(Event::Order(event));
        let stock_msg: Option<fn(OrderId, usize) -> SkuMsg> = match rule.stock {
            StockEffect::None => None,
            StockEffect::Confirm => Some(|order_id, reply_shard| SkuMsg::Confirm { order_id, reply_shard }),
            StockEffect::Release => Some(|order_id, reply_shard| SkuMsg::Release { order_id, reply_shard }),
            StockEffect::RestockIfNotShipped if !next.shipped => {
                Some(|order_id, reply_shard| SkuMsg::Restock { order_id, reply_shard })
            }
            StockEffect::RestockIfNotShipped => None,
        };
        let Some(make) = stock_msg else {
            return self.reply_order(reply, Ok(next));
        };
        for item in &next.items {
            let shard = shard_for_key(&item.sku_id, self.shard_count);
            self.send(shard, ShardMsg::Sku(item.sku_id.clone(), make(order_id, self.id)));
        }
        let flight = InFlight {
            waiters: reply.into_iter().collect(),
            acks_left: next.items.len(),
            state: FlightState::Effect(next),
            queued: VecDeque::new(),
        };
        self.in_flight.insert(order_id, flight);
    }

    /// The order a command is for, and whether it is archived: live in memory; or archived in
    /// this shard's recent batch but not yet durable (still in the read model); or read from
    /// the archive. The archive read is sled on this shard thread: off the hot path, because
    /// only ids that are not in memory (archived or unknown) get there.
    fn find_order(&self, order_id: OrderId, archived_too: bool) -> Option<(Arc<Order>, bool)> {
        if let Some(o) = self.orders.get(&order_id) {
            return Some((o.clone(), false));
        }
        if !self.archive_enabled || !archived_too {
            return None;
        }
        let archiving = self.read.orders.get(&order_id).map(|o| o.clone()).filter(|o| o.status.is_terminal());
        archiving.or_else(|| self.archive.as_ref()?.get(order_id)).map(|o| (o, true))
    }

    /// Bring an archived order back into memory (logged as `Restored`, so replay rebuilds it):
    /// actor, idempotency record, read models; its SKUs take back its sold holdings.
    fn restore_order(&mut self, order: Arc<Order>) {
        let id = order.order_id;
        self.idempotency.insert((order.user_id.clone(), order.idempotency_key.clone()), id);
        // Back in the read models (and the user's index) once this batch is durable.
        self.changed_orders.push((order.clone(), true));
        for item in &order.items {
            let shard = shard_for_key(&item.sku_id, self.shard_count);
            let msg = SkuMsg::Remember { order_id: id, user_id: order.user_id.clone(), qty: item.qty };
            self.send(shard, ShardMsg::Sku(item.sku_id.clone(), msg));
        }
        self.orders.insert(id, order.clone());
        self.events.push(Event::Order(OrderEvent::Restored(order)));
    }

    /// Move a terminal order out of memory: log it whole (the archive is written from the log),
    /// drop its actor and idempotency record, and tell its SKUs to drop their sold holdings.
    fn archive_order(&mut self, order_id: OrderId, now: i64) {
        if self.in_flight.contains_key(&order_id) {
            self.timers.insert((now.saturating_add(1_000), order_id, TimerKind::Archive));
            return;
        }
        let Some(order) = self.orders.get(&order_id) else { return };
        if !order.status.is_terminal() {
            return;
        }
        let Some(order) = self.orders.remove(&order_id) else { return };
        self.idempotency.remove(&(order.user_id.clone(), order.idempotency_key.clone()));
        for item in &order.items {
            let shard = shard_for_key(&item.sku_id, self.shard_count);
            self.send(shard, ShardMsg::Sku(item.sku_id.clone(), SkuMsg::Forget { order_id }));
        }
        self.archived.push(order.clone());
        self.events.push(Event::Order(OrderEvent::Archived(order)));
    }

    // ---- timers -----------------------------------------------------------------------------

    fn fire_timers(&mut self) {
        let now = self.clock.now_ms();
        for _ in 0..self.config.timers_per_tick_max {
            let Some(&(at, order_id, kind)) = self.timers.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.timers.pop_first();
            let event = match kind {
                TimerKind::PaymentDeadline => OrderEventKind::PaymentDeadline,
                TimerKind::AutoComplete => OrderEventKind::AutoComplete,
                TimerKind::Archive => {
                    self.archive_order(order_id, now);
                    continue;
                }
            };
            // Goes through the state machine like any command; if the order moved on, the
            // transition is invalid and nothing happens.
            self.handle_order(order_id, OrderMsg::Command(OrderCommand::new(event, Initiator::System), None));
        }
    }
}

/// Release a batch's replies once its events are durable; if they cannot be, no reply claims
/// success.
fn release(replies: Vec<Deferred>, result: Result<(), EngineError>) {
    fn gate<T>(v: EngineResult<T>, result: &Result<(), EngineError>) -> EngineResult<T> {
        match result {
            Ok(()) => v,
            Err(e) => Err(e.clone()),
        }
    }
    for d in replies {
        // A caller that stopped waiting dropped its receiver: nothing to do.
        match d {
            Deferred::Order(r, v) => {
                let _ = r.send(gate(v, &result));
            }
            Deferred::Sku(r, v) => {
                let _ = r.send(gate(v, &result));
            }
            Deferred::Barrier(r, busy) => {
                let _ = r.send(busy);
            }
        }
    }
}

/// When a delivered order completes by itself: `auto_complete_ms` after its delivery.
fn auto_complete_at(order: &Order, auto_complete_ms: u64) -> i64 {
    let delivered_at = order
        .history
        .iter()
        .rev()
        .find(|h| h.to == OrderStatus::Delivered && h.from == Some(OrderStatus::Shipped))
        .map_or(order.updated_at_ms, |h| h.at_ms);
    delivered_at.saturating_add(ms_i64(auto_complete_ms))
}

fn first_rejection(saga: &Saga) -> Option<EngineError> {
    saga.grants.iter().find_map(|g| match g {
        Some(Err(e)) => Some(e.clone()),
        None => Some(EngineError::ShuttingDown),
        Some(Ok(_)) => None,
    })
}

pub(crate) fn sku_id_of(event: &SkuEvent) -> &SkuId {
    match event {
        SkuEvent::Created { sku_id, .. }
        | SkuEvent::Updated { sku_id, .. }
        | SkuEvent::Adjusted { sku_id, .. }
        | SkuEvent::AdjustedOnce { sku_id, .. }
        | SkuEvent::Reserved { sku_id, .. }
        | SkuEvent::Confirmed { sku_id, .. }
        | SkuEvent::Released { sku_id, .. }
        | SkuEvent::Restocked { sku_id, .. }
        | SkuEvent::Forgotten { sku_id, .. }
        | SkuEvent::Remembered { sku_id, .. } => sku_id,
    }
}
