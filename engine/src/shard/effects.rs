//! What one batch of a [`super::ShardCore`] produced, as data: the journal events, the
//! messages to other shards, and what waits for durability (replies, the read-model
//! publication, archived orders' removal from the read models). A runtime releases them in
//! the order the log's causality needs: submit the events, then send the messages, and
//! complete the durable part (publish, then reply) only once the journal says the batch is
//! durable (issue 11, design change 1).

use std::sync::Arc;

use super::msg::{Reply, ShardMsg};
use crate::domain::{Order, SkuView};
use crate::error::{EngineError, EngineResult};
use crate::event::{ChangeObserver, Event};
use crate::publish::{BatchPublication, ReadModels};
use crate::reply::SlotFiller;

/// A reply held until its batch is durable.
pub(crate) enum Deferred {
    Order(Reply<Arc<Order>>, EngineResult<Arc<Order>>),
    /// Boxed: a SKU view is large and admin answers are rare; every deferred reply is as large
    /// as the largest variant.
    Sku(Reply<SkuView>, Box<EngineResult<SkuView>>),
    Barrier(oneshot::Sender<bool>, bool),
    /// Wallet answers (issue 14), boxed as the SKU's.
    Receipt(Reply<crate::wallet::TransferReceipt>, Box<EngineResult<crate::wallet::TransferReceipt>>),
    Wallet(Reply<crate::wallet::WalletView>, Box<EngineResult<crate::wallet::WalletView>>),
    Entries(Reply<crate::wallet::EntryPage>, Box<EngineResult<crate::wallet::EntryPage>>),
}

/// One batch's effects, returned by [`super::ShardCore::end_batch`].
pub(crate) struct BatchEffects {
    /// Messages to other shards: (destination shard, message), in the order they were sent.
    /// Send them *after* submitting `batch`, so the log stays causally ordered. Hand the
    /// emptied vector back with [`super::ShardCore::recycle_outbox`] (keeps its capacity).
    pub outbox: Vec<(usize, ShardMsg)>,
    /// The batch for the journal; `None` when the batch has neither events nor replies.
    pub batch: Option<JournalBatch>,
}

/// The events to journal and what to do once they are durable.
pub(crate) struct JournalBatch {
    pub events: Vec<Event>,
    pub on_durable: DurableEffects,
}

/// What waits for the batch to be durable.
pub(crate) struct DurableEffects {
    /// Replies, in the order the batch produced them.
    pub replies: Vec<Deferred>,
    /// What the batch changed in the read models.
    pub publication: BatchPublication,
    /// Orders archived in this batch: they leave the read models once the batch is durable
    /// (and the archive has them), so a reader always finds them in one place or the other.
    pub archived: Vec<Arc<Order>>,
}

impl DurableEffects {
    /// The journal answered `result` for this batch: on `Ok` publish to `read` (before any
    /// reply, so a caller reads its own write), drop archived orders from the read models,
    /// tell `observer`, then release the replies (each failed with the journal's error if the
    /// batch could not be made durable).
    pub fn complete(
        self,
        read: &ReadModels,
        observer: Option<&Arc<dyn ChangeObserver>>,
        result: Result<(), EngineError>,
    ) {
        let DurableEffects { replies, publication, archived } = self;
        if result.is_ok() {
            publication.publish(read);
        }
        // Only a durable archiving leaves the read models: after a failed batch the order is
        // still live as far as the log knows, and must stay readable.
        for order in archived.into_iter().filter(|_| result.is_ok()) {
            let id = order.order_id;
            // The archive holds it now.
            read.archiving.remove_if(&id, |_, o| Arc::ptr_eq(o, &order));
            // Unless it was restored meanwhile (then the read model holds a newer state of it,
            // which stays).
            if read.orders.remove_if(&id, |_, o| Arc::ptr_eq(o, &order)).is_none() {
                continue;
            }
            if let Some(mut ids) = read.user_orders.get_mut(&read.user_key(&order.user_id)) {
                ids.retain(|x| *x != id);
            }
        }
        if let (Some(obs), Ok(())) = (observer, &result) {
            for (o, _) in &publication.orders {
                obs.order_changed(o);
            }
            for sku in &publication.skus {
                obs.stock_changed(sku.sku_id());
            }
            for w in &publication.wallets {
                obs.wallet_changed(w);
            }
        }
        release(replies, result)
    }
}

/// Release a batch's replies once its events are durable; if they cannot be, no reply claims
/// success.
fn release(replies: Vec<Deferred>, result: Result<(), EngineError>) {
    fn gate<T>(v: EngineResult<T>, result: &Result<(), EngineError>) -> EngineResult<T> {
        match result {
            Ok(()) => v,
            Err(e) => Err(e.clone()),
        }
    }
    // A batch's slots are filled under one lock per run of replies (see `crate::reply`).
    let mut orders = SlotFiller::new();
    for d in replies {
        // A caller that stopped waiting dropped its receiver: nothing to do.
        match d {
            Deferred::Order(r, v) => orders.send(r, gate(v, &result)),
            Deferred::Sku(r, v) => r.send(gate(*v, &result)),
            Deferred::Receipt(r, v) => r.send(gate(*v, &result)),
            Deferred::Wallet(r, v) => r.send(gate(*v, &result)),
            Deferred::Entries(r, v) => r.send(gate(*v, &result)),
            Deferred::Barrier(r, busy) => {
                let _ = r.send(busy);
            }
        }
    }
}
