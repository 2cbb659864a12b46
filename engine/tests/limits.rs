//! Issue 10, item 3: input never reaches a panic or a wrap. Prices, stock and configuration are
//! bounded at the boundary (typed errors), and money and counters use checked arithmetic where
//! they are computed, so even state recovered from older data that breaks today's bounds gets
//! a typed error (and a saga that would overflow compensates like any rejection).

use std::sync::Arc;

use surge_engine::{
    CreateOrder, Decimal, Engine, EngineConfig, EngineState, ManualClock, SaleRules, SkuEvent, SkuSpec, SkuState,
    SkuUpdate, PRICE_MAX, STOCK_MAX,
};

const T0: i64 = 1_800_000_000_000;

fn engine(cfg: EngineConfig, state: EngineState) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::builder(cfg).clock(clock.clone()).state(state).start().expect("engine");
    (e, clock)
}

fn spec(id: &str, price: Decimal, stock: u64) -> SkuSpec {
    SkuSpec { sku_id: id.into(), name: id.into(), price, initial_stock: stock, rules: SaleRules::default() }
}

#[test]
fn prices_are_bounded_in_size_and_scale() {
    let (e, _) = engine(EngineConfig { shard_count: 2, ..Default::default() }, EngineState::default());
    assert_eq!(PRICE_MAX, Decimal::new(1_000_000_000_000, 0));
    for bad in [PRICE_MAX + Decimal::new(1, 4), Decimal::MAX, Decimal::new(1, 5), Decimal::new(-1, 0)] {
        let err = e.create_sku(spec("x", bad, 1)).wait().unwrap_err();
        assert_eq!(err.code(), "invalid_request", "price {bad}");
    }
    e.create_sku(spec("max", PRICE_MAX, 1)).wait().expect("PRICE_MAX itself is fine");
    e.create_sku(spec("fine", Decimal::new(12_345, 4), 1)).wait().expect("4 decimal places are fine");
    let update = |p| SkuUpdate { price: Some(p), ..Default::default() };
    assert_eq!(e.update_sku("fine", update(Decimal::MAX)).wait().unwrap_err().code(), "invalid_request");
    assert_eq!(e.update_sku("fine", update(Decimal::new(1, 9))).wait().unwrap_err().code(), "invalid_request");
    assert_eq!(e.get_sku("fine").expect("fine").price, Decimal::new(12_345, 4), "nothing changed");
}

#[test]
fn stock_is_bounded_and_adjustments_cannot_overflow() {
    let (e, _) = engine(EngineConfig { shard_count: 2, ..Default::default() }, EngineState::default());
    for bad in [STOCK_MAX + 1, u64::MAX] {
        assert_eq!(e.create_sku(spec("x", Decimal::ONE, bad)).wait().unwrap_err().code(), "invalid_request");
    }
    e.create_sku(spec("big", Decimal::ONE, STOCK_MAX)).wait().expect("STOCK_MAX itself is fine");
    assert_eq!(e.adjust_stock("big", "adj-big-1", 1, "more").wait().unwrap_err().code(), "invalid_adjustment");
    e.create_sku(spec("small", Decimal::ONE, 1)).wait().expect("small");
    for delta in [i64::MAX, STOCK_MAX as i64] {
        assert_eq!(
            e.adjust_stock("small", &format!("adj-{delta}"), delta, "more").wait().unwrap_err().code(),
            "invalid_adjustment"
        );
    }
    assert_eq!(e.adjust_stock("small", "adj-min", i64::MIN, "less").wait().unwrap_err().code(), "invalid_adjustment");
    let v = e.adjust_stock("small", "adj-fill", STOCK_MAX as i64 - 1, "fill up").wait().expect("up to STOCK_MAX");
    assert_eq!(v.stocked_total, STOCK_MAX);
    e.settle();
    assert!(e.audit().is_healthy());
}

