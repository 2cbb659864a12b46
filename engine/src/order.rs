//! The order actor's behaviour: deciding transitions and applying order events.
//!
//! An order actor's state is its [`Order`] (shared, immutable, replaced whole on every
//! transition). [`decide`] looks the (status, event) pair up in the state machine table and checks
//! compare-and-set and payment rules; [`apply`] is the only code that builds the next state. The
//! saga that *creates* orders lives in `crate::shard::saga`, because it talks to SKU actors;
//! [`build_order`] makes the order it creates.

use std::sync::Arc;

use rust_decimal::Decimal;
use smallvec::{smallvec, SmallVec};

use crate::domain::{
    DisputeResolution, HistoryEntry, Initiator, LineItem, Order, OrderId, OrderStatus, Payment, SkuId,
    TransitionOptions, UserId,
};
use crate::error::EngineError;
use crate::event::OrderEvent;
use crate::sku::Grant;
use crate::state_machine::{rule, OrderEventKind, Rule, Target};

/// Most transitions one order may take: its history then holds at most this many entries plus
/// the creation entry (issue 10: input must never grow a record past the WAL's bound).
///
/// Why 16: an archived order is logged whole (`order_archived`, also `order_restored`) and one
/// event must stay within the WAL's record bound (`surge_persistence::codec::RECORD_BYTES_MAX`,
/// 114,688 bytes, itself below sled's measured blob threshold of ~120 KiB). The largest order the
/// input limits allow (255 line items, every id, name, reason and tracking number at its limit,
/// widest decimals) encodes to 107,471 bytes with its creation entry; a payment and a
/// `refund_return_to` add 123 bytes, and one history entry at most 286 bytes (a 256-byte reason).
/// 16 transitions make 107,471 + 123 + 16 × 286 = 112,170 bytes: 2.5 KB under the bound and
/// ~10 KB under sled's threshold (at the default 20 items: about 14 KB). 64 would not fit at 255
/// items (125,898 bytes); 24 is the most that does. `persistence/tests/wal_blobs.rs` computes
/// this worst case.
///
/// The longest path without a refund or dispute round is 5 transitions (pay, start_packing,
/// ship, deliver, complete), a refund or dispute round adds 2 to 4: 16 leaves room for several
/// rounds. Past [`ORDER_TRANSITIONS_MAX`] − [`ORDER_TRANSITIONS_RESERVED`] the order may no
/// longer *enter* `refunding` or `disputed` (`order_history_full`); every other move (system
/// timers included) stays allowed, so an order can always reach a terminal status and never
/// needs more than the reserved transitions to get there.
///
/// ```
/// use surge_engine::{ORDER_TRANSITIONS_MAX, ORDER_TRANSITIONS_RESERVED};
/// assert!(ORDER_TRANSITIONS_RESERVED < ORDER_TRANSITIONS_MAX);
/// ```
pub const ORDER_TRANSITIONS_MAX: usize = 16;

/// Transitions kept for leaving the refund/dispute cycles once an order is past
/// [`ORDER_TRANSITIONS_MAX`] − this: the longest path that never enters `refunding` or
/// `disputed` again, from `refunding` (returning to `paid`): reject_refund, start_packing, ship,
/// deliver, complete = 5. From `disputed` only resolve → completed is left (1).
pub const ORDER_TRANSITIONS_RESERVED: usize = 5;

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
/// `invalid_transition`, `dispute_window_closed`, `invalid_request` (missing dispute outcome),
/// `order_history_full` (entering `refunding` or `disputed` past the history bound).
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
    check_history_room(order, to)?;
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

/// The order a fully granted create-order saga makes: `lines` are its line items in request
/// order, `(sku_id, qty, grant)`, each with the name and unit price its SKU actor granted
/// (snapshotted: later price changes never alter the order). Created now (`now_ms`, engine
/// clock), due for payment at `payment_deadline_ms`, with the `total` [`order_total`] computed
/// for the same lines. Everything is moved in, nothing cloned (issue 12: each `Arc` clone is a
/// locked instruction).
pub(crate) fn build_order(
    order_id: OrderId,
    user_id: UserId,
    idempotency_key: Box<str>,
    lines: impl Iterator<Item = (SkuId, u32, Grant)>,
    total: Decimal,
    now_ms: i64,
    payment_deadline_ms: i64,
) -> Arc<Order> {
    let mut items = SmallVec::with_capacity(lines.size_hint().1.unwrap_or(0));
    for (sku_id, qty, g) in lines {
        // Cannot overflow: `order_total` computed the same products and sum first.
        let subtotal = g.unit_price.checked_mul(Decimal::from(qty)).unwrap_or(Decimal::MAX);
        items.push(LineItem { sku_id, name: g.name, qty, unit_price: g.unit_price, subtotal });
    }
    // Inline: most orders never move (a flash sale's losers cancel).
    let history = smallvec![HistoryEntry {
        from: None,
        to: OrderStatus::PendingPayment,
        at_ms: now_ms,
        by: Initiator::User,
        reason: None,
    }];
    Arc::new(Order {
        order_id,
        user_id,
        items,
        total,
        status: OrderStatus::PendingPayment,
        version: 1,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        payment_deadline_ms,
        payment: None,
        tracking_number: None,
        shipped: false,
        refund_return_to: None,
        history,
        idempotency_key,
    })
}

