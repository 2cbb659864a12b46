//! A cluster node (issue 16): hosts a fair share of the partitions on its engine, takes over
//! the partitions of nodes that die, gives partitions back gradually when nodes join, and
//! carries messages between partitions on different nodes.
//!
//! # Life of a partition on a node
//! *Acquire* (`control.rs`): claim the lease ([`crate::lease`]), open the partition's journal
//! (its fence, [`Journals::open`]), replay its log and reconcile it on its own, journal the
//! repairs, install it in the engine ([`Engine::install_partition`]), then receive its peer
//! messages and forwarded requests. *Release*: stop receiving, evict it from the engine, close
//! its journal (what was submitted is appended first), give the lease up.
//!
//! # The control loop
//! Every `control_ms`: announce this node (a heartbeat key), renew its leases (every
//! `lease_ms / 3`), read who holds each partition ([`Serving::owners`]), then rebalance: with
//! `L` live nodes each aims at `ceil(P / L)` partitions; a node under its share claims free or
//! expired partitions, a node over it releases one per round while another live node is under
//! `floor(P / L)`.
//!
//! # Failure
//! A node that loses a lease, cannot renew before its lease runs out, or whose journal is
//! fenced, stops its engine at once ([`Serving::lost_watch`]; `surge serve` then fail-stops and
//! its supervisor restarts it).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use surge_cluster::node::{serve, NodeConfig};
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let node = serve(client, NodeConfig::new("node-a", 4)).await?;
//! let engine = node.engine().clone();
//! # let _ = engine;
//! node.stop().await; // gives every partition up: the others take them at once
//! # Ok(()) }
//! ```

