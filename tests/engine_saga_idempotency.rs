//! Multi-SKU sagas (all or nothing, compensation), idempotency of `create_order` and `pay`,
//! queries, request validation and the rules of sale.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use surge::engine::{
    CreateOrder, Decimal, Engine, EngineConfig, EngineError, Initiator, ListOrders, ManualClock, Order, OrderId,
    OrderPage, OrderStatus, SaleRules, SkuSpec, SkuUpdate, SkuView,
};

const T0: i64 = 1_800_000_000_000;

struct Shop {
    engine: Engine,
    clock: Arc<ManualClock>,
}

fn shop(shard_count: usize) -> Shop {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::builder(EngineConfig { shard_count, ..Default::default() })
        .clock(clock.clone())
        .start()
        .expect("engine");
    Shop { engine, clock }
}

impl Shop {
    fn sku(&self, id: &str, price_cents: i64, stock: u64, rules: SaleRules) -> SkuView {
        self.engine
            .create_sku(SkuSpec {
                sku_id: id.into(),
                name: format!("Item {id}"),
                price: Decimal::new(price_cents, 2),
                initial_stock: stock,
                rules,
            })
            .wait()
            .expect("create sku")
    }

    fn create(&self, user: &str, items: &[(&str, u32)], key: &str) -> Result<Arc<Order>, EngineError> {
        // Each order its own millisecond: realistic, and the snowflake never waits for a
        // manual clock.
        self.clock.advance_ms(1);
        self.engine.create_order(CreateOrder::new(user, items, key)).wait()
    }

    fn get_sku(&self, id: &str) -> SkuView {
        self.engine.get_sku(id).expect("sku")
    }

    fn list(&self, user: &str, status: Option<OrderStatus>, before: Option<OrderId>, limit: usize) -> Vec<Arc<Order>> {
        self.page(user, status, before, limit).orders
    }

    fn page(&self, user: &str, status: Option<OrderStatus>, before: Option<OrderId>, limit: usize) -> OrderPage {
        self.engine.list_orders(&ListOrders { user_id: user.into(), status, limit, before }).expect("list_orders")
    }

    /// Settle, audit, and check that no unit of any SKU is held and no order exists.
    fn assert_nothing_held(&self, ctx: &str) {
        self.engine.settle();
        let report = self.engine.audit();
        assert!(report.is_healthy(), "{ctx}: {:#?}", report.violations);
        assert_eq!(report.holdings, 0, "{ctx}: holdings left");
        assert!(report.user_units.is_empty(), "{ctx}: user units left: {:?}", report.user_units);
        for v in self.engine.list_skus() {
            assert_eq!(v.reserved, 0, "{ctx}: {} reserved", v.sku_id);
            assert_eq!(v.sold, 0, "{ctx}: {} sold", v.sku_id);
            assert_eq!(v.available, v.stocked_total, "{ctx}: {} available", v.sku_id);
        }
    }

    fn assert_healthy(&self, ctx: &str) {
        self.engine.settle();
        let report = self.engine.audit();
        assert!(report.is_healthy(), "{ctx}: {:#?}", report.violations);
        for v in &report.skus {
            assert_eq!(v.available + v.reserved + v.sold, v.stocked_total, "{ctx}: {}", v.sku_id);
        }
    }
}

fn abc(s: &Shop, stock_b: u64) {
    s.sku("A", 1_000, 10, SaleRules::default());
    s.sku("B", 2_000, stock_b, SaleRules::default());
    s.sku("C", 3_000, 10, SaleRules::default());
}

// ---- sagas --------------------------------------------------------------------------------

#[test]
fn saga_with_a_sold_out_middle_sku_reserves_nothing() {
    for shards in [1, 2, 4] {
        let s = shop(shards);
        abc(&s, 0);
        let err = s.create("u1", &[("A", 1), ("B", 1), ("C", 1)], "k1").unwrap_err();
        assert_eq!(err, EngineError::SoldOut { sku_id: "B".into() }, "{shards} shards");
        assert_eq!(err.sku_id(), Some("B"));
        assert_eq!(err.code(), "sold_out");
        assert_eq!(s.engine.order_count(), 0);
        assert!(s.list("u1", None, None, 10).is_empty());
        s.assert_nothing_held(&format!("{shards} shards"));
        assert_eq!(s.get_sku("A").available, 10);
        assert_eq!(s.get_sku("C").available, 10);
    }
}

#[test]
fn saga_with_a_short_middle_sku_compensates_the_others() {
    // B has 1 unit and the order wants 2: the sold-out fast path cannot refuse it, so A and C
    // are reserved by their actors and must be released again.
    for shards in [1, 2, 4] {
        let ctx = format!("{shards} shards");
        let s = shop(shards);
        abc(&s, 1);
        for i in 0..20 {
            let err = s.create(&format!("u{i}"), &[("A", 2), ("B", 2), ("C", 2)], &format!("k{i}")).unwrap_err();
            assert_eq!(err, EngineError::InsufficientStock { sku_id: "B".into(), available: 1 }, "{ctx}");
            assert_eq!(err.sku_id(), Some("B"));
            // Compensation finished before the caller heard the rejection.
            assert_eq!(s.get_sku("A").available, 10, "{ctx}: A released before the reply");
            assert_eq!(s.get_sku("C").available, 10, "{ctx}: C released before the reply");
        }
        assert_eq!(s.engine.order_count(), 0, "{ctx}");
        s.assert_nothing_held(&ctx);
        // The stock is still sellable, unit for unit.
        let ok = s.create("w", &[("A", 10), ("B", 1), ("C", 10)], "kw").unwrap();
        assert_eq!(ok.total, Decimal::new(10 * 10 + 20 + 10 * 30, 0));
        s.assert_healthy(&ctx);
    }
}

