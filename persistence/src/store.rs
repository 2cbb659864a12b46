//! The one module that touches sled (0.34.7, pinned; DESIGN.md). The WAL lives in the tree
//! `wal`, keyed by the big-endian LSN, so iteration order is log order.
//!
//! # Flushing
//! sled's `flush` writes its buffers and calls `sync_file_range`, which flushes neither the
//! drive's write cache nor file metadata (sled issues #1452, #1351). In `sync` mode
//! [`SledStore::flush`] therefore also calls `fsync` (`File::sync_all`) on sled's data file `db`
//! and, after it grew, on the directory.

use std::fs::File;
use std::path::Path;

use crate::error::PersistenceResult;
use crate::snapshot::FsSnapshots;
use crate::storage::{RecordVisitor, SnapshotStore, Storage};

/// Where the WAL writer puts records: the storage boundary, a trait so tests can inject faults.
pub trait LogStore: Send + 'static {
    /// Write `records` (LSN, bytes) as one atomic batch. Not yet durable.
    ///
    /// # Errors
    /// The storage refused the write.
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> std::io::Result<()>;

    /// Put archived orders into the archive (before the flush that makes their records durable).
    /// The default does nothing (stores without an archive).
    ///
    /// # Errors
    /// The storage refused the write.
    fn archive(&mut self, orders: &[std::sync::Arc<surge_engine::Order>]) -> std::io::Result<()> {
        let _ = orders;
        Ok(())
    }

    /// Make everything appended so far durable: to the OS (`sync == false`) or to the disk
    /// (`sync == true`, fsync).
    ///
    /// # Errors
    /// The storage could not flush.
    fn flush(&mut self, sync: bool) -> std::io::Result<()>;
}

/// WAL records removed per sled batch when a snapshot trims the log (see `remove_where`).
const TRIM_BATCH_KEYS: usize = 64;

/// The WAL in sled.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    wal: sled::Tree,
    /// Archived orders: order id (BE) → codec::encode_order.
    archive: sled::Tree,
    /// (user id length u16 BE, user id, order id BE) → nothing: a user's archived orders.
    archive_by_user: sled::Tree,
    /// Facts about the data directory (`shard_count`).
    meta: sled::Tree,
    /// sled's data file, kept open for fsync.
    data_file: std::sync::Arc<File>,
    /// The directory's snapshot files (not in sled; [`Storage::snapshots`]).
    snapshots: FsSnapshots,
}

