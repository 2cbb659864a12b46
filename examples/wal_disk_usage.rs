//! Disk use under a steady load: the WAL stays bounded because snapshots trim it.
//!
//! ```sh
//! cargo run --release --example wal_disk_usage -- [--rounds R] [--orders-per-round N]
//! ```
//!
//! Every round creates N orders and cancels them (stock returns, so the load can go on forever),
//! with a snapshot every N events and `archive_after_ms = 0`, so canceled orders leave memory at
//! once for the archive (`--no-archive` keeps them in memory). After each round it prints sled's
//! size on disk (WAL + archive trees), the WAL's record count, the snapshot's size, the live orders
//! in memory and the archived orders on disk. The WAL column should stay flat;
//! the archive grows (it is the order history, by design).

use std::time::Duration;

use surge::engine::{CreateOrder, EngineConfig, Initiator, SaleRules, SkuSpec, TransitionOptions};
use surge::persistence::{DurableEngine, PersistenceConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else { return 0 };
    rd.filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds = arg("--rounds", 10);
    let per_round = arg("--orders-per-round", 50_000);
    let dir = tempfile::tempdir()?;
    let cfg = PersistenceConfig { snapshot_every_events: per_round, ..PersistenceConfig::new(dir.path()) };
    let archive_after_ms =
        if std::env::args().any(|a| a == "--no-archive") { surge::engine::config::DURATION_MS_MAX } else { 0 };
    let engine_cfg = EngineConfig { archive_after_ms, mailbox_capacity: 1 << 20, ..EngineConfig::default() };
    let db = DurableEngine::open(cfg, engine_cfg)?;
    let e = db.engine().clone();
    let spec = SkuSpec {
        sku_id: "A".into(),
        name: "A".into(),
        price: "1.00".parse()?,
        initial_stock: 1_000_000,
        rules: SaleRules::default(),
    };
    e.create_sku(spec).wait()?;
    println!(
        "{:>5} {:>12} {:>11} {:>14} {:>12} {:>12}",
        "round", "sled_bytes", "wal_records", "snapshot_bytes", "live_orders", "archived"
    );
    for round in 0..rounds {
        for chunk in 0..per_round / 1_000 {
            let pending: Vec<_> = (0..1_000)
                .map(|i| {
                    let user = format!("u{round}-{chunk}-{i}");
                    e.create_order(CreateOrder::new(&user, &[("A", 1)], "k"))
                })
                .collect();
            let orders: Vec<_> = pending.into_iter().filter_map(|p| p.wait().ok()).collect();
            let cancels: Vec<_> = orders
                .iter()
                .map(|o| e.cancel_order(o.order_id, Initiator::User, TransitionOptions::default()))
                .collect();
            for c in cancels {
                c.wait()?;
            }
        }
        e.settle();
        std::thread::sleep(Duration::from_millis(300)); // let the snapshotter run
        println!(
            "{:>5} {:>12} {:>11} {:>14} {:>12} {:>12}",
            round,
            db.wal_size_bytes(),
            db.wal_record_count(),
            dir_size(&dir.path().join("snapshots")),
            e.order_count(),
            db.archived_order_count(),
        );
    }
    drop(e);
    db.close()?;
    Ok(())
}
