//! An [`OutboxEntry`] as a NATS message: its subject, its id and its CloudEvents 1.0 JSON
//! envelope (structured content mode).
//!
//! # Subjects
//! | change | subject | CloudEvents `type` | `subject` attribute | `time` |
//! |---|---|---|---|---|
//! | order created | `<prefix>.order.created` | the subject | order id | `created_at_ms` |
//! | order changed status | `<prefix>.order.<status>` (`paid`, `canceled`, …) | the subject | order id | last history entry |
//! | SKU counters or rules | `<prefix>.stock.<sku_id>` | `<prefix>.stock` | SKU id | engine clock |
//! | wallet account | `<prefix>.wallet.<asset>` | `<prefix>.wallet` | user id | engine clock |
//!
//! Stock and wallet events name one type per kind: a SKU id in the type would make the set of
//! types unbounded. The `subject` attribute is the id as it is (unescaped).
//!
//! # Escaping
//! A subject token may not hold `.` (the separator), `*` or `>` (wildcards), whitespace or
//! control bytes. [`subject_token`] percent-encodes (RFC 3986 style, `%2E`, upper-case hex)
//! every byte outside `!`..=`~` and the bytes `.`, `*`, `>` and `%` itself, so the encoding is
//! reversible and a token never collides with another id's. The engine allows no empty id; an
//! empty one would encode as `%` (which no other id encodes to).
//!
//! # Id
//! `<log id>-<lsn>-<index>`: the data directory's log id (16 hex digits, drawn once per
//! directory: `OutboxLog::log_id`), the log record's LSN and the event's index in it. The same
//! entry read again (after a restart or an outage) has the same id; the publisher sends it as
//! `Nats-Msg-Id`, so JetStream stores it once. The log id keeps a new data directory's events
//! (whose LSNs start again at 1) from being taken for an old one's duplicates.

use std::borrow::Cow;

use serde::{Serialize, Serializer};
use surge_engine::wallet::AccountView;
use surge_engine::{Order, SkuView};
use surge_persistence::outbox::{OutboxEntry, OutboxItem};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// The CloudEvents spec version.
pub const SPEC_VERSION: &str = "1.0";
/// `datacontenttype` of every event.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// RFC 3339, UTC, milliseconds: `2025-11-11T00:00:00.123Z`.
const RFC3339_MS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// How `data` shows an order, a SKU and a wallet account: the protocol's wire shapes. They live
/// in the gateway (`surge_gateway::wire::EventWire` implements this trait), which depends on
/// this crate, so they are passed in; the shapes then never drift from what clients see.
///
/// ```
/// use serde::{Serialize, Serializer};
/// use surge_engine::{wallet::AccountView, Order, SkuView};
/// /// The engine's own serde (ids as numbers): for illustration only.
/// struct EngineSerde;
/// impl surge_events::WireFormat for EngineSerde {
///     fn order<S: Serializer>(&self, order: &Order, s: S) -> Result<S::Ok, S::Error> { order.serialize(s) }
///     fn sku<S: Serializer>(&self, sku: &SkuView, s: S) -> Result<S::Ok, S::Error> { sku.serialize(s) }
///     fn account<S: Serializer>(&self, a: &AccountView, s: S) -> Result<S::Ok, S::Error> { a.serialize(s) }
/// }
/// ```
pub trait WireFormat: Send + Sync + 'static {
    /// Serialize an order as the protocol shows it.
    ///
    /// # Errors
    /// The serializer's.
    fn order<S: Serializer>(&self, order: &Order, s: S) -> Result<S::Ok, S::Error>;
    /// Serialize a SKU as the protocol shows it.
    ///
    /// # Errors
    /// The serializer's.
    fn sku<S: Serializer>(&self, sku: &SkuView, s: S) -> Result<S::Ok, S::Error>;
    /// Serialize a wallet account as the protocol shows it.
    ///
    /// # Errors
    /// The serializer's.
    fn account<S: Serializer>(&self, account: &AccountView, s: S) -> Result<S::Ok, S::Error>;
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The NATS subject (`surge.order.paid`).
    pub subject: String,
    /// The CloudEvents id and `Nats-Msg-Id`: `<log id, 16 hex digits>-<lsn>-<index>`.
    pub id: String,
    /// When the change happened (engine clock, ms since the Unix epoch): the `time` attribute.
    pub time_ms: i64,
    /// The CloudEvents JSON (UTF-8, one line).
    pub payload: Vec<u8>,
}

/// An entry that could not be serialized (a serializer error: not expected with the engine's
/// types).
#[derive(Debug, thiserror::Error)]
#[error("event {id}: {source}")]
pub struct EncodeError {
    /// The event's id.
    pub id: String,
    /// The serializer's error.
    #[source]
    pub source: serde_json::Error,
}

