//! Settings of a run: scenario, target, concurrency, load shape. [`BenchArgs`] is both the
//! `surge bench` command line (clap) and the library's input.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{LoadgenError, LoadgenResult};

/// The load shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One SKU with enough stock that every request succeeds: raw order throughput.
    HotSku,
    /// `--users` buyers race once each for `--stock` units of one SKU (per-user limit 1):
    /// exactly `stock` orders must succeed, none oversold; mostly measures rejections.
    FlashSale,
    /// Create, pay, cancel, `get_order`, `get_sku` over `--skus` SKUs; some orders are left
    /// unpaid so that payment deadlines expire during the run (Surge targets only).
    Mixed,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::HotSku => "hot-sku",
            Scenario::FlashSale => "flash-sale",
            Scenario::Mixed => "mixed",
        })
    }
}

/// Durability of the in-process engine (the server's is its own setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchDurability {
    /// Reply after the group commit is fsynced.
    Sync,
    /// Reply after the group commit is handed to the OS.
    Os,
    /// Memory only.
    None,
}

/// How a Surge server answers orders to the load generator (`"reply"` in `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyArg {
    /// `order_id`, `status`, `version`, `total`: what a pipelining checkout backend needs.
    Minimal,
    /// The whole order, as every connection gets by default.
    Full,
}

/// Where the load goes, parsed from `--target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An engine in this process (`in-process`), opened on a temporary or given data directory.
    InProcess,
    /// A Surge server's TCP gateway (`tcp://host:port`, JSON lines).
    SurgeTcp(String),
    /// A Surge server's WebSocket gateway (`ws://host:port/ws`).
    SurgeWs(String),
    /// Redis with the classic stock-deduction Lua script (`redis://host:port`).
    Redis(String),
    /// PostgreSQL with a conditional `UPDATE` (`postgres://user@host:port/db`).
    Postgres(String),
}

impl Target {
    /// Parse `in-process`, `tcp://…`, `ws://…`, `redis://…`, `postgres://…` (or `postgresql://`).
    ///
    /// # Errors
    /// [`LoadgenError::InvalidSettings`] for anything else.
    ///
    /// ```
    /// use surge_loadgen::Target;
    /// assert_eq!(Target::parse("tcp://127.0.0.1:7878").unwrap(), Target::SurgeTcp("127.0.0.1:7878".into()));
    /// assert!(Target::parse("http://x").is_err());
    /// ```
    pub fn parse(s: &str) -> LoadgenResult<Target> {
        if s == "in-process" {
            return Ok(Target::InProcess);
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return Ok(Target::SurgeTcp(addr.trim_end_matches('/').to_owned()));
        }
        if s.starts_with("ws://") {
            return Ok(Target::SurgeWs(s.to_owned()));
        }
        if s.starts_with("redis://") {
            return Ok(Target::Redis(s.to_owned()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Target::Postgres(s.to_owned()));
        }
        Err(LoadgenError::InvalidSettings(format!(
            "unknown target {s:?}: expected in-process, tcp://HOST:PORT, ws://HOST:PORT/ws, redis://HOST:PORT or postgres://USER@HOST:PORT/DB"
        )))
    }

    /// Short name of the kind of target, as in the JSON report: `in-process`, `surge-tcp`,
    /// `surge-ws`, `redis`, `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::InProcess => "in-process",
            Target::SurgeTcp(_) => "surge-tcp",
            Target::SurgeWs(_) => "surge-ws",
            Target::Redis(_) => "redis",
            Target::Postgres(_) => "postgres",
        }
    }
}

