//! Actor events and the journal they are appended to.
//!
//! Every state change of an actor is an [`Event`]; applying an actor's events in order rebuilds
//! its state (event sourcing). A shard decides a whole batch of messages, hands the batch's events
//! to its [`Journal`], and only then releases the batch's replies and cross-shard messages, so a
//! write-ahead log slots in behind this trait without touching the actors.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::{Initiator, Order, OrderId, OrderStatus, Payment, SaleRules, SkuId, UserId};
use crate::error::EngineError;
use crate::state_machine::OrderEventKind;

/// A state change of one SKU actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkuEvent {
    /// The SKU came into existence with its initial stock.
    Created {
        /// Id.
        sku_id: SkuId,
        /// Name.
        name: Arc<str>,
        /// Unit price.
        price: Decimal,
        /// Units stocked at creation.
        initial_stock: u64,
        /// Rules of sale.
        rules: SaleRules,
    },
    /// Name, price or rules changed (the full new values).
    Updated {
        /// Id.
        sku_id: SkuId,
        /// Name.
        name: Arc<str>,
        /// Unit price.
        price: Decimal,
        /// Rules of sale.
        rules: SaleRules,
    },
    /// Stock added (positive) or removed (negative) by an admin.
    Adjusted {
        /// Id.
        sku_id: SkuId,
        /// Units.
        delta: i64,
        /// Why (audit trail).
        reason: Box<str>,
    },
    /// `qty` units moved available → reserved for `order_id`.
    Reserved {
        /// Id.
        sku_id: SkuId,
        /// The order holding them.
        order_id: OrderId,
        /// The buyer (per-user limit).
        user_id: UserId,
        /// Units.
        qty: u32,
    },
    /// The order's reservation moved reserved → sold.
    Confirmed {
        /// Id.
        sku_id: SkuId,
        /// The order.
        order_id: OrderId,
    },
    /// The order's reservation moved reserved → available.
    Released {
        /// Id.
        sku_id: SkuId,
        /// The order.
        order_id: OrderId,
    },
    /// The order's sold units moved sold → available (refund of goods that never shipped).
    Restocked {
        /// Id.
        sku_id: SkuId,
        /// The order.
        order_id: OrderId,
    },
}

/// A state change of one order actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The saga granted every reservation: the order exists in `pending_payment`.
    Created(Arc<Order>),
    /// One row of the state machine was taken.
    Transitioned {
        /// The order.
        order_id: OrderId,
        /// The event.
        event: OrderEventKind,
        /// Status before.
        from: OrderStatus,
        /// Status after.
        to: OrderStatus,
        /// Engine clock, ms.
        at_ms: i64,
        /// Who caused it.
        by: Initiator,
        /// Recorded reason.
        reason: Option<Box<str>>,
        /// The payment accepted by a `pay`.
        payment: Option<Payment>,
        /// The tracking number given by a `ship`.
        tracking_number: Option<Box<str>>,
    },
}

/// Any actor's event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A SKU actor's.
    Sku(SkuEvent),
    /// An order actor's.
    Order(OrderEvent),
}

/// Where a shard appends the events of each batch before it releases the batch's replies.
///
/// `append` returns once the events are as durable as the engine's durability mode promises; an
/// error means none of the batch's replies may claim success.
pub trait Journal: Send + 'static {
    /// Append one batch of events from `shard`, in order.
    ///
    /// # Errors
    /// The storage refused the batch.
    fn append(&mut self, shard: usize, events: &[Event]) -> Result<(), EngineError>;
}

/// The in-memory journal: keeps nothing (durability mode `none`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullJournal;

impl Journal for NullJournal {
    fn append(&mut self, _shard: usize, _events: &[Event]) -> Result<(), EngineError> {
        Ok(())
    }
}

/// A journal factory: the engine asks it for one journal per shard.
pub type JournalFactory = Box<dyn FnMut(usize) -> Box<dyn Journal> + Send>;