#[test]
fn saga_with_a_short_last_sku_releases_the_first_two() {
    for shards in [1, 2, 4] {
        let ctx = format!("{shards} shards");
        let s = shop(shards);
        s.sku("A", 1_000, 10, SaleRules::default());
        s.sku("B", 2_000, 10, SaleRules::default());
        s.sku("C", 3_000, 1, SaleRules::default());
        let err = s.create("u1", &[("A", 1), ("B", 3), ("C", 2)], "k1").unwrap_err();
        assert_eq!(err, EngineError::InsufficientStock { sku_id: "C".into(), available: 1 }, "{ctx}");
        s.assert_nothing_held(&ctx);
        assert_eq!(
            (s.get_sku("A").available, s.get_sku("B").available, s.get_sku("C").available),
            (10, 10, 1),
            "{ctx}"
        );
        // Same key again after the rejection: it was not recorded, so it runs again, and with
        // C restocked it succeeds.
        s.engine.adjust_stock("C", "adj-c", 1, "restock").wait().unwrap();
        let order = s.create("u1", &[("A", 1), ("B", 3), ("C", 2)], "k1").unwrap();
        assert_eq!(order.items.len(), 3);
        assert_eq!(order.total, Decimal::new(10 + 60 + 60, 0));
        s.engine.settle();
        assert_eq!((s.get_sku("A").reserved, s.get_sku("B").reserved, s.get_sku("C").reserved), (1, 3, 2), "{ctx}");
        s.assert_healthy(&ctx);
    }
}

#[test]
fn every_kind_of_refusal_on_one_sku_rolls_the_whole_order_back() {
    type Setup = fn(&Shop);
    let cases: [(&str, Setup, &str); 5] = [
        (
            "paused",
            |s| {
                s.engine.update_sku("B", SkuUpdate { paused: Some(true), ..Default::default() }).wait().unwrap();
            },
            "sku_paused",
        ),
        (
            "limit",
            |s| {
                s.engine
                    .update_sku("B", SkuUpdate { per_user_limit: Some(Some(1)), ..Default::default() })
                    .wait()
                    .unwrap();
            },
            "purchase_limit_exceeded",
        ),
        (
            "not started",
            |s| {
                s.engine
                    .update_sku("B", SkuUpdate { sale_starts_at_ms: Some(Some(T0 + 3_600_000)), ..Default::default() })
                    .wait()
                    .unwrap();
            },
            "sale_not_started",
        ),
        (
            "ended",
            |s| {
                s.engine
                    .update_sku("B", SkuUpdate { sale_ends_at_ms: Some(Some(T0)), ..Default::default() })
                    .wait()
                    .unwrap();
            },
            "sale_ended",
        ),
        (
            "short",
            |s| {
                s.engine.adjust_stock("B", "adj-b-damaged", -9, "damaged").wait().unwrap();
            },
            "insufficient_stock",
        ),
    ];
    for shards in [1, 3] {
        for (name, setup, code) in cases {
            let ctx = format!("{name}, {shards} shards");
            let s = shop(shards);
            abc(&s, 10);
            setup(&s);
            let err = s.create("u", &[("A", 2), ("B", 2), ("C", 2)], "k").unwrap_err();
            assert_eq!(err.code(), code, "{ctx}: {err}");
            assert_eq!(err.sku_id(), Some("B"), "{ctx}");
            assert_eq!(s.engine.order_count(), 0, "{ctx}");
            s.assert_nothing_held(&ctx);
        }
    }
}

#[test]
fn the_first_refusal_in_item_order_is_returned() {
    for shards in [1, 2, 4] {
        let s = shop(shards);
        s.sku("A", 100, 10, SaleRules::default());
        s.sku("B", 100, 1, SaleRules::default());
        s.sku("C", 100, 10, SaleRules { paused: true, ..Default::default() });
        s.sku("D", 100, 1, SaleRules::default());
        // B and D are both short, C is paused: B comes first.
        let err = s.create("u", &[("A", 1), ("B", 2), ("C", 1), ("D", 2)], "k1").unwrap_err();
        assert_eq!(err.sku_id(), Some("B"), "{shards} shards: {err}");
        assert_eq!(err.code(), "insufficient_stock");
        let err = s.create("u", &[("A", 1), ("C", 1), ("B", 2), ("D", 2)], "k2").unwrap_err();
        assert_eq!(err.sku_id(), Some("C"), "{shards} shards: {err}");
        assert_eq!(err.code(), "sku_paused");
        let err = s.create("u", &[("D", 5), ("A", 1), ("C", 1)], "k3").unwrap_err();
        assert_eq!(err.sku_id(), Some("D"), "{shards} shards: {err}");
        s.assert_nothing_held(&format!("{shards} shards"));
    }
}

