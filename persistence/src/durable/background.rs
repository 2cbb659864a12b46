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
    let handle = std::thread::Builder::new().name("surge-snapshot".into()).spawn(move || {
        fatal::run_or_fail_stop("snapshotter", || snapshot_loop(&shared, &stop_rx, every_events, every))
    })?;
    Ok((stop_tx, handle))
}

/// The snapshotter thread's body: a snapshot when enough events or time have passed, until
/// `stop_rx` fires or is dropped.
fn snapshot_loop(shared: &Shared, stop_rx: &Receiver<()>, every_events: u64, every: Duration) {
    let mut last_events = shared.stats.events.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    loop {
        match stop_rx.recv_timeout(Duration::from_millis(100)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let events = shared.stats.events.load(Ordering::Relaxed);
        let due = events - last_events >= every_events || (events > last_events && last_at.elapsed() >= every);
        if !due {
            continue;
        }
        match shared.snapshot() {
            Ok(_) => {
                last_events = events;
                last_at = Instant::now();
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
