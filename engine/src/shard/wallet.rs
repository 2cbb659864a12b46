//! Wallets on their user's shard: credits, debits, reads, and a payment's TCC (issue 14).
//!
//! Reads go through the shard too and are answered with the batch's other replies, once the
//! batch is durable: a reader never sees money that a crash could take back.

use std::sync::Arc;

use super::msg::{WalletMsg, WalletPay};
use super::{Deferred, Reply, ShardCore};
use crate::domain::{Initiator, Order, OrderId, UserId};
use crate::error::{EngineError, EngineResult};
use crate::event::Event;
use crate::order::{self, Decision, OrderCommand};
use crate::state_machine::OrderEventKind;
use crate::wallet::decide::{check_legs, decide_movement, earlier, refuse, Movement, Verdict};
use crate::wallet::view::{account_view, entry_page, wallet_view};
use crate::wallet::{tcc, AssetCode, Outcome, TransferFailure, TransferParams, TransferReceipt, WalletEvent};

impl ShardCore {
    pub(super) fn handle_wallet(&mut self, user_id: UserId, msg: WalletMsg) {
        match msg {
            WalletMsg::Move(m, reply) => {
                let result = self.wallet_move(*m);
                self.replies.push(Deferred::Receipt(reply, Box::new(result)));
            }
            WalletMsg::Get(reply) => {
                let view = wallet_view(&self.assets, &user_id, self.wallets.get(&user_id));
                self.replies.push(Deferred::Wallet(reply, Box::new(Ok(view))));
            }
            WalletMsg::Entries(q, reply) => {
                let w = self.wallets.get(&user_id);
                let page = entry_page(&self.assets, w, q.asset.as_ref(), q.before, q.limit);
                self.replies.push(Deferred::Entries(reply, Box::new(Ok(page))));
            }
        }
    }

    /// Apply a wallet event and journal it. The decide functions only produce events that
    /// apply; one that does not is a broken invariant: stop (recovery replays the log).
    fn apply_wallet(&mut self, e: WalletEvent) {
        if let Err(err) = self.wallets.apply(&e) {
            crate::fatal::fail_stop(&format!("shard-{}", self.id), &format_args!("{err} ({e:?})"));
        }
        match e {
            WalletEvent::Frozen { .. } => self.open_tries += 1,
            WalletEvent::Settled { .. } | WalletEvent::Unfrozen { .. } => self.open_tries -= 1,
            _ => {}
        }
        let moved = !matches!(e, WalletEvent::Rejected { .. });
        if moved && !self.dirty_wallets.contains(e.user_id()) {
            self.dirty_wallets.push(e.user_id().clone());
        }
        if self.config.outbox && moved {
            self.note_outbox_accounts(&e);
        }
        self.events.push(Event::Wallet(e));
    }

    /// Remember the accounts a wallet change touched, for the outbox (issue 15), each once.
    fn note_outbox_accounts(&mut self, e: &WalletEvent) {
        let user_id = e.user_id();
        let assets: Vec<AssetCode> = match e {
            WalletEvent::Credited { asset, .. } | WalletEvent::Debited { asset, .. } => vec![asset.clone()],
            WalletEvent::Frozen { legs, .. } => legs.iter().map(|l| l.asset.clone()).collect(),
            _ => {
                let record = self.wallets.get(user_id).and_then(|w| w.transfers.get(e.transfer_id()));
                match record.map(|r| &r.params) {
                    Some(TransferParams::Pay { legs, .. }) => legs.iter().map(|l| l.asset.clone()).collect(),
                    _ => Vec::new(),
                }
            }
        };
        for asset in assets {
            if !self.outbox_accounts.iter().any(|(u, a)| u == user_id && *a == asset) {
                self.outbox_accounts.push((user_id.clone(), asset));
            }
        }
    }

