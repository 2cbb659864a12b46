//! Decoding a stored [`SkuState`] (snapshots): the stored shape, then one normalization.
//!
//! Snapshots written before issue 12 kept a per-user count on every SKU; the engine now keeps it
//! only on SKUs with a `per_user_limit` ([`SkuState`]'s `user_units`). A decoded SKU without a
//! limit drops the old count, so a state from an old snapshot equals the state its events
//! rebuild today (the fixture tests compare the two).

use std::collections::VecDeque;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::{Adjustment, Holding, SkuState};
use crate::chunked::ChunkedMap;
use crate::domain::{OrderId, SaleRules, SkuId, UserId};

/// The stored layout of [`SkuState`] (format 2 onwards): same fields, same order.
#[derive(Deserialize)]
pub(super) struct StoredSkuState {
    id: SkuId,
    name: Arc<str>,
    price: Decimal,
    rules: SaleRules,
    available: u64,
    reserved: u64,
    sold: u64,
    stocked_total: u64,
    holdings: ChunkedMap<OrderId, Holding>,
    user_units: ChunkedMap<UserId, u32>,
    sold_archived: u64,
    adjustments: VecDeque<Adjustment>,
}

impl From<StoredSkuState> for SkuState {
    fn from(v: StoredSkuState) -> Self {
        SkuState {
            id: v.id,
            name: v.name,
            price: v.price,
            rules: v.rules,
            available: v.available,
            reserved: v.reserved,
            sold: v.sold,
            stocked_total: v.stocked_total,
            holdings: v.holdings,
            user_units: v.user_units,
            sold_archived: v.sold_archived,
            adjustments: v.adjustments,
        }
        .normalized()
    }
}

impl SkuState {
    /// Drop a per-user count the SKU's rules do not need (module docs).
    pub(super) fn normalized(mut self) -> Self {
        if self.rules.per_user_limit.is_none() {
            self.user_units = ChunkedMap::default();
        }
        self
    }
}
