//! Every change reaches the stream once, in order, as a CloudEvent; `tail` prints it.

use std::time::Duration;

use surge_engine::{Decimal, Initiator, TransitionOptions};
use surge_events::{tail, TailOptions};

use crate::harness::*;

#[test]
fn every_change_is_published_once_in_order_with_cloudevents_fields() {
    let Rig { nats, rt, dir: _dir, db, cfg, p } = Rig::start(1 << 30);

    sku(&db, "tea", 100);
    sku(&db, "a.b *>", 10);
    let credit_from_ms = wall_ms();
    db.engine().wallet_credit("alice", "CNY", Decimal::new(10_000, 2), "topup-1").wait().expect("credit");
    let credit_ms = credit_from_ms..=wall_ms();
    let ids = orders_of_every_kind(&db);

    let status = wait_caught_up(&p, Duration::from_secs(30));
    assert!(status.connected, "{status:?}");
    let stored = rt.block_on(read_stream(&nats.url(), &cfg.stream));
    assert!(status.published_total >= stored.len() as u64, "{status:?}");
    check_exactly_once_in_log_order(&stored);
    check_orders(&stored, &db, &ids);
    // Only orders, stock and wallets: no reservation, confirm or rejection.
    for s in &stored {
        let kind = s.subject.split('.').nth(1).unwrap_or_default();
        assert!(["order", "stock", "wallet"].contains(&kind), "{}", s.subject);
    }
    check_stock(&stored);

    let w = stored.iter().find(|s| s.subject == "surge.wallet.CNY").expect("wallet event");
    let w_ms = at_ms(w);
    assert!(credit_ms.contains(&w_ms), "wallet time {w_ms}");
    check_envelope(w, "alice", w_ms);
    assert_eq!(w.json["type"], "surge.wallet");
    assert_eq!(w.json["data"]["user_id"], "alice");
    assert_eq!(w.json["data"]["account"]["balance"], "100.00");

    let last = rt.block_on(p.shutdown(Duration::from_secs(5)));
    assert!(!last.connected);
    assert_eq!(last.cursor, last.durable_lsn);
    db.close().expect("close");
}

/// 24 orders: paid, paid and shipped, canceled, or left pending; every fourth of SKU `a.b *>`.
fn orders_of_every_kind(db: &surge_persistence::DurableEngine) -> Vec<surge_engine::OrderId> {
    let mut ids = Vec::new();
    for i in 0..24 {
        let sku_id = if i % 4 == 0 { "a.b *>" } else { "tea" };
        let o = order(db, &format!("u{}", i % 3), sku_id, &format!("k{i}"));
        ids.push(o.order_id);
        let opts = TransitionOptions::default;
        match i % 4 {
            0 => drop(pay(db, &o)),
            1 => {
                pay(db, &o);
                db.engine().ship(o.order_id, &format!("TRACK{i}"), opts()).wait().expect("ship");
            }
            2 => drop(db.engine().cancel_order(o.order_id, Initiator::User, opts()).wait().expect("cancel")),
            _ => {} // stays pending_payment
        }
    }
    ids
}

/// Stock: the creation first, then releases (the canceled orders), counters consistent; the
/// odd SKU id escaped in the subject only.
fn check_stock(stored: &[Stored]) {
    let tea: Vec<&Stored> = stored.iter().filter(|s| s.subject == "surge.stock.tea").collect();
    assert!(tea.len() >= 2, "creation and releases: {}", tea.len());
    assert_eq!(tea[0].json["data"]["available"], 100);
    for s in &tea {
        let d = &s.json["data"];
        assert_eq!(s.json["type"], "surge.stock");
        assert_eq!(s.json["subject"], "tea");
        let sum: u64 = ["available", "reserved", "sold"].iter().map(|k| d[*k].as_u64().expect("counter")).sum();
        assert_eq!(Some(sum), d["stocked_total"].as_u64(), "{d}");
    }
    let odd = stored.iter().find(|s| s.subject == "surge.stock.a%2Eb%20%2A%3E").expect("escaped SKU subject");
    assert_eq!(odd.json["subject"], "a.b *>");
    assert_eq!(odd.json["data"]["sku_id"], "a.b *>");
}

fn wall_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    i64::try_from(d.as_millis()).expect("ms")
}

/// The event's `time`, read back (a wallet's `at_ms` is not in its data).
fn at_ms(s: &Stored) -> i64 {
    let t = s.json["time"].as_str().expect("time");
    let parsed = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).expect("ms")
}

#[test]
fn tail_prints_the_stream_as_json_lines() {
    let Rig { nats: _nats, rt, dir: _dir, db, cfg, p } = Rig::start(1 << 30);
    sku(&db, "tea", 10);
    for i in 0..3 {
        let o = order(&db, "bob", "tea", &format!("t{i}"));
        pay(&db, &o);
    }
    wait_caught_up(&p, Duration::from_secs(30));

    let mut out = Vec::new();
    let opts = TailOptions { subject: Some("surge.order.>".into()), from_start: true, limit: Some(6) };
    let printed = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), tail(&cfg, &opts, &mut out)).await })
        .expect("tail ends after its limit")
        .expect("tail");
    assert_eq!(printed, 6);
    let text = String::from_utf8(out).expect("UTF-8");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, ["surge.order.created", "surge.order.paid"].repeat(3));

    rt.block_on(p.shutdown(Duration::from_secs(5)));
    db.close().expect("close");
}
