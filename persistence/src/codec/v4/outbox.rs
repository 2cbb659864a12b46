//! Format 4's outbox events (tags 22 to 24, issue 15): what the transactional outbox publishes,
//! journaled beside the change. The grammar is in `codec`'s module docs.
//!
//! * 22 `outbox_order`: the whole order after a transition, as `order_archived` writes it.
//! * 23 `outbox_stock`: `sv` at_ms, `sym` SKU id, `sym` name, `dec` price, `uv` available, reserved, sold,
//!   stocked total, then the rules as `sku_created` writes them.
//! * 24 `outbox_wallet`: `sv` at_ms, `txt` user, `sym` asset, `dec` balance, `dec` frozen, `uv` version.

use std::sync::Arc;

use surge_engine::wallet::{AccountView, AssetCode};
use surge_engine::{OutboxEvent, OutboxWallet, SkuView};

use super::super::wire::{put_dec, put_sv, put_txt, put_uv, Bad, In};
use super::decode::rules;
use super::encode::put_rules;
use super::{tag, Decoder, Encoder};

impl<'e> Encoder<'e> {
    /// Append an outbox event (tags 22 to 24).
    pub(super) fn outbox_event(&mut self, out: &mut Vec<u8>, e: &'e OutboxEvent) {
        match e {
            OutboxEvent::Order(order) => {
                out.push(tag::OUTBOX_ORDER);
                self.order(out, order);
            }
            OutboxEvent::Stock(v, at_ms) => {
                out.push(tag::OUTBOX_STOCK);
                put_sv(out, *at_ms);
                self.sym(out, &v.sku_id);
                self.sym(out, &v.name);
                put_dec(out, v.price);
                for n in [v.available, v.reserved, v.sold, v.stocked_total] {
                    put_uv(out, n);
                }
                put_rules(out, &v.rules);
            }
            OutboxEvent::Wallet(w) => {
                let OutboxWallet { user_id, account, at_ms } = &**w;
                out.push(tag::OUTBOX_WALLET);
                put_sv(out, *at_ms);
                put_txt(out, user_id);
                self.sym(out, account.asset.as_str());
                put_dec(out, account.balance);
                put_dec(out, account.frozen);
                put_uv(out, account.version);
            }
        }
    }
}

impl Decoder {
    /// An outbox event of tag `t` (22 to 24; the tag already read).
    pub(super) fn outbox_event(&mut self, t: u8, r: &mut In<'_>) -> Result<OutboxEvent, Bad> {
        Ok(match t {
            tag::OUTBOX_ORDER => OutboxEvent::Order(Arc::new(self.order(r)?)),
            tag::OUTBOX_STOCK => {
                let at_ms = r.sv()?;
                let (sku_id, name, price) = (self.sym(r)?, self.sym(r)?, r.dec()?);
                let (available, reserved, sold, stocked_total) = (r.uv()?, r.uv()?, r.uv()?, r.uv()?);
                let rules = rules(r)?;
                OutboxEvent::Stock(
                    Box::new(SkuView { sku_id, name, price, available, reserved, sold, stocked_total, rules }),
                    at_ms,
                )
            }
            tag::OUTBOX_WALLET => {
                let at_ms = r.sv()?;
                let user_id = r.txt()?.into();
                let code = self.sym(r)?;
                let asset = AssetCode::parse(&code).map_err(|_| r.bad("invalid asset code"))?;
                let (balance, frozen, version) = (r.dec()?, r.dec()?, r.uv()?);
                let account = AccountView { asset, balance, frozen, version };
                OutboxEvent::Wallet(Box::new(OutboxWallet { user_id, account, at_ms }))
            }
            _ => return Err(r.bad("unknown event tag")),
        })
    }
}