#[test]
fn unknown_sku_anywhere_in_the_order_refuses_it() {
    let s = shop(2);
    abc(&s, 10);
    let err = s.create("u", &[("A", 1), ("nope", 1), ("C", 1)], "k").unwrap_err();
    assert_eq!(err, EngineError::UnknownSku { sku_id: "nope".into() });
    assert_eq!(err.code(), "unknown_sku");
    assert_eq!(err.sku_id(), Some("nope"));
    s.assert_nothing_held("unknown sku");
    assert_eq!(s.engine.get_sku("nope").unwrap_err().code(), "unknown_sku");
    assert_eq!(s.engine.adjust_stock("nope", "adj-nope", 1, "x").wait().unwrap_err().code(), "unknown_sku");
    assert_eq!(s.engine.update_sku("nope", SkuUpdate::default()).wait().unwrap_err().code(), "unknown_sku");
}

// ---- idempotency of create ----------------------------------------------------------------

#[test]
fn same_key_same_items_returns_the_same_order_and_reserves_once() {
    let s = shop(2);
    abc(&s, 10);
    let items = [("A", 2), ("C", 1)];
    let first = s.create("alice", &items, "checkout-1").unwrap();
    let second = s.create("alice", &items, "checkout-1").unwrap();
    assert_eq!(second.order_id, first.order_id);
    assert_eq!(second, first);
    s.engine.settle();
    assert_eq!(s.get_sku("A").reserved, 2, "reserved once");
    assert_eq!(s.get_sku("C").reserved, 1, "reserved once");
    assert_eq!(s.engine.order_count(), 1);
    assert_eq!(s.list("alice", None, None, 10).len(), 1);

    // Still the same order after it moved on; still no second reservation.
    s.engine.pay(first.order_id, "psp-1", first.total, Default::default()).wait().unwrap();
    let third = s.create("alice", &items, "checkout-1").unwrap();
    assert_eq!(third.order_id, first.order_id);
    assert_eq!(third.items, first.items);
    assert_eq!(third.total, first.total);
    s.engine.settle();
    assert_eq!((s.get_sku("A").reserved, s.get_sku("A").sold), (0, 2));
    assert_eq!(s.engine.order_count(), 1);

    // Keys are per user: another user's identical key is another order.
    let bob = s.create("bob", &items, "checkout-1").unwrap();
    assert_ne!(bob.order_id, first.order_id);
    assert_eq!(s.get_sku("A").reserved, 2);
    s.assert_healthy("same key");
}

#[test]
fn same_key_with_other_items_is_an_idempotency_conflict() {
    let s = shop(2);
    abc(&s, 10);
    let first = s.create("alice", &[("A", 2), ("C", 1)], "checkout-1").unwrap();
    for other in
        [&[("A", 3), ("C", 1)][..], &[("A", 2)][..], &[("A", 2), ("C", 1), ("B", 1)][..], &[("B", 2), ("C", 1)][..]]
    {
        let err = s.create("alice", other, "checkout-1").unwrap_err();
        assert_eq!(err, EngineError::IdempotencyConflict { order_id: first.order_id }, "{other:?}");
        assert_eq!(err.code(), "idempotency_conflict");
    }
    s.engine.settle();
    assert_eq!((s.get_sku("A").reserved, s.get_sku("B").reserved, s.get_sku("C").reserved), (2, 0, 1));
    assert_eq!(s.engine.order_count(), 1);
    // Even after the order is canceled the key stays taken.
    s.engine.cancel_order(first.order_id, Initiator::User, Default::default()).wait().unwrap();
    let err = s.create("alice", &[("B", 1)], "checkout-1").unwrap_err();
    assert_eq!(err.code(), "idempotency_conflict");
    let again = s.create("alice", &[("A", 2), ("C", 1)], "checkout-1").unwrap();
    assert_eq!(again.order_id, first.order_id);
    assert_eq!(again.status, OrderStatus::Canceled);
    s.assert_nothing_held("conflict");
}

#[test]
fn same_key_after_a_rejection_runs_again() {
    let s = shop(2);
    abc(&s, 0);
    let err = s.create("alice", &[("A", 1), ("B", 1)], "k").unwrap_err();
    assert_eq!(err.code(), "sold_out");
    // Different items under the same key are fine: nothing was recorded.
    let a = s.create("alice", &[("A", 1)], "k").unwrap();
    assert_eq!(a.items.len(), 1);
    let s2 = shop(2);
    abc(&s2, 1);
    let err = s2.create("bob", &[("A", 1), ("B", 2)], "k").unwrap_err();
    assert_eq!(err.code(), "insufficient_stock");
    s2.engine.adjust_stock("B", "adj-b-restock", 1, "restock").wait().unwrap();
    let order = s2.create("bob", &[("A", 1), ("B", 2)], "k").unwrap();
    assert_eq!(order.status, OrderStatus::PendingPayment);
    s2.engine.settle();
    assert_eq!(s2.get_sku("B").reserved, 2);
    s.assert_healthy("retry");
    s2.assert_healthy("retry");
}

