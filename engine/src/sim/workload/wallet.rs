//! The wallet clients (issue 14): credits of CNY and POINTS; debits, three in ten above the
//! known balance; `pay_with_wallet` on known orders with random legs (CNY, POINTS, or both,
//! worth the total; one in ten a fen off; some larger than the wallet holds; a few naming
//! another user as the owner; a few with an expected version), some with a cancel of the same
//! order right behind them (the two race); retries of a recent transfer id after a timeout with
//! the same parameters, and a few with other parameters; reads of wallets. Refunds of
//! wallet-paid orders come from the order clients (`confirm_refund`), passed payment deadlines
//! from the clock. Requests are checked by the engine's own rules
//! ([`crate::wallet::request`]) and sent as the `Engine` sends them.

use std::collections::VecDeque;
use std::sync::Arc;

use rust_decimal::Decimal;

use super::model::Asked;
use super::wallet_model::PayReq;
use super::{Waiting, Workload, USERS};
use crate::domain::{Initiator, OrderId, OrderStatus, UserId};
use crate::order::OrderCommand;
use crate::routing::shard_for_key;
use crate::shard::{OrderMsg, ShardMsg, WalletMsg};
use crate::sim::prng::SplitMix64;
use crate::snowflake::shard_of;
use crate::state_machine::OrderEventKind;
use crate::wallet::request::{check_movement, check_payment};
use crate::wallet::{TransferParams, WalletPayment};

/// Recent transfers kept for retries.
const TRANSFERS_KEPT: usize = 32;
/// Wallet clients mostly pay (and top up for) one of this many newest orders.
const NEWEST: u64 = 8;

