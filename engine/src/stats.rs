//! Cheap, read-only engine counters for monitoring (the gateway exports them as metrics).
//!
//! Each shard thread is the only writer of its [`ShardCounters`]; it publishes with a relaxed
//! load + store (no locked read-modify-write, no lock), messages handled once per batch. Readers
//! ([`crate::Engine::stats`]) see each counter monotonic, possibly a batch behind.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::OrderStatus;

const STATUS_COUNT: usize = OrderStatus::ALL.len();

/// One shard's counters (written by its thread only).
#[derive(Debug)]
pub(crate) struct ShardCounters {
    messages_handled: AtomicU64,
    orders_created: AtomicU64,
    /// `[from * STATUS_COUNT + to]`.
    transitions: [AtomicU64; STATUS_COUNT * STATUS_COUNT],
}

impl Default for ShardCounters {
    fn default() -> Self {
        Self {
            messages_handled: AtomicU64::new(0),
            orders_created: AtomicU64::new(0),
            transitions: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Single-writer increment: no locked instruction on the shard's hot path.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn index(s: OrderStatus) -> usize {
    OrderStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl ShardCounters {
    pub(crate) fn handled(&self, n: u64) {
        if n > 0 {
            bump(&self.messages_handled, n);
        }
    }

    pub(crate) fn order_created(&self) {
        bump(&self.orders_created, 1);
    }

    pub(crate) fn transition(&self, from: OrderStatus, to: OrderStatus) {
        bump(&self.transitions[index(from) * STATUS_COUNT + index(to)], 1);
    }
}

/// One shard as monitoring sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardStats {
    /// Requests waiting in the shard's bounded request mailbox (full = `overloaded`).
    pub mailbox_depth: usize,
    /// Messages from other shards waiting (saga steps, barriers).
    pub internal_depth: usize,
    /// Messages the shard has handled since start (requests and internal messages).
    pub messages_handled: u64,
    /// Orders created by sagas on this shard since start.
    pub orders_created: u64,
}

/// Order transitions taken since start, by (from, to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionCount {
    /// Status before.
    pub from: OrderStatus,
    /// Status after.
    pub to: OrderStatus,
    /// Transitions taken (all shards).
    pub count: u64,
}

/// A point-in-time reading of the engine's counters ([`crate::Engine::stats`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Per shard, by shard id.
    pub shards: Vec<ShardStats>,
    /// Every (from, to) pair taken at least once, summed over shards.
    pub transitions: Vec<TransitionCount>,
}

impl EngineStats {
    /// Orders created since start (all shards).
    pub fn orders_created(&self) -> u64 {
        self.shards.iter().map(|s| s.orders_created).sum()
    }

    pub(crate) fn read(
        counters: &[std::sync::Arc<ShardCounters>],
        depths: impl Iterator<Item = (usize, usize)>,
    ) -> Self {
        let shards = counters
            .iter()
            .zip(depths)
            .map(|(c, (mailbox_depth, internal_depth))| ShardStats {
                mailbox_depth,
                internal_depth,
                messages_handled: c.messages_handled.load(Ordering::Relaxed),
                orders_created: c.orders_created.load(Ordering::Relaxed),
            })
            .collect();
        let mut transitions = Vec::new();
        for (i, from) in OrderStatus::ALL.iter().enumerate() {
            for (j, to) in OrderStatus::ALL.iter().enumerate() {
                let count: u64 =
                    counters.iter().map(|c| c.transitions[i * STATUS_COUNT + j].load(Ordering::Relaxed)).sum();
                if count > 0 {
                    transitions.push(TransitionCount { from: *from, to: *to, count });
                }
            }
        }
        Self { shards, transitions }
    }
}
