//! `list_orders`: one page of a user's orders, newest first, in O(`limit`) (issue 10, item 13).
//!
//! A user's orders live in two places: the live index (`ReadModels::user_orders`, ascending ids)
//! and the archive (terminal orders that left memory). Both are read as descending streams below
//! the cursor — a binary search and a walk back in the live index, a reverse range scan in the
//! archive ([`OrderArchive::list_user_before`]) — and merged, so a page reads at most
//! `scan + 1` ids from each, whatever the user's order count. An order being archived may briefly
//! be in both; the merge lists it once. The live index is read first: an order leaves it only
//! after the archive holds it, so no order falls between the two reads.

use std::sync::Arc;

use crate::domain::{ListOrders, Order, OrderId, OrderPage};
use crate::error::{EngineError, EngineResult};
use crate::event::OrderArchive;
use crate::publish::ReadModels;

/// A page filtered by status examines at most `limit × LIST_SCAN_FACTOR` orders, then returns
/// what it found (possibly fewer than `limit`, even none) with a cursor to continue: a bound on
/// the work of one request, whatever the user's history holds.
pub const LIST_SCAN_FACTOR: usize = 8;

/// One page, plus how many index entries and orders it visited (the cost the tests bound).
pub(crate) fn page(
    read: &ReadModels,
    archive: Option<&dyn OrderArchive>,
    q: &ListOrders,
    limit_max: usize,
) -> EngineResult<(OrderPage, usize)> {
    if q.limit == 0 || q.limit > limit_max {
        return Err(EngineError::invalid(format!("limit must be 1..={limit_max}")));
    }
    let scan = if q.status.is_some() { q.limit.saturating_mul(LIST_SCAN_FACTOR) } else { q.limit };
    // One more than we may examine: it tells whether a next page exists.
    let want = scan.saturating_add(1);
    let live = live_before(read, &q.user_id, q.before, want);
    let archived = archive.map(|a| a.list_user_before(&q.user_id, q.before, want)).unwrap_or_default();
    let mut visited = live.len() + archived.len();
    let candidates = merge_descending(&live, &archived, want);
    let mut orders = Vec::with_capacity(q.limit.min(candidates.len()));
    let mut examined = 0;
    for id in candidates.iter().take(scan) {
        examined += 1;
        visited += 1;
        if let Some(order) = get(read, archive, *id) {
            // The live index may hold another user's ids (a hash collision of its keys).
            if *order.user_id == *q.user_id && q.status.is_none_or(|s| order.status == s) {
                orders.push(order);
                if orders.len() == q.limit {
                    break;
                }
            }
        }
    }
    let next_before = (examined < candidates.len()).then(|| candidates[examined - 1]);
    Ok((OrderPage { orders, next_before }, visited))
}

/// Up to `n` of the user's live order ids below `before`, highest first: a binary search and a
/// walk back (the guard is held only for the copy).
fn live_before(read: &ReadModels, user_id: &str, before: Option<OrderId>, n: usize) -> Vec<OrderId> {
    let Some(ids) = read.user_orders.get(&read.user_key(user_id)) else {
        return Vec::new();
    };
    let end = before.map_or(ids.len(), |b| ids.partition_point(|x| *x < b));
    ids[end.saturating_sub(n)..end].iter().rev().copied().collect()
}

/// Merge two descending id lists into one (each id once), at most `n` long.
fn merge_descending(a: &[OrderId], b: &[OrderId], n: usize) -> Vec<OrderId> {
    let mut out = Vec::with_capacity(n.min(a.len() + b.len()));
    let (mut i, mut j) = (0, 0);
    while out.len() < n {
        let next = match (a.get(i), b.get(j)) {
            (None, None) => break,
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, Some(y)) => {
                j += 1;
                *y
            }
            (Some(x), Some(y)) => {
                if x >= y {
                    i += 1;
                }
                if y >= x {
                    j += 1;
                }
                *x.max(y)
            }
        };
        out.push(next);
    }
    out
}

