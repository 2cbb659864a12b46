//! Flash-sale contention: many buyers, one hot SKU, never oversell; back-pressure is an explicit
//! `overloaded`, never a silent drop.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use surge::engine::{
    CreateOrder, Decimal, Engine, EngineConfig, EngineError, OrderStatus, Pending, SaleRules, SkuSpec,
};

const HOT: &str = "hot-phone";

fn hot_sku(engine: &Engine, stock: u64) {
    engine
        .create_sku(SkuSpec {
            sku_id: HOT.into(),
            name: "Phone, flash price".into(),
            price: Decimal::new(99_900, 2),
            initial_stock: stock,
            rules: SaleRules { per_user_limit: Some(1), ..Default::default() },
        })
        .wait()
        .expect("create sku");
}

#[test]
fn ten_thousand_buyers_race_for_one_hundred_units() {
    const THREADS: usize = 50;
    const BUYERS: usize = 10_000;
    const STOCK: u64 = 100;
    // A mailbox far larger than the number of requests: `overloaded` cannot happen, so the
    // counts below are exact.
    let engine = Engine::in_memory(EngineConfig { shard_count: 2, mailbox_capacity: 1 << 16, ..Default::default() })
        .expect("engine");
    hot_sku(&engine, STOCK);

    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            let start = start.clone();
            thread::spawn(move || {
                let mut won = Vec::new();
                let mut sold_out = 0usize;
                let mut other = Vec::new();
                start.wait();
                for i in (t..BUYERS).step_by(THREADS) {
                    let req = CreateOrder::new(&format!("buyer-{i}"), &[(HOT, 1)], &format!("checkout-{i}"));
                    match engine.create_order(req).wait() {
                        Ok(order) => won.push(order),
                        Err(EngineError::SoldOut { sku_id }) => {
                            assert_eq!(sku_id, HOT);
                            sold_out += 1;
                        }
                        Err(e) => other.push(e),
                    }
                }
                (won, sold_out, other)
            })
        })
        .collect();

    let mut orders = Vec::new();
    let mut sold_out = 0;
    let mut other = Vec::new();
    for h in handles {
        let (w, s, o) = h.join().expect("buyer thread");
        orders.extend(w);
        sold_out += s;
        other.extend(o);
    }
    assert!(other.is_empty(), "unexpected errors: {other:?}");
    assert_eq!(orders.len(), STOCK as usize, "exactly one order per unit");
    assert_eq!(sold_out, BUYERS - STOCK as usize, "everyone else is told sold_out");

    let ids: HashSet<_> = orders.iter().map(|o| o.order_id).collect();
    assert_eq!(ids.len(), orders.len(), "order ids are unique");
    let users: HashSet<_> = orders.iter().map(|o| o.user_id.clone()).collect();
    assert_eq!(users.len(), orders.len(), "one order per winning buyer");
    for o in &orders {
        assert_eq!(o.status, OrderStatus::PendingPayment);
        assert_eq!(o.items.len(), 1);
        assert_eq!(o.items[0].qty, 1);
        assert_eq!(o.total, Decimal::new(99_900, 2));
        assert_eq!(engine.get_order(o.order_id).as_ref(), Ok(o));
    }

    engine.settle();
    let report = engine.audit();
    assert!(report.is_healthy(), "audit: {:#?}", report.violations);
    assert_eq!(report.orders, STOCK as usize);
    assert_eq!(report.holdings, STOCK as usize);
    assert_eq!(engine.order_count(), STOCK as usize);
    let sku = engine.get_sku(HOT).expect("sku");
    assert_eq!(sku.available, 0, "available");
    assert_eq!(sku.reserved, STOCK, "reserved");
    assert_eq!(sku.sold, 0, "sold");
    assert_eq!(sku.stocked_total, STOCK, "stocked_total");
    assert_eq!(report.skus, vec![sku]);
    assert!(report.user_units.values().all(|&u| u == 1));
    assert_eq!(report.user_units.len(), STOCK as usize);

    // Paying every winner moves every unit to sold; nothing is left to sell.
    for o in &orders {
        engine.pay(o.order_id, &format!("psp-{}", o.order_id), o.total, Default::default()).wait().expect("pay");
    }
    engine.settle();
    let sku = engine.get_sku(HOT).expect("sku");
    assert_eq!((sku.available, sku.reserved, sku.sold), (0, 0, STOCK));
    let late = engine.create_order(CreateOrder::new("late", &[(HOT, 1)], "late-1")).wait().unwrap_err();
    assert_eq!(late.code(), "sold_out");
    assert!(engine.audit().is_healthy());
}

