//! The production runtime of a shard: one thread that feeds its [`ShardCore`] from crossbeam
//! channels, reads the injected clock once per input, and releases each batch's effects
//! through the [`Journal`](crate::event::Journal) (submit, then send to peers; publish and reply when durable).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::{CoreParts, ShardCore, ShardMsg};
use crate::clock::Clock;
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
}

/// A shard's thread: the core plus its mailboxes, clock and journal. Runs in [`Shard::run`].
pub(crate) struct Shard {
    core: ShardCore,
    clock: Arc<dyn Clock>,
    external: Receiver<ShardMsg>,
    internal: Receiver<ShardMsg>,
    peers: Vec<Sender<ShardMsg>>,
    journal: Box<dyn Journal>,
    observer: Option<Arc<dyn ChangeObserver>>,
    read: Arc<ReadModels>,
}

impl Shard {
    pub fn new(p: ShardParts) -> EngineResult<Self> {
        let read = p.core.read.clone();
        Ok(Self {
            core: ShardCore::new(p.core, p.peers.len())?,
            clock: p.clock,
            external: p.external,
            internal: p.internal,
            peers: p.peers,
            journal: p.journal,
            observer: p.observer,
            read,
        })
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

    /// Release the batch: journal first, then messages; replies when durable.
    fn flush(&mut self) {
        let mut effects = self.core.end_batch();
        if let Some(batch) = effects.batch {
            let read = self.read.clone();
            let observer = self.observer.clone();
            let on_durable = batch.on_durable;
            // Submit before sending the batch's messages: the log stays causally ordered.
            self.journal.submit(
                self.core.id,
                batch.events,
                Box::new(move |result| on_durable.complete(&read, observer.as_ref(), result)),
            );
        }
        self.send_outbox(&mut effects.outbox);
        self.core.recycle_outbox(effects.outbox);
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

/// Commands a mailbox message carries: a `Batch`'s, else one.
fn commands_in(msg: &ShardMsg) -> usize {
    match msg {
        ShardMsg::Batch(msgs) => msgs.len().max(1),
        _ => 1,
    }
}
