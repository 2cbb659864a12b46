//! Engine configuration: shards, mailboxes, limits, timers.
//!
//! Every field has a default ([`EngineConfig::default`]); the server reads the same struct from
//! the `[engine]` table of `config/surge.toml`.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::snowflake::NODE_ID_MAX;

/// Tunables of the engine core. Units are in the names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Shard threads; 0 means one per available core.
    pub shard_count: usize,
    /// Capacity of each shard's request mailbox; a full mailbox answers `overloaded` at once.
    pub mailbox_capacity: usize,
    /// Messages a shard handles before it flushes replies (its batch size, which becomes the
    /// group-commit batch once the WAL is on).
    pub batch_size_max: usize,
    /// Snowflake node id, 0..=1023; distinct per engine instance that shares an id space.
    pub node_id: u16,
    /// Time an order may stay in `pending_payment` before it is canceled. Default 15 min.
    pub payment_timeout_ms: u64,
    /// Time after delivery when an order completes by itself. Default 7 days.
    pub auto_complete_ms: u64,
    /// Orders in a terminal status for this long leave memory and are served from the archive
    /// (only when the engine has one: durable modes). Also the retention of their idempotency
    /// records. Default 24 h.
    pub archive_after_ms: u64,
    /// How long after an order completed its buyer may still `open_dispute` (issue 10, item 9;
    /// archived orders included: they are brought back into memory). Counted from the first
    /// completion. Default 30 days (2,592,000,000 ms).
    pub dispute_window_ms: u64,
    /// Most line items per order (the engine-core issue: 20).
    pub order_items_max: usize,
    /// Largest quantity per line item (the engine-core issue: 99).
    pub item_qty_max: u32,
    /// Largest page size for `list_orders`.
    pub list_limit_max: usize,
    /// Most timers a shard fires per tick (a bound on that loop; the rest fire next tick).
    pub timers_per_tick_max: usize,
    /// How often an idle shard wakes to fire due timers.
    pub tick_interval_ms: u64,
    /// Live orders to make room for at start (0: grow as needed). The order maps (each
    /// shard's orders and idempotency records, the read models) are sized once for this many,
    /// so growing to it never stops a shard to rehash a table: doubling a map of 4 M entries
    /// copies ~64 MB in one go, a stall of tens of ms (issue 12, "no stalls"). Costs ~70 bytes
    /// per expected order up front, touched only as it is used. At most 2^32.
    pub live_orders_expected: u64,
    /// The assets wallets may hold (issue 14), as `[[engine.assets]]` tables: code, scale and
    /// the rate at which one unit pays orders. Default: `CNY` (scale 2, rate 1) and `POINTS`
    /// (scale 0, rate 0.01: 100 points pay 1.00).
    pub assets: Vec<crate::wallet::AssetSpec>,
    /// Journal what the outbox publishes ([`crate::event::OutboxEvent`]) with each change
    /// (issue 15). Set by the server when `[events]` is configured; not a config-file key.
    #[serde(skip)]
    pub outbox: bool,
    /// Run as a cluster node's engine (issue 16): give up saga steps after `saga_timeout_ms`
    /// and check unclaimed reservations of other partitions. Set by
    /// [`crate::EngineBuilder::cluster`]; not a config-file key.
    #[serde(skip)]
    pub clustered: bool,
    /// A wallet payment's try still open after this long is canceled by the engine clock
    /// (issue 14; TigerBeetle's pending transfers with a timeout). Default 10 s.
    pub tcc_try_timeout_ms: u64,
    /// In a cluster (issue 16): a saga step waiting this long for another partition's answer is
    /// given up (its caller gets `unavailable`, outcome unknown: retry with the same key), and
    /// a SKU partition checks a reservation no order has claimed after this long with the
    /// order's partition (releasing it if the order does not exist). Unused on a single node.
    /// Default 10 s.
    pub saga_timeout_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shard_count: 0,
            mailbox_capacity: 65_536,
            batch_size_max: 1_024,
            node_id: 0,
            payment_timeout_ms: 15 * 60 * 1_000,
            auto_complete_ms: 7 * 24 * 3_600 * 1_000,
            archive_after_ms: 24 * 3_600 * 1_000,
            dispute_window_ms: 30 * 24 * 3_600 * 1_000,
            order_items_max: 20,
            item_qty_max: 99,
            list_limit_max: 100,
            timers_per_tick_max: 4_096,
            tick_interval_ms: 10,
            live_orders_expected: 0,
            assets: crate::wallet::AssetSpec::defaults(),
            tcc_try_timeout_ms: 10_000,
            saga_timeout_ms: 10_000,
            outbox: false,
            clustered: false,
        }
    }
}