/// Turns outbox entries into [`Envelope`]s for one subject prefix and node.
///
/// ```
/// # use serde::{Serialize, Serializer};
/// # use surge_engine::{wallet::AccountView, Order, SkuView, SaleRules};
/// # struct EngineSerde;
/// # impl surge_events::WireFormat for EngineSerde {
/// #     fn order<S: Serializer>(&self, o: &Order, s: S) -> Result<S::Ok, S::Error> { o.serialize(s) }
/// #     fn sku<S: Serializer>(&self, k: &SkuView, s: S) -> Result<S::Ok, S::Error> { k.serialize(s) }
/// #     fn account<S: Serializer>(&self, a: &AccountView, s: S) -> Result<S::Ok, S::Error> { a.serialize(s) }
/// # }
/// use surge_events::Encoder;
/// use surge_persistence::outbox::{OutboxEntry, OutboxItem};
/// let sku = SkuView {
///     sku_id: "tea 1.5kg".into(), name: "Tea".into(), price: "9.90".parse().unwrap(),
///     available: 7, reserved: 0, sold: 3, stocked_total: 10, rules: SaleRules::default(),
/// };
/// let entry = OutboxEntry { lsn: 42, index: 1, item: OutboxItem::Stock(Box::new(sku), 0) };
/// let env = Encoder::new("surge", "surge-1", EngineSerde).with_log_id(0xab).encode(&entry).unwrap();
/// assert_eq!(env.subject, "surge.stock.tea%201%2E5kg");
/// assert_eq!(env.id, "00000000000000ab-42-1");
/// let json: serde_json::Value = serde_json::from_slice(&env.payload).unwrap();
/// assert_eq!(json["type"], "surge.stock");
/// assert_eq!(json["subject"], "tea 1.5kg");
/// assert_eq!(json["time"], "1970-01-01T00:00:00.000Z");
/// ```
#[derive(Debug, Clone)]
pub struct Encoder<W> {
    prefix: String,
    source: String,
    /// The log's id, the first part of every event id (`OutboxLog::log_id`; 0 until set).
    log_id: u64,
    wire: W,
}

impl<W: WireFormat> Encoder<W> {
    /// An encoder for subjects under `subject_prefix` (already valid: see
    /// [`crate::EventsConfig::validate`]) and the source `surge/<node>`.
    pub fn new(subject_prefix: &str, node: &str, wire: W) -> Self {
        Self { prefix: subject_prefix.to_owned(), source: format!("surge/{node}"), log_id: 0, wire }
    }

    /// The same, naming events of the log `log_id` (`OutboxLog::log_id`): ids stay unique when
    /// a data directory is replaced or several nodes share a stream.
    pub fn with_log_id(self, log_id: u64) -> Self {
        Self { log_id, ..self }
    }

    /// The message for `entry`.
    ///
    /// # Errors
    /// [`EncodeError`] when the data does not serialize.
    pub fn encode(&self, entry: &OutboxEntry) -> Result<Envelope, EncodeError> {
        let id = format!("{:016x}-{}-{}", self.log_id, entry.lsn, entry.index);
        let p = &self.prefix;
        let (subject, kind, ce_subject) = match &entry.item {
            OutboxItem::OrderCreated(o) => {
                let s = format!("{p}.order.created");
                (s.clone(), s, o.order_id.0.to_string())
            }
            OutboxItem::OrderChanged(o) => {
                let s = format!("{p}.order.{}", o.status.as_str());
                (s.clone(), s, o.order_id.0.to_string())
            }
            OutboxItem::Stock(sku, _) => {
                let s = format!("{p}.stock.{}", subject_token(&sku.sku_id));
                (s, format!("{p}.stock"), sku.sku_id.to_string())
            }
            OutboxItem::Wallet { user_id, account, .. } => {
                let s = format!("{p}.wallet.{}", subject_token(account.asset.as_str()));
                (s, format!("{p}.wallet"), user_id.to_string())
            }
        };
        let time_ms = event_time_ms(&entry.item);
        let time = rfc3339_ms(time_ms);
        let event = CloudEvent {
            specversion: SPEC_VERSION,
            id: &id,
            source: &self.source,
            kind: &kind,
            subject: &ce_subject,
            time: time.as_deref(),
            datacontenttype: DATA_CONTENT_TYPE,
            data: Data { wire: &self.wire, item: &entry.item },
        };
        match serde_json::to_vec(&event) {
            Ok(payload) => Ok(Envelope { subject, id, time_ms, payload }),
            Err(source) => Err(EncodeError { id, source }),
        }
    }
}

