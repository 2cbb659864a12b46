//! Snapshot files: `DIR/snapshots/snapshot-<number>.bin`, written to a temporary file, fsynced,
//! renamed into place, the directory fsynced, then read back and its checksum verified (`codec`'s
//! envelope version 4) before anything relies on it. Recovery decodes it in full, and falls back
//! to the previous generation if it does not decode.
//!
//! # Two generations
//! The newest snapshot and the one before it are kept, and the WAL keeps every record the
//! *older* of the two does not cover, so a damaged newest file (bad checksum, does not decode)
//! can be skipped: recovery falls back to the previous one, with a warning naming the file, and
//! replays the log from there. Before trimming, the store's meta key [`META_WAL_TRIMMED_BY`]
//! records the number of the snapshot whose coverage the trim used; a snapshot with a lower
//! number can no longer be replayed from, because records it needs are gone. A new data
//! directory starts with the key at 0 (never trimmed): if no snapshot is valid, the whole log
//! is replayed from empty. Otherwise recovery stops with a clear error.
//!
//! A file's number orders snapshots: it is the snapshot's LSN, or one more than the newest
//! number present if that is higher (LSNs do not move while nothing is written), so numbers
//! only grow.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{decode_header, decode_snapshot, encode_snapshot, verify_snapshot_envelope, SnapshotFile};
use crate::error::{PersistenceError, PersistenceResult};
use crate::storage::{SnapshotStore, Storage};

/// Meta key (u64): number of the snapshot whose coverage the last WAL trim used; 0 = the log
/// was never trimmed (it holds everything since the directory was created); absent = a
/// directory from before this key (only its newest snapshot may be used).
pub const META_WAL_TRIMMED_BY: &str = "wal_trimmed_by_snapshot";

fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Snapshot files on disk: `DIR/snapshots/snapshot-<number>.bin`.
#[derive(Debug, Clone)]
pub struct FsSnapshots {
    /// `DIR/snapshots`.
    dir: PathBuf,
    /// Set by [`SnapshotStore::stop_pacing`] (shared by clones): writes go at the disk's speed.
    unpaced: Arc<AtomicBool>,
    /// Chunks whose write was slowed to the pace (a sleep), over this value's life.
    paced_sleeps: Arc<AtomicU64>,
}

impl FsSnapshots {
    /// The snapshot files of the data directory `data_dir` (the folder is created on the first
    /// write).
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: dir_of(data_dir), unpaced: Arc::default(), paced_sleeps: Arc::default() }
    }

    /// How many chunks so far were held back to [`SNAPSHOT_WRITE_BYTES_PER_SEC`] (a sleep).
    pub fn paced_sleeps(&self) -> u64 {
        self.paced_sleeps.load(Ordering::Relaxed)
    }

    fn path(&self, number: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("snapshot-{number:020}.{ext}"))
    }
}

/// Bytes of a snapshot file written between two `fdatasync`s (Redis syncs every 4 MB,
/// `REDIS_AUTOSYNC_BYTES`; smaller here, so a WAL commit queued behind one waits less).
const SNAPSHOT_SYNC_BYTES: usize = 1 << 20;

/// The pace of snapshot writes: 64 MiB/s, a few seconds for a state of millions of orders.
const SNAPSHOT_WRITE_BYTES_PER_SEC: usize = 64 << 20;

