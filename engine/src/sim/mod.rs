//! A deterministic simulator for the engine's shards (issue 11, first step; after TigerBeetle's
//! VOPR and FoundationDB's simulation testing).
//!
//! [`run`] drives N real [`ShardCore`]s on one thread. A seeded [`SplitMix64`] decides
//! everything that is timing in production: which shard runs a batch next, when each message
//! between two shards arrives (FIFO per ordered pair of shards, random delay), when each
//! journal batch becomes durable (a stub journal keeps the batches in memory and completes
//! them per shard in submission order, at a random later step), and when the simulated clock
//! moves. A workload of concurrent clients creates SKUs, creates multi-SKU orders (some
//! retried with their idempotency key), pays (some payments twice), cancels, restocks, and
//! lets payment deadlines pass. After every step the stepped shard's SKUs are checked
//! (counters conserve stock and equal their holdings); at every quiet point (nothing in
//! flight) and at the end the full [`crate::audit`] runs, plus checks across replies
//! (one order per user and idempotency key, per-user limits).
//!
//! No thread, wall clock or I/O enters a run: the same seed gives the same run bit for bit.
//! [`SimReport::trace_digest`] folds every step's effects (journal events, messages between
//! shards, replies) and [`SimReport::state_digest`] is [`EngineState::digest`] at the end.
//!
//! The module is built for the engine's own tests and behind the cargo feature `sim`, for the
//! `surge sim` command a later step adds: it costs release builds nothing.
//!
//! Not simulated yet: crashes and recovery, storage faults, archiving (no archive port).
//!
//! ```
//! use surge_engine::sim::{run, SimConfig};
//! let a = run(&SimConfig { seed: 7, ops: 300, ..SimConfig::default() }).unwrap();
//! let b = run(&SimConfig { seed: 7, ops: 300, ..SimConfig::default() }).unwrap();
//! assert_eq!((a.trace_digest, a.state_digest), (b.trace_digest, b.state_digest));
//! ```

mod check;
mod prng;
mod workload;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use prng::Fnv64;
pub use prng::SplitMix64;

use crate::config::EngineConfig;
use crate::event::Event;
use crate::publish::ReadModels;
use crate::shard::{BatchEffects, CoreParts, DurableEffects, ShardCore, ShardMsg, SkuMsg};
use crate::state::EngineState;
use workload::Workload;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The PRNG's seed: the whole run follows from it.
    pub seed: u64,
    /// Client operations to issue (each a request to the engine).
    pub ops: u64,
    /// Shards (1..=64).
    pub shard_count: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { seed: 0, ops: 1_000, shard_count: 3 }
    }
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed it ran with.
    pub seed: u64,
    /// Client operations issued.
    pub ops: u64,
    /// Simulator steps (client op, shard batch, durable batch or clock move).
    pub steps: u64,
    /// Shard batches run.
    pub batches: u64,
    /// Replies that were successes / errors.
    pub replies_ok: u64,
    /// Replies that were errors (business rejections mostly).
    pub replies_err: u64,
    /// Answers by request kind and outcome (`create:ok`, `create:sold_out`, `pay:ok`, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Journal events made durable.
    pub events: u64,
    /// FNV-1a digest of every step's effects, in order.
    pub trace_digest: u64,
    /// [`EngineState::digest`] of all shards at the end.
    pub state_digest: u64,
}

/// A broken invariant: the seed reproduces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed of the failing run.
    pub seed: u64,
    /// The step after which the check failed.
    pub step: u64,
    /// What is broken, in words.
    pub violation: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "simulation seed {} failed after step {}: {}", self.seed, self.step, self.violation)
    }
}

impl std::error::Error for SimFailure {}

/// Run one simulation.
///
/// # Errors
/// [`SimFailure`] names the seed, the step and the first broken invariant; a configuration the
/// engine refuses (`shard_count` outside 1..=64) fails at step 0.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    let fail = |step, violation: String| SimFailure { seed: config.seed, step, violation };
    if !(1..=64).contains(&config.shard_count) {
        return Err(fail(0, format!("shard_count {} outside 1..=64", config.shard_count)));
    }
    run_with(config, Fault::None)
}

/// A bug the tests plant in a run, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Lose the first `Release` sent between shards (a compensation or cancel that forgets
    /// one release).
    #[cfg_attr(not(test), allow(dead_code))]
    DropFirstRelease,
}

