//! The simulator's checks: a shard's SKUs after every step, the full audit at quiet points,
//! durability after every recovery, and a stable fingerprint of the messages between shards
//! for the trace digest.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use super::disk::Disk;
use super::prng::Fnv64;
use super::wallet_check;
use super::workload::Workload;
use crate::audit;
use crate::domain::{Order, SkuId};
use crate::event::Event;
use crate::shard::{OrderMsg, ShardCore, ShardMsg, SkuMsg};
use crate::snowflake::shard_of;
use crate::state::expected_holding;

/// What holds at every step, mid-saga too: each SKU of shard `core` conserves its stock
/// (`available + reserved + sold == stocked_total`) and its counters equal its holdings.
///
/// # Errors
/// The first SKU that breaks either, in words.
pub(super) fn shard_skus(core: &ShardCore) -> Result<(), String> {
    for st in core.sku_states() {
        let v = st.view();
        if v.available + v.reserved + v.sold != v.stocked_total {
            return Err(format!(
                "sku {}: available {} + reserved {} + sold {} != stocked_total {}",
                v.sku_id, v.available, v.reserved, v.sold, v.stocked_total
            ));
        }
        let (mut reserved, mut sold) = (0u64, 0u64);
        for (_, _, qty, is_sold) in st.holdings() {
            *(if is_sold { &mut sold } else { &mut reserved }) += u64::from(qty);
        }
        if reserved != v.reserved || sold + st.sold_archived() != v.sold {
            return Err(format!(
                "sku {}: counters reserved={} sold={} but holdings sum to {reserved} and {sold}",
                v.sku_id, v.reserved, v.sold
            ));
        }
    }
    Ok(())
}

/// What holds when nothing is in flight: the engine's full audit (counters, holdings and
/// orders agree across actors), one order per (user, idempotency key), per-user limits, and the
/// wallets' (no open try, totals, per-asset sums, live orders' wallet payments settled).
///
/// # Errors
/// The audit's violations, or the first other broken invariant.
pub(super) fn full_audit(cores: &[ShardCore], workload: &Workload) -> Result<(), String> {
    let audits: Vec<_> = cores.iter().map(ShardCore::audit).collect();
    let orders: Vec<Arc<Order>> = audits.iter().flat_map(|a| a.orders.iter().cloned()).collect();
    let report = audit::check(audits);
    if !report.is_healthy() {
        return Err(format!("audit: {}", report.violations.join("; ")));
    }
    let mut keys = HashSet::new();
    for o in &orders {
        if !keys.insert((&o.user_id, &o.idempotency_key)) {
            return Err(format!("two live orders for user {} and key {}", o.user_id, o.idempotency_key));
        }
        wallet_check::order_took(cores, o)?;
    }
    wallet_check::books(cores, false)?;
    for ((sku_id, user), units) in &report.user_units {
        if let Some(limit) = workload.limits.get(sku_id).filter(|l| units > l) {
            return Err(format!("sku {sku_id}: user {user} holds {units} units, limit {limit}"));
        }
    }
    Ok(())
}

