//! The wallets of one shard's users as data: accounts, transfers by id, open tries, settled
//! payments by order, and the newest ledger entries. [`WalletBook::apply`] is the only code that
//! changes them, for live events and for replay alike.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::asset::AssetCode;
use super::event::{Leg, TransferFailure, TransferParams, WalletEvent};
use crate::domain::{OrderId, UserId};

/// Ledger entries kept in memory per user, newest last; older ones are dropped (a bound on
/// memory per user; `list_wallet_entries` pages through what is kept).
pub const ENTRIES_KEPT_MAX: usize = 1_000;

/// One account: (user, asset). Amounts in minor units; neither is ever negative (unsigned).
///
/// The four totals make the account's own invariant, checked after every event:
/// `balance + frozen = credited − debited − settled + refunded`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable.
    pub balance_minor: u64,
    /// Held by open tries.
    pub frozen_minor: u64,
    /// Starts at 0; every change adds 1.
    pub version: u64,
    /// Everything credited.
    pub credited_minor: u128,
    /// Everything debited.
    pub debited_minor: u128,
    /// Everything settled into order payments.
    pub settled_minor: u128,
    /// Everything refunded back.
    pub refunded_minor: u128,
}

impl Account {
    /// True when `balance + frozen = credited − debited − settled + refunded`.
    pub fn conserved(&self) -> bool {
        let held = u128::from(self.balance_minor) + u128::from(self.frozen_minor);
        self.credited_minor + self.refunded_minor == held + self.debited_minor + self.settled_minor
    }
}

/// The kind of a ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Money in.
    Credit,
    /// Money out.
    Debit,
    /// Balance → frozen (a payment's try).
    Freeze,
    /// Frozen → balance (a payment's cancel).
    Unfreeze,
    /// Frozen → out (a payment's confirm).
    Settle,
    /// A settled payment's money back into the balance.
    Refund,
}

/// One movement on one account. `amount_minor` is signed: its change to the balance for
/// every kind but `settle`, whose (negative) change is to the frozen amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Per user, increasing from 1: the cursor of `list_wallet_entries`.
    pub seq: u64,
    /// The transfer.
    pub transfer_id: Box<str>,
    /// The account's asset.
    pub asset: AssetCode,
    /// Signed minor units.
    pub amount_minor: i64,
    /// Kind.
    pub kind: EntryKind,
    /// The order, for payment entries.
    pub order_id: Option<OrderId>,
    /// Engine clock, ms.
    pub at_ms: i64,
}

/// Where a transfer ended (or stands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A credit or debit, done: the account right after it (balance, frozen, version).
    Done {
        /// Balance after.
        balance_minor: u64,
        /// Frozen after.
        frozen_minor: u64,
        /// Version after.
        version: u64,
    },
    /// A payment's try is open.
    Tried,
    /// A payment settled.
    Settled,
    /// A settled payment was refunded.
    Refunded,
    /// Canceled by the engine (no failure of the caller's).
    Canceled,
    /// Refused: every retry gets this answer.
    Failed(TransferFailure),
}

/// A transfer as its id remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// What it asked for.
    pub params: TransferParams,
    /// Where it stands.
    pub outcome: Outcome,
}

/// An open try: legs frozen for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Try {
    /// The order.
    pub order_id: OrderId,
    /// The frozen legs.
    pub legs: Vec<Leg>,
    /// When it froze (engine clock, ms): `tcc_try_timeout_ms` counts from here.
    pub at_ms: i64,
}

/// One user's wallet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserWallet {
    /// Accounts by asset (only assets ever touched).
    pub accounts: BTreeMap<AssetCode, Account>,
    /// Every transfer by id (ids are scoped to the user, as idempotency keys are).
    pub transfers: BTreeMap<Box<str>, TransferRecord>,
    /// Open tries by transfer id.
    pub tries: BTreeMap<Box<str>, Try>,
    /// The settled wallet payment of each order (its transfer id), until refunded.
    pub payments: BTreeMap<OrderId, Box<str>>,
    /// The newest [`ENTRIES_KEPT_MAX`] entries, oldest first.
    pub entries: VecDeque<LedgerEntry>,
    /// The seq of the next entry.
    pub next_seq: u64,
}

/// The wallets of a set of users (one shard's, or the whole engine's in a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletBook {
    /// Wallets by user.
    pub users: BTreeMap<UserId, UserWallet>,
}

/// An event that does not fit the state it is applied to: a broken invariant (a log that
/// disagrees with itself). Live, the shard fail-stops; in replay, recovery reports corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("wallet event does not apply: {0}")]
pub struct ApplyError(pub String);

impl WalletBook {
    /// The user's wallet, if it ever held anything.
    pub fn get(&self, user_id: &str) -> Option<&UserWallet> {
        self.users.get(user_id)
    }

