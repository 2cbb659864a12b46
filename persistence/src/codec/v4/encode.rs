//! Format 4's encoder (see the parent module for the registers and codes).

use surge_engine::{Event, LineItem, Order, OrderEvent, OrderId, Payment, SaleRules, SkuEvent};

use super::super::wire::{put_dec, put_opt_txt, put_sv, put_txt, put_uv, zigzag};
use super::*;

/// Encodes the events of one record (registers reset per record; see the module docs).
pub(crate) struct Encoder<'e> {
    dict: Vec<&'e str>,
    time: i64,
    oid: u64,
}

impl<'e> Encoder<'e> {
    /// A fresh encoder: the start of a record.
    pub fn new() -> Self {
        Self { dict: Vec::new(), time: 0, oid: 0 }
    }

    /// A dictionary string: its index (odd: `index << 1 | 1`), or inline (even: `len << 1`, then
    /// the bytes), remembered while the dictionary has room.
    #[inline]
    pub(super) fn sym(&mut self, out: &mut Vec<u8>, s: &'e str) {
        let hit = self.dict.iter().position(|d| std::ptr::eq(*d, s)).or_else(|| self.dict.iter().position(|d| *d == s));
        if let Some(i) = hit {
            put_uv(out, ((i as u64) << 1) | 1);
            return;
        }
        put_uv(out, (s.len() as u64) << 1);
        out.extend_from_slice(s.as_bytes());
        if self.dict.len() < DICT_MAX {
            self.dict.push(s);
        }
    }

    #[inline]
    pub(super) fn time(&mut self, out: &mut Vec<u8>, t: i64) {
        put_uv(out, zigzag(t.wrapping_sub(self.time)));
        self.time = t;
    }

    #[inline]
    pub(super) fn oid(&mut self, out: &mut Vec<u8>, id: OrderId) {
        put_uv(out, zigzag(id.0.wrapping_sub(self.oid) as i64));
        self.oid = id.0;
    }

    /// Append `e`.
    pub fn event(&mut self, out: &mut Vec<u8>, e: &'e Event) {
        match e {
            Event::Sku(e) => self.sku_event(out, e),
            Event::Order(OrderEvent::Created(o)) if is_creation_shape(o) => self.created(out, o),
            Event::Order(OrderEvent::Created(o)) => {
                out.push(tag::ORDER_CREATED_FULL);
                self.order(out, o);
            }
            Event::Order(OrderEvent::Archived(o)) => {
                out.push(tag::ORDER_ARCHIVED);
                self.order(out, o);
            }
            Event::Order(OrderEvent::Restored(o)) => {
                out.push(tag::ORDER_RESTORED);
                self.order(out, o);
            }
            Event::Order(t @ OrderEvent::Transitioned { .. }) => self.transitioned(out, t),
            Event::Wallet(w) => self.wallet_event(out, w),
            Event::Outbox(o) => self.outbox_event(out, o),
        }
    }

    fn sku_event(&mut self, out: &mut Vec<u8>, e: &'e SkuEvent) {
        match e {
            SkuEvent::Created { sku_id, name, price, initial_stock, rules } => {
                out.push(tag::SKU_CREATED);
                self.sym(out, sku_id);
                self.sym(out, name);
                put_dec(out, *price);
                put_uv(out, *initial_stock);
                put_rules(out, rules);
            }
            SkuEvent::Updated { sku_id, name, price, rules } => {
                out.push(tag::SKU_UPDATED);
                self.sym(out, sku_id);
                self.sym(out, name);
                put_dec(out, *price);
                put_rules(out, rules);
            }
            SkuEvent::Adjusted { sku_id, delta, reason } => {
                out.push(tag::STOCK_ADJUSTED);
                self.sym(out, sku_id);
                put_sv(out, *delta);
                put_txt(out, reason);
            }
            SkuEvent::AdjustedOnce { sku_id, adjustment_id, delta, reason } => {
                out.push(tag::STOCK_ADJUSTED_ONCE);
                self.sym(out, sku_id);
                put_txt(out, adjustment_id);
                put_sv(out, *delta);
                put_txt(out, reason);
            }
            SkuEvent::Reserved { sku_id, order_id, user_id, qty } => {
                self.holding(out, tag::RESERVED, sku_id, *order_id);
                put_txt(out, user_id);
                put_uv(out, u64::from(*qty));
            }
            SkuEvent::Remembered { sku_id, order_id, user_id, qty } => {
                self.holding(out, tag::REMEMBERED, sku_id, *order_id);
                put_txt(out, user_id);
                put_uv(out, u64::from(*qty));
            }
            SkuEvent::Confirmed { sku_id, order_id } => self.holding(out, tag::CONFIRMED, sku_id, *order_id),
            SkuEvent::Released { sku_id, order_id } => self.holding(out, tag::RELEASED, sku_id, *order_id),
            SkuEvent::Restocked { sku_id, order_id } => self.holding(out, tag::RESTOCKED, sku_id, *order_id),
            SkuEvent::Forgotten { sku_id, order_id } => self.holding(out, tag::FORGOTTEN, sku_id, *order_id),
        }
    }