#[test]
fn concurrent_duplicates_make_exactly_one_order() {
    const THREADS: usize = 20;
    let s = shop(2);
    // Plenty of stock: see retry_of_the_order_that_took_the_last_unit_returns_that_order for
    // what happens when a duplicate arrives after the first one took the last unit.
    s.sku("A", 1_000, 1_000, SaleRules::default());
    s.sku("C", 3_000, 1_000, SaleRules::default());
    for round in 0..10 {
        let key = format!("dup-{round}");
        let start = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let engine = s.engine.clone();
                let start = start.clone();
                let key = key.clone();
                thread::spawn(move || {
                    start.wait();
                    engine.create_order(CreateOrder::new("carol", &[("A", 1), ("C", 1)], &key)).wait()
                })
            })
            .collect();
        let ids: HashSet<OrderId> =
            handles.into_iter().map(|h| h.join().expect("thread").expect("duplicate create").order_id).collect();
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        s.engine.settle();
        assert_eq!(s.get_sku("A").reserved, round + 1, "round {round}: reserved once");
        assert_eq!(s.get_sku("C").reserved, round + 1, "round {round}: reserved once");
        assert_eq!(s.engine.order_count(), round as usize + 1);
    }
    s.assert_healthy("concurrent duplicates");
}

// ---- idempotency of pay -------------------------------------------------------------------

#[test]
fn payment_callbacks_are_idempotent_and_checked() {
    let s = shop(2);
    abc(&s, 10);
    let order = s.create("alice", &[("A", 2), ("B", 1)], "k").unwrap();
    assert_eq!(order.total, Decimal::new(40_00, 2));

    // Wrong amount: refused, nothing moves, and the right amount still works afterwards.
    for wrong in [Decimal::new(39_99, 2), Decimal::ZERO, Decimal::new(-40, 0), Decimal::new(80, 0)] {
        let err = s.engine.pay(order.order_id, "psp-1", wrong, Default::default()).wait().unwrap_err();
        assert_eq!(err, EngineError::AmountMismatch { expected: order.total, got: wrong });
        assert_eq!(err.code(), "amount_mismatch");
    }
    let now = s.engine.get_order(order.order_id).unwrap();
    assert_eq!((now.status, now.version, now.payment.clone()), (OrderStatus::PendingPayment, 1, None));
    assert_eq!(s.get_sku("A").reserved, 2);

    // The same amount at another scale is the same amount.
    let paid = s.engine.pay(order.order_id, "psp-1", Decimal::new(400, 1), Default::default()).wait().unwrap();
    assert_eq!((paid.status, paid.version), (OrderStatus::Paid, 2));
    s.engine.settle();
    assert_eq!((s.get_sku("A").reserved, s.get_sku("A").sold), (0, 2));

    // The PSP retries the same callback: acknowledged, nothing changes.
    for _ in 0..3 {
        let dup = s.engine.pay(order.order_id, "psp-1", order.total, Default::default()).wait().unwrap();
        assert_eq!(dup, paid);
        assert_eq!(dup.version, 2, "version unchanged on the duplicate");
    }
    let now = s.engine.get_order(order.order_id).unwrap();
    assert_eq!(now.version, 2);
    assert_eq!(now.history.len(), 2, "one payment in the history");
    s.engine.settle();
    assert_eq!((s.get_sku("A").sold, s.get_sku("B").sold), (2, 1), "confirmed once");

    // A different payment for a paid order: refund it.
    let err = s.engine.pay(order.order_id, "psp-2", order.total, Default::default()).wait().unwrap_err();
    assert_eq!(err, EngineError::AlreadyPaid { order_id: order.order_id });
    assert_eq!(err.code(), "already_paid");
    let err = s.engine.pay(order.order_id, "psp-3", Decimal::ONE, Default::default()).wait().unwrap_err();
    assert_eq!(err.code(), "already_paid");
    assert_eq!(s.engine.get_order(order.order_id).unwrap().payment.as_ref().unwrap().payment_id.as_ref(), "psp-1");

    // A payment for a canceled order: not payable.
    let other = s.create("alice", &[("C", 1)], "k2").unwrap();
    s.engine.cancel_order(other.order_id, Initiator::Admin, Default::default()).wait().unwrap();
    let err = s.engine.pay(other.order_id, "psp-9", other.total, Default::default()).wait().unwrap_err();
    assert_eq!(err, EngineError::OrderNotPayable { order_id: other.order_id, status: OrderStatus::Canceled });
    assert_eq!(err.code(), "order_not_payable");
    assert_eq!(s.engine.get_order(other.order_id).unwrap().version, 2);

    // Unknown order; bad payment ids.
    let err = s.engine.pay(OrderId(1), "psp", Decimal::ONE, Default::default()).wait().unwrap_err();
    assert_eq!(err, EngineError::UnknownOrder { order_id: OrderId(1) });
    for bad in [String::new(), "p".repeat(65)] {
        let err = s.engine.pay(order.order_id, &bad, order.total, Default::default()).wait().unwrap_err();
        assert_eq!(err.code(), "invalid_request", "payment id of {} bytes", bad.len());
    }
    s.assert_healthy("payments");
}

// ---- queries ------------------------------------------------------------------------------

