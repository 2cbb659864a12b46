//! SKU commands: validated here, decided by the SKU's actor on its shard.

use std::sync::Arc;

use crate::domain::{SkuSpec, SkuUpdate, SkuView};
use crate::error::{EngineError, EngineResult};
use crate::pending::Pending;
use crate::shard::{ShardMsg, SkuMsg};

use super::{check_price, check_text, Engine, ID_BYTES_MAX, STOCK_MAX, TEXT_BYTES_MAX};

impl Engine {
    /// Create a SKU with its initial stock and rules.
    ///
    /// # Errors
    /// `invalid_request` (empty or long id/name, negative price, a price above [`PRICE_MAX`](crate::PRICE_MAX) or
    /// with more than [`PRICE_SCALE_MAX`](crate::PRICE_SCALE_MAX) decimal places, `initial_stock` above [`STOCK_MAX`],
    /// sale window ends before it starts), `sku_already_exists`.
    pub fn create_sku(&self, spec: SkuSpec) -> Pending<SkuView> {
        let check = || -> EngineResult<()> {
            check_text("sku_id", &spec.sku_id, ID_BYTES_MAX)?;
            check_text("name", &spec.name, TEXT_BYTES_MAX)?;
            check_price(spec.price)?;
            if spec.initial_stock > STOCK_MAX {
                return Err(EngineError::invalid(format!("initial_stock must be at most {STOCK_MAX}")));
            }
            if let (Some(a), Some(b)) = (spec.rules.sale_starts_at_ms, spec.rules.sale_ends_at_ms) {
                if b <= a {
                    return Err(EngineError::invalid("sale_ends_at_ms must be after sale_starts_at_ms"));
                }
            }
            Ok(())
        };
        if let Err(e) = check() {
            return Pending::ready(Err(e));
        }
        let sku_id: Arc<str> = Arc::from(spec.sku_id.as_str());
        self.submit(self.sku_shard(&sku_id), |r| ShardMsg::Sku(sku_id, SkuMsg::Create(Box::new(spec), r)))
    }

    /// Change a SKU's name, price or rules. Existing orders keep their snapshot.
    ///
    /// # Errors
    /// `unknown_sku`, `invalid_request` (as [`Engine::create_sku`]).
    pub fn update_sku(&self, sku_id: &str, update: SkuUpdate) -> Pending<SkuView> {
        if let Some(name) = &update.name {
            if let Err(e) = check_text("name", name, TEXT_BYTES_MAX) {
                return Pending::ready(Err(e));
            }
        }
        if let Some(Err(e)) = update.price.map(check_price) {
            return Pending::ready(Err(e));
        }
        let Some(shared) = self.inner.read.skus.get(sku_id) else {
            return Pending::ready(Err(EngineError::UnknownSku { sku_id: sku_id.to_owned() }));
        };
        self.submit(shared.shard, |r| ShardMsg::Sku(shared.sku_id.clone(), SkuMsg::Update(Box::new(update), r)))
    }

    /// Add (`delta > 0`) or remove (`delta < 0`) stock, with a reason for the audit trail.
    ///
    /// Idempotent by `adjustment_id` (the caller's id for this adjustment, 1..=64 bytes, unique
    /// per SKU): a retry with the same id, delta and reason, say after `storage_unavailable` or
    /// a timeout, has no second effect and answers the SKU as it is now. The record is logged
    /// with the adjustment and kept in snapshots; each SKU remembers its newest
    /// [`ADJUSTMENT_IDS_PER_SKU_MAX`](crate::ADJUSTMENT_IDS_PER_SKU_MAX) ids (DESIGN.md
    /// "Idempotency": never do a thing twice).
    ///
    /// ```
    /// # use surge_engine::{Engine, EngineConfig, SkuSpec, SaleRules, Decimal};
    /// # let engine = Engine::in_memory(EngineConfig::default()).unwrap();
    /// # engine.create_sku(SkuSpec { sku_id: "tee".into(), name: "Tee".into(), price: Decimal::ONE,
    /// #     initial_stock: 0, rules: SaleRules::default() }).wait().unwrap();
    /// assert_eq!(engine.adjust_stock("tee", "po-17", 50, "restock").wait().unwrap().available, 50);
    /// // A retry is answered, not applied again.
    /// assert_eq!(engine.adjust_stock("tee", "po-17", 50, "restock").wait().unwrap().available, 50);
    /// let other = engine.adjust_stock("tee", "po-17", 60, "restock").wait();
    /// assert_eq!(other.unwrap_err().code(), "idempotency_conflict");
    /// ```
    ///
    /// # Errors
    /// `unknown_sku`; `invalid_adjustment` if available would go below 0;
    /// `idempotency_conflict` if `adjustment_id` was used with another delta or reason;
    /// `invalid_request` for a zero delta, a missing reason or a missing or long id.
    pub fn adjust_stock(&self, sku_id: &str, adjustment_id: &str, delta: i64, reason: &str) -> Pending<SkuView> {
        if let Err(e) = check_text("adjustment_id", adjustment_id, ID_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        if delta == 0 {
            return Pending::ready(Err(EngineError::invalid("delta must not be 0")));
        }
        if let Err(e) = check_text("reason", reason, TEXT_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        let Some(shared) = self.inner.read.skus.get(sku_id) else {
            return Pending::ready(Err(EngineError::UnknownSku { sku_id: sku_id.to_owned() }));
        };
        let (reason, adjustment_id) = (Box::from(reason), Box::from(adjustment_id));
        self.submit(shared.shard, |reply| {
            ShardMsg::Sku(shared.sku_id.clone(), SkuMsg::Adjust { adjustment_id, delta, reason, reply })
        })
    }
}
