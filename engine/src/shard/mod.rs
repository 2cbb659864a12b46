//! Shards: each hosts many SKU and order actors and handles their messages in batches.
//!
//! # Shape
//! A shard owns plain `HashMap`s of actors (virtual actors, as Orleans grains or LMAX's single
//! writer): no actor is a task or a thread, so millions of live orders cost memory only.
//!
//! # A deterministic state machine and its runtimes
//! The shard's logic is [`ShardCore`], a state machine with no thread, channel, clock or I/O of
//! its own (issue 11, design change 1; TigerBeetle's VOPR and FoundationDB's simulator drive
//! real code the same way). It takes one input at a time, each with the time `now_ms` it
//! happens at: a mailbox message or a message from another shard ([`ShardCore::handle`]), or a
//! timer tick ([`ShardCore::fire_timers`]); messages it sends to itself are handled within the
//! batch ([`ShardCore::drain_local`]). It accumulates the batch's effects, and
//! [`ShardCore::end_batch`] returns them as data ([`BatchEffects`]): the journal events, the
//! messages to other shards, and what waits for durability (replies, the read-model
//! publication, archived orders' removals). Two runtimes drive it:
//!
//! * production, [`Shard`] (`runtime.rs`): a thread, crossbeam mailboxes and the [`Journal`](crate::event::Journal);
//! * the simulator, `crate::sim`: one thread, a seeded PRNG, a simulated clock and journal.
//!
//! # Mailboxes (production)
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
//! One loop turn handles up to `batch_size_max` messages, fires due timers, then *flushes*: the
//! batch's events go to the [`Journal`](crate::event::Journal) first, then its cross-shard messages are sent, and its
//! replies are released when the journal says the batch is durable. This is where group commit
//! slots in.
//!
//! # Sagas
//! `create_order` runs on the shard of the *user* (which owns the user's idempotency records and
//! orders): it mints the order id, asks every SKU actor to reserve concurrently, and when all have
//! answered either creates the order or releases what was granted (compensation, idempotent) and
//! returns the first rejection in item order.
//!
//! # Modules
//! * `msg`: the message enums; `effects`: a batch's effects as data; `runtime`: the production
//!   thread; `skus`: the SKU actors' messages; `saga`: create-order (reserve, compensate, land);
//!   `orders`: order commands and their stock effects, archived orders; `timers`: deadlines,
//!   auto-complete, archiving. This file: the core's state, its inputs and the end of a batch.

mod claims;
mod effects;
mod idempotency;
mod msg;
mod orders;
mod runtime;
mod saga;
mod skus;
mod timer_queue;
mod timers;
mod wallet;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::chunked::ChunkedMap;
use crate::config::EngineConfig;
use crate::domain::{Order, OrderId, OrderStatus, SkuId, UserId};
use crate::error::EngineResult;
use crate::event::{Event, OrderArchive, OutboxEvent};
use crate::publish::{BatchPublication, ReadModels};
use crate::routing::FastMap;
use crate::sku::SkuActor;
use crate::snowflake::Snowflake;
use crate::state::EngineState;
use crate::stats::ShardCounters;
pub(crate) use effects::{BatchEffects, Deferred, DurableEffects, JournalBatch};
use idempotency::IdempotencyIndex;
pub(crate) use msg::{
    Claim, EntriesQuery, OrderMsg, Reply, ShardAudit, ShardCut, ShardMsg, SkuAudit, SkuMsg, WalletMsg, WalletPay,
};
#[cfg(any(test, feature = "sim"))]
pub(crate) use runtime::refuse;
pub(crate) use runtime::{Shard, ShardParts};
use saga::InFlight;
use timer_queue::TimerQueue;