impl EngineConfig {
    /// The shard count after resolving 0 to the number of cores.
    pub fn effective_shard_count(&self) -> usize {
        if self.shard_count == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            self.shard_count
        }
    }

    /// Check every field: each must fit what uses it (issue 10, item 3: config that does not fit
    /// is refused at start, never met as a panic or a wrap later).
    ///
    /// * `shard_count` ≤ 4096: order ids route by their 12 sequence bits ([`crate::snowflake`]).
    /// * `node_id` ≤ 1023: the snowflake's 10 node bits.
    /// * Durations (`payment_timeout_ms`, `auto_complete_ms`, `archive_after_ms`) ≤
    ///   [`DURATION_MS_MAX`] (100 years), so a clock plus any of them fits an `i64`.
    /// * Capacities and counts positive and at most their `*_MAX` constant (a bounded channel
    ///   allocates its capacity up front).
    ///
    /// # Errors
    /// `invalid_config` naming the first bad field.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::InvalidConfig { message: m });
        if self.effective_shard_count() > SHARD_COUNT_MAX {
            return bad(format!("shard_count must be at most {SHARD_COUNT_MAX} (order ids route by 12 bits)"));
        }
        if self.node_id > NODE_ID_MAX {
            return bad(format!("node_id must be at most {NODE_ID_MAX} (10 bits of the order id)"));
        }
        let durations = [
            ("payment_timeout_ms", self.payment_timeout_ms),
            ("auto_complete_ms", self.auto_complete_ms),
            ("archive_after_ms", self.archive_after_ms),
            ("tcc_try_timeout_ms", self.tcc_try_timeout_ms),
            ("saga_timeout_ms", self.saga_timeout_ms),
        ];
        for (name, ms) in durations {
            if ms > DURATION_MS_MAX {
                return bad(format!("{name} must be at most {DURATION_MS_MAX} (100 years)"));
            }
        }
        let counts = [
            ("mailbox_capacity", self.mailbox_capacity as u64, MAILBOX_CAPACITY_MAX),
            ("batch_size_max", self.batch_size_max as u64, BATCH_SIZE_MAX),
            ("order_items_max", self.order_items_max as u64, ORDER_ITEMS_MAX),
            ("item_qty_max", u64::from(self.item_qty_max), ITEM_QTY_MAX),
            ("list_limit_max", self.list_limit_max as u64, LIST_LIMIT_MAX),
            ("timers_per_tick_max", self.timers_per_tick_max as u64, TIMERS_PER_TICK_MAX),
            ("tick_interval_ms", self.tick_interval_ms, TICK_INTERVAL_MS_MAX),
        ];
        if self.live_orders_expected > LIVE_ORDERS_EXPECTED_MAX {
            return bad(format!("live_orders_expected must be at most {LIVE_ORDERS_EXPECTED_MAX}"));
        }
        for (name, value, max) in counts {
            if value == 0 || value > max {
                return bad(format!("{name} must be 1..={max}"));
            }
        }
        crate::wallet::Assets::new(&self.assets)?;
        Ok(())
    }
}

