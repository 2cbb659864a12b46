//! NATS goes away: the engine never waits, snapshots keep what is unpublished, and everything
//! arrives once NATS is back.

use std::time::{Duration, Instant};

use surge_engine::{CreateOrder, OrderId};
use surge_persistence::DurableEngine;

use crate::harness::*;

/// Orders (half of them paid) for `how_long`; returns their ids and the slowest order's time.
fn orders_for(db: &DurableEngine, tag: &str, how_long: Duration) -> (Vec<OrderId>, Duration) {
    let (start, mut ids, mut slowest) = (Instant::now(), Vec::new(), Duration::ZERO);
    while start.elapsed() < how_long {
        let t = Instant::now();
        let i = ids.len();
        let o = order(db, &format!("{tag}-u{}", i % 5), "tea", &format!("{tag}-{i}"));
        if i % 2 == 0 {
            pay(db, &o);
        }
        slowest = slowest.max(t.elapsed());
        ids.push(o.order_id);
    }
    (ids, slowest)
}

/// Wait until `f` holds for the publisher's status.
fn wait_status(p: &surge_events::PublisherHandle, what: &str, f: impl Fn(&surge_events::PublisherStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f(&p.status()) {
        assert!(Instant::now() < deadline, "{what}: {:?}", p.status());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nats_down_for_6_s_never_slows_the_engine_and_loses_nothing() {
    let Rig { mut nats, rt, dir: _dir, db, cfg, p } = Rig::start(1 << 30);
    sku(&db, "tea", 1_000_000);
    let (mut ids, _) = orders_for(&db, "before", Duration::from_millis(300));
    wait_caught_up(&p, Duration::from_secs(30));

    nats.stop();
    // Longer than the 5 s acknowledgement timeout, so the publisher fails and starts over from
    // its cursor; an engine that waited for it would show it in the slowest order.
    let (during, slowest) = orders_for(&db, "during", Duration::from_secs(6));
    assert!(during.len() >= 20, "only {} orders in 6 s", during.len());
    assert!(slowest < Duration::from_millis(2_500), "an order took {slowest:?} while NATS was down");
    wait_status(&p, "disconnected and lagging", |s| !s.connected && s.lag_events > 0 && s.lag_seconds > 0.5);
    ids.extend(during);

    nats.restart();
    let s = wait_caught_up(&p, Duration::from_secs(60));
    assert_eq!((s.lag_events, s.lag_seconds), (0, 0.0));
    wait_status(&p, "connected again", |s| s.connected);
    check_stream_and_close(&rt, &nats.url(), &cfg, (db, p), &ids);
}

/// 300 orders at once (one log record per shard): more events than a publisher has in flight.
fn burst(db: &DurableEngine, tag: &str) -> Vec<OrderId> {
    let reqs: Vec<CreateOrder> = (0..300)
        .map(|i| CreateOrder::new(&format!("{tag}-u{}", i % 7), &[("tea", 1)], &format!("{tag}-{i}")))
        .collect();
    db.engine().create_orders(reqs).into_iter().map(|o| o.wait().expect("order").order_id).collect()
}

#[test]
fn snapshots_while_nats_is_down_keep_the_unpublished_records() {
    let Rig { mut nats, rt, dir: _dir, db, cfg, p } = Rig::start(1 << 30);
    sku(&db, "tea", 1_000_000);
    let (mut ids, _) = orders_for(&db, "before", Duration::from_millis(200));
    wait_caught_up(&p, Duration::from_secs(30));

    nats.stop();
    ids.extend(burst(&db, "during"));
    // The second snapshot trims what the first covers (everything above) unless it is kept.
    db.snapshot_now().expect("snapshot").expect("a snapshot");
    let (more, _) = orders_for(&db, "between", Duration::from_millis(200));
    ids.extend(more);
    db.snapshot_now().expect("snapshot").expect("a snapshot");
    assert_eq!(p.status().records_dropped, 0);
    // The publisher dies too: what it read is gone, the rest must come from the log. (Its
    // client may still deliver the ≤ 64 publishes it had buffered: far fewer than 300.)
    rt.block_on(p.abort());

    nats.restart();
    let p = publisher(&cfg, &db, &rt);
    let s = wait_caught_up(&p, Duration::from_secs(60));
    assert_eq!(s.records_dropped, 0);
    check_stream_and_close(&rt, &nats.url(), &cfg, (db, p), &ids);
}

#[test]
fn past_max_lag_bytes_snapshots_drop_and_count_and_publishing_goes_on() {
    let Rig { nats, rt, dir: _dir, db, cfg, p } = Rig::start(1);
    sku(&db, "tea", 1_000_000);
    wait_caught_up(&p, Duration::from_secs(30));
    // No publisher for a while (as if NATS were down for long), and a backlog > 1 byte.
    rt.block_on(p.shutdown(Duration::from_secs(5)));

    let lost = burst(&db, "lost");
    db.snapshot_now().expect("snapshot").expect("a snapshot");
    db.snapshot_now().expect("snapshot").expect("a snapshot");

    let p = publisher(&cfg, &db, &rt);
    assert!(p.status().records_dropped > 0, "a backlog past max_lag_bytes is trimmed and counted");
    let (after, _) = orders_for(&db, "after", Duration::from_millis(200));
    wait_caught_up(&p, Duration::from_secs(60));
    let stored = rt.block_on(read_stream(&nats.url(), &cfg.stream));
    check_exactly_once_in_log_order(&stored);
    check_orders(&stored, &db, &after);
    // Both snapshots cover every order of the burst: its records were trimmed unpublished.
    let lost: std::collections::HashSet<String> = lost.iter().map(|id| id.0.to_string()).collect();
    let published_lost = stored.iter().filter(|s| s.json["subject"].as_str().is_some_and(|k| lost.contains(k))).count();
    assert_eq!(published_lost, 0, "trimmed events are not published");
    rt.block_on(p.shutdown(Duration::from_secs(5)));
    db.close().expect("close");
}
