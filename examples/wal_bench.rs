//! Durable throughput, group-commit shape, and recovery speed.
//!
//! ```sh
//! cargo run --release --example wal_bench -- [--mode sync|os] [--orders N] [--skus K]
//!     [--threads T] [--window W] [--no-replay] [--dir PATH]   (mode none: the pure engine)
//! cargo run --release --example wal_bench -- --replay-only --dir PATH [--mode sync|os]
//! ```
//!
//! Creates N orders (one unit each, distinct users) on K SKUs through a `DurableEngine`, with T
//! submitting threads each keeping W requests in flight (a window: submit W, then wait for
//! them), and reports durable orders/s, group-commit size and flush latency percentiles. Then it
//! closes the engine *without* a snapshot and reopens the directory, reporting how many events
//! were replayed, how fast, and the restart time. Every order is 2 events (reserved +
//! order_created), so `--orders 5000000` replays 10,000,000 events.
//!
//! `--replay-only --dir PATH` skips the creation and only reopens an existing directory (left by
//! an earlier run with `--dir PATH`): handy under `perf record`. Every reopen reports how the
//! restart splits between persistence recovery (snapshot, replay, reconcile) and the rest
//! (opening sled, starting the engine with the recovered actors).

use std::sync::atomic::Ordering;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use surge::engine::{CreateOrder, EngineConfig, SaleRules, SkuSpec};
use surge::persistence::{Durability, DurableEngine, PersistenceConfig};

struct Args {
    mode: Durability,
    orders: u64,
    skus: usize,
    threads: usize,
    window: usize,
    replay: bool,
    replay_only: bool,
    dir: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        mode: Durability::Sync,
        orders: 1_000_000,
        skus: 1,
        threads: 2,
        window: 4096,
        replay: true,
        replay_only: false,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--mode" => {
                a.mode = match v()?.as_str() {
                    "sync" => Durability::Sync,
                    "os" => Durability::Os,
                    "none" => Durability::None,
                    other => return Err(format!("--mode sync|os|none, not {other}")),
                }
            }
            "--orders" => a.orders = v()?.parse().map_err(|e| format!("--orders: {e}"))?,
            "--skus" => a.skus = v()?.parse().map_err(|e| format!("--skus: {e}"))?,
            "--threads" => a.threads = v()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--window" => a.window = v()?.parse().map_err(|e| format!("--window: {e}"))?,
            "--dir" => a.dir = Some(v()?),
            "--no-replay" => a.replay = false,
            "--replay-only" => a.replay_only = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.replay_only && a.dir.is_none() {
        return Err("--replay-only needs --dir".into());
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    surge::process::apply_huge_page_policy_from_env();
    let args = parse()?;
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    let cfg = PersistenceConfig {
        durability: args.mode,
        snapshot_every_events: u64::MAX,
        snapshot_every_secs: u64::MAX / 4,
        ..PersistenceConfig::new(&dir)
    };
    let engine_cfg = EngineConfig { mailbox_capacity: 1 << 20, ..EngineConfig::default() };
    if !args.replay_only {
        create(&args, &cfg, &engine_cfg)?;
    }
    if args.replay && args.mode != Durability::None {
        reopen(cfg, engine_cfg)?;
    }
    Ok(())
}

/// Create the SKUs and the orders, report throughput, close without a snapshot.
fn create(args: &Args, cfg: &PersistenceConfig, engine_cfg: &EngineConfig) -> Result<(), Box<dyn std::error::Error>> {
    let db = DurableEngine::open(cfg.clone(), engine_cfg.clone())?;
    let engine = db.engine().clone();
    for k in 0..args.skus {
        let spec = SkuSpec {
            sku_id: format!("sku-{k}"),
            name: format!("SKU {k}"),
            price: "9.99".parse()?,
            initial_stock: surge::engine::STOCK_MAX,
            rules: SaleRules::default(),
        };
        engine.create_sku(spec).wait()?;
    }
    let per_thread = args.orders / args.threads as u64;
    let t0 = Instant::now();
    let workers: Vec<_> = (0..args.threads)
        .map(|t| {
            let engine = engine.clone();
            let (skus, window) = (args.skus, args.window);
            std::thread::spawn(move || {
                let mut ok = 0u64;
                let mut i = 0u64;
                while i < per_thread {
                    let n = (window as u64).min(per_thread - i);
                    let pending: Vec<_> = (i..i + n)
                        .map(|j| {
                            let user = format!("u{t}-{j}");
                            let sku = format!("sku-{}", j as usize % skus);
                            engine.create_order(CreateOrder::new(&user, &[(sku.as_str(), 1)], "k"))
                        })
                        .collect();
                    ok += pending.into_iter().map(|p| u64::from(p.wait().is_ok())).sum::<u64>();
                    i += n;
                }
                ok
            })
        })
        .collect();
    let ok: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let secs = t0.elapsed().as_secs_f64();
    println!("mode {:?}, {} SKU(s), {} threads × window {}", args.mode, args.skus, args.threads, args.window);
    println!("durable orders        {ok} in {secs:.2} s = {:.0} orders/s", ok as f64 / secs);
    report_writer(&db, ok);
    drop(engine);
    db.close_without_snapshot();
    Ok(())
}

/// Group commits, bytes per order, flush latency, WAL size.
fn report_writer(db: &DurableEngine, orders: u64) {
    let st = db.wal_stats();
    let bytes = st.bytes.load(Ordering::Relaxed);
    println!(
        "group commits         {} ({} events, {} bytes = {:.1} bytes/order)",
        st.batches.load(Ordering::Relaxed),
        st.events.load(Ordering::Relaxed),
        bytes,
        bytes as f64 / orders.max(1) as f64
    );
    if let (Ok(g), Ok(f)) = (st.group_size.lock(), st.flush_latency_us.lock()) {
        println!(
            "shard batches/commit  p50 {} p90 {} p99 {} max {}",
            g.value_at_quantile(0.5),
            g.value_at_quantile(0.9),
            g.value_at_quantile(0.99),
            g.max()
        );
        println!(
            "flush latency (µs)    p50 {} p90 {} p99 {} p99.9 {} max {}",
            f.value_at_quantile(0.5),
            f.value_at_quantile(0.9),
            f.value_at_quantile(0.99),
            f.value_at_quantile(0.999),
            f.max()
        );
    }
    println!("WAL size on disk      {} MiB", db.wal_size_bytes() >> 20);
}

/// Reopen the directory: replay speed, and how the restart time splits.
fn reopen(cfg: PersistenceConfig, engine_cfg: EngineConfig) -> Result<(), Box<dyn std::error::Error>> {
    let t1 = Instant::now();
    let db = DurableEngine::open(cfg, engine_cfg)?;
    let restart = t1.elapsed().as_secs_f64();
    let r = db.recovery();
    println!(
        "recovery              {} events in {} records, replay {:.2} s = {:.0} events/s; restart {:.2} s; {} orders live",
        r.events_replayed,
        r.records_replayed,
        r.duration.as_secs_f64(),
        r.events_replayed as f64 / r.duration.as_secs_f64().max(1e-9),
        restart,
        db.engine().order_count()
    );
    println!(
        "restart split         storage open {:.2} s + persistence recovery {:.2} s + engine start {:.2} s",
        r.storage_open.as_secs_f64(),
        r.duration.as_secs_f64(),
        r.engine_start.as_secs_f64()
    );
    db.close_without_snapshot();
    Ok(())
}