fn run_with(config: &SimConfig, fault: Fault) -> Result<SimReport, SimFailure> {
    let fail = |step, violation: String| SimFailure { seed: config.seed, step, violation };
    let mut sim = Sim::new(config, fault).map_err(|e| fail(0, e.to_string()))?;
    sim.run(config.ops).map_err(|v| fail(sim.step, v))?;
    Ok(sim.report(config))
}

/// A message on its way between two shards.
struct Flight {
    ready_step: u64,
    msg: ShardMsg,
}

/// A batch submitted to the stub journal, not yet durable.
struct Submitted {
    durable_step: u64,
    events: Vec<Event>,
    on_durable: DurableEffects,
}

/// Longest delay of a message between shards, and of a batch's durability, in steps.
const LINK_DELAY_STEPS_MAX: u64 = 8;
const DURABLE_DELAY_STEPS_MAX: u64 = 12;
/// Client requests outstanding at once.
const CLIENTS_CONCURRENT_MAX: usize = 24;
/// Issue this many ops, then let everything settle and run the full audit.
const OPS_PER_QUIET_POINT: u64 = 400;

struct Sim {
    rng: SplitMix64,
    step: u64,
    now_ms: i64,
    config: Arc<EngineConfig>,
    read: Arc<ReadModels>,
    cores: Vec<ShardCore>,
    /// Each shard's external mailbox (client requests), FIFO.
    inbox: Vec<VecDeque<ShardMsg>>,
    /// Messages between shards: `links[from * n + to]`, FIFO per pair.
    links: Vec<VecDeque<Flight>>,
    /// Each shard's batches submitted and not yet durable, in submission order.
    journal: Vec<VecDeque<Submitted>>,
    /// Each shard's durable log (the stub journal keeps it in memory).
    log: Vec<Vec<Event>>,
    trace: Fnv64,
    batches: u64,
    workload: Workload,
    fault: Fault,
}

impl Sim {
    fn new(config: &SimConfig, fault: Fault) -> Result<Self, crate::error::EngineError> {
        let n = config.shard_count;
        let engine_config = Arc::new(sim_engine_config(n));
        let read = Arc::new(ReadModels::default());
        let mut cores = Vec::with_capacity(n);
        for id in 0..n {
            let parts = CoreParts {
                id,
                config: engine_config.clone(),
                read: read.clone(),
                initial: EngineState::default(),
                archive_enabled: false,
                archive: None,
                counters: Arc::default(),
            };
            cores.push(ShardCore::new(parts, n)?);
        }
        let mut rng = SplitMix64::new(config.seed);
        let workload = Workload::new(&mut rng, n);
        Ok(Self {
            rng,
            step: 0,
            // 2026-01-01T00:00:00Z: a plausible engine clock, after the snowflake epoch.
            now_ms: 1_767_225_600_000,
            config: engine_config,
            read,
            cores,
            inbox: (0..n).map(|_| VecDeque::new()).collect(),
            links: (0..n * n).map(|_| VecDeque::new()).collect(),
            journal: (0..n).map(|_| VecDeque::new()).collect(),
            log: vec![Vec::new(); n],
            trace: Fnv64::default(),
            batches: 0,
            workload,
            fault,
        })
    }

    /// Issue `ops` client operations, settling every [`OPS_PER_QUIET_POINT`], then settle.
    fn run(&mut self, ops: u64) -> Result<(), String> {
        let mut issued = 0u64;
        while issued < ops {
            let burst = (ops - issued).min(OPS_PER_QUIET_POINT);
            let mut left = burst;
            while left > 0 {
                if self.workload.outstanding() < CLIENTS_CONCURRENT_MAX && self.rng.chance(35) {
                    self.step += 1;
                    let (shard, msg) = self.workload.next_op(&mut self.rng);
                    self.inbox[shard].push_back(msg);
                    left -= 1;
                } else {
                    self.step_system(true)?;
                }
            }
            issued += burst;
            self.settle()?;
            check::full_audit(&self.cores, &self.workload)?;
        }
        Ok(())
    }

