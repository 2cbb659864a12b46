//! Issue 10, item 3: a panic in a shard thread ends the process (fail-stop) with exit code 70
//! and the fail-stop log line, instead of leaving a half-alive engine. The test runs itself again
//! as a child process (a real process, a real exit) whose journal panics inside `submit`, which
//! runs on the shard thread.

use std::process::Command;
use std::sync::Arc;

use surge_engine::fatal::{FAIL_STOP_EXIT_CODE, FAIL_STOP_LOG_PREFIX};
use surge_engine::{Decimal, Engine, EngineConfig, Event, Journal, ManualClock, OnDurable, SaleRules, SkuSpec};

const CHILD_ENV: &str = "SURGE_TEST_FAIL_STOP_CHILD";

struct PanickingJournal;

impl Journal for PanickingJournal {
    fn submit(&mut self, _shard: usize, events: Vec<Event>, on_durable: OnDurable) {
        if !events.is_empty() {
            panic!("test journal: broken invariant on purpose");
        }
        on_durable(Ok(()));
    }

    fn position(&self) -> u64 {
        0
    }
}

/// The child's body: the first batch with events panics in the shard thread.
fn child() {
    let engine = Engine::builder(EngineConfig { shard_count: 2, ..Default::default() })
        .clock(Arc::new(ManualClock::new(1_800_000_000_000)))
        .journal(Box::new(|_| Box::new(PanickingJournal)))
        .start()
        .expect("engine");
    let spec = SkuSpec {
        sku_id: "a".into(),
        name: "A".into(),
        price: Decimal::new(100, 2),
        initial_stock: 1,
        rules: SaleRules::default(),
    };
    // Never answered: the process ends first. A process that survived the panic would reach
    // the exit(0) below, which the parent reports as a failure.
    let _ = engine.create_sku(spec).wait();
    std::thread::sleep(std::time::Duration::from_secs(30));
    eprintln!("child survived the panic");
    std::process::exit(0);
}

#[test]
fn a_panic_in_a_shard_thread_ends_the_process_with_code_70() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", "a_panic_in_a_shard_thread_ends_the_process_with_code_70", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(FAIL_STOP_EXIT_CODE), "exit status; stderr:\n{stderr}");
    let line = format!("{FAIL_STOP_LOG_PREFIX}: shard-");
    assert!(stderr.contains(&line), "no fail-stop line in stderr:\n{stderr}");
    assert!(stderr.contains("broken invariant on purpose"), "the panic message is logged:\n{stderr}");
    assert!(!stderr.contains("child survived"), "{stderr}");
}
