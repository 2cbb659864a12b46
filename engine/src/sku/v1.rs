//! The SKU state as format version 1 stored it (before adjustment ids): kept only to decode v1
//! snapshots (`persistence/src/codec.rs`), apart from the live state so the legacy shape is never
//! edited by accident.

use std::collections::VecDeque;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Holding, SkuState};
use crate::chunked::ChunkedMap;
use crate::domain::{OrderId, SaleRules, SkuId, UserId};

/// A [`SkuState`] as format version 1 stored it (before adjustment ids): decodes v1 snapshots,
/// converts with `SkuState::from`. Field order is the v1 layout; never change it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkuStateV1 {
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
}

impl From<SkuStateV1> for SkuState {
    fn from(v: SkuStateV1) -> Self {
        Self {
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
            adjustments: VecDeque::new(),
        }
        .normalized()
    }
}
