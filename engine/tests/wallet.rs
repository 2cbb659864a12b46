//! Wallets and wallet payments by TCC (issue 14), through the public [`Engine`] API.
//!
//! * Credits and debits: idempotent by transfer id, conflicts, sticky refusals, reads, paging.
//! * `pay_with_wallet`: mixed legs with conversion; the order paid, its stock sold and the legs
//!   settled together; every error path answers its typed error and leaves balances, frozen
//!   amounts and stock exactly as they were; retries; a confirmed refund credits back once.
//! * A race: 1,000 users pay while their deadlines expire and some cancel. Afterwards every
//!   order is paid with its money settled or canceled with its money back, to the cent.

use std::sync::Arc;

use surge_engine::wallet::{ListWalletEntries, WalletPayment, WalletView};
use surge_engine::{
    CreateOrder, Decimal, Engine, EngineConfig, Initiator, ManualClock, Order, OrderEventKind, OrderStatus, SaleRules,
    SkuSpec, TransitionOptions,
};

/// 2027-01-15T08:00:00Z: any fixed instant after the snowflake epoch.
const T0: i64 = 1_800_000_000_000;

fn dec(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn start(cfg: EngineConfig) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::builder(cfg).clock(clock.clone()).start().expect("engine starts");
    let spec = SkuSpec {
        sku_id: "A".into(),
        name: "Item A".into(),
        price: dec("10.00"),
        initial_stock: 100_000,
        rules: SaleRules::default(),
    };
    engine.create_sku(spec).wait().expect("sku");
    (engine, clock)
}

fn engine() -> (Engine, Arc<ManualClock>) {
    start(EngineConfig { shard_count: 2, ..Default::default() })
}

fn order(engine: &Engine, user: &str, key: &str) -> Arc<Order> {
    engine.create_order(CreateOrder::new(user, &[("A", 1)], key)).wait().expect("order")
}

fn balance(view: &WalletView, asset: &str) -> (Decimal, Decimal) {
    let a = view.accounts.iter().find(|a| a.asset.as_str() == asset).expect("asset listed");
    (a.balance, a.frozen)
}

fn payment(order_id: surge_engine::OrderId, legs: &[(&str, &str)], transfer_id: &str) -> WalletPayment {
    WalletPayment {
        order_id,
        legs: legs.iter().map(|(a, m)| (a.to_string(), dec(m))).collect(),
        transfer_id: transfer_id.into(),
        expected_version: None,
        owner: None,
    }
}

/// (balance, frozen) of one account.
type Amounts = (Decimal, Decimal);

/// Balances of both assets, and the SKU's (available, reserved, sold).
fn ledger_state(engine: &Engine, user: &str) -> (Amounts, Amounts, (u64, u64, u64)) {
    let w = engine.get_wallet(user).wait().expect("wallet");
    let s = engine.get_sku("A").expect("sku");
    (balance(&w, "CNY"), balance(&w, "POINTS"), (s.available, s.reserved, s.sold))
}

#[test]
fn credits_and_debits_are_idempotent_and_refusals_sticky() {
    let (e, _) = engine();
    let r = e.wallet_credit("alice", "CNY", dec("40.10"), "t1").wait().unwrap();
    assert_eq!(r.account.balance.to_string(), "40.10");
    assert_eq!(e.wallet_credit("alice", "CNY", dec("40.10"), "t1").wait().unwrap(), r, "retry: same receipt");
    let conflict = e.wallet_credit("alice", "CNY", dec("40.11"), "t1").wait().unwrap_err();
    assert_eq!(conflict.code(), "idempotency_conflict");
    let short = e.wallet_debit("alice", "CNY", dec("50"), "d1").wait().unwrap_err();
    assert_eq!(short.code(), "insufficient_funds");
    e.wallet_credit("alice", "CNY", dec("100"), "t2").wait().unwrap();
    let again = e.wallet_debit("alice", "CNY", dec("50"), "d1").wait().unwrap_err();
    assert_eq!(again.code(), "insufficient_funds", "a refused transfer id stays refused");
    let d = e.wallet_debit("alice", "CNY", dec("0.10"), "d2").wait().unwrap();
    assert_eq!(d.account.balance, dec("140.00"));
    for bad in ["0", "-1", "0.001"] {
        assert_eq!(e.wallet_credit("alice", "CNY", dec(bad), "x").wait().unwrap_err().code(), "invalid_request");
    }
    assert_eq!(e.wallet_credit("alice", "EUR", dec("1"), "x").wait().unwrap_err().code(), "unknown_asset");
    assert_eq!(e.wallet_credit("alice", "POINTS", dec("1.5"), "x").wait().unwrap_err().code(), "invalid_request");
    let w = e.get_wallet("alice").wait().unwrap();
    assert_eq!(balance(&w, "CNY"), (dec("140.00"), dec("0")));
    assert_eq!(balance(&w, "POINTS"), (dec("0"), dec("0")), "untouched assets are listed as zero");

    let q = |before| ListWalletEntries { user_id: "alice".into(), asset: None, before, limit: 2 };
    let p1 = e.list_wallet_entries(&q(None)).wait().unwrap();
    let amounts: Vec<String> = p1.entries.iter().map(|x| x.amount.to_string()).collect();
    assert_eq!(amounts, ["-0.10", "100.00"], "newest first");
    let p2 = e.list_wallet_entries(&q(p1.next_before)).wait().unwrap();
    assert_eq!(p2.entries.len(), 1);
    assert_eq!(p2.entries[0].amount.to_string(), "40.10");
    assert_eq!(p2.next_before, None, "last page");
}

