//! Where the gateway's engine comes from: a single node's data directory (`DurableEngine` on its
//! sled WAL), or, with `[cluster]`, a cluster node hosting its share of the partitions and
//! forwarding requests for the others (issue 16; `surge_cluster::node`).

use std::sync::Arc;

use surge_engine::{ChangeObserver, Engine, SystemClock};
use surge_persistence::{DurableEngine, RecoveryStats, WalStats};

use crate::config::FileConfig;
use crate::server::ServerError;

/// The engine's owner.
pub(crate) enum Backend {
    /// One node, its data directory.
    Local(DurableEngine),
    /// A cluster node (no local WAL: its journal is the partition stream), and what answers
    /// requests other nodes forward to it.
    Cluster(surge_cluster::node::Serving, Arc<crate::session::ForwardedHandler>),
}

impl Backend {
    /// Open the data directory (recovering it), or join the cluster: take a first share of the
    /// partitions (replayed from their logs) and serve, forwarding requests for the others. A
    /// cluster node that later loses a lease or is fenced exits with the fail-stop code, so its
    /// supervisor restarts it (it rejoins and takes a share again).
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
            Self::Cluster(node, _) => node.engine(),
        }
    }

    pub(crate) fn recovery(&self) -> RecoveryStats {
        match self {
            Self::Local(db) => db.recovery().clone(),
            Self::Cluster(..) => RecoveryStats::default(),
        }
    }

    /// The local WAL's counters (zeros for a cluster node).
    pub(crate) fn wal_stats(&self) -> Arc<WalStats> {
        match self {
            Self::Local(db) => db.wal_stats().clone(),
            Self::Cluster(..) => Arc::new(WalStats::new(0)),
        }
    }

    /// Cluster mode: where this node forwards requests for partitions hosted elsewhere.
    pub(crate) fn cluster_route(&self) -> Option<crate::session::ClusterRoute> {
        match self {
            Self::Local(_) => None,
            Self::Cluster(node, _) => Some(crate::session::ClusterRoute {
                client: node.client().clone(),
                prefix: node.rpc_prefix().to_owned(),
            }),
        }
    }

    /// Let the cluster node answer forwarded requests through `gateway`.
    pub(crate) fn attach(&self, gateway: &Arc<crate::session::Gateway>) {
        if let Self::Cluster(_, handler) = self {
            handler.attach(gateway.clone());
        }
    }

    pub(crate) fn local(&self) -> Option<&DurableEngine> {
        match self {
            Self::Local(db) => Some(db),
            Self::Cluster(..) => None,
        }
    }

    /// Snapshot and close the data directory, or stop the node and release its leases.
    pub(crate) async fn close(self) -> Result<(), ServerError> {
        match self {
            Self::Local(db) => tokio::task::spawn_blocking(move || db.close())
                .await
                .map_err(|e| ServerError::Close(e.to_string()))?
                .map_err(|e| ServerError::Close(e.to_string())),
            Self::Cluster(node, _) => {
                node.stop().await;
                Ok(())
            }
        }
    }
}

async fn open_cluster(cfg: &FileConfig, observer: Arc<dyn ChangeObserver>) -> Result<Backend, ServerError> {
    let cluster = |e: &dyn std::fmt::Display| ServerError::Cluster(e.to_string());
    let client = async_nats::connect(cfg.cluster.urls()).await.map_err(|e| cluster(&e))?;
    let handler = Arc::new(crate::session::ForwardedHandler::default());
    let rpc: Arc<dyn surge_cluster::rpc::RpcHandler> = handler.clone();
    let node_cfg = surge_cluster::node::NodeConfig { engine: cfg.engine.clone(), rpc: Some(rpc), ..cfg.cluster.node() };
    tracing::info!(node_id = %cfg.cluster.node_id, partitions = cfg.cluster.partitions, "cluster: joining");
    let node = surge_cluster::node::serve_observed(client, node_cfg, Some(observer)).await.map_err(|e| cluster(&e))?;
    tracing::info!(node_id = %cfg.cluster.node_id, hosted = ?node.hosted().await, "cluster: this node serves");
    let mut lost = node.lost_watch();
    tokio::spawn(async move {
        while lost.changed().await.is_ok() {
            if *lost.borrow() {
                surge_engine::fatal::fail_stop(
                    "cluster",
                    &"this node lost a partition lease or was fenced; restart it to rejoin",
                );
            }
        }
    });
    Ok(Backend::Cluster(node, handler))
}