mod control;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use surge_engine::cluster::{ClusterHooks, Placement};
use surge_engine::{Engine, EngineConfig, EngineError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::journal::Journals;
use crate::lease::{Lease, LeaseConfig, LeaseError, Leases};
use crate::partition_log::{LogError, PartitionLogConfig, PartitionLogs};
use crate::peer::{NatsLink, PEER_PREFIX_DEFAULT};

pub use control::RpcHandler;

/// What a node needs.
#[derive(Clone)]
pub struct NodeConfig {
    /// Partitions (= the engine's shards), fixed when the cluster is created.
    pub partitions: u32,
    /// Leases (its `node_id` is this node's).
    pub lease: LeaseConfig,
    /// The partitions' stream.
    pub log: PartitionLogConfig,
    /// The engine (its `shard_count` is set to `partitions`, its `node_id` from the
    /// incarnation).
    pub engine: EngineConfig,
    /// Subject prefix of messages between partitions.
    pub peer_prefix: String,
    /// Subject prefix of forwarded requests (`<prefix>.<partition>`).
    pub rpc_prefix: String,
    /// Answers requests forwarded to this node's partitions (the gateway's); `None`: none.
    pub rpc: Option<Arc<dyn RpcHandler>>,
    /// How often the control loop runs (ms). Default `min(lease_ms / 6, 500)`.
    pub control_ms: u64,
    /// Snapshot a hosted partition once this many messages were appended to it since its last
    /// snapshot (or since this node took it over), and trim its subject behind the previous
    /// one ([`crate::snapshot`]). Default 10,000.
    pub snapshot_every_messages: u64,
}

impl NodeConfig {
    /// Defaults for `node_id` and `partitions`.
    pub fn new(node_id: &str, partitions: u32) -> Self {
        let lease = LeaseConfig::new(node_id);
        let control_ms = (lease.lease_ms / 6).clamp(10, 500);
        Self {
            partitions,
            lease,
            log: PartitionLogConfig::default(),
            engine: EngineConfig::default(),
            peer_prefix: PEER_PREFIX_DEFAULT.into(),
            rpc_prefix: control::RPC_PREFIX_DEFAULT.into(),
            rpc: None,
            control_ms,
            snapshot_every_messages: 10_000,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The lease bucket failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The partition logs failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The engine refused to start.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A partition this node hosts.
struct Held {
    lease: Lease,
    /// Receives its peer messages and forwarded requests.
    receivers: Vec<JoinHandle<()>>,
    /// The journal's append count at the last snapshot (or the takeover).
    snapshot_at: u64,
    /// A snapshot of it is being made.
    compacting: Option<JoinHandle<()>>,
}

/// Everything the control loop and the handle share.
struct Shared {
    engine: Engine,
    leases: Leases,
    logs: PartitionLogs,
    snaps: crate::snapshot::Snapshots,
    journals: Journals,
    client: async_nats::Client,
    cfg: NodeConfig,
    held: tokio::sync::Mutex<BTreeMap<u32, Held>>,
    /// Each partition's holder as last read (`None`: free).
    owners: std::sync::RwLock<Vec<Option<String>>>,
    lost: watch::Sender<bool>,
}

/// A running node.
pub struct Serving {
    shared: Arc<Shared>,
    control: JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl Serving {
    /// The engine: hosts this node's partitions; answers `unavailable` for the others.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.cfg.lease.node_id
    }

    /// Each partition's holder as last read by the control loop (`None`: free or unknown).
    pub fn owners(&self) -> Vec<Option<String>> {
        self.shared.owners.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The partitions this node hosts.
    pub async fn hosted(&self) -> Vec<u32> {
        self.shared.held.lock().await.keys().copied().collect()
    }

    /// The NATS client (forwarding requests to other nodes).
    pub fn client(&self) -> &async_nats::Client {
        &self.shared.client
    }

    /// The subject prefix of forwarded requests.
    pub fn rpc_prefix(&self) -> &str {
        &self.shared.cfg.rpc_prefix
    }

    /// Whether the node lost a lease (and stopped its engine).
    pub fn lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Changes to `true` when the node loses a lease (for a supervisor to act on).
    pub fn lost_watch(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Stop: give every partition up (the others take them at once), leave, stop the engine.
    pub async fn stop(self) {
        self.control.abort();
        let parts: Vec<u32> = self.shared.held.lock().await.keys().copied().collect();
        for p in parts {
            control::release(&self.shared, p).await;
        }
        let _ = self.shared.leases.leave().await;
        shutdown(&self.shared.engine).await;
    }

    /// Stop as a crash would: no release, the leases expire on their own (tests of failover).
    pub async fn crash(self) {
        self.control.abort();
        for (_, h) in self.shared.held.lock().await.iter() {
            for r in &h.receivers {
                r.abort();
            }
        }
        shutdown(&self.shared.engine).await;
    }
}

/// How long a starting node retries opening the lease bucket and the stream: a JetStream
/// cluster that is still forming answers "no suitable peers" for a while.
pub const OPEN_RETRY_MS: u64 = 30_000;

/// The lease bucket and the partition stream, retried while the JetStream cluster forms.
async fn open_stores(
    js: &async_nats::jetstream::Context,
    cfg: &NodeConfig,
) -> Result<(Leases, PartitionLogs, crate::snapshot::Snapshots), NodeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(OPEN_RETRY_MS);
    loop {
        let opened = async {
            let leases = Leases::open(js, cfg.lease.clone()).await?;
            leases.pin_partitions(cfg.partitions).await?;
            let logs = PartitionLogs::open(js, cfg.log.clone()).await?;
            let snaps = crate::snapshot::Snapshots::open(js, cfg.log.replicas).await?;
            Ok::<_, NodeError>((leases, logs, snaps))
        }
        .await;
        match opened {
            Ok(stores) => return Ok(stores),
            Err(NodeError::Lease(LeaseError::Config(_))) => return opened,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn shutdown(engine: &Engine) {
    let e = engine.clone();
    let _ = tokio::task::spawn_blocking(move || e.shutdown(Duration::from_secs(5))).await;
}

/// Start a node: join, take a first share of the partitions (one control round), and keep
/// rebalancing in the background. Serves at once: requests for partitions hosted elsewhere are
/// answered `unavailable` by the engine (the gateway forwards them first).
///
/// # Errors
/// [`NodeError`]: NATS failed, the engine would not start.
pub async fn serve(client: async_nats::Client, cfg: NodeConfig) -> Result<Serving, NodeError> {
    serve_observed(client, cfg, None).await
}

/// [`serve`], telling `observer` about every durable change (the gateway's subscriptions).
///
/// # Errors
/// As [`serve`].
pub async fn serve_observed(
    client: async_nats::Client,
    cfg: NodeConfig,
    observer: Option<Arc<dyn surge_engine::ChangeObserver>>,
) -> Result<Serving, NodeError> {
    let js = async_nats::jetstream::new(client.clone());
    let (leases, logs, snaps) = open_stores(&js, &cfg).await?;
    let journals = Journals::new(logs.clone());
    let n = cfg.partitions as usize;
    let hooks = ClusterHooks {
        placement: Arc::new(Placement::new(n, false)),
        link: NatsLink::start(client.clone(), &cfg.peer_prefix, cfg.engine.saga_timeout_ms),
    };
    // Order ids carry a node id (10 bits): a new owner skips past the ids it replays, and the
    // incarnation's bits make it unlikely to mint one its predecessor used for a saga that
    // never became durable (two incarnations 1,024 apart share them; the clock moved on too).
    let node_id = u16::try_from(leases.incarnation() % 1024).unwrap_or(0);
    let engine_cfg = EngineConfig { shard_count: n, node_id, ..cfg.engine.clone() };
    let builder = Engine::builder(engine_cfg).journal(journals.factory()).cluster(hooks);
    let engine = match observer {
        Some(o) => builder.observer(o),
        None => builder,
    }
    .start()?;
    let (lost_tx, lost) = watch::channel(false);
    let shared = Arc::new(Shared {
        engine,
        leases,
        logs,
        snaps,
        journals,
        client,
        owners: std::sync::RwLock::new(vec![None; n]),
        held: tokio::sync::Mutex::new(BTreeMap::new()),
        cfg,
        lost: lost_tx,
    });
    let mut rounds = control::Rounds::default();
    control::round(&shared, &mut rounds).await;
    let control = tokio::spawn(control::run(shared.clone(), rounds));
    Ok(Serving { shared, control, lost })
}
