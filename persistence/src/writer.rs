//! The WAL writer: group commit.
//!
//! Shards hand batches to [`WalJournal::submit`] (a bounded channel: when the writer lags, shards
//! block, their mailboxes fill, and callers get `overloaded`: back-pressure, not growth). The
//! writer thread takes *every* batch waiting, encodes them as records with consecutive LSNs,
//! writes them as one sled batch, flushes once (and fsyncs in `sync` mode), and only then calls
//! each batch's `on_durable`, which releases its replies. One flush thus acknowledges every
//! request that arrived while the previous flush ran.
//!
//! # Storage failure is fail-stop
//! After a failed write or fsync, sled's handle (and the kernel's page cache: PostgreSQL's
//! "fsyncgate", 2018) no longer says what is on disk: a later flush that "succeeds" may have
//! dropped the failed pages. So the writer never acknowledges anything on that handle again.
//! On the first failed append, archive or flush it
//! 1. raises the engine's [`StorageGate`] (new writes are refused with `storage_unavailable` at
//!    the `Engine` handle; reads go on),
//! 2. answers the failed group and every batch still queued or arriving later with
//!    `storage_unavailable` (outcome unknown: retry with the same idempotency key after the
//!    restart),
//! 3. calls the [`StorageFailurePolicy`]: by default [`StorageFailurePolicy::FailStop`] ends the
//!    process with `surge_engine::fatal::fail_stop("wal-writer", ..)` (exit code 70), and the
//!    next start's recovery rebuilds from what the log really holds (DESIGN.md: "a failed fsync
//!    ends the process with a clear log line"; TigerBeetle and PostgreSQL do the same). With
//!    [`StorageFailurePolicy::Halt`] (embedders, in-process tests) the process lives on with a
//!    failed handle: writes refused, reads served, until the embedder drops or closes the
//!    `DurableEngine` and opens the directory again, which runs recovery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use surge_engine::{fatal, EngineError, Event, Journal, OnDurable, StorageGate};

use crate::codec::encode_records;
use crate::store::LogStore;

/// Most submissions one group commit takes (a bound on the loop; the rest go in the next).
const GROUP_SUBMISSIONS_MAX: usize = 16_384;

/// What the WAL writer does after a failed write or fsync (the `storage_failure_policy` key of
/// `[persistence]`). Either way nothing is acknowledged on the failed handle again (see the
/// module docs, "Storage failure is fail-stop").
///
/// ```
/// use surge_persistence::{PersistenceConfig, StorageFailurePolicy};
/// // An embedder that wants to keep its process and reopen the store itself:
/// let cfg = PersistenceConfig {
///     storage_failure_policy: StorageFailurePolicy::Halt,
///     ..PersistenceConfig::new("data")
/// };
/// assert_eq!(PersistenceConfig::default().storage_failure_policy, StorageFailurePolicy::FailStop);
/// # let _ = cfg;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageFailurePolicy {
    /// End the process with `surge_engine::fatal::fail_stop("wal-writer", ..)` (exit code 70):
    /// a supervisor restarts it and recovery replays the log (production default, `surge serve`).
    #[default]
    FailStop,
    /// Keep the process: the `DurableEngine` stays failed (writes answer `storage_unavailable`,
    /// reads work) until it is dropped or closed and the directory is opened again.
    Halt,
}

pub(crate) struct Submission {
    shard: u16,
    seq: u64,
    events: Vec<Event>,
    on_durable: OnDurable,
}

/// A shard's handle on the writer.
pub struct WalJournal {
    shard: u16,
    position: u64,
    tx: Sender<Submission>,
}

impl WalJournal {
    pub(crate) fn new(shard: usize, base: u64, tx: Sender<Submission>) -> Self {
        Self { shard: shard as u16, position: base, tx }
    }
}

impl Journal for WalJournal {
    fn submit(&mut self, _shard: usize, events: Vec<Event>, on_durable: OnDurable) {
        if !events.is_empty() {
            self.position += 1;
        }
        let s = Submission { shard: self.shard, seq: self.position, events, on_durable };
        if let Err(e) = self.tx.send(s) {
            (e.0.on_durable)(Err(EngineError::ShuttingDown));
        }
    }

    fn position(&self) -> u64 {
        self.position
    }
}

