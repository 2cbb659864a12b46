//! The order state machine, as data.
//!
//! [`TRANSITIONS`] is DESIGN.md's table transcribed row by row: `(from statuses, event, target,
//! stock effect, timer)`. The order actor looks rows up with [`rule`]; nothing else in the engine
//! decides whether an order may move. Any (status, event) pair without a row is
//! `invalid_transition`.
//!
//! # Example
//! ```
//! use surge_engine::{OrderStatus, state_machine::{rule, OrderEventKind, Target}};
//! let r = rule(OrderStatus::PendingPayment, OrderEventKind::Pay).unwrap();
//! assert_eq!(r.target, Target::To(OrderStatus::Paid));
//! assert!(rule(OrderStatus::Canceled, OrderEventKind::Pay).is_none());
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::OrderStatus;
use crate::domain::OrderStatus::*;

/// The events that move an order (the `event` column of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEventKind {
    /// Payment callback with amount == total.
    Pay,
    /// User or admin cancels before payment.
    Cancel,
    /// The payment deadline passed (engine timer).
    PaymentDeadline,
    /// The shop starts packing.
    StartPacking,
    /// Handed to the carrier with a tracking number.
    Ship,
    /// The carrier delivered.
    Deliver,
    /// The user confirms receipt.
    Complete,
    /// The auto-complete timer fired (N days after delivery).
    AutoComplete,
    /// The user asks for a refund.
    RequestRefund,
    /// The shop grants the refund.
    ConfirmRefund,
    /// The shop refuses the refund.
    RejectRefund,
    /// The user disputes a delivered or completed order.
    OpenDispute,
    /// The shop or an arbiter resolves the dispute (→ completed or → refunding).
    ResolveDispute,
}

impl OrderEventKind {
    /// Every event kind, for exhaustive tests.
    pub const ALL: [OrderEventKind; 13] = [
        Self::Pay,
        Self::Cancel,
        Self::PaymentDeadline,
        Self::StartPacking,
        Self::Ship,
        Self::Deliver,
        Self::Complete,
        Self::AutoComplete,
        Self::RequestRefund,
        Self::ConfirmRefund,
        Self::RejectRefund,
        Self::OpenDispute,
        Self::ResolveDispute,
    ];

    /// The `snake_case` wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pay => "pay",
            Self::Cancel => "cancel",
            Self::PaymentDeadline => "payment_deadline",
            Self::StartPacking => "start_packing",
            Self::Ship => "ship",
            Self::Deliver => "deliver",
            Self::Complete => "complete",
            Self::AutoComplete => "auto_complete",
            Self::RequestRefund => "request_refund",
            Self::ConfirmRefund => "confirm_refund",
            Self::RejectRefund => "reject_refund",
            Self::OpenDispute => "open_dispute",
            Self::ResolveDispute => "resolve_dispute",
        }
    }

    /// The status this event nominally leads to (for error messages); `None` where the target
    /// depends on the order (reject_refund, resolve_dispute).
    pub fn nominal_target(self) -> Option<OrderStatus> {
        TRANSITIONS.iter().find(|r| r.event == self).and_then(|r| match r.target {
            Target::To(s) => Some(s),
            Target::RefundReturn | Target::Chosen => None,
        })
    }
}

impl fmt::Display for OrderEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a row leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A fixed status.
    To(OrderStatus),
    /// Back to the status the order was in before `refunding` (reject_refund).
    RefundReturn,
    /// Chosen by the caller (resolve_dispute: completed or refunding).
    Chosen,
}

/// What a transition does to the order's reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockEffect {
    /// Nothing.
    None,
    /// reserved → sold on every line item.
    Confirm,
    /// reserved → available on every line item.
    Release,
    /// sold → available on every line item, only if the goods never shipped.
    RestockIfNotShipped,
}

/// Which engine timer a transition arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEffect {
    /// None.
    None,
    /// Auto-complete after `auto_complete_ms` (armed on delivery).
    AutoComplete,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Statuses the row applies to.
    pub from: &'static [OrderStatus],
    /// The event.
    pub event: OrderEventKind,
    /// Where it leads.
    pub target: Target,
    /// Effect on reservations.
    pub stock: StockEffect,
    /// Timer armed.
    pub timer: TimerEffect,
}

const fn row(
    from: &'static [OrderStatus],
    event: OrderEventKind,
    target: Target,
    stock: StockEffect,
    timer: TimerEffect,
) -> Rule {
    Rule { from, event, target, stock, timer }
}

use OrderEventKind as E;
use StockEffect as S;
use Target as T;
use TimerEffect as Tm;

/// DESIGN.md's order state machine. Creation (→ `pending_payment`, arming the payment deadline)
/// is the saga's job and has no row here. The auto-complete timer starts at delivery (the
/// engine-core issue: "7 days after delivery"), which overrides the design sketch's "at ship".
pub const TRANSITIONS: &[Rule] = &[
    row(&[PendingPayment], E::Pay, T::To(Paid), S::Confirm, Tm::None),
    row(&[PendingPayment], E::Cancel, T::To(Canceled), S::Release, Tm::None),
    row(&[PendingPayment], E::PaymentDeadline, T::To(Canceled), S::Release, Tm::None),
    row(&[Paid], E::StartPacking, T::To(Packing), S::None, Tm::None),
    row(&[Paid, Packing], E::Ship, T::To(Shipped), S::None, Tm::None),
    row(&[Shipped], E::Deliver, T::To(Delivered), S::None, Tm::AutoComplete),
    row(&[Delivered], E::Complete, T::To(Completed), S::None, Tm::None),
    row(&[Delivered], E::AutoComplete, T::To(Completed), S::None, Tm::None),
    row(&[Paid, Packing, Shipped, Delivered], E::RequestRefund, T::To(Refunding), S::None, Tm::None),
    row(&[Refunding], E::ConfirmRefund, T::To(Refunded), S::RestockIfNotShipped, Tm::None),
    row(&[Refunding], E::RejectRefund, T::RefundReturn, S::None, Tm::None),
    row(&[Delivered, Completed], E::OpenDispute, T::To(Disputed), S::None, Tm::None),
    row(&[Disputed], E::ResolveDispute, T::Chosen, S::None, Tm::None),
];

/// The row for `(from, event)`, or `None` when the pair is not allowed.
pub fn rule(from: OrderStatus, event: OrderEventKind) -> Option<&'static Rule> {
    TRANSITIONS.iter().find(|r| r.event == event && r.from.contains(&from))
}
