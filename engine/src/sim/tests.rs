//! The simulator's own tests: determinism (same seed, same run bit for bit; another seed,
//! another run), many seeds with crashes and storage faults and every check on, and the
//! planted bugs it must catch.

use std::time::Instant;

use super::{run, run_on, Bug, MemDisk, RecoveryBug, SimConfig, SimFailure};

fn crashing(seed: u64, ops: u64) -> SimConfig {
    SimConfig { seed, ops, shard_count: 3, crash_rate: 2e-4, storage_fault_rate: 1e-3, cluster: false }
}

/// Same seed twice: the same trace (every step's effects, crashes and recoveries included)
/// and the same final state.
#[test]
fn same_seed_gives_the_same_run_bit_for_bit() {
    for seed in [1u64, 42, 0xDEAD_BEEF] {
        let config = crashing(seed, 3_000);
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

/// 20 seeds × 5 000 ops over 1 to 4 shards, crashes and storage faults in three seeds of four,
/// checked after every step; a failure names its seed.
#[test]
fn twenty_seeds_with_crashes_keep_every_invariant() {
    let started = Instant::now();
    let (mut ops, mut crashes) = (0, 0);
    for seed in 1_000..1_020u64 {
        let shard_count = 1 + (seed % 4) as usize;
        let faulty = seed % 4 != 0;
        let config = SimConfig {
            shard_count,
            crash_rate: if faulty { 2e-4 } else { 0.0 },
            storage_fault_rate: if faulty { 5e-4 } else { 0.0 },
            ..crashing(seed, 5_000)
        };
        match run(&config) {
            Ok(r) => {
                ops += r.ops;
                crashes += r.crashes;
            }
            Err(f) => panic!("{}\n{config:?}", describe(&f)),
        }
    }
    assert!(crashes >= 20, "only {crashes} crashes in 20 seeds: recovery is barely exercised");
    let secs = started.elapsed().as_secs_f64();
    eprintln!("simulated {ops} ops with {crashes} crashes in {secs:.2} s ({:.0} ops/s)", ops as f64 / secs);
}

/// A configuration the engine refuses is an error, not a panic.
#[test]
fn a_refused_shard_count_is_an_error() {
    let err = run(&SimConfig { shard_count: 0, ..SimConfig::default() }).unwrap_err();
    assert!(err.violation.contains("shard_count"), "{err}");
}

/// The workload reaches every outcome it is meant to: orders created and refused (sold out,
/// short of stock, over a per-user limit), paid, paid twice, canceled, expired (a pay after
/// the deadline is `order_not_payable`), shipped, refunded, disputed, requests left unknown
/// by a crash, and storage faults; wallets credited, debited and short, payments from them
/// accepted and refused for every reason, retried transfer ids in conflict.
#[test]
fn the_workload_reaches_every_outcome() {
    let r = run(&SimConfig {
        seed: 5,
        ops: 20_000,
        shard_count: 2,
        crash_rate: 2e-4,
        storage_fault_rate: 1e-3,
        cluster: false,
    })
    .unwrap_or_else(|f| panic!("{}", describe(&f)));
    for outcome in [
        "create:ok",
        "create:sold_out",
        "create:insufficient_stock",
        "create:purchase_limit_exceeded",
        "create:unknown",
        "pay:ok",
        "pay:already_paid",
        "pay:order_not_payable",
        "cancel:ok",
        "ship:ok",
        "deliver:ok",
        "confirm_refund:ok",
        "open_dispute:ok",
        "sku:ok",
        "wallet_credit:ok",
        "wallet_credit:idempotency_conflict",
        "wallet_debit:ok",
        "wallet_debit:insufficient_funds",
        "wallet_pay:ok",
        "wallet_pay:amount_mismatch",
        "wallet_pay:insufficient_funds",
        "wallet_pay:idempotency_conflict",
        "wallet_pay:order_not_payable",
        "wallet_pay:already_paid",
        "wallet_pay:version_conflict",
        "wallet_pay:unknown_order",
        "wallet_pay:unknown",
        "get_wallet:ok",
    ] {
        assert!(r.outcomes.get(outcome).is_some_and(|n| *n > 0), "seed 5: no {outcome} in {:#?}", r.outcomes);
    }
    assert!(r.crashes > 0 && r.storage_faults > 0, "{r:?}");
}

fn describe(f: &SimFailure) -> String {
    format!("{f}\nlast steps:\n  {}", f.trace.join("\n  "))
}

/// Run seeds 1..=`seeds` with `bug` planted until one fails; the failure and the operations
/// it took (all seeds that passed plus the failing one's).
fn find(bug: Bug, recovery: RecoveryBug, seeds: u64, ops: u64) -> (SimFailure, u64) {
    let mut spent = 0;
    for seed in 1..=seeds {
        let config = SimConfig { crash_rate: 5e-4, storage_fault_rate: 0.0, ..crashing(seed, ops) };
        let disk = Box::new(MemDisk::new(seed, 0.0).with_bug(recovery));
        match run_on(&config, disk, bug) {
            Ok(r) => spent += r.ops,
            Err(f) => {
                eprintln!("{bug:?}/{recovery:?} caught after {spent} ops of earlier seeds: {}", describe(&f));
                return (f, spent);
            }
        }
    }
    panic!("{bug:?}/{recovery:?} went unnoticed in {seeds} seeds of {ops} ops");
}

/// Cluster mode with partition crashes and a lossy network (issue 16).
fn clustered(seed: u64, ops: u64) -> SimConfig {
    SimConfig {
        seed,
        ops,
        shard_count: 2 + (seed % 3) as usize,
        crash_rate: 3e-4,
        storage_fault_rate: 0.0,
        cluster: true,
    }
}

/// Partitions crash and are rebuilt from their own logs, messages between them are lost and
/// duplicated: every invariant holds (the audit at every quiet point: no reservation without
/// its order, no order without its units, stock conserved; every acknowledged order kept).
#[test]
fn cluster_mode_keeps_every_invariant_through_partition_crashes_and_lost_messages() {
    let (mut crashes, mut ops) = (0, 0);
    for seed in 2_000..2_012u64 {
        let config = clustered(seed, 4_000);
        match run(&config) {
            Ok(r) => {
                crashes += r.crashes;
                ops += r.ops;
            }
            Err(f) => panic!(
                "{}
{config:?}",
                describe(&f)
            ),
        }
    }
    assert!(crashes >= 8, "only {crashes} partition crashes in 12 seeds: takeover is barely exercised");
    eprintln!("cluster mode: {ops} ops, {crashes} partition crashes");
}

/// The same seed gives the same clustered run, bit for bit.
#[test]
fn cluster_mode_is_deterministic() {
    let a = run(&clustered(7, 2_000)).unwrap_or_else(|f| panic!("{}", describe(&f)));
    let b = run(&clustered(7, 2_000)).unwrap_or_else(|f| panic!("{}", describe(&f)));
    assert_eq!((a.trace_digest, a.state_digest), (b.trace_digest, b.state_digest));
}

/// Messages sent before their batch is durable (a `Reserved` ahead of its reservation): a
/// partition crash loses a reservation whose order exists, which the checks catch.
#[test]
fn cluster_messages_before_durability_are_caught() {
    for seed in 1..=40u64 {
        let config = SimConfig { crash_rate: 1e-3, ..clustered(seed, 4_000) };
        if let Err(f) = run_on(&config, Box::new(MemDisk::new(seed, 0.0)), Bug::ClusterSendBeforeDurable) {
            eprintln!("caught with seed {seed}: {}", describe(&f));
            return;
        }
    }
    panic!("messages sent before durability went unnoticed in 40 clustered seeds");
}

/// A compensation or cancel that forgets one release is reported, with its seed.
#[test]
fn a_lost_release_is_caught() {
    let (failure, _) = find(Bug::DropFirstRelease, RecoveryBug::None, 5, 2_000);
    assert!(failure.to_string().contains("seed"), "{failure}");
}

/// Replies released before their batch is durable: a crash loses an answered order.
#[test]
fn a_reply_before_durability_is_caught() {
    let (failure, _) = find(Bug::ReplyBeforeDurable, RecoveryBug::None, 10, 5_000);
    assert!(failure.violation.contains("is gone") || failure.violation.contains("version"), "{failure}");
}

/// Recovery without idempotency records: a retried key creates a second order.
#[test]
fn idempotency_records_dropped_on_recovery_are_caught() {
    let (failure, _) = find(Bug::ForgetIdempotencyOnRecovery, RecoveryBug::None, 10, 5_000);
    assert!(failure.violation.contains("two"), "{failure}");
}

/// Recovery that reconciles without the archive restocks an archived order's sold units.
#[test]
fn restocking_archived_orders_on_recovery_is_caught() {
    let (failure, _) = find(Bug::None, RecoveryBug::IgnoreArchive, 20, 5_000);
    assert!(failure.violation.contains("archived"), "{failure}");
}

/// A wallet payment's try and confirm journaled one batch after the order's `paid`: a crash
/// between the two leaves a paid order whose money never left the wallet (and no open try for
/// recovery to find), which the wallet checks catch.
#[test]
fn a_tcc_split_across_batches_is_caught() {
    let (failure, _) = find(Bug::TccAcrossBatches, RecoveryBug::None, 20, 5_000);
    assert!(failure.violation.contains("wallet") || failure.violation.contains("transfer"), "{failure}");
}
