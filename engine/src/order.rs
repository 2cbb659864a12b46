//! The order actor's behaviour: deciding transitions and applying order events.
//!
//! An order actor's state is its [`Order`] (shared, immutable, replaced whole on every
//! transition). [`decide`] looks the (status, event) pair up in the state machine table and checks
//! compare-and-set and payment rules; [`apply`] is the only code that builds the next state. The
//! saga that *creates* orders lives in [`crate::shard`], because it talks to SKU actors.

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::domain::{DisputeResolution, HistoryEntry, Initiator, Order, OrderStatus, Payment, TransitionOptions};
use crate::error::EngineError;
use crate::event::OrderEvent;
use crate::state_machine::{rule, OrderEventKind, Rule, Target};

/// A request to move an order, as the order actor receives it.
#[derive(Debug, Clone)]
pub(crate) struct OrderCommand {
    pub kind: OrderEventKind,
    pub by: Initiator,
    pub opts: TransitionOptions,
    /// `pay`: (payment_id, amount).
    pub payment: Option<(Box<str>, Decimal)>,
    /// `ship`: tracking number.
    pub tracking_number: Option<Box<str>>,
    /// `resolve_dispute`: the outcome.
    pub resolution: Option<DisputeResolution>,
}

impl OrderCommand {
    pub fn new(kind: OrderEventKind, by: Initiator) -> Self {
        Self { kind, by, opts: TransitionOptions::default(), payment: None, tracking_number: None, resolution: None }
    }
}

/// What the actor decided.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Nothing to do: a duplicate of something already done (same payment_id).
    Duplicate,
    /// Take this transition.
    Transition(OrderEvent, &'static Rule),
}

/// Decide `cmd` against `order` at `now_ms`; `dispute_window_ms` bounds `open_dispute` on a
/// completed order (counted from its first completion).
///
/// # Errors
/// `version_conflict`, `amount_mismatch`, `already_paid`, `order_not_payable`,
/// `invalid_transition`, `dispute_window_closed`, `invalid_request` (missing dispute outcome).
pub(crate) fn decide(
    order: &Order,
    cmd: &OrderCommand,
    now_ms: i64,
    dispute_window_ms: u64,
) -> Result<Decision, EngineError> {
    if let Some(expected) = cmd.opts.expected_version {
        if expected != order.version {
            return Err(EngineError::VersionConflict { expected, actual: order.version });
        }
    }
    let mut payment = None;
    if cmd.kind == OrderEventKind::Pay {
        let Some((payment_id, amount)) = &cmd.payment else {
            return Err(EngineError::invalid("pay needs payment_id and amount"));
        };
        // DESIGN.md idempotency: the same payment twice is acknowledged once.
        if order.payment.as_ref().is_some_and(|p| p.payment_id == *payment_id) {
            return Ok(Decision::Duplicate);
        }
        match order.status {
            OrderStatus::PendingPayment => {
                if *amount != order.total {
                    return Err(EngineError::AmountMismatch { expected: order.total, got: *amount });
                }
            }
            _ if order.payment.is_some() => return Err(EngineError::AlreadyPaid { order_id: order.order_id }),
            status => return Err(EngineError::OrderNotPayable { order_id: order.order_id, status }),
        }
        payment = Some(Payment { payment_id: payment_id.clone(), amount: *amount, paid_at_ms: now_ms });
    }
    let Some(r) = rule(order.status, cmd.kind) else {
        return Err(EngineError::InvalidTransition {
            from: order.status,
            event: cmd.kind,
            to: cmd.kind.nominal_target(),
        });
    };
    let to = match r.target {
        Target::To(s) => s,
        // A refund that is rejected returns where it came from; an order always records that on
        // entering `refunding`, so the fallback is unreachable in practice.
        Target::RefundReturn => order.refund_return_to.unwrap_or(OrderStatus::Paid),
        Target::Chosen => match cmd.resolution {
            Some(DisputeResolution::Completed) => OrderStatus::Completed,
            Some(DisputeResolution::Refunding) => OrderStatus::Refunding,
            None => return Err(EngineError::invalid("resolve_dispute needs an outcome: completed or refunding")),
        },
    };
    if cmd.kind == OrderEventKind::OpenDispute && order.status == OrderStatus::Completed {
        // The first completion, so a dispute resolved back to `completed` does not reopen it.
        let completed_at =
            order.history.iter().find(|h| h.to == OrderStatus::Completed).map_or(order.updated_at_ms, |h| h.at_ms);
        let closed_at_ms = completed_at.saturating_add(i64::try_from(dispute_window_ms).unwrap_or(i64::MAX));
        if now_ms >= closed_at_ms {
            return Err(EngineError::DisputeWindowClosed { order_id: order.order_id, closed_at_ms });
        }
    }
    if cmd.kind == OrderEventKind::Ship && cmd.tracking_number.is_none() {
        return Err(EngineError::invalid("ship needs a tracking_number"));
    }
    let reason = cmd.opts.reason.as_deref().map(Box::from).or_else(|| match cmd.kind {
        OrderEventKind::PaymentDeadline => Some("payment_deadline".into()),
        OrderEventKind::AutoComplete => Some("auto_complete".into()),
        _ => None,
    });
    let event = OrderEvent::Transitioned {
        order_id: order.order_id,
        event: cmd.kind,
        from: order.status,
        to,
        at_ms: now_ms,
        by: cmd.by,
        reason,
        payment,
        tracking_number: cmd.tracking_number.clone(),
    };
    Ok(Decision::Transition(event, r))
}

/// Apply a `Transitioned` event to `order`, giving the next state. A `Created` event is the state
/// itself and is handled by the caller.
pub(crate) fn apply(order: &Order, event: &OrderEvent) -> Arc<Order> {
    let OrderEvent::Transitioned { from, to, at_ms, by, reason, payment, tracking_number, .. } = event else {
        return Arc::new(order.clone());
    };
    let mut next = order.clone();
    debug_assert_eq!(next.status, *from);
    if *to == OrderStatus::Refunding && *from != OrderStatus::Refunding {
        next.refund_return_to = Some(*from);
    }
    if *from == OrderStatus::Refunding {
        next.refund_return_to = None;
    }
    if *to == OrderStatus::Shipped {
        next.shipped = true;
    }
    if payment.is_some() {
        next.payment = payment.clone();
    }
    if tracking_number.is_some() {
        next.tracking_number = tracking_number.clone();
    }
    next.status = *to;
    next.version += 1;
    next.updated_at_ms = *at_ms;
    next.history.push(HistoryEntry { from: Some(*from), to: *to, at_ms: *at_ms, by: *by, reason: reason.clone() });
    Arc::new(next)
}
