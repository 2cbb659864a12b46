//! Format 4's wallet events (tags 15 to 21, issue 14) and the code tables of the wallet's enums
//! (`TransferFailure`, `TransferParams`); the grammar is in `codec`'s module docs.
//!
//! Every wallet event starts with the same head: its tag, the user and the transfer id inline
//! (`txt`: they are nearly unique per event, so they would only crowd SKU ids and names out of
//! the record's dictionary), then its time through the time register. Asset codes go through
//! the dictionary (a handful of codes recur through a record), order ids through the order id
//! register, amounts as varints, decimals as every decimal of format 4.

use surge_engine::wallet::{AssetCode, Leg, TransferFailure, TransferParams, WalletEvent};

use super::super::wire::{put_dec, put_txt, put_uv, Bad, In};
use super::{status_code, status_of, tag, Decoder, Encoder};

/// Codes of [`TransferFailure`] (1..=6); 0 is "no failure" where a failure is optional.
mod failure {
    pub const NONE: u8 = 0;
    pub const INSUFFICIENT_FUNDS: u8 = 1;
    pub const AMOUNT_MISMATCH: u8 = 2;
    pub const ORDER_NOT_PAYABLE: u8 = 3;
    pub const ALREADY_PAID: u8 = 4;
    pub const VERSION_CONFLICT: u8 = 5;
    pub const UNKNOWN_ORDER: u8 = 6;
}

/// Codes of [`TransferParams`].
mod params {
    pub const CREDIT: u8 = 0;
    pub const DEBIT: u8 = 1;
    pub const PAY: u8 = 2;
}

impl<'e> Encoder<'e> {
    /// Append a wallet event (tags 15 to 21).
    pub(super) fn wallet_event(&mut self, out: &mut Vec<u8>, e: &'e WalletEvent) {
        match e {
            WalletEvent::Credited { user_id, transfer_id, asset, amount_minor, at_ms } => {
                self.wallet_head(out, tag::WALLET_CREDITED, user_id, transfer_id, *at_ms);
                self.sym(out, asset.as_str());
                put_uv(out, *amount_minor);
            }
            WalletEvent::Debited { user_id, transfer_id, asset, amount_minor, at_ms } => {
                self.wallet_head(out, tag::WALLET_DEBITED, user_id, transfer_id, *at_ms);
                self.sym(out, asset.as_str());
                put_uv(out, *amount_minor);
            }
            WalletEvent::Frozen { user_id, transfer_id, order_id, legs, at_ms } => {
                self.wallet_head(out, tag::WALLET_FROZEN, user_id, transfer_id, *at_ms);
                self.oid(out, *order_id);
                self.legs(out, legs);
            }
            WalletEvent::Settled { user_id, transfer_id, at_ms } => {
                self.wallet_head(out, tag::WALLET_SETTLED, user_id, transfer_id, *at_ms);
            }
            WalletEvent::Unfrozen { user_id, transfer_id, failure, at_ms } => {
                self.wallet_head(out, tag::WALLET_UNFROZEN, user_id, transfer_id, *at_ms);
                match failure {
                    Some(f) => self.failure(out, f),
                    None => out.push(failure::NONE),
                }
            }
            WalletEvent::Refunded { user_id, transfer_id, order_id, at_ms } => {
                self.wallet_head(out, tag::WALLET_REFUNDED, user_id, transfer_id, *at_ms);
                self.oid(out, *order_id);
            }
            WalletEvent::Rejected { user_id, transfer_id, params, failure, at_ms } => {
                self.wallet_head(out, tag::WALLET_REJECTED, user_id, transfer_id, *at_ms);
                self.params(out, params);
                self.failure(out, failure);
            }
        }
    }

    /// Tag, `txt` user, `txt` transfer id, `time` at: the start of every wallet event.
    fn wallet_head(&mut self, out: &mut Vec<u8>, tag: u8, user_id: &str, transfer_id: &str, at_ms: i64) {
        out.push(tag);
        put_txt(out, user_id);
        put_txt(out, transfer_id);
        self.time(out, at_ms);
    }

    /// `uv` n, then n × (`sym` asset, `uv` amount).
    fn legs(&mut self, out: &mut Vec<u8>, legs: &'e [Leg]) {
        put_uv(out, legs.len() as u64);
        for leg in legs {
            self.sym(out, leg.asset.as_str());
            put_uv(out, leg.amount_minor);
        }
    }

    /// A failure: its code (1..=6), then its fields.
    fn failure(&mut self, out: &mut Vec<u8>, f: &'e TransferFailure) {
        match f {
            TransferFailure::InsufficientFunds { asset, needed_minor, available_minor } => {
                out.push(failure::INSUFFICIENT_FUNDS);
                self.sym(out, asset.as_str());
                put_uv(out, *needed_minor);
                put_uv(out, *available_minor);
            }
            TransferFailure::AmountMismatch { expected, got } => {
                out.push(failure::AMOUNT_MISMATCH);
                put_dec(out, *expected);
                put_dec(out, *got);
            }
            TransferFailure::OrderNotPayable { order_id, status } => {
                out.push(failure::ORDER_NOT_PAYABLE);
                self.oid(out, *order_id);
                out.push(status_code(*status));
            }
            TransferFailure::AlreadyPaid { order_id } => {
                out.push(failure::ALREADY_PAID);
                self.oid(out, *order_id);
            }
            TransferFailure::VersionConflict { expected, actual } => {
                out.push(failure::VERSION_CONFLICT);
                put_uv(out, u64::from(*expected));
                put_uv(out, u64::from(*actual));
            }
            TransferFailure::UnknownOrder { order_id } => {
                out.push(failure::UNKNOWN_ORDER);
                self.oid(out, *order_id);
            }
        }
    }

