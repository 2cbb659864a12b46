//! Read models change only when their batch is durable (issue 10, item 2: "queries never show
//! what is not durable").
//!
//! A shard collects what a batch changed: each order's new state and one [`SkuPublication`] per
//! SKU (its counters at the end of the batch). The batch's `on_durable` callback applies the
//! collection to the [`ReadModels`] *before* it releases the batch's replies, so a caller always
//! reads its own acknowledged write, and only when the batch is durable (`Ok`), so a crash never
//! erases what a reader saw. The callback runs on the WAL writer thread (durable modes, one
//! thread, batches in submission order) or on the shard thread (`NullJournal`); either way one
//! shard's batches are published one after another, in order.

use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{Order, OrderId, SkuId};
use crate::sku::{SkuPublication, SkuShared};

type FastDashMap<K, V> = DashMap<K, V, ahash::RandomState>;

/// Shards of the order read models: a shard that outgrows its table rehashes 1/32 of the
/// orders while its lock is held, not 1/8 (dashmap's default on two cores; issue 12: a resize
/// at a million orders held writers and readers for tens of milliseconds). Not more: 128
/// shards made installing 5 M recovered orders 0.8 s slower (more, colder tables).
const READ_SHARDS: usize = 32;

/// Read models: what queries read without messaging actors (dashmap is for reads only; no stock
/// decision ever reads it).
#[derive(Default)]
pub(crate) struct ReadModels {
    pub orders: FastDashMap<OrderId, Arc<Order>>,
    /// A user's order ids in creation order (ids increase, all minted by the user's shard).
    /// Keyed by [`ReadModels::user_key`], a 64-bit hash of the user id rather than the id
    /// itself: a 24-byte entry instead of 32, and no string compare (issue 12: memory per
    /// order). Two users whose hashes collide share a list; `list_orders` keeps only the
    /// asking user's orders. In a flash sale most users have one order: it is kept inline (no
    /// heap allocation, a 24-byte entry); a second spills to the heap ([`OrderIds`]).
    pub user_orders: FastDashMap<u64, OrderIds>,
    /// The keys of `user_orders` (random per process: the index is rebuilt at every start).
    user_hasher: ahash::RandomState,
    pub skus: SkuDirectory,
    /// Users that may hold an idempotency record (the sold-out fast path's check).
    pub users: crate::user_filter::UserFilter,
    /// Orders their shard archived (out of memory) in a batch that is not durable yet, in their
    /// final state: the archive gets them only with that batch, and `orders` may still show an
    /// earlier state (when the move to the final status is not durable either). The shard finds
    /// them here (`ShardCore::find_order`), so a command in that window never answers
    /// `unknown_order` for an order that exists (found by the simulator, issue 14). Each leaves
    /// with its batch's durability callback.
    pub archiving: FastDashMap<OrderId, Arc<Order>>,
}

impl ReadModels {
    /// Read models sized for `orders` live orders (`EngineConfig::live_orders_expected`).
    pub fn with_capacity(orders: usize) -> Self {
        Self {
            orders: FastDashMap::with_capacity_and_hasher_and_shard_amount(orders, Default::default(), READ_SHARDS),
            user_orders: FastDashMap::with_capacity_and_hasher_and_shard_amount(
                orders,
                Default::default(),
                READ_SHARDS,
            ),
            skus: SkuDirectory::default(),
            users: crate::user_filter::UserFilter::default(),
            archiving: FastDashMap::default(),
            user_hasher: ahash::RandomState::default(),
        }
    }

    /// Forget everything shard `shard` of `shard_count` published (a cluster node gave its
    /// partition up): its orders, its users' order lists, its SKUs. The user filter keeps its
    /// bits (a false positive only costs the sold-out fast path).
    pub fn forget_shard(&self, shard: usize, shard_count: usize) {
        let mine = |id: &OrderId| crate::snowflake::shard_of(id.0, shard_count) == shard;
        self.orders.retain(|id, _| !mine(id));
        self.archiving.retain(|id, _| !mine(id));
        self.user_orders.retain(|_, ids| !ids.first().is_some_and(&mine));
        self.skus.0.rcu(|map| {
            let mut map = crate::routing::FastMap::clone(map);
            map.retain(|sku_id, _| crate::routing::shard_for_key(sku_id, shard_count) != shard);
            map
        });
    }

    /// The `user_orders` key of `user_id`.
    pub fn user_key(&self, user_id: &str) -> u64 {
        self.user_hasher.hash_one(user_id)
    }
}

/// The published SKUs by id: one map behind an `ArcSwap`, replaced whole when a SKU is added
/// (rare), read without a lock or a shared write. A `DashMap` read takes its shard's lock, an
/// atomic add on a line every caller thread shares: the sold-out fast path spent 13% of its
/// time there (issue 12). Counters and rules change inside each `SkuShared`, not here.
#[derive(Default)]
pub(crate) struct SkuDirectory(arc_swap::ArcSwap<crate::routing::FastMap<SkuId, Arc<SkuShared>>>);

impl SkuDirectory {
    /// The SKU `sku_id`, if published.
    pub fn get(&self, sku_id: &str) -> Option<Arc<SkuShared>> {
        self.0.load().get(sku_id).cloned()
    }

