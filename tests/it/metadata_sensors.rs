//! The metadata sensors (freshness, volume, schema) end to end: real tables written by PyIceberg
//! (`tests/python/metadata_tables.py`) and by the iceberg crate in a temp dir, checked by the
//! `icewatch` binary (`check --format json`, and `run` for the `/metrics` counters).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::arrow::record_batch::RecordBatch;
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use serde_json::Value;

use crate::common;

const DAY_MS: i64 = 86_400_000;

/// Runs `tests/python/metadata_tables.py <dir> <args>` and returns its JSON line.
fn pyiceberg(dir: &Path, args: &[&str]) -> Value {
    let script = common::repo_root().join("tests/python/metadata_tables.py");
    let (code, stdout, stderr) = common::run(Command::new(common::python()).arg(script).arg(dir).args(args));
    assert_eq!(code, 0, "metadata_tables.py {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("bad JSON from metadata_tables.py: {error}\n{stdout}"))
}

/// A sensors.toml over the SQL catalog in `dir` with freshness, volume and schema on `tables`.
fn write_config(dir: &Path, file: &str, catalog_file: &str, tables: &[&str], extra: &str) -> PathBuf {
    let mut text = format!(
        "[catalog]\ntype = \"sql\"\nuri = \"sqlite://{catalog_file}\"\nwarehouse = \"warehouse\"\nname = \"default\"\n\n\
         [history]\npath = \"history.db\"\n\n[defaults]\nmin_history = 5\nschedule = \"*/2 * * * * *\"\n{extra}\n"
    );
    for table in tables {
        text.push_str(&format!(
            "\n[tables.\"{table}\".freshness]\nwarn_after = \"1d\"\ncritical_after = \"2d\"\n\
             \n[tables.\"{table}\".volume]\ndeviation_percent = 20\nwindow = \"30d\"\n\
             \n[tables.\"{table}\".schema]\n"
        ));
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// `icewatch check --format json`: (exit code, report).
fn check(config: &Path) -> (i32, Value) {
    let (code, stdout, stderr) =
        common::run(Command::new(common::icewatch_bin()).args(["check", "--format", "json", "--config"]).arg(config));
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("check printed no JSON ({error})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    (code, report)
}

fn results(report: &Value) -> &Vec<Value> {
    report["results"].as_array().expect("`results` is an array")
}

/// The one result of `table`/`sensor`/`metric` (panics when there is not exactly one).
fn one<'r>(report: &'r Value, table: &str, sensor: &str, metric: &str) -> &'r Value {
    let found: Vec<&Value> = results(report)
        .iter()
        .filter(|result| result["table"] == table && result["sensor"] == sensor && result["metric"] == metric)
        .collect();
    assert_eq!(found.len(), 1, "{table} {sensor} {metric}: {found:#?}\nall: {report:#}");
    found[0]
}

fn status(result: &Value) -> &str {
    result["status"].as_str().unwrap()
}

/// Every result has the documented fields, with `null` (not a missing key) where absent.
fn assert_result_shape(report: &Value) {
    let allowed = ["ok", "warning", "critical", "insufficient_history", "error"];
    for result in results(report) {
        for key in ["table", "sensor", "metric", "status", "message"] {
            assert!(result[key].is_string(), "`{key}` is not a string in {result:#}");
        }
        assert!(allowed.contains(&status(result)), "unknown status in {result:#}");
        for key in ["value", "zscore", "expected_lower", "expected_upper"] {
            let field = result.get(key).unwrap_or_else(|| panic!("`{key}` is missing in {result:#}"));
            assert!(
                field.is_null() || field.is_f64() || field.is_i64() || field.is_u64(),
                "`{key}` is not a number or null in {result:#}"
            );
        }
        if result["metric"] == "schema_change" {
            assert!(
                result["change_type"].is_string() && result["column"].is_string(),
                "schema change without change_type/column: {result:#}"
            );
        }
    }
}

/// (table, sensor, metric, column) → (status, zscore) of a report.
fn verdicts(report: &Value) -> BTreeMap<String, (String, Option<f64>)> {
    results(report)
        .iter()
        .map(|result| {
            let key = format!("{} {} {} {}", result["table"], result["sensor"], result["metric"], result["column"]);
            (key, (status(result).to_string(), result["zscore"].as_f64()))
        })
        .collect()
}

/// Same keys, same statuses, z-scores within 1 % (the commit-gap score moves with the clock).
fn assert_same_verdicts(left: &Value, right: &Value, why: &str) {
    let (left, right) = (verdicts(left), verdicts(right));
    assert_eq!(left.keys().collect::<Vec<_>>(), right.keys().collect::<Vec<_>>(), "{why}");
    for (key, (status, zscore)) in &left {
        let (other_status, other_zscore) = &right[key];
        assert_eq!(status, other_status, "{why}: {key}");
        match (zscore, other_zscore) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 0.01 * a.abs().max(1.0), "{why}: {key} z {a} vs {b}"),
            (a, b) => assert_eq!(a, b, "{why}: {key}"),
        }
    }
}

