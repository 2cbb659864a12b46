//! The `surge` command.
//!
//! * `surge wal inspect [--data-dir DIR] [--json]`: LSN range, counts per event type, snapshot
//!   LSN, sizes.
//! * `surge wal dump [--data-dir DIR]`: every logged event as one JSON object per line (audits).
//!
//! Run them on a stopped server's data directory (sled holds a lock while it is open).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use surge::persistence::inspect;

/// mimalloc: the engine allocates small objects at a high rate on several threads; glibc's
/// malloc showed ~20% of the hot path (malloc_consolidate, unlink_chunk) in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Surge: an embeddable, durable order and inventory engine for flash sales.
#[derive(Parser)]
#[command(name = "surge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Look inside a data directory's write-ahead log.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Summarize: LSN range, events per type, snapshot LSN, sizes.
    Inspect {
        /// The data directory (holds `wal/` and `snapshots/`).
        #[arg(long, default_value = "data", env = "SURGE_DATA_DIR")]
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print every logged event as a JSON line: {"lsn", "shard", "seq", "event"}.
    Dump {
        /// The data directory.
        #[arg(long, default_value = "data", env = "SURGE_DATA_DIR")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Wal { command: WalCommand::Inspect { data_dir, json } } => wal_inspect(&data_dir, json),
        Command::Wal { command: WalCommand::Dump { data_dir } } => wal_dump(&data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surge: {e}");
            ExitCode::FAILURE
        }
    }
}

fn wal_inspect(dir: &std::path::Path, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    if !dir.join("wal").exists() {
        return Err(format!("{} holds no WAL (expected {}/wal)", dir.display(), dir.display()).into());
    }
    let s = inspect::inspect(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    println!("data dir        {}", dir.display());
    println!("LSN range       {} ..= {}", opt(s.lsn_first), opt(s.lsn_last));
    println!("records         {}", s.records);
    println!("events          {}", s.events);
    for (k, v) in &s.events_by_type {
        println!("  {k:<22}{v}");
    }
    println!("snapshot LSN    {}", opt(s.snapshot_lsn));
    println!("snapshot orders {}", s.snapshot_orders.map_or("-".to_owned(), |v| v.to_string()));
    println!("WAL size        {} bytes", s.wal_size_bytes);
    println!("snapshot size   {} bytes", opt(s.snapshot_size_bytes));
    Ok(())
}

fn wal_dump(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    if !dir.join("wal").exists() {
        return Err(format!("{} holds no WAL (expected {}/wal)", dir.display(), dir.display()).into());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    inspect::dump(dir, |line| {
        serde_json::to_writer(&mut out, line).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    })?;
    out.flush()?;
    Ok(())
}
