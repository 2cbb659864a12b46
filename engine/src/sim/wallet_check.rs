//! The simulator's wallet checks (issue 14) on the engine's own state; the checks against the
//! clients' answers are the wallet model's (`workload::wallet_model`).
//!
//! * After every batch, the shard's wallets keep their invariant ([`WalletBook::check`], for
//!   the wallets the batch changed): per account `balance + frozen = credited − debited −
//!   settled + refunded`, nothing negative, `frozen` = the open tries' legs.
//! * At quiet points and after every recovery: no try is open; per asset, Σ(balance + frozen)
//!   over all users = Σ(credited − debited − settled + refunded); after every recovery also each
//!   account's totals are what the transfers its wallet remembers add up to.
//! * At quiet points (live orders) and after every recovery (archived ones too): every order
//!   that took `wallet:<id>` has that payment settled in its user's wallet (refunded with the
//!   order), and every settled payment's order took it and is still paid for: money never left
//!   a wallet for an order that did not take it, and no order was paid with money that did not
//!   leave one.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::{Order, OrderId, OrderStatus};
use crate::event::Event;
use crate::shard::ShardCore;
use crate::wallet::{AssetCode, Outcome, TransferParams, UserWallet, WalletBook};

/// After every batch of `core`: the wallets its `events` changed (the others did not change).
///
/// # Errors
/// The broken invariant, in words.
pub(super) fn shard(core: &ShardCore, events: &[Event]) -> Result<(), String> {
    let mut last: Option<&str> = None;
    for e in events {
        let Event::Wallet(e) = e else { continue };
        let user = &**e.user_id();
        if last != Some(user) {
            core.wallet_book().check_user(user).map_err(|e| format!("wallets: {e}"))?;
            last = Some(user);
        }
    }
    Ok(())
}

/// At quiet points and after every recovery: no open try, per-asset sums agree; after every
/// recovery (`recovered`) also each account's totals agree with the transfers it remembers.
/// (Each wallet's own invariant is the audit's, [`WalletBook::check`].)
///
/// # Errors
/// The first broken invariant.
pub(super) fn books(cores: &[ShardCore], recovered: bool) -> Result<(), String> {
    let mut sums: BTreeMap<&AssetCode, (i128, i128)> = BTreeMap::new();
    for book in cores.iter().map(ShardCore::wallet_book) {
        if let Some((user, tid, t)) = book.open_tries().next() {
            return Err(format!("{user}'s payment try {tid} for order {} is open with nothing in flight", t.order_id));
        }
        for (user, w) in &book.users {
            if recovered {
                transfers_add_up(user, w)?;
            }
            for (asset, a) in &w.accounts {
                let s = sums.entry(asset).or_default();
                let signed = |v: u128| i128::try_from(v).unwrap_or(i128::MAX);
                s.0 += i128::from(a.balance_minor) + i128::from(a.frozen_minor);
                s.1 += signed(a.credited_minor) - signed(a.debited_minor) - signed(a.settled_minor)
                    + signed(a.refunded_minor);
            }
        }
    }
    match sums.iter().find(|(_, (held, moved))| held != moved) {
        Some((asset, (held, moved))) => Err(format!("{asset}: wallets hold {held} in all, their totals say {moved}")),
        None => Ok(()),
    }
}