const PY_TABLES: [&str; 6] = ["it.steady", "it.dropped", "it.compacted", "it.deletes", "it.short", "it.evolving"];

#[test]
fn commit_kinds_volume_drops_and_short_history_get_the_right_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let written = pyiceberg(dir.path(), &["create"]);
    let operations = |table: &str| -> Vec<&str> {
        written[table].as_array().unwrap().iter().map(|snapshot| snapshot["operation"].as_str().unwrap()).collect()
    };
    assert_eq!(&operations("it.compacted")[10..], ["replace", "replace"]);
    assert_eq!(&operations("it.deletes")[10..], ["overwrite", "delete", "delete", "append"]);
    assert_eq!(&operations("it.refreshed")[..3], ["append", "delete", "append"]);
    let config = write_config(dir.path(), "sensors.toml", "catalog.db", &PY_TABLES, "");
    let (code, report) = check(&config);
    assert_result_shape(&report);
    assert_eq!(code, 1, "a critical result makes the exit code 1");

    // Normal daily variation: fresh, volume ok with a real score.
    assert_eq!(status(one(&report, "it.steady", "freshness", "freshness_seconds")), "ok");
    let steady = one(&report, "it.steady", "volume", "rows_added");
    assert_eq!(status(steady), "ok", "{steady:#}");
    assert_eq!(steady["value"], 1025.0);
    assert!(steady["zscore"].as_f64().unwrap().abs() < 3.0);
    assert!(steady["expected_lower"].as_f64().unwrap() < 1025.0 && steady["expected_upper"].as_f64().unwrap() > 1025.0);

    // A 60 % drop in the newest commit.
    let dropped = one(&report, "it.dropped", "volume", "rows_added");
    assert_eq!(status(dropped), "critical", "{dropped:#}");
    let deviation = dropped["deviation_percent"].as_f64().unwrap();
    assert!((-62.0..=-58.0).contains(&deviation), "deviation {deviation}");
    assert!(dropped["message"].as_str().unwrap().contains("below"), "{dropped:#}");

    // Only compactions in the last 3 days: stale, and the compactions are named.
    let compacted = one(&report, "it.compacted", "freshness", "freshness_seconds");
    assert_eq!(status(compacted), "critical", "{compacted:#}");
    let age = compacted["value"].as_f64().unwrap();
    assert!((3.0 * 86_400.0..3.0 * 86_400.0 + 600.0).contains(&age), "age {age}");
    assert!(compacted["message"].as_str().unwrap().contains("`replace`"), "{compacted:#}");
    // A compaction is not volume either: the newest append is judged, and it was normal.
    assert_eq!(status(one(&report, "it.compacted", "volume", "rows_added")), "ok");
    assert_eq!(one(&report, "it.compacted", "volume", "total_rows")["value"], 10_060.0);

    // Deletes, then an overwrite that replaces the whole table with 200 rows (PyIceberg writes
    // `delete` + `append`): fresh data, and the refresh is the table's volume now: 200 rows
    // against appends of about 1000 is a drop, not "a deliberate change".
    let deletes_freshness = one(&report, "it.deletes", "freshness", "freshness_seconds");
    assert_eq!(status(deletes_freshness), "ok", "{deletes_freshness:#}");
    assert!(deletes_freshness["value"].as_f64().unwrap() < 600.0);
    assert!(
        deletes_freshness["message"].as_str().unwrap().contains("(overwrite: delete + append)"),
        "{deletes_freshness:#}"
    );
    let deletes_volume = one(&report, "it.deletes", "volume", "rows_added");
    assert_eq!(
        (status(deletes_volume), deletes_volume["value"].as_f64()),
        ("critical", Some(200.0)),
        "{deletes_volume:#}"
    );
    assert!(deletes_volume["message"].as_str().unwrap().contains("a full refresh left 200 rows"), "{deletes_volume:#}");
    assert!(
        !results(&report).iter().any(|result| result["table"] == "it.deletes" && result["metric"] == "rows_deleted"),
        "a full refresh is judged, not excused: {report:#}"
    );

    // A full-refresh table: each refresh's rows are its volume series; the newest refresh wrote
    // 1017 rows where the others wrote about 2540. (Its refreshes were written a few ms apart,
    // so only volume is configured: its cadence moves from one run to the next.)
    let refresh_only = write_config(
        dir.path(),
        "refreshed.toml",
        "catalog.db",
        &[],
        "\n[tables.\"it.refreshed\".volume]\ndeviation_percent = 20\nwindow = \"30d\"\n",
    );
    let (_, refreshed_report) = check(&refresh_only);
    let refreshed = one(&refreshed_report, "it.refreshed", "volume", "rows_added");
    assert_eq!((status(refreshed), refreshed["value"].as_f64()), ("critical", Some(1017.0)), "{refreshed:#}");
    let deviation = refreshed["deviation_percent"].as_f64().unwrap();
    assert!((-62.0..=-58.0).contains(&deviation), "deviation {deviation}: {refreshed:#}");

    // Fewer than min_history points.
    let short = one(&report, "it.short", "volume", "rows_added");
    assert_eq!(status(short), "insufficient_history", "{short:#}");
    assert!(short["zscore"].is_null() && short["expected_lower"].is_null() && short["expected_upper"].is_null());
    assert_eq!(status(one(&report, "it.short", "freshness", "commit_gap_seconds")), "insufficient_history");

    // Backfill: without the history store the same verdicts come at once.
    let (_, again) = check(&config);
    assert_same_verdicts(&again, &report, "a second run changes nothing");
    std::fs::remove_file(dir.path().join("history.db")).unwrap();
    let (code, rebuilt) = check(&config);
    assert_eq!(code, 1);
    assert_same_verdicts(&rebuilt, &report, "deleting the history store changed verdicts");
}

