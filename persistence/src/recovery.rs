//! Recovery on open: load the newest snapshot that verifies (falling back to the previous one
//! past a damaged file, see [`crate::snapshot`]), replay the WAL records it does not cover in LSN
//! order, then reconcile (finish what a crash interrupted).

use std::sync::Arc;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use surge_engine::{EngineState, Event, Order, OrderEvent};

use crate::codec::{decode_header, decode_record_into, SnapshotFile};
use crate::error::{PersistenceError, PersistenceResult};
use crate::snapshot;
use crate::storage::Storage;

/// What recovery did (also logged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// LSN recorded in the snapshot loaded, if one was.
    pub snapshot_lsn: Option<u64>,
    /// Records replayed.
    pub records_replayed: u64,
    /// Events replayed.
    pub events_replayed: u64,
    /// Newer snapshot files skipped because they did not verify (each logged as a warning).
    pub snapshots_rejected: u64,
    /// Records skipped because the snapshot covers them.
    pub records_skipped: u64,
    /// Repair events produced by reconciliation (orphan reservations released, …).
    pub fixes: u64,
    /// Archived orders written to the archive again from replayed `order_archived` records (a
    /// crash may have kept a record but not its archive entry); made durable before the engine
    /// starts.
    pub archived_rewritten: u64,
    /// Highest LSN in the log.
    pub last_lsn: u64,
    /// Wall time of the whole recovery (snapshot load, replay, archive rewrite, reconcile).
    pub duration: Duration,
    /// Wall time of opening the storage before recovery (sled's own start-up), set by
    /// [`crate::DurableEngine`]; zero when recovery runs alone.
    pub storage_open: Duration,
    /// Wall time from the end of recovery until the engine serves (repairs logged, the writer
    /// started, the shard threads started with the recovered actors installed), set by
    /// [`crate::DurableEngine`]; zero when recovery runs alone.
    pub engine_start: Duration,
}

/// The result of recovery.
pub struct Recovered {
    /// Every actor's state.
    pub state: EngineState,
    /// Repairs already applied to `state`; they must be logged before anything new.
    pub fixes: Vec<Event>,
    /// Journal positions of this run start above this (every existing record has `seq <= base`).
    pub base: u64,
    /// What it did.
    pub stats: RecoveryStats,
    /// The snapshot it started from: the next snapshot's trim relies on it.
    pub kept: Option<snapshot::KeptSnapshot>,
}

/// Rebuild the engine state from `store`'s snapshot files and log: the same code over sled
/// ([`crate::SledStore`]) and over the simulator's memory ([`crate::sim::SimStore`]).
///
/// The replay runs on three threads (see [`replay`]); the result is exactly that of applying
/// every uncovered event in LSN order with [`EngineState::apply`].
///
/// # Errors
/// A snapshot or record that does not decode (named by path or LSN); I/O errors.
pub fn recover(store: &dyn Storage) -> PersistenceResult<Recovered> {
    let t0 = Instant::now();
    let mut stats = RecoveryStats::default();
    let trimmed_by = store.meta_u64(snapshot::META_WAL_TRIMMED_BY);
    let loaded = snapshot::load_for_recovery(store.snapshots(), trimmed_by)?;
    stats.snapshots_rejected = loaded.rejected.len() as u64;
    let (state, kept) = match loaded.snapshot {
        Some((kept, snap)) => {
            stats.snapshot_lsn = Some(snap.lsn);
            (snap.state, Some(kept))
        }
        None => (EngineState::default(), None),
    };
    let cover: Option<&SnapshotFile> = kept.as_ref().map(|k| &k.cover);
    let seq_floor = cover.map_or(0, |c| c.cuts.iter().copied().max().unwrap_or(0).max(c.base));
    let Replayed { mut state, archived, seq_max } = replay(store, cover, state, &mut stats)?;
    let seq_max = seq_max.max(seq_floor);
    // A crash may have kept an `order_archived` record but not its archive entry: write again.
    store.put_archived(&archived)?;
    stats.archived_rewritten = archived.len() as u64;
    // Consult the archive (just brought up to date) so that a crash between `order_archived`
    // and `holding_forgotten` never restocks units of an archived order (issue 10, item 1).
    let fixes = state.reconcile_with(&|id| store.archived(id.0).map(Arc::new));
    stats.fixes = fixes.len() as u64;
    stats.duration = t0.elapsed();
    tracing::info!(
        snapshot_lsn = ?stats.snapshot_lsn,
        snapshots_rejected = stats.snapshots_rejected,
        records_replayed = stats.records_replayed,
        events_replayed = stats.events_replayed,
        records_skipped = stats.records_skipped,
        fixes = stats.fixes,
        duration_ms = stats.duration.as_millis() as u64,
        "recovery finished"
    );
    Ok(Recovered { state, fixes, base: seq_max + 1, stats, kept })
}

/// What [`replay`] gives back.
struct Replayed {
    /// The state after every uncovered event.
    state: EngineState,
    /// Orders the replayed records archived (their archive entries are written again).
    archived: Vec<Arc<Order>>,
    /// The highest batch sequence of any record, covered or not.
    seq_max: u64,
}

