//! The production runtime of a shard: one thread that feeds its [`ShardCore`] from crossbeam
//! channels, reads the injected clock once per input, and releases each batch's effects
//! through the [`Journal`](crate::event::Journal) (submit, then send to peers; publish and reply when durable).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::{CoreParts, ShardCore, ShardMsg};
use crate::clock::Clock;
use crate::cluster::ClusterHooks;
use crate::error::EngineResult;
use crate::event::{ChangeObserver, Journal};
use crate::publish::ReadModels;

/// Channels and shared parts a shard thread is built from.
pub(crate) struct ShardParts {
    /// The state machine's own parts.
    pub core: CoreParts,
    pub clock: Arc<dyn Clock>,
    pub external: Receiver<ShardMsg>,
    pub internal: Receiver<ShardMsg>,
    pub peers: Vec<Sender<ShardMsg>>,
    pub journal: Box<dyn Journal>,
    /// Told about durable changes (subscriptions); `None` costs nothing.
    pub observer: Option<Arc<dyn ChangeObserver>>,
    /// A cluster node's placement and link (issue 16); `None` on a single node.
    pub cluster: Option<ClusterHooks>,
}

/// A shard's thread: the core plus its mailboxes, clock and journal. Runs in [`Shard::run`].
pub(crate) struct Shard {
    core: ShardCore,
    clock: Arc<dyn Clock>,
    external: Receiver<ShardMsg>,
    internal: Receiver<ShardMsg>,
    peers: Arc<Vec<Sender<ShardMsg>>>,
    journal: Box<dyn Journal>,
    observer: Option<Arc<dyn ChangeObserver>>,
    read: Arc<ReadModels>,
    cluster: Option<ClusterHooks>,
    /// What a new core is built from when this shard takes a partition over (cluster only).
    template: CoreTemplate,
}

/// [`CoreParts`] without the state: a core for a partition installed later.
struct CoreTemplate {
    config: Arc<crate::config::EngineConfig>,
    archive_enabled: bool,
    archive: Option<Arc<dyn crate::event::OrderArchive>>,
    counters: Arc<crate::stats::ShardCounters>,
    assets: Arc<crate::wallet::Assets>,
}

impl Shard {
    pub fn new(p: ShardParts) -> EngineResult<Self> {
        let read = p.core.read.clone();
        let template = CoreTemplate {
            config: p.core.config.clone(),
            archive_enabled: p.core.archive_enabled,
            archive: p.core.archive.clone(),
            counters: p.core.counters.clone(),
            assets: p.core.assets.clone(),
        };
        Ok(Self {
            core: ShardCore::new(p.core, p.peers.len())?,
            clock: p.clock,
            external: p.external,
            internal: p.internal,
            peers: Arc::new(p.peers),
            journal: p.journal,
            observer: p.observer,
            read,
            cluster: p.cluster,
            template,
        })
    }