/// Freshness asks whether data arrives: a retention delete does not make a stale table fresh,
/// and an empty append (PyIceberg records it with no `added-records` at all) is no arrival and
/// is a zero-row append for volume.
#[test]
fn deletes_and_empty_appends_are_not_arrivals() {
    let dir = tempfile::tempdir().unwrap();
    let written = pyiceberg(dir.path(), &["create"]);
    let operations = |table: &str| -> Vec<&str> {
        written[table].as_array().unwrap().iter().map(|snapshot| snapshot["operation"].as_str().unwrap()).collect()
    };
    assert_eq!(operations("it.retention").last(), Some(&"delete"));
    assert_eq!(operations("it.empty_tail").last(), Some(&"append"));
    let config = write_config(dir.path(), "arrivals.toml", "catalog.db", &["it.retention", "it.empty_tail"], "");
    let (_, report) = check(&config);

    // The last append is 3 days old (critical_after 2d); the delete of 25 minutes ago added no rows.
    let retention = one(&report, "it.retention", "freshness", "freshness_seconds");
    assert_eq!(status(retention), "critical", "{retention:#}");
    let age = retention["value"].as_f64().unwrap();
    assert!((3.0 * 86_400.0..3.0 * 86_400.0 + 600.0).contains(&age), "age {age}");
    let message = retention["message"].as_str().unwrap();
    assert!(message.contains("newer `delete` commits added no rows"), "{message}");
    // The same table with deletes counting, as before: fresh.
    let any_change = write_config(
        dir.path(),
        "any_change.toml",
        "catalog.db",
        &[],
        "\n[tables.\"it.retention\".freshness]\nwarn_after = \"1d\"\ncritical_after = \"2d\"\ncounts = \"any_data_change\"\n",
    );
    let (_, report_any) = check(&any_change);
    // A partial delete (one day's file of ten) is a deliberate change for volume, not a drop.
    let deleted = one(&report, "it.retention", "volume", "rows_deleted");
    assert_eq!(deleted["value"].as_f64(), Some(1000.0), "{deleted:#}");
    let message = deleted["message"].as_str().unwrap();
    assert!(message.contains("`delete`") && message.contains("not a volume drop"), "{message}");
    assert_eq!(status(one(&report, "it.retention", "volume", "rows_added")), "ok");
    let counted = one(&report_any, "it.retention", "freshness", "freshness_seconds");
    assert_eq!(status(counted), "ok", "{counted:#}");
    assert!(counted["value"].as_f64().unwrap() < 3600.0, "{counted:#}");

    // An empty append now: freshness is the append of 2 hours ago, and volume calls the empty
    // one a zero-row append.
    let fresh = one(&report, "it.empty_tail", "freshness", "freshness_seconds");
    assert_eq!(status(fresh), "ok", "{fresh:#}");
    let age = fresh["value"].as_f64().unwrap();
    assert!((2.0 * 3600.0..2.0 * 3600.0 + 600.0).contains(&age), "age {age}");
    assert!(fresh["message"].as_str().unwrap().contains("newer empty `append` commits added no rows"), "{fresh:#}");
    let empty = one(&report, "it.empty_tail", "volume", "rows_added");
    assert_eq!((status(empty), empty["value"].as_f64()), ("critical", Some(0.0)), "{empty:#}");
    assert!(empty["message"].as_str().unwrap().contains("no `added-records`"), "{empty:#}");
}

