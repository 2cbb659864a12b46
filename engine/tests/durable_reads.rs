//! Issue 10, item 2: queries never show what is not durable. A journal that holds every
//! `on_durable` callback until the test releases it stands in for a slow disk; while a batch is
//! held, `get_order`, `list_orders`, `get_sku` and `list_skus` must show nothing of it, and once
//! it is released (before the caller's reply) everything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use surge_engine::{
    CreateOrder, Decimal, Engine, EngineConfig, Event, Journal, ListOrders, ManualClock, OnDurable, OrderEvent,
    OrderId, OrderStatus, SaleRules, SkuSpec, SkuUpdate,
};

const T0: i64 = 1_800_000_000_000;

/// Shared between the journals (one per shard) and the test.
#[derive(Default)]
struct Held {
    hold: AtomicBool,
    callbacks: Mutex<Vec<OnDurable>>,
    created: Mutex<Vec<OrderId>>,
}

struct HoldingJournal {
    held: Arc<Held>,
    position: u64,
}

impl Journal for HoldingJournal {
    fn submit(&mut self, _shard: usize, events: Vec<Event>, on_durable: OnDurable) {
        if !events.is_empty() {
            self.position += 1;
        }
        for e in &events {
            if let Event::Order(OrderEvent::Created(o)) = e {
                self.held.created.lock().unwrap().push(o.order_id);
            }
        }
        let mut callbacks = self.held.callbacks.lock().unwrap();
        // Once one batch waits, later ones wait behind it: durability is in submission order.
        if self.held.hold.load(Ordering::SeqCst) || !callbacks.is_empty() {
            callbacks.push(on_durable);
        } else {
            drop(callbacks);
            on_durable(Ok(()));
        }
    }

    fn position(&self) -> u64 {
        self.position
    }
}

impl Held {
    /// Stop holding and run every held callback, in submission order, until none is left.
    fn release(&self) {
        self.hold.store(false, Ordering::SeqCst);
        loop {
            let batch: Vec<OnDurable> = std::mem::take(&mut *self.callbacks.lock().unwrap());
            if batch.is_empty() {
                return;
            }
            for cb in batch {
                cb(Ok(()));
            }
        }
    }
}

fn spec(id: &str, stock: u64) -> SkuSpec {
    SkuSpec {
        sku_id: id.into(),
        name: format!("Item {id}"),
        price: Decimal::new(500, 2),
        initial_stock: stock,
        rules: SaleRules::default(),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn queries_show_a_batch_only_once_it_is_durable() {
    let held = Arc::new(Held::default());
    let clock = Arc::new(ManualClock::new(T0));
    let h = held.clone();
    let engine = Engine::builder(EngineConfig { shard_count: 2, ..Default::default() })
        .clock(clock.clone())
        .journal(Box::new(move |_| Box::new(HoldingJournal { held: h.clone(), position: 0 })))
        .start()
        .expect("engine");
    engine.create_sku(spec("a", 10)).wait().expect("sku a");
    engine.create_sku(spec("b", 10)).wait().expect("sku b");
    clock.advance_ms(1);
    let bobs = engine.create_order(CreateOrder::new("bob", &[("a", 1)], "bob-1")).wait().expect("bob's order");

    // Everything below is decided by the shards but not durable.
    held.hold.store(true, Ordering::SeqCst);
    clock.advance_ms(1);
    let alice = engine.create_order(CreateOrder::new("alice", &[("a", 2), ("b", 1)], "alice-1"));
    let paid = engine.pay(bobs.order_id, "psp-1", bobs.total, Default::default());
    let new_sku = engine.create_sku(spec("c", 3));
    let renamed = engine.update_sku("b", SkuUpdate { name: Some("Renamed".into()), ..Default::default() });
    wait_until("the shards to decide every command", || {
        let audit = engine.audit();
        let sku = |id: &str| audit.skus.iter().find(|v| &*v.sku_id == id).cloned();
        audit.orders == 2
            && sku("a").is_some_and(|a| a.sold == 1 && a.reserved == 2)
            && sku("b").is_some_and(|b| &*b.name == "Renamed")
            && sku("c").is_some()
    });
    let alices_id = *held.created.lock().unwrap().last().expect("alice's order was logged");
    assert_ne!(alices_id, bobs.order_id);

    assert_eq!(engine.get_order(alices_id).unwrap_err().code(), "unknown_order", "order not durable yet");
    let alices = ListOrders { user_id: "alice".into(), status: None, limit: 10, before: None };
    assert!(engine.list_orders(&alices).expect("list").orders.is_empty(), "index not durable yet");
    assert_eq!(engine.get_order(bobs.order_id).expect("bob").status, OrderStatus::PendingPayment, "pay not durable");
    let a = engine.get_sku("a").expect("a");
    assert_eq!((a.available, a.reserved, a.sold), (9, 1, 0), "counters not durable yet");
    assert_eq!(&*engine.get_sku("b").expect("b").name, "Item b", "rename not durable yet");
    assert_eq!(engine.get_sku("c").unwrap_err().code(), "unknown_sku", "sku not durable yet");
    let listed: Vec<String> = engine.list_skus().iter().map(|v| v.sku_id.to_string()).collect();
    assert_eq!(listed, ["a", "b"]);

    held.release();
    let alices_order = alice.wait().expect("alice's order");
    assert_eq!(alices_order.order_id, alices_id);
    assert_eq!(paid.wait().expect("paid").status, OrderStatus::Paid);
    new_sku.wait().expect("sku c");
    renamed.wait().expect("renamed");

    assert_eq!(engine.get_order(alices_id).expect("alice's order").status, OrderStatus::PendingPayment);
    let page = engine.list_orders(&alices).expect("list");
    assert_eq!(page.orders.iter().map(|o| o.order_id).collect::<Vec<_>>(), [alices_id]);
    assert_eq!(engine.get_order(bobs.order_id).expect("bob").status, OrderStatus::Paid);
    let a = engine.get_sku("a").expect("a");
    assert_eq!((a.available, a.reserved, a.sold), (7, 2, 1));
    assert_eq!(&*engine.get_sku("b").expect("b").name, "Renamed");
    assert_eq!(engine.get_sku("b").expect("b").reserved, 1);
    assert_eq!(engine.get_sku("c").expect("c").available, 3);
    assert_eq!(engine.list_skus().len(), 3);
}

/// A batch whose journal reports failure publishes nothing (and its replies carry the error).
#[test]
fn a_batch_that_never_becomes_durable_is_never_shown() {
    struct Failing;
    impl Journal for Failing {
        fn submit(&mut self, _shard: usize, events: Vec<Event>, on_durable: OnDurable) {
            let is_order = events.iter().any(|e| matches!(e, Event::Order(_)));
            on_durable(if is_order {
                Err(surge_engine::EngineError::StorageUnavailable { message: "test".into() })
            } else {
                Ok(())
            });
        }
        fn position(&self) -> u64 {
            0
        }
    }
    let engine = Engine::builder(EngineConfig { shard_count: 1, ..Default::default() })
        .clock(Arc::new(ManualClock::new(T0)))
        .journal(Box::new(|_| Box::new(Failing)))
        .start()
        .expect("engine");
    engine.create_sku(spec("a", 10)).wait().expect("sku a");
    let err = engine.create_order(CreateOrder::new("carol", &[("a", 1)], "k")).wait().unwrap_err();
    assert_eq!(err.code(), "storage_unavailable");
    let carols = ListOrders { user_id: "carol".into(), status: None, limit: 10, before: None };
    assert!(engine.list_orders(&carols).expect("list").orders.is_empty());
    assert_eq!(engine.order_count(), 0);
}