/// One shard's state and logic as a deterministic state machine: actors, sagas in flight,
/// timers, idempotency records, the id generator, and the current batch's effects. No thread,
/// channel, clock or I/O: time comes with each input (`now_ms`, ms since the Unix epoch,
/// engine clock). The one outside read is `archive` (a port: production's sled tree, `None` in
/// a simulation without archiving), for commands on orders no longer in memory.
pub(crate) struct ShardCore {
    id: usize,
    shard_count: usize,
    config: Arc<EngineConfig>,
    /// The time of the input being handled (engine clock, ms).
    now_ms: i64,
    /// Read models: filled at start for recovered actors; read for orders archived in a batch
    /// that is not yet durable (`find_order`). Only durability callbacks write them later.
    read: Arc<ReadModels>,
    ids: Snowflake,
    skus: FastMap<SkuId, SkuActor>,
    /// In copy-on-write chunks: a snapshot's cut shares them ([`crate::chunked`]).
    orders: ChunkedMap<OrderId, Arc<Order>>,
    in_flight: FastMap<OrderId, InFlight>,
    idempotency: IdempotencyIndex,
    timers: TimerQueue,
    local: VecDeque<ShardMsg>,
    events: Vec<Event>,
    outbox: Vec<(usize, ShardMsg)>,
    replies: Vec<Deferred>,
    handled_since_barrier: u64,
    /// Orders archived in this batch: they leave the read models once the batch is durable.
    archived: Vec<Arc<Order>>,
    archive_enabled: bool,
    /// Where archived orders are read back (commands on them; see `find_order`).
    archive: Option<Arc<dyn OrderArchive>>,
    /// Orders changed in this batch (new state; true if created): published when durable.
    changed_orders: Vec<(Arc<Order>, bool)>,
    /// SKUs changed in this batch, each once (their actors are marked dirty).
    dirty_skus: Vec<SkuId>,
    /// Monitoring counters (this core is their only writer).
    counters: Arc<ShardCounters>,
    /// The wallets of this shard's users (issue 14).
    wallets: crate::wallet::WalletBook,
    /// The assets wallets may hold (from `config.assets`, checked at start).
    assets: Arc<crate::wallet::Assets>,
    /// Wallet payment tries open on this shard (0 but for a log that left one open).
    open_tries: usize,
    /// Users whose wallet accounts changed in this batch (each once): pushed when durable.
    dirty_wallets: Vec<UserId>,
    /// SKUs changed in this batch by an event the outbox publishes (issue 15), each once.
    outbox_skus: Vec<SkuId>,
    /// Wallet accounts changed in this batch, for the outbox, each once.
    outbox_accounts: Vec<(UserId, crate::wallet::AssetCode)>,
    /// Cluster only: reservations of other partitions' orders to check with them, by due time
    /// (`claims.rs`).
    verify: std::collections::BTreeSet<(i64, OrderId, SkuId)>,
    /// Cluster only: recovered reservations are armed for checking (on the first tick).
    verify_armed: bool,
    /// Cluster only: when to look for saga steps waiting past `saga_timeout_ms` next.
    next_sweep_ms: i64,
}

/// What a [`ShardCore`] is built from.
pub(crate) struct CoreParts {
    pub id: usize,
    pub config: Arc<EngineConfig>,
    pub read: Arc<ReadModels>,
    /// Recovered actors that live on this shard.
    pub initial: EngineState,
    /// Whether terminal orders are archived (only with an archive to read them back from).
    pub archive_enabled: bool,
    /// The archive, read for commands on archived orders.
    pub archive: Option<Arc<dyn OrderArchive>>,
    pub counters: Arc<ShardCounters>,
    /// The assets wallets may hold.
    pub assets: Arc<crate::wallet::Assets>,
}

impl ShardCore {
    /// Shard `p.id` of `shard_count`, hosting the recovered actors in `p.initial`.
    ///
    /// # Errors
    /// `invalid_config` when the id generator refuses the node id or shard count.
    pub fn new(p: CoreParts, shard_count: usize) -> EngineResult<Self> {
        Ok(Self {
            id: p.id,
            shard_count,
            ids: Snowflake::new(p.config.node_id, p.id, shard_count)?,
            config: p.config,
            now_ms: 0,
            read: p.read,
            skus: FastMap::default(),
            orders: ChunkedMap::default(),
            in_flight: FastMap::default(),
            idempotency: IdempotencyIndex::default(),
            timers: TimerQueue::default(),
            local: VecDeque::new(),
            events: Vec::new(),
            outbox: Vec::new(),
            replies: Vec::new(),
            handled_since_barrier: 0,
            archived: Vec::new(),
            archive_enabled: p.archive_enabled,
            archive: p.archive,
            changed_orders: Vec::new(),
            dirty_skus: Vec::new(),
            counters: p.counters,
            wallets: crate::wallet::WalletBook::default(),
            assets: p.assets,
            open_tries: 0,
            dirty_wallets: Vec::new(),
            outbox_skus: Vec::new(),
            outbox_accounts: Vec::new(),
            verify: std::collections::BTreeSet::new(),
            verify_armed: false,
            next_sweep_ms: 0,
        }
        .presized()
        .install(p.initial))
    }

