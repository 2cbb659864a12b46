//! Snapshot files: `DIR/snapshots/snapshot-<lsn>.bin`, written to a temporary file, fsynced,
//! renamed into place, and the directory fsynced, so a crash leaves either the old or the new
//! snapshot whole. Only the newest valid one is kept.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::{decode_snapshot, encode_snapshot, SnapshotFile};
use crate::error::{PersistenceError, PersistenceResult};

fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Write `snap` durably; returns its path and size in bytes. Older snapshots are removed after.
///
/// # Errors
/// I/O failures (disk full, permissions).
pub fn write(data_dir: &Path, snap: &SnapshotFile) -> PersistenceResult<(PathBuf, u64)> {
    let dir = dir_of(data_dir);
    crate::dirs::create_dir_durable(&dir)?;
    let bytes = encode_snapshot(snap)?;
    let path = dir.join(format!("snapshot-{:020}.bin", snap.lsn));
    let tmp = dir.join(format!("snapshot-{:020}.tmp", snap.lsn));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(&dir)?.sync_all()?;
    for old in list(data_dir)? {
        if old != path {
            // A stale file left behind costs disk only; the newest is the one loaded.
            let _ = fs::remove_file(old);
        }
    }
    Ok((path, bytes.len() as u64))
}

/// Snapshot files present, oldest first.
fn list(data_dir: &Path) -> PersistenceResult<Vec<PathBuf>> {
    let dir = dir_of(data_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    v.sort();
    Ok(v)
}

/// The newest snapshot, if any.
///
/// # Errors
/// The newest file exists but does not decode: recovery stops rather than silently fall back
/// (an older one was deleted when this one was written).
pub fn load_latest(data_dir: &Path) -> PersistenceResult<Option<(PathBuf, SnapshotFile)>> {
    let Some(path) = list(data_dir)?.pop() else { return Ok(None) };
    let bytes = fs::read(&path)?;
    let name = path.display().to_string();
    let snap = decode_snapshot(&name, &bytes).map_err(|e| match e {
        PersistenceError::Snapshot { reason, .. } => PersistenceError::Snapshot { path: name.clone(), reason },
        other => other,
    })?;
    Ok(Some((path, snap)))
}
