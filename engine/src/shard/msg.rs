//! The messages a shard's mailboxes carry: one enum per actor kind ([`SkuMsg`], [`OrderMsg`])
//! inside the shard-level [`ShardMsg`], and what a shard reports to the audit.

use std::sync::Arc;

use crate::domain::{CreateOrder, Order, OrderId, SkuId, SkuSpec, SkuUpdate, SkuView, UserId};
use crate::error::EngineError;
use crate::order::OrderCommand;
use crate::sku::Grant;

pub(crate) use crate::reply::Reply;

/// The SKU actor's messages.
pub(crate) enum SkuMsg {
    // Boxed, as every rare and large payload here: a message is moved several times on its way
    // (mailbox, batch, outbox), so the hot variants' size is what every move costs (issue 12).
    Create(Box<SkuSpec>, Reply<SkuView>),
    Update(Box<SkuUpdate>, Reply<SkuView>),
    Adjust {
        adjustment_id: Box<str>,
        delta: i64,
        reason: Box<str>,
        reply: Reply<SkuView>,
    },
    Reserve {
        order_id: OrderId,
        user_id: UserId,
        qty: u32,
        item: u8,
        reply_shard: usize,
    },
    // `item`: the order's line item this is for, and `step` the order's step (0: its creation
    // and its compensation; else the order's version after the transition), both echoed in
    // `StockDone`: a duplicate or late answer, possible once messages cross nodes and are
    // retried, is recognised and ignored.
    Confirm {
        order_id: OrderId,
        item: u8,
        step: u32,
        reply_shard: usize,
    },
    Release {
        order_id: OrderId,
        item: u8,
        step: u32,
        reply_shard: usize,
    },
    Restock {
        order_id: OrderId,
        item: u8,
        step: u32,
        reply_shard: usize,
    },
    /// The order was archived: drop its sold holding (no answer).
    Forget {
        order_id: OrderId,
    },
    /// The archived order was restored: hold its sold units again (no answer).
    Remember {
        order_id: OrderId,
        user_id: UserId,
        qty: u32,
    },
    /// The order's partition's answer to `OrderMsg::Verify` (cluster only).
    Verdict {
        order_id: OrderId,
        claim: Claim,
    },
}

/// What an order's partition says about a SKU's holding for it (cluster only, issue 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Claim {
    /// A saga or stock step of the order is under way: ask again later.
    Waiting,
    /// The order holds units: reserved (`sold: false`; ask again at `recheck_at_ms`, after its
    /// payment deadline) or sold.
    Holds { sold: bool, recheck_at_ms: i64 },
    /// No such order (its saga was given up or never durable), or one that holds nothing.
    Nothing,
}

/// The order actor's messages.
pub(crate) enum OrderMsg {
    /// A state-machine event; timers send it without a reply.
    Command(Box<OrderCommand>, Option<Reply<Arc<Order>>>),
    /// A SKU actor's answer to `Reserve` for line item `item`.
    Reserved { item: u8, result: Result<Grant, EngineError> },
    /// A SKU actor finished a confirm, release or restock for line item `item` of step `step`.
    StockDone { item: u8, step: u32 },
    /// `pay_with_wallet`: a payment's TCC from the order user's wallet.
    WalletPay(Box<WalletPay>, Reply<Arc<Order>>),
    /// A SKU of another partition asks whether this order still claims its holding (cluster
    /// only); answered with `SkuMsg::Verdict`.
    Verify { sku_id: SkuId, reply_shard: usize },
}

/// A user's wallet's messages (issue 14), sent to the user's shard.
pub(crate) enum WalletMsg {
    /// `wallet_credit` or `wallet_debit`.
    Move(Box<crate::wallet::decide::Movement>, Reply<crate::wallet::TransferReceipt>),
    /// `get_wallet`.
    Get(Reply<crate::wallet::WalletView>),
    /// `list_wallet_entries`.
    Entries(Box<EntriesQuery>, Reply<crate::wallet::EntryPage>),
}

