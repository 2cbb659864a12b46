//! # surge
//!
//! The facade crate: one dependency for users who embed Surge. It re-exports the engine core
//! ([`engine`]) and the durable log ([`persistence`]), and with its default features the server
//! ([`gateway`], feature `server`) and the load generator ([`loadgen`], feature `bench`). An
//! embedder that wants neither depends on it with `default-features = false` and gets no actix,
//! tokio, redis or tokio-postgres (CI checks the dependency tree). See the README and
//! `ARCHITECTURE.md` for the shape of the whole.
//!
//! ```
//! use surge::engine::{Engine, EngineConfig};
//! let engine = Engine::in_memory(EngineConfig::default()).unwrap();
//! assert!(engine.shard_count() >= 1);
//! ```

#![deny(missing_docs)]

pub mod process;

/// The engine core ([`surge_engine`]).
pub use surge_engine as engine;
/// The event stream: the outbox published to NATS JetStream, `surge events tail`
/// ([`surge_events`]). Feature `server` (on by default).
#[cfg(feature = "server")]
pub use surge_events as events;
/// The server: TCP and WebSocket gateways, auth, limits, subscriptions ([`surge_gateway`]).
/// Feature `server` (on by default).
#[cfg(feature = "server")]
pub use surge_gateway as gateway;
/// The load generator behind `surge bench` ([`surge_loadgen`]). Feature `bench` (on by default).
#[cfg(feature = "bench")]
pub use surge_loadgen as loadgen;
/// The write-ahead log, snapshots and recovery ([`surge_persistence`]).
pub use surge_persistence as persistence;
