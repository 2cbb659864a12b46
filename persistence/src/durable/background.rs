//! What runs beside the engine: the snapshotter thread, and the archive as the engine reads it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use surge_engine::{fatal, Order, OrderArchive, OrderId};

use super::Shared;
use crate::{PersistenceConfig, PersistenceError, Storage};

pub(super) fn spawn_snapshotter(
    shared: Arc<Shared>,
    cfg: &PersistenceConfig,
) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let every_events = cfg.snapshot_every_events.max(1);
    let every = Duration::from_secs(cfg.snapshot_every_secs.max(1));
    let policy = SnapshotPolicy { every_events, every, growth_percent: cfg.snapshot_growth_percent };
    let handle = std::thread::Builder::new().name("surge-snapshot".into()).spawn(move || {
        lower_this_threads_priority();
        fatal::run_or_fail_stop("snapshotter", || snapshot_loop(&shared, &stop_rx, policy))
    })?;
    Ok((stop_tx, handle))
}

/// Nice 19 for the calling thread (Linux keeps a nice value per thread): a snapshot encodes
/// the whole state, seconds of CPU at millions of orders, and must take the CPU the shards and
/// the WAL writer leave idle rather than queue their requests behind it (issue 12: at half of
/// saturation on two cores, a snapshot at nice 0 raised request p99 to 150 ms for its 7 s).
/// Background work at low priority, as RocksDB's low-priority compaction pool. Best effort: a
/// refusal is logged.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority takes plain integers; `who` 0 is the calling thread on Linux.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the snapshotter's priority");
        }
    }
}

/// When the snapshotter writes a snapshot (see [`PersistenceConfig`]).
#[derive(Debug, Clone, Copy)]
struct SnapshotPolicy {
    every_events: u64,
    every: Duration,
    growth_percent: u64,
}

impl SnapshotPolicy {
    /// Whether a snapshot is due, `logged` events after the last one, `since` it was written,
    /// and that one held `objects` orders and SKUs.
    fn due(&self, logged: u64, since: Duration, objects: u64) -> bool {
        let triggered = logged >= self.every_events || (logged > 0 && since >= self.every);
        triggered && u128::from(logged) * 100 >= u128::from(objects) * u128::from(self.growth_percent)
    }
}

/// The snapshotter thread's body: a snapshot when [`SnapshotPolicy::due`], until `stop_rx`
/// fires or is dropped.
fn snapshot_loop(shared: &Shared, stop_rx: &Receiver<()>, policy: SnapshotPolicy) {
    let mut last_events = shared.stats.events.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    // What recovery installed stands for the last snapshot's size.
    let mut objects = shared.engine.order_count() as u64;
    loop {
        match stop_rx.recv_timeout(Duration::from_millis(100)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let events = shared.stats.events.load(Ordering::Relaxed);
        if !policy.due(events - last_events, last_at.elapsed(), objects) {
            continue;
        }
        match shared.snapshot() {
            Ok(info) => {
                last_events = events;
                last_at = Instant::now();
                objects = info.map_or(objects, |i| (i.orders + i.skus) as u64);
            }
            // The handle failed (policy `halt`): nothing more is written through it.
            Err(PersistenceError::StorageFailed) => return,
            Err(e) => tracing::error!(error = %e, "snapshot failed; the WAL keeps everything, will retry"),
        }
    }
}

/// The archive as the engine reads it: the storage's archive, filled by the WAL writer.
pub(crate) struct StoreArchive(pub(crate) std::sync::Weak<dyn Storage>);

impl OrderArchive for StoreArchive {
    fn get(&self, order_id: OrderId) -> Option<Arc<Order>> {
        self.0.upgrade()?.archived(order_id.0).map(Arc::new)
    }

    fn list_user(&self, user_id: &str) -> Vec<OrderId> {
        self.0.upgrade().map(|s| s.archived_ids(user_id).into_iter().map(OrderId).collect()).unwrap_or_default()
    }

    fn highest_id(&self) -> Option<OrderId> {
        self.0.upgrade()?.archived_max_id().map(OrderId)
    }

    fn list_user_before(&self, user_id: &str, before: Option<OrderId>, limit: usize) -> Vec<OrderId> {
        let Some(store) = self.0.upgrade() else { return Vec::new() };
        store.archived_ids_before(user_id, before.map(|b| b.0), limit).into_iter().map(OrderId).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SnapshotPolicy;

    #[test]
    fn a_large_state_waits_for_the_log_to_grow_by_its_share() {
        let p = SnapshotPolicy { every_events: 1_000, every: Duration::from_secs(300), growth_percent: 100 };
        assert!(p.due(1_000, Duration::ZERO, 10), "small state: the event count decides");
        assert!(!p.due(999, Duration::ZERO, 10));
        assert!(!p.due(1_000, Duration::ZERO, 5_000), "5,000 objects need 5,000 events");
        assert!(p.due(5_000, Duration::ZERO, 5_000));
        assert!(p.due(1, Duration::from_secs(300), 0), "time decides a quiet small state");
        assert!(!p.due(0, Duration::from_secs(900), 0), "nothing logged, nothing to write");
        let off = SnapshotPolicy { growth_percent: 0, ..p };
        assert!(off.due(1_000, Duration::ZERO, 5_000));
    }
}
