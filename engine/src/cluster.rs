//! Hooks for running an engine's shards across several nodes (issue 16): which shards this
//! node hosts ([`Placement`]), the port that carries messages to shards hosted elsewhere
//! ([`PeerLink`]), and those messages in a form that crosses the network ([`PeerMsg`]).
//!
//! The engine knows nothing about NATS: `surge-cluster` implements [`PeerLink`] and calls
//! [`crate::Engine::deliver`] with what arrives for this node's shards.
//!
//! # Rules a clustered engine follows (and a single node does not need)
//! * **A message to another shard leaves only once the batch that sent it is durable.** Then no
//!   shard acts on something its sender could still lose in a crash: a `Reserved` answer is
//!   sent only once the reservation is in the SKU's partition log, so a durable order always
//!   has its durable reservations, even when the two partitions fail over to different nodes.
//! * **A shard this node does not host** answers requests that reach it anyway (the gateway
//!   forwards by partition; a race with a move gets here) with `unavailable` and a
//!   `retry_after_ms`, and passes messages from other shards on to the link.
//! * **Answers are deduplicated** by line item, so a message delivered twice changes nothing.
//!
//! ```
//! use surge_engine::cluster::Placement;
//! let placement = Placement::new(4, false); // a node that hosts none of 4 shards yet
//! assert!(!placement.is_local(2));
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{OrderId, SkuId, UserId};
use crate::error::EngineError;
use crate::shard::{Claim, OrderMsg, ShardMsg, SkuMsg};
use crate::sku::Grant;

/// Which shards (partitions) this node hosts. Shared by the engine's shards and its owner.
#[derive(Debug)]
pub struct Placement {
    local: Vec<AtomicBool>,
}

impl Placement {
    /// `shards` shards, all hosted here (`all_local`) or none.
    pub fn new(shards: usize, all_local: bool) -> Self {
        Self { local: (0..shards).map(|_| AtomicBool::new(all_local)).collect() }
    }

    /// Whether shard `shard` is hosted on this node.
    pub fn is_local(&self, shard: usize) -> bool {
        self.local.get(shard).is_some_and(|b| b.load(Ordering::Acquire))
    }

    /// The shards hosted here.
    pub fn local_shards(&self) -> Vec<usize> {
        (0..self.local.len()).filter(|s| self.is_local(*s)).collect()
    }

    pub(crate) fn set(&self, shard: usize, local: bool) {
        if let Some(b) = self.local.get(shard) {
            b.store(local, Ordering::Release);
        }
    }
}

/// Carries messages to shards hosted on other nodes. Must not block the calling shard thread
/// (queue and send in the background), and should retry until the message is delivered or its
/// destination is known to be gone: the engine deduplicates, and gives up a saga step that
/// waits longer than `saga_timeout_ms` ([`crate::EngineConfig::saga_timeout_ms`]).
pub trait PeerLink: Send + Sync {
    /// Send `msg` to shard `shard`, wherever it is hosted.
    fn send(&self, shard: usize, msg: PeerMsg);
}

/// What a clustered engine is built with ([`crate::EngineBuilder::cluster`]).
#[derive(Clone)]
pub struct ClusterHooks {
    /// The shards hosted here; [`crate::Engine::install_partition`] and
    /// [`crate::Engine::evict_partition`] change it.
    pub placement: Arc<Placement>,
    /// Messages to shards hosted elsewhere.
    pub link: Arc<dyn PeerLink>,
}

/// A message from one shard to another: serde-serializable (the link picks the encoding; the
/// engine knows no wire format). Its contents are the engine's own business.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerMsg(Wire);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
enum Wire {
    Reserve { sku: String, order: u64, user: String, qty: u32, item: u8, reply: u32 },
    Confirm { sku: String, order: u64, item: u8, step: u32, reply: u32 },
    Release { sku: String, order: u64, item: u8, step: u32, reply: u32 },
    Restock { sku: String, order: u64, item: u8, step: u32, reply: u32 },
    Forget { sku: String, order: u64 },
    Remember { sku: String, order: u64, user: String, qty: u32 },
    Reserved { order: u64, item: u8, grant: Option<(String, rust_decimal::Decimal)>, rejection: Option<EngineError> },
    StockDone { order: u64, item: u8, step: u32 },
    Verify { order: u64, sku: String, reply: u32 },
    Verdict { sku: String, order: u64, claim: Claim },
}