    /// Room for this shard's part of `live_orders_expected` (see [`EngineConfig`]).
    fn presized(mut self) -> Self {
        let n = (self.config.live_orders_expected / self.shard_count.max(1) as u64) as usize;
        self.orders.reserve(n);
        self.idempotency.reserve(n);
        self
    }

    /// Host recovered actors: SKUs, orders, and everything derived from orders (idempotency
    /// records, timers, read models, the id generator's floor). Logs nothing: these came from
    /// the log.
    fn install(mut self, state: EngineState) -> Self {
        let mut published = Vec::with_capacity(state.skus.len());
        for (sku_id, st) in state.skus {
            let actor = SkuActor::new(st, self.id, true);
            published.push(actor.shared().clone());
            self.skus.insert(sku_id, actor);
        }
        self.read.skus.insert_all(&published);
        self.orders.reserve(state.orders.len());
        self.idempotency.reserve(state.orders.len());
        let mut deadlines = Vec::new();
        for (id, order) in state.orders {
            self.ids.observe(id.0);
            self.index_order(&order);
            if order.status == OrderStatus::PendingPayment {
                deadlines.push((order.payment_deadline_ms, id));
            } else {
                self.arm_recovered_timer(&order);
            }
            self.orders.insert(id, order);
        }
        // In due order, so they all take the timer queue's FIFO rather than its ordered set.
        deadlines.sort_unstable();
        for (at, id) in deadlines {
            self.timers.insert((at, id, timers::TimerKind::PaymentDeadline));
        }
        self.wallets = state.wallets;
        self.open_tries = self.wallets.open_tries().count();
        self
    }

    /// Never mint an id at or below `id` (an archived order's, after recovery).
    pub fn observe_id(&mut self, id: OrderId) {
        self.ids.observe(id.0);
    }

    /// Idempotency record and read models of an order.
    fn index_order(&mut self, order: &Arc<Order>) {
        self.read.users.insert(&order.user_id);
        self.record_idempotency(order.order_id, &order.user_id, &order.idempotency_key);
        self.index_order_reads(order);
    }

    /// Record `id` as the order of (`user_id`, `key`).
    fn record_idempotency(&mut self, id: OrderId, user_id: &UserId, key: &str) {
        let (in_flight, orders) = (&self.in_flight, &self.orders);
        let current = |other: OrderId| pair_of(in_flight, orders, other).map(|(u, k)| u == user_id && k == key);
        self.idempotency.insert(user_id, key, id, current);
    }

    /// The order recorded for (`user_id`, `key`), if any.
    fn find_idempotent(&self, user_id: &str, key: &str) -> Option<OrderId> {
        let holds =
            |id: OrderId| pair_of(&self.in_flight, &self.orders, id).is_some_and(|(u, k)| &**u == user_id && k == key);
        self.idempotency.get(user_id, key, holds)
    }

    /// Read models of a recovered order (durable: published at once).
    fn index_order_reads(&mut self, order: &Arc<Order>) {
        let id = order.order_id;
        self.read.orders.insert(id, order.clone());
        // In place: a different shard count may spread a user's orders over several shards.
        crate::publish::index_user_order(&self.read, order);
    }

    /// Input: one message (from a mailbox or another shard) at `now_ms`. Messages it sends to
    /// this shard wait in `local` for [`ShardCore::drain_local`]. True means stop (`Shutdown`).
    /// `Snapshot` needs the journal's position: runtimes answer it (flush, then
    /// [`ShardCore::state`]); a core handed one drops it.
    pub fn handle(&mut self, msg: ShardMsg, now_ms: i64) -> bool {
        self.now_ms = now_ms;
        self.handle_now(msg)
    }

