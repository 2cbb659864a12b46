//! # surge-cluster
//!
//! Surge nodes acting as one engine on a NATS JetStream cluster (issue 16). Replication,
//! ordering and leader election come from JetStream (Raft inside), never from our own code.
//!
//! Built so far:
//! * [`lease`]: partition ownership as leases in a replicated KV bucket, claimed and renewed by
//!   revision compare-and-set, expired by the claimant's monotonic clock (no wall clock is
//!   compared across machines), with an epoch as fencing token.
//!
//! Still to come (see `issues show 16`): each partition's journal on a JetStream subject with
//! `Nats-Expected-Last-Subject-Sequence`, snapshots in an object store, failover (claim, load,
//! replay, reconcile), rebalancing, forwarding and cross-partition sagas over NATS.

#![deny(missing_docs)]

pub mod lease;