/// A client request: the shard whose mailbox it goes to, the message, its kind.
type Op = (usize, ShardMsg, &'static str);

/// A transfer as sent, to send again (a retry after a timeout) or with other parameters.
#[derive(Clone)]
enum Resend {
    Move { user: UserId, tid: Arc<str>, credit: bool, asset: &'static str, minor: u64 },
    Pay(Box<PaySent>),
}

/// A `pay_with_wallet` as sent.
#[derive(Clone)]
struct PaySent {
    order_id: OrderId,
    user: UserId,
    tid: Arc<str>,
    /// (CNY fen, POINTS): a leg of 0 is left out.
    legs: (u64, u64),
    /// The order total in fen (100 points are worth 1.00).
    total_fen: Option<u64>,
    owner: Option<UserId>,
    expected_version: Option<u32>,
}

/// A request a client sends right after its previous one.
enum Next {
    /// The payment a top-up was for.
    Pay(Box<PaySent>),
    /// A cancel of the order a payment was just sent for (the two race).
    Cancel(OrderId),
}

/// The wallet clients' own state.
#[derive(Default)]
pub(super) struct WalletClients {
    seq: u64,
    recent: VecDeque<Resend>,
    next: VecDeque<Next>,
}

impl Workload {
    /// The request a wallet client sends right after its previous one, if one is due: the
    /// payment a top-up was for, or a cancel racing a payment.
    pub(super) fn wallet_next(&mut self) -> Option<Op> {
        Some(match self.wallet.next.pop_front()? {
            Next::Pay(p) => self.send_pay(*p),
            Next::Cancel(order_id) => {
                let asked = Asked::Command { order_id, kind: OrderEventKind::Cancel };
                self.send_command(order_id, OrderCommand::new(OrderEventKind::Cancel, Initiator::User), asked)
            }
        })
    }

    /// One wallet client's request.
    pub(super) fn wallet_op(&mut self, rng: &mut SplitMix64) -> Op {
        match rng.below(100) {
            0..=24 => self.credit_or_debit(rng, true),
            25..=34 => self.credit_or_debit(rng, false),
            35..=74 => self.pay_with_wallet(rng),
            75..=86 if !self.wallet.recent.is_empty() => self.resend(rng, false),
            87..=90 if !self.wallet.recent.is_empty() => self.resend(rng, true),
            _ => {
                let user = self.wallet_user(rng);
                self.read_wallet(user)
            }
        }
    }

    /// Mostly the buyer of one of the newest orders (a top-up before paying), else anyone.
    fn wallet_user(&self, rng: &mut SplitMix64) -> UserId {
        match self.newest_order(rng).filter(|_| rng.chance(70)) {
            Some((_, _, user)) => user,
            None => self.users[rng.below(USERS as u64) as usize].clone(),
        }
    }

    /// One of the [`NEWEST`] newest known orders (where a payment can still land), or one in
    /// five any recent one (`pick_order`); `None` before the first order.
    fn newest_order(&self, rng: &mut SplitMix64) -> Option<(OrderId, Decimal, UserId)> {
        let n = self.orders.len() as u64;
        if n == 0 {
            return None;
        }
        if rng.chance(20) {
            return Some(self.pick_order(rng));
        }
        let i = n - 1 - rng.below(n.min(NEWEST));
        self.orders.get(i as usize).cloned()
    }

    fn transfer_id(&mut self) -> Arc<str> {
        self.wallet.seq += 1;
        Arc::from(format!("w{}", self.wallet.seq))
    }

    fn remember(&mut self, sent: Resend) {
        if self.wallet.recent.len() == TRANSFERS_KEPT {
            self.wallet.recent.pop_front();
        }
        self.wallet.recent.push_back(sent);
    }

    fn credit_or_debit(&mut self, rng: &mut SplitMix64, credit: bool) -> Op {
        let user = self.wallet_user(rng);
        let asset = if rng.chance(60) { "CNY" } else { "POINTS" };
        let minor = if credit {
            100 + rng.below(if asset == "CNY" { 8_000 } else { 4_000 })
        } else {
            match self.wmodel.balance(&user, asset) {
                Some(b) if b > 0 && !rng.chance(30) => 1 + rng.below(b),
                Some(b) => b + 1 + rng.below(500),
                None => 1 + rng.below(3_000),
            }
        };
        let sent = Resend::Move { user, tid: self.transfer_id(), credit, asset, minor };
        self.remember(sent.clone());
        self.send_transfer(sent)
    }

    fn pay_with_wallet(&mut self, rng: &mut SplitMix64) -> Op {
        // Mostly one of the newest orders last known pending (a few tries): payments do land.
        let Some(mut picked) = self.newest_order(rng) else {
            return self.credit_or_debit(rng, true);
        };
        for _ in 0..4 {
            if self.model.status_of(picked.0).is_none_or(|s| s == OrderStatus::PendingPayment) {
                break;
            }
            picked = self.newest_order(rng).unwrap_or(picked);
        }
        let (order_id, total, user) = picked;
        let total_fen = total.checked_mul(Decimal::ONE_HUNDRED).filter(|d| d.fract().is_zero());
        let total_fen = total_fen.and_then(|d| u64::try_from(d).ok());
        let fen = total_fen.unwrap_or(1).max(1);
        let (mut cny, mut points) = match rng.below(100) {
            0..=39 => (fen, 0),
            40..=59 => (0, fen),
            _ if fen < 2 => (fen, 0),
            _ => {
                let p = 1 + rng.below(fen - 1);
                (fen - p, p)
            }
        };
        if rng.chance(10) {
            // A fen off the total: `amount_mismatch`.
            if cny > 1 && rng.chance(50) {
                cny -= 1;
            } else {
                points += 1;
            }
        }
        let owner = match rng.below(100) {
            0..=2 => {
                let i = rng.below(USERS as u64) as usize;
                let other = &self.users[i];
                Some(if *other == user { self.users[(i + 1) % USERS].clone() } else { other.clone() })
            }
            3..=50 => Some(user.clone()),
            _ => None,
        };
        let expected_version = if rng.chance(5) { Some(rng.below(3) as u32) } else { None };
        let pay = PaySent {
            order_id,
            user,
            tid: self.transfer_id(),
            legs: (cny, points),
            total_fen,
            owner,
            expected_version,
        };
        self.remember(Resend::Pay(Box::new(pay.clone())));
        if rng.chance(12) {
            self.wallet.next.push_back(Next::Cancel(order_id));
        }
        // Six times in ten, a wallet known short is topped up first, then pays.
        match self.top_up(rng, &pay) {
            Some(credit) => {
                self.wallet.next.push_front(Next::Pay(Box::new(pay)));
                self.send_transfer(credit)
            }
            None => self.send_pay(pay),
        }
    }

    /// A credit that covers the payment's short leg, if the wallet is known short (six times
    /// in ten).
    fn top_up(&mut self, rng: &mut SplitMix64, pay: &PaySent) -> Option<Resend> {
        let legs = [("CNY", pay.legs.0), ("POINTS", pay.legs.1)];
        let (asset, short) = legs.into_iter().find_map(|(asset, need)| {
            let held = self.wmodel.balance(&pay.user, asset)?;
            (need > held).then(|| (asset, need - held))
        })?;
        if !rng.chance(60) {
            return None;
        }
        let minor = short + rng.below(2_000);
        Some(Resend::Move { user: pay.user.clone(), tid: self.transfer_id(), credit: true, asset, minor })
    }

    /// A recent transfer again: as it was (a retry after a timeout), or with other parameters.
    fn resend(&mut self, rng: &mut SplitMix64, conflicting: bool) -> Op {
        let i = rng.below(self.wallet.recent.len() as u64) as usize;
        let Some(mut sent) = self.wallet.recent.get(i).cloned() else {
            return self.credit_or_debit(rng, true);
        };
        if conflicting {
            match &mut sent {
                Resend::Move { minor, .. } => *minor += 1,
                // One fen moved from CNY to POINTS (still worth the total), or one point more.
                Resend::Pay(p) if p.legs.0 > 1 && p.legs.1 > 0 => p.legs = (p.legs.0 - 1, p.legs.1 + 1),
                Resend::Pay(p) => p.legs.1 += 1,
            }
        }
        self.send_transfer(sent)
    }

    fn send_transfer(&mut self, sent: Resend) -> Op {
        match sent {
            Resend::Move { user, tid, credit, asset, minor } => {
                let amount = if asset == "CNY" { Decimal::new(minor as i64, 2) } else { Decimal::from(minor) };
                let Ok(m) = check_movement(self.wmodel.assets(), &user, asset, amount, &tid, credit) else {
                    return self.read_wallet(user);
                };
                let req = self.wmodel.send_move(user.clone(), tid, m.params.clone());
                let kind = if credit { "wallet_credit" } else { "wallet_debit" };
                let (tx, rx) = oneshot::channel();
                self.waiting.push_back(Waiting::Receipt(req, kind, rx));
                let shard = shard_for_key(&user, self.shard_count);
                (shard, ShardMsg::Wallet(user, WalletMsg::Move(Box::new(m), tx.into())), kind)
            }
            Resend::Pay(p) => self.send_pay(*p),
        }
    }

    fn send_pay(&mut self, p: PaySent) -> Op {
        let mut legs = Vec::new();
        if p.legs.0 > 0 {
            legs.push(("CNY".to_string(), Decimal::new(p.legs.0 as i64, 2)));
        }
        if p.legs.1 > 0 {
            legs.push(("POINTS".to_string(), Decimal::from(p.legs.1)));
        }
        let request = WalletPayment {
            order_id: p.order_id,
            legs,
            transfer_id: p.tid.to_string(),
            expected_version: p.expected_version,
            owner: p.owner.as_deref().map(String::from),
        };
        let Ok(pay) = check_payment(self.wmodel.assets(), &request) else {
            return self.read_wallet(p.user);
        };
        let params = TransferParams::Pay { order_id: p.order_id, legs: pay.legs.clone() };
        let req = self.wmodel.send_pay(PayReq {
            owner_ok: p.owner.as_ref().is_none_or(|o| *o == p.user),
            sums: p.total_fen == Some(p.legs.0 + p.legs.1),
            versioned: p.expected_version.is_some(),
            user: p.user,
            order_id: p.order_id,
            tid: p.tid.clone(),
            params,
        });
        let (tx, rx) = oneshot::channel();
        let asked = Asked::WalletPay { order_id: p.order_id, transfer_id: p.tid };
        self.waiting.push_back(Waiting::Order(asked, Some(req), rx));
        let msg = ShardMsg::Order(p.order_id, OrderMsg::WalletPay(Box::new(pay), tx.into()));
        (shard_of(p.order_id.0, self.shard_count), msg, "wallet_pay")
    }

    fn read_wallet(&mut self, user: UserId) -> Op {
        let req = self.wmodel.send_read(user.clone());
        let (tx, rx) = oneshot::channel();
        self.waiting.push_back(Waiting::Wallet(req, rx));
        let shard = shard_for_key(&user, self.shard_count);
        (shard, ShardMsg::Wallet(user, WalletMsg::Get(tx.into())), "get_wallet")
    }
}
