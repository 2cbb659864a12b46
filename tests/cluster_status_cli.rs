//! `surge cluster status` (the real binary) against a real `nats-server` (started on a free
//! loopback port in a temp dir; the tests fail, never skip, without one on PATH), with a node
//! serving in this process (`surge_cluster::node::serve`).

#[allow(dead_code)] // not every test uses every helper
#[path = "../events/tests/outbox/nats.rs"]
mod nats;

use std::process::{Command, Output};

use nats::NatsServer;
use serde_json::Value;
use surge_cluster::node::{serve, Serving};
use surge_cluster::ClusterConfig;
use surge_engine::{CreateOrder, Decimal, SaleRules, SkuSpec};

const PARTITIONS: u32 = 3;

/// A node serving partitions `0..PARTITIONS` on `url`, with a SKU and a few orders journaled.
async fn node(url: &str, id: &str) -> Serving {
    let cluster = ClusterConfig {
        nats_urls: url.into(),
        node_id: id.into(),
        partitions: PARTITIONS,
        replicas: 1,
        lease_ms: 600,
        safety_ms: 200,
        ..ClusterConfig::default()
    };
    let js = surge_cluster::status::connect(&cluster).await.expect("connect");
    let node = serve(js.client(), cluster.node()).await.expect("the node serves");
    let e = node.engine().clone();
    tokio::task::spawn_blocking(move || {
        let spec = SkuSpec {
            sku_id: "tee".into(),
            name: "Tee".into(),
            price: Decimal::new(1_500, 2),
            initial_stock: 50,
            rules: SaleRules::default(),
        };
        e.create_sku(spec).wait().expect("sku");
        for i in 0..6 {
            e.create_order(CreateOrder::new(&format!("u{i}"), &[("tee", 1)], &format!("k{i}"))).wait().expect("order");
        }
    })
    .await
    .expect("join");
    node
}

/// `surge cluster status <args>` with a config file of `[cluster] partitions = 3, replicas = 1`
/// whose `nats_urls` (a closed port) the arguments override.
fn status(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("surge.toml");
    std::fs::write(&config, "[cluster]\nnats_urls = \"nats://127.0.0.1:1\"\npartitions = 3\nreplicas = 1\n")
        .expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_surge"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SURGE_CLUSTER_")) {
        cmd.env_remove(k);
    }
    cmd.args(["cluster", "status", "--config"])
        .arg(&config)
        .args(args)
        .env("SURGE_CLUSTER_LEASE_MS", "600")
        .env("SURGE_CLUSTER_SAFETY_MS", "200")
        .output()
        .expect("run surge cluster status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_names_the_owner_of_every_partition() {
    let nats = NatsServer::start();
    let node = node(&nats.url(), "node-a").await;
    let out = status(&["--json", "--cluster-nats-urls", &nats.url()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let partitions = v["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), PARTITIONS as usize, "[cluster] partitions from the file: {v}");
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i, "{p}");
        assert_eq!(p["owner"], "node-a", "{p}");
        assert_eq!(p["held"], true, "{p}");
        assert_eq!(p["stale"], false, "{p}");
        assert!(p["epoch"].as_u64() >= Some(1), "{p}");
        assert!(p["lease_age_ms"].as_i64().is_some(), "{p}");
    }
    let written: Vec<_> = partitions.iter().filter(|p| p["last_seq"].as_u64() > Some(0)).collect();
    assert!(!written.is_empty(), "the SKU and the orders were journaled: {v}");
    assert!(written.iter().all(|p| p["last_append_age_ms"].as_i64().is_some() && p["messages"].as_u64() > Some(0)));
    assert_eq!(v["stream"]["exists"], true, "{v}");
    assert_eq!(v["nodes"][0]["node_id"], "node-a", "{v}");
    assert_eq!(v["nodes"][0]["partitions_held"], PARTITIONS, "{v}");
    node.stop().await;
    let out = status(&["--json", "--cluster-nats-urls", &nats.url()]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON after the stop");
    assert!(v["partitions"].as_array().is_some_and(|ps| ps.iter().all(|p| p["held"] == false)), "released: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_has_one_row_per_partition() {
    let nats = NatsServer::start();
    let node = node(&nats.url(), "node-t").await;
    let out = status(&["--cluster-nats-urls", &nats.url()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    let header = stdout.lines().find(|l| l.starts_with("partition")).expect("header");
    for column in ["owner", "epoch", "held", "lease age ms", "last seq", "messages", "last append age ms"] {
        assert!(header.contains(column), "{header}");
    }
    let rows: Vec<&str> = stdout.lines().filter(|l| l.split_whitespace().nth(1) == Some("node-t")).collect();
    assert_eq!(rows.len(), PARTITIONS as usize, "{stdout}");
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!((cells[0], cells[3]), (i.to_string().as_str(), "yes"), "{row}");
    }
    node.stop().await;
}

#[test]
fn an_unreachable_server_exits_1_with_a_message() {
    // The file's closed port: no --cluster-nats-urls.
    let out = status(&["--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect to NATS at nats://127.0.0.1:1"), "{stderr}");
    assert!(out.stdout.is_empty());
}
