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
use gateway_support::{order, sku, ADMIN, SERVICE};
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

/// SIGSTOP / SIGCONT a child process; after SIGSTOP, wait until the kernel shows it stopped
/// (`T` in `/proc/<pid>/stat`: delivery to every thread is not instant).
fn signal(child: &std::process::Child, sig: i32) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    if sig != libc::SIGSTOP {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name's closing parenthesis.
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        if state == Some('T') {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} did not stop: {stat}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `(reserved, sold, available)` of the tee.
async fn tee(c: &mut Client) -> (u64, u64, u64) {
    let v = c.call(json!({"op": "get_sku", "sku_id": "tee"})).await.expect("get_sku")["result"].clone();
    let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    (n("reserved"), n("sold"), n("available"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_owner_is_fenced_when_it_wakes_and_no_acknowledged_state_diverges() {
    let nats = NatsServer::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = Serve::serving(node("node-a", &nats.url(), dirs[0].path()));
    let b = node("node-b", &nats.url(), dirs[1].path());
    let mut admin = Client::login(a.tcp, ADMIN).await;
    assert_eq!(admin.call(sku("tee", 100, None)).await.unwrap()["ok"], true);
    let mut ca = Client::login(a.tcp, SERVICE).await;
    for i in 0..10 {
        ca.buy(&format!("u{i}"), &format!("k{i}"), false).await.expect("a serves");
    }
    // a pauses (a GC pause, a stalled VM): its leases run out and b takes over.
    signal(&a.child, libc::SIGSTOP);
    let late = tokio::spawn(async move {
        // Sent while a is stopped: a handles it only when it wakes, as a deposed owner.
        let r = ca.call(json!({"op": "create_order", "user_id": "late", "items": [{"sku_id": "tee", "qty": 1}], "idempotency_key": "late"})).await;
        (ca, r)
    });
    let b = tokio::task::spawn_blocking(move || Serve::serving(b)).await.unwrap();
    let mut cb = Client::login(b.tcp, SERVICE).await;
    for i in 10..20 {
        cb.buy(&format!("u{i}"), &format!("k{i}"), i % 2 == 0).await.expect("b serves");
    }
    // a wakes: its late append is refused (fenced) or its expired lease stops it first.
    signal(&a.child, libc::SIGCONT);
    let (_ca, late_reply) = late.await.unwrap();
    assert!(late_reply.as_ref().is_none_or(|r| r["ok"] != true), "a deposed owner acknowledged: {late_reply:?}");
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = a.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap();
    assert!(exited.is_some_and(|s| !s.success()), "a deposed node fail-stops: {exited:?}");
    // b goes on appending: a's late write did not move the partition's last sequence.
    cb.buy("u20", "k20", true).await.expect("b still serves after a woke");
    let at_b = tee(&mut cb).await;
    assert_eq!(at_b, (15, 6, 79), "21 orders acknowledged, 5 + 1 of them paid at b");
    // A third node replaying the stream from scratch finds exactly b's acknowledged state.
    drop(b);
    let c = tokio::task::spawn_blocking({
        let (dir, url) = (dirs[2].path().to_path_buf(), nats.url());
        move || Serve::serving(node("node-c", &url, &dir))
    })
    .await
    .unwrap();
    let mut cc = Client::login(c.tcp, SERVICE).await;
    assert_eq!(tee(&mut cc).await, at_b, "the replayed stream holds no trace of a's late append");
    let retried = cc.call(order("late", "tee", 1, "late")).await.unwrap();
    assert_eq!(retried["ok"], true, "the late request's key was never used: {retried}");
}
