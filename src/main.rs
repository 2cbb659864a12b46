//! The `surge` command.
//!
//! * `surge serve [--config FILE] [--data-dir DIR] [--tcp-addr ADDR] [--http-addr ADDR] …`: the
//!   server (TCP JSON lines on 127.0.0.1:7878, HTTP/WebSocket on 127.0.0.1:7879 by default).
//! * `surge wal inspect [--data-dir DIR] [--json]`: LSN range, counts per event type, snapshot
//!   LSN, sizes.
//! * `surge bench [--scenario hot-sku|flash-sale|mixed] [--target in-process|tcp://…|ws://…|
//!   redis://…|postgres://…] [--connections N] [--pipeline N] [--rate RPS] [--duration 10s |
//!   --requests N] [--json]`: the load generator (see `surge bench --help`).
//! * `surge sim --seed N [--ops M] [--shards K] [--crash-rate R] [--storage-fault-rate R]
//!   [--torn-write-probability P] [--json]`: one deterministic simulation (exit 1 on a
//!   violation, printing the seed, the invariant and the last steps).
//! * `surge wal dump [--data-dir DIR]`: every logged event as one JSON object per line (audits).
//! * `surge events tail [--events-nats-url URL] [--subject FILTER] [--from-start] [--limit N]`:
//!   the event stream on NATS JetStream as JSON lines (docs/events.md).
//! * `surge cluster status [--cluster-nats-urls URLS] [--json]`: each partition's owner, epoch,
//!   lease, last stream sequence and lag, and the nodes seen (reads only).
//!
//! Run them on a stopped server's data directory (sled holds a lock while it is open).

mod cluster_cmd;
mod sim_cmd;

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
    /// Log format on stderr: `text` (human-readable) or `json` (one object per line). The level
    /// comes from RUST_LOG (default: info for serve, warn otherwise; per-request lines are
    /// `debug`, e.g. RUST_LOG=info,surge_gateway=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SURGE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: TCP (JSON lines) and WebSocket gateways, /health and /ready.
    ///
    /// Settings come from `config/surge.toml` (or --config), then `SURGE_<TABLE>_<KEY>`
    /// environment variables, then these flags.
    Serve(ServeArgs),
    /// Load generator: drive hot-sku, flash-sale or mixed load at the in-process engine, a
    /// Surge server (TCP, WebSocket), Redis + Lua or PostgreSQL; print throughput, latency
    /// percentiles and errors by code (or --json).
    Bench(Box<surge_loadgen::BenchArgs>),
    /// Run one deterministic simulation (engine, WAL and recovery, with crashes and storage
    /// faults); exit 1 with the seed, the violated invariant and the last steps on a violation.
    Sim(Box<sim_cmd::SimArgs>),
    /// Look inside a data directory's write-ahead log.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// The event stream on NATS JetStream (docs/events.md).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// A cluster on NATS JetStream (issue 16).
    Cluster {
        #[command(subcommand)]
        command: cluster_cmd::ClusterCommand,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print the stream's events as JSON lines (one CloudEvents envelope per line), new ones
    /// by default; Ctrl-C to stop.
    Tail(TailArgs),
}

