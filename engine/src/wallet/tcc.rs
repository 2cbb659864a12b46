//! The two rules a wallet payment's try and its order share, in one place: the payment id a
//! wallet payment gives its order, and how an open try is closed (confirm or cancel). The shard
//! (at the end of a payment's batch and on the `tcc_try_timeout_ms` tick), recovery's
//! reconcile and the audit use these, so they cannot disagree. The simulator's checks spell
//! them out again on purpose: an oracle that shared them could not catch a change to them.

use super::WalletEvent;
use crate::domain::{Order, UserId};

/// The prefix of a wallet payment's id on its order: `wallet:<transfer_id>`.
pub(crate) const PAYMENT_ID_PREFIX: &str = "wallet:";

/// The payment id `pay_with_wallet` with `transfer_id` records on its order (`wallet:<id>`), so
/// an order shows which transfer paid it, and a provider's payment id never collides with it.
pub(crate) fn payment_id(transfer_id: &str) -> Box<str> {
    format!("{PAYMENT_ID_PREFIX}{transfer_id}").into()
}

/// The transfer id of a wallet payment `order` took, if it took one.
pub(crate) fn paid_by(order: &Order) -> Option<&str> {
    order.payment.as_ref()?.payment_id.strip_prefix(PAYMENT_ID_PREFIX)
}

/// Whether `order` took the wallet payment with `transfer_id`.
pub(crate) fn took(order: Option<&Order>, transfer_id: &str) -> bool {
    order.and_then(paid_by) == Some(transfer_id)
}

/// How an open try is closed: confirmed ([`WalletEvent::Settled`]) if its order took the
/// payment, else canceled ([`WalletEvent::Unfrozen`] with no failure of the caller's). This is
/// the TCC rule: the order's `paid` is the decision, the wallet follows it.
pub(crate) fn close_try(user_id: UserId, transfer_id: Box<str>, order: Option<&Order>, at_ms: i64) -> WalletEvent {
    if took(order, &transfer_id) {
        WalletEvent::Settled { user_id, transfer_id, at_ms }
    } else {
        WalletEvent::Unfrozen { user_id, transfer_id, failure: None, at_ms }
    }
}