#[test]
fn multi_unit_requests_never_split_the_last_unit() {
    // 2-unit requests against an odd stock: the last unit can only produce
    // insufficient_stock, never an oversell or a partial grant.
    const THREADS: usize = 20;
    const BUYERS: usize = 2_000;
    const STOCK: u64 = 101;
    let engine = Engine::in_memory(EngineConfig { shard_count: 2, mailbox_capacity: 1 << 16, ..Default::default() })
        .expect("engine");
    engine
        .create_sku(SkuSpec {
            sku_id: HOT.into(),
            name: "Phone".into(),
            price: Decimal::new(10, 0),
            initial_stock: STOCK,
            rules: SaleRules::default(),
        })
        .wait()
        .unwrap();
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                (t..BUYERS)
                    .step_by(THREADS)
                    .map(|i| {
                        let req = CreateOrder::new(&format!("b{i}"), &[(HOT, 2)], &format!("k{i}"));
                        engine.create_order(req).wait()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().flat_map(|h| h.join().expect("thread")).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let mut codes = std::collections::BTreeMap::new();
    for r in &results {
        if let Err(e) = r {
            *codes.entry(e.code()).or_insert(0usize) += 1;
            if let EngineError::InsufficientStock { sku_id, available } = e {
                assert_eq!(sku_id, HOT);
                assert_eq!(*available, 1, "only the odd unit can be short");
            }
        }
    }
    assert_eq!(ok, 50, "101 units / 2 per order");
    // Available never reaches 0 (it ends at 1), so every refusal is insufficient_stock.
    assert_eq!(codes.len(), 1, "{codes:?}");
    assert_eq!(codes.get("insufficient_stock"), Some(&(BUYERS - 50)), "{codes:?}");
    engine.settle();
    let report = engine.audit();
    assert!(report.is_healthy(), "{:#?}", report.violations);
    let sku = engine.get_sku(HOT).unwrap();
    assert_eq!((sku.available, sku.reserved, sku.sold, sku.stocked_total), (1, 100, 0, STOCK));
}

#[test]
fn a_full_mailbox_answers_overloaded_and_never_drops_a_request() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2_000;
    let engine =
        Engine::in_memory(EngineConfig { shard_count: 1, mailbox_capacity: 1, ..Default::default() }).expect("engine");
    // Stock for everyone: a request that is executed must succeed, so every answer is either
    // an order or `overloaded`.
    hot_sku(&engine, (THREADS * PER_THREAD) as u64);

    let mut round = 0;
    let mut total_overloaded = 0;
    let mut total_ok = 0;
    let mut retried = HashSet::new();
    // Submitting without waiting overflows a 1-slot mailbox almost at once; allow a few rounds
    // in case a round happens to be drained as fast as it is filled.
    while total_overloaded == 0 && round < 20 {
        let start = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let engine = engine.clone();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    // Fire everything first, wait afterwards.
                    let pending: Vec<(String, Pending<_>)> = (0..PER_THREAD)
                        .map(|i| {
                            let user = format!("r{round}-t{t}-u{i}");
                            let req = CreateOrder::new(&user, &[(HOT, 1)], "k");
                            (user, engine.create_order(req))
                        })
                        .collect();
                    pending.into_iter().map(|(user, p)| (user, p.wait())).collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (user, result) in h.join().expect("thread") {
                match result {
                    Ok(order) => {
                        assert_eq!(&*order.user_id, user.as_str());
                        total_ok += 1;
                    }
                    Err(EngineError::Overloaded) => {
                        total_overloaded += 1;
                        retried.insert(user);
                    }
                    // `shutting_down` here would be a reply dropped on the floor.
                    Err(e) => panic!("request of {user} answered {e:?}"),
                }
            }
        }
        round += 1;
    }
    assert!(total_overloaded > 0, "a 1-slot mailbox never overflowed in {round} rounds");
    assert_eq!(total_ok + total_overloaded, round * THREADS * PER_THREAD);

    // Every executed request is an order and holds its unit; no overloaded one left a trace.
    engine.settle();
    let report = engine.audit();
    assert!(report.is_healthy(), "{:#?}", report.violations);
    assert_eq!(engine.order_count(), total_ok);
    let sku = engine.get_sku(HOT).unwrap();
    assert_eq!(sku.reserved as usize, total_ok);
    for user in retried.iter().take(50) {
        assert_eq!(
            engine
                .list_orders(&surge::engine::ListOrders {
                    user_id: user.clone(),
                    status: None,
                    limit: 10,
                    before: None
                })
                .unwrap()
                .orders
                .len(),
            0,
            "{user}: an overloaded request created an order"
        );
    }

    // An overloaded request was never executed, so its key is not recorded: a retry runs it.
    for user in retried.iter().take(200) {
        let order = loop {
            match engine.create_order(CreateOrder::new(user, &[(HOT, 1)], "k")).wait() {
                Err(EngineError::Overloaded) => thread::yield_now(),
                other => break other.expect("retry after overloaded"),
            }
        };
        assert_eq!(order.idempotency_key.as_ref(), "k");
    }
    engine.settle();
    let report = engine.audit();
    assert!(report.is_healthy(), "{:#?}", report.violations);
    let retries = retried.len().min(200);
    assert_eq!(engine.order_count(), total_ok + retries);
    assert_eq!(engine.get_sku(HOT).unwrap().reserved as usize, total_ok + retries);
}