#[test]
fn list_orders_is_newest_first_filtered_and_paged() {
    let s = shop(2);
    s.sku("A", 100, 1_000, SaleRules::default());
    let orders: Vec<_> = (0..7).map(|i| s.create("dave", &[("A", 1)], &format!("k{i}")).unwrap()).collect();
    s.create("erin", &[("A", 1)], "k0").unwrap();
    for o in [&orders[1], &orders[4], &orders[5]] {
        s.engine.pay(o.order_id, &format!("p{}", o.order_id), o.total, Default::default()).wait().unwrap();
    }
    s.engine.cancel_order(orders[2].order_id, Initiator::User, Default::default()).wait().unwrap();

    let ids = |v: Vec<Arc<Order>>| v.iter().map(|o| o.order_id).collect::<Vec<_>>();
    let newest_first: Vec<OrderId> = orders.iter().rev().map(|o| o.order_id).collect();
    assert_eq!(ids(s.list("dave", None, None, 100)), newest_first);
    let all = s.list("dave", None, None, 100);
    assert!(all.windows(2).all(|w| w[0].created_at_ms > w[1].created_at_ms));
    assert!(all.iter().all(|o| &*o.user_id == "dave"));
    // Lists show current state.
    assert_eq!(all.iter().find(|o| o.order_id == orders[2].order_id).unwrap().status, OrderStatus::Canceled);

    // Status filter.
    let paid = vec![orders[5].order_id, orders[4].order_id, orders[1].order_id];
    assert_eq!(ids(s.list("dave", Some(OrderStatus::Paid), None, 100)), paid);
    assert_eq!(ids(s.list("dave", Some(OrderStatus::Canceled), None, 100)), vec![orders[2].order_id]);
    assert_eq!(s.list("dave", Some(OrderStatus::PendingPayment), None, 100).len(), 3);
    assert!(s.list("dave", Some(OrderStatus::Refunded), None, 100).is_empty());

    // Pagination: each page's next_before is the next page's cursor; None on the last page.
    let p1 = s.page("dave", None, None, 3);
    assert_eq!(ids(p1.orders), newest_first[0..3]);
    assert_eq!(p1.next_before, Some(newest_first[2]));
    let p2 = s.page("dave", None, p1.next_before, 3);
    assert_eq!(ids(p2.orders), newest_first[3..6]);
    let p3 = s.page("dave", None, p2.next_before, 3);
    assert_eq!(ids(p3.orders), newest_first[6..7]);
    assert_eq!(p3.next_before, None, "last page");
    let exact = s.page("dave", None, None, 7);
    assert_eq!((exact.orders.len(), exact.next_before), (7, None), "a full last page has no cursor");
    let paid_p1 = s.page("dave", Some(OrderStatus::Paid), None, 2);
    assert_eq!(ids(paid_p1.orders), paid[0..2]);
    assert_eq!(ids(s.list("dave", Some(OrderStatus::Paid), paid_p1.next_before, 2)), paid[2..3]);
    assert!(s.list("dave", None, Some(OrderId(0)), 100).is_empty(), "nothing below the smallest id");
    assert!(s.list("dave", None, Some(OrderId(u64::MAX)), 100).len() == 7, "any id works as a cursor");

    // Limits.
    for bad in [0, 101] {
        let err = s
            .engine
            .list_orders(&ListOrders { user_id: "dave".into(), status: None, limit: bad, before: None })
            .unwrap_err();
        assert_eq!(err.code(), "invalid_request", "limit {bad}");
    }
    assert!(s.list("nobody", None, None, 100).is_empty());
    assert_eq!(s.list("erin", None, None, 1).len(), 1);

    // get_order.
    assert_eq!(s.engine.get_order(orders[3].order_id).unwrap(), orders[3]);
    // An id a year after the newest order: well-formed, never issued.
    let ghost = OrderId(orders[6].order_id.0 + ((365 * 86_400_000) << 22));
    let err = s.engine.get_order(ghost).unwrap_err();
    assert_eq!(err, EngineError::UnknownOrder { order_id: ghost });
    assert_eq!(err.code(), "unknown_order");
}

// ---- validation ---------------------------------------------------------------------------