/// `id` as a NATS subject token: see the module's "Escaping".
///
/// ```
/// use surge_events::subject_token;
/// assert_eq!(subject_token("SKU-1"), "SKU-1");
/// assert_eq!(subject_token("a.b *>%"), "a%2Eb%20%2A%3E%25");
/// ```
pub fn subject_token(id: &str) -> Cow<'_, str> {
    if id.is_empty() {
        return Cow::Borrowed("%");
    }
    let plain = |b: u8| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'%');
    if id.bytes().all(plain) {
        return Cow::Borrowed(id);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    Cow::Owned(out)
}

/// When the change happened (engine clock, ms): an order's creation time, or its last history
/// entry's (`updated_at_ms` if it has none); the engine clock of a stock or wallet change.
///
/// ```
/// use surge_engine::{SaleRules, SkuView};
/// use surge_events::envelope::event_time_ms;
/// use surge_persistence::outbox::OutboxItem;
/// let sku = SkuView {
///     sku_id: "A".into(), name: "A".into(), price: Default::default(), available: 1, reserved: 0,
///     sold: 0, stocked_total: 1, rules: SaleRules::default(),
/// };
/// assert_eq!(event_time_ms(&OutboxItem::Stock(Box::new(sku), 42)), 42);
/// ```
pub fn event_time_ms(item: &OutboxItem) -> i64 {
    match item {
        OutboxItem::OrderCreated(o) => o.created_at_ms,
        OutboxItem::OrderChanged(o) => o.history.last().map_or(o.updated_at_ms, |h| h.at_ms),
        OutboxItem::Stock(_, at_ms) | OutboxItem::Wallet { at_ms, .. } => *at_ms,
    }
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds; `None` outside years 0..=9999
/// (the `time` attribute is then left out: it is optional in CloudEvents).
///
/// ```
/// use surge_events::envelope::rfc3339_ms;
/// assert_eq!(rfc3339_ms(1_762_819_200_123).as_deref(), Some("2025-11-11T00:00:00.123Z"));
/// assert_eq!(rfc3339_ms(i64::MAX), None);
/// ```
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(RFC3339_MS).ok()
}

#[derive(Serialize)]
struct CloudEvent<'a, D> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<&'a str>,
    datacontenttype: &'static str,
    data: D,
}

/// `data`: the order, the SKU, or `{"user_id":…,"account":{…}}`.
struct Data<'a, W> {
    wire: &'a W,
    item: &'a OutboxItem,
}

impl<W: WireFormat> Serialize for Data<'_, W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.item {
            OutboxItem::OrderCreated(o) | OutboxItem::OrderChanged(o) => self.wire.order(o, s),
            OutboxItem::Stock(sku, _) => self.wire.sku(sku, s),
            OutboxItem::Wallet { user_id, account, .. } => {
                WalletData { user_id, account: Account { wire: self.wire, account } }.serialize(s)
            }
        }
    }
}

#[derive(Serialize)]
#[serde(bound = "W: WireFormat")]
struct WalletData<'a, W> {
    user_id: &'a str,
    account: Account<'a, W>,
}

struct Account<'a, W> {
    wire: &'a W,
    account: &'a AccountView,
}

impl<W: WireFormat> Serialize for Account<'_, W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire.account(self.account, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_kept_and_forbidden_bytes_escaped() {
        assert!(matches!(subject_token("ABC-1_x"), Cow::Borrowed("ABC-1_x")));
        assert_eq!(subject_token("a.b"), "a%2Eb");
        assert_eq!(subject_token("a*"), "a%2A");
        assert_eq!(subject_token(">"), "%3E");
        assert_eq!(subject_token("a b\tc\n"), "a%20b%09c%0A");
        assert_eq!(subject_token("100%"), "100%25");
        assert_eq!(subject_token("茶"), "%E8%8C%B6");
        assert_eq!(subject_token("\u{7f}"), "%7F");
        assert_eq!(subject_token(""), "%");
    }

    #[test]
    fn escaping_is_reversible_and_yields_valid_tokens() {
        let ids = ["a.b", "a%2Eb", "x y", "*", ">", "%", "a>b.c*d", "ü.ö", "$x"];
        for id in ids {
            let t = subject_token(id);
            assert!(!t.is_empty());
            assert!(t.bytes().all(|b| b.is_ascii_graphic() && !b".*>".contains(&b)), "{id:?} -> {t}");
            assert!(async_nats::Subject::validated(format!("surge.stock.{t}")).is_ok(), "{t}");
            assert_eq!(percent_decode(&t), id.as_bytes(), "{id:?}");
        }
        // Distinct ids, distinct tokens (the escaped '%' keeps "a.b" and "a%2Eb" apart).
        assert_ne!(subject_token("a.b"), subject_token("a%2Eb"));
    }

    fn percent_decode(t: &str) -> Vec<u8> {
        let b = t.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&t[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(rfc3339_ms(1_762_819_200_123).as_deref(), Some("2025-11-11T00:00:00.123Z"));
        assert_eq!(rfc3339_ms(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(rfc3339_ms(i64::MAX), None);
    }
}
