//! Format 4's decoder (the mirror of the encoder).

use std::sync::Arc;

use surge_engine::{
    smallvec, Event, HistoryEntry, LineItem, OrderEvent, OrderId, Payment, SaleRules, SkuEvent, SmallVec,
};

use super::super::wire::{Bad, In};
use super::*;

/// Decodes the events of one record (the mirror of [`Encoder`]).
pub(crate) struct Decoder {
    dict: Vec<Arc<str>>,
    time: i64,
    oid: u64,
}

impl Decoder {
    /// A fresh decoder: the start of a record.
    pub fn new() -> Self {
        Self { dict: Vec::new(), time: 0, oid: 0 }
    }

    #[inline]
    pub(super) fn sym(&mut self, r: &mut In<'_>) -> Result<Arc<str>, Bad> {
        let x = r.uv()?;
        if x & 1 == 1 {
            return match self.dict.get((x >> 1) as usize) {
                Some(s) => Ok(s.clone()),
                None => Err(r.bad("dictionary index out of range")),
            };
        }
        let s: Arc<str> = Arc::from(r.str(x >> 1)?);
        if self.dict.len() < DICT_MAX {
            self.dict.push(s.clone());
        }
        Ok(s)
    }

    #[inline]
    pub(super) fn time(&mut self, r: &mut In<'_>) -> Result<i64, Bad> {
        self.time = self.time.wrapping_add(r.sv()?);
        Ok(self.time)
    }

    #[inline]
    pub(super) fn oid(&mut self, r: &mut In<'_>) -> Result<OrderId, Bad> {
        self.oid = self.oid.wrapping_add(r.sv()? as u64);
        Ok(OrderId(self.oid))
    }

    /// The next event.
    pub fn event(&mut self, r: &mut In<'_>) -> Result<Event, Bad> {
        let t = r.u8()?;
        Ok(match t {
            tag::SKU_CREATED..=tag::REMEMBERED => Event::Sku(self.sku_event(t, r)?),
            tag::ORDER_CREATED => Event::Order(OrderEvent::Created(Arc::new(self.created(r)?))),
            tag::ORDER_CREATED_FULL => Event::Order(OrderEvent::Created(Arc::new(self.order(r)?))),
            tag::ORDER_TRANSITIONED => Event::Order(self.transitioned(r)?),
            tag::ORDER_ARCHIVED => Event::Order(OrderEvent::Archived(Arc::new(self.order(r)?))),
            tag::ORDER_RESTORED => Event::Order(OrderEvent::Restored(Arc::new(self.order(r)?))),
            tag::WALLET_CREDITED..=tag::WALLET_REJECTED => Event::Wallet(self.wallet_event(t, r)?),
            tag::OUTBOX_ORDER..=tag::OUTBOX_WALLET => Event::Outbox(self.outbox_event(t, r)?),
            _ => return Err(r.bad("unknown event tag")),
        })
    }

    fn sku_event(&mut self, t: u8, r: &mut In<'_>) -> Result<SkuEvent, Bad> {
        let sku_id = self.sym(r)?;
        Ok(match t {
            tag::SKU_CREATED => {
                let (name, price) = (self.sym(r)?, r.dec()?);
                SkuEvent::Created { sku_id, name, price, initial_stock: r.uv()?, rules: rules(r)? }
            }
            tag::SKU_UPDATED => {
                let (name, price) = (self.sym(r)?, r.dec()?);
                SkuEvent::Updated { sku_id, name, price, rules: rules(r)? }
            }
            tag::STOCK_ADJUSTED => SkuEvent::Adjusted { sku_id, delta: r.sv()?, reason: r.txt()?.into() },
            tag::STOCK_ADJUSTED_ONCE => {
                let adjustment_id = r.txt()?.into();
                SkuEvent::AdjustedOnce { sku_id, adjustment_id, delta: r.sv()?, reason: r.txt()?.into() }
            }
            tag::RESERVED => {
                let order_id = self.oid(r)?;
                SkuEvent::Reserved { sku_id, order_id, user_id: r.txt()?.into(), qty: r.u32()? }
            }
            tag::REMEMBERED => {
                let order_id = self.oid(r)?;
                SkuEvent::Remembered { sku_id, order_id, user_id: r.txt()?.into(), qty: r.u32()? }
            }
            tag::CONFIRMED => SkuEvent::Confirmed { sku_id, order_id: self.oid(r)? },
            tag::RELEASED => SkuEvent::Released { sku_id, order_id: self.oid(r)? },
            tag::RESTOCKED => SkuEvent::Restocked { sku_id, order_id: self.oid(r)? },
            _ => SkuEvent::Forgotten { sku_id, order_id: self.oid(r)? },
        })
    }

    /// A compact `order_created`: the derived fields as [`is_creation_shape`] defines them.
    fn created(&mut self, r: &mut In<'_>) -> Result<Order, Bad> {
        let order_id = self.oid(r)?;
        let user_id: Arc<str> = r.txt()?.into();
        let idempotency_key: Box<str> = r.txt()?.into();
        let created_at_ms = id_ms(order_id.0).wrapping_add(r.sv()?);
        self.time = created_at_ms;
        let payment_deadline_ms = created_at_ms.wrapping_add(r.sv()?);
        let n = r.count()?;
        let mut items: SmallVec<[LineItem; 1]> = SmallVec::with_capacity(n);
        for _ in 0..n {
            let (sku_id, name, qty, unit_price) = (self.sym(r)?, self.sym(r)?, r.u32()?, r.dec()?);
            let subtotal = line_subtotal(unit_price, qty).ok_or_else(|| r.bad("line subtotal overflows"))?;
            items.push(LineItem { sku_id, name, qty, unit_price, subtotal });
        }
        let total = sum(items.iter().map(|i| i.subtotal)).ok_or_else(|| r.bad("order total overflows"))?;
        let entry = HistoryEntry {
            from: None,
            to: OrderStatus::PendingPayment,
            at_ms: created_at_ms,
            by: Initiator::User,
            reason: None,
        };
        Ok(Order {
            order_id,
            user_id,
            items,
            total,
            status: OrderStatus::PendingPayment,
            version: 1,
            created_at_ms,
            updated_at_ms: created_at_ms,
            payment_deadline_ms,
            payment: None,
            tracking_number: None,
            shipped: false,
            refund_return_to: None,
            history: smallvec![entry],
            idempotency_key,
        })
    }

