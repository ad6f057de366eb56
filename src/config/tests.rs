//! Unit tests of loading: path resolution, `${VAR}` substitution and secrecy, escaping. The
//! error corpus with its exact messages is in `tests/config_errors/` (run through the binary).

use std::path::Path;

use super::*;

fn parse_with_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let lookup = |name: &str| env.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string());
    parse::parse(text, Path::new("/srv/icewatch/sensors.toml"), &lookup)
}

#[test]
fn the_example_config_loads_with_paths_resolved_against_its_folder() {
    // The repository's sensors.toml: the demo's config, pointing into `demo/`.
    let config = parse_with_env(include_str!("../../sensors.toml"), &[]).expect("example config is valid");
    assert_eq!(config.catalog.uri.expose(), "sqlite:///srv/icewatch/demo/catalog.db");
    assert_eq!(config.catalog.warehouse.as_deref(), Some("/srv/icewatch/demo/warehouse"));
    assert_eq!(config.history.location.redacted(), "/srv/icewatch/demo/icewatch-history.db");
    assert_eq!(config.tables.len(), 3);
    let bronze = config.table("bronze.raw_trades").expect("bronze table");
    assert_eq!(bronze.layer, "bronze");
    assert_eq!(bronze.sensor_kinds().len(), 4);
    let schema = bronze.schema.as_ref().expect("schema sensor");
    assert_eq!(schema.expect.get("quantity").map(String::as_str), Some("long"));
    assert_eq!(config.pipelines[0].stages[2].upstream, vec!["silver".to_string()]);
}

const MINIMAL: &str = "[catalog]\ntype = \"sql\"\nwarehouse = \"/w\"\n";

#[test]
fn variables_are_substituted_anywhere_in_a_string_and_secrets_stay_hidden() {
    let text = format!("{MINIMAL}uri = \"postgres://icewatch:${{PGPASSWORD}}@${{PGHOST}}:5432/catalog\"\n");
    let config = parse_with_env(&text, &[("PGPASSWORD", "hunter2-secret"), ("PGHOST", "db")]).expect("valid");
    assert_eq!(config.catalog.uri.expose(), "postgres://icewatch:hunter2-secret@db:5432/catalog");
    assert!(!format!("{config:?}").contains("hunter2-secret"));
    assert!(config.catalog.uri.redacted().contains("icewatch:***@db"));
}

#[test]
fn an_unset_variable_is_named_and_a_set_secret_never_appears_in_problems() {
    let text = format!(
        "{MINIMAL}uri = \"postgres://u:${{MISSING_PASSWORD}}@db/x\"\n\n[defaults]\ndirection = \"${{SECRET}}\"\n\n\
         [tables.\"a.b\".schema]\nexpect = {{ price = \"${{SECRET}}\" }}\n\n\
         [pipelines.p]\nstages = [{{ stage = \"s\", table = \"${{SECRET}}\" }}]\n"
    );
    let error = parse_with_env(&text, &[("SECRET", "hunter2-secret")]).expect_err("invalid");
    let rendered = error.to_string();
    assert!(rendered.contains("environment variable `MISSING_PASSWORD` is not set"), "{rendered}");
    assert_eq!(error.problems().len(), 4, "{rendered}");
    assert!(!rendered.contains("hunter2-secret"), "{rendered}");
    assert!(rendered.contains("`${SECRET}`"), "{rendered}");
}

#[test]
fn control_and_bidi_characters_are_escaped_in_problems() {
    let text = format!("{MINIMAL}uri = \"sqlite://c.db\"\n[tables.\"ns.a\\u0007b\\u202e\"]\nvolum = {{}}\n");
    let rendered = parse_with_env(&text, &[]).expect_err("invalid").to_string();
    assert!(!rendered.chars().any(|c| c == '\u{7}' || c == '\u{202e}'), "{rendered:?}");
    assert!(rendered.contains(r"ns.a\u{0007}b\u{202e}"), "{rendered}");
}