/// Counters and histograms of the writer, readable while it runs.
#[derive(Debug)]
pub struct WalStats {
    /// Group commits done.
    pub batches: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Record bytes written.
    pub bytes: AtomicU64,
    /// Highest LSN known durable.
    pub durable_lsn: AtomicU64,
    /// Failed write or flush attempts (at most 1: the first failure ends the writer's service).
    pub failures: AtomicU64,
    /// True once a write or flush failed: the handle acknowledges nothing again, and snapshots
    /// are refused (see the module docs).
    pub failed: std::sync::atomic::AtomicBool,
    /// Flush (+ fsync) latency in microseconds, per group commit. Written only by the writer
    /// thread; the lock is never on the command path.
    pub flush_latency_us: Mutex<Histogram<u64>>,
    /// Submissions (shard batches) per group commit.
    pub group_size: Mutex<Histogram<u64>>,
    /// Log records snapshots trimmed before the outbox published them (past its
    /// `max_lag_bytes`; see [`crate::outbox`]).
    pub outbox_records_dropped: AtomicU64,
}

impl WalStats {
    /// Fresh counters, `durable_lsn` already durable (a node without a local WAL reports these
    /// zeros).
    pub fn new(durable_lsn: u64) -> Self {
        Self {
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            durable_lsn: AtomicU64::new(durable_lsn),
            failures: AtomicU64::new(0),
            failed: std::sync::atomic::AtomicBool::new(false),
            flush_latency_us: Mutex::new(histogram()),
            group_size: Mutex::new(histogram()),
            outbox_records_dropped: AtomicU64::new(0),
        }
    }
}

/// An auto-resizing histogram with 3 significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    match Histogram::new(3) {
        Ok(h) => h,
        // Only sigfig > 5 fails.
        Err(_) => unreachable!("sigfig 3 is valid"),
    }
}

fn events_in(group: &[Submission]) -> u64 {
    group.iter().map(|s| s.events.len() as u64).sum()
}

