//! Pushes: order status to `order:` and `user:` subscribers (once per connection), stock levels
//! to `sku:` subscribers (coalesced per SKU to one per interval), and a `gap` to everyone when
//! changes were dropped. Delivery is `try_send`: a full connection queue is a slow consumer,
//! killed with a final error and removed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use surge_engine::{Order, SkuId};
use tokio::sync::mpsc;

use super::index::Hub;
use super::{Outbound, Topic};

/// Stock-push state of one subscribed SKU.
pub(super) struct SkuPush {
    /// When its last push went out (pushes are coalesced to one per interval).
    pub(super) last_push: Option<Instant>,
    /// A change arrived within the interval: push it at the next tick.
    pub(super) dirty: bool,
    /// `available` as last pushed (or read at the first subscription), to name the change.
    pub(super) last_available: Option<u64>,
}

impl Hub {
    /// Send `push` to every listed connection once; the slow ones are killed and dropped.
    fn deliver(&mut self, targets: Vec<u64>, push: Map<String, Value>) {
        let push = Arc::new(push);
        let mut dead = Vec::new();
        for conn in targets {
            let Some(sub) = self.conns.get(&conn) else { continue };
            match sub.sink.out.try_send(Outbound::Push(push.clone())) {
                Ok(()) => {
                    self.stats.pushes.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(conn, "slow consumer disconnected");
                    sub.sink.shared.kill("slow_consumer");
                    dead.push(conn);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => dead.push(conn),
            }
        }
        for conn in dead {
            self.remove_conn(conn);
        }
    }

    pub(super) fn order(&mut self, order: Arc<Order>) {
        let by_order = self.topics.get(&Topic::Order(order.order_id.0));
        let by_user = self.topics.get(&Topic::User(order.user_id.clone()));
        let mut targets: Vec<u64> = by_order.map(|s| s.iter().copied().collect()).unwrap_or_default();
        if let Some(users) = by_user {
            // A connection watching both the order and its user gets the push once.
            targets.extend(users.iter().filter(|c| by_order.is_none_or(|o| !o.contains(c))));
        }
        if targets.is_empty() {
            return;
        }
        let mut push = Map::new();
        push.insert("event".into(), Value::String("order_status".into()));
        push.insert("order_id".into(), Value::String(order.order_id.0.to_string()));
        push.insert("user_id".into(), Value::String(order.user_id.to_string()));
        push.insert("status".into(), Value::String(order.status.as_str().into()));
        push.insert("version".into(), Value::from(order.version));
        push.insert("order".into(), crate::wire::order_value(&order));
        self.deliver(targets, push);
    }

    /// `wallet:<user>`: the user's accounts after the change (issue 14).
    pub(super) fn wallet(&mut self, wallet: &surge_engine::wallet::WalletView) {
        let Some(set) = self.topics.get(&Topic::Wallet(wallet.user_id.clone())) else { return };
        let targets: Vec<u64> = set.iter().copied().collect();
        let mut push = Map::new();
        push.insert("event".into(), Value::String("wallet".into()));
        push.insert("user_id".into(), Value::String(wallet.user_id.to_string()));
        let accounts = serde_json::to_value(crate::wire::WireWallet::from(wallet)).map(|mut v| v["accounts"].take());
        push.insert("accounts".into(), accounts.unwrap_or(Value::Null));
        self.deliver(targets, push);
    }

    pub(super) fn stock(&mut self, sku: SkuId, now: Instant) {
        let interval = self.interval;
        let Some(state) = self.skus.get_mut(&*sku) else { return };
        if state.last_push.is_some_and(|t| now.duration_since(t) < interval) {
            state.dirty = true;
            return;
        }
        self.push_stock(sku, now);
    }

    fn push_stock(&mut self, sku: Arc<str>, now: Instant) {
        let Ok(view) = self.engine.get_sku(&sku) else { return };
        let Some(state) = self.skus.get_mut(&sku) else { return };
        let change = match (state.last_available, view.available) {
            (Some(a), 0) if a > 0 => "sold_out",
            (None, 0) => "sold_out",
            (Some(0), n) if n > 0 => "back_in_stock",
            _ => "level",
        };
        state.last_available = Some(view.available);
        state.last_push = Some(now);
        state.dirty = false;
        let Some(set) = self.topics.get(&Topic::Sku(sku.clone())) else { return };
        let targets: Vec<u64> = set.iter().copied().collect();
        let mut push = Map::new();
        push.insert("event".into(), Value::String("stock".into()));
        push.insert("sku_id".into(), Value::String(sku.to_string()));
        push.insert("change".into(), Value::String(change.into()));
        push.insert("available".into(), Value::from(view.available));
        push.insert("reserved".into(), Value::from(view.reserved));
        push.insert("sold".into(), Value::from(view.sold));
        push.insert("stocked_total".into(), Value::from(view.stocked_total));
        push.insert("sold_out".into(), Value::Bool(view.available == 0));
        self.deliver(targets, push);
    }

    /// Changes were dropped (the hub's queue was full): every subscriber may have missed a push,
    /// so each gets one `gap` push telling it to re-read what it watches.
    fn announce_gap(&mut self) {
        let targets: Vec<u64> = self.conns.keys().copied().collect();
        if targets.is_empty() {
            return;
        }
        self.stats.gaps.fetch_add(1, Ordering::Relaxed);
        let mut push = Map::new();
        push.insert("event".into(), Value::String("gap".into()));
        push.insert(
            "message".into(),
            Value::String("pushes were dropped under load; re-read your subscriptions' state".into()),
        );
        self.deliver(targets, push);
    }

    pub(super) fn tick(&mut self, now: Instant) {
        if self.stats.lagged.swap(false, Ordering::Relaxed) {
            self.announce_gap();
        }
        let due: Vec<Arc<str>> = self
            .skus
            .iter()
            .filter(|(_, s)| s.dirty && s.last_push.is_none_or(|t| now.duration_since(t) >= self.interval))
            .map(|(k, _)| k.clone())
            .collect();
        for sku in due {
            self.push_stock(sku, now);
        }
    }
}
