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
pub mod error;
pub mod inspect;
pub mod recovery;
pub mod snapshot;
pub mod store;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use surge_engine::{
    fatal, ChangeObserver, Clock, Engine, EngineConfig, Order, OrderArchive, OrderId, StorageGate, SystemClock,
};

pub use crate::codec::SnapshotFile;
pub use crate::error::{PersistenceError, PersistenceResult};
pub use crate::recovery::RecoveryStats;
pub use crate::store::{LogStore, SledStore};
pub use crate::writer::{StorageFailurePolicy, WalJournal, WalStats};

use crate::codec::{decode_header, encode_records};
use crate::writer::Writer;

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
    /// What happens after a failed WAL write or fsync: [`StorageFailurePolicy::FailStop`]
    /// (default: exit with code 70, recovery runs at the next start) or
    /// [`StorageFailurePolicy::Halt`] (embedders and tests: the handle stays failed, writes are
    /// refused, reads work, until it is dropped and the directory reopened). Either way nothing
    /// is acknowledged on the failed handle again (fsyncgate; see [`writer`]).
    pub storage_failure_policy: StorageFailurePolicy,
    /// Shard batches that may wait for the writer before shards block (back-pressure).
    pub journal_queue_capacity: usize,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            durability: Durability::Sync,
            snapshot_every_events: 2_000_000,
            snapshot_every_secs: 300,
            storage_failure_policy: StorageFailurePolicy::FailStop,
            journal_queue_capacity: 4_096,
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

struct Shared {
    engine: Engine,
    store: Option<Arc<SledStore>>,
    data_dir: PathBuf,
    base: u64,
    stats: Arc<WalStats>,
    /// The newest verified snapshot (from recovery or the last write): the next trim's bound.
    kept: std::sync::Mutex<Option<snapshot::KeptSnapshot>>,
}

impl Shared {
    /// Write a snapshot, verify it, then trim the WAL by the *previous* snapshot's coverage and
    /// keep those two files (see [`snapshot`]'s "Two generations").
    fn snapshot(&self) -> PersistenceResult<Option<SnapshotInfo>> {
        let Some(store) = &self.store else { return Ok(None) };
        if self.stats.failed.load(Ordering::Acquire) {
            // Memory may hold changes the log never got; the failed handle must not write again.
            return Err(PersistenceError::StorageFailed);
        }
        // One snapshot at a time (snapshotter thread, snapshot_now, close); never on the
        // command path. A panic while holding it already ended the process (fail-stop).
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (state, cuts) = self.engine.snapshot()?;
        let (orders, skus) = (state.orders.len(), state.skus.len());
        let lsn = self.stats.durable_lsn.load(Ordering::Acquire);
        let file = SnapshotFile { lsn, base: self.base, cuts, state };
        let (new, size_bytes) = snapshot::write_kept(&self.data_dir, &file)?;
        let records_removed = match kept.as_ref() {
            Some(prev) => {
                // Recorded before any record goes: recovery must not fall back past `prev`.
                store.set_meta_u64(snapshot::META_WAL_TRIMMED_BY, prev.number)?;
                let covered = |lsn, bytes: &[u8]| decode_header(lsn, bytes).map(|h| prev.cover.covers(&h));
                store.remove_where(|lsn, bytes| covered(lsn, bytes).unwrap_or(false))?
            }
            None => 0,
        };
        let keep: Vec<&Path> = kept.iter().map(|k| k.path.as_path()).chain([new.path.as_path()]).collect();
        snapshot::retain(&self.data_dir, &keep)?;
        let path = new.path.clone();
        *kept = Some(new);
        tracing::info!(path = %path.display(), size_bytes, records_removed, orders, "snapshot written");
        Ok(Some(SnapshotInfo { path, size_bytes, records_removed, orders, skus }))
    }
}

/// An engine whose changes are logged: recovery on open, group commit while running, snapshots
/// in the background and at [`DurableEngine::close`].
pub struct DurableEngine {
    /// `None` only while closing.
    shared: Option<Arc<Shared>>,
    recovery: RecoveryStats,
    snapshotter: Option<(Sender<()>, JoinHandle<()>)>,
    writer_done: Option<Receiver<()>>,
}

