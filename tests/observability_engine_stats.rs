//! `Engine::stats()`: per-shard messages handled and mailbox depth, orders created, and order
//! transitions by (from, to), read without stopping the shards.

use surge::engine::{CreateOrder, Engine, EngineConfig, Initiator, OrderStatus, SaleRules, SkuSpec};
use surge::engine::{Decimal, TransitionOptions};

#[test]
fn engine_stats_count_orders_transitions_and_messages() {
    let engine = Engine::in_memory(EngineConfig { shard_count: 2, ..Default::default() }).unwrap();
    let before = engine.stats();
    assert_eq!(before.shards.len(), 2);
    assert_eq!(before.orders_created(), 0);
    assert!(before.transitions.is_empty());
    engine
        .create_sku(SkuSpec {
            sku_id: "A".into(),
            name: "A".into(),
            price: Decimal::ONE,
            initial_stock: 2,
            rules: SaleRules::default(),
        })
        .wait()
        .unwrap();
    let o1 = engine.create_order(CreateOrder::new("u1", &[("A", 1)], "k1")).wait().unwrap();
    let o2 = engine.create_order(CreateOrder::new("u2", &[("A", 1)], "k2")).wait().unwrap();
    assert_eq!(engine.create_order(CreateOrder::new("u3", &[("A", 1)], "k3")).wait().unwrap_err().code(), "sold_out");
    // A retry of a created order is not a second creation.
    engine.create_order(CreateOrder::new("u1", &[("A", 1)], "k1")).wait().unwrap();
    engine.pay(o1.order_id, "p1", o1.total, TransitionOptions::default()).wait().unwrap();
    engine.cancel_order(o2.order_id, Initiator::User, TransitionOptions::default()).wait().unwrap();
    engine.settle();

    let s = engine.stats();
    assert_eq!(s.orders_created(), 2);
    let count = |from, to| s.transitions.iter().find(|t| t.from == from && t.to == to).map_or(0, |t| t.count);
    assert_eq!(count(OrderStatus::PendingPayment, OrderStatus::Paid), 1);
    assert_eq!(count(OrderStatus::PendingPayment, OrderStatus::Canceled), 1);
    assert_eq!(s.transitions.len(), 2, "{:?}", s.transitions);
    // 1 create_sku + 4 create_order + pay + cancel requests, plus saga steps between shards.
    let handled: u64 = s.shards.iter().map(|x| x.messages_handled).sum();
    assert!(handled >= 7, "{s:?}");
    assert!(s.shards.iter().all(|x| x.mailbox_depth == 0 && x.internal_depth == 0), "idle after settle: {s:?}");
}
