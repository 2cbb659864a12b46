//! Format 4's events: a compact encoding owned by the codec (the grammar is in the parent
//! module's docs). Engine types never reach the bytes through serde: every field is written here
//! by hand, so a change to an engine type cannot silently change the format, and every enum is
//! mapped to its code by an explicit table.
//!
//! Each record is encoded with one [`Encoder`] (and decoded with one [`Decoder`]) that carries
//! three registers from one event to the next, reset at every record:
//! * a dictionary of up to [`DICT_MAX`] strings (SKU ids, names, transition reasons): a string
//!   seen before in the record is written as its index;
//! * the last order id: order ids are written as the zigzag difference from it;
//! * the last time: times are written as the zigzag difference from it.

use std::sync::Arc;

use surge_engine::{
    smallvec, Decimal, Event, HistoryEntry, Initiator, LineItem, Order, OrderEvent, OrderEventKind, OrderId,
    OrderStatus, Payment, SaleRules, SkuEvent, SmallVec,
};

use super::wire::{put_dec, put_opt_txt, put_sv, put_txt, put_uv, zigzag, Bad, DecParts, In};

/// Most strings one record's dictionary holds; later new strings are written inline only.
pub(crate) const DICT_MAX: usize = 64;

/// Event tags (the first byte of an event).
mod tag {
    pub const SKU_CREATED: u8 = 0;
    pub const SKU_UPDATED: u8 = 1;
    pub const STOCK_ADJUSTED: u8 = 2;
    pub const RESERVED: u8 = 3;
    pub const CONFIRMED: u8 = 4;
    pub const RELEASED: u8 = 5;
    pub const RESTOCKED: u8 = 6;
    pub const FORGOTTEN: u8 = 7;
    pub const STOCK_ADJUSTED_ONCE: u8 = 8;
    pub const REMEMBERED: u8 = 9;
    pub const ORDER_CREATED: u8 = 10;
    pub const ORDER_CREATED_FULL: u8 = 11;
    pub const ORDER_TRANSITIONED: u8 = 12;
    pub const ORDER_ARCHIVED: u8 = 13;
    pub const ORDER_RESTORED: u8 = 14;
}

/// Snowflake layout used to predict an order's creation time from its id (41 bits of
/// milliseconds since 2024-01-01 above 22 bits). Fixed here, not read from the engine: it is part
/// of format 4. Only a prediction: any creation time still round-trips exactly.
const ID_TIME_SHIFT: u32 = 22;
const ID_EPOCH_MS: i64 = 1_704_067_200_000;

/// The millisecond a snowflake id carries.
#[inline]
fn id_ms(id: u64) -> i64 {
    (id >> ID_TIME_SHIFT) as i64 + ID_EPOCH_MS
}

// ---- codes of the engine's enums ------------------------------------------------------------

/// Code of a status (0..=9).
fn status_code(s: OrderStatus) -> u8 {
    use OrderStatus::*;
    match s {
        PendingPayment => 0,
        Paid => 1,
        Packing => 2,
        Shipped => 3,
        Delivered => 4,
        Completed => 5,
        Canceled => 6,
        Refunding => 7,
        Refunded => 8,
        Disputed => 9,
    }
}

fn status_of(code: u8) -> Option<OrderStatus> {
    use OrderStatus::*;
    Some(match code {
        0 => PendingPayment,
        1 => Paid,
        2 => Packing,
        3 => Shipped,
        4 => Delivered,
        5 => Completed,
        6 => Canceled,
        7 => Refunding,
        8 => Refunded,
        9 => Disputed,
        _ => return None,
    })
}

/// Code of an event kind (0..=12).
fn kind_code(k: OrderEventKind) -> u8 {
    use OrderEventKind::*;
    match k {
        Pay => 0,
        Cancel => 1,
        PaymentDeadline => 2,
        StartPacking => 3,
        Ship => 4,
        Deliver => 5,
        Complete => 6,
        AutoComplete => 7,
        RequestRefund => 8,
        ConfirmRefund => 9,
        RejectRefund => 10,
        OpenDispute => 11,
        ResolveDispute => 12,
    }
}

fn kind_of(code: u8) -> Option<OrderEventKind> {
    use OrderEventKind::*;
    Some(match code {
        0 => Pay,
        1 => Cancel,
        2 => PaymentDeadline,
        3 => StartPacking,
        4 => Ship,
        5 => Deliver,
        6 => Complete,
        7 => AutoComplete,
        8 => RequestRefund,
        9 => ConfirmRefund,
        10 => RejectRefund,
        11 => OpenDispute,
        12 => ResolveDispute,
        _ => return None,
    })
}

/// Code of an initiator (0..=3: two bits).
fn by_code(b: Initiator) -> u8 {
    match b {
        Initiator::User => 0,
        Initiator::Admin => 1,
        Initiator::Psp => 2,
        Initiator::System => 3,
    }
}

fn by_of(code: u8) -> Initiator {
    match code & 3 {
        0 => Initiator::User,
        1 => Initiator::Admin,
        2 => Initiator::Psp,
        _ => Initiator::System,
    }
}

// ---- the creation shape ---------------------------------------------------------------------

