//! `surge sim` from the binary: a clean run exits 0 and repeats bit for bit across processes;
//! a violation (a planted bug) exits 1 with the seed, the invariant and the last steps, and
//! the same arguments reproduce it exactly; bad arguments are refused with a clear error.

use std::process::{Command, Output};

fn surge_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_surge"))
        .arg("sim")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run surge sim: {e}"))
}

fn json_of(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn a_clean_run_exits_zero_and_repeats_across_processes() {
    let args = ["--seed", "11", "--ops", "20000", "--crash-rate", "3e-4", "--storage-fault-rate", "3e-4", "--json"];
    let (a, b) = (surge_sim(&args), surge_sim(&args));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let (ja, jb) = (json_of(&a), json_of(&b));
    assert_eq!(ja["ops"], 20_000);
    assert!(ja["crashes"].as_u64().is_some_and(|c| c > 0), "{ja}");
    for field in ["trace_digest", "state_digest", "steps", "events", "crashes", "storage_faults", "outcomes"] {
        assert_eq!(ja[field], jb[field], "{field} differs between two processes with one seed");
    }
}

#[test]
fn a_violation_exits_one_with_seed_invariant_and_trace_and_reproduces() {
    let args = ["--seed", "1", "--ops", "5000", "--crash-rate", "5e-4", "--plant", "forget-idempotency"];
    let (a, b) = (surge_sim(&args), surge_sim(&args));
    assert_eq!(a.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&a.stderr);
    for needle in
        ["simulation seed 1 failed after step", "two orders for user", "reproduce: surge sim --seed 1", "last steps:"]
    {
        assert!(stderr.contains(needle), "no {needle:?} in {stderr}");
    }
    assert_eq!(a.stderr, b.stderr, "the same seed did not reproduce the same failure");
}

#[test]
fn bad_arguments_are_refused() {
    let out = surge_sim(&["--seed", "1", "--crash-rate", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("probability"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = surge_sim(&["--seed", "1", "--ops", "10", "--shards", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard_count"), "{}", String::from_utf8_lossy(&out.stderr));
}
