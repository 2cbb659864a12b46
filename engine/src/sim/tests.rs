//! The simulator's own tests: determinism (same seed, same run bit for bit; another seed,
//! another run) and many seeds of the workload with every check on.

use std::time::Instant;

use super::{run, run_with, Fault, SimConfig};

/// Same seed twice: the same trace (every step's effects) and the same final state.
#[test]
fn same_seed_gives_the_same_run_bit_for_bit() {
    for seed in [1u64, 42, 0xDEAD_BEEF] {
        let config = SimConfig { seed, ops: 1_500, ..SimConfig::default() };
        let a = run(&config).unwrap_or_else(|f| panic!("{f}"));
        let b = run(&config).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(a, b, "seed {seed}: two runs differ");
        assert!(a.replies_ok > 100 && a.events > 100, "seed {seed}: the workload did little: {a:?}");
    }
}

/// Another seed: another interleaving, so another trace (and here another final state).
#[test]
fn different_seeds_give_different_runs() {
    let a = run(&SimConfig { seed: 1, ops: 1_000, ..SimConfig::default() }).unwrap_or_else(|f| panic!("{f}"));
    let b = run(&SimConfig { seed: 2, ops: 1_000, ..SimConfig::default() }).unwrap_or_else(|f| panic!("{f}"));
    assert_ne!(a.trace_digest, b.trace_digest);
    assert_ne!(a.state_digest, b.state_digest);
}

/// 20 seeds × 5 000 ops over 1 to 4 shards, checked after every step; a failure names its seed.
#[test]
fn twenty_seeds_of_five_thousand_ops_keep_every_invariant() {
    let started = Instant::now();
    let mut ops = 0;
    for seed in 1_000..1_020u64 {
        let shard_count = 1 + (seed % 4) as usize;
        let config = SimConfig { seed, ops: 5_000, shard_count };
        match run(&config) {
            Ok(r) => ops += r.ops,
            Err(f) => panic!("{f} (reproduce: SimConfig {{ seed: {seed}, ops: 5000, shard_count: {shard_count} }})"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("simulated {ops} ops in {secs:.2} s ({:.0} ops/s)", ops as f64 / secs);
}

/// A configuration the engine refuses is an error, not a panic.
#[test]
fn a_refused_shard_count_is_an_error() {
    let err = run(&SimConfig { shard_count: 0, ..SimConfig::default() }).unwrap_err();
    assert!(err.violation.contains("shard_count"), "{err}");
}

/// The workload reaches every outcome it is meant to: orders created and refused (sold out,
/// short of stock, over a per-user limit), paid, paid twice, canceled, and expired (a pay
/// after the deadline is `order_not_payable`).
#[test]
fn the_workload_reaches_every_outcome() {
    let r = run(&SimConfig { seed: 5, ops: 5_000, shard_count: 2 }).unwrap_or_else(|f| panic!("{f}"));
    for outcome in [
        "create:ok",
        "create:sold_out",
        "create:insufficient_stock",
        "create:purchase_limit_exceeded",
        "pay:ok",
        "pay:already_paid",
        "pay:order_not_payable",
        "cancel:ok",
        "sku:ok",
    ] {
        assert!(r.outcomes.get(outcome).is_some_and(|n| *n > 0), "seed 5: no {outcome} in {:?}", r.outcomes);
    }
}

/// A planted bug (a `Release` lost between shards: a compensation or cancel that forgets one
/// release) is reported, with its seed, within a few seeds.
#[test]
fn a_lost_release_is_caught() {
    let caught = (1..=5u64)
        .find_map(|seed| run_with(&SimConfig { seed, ops: 2_000, shard_count: 3 }, Fault::DropFirstRelease).err());
    let failure = caught.expect("a lost release went unnoticed in 5 seeds");
    eprintln!("caught: {failure}");
    assert!(failure.to_string().contains("seed"), "{failure}");
}