    /// The outbox's copy of each account this batch changed, as the batch left it.
    pub(super) fn outbox_wallets(&mut self) {
        for (user_id, asset) in std::mem::take(&mut self.outbox_accounts) {
            let Some(a) = self.wallets.get(&user_id).and_then(|w| w.accounts.get(&asset)) else { continue };
            let account = account_view(&self.assets, &asset, a);
            let at_ms = self.now_ms;
            let wallet = crate::event::OutboxWallet { user_id, account, at_ms };
            self.events.push(Event::Outbox(crate::event::OutboxEvent::Wallet(Box::new(wallet))));
        }
    }

    /// The wallets this batch changed, as the batch left them (for pushes once durable).
    pub(super) fn take_wallet_publication(&mut self) -> Vec<crate::wallet::WalletView> {
        let dirty = std::mem::take(&mut self.dirty_wallets);
        dirty.iter().map(|u| wallet_view(&self.assets, u, self.wallets.get(u))).collect()
    }

    /// Close every try open longer than `tcc_try_timeout_ms` (TigerBeetle's pending transfer
    /// timeout): settle it if its order took the payment, else cancel it. A live payment's try
    /// closes in its own batch, so this only finds tries a log left open (it runs only while
    /// some are).
    pub(super) fn close_stale_tries(&mut self) {
        let timeout = i64::try_from(self.config.tcc_try_timeout_ms).unwrap_or(i64::MAX);
        let now = self.now_ms;
        let stale: Vec<(UserId, Box<str>, OrderId)> = self
            .wallets
            .open_tries()
            .filter(|(_, _, t)| t.at_ms.saturating_add(timeout) <= now)
            .map(|(u, id, t)| (u.clone(), id.clone(), t.order_id))
            .collect();
        for (user_id, transfer_id, order_id) in stale {
            let order = self.orders.get(&order_id);
            let e = tcc::close_try(user_id, transfer_id, order.map(|o| &**o), now);
            self.apply_wallet(e);
        }
    }

    fn wallet_move(&mut self, m: Movement) -> EngineResult<TransferReceipt> {
        let (user_id, transfer_id) = (m.user_id.clone(), m.transfer_id.clone());
        let asset = match &m.params {
            TransferParams::Credit { asset, .. } | TransferParams::Debit { asset, .. } => asset.clone(),
            TransferParams::Pay { .. } => return Err(EngineError::invalid("a payment is not a credit or debit")),
        };
        let outcome = match decide_movement(self.wallets.get(&user_id), m, self.now_ms) {
            Verdict::Apply(e) => {
                self.apply_wallet(e);
                self.wallets.get(&user_id).and_then(|w| w.transfers.get(&transfer_id)).map(|r| r.outcome.clone())
            }
            Verdict::Again(o) => Some(o),
            Verdict::Refused(event, err) => {
                if let Some(e) = event {
                    self.apply_wallet(*e);
                }
                return Err(err);
            }
        };
        match outcome {
            Some(Outcome::Done { balance_minor, frozen_minor, version }) => {
                let a = crate::wallet::Account { balance_minor, frozen_minor, version, ..Default::default() };
                let account = account_view(&self.assets, &asset, &a);
                Ok(TransferReceipt { user_id, transfer_id, account })
            }
            _ => Err(EngineError::invalid("transfer id names a payment, not a credit or debit")),
        }
    }

