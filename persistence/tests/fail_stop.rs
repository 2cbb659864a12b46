//! Fail-stop of the persistence threads, in a real child process (issue 10 items 3 and 4): a
//! panic in the WAL writer, or a failed WAL write under the default
//! `StorageFailurePolicy::FailStop`, ends the process with exit code 70 and one
//! `surge fail-stop: wal-writer: …` line; reopening the directory recovers everything the child
//! acknowledged.
//!
//! Each test runs itself again as a child (`current_exe`, `--exact`, with `CHILD_ENV` naming the
//! data directory); the child does the work and must not return.

mod common;

use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use surge_engine::fatal::{FAIL_STOP_EXIT_CODE, FAIL_STOP_LOG_PREFIX};
use surge_engine::{CreateOrder, OrderId, SystemClock};
use surge_persistence::{DurableEngine, LogStore, PersistenceConfig, SledStore};

const CHILD_ENV: &str = "SURGE_TEST_FAIL_STOP_DIR";
/// Orders the child gets acknowledged before the fault (it prints their ids).
const ACKED_BEFORE_FAULT: usize = 20;

/// How the child's store fails once it is `broken`.
#[derive(Clone, Copy)]
enum Failure {
    Panic,
    IoError,
}

struct FailingStore {
    inner: SledStore,
    broken: Arc<AtomicBool>,
    failure: Failure,
}

impl LogStore for FailingStore {
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        if !self.broken.load(Ordering::SeqCst) {
            return self.inner.append(records);
        }
        match self.failure {
            Failure::Panic => panic!("injected: writer bug"),
            Failure::IoError => Err(io::Error::other("injected: No space left on device")),
        }
    }

    fn flush(&mut self, sync: bool) -> io::Result<()> {
        self.inner.flush(sync)
    }
}

/// The child: acknowledge some orders (printing their ids), then trip the failure.
fn child(dir: &Path, failure: Failure) -> ! {
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let cfg = PersistenceConfig::new(dir);
    let db = DurableEngine::open_with(cfg, engine_cfg(), Arc::new(SystemClock), move |s| {
        Box::new(FailingStore { inner: s, broken: b, failure })
    })
    .expect("child open");
    let engine = db.engine().clone();
    create_skus(&engine);
    for i in 0..ACKED_BEFORE_FAULT {
        let o = engine.create_order(CreateOrder::new(&format!("u{i}"), &[("mug", 1)], "k")).wait().expect("create");
        println!("acked {}", o.order_id.0);
    }
    // From now on every append fails (or panics).
    broken.store(true, Ordering::SeqCst);
    let r = engine.create_order(CreateOrder::new("victim", &[("mug", 1)], "k")).wait();
    // Unreachable if fail-stop works: the process ended while this request waited.
    std::thread::sleep(std::time::Duration::from_secs(5));
    panic!("the child survived a WAL failure: {r:?}");
}

/// Run `test` as a child on a fresh directory, assert fail-stop, and check recovery.
fn run_child(test: &str, failure: Failure, expect_in_line: &str) {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir), failure);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .output()
        .expect("run the child");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(FAIL_STOP_EXIT_CODE), "child status; stderr:\n{stderr}");
    let line = format!("{FAIL_STOP_LOG_PREFIX}: wal-writer: {expect_in_line}");
    assert!(stderr.contains(&line), "no `{line}` line in the child's stderr:\n{stderr}");
    let acked: Vec<OrderId> = stdout
        .lines()
        .filter_map(|l| l.split("acked ").nth(1))
        .map(|id| OrderId(id.trim().parse().expect("order id")))
        .collect();
    assert_eq!(acked.len(), ACKED_BEFORE_FAULT, "child stdout:\n{stdout}");

    let db = open_db(&PersistenceConfig::new(dir.path()), &engine_cfg(), None).expect("reopen after fail-stop");
    for id in &acked {
        assert!(db.engine().get_order(*id).is_ok(), "acknowledged order {id} lost");
    }
    assert_healthy(db.engine());
    let o = db.engine().create_order(CreateOrder::new("after", &[("mug", 1)], "k")).wait().expect("serves again");
    assert!(!acked.contains(&o.order_id));
    db.close().unwrap();
}

#[test]
fn writer_panic_ends_the_process_with_code_70() {
    run_child("writer_panic_ends_the_process_with_code_70", Failure::Panic, "panicked: injected: writer bug");
}

#[test]
fn wal_write_failure_with_the_default_policy_ends_the_process_with_code_70() {
    run_child(
        "wal_write_failure_with_the_default_policy_ends_the_process_with_code_70",
        Failure::IoError,
        "write-ahead log write failed: injected: No space left on device",
    );
}