/// Orders archived by a group's events: the archive gets them in the same flush.
fn archived_orders(group: &[Submission]) -> Vec<Arc<surge_engine::Order>> {
    group
        .iter()
        .flat_map(|s| &s.events)
        .filter_map(|e| match e {
            Event::Order(surge_engine::OrderEvent::Archived(o)) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

/// A commit that has not finished after this long means the storage is stalled rather than
/// slow (a full disk that sled waits on, a hung device): fail-stop, as for a failed write.
const COMMIT_STALL_MS: u64 = 20_000;

/// Watches the writer's commits from its own thread: a write or flush that never returns
/// (seen with sled on a full tmpfs: no error, no progress, and no reply ever released) ends
/// the process with the fail-stop code, so recovery runs at the next start instead of every
/// client waiting forever. Only under [`StorageFailurePolicy::FailStop`].
struct CommitWatchdog {
    /// Milliseconds since `base` at which the running commit started, plus one; 0 when idle.
    started_ms: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    base: Instant,
}

impl CommitWatchdog {
    fn spawn() -> Self {
        let started_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let base = Instant::now();
        let (started, stopped) = (started_ms.clone(), stop.clone());
        let spawned = std::thread::Builder::new().name("surge-wal-watch".into()).spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let at = started.load(Ordering::Relaxed);
                let now = base.elapsed().as_millis() as u64 + 1;
                if at != 0 && now.saturating_sub(at) > COMMIT_STALL_MS {
                    fatal::fail_stop(
                        "wal-writer",
                        &format_args!(
                            "a write-ahead log commit has not finished in {} s: the storage is stalled (a full disk, a hung device); recovery runs at the next start",
                            COMMIT_STALL_MS / 1000
                        ),
                    );
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the WAL commit watchdog");
        }
        Self { started_ms, stop, base }
    }

    fn started(&self) {
        self.started_ms.store(self.base.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    fn finished(&self) {
        self.started_ms.store(0, Ordering::Relaxed);
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) struct Writer<S: LogStore> {
    pub store: S,
    pub rx: Receiver<Submission>,
    pub sync: bool,
    pub next_lsn: u64,
    pub gate: Arc<StorageGate>,
    pub stats: Arc<WalStats>,
    pub policy: StorageFailurePolicy,
}

/// A group commit slower than this is logged (at `info`): issue 12's bound on the worst commit.
const COMMIT_SLOW_MS: u128 = 20;

/// Log a group commit that took longer than [`COMMIT_SLOW_MS`], split into the append (sled's
/// in-memory insert) and the flush (its write and fsync), so an operator can tell a slow disk
/// from a slow tree.
fn log_if_slow(started: Instant, flush_started: Instant, records: &[(u64, Vec<u8>)]) {
    let total = started.elapsed();
    if total.as_millis() >= COMMIT_SLOW_MS {
        let bytes: usize = records.iter().map(|r| r.1.len()).sum();
        tracing::info!(
            commit_ms = total.as_secs_f64() * 1e3,
            append_ms = (flush_started - started).as_secs_f64() * 1e3,
            flush_ms = flush_started.elapsed().as_secs_f64() * 1e3,
            records = records.len(),
            bytes,
            "slow WAL commit"
        );
    }
}

impl<S: LogStore> Writer<S> {
    /// Run until every journal is dropped and the queue is drained.
    pub fn run(mut self) {
        let watch = (self.policy == StorageFailurePolicy::FailStop).then(CommitWatchdog::spawn);
        while let Ok(first) = self.rx.recv() {
            let mut group = vec![first];
            while group.len() < GROUP_SUBMISSIONS_MAX {
                match self.rx.try_recv() {
                    Ok(s) => group.push(s),
                    Err(_) => break,
                }
            }
            if let Some(w) = &watch {
                w.started();
            }
            self.commit(group);
            if let Some(w) = &watch {
                w.finished();
            }
        }
        if let Some(w) = watch {
            w.stop();
        }
    }

    fn encode(&mut self, group: &[Submission]) -> Vec<(u64, Vec<u8>)> {
        let mut records = Vec::new();
        for s in group {
            // Split by bytes so no value reaches sled's unsynced blob files (codec docs).
            match encode_records(s.shard, s.seq, &s.events) {
                Ok(encoded) => {
                    for bytes in encoded {
                        records.push((self.next_lsn, bytes));
                        self.next_lsn += 1;
                    }
                }
                // Engine events always encode within the bound; if one ever did not, the log
                // would miss it, so stop rather than acknowledge (TigerBeetle: crash on a broken
                // invariant).
                Err(e) => fatal::fail_stop("wal-writer", &format_args!("cannot encode a WAL record: {e}")),
            }
        }
        records
    }

    fn commit(&mut self, group: Vec<Submission>) {
        let records = self.encode(&group);
        let t0 = Instant::now();
        let result = if records.is_empty() {
            Ok(())
        } else {
            let archived = archived_orders(&group);
            self.store
                .append(&records)
                .and_then(|()| self.store.archive(&archived))
                .and_then(|()| {
                    let flush_started = Instant::now();
                    self.store.flush(self.sync).map(|()| flush_started)
                })
                .map(|flush_started| log_if_slow(t0, flush_started, &records))
        };
        match result {
            Ok(()) => {
                self.account(group.len(), events_in(&group), &records, t0);
                for s in group {
                    (s.on_durable)(Ok(()));
                }
            }
            Err(e) => self.fail(group, e),
        }
    }

    fn account(&self, submissions: usize, events: u64, records: &[(u64, Vec<u8>)], t0: Instant) {
        let st = &self.stats;
        if let Some((lsn, _)) = records.last() {
            st.batches.fetch_add(1, Ordering::Relaxed);
            st.events.fetch_add(events, Ordering::Relaxed);
            st.bytes.fetch_add(records.iter().map(|r| r.1.len() as u64).sum(), Ordering::Relaxed);
            st.durable_lsn.store(*lsn, Ordering::Release);
            if let Ok(mut h) = st.flush_latency_us.lock() {
                let _ = h.record((t0.elapsed().as_micros() as u64).max(1));
            }
            if let Ok(mut h) = st.group_size.lock() {
                let _ = h.record(submissions as u64);
            }
        }
    }

    /// Storage failed: refuse new writes, fail every pending and later batch, apply the policy,
    /// and (for `Halt`) answer `storage_unavailable` until every journal is gone. Never returns
    /// to normal service: the handle is not trusted again (fsyncgate).
    fn fail(&mut self, group: Vec<Submission>, error: std::io::Error) {
        self.gate.set_failed(true);
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.stats.failed.store(true, Ordering::Release);
        let message = format!(
            "write-ahead log write failed ({error}); this server no longer accepts writes and must restart (recovery \
             replays the log); outcome of this request unknown: retry with the same idempotency key"
        );
        tracing::error!(error = %error, policy = ?self.policy, "WAL write failed; storage is fail-stop");
        let unavailable = || EngineError::StorageUnavailable { message: message.clone() };
        for s in group {
            (s.on_durable)(Err(unavailable()));
        }
        // Whatever already waits in the queue hears the failure before the process may end.
        for s in self.rx.try_iter() {
            (s.on_durable)(Err(unavailable()));
        }
        if self.policy == StorageFailurePolicy::FailStop {
            fatal::fail_stop("wal-writer", &format_args!("write-ahead log write failed: {error}"));
        }
        // Halt: changes already applied in memory keep arriving (sagas in flight, timers) until
        // the engine stops; none of them is written, each caller hears the failure.
        for s in self.rx.iter() {
            (s.on_durable)(Err(unavailable()));
        }
    }
}