#[test]
fn a_wallet_payment_with_mixed_legs_pays_the_order_and_settles() {
    let (e, _) = engine();
    e.wallet_credit("bob", "CNY", dec("20.00"), "t1").wait().unwrap();
    e.wallet_credit("bob", "POINTS", dec("500"), "t2").wait().unwrap();
    let o = order(&e, "bob", "k1");
    // 7.50 CNY + 250 POINTS (2.50 at 100 points per 1.00) = 10.00.
    let pay = payment(o.order_id, &[("CNY", "7.50"), ("POINTS", "250")], "pay-1");
    let paid = e.pay_with_wallet(&pay).wait().unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(paid.payment.as_ref().map(|p| p.amount), Some(dec("10.00")));
    let (cny, points, sku) = ledger_state(&e, "bob");
    assert_eq!(cny, (dec("12.50"), dec("0")), "settled, nothing left frozen");
    assert_eq!(points, (dec("250"), dec("0")));
    assert_eq!(sku.2, 1, "the reservation was confirmed: one unit sold");

    let retry = e.pay_with_wallet(&pay).wait().unwrap();
    assert_eq!(retry.order_id, paid.order_id, "a retry answers the order, paying nothing twice");
    assert_eq!(ledger_state(&e, "bob").0, cny);
    let other = payment(o.order_id, &[("CNY", "10.00")], "pay-1");
    assert_eq!(e.pay_with_wallet(&other).wait().unwrap_err().code(), "idempotency_conflict");
    let second = payment(o.order_id, &[("CNY", "10.00")], "pay-2");
    assert_eq!(e.pay_with_wallet(&second).wait().unwrap_err().code(), "already_paid");
    assert_eq!(ledger_state(&e, "bob").0, cny, "a refused payment moves nothing");

    // Refund: request, confirm: the legs come back once.
    let opts = TransitionOptions::default;
    e.transition(o.order_id, OrderEventKind::RequestRefund, Initiator::User, opts()).wait().unwrap();
    e.transition(o.order_id, OrderEventKind::ConfirmRefund, Initiator::Admin, opts()).wait().unwrap();
    let (cny, points, _) = ledger_state(&e, "bob");
    assert_eq!((cny.0, points.0), (dec("20.00"), dec("500")), "refunded to the cent");
    let kinds: Vec<String> = e
        .list_wallet_entries(&ListWalletEntries {
            user_id: "bob".into(),
            asset: Some("CNY".into()),
            before: None,
            limit: 10,
        })
        .wait()
        .unwrap()
        .entries
        .iter()
        .map(|x| format!("{:?}", x.kind))
        .collect();
    assert_eq!(kinds, ["Refund", "Settle", "Freeze", "Credit"]);
    e.settle();
    assert!(e.audit().is_healthy(), "{:?}", e.audit().violations);
}

