//! The WAL writer: group commit.
//!
//! Shards hand batches to [`WalJournal::submit`] (a bounded channel: when the writer lags, shards
//! block, their mailboxes fill, and callers get `overloaded`: back-pressure, not growth). The
//! writer thread takes *every* batch waiting, encodes them as records with consecutive LSNs,
//! writes them as one sled batch, flushes once (and fsyncs in `sync` mode), and only then calls
//! each batch's `on_durable`, which releases its replies. One flush thus acknowledges every
//! request that arrived while the previous flush ran.
//!
//! # Storage failure
//! If a write or flush fails, the writer raises the engine's [`StorageGate`] (new writes are
//! refused with `storage_unavailable`; reads go on), answers the failed batches'
//! callers with `storage_unavailable` (outcome unknown: retry with the same idempotency key),
//! and keeps retrying the same records, in order, every `retry_interval`. The engine's memory
//! already holds those changes, so the log must get them too before anything newer; once a retry
//! succeeds the gate drops and writes resume. Nothing unwritten is ever acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use surge_engine::{EngineError, Event, Journal, OnDurable, StorageGate};

use crate::codec::encode_record;
use crate::store::LogStore;

/// Largest number of events in one record (keeps records far below sled's blob threshold).
const EVENTS_PER_RECORD_MAX: usize = 2_048;
/// Most submissions one group commit takes (a bound on the loop; the rest go in the next).
const GROUP_SUBMISSIONS_MAX: usize = 16_384;

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
    /// Failed write or flush attempts.
    pub failures: AtomicU64,
    /// Flush (+ fsync) latency in microseconds, per group commit. Written only by the writer
    /// thread; the lock is never on the command path.
    pub flush_latency_us: Mutex<Histogram<u64>>,
    /// Submissions (shard batches) per group commit.
    pub group_size: Mutex<Histogram<u64>>,
}

impl WalStats {
    pub(crate) fn new(durable_lsn: u64) -> Self {
        Self {
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            durable_lsn: AtomicU64::new(durable_lsn),
            failures: AtomicU64::new(0),
            flush_latency_us: Mutex::new(histogram()),
            group_size: Mutex::new(histogram()),
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

pub(crate) struct Writer<S: LogStore> {
    pub store: S,
    pub rx: Receiver<Submission>,
    pub sync: bool,
    pub next_lsn: u64,
    pub gate: Arc<StorageGate>,
    pub stats: Arc<WalStats>,
    pub retry_interval: Duration,
}

impl<S: LogStore> Writer<S> {
    /// Run until every journal is dropped and the queue is drained.
    pub fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut group = vec![first];
            while group.len() < GROUP_SUBMISSIONS_MAX {
                match self.rx.try_recv() {
                    Ok(s) => group.push(s),
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    fn encode(&mut self, group: &[Submission]) -> Vec<(u64, Vec<u8>)> {
        let mut records = Vec::new();
        for s in group {
            for chunk in s.events.chunks(EVENTS_PER_RECORD_MAX) {
                match encode_record(s.shard, s.seq, chunk) {
                    Ok(bytes) => {
                        records.push((self.next_lsn, bytes));
                        self.next_lsn += 1;
                    }
                    // Engine events always encode; if one ever did not, the log would miss it,
                    // so stop rather than acknowledge (TigerBeetle: crash on a broken invariant).
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode a WAL record; aborting");
                        std::process::abort();
                    }
                }
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
                .and_then(|()| self.store.flush(self.sync))
        };
        match result {
            Ok(()) => {
                self.account(group.len(), events_in(&group), &records, t0);
                for s in group {
                    (s.on_durable)(Ok(()));
                }
            }
            Err(e) => self.fail_and_retry(group, records, e),
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

    /// Storage failed: refuse new writes, fail the callers of what is pending, and retry the same
    /// records (plus anything still arriving) until storage takes them.
    fn fail_and_retry(&mut self, group: Vec<Submission>, mut records: Vec<(u64, Vec<u8>)>, first: std::io::Error) {
        self.gate.set_failed(true);
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let message = format!(
            "write-ahead log write failed ({first}); writes are refused until storage recovers (free disk space or fix \
             the device); outcome of this request unknown: retry with the same idempotency key"
        );
        tracing::error!(error = %first, "WAL write failed; refusing writes and retrying");
        let unavailable = || EngineError::StorageUnavailable { message: message.clone() };
        let mut archived = archived_orders(&group);
        let mut submissions = group.len();
        let mut events = events_in(&group);
        for s in group {
            (s.on_durable)(Err(unavailable()));
        }
        loop {
            std::thread::sleep(self.retry_interval);
            // Changes already applied in memory keep arriving (sagas in flight, timers): they go
            // to the log after the failed ones, in order, and their callers hear the failure.
            let late: Vec<Submission> = self.rx.try_iter().take(GROUP_SUBMISSIONS_MAX).collect();
            records.extend(self.encode(&late));
            archived.extend(archived_orders(&late));
            submissions += late.len();
            events += events_in(&late);
            for s in late {
                (s.on_durable)(Err(unavailable()));
            }
            let t0 = Instant::now();
            let attempt = self
                .store
                .append(&records)
                .and_then(|()| self.store.archive(&archived))
                .and_then(|()| self.store.flush(self.sync));
            match attempt {
                Ok(()) => {
                    self.account(submissions, events, &records, t0);
                    self.gate.set_failed(false);
                    tracing::warn!(records = records.len(), "WAL storage recovered; writes resume");
                    return;
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "WAL retry failed");
                }
            }
        }
    }
}
