//! `surge sim`: one deterministic simulation of any length from the command line (issue 11).
//!
//! The engine's shards run under `surge_engine::sim` with the real WAL code underneath
//! (`surge_persistence::sim::SimDisk`: codec, recovery, snapshots and trimming over a
//! simulated disk with crashes, torn writes and storage faults). Exit status 0 when every
//! invariant held; on a violation the seed, the violated invariant and the last steps go to
//! stderr and the exit status is 1. The same arguments reproduce a run exactly.

use std::time::Instant;

use surge_engine::sim::{run_on, Bug, SimConfig, SimFailure, SimReport};
use surge_persistence::sim::SimDisk;

/// Arguments of `surge sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// The seed: the whole run follows from it (the same arguments give the same run, bit for bit).
    #[arg(long)]
    seed: u64,
    /// Client operations to simulate (about 180 000 per second of one core).
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Shards (1..=64).
    #[arg(long, default_value_t = 3)]
    shards: usize,
    /// Probability of a power loss per simulator step (about three steps per operation).
    #[arg(long, default_value_t = 1e-4, value_parser = probability)]
    crash_rate: f64,
    /// Probability that a storage write or fsync fails (I/O error, ENOSPC and fsync error each).
    #[arg(long, default_value_t = 1e-4, value_parser = probability)]
    storage_fault_rate: f64,
    /// Probability that a crash keeps a torn prefix of the unsynced writes.
    #[arg(long, default_value_t = 0.5, value_parser = probability)]
    torn_write_probability: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Cluster mode (issue 16): each shard a partition; a crash takes one partition, rebuilt
    /// from its own log; messages between partitions leave once durable and may be lost or
    /// duplicated. Storage faults and torn writes do not apply (the log is JetStream's).
    #[arg(long)]
    cluster: bool,
    /// Plant a known bug (to see the simulator catch it): drop-release, reply-before-durable,
    /// forget-idempotency, snapshot-before-durable, tcc-across-batches,
    /// cluster-send-before-durable (with --cluster).
    #[arg(long, hide = true, value_parser = planted, default_value = "none")]
    plant: Bug,
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a probability between 0 and 1, got {s:?}")),
    }
}

/// The bugs `--plant` knows, by name (one table for parsing and for the reproduce line).
const PLANTS: [(&str, Bug); 7] = [
    ("none", Bug::None),
    ("drop-release", Bug::DropFirstRelease),
    ("reply-before-durable", Bug::ReplyBeforeDurable),
    ("forget-idempotency", Bug::ForgetIdempotencyOnRecovery),
    ("snapshot-before-durable", Bug::SnapshotBeforeDurable),
    ("tcc-across-batches", Bug::TccAcrossBatches),
    ("cluster-send-before-durable", Bug::ClusterSendBeforeDurable),
];

fn planted(s: &str) -> Result<Bug, String> {
    PLANTS.iter().find(|(name, _)| *name == s).map(|(_, bug)| *bug).ok_or_else(|| format!("unknown bug {s:?}"))
}

/// ` --plant <name>` for a planted bug, nothing for none.
fn plant_arg(bug: Bug) -> String {
    match PLANTS.iter().find(|(_, b)| *b == bug) {
        Some((name, _)) if bug != Bug::None => format!(" --plant {name}"),
        _ => String::new(),
    }
}

/// Run the simulation; print the report (stdout) or the failure (the error).
///
/// # Errors
/// The violation, with the seed, the step and the last steps of the trace.
pub fn sim(args: &SimArgs) -> Result<(), String> {
    let config = SimConfig {
        seed: args.seed,
        ops: args.ops,
        shard_count: args.shards,
        crash_rate: args.crash_rate,
        storage_fault_rate: if args.cluster { 0.0 } else { args.storage_fault_rate },
        cluster: args.cluster,
    };
    let (faults, torn) = if args.cluster { (0.0, 0.0) } else { (args.storage_fault_rate, args.torn_write_probability) };
    let disk = SimDisk::new(args.seed, faults, torn);
    let started = Instant::now();
    let report = run_on(&config, Box::new(disk), args.plant).map_err(|f| failure(&f, args))?;
    let secs = started.elapsed().as_secs_f64();
    print_report(&report, secs, args.json);
    Ok(())
}

fn failure(f: &SimFailure, args: &SimArgs) -> String {
    format!(
        "{f}\nreproduce: surge sim --seed {} --ops {} --shards {} --crash-rate {} --storage-fault-rate {} \
         --torn-write-probability {}{}{}\nlast steps:\n  {}",
        f.seed,
        args.ops,
        args.shards,
        args.crash_rate,
        args.storage_fault_rate,
        args.torn_write_probability,
        if args.cluster { " --cluster" } else { "" },
        plant_arg(args.plant),
        f.trace.join("\n  ")
    )
}

fn print_report(r: &SimReport, secs: f64, json: bool) {
    let ops_per_sec = r.ops as f64 / secs.max(1e-9);
    if json {
        let v = serde_json::json!({
            "seed": r.seed, "ops": r.ops, "steps": r.steps, "batches": r.batches,
            "replies_ok": r.replies_ok, "replies_err": r.replies_err, "events": r.events,
            "crashes": r.crashes, "storage_faults": r.storage_faults, "snapshots": r.snapshots, "snapshot_faults": r.snapshot_faults,
            "trace_digest": format!("{:016x}", r.trace_digest),
            "state_digest": format!("{:016x}", r.state_digest),
            "outcomes": r.outcomes, "elapsed_s": secs, "ops_per_sec": ops_per_sec,
        });
        println!("{v}");
        return;
    }
    println!(
        "seed {}: {} ops, {} steps, {} batches, {} events durable; {} crashes ({} after storage faults), \
         {} snapshots; every invariant held",
        r.seed, r.ops, r.steps, r.batches, r.events, r.crashes, r.storage_faults, r.snapshots
    );
    println!("trace digest {:016x}, state digest {:016x}", r.trace_digest, r.state_digest);
    println!("{secs:.2} s: {ops_per_sec:.0} simulated ops/s");
}
