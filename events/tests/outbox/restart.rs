//! Crashes and restarts: the stream holds each event once, none missing.

use std::time::Duration;

use surge_engine::CreateOrder;

use crate::harness::*;
use crate::nats::NatsServer;

/// Orders and payments with no publisher running (the log keeps them for it).
fn orders_and_payments(db: &surge_persistence::DurableEngine, prefix: &str, n: usize) -> Vec<surge_engine::OrderId> {
    (0..n)
        .map(|i| {
            let o = order(db, &format!("{prefix}-u{}", i % 5), "tea", &format!("{prefix}-{i}"));
            if i % 2 == 0 {
                pay(db, &o);
            }
            o.order_id
        })
        .collect()
}

/// The publisher published everything and died before saving its cursor: its successor
/// publishes everything again, and JetStream keeps one copy of each.
#[test]
fn a_publisher_that_died_before_saving_its_cursor_duplicates_nothing() {
    let nats = NatsServer::start();
    let rt = runtime();
    let cfg = events_cfg(&nats.url());
    let root = tempfile::tempdir().expect("temp dir");
    let (dir, crashed) = (root.path().join("live"), root.path().join("crashed"));

    let db = open_db(&dir, 1 << 30);
    sku(&db, "tea", 1_000);
    let ids = orders_and_payments(&db, "a", 30);
    db.close_without_snapshot();
    // The directory as a crash right after publishing, before the cursor save, leaves it.
    copy_dir(&dir, &crashed);

    let db = open_db(&dir, 1 << 30);
    let p = publisher(&cfg, &db, &rt);
    let first = wait_caught_up(&p, Duration::from_secs(30));
    rt.block_on(p.shutdown(Duration::from_secs(5)));
    db.close().expect("close");
    let stored_first = rt.block_on(read_stream(&nats.url(), &cfg.stream));
    assert_eq!(first.published_total, stored_first.len() as u64);

    let db = open_db(&crashed, 1 << 30);
    assert_eq!(db.outbox().expect("outbox").cursor(), 0, "the copy has no cursor saved yet");
    let p = publisher(&cfg, &db, &rt);
    let second = wait_caught_up(&p, Duration::from_secs(30));
    assert_eq!(second.published_total, first.published_total, "every event published again, and acknowledged");
    let stored = rt.block_on(read_stream(&nats.url(), &cfg.stream));
    assert_eq!(stored.len(), stored_first.len(), "JetStream dropped every re-publish");
    check_exactly_once_in_log_order(&stored);
    check_orders(&stored, &db, &ids);
    rt.block_on(p.shutdown(Duration::from_secs(5)));
    db.close().expect("close");
}

/// The publisher is killed while a burst is being published, the engine closes, both start
/// again and the engine goes on: no event missing, none twice.
#[test]
fn a_publisher_killed_midway_resumes_from_its_cursor() {
    let nats = NatsServer::start();
    let rt = runtime();
    let cfg = events_cfg(&nats.url());
    let dir = tempfile::tempdir().expect("temp dir");

    let db = open_db(dir.path(), 1 << 30);
    sku(&db, "tea", 10_000);
    let p = publisher(&cfg, &db, &rt);
    let burst: Vec<CreateOrder> =
        (0..400).map(|i| CreateOrder::new(&format!("b-u{}", i % 7), &[("tea", 1)], &format!("b-{i}"))).collect();
    let mut ids: Vec<_> =
        db.engine().create_orders(burst).into_iter().map(|pending| pending.wait().expect("order").order_id).collect();
    let killed = rt.block_on(p.abort());
    eprintln!("killed at {killed:?}");
    db.close_without_snapshot();

    let db = open_db(dir.path(), 1 << 30);
    let p = publisher(&cfg, &db, &rt);
    ids.extend(orders_and_payments(&db, "c", 10));
    let s = wait_caught_up(&p, Duration::from_secs(60));
    assert!(s.cursor >= killed.cursor);
    check_stream_and_close(&rt, &nats.url(), &cfg, (db, p), &ids);
}