#[test]
fn every_refused_payment_leaves_money_and_stock_as_they_were() {
    let (e, clock) = engine();
    e.wallet_credit("carol", "CNY", dec("15.00"), "t1").wait().unwrap();
    e.wallet_credit("carol", "POINTS", dec("100"), "t2").wait().unwrap();
    let o = order(&e, "carol", "k1");
    let before = ledger_state(&e, "carol");
    let cases: Vec<(WalletPayment, &str)> = vec![
        (payment(o.order_id, &[("CNY", "9.99")], "p1"), "amount_mismatch"),
        (payment(o.order_id, &[("CNY", "5.00"), ("POINTS", "500")], "p2"), "insufficient_funds"),
        (payment(o.order_id, &[("EUR", "10.00")], "p3"), "unknown_asset"),
        (
            WalletPayment { expected_version: Some(9), ..payment(o.order_id, &[("CNY", "10.00")], "p4") },
            "version_conflict",
        ),
        (
            WalletPayment { owner: Some("mallory".into()), ..payment(o.order_id, &[("CNY", "10.00")], "p5") },
            "unknown_order",
        ),
        (payment(o.order_id, &[("CNY", "10.00"), ("CNY", "0.01")], "p6"), "invalid_request"),
    ];
    for (p, code) in &cases {
        assert_eq!(e.pay_with_wallet(p).wait().unwrap_err().code(), *code, "{p:?}");
        assert_eq!(ledger_state(&e, "carol"), before, "{code} moved nothing");
    }
    // The sticky ones stay refused even once they would pass: p1 named a wrong amount, so a
    // retry of p1 with the same legs is refused again; p2 after a top-up too.
    e.wallet_credit("carol", "POINTS", dec("1000"), "t3").wait().unwrap();
    assert_eq!(e.pay_with_wallet(&cases[1].0).wait().unwrap_err().code(), "insufficient_funds");
    // Not payable: the deadline passed (the order is canceled first), then nothing moves.
    clock.advance_ms(EngineConfig::default().payment_timeout_ms as i64 + 1);
    let late = payment(o.order_id, &[("CNY", "10.00")], "p7");
    assert_eq!(e.pay_with_wallet(&late).wait().unwrap_err().code(), "order_not_payable");
    let (cny, _, sku) = ledger_state(&e, "carol");
    assert_eq!(cny, before.0, "no money taken for a canceled order");
    assert_eq!((sku.1, sku.2), (0, 0), "its reservation was released, nothing sold");
}

/// 1,000 users, each with 10.00 CNY, each with an order for 10.00. Half the deadlines pass
/// while payments arrive, some users cancel first, some pay twice. Afterwards each order is
/// either paid with 10.00 settled, or canceled with the 10.00 back: nothing in between.
#[test]
fn racing_payments_deadlines_and_cancels_settle_or_refund_to_the_cent() {
    let cfg = EngineConfig { shard_count: 4, payment_timeout_ms: 60_000, ..Default::default() };
    let (e, clock) = start(cfg);
    let users: Vec<String> = (0..1_000).map(|i| format!("u{i}")).collect();
    let mut orders = Vec::new();
    for (i, u) in users.iter().enumerate() {
        e.wallet_credit(u, "CNY", dec("10.00"), "topup").wait().unwrap();
        orders.push(order(&e, u, "k"));
        if i == 499 {
            clock.advance_ms(30_000); // the second half's deadlines come 30 s later
        }
    }
    clock.advance_ms(30_001); // the first half's deadlines have passed
    let pendings: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| {
            if i % 7 == 0 {
                // Not waited for: the cancel races the payment behind it.
                drop(e.cancel_order(o.order_id, Initiator::User, TransitionOptions::default()));
            }
            let p = e.pay_with_wallet(&payment(o.order_id, &[("CNY", "10.00")], "pay"));
            let again = (i % 5 == 0).then(|| e.pay_with_wallet(&payment(o.order_id, &[("CNY", "10.00")], "pay")));
            (p, again)
        })
        .collect();
    for (p, again) in pendings {
        let first = p.wait().map(|o| o.order_id).map_err(|e| e.code());
        if let Some(a) = again {
            assert_eq!(a.wait().map(|o| o.order_id).map_err(|e| e.code()), first, "a retry answers as the first");
        }
    }
    let mut paid = 0;
    for (u, o) in users.iter().zip(&orders) {
        let now = e.get_order(o.order_id).expect("order");
        let (bal, frozen) = balance(&e.get_wallet(u).wait().unwrap(), "CNY");
        assert_eq!(frozen, dec("0"), "{u}: nothing left frozen");
        match now.status {
            OrderStatus::Paid => {
                paid += 1;
                assert_eq!(bal, dec("0.00"), "{u}: paid, so 10.00 settled");
            }
            OrderStatus::Canceled => assert_eq!(bal, dec("10.00"), "{u}: canceled, so all money back"),
            s => panic!("{u}: order in {s}"),
        }
    }
    let sku = e.get_sku("A").unwrap();
    assert_eq!(sku.sold, paid, "sold units are exactly the paid orders");
    assert_eq!(sku.reserved, 0);
    assert!(paid > 300 && paid < 500, "{paid}: the live second half pays, minus its cancels");
    e.settle();
    let audit = e.audit();
    assert!(audit.is_healthy(), "{:?}", audit.violations);
    assert_eq!(audit.wallet_accounts, 1_000);
}

