//! [`Engine::audit`](crate::Engine::audit): a full consistency check of every actor.
//!
//! It collects the state of every shard and checks, across actors, what no single actor can:
//! each SKU's counters equal the sum of its holdings and conserve stock, each user's counted
//! units equal their holdings, and each order's reservations match its status (no reservation
//! without a live order, no order without its reservations). Recovery and simulations use it;
//! call it after [`Engine::settle`](crate::Engine::settle) so no saga is mid-flight.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::domain::{Order, OrderId, SkuId, SkuView, UserId};
use crate::shard::ShardAudit;

/// The result of an audit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Every broken invariant, in words; empty means healthy.
    pub violations: Vec<String>,
    /// Every SKU's counters, sorted by id.
    pub skus: Vec<SkuView>,
    /// Live orders checked.
    pub orders: usize,
    /// Live holdings (reserved or sold) checked.
    pub holdings: usize,
    /// Wallet accounts checked (issue 14).
    pub wallet_accounts: usize,
    /// Units each (SKU, user) holds, as counted for the per-user limit.
    #[serde(skip)]
    pub user_units: HashMap<(SkuId, UserId), u32>,
}

impl AuditReport {
    /// True when no invariant is broken.
    pub fn is_healthy(&self) -> bool {
        self.violations.is_empty()
    }
}

use crate::state::expected_holding;

pub(crate) fn check(shards: Vec<ShardAudit>) -> AuditReport {
    let mut r = AuditReport::default();
    let mut orders: HashMap<OrderId, Arc<Order>> = HashMap::new();
    let mut holdings: HashMap<(SkuId, OrderId), (UserId, u32, bool)> = HashMap::new();
    let mut wallet_payments: Vec<(OrderId, Box<str>)> = Vec::new();
    for s in shards {
        if s.in_flight > 0 {
            r.violations.push(format!("{} orders still in flight (call settle first)", s.in_flight));
        }
        r.violations.extend(s.wallets.violation);
        if s.wallets.open_tries > 0 {
            r.violations.push(format!("{} wallet payment tries still open", s.wallets.open_tries));
        }
        r.wallet_accounts += s.wallets.accounts;
        wallet_payments.extend(s.wallets.payments);
        for o in s.orders {
            orders.insert(o.order_id, o);
        }
        for sku in s.skus {
            let v = &sku.view;
            if v.available + v.reserved + v.sold != v.stocked_total {
                r.violations.push(format!(
                    "sku {}: {} + {} + {} != {}",
                    v.sku_id, v.available, v.reserved, v.sold, v.stocked_total
                ));
            }
            let (mut reserved, mut sold) = (0u64, 0u64);
            let mut per_user: HashMap<UserId, u32> = HashMap::new();
            for (order_id, user, qty, is_sold) in &sku.holdings {
                if *is_sold {
                    sold += u64::from(*qty)
                } else {
                    reserved += u64::from(*qty)
                }
                *per_user.entry(user.clone()).or_default() += qty;
                holdings.insert((v.sku_id.clone(), *order_id), (user.clone(), *qty, *is_sold));
            }
            let sold_archived = sku.sold_archived;
            if reserved != v.reserved || sold + sold_archived != v.sold {
                r.violations.push(format!(
                    "sku {}: counters reserved={} sold={} but holdings sum to {} and {}",
                    v.sku_id, v.reserved, v.sold, reserved, sold
                ));
            }
            // Without a limit the SKU keeps no count (`SkuState::user_units`); with one, every
            // user holding units must be counted.
            let limited = v.rules.per_user_limit.is_some();
            let counted: HashMap<&UserId, u32> = sku.user_units.iter().map(|(u, n)| (u, *n)).collect();
            for (user, held) in per_user.iter().filter(|_| limited) {
                if !counted.contains_key(user) {
                    r.violations.push(format!("sku {}: user {} holds {} units, not counted", v.sku_id, user, held));
                }
            }
            for (user, units) in sku.user_units.iter().filter(|_| limited) {
                // Archived orders' units still count toward the limit but have no holding.
                let held = per_user.get(user).copied().unwrap_or(0);
                if held > *units || (sold_archived == 0 && held != *units) {
                    r.violations.push(format!(
                        "sku {}: user {} counted {} units, holds {:?}",
                        v.sku_id,
                        user,
                        units,
                        per_user.get(user)
                    ));
                }
                // The per-user limit is checked when stock is reserved, not here: an admin may
                // lower a limit below what a user already holds, which is legal.
                r.user_units.insert((v.sku_id.clone(), user.clone()), *units);
            }
            r.skus.push(sku.view);
        }
    }
    r.skus.sort_by(|a, b| a.sku_id.cmp(&b.sku_id));
    r.orders = orders.len();
    r.holdings = holdings.len();
    for ((sku_id, order_id), (user, qty, sold)) in &holdings {
        match orders.get(order_id) {
            None => {
                r.violations.push(format!("sku {sku_id}: holding of {qty} for order {order_id} with no live order"))
            }
            Some(o) => {
                let item = o.items.iter().find(|i| i.sku_id == *sku_id);
                if item.map(|i| i.qty) != Some(*qty) || o.user_id != *user {
                    r.violations
                        .push(format!("sku {sku_id}: holding for order {order_id} does not match its line item"));
                }
            }
        }
        let _ = sold;
    }
    check_wallet_payments(&mut r, &orders, &wallet_payments);
    for o in orders.values() {
        let want = expected_holding(o);
        for item in &o.items {
            let got = holdings.get(&(item.sku_id.clone(), o.order_id)).map(|h| h.2);
            if got != want {
                r.violations.push(format!(
                    "order {} ({}): sku {} holding is {:?}, expected {:?} (Some(true)=sold, Some(false)=reserved)",
                    o.order_id, o.status, item.sku_id, got, want
                ));
            }
        }
    }
    r
}

/// Each settled wallet payment belongs to a live order that took it and is still paid for
/// (not canceled, not refunded): money never left a wallet for an order that did not keep it.
fn check_wallet_payments(r: &mut AuditReport, orders: &HashMap<OrderId, Arc<Order>>, payments: &[(OrderId, Box<str>)]) {
    use crate::domain::OrderStatus::{Canceled, PendingPayment, Refunded};
    for (order_id, transfer_id) in payments {
        // An archived order is not live here; its payment is checked when it was archived.
        let Some(o) = orders.get(order_id) else { continue };
        let took = crate::wallet::tcc::took(Some(o), transfer_id);
        if !took || matches!(o.status, Canceled | PendingPayment | Refunded) {
            r.violations.push(format!(
                "wallet payment {transfer_id} settled for order {order_id}, which is {} and took {:?}",
                o.status,
                o.payment.as_ref().map(|p| &p.payment_id)
            ));
        }
    }
}