fn io(e: sled::Error) -> std::io::Error {
    match e {
        sled::Error::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

impl SledStore {
    /// Open (or create) the WAL under `dir/wal` (snapshot files: `dir/snapshots`).
    ///
    /// # Errors
    /// sled cannot open the directory (missing permissions, another process holds it).
    pub fn open(dir: &Path) -> PersistenceResult<Self> {
        let path = dir.join("wal");
        // sled would create `wal/` itself, without making its entry in `dir` durable.
        crate::dirs::create_dir_durable(&path)?;
        let config = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::HighThroughput)
            // Only our group commit flushes: a reply is released after *its* flush.
            .flush_every_ms(None)
            // Pages stay inline (no unsynced blob files) up to segment_size / 4: 2 MiB, which
            // codec::RECORD_BYTES_MAX keeps every page of records far below.
            .segment_size(8 << 20)
            .cache_capacity(128 << 20);
        // sled's lock can outlive the last handle of a process that just closed it by a few
        // milliseconds (its I/O threads finish first): retry briefly, never forever.
        let mut attempt = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports a held lock as an `Other` I/O error with this message.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && attempt < 250 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        // Every durability point below is `flush` and then `fdatasync` of the data file
        // (`flush_durable`, `LogStore::flush`), so sled's own `sync_file_range` per buffer would
        // only add a device round trip (vendor/sled/SURGE-PATCHES.md).
        sled::set_skip_log_range_sync(true);
        let wal = db.open_tree("wal")?;
        let archive = db.open_tree("archive")?;
        let archive_by_user = db.open_tree("archive_by_user")?;
        db.flush()?;
        let data_file = std::sync::Arc::new(File::open(path.join("db"))?);
        data_file.sync_all()?;
        // The files were possibly just created: make their directory entries durable once.
        File::open(&path)?.sync_all()?;
        let meta = db.open_tree("meta")?;
        let snapshots = FsSnapshots::new(dir);
        Ok(Self { db, wal, archive, archive_by_user, meta, data_file, snapshots })
    }

    /// The highest LSN in the log, if any.
    ///
    /// # Errors
    /// sled failed to read.
    pub fn last_lsn(&self) -> PersistenceResult<Option<u64>> {
        Ok(self.wal.last()?.map(|(k, _)| lsn_of(&k)))
    }

    /// The lowest LSN in the log, if any.
    ///
    /// # Errors
    /// sled failed to read.
    pub fn first_lsn(&self) -> PersistenceResult<Option<u64>> {
        Ok(self.wal.first()?.map(|(k, _)| lsn_of(&k)))
    }

    /// Every record in LSN order.
    pub fn iter(&self) -> impl Iterator<Item = PersistenceResult<(u64, sled::IVec)>> + '_ {
        self.wal.iter().map(|r| r.map(|(k, v)| (lsn_of(&k), v)).map_err(Into::into))
    }

    /// Remove every record `covered` says a snapshot holds. Returns how many were removed.
    ///
    /// # Errors
    /// sled failed.
    pub fn remove_where(&self, mut covered: impl FnMut(u64, &[u8]) -> bool) -> PersistenceResult<u64> {
        // Keys first, then removal in small batches: one batch of every covered record held
        // the tree while the WAL writer's commits waited behind it (issue 12: a 764 ms commit
        // when a snapshot trimmed two million orders' records).
        let mut doomed = Vec::new();
        for r in self.wal.iter() {
            let (k, v) = r?;
            if covered(lsn_of(&k), &v) {
                doomed.push(k);
            }
        }
        for keys in doomed.chunks(TRIM_BATCH_KEYS) {
            let mut batch = sled::Batch::default();
            for k in keys {
                batch.remove(k.clone());
            }
            self.wal.apply_batch(batch)?;
        }
        self.flush_durable()?;
        Ok(doomed.len() as u64)
    }

    /// Write archived orders (idempotent: recovery writes them again for replayed records).
    ///
    /// # Errors
    /// sled or the codec failed.
    pub fn put_archived(&self, orders: &[std::sync::Arc<surge_engine::Order>]) -> std::io::Result<()> {
        let mut by_id = sled::Batch::default();
        let mut by_user = sled::Batch::default();
        for o in orders {
            let bytes = crate::codec::encode_order(o).map_err(|e| std::io::Error::other(e.to_string()))?;
            by_id.insert(&o.order_id.0.to_be_bytes(), bytes);
            by_user.insert(user_key(&o.user_id, Some(o.order_id.0)), &[] as &[u8]);
        }
        self.archive.apply_batch(by_id).map_err(io)?;
        self.archive_by_user.apply_batch(by_user).map_err(io)
    }

    /// An archived order.
    pub fn archived(&self, order_id: u64) -> Option<surge_engine::Order> {
        let bytes = self.archive.get(order_id.to_be_bytes()).ok()??;
        crate::codec::decode_order(&bytes)
    }

    /// Ids of a user's archived orders, ascending.
    pub fn archived_ids(&self, user_id: &str) -> Vec<u64> {
        let prefix = user_key(user_id, None);
        self.archive_by_user
            .scan_prefix(&prefix)
            .filter_map(|r| r.ok())
            .map(|(k, _)| lsn_of(&k[prefix.len()..]))
            .collect()
    }

    /// The highest archived order id (the archive is keyed by big-endian id), if any.
    pub fn archived_max_id(&self) -> Option<u64> {
        match self.archive.last() {
            Ok(last) => last.map(|(k, _)| lsn_of(&k)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the archive's highest order id");
                None
            }
        }
    }

    /// Up to `limit` ids of a user's archived orders below `before` (all if `None`), highest
    /// first: a reverse range scan of `archive_by_user`, so it costs O(`limit`) whatever the
    /// user's archive holds (one page of `list_orders`). Read errors end the scan early.
    pub fn archived_ids_before(&self, user_id: &str, before: Option<u64>, limit: usize) -> Vec<u64> {
        use std::ops::Bound;
        let prefix = user_key(user_id, None);
        let upper = match before {
            Some(b) => Bound::Excluded(user_key(user_id, Some(b))),
            None => Bound::Included(user_key(user_id, Some(u64::MAX))),
        };
        self.archive_by_user
            .range::<Vec<u8>, _>((Bound::Included(prefix.clone()), upper))
            .rev()
            .take(limit)
            .map_while(|r| r.ok())
            .map(|(k, _)| lsn_of(&k[prefix.len()..]))
            .collect()
    }

    /// A number stored in the meta tree.
    pub fn meta_u64(&self, key: &str) -> Option<u64> {
        let v = self.meta.get(key).ok()??;
        let b: [u8; 8] = v.as_ref().try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }

    /// Store a number in the meta tree, durably (flushed and fsynced before it returns).
    ///
    /// # Errors
    /// sled failed.
    pub fn set_meta_u64(&self, key: &str, value: u64) -> PersistenceResult<()> {
        self.meta.insert(key, &value.to_be_bytes())?;
        self.flush_durable()
    }

    /// Archived orders stored.
    pub fn archived_count(&self) -> usize {
        self.archive.len()
    }

    /// Bytes sled's files take on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.wal.len()
    }

    /// True when the log is empty.
    pub fn is_empty(&self) -> bool {
        self.wal.is_empty()
    }

    /// sled's buffers written, then `fdatasync`: what was written before is on the disk.
    fn flush_durable(&self) -> PersistenceResult<()> {
        self.db.flush()?;
        self.fsync_data_file()?;
        Ok(())
    }

    fn fsync_data_file(&self) -> std::io::Result<()> {
        // fdatasync: the data and the metadata needed to read it back (the file size).
        self.data_file.sync_data()
    }
}

