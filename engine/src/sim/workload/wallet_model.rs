//! The reference model of the wallets (issue 14): what the clients know of every account and
//! transfer id, and what the answers must be where that knowledge determines them.
//!
//! An account's balance and version are known exactly while every request that may have moved
//! it was answered; a request a crash left unanswered makes them unknown until the next quiet
//! point or recovery, where they are read back from the books. Determined, and checked:
//! * a transfer id belongs to the first parameters the engine answers as its own: every later
//!   answer for those parameters is that answer again (the same receipt, the same refusal, `ok`
//!   for the paid order), every answer for other parameters `idempotency_conflict`, and a
//!   conflict comes only where other parameters were sent with the id;
//! * a credit is accepted, a debit is accepted or `insufficient_funds`, and no receipt or read
//!   shows money frozen (a try never outlives its batch);
//! * a request on accounts nothing else may move while it is out (no other movement out when it
//!   is sent, none sent before its answer) is decided on the known balance: a debit is
//!   `insufficient_funds` exactly when it exceeds it (naming it), a receipt or a read shows the
//!   known balance and version moved by the amount, a payment with a leg above it is refused, one
//!   covered is never `insufficient_funds`;
//! * a payment whose legs are not worth the order total is never accepted nor
//!   `insufficient_funds`; one that is never `amount_mismatch`; `version_conflict` only with an
//!   expected version; a payment naming another user as the owner is `unknown_order`;
//! * at quiet points and after every recovery every known account equals its book (balance and
//!   version, nothing frozen; per asset too), and after every recovery every transfer id answered
//!   as its own is in its user's book with that outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::domain::{OrderId, UserId};
use crate::error::EngineError;
use crate::wallet::{AssetCode, Assets, TransferParams, TransferReceipt};

/// What the clients know of one account.
#[derive(Debug, Clone, Default)]
struct Acct {
    /// Signed: answers arrive in another order than the shard decided them (a payment's or a
    /// refund's answer waits for its stock effects), so the sum of those in may dip below zero
    /// until the rest arrive.
    balance: i128,
    version: u64,
    /// A request that may have moved it went unanswered: balance and version are not known.
    unknown: bool,
    /// Requests out that may move it.
    outstanding: u32,
    /// Requests ever sent that may move it (another sent meanwhile shows as a change).
    sends: u64,
}

/// An account as a request found it when sent.
#[derive(Debug, Clone)]
struct Touch {
    asset: AssetCode,
    /// Known, and no other movement was out.
    idle: bool,
    sends: u64,
    balance: i128,
    version: u64,
}

/// An answer a transfer id keeps.
#[derive(Debug, Clone, PartialEq)]
enum Kept {
    Receipt(TransferReceipt),
    Paid,
    Failed(EngineError),
}

/// A transfer id as the clients know it.
#[derive(Debug, Default)]
struct Transfer {
    /// Every distinct parameter set sent with it.
    sent: Vec<TransferParams>,
    /// The parameters answered as the id's own, and that answer.
    owner: Option<(TransferParams, Kept)>,
    /// A request with it went unanswered: the book may hold it without the clients knowing.
    tainted: bool,
}

/// A `pay_with_wallet` as sent.
pub(in crate::sim) struct PayReq {
    /// The order's user (whose wallet pays).
    pub user: UserId,
    /// The order.
    pub order_id: OrderId,
    /// The transfer id.
    pub tid: Arc<str>,
    /// As the shard takes them (legs in minor units).
    pub params: TransferParams,
    /// The legs are worth the order total.
    pub sums: bool,
    /// No owner was named, or the order's user.
    pub owner_ok: bool,
    /// An expected version was sent.
    pub versioned: bool,
}

/// A request in flight.
enum Req {
    Move { user: UserId, tid: Arc<str>, params: TransferParams },
    Pay(Box<PayReq>),
    Refund { user: UserId, order_id: OrderId },
    Read { user: UserId },
}

/// The refusals a payment may keep under its id.
const PAY_REFUSALS: [&str; 5] =
    ["amount_mismatch", "insufficient_funds", "already_paid", "version_conflict", "order_not_payable"];

