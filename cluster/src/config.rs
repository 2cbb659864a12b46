//! `[cluster]`: the cluster a node joins (issue 16). Off while `nats_urls` is empty; empty
//! strings mean "not set", so every key has a `SURGE_CLUSTER_<KEY>` environment override
//! (`SURGE_CLUSTER_NATS_URLS`, `SURGE_CLUSTER_NODE_ID`, …).

use serde::{Deserialize, Serialize};

use crate::lease::LeaseConfig;
use crate::node::NodeConfig;
use crate::partition_log::PartitionLogConfig;

/// The `[cluster]` table.
///
/// ```
/// use surge_cluster::ClusterConfig;
/// let cfg = ClusterConfig { nats_urls: "nats://10.0.0.1:4222,nats://10.0.0.2:4222".into(), node_id: "node-1".into(), ..Default::default() };
/// assert!(cfg.enabled());
/// cfg.validate().unwrap();
/// assert_eq!(cfg.urls(), ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
/// assert_eq!(cfg.partitions, 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS servers of the JetStream cluster, comma-separated. Empty: a single node with its sled
    /// WAL (default). Env `SURGE_CLUSTER_NATS_URLS`, flag `--cluster-nats-urls`.
    pub nats_urls: String,
    /// This node's id (required in a cluster): ASCII letters, digits, `-`, `_`. Env
    /// `SURGE_CLUSTER_NODE_ID`, flag `--node-id`.
    pub node_id: String,
    /// Partitions (the engine's shards), fixed when the cluster is created. Default 64.
    pub partitions: u32,
    /// Replicas of the partition stream and the lease bucket (3: one NATS server may fail).
    pub replicas: usize,
    /// A lease whose revision stays unchanged this long (ms) is taken over. Default 15,000 (it
    /// must outlast a NATS Raft election, 4–9 s: see [`LeaseConfig::lease_ms`]).
    pub lease_ms: u64,
    /// A holder stops serving this long (ms) before its lease could be taken. Default 2,000.
    pub safety_ms: u64,
    /// Snapshot a partition into the object store after this many appends, and trim its
    /// subject behind the previous snapshot. Default 10,000.
    pub snapshot_every_messages: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats_urls: String::new(),
            node_id: String::new(),
            partitions: 64,
            replicas: 3,
            lease_ms: 15_000,
            safety_ms: 2_000,
            snapshot_every_messages: 10_000,
        }
    }
}

impl ClusterConfig {
    /// A cluster is configured (`nats_urls` is set).
    pub fn enabled(&self) -> bool {
        !self.nats_urls.trim().is_empty()
    }

    /// The NATS URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nats_urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
    }

    /// Check every value (when the cluster is on).
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if !(1..=64).contains(&self.partitions) {
            return Err(format!("cluster.partitions {}: 1 to 64", self.partitions));
        }
        self.node().lease.validate().map_err(|e| format!("cluster: {e}"))
    }

    /// The node's settings.
    pub fn node(&self) -> NodeConfig {
        let lease = LeaseConfig {
            replicas: self.replicas,
            lease_ms: self.lease_ms,
            safety_ms: self.safety_ms,
            ..LeaseConfig::new(&self.node_id)
        };
        let log = PartitionLogConfig { replicas: self.replicas, ..PartitionLogConfig::default() };
        let control_ms = (self.lease_ms / 6).clamp(10, 500);
        NodeConfig {
            lease,
            log,
            control_ms,
            snapshot_every_messages: self.snapshot_every_messages,
            ..NodeConfig::new(&self.node_id, self.partitions)
        }
    }
}
