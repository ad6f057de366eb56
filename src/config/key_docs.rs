//! Test-only: `docs/configuration.md` and the sections' key tables say the same thing. Every key
//! of every table is a row of its section's table in the docs with the same default and meaning,
//! every documented row is a key the parser accepts, and every default written as a TOML value
//! is the one the parser applies.

use std::path::Path;

use super::reader::Key;
use super::sections::TOP_LEVEL_KEYS;
use super::sections::pipelines::{DATASET_RULE_KEYS, LINEAGE_KEYS, PIPELINE_KEYS, STAGE_KEYS};
use super::sections::sensors::{DISTRIBUTION_KEYS, DRIFT_KEYS, FRESHNESS_KEYS, SCHEMA_KEYS, VOLUME_KEYS};
use super::sections::service::{CATALOG_KEYS, HISTORY_KEYS, PUSHGATEWAY_KEYS, SERVER_KEYS};
use super::sections::tables::{DEFAULTS_KEYS, SENSOR_COMMON_KEYS, TABLE_KEYS, declared_kinds};

const DOCS: &str = include_str!("../../docs/configuration.md");

/// Where each key table is documented: the heading (or the `... keys:` line) above its table.
const FIXED: &[(&str, &[Key])] = &[
    ("`[catalog]`", CATALOG_KEYS),
    ("`[history]`", HISTORY_KEYS),
    ("`[server]`", SERVER_KEYS),
    ("`[pushgateway]`", PUSHGATEWAY_KEYS),
    ("`[defaults]`", DEFAULTS_KEYS),
    ("`[tables.\"ns.name\"]`", TABLE_KEYS),
    ("Common sensor keys", SENSOR_COMMON_KEYS),
    ("`[tables.\"ns.name\".freshness]`", FRESHNESS_KEYS),
    ("`[tables.\"ns.name\".volume]`", VOLUME_KEYS),
    ("`[tables.\"ns.name\".schema]`", SCHEMA_KEYS),
    ("`[tables.\"ns.name\".distribution]`", DISTRIBUTION_KEYS),
    ("`drift` keys:", DRIFT_KEYS),
    ("`[pipelines.NAME]`", PIPELINE_KEYS),
    ("Stage keys:", STAGE_KEYS),
    ("`[lineage]`", LINEAGE_KEYS),
    ("`datasets` rule keys:", DATASET_RULE_KEYS),
];

const TABLES_CONTEXT: &str = "`[tables.\"ns.name\"]`";

/// [`FIXED`] with the kinds that declare their own section (`Sensor::section`): its keys under
/// `[tables."ns.name".KIND]`, and its row in the `[tables."ns.name"]` table.
fn documented() -> Vec<(String, Vec<Key>)> {
    let kinds = declared_kinds();
    let mut documented: Vec<(String, Vec<Key>)> =
        FIXED.iter().map(|(context, keys)| (context.to_string(), keys.to_vec())).collect();
    for (context, keys) in &mut documented {
        if context == TABLES_CONTEXT {
            keys.extend(kinds.sections.iter().map(|(kind, spec)| Key {
                name: kind.as_str(),
                default: "none",
                doc: spec.doc,
            }));
        }
    }
    for (kind, spec) in &kinds.sections {
        documented.push((format!("`[tables.\"ns.name\".{kind}]`"), spec.keys.to_vec()));
    }
    documented
}

/// One row of a key table in the docs.
struct Row {
    /// The heading or `... keys:` line the table is under.
    context: String,
    key: String,
    default: String,
    meaning: String,
}

/// The rows of every `| key | ... | default | meaning |` table of the docs (code blocks skipped).
fn documented_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut context = String::new();
    let mut in_code = false;
    for line in DOCS.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code {
        } else if line.starts_with('#') {
            context = line.trim_start_matches('#').trim().to_string();
        } else if line.ends_with("keys:") {
            context = line.trim().to_string();
        } else if line.starts_with("| `") {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            assert!(cells.len() >= 3, "a key row needs key, default and meaning: {line}");
            let key = cells[0].strip_prefix('`').and_then(|key| key.strip_suffix('`'));
            let key = key.unwrap_or_else(|| panic!("the key cell is not a single `key`: {line}"));
            rows.push(Row {
                context: context.clone(),
                key: key.to_string(),
                default: cells[cells.len() - 2].to_string(),
                meaning: cells[cells.len() - 1].to_string(),
            });
        }
    }
    rows
}