#[test]
fn escape_invisible_leaves_ordinary_unicode_alone() {
    assert_eq!(reader::escape_invisible("ns.tëst☃"), "ns.tëst☃");
    assert_eq!(reader::escape_invisible("a\nb\u{200b}"), r"a\u{000a}b\u{200b}");
}

#[test]
fn history_retention_reads_its_keys_and_covers_the_longest_windows() {
    let text = format!(
        "{MINIMAL}uri = \"sqlite://c.db\"\n[history]\nretention = \"30d\"\nkeep_points = 50\n\
         sensor_retention = {{ distribution = \"20d\" }}\n\
         [tables.\"a.b\".volume]\nwindow = \"60d\"\npoints = 400\n"
    );
    let config = parse_with_env(&text, &[]).expect("valid");
    let retention = &config.history.retention;
    assert_eq!((retention.max_age(VOLUME), retention.max_age(DISTRIBUTION)), (days(30), days(20)));
    // A 60-day volume window and 400 points need more than the file says: both are raised.
    let covering = retention.covering(&config.tables);
    assert_eq!((covering.max_age(VOLUME), covering.max_age(DISTRIBUTION)), (days(120), days(120)));
    assert_eq!(covering.keep_points, 800);

    let unknown =
        format!("{MINIMAL}uri = \"sqlite://c.db\"\n[history]\nsensor_retention = {{ distributon = \"20d\" }}\n");
    let error = parse_with_env(&unknown, &[]).unwrap_err().to_string();
    assert!(error.contains("unknown sensor kind `distributon` (did you mean `distribution`?)"), "{error}");
}

const VOLUME: &str = "volume";
const DISTRIBUTION: &str = "distribution";

fn days(count: u64) -> Duration {
    Duration::from_secs(count * 86_400)
}

#[test]
fn the_event_time_lag_thresholds_need_an_event_time_column() {
    let text = format!(
        "{MINIMAL}uri = \"sqlite://c.db\"\n[tables.\"a.b\".freshness]\nwarn_after = \"1h\"\nlag_warn_after = \"2h\"\n"
    );
    let error = parse_with_env(&text, &[]).unwrap_err().to_string();
    assert!(error.contains("lag_warn_after`: needs `timestamp_column`"), "{error}");
    let text = format!(
        "{MINIMAL}uri = \"sqlite://c.db\"\n[tables.\"a.b\".freshness]\ntimestamp_column = \"ts\"\nlag_critical_after = \"2h\"\n"
    );
    let freshness = parse_with_env(&text, &[]).expect("valid").tables[0].freshness.clone().unwrap();
    assert_eq!(
        (freshness.lag_warn_after, freshness.lag_critical_after),
        (Some(Duration::from_secs(7200)), Some(Duration::from_secs(7200)))
    );
    assert_eq!(freshness.warn_after, None, "the commit age keeps its own (unset) thresholds");
}

#[test]
fn the_runbook_base_url_defaults_to_the_repository_and_must_be_a_url() {
    let text = format!("{MINIMAL}uri = \"sqlite://c.db\"\n");
    let config = parse_with_env(&text, &[]).expect("valid");
    assert_eq!(config.server.runbook_base_url, crate::runbook::DEFAULT_BASE_URL);
    let text = format!(
        "{MINIMAL}uri = \"sqlite://c.db\"\n[server]\nrunbook_base_url = \"https://wiki.example.org/runbooks/\"\n"
    );
    let config = parse_with_env(&text, &[]).expect("valid");
    assert_eq!(config.server.runbook_base_url, "https://wiki.example.org/runbooks", "the trailing `/` is dropped");
    let text = format!("{MINIMAL}uri = \"sqlite://c.db\"\n[server]\nrunbook_base_url = \"docs/runbooks\"\n");
    let error = parse_with_env(&text, &[]).expect_err("invalid").to_string();
    assert!(
        error.contains("server.runbook_base_url") && error.contains("expected an `http://` or `https://` URL"),
        "{error}"
    );
}