/// `surge bench`: drive load at a target and report throughput, latency and errors.
///
/// Closed loop by default: each of `connections × pipeline` lanes sends its next request when
/// the previous one is answered. With `--rate` the run is open loop: request *k* of the run is
/// due at `start + k / rate`, and its latency is measured from that due time, not from when it
/// was sent, so a stalled server cannot hide its stall (coordinated omission; Gil Tene,
/// "How NOT to measure latency", and wrk2 do the same).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Load shape.
    #[arg(long, value_enum, default_value_t = Scenario::HotSku)]
    pub scenario: Scenario,
    /// `in-process`, `tcp://HOST:PORT`, `ws://HOST:PORT/ws`, `redis://HOST:PORT` or
    /// `postgres://USER@HOST:PORT/DB`.
    #[arg(long, default_value = "in-process")]
    pub target: String,
    /// Connections to the target (in-process: independent client tasks).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Requests in flight per connection (pipeline depth).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// In-process hot-sku and flash-sale: orders each lane submits at once through
    /// `Engine::create_orders` (batched submission: one mailbox message per shard per batch),
    /// then awaits; 1 submits them one by one with `create_order`. Each order's latency is
    /// its batch's.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Open loop: requests per second over the whole run (all connections). Latency is
    /// corrected for coordinated omission. Absent: closed loop, as fast as replies come.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to run (e.g. `10s`, `500ms`); ignored when `--requests` is given.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many requests (flash-sale default: `--users`).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Distinct buyers (flash-sale: each tries once). Default: 100000 for flash-sale, 1000000
    /// otherwise.
    #[arg(long)]
    pub users: Option<u64>,
    /// Units on sale in flash-sale (hot-sku: enough for every request; mixed: per SKU).
    #[arg(long, default_value_t = 100)]
    pub stock: u64,
    /// SKUs in the mixed scenario.
    #[arg(long, default_value_t = 1000)]
    pub skus: usize,
    /// Admin token for a Surge server (creates the SKUs, then places orders).
    #[arg(long, env = "SURGE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Redis only: the Lua script each order runs (`classic`: GET, compare, DECRBY;
    /// `full-order`: what Surge's create_order does, `../shared/bench/full-order.lua`).
    #[arg(long, value_enum, default_value_t = crate::client::redis_lua::RedisScript::Classic)]
    pub redis_script: crate::client::redis_lua::RedisScript,
    /// Surge server only: the reply shape the connections ask for in `auth`.
    #[arg(long, value_enum, default_value_t = ReplyArg::Minimal)]
    pub reply: ReplyArg,
    /// In-process only: durability of the engine.
    #[arg(long, value_enum, default_value_t = BenchDurability::Sync)]
    pub durability: BenchDurability,
    /// In-process only: data directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// In-process only: shard threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// In-process only: the engine's `live_orders_expected` (size the order maps for this
    /// many live orders at start, so a long run never stalls on a map resize; 0 = grow). The
    /// `surge` binary also faults in 1 KiB of heap per expected order before the clock starts
    /// (`surge::process::BENCH_PREFAULT_BYTES_PER_ORDER`): give at least the orders the run
    /// will create, or the rest of the run pays the kernel's page zeroing.
    #[arg(long, default_value_t = 0)]
    pub live_orders_expected: u64,
    /// In-process mixed scenario only: payment deadline of new orders in ms, short so that
    /// deadlines expire during the run (other scenarios keep the engine default of 15 min; a
    /// server uses its own `payment_timeout_ms`).
    #[arg(long, default_value_t = 2_000)]
    pub payment_timeout_ms: u64,
    /// Load-generator threads (tokio workers), capped at the cores the process may run on.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of the mixed scenario's choices (printed in the report).
    #[arg(long, default_value_t = 20_261_120)]
    pub seed: u64,
    /// Free text copied into the report (e.g. "redis appendfsync always").
    #[arg(long)]
    pub label: Option<String>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Largest lane count (`connections × pipeline`): every lane is a task with its own histogram.
pub const LANES_MAX: usize = 100_000;

impl BenchArgs {
    /// Defaults, as `surge bench` with no flags (hot-sku, in-process, sync, 50 × 1, 10 s).
    pub fn new(scenario: Scenario, target: &str) -> BenchArgs {
        BenchArgs {
            scenario,
            target: target.to_owned(),
            connections: 50,
            pipeline: 1,
            batch: 1,
            rate: None,
            duration: Duration::from_secs(10),
            requests: None,
            users: None,
            stock: 100,
            skus: 1000,
            token: None,
            reply: ReplyArg::Minimal,
            redis_script: crate::client::redis_lua::RedisScript::Classic,
            durability: BenchDurability::Sync,
            data_dir: None,
            shards: 0,
            live_orders_expected: 0,
            payment_timeout_ms: 2_000,
            threads: 2,
            seed: 20_261_120,
            label: None,
            json: false,
            quiet: false,
        }
    }

    /// Buyers: `--users` or the scenario's default.
    pub fn users(&self) -> u64 {
        self.users.unwrap_or(match self.scenario {
            Scenario::FlashSale => 100_000,
            _ => 1_000_000,
        })
    }

    /// The request budget: `--requests`, or `--users` for flash-sale, or none (duration).
    pub fn request_budget(&self) -> Option<u64> {
        match (self.requests, self.scenario) {
            (Some(n), _) => Some(n),
            (None, Scenario::FlashSale) => Some(self.users()),
            (None, _) => None,
        }
    }

    /// Check the settings against each other.
    ///
    /// # Errors
    /// [`LoadgenError::InvalidSettings`] with the reason.
    pub fn validate(&self) -> LoadgenResult<Target> {
        let target = Target::parse(&self.target)?;
        let bad = |m: &str| Err(LoadgenError::InvalidSettings(m.to_owned()));
        if self.connections == 0 || self.pipeline == 0 {
            return bad("--connections and --pipeline must be at least 1");
        }
        if self.connections.saturating_mul(self.pipeline) > LANES_MAX {
            return bad("--connections × --pipeline must be at most 100000");
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return bad("--rate must be a positive number of requests per second");
            }
        }
        if self.duration.is_zero() && self.request_budget().is_none() {
            return bad("--duration must be positive (or give --requests)");
        }
        if self.users() == 0 || self.stock == 0 || self.skus == 0 {
            return bad("--users, --stock and --skus must be at least 1");
        }
        if self.batch == 0 || self.batch > surge_engine::CREATE_BATCH_MAX {
            return bad("--batch must be 1..=8192");
        }
        if self.batch > 1
            && (!matches!(target, Target::InProcess) || self.scenario == Scenario::Mixed || self.rate.is_some())
        {
            return bad(
                "--batch above 1 needs the in-process target, hot-sku or flash-sale, and a closed loop (no --rate)",
            );
        }
        if self.threads == 0 {
            return bad("--threads must be at least 1");
        }
        if self.scenario == Scenario::Mixed && matches!(target, Target::Redis(_) | Target::Postgres(_)) {
            return bad("the mixed scenario needs a Surge target (in-process, tcp:// or ws://)");
        }
        Ok(target)
    }
}
