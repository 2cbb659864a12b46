//! Recovery on open: load the newest snapshot that verifies (falling back to the previous one
//! past a damaged file, see [`crate::snapshot`]), replay the WAL records it does not cover in LSN
//! order, then reconcile (finish what a crash interrupted).

use std::time::{Duration, Instant};

use surge_engine::{EngineState, Event, OrderEvent};

use crate::codec::{decode_header, decode_record, SnapshotFile};
use crate::error::PersistenceResult;
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
/// # Errors
/// A snapshot or record that does not decode (named by path or LSN); I/O errors.
pub fn recover(store: &dyn Storage) -> PersistenceResult<Recovered> {
    let t0 = Instant::now();
    let mut stats = RecoveryStats::default();
    let trimmed_by = store.meta_u64(snapshot::META_WAL_TRIMMED_BY);
    let loaded = snapshot::load_for_recovery(store.snapshots(), trimmed_by)?;
    stats.snapshots_rejected = loaded.rejected.len() as u64;
    let (mut state, kept) = match loaded.snapshot {
        Some((kept, snap)) => {
            stats.snapshot_lsn = Some(snap.lsn);
            (snap.state, Some(kept))
        }
        None => (EngineState::default(), None),
    };
    let cover: Option<&SnapshotFile> = kept.as_ref().map(|k| &k.cover);
    let mut archived = Vec::new();
    let mut seq_max = cover.map_or(0, |c| c.cuts.iter().copied().max().unwrap_or(0).max(c.base));
    store.for_each_record(&mut |lsn, bytes| {
        stats.last_lsn = lsn;
        let header = decode_header(lsn, bytes)?;
        seq_max = seq_max.max(header.seq);
        if cover.is_some_and(|c| c.covers(&header)) {
            stats.records_skipped += 1;
            return Ok(());
        }
        let (_, events) = decode_record(lsn, bytes)?;
        for e in &events {
            if let Event::Order(OrderEvent::Archived(o)) = e {
                archived.push(o.clone());
            }
            state.apply(e);
        }
        stats.records_replayed += 1;
        stats.events_replayed += events.len() as u64;
        Ok(())
    })?;
    // A crash may have kept an `order_archived` record but not its archive entry: write again.
    store.put_archived(&archived)?;
    // Consult the archive (just brought up to date) so that a crash between `order_archived`
    // and `holding_forgotten` never restocks units of an archived order (issue 10, item 1).
    let fixes = state.reconcile_with(&|id| store.archived(id.0).map(std::sync::Arc::new));
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
