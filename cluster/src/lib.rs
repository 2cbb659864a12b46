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
//! * [`journal`]: the engine's `Journal` over the partition logs (each shard a partition, one
//!   appender per open partition, each group commit one fenced append, a fence first),
//!   [`journal::replay_partition`] (one partition alone, reconciled on its own).
//! * [`node`]: a node hosting a fair share of the partitions: control loop (heartbeat,
//!   renewals, owners, rebalancing), takeover (claim, fence, replay, reconcile, install) and
//!   hand-over (evict, close, release).
//! * [`peer`]: messages between partitions on different nodes over NATS request/reply,
//!   retried up to `saga_timeout_ms`; [`rpc`]: requests forwarded to the node hosting their
//!   partition.
//! * [`status`]: `surge cluster status`, read without claiming anything: each partition's
//!   owner, epoch, lease age, last stream sequence, message count and last append's age, and
//!   the nodes seen.
//!
//! * [`snapshot`]: partition snapshots in a JetStream object store (the log prefix replayed,
//!   two generations kept), and the subject trimmed behind them.

#![deny(missing_docs)]

pub use config::ClusterConfig;

pub mod config;
pub mod journal;
pub mod lease;
pub mod node;
pub mod partition_log;
pub mod peer;
pub mod rpc;
pub mod snapshot;
pub mod status;
