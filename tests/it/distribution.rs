//! The distribution sensor against a real table written by PyIceberg: every statistic checked
//! against DuckDB over the same Parquet files, values traced to metadata or scan, incremental
//! batches (one per append), the anomalous last batch flagged, drift, and an unknown column.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use icewatch::catalog::CatalogHandle;
use icewatch::config::{Config, Statistic, TableName};
use icewatch::sensors::distribution::{
    self, HLL_STANDARD_ERROR, ValueSource, judge, observe, series, snapshots_to_profile,
};
use icewatch::sensors::{SensorError, Status, Windows};

use crate::common;

const ALL_NUMERIC: &str = r#"["row_count", "mean", "stddev", "min", "max", "sum", "null_percent", "null_count",
  "zero_percent", "nan_percent", "distinct_count", "p01", "p05", "p25", "p50", "p75", "p95", "p99"]"#;

fn sensors_toml(dir: &Path, scope: &str, extra_column: Option<&str>) -> Config {
    let extra = extra_column.map(|name| format!("{name} = [\"mean\"]\n")).unwrap_or_default();
    let text = format!(
        r#"
[catalog]
type = "sql"
uri = "sqlite://{dir}/catalog.db"
warehouse = "{dir}/warehouse"

[tables."db.events".distribution]
window = 30
scope = "{scope}"

[tables."db.events".distribution.columns]
id = {ALL_NUMERIC}
amount = {ALL_NUMERIC}
qty = {ALL_NUMERIC}
'we"ird col' = {ALL_NUMERIC}
label = ["row_count", "null_count", "null_percent", "empty_percent", "min_length", "max_length", "mean_length", "distinct_count", "mean"]
{extra}"#,
        dir = dir.display()
    );
    Config::from_str(&text, &dir.join("sensors.toml")).unwrap_or_else(|error| panic!("{error}"))
}

fn python(script: &str, dir: &Path) -> String {
    let (code, stdout, stderr) =
        common::run(Command::new(common::python()).arg(common::repo_root().join("tests/python").join(script)).arg(dir));
    assert_eq!(code, 0, "{script} failed: {stderr}");
    stdout
}