impl DurableEngine {
    /// Open `cfg.data_dir` (creating it), recover, and start the engine with the system clock.
    ///
    /// # Errors
    /// I/O errors; a snapshot or WAL record that does not decode (recovery refuses to guess);
    /// an invalid engine config.
    pub fn open(cfg: PersistenceConfig, engine_cfg: EngineConfig) -> PersistenceResult<Self> {
        Self::open_with(cfg, engine_cfg, Arc::new(SystemClock), |s| Box::new(s))
    }

    /// Like [`DurableEngine::open`], with an injected clock and a wrapper around the store the
    /// writer uses (tests wrap it to inject write and flush failures).
    ///
    /// # Errors
    /// As [`DurableEngine::open`].
    pub fn open_with(
        cfg: PersistenceConfig,
        engine_cfg: EngineConfig,
        clock: Arc<dyn Clock>,
        wrap: impl FnOnce(SledStore) -> Box<dyn LogStore>,
    ) -> PersistenceResult<Self> {
        Self::open_observed(cfg, engine_cfg, clock, None, wrap)
    }

    /// Like [`DurableEngine::open_with`], and tell `observer` about every durable change (the
    /// gateway's subscriptions).
    ///
    /// # Errors
    /// As [`DurableEngine::open`].
    pub fn open_observed(
        cfg: PersistenceConfig,
        engine_cfg: EngineConfig,
        clock: Arc<dyn Clock>,
        observer: Option<Arc<dyn ChangeObserver>>,
        wrap: impl FnOnce(SledStore) -> Box<dyn LogStore>,
    ) -> PersistenceResult<Self> {
        let builder = |engine_cfg| {
            let b = Engine::builder(engine_cfg).clock(clock.clone());
            match &observer {
                Some(o) => b.observer(o.clone()),
                None => b,
            }
        };
        if cfg.durability == Durability::None {
            let engine = builder(engine_cfg).start()?;
            let stats = Arc::new(WalStats::new(0));
            let kept = std::sync::Mutex::new(None);
            let shared = Shared { engine, store: None, data_dir: cfg.data_dir, base: 0, stats, kept };
            return Ok(Self {
                shared: Some(Arc::new(shared)),
                recovery: RecoveryStats::default(),
                snapshotter: None,
                writer_done: None,
            });
        }
        dirs::create_dir_durable(&cfg.data_dir)?;
        let store = Arc::new(SledStore::open(&cfg.data_dir)?);
        let mut engine_cfg = engine_cfg;
        engine_cfg.shard_count = directory_shard_count(&store, &engine_cfg)?;
        let recovered = recovery::recover(&store, &cfg.data_dir)?;
        // LSNs never go backwards, even when a snapshot trimmed the whole log.
        let mut next_lsn = recovered.stats.last_lsn.max(recovered.stats.snapshot_lsn.unwrap_or(0)) + 1;
        let sync = cfg.durability == Durability::Sync;
        let mut writer_store = wrap(SledStore::clone(&store));
        if !recovered.fixes.is_empty() {
            next_lsn = log_repairs(&mut writer_store, &recovered, next_lsn, sync)?;
        }
        let stats = Arc::new(WalStats::new(next_lsn - 1));
        let gate = Arc::new(StorageGate::default());
        let (tx, rx) = crossbeam_channel::bounded(cfg.journal_queue_capacity.max(1));
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let writer = Writer {
            store: writer_store,
            rx,
            sync,
            next_lsn,
            gate: gate.clone(),
            stats: stats.clone(),
            policy: cfg.storage_failure_policy,
        };
        std::thread::Builder::new().name("surge-wal".into()).spawn(move || {
            // A panic in the writer would leave shards waiting forever for durability: end the
            // process instead (issue 10 item 3; TigerBeetle's crash-and-recover stance).
            fatal::run_or_fail_stop("wal-writer", || writer.run());
            let _ = done_tx.send(());
        })?;
        let base = recovered.base;
        let engine = builder(engine_cfg)
            .storage_gate(gate)
            // Weak: engine clones a caller keeps after close must not keep sled (and its lock).
            .archive(Arc::new(SledArchive(Arc::downgrade(&store))))
            .state(recovered.state)
            .journal(Box::new(move |shard| Box::new(WalJournal::new(shard, base, tx.clone()))))
            .start()?;
        let kept = std::sync::Mutex::new(recovered.kept);
        let data_dir = cfg.data_dir.clone();
        let shared = Arc::new(Shared { engine, store: Some(store), data_dir, base, stats, kept });
        let snapshotter = Some(spawn_snapshotter(shared.clone(), &cfg)?);
        Ok(Self { shared: Some(shared), recovery: recovered.stats, snapshotter, writer_done: Some(done_rx) })
    }