    /// What a transfer asked for: its code, then its fields.
    fn params(&mut self, out: &mut Vec<u8>, p: &'e TransferParams) {
        match p {
            TransferParams::Credit { asset, amount_minor } | TransferParams::Debit { asset, amount_minor } => {
                let code = if matches!(p, TransferParams::Credit { .. }) { params::CREDIT } else { params::DEBIT };
                out.push(code);
                self.sym(out, asset.as_str());
                put_uv(out, *amount_minor);
            }
            TransferParams::Pay { order_id, legs } => {
                out.push(params::PAY);
                self.oid(out, *order_id);
                self.legs(out, legs);
            }
        }
    }
}

impl Decoder {
    /// A wallet event of tag `t` (15 to 21; the tag already read), as
    /// [`Encoder::wallet_event`] wrote it.
    pub(super) fn wallet_event(&mut self, t: u8, r: &mut In<'_>) -> Result<WalletEvent, Bad> {
        let user_id = r.txt()?.into();
        let transfer_id = r.txt()?.into();
        let at_ms = self.time(r)?;
        Ok(match t {
            tag::WALLET_CREDITED => {
                let (asset, amount_minor) = (self.asset(r)?, r.uv()?);
                WalletEvent::Credited { user_id, transfer_id, asset, amount_minor, at_ms }
            }
            tag::WALLET_DEBITED => {
                let (asset, amount_minor) = (self.asset(r)?, r.uv()?);
                WalletEvent::Debited { user_id, transfer_id, asset, amount_minor, at_ms }
            }
            tag::WALLET_FROZEN => {
                let (order_id, legs) = (self.oid(r)?, self.legs(r)?);
                WalletEvent::Frozen { user_id, transfer_id, order_id, legs, at_ms }
            }
            tag::WALLET_SETTLED => WalletEvent::Settled { user_id, transfer_id, at_ms },
            tag::WALLET_UNFROZEN => WalletEvent::Unfrozen { user_id, transfer_id, failure: self.failure(r)?, at_ms },
            tag::WALLET_REFUNDED => WalletEvent::Refunded { user_id, transfer_id, order_id: self.oid(r)?, at_ms },
            tag::WALLET_REJECTED => {
                let params = self.params(r)?;
                let failure = self.failure(r)?.ok_or_else(|| r.bad("a rejection without its failure"))?;
                let (params, failure) = (Box::new(params), Box::new(failure));
                WalletEvent::Rejected { user_id, transfer_id, params, failure, at_ms }
            }
            _ => return Err(r.bad("unknown event tag")),
        })
    }

    /// A dictionary string that must be a valid asset code.
    fn asset(&mut self, r: &mut In<'_>) -> Result<AssetCode, Bad> {
        let s = self.sym(r)?;
        AssetCode::parse(&s).map_err(|_| r.bad("invalid asset code"))
    }

    fn legs(&mut self, r: &mut In<'_>) -> Result<Vec<Leg>, Bad> {
        let n = r.count()?;
        let mut legs = Vec::with_capacity(n);
        for _ in 0..n {
            legs.push(Leg { asset: self.asset(r)?, amount_minor: r.uv()? });
        }
        Ok(legs)
    }

    /// A failure, or `None` for code 0.
    fn failure(&mut self, r: &mut In<'_>) -> Result<Option<TransferFailure>, Bad> {
        Ok(Some(match r.u8()? {
            failure::NONE => return Ok(None),
            failure::INSUFFICIENT_FUNDS => {
                let asset = self.asset(r)?;
                TransferFailure::InsufficientFunds { asset, needed_minor: r.uv()?, available_minor: r.uv()? }
            }
            failure::AMOUNT_MISMATCH => TransferFailure::AmountMismatch { expected: r.dec()?, got: r.dec()? },
            failure::ORDER_NOT_PAYABLE => {
                let order_id = self.oid(r)?;
                let status = status_of(r.u8()?).ok_or_else(|| r.bad("unknown status"))?;
                TransferFailure::OrderNotPayable { order_id, status }
            }
            failure::ALREADY_PAID => TransferFailure::AlreadyPaid { order_id: self.oid(r)? },
            failure::VERSION_CONFLICT => TransferFailure::VersionConflict { expected: r.u32()?, actual: r.u32()? },
            failure::UNKNOWN_ORDER => TransferFailure::UnknownOrder { order_id: self.oid(r)? },
            _ => return Err(r.bad("unknown transfer failure code")),
        }))
    }

    fn params(&mut self, r: &mut In<'_>) -> Result<TransferParams, Bad> {
        Ok(match r.u8()? {
            params::CREDIT => TransferParams::Credit { asset: self.asset(r)?, amount_minor: r.uv()? },
            params::DEBIT => TransferParams::Debit { asset: self.asset(r)?, amount_minor: r.uv()? },
            params::PAY => TransferParams::Pay { order_id: self.oid(r)?, legs: self.legs(r)? },
            _ => return Err(r.bad("unknown transfer params code")),
        })
    }
}