/// The total of an order's lines `(sku_id, qty, unit_price)`: Σ unit_price × qty.
///
/// # Errors
/// `invalid_request` if a subtotal or the total overflows `Decimal` (prices are bounded at
/// the boundary by `PRICE_MAX`, but state recovered from older data may hold any price).
pub(crate) fn order_total<'a>(lines: impl Iterator<Item = (&'a SkuId, u32, Decimal)>) -> Result<Decimal, EngineError> {
    let mut total = Decimal::ZERO;
    for (sku_id, qty, unit_price) in lines {
        let overflow = || EngineError::invalid(format!("the order total overflows (sku {sku_id})"));
        let subtotal = unit_price.checked_mul(Decimal::from(qty)).ok_or_else(overflow)?;
        total = total.checked_add(subtotal).ok_or_else(overflow)?;
    }
    Ok(total)
}

/// Refuse entering `refunding` or `disputed` (the only statuses cycles go through: refund
/// request → rejection, dispute → resolution) once the order has taken
/// [`ORDER_TRANSITIONS_MAX`] − [`ORDER_TRANSITIONS_RESERVED`] transitions. What is left only moves
/// towards a terminal status, so the history never passes [`ORDER_TRANSITIONS_MAX`].
fn check_history_room(order: &Order, to: OrderStatus) -> Result<(), EngineError> {
    let transitions = order.history.len().saturating_sub(1);
    let enters_cycle = matches!(to, OrderStatus::Refunding | OrderStatus::Disputed);
    if enters_cycle && transitions >= ORDER_TRANSITIONS_MAX - ORDER_TRANSITIONS_RESERVED {
        return Err(EngineError::OrderHistoryFull {
            order_id: order.order_id,
            transitions,
            transitions_max: ORDER_TRANSITIONS_MAX,
        });
    }
    Ok(())
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
        next.payment = payment.clone().map(Box::new);
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

#[cfg(test)]
mod tests {
    use std::collections::{HashSet, VecDeque};

    use super::*;

    fn fresh_order() -> Order {
        Order {
            order_id: OrderId(1),
            user_id: "u".into(),
            items: SmallVec::new(),
            total: Decimal::ONE,
            status: OrderStatus::PendingPayment,
            version: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
            payment_deadline_ms: 1,
            payment: None,
            tracking_number: None,
            shipped: false,
            refund_return_to: None,
            history: smallvec![HistoryEntry {
                from: None,
                to: OrderStatus::PendingPayment,
                at_ms: 0,
                by: Initiator::User,
                reason: None,
            }],
            idempotency_key: "k".into(),
        }
    }

    /// Every command the state machine knows, with both dispute outcomes.
    fn commands() -> Vec<OrderCommand> {
        let mut out = Vec::new();
        for kind in OrderEventKind::ALL {
            let mut cmd = OrderCommand::new(kind, Initiator::Admin);
            cmd.payment = Some(("p".into(), Decimal::ONE));
            cmd.tracking_number = Some("t".into());
            for resolution in [DisputeResolution::Completed, DisputeResolution::Refunding] {
                cmd.resolution = Some(resolution);
                out.push(cmd.clone());
            }
        }
        out
    }

    /// The orders reachable from `order` by every allowed command (breadth first; statuses,
    /// `refund_return_to` and history length identify a state).
    fn reachable(order: Order) -> Vec<Order> {
        let key = |o: &Order| (o.status, o.refund_return_to, o.history.len());
        let (mut seen, mut queue, mut out) = (HashSet::new(), VecDeque::from([order]), Vec::new());
        while let Some(o) = queue.pop_front() {
            // Past the bound: report it, do not explore further (without the bound the search
            // would never end).
            if !seen.insert(key(&o)) || o.history.len() > ORDER_TRANSITIONS_MAX + 1 {
                out.extend((o.history.len() > ORDER_TRANSITIONS_MAX + 1).then_some(o));
                continue;
            }
            for cmd in commands() {
                if let Ok(Decision::Transition(event, _)) = decide(&o, &cmd, 0, u64::MAX) {
                    queue.push_back((*apply(&o, &event)).clone());
                }
            }
            out.push(o);
        }
        out
    }

    /// Exhaustive over the table: however the commands are chosen, no order's history passes
    /// `ORDER_TRANSITIONS_MAX` transitions, and from every reachable order a terminal status can
    /// still be reached (the reserve is enough), so input can never grow an archived order past
    /// the WAL's record bound nor strand it.
    #[test]
    fn history_stays_bounded_and_a_terminal_status_stays_reachable() {
        let states = reachable(fresh_order());
        let longest = states.iter().map(|o| o.history.len() - 1).max().unwrap_or(0);
        // 15: a `paid` order has taken an odd number of transitions, so the reserve's worst path
        // starts one short of the bound.
        assert!(longest <= ORDER_TRANSITIONS_MAX, "{longest} transitions");
        assert!(longest >= ORDER_TRANSITIONS_MAX - 1, "the bound is tight: {longest} transitions");
        for o in &states {
            let terminal = reachable(o.clone()).iter().any(|r| r.status.is_terminal());
            assert!(terminal, "stuck: {:?} after {} transitions", o.status, o.history.len() - 1);
        }
    }

    #[test]
    fn entering_a_cycle_past_the_bound_is_order_history_full() {
        let mut o = fresh_order();
        o.status = OrderStatus::Delivered;
        let entry = o.history[0].clone();
        o.history.resize(1 + ORDER_TRANSITIONS_MAX - ORDER_TRANSITIONS_RESERVED, entry);
        let refund = OrderCommand::new(OrderEventKind::RequestRefund, Initiator::User);
        let err = decide(&o, &refund, 0, u64::MAX).expect_err("refused");
        assert_eq!(err.code(), "order_history_full");
        // A system timer still moves it.
        let auto = OrderCommand::new(OrderEventKind::AutoComplete, Initiator::System);
        assert!(matches!(decide(&o, &auto, 0, u64::MAX), Ok(Decision::Transition(..))));
    }
}
