//! Durable directory creation: a new directory's entry lives in its parent, so creating
//! `data/wal` durably means fsyncing `data/wal` (for what goes in it later, done by its writers)
//! *and* `data` (for the entry `wal`), and so on up to the first directory that already existed
//! (ext4 and XFS document that `fsync` of a file does not persist its directory entry; LWN
//! "Ensuring data reaches disk", 2011).

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Create `path` and any missing parents, then fsync every created directory and its parent,
/// so the whole chain survives a power loss. A directory that already existed is left alone.
///
/// # Errors
/// The directories cannot be created or opened for fsync.
pub fn create_dir_durable(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() || dir.exists() {
            break;
        }
        missing.push(dir.to_path_buf());
        p = dir.parent();
    }
    fs::create_dir_all(path)?;
    for dir in missing.iter().rev() {
        File::open(dir)?.sync_all()?;
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all()?,
            _ => File::open(".")?.sync_all()?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_nested_directories_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a").join("b").join("c");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durable(&deep).unwrap();
    }
}