fn get(read: &ReadModels, archive: Option<&dyn OrderArchive>, id: OrderId) -> Option<Arc<Order>> {
    if let Some(o) = read.orders.get(&id) {
        return Some(o.clone());
    }
    archive.and_then(|a| a.get(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderStatus;
    use smallvec::SmallVec;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn order(id: u64, user: &str, status: OrderStatus) -> Arc<Order> {
        Arc::new(Order {
            order_id: OrderId(id),
            user_id: Arc::from(user),
            items: SmallVec::new(),
            total: rust_decimal::Decimal::ZERO,
            status,
            version: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
            payment_deadline_ms: 0,
            payment: None,
            tracking_number: None,
            shipped: false,
            refund_return_to: None,
            history: SmallVec::new(),
            idempotency_key: Box::from(id.to_string()),
        })
    }

    /// An archive in memory that counts the ids it hands out.
    #[derive(Default)]
    struct CountingArchive {
        orders: BTreeMap<OrderId, Arc<Order>>,
        ids_returned: AtomicUsize,
    }

    impl OrderArchive for CountingArchive {
        fn get(&self, order_id: OrderId) -> Option<Arc<Order>> {
            self.orders.get(&order_id).cloned()
        }
        fn list_user(&self, _user_id: &str) -> Vec<OrderId> {
            panic!("list_orders must not read a user's whole archive");
        }
        fn list_user_before(&self, user_id: &str, before: Option<OrderId>, limit: usize) -> Vec<OrderId> {
            let hi = before.unwrap_or(OrderId(u64::MAX));
            let ids: Vec<OrderId> = self
                .orders
                .range(..hi)
                .rev()
                .filter(|(_, o)| &*o.user_id == user_id)
                .take(limit)
                .map(|(id, _)| *id)
                .collect();
            self.ids_returned.fetch_add(ids.len(), Ordering::Relaxed);
            ids
        }
    }

    /// `n` orders of `user`: ids 1..=n, every third archived, every fifth completed.
    fn user_with(n: u64, user: &str, read: &ReadModels, archive: &mut CountingArchive) {
        let mut live = crate::publish::OrderIds::default();
        for id in 1..=n {
            let status = if id % 5 == 0 { OrderStatus::Completed } else { OrderStatus::PendingPayment };
            let o = order(id, user, status);
            if id % 3 == 0 {
                archive.orders.insert(o.order_id, o);
            } else {
                live.push(o.order_id);
                read.orders.insert(o.order_id, o);
            }
        }
        read.user_orders.insert(read.user_key(user), live);
    }

    fn all_pages(read: &ReadModels, archive: &CountingArchive, q: &ListOrders) -> (Vec<u64>, usize, usize) {
        let (mut ids, mut pages, mut visited_max) = (Vec::new(), 0, 0);
        let mut q = q.clone();
        loop {
            let (page, visited) = page(read, Some(archive), &q, 100).expect("page");
            ids.extend(page.orders.iter().map(|o| o.order_id.0));
            pages += 1;
            visited_max = visited_max.max(visited);
            match page.next_before {
                None => return (ids, pages, visited_max),
                Some(b) => q.before = Some(b),
            }
        }
    }

    #[test]
    fn pages_live_and_archived_orders_once_each_newest_first() {
        let (read, mut archive) = (ReadModels::default(), CountingArchive::default());
        user_with(1_000, "u", &read, &mut archive);
        let q = ListOrders { user_id: "u".into(), status: None, limit: 7, before: None };
        let (ids, pages, _) = all_pages(&read, &archive, &q);
        assert_eq!(ids, (1..=1_000).rev().collect::<Vec<_>>());
        assert_eq!(pages, 1_000usize.div_ceil(7));
        let done = ListOrders { status: Some(OrderStatus::Completed), ..q };
        let (ids, _, _) = all_pages(&read, &archive, &done);
        assert_eq!(ids, (1..=1_000).rev().filter(|i| i % 5 == 0).collect::<Vec<_>>());
    }

    /// The cost bound, by counting (not timing): a page of a user with 100 000 orders visits no
    /// more entries than a page of a user with one order could at most, whatever the cursor.
    #[test]
    fn a_page_costs_o_limit_not_o_history() {
        let (read, mut archive) = (ReadModels::default(), CountingArchive::default());
        user_with(100_000, "big", &read, &mut archive);
        user_with(1, "small", &read, &mut archive);
        let limit = 10;
        let bound = 3 * (limit * LIST_SCAN_FACTOR + 1);
        for (user, status) in [("big", None), ("big", Some(OrderStatus::Completed)), ("small", None)] {
            for before in [None, Some(OrderId(50_000)), Some(OrderId(3))] {
                let q = ListOrders { user_id: user.into(), status, limit, before };
                archive.ids_returned.store(0, Ordering::Relaxed);
                let (page, visited) = page(&read, Some(&archive), &q, 100).expect("page");
                assert!(visited <= bound, "{user} {status:?} {before:?}: visited {visited} > {bound}");
                assert!(archive.ids_returned.load(Ordering::Relaxed) <= limit * LIST_SCAN_FACTOR + 1);
                assert!(page.orders.len() <= limit);
            }
        }
        // A filter that matches nothing still answers after a bounded scan, with a cursor.
        let q = ListOrders { user_id: "big".into(), status: Some(OrderStatus::Refunded), limit, before: None };
        let (page, visited) = page(&read, Some(&archive), &q, 100).expect("page");
        assert!(page.orders.is_empty() && page.next_before.is_some() && visited <= bound);
    }

    /// Orders recovered into a different shard count: one user's orders sit on several shards,
    /// each of which indexes its part; the user's index must still come out ascending.
    #[test]
    fn recovered_orders_spread_over_shards_list_newest_first() {
        let mut state = crate::EngineState::default();
        // Sequence bits 1, 0, 1, 0: shards 1, 0, 1, 0 of 2, ids ascending.
        let ids: Vec<u64> = (0..4).map(|i| ((100 + i) << 22) | ((i + 1) % 2)).collect();
        for id in &ids {
            state.orders.insert(OrderId(*id), order(*id, "u", OrderStatus::Completed));
        }
        let engine = crate::Engine::builder(crate::EngineConfig { shard_count: 2, ..Default::default() })
            .state(state)
            .start()
            .expect("engine");
        let q = ListOrders { user_id: "u".into(), status: None, limit: 3, before: None };
        let first = engine.list_orders(&q).expect("page");
        let second = engine.list_orders(&ListOrders { before: first.next_before, ..q }).expect("page");
        let listed: Vec<u64> = first.orders.iter().chain(&second.orders).map(|o| o.order_id.0).collect();
        assert_eq!(listed, ids.iter().rev().copied().collect::<Vec<_>>());
    }

    /// Two users whose `user_orders` keys collide share one list: each sees only their own.
    #[test]
    fn a_shared_index_list_shows_each_user_only_their_orders() {
        let read = ReadModels::default();
        let mut ids = crate::publish::OrderIds::default();
        for id in 1..=6 {
            let o = order(id, if id % 2 == 0 { "ann" } else { "bob" }, OrderStatus::PendingPayment);
            read.orders.insert(o.order_id, o);
            ids.push(OrderId(id));
        }
        read.user_orders.insert(read.user_key("ann"), ids);
        let q = ListOrders { user_id: "ann".into(), status: None, limit: 10, before: None };
        let (p, _) = page(&read, None, &q, 100).expect("page");
        let got: Vec<u64> = p.orders.iter().map(|o| o.order_id.0).collect();
        assert_eq!(got, vec![6, 4, 2]);
    }

    #[test]
    fn limit_is_checked() {
        let read = ReadModels::default();
        for limit in [0, 101] {
            let q = ListOrders { user_id: "u".into(), status: None, limit, before: None };
            assert_eq!(page(&read, None, &q, 100).unwrap_err().code(), "invalid_request");
        }
    }
}
