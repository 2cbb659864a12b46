//! A simulated flash sale against an in-process engine.
//!
//! ```text
//! cargo run --release --example flash_sale -- [--users N] [--skus N] [--stock N]
//!                                             [--limit N] [--threads N] [--window N]
//! ```
//!
//! `users` buyers (default 100,000) race for `skus` SKUs (default 8) of `stock` units each
//! (default 1,000, at most `limit` = 2 per buyer). Every buyer clicks "buy" twice in a row (two
//! requests in flight at once, different idempotency keys): one or two units of a random SKU
//! each time, and one request in ten asks for two SKUs in the same order (a saga). A few
//! submitting threads pipeline their requests: they send a window of `create_order`s, then wait
//! for the whole window, so the engine sees batches rather than one request at a time.
//!
//! At the end it checks conservation per SKU (`available + reserved + sold == stocked_total`,
//! reserved units == the units of the orders created, nobody above the per-user limit) and runs
//! the engine's own audit. It exits with status 1 if any check fails.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use surge::engine::{CreateOrder, Decimal, Engine, EngineConfig, Order, Pending, SaleRules, SkuId, SkuSpec};

/// Requests per buyer: the second one often meets the per-user limit.
const ATTEMPTS_PER_USER: usize = 2;

struct Args {
    users: usize,
    skus: usize,
    stock: u64,
    limit: u32,
    threads: usize,
    window: usize,
}

fn usage(msg: &str) -> ! {
    eprintln!("flash_sale: {msg}");
    eprintln!(
        "usage: flash_sale [--users N] [--skus N] [--stock N] [--limit N] [--threads N] \
         [--window N]"
    );
    std::process::exit(2)
}

/// `value` as a number (`_` separators allowed), or exit with a usage message.
fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value.replace('_', "").parse().unwrap_or_else(|_| usage(&format!("{flag}: not a valid number: {value}")))
}