fn messages_handled(engine: &Engine) -> u64 {
    engine.stats().shards.iter().map(|s| s.messages_handled).sum()
}

/// The cheap no (issue 12): once a SKU is sold out, a buyer with no order of their own is
/// answered `sold_out` on the caller's thread, without a message to any shard; a buyer who
/// has an order (the retry of the request that took the last unit) still goes through their
/// shard and gets that order back, one by one and batched alike.
#[test]
fn sold_out_answers_skip_the_shards_except_for_retries() {
    let engine = Engine::in_memory(EngineConfig { shard_count: 2, ..Default::default() }).expect("engine");
    hot_sku(&engine, 1);
    let winner = CreateOrder::new("winner", &[(HOT, 1)], "w-1");
    let order = engine.create_order(winner.clone()).wait().expect("the last unit");
    engine.settle();
    let before = messages_handled(&engine);
    for i in 0..1_000 {
        let err = engine.create_order(CreateOrder::new(&format!("late-{i}"), &[(HOT, 1)], "k")).wait().unwrap_err();
        assert_eq!(err.code(), "sold_out");
    }
    let batch: Vec<_> = (0..1_000).map(|i| CreateOrder::new(&format!("later-{i}"), &[(HOT, 1)], "k")).collect();
    for p in engine.create_orders(batch) {
        assert_eq!(p.wait().unwrap_err().code(), "sold_out");
    }
    engine.settle();
    // A few messages at most: users whose hash shares the winner's filter bit.
    let hops = messages_handled(&engine) - before;
    assert!(hops < 10, "{hops} sold-out answers went through a shard");
    assert_eq!(engine.create_order(winner.clone()).wait().expect("retry").order_id, order.order_id);
    let again = engine.create_orders(vec![winner]).remove(0).wait().expect("batched retry");
    assert_eq!(again.order_id, order.order_id);
    assert!(messages_handled(&engine) > before + hops, "the retries went through the winner's shard");
}