/// Each account's credited, debited, settled and refunded totals are what the transfers its
/// wallet remembers add up to (a credit or debit done, a payment settled or refunded).
fn transfers_add_up(user: &str, w: &UserWallet) -> Result<(), String> {
    let mut want: BTreeMap<&AssetCode, [u128; 4]> = BTreeMap::new();
    for r in w.transfers.values() {
        match (&r.params, &r.outcome) {
            (TransferParams::Credit { asset, amount_minor }, Outcome::Done { .. }) => {
                want.entry(asset).or_default()[0] += u128::from(*amount_minor);
            }
            (TransferParams::Debit { asset, amount_minor }, Outcome::Done { .. }) => {
                want.entry(asset).or_default()[1] += u128::from(*amount_minor);
            }
            (TransferParams::Pay { legs, .. }, outcome @ (Outcome::Settled | Outcome::Refunded)) => {
                for leg in legs {
                    let w = want.entry(&leg.asset).or_default();
                    w[2] += u128::from(leg.amount_minor);
                    w[3] += u128::from(leg.amount_minor) * u128::from(*outcome == Outcome::Refunded);
                }
            }
            _ => {}
        }
    }
    for (asset, a) in &w.accounts {
        let got = [a.credited_minor, a.debited_minor, a.settled_minor, a.refunded_minor];
        let wanted = want.remove(asset).unwrap_or_default();
        if got != wanted {
            return Err(format!(
                "{user}/{asset}: totals (credited, debited, settled, refunded) {got:?}, transfers {wanted:?}"
            ));
        }
    }
    match want.into_iter().find(|(_, w)| *w != [0; 4]) {
        Some((asset, w)) => Err(format!("{user}/{asset}: transfers add up to {w:?}, but there is no account")),
        None => Ok(()),
    }
}

/// An order (live or archived) that took a wallet payment: its user's wallet settled that
/// payment for it, and refunded it exactly when the order is refunded.
///
/// # Errors
/// The order and what its user's wallet holds.
pub(super) fn order_took(cores: &[ShardCore], o: &Order) -> Result<(), String> {
    let Some(tid) = o.payment.as_ref().and_then(|p| p.payment_id.strip_prefix("wallet:")) else {
        return Ok(());
    };
    let w = cores.iter().find_map(|c| c.wallet_book().get(&o.user_id));
    let record = w.and_then(|w| w.transfers.get(tid));
    let for_it =
        record.is_some_and(|r| matches!(r.params, TransferParams::Pay { order_id, .. } if order_id == o.order_id));
    let settled = w.and_then(|w| w.payments.get(&o.order_id)).is_some_and(|t| **t == *tid);
    let right = match record.map(|r| &r.outcome) {
        Some(Outcome::Refunded) => o.status == OrderStatus::Refunded && !settled,
        Some(Outcome::Settled) => o.status != OrderStatus::Refunded && settled,
        _ => false,
    };
    if for_it && right {
        return Ok(());
    }
    Err(format!(
        "order {} ({}) took wallet:{tid}, but {}'s wallet holds {:?} (settled for the order: {settled})",
        o.order_id,
        o.status,
        o.user_id,
        record.map(|r| (&r.params, &r.outcome))
    ))
}

/// Every settled wallet payment whose order is not live belongs to an archived order that took
/// it and is still paid for (the audit checks the live ones).
///
/// # Errors
/// The payment and its order.
pub(super) fn archived_payments(cores: &[ShardCore], archived: &[Arc<Order>]) -> Result<(), String> {
    let by_id: BTreeMap<OrderId, &Arc<Order>> = archived.iter().map(|o| (o.order_id, o)).collect();
    let n = cores.len();
    for book in cores.iter().map(ShardCore::wallet_book) {
        for (user, w) in &book.users {
            for (order_id, tid) in &w.payments {
                if cores[crate::snowflake::shard_of(order_id.0, n)].order(*order_id).is_some() {
                    continue;
                }
                let o = by_id.get(order_id);
                let took = o.is_some_and(|o| {
                    o.user_id == *user
                        && o.payment.as_ref().is_some_and(|p| *p.payment_id == *format!("wallet:{tid}"))
                        && !matches!(
                            o.status,
                            OrderStatus::Canceled | OrderStatus::PendingPayment | OrderStatus::Refunded
                        )
                });
                if !took {
                    return Err(format!(
                        "{user}'s wallet payment {tid} is settled for order {order_id}, which is {:?}",
                        o.map(|o| (o.status, &o.payment))
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every shard's wallets, for the wallet model.
pub(super) fn all_books(cores: &[ShardCore]) -> Vec<&WalletBook> {
    cores.iter().map(ShardCore::wallet_book).collect()
}