/// What the wallet clients know: accounts, transfer ids, requests in flight (see the module).
pub(in crate::sim) struct WalletModel {
    assets: Assets,
    accounts: BTreeMap<(UserId, AssetCode), Acct>,
    transfers: BTreeMap<(UserId, Arc<str>), Transfer>,
    pending: BTreeMap<u64, (Req, Vec<Touch>)>,
    next_req: u64,
    /// Orders a wallet payment was sent for, with their user (their refunds may move money).
    pay_orders: BTreeMap<OrderId, UserId>,
    /// Wallet-paid orders seen refunded (the refund counted once).
    refunds_seen: BTreeSet<OrderId>,
    /// Orders a `confirm_refund` went unanswered for.
    refunds_tainted: BTreeSet<OrderId>,
}

impl WalletModel {
    /// Nothing known yet, over the engine's `assets`.
    pub fn new(assets: Assets) -> Self {
        Self {
            assets,
            accounts: BTreeMap::new(),
            transfers: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_req: 0,
            pay_orders: BTreeMap::new(),
            refunds_seen: BTreeSet::new(),
            refunds_tainted: BTreeSet::new(),
        }
    }

    /// The engine's assets (the clients check their requests against them).
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// The known balance of an account, in minor units.
    pub fn balance(&self, user: &UserId, asset: &str) -> Option<u64> {
        let code = self.assets.get(asset).ok()?.code.clone();
        match self.accounts.get(&(user.clone(), code)) {
            None => Some(0),
            Some(a) if !a.unknown => u64::try_from(a.balance).ok(),
            Some(_) => None,
        }
    }

    fn dec(&self, asset: &AssetCode, minor: i128) -> Decimal {
        let scale = self.assets.get(asset.as_str()).map_or(0, |a| a.scale);
        Decimal::from_i128_with_scale(minor, scale)
    }

    fn touch(&mut self, user: &UserId, asset: &AssetCode, moves: bool) -> Touch {
        let a = self.accounts.entry((user.clone(), asset.clone())).or_default();
        let t = Touch {
            asset: asset.clone(),
            idle: a.outstanding == 0 && !a.unknown,
            sends: a.sends,
            balance: a.balance,
            version: a.version,
        };
        if moves {
            a.outstanding += 1;
            a.sends += 1;
        }
        t
    }

    fn add(&mut self, req: Req, touches: Vec<Touch>) -> u64 {
        self.next_req += 1;
        self.pending.insert(self.next_req, (req, touches));
        self.next_req
    }

    fn note_sent(&mut self, user: &UserId, tid: &Arc<str>, params: &TransferParams) {
        let t = self.transfers.entry((user.clone(), tid.clone())).or_default();
        if !t.sent.contains(params) {
            t.sent.push(params.clone());
        }
    }

    /// A credit or debit sent; the number its answer comes back with.
    pub fn send_move(&mut self, user: UserId, tid: Arc<str>, params: TransferParams) -> u64 {
        let touches = assets_of(&params).iter().map(|a| self.touch(&user, a, true)).collect();
        self.note_sent(&user, &tid, &params);
        self.add(Req::Move { user, tid, params }, touches)
    }

    /// A payment sent.
    pub fn send_pay(&mut self, p: PayReq) -> u64 {
        let mut touches = Vec::new();
        if p.owner_ok {
            touches = assets_of(&p.params).iter().map(|a| self.touch(&p.user, a, true)).collect();
            self.note_sent(&p.user, &p.tid, &p.params);
            self.pay_orders.insert(p.order_id, p.user.clone());
        }
        self.add(Req::Pay(Box::new(p)), touches)
    }

    /// A read of a user's wallet sent.
    pub fn send_read(&mut self, user: UserId) -> u64 {
        let codes: Vec<AssetCode> = self.assets.iter().map(|a| a.code.clone()).collect();
        let touches = codes.iter().map(|a| self.touch(&user, a, false)).collect();
        self.add(Req::Read { user }, touches)
    }

    /// A `confirm_refund` sent: a movement if a wallet payment was ever sent for the order.
    pub fn send_refund(&mut self, order_id: OrderId) -> Option<u64> {
        let user = self.pay_orders.get(&order_id)?.clone();
        let codes: Vec<AssetCode> = self.assets.iter().map(|a| a.code.clone()).collect();
        let touches = codes.iter().map(|a| self.touch(&user, a, true)).collect();
        Some(self.add(Req::Refund { user, order_id }, touches))
    }