    /// Whether this node hosts this shard's partition (always, on a single node).
    fn hosted(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.placement.is_local(self.core.id))
    }

    /// A fresh core for this shard holding `state`.
    fn core_with(&self, state: crate::state::EngineState) -> EngineResult<ShardCore> {
        let t = &self.template;
        let parts = CoreParts {
            id: self.core.id,
            config: t.config.clone(),
            read: self.read.clone(),
            initial: state,
            archive_enabled: t.archive_enabled,
            archive: t.archive.clone(),
            counters: t.counters.clone(),
            assets: t.assets.clone(),
        };
        ShardCore::new(parts, self.peers.len())
    }

    /// Never mint an id at or below `id` (an archived order's, after recovery).
    pub fn observe_id(&mut self, id: crate::domain::OrderId) {
        self.core.observe_id(id);
    }

    /// The shard loop: block for a message (or a tick), drain a batch, fire timers, flush.
    pub fn run(mut self) {
        let tick = Duration::from_millis(self.core.config.tick_interval_ms);
        let batch_max = self.core.config.batch_size_max;
        loop {
            let first = crossbeam_channel::select! {
                recv(self.internal) -> m => m.ok(),
                recv(self.external) -> m => m.ok(),
                default(tick) => None,
            };
            let mut stop = false;
            let mut handled = 0usize;
            if let Some(m) = first {
                handled += commands_in(&m);
                stop |= self.handle(m);
            }
            while handled < batch_max && !stop {
                let m = match self.internal.try_recv() {
                    Ok(m) => m,
                    Err(_) => match self.external.try_recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    },
                };
                // A batch counts as its commands, toward `batch_size_max` and the metric.
                handled += commands_in(&m);
                stop |= self.handle(m);
                self.core.drain_local();
            }
            self.core.drain_local();
            self.core.fire_timers(self.clock.now_ms());
            self.core.drain_local();
            self.flush();
            self.core.counters.handled(handled as u64);
            if stop {
                return;
            }
        }
    }

    /// One input to the core at the clock's now; a snapshot request is the runtime's (it
    /// needs the journal's position). True means stop.
    fn handle(&mut self, msg: ShardMsg) -> bool {
        match msg {
            ShardMsg::Install(state, ack) => {
                let _ = ack.send(self.install(*state));
                false
            }
            ShardMsg::Evict(ack) => {
                self.evict();
                let _ = ack.send(());
                false
            }
            m if !self.hosted() && !is_control(&m) => {
                self.refuse_or_forward(m);
                false
            }
            ShardMsg::Snapshot(tx) => {
                self.core.handled_since_barrier += 1;
                // Submit what this batch did so far, so the cut and the state agree.
                self.core.drain_local();
                self.flush();
                let started = std::time::Instant::now();
                let cut = self.core.cut();
                // The cut stops this shard: how long is what a stall costs (issue 12).
                tracing::info!(
                    shard = self.core.id,
                    orders = cut.orders.len(),
                    cut_ms = started.elapsed().as_secs_f64() * 1e3,
                    "snapshot cut"
                );
                let _ = tx.send((cut, self.journal.position()));
                false
            }
            m => self.core.handle(m, self.clock.now_ms()),
        }
    }

    /// Release the batch: journal first, then messages; replies when durable. In a cluster,
    /// the messages too wait until the batch (and every one before it) is durable (see
    /// [`crate::cluster`]); a batch of messages alone is submitted empty to keep that order.
    fn flush(&mut self) {
        let mut effects = self.core.end_batch();
        let deferred = match &self.cluster {
            Some(hooks) if !effects.outbox.is_empty() => {
                Some((hooks.clone(), self.peers.clone(), std::mem::take(&mut effects.outbox)))
            }
            _ => None,
        };
        let send_when_durable = move |result: &Result<(), crate::error::EngineError>| {
            if let (Some((hooks, peers, msgs)), Ok(())) = (deferred, result) {
                for (shard, msg) in msgs {
                    crate::cluster::route(&peers, &hooks, shard, msg);
                }
            }
        };
        match effects.batch {
            Some(batch) => {
                let read = self.read.clone();
                let observer = self.observer.clone();
                let on_durable = batch.on_durable;
                // Submit before sending the batch's messages: the log stays causally ordered.
                self.journal.submit(
                    self.core.id,
                    batch.events,
                    Box::new(move |result| {
                        send_when_durable(&result);
                        on_durable.complete(&read, observer.as_ref(), result)
                    }),
                );
            }
            None if self.cluster.is_some() => {
                self.journal.submit(self.core.id, Vec::new(), Box::new(move |result| send_when_durable(&result)));
            }
            None => {}
        }
        self.send_outbox(&mut effects.outbox);
        self.core.recycle_outbox(effects.outbox);
    }

    /// Take a partition over: a core built from its recovered state, then hosted.
    fn install(&mut self, state: crate::state::EngineState) -> EngineResult<()> {
        let Some(hooks) = self.cluster.clone() else {
            return Err(crate::error::EngineError::invalid("install_partition needs a clustered engine"));
        };
        if hooks.placement.is_local(self.core.id) {
            return Err(crate::error::EngineError::invalid(format!("partition {} is hosted already", self.core.id)));
        }
        self.core = self.core_with(state)?;
        hooks.placement.set(self.core.id, true);
        tracing::info!(partition = self.core.id, "partition installed");
        Ok(())
    }

    /// Give a partition up: what waits is answered `unavailable`, the batch so far flushed, the
    /// state dropped and forgotten by the read models.
    fn evict(&mut self) {
        let Some(hooks) = self.cluster.clone() else { return };
        if !hooks.placement.is_local(self.core.id) {
            return;
        }
        hooks.placement.set(self.core.id, false);
        self.core.abandon_in_flight(unavailable());
        self.flush();
        match self.core_with(crate::state::EngineState::default()) {
            Ok(core) => self.core = core,
            Err(e) => tracing::error!(error = %e, "an empty core could not be built"),
        }
        self.read.forget_shard(self.core.id, self.peers.len());
        tracing::info!(partition = self.core.id, "partition evicted");
    }

    /// A message for a partition this node does not host: a request is answered `unavailable`
    /// (the gateway forwards by partition, so only a race with a move gets here); a message
    /// from another shard goes on to the partition's owner.
    fn refuse_or_forward(&mut self, msg: ShardMsg) {
        let Some(hooks) = self.cluster.clone() else { return };
        match msg {
            ShardMsg::Batch(msgs) => {
                for m in msgs {
                    self.refuse_or_forward(m);
                }
            }
            m => {
                if let Err(m) = refuse(m) {
                    crate::cluster::route(&self.peers, &hooks, self.core.id, m);
                }
            }
        }
    }

    /// Send a batch's messages to other shards: one channel message per destination, a
    /// `ShardMsg::Batch` when there are several (a saga step for each of 256 orders costs one
    /// send and at most one wake-up, not 256). Each destination gets its messages in the order
    /// they were sent, as before (`handle_now` runs a batch's messages in order).
    fn send_outbox(&mut self, outbox: &mut Vec<(usize, ShardMsg)>) {
        if outbox.len() == 1 {
            if let Some((shard, msg)) = outbox.pop() {
                // Only fails when the peer has exited (shutdown): nothing is left to tell.
                let _ = self.peers[shard].send(msg);
            }
            return;
        }
        // Each destination's vector at its exact size: no growth (and no copy of every message
        // per doubling) while it fills.
        let mut counts = vec![0usize; self.peers.len()];
        for (shard, _) in outbox.iter() {
            counts[*shard] += 1;
        }
        let mut per_shard: Vec<Vec<ShardMsg>> = counts.into_iter().map(Vec::with_capacity).collect();
        for (shard, msg) in outbox.drain(..) {
            per_shard[shard].push(msg);
        }
        for (shard, mut msgs) in per_shard.into_iter().enumerate() {
            let msg = match msgs.len() {
                0 => continue,
                1 => msgs.pop(),
                _ => Some(ShardMsg::Batch(msgs)),
            };
            if let Some(msg) = msg {
                let _ = self.peers[shard].send(msg);
            }
        }
    }
}

