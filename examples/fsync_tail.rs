//! The disk's own `fdatasync` tail: the floor under any WAL commit latency on this machine.
//!
//! ```sh
//! cargo run --release --example fsync_tail -- [--duration-s 60] [--size-bytes 4096] [--dir PATH]
//! ```
//!
//! Appends `size_bytes` to a fresh file in `dir` (default: the system temp dir) and calls
//! `fdatasync` after every append, as fast as it can for `duration_s` seconds, with nothing else
//! running: one WAL commit of one small record, without sled and without the engine. Prints the
//! count, p50/p99/p99.9/max in ms, how many syncs took over 20 ms (issue 12's bound on the
//! WAL commit max at half of saturation) and the process's CPU per sync in µs
//! (`surge::loadgen::cpu::process_cpu_s`, feature `bench`: on this project's VM each
//! `fdatasync` costs ~70 µs of CPU, a cost every group commit pays). If this program's own max
//! over 60 s is above a bound, no WAL on this disk can meet that bound: what the WAL adds is the
//! difference.
//!
//! The file is removed at the end.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

/// The bound the report counts syncs over, in ms (issue 12: WAL commit max ≤ 20 ms).
const SLOW_SYNC_MS: f64 = 20.0;

struct Args {
    duration_s: u64,
    size_bytes: usize,
    dir: std::path::PathBuf,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { duration_s: 60, size_bytes: 4096, dir: std::env::temp_dir() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--duration-s" => a.duration_s = value.parse().map_err(|e| format!("--duration-s: {e}"))?,
            "--size-bytes" => a.size_bytes = value.parse().map_err(|e| format!("--size-bytes: {e}"))?,
            "--dir" => a.dir = value.into(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.size_bytes == 0 || a.duration_s == 0 {
        return Err("--size-bytes and --duration-s must be above 0".into());
    }
    Ok(a)
}

/// The latency at quantile `q` (0..=1) of sorted `ms`; 0 for none.
fn quantile(ms: &[f64], q: f64) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    let i = ((ms.len() as f64 * q) as usize).min(ms.len() - 1);
    ms[i]
}

fn run(a: &Args) -> std::io::Result<Vec<f64>> {
    let path = a.dir.join(format!("fsync-tail-{}.bin", std::process::id()));
    let mut file = OpenOptions::new().create_new(true).write(true).open(&path)?;
    let record = vec![0x5a_u8; a.size_bytes];
    let mut ms = Vec::with_capacity(1 << 20);
    let end = Instant::now() + Duration::from_secs(a.duration_s);
    let result = loop {
        if Instant::now() >= end {
            break Ok(());
        }
        let started = Instant::now();
        if let Err(e) = file.write_all(&record).and_then(|()| file.sync_data()) {
            break Err(e);
        }
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    };
    drop(file);
    let removed = std::fs::remove_file(&path);
    result.and(removed).map(|()| ms)
}

fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fsync_tail: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cpu_before_s = surge::loadgen::cpu::process_cpu_s();
    let mut ms = match run(&args) {
        Ok(ms) => ms,
        Err(e) => {
            eprintln!("fsync_tail: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cpu_us_per_sync = match (cpu_before_s, surge::loadgen::cpu::process_cpu_s()) {
        (Some(before), Some(after)) => (after - before) * 1e6 / ms.len().max(1) as f64,
        _ => f64::NAN,
    };
    ms.sort_by(f64::total_cmp);
    let slow = ms.iter().filter(|&&x| x > SLOW_SYNC_MS).count();
    println!(
        "fdatasync of {} B appends, {} s: n {}  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.2} ms  over {} ms: {}  CPU {:.1} µs per sync",
        args.size_bytes,
        args.duration_s,
        ms.len(),
        quantile(&ms, 0.5),
        quantile(&ms, 0.99),
        quantile(&ms, 0.999),
        ms.last().copied().unwrap_or(0.0),
        SLOW_SYNC_MS,
        slow,
        cpu_us_per_sync
    );
    std::process::ExitCode::SUCCESS
}