#[derive(clap::Args)]
struct TailArgs {
    /// Config file whose `[events]` names the server, stream and credentials (default:
    /// config/surge.toml if it exists).
    #[arg(long, env = "SURGE_CONFIG")]
    config: Option<PathBuf>,
    /// NATS server URL (overrides `[events] nats_url`; env SURGE_EVENTS_NATS_URL).
    #[arg(long)]
    events_nats_url: Option<String>,
    /// Stream name (overrides `[events] stream`).
    #[arg(long)]
    stream: Option<String>,
    /// Only subjects matching this filter, e.g. `surge.order.>` or `surge.order.paid`.
    #[arg(long)]
    subject: Option<String>,
    /// Start from the first event the stream holds instead of new ones.
    #[arg(long)]
    from_start: bool,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file (default: config/surge.toml if it exists, else built-in defaults).
    #[arg(long, env = "SURGE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (WAL and snapshots).
    #[arg(long, env = "SURGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TCP gateway address (default 127.0.0.1:7878; port 0 picks a free port).
    #[arg(long, env = "SURGE_TCP_ADDR")]
    tcp_addr: Option<String>,
    /// HTTP / WebSocket address (default 127.0.0.1:7879).
    #[arg(long, env = "SURGE_HTTP_ADDR")]
    http_addr: Option<String>,
    /// sync | os | none.
    #[arg(long, env = "SURGE_DURABILITY")]
    durability: Option<String>,
    /// Shard threads (0 = one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Most open connections.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most in-flight requests per connection.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Prometheus exporter address (default 127.0.0.1:9898; port 0 picks a free port).
    #[arg(long, env = "SURGE_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// Publish order, stock and wallet events to this NATS JetStream server (overrides
    /// `[events] nats_url`; env SURGE_EVENTS_NATS_URL). Off by default; see docs/events.md.
    #[arg(long)]
    events_nats_url: Option<String>,
    /// Join a cluster on these NATS JetStream servers, comma-separated (overrides `[cluster]
    /// nats_urls`; env SURGE_CLUSTER_NATS_URLS). Off by default: a single node with its WAL.
    #[arg(long)]
    cluster_nats_urls: Option<String>,
    /// This node's id in the cluster (overrides `[cluster] node_id`; env SURGE_CLUSTER_NODE_ID).
    #[arg(long)]
    node_id: Option<String>,
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

/// Logs go to stderr (stdout carries `serve`'s addresses and `wal`'s output). Fields, not
/// payloads: requests log their id, op, code, order_id and sku_id; never a token.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info,actix_server=warn" } else { "warn" };
    init_logging(cli.log_format, default_level);
    if matches!(cli.command, Command::Serve(_) | Command::Bench(_)) {
        surge::process::apply_huge_page_policy_from_env();
    }
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => bench(&args),
        Command::Sim(args) => sim_cmd::sim(&args).map_err(Into::into),
        Command::Wal { command: WalCommand::Inspect { data_dir, json } } => wal_inspect(&data_dir, json),
        Command::Wal { command: WalCommand::Dump { data_dir } } => wal_dump(&data_dir),
        Command::Events { command: EventsCommand::Tail(args) } => events_tail(&args),
        Command::Cluster { command } => cluster_cmd::run(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `surge bench`: the table (or one JSON object) on stdout; exit code 1 if the stock
/// verification failed (an oversell or a lost unit), so scripts notice.
fn bench(args: &surge_loadgen::BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    // The in-process engine's expected orders: their memory faulted in before the clock starts.
    if args.target == "in-process" {
        surge::process::prefault_heap_for_orders(
            args.live_orders_expected,
            surge::process::BENCH_PREFAULT_BYTES_PER_ORDER,
        );
    }
    let report = surge_loadgen::run(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    match &report.verify {
        Some(v) if !v.passed => Err(format!("verification failed: {}", v.detail).into()),
        _ => Ok(()),
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

/// `surge events tail`: the stream as JSON lines on stdout, until Ctrl-C or `--limit`.
fn events_tail(args: &TailArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = surge::gateway::FileConfig::load(args.config.as_deref())?.events;
    if let Some(url) = &args.events_nats_url {
        cfg.nats_url.clone_from(url);
    }
    if let Some(stream) = &args.stream {
        cfg.stream.clone_from(stream);
    }
    if !cfg.enabled() {
        return Err("no NATS server: give --events-nats-url, SURGE_EVENTS_NATS_URL or [events] nats_url".into());
    }
    cfg.validate()?;
    let opts =
        surge::events::TailOptions { subject: args.subject.clone(), from_start: args.from_start, limit: args.limit };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut out = std::io::stdout();
        tokio::select! {
            r = surge::events::tail(&cfg, &opts, &mut out) => r.map(drop).map_err(Into::into),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
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

fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    use surge::gateway::{FileConfig, Server};
    let mut cfg = FileConfig::load(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        cfg.persistence.data_dir = d;
    }
    if let Some(a) = args.tcp_addr {
        cfg.server.tcp_addr = a;
    }
    if let Some(a) = args.http_addr {
        cfg.server.http_addr = a;
    }
    if let Some(d) = args.durability {
        cfg.persistence.durability = match d.as_str() {
            "sync" => surge::persistence::Durability::Sync,
            "os" => surge::persistence::Durability::Os,
            "none" => surge::persistence::Durability::None,
            other => return Err(format!("--durability {other}: expected sync, os or none").into()),
        };
    }
    if let Some(n) = args.shards {
        cfg.engine.shard_count = n;
    }
    if let Some(n) = args.max_connections {
        cfg.limits.max_connections = n;
    }
    if let Some(n) = args.max_in_flight {
        cfg.limits.max_in_flight = n;
    }
    // Memory for the orders the operator expects, faulted in before anything is served.
    surge::process::prefault_heap_for_orders(
        cfg.engine.live_orders_expected,
        surge::process::SERVE_PREFAULT_BYTES_PER_ORDER,
    );
    if let Some(a) = args.metrics_addr {
        cfg.metrics.addr = a;
    }
    if let Some(url) = args.events_nats_url {
        cfg.events.nats_url = url;
    }
    if let Some(urls) = args.cluster_nats_urls {
        cfg.cluster.nats_urls = urls;
    }
    if let Some(id) = args.node_id {
        cfg.cluster.node_id = id;
    }
    let data_dir = cfg.persistence.data_dir.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("surge-io").build()?;
    runtime.block_on(async move {
        let server = Server::start(cfg).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "surge serve: data in {}", data_dir.display())?;
        writeln!(out, "  tcp        {}   (one JSON object per line)", server.tcp_addr)?;
        writeln!(out, "  websocket  ws://{}/ws", server.http_addr)?;
        writeln!(out, "  http       http://{}/health  http://{}/ready", server.http_addr, server.http_addr)?;
        match server.metrics_addr {
            Some(a) => writeln!(out, "  metrics    http://{a}/metrics")?,
            None => writeln!(out, "  metrics    off (disabled, or the exporter could not start: see the log)")?,
        }
        match &server.dev_tokens {
            Some(t) => print_dev_tokens(&mut out, t)?,
            None => writeln!(out, "  tokens: from config / environment")?,
        }
        out.flush()?;
        drop(out);
        wait_for_signal().await?;
        eprintln!("surge serve: shutting down");
        server.shutdown().await?;
        eprintln!("surge serve: stopped");
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}

/// The generated credentials, marked dev-only: they change at every start and anyone who reads
/// this output can use them.
fn print_dev_tokens(out: &mut impl Write, t: &surge::gateway::DevTokens) -> std::io::Result<()> {
    writeln!(out, "  DEV-ONLY credentials (generated at start, not for production; set [auth] or")?;
    writeln!(out, "  SURGE_ADMIN_TOKEN / SURGE_SERVICE_TOKEN / SURGE_AUTH_JWT_HS256_SECRET to fix them):")?;
    writeln!(out, "    admin    token {}", t.admin)?;
    writeln!(out, "    service  token {}", t.service)?;
    if let Some(secret) = &t.jwt_hs256_secret {
        writeln!(out, "    user JWT HS256 secret {secret}")?;
    }
    if let Some(jwt) = &t.user_jwt {
        let sub = surge::gateway::DevTokens::USER_ID;
        writeln!(out, "    user     jwt   {jwt}   (sub {sub}, valid 24 h)")?;
    }
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
