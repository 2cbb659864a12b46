//! The transactional outbox's reading side (issue 15): what a publisher reads from the durable
//! log, and the cursor it keeps beside it.
//!
//! # Shape
//! While the outbox is on ([`PersistenceConfig::outbox`](crate::PersistenceConfig)), every shard
//! batch journals, beside each change, what other systems hear of it
//! ([`surge_engine::OutboxEvent`]): so the message and the change are durable together or not at
//! all (the transactional outbox pattern, with the WAL as the outbox table). [`OutboxLog`] reads
//! the durable records after a cursor and turns them into [`OutboxEntry`]s, each named by its
//! record's LSN and its index in the record: a stable id, the same on every read, which the
//! publisher uses as its message id (so JetStream drops a re-publish).
//!
//! # The cursor
//! The publisher saves the LSN through which everything is published (sled's `meta` tree, key
//! [`META_OUTBOX_CURSOR`]) only after the acknowledgements arrive; after a crash it reads again
//! from there. The first time the outbox is on in a data directory, the cursor starts at the end
//! of the log (events from then on). Snapshots trim no record after the cursor
//! ([`crate::snapshot::write_and_trim_retaining`]) until the unpublished records pass
//! [`OutboxRetention::max_lag_bytes`]; then the log is trimmed as if they were published and
//! [`WalStats::outbox_records_dropped`](crate::WalStats) counts them: the engine never stops
//! for a stream that is down (the choice is documented in `docs/events.md`).
//!
//! ```
//! use std::sync::Arc;
//! use surge_engine::EngineConfig;
//! use surge_persistence::{outbox::OutboxRetention, DurableEngine, PersistenceConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let cfg = PersistenceConfig { outbox: Some(OutboxRetention::default()), ..PersistenceConfig::new(dir.path()) };
//! let db = DurableEngine::open(cfg, EngineConfig::default()).unwrap();
//! let outbox = db.outbox().unwrap();
//! let page = outbox.read_after(outbox.cursor(), 100).unwrap();
//! assert!(page.entries.is_empty(), "a new directory has nothing to publish");
//! db.close().unwrap();
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;

use surge_engine::wallet::AccountView;
use surge_engine::{Event, Order, OrderEvent, OutboxEvent, SkuView, UserId};

use crate::codec::decode_record_into;
use crate::error::PersistenceResult;
use crate::storage::Storage;
use crate::writer::WalStats;

/// The meta key of the outbox cursor: the LSN through which every entry is published.
pub const META_OUTBOX_CURSOR: &str = "outbox_published_lsn";

/// The meta key of the log's id: a random number drawn when the outbox is first on in a data
/// directory. LSNs restart with a new directory; the id does not repeat, so event ids
/// (`<log id>-<lsn>-<index>`) never collide with a wiped directory's, or another node's, in one
/// stream's de-duplication window (CloudEvents: `source` + `id` unique).
pub const META_OUTBOX_LOG_ID: &str = "outbox_log_id";

/// How much unpublished log the snapshots keep for the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxRetention {
    /// Log bytes after the cursor that snapshots keep untrimmed; past it they trim as usual and
    /// the unpublished events are dropped (counted). Default 1 GiB: at ~300 bytes per order
    /// event, about three million changes, or several minutes of a flash sale at full speed.
    pub max_lag_bytes: u64,
}

impl Default for OutboxRetention {
    fn default() -> Self {
        Self { max_lag_bytes: 1 << 30 }
    }
}

/// A change as the outbox publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxItem {
    /// An order was created (`<prefix>.order.created`): the order as created.
    OrderCreated(Arc<Order>),
    /// An order moved to a new status (`<prefix>.order.<status>`): the order right after.
    OrderChanged(Arc<Order>),
    /// A SKU's counters or rules changed (`<prefix>.stock.<sku_id>`): the SKU after the batch,
    /// and the engine clock then (ms).
    Stock(Box<SkuView>, i64),
    /// A wallet account changed (`<prefix>.wallet.<asset>`).
    Wallet {
        /// Its user.
        user_id: UserId,
        /// The account after the change.
        account: AccountView,
        /// When (engine clock, ms).
        at_ms: i64,
    },
}

/// One entry of the durable log to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The LSN of its record.
    pub lsn: u64,
    /// Its event's index in the record (every event counts, published or not): with `lsn`, a
    /// stable id.
    pub index: u32,
    /// What to publish.
    pub item: OutboxItem,
}

/// Entries read from the log after a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxPage {
    /// In log order.
    pub entries: Vec<OutboxEntry>,
    /// Every record up to this LSN was read (those with nothing to publish too): once every
    /// entry is acknowledged, save it as the cursor. Equal to the cursor asked for if nothing
    /// durable follows it.
    pub through_lsn: u64,
}

/// The outbox's handle on the log: read durable entries after a cursor, keep the cursor.
/// Cloned freely; reads never block the WAL writer for long (sled's reads are lock-free).
#[derive(Clone)]
pub struct OutboxLog {
    store: Arc<dyn Storage>,
    stats: Arc<WalStats>,
}

