//! Lineage end to end on real tables: a stale bronze table is the root cause of its pipeline
//! and a fresh commit clears it (service metrics and `check`); OpenLineage events posted to a
//! running `icewatch run` build the edge, link the snapshot and turn the stage red on FAIL,
//! while malformed ones change nothing; a cycle in a pipeline is a config error. What events can
//! make the service hold is bounded: an event over the dataset caps is refused at once and the
//! service keeps answering, through a restart too; thousands of jobs on one edge keep the edge,
//! the answer and the memory small; events past `lineage.retention` are deleted at start-up.

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

use icewatch::history::{Event, HistoryLocation, HistoryStore};
use std::time::Instant;

use crate::common::{ChildGuard, free_port, http_get, icewatch_bin, repo_root, rss_bytes, run, wait_for};

pub(crate) const BRONZE: &str = "bronze.raw_trades";
pub(crate) const SILVER: &str = "silver.cleaned_trades";
pub(crate) const GOLD: &str = "gold.trade_summary_daily";
pub(crate) const HOUR_MS: i64 = 3_600_000;

pub(crate) struct Warehouse {
    _dir: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    catalog_uri: String,
    pub(crate) warehouse: PathBuf,
}

impl Warehouse {
    async fn catalog(&self) -> Arc<iceberg_catalog_sql::SqlCatalog> {
        Arc::new(open_sql_catalog(&self.catalog_uri, &self.warehouse, "default").await.unwrap())
    }

