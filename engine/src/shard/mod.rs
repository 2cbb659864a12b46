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
//!
//! # Modules
//! * `msg`: the message enums; `skus`: the SKU actors' messages; `saga`: create-order (reserve,
//!   compensate, land); `orders`: order commands and their stock effects, archived orders;
//!   `timers`: deadlines, auto-complete, archiving. This file: the shard's state, its loop,
//!   batching and flush.

mod msg;
mod orders;
mod saga;
mod skus;
mod timers;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::domain::{Order, OrderId, SkuId, SkuView, UserId};
use crate::error::{EngineError, EngineResult};
use crate::event::{ChangeObserver, Event, Journal, OrderArchive};
use crate::publish::{BatchPublication, ReadModels};
use crate::routing::FastMap;
use crate::sku::SkuActor;
use crate::snowflake::Snowflake;
use crate::state::EngineState;
use crate::stats::ShardCounters;
pub(crate) use msg::{OrderMsg, Reply, ShardAudit, ShardMsg, SkuAudit, SkuMsg};
use saga::InFlight;
use timers::TimerKind;

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
            self.arm_recovered_timer(&order);
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
