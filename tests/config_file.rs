//! `config/surge.toml` documents every key with its default: this keeps the file honest.

use serde::Deserialize;
use surge::engine::EngineConfig;
use surge::gateway::{AuthConfig, FileConfig, LimitsConfig, MetricsConfig, ServerConfig};
use surge::persistence::PersistenceConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    engine: EngineConfig,
    persistence: PersistenceConfig,
    server: ServerConfig,
    limits: LimitsConfig,
    auth: AuthConfig,
    metrics: MetricsConfig,
    events: surge::events::EventsConfig,
    cluster: surge::gateway::ClusterConfig,
}

#[test]
fn shipped_config_parses_and_states_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/surge.toml");
    let text = std::fs::read_to_string(path).expect("config/surge.toml is shipped");
    let file: File = toml::from_str(&text).expect("config/surge.toml parses");
    assert_eq!(file.engine, EngineConfig::default(), "config/surge.toml [engine] drifted from the defaults");
    assert_eq!(file.persistence, PersistenceConfig::default(), "config/surge.toml [persistence] drifted");
    assert_eq!(file.server, ServerConfig::default(), "config/surge.toml [server] drifted");
    assert_eq!(file.limits, LimitsConfig::default(), "config/surge.toml [limits] drifted");
    assert_eq!(file.auth, AuthConfig::default(), "config/surge.toml [auth] drifted");
    assert_eq!(file.metrics, MetricsConfig::default(), "config/surge.toml [metrics] drifted");
    assert_eq!(file.events, surge::events::EventsConfig::default(), "config/surge.toml [events] drifted");
    assert_eq!(file.cluster, surge::gateway::ClusterConfig::default(), "config/surge.toml [cluster] drifted");
    // Every key is written out: the file has exactly the keys of the defaults.
    let keys = |v: toml::Value| -> Vec<String> {
        v.as_table()
            .unwrap()
            .iter()
            .flat_map(|(t, v)| v.as_table().unwrap().keys().map(move |k| format!("{t}.{k}")))
            .collect()
    };
    let written = keys(toml::from_str(&text).unwrap());
    let defaults = keys(toml::Value::try_from(FileConfig::default()).unwrap());
    let mut w = written.clone();
    let mut d = defaults.clone();
    w.sort();
    d.sort();
    assert_eq!(w, d, "config/surge.toml must state every key");
    // The server reads the same file.
    assert_eq!(FileConfig::from_toml(&text).unwrap(), FileConfig::default());
}

#[test]
fn environment_overrides_apply_per_key() {
    let mut cfg = FileConfig::default();
    let env = |k: &str| match k {
        "SURGE_LIMITS_MAX_IN_FLIGHT" => Some("7".to_string()),
        "SURGE_PERSISTENCE_DURABILITY" => Some("os".to_string()),
        "SURGE_SERVER_TCP_ADDR" => Some("127.0.0.1:9999".to_string()),
        "SURGE_ADMIN_TOKEN" => Some("admin-secret-1".to_string()),
        "SURGE_METRICS_ADDR" => Some("127.0.0.1:9999".to_string()),
        "SURGE_METRICS_ENABLED" => Some("false".to_string()),
        _ => None,
    };
    cfg.apply_env(env).unwrap();
    assert_eq!(cfg.limits.max_in_flight, 7);
    assert_eq!(cfg.persistence.durability, surge::persistence::Durability::Os);
    assert_eq!(cfg.server.tcp_addr, "127.0.0.1:9999");
    assert_eq!(cfg.auth.admin_tokens, vec!["admin-secret-1".to_string()]);
    assert_eq!(cfg.metrics.addr, "127.0.0.1:9999");
    assert!(!cfg.metrics.enabled);
    let bad = |k: &str| (k == "SURGE_LIMITS_MAX_IN_FLIGHT").then(|| "many".to_string());
    assert!(FileConfig::default().apply_env(bad).is_err());
}

#[test]
fn unknown_keys_are_refused() {
    let bad = "[engine]\nshard_cuont = 2\n[persistence]\n";
    assert!(toml::from_str::<File>(bad).is_err(), "a misspelt key must not be silently ignored");
    assert!(FileConfig::from_toml("[limits]\nmax_in_fligth = 2\n").is_err());
}