#[test]
fn schema_changes_made_while_icewatch_was_down_are_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    pyiceberg(dir.path(), &["create"]);
    let port = common::free_port();
    let config = write_config(
        dir.path(),
        "sensors.toml",
        "catalog.db",
        &["it.evolving", "it.steady"],
        &format!("\n[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let (_, before) = check(&config);
    assert!(
        results(&before).iter().all(|result| result["metric"] != "schema_change"),
        "no change before the evolution: {before:#}"
    );
    // The service sees the table once, then stops.
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let column_count =
        |body: &str| body.lines().any(|line| line.starts_with("schema_column_count{") && line.contains("it.evolving"));
    {
        let mut service = common::ChildGuard::spawn(
            "icewatch run",
            Command::new(common::icewatch_bin()).arg("run").arg("--config").arg(&config),
        );
        let body = common::wait_for("the first schema run", Duration::from_secs(60), || {
            common::http_get(&metrics_url).filter(|body| column_count(body))
        });
        assert!(
            !body.lines().any(|line| line.starts_with("schema_changes_total{") && line.contains("it.evolving")),
            "{body}"
        );
        service.terminate(Duration::from_secs(20)).expect("icewatch run stops on SIGTERM");
    }

    let evolved = pyiceberg(dir.path(), &["evolve"]);
    assert_eq!(evolved["columns"], serde_json::json!(["id", "quantity", "amount", "venue"]));
    // Dropping `scratch` went back to schema 4: the newest schema (5) is not the current one.
    assert_eq!(evolved["schemas"], serde_json::json!([0, 1, 2, 3, 4, 5]));
    assert_eq!(evolved["current_schema_id"], 4);

    // `check` reports each change once, the rename as a rename.
    let (_, after) = check(&config);
    assert_result_shape(&after);
    let changes = |report: &Value| -> Vec<(String, String, String)> {
        let mut changes: Vec<_> = results(report)
            .iter()
            .filter(|result| result["metric"] == "schema_change")
            .map(|result| {
                assert_eq!(result["table"], "it.evolving");
                (
                    result["change_type"].as_str().unwrap().to_string(),
                    result["column"].as_str().unwrap().to_string(),
                    status(result).to_string(),
                )
            })
            .collect();
        changes.sort();
        changes
    };
    let expected = vec![
        ("column_added".to_string(), "scratch".to_string(), "warning".to_string()),
        ("column_added".to_string(), "venue".to_string(), "warning".to_string()),
        ("column_dropped".to_string(), "legacy".to_string(), "critical".to_string()),
        ("column_dropped".to_string(), "scratch".to_string(), "critical".to_string()),
        ("column_renamed".to_string(), "quantity".to_string(), "critical".to_string()),
        ("type_promoted".to_string(), "amount".to_string(), "warning".to_string()),
    ];
    assert_eq!(changes(&after), expected, "{after:#}");
    let promotion = results(&after).iter().find(|result| result["change_type"] == "type_promoted").unwrap();
    assert!(promotion["message"].as_str().unwrap().contains("int → long"), "{promotion:#}");
    assert_eq!(one(&after, "it.evolving", "schema", "column_count")["value"], 4.0);
    // The append with the new schema is an ordinary append.
    assert_eq!(one(&after, "it.evolving", "volume", "rows_added")["value"], 1000.0);
    let (_, again) = check(&config);
    assert_eq!(changes(&again), expected, "a second check repeats the same changes, no more");

    // The restarted service counts each change once, and not again on its next runs.
    let mut service = common::ChildGuard::spawn(
        "icewatch run",
        Command::new(common::icewatch_bin()).arg("run").arg("--config").arg(&config),
    );
    let counter = |body: &str, change_type: &str| -> Option<f64> {
        body.lines()
            .find(|line| {
                line.starts_with("schema_changes_total{")
                    && line.contains("\"it.evolving\"")
                    && line.contains(&format!("change_type=\"{change_type}\""))
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    };
    let body = common::wait_for("schema_changes_total after the restart", Duration::from_secs(60), || {
        common::http_get(&metrics_url).filter(|body| counter(body, "column_renamed").is_some())
    });
    let runs = |body: &str| -> f64 {
        body.lines()
            .filter(|line| {
                line.starts_with("icewatch_sensor_runs_total{")
                    && line.contains("\"it.evolving\"")
                    && line.contains("sensor=\"schema\"")
            })
            .filter_map(|line| line.rsplit(' ').next().and_then(|value| value.parse::<f64>().ok()))
            .sum()
    };
    let first_runs = runs(&body);
    let later = common::wait_for("two more schema runs", Duration::from_secs(60), || {
        common::http_get(&metrics_url).filter(|body| runs(body) >= first_runs + 2.0)
    });
    for (change_type, count) in
        [("column_renamed", 1.0), ("column_dropped", 2.0), ("type_promoted", 1.0), ("column_added", 2.0)]
    {
        assert_eq!(counter(&later, change_type), Some(count), "{change_type}:\n{later}");
    }
    assert_eq!(counter(&later, "nullability_changed"), None);
    service.terminate(Duration::from_secs(20)).expect("icewatch run stops on SIGTERM");
}

#[test]
fn unloadable_tables_and_catalogs_are_errors_and_the_rest_is_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    pyiceberg(dir.path(), &["create"]);
    let corrupted = pyiceberg(dir.path(), &["corrupt", "it.short"]);
    let config = write_config(dir.path(), "sensors.toml", "catalog.db", &["it.steady", "it.missing", "it.short"], "");
    let (code, report) = check(&config);
    assert_result_shape(&report);
    assert_eq!(code, 1, "an error fails the check");
    for sensor in ["freshness", "volume", "schema"] {
        let missing = one(&report, "it.missing", sensor, "run");
        assert_eq!(status(missing), "error");
        assert!(missing["message"].as_str().unwrap().contains("`it.missing` not found"), "{missing:#}");
        let corrupt = one(&report, "it.short", sensor, "run");
        assert_eq!(status(corrupt), "error");
        let message = corrupt["message"].as_str().unwrap();
        assert!(message.starts_with("failed to load table `it.short`: ") && !message.contains("``"), "{message}");
    }
    assert!(
        std::fs::read_to_string(corrupted["metadata_location"].as_str().unwrap()).unwrap().starts_with("this is not")
    );
    assert_eq!(status(one(&report, "it.steady", "freshness", "freshness_seconds")), "ok");
    assert_eq!(status(one(&report, "it.steady", "volume", "rows_added")), "ok");
    assert_eq!(status(one(&report, "it.steady", "schema", "column_count")), "ok");

    // No catalog at all: every table is an error naming the URI.
    let config = write_config(dir.path(), "no-catalog.toml", "gone.db", &["it.steady", "it.dropped"], "");
    let (code, report) = check(&config);
    assert_result_shape(&report);
    assert_eq!(code, 1);
    assert_eq!(results(&report).len(), 6, "{report:#}");
    for result in results(&report) {
        assert_eq!(status(result), "error", "{result:#}");
        assert!(result["message"].as_str().unwrap().contains("gone.db"), "{result:#}");
    }
}

/// Tables written by the iceberg crate: 11 appends re-timed to one a day, the last 60 % down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_written_by_the_iceberg_crate_are_judged_too() {
    let dir = tempfile::tempdir().unwrap();
    let catalog_uri = format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display());
    let catalog =
        icewatch::demo::open_sql_catalog(&catalog_uri, &dir.path().join("warehouse"), "default").await.unwrap();
    let namespace = NamespaceIdent::new("rs".to_string());
    catalog.create_namespace(&namespace, Default::default()).await.unwrap();
    let schema = Schema::builder()
        .with_fields(vec![
            Arc::new(NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long))),
            Arc::new(NestedField::optional(2, "qty", Type::Primitive(PrimitiveType::Int))),
            Arc::new(NestedField::optional(3, "venue", Type::Primitive(PrimitiveType::String))),
        ])
        .build()
        .unwrap();
    let arrow = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("qty", DataType::Int32, true),
        Field::new("venue", DataType::Utf8, true),
    ]));
    let rows = [1000i64, 1080, 950, 1020, 990, 1050, 970, 1010, 1030, 960, 400];
    let now_ms = chrono::Utc::now().timestamp_millis();
    for name in ["steady", "dropped"] {
        let ident = TableIdent::new(namespace.clone(), name.to_string());
        let creation = TableCreation::builder().name(name.to_string()).schema(schema.clone()).build();
        catalog.create_table(&namespace, creation).await.unwrap();
        let mut next_id = 0;
        for (index, count) in rows.iter().enumerate() {
            let count = if name == "steady" && index == rows.len() - 1 { 1015 } else { *count };
            let batch = RecordBatch::try_new(
                arrow.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(next_id..next_id + count)),
                    Arc::new(Int32Array::from_iter_values((0..count).map(|i| (i % 9) as i32))),
                    Arc::new(StringArray::from_iter_values(
                        (0..count).map(|i| if i % 2 == 0 { "XNYS" } else { "XLON" }),
                    )),
                ],
            )
            .unwrap();
            icewatch::demo::append_batch(&catalog, &ident, batch).await.unwrap();
            next_id += count;
        }
        let times: Vec<i64> =
            (0..rows.len() as i64).map(|index| now_ms - 3_600_000 - (rows.len() as i64 - 1 - index) * DAY_MS).collect();
        icewatch::demo::rewrite_table_metadata(&catalog_uri, "default", &ident, |metadata| {
            icewatch::demo::retime_snapshots(metadata, &times)
        })
        .await
        .unwrap();
    }
    let config = write_config(dir.path(), "sensors.toml", "catalog.db", &["rs.steady", "rs.dropped"], "");
    let (code, report) = tokio::task::spawn_blocking(move || check(&config)).await.unwrap();
    assert_result_shape(&report);
    assert_eq!(code, 1);
    assert_eq!(status(one(&report, "rs.steady", "volume", "rows_added")), "ok");
    assert_eq!(status(one(&report, "rs.dropped", "volume", "rows_added")), "critical");
    let freshness = one(&report, "rs.steady", "freshness", "freshness_seconds");
    assert_eq!(status(freshness), "ok");
    let age = freshness["value"].as_f64().unwrap();
    assert!((3_500.0..4_000.0).contains(&age), "age {age}");
    assert_eq!(status(one(&report, "rs.steady", "freshness", "commit_gap_seconds")), "ok");
}