#[test]
fn every_key_table_is_the_docs_table_of_its_section() {
    let rows = documented_rows();
    let documented = documented();
    let mut problems = Vec::new();
    for (context, keys) in &documented {
        if !rows.iter().any(|row| row.context == *context) {
            problems.push(format!("no key table under {context}"));
        }
        for key in keys {
            match rows.iter().find(|row| row.context == *context && row.key == key.name) {
                None => problems.push(format!("{context}: key `{}` is not documented", key.name)),
                Some(row) => {
                    if row.default != key.default {
                        problems.push(format!(
                            "{context}: `{}` default is {:?} in the docs, {:?} in its table",
                            key.name, row.default, key.default
                        ));
                    }
                    if row.meaning != key.doc {
                        problems.push(format!(
                            "{context}: `{}` means {:?} in the docs, {:?} in its table",
                            key.name, row.meaning, key.doc
                        ));
                    }
                }
            }
        }
    }
    for row in &rows {
        match documented.iter().find(|(context, _)| *context == row.context) {
            None => {
                problems.push(format!("`{}` is documented under {}, whose keys no table knows", row.key, row.context))
            }
            Some((context, keys)) if !keys.iter().any(|key| key.name == row.key) => {
                problems.push(format!("{context}: documented key `{}` is not in its table", row.key));
            }
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "docs/configuration.md and the key tables disagree:\n{}", problems.join("\n"));
}

#[test]
fn every_section_has_its_heading_and_is_described_as_its_key_says() {
    let lines: Vec<&str> = DOCS.lines().collect();
    let mut problems = Vec::new();
    let mut documented = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(heading) = line.strip_prefix("## `[") else { continue };
        let name: String = heading.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let paragraph: Vec<&str> = lines[index + 1..]
            .iter()
            .map(|line| line.trim())
            .skip_while(|line| line.is_empty())
            .take_while(|line| !line.is_empty())
            .collect();
        documented.push((name, paragraph.join(" ")));
    }
    for key in TOP_LEVEL_KEYS {
        match documented.iter().find(|(name, _)| name == key.name) {
            None => problems.push(format!("no `## [{}...]` section", key.name)),
            Some((_, paragraph)) if !paragraph.starts_with(key.doc) => {
                problems.push(format!("`[{}]` is described as {paragraph:?}, its key says {:?}", key.name, key.doc));
            }
            Some(_) => {}
        }
    }
    for (name, _) in &documented {
        if !TOP_LEVEL_KEYS.iter().any(|key| key.name == name) {
            problems.push(format!("section `[{name}]` is documented but not a top-level key"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A config with every section the defaults test writes keys into; `# <section>` marks where
/// (and `@stage`, `@rule` inside the inline tables, removed when unused).
const EVERY_SECTION: &str = r#"
[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "warehouse"
# catalog

[history]
# history

[server]
# server

[pushgateway]
url = "http://127.0.0.1:9091"
# pushgateway

[defaults]
# defaults

[tables."a.b"]
# table

[tables."a.b".volume]
# volume

[tables."a.b".schema]
# schema

[tables."a.b".distribution]
columns = { x = ["mean"] }
# distribution

[tables."a.b".distribution.drift]
# drift

[pipelines.p]
stages = [{ stage = "s", table = "a.b"@stage }]

[lineage]
datasets = [{ namespace = "n"@rule }]
"#;

#[test]
fn every_default_written_as_a_value_is_the_one_the_parser_applies() {
    let kinds = declared_kinds();
    let mut every_section = EVERY_SECTION.to_string();
    for (kind, _) in &kinds.sections {
        every_section.push_str(&format!("\n[tables.\"a.b\".{kind}]\n# {kind}\n"));
    }
    let markers: Vec<String> = kinds.sections.iter().map(|(kind, _)| format!("# {kind}")).collect();
    let mut tables: Vec<(&str, &[Key])> = vec![
        ("# catalog", CATALOG_KEYS),
        ("# history", HISTORY_KEYS),
        ("# server", SERVER_KEYS),
        ("# pushgateway", PUSHGATEWAY_KEYS),
        ("# defaults", DEFAULTS_KEYS),
        ("# table", TABLE_KEYS),
        ("# volume", VOLUME_KEYS),
        ("# schema", SCHEMA_KEYS),
        ("# distribution", DISTRIBUTION_KEYS),
        ("# drift", DRIFT_KEYS),
        ("@stage", STAGE_KEYS),
        ("@rule", DATASET_RULE_KEYS),
    ];
    tables.extend(markers.iter().zip(&kinds.sections).map(|(marker, (_, spec))| (marker.as_str(), spec.keys)));
    let load = |text: &str| {
        let text = &text.replace("@stage", "").replace("@rule", "");
        let config = super::parse::parse(text, Path::new("/srv/icewatch/sensors.toml"), &|_| None);
        format!("{:?}", config.unwrap_or_else(|error| panic!("{error}\n{text}")))
    };
    let baseline = load(&every_section);
    let mut checked = 0;
    let mut problems = Vec::new();
    for (marker, keys) in tables {
        for key in keys {
            // A default written as a TOML value (`` `"30s"` ``, `` `3` ``, `` `{}` ``); the rest
            // (`required`, `none`, `` `defaults.window` ``, ...) names no value.
            let Some(value) = key.default.strip_prefix('`').and_then(|value| value.strip_suffix('`')) else {
                continue;
            };
            if value.parse::<toml_edit::Value>().is_err() {
                continue;
            }
            let setting = if marker.starts_with('@') {
                format!(", {} = {value}", key.name)
            } else {
                format!("{} = {value}", key.name)
            };
            let text = every_section.replacen(marker, &setting, 1);
            if load(&text) != baseline {
                problems.push(format!("`{} = {value}` ({marker}) changes the loaded config", key.name));
            }
            checked += 1;
        }
    }
    assert!(problems.is_empty(), "documented defaults the parser does not apply:\n{}", problems.join("\n"));
    assert!(checked >= 25, "only {checked} defaults checked");
}
