//! Archive: terminal orders leave memory after `archive_after_ms` and stay queryable from disk,
//! across restarts, without disturbing stock counters.

use std::sync::Arc;

use surge::engine::{
    CreateOrder, DisputeResolution, EngineConfig, Initiator, ListOrders, ManualClock, OrderEventKind, OrderStatus,
    SaleRules, SkuSpec, TransitionOptions,
};
use surge::persistence::{DurableEngine, PersistenceConfig};

const T0: i64 = 1_800_000_000_000;

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> DurableEngine {
    let cfg = EngineConfig { shard_count: 2, archive_after_ms: 60_000, ..EngineConfig::default() };
    DurableEngine::open_with(PersistenceConfig::new(dir), cfg, clock.clone(), |s| Box::new(s)).expect("open")
}

#[test]
fn terminal_orders_leave_memory_and_stay_queryable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let db = open(dir.path(), &clock);
    let e = db.engine().clone();
    let spec = SkuSpec {
        sku_id: "A".into(),
        name: "A".into(),
        price: "5.00".parse().expect("decimal"),
        initial_stock: 100,
        rules: SaleRules { per_user_limit: Some(11), ..SaleRules::default() },
    };
    e.create_sku(spec).wait().expect("sku");
    let opts = TransitionOptions::default;
    let mut canceled = Vec::new();
    let mut completed = Vec::new();
    for i in 0..20 {
        clock.advance_ms(1);
        let o = e.create_order(CreateOrder::new("bob", &[("A", 1)], &format!("k{i}"))).wait().expect("create");
        if i % 2 == 0 {
            e.cancel_order(o.order_id, Initiator::User, opts()).wait().expect("cancel");
            canceled.push(o.order_id);
        } else {
            e.pay(o.order_id, &format!("p{i}"), o.total, opts()).wait().expect("pay");
            e.ship(o.order_id, "TRK", opts()).wait().expect("ship");
            e.transition(o.order_id, OrderEventKind::Deliver, Initiator::Admin, opts()).wait().expect("deliver");
            e.transition(o.order_id, OrderEventKind::Complete, Initiator::User, opts()).wait().expect("complete");
            completed.push(o.order_id);
        }
    }
    let live = e.create_order(CreateOrder::new("bob", &[("A", 1)], "still-pending")).wait().expect("create");
    e.settle();
    assert_eq!(e.order_count(), 21);
    let before = e.get_sku("A").expect("sku");
    assert_eq!((before.sold, before.reserved), (10, 1));

    clock.advance_ms(60_001);
    e.settle();
    assert_eq!(e.order_count(), 1, "only the pending order stays in memory");
    for id in &canceled {
        assert_eq!(e.get_order(*id).expect("archived order readable").status, OrderStatus::Canceled);
    }
    for id in &completed {
        assert_eq!(e.get_order(*id).expect("archived order readable").status, OrderStatus::Completed);
    }
    let page = e.list_orders(&ListOrders { user_id: "bob".into(), status: None, limit: 100, before: None });
    let all = page.expect("list").orders;
    assert_eq!(all.len(), 21, "live and archived orders are listed");
    assert_eq!(all[0].order_id, live.order_id, "newest first");
    assert!(all.windows(2).all(|w| w[0].order_id > w[1].order_id));
    let done = ListOrders { user_id: "bob".into(), status: Some(OrderStatus::Completed), limit: 100, before: None };
    assert_eq!(e.list_orders(&done).expect("list").orders.len(), 10);
    let after = e.get_sku("A").expect("sku");
    assert_eq!((after.available, after.reserved, after.sold), (before.available, before.reserved, before.sold));
    let report = e.audit();
    assert!(report.is_healthy(), "{:?}", report.violations);
    // The per-user limit (11) still counts archived purchases: bob holds 10 sold (archived) + 1
    // reserved, so one more unit must be refused.
    let more = e.create_order(CreateOrder::new("bob", &[("A", 1)], "one-more")).wait();
    assert_eq!(more.expect_err("limit").code(), "purchase_limit_exceeded");

    drop(e);
    db.close_without_snapshot();
    let db = open(dir.path(), &clock);
    let e = db.engine();
    e.settle();
    assert_eq!(e.order_count(), 1, "archived orders stay out of memory after recovery");
    assert_eq!(e.get_order(completed[0]).expect("archived after restart").status, OrderStatus::Completed);
    assert_eq!(e.get_sku("A").expect("sku").sold, 10);
    let report = e.audit();
    assert!(report.is_healthy(), "{:?}", report.violations);
    db.close().expect("close");
    let db = open(dir.path(), &clock);
    assert_eq!(db.engine().get_order(canceled[0]).expect("after snapshot").status, OrderStatus::Canceled);
}