/// A snapshot stamped `i64::MIN` (a writer bug seen in the wild) made the first pass panic and
/// the service exit 101. Now the panic is that table's `error` result (`reason="internal"`), in
/// `check` and in the first pass of `run`, and the other table is judged as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_table_is_an_internal_error_and_the_rest_is_still_judged() {
    let dir = tempfile::tempdir().unwrap();
    let locations = hourly_tables(dir.path(), &["good", "bad"]).await;
    // Edited as text: the iceberg crate itself overflows parsing it (in a debug build).
    let (location, first_ms) = &locations[1];
    let path = location.strip_prefix("file://").unwrap_or(location);
    let text = common::read(Path::new(path));
    let stamped = format!("\"timestamp-ms\":{first_ms}");
    assert!(text.contains(&stamped), "{text}");
    std::fs::write(path, text.replace(&stamped, &format!("\"timestamp-ms\":{}", i64::MIN))).unwrap();
    let port = common::free_port();
    let config = write_config(
        dir.path(),
        "sensors.toml",
        "catalog.db",
        &["rs.good", "rs.bad"],
        &format!("\n[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    );

    let check_config = config.clone();
    let (code, report) = tokio::task::spawn_blocking(move || check(&check_config)).await.unwrap();
    assert_result_shape(&report);
    assert_eq!(code, 1, "an error result is a problem, not a crash: {report:#}");
    let internal: Vec<&Value> =
        results(&report).iter().filter(|result| result["table"] == "rs.bad" && status(result) == "error").collect();
    assert!(!internal.is_empty(), "{report:#}");
    for result in &internal {
        assert!(result["message"].as_str().unwrap().contains("internal error"), "{result:#}");
    }
    assert_eq!(status(one(&report, "rs.good", "volume", "rows_added")), "ok", "{report:#}");

    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let mut service = common::ChildGuard::spawn(
        "icewatch run",
        Command::new(common::icewatch_bin()).arg("run").arg("--config").arg(&config),
    );
    let body = tokio::task::spawn_blocking(move || {
        // The tables run concurrently: wait for the bad one's error and the good one's rows.
        common::wait_for("the first pass's internal error and rows", Duration::from_secs(60), || {
            common::http_get(&metrics_url).filter(|body| {
                body.lines().any(|line| {
                    line.starts_with("icewatch_sensor_errors_total{")
                        && line.contains("reason=\"internal\"")
                        && line.contains("table=\"rs.bad\"")
                }) && body.lines().any(|line| line.starts_with("data_rows_added{") && line.contains("rs.good"))
            })
        })
    })
    .await
    .unwrap();
    assert!(body.contains("icewatch_sensor_errors_total{"), "{body}");
    assert!(service.child.try_wait().unwrap().is_none(), "the service is still running");
    service.terminate(Duration::from_secs(20)).expect("icewatch run stops on SIGTERM");
}

/// Tables `rs.<name>` in a SQL catalog at `dir/catalog.db`, written by the iceberg crate: six
/// appends of 100 rows each, re-timed one an hour up to an hour ago. Returns each table's
/// metadata location and the time of its first snapshot.
async fn hourly_tables(dir: &Path, names: &[&str]) -> Vec<(String, i64)> {
    let catalog_uri = format!("sqlite://{}/catalog.db?mode=rwc", dir.display());
    let catalog = icewatch::demo::open_sql_catalog(&catalog_uri, &dir.join("warehouse"), "default").await.unwrap();
    let namespace = NamespaceIdent::new("rs".to_string());
    catalog.create_namespace(&namespace, Default::default()).await.unwrap();
    let schema = Schema::builder()
        .with_fields(vec![Arc::new(NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)))])
        .build()
        .unwrap();
    let arrow = Arc::new(ArrowSchema::new(vec![Field::new("id", DataType::Int64, false)]));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut locations = Vec::new();
    for name in names {
        let ident = TableIdent::new(namespace.clone(), name.to_string());
        let creation = TableCreation::builder().name(name.to_string()).schema(schema.clone()).build();
        catalog.create_table(&namespace, creation).await.unwrap();
        for index in 0..6i64 {
            let ids = Int64Array::from_iter_values(index * 100..index * 100 + 100);
            let batch = RecordBatch::try_new(arrow.clone(), vec![Arc::new(ids)]).unwrap();
            icewatch::demo::append_batch(&catalog, &ident, batch).await.unwrap();
        }
        let times: Vec<i64> = (0..6).map(|index| now_ms - (6 - index) * 3_600_000).collect();
        let location = icewatch::demo::rewrite_table_metadata(&catalog_uri, "default", &ident, |metadata| {
            icewatch::demo::retime_snapshots(metadata, &times)
        })
        .await
        .unwrap();
        locations.push((location, times[0]));
    }
    locations
}
