//! Queries: answered at once from the read models (only what is durable), never queued behind
//! an actor.

use std::sync::Arc;

use crate::domain::{ListOrders, Order, OrderId, OrderPage, SkuView};
use crate::error::{EngineError, EngineResult};

use super::Engine;

impl Engine {
    /// Counters and rules of one SKU (consistent snapshot; never torn).
    ///
    /// # Errors
    /// `unknown_sku`.
    pub fn get_sku(&self, sku_id: &str) -> EngineResult<SkuView> {
        self.inner
            .read
            .skus
            .get(sku_id)
            .map(|s| s.view())
            .ok_or_else(|| EngineError::UnknownSku { sku_id: sku_id.to_owned() })
    }

    /// Every SKU, sorted by id.
    pub fn list_skus(&self) -> Vec<SkuView> {
        let mut all: Vec<SkuView> = self.inner.read.skus.all().iter().map(|s| s.view()).collect();
        all.sort_by(|a, b| a.sku_id.cmp(&b.sku_id));
        all
    }

    /// One order, from the read model.
    ///
    /// # Errors
    /// `unknown_order`.
    pub fn get_order(&self, order_id: OrderId) -> EngineResult<Arc<Order>> {
        if let Some(o) = self.inner.read.orders.get(&order_id) {
            return Ok(o.clone());
        }
        self.inner.archive.as_ref().and_then(|a| a.get(order_id)).ok_or(EngineError::UnknownOrder { order_id })
    }

    /// One page of a user's orders, newest first, optionally only one status. Pass the page's
    /// `next_before` as the next query's `before` to continue; it is `None` on the last page.
    /// Costs O(`limit`) whatever the user's order count (see [`crate::LIST_SCAN_FACTOR`] for
    /// filtered pages), live and archived orders alike.
    ///
    /// # Errors
    /// `invalid_request` if `limit` is 0 or above `list_limit_max`.
    ///
    /// # Example
    /// ```
    /// use surge_engine::{CreateOrder, Engine, EngineConfig, ListOrders, SkuSpec, SaleRules};
    /// use rust_decimal::Decimal;
    ///
    /// let engine = Engine::in_memory(EngineConfig::default()).unwrap();
    /// engine.create_sku(SkuSpec {
    ///     sku_id: "tee".into(), name: "T-shirt".into(), price: Decimal::new(1990, 2),
    ///     initial_stock: 10, rules: SaleRules::default(),
    /// }).wait().unwrap();
    /// for k in ["k1", "k2", "k3"] {
    ///     engine.create_order(CreateOrder::new("ann", &[("tee", 1)], k)).wait().unwrap();
    /// }
    /// let mut q = ListOrders { user_id: "ann".into(), status: None, limit: 2, before: None };
    /// let first = engine.list_orders(&q).unwrap();
    /// assert_eq!(first.orders.len(), 2);
    /// q.before = first.next_before;
    /// let last = engine.list_orders(&q).unwrap();
    /// assert_eq!((last.orders.len(), last.next_before), (1, None));
    /// ```
    pub fn list_orders(&self, q: &ListOrders) -> EngineResult<OrderPage> {
        let archive = self.inner.archive.as_deref();
        crate::listing::page(&self.inner.read, archive, q, self.inner.config.list_limit_max).map(|(page, _)| page)
    }

    /// Live orders in the read model (all statuses).
    pub fn order_count(&self) -> usize {
        self.inner.read.orders.len()
    }
}