    /// Apply one event.
    ///
    /// # Errors
    /// [`ApplyError`] when the event does not fit (an amount that would go negative or past
    /// `u64`, a settle or cancel of a try that is not open, an account whose totals disagree).
    pub fn apply(&mut self, e: &WalletEvent) -> Result<(), ApplyError> {
        let w = self.users.entry(e.user_id().clone()).or_default();
        match e {
            WalletEvent::Credited { transfer_id, asset, amount_minor, at_ms, .. } => {
                let a = w.accounts.entry(asset.clone()).or_default();
                a.balance_minor = add(a.balance_minor, *amount_minor)?;
                a.credited_minor += u128::from(*amount_minor);
                let params = TransferParams::Credit { asset: asset.clone(), amount_minor: *amount_minor };
                w.done(transfer_id, params, asset, signed(*amount_minor, true), EntryKind::Credit, *at_ms)
            }
            WalletEvent::Debited { transfer_id, asset, amount_minor, at_ms, .. } => {
                let a = w.accounts.entry(asset.clone()).or_default();
                a.balance_minor = sub(a.balance_minor, *amount_minor)?;
                a.debited_minor += u128::from(*amount_minor);
                let params = TransferParams::Debit { asset: asset.clone(), amount_minor: *amount_minor };
                w.done(transfer_id, params, asset, signed(*amount_minor, false), EntryKind::Debit, *at_ms)
            }
            WalletEvent::Frozen { transfer_id, order_id, legs, at_ms, .. } => {
                w.freeze(transfer_id, *order_id, legs, *at_ms)
            }
            WalletEvent::Settled { transfer_id, at_ms, .. } => w.settle(transfer_id, *at_ms),
            WalletEvent::Unfrozen { transfer_id, failure, at_ms, .. } => w.unfreeze(transfer_id, failure, *at_ms),
            WalletEvent::Refunded { transfer_id, order_id, at_ms, .. } => w.refund(transfer_id, *order_id, *at_ms),
            WalletEvent::Rejected { transfer_id, params, failure, .. } => {
                let record =
                    TransferRecord { params: (**params).clone(), outcome: Outcome::Failed((**failure).clone()) };
                w.transfers.insert(transfer_id.clone(), record);
                Ok(())
            }
        }
    }

    /// Open tries of every user: (user, transfer id, try).
    pub fn open_tries(&self) -> impl Iterator<Item = (&UserId, &Box<str>, &Try)> {
        self.users.iter().flat_map(|(u, w)| w.tries.iter().map(move |(t, tr)| (u, t, tr)))
    }

    /// Check every account's totals and that frozen amounts equal the open tries' legs.
    ///
    /// # Errors
    /// What disagrees, for the first user where something does.
    pub fn check(&self) -> Result<(), ApplyError> {
        self.users.keys().try_for_each(|user| self.check_user(user))
    }

    /// [`WalletBook::check`] for one user's wallet (a simulation checks the wallets each batch
    /// changed).
    ///
    /// # Errors
    /// What disagrees.
    pub(crate) fn check_user(&self, user: &str) -> Result<(), ApplyError> {
        let Some(w) = self.users.get(user) else { return Ok(()) };
        let mut frozen: BTreeMap<&AssetCode, u64> = BTreeMap::new();
        for leg in w.tries.values().flat_map(|t| &t.legs) {
            *frozen.entry(&leg.asset).or_default() += leg.amount_minor;
        }
        for (asset, a) in &w.accounts {
            if !a.conserved() {
                return Err(ApplyError(format!("{user}/{asset}: balance + frozen disagrees with its totals")));
            }
            if frozen.get(asset).copied().unwrap_or(0) != a.frozen_minor {
                return Err(ApplyError(format!("{user}/{asset}: frozen is not the sum of open tries")));
            }
        }
        Ok(())
    }
}

impl UserWallet {
    fn done(
        &mut self,
        transfer_id: &str,
        params: TransferParams,
        asset: &AssetCode,
        delta: i64,
        kind: EntryKind,
        at_ms: i64,
    ) -> Result<(), ApplyError> {
        let a = self.accounts.get_mut(asset).ok_or_else(|| ApplyError("no account".into()))?;
        a.version += 1;
        let outcome =
            Outcome::Done { balance_minor: a.balance_minor, frozen_minor: a.frozen_minor, version: a.version };
        self.transfers.insert(transfer_id.into(), TransferRecord { params, outcome });
        self.entry(transfer_id, asset, delta, kind, None, at_ms);
        Ok(())
    }

