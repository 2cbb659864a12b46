//! Judging wallet answers against the model, and the model against the books.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{assets_of, Kept, PayReq, Req, Touch, WalletModel, PAY_REFUSALS};
use crate::domain::{Order, OrderStatus, UserId};
use crate::error::{EngineError, EngineResult};
use crate::wallet::{AssetCode, Outcome, TransferParams, TransferReceipt, UserWallet, WalletBook, WalletView};

/// The code of an answer (`ok` for success).
fn code_of<T>(r: &EngineResult<T>) -> &'static str {
    r.as_ref().err().map_or("ok", EngineError::code)
}

impl WalletModel {
    fn take(&mut self, req: u64) -> Result<(Req, Vec<Touch>), String> {
        self.pending.remove(&req).ok_or_else(|| "a wallet answer for a request nobody sent".to_string())
    }

    /// The answer to a credit or debit.
    ///
    /// # Errors
    /// The answer contradicts the model.
    pub fn answer_move(&mut self, req: u64, result: &EngineResult<TransferReceipt>) -> Result<(), String> {
        let (Req::Move { user, tid, params }, touches) = self.take(req)? else {
            return Err("the simulator mixed up two wallet answers".into());
        };
        self.release(&user, &touches);
        let debit = matches!(params, TransferParams::Debit { .. });
        let kept = match (result, code_of(result)) {
            (_, "storage_unavailable" | "unavailable") => {
                self.lost(&user, &tid, &touches);
                return Ok(());
            }
            (_, "idempotency_conflict") => return self.judge_conflict(&user, &tid, &params),
            (Ok(r), _) if r.account.frozen.is_zero() => Kept::Receipt(r.clone()),
            (Err(e), "insufficient_funds") if debit => Kept::Failed(e.clone()),
            (r, code) => return Err(format!("{user}'s transfer {tid} ({params:?}) answered {code}: {r:?}")),
        };
        if self.again(&user, &tid, &params, &kept)? {
            return Ok(());
        }
        let tainted = self.tainted(&user, &tid);
        if !tainted && self.solo(&user, &touches, 1) {
            if let Some(t) = touches.first() {
                self.expect_move(&user, &tid, &params, t, &kept)?;
            }
        }
        self.own(&user, &tid, params.clone(), kept.clone());
        if let (
            Kept::Receipt(_),
            TransferParams::Credit { asset, amount_minor } | TransferParams::Debit { asset, amount_minor },
        ) = (&kept, &params)
        {
            if tainted {
                self.mark_unknown(&user, [asset]);
            } else {
                let amount = i128::from(*amount_minor);
                self.apply(&user, asset, if debit { -amount } else { amount }, 1);
            }
        }
        Ok(())
    }

    /// A credit or debit decided on a known balance: exactly what it must answer.
    fn expect_move(
        &self,
        user: &UserId,
        tid: &Arc<str>,
        params: &TransferParams,
        t: &Touch,
        kept: &Kept,
    ) -> Result<(), String> {
        let (asset, amount, credit) = match params {
            TransferParams::Credit { asset, amount_minor } => (asset, *amount_minor, true),
            TransferParams::Debit { asset, amount_minor } => (asset, *amount_minor, false),
            TransferParams::Pay { .. } => return Ok(()),
        };
        let right = match kept {
            Kept::Receipt(r) => {
                let after = if credit { t.balance + i128::from(amount) } else { t.balance - i128::from(amount) };
                after >= 0 && r.account.balance == self.dec(asset, after) && r.account.version == t.version + 1
            }
            Kept::Failed(EngineError::InsufficientFunds { needed_minor, available_minor, .. }) => {
                !credit
                    && i128::from(amount) > t.balance
                    && *needed_minor == amount
                    && i128::from(*available_minor) == t.balance
            }
            _ => false,
        };
        if right {
            return Ok(());
        }
        Err(format!(
            "{user}'s transfer {tid} ({params:?}) on a known balance of {} (version {}) answered {kept:?}",
            t.balance, t.version
        ))
    }

    /// The answer to a `pay_with_wallet` (the order side is `Model::judge`'s).
    ///
    /// # Errors
    /// The answer contradicts the model.
    pub fn answer_pay(&mut self, req: u64, result: &EngineResult<Arc<Order>>) -> Result<(), String> {
        let (Req::Pay(p), touches) = self.take(req)? else {
            return Err("the simulator mixed up two wallet answers".into());
        };
        let (user, tid) = (&p.user, &p.tid);
        self.release(user, &touches);
        let code = code_of(result);
        if !p.owner_ok {
            return match code {
                "unknown_order" | "storage_unavailable" | "unavailable" => Ok(()),
                _ => Err(format!("payment {tid} of order {} by another owner answered {code}", p.order_id)),
            };
        }
        let kept = match (result, code) {
            (_, "storage_unavailable" | "unavailable") => {
                self.lost(user, tid, &touches);
                return Ok(());
            }
            (_, "idempotency_conflict") => return self.judge_conflict(user, tid, &p.params),
            (Ok(_), _) => Kept::Paid,
            (Err(e), code) if PAY_REFUSALS.contains(&code) => Kept::Failed(e.clone()),
            (Err(e), code) => return Err(format!("payment {tid} of order {} answered {code}: {e}", p.order_id)),
        };
        pay_rules(&p, code)?;
        if self.again(user, tid, &p.params, &kept)? {
            return Ok(());
        }
        let tainted = self.tainted(user, tid);
        if !tainted && self.solo(user, &touches, 1) {
            self.expect_pay(&p, &touches, code)?;
        }
        self.own(user, tid, p.params.clone(), kept.clone());
        if kept == Kept::Paid {
            self.pay_settled(&p, tainted);
        }
        Ok(())
    }