impl SnapshotStore for FsSnapshots {
    fn list(&self) -> PersistenceResult<Vec<(u64, PathBuf)>> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let mut v: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| number_of(&p).map(|n| (n, p)))
            .collect();
        v.sort();
        Ok(v)
    }

    fn write_durable(&self, number: u64, bytes: &[u8]) -> PersistenceResult<PathBuf> {
        crate::dirs::create_dir_durable(&self.dir)?;
        let (path, tmp) = (self.path(number, "bin"), self.path(number, "tmp"));
        {
            let mut f = File::create(&tmp)?;
            // Synced as it goes, not in one flush at the end: a single fsync of hundreds of
            // megabytes holds the disk for as long as it writes, and every WAL commit behind it
            // waits (issue 12: commit max 97 ms at a snapshot). Redis does the same
            // (`rdb-save-incremental-fsync`, every 4 MB).
            // Paced, too: the disk keeps room for the WAL's fsyncs (RocksDB paces compaction
            // writes with its rate limiter for the same reason).
            for chunk in bytes.chunks(SNAPSHOT_SYNC_BYTES) {
                let chunk_time = Duration::from_secs_f64(chunk.len() as f64 / SNAPSHOT_WRITE_BYTES_PER_SEC as f64);
                let started = Instant::now();
                f.write_all(chunk)?;
                f.sync_data()?;
                let rest = chunk_time.saturating_sub(started.elapsed());
                if !rest.is_zero() && !self.unpaced.load(Ordering::Acquire) {
                    self.paced_sleeps.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(rest);
                }
            }
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    fn stop_pacing(&self) {
        self.unpaced.store(true, Ordering::Release);
    }

    fn read(&self, number: u64) -> std::io::Result<Vec<u8>> {
        fs::read(self.path(number, "bin"))
    }

    fn remove(&self, number: u64) {
        let _ = fs::remove_file(self.path(number, "bin"));
    }

    fn retain(&self, keep: &[u64]) -> PersistenceResult<()> {
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let ours = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snapshot-"));
            let kept = number_of(&path).is_some_and(|n| keep.contains(&n));
            if ours && !kept {
                let _ = fs::remove_file(&path);
            }
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// A snapshot that recovery loaded or the snapshotter wrote: what the next trim may rely on.
#[derive(Debug, Clone)]
pub struct KeptSnapshot {
    /// Its file.
    pub path: PathBuf,
    /// Its number (see the module docs).
    pub number: u64,
    /// What it covers: the file's `lsn`, `base` and `cuts`; `state` is left empty.
    pub cover: SnapshotFile,
}

impl KeptSnapshot {
    fn new(path: PathBuf, number: u64, snap: &SnapshotFile) -> Self {
        let cover = SnapshotFile { lsn: snap.lsn, base: snap.base, cuts: snap.cuts.clone(), state: Default::default() };
        Self { path, number, cover }
    }
}

/// Write `snap` durably and verify it by reading it back; returns its path and size in bytes.
/// Other snapshot files are left alone ([`retain`] removes them).
///
/// # Errors
/// I/O failures (disk full, permissions); the file read back does not verify (it is removed).
pub fn write(data_dir: &Path, snap: &SnapshotFile) -> PersistenceResult<(PathBuf, u64)> {
    write_kept(&FsSnapshots::new(data_dir), snap).map(|(kept, size_bytes)| (kept.path, size_bytes))
}

/// Write `file` as the newest snapshot, then trim the log by the *previous* snapshot's
/// coverage (`kept`) and keep those two files ("Two generations" above); `kept` becomes the new
/// one. The one sequence `DurableEngine`'s snapshots and the simulator's run. Returns the new
/// file's path, its size in bytes, and the log records removed.
///
/// # Errors
/// Writing or verifying the file, recording the trim, trimming, or removing old files failed;
/// `kept` is then unchanged unless the trim itself failed part-way (the log keeps more).
pub fn write_and_trim(
    store: &dyn Storage,
    kept: &mut Option<KeptSnapshot>,
    file: &SnapshotFile,
) -> PersistenceResult<(PathBuf, u64, u64)> {
    write_and_trim_retaining(store, kept, file, None, None)
}

/// [`write_and_trim`], keeping the records the outbox has not published yet (after its cursor)
/// while they take at most `outbox.max_lag_bytes`; past that they are trimmed too, and counted
/// in `dropped` (see [`crate::outbox`]).
///
/// # Errors
/// As [`write_and_trim`].
pub fn write_and_trim_retaining(
    store: &dyn Storage,
    kept: &mut Option<KeptSnapshot>,
    file: &SnapshotFile,
    outbox: Option<crate::outbox::OutboxRetention>,
    dropped: Option<&std::sync::atomic::AtomicU64>,
) -> PersistenceResult<(PathBuf, u64, u64)> {
    let (new, size_bytes) = write_kept(store.snapshots(), file)?;
    let records_removed = match kept.as_ref() {
        Some(prev) => {
            let keep_after = unpublished_from(store, outbox)?;
            // Recorded before any record goes: recovery must not fall back past `prev`.
            store.set_meta_u64(META_WAL_TRIMMED_BY, prev.number)?;
            let covered = |lsn, bytes: &[u8]| decode_header(lsn, bytes).map(|h| prev.cover.covers(&h));
            let mut unpublished = 0u64;
            let removed = store.remove_where(&mut |lsn, bytes| {
                let doomed = covered(lsn, bytes).unwrap_or(false);
                match keep_after {
                    Some(Keep::After(cursor)) => doomed && lsn <= cursor,
                    Some(Keep::Drop(cursor)) => {
                        unpublished += u64::from(doomed && lsn > cursor);
                        doomed
                    }
                    None => doomed,
                }
            })?;
            if unpublished > 0 {
                tracing::error!(records = unpublished, "outbox: trimmed log records never published (max_lag_bytes)");
                if let Some(d) = dropped {
                    d.fetch_add(unpublished, std::sync::atomic::Ordering::Relaxed);
                }
            }
            removed
        }
        None => 0,
    };
    let keep: Vec<u64> = kept.iter().map(|k| k.number).chain([new.number]).collect();
    retain(store.snapshots(), &keep)?;
    let path = new.path.clone();
    *kept = Some(new);
    Ok((path, size_bytes, records_removed))
}

/// What a trim does with the outbox's unpublished records.
#[derive(Clone, Copy)]
enum Keep {
    /// Keep every record after the cursor.
    After(u64),
    /// The backlog passed `max_lag_bytes`: trim as usual, counting what was never published.
    Drop(u64),
}

fn unpublished_from(
    store: &dyn Storage,
    outbox: Option<crate::outbox::OutboxRetention>,
) -> PersistenceResult<Option<Keep>> {
    let Some(retention) = outbox else { return Ok(None) };
    let cursor = store.meta_u64(crate::outbox::META_OUTBOX_CURSOR).unwrap_or(0);
    let backlog = crate::outbox::bytes_after(store, cursor)?;
    Ok(Some(if backlog > retention.max_lag_bytes { Keep::Drop(cursor) } else { Keep::After(cursor) }))
}

/// [`write`] into any [`SnapshotStore`], returning the new snapshot as [`KeptSnapshot`].
///
/// # Errors
/// As [`write`].
pub fn write_kept(files: &dyn SnapshotStore, snap: &SnapshotFile) -> PersistenceResult<(KeptSnapshot, u64)> {
    let bytes = encode_snapshot(snap)?;
    let size_bytes = bytes.len() as u64;
    let newest = files.list()?.last().map_or(0, |(n, _)| *n);
    let number = snap.lsn.max(newest + 1);
    let path = files.write_durable(number, &bytes)?;
    drop(bytes);
    // Read back: only a file whose bytes on disk match what was written may replace the previous
    // generation. Its checksum, not a full decode: decoding millions of orders again cost the
    // snapshotter as much CPU and memory as taking the snapshot (issue 12), and would only catch
    // a codec bug, which the codec's round-trip tests guard and recovery's fallback survives.
    if let Err(e) = read_checksummed(files, number, &path) {
        files.remove(number);
        return Err(e);
    }
    Ok((KeptSnapshot::new(path, number, snap), size_bytes))
}

/// Remove every snapshot file (and leftover temporary file) except the numbers in `keep`. A
/// file that cannot be removed costs disk only: numbers order the files, and recovery verifies
/// before use.
///
/// # Errors
/// The directory cannot be read or fsynced.
pub fn retain(files: &dyn SnapshotStore, keep: &[u64]) -> PersistenceResult<()> {
    files.retain(keep)
}

/// The number in a snapshot file name, if it is one.
fn number_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("snapshot-")?.strip_suffix(".bin")?.parse().ok()
}

fn read_checksummed(files: &dyn SnapshotStore, number: u64, path: &Path) -> PersistenceResult<()> {
    let name = path.display().to_string();
    let bytes =
        files.read(number).map_err(|e| PersistenceError::Snapshot { path: name.clone(), reason: e.to_string() })?;
    verify_snapshot_envelope(&name, &bytes)
}

fn read_verified(files: &dyn SnapshotStore, number: u64, path: &Path) -> PersistenceResult<SnapshotFile> {
    let name = path.display().to_string();
    let bytes =
        files.read(number).map_err(|e| PersistenceError::Snapshot { path: name.clone(), reason: e.to_string() })?;
    decode_snapshot(&name, &bytes)
}

/// The newest snapshot file, verified, if any (no fallback: for `surge wal inspect` and tests).
///
/// # Errors
/// The newest file exists but does not verify.
pub fn load_latest(data_dir: &Path) -> PersistenceResult<Option<(PathBuf, SnapshotFile)>> {
    let files = FsSnapshots::new(data_dir);
    let Some((number, path)) = files.list()?.pop() else { return Ok(None) };
    let snap = read_verified(&files, number, &path)?;
    Ok(Some((path, snap)))
}

/// What recovery starts from.
pub struct Loaded {
    /// The snapshot used, or `None`: replay the whole log from an empty state.
    pub snapshot: Option<(KeptSnapshot, SnapshotFile)>,
    /// Newer snapshot files skipped because they did not verify (each logged as a warning).
    pub rejected: Vec<PathBuf>,
}

/// The newest snapshot recovery may start from, given the store's [`META_WAL_TRIMMED_BY`]
/// (`trimmed_by`), falling back past damaged files as the module docs describe.
///
/// # Errors
/// No snapshot verifies and the log no longer holds everything from the start (names the newest
/// file and why it failed); the directory cannot be read.
pub fn load_for_recovery(store: &dyn SnapshotStore, trimmed_by: Option<u64>) -> PersistenceResult<Loaded> {
    let files = store.list()?;
    let mut rejected = Vec::new();
    let mut first_error = None;
    for (number, path) in files.iter().rev() {
        // Older than the trim (or, in an old directory, anything but the newest): unusable.
        let usable = match trimmed_by {
            Some(t) => *number >= t,
            None => rejected.is_empty(),
        };
        if !usable {
            break;
        }
        match read_verified(store, *number, path) {
            Ok(snap) => {
                let kept = KeptSnapshot::new(path.clone(), *number, &snap);
                return Ok(Loaded { snapshot: Some((kept, snap)), rejected });
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "snapshot damaged; falling back to the previous one");
                first_error.get_or_insert(e);
                rejected.push(path.clone());
            }
        }
    }
    match (trimmed_by, first_error) {
        (Some(0), Some(e)) => {
            tracing::warn!(error = %e, "no valid snapshot; the log holds everything: replaying it from the start");
            Ok(Loaded { snapshot: None, rejected })
        }
        (_, None) if files.is_empty() && trimmed_by.unwrap_or(0) == 0 => Ok(Loaded { snapshot: None, rejected }),
        (_, Some(PersistenceError::Snapshot { path, reason })) => Err(PersistenceError::Snapshot {
            path,
            reason: format!("{reason}; no older snapshot is usable and the log was trimmed: cannot recover"),
        }),
        (_, other) => Err(other.unwrap_or_else(|| PersistenceError::Snapshot {
            path: "snapshots".to_owned(),
            reason: format!(
                "the log was trimmed by snapshot {} but no snapshot from it on is left: cannot recover",
                trimmed_by.unwrap_or(0)
            ),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_told_to_stop_pacing_writes_without_sleeping_and_clones_share_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = FsSnapshots::new(dir.path());
        let clone = files.clone();
        files.stop_pacing();
        // Four chunks: a paced write sleeps after each chunk the disk took less than 1/64 s
        // for. Told to stop pacing, none may sleep, whatever the disk's speed.
        let bytes = vec![7u8; 4 * SNAPSHOT_SYNC_BYTES];
        let path = clone.write_durable(1, &bytes).expect("write");
        assert_eq!(clone.paced_sleeps(), 0, "an unpaced write slept");
        assert_eq!(fs::read(&path).expect("read back"), bytes);
        assert_eq!(clone.list().expect("list"), vec![(1, path)]);
    }
}