    /// Tag, SKU and order of an event about one holding.
    #[inline]
    fn holding(&mut self, out: &mut Vec<u8>, tag: u8, sku_id: &'e str, order_id: OrderId) {
        out.push(tag);
        self.sym(out, sku_id);
        self.oid(out, order_id);
    }

    /// `order_created` of an order in the creation shape: only what cannot be derived.
    fn created(&mut self, out: &mut Vec<u8>, o: &'e Order) {
        out.push(tag::ORDER_CREATED);
        self.oid(out, o.order_id);
        put_txt(out, &o.user_id);
        put_txt(out, &o.idempotency_key);
        put_sv(out, o.created_at_ms.wrapping_sub(id_ms(o.order_id.0)));
        self.time = o.created_at_ms;
        put_sv(out, o.payment_deadline_ms.wrapping_sub(o.created_at_ms));
        put_uv(out, o.items.len() as u64);
        for i in &o.items {
            self.line(out, i);
        }
    }

    /// A line item's SKU, name, quantity and unit price (its subtotal is the caller's choice).
    fn line(&mut self, out: &mut Vec<u8>, i: &'e LineItem) {
        self.sym(out, &i.sku_id);
        self.sym(out, &i.name);
        put_uv(out, u64::from(i.qty));
        put_dec(out, i.unit_price);
    }

    /// A whole order, every field (`order_archived` and the others; a snapshot's orders).
    pub fn order(&mut self, out: &mut Vec<u8>, o: &'e Order) {
        self.oid(out, o.order_id);
        put_txt(out, &o.user_id);
        put_uv(out, o.items.len() as u64);
        for i in &o.items {
            self.line(out, i);
            put_dec(out, i.subtotal);
        }
        put_dec(out, o.total);
        out.push(status_code(o.status));
        put_uv(out, u64::from(o.version));
        self.time(out, o.created_at_ms);
        self.time(out, o.updated_at_ms);
        self.time(out, o.payment_deadline_ms);
        let flags =
            u8::from(o.payment.is_some()) | u8::from(o.shipped) << 1 | u8::from(o.refund_return_to.is_some()) << 2;
        out.push(flags);
        if let Some(p) = &o.payment {
            self.payment(out, p);
        }
        put_opt_txt(out, o.tracking_number.as_deref());
        if let Some(s) = o.refund_return_to {
            out.push(status_code(s));
        }
        put_uv(out, o.history.len() as u64);
        for h in &o.history {
            let from = h.from.map_or(0, |s| status_code(s) + 1);
            out.push(from | by_code(h.by) << 4 | u8::from(h.reason.is_some()) << 6);
            out.push(status_code(h.to));
            self.time(out, h.at_ms);
            if let Some(r) = &h.reason {
                self.sym(out, r);
            }
        }
        put_txt(out, &o.idempotency_key);
    }

    fn payment(&mut self, out: &mut Vec<u8>, p: &'e Payment) {
        put_txt(out, &p.payment_id);
        put_dec(out, p.amount);
        self.time(out, p.paid_at_ms);
    }

    fn transitioned(&mut self, out: &mut Vec<u8>, e: &'e OrderEvent) {
        let OrderEvent::Transitioned { order_id, event, from, to, at_ms, by, reason, payment, tracking_number } = e
        else {
            return;
        };
        out.push(tag::ORDER_TRANSITIONED);
        self.oid(out, *order_id);
        out.push(kind_code(*event));
        out.push(status_code(*from) << 4 | status_code(*to));
        let flags = by_code(*by)
            | u8::from(reason.is_some()) << 2
            | u8::from(payment.is_some()) << 3
            | u8::from(tracking_number.is_some()) << 4;
        out.push(flags);
        self.time(out, *at_ms);
        if let Some(r) = reason {
            self.sym(out, r);
        }
        if let Some(p) = payment {
            self.payment(out, p);
        }
        if let Some(t) = tracking_number {
            put_txt(out, t);
        }
    }
}

/// Rules of sale: a flags byte (limit, start, end, paused), then the values present.
pub(super) fn put_rules(out: &mut Vec<u8>, r: &SaleRules) {
    let flags = u8::from(r.per_user_limit.is_some())
        | u8::from(r.sale_starts_at_ms.is_some()) << 1
        | u8::from(r.sale_ends_at_ms.is_some()) << 2
        | u8::from(r.paused) << 3;
    out.push(flags);
    if let Some(l) = r.per_user_limit {
        put_uv(out, u64::from(l));
    }
    if let Some(t) = r.sale_starts_at_ms {
        put_sv(out, t);
    }
    if let Some(t) = r.sale_ends_at_ms {
        put_sv(out, t);
    }
}

// ---- decoding -------------------------------------------------------------------------------
