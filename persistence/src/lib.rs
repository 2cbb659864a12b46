//! # surge-persistence
//!
//! Makes every acknowledged change of a Surge engine survive `kill -9` (and, in `sync` mode,
//! power loss): a write-ahead log in sled with group commit, snapshots, and recovery on open.
//! This crate is the only part of Surge that touches the disk.
//!
//! ## Durability modes (named like Redis' `appendfsync`)
//! | mode | a reply means |
//! |---|---|
//! | [`Durability::Sync`] (default) | its batch is in sled, flushed, and sled's data file fsynced |
//! | [`Durability::Os`] | its batch is flushed to the OS: survives a process crash, not power loss |
//! | [`Durability::None`] | nothing: in memory only |
//!
//! ## Example
//! ```
//! use surge_persistence::{DurableEngine, PersistenceConfig};
//! use surge_engine::{EngineConfig, SkuSpec, SaleRules, Decimal};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let cfg = PersistenceConfig::new(dir.path());
//! let db = DurableEngine::open(cfg.clone(), EngineConfig::default()).unwrap();
//! db.engine().create_sku(SkuSpec {
//!     sku_id: "A".into(), name: "A".into(), price: Decimal::ONE, initial_stock: 3,
//!     rules: SaleRules::default(),
//! }).wait().unwrap(); // durable once this returns
//! db.close().unwrap();
//!
//! let db = DurableEngine::open(cfg, EngineConfig::default()).unwrap();
//! assert_eq!(db.engine().get_sku("A").unwrap().available, 3);
//! ```

#![deny(missing_docs)]

pub mod codec;
pub mod dirs;
mod durable;
pub mod error;
pub mod inspect;
pub mod outbox;
pub mod recovery;
pub mod sim;
pub mod snapshot;
pub mod storage;
pub mod store;
pub mod writer;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::codec::SnapshotFile;
pub use crate::durable::DurableEngine;
pub use crate::error::{PersistenceError, PersistenceResult};
pub use crate::recovery::RecoveryStats;
pub use crate::storage::{SnapshotStore, Storage};
pub use crate::store::{LogStore, SledStore};
pub use crate::writer::{StorageFailurePolicy, WalJournal, WalStats};

/// What a reply promises about durability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Written to sled, flushed, and fsynced (production default).
    #[default]
    Sync,
    /// Flushed to the operating system; survives a process crash, not a power loss.
    Os,
    /// In memory only (tests, benchmarks of the pure engine).
    None,
}

/// Persistence settings (the `[persistence]` table of `config/surge.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersistenceConfig {
    /// Directory of the WAL (`wal/`) and snapshots (`snapshots/`).
    pub data_dir: PathBuf,
    /// See [`Durability`].
    pub durability: Durability,
    /// Take a snapshot after this many events have been logged since the last one.
    pub snapshot_every_events: u64,
    /// … or after this many seconds, if anything was logged.
    pub snapshot_every_secs: u64,
    /// Either way, only once the events logged since the last snapshot number at least this
    /// percentage of the objects (orders and SKUs) that snapshot held: a snapshot writes the
    /// whole state, so without this rule a large state is rewritten every
    /// `snapshot_every_events` and its cost per event grows with the state (issue 12: with 3 M
    /// live orders the snapshotter took a whole core, and every cut stalled the shards).
    /// Redis rewrites its append-only file on the same rule (`auto-aof-rewrite-percentage`,
    /// default 100). Recovery then replays at most about this share of the state from the log.
    /// 0 turns the rule off.
    pub snapshot_growth_percent: u64,
    /// What happens after a failed WAL write or fsync: [`StorageFailurePolicy::FailStop`]
    /// (default: exit with code 70, recovery runs at the next start) or
    /// [`StorageFailurePolicy::Halt`] (embedders and tests: the handle stays failed, writes are
    /// refused, reads work, until it is dropped and the directory reopened). Either way nothing
    /// is acknowledged on the failed handle again (fsyncgate; see [`writer`]).
    pub storage_failure_policy: StorageFailurePolicy,
    /// Shard batches that may wait for the writer before shards block (back-pressure).
    pub journal_queue_capacity: usize,
    /// The transactional outbox (issue 15): `Some` makes the shards journal what it publishes,
    /// [`DurableEngine::outbox`] read it, and snapshots keep what is unpublished (see
    /// [`outbox`]). Default `None`. Set by the server from `[events]`, not a `[persistence]`
    /// key.
    #[serde(skip)]
    pub outbox: Option<outbox::OutboxRetention>,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            durability: Durability::Sync,
            snapshot_every_events: 2_000_000,
            snapshot_every_secs: 300,
            snapshot_growth_percent: 100,
            storage_failure_policy: StorageFailurePolicy::FailStop,
            journal_queue_capacity: 4_096,
            outbox: None,
        }
    }
}

impl PersistenceConfig {
    /// Defaults with `data_dir` set.
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        Self { data_dir: data_dir.as_ref().to_path_buf(), ..Self::default() }
    }
}

/// What a snapshot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file written.
    pub path: PathBuf,
    /// Its size.
    pub size_bytes: u64,
    /// WAL records deleted because the snapshot covers them.
    pub records_removed: u64,
    /// Orders and SKUs in it.
    pub orders: usize,
    /// SKUs in it.
    pub skus: usize,
}
