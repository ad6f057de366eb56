//! Lineage end to end on real tables: a stale bronze table is the root cause of its pipeline
//! and a fresh commit clears it (service metrics and `check`); OpenLineage events posted to a
//! running `icewatch run` build the edge, link the snapshot and turn the stage red on FAIL,
//! while malformed ones change nothing; a cycle in a pipeline is a config error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::arrow::record_batch::RecordBatch;
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::{Catalog, NamespaceIdent, TableCreation};
use icewatch::demo::{append_batch, open_sql_catalog, retime_snapshots, rewrite_table_metadata, table_ident};

use crate::common::{ChildGuard, free_port, http_get, icewatch_bin, repo_root, run, wait_for};

const BRONZE: &str = "bronze.raw_trades";
const SILVER: &str = "silver.cleaned_trades";
const GOLD: &str = "gold.trade_summary_daily";
const HOUR_MS: i64 = 3_600_000;

struct Warehouse {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    catalog_uri: String,
    warehouse: PathBuf,
}

impl Warehouse {
    async fn catalog(&self) -> Arc<iceberg_catalog_sql::SqlCatalog> {
        Arc::new(open_sql_catalog(&self.catalog_uri, &self.warehouse, "default").await.unwrap())
    }

    /// Appends `rows` rows to `table` as one fresh snapshot and returns its id.
    async fn append(&self, table: &str, rows: i64) -> i64 {
        let catalog = self.catalog().await;
        let schema = Arc::new(ArrowSchema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..rows))]).unwrap();
        let table = append_batch(catalog.as_ref(), &table_ident(table), batch).await.unwrap();
        table.metadata().current_snapshot_id().unwrap()
    }

    /// Moves the table's only snapshot `age_ms` into the past.
    async fn backdate(&self, table: &str, age_ms: i64) {
        let at = chrono::Utc::now().timestamp_millis() - age_ms;
        rewrite_table_metadata(&self.catalog_uri, "default", &table_ident(table), |metadata| {
            retime_snapshots(metadata, &[at])
        })
        .await
        .unwrap();
    }

    /// A sensors.toml watching the three tables; `silver_warn_after` decides whether a stale
    /// silver table fails too.
    fn config(&self, port: u16, silver_warn_after: &str) -> PathBuf {
        let text = format!(
            r#"[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "warehouse"
name = "default"

[history]
path = "history.db"

[server]
listen = "127.0.0.1:{port}"

[defaults]
schedule = "* * * * * *"

[tables."{BRONZE}".freshness]
warn_after = "1h"
critical_after = "12h"

[tables."{SILVER}".freshness]
warn_after = "{silver_warn_after}"

[tables."{GOLD}".freshness]
warn_after = "6h"

[pipelines.trade_pipeline]
stages = [
  {{ stage = "bronze", table = "{BRONZE}" }},
  {{ stage = "silver", table = "{SILVER}", upstream = ["bronze"] }},
  {{ stage = "gold", table = "{GOLD}", upstream = ["silver"] }},
]

[lineage]
datasets = [{{ namespace = "file", strip_prefix = "{warehouse}/" }}]
"#,
            warehouse = self.warehouse.display()
        );
        let path = self.dir.join(format!("sensors-{port}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Three one-column tables, each with one fresh snapshot.
async fn warehouse() -> Warehouse {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    let warehouse = Warehouse {
        catalog_uri: format!("sqlite://{}?mode=rwc", path.join("catalog.db").display()),
        warehouse: path.join("warehouse"),
        dir: path,
        _dir: dir,
    };
    std::fs::create_dir_all(&warehouse.warehouse).unwrap();
    let catalog = warehouse.catalog().await;
    let schema = Schema::builder()
        .with_fields(vec![NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into()])
        .build()
        .unwrap();
    for name in [BRONZE, SILVER, GOLD] {
        let ident = table_ident(name);
        let namespace = NamespaceIdent::new(ident.namespace().join("."));
        catalog.create_namespace(&namespace, HashMap::new()).await.unwrap();
        let creation = TableCreation::builder().name(ident.name().to_string()).schema(schema.clone()).build();
        catalog.create_table(&namespace, creation).await.unwrap();
        warehouse.append(name, 3).await;
    }
    warehouse
}

/// The value of the sample `name{labels}` in a /metrics body (labels in exposition order).
fn sample(body: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    body.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|value| value.trim().parse().ok())
}

fn wait_metric(port: u16, what: &str, check: impl Fn(&str) -> bool) -> String {
    wait_for(what, Duration::from_secs(60), || {
        let body = http_get(&format!("http://127.0.0.1:{port}/metrics"))?;
        check(&body).then_some(body)
    })
}

fn start_service(config: &Path, port: u16) -> ChildGuard {
    let mut command = Command::new(icewatch_bin());
    command.args(["run", "--config"]).arg(config).env("RUST_LOG", "warn");
    let guard = ChildGuard::spawn("icewatch run", &mut command);
    wait_for("icewatch /healthz", Duration::from_secs(30), || http_get(&format!("http://127.0.0.1:{port}/healthz")));
    guard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_bronze_is_the_root_cause_until_a_fresh_commit() {
    let warehouse = warehouse().await;
    warehouse.backdate(BRONZE, 3 * HOUR_MS).await;
    warehouse.backdate(SILVER, 3 * HOUR_MS - 600_000).await;
    warehouse.backdate(GOLD, 3 * HOUR_MS - 1_200_000).await;

    // `check` with a silver table that is stale too: bronze is the cause, silver the effect.
    let strict = warehouse.config(free_port(), "1h");
    let (code, stdout, stderr) = run(Command::new(icewatch_bin()).args(["check", "--config"]).arg(&strict));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("root cause in pipeline `trade_pipeline`: `bronze.raw_trades` is stale"), "{stdout}");
    assert!(stdout.contains("`silver.cleaned_trades` is stale because `bronze.raw_trades` is stale"), "{stdout}");
    let (_, json, _) = run(Command::new(icewatch_bin()).args(["check", "--format", "json", "--config"]).arg(&strict));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let lineage: Vec<&serde_json::Value> =
        report["results"].as_array().unwrap().iter().filter(|result| result["sensor"] == "lineage").collect();
    assert_eq!(lineage.len(), 3, "{json}");
    assert_eq!(lineage[0]["table"], BRONZE);
    assert_eq!(lineage[0]["status"], "warning");
    assert_eq!(lineage[2]["table"], GOLD);
    assert!(lineage[2]["message"].as_str().unwrap().contains("healthy but downstream of a failure"), "{json}");

    // The service: silver and gold are fresh enough by their own thresholds, yet impacted.
    let port = free_port();
    let config = warehouse.config(port, "6h");
    let mut service = start_service(&config, port);
    let body = wait_metric(port, "bronze to be the root cause", |body| {
        sample(
            body,
            "pipeline_stage_root_cause",
            r#"job="bronze.raw_trades",pipeline_name="trade_pipeline",stage="bronze""#,
        ) == Some(1.0)
    });
    assert_eq!(
        sample(&body, "pipeline_stage_success", r#"job="bronze.raw_trades",stage="bronze""#),
        Some(0.0),
        "{body}"
    );
    assert_eq!(sample(&body, "pipeline_stage_success", r#"job="silver.cleaned_trades",stage="silver""#), Some(1.0));
    for (stage, job) in [("silver", SILVER), ("gold", GOLD)] {
        let labels = format!(r#"job="{job}",pipeline_name="trade_pipeline",stage="{stage}""#);
        assert_eq!(sample(&body, "pipeline_stage_impacted", &labels), Some(1.0), "{stage}: {body}");
        assert_eq!(sample(&body, "pipeline_stage_root_cause", &labels), Some(0.0), "{stage}");
    }
    assert_eq!(sample(&body, "pipeline_end_to_end_success", r#"pipeline_name="trade_pipeline""#), Some(0.0));
    assert_eq!(sample(&body, "pipeline_downstream_impact_count", r#"stage="bronze""#), Some(2.0));
    assert_eq!(sample(&body, "pipeline_downstream_impact_count", r#"stage="silver""#), Some(0.0));
    // Silver committed 10 minutes after bronze: it does not lag.
    assert_eq!(
        sample(
            &body,
            "pipeline_propagation_lag_seconds",
            r#"downstream="silver",pipeline_name="trade_pipeline",upstream="bronze""#
        ),
        Some(0.0)
    );
    assert_eq!(sample(&body, "pipeline_stage_failure_total", r#"job="bronze.raw_trades",stage="bronze""#), Some(0.0));
    let view: serde_json::Value =
        serde_json::from_str(&http_get(&format!("http://127.0.0.1:{port}/api/v1/lineage")).unwrap()).unwrap();
    assert_eq!(view["pipelines"][0]["stages"][1]["caused_by"][0], "bronze", "{view}");

    // A fresh bronze commit clears it; silver now lags bronze by about 2h50m.
    warehouse.append(BRONZE, 5).await;
    let body = wait_metric(port, "the pipeline to recover", |body| {
        sample(body, "pipeline_end_to_end_success", r#"pipeline_name="trade_pipeline""#) == Some(1.0)
    });
    for (stage, job) in [("bronze", BRONZE), ("silver", SILVER), ("gold", GOLD)] {
        let labels = format!(r#"job="{job}",pipeline_name="trade_pipeline",stage="{stage}""#);
        assert_eq!(sample(&body, "pipeline_stage_root_cause", &labels), Some(0.0), "{stage}: {body}");
        assert_eq!(sample(&body, "pipeline_stage_impacted", &labels), Some(0.0), "{stage}");
    }
    assert_eq!(sample(&body, "pipeline_stage_success", r#"job="bronze.raw_trades",stage="bronze""#), Some(1.0));
    assert_eq!(sample(&body, "pipeline_downstream_impact_count", r#"stage="bronze""#), Some(0.0));
    let lag = sample(
        &body,
        "pipeline_propagation_lag_seconds",
        r#"downstream="silver",pipeline_name="trade_pipeline",upstream="bronze""#,
    )
    .unwrap();
    assert!((2.0 * 3600.0..3.0 * 3600.0).contains(&lag), "lag {lag}");
    assert!(service.terminate(Duration::from_secs(20)).is_some_and(|status| status.success()));
}

/// Fills a fixture's placeholders.
fn fixture(name: &str, warehouse: &Path, run_id: &str, event_time: &str, snapshot_id: i64) -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures/openlineage").join(name))
        .unwrap()
        .replace("{{WAREHOUSE}}", &warehouse.display().to_string())
        .replace("{{RUN_ID}}", run_id)
        .replace("{{EVENT_TIME}}", event_time)
        .replace("{{SNAPSHOT_ID}}", &snapshot_id.to_string())
}

/// POSTs `body` to the lineage endpoint; returns (HTTP status, response body).
fn post(port: u16, body: &[u8]) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    std::fs::write(&file, body).unwrap();
    let (_, stdout, stderr) = run(Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Content-Type: application/json",
            "-w",
            "\n%{http_code}",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://127.0.0.1:{port}/api/v1/lineage")));
    let (response, status) = stdout.rsplit_once('\n').unwrap_or_else(|| panic!("curl: {stdout} {stderr}"));
    (status.trim().parse().unwrap(), response.to_string())
}

fn lineage_view(port: u16) -> serde_json::Value {
    serde_json::from_str(&http_get(&format!("http://127.0.0.1:{port}/api/v1/lineage")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openlineage_events_build_the_edge_link_the_snapshot_and_fail_the_stage() {
    let warehouse = warehouse().await;
    let port = free_port();
    let config = warehouse.config(port, "6h");
    let mut service = start_service(&config, port);
    wait_metric(port, "a healthy pipeline", |body| {
        sample(body, "pipeline_end_to_end_success", r#"pipeline_name="trade_pipeline""#) == Some(1.0)
    });

    // A Spark job appends to silver: START, the real Iceberg commit, COMPLETE with its facet.
    let run_id = uuid::Uuid::new_v4().to_string();
    let started = chrono::Utc::now() - chrono::Duration::seconds(42);
    let start = fixture("spark_start.json", &warehouse.warehouse, &run_id, &started.to_rfc3339(), 0);
    let (status, response) = post(port, start.as_bytes());
    assert_eq!(status, 201, "{response}");
    let snapshot_id = warehouse.append(SILVER, 4).await;
    let finished = (started + chrono::Duration::seconds(42)).to_rfc3339();
    let complete = fixture("spark_complete_iceberg_commit.json", &warehouse.warehouse, &run_id, &finished, snapshot_id);
    let (status, response) = post(port, complete.as_bytes());
    assert_eq!(status, 201, "{response}");
    let accepted: serde_json::Value = serde_json::from_str(&response).unwrap();
    assert_eq!(accepted["snapshots"][0]["table"], SILVER);
    assert_eq!(accepted["snapshots"][0]["snapshot_id"], snapshot_id);

    let view = lineage_view(port);
    let edges = view["learned_edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{view}");
    assert_eq!(edges[0]["from"], BRONZE);
    assert_eq!(edges[0]["to"], SILVER);
    assert_eq!(edges[0]["jobs"][0], "spark/clean_trades.append_data_exec_v1.silver_cleaned_trades");
    let newest_run = &view["runs"][0];
    assert_eq!(newest_run["run_id"], run_id.as_str());
    assert_eq!(newest_run["state"], "COMPLETE");
    assert_eq!(newest_run["outputs"][0]["snapshot_id"], snapshot_id);
    let body = wait_metric(port, "the stage duration", |body| {
        sample(body, "pipeline_stage_duration_seconds", r#"job="silver.cleaned_trades",stage="silver""#) == Some(42.0)
    });
    assert_eq!(sample(&body, "pipeline_stage_success", r#"job="silver.cleaned_trades",stage="silver""#), Some(1.0));

    // Malformed events: 400 with a reason, nothing applied; an oversized body: 413.
    let before = lineage_view(port);
    let missing_run = fixture("malformed_missing_run.json", &warehouse.warehouse, &run_id, &finished, 0);
    let (status, response) = post(port, missing_run.as_bytes());
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("missing `run`"), "{response}");
    let bad_snapshot =
        fixture("malformed_snapshot_id.json", &warehouse.warehouse, &uuid::Uuid::new_v4().to_string(), &finished, 0);
    let (status, response) = post(port, bad_snapshot.as_bytes());
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("icebergCommitReport.snapshotId"), "{response}");
    let (status, _) = post(port, b"{\"eventType\": \"START\",");
    assert_eq!(status, 400);
    let mut huge = start.clone().into_bytes();
    huge.extend(std::iter::repeat_n(b' ', icewatch::server::MAX_EVENT_BYTES));
    let (status, _) = post(port, &huge);
    assert_eq!(status, 413);
    let after = lineage_view(port);
    assert_eq!(before["learned_edges"], after["learned_edges"]);
    assert_eq!(before["runs"], after["runs"]);

    // The next run of the job fails: silver turns red, is the root cause, gold is impacted.
    let failed_run = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now();
    let (status, _) = post(
        port,
        fixture(
            "spark_start.json",
            &warehouse.warehouse,
            &failed_run,
            &(now - chrono::Duration::seconds(5)).to_rfc3339(),
            0,
        )
        .as_bytes(),
    );
    assert_eq!(status, 201);
    let (status, response) =
        post(port, fixture("spark_fail.json", &warehouse.warehouse, &failed_run, &now.to_rfc3339(), 0).as_bytes());
    assert_eq!(status, 201, "{response}");
    let body = http_get(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
    assert_eq!(
        sample(&body, "pipeline_stage_success", r#"job="silver.cleaned_trades",stage="silver""#),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "pipeline_stage_failure_total", r#"job="silver.cleaned_trades",stage="silver""#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "pipeline_stage_root_cause",
            r#"job="silver.cleaned_trades",pipeline_name="trade_pipeline",stage="silver""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "pipeline_stage_impacted",
            r#"job="gold.trade_summary_daily",pipeline_name="trade_pipeline",stage="gold""#
        ),
        Some(1.0)
    );
    assert_eq!(sample(&body, "pipeline_end_to_end_success", r#"pipeline_name="trade_pipeline""#), Some(0.0));
    assert!(service.terminate(Duration::from_secs(20)).is_some_and(|status| status.success()));

    // The events were stored: `icewatch lineage` replays them from the history store.
    let (code, dot, stderr) =
        run(Command::new(icewatch_bin()).args(["lineage", "--format", "dot", "--config"]).arg(&config));
    assert_eq!(code, 0, "{stderr}");
    assert!(dot.contains(r#""bronze.raw_trades" -> "silver.cleaned_trades" [style=dashed, label="spark/clean_trades.append_data_exec_v1.silver_cleaned_trades"];"#), "{dot}");
    assert!(dot.contains(r#""silver.cleaned_trades" -> "gold.trade_summary_daily";"#), "{dot}");
    let (code, text, _) = run(Command::new(icewatch_bin()).args(["lineage", "--config"]).arg(&config));
    assert_eq!(code, 0);
    assert!(text.contains("learned from OpenLineage: 1 edge(s), 2 run(s)"), "{text}");
}

#[test]
fn a_cycle_in_a_declared_pipeline_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cycle.toml");
    std::fs::write(
        &config,
        r#"[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "warehouse"

[tables."a.one".freshness]
warn_after = "1h"
[tables."a.two".freshness]
warn_after = "1h"
[tables."a.three".freshness]
warn_after = "1h"

[pipelines.loop]
stages = [
  { stage = "one", table = "a.one", upstream = ["three"] },
  { stage = "two", table = "a.two", upstream = ["one"] },
  { stage = "three", table = "a.three", upstream = ["two"] },
]
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = run(Command::new(icewatch_bin()).args(["validate", "--config"]).arg(&config));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("the pipeline has a cycle: one → two → three → one"), "{stderr}");
    assert!(stderr.contains("pipelines.loop.stages"), "{stderr}");
}
