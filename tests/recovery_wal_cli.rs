//! `surge wal inspect` and `surge wal dump` on a real data directory, through the real binary.

use std::process::Command;

use surge::engine::{CreateOrder, EngineConfig, SaleRules, SkuSpec};
use surge::persistence::{DurableEngine, PersistenceConfig};

fn make_data(dir: &std::path::Path) -> u64 {
    let db = DurableEngine::open(PersistenceConfig::new(dir), EngineConfig::default()).expect("open");
    let e = db.engine();
    let spec = SkuSpec {
        sku_id: "A".into(),
        name: "A".into(),
        price: "2.50".parse().expect("decimal"),
        initial_stock: 10,
        rules: SaleRules::default(),
    };
    e.create_sku(spec).wait().expect("sku");
    for i in 0..3 {
        let o = e.create_order(CreateOrder::new(&format!("u{i}"), &[("A", 1)], "k")).wait().expect("order");
        e.pay(o.order_id, &format!("p{i}"), o.total, Default::default()).wait().expect("pay");
    }
    // 1 sku_created + 3 × (reserved, order_created, order_transitioned, confirmed)
    db.close_without_snapshot();
    13
}

#[test]
fn inspect_counts_events_by_type_and_dump_prints_them_as_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = make_data(dir.path());
    let bin = env!("CARGO_BIN_EXE_surge");

    let out = Command::new(bin)
        .args(["wal", "inspect", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run surge wal inspect");
    assert!(out.status.success(), "inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    assert_eq!(summary["events"], events);
    assert_eq!(summary["events_by_type"]["order_created"], 3);
    assert_eq!(summary["events_by_type"]["confirmed"], 3);
    assert_eq!(summary["events_by_type"]["sku_created"], 1);
    assert!(summary["lsn_first"].as_u64().is_some() && summary["lsn_last"].as_u64() >= summary["lsn_first"].as_u64());

    let out =
        Command::new(bin).args(["wal", "dump", "--data-dir"]).arg(dir.path()).output().expect("run surge wal dump");
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every dump line is JSON"))
        .collect();
    assert_eq!(lines.len() as u64, events);
    assert!(lines.windows(2).all(|w| w[0]["lsn"].as_u64() <= w[1]["lsn"].as_u64()), "log order");
    let paid = lines.iter().filter(|l| l["event"]["Order"]["Transitioned"]["to"] == "paid").count();
    assert_eq!(paid, 3);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"2.50\""), "money is a string in dumps");
}

#[test]
fn inspect_of_a_directory_without_a_wal_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["wal", "inspect", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no WAL"));
}
