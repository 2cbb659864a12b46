//! What readers see of a SKU without messaging its actor: [`SkuShared`] (a seqlock of counters
//! and the swapped-whole [`SkuMeta`]) and the per-batch [`SkuPublication`] that the batch's
//! `on_durable` callback writes into it (issue 10, item 2: readers never see what is not durable).

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rust_decimal::Decimal;

use crate::domain::{SaleRules, SkuId, SkuView};
use crate::error::EngineError;

/// Name, price and rules: changed rarely, swapped whole.
#[derive(Debug, Clone)]
pub(crate) struct SkuMeta {
    pub name: Arc<str>,
    pub price: Decimal,
    pub rules: SaleRules,
}

/// The part of a SKU that readers see without messaging the actor.
///
/// Counters are a seqlock: the writer (the `on_durable` callbacks of the owning shard's batches,
/// which run one after another in batch order) moves `seq` to odd, stores, moves it to even;
/// readers retry until they see the same even `seq` before and after, so a view is never torn
/// (`available + reserved + sold == stocked_total` holds in every view). The writer takes the
/// odd `seq` with a compare-and-swap, so even two overlapping writers could not tear a view.
#[derive(Debug)]
pub(crate) struct SkuShared {
    pub sku_id: SkuId,
    /// The shard hosting the actor (routing without rehashing).
    pub shard: usize,
    pub(super) seq: AtomicU64,
    pub(super) available: AtomicU64,
    pub(super) reserved: AtomicU64,
    pub(super) sold: AtomicU64,
    pub(super) stocked_total: AtomicU64,
    pub(super) meta: ArcSwap<SkuMeta>,
}

impl SkuShared {
    /// Sold-out fast path: true while available is 0.
    pub fn sold_out_hint(&self) -> bool {
        self.available.load(Ordering::Acquire) == 0
    }

    /// The rejection the actor would give any reservation right now, judged from the published
    /// state: paused, outside the sale window, or sold out (in the actor's order of checks).
    /// `None` means "ask the actor".
    pub fn fast_reject(&self, now_ms: i64) -> Option<EngineError> {
        let meta = self.meta.load();
        let sku_id = || self.sku_id.to_string();
        if meta.rules.paused {
            return Some(EngineError::SkuPaused { sku_id: sku_id() });
        }
        if meta.rules.sale_starts_at_ms.is_some_and(|t| now_ms < t) {
            return Some(EngineError::SaleNotStarted { sku_id: sku_id() });
        }
        if meta.rules.sale_ends_at_ms.is_some_and(|t| now_ms >= t) {
            return Some(EngineError::SaleEnded { sku_id: sku_id() });
        }
        self.sold_out_hint().then(|| EngineError::SoldOut { sku_id: sku_id() })
    }

    /// Write `counters` (available, reserved, sold, stocked_total) as one seqlock update.
    fn store_counters(&self, counters: [u64; 4]) {
        let seq = loop {
            let seq = self.seq.load(Ordering::Relaxed);
            if seq & 1 == 0
                && self.seq.compare_exchange_weak(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                break seq;
            }
            std::hint::spin_loop();
        };
        fence(Ordering::Release);
        self.available.store(counters[0], Ordering::Relaxed);
        self.reserved.store(counters[1], Ordering::Relaxed);
        self.sold.store(counters[2], Ordering::Relaxed);
        self.stocked_total.store(counters[3], Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// A consistent snapshot.
    pub fn view(&self) -> SkuView {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let available = self.available.load(Ordering::Acquire);
            let reserved = self.reserved.load(Ordering::Acquire);
            let sold = self.sold.load(Ordering::Acquire);
            let stocked_total = self.stocked_total.load(Ordering::Acquire);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                let meta = self.meta.load();
                return SkuView {
                    sku_id: self.sku_id.clone(),
                    name: meta.name.clone(),
                    price: meta.price,
                    available,
                    reserved,
                    sold,
                    stocked_total,
                    rules: meta.rules.clone(),
                };
            }
        }
    }
}

/// One SKU's read-model update at the end of a batch, applied when the batch is durable
/// ([`SkuPublication::publish`]): an immutable copy computed by the shard, so the shared seqlock
/// has exactly one writer (the batch's `on_durable` callback).
pub(crate) struct SkuPublication {
    pub(super) shared: Arc<SkuShared>,
    /// available, reserved, sold, stocked_total at the end of the batch.
    pub(super) counters: [u64; 4],
    /// New name, price and rules, if they changed in the batch.
    pub(super) meta: Option<Arc<SkuMeta>>,
    /// The SKU was created in the batch: list it in the read models.
    pub(super) created: bool,
}

impl SkuPublication {
    /// The SKU this publication is for.
    pub fn sku_id(&self) -> &SkuId {
        &self.shared.sku_id
    }

    /// Make the batch's changes visible: rules first, then counters, then (for a new SKU) the
    /// listing, so a reader that finds the SKU sees its durable state.
    pub fn publish(&self, skus: &crate::publish::SkuDirectory) {
        if let Some(meta) = &self.meta {
            self.shared.meta.store(meta.clone());
        }
        self.shared.store_counters(self.counters);
        if self.created {
            skus.insert_all(std::slice::from_ref(&self.shared));
        }
    }
}