/// Archived orders keep their rights (issue 10, item 9): `open_dispute` on a completed order
/// works within `dispute_window_ms` of its completion even after it was archived (the order comes
/// back into memory and survives a restart), and is `dispute_window_closed` after; commands on
/// archived orders answer as the state machine does for their terminal status, never
/// `unknown_order`.
#[test]
fn archived_orders_keep_their_rights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let db = open(dir.path(), &clock);
    let e = db.engine().clone();
    let rules = SaleRules { per_user_limit: Some(3), ..SaleRules::default() };
    let spec =
        SkuSpec { sku_id: "A".into(), name: "A".into(), price: "5.00".parse().expect("dec"), initial_stock: 10, rules };
    e.create_sku(spec).wait().expect("sku");
    let opts = TransitionOptions::default;
    let complete = |key: &str| {
        let o = e.create_order(CreateOrder::new("dan", &[("A", 1)], key)).wait().expect("create");
        e.pay(o.order_id, &format!("psp-{key}"), o.total, opts()).wait().expect("pay");
        e.ship(o.order_id, "TRK", opts()).wait().expect("ship");
        e.transition(o.order_id, OrderEventKind::Deliver, Initiator::Admin, opts()).wait().expect("deliver");
        e.transition(o.order_id, OrderEventKind::Complete, Initiator::User, opts()).wait().expect("complete")
    };
    let early = complete("early");
    let late = complete("late");
    let canceled = e.create_order(CreateOrder::new("dan", &[("A", 1)], "c")).wait().expect("create");
    e.cancel_order(canceled.order_id, Initiator::User, opts()).wait().expect("cancel");
    clock.advance_ms(60_001);
    e.settle();
    assert_eq!(e.order_count(), 0, "all three archived");

    // Commands on archived orders: as the state machine answers for their terminal status.
    let pay = e.pay(canceled.order_id, "psp-late", canceled.total, opts()).wait();
    assert_eq!(pay.expect_err("late pay").code(), "order_not_payable");
    let dup = e.pay(early.order_id, "psp-early", early.total, opts()).wait().expect("same payment: a duplicate");
    assert_eq!(dup.status, OrderStatus::Completed);
    assert_eq!(e.pay(early.order_id, "psp-other", early.total, opts()).wait().expect_err("x").code(), "already_paid");
    let cancel = e.cancel_order(early.order_id, Initiator::User, opts()).wait();
    assert_eq!(cancel.expect_err("cancel completed").code(), "invalid_transition");
    assert_eq!(e.order_count(), 0, "refusals restore nothing");

    // Within the window: the archived order comes back and is disputed.
    let disputed = e.transition(early.order_id, OrderEventKind::OpenDispute, Initiator::User, opts()).wait();
    assert_eq!(disputed.expect("dispute within the window").status, OrderStatus::Disputed);
    assert_eq!(e.get_order(early.order_id).expect("get").status, OrderStatus::Disputed);
    assert_eq!(e.order_count(), 1);
    let sku = e.get_sku("A").expect("sku");
    assert_eq!((sku.sold, sku.available), (2, 8), "units stay sold");
    let report = e.audit();
    assert!(report.is_healthy(), "{:?}", report.violations);
    let dan = ListOrders { user_id: "dan".into(), status: None, limit: 10, before: None };
    assert_eq!(e.list_orders(&dan).expect("list").orders.len(), 3, "listed once each");

    // After the window (30 days from completion by default): refused, archived or not.
    clock.set_ms(late.updated_at_ms + 2_592_000_000);
    let closed = e.transition(late.order_id, OrderEventKind::OpenDispute, Initiator::User, opts()).wait();
    assert_eq!(closed.expect_err("window closed").code(), "dispute_window_closed");

    // The restored, disputed order survives a restart and moves on from there.
    drop(e);
    db.close_without_snapshot();
    let db = open(dir.path(), &clock);
    let e = db.engine();
    e.settle();
    assert_eq!(e.get_order(early.order_id).expect("after restart").status, OrderStatus::Disputed);
    let report = e.audit();
    assert!(report.is_healthy(), "{:?}", report.violations);
    let resolved = e.resolve_dispute(early.order_id, DisputeResolution::Completed, opts()).wait().expect("resolve");
    assert_eq!(resolved.status, OrderStatus::Completed);
    // Its window counts from the first completion, so it is closed by now.
    let again = e.transition(early.order_id, OrderEventKind::OpenDispute, Initiator::User, opts()).wait();
    assert_eq!(again.expect_err("closed").code(), "dispute_window_closed");
    clock.advance_ms(60_001);
    e.settle();
    assert_eq!(e.order_count(), 0, "archived again");
    assert_eq!(e.get_sku("A").expect("sku").sold, 2);
    let report = e.audit();
    assert!(report.is_healthy(), "{:?}", report.violations);
    let more = e.create_order(CreateOrder::new("dan", &[("A", 2)], "more")).wait();
    assert_eq!(more.expect_err("dan holds 2 of 3").code(), "purchase_limit_exceeded");
    db.close().expect("close");
}

