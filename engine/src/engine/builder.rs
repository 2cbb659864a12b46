//! [`EngineBuilder`]: inject a clock, journals, a storage gate, an archive, an observer and
//! recovered state, then start the shard threads.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::cluster::ClusterHooks;
use crate::config::EngineConfig;
use crate::error::{EngineError, EngineResult};
use crate::event::{ChangeObserver, JournalFactory, NullJournal, OrderArchive, StorageGate};
use crate::publish::ReadModels;
use crate::routing::shard_for_key;
use crate::shard::{CoreParts, Shard, ShardParts};
use crate::snowflake::shard_of;
use crate::state::EngineState;
use crate::stats::ShardCounters;

use super::{Engine, Inner};

/// Builds an [`Engine`] with an injected clock and journal.
pub struct EngineBuilder {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    journal: JournalFactory,
    gate: Arc<StorageGate>,
    state: EngineState,
    archive: Option<Arc<dyn OrderArchive>>,
    observer: Option<Arc<dyn ChangeObserver>>,
    cluster: Option<ClusterHooks>,
}

impl EngineBuilder {
    /// Run as one node of a cluster (issue 16): host only the shards `hooks.placement` marks
    /// local (more with [`Engine::install_partition`]), send messages for the others over
    /// `hooks.link`, and hold every message to another shard until its batch is durable (see
    /// [`crate::cluster`]). The recovered state given to [`EngineBuilder::state`] must hold
    /// only local shards' actors.
    pub fn cluster(mut self, hooks: ClusterHooks) -> Self {
        self.cluster = Some(hooks);
        self
    }

    /// Use this clock (tests pass a [`crate::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Use these journals, one per shard (the persistence crate passes its WAL).
    pub fn journal(mut self, factory: JournalFactory) -> Self {
        self.journal = factory;
        self
    }

    /// Share this storage gate with the journals: while it is raised, writes are refused.
    pub fn storage_gate(mut self, gate: Arc<StorageGate>) -> Self {
        self.gate = gate;
        self
    }

    /// Archive terminal orders after `archive_after_ms` and read them back from `archive`.
    /// Without one (mode `none`), orders stay in memory.
    pub fn archive(mut self, archive: Arc<dyn OrderArchive>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// Tell `observer` about every durable change (subscriptions).
    pub fn observer(mut self, observer: Arc<dyn ChangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Start from recovered state instead of empty.
    pub fn state(mut self, state: EngineState) -> Self {
        self.state = state;
        self
    }

    /// Start the shard threads.
    ///
    /// # Errors
    /// `invalid_config` for a bad configuration or if a thread cannot be spawned.
    pub fn start(mut self) -> EngineResult<Engine> {
        self.config.validate()?;
        let n = self.config.effective_shard_count();
        let clustered = self.cluster.is_some();
        let config = Arc::new(EngineConfig { shard_count: n, clustered, ..self.config });
        let assets = Arc::new(crate::wallet::Assets::new(&config.assets)?);
        // Recovered orders go in at once: size the read models for them (no rehash while
        // installing millions of orders), or for the expected count if larger.
        let read_capacity = (config.live_orders_expected as usize).max(self.state.orders.len());
        let read = Arc::new(ReadModels::with_capacity(read_capacity));
        let (mut external, mut external_rx) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut internal, mut internal_rx) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(config.mailbox_capacity);
            external.push(tx);
            external_rx.push(rx);
            let (tx, rx) = crossbeam_channel::unbounded();
            internal.push(tx);
            internal_rx.push(rx);
        }
        let t_place = std::time::Instant::now();
        let recovered_orders = self.state.orders.len();
        let parts = place_state(std::mem::take(&mut self.state), n);
        let place_ms = t_place.elapsed().as_millis() as u64;
        let exited = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counters: Vec<Arc<ShardCounters>> = (0..n).map(|_| Arc::default()).collect();
        // New ids stay above archived ones too (they are not in the recovered state).
        let id_floor = self.archive.as_ref().and_then(|a| a.highest_id());
        let mut shard_parts = Vec::with_capacity(n);
        for ((id, (ext, int)), initial) in external_rx.into_iter().zip(internal_rx).enumerate().zip(parts) {
            shard_parts.push(ShardParts {
                core: CoreParts {
                    id,
                    config: config.clone(),
                    read: read.clone(),
                    initial,
                    archive_enabled: self.archive.is_some(),
                    archive: self.archive.clone(),
                    counters: counters[id].clone(),
                    assets: assets.clone(),
                },
                clock: self.clock.clone(),
                external: ext,
                internal: int,
                peers: internal.clone(),
                journal: (self.journal)(id),
                observer: self.observer.clone(),
                cluster: self.cluster.clone(),
            });
        }
        let t_install = std::time::Instant::now();
        let mut shards = install_in_parallel(shard_parts)?;
        let install_ms = t_install.elapsed().as_millis() as u64;
        tracing::debug!(recovered_orders, place_ms, install_ms, "engine state placed on shards and installed");
        for shard in shards.iter_mut() {
            if let Some(floor) = id_floor {
                shard.observe_id(floor);
            }
        }
        let mut inner = Inner {
            config,
            shard_count: n,
            clock: self.clock,
            gate: self.gate,
            archive: self.archive,
            external,
            internal,
            read,
            threads: Vec::new(),
            counters,
            exited: exited.clone(),
            assets,
            cluster: self.cluster,
        };
        for (id, shard) in shards.into_iter().enumerate() {
            inner.threads.push(spawn_shard(id, shard, exited.clone())?);
        }
        Ok(Engine { inner: Arc::new(inner) })
    }
}

