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

    /// Check every field.
    ///
    /// # Errors
    /// `invalid_config` naming the first bad field.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: &str| Err(EngineError::InvalidConfig { message: m.to_owned() });
        if self.effective_shard_count() > 4096 {
            return bad("shard_count must be at most 4096");
        }
        if self.node_id > NODE_ID_MAX {
            return bad("node_id must be at most 1023");
        }
        if self.mailbox_capacity == 0 || self.batch_size_max == 0 {
            return bad("mailbox_capacity and batch_size_max must be positive");
        }
        if self.order_items_max == 0 || self.order_items_max > 255 || self.item_qty_max == 0 {
            return bad("order_items_max must be 1..=255 and item_qty_max positive");
        }
        if self.list_limit_max == 0 || self.timers_per_tick_max == 0 || self.tick_interval_ms == 0 {
            return bad("list_limit_max, timers_per_tick_max and tick_interval_ms must be positive");
        }
        Ok(())
    }
}