/// Issue 10, item 13: a user with 10 000 orders, some archived (real sled archive), pages
/// through all of them exactly once, newest first, with a small limit.
#[test]
fn ten_thousand_orders_page_exactly_once_across_live_and_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let db = open(dir.path(), &clock);
    let e = db.engine().clone();
    let spec = SkuSpec {
        sku_id: "A".into(),
        name: "A".into(),
        price: "1.00".parse().expect("decimal"),
        initial_stock: 20_000,
        rules: SaleRules::default(),
    };
    e.create_sku(spec).wait().expect("sku");
    // Bursts of 1 000 (group commit), each in its own millisecond of the manual clock.
    let mut ids = Vec::with_capacity(10_000);
    for burst in 0..10 {
        clock.advance_ms(1);
        let pending: Vec<_> = (0..1_000)
            .map(|i| e.create_order(CreateOrder::new("carol", &[("A", 1)], &format!("k{burst}-{i}"))))
            .collect();
        ids.extend(pending.into_iter().map(|p| p.wait().expect("create").order_id));
    }
    // Cancel the first 4 000 and let them be archived; the rest stay live.
    let cancels: Vec<_> =
        ids[..4_000].iter().map(|id| e.cancel_order(*id, Initiator::User, TransitionOptions::default())).collect();
    for c in cancels {
        c.wait().expect("cancel");
    }
    clock.advance_ms(60_001);
    e.settle();
    assert_eq!(e.order_count(), 6_000, "4 000 orders archived");
    let mut q = ListOrders { user_id: "carol".into(), status: None, limit: 7, before: None };
    let mut listed = Vec::with_capacity(10_000);
    loop {
        let page = e.list_orders(&q).expect("page");
        assert!(page.orders.len() <= 7);
        listed.extend(page.orders.iter().map(|o| o.order_id));
        match page.next_before {
            Some(b) => q.before = Some(b),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(listed.len(), 10_000);
    assert!(listed == expected, "every order exactly once, newest first");
    // A filtered walk finds exactly the archived (canceled) ones.
    let mut q = ListOrders { user_id: "carol".into(), status: Some(OrderStatus::Canceled), limit: 50, before: None };
    let mut canceled = 0;
    loop {
        let page = e.list_orders(&q).expect("page");
        canceled += page.orders.len();
        match page.next_before {
            Some(b) => q.before = Some(b),
            None => break,
        }
    }
    assert_eq!(canceled, 4_000);
    drop(e);
    db.close().expect("close");
}

/// Issue 10, item 8: orders minted while the clock was an hour ahead, then archived (so not in
/// the recovered state). After a restart with the clock corrected, new ids still continue above
/// the archived ones, at once (the shard does not wait an hour for the clock).
#[test]
fn ids_stay_above_archived_orders_minted_while_the_clock_was_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0 + 3_600_000));
    let db = open(dir.path(), &clock);
    let e = db.engine().clone();
    let spec = SkuSpec {
        sku_id: "A".into(),
        name: "A".into(),
        price: "1.00".parse().expect("decimal"),
        initial_stock: 100,
        rules: SaleRules::default(),
    };
    e.create_sku(spec).wait().expect("sku");
    let mut ahead = Vec::new();
    for i in 0..4 {
        let o = e.create_order(CreateOrder::new(&format!("u{i}"), &[("A", 1)], "k")).wait().expect("create");
        e.cancel_order(o.order_id, Initiator::User, TransitionOptions::default()).wait().expect("cancel");
        ahead.push(o.order_id);
    }
    clock.advance_ms(60_001);
    e.settle();
    assert_eq!(e.order_count(), 0, "all archived");
    drop(e);
    db.close().expect("close");

    clock.set_ms(T0); // the clock was corrected: an hour back
    let db = open(dir.path(), &clock);
    let e = db.engine().clone();
    let highest = *ahead.iter().max().expect("ids");
    for i in 0..4 {
        let o = e.create_order(CreateOrder::new(&format!("u{i}"), &[("A", 1)], "k2")).wait().expect("create");
        assert!(o.order_id > highest, "new id {:?} not above archived {highest:?}", o.order_id);
    }
    drop(e);
    db.close().expect("close");
}