    /// Appends `rows` rows to `table` as one fresh snapshot and returns its id.
    pub(crate) async fn append(&self, table: &str, rows: i64) -> i64 {
        let catalog = self.catalog().await;
        let schema = Arc::new(ArrowSchema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..rows))]).unwrap();
        let table = append_batch(catalog.as_ref(), &table_ident(table), batch).await.unwrap();
        table.metadata().current_snapshot_id().unwrap()
    }

    /// Moves the table's only snapshot `age_ms` into the past.
    pub(crate) async fn backdate(&self, table: &str, age_ms: i64) {
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
pub(crate) async fn warehouse() -> Warehouse {
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
    // Each problem links to the section its alert links to: the root cause, the stage it breaks.
    let runbook = |result: &serde_json::Value| result["runbook_url"].as_str().unwrap_or_default().to_string();
    assert!(runbook(lineage[0]).ends_with("/lineage.md#pipelinestagerootcause"), "{json}");
    assert!(runbook(lineage[1]).ends_with("/lineage.md#pipelinestagefailure"), "{json}");
    assert!(lineage[2].get("runbook_url").is_none(), "an ok result has no runbook link: {json}");
    assert!(
        stdout.contains(
            "runbook: https://github.com/icewatch/icewatch/blob/main/docs/runbooks/freshness.md#freshnessviolation"
        ),
        "{stdout}"
    );
    assert_eq!(lineage[2]["table"], GOLD);
    assert!(lineage[2]["message"].as_str().unwrap().contains("healthy but downstream of a failure"), "{json}");

    // The service: silver and gold are fresh enough by their own thresholds, yet impacted.
    let port = free_port();
    let config = warehouse.config(port, "6h");
    let mut service = start_service(&config, port);
    // The tables run concurrently: wait for silver's stage to be evaluated too.
    let body = wait_metric(port, "bronze to be the root cause", |body| {
        sample(
            body,
            "pipeline_stage_root_cause",
            r#"job="bronze.raw_trades",pipeline_name="trade_pipeline",stage="bronze",table="bronze.raw_trades""#,
        ) == Some(1.0)
            && sample(body, "pipeline_stage_success", r#"job="silver.cleaned_trades",stage="silver""#).is_some()
    });
    assert_eq!(
        sample(&body, "pipeline_stage_success", r#"job="bronze.raw_trades",stage="bronze""#),
        Some(0.0),
        "{body}"
    );
    assert_eq!(sample(&body, "pipeline_stage_success", r#"job="silver.cleaned_trades",stage="silver""#), Some(1.0));
    for (stage, job) in [("silver", SILVER), ("gold", GOLD)] {
        // An impacted stage names its root cause's table; its root-cause series its own.
        let impacted = format!(r#"job="{job}",pipeline_name="trade_pipeline",stage="{stage}",table="{BRONZE}""#);
        assert_eq!(sample(&body, "pipeline_stage_impacted", &impacted), Some(1.0), "{stage}: {body}");
        let own = format!(r#"job="{job}",pipeline_name="trade_pipeline",stage="{stage}",table="{job}""#);
        assert_eq!(sample(&body, "pipeline_stage_root_cause", &own), Some(0.0), "{stage}");
        assert_eq!(sample(&body, "pipeline_stage_impacted", &own), None, "{stage}: one impacted series per stage");
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
        let labels = format!(r#"job="{job}",pipeline_name="trade_pipeline",stage="{stage}",table="{job}""#);
        assert_eq!(sample(&body, "pipeline_stage_root_cause", &labels), Some(0.0), "{stage}: {body}");
        assert_eq!(sample(&body, "pipeline_stage_impacted", &labels), Some(0.0), "{stage}");
        let root = format!(r#"job="{job}",pipeline_name="trade_pipeline",stage="{stage}",table="{BRONZE}""#);
        assert!(stage == "bronze" || sample(&body, "pipeline_stage_impacted", &root).is_none(), "{stage}: {body}");
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
            r#"job="silver.cleaned_trades",pipeline_name="trade_pipeline",stage="silver",table="silver.cleaned_trades""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "pipeline_stage_impacted",
            r#"job="gold.trade_summary_daily",pipeline_name="trade_pipeline",stage="gold",table="silver.cleaned_trades""#
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

/// A RunEvent of job `job` reading `inputs` and writing `outputs` datasets of namespace `n`
/// (short names, so that 15,000 of each still fit in a body under 1 MiB).
fn wide_event(job: &str, inputs: usize, outputs: usize) -> String {
    let list = |prefix: &str, count: usize| -> String {
        (0..count).map(|index| format!(r#"{{"namespace":"n","name":"{prefix}{index}"}}"#)).collect::<Vec<_>>().join(",")
    };
    format!(
        r#"{{"eventType":"COMPLETE","eventTime":"{}","run":{{"runId":"{}"}},"job":{{"namespace":"spark","name":"{job}"}},"inputs":[{}],"outputs":[{}]}}"#,
        chrono::Utc::now().to_rfc3339(),
        uuid::Uuid::new_v4(),
        list("i", inputs),
        list("o", outputs)
    )
}

/// A fresh warehouse and the config of a service on a free port.
async fn warehouse_with_config() -> (Warehouse, u16, PathBuf) {
    let warehouse = warehouse().await;
    let port = free_port();
    let config = warehouse.config(port, "6h");
    (warehouse, port, config)
}

/// Stops `service`, which must exit cleanly.
fn stop(mut service: ChildGuard) {
    assert!(service.terminate(Duration::from_secs(20)).is_some_and(|status| status.success()));
}

/// How long `/healthz` takes to answer (curl included); panics when it does not.
fn healthz_latency(port: u16) -> Duration {
    let started = Instant::now();
    http_get(&format!("http://127.0.0.1:{port}/healthz")).expect("/healthz answers");
    started.elapsed()
}

/// The history store of a config written by [`Warehouse::config`].
async fn history_store(warehouse: &Warehouse) -> HistoryStore {
    HistoryStore::open(&HistoryLocation::Sqlite(warehouse.dir.join("history.db"))).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_dataset_caps_is_refused_at_once_and_the_service_keeps_answering() {
    let (warehouse, port, config) = warehouse_with_config().await;
    let service = start_service(&config, port);

    // The event that froze the service for 217 s: 15,000 inputs × 15,000 outputs in 1 MiB.
    let wide = wide_event("spark/wide", 15_000, 15_000);
    assert!(wide.len() < icewatch::server::MAX_EVENT_BYTES, "{} bytes", wide.len());
    let started = Instant::now();
    let (status, response) = post(port, wide.as_bytes());
    let refused_in = started.elapsed();
    let healthz = healthz_latency(port);
    println!("{} byte 15k x 15k event: {status} in {refused_in:?}; /healthz then {healthz:?}", wide.len());
    assert_eq!(status, 422, "{response}");
    assert!(response.contains("`inputs` lists 15000 datasets, more than the 1000 accepted"), "{response}");
    assert!(refused_in < Duration::from_secs(5), "{refused_in:?}");
    assert!(healthz < Duration::from_secs(1), "{healthz:?}");
    let long_name = wide_event(&"j".repeat(600), 1, 1);
    let (status, response) = post(port, long_name.as_bytes());
    assert_eq!(status, 413, "{response}");
    assert!(response.contains("`job.name` is 600 bytes long"), "{response}");

    // The widest event accepted: 1,000 × 1,000 pairs make the 10,000 edges of the cap, no more.
    let started = Instant::now();
    let (status, response) = post(port, wide_event("spark/at_cap", 1_000, 1_000).as_bytes());
    let accepted_in = started.elapsed();
    let healthz = healthz_latency(port);
    println!("1,000 x 1,000 event: {status} in {accepted_in:?}; /healthz then {healthz:?}");
    assert_eq!(status, 201, "{response}");
    assert!(accepted_in < Duration::from_secs(5), "{accepted_in:?}");
    assert!(healthz < Duration::from_secs(1), "{healthz:?}");
    assert_eq!(lineage_view(port)["learned_edges"].as_array().unwrap().len(), 10_000);
    let body = http_get(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
    assert_eq!(sample(&body, "icewatch_lineage_events_refused_total", r#"reason="too_many_datasets""#), Some(1.0));
    assert_eq!(sample(&body, "icewatch_lineage_events_refused_total", r#"reason="name_too_long""#), Some(1.0));
    stop(service);

    // A restart serves at once and replays the accepted event (the refused one was never stored).
    let started = Instant::now();
    let service = start_service(&config, port);
    let serving_in = started.elapsed();
    let replayed = wait_for("the replay", Duration::from_secs(30), || {
        (lineage_view(port)["learned_edges"].as_array().unwrap().len() == 10_000).then(|| started.elapsed())
    });
    println!("restart: /healthz after {serving_in:?}, replayed after {replayed:?}");
    assert!(serving_in < Duration::from_secs(10), "{serving_in:?} (2 s expected)");
    let stored = history_store(&warehouse).await.events(None, "openlineage", 10).await.unwrap();
    assert_eq!(stored.len(), 1, "only the accepted event is stored");
    stop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_jobs_on_one_edge_keep_the_edge_the_answer_and_the_memory_small() {
    let (warehouse, port, config) = warehouse_with_config().await;
    let service = start_service(&config, port);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/lineage");
    let started_at = chrono::Utc::now().to_rfc3339();
    // Posts the START events of jobs `range` (each its own run), four at a time.
    let post_jobs = |range: std::ops::Range<usize>| {
        let (client, url, started_at) = (client.clone(), url.clone(), started_at.clone());
        let bodies: Vec<String> = range
            .map(|index| {
                fixture("spark_start.json", &warehouse.warehouse, &uuid::Uuid::new_v4().to_string(), &started_at, 0)
                    .replace("clean_trades.append_data_exec_v1.silver_cleaned_trades", &format!("job_{index:04}"))
            })
            .collect();
        async move {
            use futures::StreamExt;
            let statuses: Vec<u16> = futures::stream::iter(bodies)
                .map(|body| {
                    let request = client.post(&url).header("Content-Type", "application/json").body(body);
                    async move { request.send().await.map(|response| response.status().as_u16()).unwrap_or(0) }
                })
                .buffer_unordered(4)
                .collect()
                .await;
            assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
        }
    };
    post_jobs(0..500).await;
    let rss_before = rss_bytes(service.pid());
    let started = Instant::now();
    post_jobs(500..5_000).await;
    let posting = started.elapsed();
    let rss_after = rss_bytes(service.pid());
    let view = http_get(&url).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&view).unwrap();
    let edges = parsed["learned_edges"].as_array().unwrap();
    println!(
        "4,500 posts in {posting:?}; RSS {} -> {} MiB; GET /api/v1/lineage {} bytes (10.8 MB before)",
        rss_before / 1_048_576,
        rss_after / 1_048_576,
        view.len()
    );
    assert_eq!(edges.len(), 1, "{view}");
    let jobs: Vec<&str> = edges[0]["jobs"].as_array().unwrap().iter().filter_map(|job| job.as_str()).collect();
    // The 16 jobs seen last: posted four at a time, the last ones may land in any order.
    assert_eq!(jobs.len(), 16, "{jobs:?}");
    assert!(jobs.iter().all(|job| job.as_bytes() >= b"spark/job_4980".as_slice()), "{jobs:?}");
    assert!(view.len() < 256 * 1024, "{} bytes", view.len());
    assert!(rss_after < rss_before + 64 * 1_048_576, "RSS {rss_before} -> {rss_after}");
    stop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_retention_are_deleted_when_the_service_starts() {
    let (warehouse, port, config) = warehouse_with_config().await;
    // 30 events of 40 days ago and one of an hour ago, written straight into the store.
    let store = history_store(&warehouse).await;
    let now = chrono::Utc::now();
    let events: Vec<Event> = (0..31)
        .map(|index| {
            let at = if index < 30 { now - chrono::Duration::days(40) } else { now - chrono::Duration::hours(1) };
            let body = fixture(
                "spark_start.json",
                &warehouse.warehouse,
                &uuid::Uuid::new_v4().to_string(),
                &at.to_rfc3339(),
                0,
            )
            .replace("clean_trades.append_data_exec_v1.silver_cleaned_trades", &format!("job_{index}"));
            Event {
                table: SILVER.to_string(),
                kind: "openlineage".to_string(),
                key: format!("seeded-{index}"),
                occurred_at_ms: at.timestamp_millis(),
                payload: serde_json::from_str(&body).unwrap(),
            }
        })
        .collect();
    assert_eq!(store.record_events(&events).await.unwrap(), 31);

    let service = start_service(&config, port);
    let mut left = Vec::new();
    for _ in 0..300 {
        left = store.events(None, "openlineage", 100).await.unwrap();
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left.len(), 1, "the old events are deleted within 30 s");
    assert_eq!(left[0].key, "seeded-30");
    let view = lineage_view(port);
    let runs = view["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "only the recent event is replayed: {view}");
    assert_eq!(runs[0]["job"], "spark/job_30");
    stop(service);
    store.close().await;
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