impl PeerMsg {
    /// The message for the network, or the message back if it cannot leave its node (one with a
    /// caller's reply channel: never sent between shards).
    pub(crate) fn from_shard(msg: ShardMsg) -> Result<Self, ShardMsg> {
        let wire = match msg {
            ShardMsg::Sku(sku_id, m) => Self::from_sku(sku_id, m)?,
            ShardMsg::Order(order_id, OrderMsg::Reserved { item, result }) => {
                let (grant, rejection) = match result {
                    Ok(g) => (Some((g.name.to_string(), g.unit_price)), None),
                    Err(e) => (None, Some(e)),
                };
                Wire::Reserved { order: order_id.0, item, grant, rejection }
            }
            ShardMsg::Order(order_id, OrderMsg::StockDone { item, step }) => {
                Wire::StockDone { order: order_id.0, item, step }
            }
            ShardMsg::Order(order_id, OrderMsg::Verify { sku_id, reply_shard }) => Wire::Verify {
                order: order_id.0,
                sku: sku_id.to_string(),
                reply: u32::try_from(reply_shard).unwrap_or(u32::MAX),
            },
            other => return Err(other),
        };
        Ok(Self(wire))
    }

    fn from_sku(sku_id: SkuId, m: SkuMsg) -> Result<Wire, ShardMsg> {
        let sku = sku_id.to_string();
        let reply = |r: usize| u32::try_from(r).unwrap_or(u32::MAX);
        Ok(match m {
            SkuMsg::Reserve { order_id, user_id, qty, item, reply_shard } => Wire::Reserve {
                sku,
                order: order_id.0,
                user: user_id.to_string(),
                qty,
                item,
                reply: reply(reply_shard),
            },
            SkuMsg::Confirm { order_id, item, step, reply_shard } => {
                Wire::Confirm { sku, order: order_id.0, item, step, reply: reply(reply_shard) }
            }
            SkuMsg::Release { order_id, item, step, reply_shard } => {
                Wire::Release { sku, order: order_id.0, item, step, reply: reply(reply_shard) }
            }
            SkuMsg::Restock { order_id, item, step, reply_shard } => {
                Wire::Restock { sku, order: order_id.0, item, step, reply: reply(reply_shard) }
            }
            SkuMsg::Forget { order_id } => Wire::Forget { sku, order: order_id.0 },
            SkuMsg::Verdict { order_id, claim } => Wire::Verdict { sku, order: order_id.0, claim },
            SkuMsg::Remember { order_id, user_id, qty } => {
                Wire::Remember { sku, order: order_id.0, user: user_id.to_string(), qty }
            }
            other => return Err(ShardMsg::Sku(sku_id, other)),
        })
    }

    /// The message as its destination shard handles it.
    pub(crate) fn into_shard(self) -> ShardMsg {
        let sku = |s: String| -> SkuId { Arc::from(s) };
        let user = |u: String| -> UserId { Arc::from(u) };
        let shard = |r: u32| r as usize;
        match self.0 {
            Wire::Reserve { sku: s, order, user: u, qty, item, reply } => ShardMsg::Sku(
                sku(s),
                SkuMsg::Reserve { order_id: OrderId(order), user_id: user(u), qty, item, reply_shard: shard(reply) },
            ),
            Wire::Confirm { sku: s, order, item, step, reply } => ShardMsg::Sku(
                sku(s),
                SkuMsg::Confirm { order_id: OrderId(order), item, step, reply_shard: shard(reply) },
            ),
            Wire::Release { sku: s, order, item, step, reply } => ShardMsg::Sku(
                sku(s),
                SkuMsg::Release { order_id: OrderId(order), item, step, reply_shard: shard(reply) },
            ),
            Wire::Restock { sku: s, order, item, step, reply } => ShardMsg::Sku(
                sku(s),
                SkuMsg::Restock { order_id: OrderId(order), item, step, reply_shard: shard(reply) },
            ),
            Wire::Forget { sku: s, order } => ShardMsg::Sku(sku(s), SkuMsg::Forget { order_id: OrderId(order) }),
            Wire::Remember { sku: s, order, user: u, qty } => {
                ShardMsg::Sku(sku(s), SkuMsg::Remember { order_id: OrderId(order), user_id: user(u), qty })
            }
            Wire::Reserved { order, item, grant, rejection } => {
                let result = match (grant, rejection) {
                    (Some((name, unit_price)), None) => Ok(Grant { name: Arc::from(name), unit_price }),
                    (_, Some(e)) => Err(e),
                    (None, None) => Err(EngineError::invalid("a reserve answer with neither grant nor rejection")),
                };
                ShardMsg::Order(OrderId(order), OrderMsg::Reserved { item, result })
            }
            Wire::StockDone { order, item, step } => {
                ShardMsg::Order(OrderId(order), OrderMsg::StockDone { item, step })
            }
            Wire::Verify { order, sku: s, reply } => {
                ShardMsg::Order(OrderId(order), OrderMsg::Verify { sku_id: sku(s), reply_shard: shard(reply) })
            }
            Wire::Verdict { sku: s, order, claim } => {
                ShardMsg::Sku(sku(s), SkuMsg::Verdict { order_id: OrderId(order), claim })
            }
        }
    }
}