/// A state with two tries left open, as a crash between try and confirm would leave them: one
/// whose order took the payment, one whose order did not. The state is real (an engine paid
/// bob's order with `pay-a` and left carol's unpaid), with its wallets rebuilt as of the tries.
fn state_with_open_tries() -> (surge_engine::EngineState, surge_engine::OrderId, surge_engine::OrderId) {
    use surge_engine::wallet::{AssetCode, Leg, WalletBook, WalletEvent};
    let (e, _) = engine();
    e.wallet_credit("bob", "CNY", dec("20.00"), "t").wait().unwrap();
    let (a, b) = (order(&e, "bob", "k"), order(&e, "carol", "k"));
    e.pay_with_wallet(&payment(a.order_id, &[("CNY", "10.00")], "pay-a")).wait().unwrap();
    e.settle();
    let (mut state, _) = e.snapshot().unwrap();
    let cny = AssetCode::parse("CNY").unwrap();
    let mut book = WalletBook::default();
    for (user, transfer_id, order_id) in [("bob", "pay-a", a.order_id), ("carol", "pay-b", b.order_id)] {
        let user_id: surge_engine::UserId = Arc::from(user);
        let credit = WalletEvent::Credited {
            user_id: user_id.clone(),
            transfer_id: "t".into(),
            asset: cny.clone(),
            amount_minor: 2_000,
            at_ms: T0,
        };
        let legs = vec![Leg { asset: cny.clone(), amount_minor: 1_000 }];
        let frozen = WalletEvent::Frozen { user_id, transfer_id: transfer_id.into(), order_id, legs, at_ms: T0 };
        book.apply(&credit).unwrap();
        book.apply(&frozen).unwrap();
    }
    state.wallets = book;
    (state, a.order_id, b.order_id)
}

#[test]
fn reconcile_settles_a_paid_try_and_cancels_an_unpaid_one() {
    let (mut state, _, _) = state_with_open_tries();
    let fixes = state.reconcile();
    let names: Vec<String> = fixes.iter().map(|f| format!("{f:?}")).filter(|f| f.contains("Wallet")).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let bob = &state.wallets.users["bob"].accounts.values().next().unwrap().clone();
    assert_eq!((bob.balance_minor, bob.frozen_minor, bob.settled_minor), (1_000, 0, 1_000), "paid: settled");
    let carol = &state.wallets.users["carol"].accounts.values().next().unwrap().clone();
    assert_eq!((carol.balance_minor, carol.frozen_minor), (2_000, 0), "unpaid: canceled, all back");
    state.wallets.check().unwrap();
    assert!(state.reconcile().is_empty(), "nothing left to finish");
}

#[test]
fn a_try_left_open_is_closed_after_tcc_try_timeout_ms() {
    let (state, _, carol_order) = state_with_open_tries();
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = EngineConfig { shard_count: 2, tcc_try_timeout_ms: 5_000, tick_interval_ms: 1, ..Default::default() };
    let e = Engine::builder(cfg).clock(clock.clone()).state(state).start().unwrap();
    let frozen = |u: &str| balance(&e.get_wallet(u).wait().unwrap(), "CNY").1;
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(frozen("carol"), dec("10.00"), "still within the timeout");
    clock.advance_ms(5_000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while (frozen("bob"), frozen("carol")) != (dec("0"), dec("0")) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (bob, carol) = (e.get_wallet("bob").wait().unwrap(), e.get_wallet("carol").wait().unwrap());
    assert_eq!(balance(&bob, "CNY"), (dec("10.00"), dec("0")), "bob's order took the payment: settled");
    assert_eq!(balance(&carol, "CNY"), (dec("20.00"), dec("0")), "carol's did not: canceled");
    // A retry of the canceled payment does not claim the order was paid, and the id stays spent.
    let retry = e.pay_with_wallet(&payment(carol_order, &[("CNY", "10.00")], "pay-b")).wait();
    assert_eq!(retry.as_ref().map_err(|e| e.code()), Err("invalid_request"), "{retry:?}");
    assert_eq!(e.get_order(carol_order).unwrap().status, OrderStatus::PendingPayment);
    e.settle();
    assert!(e.audit().is_healthy(), "{:?}", e.audit().violations);
}