/// A checked `list_wallet_entries` query.
pub(crate) struct EntriesQuery {
    pub asset: Option<crate::wallet::AssetCode>,
    pub before: Option<u64>,
    pub limit: usize,
}

/// A checked `pay_with_wallet`, sent to the order's shard.
pub(crate) struct WalletPay {
    pub transfer_id: Box<str>,
    pub legs: Vec<crate::wallet::Leg>,
    pub expected_version: Option<u32>,
    /// The order must be this user's (a `user` connection).
    pub owner: Option<Box<str>>,
}

/// Everything a shard's mailboxes carry.
pub(crate) enum ShardMsg {
    Sku(SkuId, SkuMsg),
    Order(OrderId, OrderMsg),
    /// A user's wallet (on the user's shard).
    Wallet(UserId, WalletMsg),
    /// Start a create-order saga (sent to the user's shard).
    /// The third field is the fast path's verdict: given unless the key names an existing order.
    CreateOrder(CreateOrder, Reply<Arc<Order>>, Option<Box<EngineError>>),
    /// Commands submitted together (`Engine::create_orders`): one mailbox slot and one wake-up
    /// for many; handled in order, each as if it had come alone. Holds only `CreateOrder`,
    /// `Order` and `Sku` messages.
    Batch(Vec<ShardMsg>),
    /// Answer `true` if this shard did or has work since the previous barrier.
    Barrier(oneshot::Sender<bool>),
    /// Flush, then report this shard's state and journal position (snapshot cut).
    Snapshot(oneshot::Sender<(ShardCut, u64)>),
    /// Report every actor's state for [`crate::Engine::audit`].
    Audit(oneshot::Sender<ShardAudit>),
    /// Host this partition's recovered state from now on (a cluster node took it over).
    Install(Box<crate::state::EngineState>, oneshot::Sender<crate::error::EngineResult<()>>),
    /// Stop hosting this partition (a cluster node gave it up): answer what waits with
    /// `unavailable`, drop the state, forget it in the read models.
    Evict(oneshot::Sender<()>),
    Shutdown,
}

/// A shard's state at a snapshot's cut: its SKUs and orders, sharing their copy-on-write
/// chunks with the live actors ([`crate::chunked`]), so taking it costs the shard O(SKUs), not
/// O(orders). [`ShardCut::into_state`] builds the [`EngineState`] on the caller's thread.
pub(crate) struct ShardCut {
    pub skus: Vec<(SkuId, crate::sku::SkuState)>,
    pub orders: crate::chunked::ChunkedMap<OrderId, Arc<Order>>,
    /// The shard's wallets, cloned: O(users with a wallet) on the shard thread.
    pub wallets: crate::wallet::WalletBook,
}

impl ShardCut {
    /// The state as the snapshot stores it (sorted maps).
    pub fn into_state(self) -> crate::state::EngineState {
        crate::state::EngineState {
            skus: self.skus.into_iter().collect(),
            orders: self.orders.iter().map(|(id, o)| (*id, o.clone())).collect(),
            wallets: self.wallets,
        }
    }
}

/// One SKU actor's state as the audit sees it.
pub(crate) struct SkuAudit {
    pub view: SkuView,
    /// (order, user, units, sold?)
    pub holdings: Vec<(OrderId, UserId, u32, bool)>,
    pub user_units: Vec<(UserId, u32)>,
    pub sold_archived: u64,
}

/// Everything one shard holds, for the audit.
pub(crate) struct ShardAudit {
    pub skus: Vec<SkuAudit>,
    pub orders: Vec<Arc<Order>>,
    pub in_flight: usize,
    pub wallets: WalletAudit,
}

/// One shard's wallets as the audit sees them.
pub(crate) struct WalletAudit {
    /// What [`crate::wallet::WalletBook::check`] found, if anything.
    pub violation: Option<String>,
    pub open_tries: usize,
    pub accounts: usize,
    /// Settled wallet payments: (order, transfer id).
    pub payments: Vec<(OrderId, Box<str>)>,
}
