//! The health sensor end to end on a table PyIceberg wrote (`tests/python/health_tables.py`):
//! 150 hourly appends give small files, small manifests and snapshots past expiry; a compaction,
//! a merge-on-read delete and an `expire_snapshots` each move one verdict, seen through `check`
//! and through `/metrics` of a running service. With every data file moved away the verdicts are
//! the same: the sensor reads metadata only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common;
use crate::service::Icewatch;

/// Runs `tests/python/health_tables.py <dir> <args>` and returns its JSON line.
fn pyiceberg(dir: &Path, args: &[&str]) -> Value {
    let script = common::repo_root().join("tests/python/health_tables.py");
    let (code, stdout, stderr) = common::run(Command::new(common::python()).arg(script).arg(dir).args(args));
    assert_eq!(code, 0, "health_tables.py {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("bad JSON from health_tables.py: {error}\n{stdout}"))
}

/// A sensors.toml with only a health sensor, all its thresholds at their defaults.
fn write_config(dir: &Path, port: u16) -> PathBuf {
    let text = format!(
        "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"warehouse\"\nname = \"default\"\n\n\
         [history]\npath = \"history.db\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [defaults]\nschedule = \"*/2 * * * * *\"\n\n[tables.\"it.tiny\".health]\n"
    );
    let path = dir.join("sensors.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `icewatch check --format json`: the health results of `it.tiny` as (metric, status, value,
/// message).
fn health(config: &Path) -> Vec<(String, String, f64, String)> {
    let (_, stdout, stderr) =
        common::run(Command::new(common::icewatch_bin()).args(["check", "--format", "json", "--config"]).arg(config));
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("check printed no JSON ({error})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|result| result["table"] == "it.tiny" && result["sensor"] == "health")
        .map(|result| {
            (
                result["metric"].as_str().unwrap_or_default().to_string(),
                result["status"].as_str().unwrap_or_default().to_string(),
                result["value"].as_f64().unwrap_or(f64::NAN),
                result["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn verdict<'r>(results: &'r [(String, String, f64, String)], metric: &str) -> &'r (String, String, f64, String) {
    results.iter().find(|result| result.0 == metric).unwrap_or_else(|| panic!("no {metric} result: {results:#?}"))
}

fn statuses(results: &[(String, String, f64, String)]) -> Vec<(String, String)> {
    results.iter().map(|(metric, status, _, _)| (metric.clone(), status.clone())).collect()
}

/// Every file under `dir` whose name ends in `.parquet`.
fn parquet_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            parquet_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "parquet") {
            found.push(path);
        }
    }
}

#[test]
fn maintenance_debt_warns_from_metadata_and_clears_when_the_maintenance_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let created = pyiceberg(dir.path(), &["create"]);
    assert_eq!((created["data_files"].as_u64(), created["manifests"].as_u64()), (Some(150), Some(150)), "{created}");
    let port = common::free_port();
    let config = write_config(dir.path(), port);

    // 150 tiny appends: every file and manifest is small, and the appends of 5 to 6 days ago
    // are past the default 5-day expiry by more than the 1-day grace.
    let before = health(&config);
    println!("before: {before:#?}");
    let small = verdict(&before, "small_files");
    assert_eq!((small.1.as_str(), small.2), ("warning", 1.0), "{small:?}");
    assert!(small.3.contains("150 of 150 data files") && small.3.contains("rewrite_data_files"), "{}", small.3);
    let manifests = verdict(&before, "manifests");
    assert_eq!((manifests.1.as_str(), manifests.2), ("warning", 150.0), "{manifests:?}");
    assert!(manifests.3.contains("rewrite_manifests"), "{}", manifests.3);
    let snapshots = verdict(&before, "expirable_snapshots");
    assert_eq!(snapshots.1, "warning", "{snapshots:?}");
    // Snapshots more than 5 days old, the newest of them an hour into day 6: 30 or 31 of them.
    assert!((29.0..=32.0).contains(&snapshots.2), "{snapshots:?}");
    assert!(snapshots.3.contains("expire_snapshots"), "{}", snapshots.3);
    assert_eq!(verdict(&before, "delete_ratio").1, "ok");

    // The same verdicts with no data file left to read.
    let mut data_files = Vec::new();
    parquet_files(&dir.path().join("warehouse"), &mut data_files);
    assert_eq!(data_files.len(), 150, "{data_files:?}");
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    for (index, file) in data_files.iter().enumerate() {
        std::fs::rename(file, aside.join(format!("{index}.parquet"))).unwrap();
    }
    assert_eq!(statuses(&health(&config)), statuses(&before), "the sensor read a data file");
    for (index, file) in data_files.iter().enumerate() {
        std::fs::rename(aside.join(format!("{index}.parquet")), file).unwrap();
    }

    // A compaction (`replace`) rewrites the 150 files into one: small files and manifests clear.
    let compacted = pyiceberg(dir.path(), &["compact", "it.tiny"]);
    assert_eq!(compacted["data_files"].as_u64(), Some(1), "{compacted}");
    let after_compaction = health(&config);
    assert_eq!(verdict(&after_compaction, "small_files").1, "ok", "{after_compaction:#?}");
    assert_eq!(verdict(&after_compaction, "manifests").1, "ok", "{after_compaction:#?}");

    // A merge-on-read delete of 200 of the 450 rows: a position delete file, 44 % of the rows.
    let deleted = pyiceberg(dir.path(), &["delete", "it.tiny", "200"]);
    assert_eq!((deleted["delete_files"].as_u64(), deleted["position_deletes"].as_u64()), (Some(1), Some(200)));
    let after_delete = health(&config);
    let debt = verdict(&after_delete, "delete_ratio");
    assert_eq!(debt.1, "warning", "{debt:?}");
    assert!((debt.2 - 200.0 / 450.0).abs() < 1e-9, "{debt:?}");
    assert!(
        debt.3.contains("1 position delete files") && debt.3.contains("rewrite_position_delete_files"),
        "{}",
        debt.3
    );

    // Expiring the old snapshots clears the last warning.
    let expired = pyiceberg(dir.path(), &["expire", "it.tiny"]);
    let after_expiry = health(&config);
    println!("after expiry ({expired}): {after_expiry:#?}");
    let snapshots = verdict(&after_expiry, "expirable_snapshots");
    assert_eq!((snapshots.1.as_str(), snapshots.2), ("ok", 0.0), "{snapshots:?}");

    // The running service exports the same state as gauges.
    let icewatch = Icewatch::start(&config, port);
    let gauge = |body: &str, name: &str| -> Option<f64> {
        body.lines().find(|line| line.starts_with(name)).and_then(|line| line.rsplit(' ').next()?.parse().ok())
    };
    let metrics = common::wait_for("the health gauges", Duration::from_secs(30), || {
        let body = icewatch.metrics();
        gauge(&body, "iceberg_deleted_rows_ratio{").is_some().then_some(body)
    });
    let position_files = r#"iceberg_delete_files{content="position",layer="",table="it.tiny"}"#;
    assert_eq!(gauge(&metrics, position_files), Some(1.0), "{metrics}");
    // The one compacted file is still small (the table holds 450 rows), but one is not worth a
    // rewrite: the gauge says 1 and the verdict stays ok.
    assert_eq!(gauge(&metrics, r#"iceberg_small_data_files{layer="",table="it.tiny"}"#), Some(1.0), "{metrics}");
    assert_eq!(gauge(&metrics, r#"iceberg_expirable_snapshots{layer="",table="it.tiny"}"#), Some(0.0));
    assert!(gauge(&metrics, r#"iceberg_last_compaction_timestamp_seconds{layer="",table="it.tiny"}"#).is_some());
    let severity = r#"icewatch_result_severity{column="",layer="",metric="delete_ratio",sensor="health",statistic="",table="it.tiny"}"#;
    assert_eq!(gauge(&metrics, severity), Some(1.0), "{metrics}");
}