    /// A payment decided on known balances: refused if a leg is above its balance, never
    /// `insufficient_funds` if every leg is covered.
    fn expect_pay(&self, p: &PayReq, touches: &[Touch], code: &str) -> Result<(), String> {
        let TransferParams::Pay { legs, .. } = &p.params else { return Ok(()) };
        let short =
            legs.iter().any(|l| touches.iter().any(|t| t.asset == l.asset && i128::from(l.amount_minor) > t.balance));
        if (short && code == "ok") || (!short && code == "insufficient_funds") {
            let known: Vec<(&AssetCode, i128)> = touches.iter().map(|t| (&t.asset, t.balance)).collect();
            return Err(format!("payment {} with legs {legs:?} on known balances {known:?} answered {code}", p.tid));
        }
        Ok(())
    }

    /// A payment answered `ok` for the first time: its legs left the wallet (try and confirm:
    /// two versions per account).
    fn pay_settled(&mut self, p: &PayReq, tainted: bool) {
        let assets = assets_of(&p.params);
        if tainted {
            self.mark_unknown(&p.user, &assets);
            return;
        }
        if let TransferParams::Pay { legs, .. } = &p.params {
            for leg in legs {
                self.apply(&p.user, &leg.asset, -i128::from(leg.amount_minor), 2);
            }
        }
    }

    /// The answer to a `confirm_refund` of an order a wallet payment was sent for (what it
    /// refunded is learned from the order, by [`WalletModel::learn_order`]).
    pub fn answer_refund(&mut self, req: u64, result: &EngineResult<Arc<Order>>) -> Result<(), String> {
        let (Req::Refund { user, order_id }, touches) = self.take(req)? else {
            return Err("the simulator mixed up two wallet answers".into());
        };
        self.release(&user, &touches);
        if matches!(code_of(result), "storage_unavailable" | "unavailable") {
            self.mark_all_unknown(&user);
            self.refunds_tainted.insert(order_id);
        }
        Ok(())
    }

    /// The answer to a read of a wallet: nothing frozen; the known accounts if nothing may
    /// have moved them.
    pub fn answer_read(&mut self, req: u64, result: &EngineResult<WalletView>) -> Result<(), String> {
        let (Req::Read { user }, touches) = self.take(req)? else {
            return Err("the simulator mixed up two wallet answers".into());
        };
        let view = match result {
            Ok(v) => v,
            Err(e) if matches!(e.code(), "storage_unavailable" | "unavailable") => return Ok(()),
            Err(e) => return Err(format!("get_wallet of {user} answered {e}")),
        };
        let solo = self.solo(&user, &touches, 0);
        for a in &view.accounts {
            let t = touches.iter().find(|t| t.asset == a.asset);
            let known =
                t.is_none_or(|t| !solo || (a.balance == self.dec(&t.asset, t.balance) && a.version == t.version));
            if !a.frozen.is_zero() || !known {
                return Err(format!("get_wallet of {user} answered {a:?}; known: {t:?}"));
            }
        }
        Ok(())
    }

    /// Any order answered: one that took a wallet payment took one the model does not know
    /// refused; a wallet-paid order seen refunded for the first time got its legs back.
    ///
    /// # Errors
    /// The order took a payment its transfer id was refused, or of another order.
    pub fn learn_order(&mut self, order: &Order) -> Result<(), String> {
        let Some(tid) = order.payment.as_ref().and_then(|p| p.payment_id.strip_prefix("wallet:")) else {
            return Ok(());
        };
        let key = (order.user_id.clone(), Arc::from(tid));
        let owner = self.transfers.get(&key).and_then(|t| t.owner.as_ref());
        if let Some((params, kept)) = owner {
            let same = matches!(params, TransferParams::Pay { order_id, .. } if *order_id == order.order_id);
            if !same || *kept != Kept::Paid {
                return Err(format!(
                    "order {} took wallet:{tid}, which was {params:?} answered {kept:?}",
                    order.order_id
                ));
            }
        }
        if order.status != OrderStatus::Refunded || !self.refunds_seen.insert(order.order_id) {
            return Ok(());
        }
        let t = self.transfers.get(&key).filter(|t| !t.tainted && !self.refunds_tainted.contains(&order.order_id));
        match t.and_then(|t| t.owner.as_ref()).map(|o| o.0.clone()) {
            Some(TransferParams::Pay { legs, .. }) => {
                for leg in &legs {
                    self.apply(&order.user_id, &leg.asset, i128::from(leg.amount_minor), 1);
                }
            }
            _ => self.mark_all_unknown(&order.user_id),
        }
        Ok(())
    }