#[test]
fn malformed_create_requests_are_invalid_and_execute_nothing() {
    let s = shop(2);
    let names: Vec<String> = (0..21).map(|i| format!("S{i:02}")).collect();
    for n in &names {
        s.sku(n, 100, 1_000, SaleRules::default());
    }
    let items = |n: usize, qty: u32| names[..n].iter().map(|s| (Arc::from(s.as_str()), qty)).collect::<Vec<_>>();
    let req = |user: &str, items: Vec<(Arc<str>, u32)>, key: &str| CreateOrder {
        user_id: Arc::from(user),
        items,
        idempotency_key: key.into(),
    };
    let long_key = "k".repeat(129);
    let long_user = "u".repeat(65);
    let long_sku = "s".repeat(65);
    let cases: Vec<(&str, CreateOrder)> = vec![
        ("no items", req("u", items(0, 1), "k")),
        ("21 items", req("u", items(21, 1), "k")),
        ("qty 0", req("u", items(1, 0), "k")),
        ("qty 100", req("u", items(1, 100), "k")),
        ("qty 0 on the last of 3", {
            let mut v = items(3, 1);
            v[2].1 = 0;
            req("u", v, "k")
        }),
        ("duplicate sku", CreateOrder::new("u", &[("S00", 1), ("S01", 1), ("S00", 2)], "k")),
        ("empty user", req("", items(1, 1), "k")),
        ("long user", req(&long_user, items(1, 1), "k")),
        ("empty key", req("u", items(1, 1), "")),
        ("long key", req("u", items(1, 1), &long_key)),
        ("empty sku id", CreateOrder::new("u", &[("", 1)], "k")),
        ("long sku id", CreateOrder::new("u", &[(long_sku.as_str(), 1)], "k")),
    ];
    for (name, r) in cases {
        let err = s.engine.create_order(r).wait().unwrap_err();
        assert_eq!(err.code(), "invalid_request", "{name}: {err}");
        assert!(matches!(err, EngineError::InvalidRequest { .. }), "{name}");
    }
    s.assert_nothing_held("validation");
    assert_eq!(s.engine.order_count(), 0);
    // The key of a refused request is free.
    let ok = s.engine.create_order(req("u", items(20, 99), "k")).wait().unwrap();
    assert_eq!(ok.items.len(), 20, "20 items × 99 is the largest valid order");
    assert_eq!(ok.total, Decimal::new(20 * 99 * 100, 2));
    assert_eq!(s.engine.create_order(req("u", items(1, 1), &"k".repeat(128))).wait().unwrap().items.len(), 1);
    assert_eq!(s.engine.create_order(req(&"u".repeat(64), items(1, 1), "k")).wait().unwrap().items.len(), 1);
    s.assert_healthy("validation");
}

// ---- rules of sale ------------------------------------------------------------------------

#[test]
fn sale_window_follows_the_engine_clock() {
    let s = shop(2);
    let start = T0 + 60_000;
    let end = T0 + 120_000;
    s.sku(
        "W",
        500,
        100,
        SaleRules { sale_starts_at_ms: Some(start), sale_ends_at_ms: Some(end), ..Default::default() },
    );
    let err = s.create("u1", &[("W", 1)], "k1").unwrap_err();
    assert_eq!(err, EngineError::SaleNotStarted { sku_id: "W".into() });
    s.clock.set_ms(start - 2);
    let err = s.create("u1", &[("W", 1)], "k1").unwrap_err();
    assert_eq!(err.code(), "sale_not_started", "one ms before the start");
    // The helper advances 1 ms: this one runs exactly at the start instant.
    let at_start = s.create("u1", &[("W", 1)], "k1").unwrap();
    assert_eq!(at_start.created_at_ms, start);
    s.clock.set_ms(end - 2);
    let last = s.create("u2", &[("W", 1)], "k1").unwrap();
    assert_eq!(last.created_at_ms, end - 1);
    let err = s.create("u3", &[("W", 1)], "k1").unwrap_err();
    assert_eq!(err, EngineError::SaleEnded { sku_id: "W".into() }, "at the end instant");
    s.engine.settle();
    assert_eq!(s.get_sku("W").reserved, 2);
    s.clock.advance_ms(3_600_000);
    assert_eq!(s.create("u3", &[("W", 1)], "k1").unwrap_err().code(), "sale_ended");
    // A window that ends before it starts is refused.
    let err = s
        .engine
        .create_sku(SkuSpec {
            sku_id: "X".into(),
            name: "X".into(),
            price: Decimal::ONE,
            initial_stock: 1,
            rules: SaleRules { sale_starts_at_ms: Some(end), sale_ends_at_ms: Some(start), ..Default::default() },
        })
        .wait()
        .unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    s.assert_healthy("sale window");
}

#[test]
fn paused_sku_refuses_until_resumed() {
    let s = shop(2);
    s.sku("P", 500, 10, SaleRules::default());
    let v = s.engine.update_sku("P", SkuUpdate { paused: Some(true), ..Default::default() }).wait().unwrap();
    assert!(v.rules.paused);
    let err = s.create("u", &[("P", 1)], "k").unwrap_err();
    assert_eq!(err, EngineError::SkuPaused { sku_id: "P".into() });
    assert_eq!(err.code(), "sku_paused");
    assert_eq!(s.get_sku("P").available, 10);
    s.engine.update_sku("P", SkuUpdate { paused: Some(false), ..Default::default() }).wait().unwrap();
    let order = s.create("u", &[("P", 1)], "k").unwrap();
    // A pause does not touch existing orders: paying still works.
    s.engine.update_sku("P", SkuUpdate { paused: Some(true), ..Default::default() }).wait().unwrap();
    s.engine.pay(order.order_id, "psp", order.total, Default::default()).wait().unwrap();
    s.engine.settle();
    assert_eq!(s.get_sku("P").sold, 1);
    s.assert_healthy("paused");
}