/// What holds after every recovery and at the end of a run:
/// * every order a client was answered with (created, paid, canceled, ...) still exists, live
///   or archived, at least at the version it was answered with (and in the same status at that
///   version): an acknowledged change is never lost;
/// * every SKU a client was answered with exists;
/// * each SKU's archived sold units equal the sold units of the archived orders that are not
///   live again: archiving never loses or restocks sold units;
/// * every archived order that took a wallet payment has it settled (or refunded) in its user's
///   wallet, and every settled payment of an order that is not live belongs to an archived
///   order that took it.
///
/// # Errors
/// The first broken one, in words.
pub(super) fn after_recovery(cores: &[ShardCore], disk: &dyn Disk, workload: &Workload) -> Result<(), String> {
    let archive = disk.archive();
    let n = cores.len();
    for (id, (status, version)) in workload.acked() {
        let live = cores[shard_of(id.0, n)].order(*id).cloned();
        let Some(order) = live.or_else(|| archive.get(*id)) else {
            return Err(format!("order {id}, answered {status} at version {version}, is gone"));
        };
        if order.version < *version || (order.version == *version && order.status != *status) {
            return Err(format!(
                "order {id} was answered {status} at version {version}, but is {} at version {}",
                order.status, order.version
            ));
        }
    }
    for sku_id in workload.skus_acked() {
        if !cores.iter().any(|c| c.sku_states().any(|s| s.sku_id() == sku_id)) {
            return Err(format!("sku {sku_id} was answered created, but is gone"));
        }
    }
    let archived = disk.archived_orders();
    for o in &archived {
        if cores[shard_of(o.order_id.0, n)].order(o.order_id).is_none() {
            wallet_check::order_took(cores, o)?;
        }
    }
    wallet_check::books(cores, true)?;
    wallet_check::archived_payments(cores, &archived)?;
    archived_units(cores, &archived)
}

/// Each SKU's `sold_archived` equals the sold units of archived orders that are not live.
fn archived_units(cores: &[ShardCore], archived: &[Arc<Order>]) -> Result<(), String> {
    let n = cores.len();
    let mut want: BTreeMap<&SkuId, u64> = BTreeMap::new();
    for o in archived {
        if cores[shard_of(o.order_id.0, n)].order(o.order_id).is_some() || expected_holding(o) != Some(true) {
            continue;
        }
        for item in &o.items {
            *want.entry(&item.sku_id).or_default() += u64::from(item.qty);
        }
    }
    for st in cores.iter().flat_map(ShardCore::sku_states) {
        let id = st.sku_id();
        let wanted = want.get(id).copied().unwrap_or(0);
        if st.sold_archived() != wanted {
            return Err(format!(
                "sku {id}: {} units counted sold by archived orders, but archived orders hold {wanted}",
                st.sold_archived()
            ));
        }
    }
    Ok(())
}

/// Fold a batch's journal events into `trace`.
pub(super) fn trace_events(trace: &mut Fnv64, events: &[Event]) {
    for e in events {
        let _ = write!(trace, "{e:?}");
    }
}

/// Fold a message to shard `to` into `trace`: its kind and the ids it names (messages carry
/// reply channels, which have no stable form).
pub(super) fn trace_msg(trace: &mut Fnv64, to: usize, msg: &ShardMsg) {
    let _ = match msg {
        ShardMsg::Sku(sku_id, m) => {
            let (kind, order) = match m {
                SkuMsg::Reserve { order_id, qty, item, .. } => {
                    (10 + u64::from(*item) * 100 + u64::from(*qty), *order_id)
                }
                SkuMsg::Confirm { order_id, .. } => (1, *order_id),
                SkuMsg::Release { order_id, .. } => (2, *order_id),
                SkuMsg::Restock { order_id, .. } => (3, *order_id),
                SkuMsg::Forget { order_id } => (4, *order_id),
                SkuMsg::Remember { order_id, .. } => (5, *order_id),
                _ => (6, crate::domain::OrderId(0)),
            };
            write!(trace, "{to}>{sku_id}:{kind}:{order}")
        }
        ShardMsg::Order(order_id, m) => match m {
            OrderMsg::Reserved { item, result } => write!(trace, "{to}>{order_id}:r{item}:{}", result.is_ok()),
            OrderMsg::StockDone { .. } => write!(trace, "{to}>{order_id}:d"),
            OrderMsg::Command(c, _) => write!(trace, "{to}>{order_id}:{:?}", c.kind),
            OrderMsg::WalletPay(p, _) => write!(trace, "{to}>{order_id}:w{}", p.transfer_id),
            OrderMsg::Verify { sku_id, .. } => write!(trace, "{to}>{order_id}:v{sku_id}"),
        },
        _ => write!(trace, "{to}>other"),
    };
}