/// The answer of a partition not hosted here.
fn unavailable() -> crate::error::EngineError {
    // About one lease renewal: time for a move to finish or the gateway to learn the owner.
    crate::error::EngineError::Unavailable { retry_after_ms: 100 }
}

/// Messages every shard handles, hosted or not.
fn is_control(msg: &ShardMsg) -> bool {
    matches!(msg, ShardMsg::Barrier(_) | ShardMsg::Snapshot(_) | ShardMsg::Audit(_) | ShardMsg::Shutdown)
}

/// Answer a request `unavailable`; `Err` gives back a message between shards (no caller).
pub(crate) fn refuse(msg: ShardMsg) -> Result<(), ShardMsg> {
    use super::{OrderMsg, SkuMsg, WalletMsg};
    let e = unavailable;
    match msg {
        ShardMsg::Batch(msgs) => {
            // A batch of requests (`Engine::create_orders`): each answered.
            for m in msgs {
                let _ = refuse(m);
            }
        }
        ShardMsg::CreateOrder(_, reply, _) => reply.send(Err(e())),
        ShardMsg::Sku(_, SkuMsg::Create(_, reply) | SkuMsg::Update(_, reply) | SkuMsg::Adjust { reply, .. }) => {
            reply.send(Err(e()))
        }
        ShardMsg::Order(_, OrderMsg::Command(_, reply)) => {
            if let Some(r) = reply {
                r.send(Err(e()));
            }
        }
        ShardMsg::Order(_, OrderMsg::WalletPay(_, reply)) => reply.send(Err(e())),
        ShardMsg::Wallet(_, WalletMsg::Move(_, reply)) => reply.send(Err(e())),
        ShardMsg::Wallet(_, WalletMsg::Get(reply)) => reply.send(Err(e())),
        ShardMsg::Wallet(_, WalletMsg::Entries(_, reply)) => reply.send(Err(e())),
        other => return Err(other),
    }
    Ok(())
}

/// Commands a mailbox message carries: a `Batch`'s, else one.
fn commands_in(msg: &ShardMsg) -> usize {
    match msg {
        ShardMsg::Batch(msgs) => msgs.len().max(1),
        _ => 1,
    }
}