fn close(actual: f64, expected: f64, relative: f64) -> bool {
    (actual - expected).abs() <= relative * expected.abs().max(1e-300) || (actual - expected).abs() <= 1e-12
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_match_duckdb_and_flag_the_bad_batch() {
    let dir = tempfile::tempdir().unwrap();
    python("distribution_write.py", dir.path());
    let expected: serde_json::Value = serde_json::from_str(&python("distribution_expected.py", dir.path())).unwrap();

    let config = sensors_toml(dir.path(), "added", None);
    let sensor = config.tables[0].distribution.clone().unwrap();
    let catalog = CatalogHandle::connect(&config.catalog).await.unwrap();
    let table = catalog.load_table(&TableName::parse("db.events").unwrap()).await.unwrap();

    // First sight: the whole window is backfilled, oldest first; then nothing is left to do.
    let ids = snapshots_to_profile(&table, &sensor, &|_| false);
    assert_eq!(ids.len(), 8);
    let profiles = observe(&table, "db.events", &sensor, &ids).await.unwrap();
    assert_eq!(profiles.iter().map(|profile| profile.snapshot_id).collect::<Vec<_>>(), ids);
    assert!(snapshots_to_profile(&table, &sensor, &|id| ids.contains(&id)).is_empty());

    let mut compared = 0;
    for profile in &profiles {
        let batch = &expected[profile.snapshot_id.to_string()];
        // Incremental: each batch is the one file its append added, not the table so far.
        assert_eq!(profile.files as u64, batch["files"].as_u64().unwrap());
        assert_eq!(profile.row_count, 400);
        assert_eq!(profile.scanned_rows, 400, "only the added rows are read");
        assert!(
            profile.skipped.iter().all(|skipped| skipped.column == "label" && skipped.statistic == Statistic::Mean)
        );
        for value in &profile.values {
            let want = batch["columns"][&value.column][value.statistic.as_str()]
                .as_f64()
                .unwrap_or_else(|| panic!("no expected {} of {}", value.statistic, value.column));
            let tolerance = match value.statistic {
                // HyperLogLog: within 3 standard errors (small cardinalities are near exact).
                Statistic::DistinctCount => 3.0 * HLL_STANDARD_ERROR,
                // Quantiles are exact below 100 000 values; everything else is exact.
                _ => 1e-9,
            };
            assert!(
                close(value.value, want, tolerance),
                "snapshot {} `{}` {}: icewatch {} ({:?}) vs duckdb {want}",
                profile.snapshot_id,
                value.column,
                value.statistic,
                value.value,
                value.source
            );
            compared += 1;
        }
        let source = |column: &str, statistic: Statistic| profile.value(column, statistic).unwrap().source;
        // Metadata first: counts and integer bounds never need the data.
        assert_eq!(source("qty", Statistic::RowCount), ValueSource::Metadata);
        assert_eq!(source("qty", Statistic::NullCount), ValueSource::Metadata);
        assert_eq!(source("amount", Statistic::NullPercent), ValueSource::Metadata);
        assert_eq!(source("qty", Statistic::Min), ValueSource::Metadata);
        assert_eq!(source("amount", Statistic::Max), ValueSource::Metadata, "float bounds exclude NaN");
        assert_eq!(source("id", Statistic::Max), ValueSource::Metadata);
        assert_eq!(source("amount", Statistic::Mean), ValueSource::Scan);
        assert_eq!(source("label", Statistic::MaxLength), ValueSource::Scan);
    }
    assert_eq!(compared, 8 * (4 * 18 + 8));

    // The last batch (30 % nulls, mean shifted) is flagged against the seven before it.
    let (newest, earlier) = profiles.split_last().unwrap();
    let mut windows = Windows::new();
    for profile in earlier {
        for point in series("db.events", profile) {
            windows.entry(point.series.clone()).or_default().push(point);
        }
    }
    let reference = distribution::observe_reference(&table, "db.events", &sensor, newest.snapshot_id).await.unwrap();
    assert_eq!(reference.len(), 5, "drift.reference_batches defaults to 5");
    let drift = distribution::drift(&sensor, newest, &reference);
    let evaluations = judge("db.events", &sensor, newest, &windows, Some(&drift));
    let find = |column: &str, metric: &str, statistic: Option<&str>| {
        evaluations
            .iter()
            .find(|evaluation| {
                evaluation.column.as_deref() == Some(column)
                    && evaluation.metric == metric
                    && evaluation.statistic.as_deref() == statistic
            })
            .unwrap_or_else(|| panic!("no {metric} evaluation for {column} {statistic:?}"))
    };
    let null_percent = find("amount", "value", Some("null_percent"));
    assert!(null_percent.status >= Status::Warning, "{null_percent:?}");
    assert!(null_percent.message.contains("manifest metadata"), "{}", null_percent.message);
    let mean = find("amount", "value", Some("mean"));
    assert!(mean.status >= Status::Warning, "{mean:?}");
    assert!(mean.message.contains("from a scan of 400 rows added in 1 file"), "{}", mean.message);
    assert!(find("amount", "drift", None).status >= Status::Warning);
    let steady = find("we\"ird col", "drift", None);
    assert!(steady.status <= Status::Warning, "{steady:?}");
    let misconfigured = find("label", "value", Some("mean"));
    assert_eq!(misconfigured.status, Status::Error);
    assert!(misconfigured.message.contains("does not apply to a string column"), "{}", misconfigured.message);
    let report: HashMap<String, usize> = evaluations.iter().fold(HashMap::new(), |mut counts, evaluation| {
        *counts.entry(evaluation.status.to_string()).or_default() += 1;
        counts
    });
    println!("newest batch: {report:?}");

    // scope = "table": the whole table as of the newest snapshot, which adds up the batches.
    let config = sensors_toml(dir.path(), "table", None);
    let whole = config.tables[0].distribution.clone().unwrap();
    let newest_id = newest.snapshot_id;
    let table_profile = observe(&table, "db.events", &whole, &[newest_id]).await.unwrap().remove(0);
    assert_eq!((table_profile.files, table_profile.row_count), (8, 3200));
    let batches: Vec<&serde_json::Value> =
        ids.iter().map(|id| &expected[id.to_string()]["columns"]["amount"]).collect();
    let total = |statistic: &str| batches.iter().map(|batch| batch[statistic].as_f64().unwrap()).sum::<f64>();
    let extreme = |statistic: &str, pick: fn(f64, f64) -> f64| {
        batches.iter().map(|batch| batch[statistic].as_f64().unwrap()).reduce(pick).unwrap()
    };
    let value = |statistic: Statistic| table_profile.value("amount", statistic).unwrap().value;
    assert!(close(value(Statistic::Sum), total("sum"), 1e-9));
    assert!(close(value(Statistic::NullCount), total("null_count"), 1e-9));
    assert!(close(value(Statistic::Min), extreme("min", f64::min), 1e-9));
    assert!(close(value(Statistic::Max), extreme("max", f64::max), 1e-9));
    assert_eq!(table_profile.value("amount", Statistic::NullCount).unwrap().source, ValueSource::Metadata);

    // `sample = 100`: a row cap per batch; counts still come from metadata, exactly.
    let mut sampled = sensor.clone();
    sampled.sample = Some(100.0);
    let small = observe(&table, "db.events", &sampled, &[newest_id]).await.unwrap().remove(0);
    assert!(small.sampled && small.scanned_rows == 100 && small.row_count == 400, "{small:?}");
    assert_eq!(small.value("amount", Statistic::NullCount), newest.value("amount", Statistic::NullCount));
    let sampled_mean = judge("db.events", &sampled, &small, &Windows::new(), None)
        .into_iter()
        .find(|evaluation| {
            evaluation.column.as_deref() == Some("amount") && evaluation.statistic.as_deref() == Some("mean")
        })
        .unwrap();
    assert!(sampled_mean.message.contains("a sample of 100 of the 400 rows"), "{}", sampled_mean.message);

    // An unknown column is an error result, never a panic; quotes in names are just names.
    let config = sensors_toml(dir.path(), "added", Some(r#"'nope"; drop table x; --' "#));
    let sensor = config.tables[0].distribution.clone().unwrap();
    let error = observe(&table, "db.events", &sensor, &ids).await.unwrap_err();
    assert!(matches!(&error, SensorError::ColumnNotFound { column, .. } if column.starts_with("nope")), "{error}");
    assert_eq!(error.reason(), "column_not_found");
}

/// A profile over a spent time budget keeps the newest batch and leaves the older ones for the
/// next run; a reference batch whose data file is gone degrades drift to a warning that names
/// the file, instead of failing the whole sensor ("Failed to load Parquet metadata, source:
/// External:" before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_keeps_the_newest_batch_and_a_missing_reference_file_degrades_drift() {
    let dir = tempfile::tempdir().unwrap();
    python("distribution_write.py", dir.path());
    let config = sensors_toml(dir.path(), "added", None);
    let sensor = config.tables[0].distribution.clone().unwrap();
    let catalog = CatalogHandle::connect(&config.catalog).await.unwrap();
    let table = catalog.load_table(&TableName::parse("db.events").unwrap()).await.unwrap();

    let ids = snapshots_to_profile(&table, &sensor, &|_| false);
    let now = std::time::Instant::now();
    let spent = distribution::observe_until(&table, "db.events", &sensor, &ids, now).await.unwrap();
    let spent_ids: Vec<i64> = spent.iter().map(|profile| profile.snapshot_id).collect();
    assert_eq!(spent_ids, vec![*ids.last().unwrap()], "only the newest batch within a spent budget");
    let ample =
        distribution::observe_until(&table, "db.events", &sensor, &ids, now + std::time::Duration::from_secs(600))
            .await
            .unwrap();
    let ample_ids: Vec<i64> = ample.iter().map(|profile| profile.snapshot_id).collect();
    assert_eq!(ample_ids, ids, "every batch, oldest first, within an ample budget");

    // Remove the data file a reference batch of the newest one added.
    let newest = *ids.last().unwrap();
    let reference = distribution::reference_snapshots(&table, &sensor, newest);
    let snapshot = table.metadata().snapshot_by_id(reference[0]).unwrap().clone();
    let list = table.manifest_list_reader(&snapshot).load().await.unwrap();
    let mut added = Vec::new();
    for manifest in list.entries().iter().filter(|manifest| manifest.added_snapshot_id == reference[0]) {
        let loaded = manifest.load_manifest(table.file_io()).await.unwrap();
        added.extend(loaded.entries().iter().map(|entry| entry.data_file().file_path().to_string()));
    }
    let gone = added.first().expect("the reference batch added a file").clone();

    // The sensor profiled the history once; then the file goes, and a restarted service profiles
    // the newest batch again, reading its reference.
    let config = std::sync::Arc::new(config);
    let run = || async {
        let metrics = std::sync::Arc::new(icewatch::export::metrics::Metrics::new());
        let pipeline = icewatch::pipeline::Pipeline::new(config.clone(), metrics).await.unwrap();
        pipeline.run_all(&[]).await.into_iter().find(|result| result.sensor.as_str() == "distribution").unwrap()
    };
    let before = run().await;
    // (`mean` of the string column `label` is configured on purpose: that one is an error result.)
    let ran = |result: &icewatch::sensors::SensorResult| {
        result.evaluations.iter().all(|evaluation| evaluation.metric != "run")
    };
    assert!(ran(&before), "{before:#?}");
    std::fs::remove_file(gone.strip_prefix("file://").unwrap_or(&gone)).unwrap();
    let result = run().await;
    assert!(ran(&result), "the sensor ran: {result:#?}");
    let drifts: Vec<_> = result.evaluations.iter().filter(|evaluation| evaluation.metric == "drift").collect();
    assert!(!drifts.is_empty(), "{:#?}", result.evaluations);
    for drift in drifts {
        assert!(drift.status >= Status::Warning, "{drift:#?}");
        assert!(drift.message.starts_with("reference incomplete: 1 of 5 reference batch(es)"), "{}", drift.message);
        assert!(drift.message.contains(&gone), "the missing file is named: {}", drift.message);
    }
}
