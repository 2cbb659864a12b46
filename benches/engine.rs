//! Engine throughput: `create_order` through the public API, durability off (in-memory engine).
//!
//! ```text
//! cargo bench --bench engine                 # measure (orders/s in the "thrpt" line)
//! cargo bench --bench engine -- --test       # run every bench once (CI)
//! ```
//!
//! * `create_order/hot_sku`: every order reserves 1 unit of the same SKU (stock effectively
//!   unlimited, no per-user limit), so every reservation goes through one SKU actor.
//! * `create_order/saga_3_skus`: every order reserves 1 unit of each of 3 SKUs (a 3-step saga).
//!
//! Every order has a distinct user and idempotency key. Requests are built before the clock
//! starts; `SUBMITTERS` threads then pipeline them (submit a window of `WINDOW` `create_order`s,
//! wait for all of them, repeat), so the engine sees batches as it would under load. Each sample
//! runs on a fresh engine so memory stays bounded; its start-up and teardown are not timed.
//! One iteration is one order, so criterion's throughput is orders/s.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use surge::engine::{CreateOrder, Decimal, Engine, EngineConfig, SaleRules, SkuId, SkuSpec};

/// Threads submitting orders.
const SUBMITTERS: usize = 2;
/// Requests each submitter has in flight before it waits for them.
const WINDOW: usize = 2_048;
/// "Unlimited" stock: far more than a run creates, far from overflow.
// The most a SKU may hold: every order of every iteration must find stock.
const STOCK: u64 = surge::engine::STOCK_MAX;

/// A fresh engine with `skus` unlimited SKUs.
fn engine_with(skus: &[SkuId]) -> Engine {
    let engine = Engine::in_memory(EngineConfig::default()).expect("engine starts");
    for sku in skus {
        engine
            .create_sku(SkuSpec {
                sku_id: sku.to_string(),
                name: format!("Bench item {sku}"),
                price: Decimal::new(1_999, 2),
                initial_stock: STOCK,
                rules: SaleRules::default(),
            })
            .wait()
            .expect("create sku");
    }
    engine
}

/// `n` requests for distinct users, each for 1 unit of every SKU in `skus`, split between the
/// submitters.
fn requests(n: u64, skus: &[SkuId]) -> Vec<Vec<CreateOrder>> {
    let mut per_thread: Vec<Vec<CreateOrder>> =
        (0..SUBMITTERS).map(|_| Vec::with_capacity(n as usize / SUBMITTERS + 1)).collect();
    for i in 0..n {
        per_thread[i as usize % SUBMITTERS].push(CreateOrder {
            user_id: Arc::from(format!("user-{i}")),
            items: skus.iter().map(|s| (s.clone(), 1)).collect(),
            idempotency_key: format!("key-{i}"),
        });
    }
    per_thread
}

/// Submit one thread's requests window by window; the number of failures.
fn submit(engine: &Engine, reqs: Vec<CreateOrder>) -> usize {
    let mut failed = 0;
    let mut window = Vec::with_capacity(WINDOW);
    let mut reqs = reqs.into_iter().peekable();
    while reqs.peek().is_some() {
        window.extend(reqs.by_ref().take(WINDOW).map(|r| engine.create_order(r)));
        failed += window.drain(..).map(|p| p.wait()).filter(Result::is_err).count();
    }
    failed
}

/// Time `iters` orders on a fresh engine.
fn run(iters: u64, skus: &[SkuId]) -> Duration {
    let engine = engine_with(skus);
    let per_thread = requests(iters, skus);
    let start_line = Barrier::new(SUBMITTERS + 1);
    let (elapsed, failed) = std::thread::scope(|s| {
        let handles: Vec<_> = per_thread
            .into_iter()
            .map(|reqs| {
                let (engine, start_line) = (&engine, &start_line);
                s.spawn(move || {
                    start_line.wait();
                    submit(engine, reqs)
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        let failed: usize = handles.into_iter().map(|h| h.join().expect("submitter")).sum();
        (start.elapsed(), failed)
    });
    assert_eq!(failed, 0, "{failed} of {iters} create_order calls failed");
    elapsed
}

fn create_order(c: &mut Criterion) {
    let mut group = c.benchmark_group("create_order");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    let hot: Vec<SkuId> = vec![Arc::from("hot")];
    group.bench_function("hot_sku", |b| b.iter_custom(|iters| run(iters, &hot)));

    let three: Vec<SkuId> = ["saga-a", "saga-b", "saga-c"].into_iter().map(Arc::from).collect();
    group.bench_function("saga_3_skus", |b| b.iter_custom(|iters| run(iters, &three)));

    group.finish();
}

criterion_group!(benches, create_order);
criterion_main!(benches);
