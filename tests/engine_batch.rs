//! Batched submission (`Engine::create_orders`): one answer per request in request order, the
//! same rules as one by one (never oversell, idempotent retries, validation per request), and
//! batches above `CREATE_BATCH_MAX` split.

use surge::engine::{CreateOrder, Decimal, Engine, EngineConfig, SaleRules, SkuSpec, CREATE_BATCH_MAX};

fn engine_with_sku(stock: u64) -> Engine {
    let engine = Engine::in_memory(EngineConfig { shard_count: 3, ..Default::default() }).expect("engine");
    let spec = SkuSpec {
        sku_id: "hot".into(),
        name: "Hot item".into(),
        price: Decimal::new(1_000, 2),
        initial_stock: stock,
        rules: SaleRules { per_user_limit: Some(1), ..Default::default() },
    };
    engine.create_sku(spec).wait().expect("create sku");
    engine
}

fn codes(engine: &Engine, reqs: Vec<CreateOrder>) -> Vec<Result<u64, &'static str>> {
    engine.create_orders(reqs).into_iter().map(|p| p.wait().map(|o| o.order_id.0).map_err(|e| e.code())).collect()
}

#[test]
fn a_batch_of_buyers_never_oversells_and_answers_in_request_order() {
    let engine = engine_with_sku(100);
    let reqs: Vec<CreateOrder> =
        (0..1_000).map(|i| CreateOrder::new(&format!("u{i}"), &[("hot", 1)], &format!("k{i}"))).collect();
    let answers = codes(&engine, reqs.clone());
    assert_eq!(answers.len(), 1_000);
    assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 100, "{answers:?}");
    assert!(answers.iter().all(|a| matches!(a, Ok(_) | Err("sold_out"))), "{answers:?}");
    // Request order: the answers line up with the requests (a retry of each gets its own order).
    let retry = codes(&engine, reqs);
    for (i, (a, b)) in answers.iter().zip(&retry).enumerate() {
        if let Ok(id) = a {
            assert_eq!(b, &Ok(*id), "request {i}: a retry with the same key must get the same order");
        }
    }
    engine.settle();
    assert!(engine.audit().is_healthy());
    // The shards' handled-messages metric counts a batch's commands, not its one mailbox slot.
    let handled: u64 = engine.stats().shards.iter().map(|s| s.messages_handled).sum();
    assert!(handled >= 2_000, "{handled} messages handled for 2,000 create requests");
    let v = engine.get_sku("hot").expect("sku");
    assert_eq!((v.available, v.reserved), (0, 100));
}

#[test]
fn each_request_is_validated_on_its_own() {
    let engine = engine_with_sku(10);
    let answers = codes(
        &engine,
        vec![
            CreateOrder::new("a", &[("hot", 1)], "k"),
            CreateOrder::new("", &[("hot", 1)], "k"),
            CreateOrder::new("b", &[("nope", 1)], "k"),
            CreateOrder::new("c", &[("hot", 2)], "k"),
            CreateOrder::new("d", &[("hot", 1)], "k"),
        ],
    );
    assert!(answers[0].is_ok() && answers[4].is_ok(), "{answers:?}");
    assert_eq!(&answers[1..4], &[Err("invalid_request"), Err("unknown_sku"), Err("purchase_limit_exceeded")]);
}

#[test]
fn a_batch_above_the_maximum_is_split_and_fully_answered() {
    let n = CREATE_BATCH_MAX + 10;
    let engine = engine_with_sku(n as u64);
    let reqs: Vec<CreateOrder> =
        (0..n).map(|i| CreateOrder::new(&format!("u{i}"), &[("hot", 1)], &format!("k{i}"))).collect();
    let answers = codes(&engine, reqs);
    assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), n);
}