    fn release(&mut self, user: &UserId, touches: &[Touch]) {
        for t in touches {
            if let Some(a) = self.accounts.get_mut(&(user.clone(), t.asset.clone())) {
                a.outstanding = a.outstanding.saturating_sub(1);
            }
        }
    }

    /// Nothing else may have moved these accounts while the request was out (`own`: 1 for a
    /// movement, which counted itself as sent; 0 for a read).
    fn solo(&self, user: &UserId, touches: &[Touch], own: u64) -> bool {
        touches.iter().all(|t| {
            let a = self.accounts.get(&(user.clone(), t.asset.clone()));
            t.idle && a.is_some_and(|a| !a.unknown && a.sends == t.sends + own)
        })
    }

    fn mark_unknown<'a>(&mut self, user: &UserId, assets: impl IntoIterator<Item = &'a AssetCode>) {
        for asset in assets {
            self.accounts.entry((user.clone(), asset.clone())).or_default().unknown = true;
        }
    }

    fn mark_all_unknown(&mut self, user: &UserId) {
        let codes: Vec<AssetCode> = self.assets.iter().map(|a| a.code.clone()).collect();
        self.mark_unknown(user, &codes);
    }

    /// A request whose answer will never come (a crash, a failed write).
    fn lost(&mut self, user: &UserId, tid: &Arc<str>, touches: &[Touch]) {
        self.mark_unknown(user, touches.iter().map(|t| &t.asset));
        self.transfers.entry((user.clone(), tid.clone())).or_default().tainted = true;
    }

    fn tainted(&self, user: &UserId, tid: &Arc<str>) -> bool {
        self.transfers.get(&(user.clone(), tid.clone())).is_some_and(|t| t.tainted)
    }

    /// Move a known account by `delta` minor units and `versions` versions.
    fn apply(&mut self, user: &UserId, asset: &AssetCode, delta: i128, versions: u64) {
        let a = self.accounts.entry((user.clone(), asset.clone())).or_default();
        if !a.unknown {
            a.balance += delta;
            a.version += versions;
        }
    }

    /// `idempotency_conflict` for `params` under `tid`: right only if other parameters were sent
    /// with it, and the id's own are not these.
    fn judge_conflict(&self, user: &UserId, tid: &Arc<str>, params: &TransferParams) -> Result<(), String> {
        let t = self.transfers.get(&(user.clone(), tid.clone()));
        if !t.is_some_and(|t| t.sent.iter().any(|p| p != params)) {
            return Err(format!(
                "{user}'s transfer {tid} answered idempotency_conflict, but no other parameters were sent"
            ));
        }
        if t.and_then(|t| t.owner.as_ref()).is_some_and(|(p, _)| p == params) {
            return Err(format!("{user}'s transfer {tid} answered idempotency_conflict for its own parameters"));
        }
        Ok(())
    }

    /// If `tid` already has an owner: the answer must be its answer again (true: judged).
    fn again(&self, user: &UserId, tid: &Arc<str>, params: &TransferParams, kept: &Kept) -> Result<bool, String> {
        let Some((p, k)) = self.transfers.get(&(user.clone(), tid.clone())).and_then(|t| t.owner.as_ref()) else {
            return Ok(false);
        };
        if p != params {
            return Err(format!("{user}'s transfer {tid} belongs to {p:?}, yet {params:?} was answered {kept:?}"));
        }
        if k != kept {
            return Err(format!("{user}'s transfer {tid} was answered {k:?}, and then {kept:?} for a retry"));
        }
        Ok(true)
    }

    fn own(&mut self, user: &UserId, tid: &Arc<str>, params: TransferParams, kept: Kept) {
        self.transfers.entry((user.clone(), tid.clone())).or_default().owner = Some((params, kept));
    }
}

/// The assets a transfer moves.
fn assets_of(params: &TransferParams) -> Vec<AssetCode> {
    match params {
        TransferParams::Credit { asset, .. } | TransferParams::Debit { asset, .. } => vec![asset.clone()],
        TransferParams::Pay { legs, .. } => legs.iter().map(|l| l.asset.clone()).collect(),
    }
}

mod judge;