/// Events handed to an applier thread at a time.
const BATCH_EVENTS: usize = 4_096;
/// Batches in flight to each applier thread (bounded: the reader waits rather than grow).
const BATCHES_IN_FLIGHT: usize = 16;

/// Apply every record `cover` does not hold to `state`, in LSN order, on three threads: this one
/// reads the log and decodes it, one applies the SKU events and one the order and wallet events,
/// each in batches, in log order. `EngineState::apply` changes only `skus` for a SKU event, only
/// `orders` for an order event and only `wallets` for a wallet event, so each map sees exactly
/// its events in log order and the result equals a single-threaded replay. (Decoding, SKU and order work each allocate much of the
/// state's memory; three threads let two cores share it whichever dominates.)
fn replay(
    store: &dyn Storage,
    cover: Option<&SnapshotFile>,
    state: EngineState,
    stats: &mut RecoveryStats,
) -> PersistenceResult<Replayed> {
    let EngineState { skus, orders, wallets } = state;
    std::thread::scope(|scope| {
        // Created in the scope: an early return drops the senders, so the appliers end.
        let (sku_tx, sku_rx) = crossbeam_channel::bounded(BATCHES_IN_FLIGHT);
        let (order_tx, order_rx) = crossbeam_channel::bounded(BATCHES_IN_FLIGHT);
        let sku_part = EngineState { skus, ..EngineState::default() };
        let sku_thread = spawn_applier(scope, "surge-replay-skus", sku_part, sku_rx)?;
        // Wallets ride the order lane: a user's wallet events keep their log order there.
        let order_part = EngineState { orders, wallets, ..EngineState::default() };
        let order_thread = spawn_applier(scope, "surge-replay-orders", order_part, order_rx)?;
        let mut lanes = Lanes { skus: Lane::new(sku_tx), orders: Lane::new(order_tx) };
        let read = read_log(store, cover, &mut lanes, stats).and_then(|r| lanes.flush().map(|()| r));
        drop(lanes);
        // A panic while applying is a bug, not bad input: let it end the process as it would
        // have on one thread (fail-stop).
        let skus = sku_thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p)).skus;
        let EngineState { orders, wallets, .. } = order_thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (archived, seq_max) = read?;
        Ok(Replayed { state: EngineState { skus, orders, wallets }, archived, seq_max })
    })
}

/// A thread that applies every batch it receives to `part`, in order, and returns it.
fn spawn_applier<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    mut part: EngineState,
    rx: Receiver<Vec<Event>>,
) -> std::io::Result<ScopedJoinHandle<'scope, EngineState>> {
    std::thread::Builder::new().name(name.into()).spawn_scoped(scope, move || {
        for batch in rx {
            for e in &batch {
                part.apply(e);
            }
        }
        part
    })
}

/// Where [`read_log`] sends events.
struct Lanes {
    skus: Lane,
    /// Order and wallet events (a wallet's events, per user, keep their log order here).
    orders: Lane,
}

impl Lanes {
    fn flush(&mut self) -> PersistenceResult<()> {
        self.skus.flush()?;
        self.orders.flush()
    }
}

/// Events gathered for one applier thread.
struct Lane {
    tx: Sender<Vec<Event>>,
    batch: Vec<Event>,
}

impl Lane {
    fn new(tx: Sender<Vec<Event>>) -> Self {
        Self { tx, batch: Vec::with_capacity(BATCH_EVENTS) }
    }

    #[inline]
    fn push(&mut self, e: Event) -> PersistenceResult<()> {
        self.batch.push(e);
        if self.batch.len() >= BATCH_EVENTS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> PersistenceResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_EVENTS));
        // An applier only stops early by panicking, which `replay` then re-raises.
        self.tx.send(batch).map_err(|_| PersistenceError::Io(std::io::Error::other("a replay thread stopped")))
    }
}

/// Walk the log: skip what `cover` holds, decode the rest and route its events to `lanes`.
/// Returns the archived orders and the highest batch sequence seen.
fn read_log(
    store: &dyn Storage,
    cover: Option<&SnapshotFile>,
    lanes: &mut Lanes,
    stats: &mut RecoveryStats,
) -> PersistenceResult<(Vec<Arc<Order>>, u64)> {
    let (mut archived, mut seq_max, mut events) = (Vec::new(), 0, Vec::new());
    store.for_each_record(&mut |lsn, bytes| {
        stats.last_lsn = lsn;
        let header = decode_header(lsn, bytes)?;
        seq_max = seq_max.max(header.seq);
        if cover.is_some_and(|c| c.covers(&header)) {
            stats.records_skipped += 1;
            return Ok(());
        }
        decode_record_into(lsn, bytes, &mut events)?;
        stats.records_replayed += 1;
        stats.events_replayed += events.len() as u64;
        for e in events.drain(..) {
            match &e {
                Event::Sku(_) => lanes.skus.push(e)?,
                Event::Order(o) => {
                    if let OrderEvent::Archived(o) = o {
                        archived.push(o.clone());
                    }
                    lanes.orders.push(e)?;
                }
                Event::Wallet(_) => lanes.orders.push(e)?,
                // The outbox's copy of a change: for the publisher, not for the state.
                Event::Outbox(_) => {}
            }
        }
        Ok(())
    })?;
    Ok((archived, seq_max))
}
