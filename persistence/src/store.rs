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

/// Where the WAL writer puts records: the storage boundary, a trait so tests can inject faults.
pub trait LogStore: Send + 'static {
    /// Write `records` (LSN, bytes) as one atomic batch. Not yet durable.
    ///
    /// # Errors
    /// The storage refused the write.
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> std::io::Result<()>;

    /// Make everything appended so far durable: to the OS (`sync == false`) or to the disk
    /// (`sync == true`, fsync).
    ///
    /// # Errors
    /// The storage could not flush.
    fn flush(&mut self, sync: bool) -> std::io::Result<()>;
}

/// The WAL in sled.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    wal: sled::Tree,
    /// sled's data file, kept open for fsync.
    data_file: std::sync::Arc<File>,
}

fn io(e: sled::Error) -> std::io::Error {
    match e {
        sled::Error::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

impl SledStore {
    /// Open (or create) the WAL under `dir/wal`.
    ///
    /// # Errors
    /// sled cannot open the directory (missing permissions, another process holds it).
    pub fn open(dir: &Path) -> PersistenceResult<Self> {
        let path = dir.join("wal");
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::HighThroughput)
            // Only our group commit flushes: a reply is released after *its* flush.
            .flush_every_ms(None)
            // Records stay inline (no blob files) up to segment_size / 4.
            .segment_size(8 << 20)
            .cache_capacity(128 << 20)
            .open()?;
        let wal = db.open_tree("wal")?;
        db.flush()?;
        let data_file = std::sync::Arc::new(File::open(path.join("db"))?);
        data_file.sync_all()?;
        // The files were possibly just created: make their directory entries durable once.
        File::open(&path)?.sync_all()?;
        Ok(Self { db, wal, data_file })
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
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for r in self.wal.iter() {
            let (k, v) = r?;
            if covered(lsn_of(&k), &v) {
                batch.remove(k);
                n += 1;
            }
        }
        self.wal.apply_batch(batch)?;
        self.db.flush()?;
        Ok(n)
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

    fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        self.db.flush().map_err(io)?;
        if sync {
            self.fsync_data_file()?;
        }
        Ok(())
    }
}

fn lsn_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}