impl LogStore for SledStore {
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        let mut batch = sled::Batch::default();
        for (lsn, bytes) in records {
            batch.insert(&lsn.to_be_bytes(), bytes.as_slice());
        }
        self.wal.apply_batch(batch).map_err(io)
    }

    fn archive(&mut self, orders: &[std::sync::Arc<surge_engine::Order>]) -> std::io::Result<()> {
        self.put_archived(orders)
    }

    fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        self.db.flush().map_err(io)?;
        if sync {
            self.fsync_data_file()?;
        }
        Ok(())
    }
}

/// The real storage: sled for the log, archive and meta; files for snapshots.
impl Storage for SledStore {
    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> PersistenceResult<()> {
        for r in self.wal.iter() {
            let (k, v) = r?;
            visit(lsn_of(&k), &v)?;
        }
        Ok(())
    }

    fn for_each_record_after(
        &self,
        after_lsn: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> PersistenceResult<bool>,
    ) -> PersistenceResult<()> {
        let Some(from) = after_lsn.checked_add(1) else { return Ok(()) };
        for r in self.wal.range(from.to_be_bytes()..) {
            let (k, v) = r?;
            if !visit(lsn_of(&k), &v)? {
                break;
            }
        }
        Ok(())
    }

    fn remove_where(&self, covered: &mut dyn FnMut(u64, &[u8]) -> bool) -> PersistenceResult<u64> {
        SledStore::remove_where(self, covered)
    }

    fn record_count(&self) -> usize {
        self.len()
    }

    fn size_bytes(&self) -> u64 {
        self.size_on_disk()
    }

    fn put_archived(&self, orders: &[std::sync::Arc<surge_engine::Order>]) -> std::io::Result<()> {
        SledStore::put_archived(self, orders)
    }

    fn archived(&self, order_id: u64) -> Option<surge_engine::Order> {
        SledStore::archived(self, order_id)
    }

    fn archived_ids_before(&self, user_id: &str, before: Option<u64>, limit: usize) -> Vec<u64> {
        SledStore::archived_ids_before(self, user_id, before, limit)
    }

    fn archived_ids(&self, user_id: &str) -> Vec<u64> {
        SledStore::archived_ids(self, user_id)
    }

    fn archived_max_id(&self) -> Option<u64> {
        SledStore::archived_max_id(self)
    }

    fn archived_count(&self) -> usize {
        SledStore::archived_count(self)
    }

    fn meta_u64(&self, key: &str) -> Option<u64> {
        SledStore::meta_u64(self, key)
    }

    fn set_meta_u64(&self, key: &str, value: u64) -> PersistenceResult<()> {
        SledStore::set_meta_u64(self, key, value)
    }

    fn snapshots(&self) -> &dyn SnapshotStore {
        &self.snapshots
    }
}

fn user_key(user_id: &str, order_id: Option<u64>) -> Vec<u8> {
    let b = user_id.as_bytes();
    let mut k = Vec::with_capacity(2 + b.len() + 8);
    k.extend_from_slice(&(b.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(b);
    if let Some(id) = order_id {
        k.extend_from_slice(&id.to_be_bytes());
    }
    k
}

fn lsn_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

impl LogStore for Box<dyn LogStore> {
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        (**self).append(records)
    }

    fn archive(&mut self, orders: &[std::sync::Arc<surge_engine::Order>]) -> std::io::Result<()> {
        (**self).archive(orders)
    }

    fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        (**self).flush(sync)
    }
}
