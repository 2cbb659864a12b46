//! The simulated world: N real [`ShardCore`]s, their mailboxes and links, the journal queue in
//! front of a [`Disk`], the clock, and the clients, stepped one at a time by a seeded PRNG.
//!
//! A batch's journal events go through three queues, as in production: submitted (the WAL
//! writer's queue), written (appended, not synced) and durable (synced: its replies are
//! released). A crash drops everything volatile (cores, mailboxes, links, both queues,
//! clients' pending requests) and keeps what the disk synced; a storage fault fails the waiting
//! batches `storage_unavailable` first, as the writer does, then crashes (fail-stop).

use std::collections::VecDeque;
use std::sync::Arc;

use super::disk::{Disk, GroupEntry};
use super::prng::{Fnv64, SplitMix64};
use super::trace::{Did, Recent};
use super::workload::Workload;
use super::{check, planted, wallet_check};
use super::{Bug, SimConfig, SimReport};
use crate::config::EngineConfig;
use crate::engine::place_state;
use crate::error::EngineError;
use crate::event::Event;
use crate::publish::ReadModels;
use crate::shard::{BatchEffects, CoreParts, DurableEffects, ShardCore, ShardMsg, SkuMsg};
use crate::snowflake::shard_of;
use crate::state::EngineState;
use snapshot::WaitingSnapshot;

mod cluster;
mod snapshot;

/// A message on its way between two shards.
struct Flight {
    ready_step: u64,
    msg: ShardMsg,
}

/// A batch handed to the journal: its events and what waits for them to be durable.
struct Submitted {
    shard: usize,
    seq: u64,
    events: Vec<Event>,
    /// `None` once released early (the planted bug [`Bug::ReplyBeforeDurable`]).
    on_durable: Option<DurableEffects>,
    /// Cluster mode: the batch's messages to other partitions, sent once it is durable.
    deferred: Vec<(usize, ShardMsg)>,
}

/// Longest delay of a message between shards, in steps.
const LINK_DELAY_STEPS_MAX: u64 = 8;
/// Client requests outstanding at once.
const CLIENTS_CONCURRENT_MAX: usize = 24;
/// Issue this many ops, then let everything settle and run the full audit.
const OPS_PER_QUIET_POINT: u64 = 400;
/// Largest group commit, in batches.
const GROUP_BATCHES_MAX: u64 = 16;
/// Simulated restart time after a crash, ms.
const RESTART_MS: i64 = 1_000;

/// Counters of what happened.
#[derive(Default)]
pub(super) struct Counts {
    pub batches: u64,
    pub events: u64,
    pub crashes: u64,
    pub storage_faults: u64,
    pub snapshots: u64,
    pub snapshot_faults: u64,
}

pub(super) struct Sim {
    rng: SplitMix64,
    pub step: u64,
    now_ms: i64,
    config: Arc<EngineConfig>,
    read: Arc<ReadModels>,
    cores: Vec<ShardCore>,
    /// Each shard's external mailbox (client requests), FIFO.
    inbox: Vec<VecDeque<ShardMsg>>,
    /// Messages between shards: `links[from * n + to]`, FIFO per pair.
    links: Vec<VecDeque<Flight>>,
    /// Each shard's journal position (as `WalJournal`: +1 per batch with events).
    positions: Vec<u64>,
    /// Batches submitted and not yet written, in submission order (the writer's queue).
    submitted: VecDeque<Submitted>,
    /// Batches written and not yet synced.
    written: VecDeque<Submitted>,
    /// Batches submitted, and batches synced, since the start (across crashes).
    submitted_total: u64,
    synced_total: u64,
    /// A snapshot captured and waiting for every batch submitted before it to be durable.
    snapshot_waiting: Option<WaitingSnapshot>,
    disk: Box<dyn Disk>,
    pub trace: Fnv64,
    pub recent: Recent,
    pub counts: Counts,
    pub workload: Workload,
    bug: Bug,
    /// Crash probability per step, in parts per million.
    crash_ppm: u64,
    /// Per shard, journal events a planted bug holds back for the shard's next batch.
    held: Vec<Vec<Event>>,
    /// Cluster mode ([`SimConfig::cluster`]).
    cluster: bool,
    /// Cluster mode: each partition's durable events, in order (its log, replayed alone when
    /// the partition is taken over).
    plog: Vec<Vec<Event>>,
}