/// Largest `live_orders_expected`: 2^32 orders (hundreds of GB of memory).
pub const LIVE_ORDERS_EXPECTED_MAX: u64 = 1 << 32;
/// Most shards: order ids route to shards by their 12 sequence bits.
pub const SHARD_COUNT_MAX: usize = 4096;
/// Longest configurable duration: 100 years in ms (a clock plus this fits an `i64` for
/// millennia).
pub const DURATION_MS_MAX: u64 = 100 * 366 * 86_400_000;
/// Largest `mailbox_capacity` (16 Mi messages; the channel allocates it up front).
pub const MAILBOX_CAPACITY_MAX: u64 = 1 << 24;
/// Largest `batch_size_max`.
pub const BATCH_SIZE_MAX: u64 = 1 << 20;
/// Largest `order_items_max`: a line item's index travels as a `u8`.
pub const ORDER_ITEMS_MAX: u64 = 255;
/// Largest `item_qty_max`.
pub const ITEM_QTY_MAX: u64 = 1_000_000;
/// Largest `list_limit_max` (a page is built in memory).
pub const LIST_LIMIT_MAX: u64 = 10_000;
/// Largest `timers_per_tick_max`.
pub const TIMERS_PER_TICK_MAX: u64 = 1 << 20;
/// Longest `tick_interval_ms`: one minute (timers fire at most this late on an idle shard).
pub const TICK_INTERVAL_MS_MAX: u64 = 60_000;

/// A configured duration as a signed ms offset for clock arithmetic; saturates instead of
/// wrapping (`validate` keeps durations far below the limit anyway).
pub(crate) fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(cfg: EngineConfig, field: &str) {
        match cfg.validate() {
            Err(EngineError::InvalidConfig { message }) => assert!(message.contains(field), "{field}: {message}"),
            other => panic!("{field}: expected invalid_config, got {other:?}"),
        }
    }

    #[test]
    fn values_that_do_not_fit_are_refused_naming_the_field() {
        let d = EngineConfig::default;
        assert_eq!(d().validate(), Ok(()));
        refused(EngineConfig { shard_count: 4097, ..d() }, "shard_count");
        refused(EngineConfig { node_id: 1024, ..d() }, "node_id");
        refused(EngineConfig { payment_timeout_ms: u64::MAX, ..d() }, "payment_timeout_ms");
        refused(EngineConfig { auto_complete_ms: i64::MAX as u64 + 1, ..d() }, "auto_complete_ms");
        refused(EngineConfig { archive_after_ms: DURATION_MS_MAX + 1, ..d() }, "archive_after_ms");
        refused(EngineConfig { mailbox_capacity: 0, ..d() }, "mailbox_capacity");
        refused(EngineConfig { mailbox_capacity: usize::MAX, ..d() }, "mailbox_capacity");
        refused(EngineConfig { batch_size_max: usize::MAX, ..d() }, "batch_size_max");
        refused(EngineConfig { order_items_max: 256, ..d() }, "order_items_max");
        refused(EngineConfig { item_qty_max: 0, ..d() }, "item_qty_max");
        refused(EngineConfig { item_qty_max: u32::MAX, ..d() }, "item_qty_max");
        refused(EngineConfig { list_limit_max: usize::MAX, ..d() }, "list_limit_max");
        refused(EngineConfig { timers_per_tick_max: 0, ..d() }, "timers_per_tick_max");
        refused(EngineConfig { tick_interval_ms: u64::MAX, ..d() }, "tick_interval_ms");
        let edge = EngineConfig {
            shard_count: 4096,
            node_id: 1023,
            payment_timeout_ms: DURATION_MS_MAX,
            item_qty_max: 1_000_000,
            ..d()
        };
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn durations_never_wrap_when_added_to_a_clock() {
        assert_eq!(ms_i64(u64::MAX), i64::MAX);
        assert_eq!(ms_i64(DURATION_MS_MAX), DURATION_MS_MAX as i64);
    }
}