    /// `f` of the SKU `sku_id` (or `None`), without taking a reference count.
    pub fn with<R>(&self, sku_id: &str, f: impl FnOnce(Option<&SkuShared>) -> R) -> R {
        f(self.0.load().get(sku_id).map(|s| &**s))
    }

    /// Every published SKU.
    pub fn all(&self) -> Vec<Arc<SkuShared>> {
        self.0.load().values().cloned().collect()
    }

    /// Publish `skus` (one copy of the map for all of them; concurrent callers retry).
    pub fn insert_all(&self, skus: &[Arc<SkuShared>]) {
        if skus.is_empty() {
            return;
        }
        self.0.rcu(|map| {
            let mut map = crate::routing::FastMap::clone(map);
            for s in skus {
                map.insert(s.sku_id.clone(), s.clone());
            }
            map
        });
    }
}

/// A user's order ids, ascending: one inline, more on the heap. 16 bytes, where a
/// `SmallVec<[OrderId; 1]>` takes 24 (issue 12: memory per order; most users of a flash sale
/// have one order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) enum OrderIds {
    #[default]
    Empty,
    One(OrderId),
    // Boxed on purpose: a thin pointer keeps the enum at 16 bytes (a `Vec` would make it 32).
    #[allow(clippy::box_collection)]
    Many(Box<Vec<OrderId>>),
}

impl OrderIds {
    /// Insert `id` at position `at` (`at <= len`).
    pub fn insert(&mut self, at: usize, id: OrderId) {
        *self = match std::mem::take(self) {
            OrderIds::Empty => OrderIds::One(id),
            OrderIds::One(x) if at == 0 => OrderIds::Many(Box::new(vec![id, x])),
            OrderIds::One(x) => OrderIds::Many(Box::new(vec![x, id])),
            OrderIds::Many(mut v) => {
                v.insert(at.min(v.len()), id);
                OrderIds::Many(v)
            }
        };
    }

    /// Append `id` (the largest so far).
    #[cfg(test)]
    pub fn push(&mut self, id: OrderId) {
        self.insert(self.len(), id);
    }

    /// Keep only the ids `keep` says to keep.
    pub fn retain(&mut self, mut keep: impl FnMut(&OrderId) -> bool) {
        match self {
            OrderIds::Empty => {}
            OrderIds::One(x) => {
                if !keep(x) {
                    *self = OrderIds::Empty;
                }
            }
            OrderIds::Many(v) => v.retain(|x| keep(x)),
        }
    }
}

impl std::ops::Deref for OrderIds {
    type Target = [OrderId];

    fn deref(&self) -> &[OrderId] {
        match self {
            OrderIds::Empty => &[],
            OrderIds::One(x) => std::slice::from_ref(x),
            OrderIds::Many(v) => v,
        }
    }
}

/// What one batch changed in the read models.
#[derive(Default)]
pub(crate) struct BatchPublication {
    /// Each changed order's new state, in the order of the changes; `true` if the order was
    /// created in this batch (it joins its user's index).
    pub orders: Vec<(Arc<Order>, bool)>,
    /// One per SKU changed in the batch.
    pub skus: Vec<SkuPublication>,
    /// Each wallet whose accounts changed in the batch, as it ended (for `wallet:<user>` pushes;
    /// wallets have no read model: their reads go through the shard).
    pub wallets: Vec<crate::wallet::WalletView>,
}

impl BatchPublication {
    /// Apply the batch's changes to the read models.
    pub fn publish(&self, read: &ReadModels) {
        for sku in &self.skus {
            sku.publish(&read.skus);
        }
        for (order, created) in &self.orders {
            read.orders.insert(order.order_id, order.clone());
            if *created {
                // Sagas can land out of id order: insert in place (almost always at the end).
                index_user_order(read, order);
            }
        }
    }
}

/// Add `order` to its user's index, which stays ascending (`list_orders` binary-searches it)
/// and holds each id once. O(log n) plus a shift of the ids above it (usually none).
pub(crate) fn index_user_order(read: &ReadModels, order: &Order) {
    let mut ids = read.user_orders.entry(read.user_key(&order.user_id)).or_default();
    let at = ids.partition_point(|x| *x < order.order_id);
    if ids.get(at) != Some(&order.order_id) {
        ids.insert(at, order.order_id);
    }
}

#[cfg(test)]
mod tests {
    use super::OrderIds;
    use crate::domain::OrderId;

    #[test]
    fn order_ids_stay_ascending_inline_then_on_the_heap() {
        assert_eq!(std::mem::size_of::<OrderIds>(), 16);
        let mut ids = OrderIds::default();
        ids.push(OrderId(5));
        assert!(matches!(ids, OrderIds::One(_)));
        ids.insert(0, OrderId(2));
        ids.push(OrderId(9));
        ids.insert(2, OrderId(7));
        assert_eq!(&*ids, &[OrderId(2), OrderId(5), OrderId(7), OrderId(9)]);
        ids.retain(|x| x.0 != 5);
        assert_eq!(&*ids, &[OrderId(2), OrderId(7), OrderId(9)]);
        let mut one = OrderIds::One(OrderId(1));
        one.retain(|_| false);
        assert!(one.is_empty());
    }
}
