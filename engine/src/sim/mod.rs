//! A deterministic simulator for the engine: its shards, its journal and its recovery, with
//! crashes and storage faults (issue 11; after TigerBeetle's VOPR and FoundationDB's
//! simulation testing).
//!
//! [`run`] drives N real [`ShardCore`](crate::shard::ShardCore)s on one thread. A seeded
//! [`SplitMix64`] decides everything that is timing in production:
//! * which shard runs a batch next;
//! * when each message between two shards arrives (FIFO per ordered pair, random delay);
//! * when the WAL writer takes a group commit from its queue, writes it, and syncs it (replies
//!   are released only then);
//! * when the clock moves (small steps, and jumps past payment deadlines and archiving);
//! * when the machine loses power ([`SimConfig::crash_rate`] per step) and when storage fails
//!   (the [`Disk`]'s fault rate): then everything volatile is dropped, the [`Disk`] keeps what
//!   was synced, and recovery (snapshot, replay, reconcile) rebuilds the shards.
//!
//! A workload of concurrent clients creates SKUs, creates multi-SKU orders (some retried with
//! their idempotency key after a timeout), pays (duplicate callbacks, second payment ids),
//! cancels, ships, delivers, refunds, disputes, restocks and pauses SKUs; wallet clients credit
//! and debit CNY and POINTS, pay orders from wallets by TCC (mixed legs, wrong sums, short
//! wallets, cancels racing them), retry transfer ids (same and other parameters) and read
//! wallets (issue 14). Checks:
//! * after every batch, the shard's SKUs conserve stock and equal their holdings, and the
//!   wallets it changed keep their invariant (`WalletBook::check`);
//! * at every quiet point (nothing in flight), after every recovery and at the end, the full
//!   [`crate::audit`], one order per (user, idempotency key), per-user limits, no open payment
//!   try, per-asset sums, every order's wallet payment settled in its user's wallet, and every
//!   known account equal to what the answers make it;
//! * after every recovery and at the end, every answer a client took as success still holds
//!   (the order exists, live or archived, at least at the version it was answered with; every
//!   transfer id answered is in the books with that outcome), and archived sold units equal
//!   what the SKUs remember;
//! * every answer against a reference model where it is determined (see `workload`).
//!
//! No thread, wall clock or I/O enters a run: the same seed gives the same run bit for bit.
//! [`SimReport::trace_digest`] folds every step's effects (journal events, messages between
//! shards, group commits, crashes, replies) and [`SimReport::state_digest`] is
//! [`EngineState::digest`](crate::EngineState::digest) at the end.
//!
//! The module is built for the engine's own tests and behind the cargo feature `sim` (the
//! `surge sim` command, and `surge_persistence::sim::SimDisk`, which runs the real WAL codec,
//! recovery and snapshots under it): it costs release builds nothing.
//!
//! ```
//! use surge_engine::sim::{run, SimConfig};
//! let config = SimConfig { seed: 7, ops: 300, crash_rate: 0.002, ..SimConfig::default() };
//! let a = run(&config).unwrap();
//! let b = run(&config).unwrap();
//! assert_eq!((a.trace_digest, a.state_digest), (b.trace_digest, b.state_digest));
//! ```

mod check;
mod disk;
mod planted;
pub(crate) mod prng;
mod trace;
mod wallet_check;
mod workload;
mod world;

use std::collections::BTreeMap;

