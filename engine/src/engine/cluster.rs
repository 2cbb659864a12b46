//! A clustered engine's partition moves and incoming messages (issue 16): what
//! `surge-cluster` calls as a node takes partitions over, gives them up, and receives messages
//! for its shards. See [`crate::cluster`].

use crate::cluster::PeerMsg;
use crate::error::{EngineError, EngineResult};
use crate::shard::ShardMsg;
use crate::state::EngineState;

use super::Engine;

impl Engine {
    /// Whether this engine is a cluster node, and whether it hosts `shard`.
    pub fn hosts(&self, shard: usize) -> bool {
        self.inner.cluster.as_ref().is_none_or(|c| c.placement.is_local(shard))
    }

    /// The shard (= partition) a user's requests go to: `create_order`, wallets, listings.
    pub fn user_shard(&self, user_id: &str) -> usize {
        crate::routing::shard_for_key(user_id, self.inner.shard_count)
    }

    /// The shard (= partition) of a SKU.
    pub fn sku_shard_of(&self, sku_id: &str) -> usize {
        crate::routing::shard_for_key(sku_id, self.inner.shard_count)
    }

    /// The shard (= partition) of an order (its id says).
    pub fn order_shard(&self, order_id: crate::domain::OrderId) -> usize {
        crate::snowflake::shard_of(order_id.0, self.inner.shard_count)
    }

    /// Hand a message from another node to shard `shard` (hosted here or not: one for a shard
    /// not hosted is passed on over the link).
    ///
    /// # Errors
    /// `invalid_request` for a shard out of range; `shutting_down`.
    pub fn deliver(&self, shard: usize, msg: PeerMsg) -> EngineResult<()> {
        let tx = self.inner.internal.get(shard).ok_or_else(|| EngineError::invalid(format!("no shard {shard}")))?;
        tx.send(msg.into_shard()).map_err(|_| EngineError::ShuttingDown)
    }

    /// Take partition `shard` over with its recovered `state` (its actors only; reconciled as
    /// [`EngineState::reconcile_partition`] does, its repairs journaled first). Blocks until the
    /// shard hosts it.
    ///
    /// # Errors
    /// `invalid_request` on a single-node engine, for a shard out of range, or one hosted
    /// already; `shutting_down`.
    pub fn install_partition(&self, shard: usize, state: EngineState) -> EngineResult<()> {
        let tx = self.inner.internal.get(shard).ok_or_else(|| EngineError::invalid(format!("no shard {shard}")))?;
        let (ack, done) = oneshot::channel();
        tx.send(ShardMsg::Install(Box::new(state), ack)).map_err(|_| EngineError::ShuttingDown)?;
        done.recv().map_err(|_| EngineError::ShuttingDown)?
    }

    /// Stop hosting partition `shard`: requests waiting on it are answered `unavailable`, its
    /// state is dropped. Blocks until done. Give its lease up only after this returns.
    ///
    /// # Errors
    /// `invalid_request` for a shard out of range; `shutting_down`.
    pub fn evict_partition(&self, shard: usize) -> EngineResult<()> {
        let tx = self.inner.internal.get(shard).ok_or_else(|| EngineError::invalid(format!("no shard {shard}")))?;
        let (ack, done) = oneshot::channel();
        tx.send(ShardMsg::Evict(ack)).map_err(|_| EngineError::ShuttingDown)?;
        done.recv().map_err(|_| EngineError::ShuttingDown)
    }
}