    /// `pay_with_wallet` on the order's (and its user's) shard. Try, confirm and the order's
    /// move to `paid` are one batch, so they are durable together or not at all; a failed
    /// check freezes nothing and is remembered under the transfer id.
    pub(super) fn run_wallet_pay(&mut self, order_id: OrderId, pay: WalletPay, reply: Reply<Arc<Order>>) {
        let found = self.find_order(order_id, true);
        let Some((order, _)) = found.filter(|(o, _)| pay.owner.as_deref().is_none_or(|u| *u == *o.user_id)) else {
            return self.reply_order(Some(reply), Err(EngineError::UnknownOrder { order_id }));
        };
        let user_id = order.user_id.clone();
        let params = TransferParams::Pay { order_id, legs: pay.legs.clone() };
        match earlier(self.wallets.get(&user_id), &pay.transfer_id, &params) {
            Some(Verdict::Refused(_, e)) => return self.reply_order(Some(reply), Err(e)),
            Some(Verdict::Again(_)) => return self.reply_order(Some(reply), paid_again(order, &pay.transfer_id)),
            Some(Verdict::Apply(_)) => return self.reply_order(Some(reply), Ok(order)),
            None => {}
        }
        let payment_id = tcc::payment_id(&pay.transfer_id);
        let cmd = OrderCommand {
            opts: crate::domain::TransitionOptions { expected_version: pay.expected_version, reason: None },
            payment: Some((payment_id.clone(), order.total)),
            ..OrderCommand::new(OrderEventKind::Pay, Initiator::User)
        };
        let checked = match order::decide(&order, &cmd, self.now_ms, self.config.dispute_window_ms) {
            Ok(Decision::Transition(..)) => {
                check_legs(&self.assets, self.wallets.get(&user_id), &pay.legs, order.total)
            }
            Ok(Decision::Duplicate) => Err(TransferFailure::AlreadyPaid { order_id }),
            Err(e) => Err(TransferFailure::from_error(&e).unwrap_or(TransferFailure::UnknownOrder { order_id })),
        };
        if let Err(failure) = checked {
            return self.wallet_refused(user_id, pay.transfer_id, params, failure, reply);
        }
        // Try.
        let transfer_id = pay.transfer_id;
        let (legs, at_ms) = (pay.legs, self.now_ms);
        self.apply_wallet(WalletEvent::Frozen {
            user_id: user_id.clone(),
            transfer_id: transfer_id.clone(),
            order_id,
            legs,
            at_ms,
        });
        // The order moves through the state machine as any payment does (its reservations are
        // confirmed before the reply).
        self.run_command(order_id, cmd, Some(reply));
        // Confirm if the order took this payment, else cancel: nothing in between survives the batch.
        let e = tcc::close_try(user_id, transfer_id, self.orders.get(&order_id).map(|o| &**o), at_ms);
        self.apply_wallet(e);
    }

    fn wallet_refused(
        &mut self,
        user_id: UserId,
        transfer_id: Box<str>,
        params: TransferParams,
        failure: TransferFailure,
        reply: Reply<Arc<Order>>,
    ) {
        if let Verdict::Refused(event, err) = refuse(user_id, transfer_id, params, failure, self.now_ms) {
            if let Some(e) = event {
                self.apply_wallet(*e);
            }
            self.reply_order(Some(reply), Err(err));
        }
    }

    /// After an order's transition: a confirmed refund of a wallet-paid order credits each
    /// leg back, once (the payment leaves the wallet's `payments` as it is refunded).
    pub(super) fn refund_wallet_payment(&mut self, order: &Order, kind: OrderEventKind) {
        if kind != OrderEventKind::ConfirmRefund {
            return;
        }
        let Some(transfer_id) = self.wallets.get(&order.user_id).and_then(|w| w.payments.get(&order.order_id)).cloned()
        else {
            return;
        };
        let e = WalletEvent::Refunded {
            user_id: order.user_id.clone(),
            transfer_id,
            order_id: order.order_id,
            at_ms: self.now_ms,
        };
        self.apply_wallet(e);
    }
}

impl ShardCore {
    /// This shard's wallets, read in place (a simulation checks them after every batch).
    #[cfg(any(test, feature = "sim"))]
    pub fn wallet_book(&self) -> &crate::wallet::WalletBook {
        &self.wallets
    }
}

/// The answer to a retry of a payment the transfer id already names (same parameters): the
/// order if it took this payment (settled, or refunded since); else the payment was canceled
/// (or its try is still open after a crash), and the retry says so instead of claiming a
/// payment the order never took. The id stays spent: a new attempt needs a new transfer id.
fn paid_again(order: Arc<Order>, transfer_id: &str) -> EngineResult<Arc<Order>> {
    if tcc::took(Some(&order), transfer_id) {
        return Ok(order);
    }
    Err(EngineError::invalid(format!(
        "wallet payment {transfer_id} did not pay order {} (it was canceled); pay with a new transfer id",
        order.order_id
    )))
}
