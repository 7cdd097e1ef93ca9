//! Tests of loading and checking the config (defaults, files, environment overrides).

use super::*;

/// The function library's defaults (used when a caller leaves an argument empty) are the
/// built-in config's: one source, config/default.toml.
#[test]
fn the_library_defaults_agree_with_config_default_toml() {
    let lua = include_str!("../lua/sluice.lua");
    let constant = |name: &str| -> u64 {
        let line = lua
            .lines()
            .find(|l| l.starts_with(&format!("local {name} = ")))
            .unwrap_or_else(|| panic!("{name} not in sluice.lua"));
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let c = Config::defaults();
    assert_eq!(constant("DEFAULT_EVENTS_MAXLEN"), c.queues.events_maxlen);
    assert_eq!(constant("DEFAULT_MAX_BYTES"), c.queues.max_job_bytes as u64);
    assert_eq!(
        constant("DEFAULT_RETENTION_MS"),
        c.queues.retention_secs * 1000
    );
    assert_eq!(constant("DEFAULT_DEAD_MAXLEN"), c.queues.dead_maxlen);
    // And the store's defaults are the config's by construction.
    assert_eq!(crate::StoreSettings::default(), c.store_settings());
}

#[test]
fn built_in_defaults_load() {
    let c = Config::defaults();
    assert_eq!(c.queues.max_job_bytes, 1024 * 1024);
    assert!(c.check().is_ok());
}

#[test]
fn the_annotated_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/example.toml");
    let c = Config::load(Some(&path)).expect("config/example.toml is valid");
    assert_eq!(c.upstreams["openai"].rpm, 5000);
    assert!(c.upstreams["anthropic"].adaptive);
    assert_eq!(
        ModelPrice::of(&c.prices, "gpt-4o-mini").map(|p| p.output_per_mtok),
        Some(15.0)
    );
}

#[test]
fn an_unknown_key_in_a_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[redis]\nurl = \"redis://x\"\npool = 3\n").expect("write");
    let err = Config::load(Some(&path)).expect_err("unknown key must fail");
    assert!(err.to_string().contains("pool"), "{err}");
}

#[test]
fn a_value_of_the_wrong_type_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[worker]\nconcurrency = \"many\"\n").expect("write");
    let err = Config::load(Some(&path)).expect_err("wrong type must fail");
    assert!(err.to_string().contains("concurrency"), "{err}");
}

#[test]
fn a_bad_url_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[redis]\nurl = \"http://x\"\n").expect("write");
    let err = Config::load(Some(&path)).expect_err("bad url must fail");
    assert!(err.to_string().contains("redis.url"), "{err}");
}

#[test]
fn a_negative_price_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[prices.\"gpt-4o\"]\ninput_per_mtok = -2.5\noutput_per_mtok = 10.0\n",
    )
    .expect("write");
    let err = Config::load(Some(&path)).expect_err("a negative price must fail");
    assert!(
        err.to_string().contains("prices") && err.to_string().contains("gpt-4o"),
        "{err}"
    );
}