impl Engine {
    /// An engine with the system clock and no durability (mode `none`).
    ///
    /// # Errors
    /// `invalid_config`.
    pub fn in_memory(config: EngineConfig) -> EngineResult<Engine> {
        Self::builder(config).start()
    }

    /// A builder, to inject a clock or a journal.
    pub fn builder(config: EngineConfig) -> EngineBuilder {
        EngineBuilder {
            config,
            clock: Arc::new(SystemClock),
            journal: Box::new(|_| Box::new(NullJournal::default())),
            gate: Arc::new(StorageGate::default()),
            state: EngineState::default(),
            archive: None,
            observer: None,
            cluster: None,
        }
    }
}

/// Build the shards, each installing its recovered actors (orders into its maps, the read
/// models and the timer queue) on its own thread: a restart with millions of orders uses every
/// core (issue 12: restart of 5 M orders ≤ 8 s).
fn install_in_parallel(parts: Vec<ShardParts>) -> EngineResult<Vec<Shard>> {
    std::thread::scope(|scope| {
        let spawn = |p: ShardParts| {
            let name = format!("surge-install-{}", p.core.id);
            std::thread::Builder::new().name(name).spawn_scoped(scope, move || Shard::new(p))
        };
        let handles: Vec<_> = parts.into_iter().map(spawn).collect::<Result<_, _>>().map_err(|e| {
            EngineError::InvalidConfig { message: format!("cannot spawn a thread to install a shard: {e}") }
        })?;
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::InvalidConfig { message: "a shard panicked while installing its state".into() })
                })
            })
            .collect()
    })
}

/// Place recovered actors by id (SKUs by [`shard_for_key`], orders by the shard in their id),
/// so the shard count may differ from the last run.
pub(crate) fn place_state(state: EngineState, n: usize) -> Vec<EngineState> {
    let mut parts: Vec<EngineState> = (0..n).map(|_| EngineState::default()).collect();
    for (k, v) in state.skus {
        parts[shard_for_key(&k, n)].skus.insert(k, v);
    }
    for (k, v) in state.orders {
        parts[shard_of(k.0, n)].orders.insert(k, v);
    }
    // A wallet lives with its user's orders: on the user's shard.
    for (k, v) in state.wallets.users {
        parts[shard_for_key(&k, n)].wallets.users.insert(k, v);
    }
    parts
}

/// Run `shard` on its own thread; `exited` counts shard threads that have ended.
fn spawn_shard(id: usize, shard: Shard, exited: Arc<AtomicUsize>) -> EngineResult<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("surge-shard-{id}"))
        .spawn(move || {
            // A panic in a shard is a broken invariant: end the process (fail-stop) rather
            // than leave sagas waiting on a dead shard behind a server that looks alive.
            crate::fatal::run_or_fail_stop(&format!("shard-{id}"), || shard.run());
            exited.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .map_err(|e| EngineError::InvalidConfig { message: format!("cannot spawn shard thread: {e}") })
}
