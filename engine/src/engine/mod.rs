//! [`Engine`]: the cloneable handle users hold.
//!
//! It validates requests (nothing invalid reaches an actor), applies the sold-out fast path,
//! routes commands to shard mailboxes, and serves queries from read models.
//!
//! # Modules
//! `builder`: [`EngineBuilder`] and start (shard threads); `skus`: SKU commands; `orders`:
//! order commands; `queries`: reads from the read models. This file: the handle itself, shared
//! validation, and engine-wide operations (settle, audit, snapshot, shutdown, stats).

mod builder;
mod cluster;
mod orders;
mod queries;
mod skus;
mod wallet;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use rust_decimal::Decimal;

use crate::audit::AuditReport;
use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::error::{EngineError, EngineResult};
use crate::event::{OrderArchive, StorageGate};
use crate::pending::Pending;
use crate::publish::ReadModels;
use crate::routing::shard_for_key;
use crate::shard::{Reply, ShardMsg};
use crate::state::EngineState;
use crate::stats::{EngineStats, ShardCounters};

#[cfg(any(test, feature = "sim"))]
pub(crate) use builder::place_state;
pub use builder::EngineBuilder;
pub use orders::CREATE_BATCH_MAX;

/// Longest SKU id, user id and payment id, in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Longest name, reason or tracking number, in bytes.
pub const TEXT_BYTES_MAX: usize = 256;
/// Largest unit price: 10^12 currency units (`create_sku`, `update_sku`). With at most
/// [`PRICE_SCALE_MAX`] decimal places, a price's mantissa stays below 10^16, so even 255 line
/// items × `u32::MAX` units × `PRICE_MAX` (about 1.1 × 10^28) stay below `Decimal::MAX`
/// (about 7.9 × 10^28): no order total can overflow (issue 10, item 3).
pub const PRICE_MAX: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0);
/// Most decimal places of a price: 4, the most minor units of any ISO 4217 currency.
pub const PRICE_SCALE_MAX: u32 = 4;
/// Largest stock of a SKU, in units (`initial_stock`, and `stocked_total` after any
/// `adjust_stock`): 10^15, far above any real inventory and the load generator's 10^12, far
/// below `u64::MAX`, so no stock counter can overflow.
pub const STOCK_MAX: u64 = 1_000_000_000_000_000;