fn parse_args() -> Args {
    let mut a = Args { users: 100_000, skus: 8, stock: 1_000, limit: 2, threads: 4, window: 256 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            usage("simulate a flash sale");
        }
        let Some(value) = it.next() else {
            usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--users" => a.users = number(&flag, &value),
            "--skus" => a.skus = number(&flag, &value),
            "--stock" => a.stock = number(&flag, &value),
            "--limit" => a.limit = number(&flag, &value),
            "--threads" => a.threads = number(&flag, &value),
            "--window" => a.window = number(&flag, &value),
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    if a.users == 0 || a.skus == 0 || a.limit == 0 || a.threads == 0 || a.window == 0 {
        usage("--users, --skus, --limit, --threads and --window must be positive");
    }
    a
}

/// What one submitting thread saw.
#[derive(Default)]
struct Outcome {
    attempts: u64,
    /// When the last order was created (the shelves were empty soon after).
    last_success: Option<Instant>,
    orders: Vec<Arc<Order>>,
    rejections: BTreeMap<&'static str, u64>,
}

impl Outcome {
    fn record(&mut self, pending: Pending<Arc<Order>>) {
        self.attempts += 1;
        match pending.wait() {
            Ok(order) => {
                self.orders.push(order);
                self.last_success = Some(Instant::now());
            }
            Err(e) => *self.rejections.entry(e.code()).or_insert(0) += 1,
        }
    }
}

/// Thread `t` of `n` plays users `t, t + n, t + 2n, …`, each clicking "buy" twice in a row (both
/// requests are in flight at once), in windows of `window` requests.
fn buyer_thread(engine: Engine, args: Arc<Args>, sku_ids: Arc<Vec<SkuId>>, t: usize) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(0x5eed_0000 + t as u64);
    let mut out = Outcome::default();
    let mut window = Vec::with_capacity(args.window);
    for user in (t..args.users).step_by(args.threads) {
        let user_id: Arc<str> = Arc::from(format!("user-{user}"));
        for attempt in 0..ATTEMPTS_PER_USER {
            let first = rng.gen_range(0..sku_ids.len());
            let mut items = vec![(sku_ids[first].clone(), rng.gen_range(1..=args.limit))];
            if sku_ids.len() > 1 && rng.gen_ratio(1, 10) {
                let second = (first + rng.gen_range(1..sku_ids.len())) % sku_ids.len();
                items.push((sku_ids[second].clone(), 1));
            }
            let req = CreateOrder { user_id: user_id.clone(), items, idempotency_key: format!("checkout-{attempt}") };
            window.push(engine.create_order(req));
            if window.len() == args.window {
                window.drain(..).for_each(|p| out.record(p));
            }
        }
    }
    window.drain(..).for_each(|p| out.record(p));
    out
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn main() -> ExitCode {
    let args = Arc::new(parse_args());
    let engine = Engine::in_memory(EngineConfig::default()).expect("engine starts");

    let sku_ids: Vec<SkuId> = (0..args.skus).map(|i| SkuId::from(format!("sku-{i:02}"))).collect();
    for (i, sku_id) in sku_ids.iter().enumerate() {
        engine
            .create_sku(SkuSpec {
                sku_id: sku_id.to_string(),
                name: format!("Flash item {i}"),
                // 19.99, 29.99, 39.99, …
                price: Decimal::new(1_999 + 1_000 * i as i64, 2),
                initial_stock: args.stock,
                rules: SaleRules { per_user_limit: Some(args.limit), ..SaleRules::default() },
            })
            .wait()
            .expect("create sku");
    }
    let sku_ids = Arc::new(sku_ids);

    println!(
        "flash sale: {} users x {} attempts, {} SKUs x {} units (limit {}/user), \
         {} shards, {} buyer threads, window {}",
        args.users,
        ATTEMPTS_PER_USER,
        args.skus,
        args.stock,
        args.limit,
        engine.shard_count(),
        args.threads,
        args.window
    );

    let start = Instant::now();
    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            let (engine, args, sku_ids) = (engine.clone(), args.clone(), sku_ids.clone());
            std::thread::spawn(move || buyer_thread(engine, args, sku_ids, t))
        })
        .collect();
    let mut total = Outcome::default();
    for h in handles {
        let o = h.join().expect("buyer thread");
        total.attempts += o.attempts;
        total.last_success = total.last_success.max(o.last_success);
        total.orders.extend(o.orders);
        for (code, n) in o.rejections {
            *total.rejections.entry(code).or_insert(0) += n;
        }
    }
    let wall = start.elapsed();
    let created = total.orders.len() as u64;
    let rejected: u64 = total.rejections.values().sum();

    println!();
    println!("{:<28}{:>14}", "create attempts", total.attempts);
    println!("{:<28}{:>14}", "orders created", created);
    println!("{:<28}{:>14}", "rejected", rejected);
    for (code, n) in &total.rejections {
        println!("{:<28}{:>14}", format!("  {code}"), n);
    }
    println!("{:<28}{:>11.1} ms", "wall time", wall.as_secs_f64() * 1e3);
    println!("{:<28}{:>14.0}", "attempts/s", per_sec(total.attempts, wall));
    println!("{:<28}{:>14.0}", "orders created/s", per_sec(created, wall));
    if let Some(last) = total.last_success {
        let selling = last - start;
        println!("{:<28}{:>11.1} ms", "last order created at", selling.as_secs_f64() * 1e3);
        println!("{:<28}{:>14.0}", "orders/s until then", per_sec(created, selling));
    }

    // ---- checks --------------------------------------------------------------------------
    let mut ok = true;
    let mut units: HashMap<&str, u64> = HashMap::new();
    let mut per_user: HashMap<(&str, &str), u64> = HashMap::new();
    for order in &total.orders {
        for item in &order.items {
            *units.entry(&item.sku_id).or_insert(0) += u64::from(item.qty);
            *per_user.entry((&order.user_id, &item.sku_id)).or_insert(0) += u64::from(item.qty);
        }
    }
    engine.settle();

    println!();
    println!(
        "{:<8}{:>10}{:>10}{:>8}{:>10}{:>12}{:>8}",
        "sku", "available", "reserved", "sold", "stocked", "order units", "check"
    );
    for sku_id in sku_ids.iter() {
        let v = engine.get_sku(sku_id).expect("sku exists");
        let ordered = units.get(&**sku_id).copied().unwrap_or(0);
        let good = v.available + v.reserved + v.sold == v.stocked_total
            && v.stocked_total == args.stock
            && v.reserved + v.sold == ordered;
        ok &= good;
        println!(
            "{:<8}{:>10}{:>10}{:>8}{:>10}{:>12}{:>8}",
            &**sku_id,
            v.available,
            v.reserved,
            v.sold,
            v.stocked_total,
            ordered,
            if good { "ok" } else { "FAIL" }
        );
    }

    let over_limit = per_user.values().filter(|&&n| n > u64::from(args.limit)).count();
    let live = engine.order_count() as u64;
    let report = engine.audit();
    let checks = [
        ("no user above the per-user limit", over_limit == 0),
        ("engine order count == orders created", live == created),
        ("every attempt answered", total.attempts == created + rejected),
        ("engine audit healthy", report.is_healthy()),
    ];
    println!();
    for (what, good) in checks {
        ok &= good;
        println!("{:<44}{:>6}", what, if good { "ok" } else { "FAIL" });
    }
    for v in report.violations.iter().take(10) {
        println!("  audit: {v}");
    }

    if ok {
        println!("\nall checks passed");
        ExitCode::SUCCESS
    } else {
        println!("\nCHECKS FAILED");
        ExitCode::FAILURE
    }
}
