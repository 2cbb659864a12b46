//! # surge-loadgen: `surge bench`
//!
//! The load generator behind `surge bench`, and the clients that let the same load shapes run
//! against Surge's peers, so that "why not Redis and a Lua script?" gets a measured answer
//! (`benches/compare/run.sh` writes `docs/BENCHMARKS.md` with it).
//!
//! ## Scenarios
//! * `hot-sku`: one SKU with stock for every request; every `create_order` succeeds. Throughput.
//! * `flash-sale`: `--users` buyers race once each for `--stock` units (per-user limit 1).
//!   Exactly `stock` orders must succeed and none may be oversold; the rest are `sold_out`
//!   rejections, whose rate is reported.
//! * `mixed`: create, pay, cancel, `get_order`, `get_sku` over `--skus` SKUs; some orders are
//!   abandoned so that payment deadlines expire while the load runs (Surge targets only).
//!
//! ## Targets
//! `in-process` (an engine in this process with `--durability`), `tcp://HOST:PORT` and
//! `ws://HOST:PORT/ws` (a running `surge serve`), `redis://HOST:PORT` (the classic Lua stock
//! script via `EVALSHA`), `postgres://USER@HOST:PORT/DB` (a conditional `UPDATE`).
//!
//! ## Measuring
//! `connections × pipeline` lanes, closed loop or open loop (`--rate`, corrected for
//! coordinated omission); latency in an HdrHistogram (1 µs to 60 s, 3 significant digits);
//! errors counted by code; after the run, the stock is checked on the target itself.
//!
//! ## Example
//! ```
//! use surge_loadgen::{BenchArgs, BenchDurability, Scenario};
//! let mut args = BenchArgs::new(Scenario::HotSku, "in-process");
//! args.durability = BenchDurability::None;
//! args.requests = Some(2_000);
//! args.connections = 4;
//! args.pipeline = 2;
//! args.quiet = true;
//! let report = surge_loadgen::run(&args).unwrap();
//! assert_eq!(report.ok, 2_000);
//! println!("{}", report.to_table());
//! ```

#![warn(missing_docs)]

pub mod client;
mod config;
pub mod cpu;
mod error;
mod in_process;
mod report;
mod runner;
mod timeline;

pub use client::redis_lua::RedisScript;
pub use config::{BenchArgs, BenchDurability, ReplyArg, Scenario, Target, LANES_MAX};
pub use error::{LoadgenError, LoadgenResult};
pub use report::{LatencyUs, Report, Verify};
pub use runner::{run, HOT_SKU_STOCK};