    fn shared(&self) -> &Shared {
        match &self.shared {
            Some(s) => s,
            None => unreachable!("shared is taken only by close, which consumes self"),
        }
    }

    /// The engine. Clone it freely; after [`DurableEngine::close`] the clones answer
    /// `shutting_down`.
    pub fn engine(&self) -> &Engine {
        &self.shared().engine
    }

    /// What recovery did at open.
    pub fn recovery(&self) -> &RecoveryStats {
        &self.recovery
    }

    /// Writer counters and histograms.
    pub fn wal_stats(&self) -> &Arc<WalStats> {
        &self.shared().stats
    }

    /// Bytes the WAL takes on disk (sled's own estimate; snapshots not included).
    pub fn wal_size_bytes(&self) -> u64 {
        self.shared().store.as_ref().map_or(0, |s| s.size_on_disk())
    }

    /// Records in the WAL (each a shard batch of events); snapshots trim it.
    pub fn wal_record_count(&self) -> usize {
        self.shared().store.as_ref().map_or(0, |s| s.len())
    }

    /// Archived orders on disk.
    pub fn archived_order_count(&self) -> usize {
        self.shared().store.as_ref().map_or(0, |s| s.archived_count())
    }

    /// Take a snapshot now and delete the WAL records it covers. `None` in mode `none`.
    ///
    /// # Errors
    /// I/O errors writing the file or trimming the log; [`PersistenceError::StorageFailed`] after
    /// a failed WAL write on this handle.
    pub fn snapshot_now(&self) -> PersistenceResult<Option<SnapshotInfo>> {
        self.shared().snapshot()
    }

    /// Graceful shutdown: write a snapshot, stop the engine, let the writer drain and flush.
    /// Dropping a `DurableEngine` without `close` loses nothing either (every reply was durable);
    /// the next open just replays more log.
    ///
    /// # Errors
    /// The final snapshot failed (the WAL still holds everything: nothing is lost), or
    /// [`PersistenceError::StorageFailed`] when a WAL write failed earlier (policy
    /// [`StorageFailurePolicy::Halt`]): no snapshot is taken; reopen to recover.
    pub fn close(mut self) -> PersistenceResult<()> {
        self.stop_snapshotter();
        let result = self.shared().snapshot().map(|_| ());
        self.release();
        result
    }

    /// Stop without a snapshot (the next open replays the log): as fast as a crash, but the
    /// data directory is released before this returns.
    pub fn close_without_snapshot(mut self) {
        self.stop_snapshotter();
        self.release();
    }

    fn stop_snapshotter(&mut self) {
        if let Some((stop, handle)) = self.snapshotter.take() {
            drop(stop);
            let _ = handle.join();
        }
    }