impl Sim {
    pub fn new(config: &SimConfig, disk: Box<dyn Disk>, bug: Bug) -> Result<Self, String> {
        let n = config.shard_count;
        let mut rng = SplitMix64::new(config.seed);
        let engine_config = EngineConfig { clustered: config.cluster, ..sim_engine_config(n) };
        let assets = crate::wallet::Assets::new(&engine_config.assets).map_err(|e| e.to_string())?;
        let workload = Workload::new(&mut rng, n, assets);
        let mut sim = Self {
            rng,
            step: 0,
            // 2026-01-01T00:00:00Z: a plausible engine clock, after the snowflake epoch.
            now_ms: 1_767_225_600_000,
            config: Arc::new(engine_config),
            read: Arc::default(),
            cores: Vec::new(),
            inbox: (0..n).map(|_| VecDeque::new()).collect(),
            links: (0..n * n).map(|_| VecDeque::new()).collect(),
            positions: vec![0; n],
            submitted: VecDeque::new(),
            written: VecDeque::new(),
            submitted_total: 0,
            synced_total: 0,
            snapshot_waiting: None,
            disk,
            trace: Fnv64::default(),
            recent: Recent::default(),
            counts: Counts::default(),
            workload,
            bug,
            crash_ppm: (config.crash_rate.clamp(0.0, 1.0) * 1e6) as u64,
            held: (0..n).map(|_| Vec::new()).collect(),
            cluster: config.cluster,
            plog: (0..n).map(|_| Vec::new()).collect(),
        };
        sim.recover()?;
        Ok(sim)
    }

    /// Issue `ops` client operations, settling every [`OPS_PER_QUIET_POINT`], then settle.
    pub fn run(&mut self, ops: u64) -> Result<(), String> {
        let mut issued = 0u64;
        while issued < ops {
            let burst = (ops - issued).min(OPS_PER_QUIET_POINT);
            let mut left = burst;
            while left > 0 {
                if self.workload.outstanding() < CLIENTS_CONCURRENT_MAX && self.rng.chance(35) {
                    self.step += 1;
                    left -= self.send_requests(left);
                } else {
                    self.step_system(true)?;
                }
            }
            issued += burst;
            self.settle()?;
            check::full_audit(&self.cores, &self.workload)?;
            self.check_wallets(false)?;
        }
        check::after_recovery(&self.cores, &*self.disk, &self.workload)?;
        self.check_wallets(true)
    }

    /// The wallets against the clients' answers, with nothing in flight; `recovered` also
    /// checks every transfer answered is still in the books.
    fn check_wallets(&mut self, recovered: bool) -> Result<(), String> {
        let books = wallet_check::all_books(&self.cores);
        self.workload.check_wallets(&books, recovered)
    }

    /// A client sends one request, or (one time in six) up to four at once, one mailbox
    /// message per shard (`ShardMsg::Batch`, as `Engine::create_orders` sends them). Returns
    /// how many it sent (at most `left`).
    fn send_requests(&mut self, left: u64) -> u64 {
        let count = if self.rng.chance(16) { (2 + self.rng.below(3)).min(left) } else { 1 };
        let mut per_shard: Vec<Vec<ShardMsg>> = (0..self.inbox.len()).map(|_| Vec::new()).collect();
        for _ in 0..count {
            let (shard, msg, kind) = self.workload.next_op(&mut self.rng);
            self.recent.push(self.step, Did::Request { shard, kind });
            per_shard[shard].push(msg);
        }
        for (shard, mut msgs) in per_shard.into_iter().enumerate() {
            match msgs.len() {
                0 => {}
                1 => self.inbox[shard].extend(msgs.pop()),
                _ => self.inbox[shard].push_back(ShardMsg::Batch(msgs)),
            }
        }
        count
    }