    /// Answer everything waiting on a step with `err` and forget those steps (a partition
    /// given up by this node: its new owner finishes nothing a lost step started, and the
    /// reservations such a step left are checked and released by their SKUs' partitions).
    pub fn abandon_in_flight(&mut self, err: crate::error::EngineError) {
        for (_, f) in std::mem::take(&mut self.in_flight) {
            for w in f.waiters {
                self.replies.push(Deferred::Order(w, Err(err.clone())));
            }
            for m in f.queued {
                if let OrderMsg::Command(_, Some(r)) = m {
                    self.replies.push(Deferred::Order(r, Err(err.clone())));
                } else if let OrderMsg::WalletPay(_, r) = m {
                    self.replies.push(Deferred::Order(r, Err(err.clone())));
                }
            }
        }
    }

    /// Handle the messages this shard sent itself (at the time of the last input).
    pub fn drain_local(&mut self) {
        while let Some(m) = self.local.pop_front() {
            self.handle_now(m);
        }
    }

    /// Handle one message at `self.now_ms`; true means stop.
    fn handle_now(&mut self, msg: ShardMsg) -> bool {
        if !matches!(msg, ShardMsg::Barrier(_)) {
            self.handled_since_barrier += 1;
        }
        match msg {
            ShardMsg::Sku(sku_id, m) => self.handle_sku(sku_id, m),
            ShardMsg::Order(order_id, m) => self.handle_order(order_id, m),
            ShardMsg::Wallet(user_id, m) => self.handle_wallet(user_id, m),
            ShardMsg::CreateOrder(req, reply, fast_reject) => self.start_saga(req, reply, fast_reject),
            ShardMsg::Batch(msgs) => {
                // Not counted itself: each command inside is.
                self.handled_since_barrier -= 1;
                for m in msgs {
                    self.handle_now(m);
                    self.drain_local();
                }
            }
            ShardMsg::Barrier(tx) => {
                let timers_due = self.timers.next_due_ms().is_some_and(|t| t <= self.now_ms);
                let busy = self.handled_since_barrier > 0 || !self.in_flight.is_empty() || timers_due;
                self.handled_since_barrier = 0;
                self.replies.push(Deferred::Barrier(tx, busy));
            }
            // Dropping the sender tells the caller no cut is coming (see `handle`); a move of
            // a partition is the runtime's (`Shard::install`, `Shard::evict`).
            ShardMsg::Snapshot(_) | ShardMsg::Install(..) | ShardMsg::Evict(_) => {}
            ShardMsg::Audit(tx) => {
                let _ = tx.send(self.audit());
            }
            ShardMsg::Shutdown => return true,
        }
        false
    }

    /// Every actor's state (a simulation's digest and snapshots).
    #[cfg(any(test, feature = "sim"))]
    pub fn state(&self) -> EngineState {
        EngineState {
            skus: self.skus.iter().map(|(k, a)| (k.clone(), a.state().clone())).collect(),
            orders: self.orders.iter().map(|(k, o)| (*k, o.clone())).collect(),
            wallets: self.wallets.clone(),
        }
    }

    /// Every actor's state as a snapshot's cut: O(SKUs) on this thread (see [`ShardCut`]).
    pub fn cut(&self) -> ShardCut {
        ShardCut {
            skus: self.skus.iter().map(|(k, a)| (k.clone(), a.state().clone())).collect(),
            orders: self.orders.clone(),
            wallets: self.wallets.clone(),
        }
    }