impl OutboxLog {
    /// The outbox on `store`, whose writer reports durability in `stats`; starts the cursor at
    /// `last_lsn` if the directory has none yet.
    ///
    /// # Errors
    /// The cursor could not be stored.
    pub(crate) fn open(store: Arc<dyn Storage>, stats: Arc<WalStats>, last_lsn: u64) -> PersistenceResult<Self> {
        if store.meta_u64(META_OUTBOX_LOG_ID).is_none() {
            store.set_meta_u64(META_OUTBOX_LOG_ID, random_log_id())?;
        }
        if store.meta_u64(META_OUTBOX_CURSOR).is_none() {
            store.set_meta_u64(META_OUTBOX_CURSOR, last_lsn)?;
        }
        Ok(Self { store, stats })
    }

    /// This log's id ([`META_OUTBOX_LOG_ID`]), part of every event id.
    pub fn log_id(&self) -> u64 {
        self.store.meta_u64(META_OUTBOX_LOG_ID).unwrap_or(0)
    }

    /// The LSN through which every entry is published.
    pub fn cursor(&self) -> u64 {
        self.store.meta_u64(META_OUTBOX_CURSOR).unwrap_or(0)
    }

    /// Save the cursor (call only once every entry through `lsn` is acknowledged). Never moves
    /// it back. Written to the OS: a power loss may lose the last save, and the publisher then
    /// publishes again what the stream already dropped as duplicates.
    ///
    /// # Errors
    /// The storage refused the write.
    pub fn save_cursor(&self, lsn: u64) -> PersistenceResult<()> {
        if lsn > self.cursor() {
            self.store.set_meta_u64(META_OUTBOX_CURSOR, lsn)?;
        }
        Ok(())
    }

    /// The highest durable LSN: nothing after it is read.
    pub fn durable_lsn(&self) -> u64 {
        self.stats.durable_lsn.load(Ordering::Acquire)
    }

    /// Log records that snapshots trimmed before they were published (past
    /// [`OutboxRetention::max_lag_bytes`]), since this process started.
    pub fn records_dropped(&self) -> u64 {
        self.stats.outbox_records_dropped.load(Ordering::Relaxed)
    }

    /// The entries of up to `records_max` durable records after `after_lsn`, in log order.
    ///
    /// # Errors
    /// The storage failed to read; a record does not decode (the log is damaged: recovery
    /// refuses it as well).
    pub fn read_after(&self, after_lsn: u64, records_max: usize) -> PersistenceResult<OutboxPage> {
        let durable = self.durable_lsn();
        let mut page = OutboxPage { entries: Vec::new(), through_lsn: after_lsn };
        let (mut records, mut events) = (0usize, Vec::new());
        self.store.for_each_record_after(after_lsn, &mut |lsn, bytes| {
            if lsn > durable || records >= records_max {
                return Ok(false);
            }
            events.clear();
            decode_record_into(lsn, bytes, &mut events)?;
            for (i, e) in events.drain(..).enumerate() {
                if let Some(item) = item_of(e) {
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    page.entries.push(OutboxEntry { lsn, index, item });
                }
            }
            page.through_lsn = lsn;
            records += 1;
            Ok(true)
        })?;
        if records < records_max {
            // Every durable record after `after_lsn` was read: the cursor may move up to
            // `durable` (LSNs there with no record hold nothing to publish).
            page.through_lsn = durable.max(after_lsn);
        }
        Ok(page)
    }

    /// Bytes of the log after the cursor (what a snapshot would have to keep).
    ///
    /// # Errors
    /// The storage failed to read.
    pub fn lag_bytes(&self) -> PersistenceResult<u64> {
        bytes_after(&*self.store, self.cursor())
    }
}

/// Bytes of the records after `after_lsn`.
pub(crate) fn bytes_after(store: &dyn Storage, after_lsn: u64) -> PersistenceResult<u64> {
    let mut bytes = 0u64;
    store.for_each_record_after(after_lsn, &mut |_, b| {
        bytes = bytes.saturating_add(b.len() as u64);
        Ok(true)
    })?;
    Ok(bytes)
}

/// What the outbox publishes of a logged event: creations, and the outbox's own copies.
fn item_of(e: Event) -> Option<OutboxItem> {
    match e {
        Event::Order(OrderEvent::Created(o)) => Some(OutboxItem::OrderCreated(o)),
        Event::Outbox(OutboxEvent::Order(o)) => Some(OutboxItem::OrderChanged(o)),
        Event::Outbox(OutboxEvent::Stock(sku, at_ms)) => Some(OutboxItem::Stock(sku, at_ms)),
        Event::Outbox(OutboxEvent::Wallet(w)) => {
            let w = *w;
            Some(OutboxItem::Wallet { user_id: w.user_id, account: w.account, at_ms: w.at_ms })
        }
        _ => None,
    }
}

/// A log id: std's per-process random hasher keys, the clock and the process id, hashed; never 0
/// (0 reads as "none").
fn random_log_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish().max(1)
}