    fn freeze(&mut self, transfer_id: &str, order_id: OrderId, legs: &[Leg], at_ms: i64) -> Result<(), ApplyError> {
        if self.tries.contains_key(transfer_id) {
            return Err(ApplyError(format!("try {transfer_id} frozen twice")));
        }
        for leg in legs {
            let a = self.accounts.entry(leg.asset.clone()).or_default();
            a.balance_minor = sub(a.balance_minor, leg.amount_minor)?;
            a.frozen_minor = add(a.frozen_minor, leg.amount_minor)?;
            a.version += 1;
            self.entry(
                transfer_id,
                &leg.asset,
                signed(leg.amount_minor, false),
                EntryKind::Freeze,
                Some(order_id),
                at_ms,
            );
        }
        let params = TransferParams::Pay { order_id, legs: legs.to_vec() };
        self.transfers.insert(transfer_id.into(), TransferRecord { params, outcome: Outcome::Tried });
        self.tries.insert(transfer_id.into(), Try { order_id, legs: legs.to_vec(), at_ms });
        Ok(())
    }

    fn close_try(&mut self, transfer_id: &str, outcome: Outcome) -> Result<Try, ApplyError> {
        let t = self.tries.remove(transfer_id).ok_or_else(|| ApplyError(format!("try {transfer_id} is not open")))?;
        if let Some(r) = self.transfers.get_mut(transfer_id) {
            r.outcome = outcome;
        }
        Ok(t)
    }

    fn settle(&mut self, transfer_id: &str, at_ms: i64) -> Result<(), ApplyError> {
        let t = self.close_try(transfer_id, Outcome::Settled)?;
        for leg in &t.legs {
            let a = self.accounts.entry(leg.asset.clone()).or_default();
            a.frozen_minor = sub(a.frozen_minor, leg.amount_minor)?;
            a.settled_minor += u128::from(leg.amount_minor);
            a.version += 1;
            self.entry(
                transfer_id,
                &leg.asset,
                signed(leg.amount_minor, false),
                EntryKind::Settle,
                Some(t.order_id),
                at_ms,
            );
        }
        self.payments.insert(t.order_id, transfer_id.into());
        Ok(())
    }

    fn unfreeze(&mut self, transfer_id: &str, failure: &Option<TransferFailure>, at_ms: i64) -> Result<(), ApplyError> {
        let outcome = failure.clone().map_or(Outcome::Canceled, Outcome::Failed);
        let t = self.close_try(transfer_id, outcome)?;
        for leg in &t.legs {
            let a = self.accounts.entry(leg.asset.clone()).or_default();
            a.frozen_minor = sub(a.frozen_minor, leg.amount_minor)?;
            a.balance_minor = add(a.balance_minor, leg.amount_minor)?;
            a.version += 1;
            self.entry(
                transfer_id,
                &leg.asset,
                signed(leg.amount_minor, true),
                EntryKind::Unfreeze,
                Some(t.order_id),
                at_ms,
            );
        }
        Ok(())
    }

    fn refund(&mut self, transfer_id: &str, order_id: OrderId, at_ms: i64) -> Result<(), ApplyError> {
        if self.payments.remove(&order_id).as_deref() != Some(transfer_id) {
            return Err(ApplyError(format!("order {order_id} has no settled wallet payment {transfer_id}")));
        }
        let record = self.transfers.get_mut(transfer_id).ok_or_else(|| ApplyError("no transfer".into()))?;
        record.outcome = Outcome::Refunded;
        let TransferParams::Pay { legs, .. } = record.params.clone() else {
            return Err(ApplyError(format!("transfer {transfer_id} is not a payment")));
        };
        for leg in &legs {
            let a = self.accounts.entry(leg.asset.clone()).or_default();
            a.balance_minor = add(a.balance_minor, leg.amount_minor)?;
            a.refunded_minor += u128::from(leg.amount_minor);
            a.version += 1;
            self.entry(
                transfer_id,
                &leg.asset,
                signed(leg.amount_minor, true),
                EntryKind::Refund,
                Some(order_id),
                at_ms,
            );
        }
        Ok(())
    }

    fn entry(
        &mut self,
        transfer_id: &str,
        asset: &AssetCode,
        amount_minor: i64,
        kind: EntryKind,
        order_id: Option<OrderId>,
        at_ms: i64,
    ) {
        self.next_seq += 1;
        if self.entries.len() == ENTRIES_KEPT_MAX {
            self.entries.pop_front();
        }
        let e = LedgerEntry {
            seq: self.next_seq,
            transfer_id: transfer_id.into(),
            asset: asset.clone(),
            amount_minor,
            kind,
            order_id,
            at_ms,
        };
        self.entries.push_back(e);
    }
}

fn add(a: u64, b: u64) -> Result<u64, ApplyError> {
    a.checked_add(b).ok_or_else(|| ApplyError("amount overflows".into()))
}

fn sub(a: u64, b: u64) -> Result<u64, ApplyError> {
    a.checked_sub(b).ok_or_else(|| ApplyError(format!("{b} exceeds {a}: an amount would go negative")))
}

/// An amount as a signed entry (amounts are bounded by `AMOUNT_MINOR_MAX` < 2^63).
fn signed(amount: u64, positive: bool) -> i64 {
    let v = i64::try_from(amount).unwrap_or(i64::MAX);
    if positive {
        v
    } else {
        -v
    }
}