/// `unit × qty`, exactly, at the unit price's scale; `None` past 96 bits. The codec's own
/// arithmetic (not `rust_decimal`'s), so what a compact `order_created` decodes to is fixed by
/// the format; the encoder checks it equals the order's actual values bit for bit.
fn line_subtotal(unit: Decimal, qty: u32) -> Option<Decimal> {
    let p = DecParts::of(unit);
    DecParts { magnitude: p.magnitude.checked_mul(u128::from(qty))?, ..p }.to_decimal()
}

/// The sum of `values` from zero (scale 0), each addition at the larger scale, exactly; `None`
/// past 96 bits.
fn sum(values: impl Iterator<Item = Decimal>) -> Option<Decimal> {
    let (mut acc, mut scale) = (0i128, 0u8);
    for v in values {
        let p = DecParts::of(v);
        let m = i128::try_from(p.magnitude).ok()?;
        let m = if p.negative { -m } else { m };
        let (a, b) = if p.scale >= scale {
            (acc.checked_mul(10i128.checked_pow(u32::from(p.scale - scale))?)?, m)
        } else {
            (acc, m.checked_mul(10i128.checked_pow(u32::from(scale - p.scale))?)?)
        };
        scale = scale.max(p.scale);
        acc = a.checked_add(b)?;
        if acc.unsigned_abs() >> 96 != 0 {
            return None;
        }
    }
    DecParts { negative: acc < 0, scale, magnitude: acc.unsigned_abs() }.to_decimal()
}

/// Bit-exact equality (`==` on decimals ignores trailing zeros).
#[inline]
fn same(a: Decimal, b: Decimal) -> bool {
    a.serialize() == b.serialize()
}

/// True if `o` is exactly what the engine's `build_order` makes: status `pending_payment`,
/// version 1, one creation entry by the user at `created_at_ms`, nothing paid, shipped or to
/// return to, subtotals and total as [`line_subtotal`] and [`sum`] derive them. Only such an
/// order is written compact (everything else in full: nothing is ever lost).
fn is_creation_shape(o: &Order) -> bool {
    let entry = HistoryEntry {
        from: None,
        to: OrderStatus::PendingPayment,
        at_ms: o.created_at_ms,
        by: Initiator::User,
        reason: None,
    };
    o.status == OrderStatus::PendingPayment
        && o.version == 1
        && o.updated_at_ms == o.created_at_ms
        && o.payment.is_none()
        && o.tracking_number.is_none()
        && !o.shipped
        && o.refund_return_to.is_none()
        && o.history.len() == 1
        && o.history[0] == entry
        && o.items.iter().all(|i| line_subtotal(i.unit_price, i.qty).is_some_and(|s| same(s, i.subtotal)))
        && sum(o.items.iter().map(|i| i.subtotal)).is_some_and(|t| same(t, o.total))
}

// ---- encoding -------------------------------------------------------------------------------

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
    fn sym(&mut self, out: &mut Vec<u8>, s: &'e str) {
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
    fn time(&mut self, out: &mut Vec<u8>, t: i64) {
        put_uv(out, zigzag(t.wrapping_sub(self.time)));
        self.time = t;
    }

    #[inline]
    fn oid(&mut self, out: &mut Vec<u8>, id: OrderId) {
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
            self.sym(out, &i.sku_id);
            self.sym(out, &i.name);
            put_uv(out, u64::from(i.qty));
            put_dec(out, i.unit_price);
        }
    }

    /// A whole order, every field.
    fn order(&mut self, out: &mut Vec<u8>, o: &'e Order) {
        self.oid(out, o.order_id);
        put_txt(out, &o.user_id);
        put_uv(out, o.items.len() as u64);
        for i in &o.items {
            self.sym(out, &i.sku_id);
            self.sym(out, &i.name);
            put_uv(out, u64::from(i.qty));
            put_dec(out, i.unit_price);
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
fn put_rules(out: &mut Vec<u8>, r: &SaleRules) {
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
    fn sym(&mut self, r: &mut In<'_>) -> Result<Arc<str>, Bad> {
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
    fn time(&mut self, r: &mut In<'_>) -> Result<i64, Bad> {
        self.time = self.time.wrapping_add(r.sv()?);
        Ok(self.time)
    }

    #[inline]
    fn oid(&mut self, r: &mut In<'_>) -> Result<OrderId, Bad> {
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
        let idempotency_key: Arc<str> = r.txt()?.into();
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
    fn order(&mut self, r: &mut In<'_>) -> Result<Order, Bad> {
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

fn rules(r: &mut In<'_>) -> Result<SaleRules, Bad> {
    let flags = r.u8()?;
    if flags & !0b1111 != 0 {
        return Err(r.bad("sale rules have unknown bits"));
    }
    let per_user_limit = if flags & 1 != 0 { Some(r.u32()?) } else { None };
    let sale_starts_at_ms = if flags & 2 != 0 { Some(r.sv()?) } else { None };
    let sale_ends_at_ms = if flags & 4 != 0 { Some(r.sv()?) } else { None };
    Ok(SaleRules { per_user_limit, sale_starts_at_ms, sale_ends_at_ms, paused: flags & 8 != 0 })
}
