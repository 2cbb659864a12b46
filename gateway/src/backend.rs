//! Where the gateway's engine comes from: a single node's data directory (`DurableEngine` on its
//! sled WAL), or, with `[cluster]`, a cluster node that serves while it holds every partition's
//! lease (issue 16; `surge_cluster::node`).

use std::sync::Arc;

use surge_engine::{ChangeObserver, Engine, SystemClock};
use surge_persistence::{DurableEngine, RecoveryStats, WalStats};

use crate::config::FileConfig;
use crate::server::ServerError;

/// The engine's owner.
pub(crate) enum Backend {
    /// One node, its data directory.
    Local(DurableEngine),
    /// A cluster node (no local WAL: its journal is the partition stream).
    Cluster(surge_cluster::node::Serving),
}

impl Backend {
    /// Open the data directory (recovering it), or join the cluster: wait until this node holds
    /// every partition's lease (a standby waits here, not ready), then replay and serve. A
    /// cluster node that later loses a lease exits with the fail-stop code, so its supervisor
    /// restarts it as a standby.
    pub(crate) async fn open(cfg: &FileConfig, observer: Arc<dyn ChangeObserver>) -> Result<Self, ServerError> {
        if cfg.cluster.enabled() {
            return open_cluster(cfg, observer).await;
        }
        let (pcfg, ecfg) = (cfg.persistence_with_outbox(), cfg.engine.clone());
        let opened = tokio::task::spawn_blocking(move || {
            DurableEngine::open_observed(pcfg, ecfg, Arc::new(SystemClock), Some(observer), |s| Box::new(s))
        })
        .await
        .map_err(|e| ServerError::Close(format!("recovery task: {e}")))?;
        Ok(Self::Local(opened?))
    }

    pub(crate) fn engine(&self) -> &Engine {
        match self {
            Self::Local(db) => db.engine(),
            Self::Cluster(node) => node.engine(),
        }
    }

    pub(crate) fn recovery(&self) -> RecoveryStats {
        match self {
            Self::Local(db) => db.recovery().clone(),
            Self::Cluster(_) => RecoveryStats::default(),
        }
    }

    /// The local WAL's counters (zeros for a cluster node).
    pub(crate) fn wal_stats(&self) -> Arc<WalStats> {
        match self {
            Self::Local(db) => db.wal_stats().clone(),
            Self::Cluster(_) => Arc::new(WalStats::new(0)),
        }
    }

    pub(crate) fn local(&self) -> Option<&DurableEngine> {
        match self {
            Self::Local(db) => Some(db),
            Self::Cluster(_) => None,
        }
    }

    /// Snapshot and close the data directory, or stop the node and release its leases.
    pub(crate) async fn close(self) -> Result<(), ServerError> {
        match self {
            Self::Local(db) => tokio::task::spawn_blocking(move || db.close())
                .await
                .map_err(|e| ServerError::Close(e.to_string()))?
                .map_err(|e| ServerError::Close(e.to_string())),
            Self::Cluster(node) => {
                node.stop().await;
                Ok(())
            }
        }
    }
}

async fn open_cluster(cfg: &FileConfig, observer: Arc<dyn ChangeObserver>) -> Result<Backend, ServerError> {
    let cluster = |e: &dyn std::fmt::Display| ServerError::Cluster(e.to_string());
    let client = async_nats::connect(cfg.cluster.urls()).await.map_err(|e| cluster(&e))?;
    let js = async_nats::jetstream::new(client);
    let node_cfg = surge_cluster::node::NodeConfig { engine: cfg.engine.clone(), ..cfg.cluster.node() };
    tracing::info!(node_id = %cfg.cluster.node_id, partitions = cfg.cluster.partitions, "cluster: claiming the partitions (standing by while another node holds them)");
    let node = surge_cluster::node::serve_observed(&js, node_cfg, Some(observer)).await.map_err(|e| cluster(&e))?;
    tracing::info!(node_id = %cfg.cluster.node_id, "cluster: this node holds every partition and serves");
    let mut lost = node.lost_watch();
    tokio::spawn(async move {
        while lost.changed().await.is_ok() {
            if *lost.borrow() {
                surge_engine::fatal::fail_stop("cluster", &"this node lost a partition lease; restart it as a standby");
            }
        }
    });
    Ok(Backend::Cluster(node))
}
