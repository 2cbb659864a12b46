//! `config/surge.toml` documents every key with its default: this keeps the file honest.

use serde::Deserialize;
use surge::engine::EngineConfig;
use surge::persistence::PersistenceConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    engine: EngineConfig,
    persistence: PersistenceConfig,
}

#[test]
fn shipped_config_parses_and_states_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/surge.toml");
    let text = std::fs::read_to_string(path).expect("config/surge.toml is shipped");
    let file: File = toml::from_str(&text).expect("config/surge.toml parses");
    assert_eq!(file.engine, EngineConfig::default(), "config/surge.toml [engine] drifted from the defaults");
    assert_eq!(file.persistence, PersistenceConfig::default(), "config/surge.toml [persistence] drifted");
}

#[test]
fn unknown_keys_are_refused() {
    let bad = "[engine]\nshard_cuont = 2\n[persistence]\n";
    assert!(toml::from_str::<File>(bad).is_err(), "a misspelt key must not be silently ignored");
}