/// A SKU recovered from data written before prices were bounded: its price times the quantity
/// overflows `Decimal`. The order is refused with `invalid_request`, and the units the saga had
/// already reserved (on both SKUs) are released. Before the fix the multiplication panicked in
/// the shard thread, which ends the whole process (fail-stop).
#[test]
fn a_total_that_would_overflow_is_refused_and_compensated() {
    let mut state = EngineState::default();
    for (id, price) in [("cheap", Decimal::ONE), ("huge", Decimal::MAX / Decimal::TWO)] {
        let created = SkuEvent::Created {
            sku_id: Arc::from(id),
            name: Arc::from(id),
            price,
            initial_stock: 10,
            rules: SaleRules::default(),
        };
        state.skus.insert(Arc::from(id), SkuState::from_created(&created).expect("sku"));
    }
    let (e, clock) = engine(EngineConfig { shard_count: 2, ..Default::default() }, state);
    clock.advance_ms(1);
    let err = e.create_order(CreateOrder::new("uma", &[("cheap", 1), ("huge", 3)], "k1")).wait().unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    assert!(err.to_string().contains("overflow"), "{err}");
    e.settle();
    for id in ["cheap", "huge"] {
        let v = e.get_sku(id).expect(id);
        assert_eq!((v.available, v.reserved, v.sold), (10, 0, 0), "{id}: compensated");
    }
    let report = e.audit();
    assert!(report.is_healthy() && report.holdings == 0, "{:?}", report.violations);
    // The same key runs again (a rejection is not recorded), and a total that fits is fine.
    let ok = e.create_order(CreateOrder::new("uma", &[("huge", 1)], "k1")).wait().expect("fits");
    assert_eq!(ok.total, Decimal::MAX / Decimal::TWO);
}

/// The per-user unit count is a `u32`, kept while the SKU has a `per_user_limit` (also a
/// `u32`): a user about to hold more than `u32::MAX` units of one SKU is refused by the limit's
/// check (done in u64), never by a wrapped count (which would lift their limit). Before the fix
/// the addition overflowed in the shard thread (a panic in debug builds, a wrap in release
/// builds). Without a limit no count is kept, so there is nothing to wrap.
#[test]
fn a_users_unit_count_cannot_wrap() {
    let cfg = EngineConfig { shard_count: 1, item_qty_max: 1_000_000, ..Default::default() };
    let (e, clock) = engine(cfg, EngineState::default());
    let mut bolt = spec("bolt", Decimal::ONE, STOCK_MAX);
    bolt.rules.per_user_limit = Some(u32::MAX);
    e.create_sku(bolt).wait().expect("sku");
    let fits = u64::from(u32::MAX) / 1_000_000; // 4 294 orders of a million units
    let mut placed = 0;
    while placed < fits {
        clock.advance_ms(1);
        let burst = (fits - placed).min(1_000);
        let pending: Vec<_> = (0..burst)
            .map(|i| e.create_order(CreateOrder::new("vic", &[("bolt", 1_000_000)], &format!("k{}", placed + i))))
            .collect();
        for p in pending {
            p.wait().expect("within u32");
        }
        placed += burst;
    }
    clock.advance_ms(1);
    let err = e.create_order(CreateOrder::new("vic", &[("bolt", 1_000_000)], "one-too-many")).wait().unwrap_err();
    assert_eq!(err.code(), "purchase_limit_exceeded");
    e.settle();
    let report = e.audit();
    assert!(report.is_healthy(), "{:?}", report.violations);
    assert_eq!(report.user_units.get(&(Arc::from("bolt"), Arc::from("vic"))), Some(&(fits as u32 * 1_000_000)));
}

/// Maps sized for the expected orders behave like grown ones.
#[test]
fn a_presized_engine_takes_orders_as_usual() {
    let cfg = EngineConfig { shard_count: 2, live_orders_expected: 10_000, ..Default::default() };
    let (e, _) = engine(cfg, EngineState::default());
    e.create_sku(spec("pre", Decimal::ONE, 100)).wait().expect("sku");
    for i in 0..100 {
        e.create_order(CreateOrder::new(&format!("u{i}"), &[("pre", 1)], "k")).wait().expect("order");
    }
    assert_eq!(e.create_order(CreateOrder::new("late", &[("pre", 1)], "k")).wait().unwrap_err().code(), "sold_out");
    e.settle();
    assert!(e.audit().is_healthy());
}

#[test]
fn a_config_that_does_not_fit_is_refused_at_start() {
    let bad = [
        EngineConfig { mailbox_capacity: usize::MAX, ..Default::default() },
        EngineConfig { payment_timeout_ms: u64::MAX, ..Default::default() },
        EngineConfig { shard_count: 5_000, ..Default::default() },
        EngineConfig { node_id: 1_024, ..Default::default() },
        EngineConfig { live_orders_expected: (1 << 32) + 1, ..Default::default() },
    ];
    for cfg in bad {
        let err = Engine::in_memory(cfg.clone()).err().unwrap_or_else(|| panic!("{cfg:?} was accepted"));
        assert_eq!(err.code(), "invalid_config", "{cfg:?}");
    }
}
