//! A node that serves the engine while it holds every partition's lease (issue 16, first
//! shape: one active node, the others standing by to take over).
//!
//! [`serve`] claims all partitions (waiting out a live holder's leases), replays the partition
//! logs, journals recovery's repairs, starts the engine on the fenced journal, and renews the
//! leases every `lease_ms / 3` in the background. A node that loses a lease, or cannot renew
//! before [`Lease::is_valid`] runs out, stops its engine at once; its late appends would be
//! fenced anyway. Spreading partitions over several active nodes needs the saga messages
//! between partitions to travel over NATS: not yet.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use surge_cluster::node::{serve, NodeConfig};
//! let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await?);
//! let node = serve(&js, NodeConfig::new("node-a", 4)).await?; // waits while another node serves
//! let engine = node.engine().clone();
//! # let _ = engine;
//! node.stop().await; // releases the leases: a standby takes over at once
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use surge_engine::{Engine, EngineConfig, EngineError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::journal;
use crate::lease::{Lease, LeaseConfig, LeaseError, Leases};
use crate::partition_log::{LogError, PartitionLogConfig, PartitionLogs};

/// What a node needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Partitions (= the engine's shards), fixed when the cluster is created.
    pub partitions: u32,
    /// Leases (its `node_id` is this node's).
    pub lease: LeaseConfig,
    /// The partitions' stream.
    pub log: PartitionLogConfig,
    /// The engine (its `shard_count` is set to `partitions`).
    pub engine: EngineConfig,
}

impl NodeConfig {
    /// Defaults for `node_id` and `partitions`.
    pub fn new(node_id: &str, partitions: u32) -> Self {
        Self {
            partitions,
            lease: LeaseConfig::new(node_id),
            log: PartitionLogConfig::default(),
            engine: EngineConfig::default(),
        }
    }
}

/// Why a node could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The lease bucket failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The partition logs failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The engine refused to start, or recovery's repairs could not be journaled.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A node serving the engine.
pub struct Serving {
    engine: Engine,
    leases: Arc<Leases>,
    held: Arc<tokio::sync::Mutex<Vec<Lease>>>,
    renewer: JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl Serving {
    /// The engine (answers `shutting_down` once the node stopped or lost its leases).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether the node lost a lease (and stopped its engine).
    pub fn lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Changes to `true` when the node loses a lease (for a supervisor to act on).
    pub fn lost_watch(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Stop serving and release the leases, so a standby takes over without waiting.
    pub async fn stop(self) {
        self.renewer.abort();
        let engine = self.engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.shutdown(Duration::from_secs(5))).await;
        for lease in self.held.lock().await.drain(..) {
            let _ = self.leases.release(lease).await;
        }
    }

    /// Stop as a crash would: no release, the leases expire on their own (for tests of failover).
    pub async fn crash(self) {
        self.renewer.abort();
        let engine = self.engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.shutdown(Duration::from_secs(5))).await;
    }
}

/// Claim every partition, recover and serve (see the module docs). Waits as long as another
/// node holds a lease.
///
/// # Errors
/// [`NodeError`]: NATS failed, a partition log does not decode, the engine would not start.
pub async fn serve(js: &async_nats::jetstream::Context, cfg: NodeConfig) -> Result<Serving, NodeError> {
    serve_observed(js, cfg, None).await
}