/// A handle to a running engine. Cheap to clone; every clone talks to the same shards. The
/// shards stop when the last clone is dropped (or at [`Engine::shutdown`]).
///
/// Commands return a [`Pending`]: `.await` it, or `.wait()` on a plain thread. Queries
/// (`get_order`, `list_orders`, `get_sku`) answer at once from read models and never queue
/// behind a busy actor.
///
/// # Example
/// ```
/// use surge_engine::{CreateOrder, Engine, EngineConfig, SkuSpec, SaleRules};
/// use rust_decimal::Decimal;
///
/// let engine = Engine::in_memory(EngineConfig::default()).unwrap();
/// engine.create_sku(SkuSpec {
///     sku_id: "phone".into(), name: "Phone".into(), price: Decimal::new(59990, 2),
///     initial_stock: 1, rules: SaleRules::default(),
/// }).wait().unwrap();
///
/// let order = engine.create_order(CreateOrder::new("alice", &[("phone", 1)], "k1")).wait().unwrap();
/// assert_eq!(order.total, Decimal::new(59990, 2));
/// let late = engine.create_order(CreateOrder::new("bob", &[("phone", 1)], "k1")).wait();
/// assert_eq!(late.unwrap_err().code(), "sold_out");
///
/// let paid = engine.pay(order.order_id, "psp-1", order.total, Default::default()).wait().unwrap();
/// assert_eq!(paid.status.as_str(), "paid");
/// assert_eq!(engine.get_sku("phone").unwrap().sold, 1);
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<EngineConfig>,
    shard_count: usize,
    clock: Arc<dyn Clock>,
    gate: Arc<StorageGate>,
    archive: Option<Arc<dyn OrderArchive>>,
    external: Vec<Sender<ShardMsg>>,
    internal: Vec<Sender<ShardMsg>>,
    read: Arc<ReadModels>,
    threads: Vec<JoinHandle<()>>,
    /// Monitoring counters, one per shard.
    counters: Vec<Arc<ShardCounters>>,
    /// Shard threads that have exited (each after dropping its journal).
    exited: Arc<std::sync::atomic::AtomicUsize>,
    /// The assets wallets may hold (checked from `config.assets`).
    assets: Arc<crate::wallet::Assets>,
    /// A cluster node's placement and link (issue 16); `None` on a single node.
    cluster: Option<crate::cluster::ClusterHooks>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for tx in &self.internal {
            let _ = tx.send(ShardMsg::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A price must be 0..=[`PRICE_MAX`] with at most [`PRICE_SCALE_MAX`] decimal places.
fn check_price(price: Decimal) -> EngineResult<()> {
    if price.is_sign_negative() {
        return Err(EngineError::invalid("price must not be negative"));
    }
    if price > PRICE_MAX || price.scale() > PRICE_SCALE_MAX {
        return Err(EngineError::invalid(format!(
            "price must be at most {PRICE_MAX} with at most {PRICE_SCALE_MAX} decimal places"
        )));
    }
    Ok(())
}

fn check_text(what: &str, value: &str, max: usize) -> EngineResult<()> {
    if value.is_empty() || value.len() > max {
        return Err(EngineError::invalid(format!("{what} must be 1..={max} bytes")));
    }
    Ok(())
}

impl Engine {
    /// The configuration in force (with `shard_count` resolved).
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine clock, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn submit<T>(&self, shard: usize, make: impl FnOnce(Reply<T>) -> ShardMsg) -> Pending<T> {
        if self.inner.gate.is_failed() {
            return Pending::ready(Err(EngineError::StorageUnavailable {
                message: "the log cannot be written; writes are refused until storage recovers (see logs)".into(),
            }));
        }
        let (tx, rx) = oneshot::channel();
        match self.inner.external[shard].try_send(make(tx.into())) {
            Ok(()) => Pending::waiting(rx),
            Err(TrySendError::Full(_)) => Pending::ready(Err(EngineError::Overloaded)),
            Err(TrySendError::Disconnected(_)) => Pending::ready(Err(EngineError::ShuttingDown)),
        }
    }

    /// Send `msgs` (commands, each holding its reply sender) to `shard` as one mailbox message.
    /// A full mailbox, a closed engine or a failed log answers each command at once, as
    /// [`Engine::submit`] would.
    pub(crate) fn submit_batch(&self, shard: usize, msgs: Vec<ShardMsg>) {
        let refuse = |msgs: Vec<ShardMsg>, e: EngineError| {
            for m in msgs {
                if let ShardMsg::CreateOrder(_, reply, _) = m {
                    reply.send(Err(e.clone()));
                }
            }
        };
        if self.inner.gate.is_failed() {
            let message = "the log cannot be written; writes are refused until storage recovers (see logs)".into();
            return refuse(msgs, EngineError::StorageUnavailable { message });
        }
        match self.inner.external[shard].try_send(ShardMsg::Batch(msgs)) {
            Ok(()) => {}
            Err(TrySendError::Full(ShardMsg::Batch(msgs))) => refuse(msgs, EngineError::Overloaded),
            Err(TrySendError::Disconnected(ShardMsg::Batch(msgs))) => refuse(msgs, EngineError::ShuttingDown),
            Err(_) => {}
        }
    }

    fn sku_shard(&self, sku_id: &str) -> usize {
        shard_for_key(sku_id, self.inner.shard_count)
    }

    /// Block until every shard is idle: all sagas, side effects and due timers have run. For
    /// tests and simulations (after moving a [`crate::ManualClock`]) and for orderly shutdown;
    /// gives up after 10,000 rounds if callers keep submitting.
    pub fn settle(&self) {
        for _ in 0..10_000 {
            let mut waits = Vec::with_capacity(self.inner.shard_count);
            for tx in &self.inner.internal {
                let (btx, brx) = oneshot::channel();
                if tx.send(ShardMsg::Barrier(btx)).is_err() {
                    return;
                }
                waits.push(brx);
            }
            let busy = waits.into_iter().map(|w| w.recv().unwrap_or(false)).fold(false, |a, b| a | b);
            if !busy {
                return;
            }
        }
    }

    /// Check every actor's state against every other's (see [`crate::audit`]). Call after
    /// [`Engine::settle`]. Costs a full copy of the state: a test and operations tool, not a
    /// hot-path call.
    pub fn audit(&self) -> AuditReport {
        let mut waits = Vec::with_capacity(self.inner.shard_count);
        for tx in &self.inner.internal {
            let (atx, arx) = oneshot::channel();
            if tx.send(ShardMsg::Audit(atx)).is_ok() {
                waits.push(arx);
            }
        }
        let shards = waits.into_iter().filter_map(|w| w.recv().ok()).collect();
        crate::audit::check(shards)
    }

    /// Capture every shard's state and its journal position (the cut: the log holds every event
    /// of shard `i` up to its `cuts[i]`-th batch in this state). Shards are captured one after
    /// another, not at one instant; replaying the log after each shard's cut and then
    /// [`EngineState::reconcile`] gives a consistent state. Blocks each shard while it copies.
    pub fn snapshot(&self) -> EngineResult<(EngineState, Vec<u64>)> {
        let mut waits = Vec::with_capacity(self.inner.shard_count);
        for tx in &self.inner.internal {
            let (stx, srx) = oneshot::channel();
            tx.send(ShardMsg::Snapshot(stx)).map_err(|_| EngineError::ShuttingDown)?;
            waits.push(srx);
        }
        let mut state = EngineState::default();
        let mut cuts = Vec::with_capacity(waits.len());
        for w in waits {
            let (part, cut) = w.recv().map_err(|_| EngineError::ShuttingDown)?;
            // Built here, on the caller's thread: the shard only shared its chunks.
            state.merge(part.into_state());
            cuts.push(cut);
        }
        Ok((state, cuts))
    }

    /// Return once every batch each shard submitted to its journal before this call is durable
    /// (a barrier through each shard: its answer is released after the batches ahead of it).
    /// A snapshot waits for this before its file is written, so that it never holds a change
    /// the log could still lose: an order archived in memory whose archive entry was never
    /// written would otherwise vanish with a crash (found by the simulator, issue 11).
    ///
    /// # Errors
    /// `shutting_down` when a shard has stopped.
    pub fn wait_durable(&self) -> EngineResult<()> {
        let mut waits = Vec::with_capacity(self.inner.shard_count);
        for tx in &self.inner.internal {
            let (btx, brx) = oneshot::channel();
            tx.send(ShardMsg::Barrier(btx)).map_err(|_| EngineError::ShuttingDown)?;
            waits.push(brx);
        }
        for w in waits {
            w.recv().map_err(|_| EngineError::ShuttingDown)?;
        }
        Ok(())
    }

    /// Stop every shard now, even while other clones of this handle exist (their later calls
    /// answer `shutting_down`). Each shard finishes the batch it is in and hands it to its
    /// journal; sagas still waiting on another shard are left to recovery's reconciliation.
    /// Waits at most `timeout` for the shards to exit; returns true if they all did.
    pub fn shutdown(&self, timeout: std::time::Duration) -> bool {
        for tx in &self.inner.internal {
            let _ = tx.send(ShardMsg::Shutdown);
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.inner.exited.load(std::sync::atomic::Ordering::SeqCst) >= self.inner.shard_count {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Number of shard threads.
    pub fn shard_count(&self) -> usize {
        self.inner.shard_count
    }

    /// Monitoring counters: per-shard mailbox depth and messages handled, orders created, order
    /// transitions by (from, to). Reads atomics and channel lengths only: cheap, never blocks a
    /// shard.
    pub fn stats(&self) -> EngineStats {
        let depths = self.inner.external.iter().zip(&self.inner.internal).map(|(e, i)| (e.len(), i.len()));
        EngineStats::read(&self.inner.counters, depths)
    }
}
