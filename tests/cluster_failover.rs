//! Cluster mode end to end (issue 16): real `surge serve` processes on one real `nats-server`
//! (started on a loopback port in a temp dir; the tests fail, never skip, without one on
//! PATH). Two nodes share the partitions and forward requests to each other; `kill -9` of one
//! mid-sale hands its partitions to the other with every acknowledged order; a paused old
//! owner is fenced when it wakes.

mod gateway_support;

#[allow(dead_code)] // not every test uses every helper
#[path = "../events/tests/outbox/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use gateway_support::binary::{Client, Serve};
use gateway_support::{order, sku, ADMIN, SERVICE};
use nats::NatsServer;
use serde_json::{json, Value};

const LEASE_MS: u64 = 1_500;
/// How long a client keeps retrying through a failover.
const RETRY: Duration = Duration::from_secs(30);

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
            ("SURGE_ENGINE_SAGA_TIMEOUT_MS", "2000"),
        ],
    )
}

/// `create_order` (then `pay` if `pay`), retried through failovers with the same key and
/// payment id: (order id, whether it was paid).
async fn buy(c: &mut Client, user: &str, key: &str, pay: bool) -> (String, bool) {
    let r = c.call_retrying(order(user, "tee", 1, key), RETRY).await.expect("an answer");
    assert_eq!(r["ok"], true, "{r}");
    let (id, total) = (r["result"]["order_id"].as_str().unwrap_or_default().to_string(), r["result"]["total"].clone());
    if pay {
        let p = json!({"op": "pay", "order_id": id, "payment_id": format!("psp-{key}"), "amount": total});
        let r = c.call_retrying(p, RETRY).await.expect("an answer");
        assert_eq!(r["ok"], true, "{r}");
    }
    (id, pay)
}

/// `(reserved, sold, available)` of the tee.
async fn tee(c: &mut Client) -> (u64, u64, u64) {
    let v: Value = c.call_retrying(json!({"op": "get_sku", "sku_id": "tee"}), RETRY).await.expect("get_sku");
    let n = |k: &str| v["result"][k].as_u64().unwrap_or(u64::MAX);
    (n("reserved"), n("sold"), n("available"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_of_a_node_hands_its_partitions_over_with_every_acknowledged_order() {
    let nats = NatsServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Serve::serving(node("node-a", &nats.url(), dir_a.path()));
    let b = Serve::serving(node("node-b", &nats.url(), dir_b.path()));
    let mut admin = Client::login(a.tcp, ADMIN).await;
    let r = admin.call_retrying(sku("tee", 100, None), RETRY).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    // Through a: users on a's partitions and on b's (forwarded).
    let mut c = Client::login(a.tcp, SERVICE).await;
    let mut acked = Vec::new();
    for i in 0..40 {
        acked.push(buy(&mut c, &format!("u{i}"), &format!("k{i}"), i % 2 == 0).await);
    }
    let killed_at = Instant::now();
    a.kill9();
    // Through b: every acknowledged order, once b hosts a's partitions.
    let mut c = Client::login(b.tcp, SERVICE).await;
    for (id, paid) in &acked {
        let r = c.call_retrying(json!({"op": "get_order", "order_id": id}), RETRY).await.expect("b answers");
        let want = if *paid { "paid" } else { "pending_payment" };
        assert_eq!(r["result"]["status"], want, "order {id} after the failover: {r}");
    }
    let failover = killed_at.elapsed();
    eprintln!("every acknowledged order readable through b {failover:?} after the kill (lease {LEASE_MS} ms)");
    assert!(failover < Duration::from_millis(LEASE_MS * 6), "failover took {failover:?}");
    // A retried idempotency key gives the original order.
    let again = c.call_retrying(order("u3", "tee", 1, "k3"), RETRY).await.unwrap();
    assert_eq!(again["result"]["order_id"], json!(acked[3].0), "{again}");
    // Exactly the acknowledged orders hold units once saga_timeout_ms has passed: a saga cut
    // by a partition moving between the nodes (at start, or by the kill) leaves a reservation
    // until its SKU asks the order's partition.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counts = tee(&mut c).await;
    while counts != (20, 20, 60) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counts = tee(&mut c).await;
    }
    assert_eq!(counts, (20, 20, 60), "exactly the acknowledged orders hold units");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_owner_is_fenced_when_it_wakes_and_no_acknowledged_state_diverges() {
    let nats = NatsServer::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // a alone: it hosts every partition.
    let mut a = Serve::serving(node("node-a", &nats.url(), dirs[0].path()));
    let mut admin = Client::login(a.tcp, ADMIN).await;
    assert_eq!(admin.call(sku("tee", 100, None)).await.unwrap()["ok"], true);
    let mut ca = Client::login(a.tcp, SERVICE).await;
    for i in 0..10 {
        buy(&mut ca, &format!("u{i}"), &format!("k{i}"), false).await;
    }
    // a pauses (a GC pause, a stalled VM); b joins and takes the partitions once a's leases run out.
    signal(&a.child, libc::SIGSTOP);
    let late = tokio::spawn(async move {
        // Sent while a is stopped: a handles it only when it wakes, as a deposed owner.
        let r = ca.call(order("late", "tee", 1, "late")).await;
        (ca, r)
    });
    let b = tokio::task::spawn_blocking({
        let (dir, url) = (dirs[1].path().to_path_buf(), nats.url());
        move || Serve::serving(node("node-b", &url, &dir))
    })
    .await
    .unwrap();
    let mut cb = Client::login(b.tcp, SERVICE).await;
    for i in 10..20 {
        buy(&mut cb, &format!("u{i}"), &format!("k{i}"), i % 2 == 0).await;
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
    // b goes on appending: a's late write did not move the partitions' last sequences.
    buy(&mut cb, "u20", "k20", true).await;
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
    let retried = cc.call_retrying(order("late", "tee", 1, "late"), RETRY).await.unwrap();
    assert_eq!(retried["ok"], true, "the late request's key was never used: {retried}");
}