    /// A crash: every request out is unanswered for good.
    pub fn forget_all(&mut self) {
        for (_, (req, touches)) in std::mem::take(&mut self.pending) {
            match req {
                Req::Move { user, tid, .. } => self.lost(&user, &tid, &touches),
                Req::Pay(p) if p.owner_ok => self.lost(&p.user, &p.tid, &touches),
                Req::Refund { user, order_id } => {
                    self.mark_all_unknown(&user);
                    self.refunds_tainted.insert(order_id);
                }
                Req::Pay(_) | Req::Read { .. } => {}
            }
        }
        self.accounts.values_mut().for_each(|a| a.outstanding = 0);
    }

    /// With nothing in flight: every known account equals its book (balance, version, nothing
    /// frozen), per asset too; unknown ones are read back. After a recovery also every transfer
    /// id answered as its own is in the book with that outcome.
    ///
    /// # Errors
    /// The first disagreement.
    pub fn check_books(&mut self, books: &[&WalletBook], recovered: bool) -> Result<(), String> {
        let mut sums: BTreeMap<AssetCode, (i128, i128)> = BTreeMap::new();
        let mut matched = 0;
        for ((user, asset), a) in &mut self.accounts {
            let held = books.iter().find_map(|b| b.get(user)).and_then(|w| w.accounts.get(asset));
            matched += usize::from(held.is_some());
            let (balance, frozen, version) = held.map_or((0, 0, 0), |h| (h.balance_minor, h.frozen_minor, h.version));
            if a.unknown {
                (a.balance, a.version, a.unknown) = (i128::from(balance), version, false);
            } else if (a.balance, a.version, frozen) != (i128::from(balance), version, 0) {
                let (known, at) = (a.balance, a.version);
                return Err(format!(
                    "{user}/{asset}: the answers make {known} at version {at}, the book {balance} \
                     (+{frozen} frozen) at version {version}"
                ));
            }
            let s = sums.entry(asset.clone()).or_default();
            s.0 += a.balance;
            s.1 += i128::from(balance) + i128::from(frozen);
        }
        let in_books: usize = books.iter().flat_map(|b| b.users.values()).map(|w| w.accounts.len()).sum();
        if in_books != matched {
            return Err(format!("the books hold {in_books} accounts, but requests moved only {matched} of them"));
        }
        if let Some((asset, (model, book))) = sums.iter().find(|(_, (m, b))| m != b) {
            return Err(format!("{asset}: the answers sum to {model}, the books to {book}"));
        }
        if recovered {
            self.check_kept(books)?;
        }
        Ok(())
    }

    /// Every transfer id answered as its own is in its user's book with the same parameters and
    /// outcome (an acknowledged movement survives every crash).
    fn check_kept(&self, books: &[&WalletBook]) -> Result<(), String> {
        // Transfers are ordered by user: look each user's wallet up once.
        let mut wallet: Option<(&UserId, Option<&UserWallet>)> = None;
        for ((user, tid), t) in &self.transfers {
            let Some((params, kept)) = &t.owner else { continue };
            let w = match wallet {
                Some((u, w)) if u == user => w,
                _ => books.iter().find_map(|b| b.get(user)),
            };
            wallet = Some((user, w));
            let record = w.and_then(|w| w.transfers.get(&**tid));
            if !record.is_some_and(|r| r.params == *params && self.same_outcome(params, kept, &r.outcome)) {
                let got = record.map(|r| (&r.params, &r.outcome));
                return Err(format!(
                    "{user}'s transfer {tid} was answered {kept:?} for {params:?}, the book holds {got:?}"
                ));
            }
        }
        Ok(())
    }

    /// The book's outcome of a transfer is the answer the clients were given.
    fn same_outcome(&self, params: &TransferParams, kept: &Kept, outcome: &Outcome) -> bool {
        match (kept, outcome, params) {
            (
                Kept::Receipt(k),
                Outcome::Done { balance_minor, frozen_minor, version },
                TransferParams::Credit { asset, .. } | TransferParams::Debit { asset, .. },
            ) => {
                k.account.balance == self.dec(asset, i128::from(*balance_minor))
                    && *frozen_minor == 0
                    && k.account.version == *version
            }
            (Kept::Paid, Outcome::Settled | Outcome::Refunded, _) => true,
            (Kept::Failed(e), Outcome::Failed(f), _) => f.to_error() == *e,
            _ => false,
        }
    }
}

/// What a payment's legs allow, whoever decides it: legs not worth the total are never paid
/// nor short of funds; legs worth it never mismatch; a version conflict needs a version.
fn pay_rules(p: &PayReq, code: &str) -> Result<(), String> {
    let wrong = match code {
        "ok" | "insufficient_funds" => !p.sums,
        "amount_mismatch" => p.sums,
        "version_conflict" => !p.versioned,
        _ => false,
    };
    if wrong {
        let worth = if p.sums { "worth" } else { "not worth" };
        return Err(format!("payment {} of order {} with legs {worth} the total answered {code}", p.tid, p.order_id));
    }
    Ok(())
}