/// Send `msg` to shard `shard`: through its local channel if this node hosts it, else over the
/// link (each message of a batch on its own).
pub(crate) fn route(peers: &[crossbeam_channel::Sender<ShardMsg>], hooks: &ClusterHooks, shard: usize, msg: ShardMsg) {
    if hooks.placement.is_local(shard) {
        if let Some(tx) = peers.get(shard) {
            // Fails only when the peer has exited (shutdown): nothing is left to tell.
            let _ = tx.send(msg);
        }
        return;
    }
    let msgs = match msg {
        ShardMsg::Batch(msgs) => msgs,
        one => vec![one],
    };
    for m in msgs {
        match PeerMsg::from_shard(m) {
            Ok(p) => hooks.link.send(shard, p),
            // Only messages between shards are ever routed here: anything else is a bug.
            Err(_) => tracing::error!(shard, "a message with a caller's reply cannot leave its node; dropped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_between_shards_survives_the_wire() {
        let msgs = vec![
            ShardMsg::Sku(
                Arc::from("tee"),
                SkuMsg::Reserve { order_id: OrderId(7), user_id: Arc::from("u1"), qty: 2, item: 1, reply_shard: 3 },
            ),
            ShardMsg::Sku(Arc::from("tee"), SkuMsg::Release { order_id: OrderId(7), item: 1, step: 4, reply_shard: 3 }),
            ShardMsg::Order(
                OrderId(7),
                OrderMsg::Reserved {
                    item: 0,
                    result: Ok(Grant { name: Arc::from("Tee"), unit_price: rust_decimal::Decimal::new(990, 2) }),
                },
            ),
            ShardMsg::Order(
                OrderId(7),
                OrderMsg::Reserved { item: 1, result: Err(EngineError::SoldOut { sku_id: "tee".into() }) },
            ),
            ShardMsg::Order(OrderId(7), OrderMsg::StockDone { item: 1, step: 4 }),
            ShardMsg::Order(OrderId(7), OrderMsg::Verify { sku_id: Arc::from("tee"), reply_shard: 2 }),
            ShardMsg::Sku(
                Arc::from("tee"),
                SkuMsg::Verdict { order_id: OrderId(7), claim: Claim::Holds { sold: false, recheck_at_ms: 9 } },
            ),
        ];
        for m in msgs {
            let p = PeerMsg::from_shard(m).unwrap_or_else(|_| panic!("a message between shards converts"));
            let bytes = serde_json::to_vec(&p).expect("encodes");
            let back: PeerMsg = serde_json::from_slice(&bytes).expect("decodes");
            assert_eq!(back, p);
            let again = PeerMsg::from_shard(back.into_shard()).unwrap_or_else(|_| panic!("converts again"));
            assert_eq!(again, p, "the round trip keeps every field");
        }
        assert!(serde_json::from_slice::<PeerMsg>(b"{\"m\":\"nope\"}").is_err());
    }
}
