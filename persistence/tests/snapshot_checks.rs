//! Snapshots are checked (issue 10 item 6): every snapshot carries a CRC-32; the previous
//! snapshot and the log it needs are kept until a new one is written, fsynced and read back; a
//! damaged newest snapshot falls back to the previous one with a warning naming the file, and
//! recovery replays the log from there. Real sled files and real snapshot files on disk.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use surge_engine::EngineState;
use surge_persistence::codec::{decode_snapshot, encode_snapshot, SnapshotFile};
use surge_persistence::{DurableEngine, PersistenceConfig, PersistenceError};

/// Log lines written while `f` runs on this thread.
fn with_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = Capture(buf.clone());
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    (out, text)
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join("snapshots")).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn flip_one_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

/// A workload, then `snapshots` snapshots (the last by `close`) with work between them.
/// Returns the state at close.
fn run_with_snapshots(cfg: &PersistenceConfig, snapshots: usize, seed: u64) -> EngineState {
    let db = open_db(cfg, &engine_cfg(), None).expect("open");
    create_skus(db.engine());
    let mut ledger = Ledger::default();
    for i in 0..snapshots {
        run_workload(db.engine(), &mut Rng::new(seed + i as u64), &mut ledger, &format!("s{i}"), 60);
        if i + 1 < snapshots {
            db.snapshot_now().unwrap().unwrap();
        }
    }
    let state = state_of(db.engine());
    db.close().unwrap();
    state
}

fn reopen_logged(cfg: &PersistenceConfig) -> (Result<DurableEngine, PersistenceError>, String) {
    with_logs(|| DurableEngine::open(cfg.clone(), engine_cfg()))
}

#[test]
fn a_flipped_byte_in_the_newest_snapshot_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PersistenceConfig::new(dir.path());
    let before = run_with_snapshots(&cfg, 3, 0x5A_0001);
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 2, "the newest and the previous snapshot are kept: {files:?}");
    let (previous, newest) = (files[0].clone(), files[1].clone());
    let previous_lsn = decode_snapshot("p", &std::fs::read(&previous).unwrap()).unwrap().lsn;
    flip_one_byte(&newest);

    let (db, logs) = reopen_logged(&cfg);
    let db = db.expect("recovers from the previous snapshot");
    let name = newest.file_name().unwrap().to_str().unwrap();
    assert!(logs.contains("snapshot damaged") && logs.contains(name), "no warning naming {name}:\n{logs}");
    let r = db.recovery().clone();
    assert_eq!(r.snapshots_rejected, 1);
    assert_eq!(r.snapshot_lsn, Some(previous_lsn), "started from the previous snapshot");
    assert!(r.records_replayed > 0, "the log after the previous snapshot was replayed: {r:?}");
    let after = state_of(db.engine());
    assert_eq!(after.digest(), before.digest(), "recovered state differs");
    assert!(after == before);
    assert_healthy(db.engine());
    // The next snapshot replaces the damaged one; the one recovery used stays as the previous.
    db.close().unwrap();
    let files = snapshot_files(dir.path());
    assert!(!files.contains(&newest), "the damaged snapshot is gone: {files:?}");
    assert!(files.contains(&previous), "{files:?}");
    assert_eq!(files.len(), 2);
}

/// One snapshot only (nothing trimmed yet): a damaged one means replaying the whole log.
#[test]
fn a_flipped_byte_in_the_only_snapshot_replays_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PersistenceConfig::new(dir.path());
    let before = run_with_snapshots(&cfg, 1, 0x5A_0002);
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 1);
    flip_one_byte(&files[0]);

    let (db, logs) = reopen_logged(&cfg);
    let db = db.expect("recovers from the log alone");
    assert!(logs.contains("replaying it from the start"), "{logs}");
    assert_eq!(db.recovery().snapshot_lsn, None);
    assert_eq!(db.recovery().snapshots_rejected, 1);
    assert_eq!(state_of(db.engine()).digest(), before.digest());
    assert_healthy(db.engine());
    db.close().unwrap();
}

/// Both kept snapshots damaged after the log was trimmed: a clear error naming the newest file.
#[test]
fn both_snapshots_damaged_after_a_trim_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PersistenceConfig::new(dir.path());
    run_with_snapshots(&cfg, 3, 0x5A_0003);
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 2);
    for f in &files {
        flip_one_byte(f);
    }
    let (db, logs) = reopen_logged(&cfg);
    match db {
        Err(PersistenceError::Snapshot { path, reason }) => {
            let name = files[1].file_name().unwrap().to_str().unwrap();
            assert!(path.ends_with(name), "{path}");
            assert!(reason.contains("checksum mismatch") && reason.contains("cannot recover"), "{reason}");
            let msg = PersistenceError::Snapshot { path, reason }.to_string();
            println!("{msg}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(db) => {
            db.close().unwrap();
            panic!("recovered from two damaged snapshots and a trimmed log:\n{logs}");
        }
    }
}

/// Any single flipped bit anywhere in a snapshot file is caught (checksum, length or magic).
#[test]
fn every_single_bit_flip_is_caught() {
    let snap = SnapshotFile { lsn: 9, base: 1, cuts: vec![3, 4], state: EngineState::default() };
    let bytes = encode_snapshot(&snap).unwrap();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            assert!(decode_snapshot("s", &bad).is_err(), "a flip of bit {bit} of byte {i} was not caught");
        }
    }
    assert_eq!(decode_snapshot("s", &bytes).unwrap().cuts, vec![3, 4]);
}
