//! Cluster mode end to end (issue 16, first shape): two real `surge serve` processes on one real
//! `nats-server` (started on a free loopback port in a temp dir; the test fails, never skips,
//! without one on PATH). The node holding the leases serves; the other stands by; `kill -9` of
//! the active node mid-sale hands the partitions over with every acknowledged order.

mod gateway_support;

#[allow(dead_code)] // not every test uses every helper
#[path = "../events/tests/outbox/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use gateway_support::binary::{Client, Serve};
use gateway_support::{sku, ADMIN, SERVICE};
use nats::NatsServer;
use serde_json::json;

const LEASE_MS: u64 = 1_500;

fn node(id: &str, nats_url: &str, dir: &std::path::Path) -> std::process::Child {
    let lease = LEASE_MS.to_string();
    Serve::spawn(
        dir,
        &["--cluster-nats-urls", nats_url, "--node-id", id],
        &[
            ("SURGE_CLUSTER_PARTITIONS", "4"),
            ("SURGE_CLUSTER_REPLICAS", "1"),
            ("SURGE_CLUSTER_LEASE_MS", lease.as_str()),
            ("SURGE_CLUSTER_SAFETY_MS", "500"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_of_the_active_node_hands_over_with_every_acknowledged_order() {
    let nats = NatsServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Serve::serving(node("node-a", &nats.url(), dir_a.path()));
    // b starts while a serves: it stands by (it prints its addresses only once it serves).
    let b = node("node-b", &nats.url(), dir_b.path());
    let mut admin = Client::login(a.tcp, ADMIN).await;
    assert_eq!(admin.call(sku("tee", 100, None)).await.unwrap()["ok"], true);
    let mut c = Client::login(a.tcp, SERVICE).await;
    let mut acked = Vec::new();
    for i in 0..40 {
        acked.push(c.buy(&format!("u{i}"), &format!("k{i}"), i % 2 == 0).await.expect("a serves"));
    }
    let killed_at = Instant::now();
    a.kill9();
    let b = tokio::task::spawn_blocking(move || Serve::serving(b)).await.unwrap();
    let failover = killed_at.elapsed();
    assert!(failover < Duration::from_millis(LEASE_MS * 4), "failover took {failover:?}");
    eprintln!("failover in {failover:?} (lease {LEASE_MS} ms)");
    let mut c = Client::login(b.tcp, SERVICE).await;
    for (id, statuses) in &acked {
        let r = c.call(json!({"op": "get_order", "order_id": id})).await.expect("b answers");
        let status = r["result"]["status"].as_str().unwrap_or_default().to_string();
        let want = if statuses.contains(&"paid") { "paid" } else { "pending_payment" };
        assert_eq!(status, want, "order {id} after the failover: {r}");
    }
    // A retried idempotency key gives the original order.
    let again = c.call(json!({"op": "create_order", "user_id": "u3", "items": [{"sku_id": "tee", "qty": 1}], "idempotency_key": "k3"})).await.unwrap();
    assert_eq!(again["result"]["order_id"], json!(acked[3].0), "{again}");
    let tee = c.call(json!({"op": "get_sku", "sku_id": "tee"})).await.unwrap()["result"].clone();
    assert_eq!(
        (tee["reserved"].as_u64(), tee["sold"].as_u64(), tee["available"].as_u64()),
        (Some(20), Some(20), Some(60)),
        "{tee}"
    );
}