/// [`serve`], telling `observer` about every durable change (the gateway's subscriptions).
///
/// # Errors
/// As [`serve`].
pub async fn serve_observed(
    js: &async_nats::jetstream::Context,
    cfg: NodeConfig,
    observer: Option<Arc<dyn surge_engine::ChangeObserver>>,
) -> Result<Serving, NodeError> {
    let leases = Arc::new(Leases::open(js, cfg.lease.clone()).await?);
    let held = claim_all(&leases, cfg.partitions).await?;
    let logs = PartitionLogs::open(js, cfg.log.clone()).await?;
    let shards = cfg.partitions as usize;
    // Fence every partition first, then replay: nothing a deposed owner appends can land after
    // the fence, so the replay sees everything that will ever be acknowledged before it.
    let mut factory = journal::start(&logs, shards, &tokio::runtime::Handle::current()).await?;
    let (state, fixes) = journal::replay(&logs, shards).await?;
    if !fixes.is_empty() {
        // Recovery's repairs are durable before anything is served, as on a single node.
        let (tx, rx) = tokio::sync::oneshot::channel();
        factory(0).submit(0, fixes, Box::new(move |r| drop(tx.send(r))));
        rx.await.map_err(|_| EngineError::ShuttingDown)??;
    }
    let engine_cfg = EngineConfig { shard_count: shards, ..cfg.engine.clone() };
    let builder = Engine::builder(engine_cfg).state(state).journal(factory);
    let engine = match observer {
        Some(o) => builder.observer(o),
        None => builder,
    }
    .start()?;
    let held = Arc::new(tokio::sync::Mutex::new(held));
    let (lost_tx, lost) = watch::channel(false);
    let renewer = tokio::spawn(renew(leases.clone(), held.clone(), engine.clone(), cfg.lease.lease_ms, lost_tx));
    Ok(Serving { engine, leases, held, renewer, lost })
}

/// Claim partitions `0..n`: each pass tries them all (so their expiry clocks run together);
/// short of all, it releases what it got (two standbys must not split them) and waits.
async fn claim_all(leases: &Leases, n: u32) -> Result<Vec<Lease>, LeaseError> {
    loop {
        let (mut held, mut wait_ms) = (Vec::new(), 0u64);
        for p in 0..n {
            match leases.claim(p).await {
                Ok(l) => held.push(l),
                Err(LeaseError::Held { retry_after_ms, .. }) => wait_ms = wait_ms.max(retry_after_ms),
                Err(LeaseError::Lost { .. }) => wait_ms = wait_ms.max(50),
                Err(e) => return Err(e),
            }
        }
        if held.len() == n as usize {
            return Ok(held);
        }
        for l in held {
            let _ = leases.release(l).await;
        }
        // A little jitter keeps two standbys from racing in step forever.
        let jitter = u64::from(std::process::id() % 50);
        tokio::time::sleep(Duration::from_millis(wait_ms.clamp(20, 1_000) + jitter)).await;
    }
}

/// Renew every lease each `lease_ms / 3`; on a loss, or a renewal late enough that a lease is
/// no longer valid, stop the engine.
async fn renew(
    leases: Arc<Leases>,
    held: Arc<tokio::sync::Mutex<Vec<Lease>>>,
    engine: Engine,
    lease_ms: u64,
    lost: watch::Sender<bool>,
) {
    let every = Duration::from_millis((lease_ms / 3).max(1));
    // After a failed renewal (a NATS server died, the client reconnects), retry soon.
    let soon = Duration::from_millis((lease_ms / 12).max(1));
    let mut next = every;
    loop {
        tokio::time::sleep(next).await;
        next = every;
        let mut held = held.lock().await;
        let mut ok = true;
        for lease in held.iter_mut() {
            match leases.renew(lease).await {
                Ok(()) => {}
                Err(LeaseError::Store(e)) if lease.is_valid() => {
                    tracing::warn!(error = %e, partition = lease.partition, "lease renewal failed; retrying soon");
                    next = soon;
                }
                Err(e) => {
                    tracing::error!(error = %e, partition = lease.partition, "lease lost: this node stops serving");
                    ok = false;
                    break;
                }
            }
        }
        if !ok || held.iter().any(|l| !l.is_valid()) {
            let _ = lost.send(true);
            let e = engine.clone();
            let _ = tokio::task::spawn_blocking(move || e.shutdown(Duration::from_secs(5))).await;
            return;
        }
    }
}
