//! What users read, pinned as snapshots: the `check` text report, the `check --format json`
//! output and the `/metrics` body, all from one fixed table (14 hourly appends written by the
//! iceberg crate and re-timed to January 2026, the last one three times the usual size with a
//! shifted `amount` and a new category). A change to a message, a verdict, a band or a metric
//! name shows up here as a snapshot diff to review.
//!
//! Values that depend on when the test runs are replaced before comparing: snapshot ids
//! (random per write) by their order of appearance, and the run's own time by `[now]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::arrow::record_batch::RecordBatch;
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use serde_json::Value;

use crate::common;

/// 2026-01-05T00:00:00Z: the first append; one append per hour after it.
const FIRST_APPEND_MS: i64 = 1_767_571_200_000;
const HOUR_MS: i64 = 3_600_000;
const ROWS: [i64; 14] = [100, 104, 97, 102, 99, 101, 98, 103, 100, 96, 102, 99, 101, 300];

/// Writes `fixed.orders` under `dir` and two configs over it, each with its own history store
/// (so each reader sees the table for the first time). Returns (config for `check`, config for
/// the in-process pipeline).
async fn fixed_table(dir: &Path) -> (PathBuf, PathBuf) {
    let catalog_uri = format!("sqlite://{}/catalog.db?mode=rwc", dir.display());
    let catalog = icewatch::demo::open_sql_catalog(&catalog_uri, &dir.join("warehouse"), "default").await.unwrap();
    let namespace = NamespaceIdent::new("fixed".to_string());
    catalog.create_namespace(&namespace, Default::default()).await.unwrap();
    let schema = Schema::builder()
        .with_fields(vec![
            Arc::new(NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long))),
            Arc::new(NestedField::optional(2, "amount", Type::Primitive(PrimitiveType::Double))),
            Arc::new(NestedField::optional(3, "category", Type::Primitive(PrimitiveType::String))),
        ])
        .build()
        .unwrap();
    let arrow = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("category", DataType::Utf8, true),
    ]));
    let ident = TableIdent::new(namespace.clone(), "orders".to_string());
    let creation = TableCreation::builder().name("orders".to_string()).schema(schema).build();
    catalog.create_table(&namespace, creation).await.unwrap();
    let mut next_id = 0;
    for (batch_index, &count) in ROWS.iter().enumerate() {
        let last = batch_index == ROWS.len() - 1;
        let offset = if last { 150.0 } else { 50.0 };
        let categories: &[&str] = if last { &["a", "b", "c", "d"] } else { &["a", "b", "c"] };
        let batch =
            RecordBatch::try_new(
                arrow.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(next_id..next_id + count)),
                    Arc::new(Float64Array::from_iter((0..count).map(|row| {
                        (row % 20 != 7).then(|| offset + ((row * 37 + batch_index as i64 * 11) % 40) as f64)
                    }))),
                    Arc::new(StringArray::from_iter_values(
                        (0..count).map(|row| categories[row as usize % categories.len()]),
                    )),
                ],
            )
            .unwrap();
        icewatch::demo::append_batch(&catalog, &ident, batch).await.unwrap();
        next_id += count;
    }
    let times: Vec<i64> = (0..ROWS.len() as i64).map(|index| FIRST_APPEND_MS + index * HOUR_MS).collect();
    icewatch::demo::rewrite_table_metadata(&catalog_uri, "default", &ident, |metadata| {
        icewatch::demo::retime_snapshots(metadata, &times)
    })
    .await
    .unwrap();
    let config = |history: &str| {
        let path = dir.join(format!("{history}.toml"));
        let text = format!(
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"warehouse\"\nname = \"default\"\n\n\
             [history]\npath = \"{history}.db\"\n\n[defaults]\nmin_history = 5\n\n\
             [tables.\"fixed.orders\"]\nlayer = \"bronze\"\n\n\
             [tables.\"fixed.orders\".volume]\ndeviation_percent = 20\nwindow = \"30d\"\n\n\
             [tables.\"fixed.orders\".schema]\nexpect = {{ id = \"long\", amount = \"double\" }}\n\n\
             [tables.\"fixed.orders\".distribution]\n\
             columns = {{ amount = [\"mean\", \"max\", \"null_percent\"], category = [\"distinct_count\"] }}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    (config("check"), config("service"))
}

/// Replaces snapshot ids by `[snapshot N]` (N in order of first appearance) and times outside
/// the fixed table's January 2026 by `[now]`.
fn normalize(value: &mut Value, snapshots: &mut HashMap<i64, usize>) {
    match value {
        Value::Object(object) => {
            for (key, field) in object.iter_mut() {
                match (key.as_str(), &*field) {
                    ("snapshot_id", Value::Number(number)) => {
                        let id = number.as_i64().unwrap();
                        let next = snapshots.len() + 1;
                        *field = Value::String(format!("[snapshot {}]", snapshots.entry(id).or_insert(next)));
                    }
                    ("observed_at", Value::String(time)) if !time.starts_with("2026-01-") => {
                        *field = Value::String("[now]".to_string());
                    }
                    _ => normalize(field, snapshots),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| normalize(item, snapshots)),
        _ => {}
    }
}

fn check(config: &Path, format: &str) -> (i32, String) {
    let (code, stdout, stderr) =
        common::run(Command::new(common::icewatch_bin()).args(["check", "--format", format, "--config"]).arg(config));
    assert!(!stdout.is_empty(), "check --format {format} printed nothing\nstderr:\n{stderr}");
    (code, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_and_metrics_of_a_fixed_table() {
    let dir = tempfile::tempdir().unwrap();
    let (check_config, service_config) = fixed_table(dir.path()).await;

    let (code, text) = check(&check_config, "text");
    assert_eq!(code, 1, "the spike is a problem at the default --fail-on\n{text}");
    insta::assert_snapshot!("check_text", text);

    // A second store, so the JSON report is a first sight too and matches the text one.
    let json_config = dir.path().join("json.toml");
    std::fs::write(&json_config, common::read(&check_config).replace("check.db", "json.db")).unwrap();
    let (_, json) = check(&json_config, "json");
    let mut report: Value = serde_json::from_str(&json).unwrap();
    normalize(&mut report, &mut HashMap::new());
    insta::assert_snapshot!("check_json", serde_json::to_string_pretty(&report).unwrap());

    let config = Arc::new(icewatch::config::Config::load(&service_config).unwrap());
    let metrics = Arc::new(icewatch::export::metrics::Metrics::new());
    let pipeline = icewatch::pipeline::Pipeline::new(config, metrics.clone()).await.unwrap();
    pipeline.run_all(&[]).await;
    // The families a run sets from its results; the service's own (durations, build, clock) vary.
    let encoded = metrics.encode();
    let body: Vec<&str> = encoded.lines().filter(|line| is_data_line(line)).collect();
    insta::assert_snapshot!("metrics_body", body.join("\n"));
}

fn is_data_line(line: &str) -> bool {
    let name = line.trim_start_matches("# HELP ").trim_start_matches("# TYPE ");
    ["data_", "schema_", "icewatch_result_severity", "icewatch_result_message_info", "icewatch_seasonality_info"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}
