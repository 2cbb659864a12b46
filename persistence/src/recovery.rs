//! Recovery on open: load the newest snapshot, replay the WAL records it does not cover in LSN
//! order, then reconcile (finish what a crash interrupted).

use std::path::Path;
use std::time::{Duration, Instant};

use surge_engine::{EngineState, Event, OrderEvent};

use crate::codec::{decode_header, decode_record, SnapshotFile};
use crate::error::PersistenceResult;
use crate::snapshot;
use crate::store::SledStore;

/// What recovery did (also logged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// LSN recorded in the snapshot loaded, if one was.
    pub snapshot_lsn: Option<u64>,
    /// Records replayed.
    pub records_replayed: u64,
    /// Events replayed.
    pub events_replayed: u64,
    /// Records skipped because the snapshot covers them.
    pub records_skipped: u64,
    /// Repair events produced by reconciliation (orphan reservations released, …).
    pub fixes: u64,
    /// Highest LSN in the log.
    pub last_lsn: u64,
    /// Wall time of the whole recovery.
    pub duration: Duration,
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
}

/// Rebuild the engine state from `data_dir`'s snapshot and `store`'s log.
///
/// # Errors
/// A snapshot or record that does not decode (named by path or LSN); I/O errors.
pub fn recover(store: &SledStore, data_dir: &Path) -> PersistenceResult<Recovered> {
    let t0 = Instant::now();
    let mut stats = RecoveryStats::default();
    let (mut state, cover) = match snapshot::load_latest(data_dir)? {
        Some((_, snap)) => {
            stats.snapshot_lsn = Some(snap.lsn);
            let cover = SnapshotFile { state: EngineState::default(), ..snap.clone() };
            (snap.state, Some(cover))
        }
        None => (EngineState::default(), None),
    };
    let mut archived = Vec::new();
    let mut seq_max = cover.as_ref().map_or(0, |c| c.cuts.iter().copied().max().unwrap_or(0).max(c.base));
    for r in store.iter() {
        let (lsn, bytes) = r?;
        stats.last_lsn = lsn;
        let header = decode_header(lsn, &bytes)?;
        seq_max = seq_max.max(header.seq);
        if cover.as_ref().is_some_and(|c| c.covers(&header)) {
            stats.records_skipped += 1;
            continue;
        }
        let (_, events) = decode_record(lsn, &bytes)?;
        for e in &events {
            if let Event::Order(OrderEvent::Archived(o)) = e {
                archived.push(o.clone());
            }
            state.apply(e);
        }
        stats.records_replayed += 1;
        stats.events_replayed += events.len() as u64;
    }
    // A crash may have kept an `order_archived` record but not its archive entry: write again.
    store.put_archived(&archived)?;
    // Consult the archive (just brought up to date) so that a crash between `order_archived`
    // and `holding_forgotten` never restocks units of an archived order (issue 10, item 1).
    let fixes = state.reconcile_with(&|id| store.archived(id.0).map(std::sync::Arc::new));
    stats.fixes = fixes.len() as u64;
    stats.duration = t0.elapsed();
    tracing::info!(
        snapshot_lsn = ?stats.snapshot_lsn,
        records_replayed = stats.records_replayed,
        events_replayed = stats.events_replayed,
        records_skipped = stats.records_skipped,
        fixes = stats.fixes,
        duration_ms = stats.duration.as_millis() as u64,
        "recovery finished"
    );
    Ok(Recovered { state, fixes, base: seq_max + 1, stats })
}