pub use disk::{Disk, DiskFault, GroupEntry, MemArchive, MemDisk, Recovery, RecoveryBug};
pub use prng::SplitMix64;
use world::Sim;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The PRNG's seed: the whole run follows from it.
    pub seed: u64,
    /// Client operations to issue (each a request to the engine).
    pub ops: u64,
    /// Shards (1..=64).
    pub shard_count: usize,
    /// Probability of a power loss per simulator step (0 for none; 1e-4 is about one crash per
    /// 3 000 client operations).
    pub crash_rate: f64,
    /// Probability that a write or sync of [`run`]'s [`MemDisk`] fails (callers of [`run_on`]
    /// configure their disk's faults themselves).
    pub storage_fault_rate: f64,
    /// Cluster mode (issue 16): each shard is a partition of a cluster hosted by some node.
    /// Cores run clustered (saga steps give up after `saga_timeout_ms`, SKUs check unclaimed
    /// reservations with the order's partition); a message between partitions leaves only once
    /// its batch is durable, and may be lost or delivered twice; a crash takes one partition
    /// (its node died, or it moved): its volatile state, its unwritten batches and the messages
    /// on their way to it are lost, and it is rebuilt from its own log alone
    /// ([`crate::EngineState::reconcile_partition`]), as the node taking it over does. No
    /// archive (cluster nodes keep orders in memory) and no snapshots.
    pub cluster: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { seed: 0, ops: 1_000, shard_count: 3, crash_rate: 0.0, storage_fault_rate: 0.0, cluster: false }
    }
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed it ran with.
    pub seed: u64,
    /// Client operations issued.
    pub ops: u64,
    /// Simulator steps (client op, shard batch, write, sync, clock move, crash, snapshot).
    pub steps: u64,
    /// Shard batches run.
    pub batches: u64,
    /// Replies that were successes.
    pub replies_ok: u64,
    /// Replies that were errors (business rejections mostly).
    pub replies_err: u64,
    /// Answers by request kind and outcome (`create:ok`, `create:sold_out`, `pay:ok`,
    /// `create:unknown` for requests a crash left unanswered, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Journal events made durable.
    pub events: u64,
    /// Crashes (power losses and fail-stops after storage faults), each followed by recovery.
    pub crashes: u64,
    /// Storage faults (each ends in a crash).
    pub storage_faults: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Snapshots whose write failed (a storage fault; the log still holds everything).
    pub snapshot_faults: u64,
    /// FNV-1a digest of every step's effects, in order.
    pub trace_digest: u64,
    /// [`EngineState::digest`](crate::EngineState::digest) of all shards at the end.
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
    /// The last steps before the failure, oldest first.
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "simulation seed {} failed after step {}: {}", self.seed, self.step, self.violation)
    }
}

impl std::error::Error for SimFailure {}

/// A bug planted in a run, to show the checks catch it (the simulator's own tests and
/// `surge_persistence`'s). Each re-introduces a defect the engine once had or could have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bug {
    /// None: the engine as it is.
    #[default]
    None,
    /// Lose the first `Release` sent between shards (a compensation or cancel that forgets
    /// one release).
    DropFirstRelease,
    /// Release a batch's replies when it is submitted, before it is durable.
    ReplyBeforeDurable,
    /// Recovery starts the shards without their idempotency records.
    ForgetIdempotencyOnRecovery,
    /// Write a snapshot as soon as it is captured, before the batches it includes are durable
    /// (the bug the simulator found: an order archived in memory vanishes with a crash).
    SnapshotBeforeDurable,
    /// Journal a wallet payment's try and confirm (`wallet_frozen`, `wallet_settled`) with the
    /// shard's next batch instead of with the order's `paid` (as a separate wallet lane in the
    /// log would): a crash between the two leaves a paid order whose money never left the
    /// wallet, and the log holds no open try for recovery to repair.
    TccAcrossBatches,
    /// Cluster mode: send a batch's messages to other partitions when it is submitted, not
    /// once it is durable (a node answering `Reserved` before its reservation is in the log):
    /// a partition crash then loses a reservation whose order exists.
    ClusterSendBeforeDurable,
}

/// Run one simulation on a [`MemDisk`] whose faults follow `config.storage_fault_rate`.
///
/// # Errors
/// [`SimFailure`] names the seed, the step, the first broken invariant and the last steps; a
/// configuration the engine refuses (`shard_count` outside 1..=64) fails at step 0.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    run_on(config, Box::new(MemDisk::new(config.seed, config.storage_fault_rate)), Bug::None)
}

/// Run one simulation on `disk`, with `bug` planted ([`Bug::None`] for the engine as it is).
///
/// # Errors
/// As [`run`].
pub fn run_on(config: &SimConfig, disk: Box<dyn Disk>, bug: Bug) -> Result<SimReport, SimFailure> {
    let fail = |step, violation: String, trace| SimFailure { seed: config.seed, step, violation, trace };
    if !(1..=64).contains(&config.shard_count) {
        return Err(fail(0, format!("shard_count {} outside 1..=64", config.shard_count), Vec::new()));
    }
    let mut sim = Sim::new(config, disk, bug).map_err(|v| fail(0, v, Vec::new()))?;
    sim.run(config.ops).map_err(|v| fail(sim.step, v, sim.recent.lines()))?;
    Ok(sim.report(config))
}

#[cfg(test)]
mod tests;