    /// A whole order (see [`Encoder::order`]).
    /// A whole order, as [`Encoder::order`] wrote it.
    pub fn order(&mut self, r: &mut In<'_>) -> Result<Order, Bad> {
        let order_id = self.oid(r)?;
        let user_id: Arc<str> = r.txt()?.into();
        let n = r.count()?;
        let mut items = SmallVec::with_capacity(n);
        for _ in 0..n {
            let (sku_id, name, qty) = (self.sym(r)?, self.sym(r)?, r.u32()?);
            items.push(LineItem { sku_id, name, qty, unit_price: r.dec()?, subtotal: r.dec()? });
        }
        let total = r.dec()?;
        let status = read_status(r)?;
        let version = r.u32()?;
        let (created_at_ms, updated_at_ms, payment_deadline_ms) = (self.time(r)?, self.time(r)?, self.time(r)?);
        let flags = r.u8()?;
        if flags & !0b111 != 0 {
            return Err(r.bad("order flags have unknown bits"));
        }
        let payment = if flags & 1 != 0 { Some(Box::new(self.payment(r)?)) } else { None };
        let tracking_number = r.opt_txt()?.map(Box::from);
        let refund_return_to = if flags & 4 != 0 { Some(read_status(r)?) } else { None };
        let history = self.history(r)?;
        let idempotency_key = r.txt()?.into();
        Ok(Order {
            order_id,
            user_id,
            items,
            total,
            status,
            version,
            created_at_ms,
            updated_at_ms,
            payment_deadline_ms,
            payment,
            tracking_number,
            shipped: flags & 2 != 0,
            refund_return_to,
            history,
            idempotency_key,
        })
    }

    fn history(&mut self, r: &mut In<'_>) -> Result<SmallVec<[HistoryEntry; 1]>, Bad> {
        let n = r.count()?;
        let mut history = SmallVec::with_capacity(n);
        for _ in 0..n {
            let head = r.u8()?;
            if head & 0x80 != 0 {
                return Err(r.bad("history entry has unknown bits"));
            }
            let from = match head & 0x0F {
                0 => None,
                c => Some(status_of(c - 1).ok_or_else(|| r.bad("unknown status"))?),
            };
            let to = read_status(r)?;
            let at_ms = self.time(r)?;
            let reason = if head & 0x40 != 0 { Some(Box::from(&*self.sym(r)?)) } else { None };
            history.push(HistoryEntry { from, to, at_ms, by: by_of(head >> 4), reason });
        }
        Ok(history)
    }

    fn payment(&mut self, r: &mut In<'_>) -> Result<Payment, Bad> {
        let payment_id = r.txt()?.into();
        Ok(Payment { payment_id, amount: r.dec()?, paid_at_ms: self.time(r)? })
    }

    fn transitioned(&mut self, r: &mut In<'_>) -> Result<OrderEvent, Bad> {
        let order_id = self.oid(r)?;
        let event = kind_of(r.u8()?).ok_or_else(|| r.bad("unknown event kind"))?;
        let statuses = r.u8()?;
        let (from, to) = match (status_of(statuses >> 4), status_of(statuses & 0x0F)) {
            (Some(f), Some(t)) => (f, t),
            _ => return Err(r.bad("unknown status")),
        };
        let flags = r.u8()?;
        if flags & !0b1_1111 != 0 {
            return Err(r.bad("transition flags have unknown bits"));
        }
        let at_ms = self.time(r)?;
        let reason = if flags & 4 != 0 { Some(Box::from(&*self.sym(r)?)) } else { None };
        let payment = if flags & 8 != 0 { Some(self.payment(r)?) } else { None };
        let tracking_number = if flags & 16 != 0 { Some(Box::from(r.txt()?)) } else { None };
        Ok(OrderEvent::Transitioned {
            order_id,
            event,
            from,
            to,
            at_ms,
            by: by_of(flags),
            reason,
            payment,
            tracking_number,
        })
    }
}

fn read_status(r: &mut In<'_>) -> Result<OrderStatus, Bad> {
    let c = r.u8()?;
    status_of(c).ok_or_else(|| r.bad("unknown status"))
}

pub(super) fn rules(r: &mut In<'_>) -> Result<SaleRules, Bad> {
    let flags = r.u8()?;
    if flags & !0b1111 != 0 {
        return Err(r.bad("sale rules have unknown bits"));
    }
    let per_user_limit = if flags & 1 != 0 { Some(r.u32()?) } else { None };
    let sale_starts_at_ms = if flags & 2 != 0 { Some(r.sv()?) } else { None };
    let sale_ends_at_ms = if flags & 4 != 0 { Some(r.sv()?) } else { None };
    Ok(SaleRules { per_user_limit, sale_starts_at_ms, sale_ends_at_ms, paused: flags & 8 != 0 })
}
