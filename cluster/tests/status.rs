//! `surge cluster status`'s reader on a real `nats-server` (started on a free loopback port in a
//! temp dir; the tests fail, never skip, without one on PATH).

#[allow(dead_code)] // not every test uses every helper
#[path = "../../events/tests/outbox/nats.rs"]
mod nats;

use nats::NatsServer;
use surge_cluster::node::{serve, NodeConfig};
use surge_cluster::status::{cluster_status, connect};
use surge_cluster::ClusterConfig;
use surge_engine::{CreateOrder, Decimal, Engine, SaleRules, SkuSpec};

const PARTITIONS: u32 = 3;

/// A small cluster: 3 partitions, one replica, leases of 600 ms (as `[cluster]` says it; the
/// status reader needs no node id).
fn cluster_cfg(url: &str) -> ClusterConfig {
    ClusterConfig {
        nats_urls: url.into(),
        partitions: PARTITIONS,
        replicas: 1,
        lease_ms: 600,
        safety_ms: 200,
        ..ClusterConfig::default()
    }
}

/// The node `id`'s settings in that cluster.
fn node_cfg(url: &str, id: &str) -> NodeConfig {
    ClusterConfig { node_id: id.into(), ..cluster_cfg(url) }.node()
}

async fn client(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("connect")
}

/// Create the phone SKU and sell `n` orders of one unit on `e` (blocking calls off the runtime).
async fn sell(e: &Engine, n: usize) {
    let e = e.clone();
    tokio::task::spawn_blocking(move || {
        let spec = SkuSpec {
            sku_id: "phone".into(),
            name: "Phone".into(),
            price: Decimal::new(99_900, 2),
            initial_stock: 100,
            rules: SaleRules::default(),
        };
        e.create_sku(spec).wait().expect("sku");
        for i in 0..n {
            e.create_order(CreateOrder::new(&format!("u-{i}"), &[("phone", 1)], &format!("k-{i}")))
                .wait()
                .expect("order");
        }
    })
    .await
    .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_owner_leases_sequences_and_nodes_and_a_release() {
    let nats = NatsServer::start();
    let node = serve(client(&nats.url()).await, node_cfg(&nats.url(), "node-a")).await.expect("node a serves");
    sell(node.engine(), 12).await;
    let cfg = cluster_cfg(&nats.url());
    let reader = connect(&cfg).await.expect("connect");
    let s = cluster_status(&reader, &cfg).await.expect("status");
    print!("{}", s.render_table());

    assert_eq!(s.partitions.len(), PARTITIONS as usize);
    let node_seen = s.nodes.iter().find(|n| n.node_id == "node-a").expect("node-a in the node list");
    assert_eq!(s.nodes.len(), 1, "{:?}", s.nodes);
    assert_eq!(node_seen.partitions_held, PARTITIONS, "{node_seen:?}");
    assert!(node_seen.revision > 0 && node_seen.key_age_ms < 5_000, "{node_seen:?}");
    let mut appended = 0;
    for (i, p) in s.partitions.iter().enumerate() {
        assert_eq!(p.partition as usize, i);
        assert_eq!(p.owner.as_deref(), Some("node-a"), "{p:?}");
        assert!(p.held && !p.stale, "{p:?}");
        assert!(p.epoch >= Some(1), "{p:?}");
        assert!(p.incarnation.is_some() && p.incarnation == node_seen.incarnation, "{p:?} {node_seen:?}");
        assert!(p.lease_revision > Some(0), "{p:?}");
        // Renewed every 200 ms: far younger than the lease.
        assert!(p.lease_age_ms.is_some_and(|a| (-1_000..600).contains(&a)), "{p:?}");
        assert!(p.last_seq <= s.stream.last_seq, "{p:?}");
        assert_eq!(p.last_seq > 0, p.messages > 0, "{p:?}");
        assert_eq!(p.last_seq > 0, p.last_append_age_ms.is_some(), "{p:?}");
        appended += p.messages;
    }
    // The SKU and 12 orders, over the shards: some partitions got group commits.
    assert!(s.partitions.iter().any(|p| p.last_seq > 0), "{s:?}");
    assert!(s.stream.exists && s.stream.name == "SURGE_PARTITIONS", "{:?}", s.stream);
    assert_eq!(appended, s.stream.messages, "per-partition counts add up to the stream's");
    assert_eq!(s.partitions.iter().map(|p| p.last_seq).max(), Some(s.stream.last_seq));
    let table = s.render_table();
    assert_eq!(table.lines().filter(|l| l.contains("node-a")).count(), PARTITIONS as usize + 1, "{table}");

    node.stop().await;
    let after = cluster_status(&reader, &cfg).await.expect("status after stop");
    for p in &after.partitions {
        assert!(!p.held && !p.stale, "released: {p:?}");
        assert_eq!(p.owner.as_deref(), Some("node-a"), "the last holder is still named: {p:?}");
    }
    assert_eq!(after.nodes.iter().map(|n| n.partitions_held).sum::<u32>(), 0, "{:?}", after.nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_lease_shows_stale_and_status_creates_nothing() {
    let nats = NatsServer::start();
    let cfg = cluster_cfg(&nats.url());
    let reader = connect(&cfg).await.expect("connect");
    // No node yet: nothing is owned, and reading creates neither the bucket nor the stream.
    let empty = cluster_status(&reader, &cfg).await.expect("status of an empty cluster");
    assert!(empty.partitions.iter().all(|p| p.owner.is_none() && !p.held && p.last_seq == 0), "{empty:?}");
    assert!(empty.nodes.is_empty() && !empty.stream.exists, "{empty:?}");
    assert!(reader.get_stream("SURGE_PARTITIONS").await.is_err(), "status must not create the stream");
    assert!(reader.get_stream("KV_SURGE_LEASES").await.is_err(), "status must not create the bucket");

    let node = serve(client(&nats.url()).await, node_cfg(&nats.url(), "node-c")).await.expect("node c serves");
    node.crash().await;
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let s = cluster_status(&reader, &cfg).await.expect("status");
    for p in &s.partitions {
        assert!(p.held && p.stale, "held in the key but not renewed for > lease_ms: {p:?}");
        assert!(p.lease_age_ms.is_some_and(|a| a >= 600), "{p:?}");
    }
    assert!(s.render_table().contains("stale"));
}

#[tokio::test]
async fn no_servers_is_an_error() {
    let err = connect(&ClusterConfig::default()).await.expect_err("no URL, no connection");
    assert!(err.to_string().contains("--cluster-nats-urls"), "{err}");
}