#[test]
fn per_user_limit_counts_reserved_and_sold_units() {
    let s = shop(2);
    s.sku("L", 500, 100, SaleRules { per_user_limit: Some(3), ..Default::default() });
    let a = s.create("u", &[("L", 2)], "k1").unwrap();
    let err = s.create("u", &[("L", 2)], "k2").unwrap_err();
    assert_eq!(err, EngineError::PurchaseLimitExceeded { sku_id: "L".into(), limit: 3 });
    assert_eq!(err.code(), "purchase_limit_exceeded");
    let b = s.create("u", &[("L", 1)], "k3").unwrap();
    s.engine.pay(b.order_id, "psp-b", b.total, Default::default()).wait().unwrap();
    assert_eq!(s.create("u", &[("L", 1)], "k4").unwrap_err().code(), "purchase_limit_exceeded");
    // Another user is not affected.
    s.create("v", &[("L", 3)], "k1").unwrap();
    assert_eq!(s.create("w", &[("L", 4)], "k1").unwrap_err().code(), "purchase_limit_exceeded");
    // Canceling gives the units back; sold ones keep counting.
    s.engine.cancel_order(a.order_id, Initiator::User, Default::default()).wait().unwrap();
    s.create("u", &[("L", 2)], "k5").unwrap();
    assert_eq!(s.create("u", &[("L", 1)], "k6").unwrap_err().code(), "purchase_limit_exceeded");
    s.engine.settle();
    let report = s.engine.audit();
    assert!(report.is_healthy(), "{:#?}", report.violations);
    assert_eq!(report.user_units.get(&(Arc::from("L"), Arc::from("u"))), Some(&3));
    assert_eq!(report.user_units.get(&(Arc::from("L"), Arc::from("v"))), Some(&3));
    // Raising the limit lets the user buy more.
    s.engine.update_sku("L", SkuUpdate { per_user_limit: Some(Some(5)), ..Default::default() }).wait().unwrap();
    s.create("u", &[("L", 2)], "k7").unwrap();
    s.engine.update_sku("L", SkuUpdate { per_user_limit: Some(None), ..Default::default() }).wait().unwrap();
    s.create("u", &[("L", 50)], "k8").unwrap();
    s.assert_healthy("limit");
}

#[test]
fn stock_adjustments_keep_the_books_balanced() {
    let s = shop(2);
    s.sku("R", 500, 5, SaleRules::default());
    let o = s.create("u", &[("R", 4)], "k").unwrap();
    let err = s.engine.adjust_stock("R", "adj-r-1", -2, "shrinkage").wait().unwrap_err();
    assert_eq!(err, EngineError::InvalidAdjustment { sku_id: "R".into(), delta: -2, available: 1 });
    assert_eq!(err.code(), "invalid_adjustment");
    let v = s.engine.adjust_stock("R", "adj-r-2", -1, "shrinkage").wait().unwrap();
    assert_eq!((v.available, v.reserved, v.sold, v.stocked_total), (0, 4, 0, 4));
    assert_eq!(s.create("u2", &[("R", 1)], "k").unwrap_err().code(), "sold_out");
    let v = s.engine.adjust_stock("R", "adj-r-3", 10, "restock").wait().unwrap();
    assert_eq!((v.available, v.stocked_total), (10, 14));
    s.create("u2", &[("R", 1)], "k").unwrap();
    s.engine.cancel_order(o.order_id, Initiator::User, Default::default()).wait().unwrap();
    let v = s.get_sku("R");
    assert_eq!((v.available, v.reserved, v.sold, v.stocked_total), (13, 1, 0, 14));
    for (id, delta, reason) in [("adj-r-4", 0, "x"), ("adj-r-5", 1, ""), ("", 1, "x"), (&*"a".repeat(65), 1, "x")] {
        assert_eq!(s.engine.adjust_stock("R", id, delta, reason).wait().unwrap_err().code(), "invalid_request");
    }
    s.assert_healthy("adjust");
}

/// `adjust_stock` is idempotent by `adjustment_id` (issue 10, item 7): a retry with the same id,
/// delta and reason has no second effect and answers the SKU; the same id with another delta or
/// reason is `idempotency_conflict` (naming the SKU and the id); ids are per SKU; each SKU
/// remembers its newest `ADJUSTMENT_IDS_PER_SKU_MAX` ids.
#[test]
fn adjust_stock_is_idempotent_by_adjustment_id() {
    let s = shop(2);
    s.sku("R", 500, 5, SaleRules::default());
    s.sku("Q", 500, 5, SaleRules::default());
    let v = s.engine.adjust_stock("R", "po-1", 10, "restock").wait().unwrap();
    assert_eq!((v.available, v.stocked_total), (15, 15));
    let again = s.engine.adjust_stock("R", "po-1", 10, "restock").wait().unwrap();
    assert_eq!(again, v, "a retry has no second effect");
    let err = s.engine.adjust_stock("R", "po-1", 11, "restock").wait().unwrap_err();
    assert_eq!(err, EngineError::AdjustmentConflict { sku_id: "R".into(), adjustment_id: "po-1".into() });
    assert_eq!(err.code(), "idempotency_conflict");
    let err = s.engine.adjust_stock("R", "po-1", 10, "other reason").wait().unwrap_err();
    assert_eq!(err.code(), "idempotency_conflict");
    // Per SKU: the same id on another SKU is another adjustment.
    assert_eq!(s.engine.adjust_stock("Q", "po-1", 1, "restock").wait().unwrap().stocked_total, 6);
    // A refused adjustment is not recorded: the id stays free.
    let err = s.engine.adjust_stock("R", "po-2", -100, "shrinkage").wait().unwrap_err();
    assert_eq!(err.code(), "invalid_adjustment");
    assert_eq!(s.engine.adjust_stock("R", "po-2", -1, "shrinkage").wait().unwrap().stocked_total, 14);
    // Retention: after ADJUSTMENT_IDS_PER_SKU_MAX newer ids, po-1 is forgotten and runs again.
    for i in 0..surge::engine::ADJUSTMENT_IDS_PER_SKU_MAX {
        s.engine.adjust_stock("R", &format!("bulk-{i}"), 1, "bulk").wait().unwrap();
    }
    let total = s.get_sku("R").stocked_total;
    assert_eq!(s.engine.adjust_stock("R", "po-1", 10, "restock").wait().unwrap().stocked_total, total + 10);
    s.assert_healthy("adjust ids");
}

