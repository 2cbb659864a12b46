//! The storage the persistence code reads and maintains, as traits, so the real recovery,
//! snapshot and trimming code runs over sled and files ([`crate::SledStore`]) in production and
//! over memory ([`crate::sim::SimStore`]) in the simulator (issue 11 item 3; FoundationDB's and
//! TigerBeetle's simulators run the real storage code over a simulated disk the same way).
//!
//! * [`crate::LogStore`]: what the WAL writer thread writes (records, archive, flush).
//! * [`Storage`]: everything else: reading the log back (recovery, `surge wal inspect`),
//!   trimming it, the archive's lookups, the meta facts, and the snapshot files
//!   ([`SnapshotStore`]).

use std::path::PathBuf;
use std::sync::Arc;

use surge_engine::Order;

use crate::error::PersistenceResult;

/// A visitor over log records: `(lsn, bytes)` in LSN order; an error stops the walk.
pub type RecordVisitor<'a> = dyn FnMut(u64, &[u8]) -> PersistenceResult<()> + 'a;

/// The durable state of a data directory as the persistence code sees it (besides the writer's
/// [`crate::LogStore`] path): the log, the archive of terminal orders, the meta facts and the
/// snapshot files. Implemented by [`crate::SledStore`] (sled + files) and
/// [`crate::sim::SimStore`] (memory, with crashes and faults).
///
/// # Example
/// ```
/// use surge_persistence::{sim::{SimConfig, SimStore}, Storage};
/// let store = SimStore::new(SimConfig::new(7));
/// store.set_meta_u64("shard_count", 4).unwrap();
/// assert_eq!(store.meta_u64("shard_count"), Some(4));
/// assert_eq!(store.record_count(), 0);
/// ```
pub trait Storage: Send + Sync + 'static {
    /// Call `visit` with every record in LSN order (recovery's replay, `surge wal inspect`).
    ///
    /// # Errors
    /// The storage failed to read; whatever `visit` returned.
    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> PersistenceResult<()>;

    /// Call `visit` with every record after `after_lsn`, in LSN order, while it returns
    /// `true` (the outbox's reads). The default walks the whole log; sled seeks.
    ///
    /// # Errors
    /// The storage failed to read; whatever `visit` returned.
    fn for_each_record_after(
        &self,
        after_lsn: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> PersistenceResult<bool>,
    ) -> PersistenceResult<()> {
        let mut more = true;
        self.for_each_record(&mut |lsn, bytes| {
            if more && lsn > after_lsn {
                more = visit(lsn, bytes)?;
            }
            Ok(())
        })
    }

    /// Remove every record `covered(lsn, bytes)` says a snapshot holds (the WAL trim), written
    /// to the OS but not synced. Returns how many were removed.
    ///
    /// # Errors
    /// The storage refused the write.
    fn remove_where(&self, covered: &mut dyn FnMut(u64, &[u8]) -> bool) -> PersistenceResult<u64>;

    /// Records in the log.
    fn record_count(&self) -> usize;

    /// Bytes the log takes (an estimate; snapshots not included).
    fn size_bytes(&self) -> u64;

    /// Write archived orders, idempotently (recovery writes them again for replayed records).
    ///
    /// # Errors
    /// The storage refused the write; an order does not encode.
    fn put_archived(&self, orders: &[Arc<Order>]) -> std::io::Result<()>;

    /// An archived order, if the archive holds it (read errors count as absent, logged).
    fn archived(&self, order_id: u64) -> Option<Order>;

    /// Up to `limit` ids of a user's archived orders below `before` (all if `None`), highest
    /// first, in O(`limit`) (one page of `list_orders`).
    fn archived_ids_before(&self, user_id: &str, before: Option<u64>, limit: usize) -> Vec<u64>;

    /// Ids of a user's archived orders, ascending.
    fn archived_ids(&self, user_id: &str) -> Vec<u64> {
        let mut ids = self.archived_ids_before(user_id, None, usize::MAX);
        ids.reverse();
        ids
    }

    /// The highest archived order id, if any.
    fn archived_max_id(&self) -> Option<u64>;

    /// Archived orders stored.
    fn archived_count(&self) -> usize;

    /// A number stored under `key` in the meta facts (`shard_count`,
    /// [`crate::snapshot::META_WAL_TRIMMED_BY`]).
    fn meta_u64(&self, key: &str) -> Option<u64>;

    /// Store a number in the meta facts, written to the OS but not synced (the next sync of the
    /// log makes it durable; an earlier crash may lose it, never reorder it after later writes).
    ///
    /// # Errors
    /// The storage refused the write.
    fn set_meta_u64(&self, key: &str, value: u64) -> PersistenceResult<()>;

    /// The snapshot files.
    fn snapshots(&self) -> &dyn SnapshotStore;
}

/// Snapshot files, by number (see [`crate::snapshot`]): `DIR/snapshots/snapshot-<number>.bin`
/// on disk ([`crate::snapshot::FsSnapshots`]), a map in the simulator.
pub trait SnapshotStore: Send + Sync {
    /// The snapshot files present, by number, oldest first, with the path that names each in
    /// logs and errors.
    ///
    /// # Errors
    /// The directory cannot be read.
    fn list(&self) -> PersistenceResult<Vec<(u64, PathBuf)>>;

    /// Write `bytes` as snapshot `number` durably and atomically (temporary file, fsync,
    /// rename, directory fsync): after `Ok` it survives a crash whole, after `Err` it is absent
    /// (or a leftover [`SnapshotStore::retain`] removes). Returns its path.
    ///
    /// # Errors
    /// The write, fsync or rename failed (disk full, I/O error).
    fn write_durable(&self, number: u64, bytes: &[u8]) -> PersistenceResult<PathBuf>;

    /// From now on write at the storage's full speed, including a write already under way.
    /// Snapshots are paced so that the WAL's fsyncs keep room on the disk; at shutdown
    /// ([`crate::DurableEngine::close`]) no commit is left to protect, and a paced final
    /// snapshot of a few hundred megabytes held `surge serve`'s exit for seconds. Default: no
    /// pacing to stop.
    fn stop_pacing(&self) {}

    /// The bytes of snapshot `number`.
    ///
    /// # Errors
    /// It is absent or cannot be read.
    fn read(&self, number: u64) -> std::io::Result<Vec<u8>>;

    /// Remove snapshot `number` (a failed removal costs space only).
    fn remove(&self, number: u64);

    /// Remove every snapshot file (and leftover temporary file) whose number is not in `keep`,
    /// durably.
    ///
    /// # Errors
    /// The directory cannot be read or fsynced.
    fn retain(&self, keep: &[u64]) -> PersistenceResult<()>;
}