    /// Every SKU actor's state (a simulation checks conservation after each step).
    #[cfg(any(test, feature = "sim"))]
    pub fn sku_states(&self) -> impl Iterator<Item = &crate::sku::SkuState> + '_ {
        self.skus.values().map(|a| a.state())
    }

    /// A live order (a simulation checks acknowledged orders after recovery).
    #[cfg(any(test, feature = "sim"))]
    pub fn order(&self, order_id: OrderId) -> Option<&Arc<Order>> {
        self.orders.get(&order_id)
    }

    /// The planted bug `sim::Bug::ForgetIdempotencyOnRecovery`: drop every idempotency record.
    #[cfg(any(test, feature = "sim"))]
    pub fn plant_forget_idempotency(&mut self) {
        self.idempotency.clear();
    }

    /// True when no saga or stock effect is waiting for an answer and nothing waits in `local`.
    #[cfg(any(test, feature = "sim"))]
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.local.is_empty()
    }

    /// Every actor's state as the audit sees it.
    pub fn audit(&self) -> ShardAudit {
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
        let w = &self.wallets;
        let wallets = msg::WalletAudit {
            violation: w.check().err().map(|e| e.to_string()),
            open_tries: w.open_tries().count(),
            accounts: w.users.values().map(|u| u.accounts.len()).sum(),
            payments: w.users.values().flat_map(|u| u.payments.iter().map(|(o, t)| (*o, t.clone()))).collect(),
        };
        ShardAudit { skus, orders, in_flight: self.in_flight.len(), wallets }
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

    /// End the batch: its effects as data (see [`BatchEffects`] for the order to release them
    /// in). The core is ready for the next batch.
    pub fn end_batch(&mut self) -> BatchEffects {
        self.outbox_stock();
        self.outbox_wallets();
        let batch = if !self.events.is_empty() || !self.replies.is_empty() {
            let on_durable = DurableEffects {
                replies: take_sized(&mut self.replies),
                archived: std::mem::take(&mut self.archived),
                publication: self.take_publication(),
            };
            Some(JournalBatch { events: take_sized(&mut self.events), on_durable })
        } else {
            None
        };
        BatchEffects { outbox: std::mem::take(&mut self.outbox), batch }
    }

    /// Take back an emptied outbox, so the hot path keeps one allocation for it.
    pub fn recycle_outbox(&mut self, outbox: Vec<(usize, ShardMsg)>) {
        if self.outbox.is_empty() && outbox.capacity() > self.outbox.capacity() {
            self.outbox = outbox;
        }
    }

    /// The outbox's copy of an order's transition (issue 15), journaled beside it.
    fn outbox_order(&mut self, order: &Arc<Order>) {
        if self.config.outbox {
            self.events.push(Event::Outbox(OutboxEvent::Order(order.clone())));
        }
    }

    /// The outbox's copy of each SKU this batch changed by a published event: its counters at
    /// the end of the batch.
    fn outbox_stock(&mut self) {
        for sku_id in std::mem::take(&mut self.outbox_skus) {
            if let Some(actor) = self.skus.get(&sku_id) {
                self.events.push(Event::Outbox(OutboxEvent::Stock(Box::new(actor.view()), self.now_ms)));
            }
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
        let wallets = self.take_wallet_publication();
        BatchPublication { orders: take_sized(&mut self.changed_orders), skus, wallets }
    }
}

/// Take a batch's vector, leaving one with the room it needed: the next batch is most likely
/// as large, and growing a vector from empty by doubling is a reallocation (and a copy) per
/// doubling, eight of them for a batch of 256 (issue 12).
fn take_sized<T>(v: &mut Vec<T>) -> Vec<T> {
    let room = v.len();
    std::mem::replace(v, Vec::with_capacity(room))
}

/// The (user, idempotency key) order `id` was created with: from its saga while it is being
/// created, from the order once it exists.
fn pair_of<'a>(
    in_flight: &'a FastMap<OrderId, InFlight>,
    orders: &'a ChunkedMap<OrderId, Arc<Order>>,
    id: OrderId,
) -> Option<(&'a UserId, &'a str)> {
    if let Some(o) = orders.get(&id) {
        return Some((&o.user_id, &o.idempotency_key));
    }
    match &in_flight.get(&id)?.state {
        saga::FlightState::Creating(s) => Some((&s.user_id, &s.idempotency_key)),
        saga::FlightState::Effect(o) => Some((&o.user_id, &o.idempotency_key)),
    }
}
#[cfg(test)]
mod tests {
    /// What every move of a message or a deferred reply costs (issue 12): a large, rare
    /// payload belongs in a box, so a new variant does not grow every message.
    #[test]
    fn hot_messages_stay_small() {
        use std::mem::size_of;
        assert!(size_of::<super::ShardMsg>() <= 96, "ShardMsg is {} bytes", size_of::<super::ShardMsg>());
        assert!(size_of::<super::Deferred>() <= 72, "Deferred is {} bytes", size_of::<super::Deferred>());
        // Every journaled event is moved at this size: the wallet's rare, large refusal is boxed.
        assert!(size_of::<crate::event::Event>() <= 104, "Event is {} bytes", size_of::<crate::event::Event>());
    }
}