// ---- bugs ---------------------------------------------------------------------------------

/// The sold-out fast path in `Engine::create_order` runs before the idempotency lookup (which
/// lives in the user's shard), so the retry of a create that bought the *last* unit is told
/// `sold_out` instead of getting its order back. In a flash sale this is exactly the client that
/// timed out and retried: it is told it lost while it holds the unit.
#[test]
fn retry_of_the_order_that_took_the_last_unit_returns_that_order() {
    let s = shop(2);
    s.sku("LAST", 100, 1, SaleRules::default());
    let order = s.create("alice", &[("LAST", 1)], "checkout-1").unwrap();
    let retry = s.create("alice", &[("LAST", 1)], "checkout-1");
    assert_eq!(
        retry.map(|o| o.order_id),
        Ok(order.order_id),
        "DESIGN.md: a retry with the same key and payload returns the original outcome"
    );
}

/// The fast path also scans *all* items for a sold-out hint before the saga runs, so a later
/// sold-out item wins over an earlier item's refusal, contradicting "the first rejection in
/// item order" (engine/src/engine/orders.rs, `create_order` docs).
#[test]
fn fast_path_respects_item_order() {
    let s = shop(2);
    s.sku("A", 100, 5, SaleRules { paused: true, ..Default::default() });
    s.sku("B", 100, 0, SaleRules::default());
    let err = s.create("u", &[("A", 1), ("B", 1)], "k").unwrap_err();
    assert_eq!(err, EngineError::SkuPaused { sku_id: "A".into() });
}

/// Lowering `per_user_limit` below what a user already holds is accepted by `update_sku`, after
/// which `audit()` reports the legal, pre-existing holding as a violation ("holds 3 > limit 1"),
/// so `is_healthy()` is false although no invariant the engine enforces was broken.
#[test]
fn lowering_a_limit_does_not_make_the_audit_unhealthy() {
    let s = shop(2);
    s.sku("L", 100, 10, SaleRules { per_user_limit: Some(3), ..Default::default() });
    s.create("u", &[("L", 3)], "k").unwrap();
    s.engine.update_sku("L", SkuUpdate { per_user_limit: Some(Some(1)), ..Default::default() }).wait().unwrap();
    assert_eq!(s.create("u", &[("L", 1)], "k2").unwrap_err().code(), "purchase_limit_exceeded");
    s.engine.settle();
    let report = s.engine.audit();
    assert!(report.is_healthy(), "{:#?}", report.violations);
}

/// An unlimited SKU keeps no per-user count (issue 12: memory and CPU per order); a limit set
/// later counts the units users hold in live orders at that moment, reserved and sold, and a
/// limit removed and set again counts afresh.
#[test]
fn a_limit_set_mid_sale_counts_what_users_already_hold() {
    let s = shop(2);
    s.sku("M", 500, 100, SaleRules::default());
    let a = s.create("u", &[("M", 2)], "k1").unwrap();
    s.engine.pay(a.order_id, "psp-a", a.total, Default::default()).wait().unwrap();
    s.create("u", &[("M", 1)], "k2").unwrap();
    s.engine.settle();
    assert!(s.engine.audit().user_units.is_empty(), "no count without a limit");
    s.engine.update_sku("M", SkuUpdate { per_user_limit: Some(Some(4)), ..Default::default() }).wait().unwrap();
    assert_eq!(s.create("u", &[("M", 2)], "k3").unwrap_err().code(), "purchase_limit_exceeded");
    s.create("u", &[("M", 1)], "k4").unwrap();
    s.create("v", &[("M", 4)], "k1").unwrap();
    s.engine.settle();
    let report = s.engine.audit();
    assert_eq!(report.user_units.get(&(Arc::from("M"), Arc::from("u"))), Some(&4));
    s.engine.update_sku("M", SkuUpdate { per_user_limit: Some(None), ..Default::default() }).wait().unwrap();
    s.create("u", &[("M", 3)], "k5").unwrap();
    s.engine.update_sku("M", SkuUpdate { per_user_limit: Some(Some(7)), ..Default::default() }).wait().unwrap();
    assert_eq!(s.create("u", &[("M", 1)], "k6").unwrap_err().code(), "purchase_limit_exceeded");
    s.assert_healthy("limit set mid-sale");
}
