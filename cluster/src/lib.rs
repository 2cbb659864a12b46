//! # surge-cluster
//!
//! Surge nodes acting as one engine on a NATS JetStream cluster (issue 16). Replication,
//! ordering and leader election come from JetStream (Raft inside), never from our own code.
//!
//! Built so far:
//! * [`lease`]: partition ownership as leases in a replicated KV bucket, claimed and renewed by
//!   revision compare-and-set, expired by the claimant's monotonic clock (no wall clock is
//!   compared across machines), with an epoch as fencing token.
//! * [`partition_log`]: each partition's journal as a subject of one replicated stream, one
//!   message per group commit, appended with `Nats-Expected-Last-Subject-Sequence` (a deposed
//!   owner's append is refused), and read back in order for recovery.
//!
//! * [`journal`]: the engine's `Journal` over the partition logs (each shard a partition, each
//!   group commit a round of fenced appends, rounds in order) and [`journal::replay`].
//!
//! * [`node`]: a node that serves the engine while it holds every partition's lease (one
//!   active node, standbys that take over: claim, replay, reconcile, serve).
//!
//! Still to come (see `issues show 16`): partitions spread over several active nodes (saga
//! messages between partitions over NATS), snapshots in an object store, failover (claim, load,
//! replay, reconcile), rebalancing, forwarding and cross-partition sagas over NATS.

#![deny(missing_docs)]

pub use config::ClusterConfig;

pub mod config;
pub mod journal;
pub mod lease;
pub mod node;
pub mod partition_log;