    /// One step of the system (not a client): run a shard's batch, make a batch durable, or
    /// (when `clock` and rarely) move the clock. Checks the stepped shard after a batch.
    fn step_system(&mut self, clock: bool) -> Result<(), String> {
        self.step += 1;
        let n = self.cores.len() as u64;
        match self.rng.below(100) {
            0..=54 => {
                let s = self.rng.below(n) as usize;
                self.run_batch(s);
                check::shard_skus(&self.cores[s])
            }
            55..=94 => {
                let s = self.rng.below(n) as usize;
                self.make_durable(s)
            }
            _ if clock => {
                // Mostly small moves; one in twenty jumps past the payment deadline.
                let jump = if self.rng.chance(5) { self.config.payment_timeout_ms } else { self.rng.below(2_000) };
                self.now_ms = self.now_ms.saturating_add(jump as i64 + 1);
                self.trace.u64(self.now_ms as u64);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Step until nothing is queued, in flight or waiting for durability.
    fn settle(&mut self) -> Result<(), String> {
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

    /// Nothing is queued anywhere, yet some shard still waits: a lost message.
    fn only_sagas_left(&self) -> bool {
        self.inbox.iter().all(VecDeque::is_empty)
            && self.links.iter().all(VecDeque::is_empty)
            && self.journal.iter().all(VecDeque::is_empty)
            && !self.cores.iter().all(ShardCore::is_idle)
    }

    fn is_quiet(&self) -> bool {
        self.inbox.iter().all(VecDeque::is_empty)
            && self.links.iter().all(VecDeque::is_empty)
            && self.journal.iter().all(VecDeque::is_empty)
            && self.cores.iter().all(ShardCore::is_idle)
            && self.workload.outstanding() == 0
    }

    /// One batch of shard `s`, as the production loop runs it: messages from other shards
    /// first, then the mailbox, up to `batch_size_max`; then due timers; then end the batch.
    fn run_batch(&mut self, s: usize) {
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
        self.batches += 1;
        self.release(s, effects);
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

    /// Submit the batch to the stub journal, then put its messages on their links.
    fn release(&mut self, s: usize, mut effects: BatchEffects) {
        let n = self.cores.len();
        self.trace.u64(s as u64);
        if let Some(batch) = effects.batch {
            for e in &batch.events {
                let _ = write!(self.trace, "{e:?}");
            }
            let durable_step = self.step + self.rng.below(DURABLE_DELAY_STEPS_MAX);
            self.journal[s].push_back(Submitted { durable_step, events: batch.events, on_durable: batch.on_durable });
        }
        for (to, msg) in effects.outbox.drain(..) {
            if self.fault == Fault::DropFirstRelease && matches!(msg, ShardMsg::Sku(_, SkuMsg::Release { .. })) {
                self.fault = Fault::None;
                continue;
            }
            check::trace_msg(&mut self.trace, to, &msg);
            let link = &mut self.links[s * n + to];
            // FIFO per pair: never before the message ahead of it.
            let after = link.back().map_or(0, |f| f.ready_step);
            let ready_step = (self.step + self.rng.below(LINK_DELAY_STEPS_MAX)).max(after);
            link.push_back(Flight { ready_step, msg });
        }
        self.cores[s].recycle_outbox(effects.outbox);
    }

    /// Complete shard `s`'s oldest batch if its time has come: log it, publish, reply.
    fn make_durable(&mut self, s: usize) -> Result<(), String> {
        if self.journal[s].front().is_none_or(|b| b.durable_step > self.step) {
            return Ok(());
        }
        let Some(batch) = self.journal[s].pop_front() else { return Ok(()) };
        self.trace.u64(0xD0_0000 + s as u64);
        self.log[s].extend(batch.events);
        batch.on_durable.complete(&self.read, None, Ok(()));
        self.workload.collect_replies(&mut self.trace)
    }

    fn report(&self, config: &SimConfig) -> SimReport {
        let mut state = EngineState::default();
        for core in &self.cores {
            state.merge(core.state());
        }
        SimReport {
            seed: config.seed,
            ops: config.ops,
            steps: self.step,
            batches: self.batches,
            replies_ok: self.workload.replies_ok,
            replies_err: self.workload.replies_err,
            outcomes: self.workload.outcomes.clone(),
            events: self.log.iter().map(|l| l.len() as u64).sum(),
            trace_digest: self.trace.0,
            state_digest: state.digest(),
        }
    }
}

/// The engine configuration of a simulation: small batches and timer bursts, so batching
/// boundaries vary, and a payment deadline the clock passes often.
fn sim_engine_config(shard_count: usize) -> EngineConfig {
    EngineConfig {
        shard_count,
        batch_size_max: 8,
        timers_per_tick_max: 4,
        payment_timeout_ms: 60_000,
        ..EngineConfig::default()
    }
}

#[cfg(test)]
mod tests;
