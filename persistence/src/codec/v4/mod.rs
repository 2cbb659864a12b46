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
//!
//! Wallet events (tags 15 to 21, issue 14) and their code tables are in `wallet.rs`.

use surge_engine::{Decimal, HistoryEntry, Initiator, Order, OrderEventKind, OrderStatus};

use super::wire::DecParts;

mod decode;
mod encode;
mod outbox;
mod wallet;
pub(crate) use decode::Decoder;
pub(crate) use encode::Encoder;

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
    pub const WALLET_CREDITED: u8 = 15;
    pub const WALLET_DEBITED: u8 = 16;
    pub const WALLET_FROZEN: u8 = 17;
    pub const WALLET_SETTLED: u8 = 18;
    pub const WALLET_UNFROZEN: u8 = 19;
    pub const WALLET_REFUNDED: u8 = 20;
    pub const WALLET_REJECTED: u8 = 21;
    pub const OUTBOX_ORDER: u8 = 22;
    pub const OUTBOX_STOCK: u8 = 23;
    pub const OUTBOX_WALLET: u8 = 24;
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