    /// One step of the system (not a client): a crash (rarely), a snapshot (rarely), a shard's
    /// batch, a group commit written, a sync, or (when `free`, rarely) a clock move. Crashes,
    /// snapshots and clock moves only when `free` (not while settling).
    fn step_system(&mut self, free: bool) -> Result<(), String> {
        self.step += 1;
        if free && self.crash_ppm > 0 && self.rng.below(1_000_000) < self.crash_ppm {
            return if self.cluster { self.partition_crash() } else { self.crash(None) };
        }
        let n = self.cores.len() as u64;
        match self.rng.below(1_000) {
            0 if free && !self.cluster => self.snapshot(),
            0..=549 => {
                let s = self.rng.below(n) as usize;
                self.run_batch(s)?;
                check::shard_skus(&self.cores[s])
            }
            550..=749 => self.write_group(),
            750..=949 => self.sync(),
            _ if free => {
                // Mostly small moves; one in twenty jumps past the payment deadline.
                let jump = if self.rng.chance(5) { self.config.payment_timeout_ms } else { self.rng.below(2_000) };
                self.now_ms = self.now_ms.saturating_add(jump as i64 + 1);
                self.trace.u64(self.now_ms as u64);
                self.recent.push(self.step, Did::Clock { now_ms: self.now_ms });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Step until nothing is queued, in flight or waiting for durability.
    fn settle(&mut self) -> Result<(), String> {
        if self.cluster {
            return self.settle_cluster();
        }
        self.settle_quiet()
    }

    /// [`Sim::settle`] of a single node: a saga left waiting with nothing to answer it is a
    /// lost message, a violation.
    fn settle_quiet(&mut self) -> Result<(), String> {
        while !self.is_quiet() {
            if self.only_sagas_left() {
                let stuck: Vec<String> =
                    self.cores.iter().enumerate().filter(|(_, c)| !c.is_idle()).map(|(s, _)| s.to_string()).collect();
                return Err(format!(
                    "sagas wait on shards [{}] but no message, batch or request is left to answer them",
                    stuck.join(", ")
                ));
            }
            self.step_system(false)?;
        }
        Ok(())
    }

    fn queues_empty(&self) -> bool {
        self.inbox.iter().all(VecDeque::is_empty)
            && self.links.iter().all(VecDeque::is_empty)
            && self.submitted.is_empty()
            && self.written.is_empty()
    }

    /// Nothing is queued anywhere, yet some shard still waits: a lost message.
    fn only_sagas_left(&self) -> bool {
        self.queues_empty() && !self.cores.iter().all(ShardCore::is_idle)
    }

    fn is_quiet(&self) -> bool {
        self.queues_empty() && self.cores.iter().all(ShardCore::is_idle) && self.workload.outstanding() == 0
    }

    /// One batch of shard `s`, as the production loop runs it: messages from other shards
    /// first, then the mailbox, up to `batch_size_max`; then due timers; then end the batch.
    /// Checks the wallets the batch changed.
    fn run_batch(&mut self, s: usize) -> Result<(), String> {
        let now = self.now_ms;
        let mut handled = 0;
        while handled < self.config.batch_size_max {
            let Some(msg) = self.next_internal(s).or_else(|| self.inbox[s].pop_front()) else {
                break;
            };
            self.cores[s].handle(msg, now);
            self.cores[s].drain_local();
            handled += 1;
        }
        self.cores[s].fire_timers(now);
        self.cores[s].drain_local();
        let effects = self.cores[s].end_batch();
        self.counts.batches += 1;
        let events = effects.batch.as_ref().map_or(0, |b| b.events.len());
        self.recent.push(self.step, Did::Batch { shard: s, handled, events });
        let wallets = effects.batch.as_ref().map_or(Ok(()), |b| wallet_check::shard(&self.cores[s], &b.events));
        self.release(s, effects);
        wallets
    }

    /// The next message for `s` that has arrived, from the first ready link at a random start.
    fn next_internal(&mut self, s: usize) -> Option<ShardMsg> {
        let n = self.cores.len();
        let start = self.rng.below(n as u64) as usize;
        (0..n).map(|i| (start + i) % n).find_map(|from| {
            let link = &mut self.links[from * n + s];
            if link.front().is_some_and(|f| f.ready_step <= self.step) {
                link.pop_front().map(|f| f.msg)
            } else {
                None
            }
        })
    }

    /// Submit the batch to the journal queue, then put its messages on their links (in
    /// cluster mode, with the batch: they leave when it is durable).
    fn release(&mut self, s: usize, mut effects: BatchEffects) {
        self.trace.u64(s as u64);
        let defer = self.cluster && self.bug != Bug::ClusterSendBeforeDurable;
        let mut deferred = if defer { std::mem::take(&mut effects.outbox) } else { Vec::new() };
        if effects.batch.is_none() && !deferred.is_empty() {
            // Messages alone still wait for the batches before them.
            let seq = self.positions[s];
            self.submitted_total += 1;
            let deferred = std::mem::take(&mut deferred);
            self.submitted.push_back(Submitted { shard: s, seq, events: Vec::new(), on_durable: None, deferred });
        }
        if let Some(mut batch) = effects.batch {
            if self.bug == Bug::TccAcrossBatches {
                planted::tcc_across_batches(&mut self.held[s], &mut batch.events);
            }
            check::trace_events(&mut self.trace, &batch.events);
            if !batch.events.is_empty() {
                self.positions[s] += 1;
            }
            let mut on_durable = Some(batch.on_durable);
            if self.bug == Bug::ReplyBeforeDurable {
                if let Some(d) = on_durable.take() {
                    d.complete(&self.read, None, Ok(()));
                }
            }
            let seq = self.positions[s];
            self.submitted_total += 1;
            self.submitted.push_back(Submitted { shard: s, seq, events: batch.events, on_durable, deferred });
        }
        for (to, msg) in effects.outbox.drain(..) {
            if self.bug == Bug::DropFirstRelease && matches!(msg, ShardMsg::Sku(_, SkuMsg::Release { .. })) {
                self.bug = Bug::None;
                continue;
            }
            self.send_link(s, to, msg);
        }
        self.cores[s].recycle_outbox(effects.outbox);
    }

    /// Put `msg` on the link from `from` to `to` (FIFO per pair, a random delay); in cluster
    /// mode it may be lost or arrive twice (see `cluster.rs`).
    fn send_link(&mut self, from: usize, to: usize, msg: ShardMsg) {
        let n = self.cores.len();
        let copies = if self.cluster { self.link_copies(msg) } else { vec![msg] };
        for msg in copies {
            check::trace_msg(&mut self.trace, to, &msg);
            let link = &mut self.links[from * n + to];
            // FIFO per pair: never before the message ahead of it.
            let after = link.back().map_or(0, |f| f.ready_step);
            let ready_step = (self.step + self.rng.below(LINK_DELAY_STEPS_MAX)).max(after);
            link.push_back(Flight { ready_step, msg });
        }
    }

    /// The writer takes a group (a random prefix of its queue, in order) and writes it.
    fn write_group(&mut self) -> Result<(), String> {
        if self.submitted.is_empty() {
            return Ok(());
        }
        let take = 1 + self.rng.below((self.submitted.len() as u64).min(GROUP_BATCHES_MAX)) as usize;
        let group: Vec<GroupEntry<'_>> =
            self.submitted.iter().take(take).map(|b| (b.shard, b.seq, b.events.as_slice())).collect();
        let result = self.disk.write(&group);
        self.trace.u64(0xA0_0000 + take as u64);
        self.recent.push(self.step, Did::Write { batches: take });
        match result {
            Ok(()) => {
                self.written.extend(self.submitted.drain(..take));
                Ok(())
            }
            Err(fault) => self.crash(Some(fault.0)),
        }
    }

    /// The writer syncs: every written batch is durable; publish and reply, in order.
    fn sync(&mut self) -> Result<(), String> {
        if self.written.is_empty() {
            return Ok(());
        }
        let result = self.disk.sync();
        self.recent.push(self.step, Did::Sync { batches: self.written.len() });
        if let Err(fault) = result {
            return self.crash(Some(fault.0));
        }
        self.trace.u64(0xD0_0000 + self.written.len() as u64);
        let written: Vec<Submitted> = self.written.drain(..).collect();
        for b in written {
            self.synced_total += 1;
            self.counts.events += b.events.len() as u64;
            if self.cluster {
                self.plog[b.shard].extend(b.events.iter().cloned());
            }
            if let Some(d) = b.on_durable {
                d.complete(&self.read, None, Ok(()));
            }
            for (to, msg) in b.deferred {
                self.send_link(b.shard, to, msg);
            }
        }
        self.collect()
    }

    /// Take the clients' answers; a key answered with a second order is right only if the
    /// first left memory (archiving dropped its idempotency record).
    fn collect(&mut self) -> Result<(), String> {
        self.workload.collect_replies(&mut self.trace)?;
        if self.snapshot_waiting.as_ref().is_some_and(|w| w.write_after <= self.synced_total) {
            self.write_snapshot()?;
        }
        let n = self.cores.len();
        for r in self.workload.take_key_reuses() {
            if n > 0 && self.cores[shard_of(r.first.0, n)].order(r.first).is_some() {
                return Err(format!(
                    "two orders for user {} and key {}: {} (still live) and {}",
                    r.user_id, r.key, r.first, r.second
                ));
            }
        }
        Ok(())
    }

    /// Power loss (`fault: None`) or fail-stop after a storage fault: what was not durable is
    /// gone, clients' pending requests time out; then recover.
    fn crash(&mut self, fault: Option<String>) -> Result<(), String> {
        self.collect()?;
        if let Some(why) = &fault {
            // The writer answers every waiting batch before the process ends.
            self.counts.storage_faults += 1;
            let message = format!("simulated storage fault: {why}");
            for b in self.written.drain(..).chain(self.submitted.drain(..)) {
                if let Some(d) = b.on_durable {
                    d.complete(&self.read, None, Err(EngineError::StorageUnavailable { message: message.clone() }));
                }
            }
            self.collect()?;
        }
        self.counts.crashes += 1;
        self.recent.push(self.step, if fault.is_some() { Did::Fault } else { Did::Crash });
        self.trace.u64(0xC0_0000 + self.step);
        self.disk.crash();
        self.cores.clear();
        self.inbox.iter_mut().for_each(VecDeque::clear);
        self.links.iter_mut().for_each(VecDeque::clear);
        self.submitted.clear();
        self.written.clear();
        self.snapshot_waiting = None;
        self.held.iter_mut().for_each(Vec::clear);
        self.workload.forget_pending();
        self.now_ms = self.now_ms.saturating_add(RESTART_MS);
        self.recover()
    }

    /// Recover from the disk, start the cores on the recovered state, and check it: the full
    /// audit, and every answer a client took as success still holds.
    fn recover(&mut self) -> Result<(), String> {
        let recovery = self.disk.recover()?;
        let n = self.positions.len();
        self.read = Arc::default();
        let archive = self.disk.archive();
        let floor = archive.highest_id();
        let mut cores = Vec::with_capacity(n);
        for (id, initial) in place_state(recovery.state, n).into_iter().enumerate() {
            let parts = CoreParts {
                id,
                config: self.config.clone(),
                read: self.read.clone(),
                initial,
                // A cluster node keeps its orders in memory (no archive).
                archive_enabled: !self.cluster,
                archive: (!self.cluster).then(|| archive.clone()),
                counters: Arc::default(),
                assets: Arc::new(crate::wallet::Assets::new(&self.config.assets).map_err(|e| e.to_string())?),
            };
            let mut core = ShardCore::new(parts, n).map_err(|e| e.to_string())?;
            if let Some(floor) = floor {
                core.observe_id(floor);
            }
            if self.bug == Bug::ForgetIdempotencyOnRecovery {
                core.plant_forget_idempotency();
            }
            cores.push(core);
        }
        self.cores = cores;
        self.positions = vec![recovery.base; n];
        check::full_audit(&self.cores, &self.workload)?;
        check::after_recovery(&self.cores, &*self.disk, &self.workload)?;
        self.check_wallets(true)?;
        self.recent.push(self.step, Did::Recover);
        Ok(())
    }

    pub fn report(&self, config: &SimConfig) -> SimReport {
        let mut state = EngineState::default();
        for core in &self.cores {
            state.merge(core.state());
        }
        let c = &self.counts;
        SimReport {
            seed: config.seed,
            ops: config.ops,
            steps: self.step,
            batches: c.batches,
            replies_ok: self.workload.replies_ok,
            replies_err: self.workload.replies_err,
            outcomes: self.workload.outcomes.clone(),
            events: c.events,
            crashes: c.crashes,
            storage_faults: c.storage_faults,
            snapshots: c.snapshots,
            snapshot_faults: c.snapshot_faults,
            trace_digest: self.trace.0,
            state_digest: state.digest(),
        }
    }
}

/// The engine configuration of a simulation: small batches and timer bursts, so batching
/// boundaries vary; a payment deadline the clock passes often; archiving a minute after an
/// order ends, so archived orders (and restores) happen during a run.
fn sim_engine_config(shard_count: usize) -> EngineConfig {
    EngineConfig {
        shard_count,
        batch_size_max: 8,
        timers_per_tick_max: 4,
        payment_timeout_ms: 60_000,
        archive_after_ms: 60_000,
        auto_complete_ms: 120_000,
        ..EngineConfig::default()
    }
}
