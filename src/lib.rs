//! # surge
//!
//! The facade crate: re-exports the engine so users depend on one crate. See the README and
//! `ARCHITECTURE.md` for the shape of the whole.
//!
//! ```
//! use surge::engine::{Engine, EngineConfig};
//! let engine = Engine::in_memory(EngineConfig::default()).unwrap();
//! assert!(engine.shard_count() >= 1);
//! ```

#![deny(missing_docs)]

/// The engine core ([`surge_engine`]).
pub use surge_engine as engine;