    /// Drop our engine handle (the shards stop once no clone is left; their journals go with
    /// them) and wait for the writer to drain its queue, flush, and release sled.
    fn release(&mut self) {
        if let Some(shared) = self.shared.take() {
            // Stop the shards even if the caller still holds engine clones: their journals go
            // with them, which lets the writer drain and exit.
            shared.engine.shutdown(Duration::from_secs(10));
        }
        if let Some(done) = self.writer_done.take() {
            let _ = done.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// The shard count of a data directory: orders live on their user's shard and their ids route by
/// shard, so a directory keeps the count it was created with (like a topic's partition count).
/// A new directory records the configured count, and that its log is complete from the start
/// (`snapshot`'s fallback relies on it).
fn directory_shard_count(store: &SledStore, engine_cfg: &EngineConfig) -> PersistenceResult<usize> {
    let wanted = engine_cfg.effective_shard_count() as u64;
    match store.meta_u64("shard_count") {
        Some(n) if n != wanted => {
            if engine_cfg.shard_count != 0 {
                tracing::warn!(configured = wanted, kept = n, "shard_count is fixed by the data directory");
            }
            Ok(n as usize)
        }
        Some(_) => Ok(engine_cfg.shard_count),
        None => {
            store.set_meta_u64("shard_count", wanted)?;
            store.set_meta_u64(snapshot::META_WAL_TRIMMED_BY, 0)?;
            Ok(engine_cfg.shard_count)
        }
    }
}

/// Log recovery's repairs from `next_lsn` on, durably, before anything new can depend on them.
/// Returns the next free LSN.
fn log_repairs(
    store: &mut Box<dyn LogStore>,
    recovered: &recovery::Recovered,
    mut next_lsn: u64,
    sync: bool,
) -> PersistenceResult<u64> {
    let mut records = Vec::new();
    for bytes in encode_records(u16::MAX, recovered.base, &recovered.fixes)? {
        records.push((next_lsn, bytes));
        next_lsn += 1;
    }
    store.append(&records)?;
    store.flush(sync)?;
    Ok(next_lsn)
}

/// Dropping without [`DurableEngine::close`] is [`DurableEngine::close_without_snapshot`]:
/// the engine stops (clones answer `shutting_down`) and the data directory is released.
impl Drop for DurableEngine {
    fn drop(&mut self) {
        self.stop_snapshotter();
        self.release();
    }
}

fn spawn_snapshotter(shared: Arc<Shared>, cfg: &PersistenceConfig) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let every_events = cfg.snapshot_every_events.max(1);
    let every = Duration::from_secs(cfg.snapshot_every_secs.max(1));
    let handle = std::thread::Builder::new().name("surge-snapshot".into()).spawn(move || {
        fatal::run_or_fail_stop("snapshotter", || snapshot_loop(&shared, &stop_rx, every_events, every))
    })?;
    Ok((stop_tx, handle))
}

/// The snapshotter thread's body: a snapshot when enough events or time have passed, until
/// `stop_rx` fires or is dropped.
fn snapshot_loop(shared: &Shared, stop_rx: &Receiver<()>, every_events: u64, every: Duration) {
    let mut last_events = shared.stats.events.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    loop {
        match stop_rx.recv_timeout(Duration::from_millis(100)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let events = shared.stats.events.load(Ordering::Relaxed);
        let due = events - last_events >= every_events || (events > last_events && last_at.elapsed() >= every);
        if !due {
            continue;
        }
        match shared.snapshot() {
            Ok(_) => {
                last_events = events;
                last_at = Instant::now();
            }
            // The handle failed (policy `halt`): nothing more is written through it.
            Err(PersistenceError::StorageFailed) => return,
            Err(e) => tracing::error!(error = %e, "snapshot failed; the WAL keeps everything, will retry"),
        }
    }
}

/// The archive as the engine reads it: sled trees filled by the WAL writer.
struct SledArchive(std::sync::Weak<SledStore>);

impl OrderArchive for SledArchive {
    fn get(&self, order_id: OrderId) -> Option<Arc<Order>> {
        self.0.upgrade()?.archived(order_id.0).map(Arc::new)
    }

    fn list_user(&self, user_id: &str) -> Vec<OrderId> {
        self.0.upgrade().map(|s| s.archived_ids(user_id).into_iter().map(OrderId).collect()).unwrap_or_default()
    }

    fn highest_id(&self) -> Option<OrderId> {
        self.0.upgrade()?.archived_max_id().map(OrderId)
    }

    fn list_user_before(&self, user_id: &str, before: Option<OrderId>, limit: usize) -> Vec<OrderId> {
        let Some(store) = self.0.upgrade() else { return Vec::new() };
        store.archived_ids_before(user_id, before.map(|b| b.0), limit).into_iter().map(OrderId).collect()
    }
}

impl LogStore for Box<dyn LogStore> {
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        (**self).append(records)
    }

    fn archive(&mut self, orders: &[Arc<Order>]) -> std::io::Result<()> {
        (**self).archive(orders)
    }

    fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        (**self).flush(sync)
    }
}
