//! The alert path end to end and the dashboards against live data: icewatch on a demo warehouse
//! whose bronze table has gone stale → a real Prometheus scraping it with `rules/` loaded → the
//! freshness alert fires → a real Alertmanager (with the shipped `deploy/alertmanager.yml`
//! routing) holds it and notifies a webhook; the verdicts icewatch reports against the alerts
//! Prometheus raises from them (the same set); one stopped table at the top of a pipeline
//! reaching the receiver as one notification, and its recovery as one; and every dashboard
//! expression run against a Prometheus that has scraped icewatch.
//!
//! Test-only changes to the shipped files, and why: the rules are copied with their `for:` and
//! `keep_firing_for:` durations rewritten (zeroed where only the verdicts matter; scaled down,
//! all by the same factor, where the order in which alerts fire and resolve is what is tested),
//! and the Alertmanager config is copied with its webhook URLs pointed at this test's receiver
//! and `group_wait` (and, for the one-page test, `group_interval`) shortened. Nothing else
//! changes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iceberg::Catalog;
use iceberg::spec::{PrimitiveType, Type};
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use icewatch::demo::{self, DemoWarehouse};
use serde_json::Value;

use crate::common::{self, ChildGuard, http_get, wait_for};
use crate::ops::{TestPrometheus, dashboard_expressions, duration_ms, grafana_to_promql};
use crate::service::{Icewatch, Pushgateway, demo_config, prepare_demo, vector};

/// Copies `rules/*.yml` into `dir` with every `for:` and `keep_firing_for:` duration scaled so
/// that a shipped minute lasts `minute` (zero: every duration `0s`), keeping their order;
/// returns the `rule_files` entry for Prometheus.
fn rules_scaled(dir: &Path, minute: Duration) -> String {
    let mut copied = 0;
    for entry in std::fs::read_dir(common::repo_root().join("rules")).expect("read rules/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|ext| ext != "yml") {
            continue;
        }
        let text: String = common::read(&path)
            .lines()
            .map(|line| {
                let indent = &line[..line.len() - line.trim_start().len()];
                for key in ["for:", "keep_firing_for:"] {
                    if let Some(value) = line.trim_start().strip_prefix(key) {
                        let scaled = u128::from(duration_ms(value)) * minute.as_millis() / 60_000;
                        return format!("{indent}{key} {scaled}ms\n");
                    }
                }
                format!("{line}\n")
            })
            .collect();
        std::fs::write(dir.join(path.file_name().expect("file name")), text).expect("write rule copy");
        copied += 1;
    }
    assert!(copied >= 5, "only {copied} rule files");
    format!("rule_files:\n  - {}/*.yml\n", dir.display())
}

/// The rules with every `for:` and `keep_firing_for:` set to `0s`.
fn rules_without_for(dir: &Path) -> String {
    rules_scaled(dir, Duration::ZERO)
}

/// The rules as shipped.
fn shipped_rules() -> String {
    format!("rule_files:\n  - {}/rules/*.yml\n", common::repo_root().display())
}

/// A webhook receiver on 127.0.0.1 that keeps the JSON bodies POSTed to it (bounded: it stops
/// accepting after 100 requests, and the thread ends with the test process).
struct Webhook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(100) {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(json) = serde_json::from_slice::<Value>(&body)
                {
                    kept.lock().expect("lock").push(json);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Webhook { url, bodies }
    }
}

/// A real Alertmanager with the shipped config, pointed at `webhook`; stopped on drop.
struct TestAlertmanager {
    base_url: String,
    _process: ChildGuard,
}

impl TestAlertmanager {
    fn start(dir: &Path, webhook: &Webhook) -> TestAlertmanager {
        TestAlertmanager::start_with(dir, webhook, &[("group_wait: 30s", "group_wait: 1s")])
    }

    /// The shipped config pointed at `webhook`, with each (shipped, test) line replaced.
    fn start_with(dir: &Path, webhook: &Webhook, replacements: &[(&str, &str)]) -> TestAlertmanager {
        let mut config_text = common::read(&common::repo_root().join("deploy/alertmanager.yml"));
        assert!(config_text.contains("http://127.0.0.1:5001"), "deploy/alertmanager.yml changed shape");
        config_text = config_text.replace("http://127.0.0.1:5001", &webhook.url);
        for (shipped, test) in replacements {
            assert!(config_text.contains(shipped), "deploy/alertmanager.yml has no `{shipped}` any more");
            config_text = config_text.replace(shipped, test);
        }
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, config_text).expect("write config");
        let port = common::free_port();
        let mut command = Command::new("prometheus-alertmanager");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("alertmanager-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).expect("log file"));
        let process = ChildGuard::spawn("alertmanager", &mut command);
        let base_url = format!("http://127.0.0.1:{port}");
        wait_for("alertmanager to be ready", Duration::from_secs(30), || http_get(&format!("{base_url}/-/ready")));
        TestAlertmanager { base_url, _process: process }
    }

    fn alerts(&self) -> Vec<Value> {
        let body = http_get(&format!("{}/api/v2/alerts", self.base_url)).unwrap_or_default();
        serde_json::from_str::<Value>(&body).ok().and_then(|value| value.as_array().cloned()).unwrap_or_default()
    }
}

/// How long a shipped minute of `for:` / `keep_firing_for:` lasts in the one-page test: every
/// duration shrinks by the same factor (1/20), so the order the rules set is what runs. The
/// smallest step between a source and what it inhibits (one shipped minute) is then 3 s, three
/// evaluations of the test's Prometheus.
const TEST_MINUTE: Duration = Duration::from_secs(3);

/// The demo's stale bronze table: its warning reaches Alertmanager, inhibited by the critical
/// that names bronze as its pipeline's root cause, which is the one page (durations scaled by
/// [`TEST_MINUTE`], so the order in which they reach Alertmanager is the shipped one).
#[test]
fn a_stale_bronze_table_fires_through_prometheus_into_alertmanager() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    // No live writer: bronze's last commit stays where the backdated history ends (minutes ago),
    // past its `warn_after = "2m"`.
    let warehouse = prepare_demo(dir.path());
    let port = common::free_port();
    let config = demo_config(&warehouse, "alerting.toml", port, "*/2 * * * * *", "");
    let _icewatch = Icewatch::start(&config, port);
    let webhook = Webhook::start();
    let alertmanager = TestAlertmanager::start(dir.path(), &webhook);
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    let prometheus = TestPrometheus::start(&format!(
        "{}alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\nscrape_configs:\n  - job_name: icewatch\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        rules_scaled(&rules_dir, TEST_MINUTE),
        alertmanager.base_url.trim_start_matches("http://"),
    ));
    let scraping = Instant::now();

    // What Prometheus sees: bronze older than its 2 minute warning threshold.
    let (age, threshold) = wait_for("the bronze freshness series", Duration::from_secs(60), || {
        let age = vector(&prometheus, "icewatch:data_freshness_age_seconds{table=\"bronze.raw_trades\"}")
            .first()
            .map(|(_, value)| *value)?;
        let threshold =
            vector(&prometheus, "icewatch:data_freshness_warning_threshold_seconds{table=\"bronze.raw_trades\"}")
                .first()
                .map(|(_, value)| *value)?;
        Some((age, threshold))
    });
    eprintln!("bronze age {age:.0}s against a warning threshold of {threshold:.0}s");
    assert_eq!(threshold, 120.0, "warn_after = \"2m\" from the demo's sensors.toml");
    assert!(age > threshold, "the demo's bronze table should be stale");

    let received = wait_for("BronzeFreshnessViolation in Alertmanager", Duration::from_secs(90), || {
        alertmanager.alerts().into_iter().find(|alert| {
            alert["labels"]["alertname"] == "BronzeFreshnessViolation"
                && alert["labels"]["table"] == "bronze.raw_trades"
        })
    });
    let in_alertmanager = scraping.elapsed();
    assert_eq!(received["labels"]["severity"], "warning");
    assert_eq!(received["labels"]["service"], "icewatch");
    assert_eq!(received["labels"]["layer"], "bronze");
    assert!(
        received["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|url| url.ends_with("freshness.md#bronzefreshnessviolation"))
    );
    let receivers: Vec<&str> = received["receivers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|receiver| receiver["name"].as_str())
        .collect();
    assert_eq!(receivers, vec!["data-team"], "warnings route to data-team");
    // Bronze is the root cause of the demo's pipeline: that critical, which names the table, is
    // the page, and the table's warning is inhibited by it (docs/alerts.md, "One incident, one
    // page").
    let inhibited = wait_for("the warning to be inhibited", Duration::from_secs(30), || {
        alertmanager.alerts().into_iter().find(|alert| {
            alert["labels"]["alertname"] == "BronzeFreshnessViolation"
                && alert["labels"]["table"] == "bronze.raw_trades"
                && alert["status"]["state"] == "suppressed"
        })
    });
    assert!(inhibited["status"]["inhibitedBy"].as_array().is_some_and(|by| !by.is_empty()), "{inhibited}");

    // And the webhook behind the shipped routing gets the page.
    let notified = wait_for("the data-oncall webhook notification", Duration::from_secs(60), || {
        webhook
            .bodies
            .lock()
            .expect("lock")
            .iter()
            .find(|body| {
                body["status"] == "firing"
                    && body["alerts"].as_array().into_iter().flatten().any(|alert| {
                        alert["labels"]["alertname"] == "PipelineStageRootCause"
                            && alert["labels"]["table"] == "bronze.raw_trades"
                    })
            })
            .cloned()
    });
    assert_eq!(notified["receiver"], "data-oncall");
    let bodies = webhook.bodies.lock().expect("lock").clone();
    let notified_names: Vec<&str> = bodies
        .iter()
        .flat_map(|body| body["alerts"].as_array().into_iter().flatten())
        .filter_map(|alert| alert["labels"]["alertname"].as_str())
        .collect();
    assert!(!notified_names.contains(&"BronzeFreshnessViolation"), "the inhibited warning was delivered: {bodies:#?}");
    eprintln!(
        "alert in Alertmanager {:.1}s after Prometheus started scraping, webhook notified {:.1}s after; whole test {:.1}s",
        in_alertmanager.as_secs_f64(),
        scraping.elapsed().as_secs_f64() - in_alertmanager.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Adds an optional string column to `table` of the demo warehouse (a real schema change).
fn add_column(warehouse: &DemoWarehouse, table: &str, column: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let catalog = warehouse.catalog().await.expect("demo catalog");
        let loaded = catalog.load_table(&demo::table_ident(table)).await.expect("load table");
        let transaction = Transaction::new(&loaded);
        let transaction = transaction
            .update_schema()
            .add_column(AddColumn::optional(column, Type::Primitive(PrimitiveType::String)))
            .apply(transaction)
            .expect("schema update");
        transaction.commit(&catalog).await.expect("commit the schema update");
    });
}

/// Metric families that only distribution and lineage sensors produce: panels reading them may
/// be empty until those sensors land (printed, not failed).
/// Expressions the demo cannot feed: the chi-square test needs a categorical distribution column.
const NOT_IN_THE_DEMO: [&str; 1] = ["data_drift_chi2_pvalue"];

#[test]
fn every_dashboard_expression_parses_and_returns_data_from_a_scraped_icewatch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = prepare_demo(dir.path());
    let port = common::free_port();
    let gateway = Pushgateway::start(common::free_port());
    let config = demo_config(
        &warehouse,
        "dashboards.toml",
        port,
        "*/2 * * * * *",
        // A declared table that does not exist, so sensor errors (by reason) have a series.
        &format!(
            "[pushgateway]\nurl = \"{}\"\njob = \"icewatch_push\"\n\n[tables.\"bronze.missing_feed\".freshness]\nwarn_after = \"5m\"\n",
            gateway.url
        ),
    );
    let icewatch = Icewatch::start(&config, port);
    let prometheus = TestPrometheus::start(&format!(
        "{}scrape_configs:\n  - job_name: icewatch\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        shipped_rules()
    ));
    // rate() over `$__rate_interval` (1m) needs two samples of the counters: wait for them.
    let scraping = Instant::now();
    wait_for("two scrapes' worth of counters", Duration::from_secs(60), || {
        (!vector(&prometheus, "rate(icewatch_sensor_runs_total[1m])").is_empty()
            && !vector(&prometheus, "icewatch:data_freshness_age_seconds").is_empty()
            && !vector(&prometheus, "time() - icewatch_last_push_success_timestamp_seconds").is_empty())
        .then_some(())
    });
    // A schema change while Prometheus watches, for the schema-change annotation (an event
    // marker: `increase(schema_changes_total[30s]) > 0`). Bronze already has a `column_added`
    // (the demo's `venue`), so the counter goes from 1 to 2 and increase() sees it.
    add_column(&warehouse, "bronze.raw_trades", "dashboard_test_note");
    wait_for("the schema change through Prometheus", Duration::from_secs(60), || {
        (!vector(
            &prometheus,
            "increase(schema_changes_total{table=\"bronze.raw_trades\", change_type=\"column_added\"}[30s]) > 0",
        )
        .is_empty())
        .then_some(())
    });
    eprintln!("queried after {:.1}s of scraping", scraping.elapsed().as_secs_f64());
    icewatch.assert_running();

    let expressions = dashboard_expressions();
    let mut rejected = Vec::new();
    let mut empty_awaiting = Vec::new();
    let mut empty = Vec::new();
    let mut with_data = 0;
    for expression in &expressions {
        let promql = grafana_to_promql(&expression.expr);
        let where_ = format!("{} / {}: `{promql}`", expression.dashboard, expression.panel);
        match prometheus.query(&promql) {
            Err(error) => rejected.push(format!("{where_}: {error}")),
            Ok(data) if data["result"].as_array().is_some_and(|result| !result.is_empty()) => with_data += 1,
            Ok(_) if NOT_IN_THE_DEMO.iter().any(|prefix| promql.contains(prefix)) => empty_awaiting.push(where_),
            Ok(_) => empty.push(where_),
        }
    }
    eprintln!(
        "{} dashboard expressions: {with_data} returned data; empty because the demo has no categorical column ({}):\n  {}",
        expressions.len(),
        empty_awaiting.len(),
        empty_awaiting.join("\n  ")
    );
    assert!(rejected.is_empty(), "expressions Prometheus rejects:\n{}", rejected.join("\n"));
    assert!(empty.is_empty(), "dashboard expressions without data:\n{}", empty.join("\n"));
    assert!(with_data >= 30, "only {with_data} expressions returned data");
}

/// What a verdict is about: (table, sensor, metric, column, statistic), empty strings where a
/// result has none (as the `icewatch_result_severity` labels are).
type VerdictKey = (String, String, String, String, String);

/// The freshness alerts name the table and the `metric`, not the timestamp column (a table has
/// one `freshness.timestamp_column`): results of `event_time_lag_seconds` are compared without it.
const FRESHNESS_ALERTS: [&str; 8] = [
    "BronzeFreshnessViolation",
    "SilverFreshnessViolation",
    "GoldFreshnessViolation",
    "FreshnessViolation",
    "FreshnessCriticalFailure",
    "EventTimeLagHigh",
    "EventTimeLagCritical",
    "EventTimeInFuture",
];

/// Alerts that follow metadata facts (schema changes by type, an empty snapshot: rules/schema.yml
/// and rules/volume.yml say why), pipeline health and the service itself: not verdicts, not
/// compared. The results they stand beside (`schema_change`, `lineage`) are left out too.
const NOT_VERDICT_ALERTS: [&str; 16] = [
    "UnexpectedColumnDrop",
    "ColumnAdded",
    "ColumnTypeChanged",
    "SchemaEvolved",
    "ZeroRowCount",
    "PipelineStageFailure",
    "PipelineEndToEndFailure",
    "PipelineStageRootCause",
    "PipelineStageImpacted",
    "IcewatchDown",
    "IcewatchSensorErrors",
    "IcewatchSensorFailing",
    "IcewatchStaleResults",
    "IcewatchPushFailures",
    "IcewatchSkippedRuns",
    "IcewatchSchedulerLag",
];

/// The warning and critical results icewatch reports on `/api/v1/results`, and how many results
/// it reports in all.
fn judged_problems(icewatch: &Icewatch) -> (BTreeSet<VerdictKey>, usize) {
    let body = http_get(&format!("{}/api/v1/results", icewatch.base_url)).expect("GET /api/v1/results");
    let results: Value = serde_json::from_str(&body).expect("results JSON");
    let results = results["results"].as_array().cloned().unwrap_or_default();
    let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
    let problems = results
        .iter()
        .filter(|result| matches!(result["status"].as_str(), Some("warning" | "critical")))
        .filter(|result| result["metric"] != "schema_change" && result["sensor"] != "lineage")
        .map(|result| {
            let column = if result["sensor"] == "freshness" { String::new() } else { text(&result["column"]) };
            (
                text(&result["table"]),
                text(&result["sensor"]),
                text(&result["metric"]),
                column,
                text(&result["statistic"]),
            )
        })
        .collect();
    (problems, results.len())
}

/// The verdicts Prometheus' firing and pending verdict alerts cover, and the other alerts by name.
fn alerted_verdicts(prometheus: &TestPrometheus) -> (BTreeSet<VerdictKey>, BTreeSet<String>) {
    let body = http_get(&format!("{}/api/v1/alerts", prometheus.base_url)).expect("GET /api/v1/alerts");
    let alerts: Value = serde_json::from_str(&body).expect("alerts JSON");
    let mut covered = BTreeSet::new();
    let mut others = BTreeSet::new();
    for alert in alerts["data"]["alerts"].as_array().into_iter().flatten() {
        let labels = &alert["labels"];
        let label = |name: &str| labels[name].as_str().unwrap_or_default().to_string();
        let name = label("alertname");
        let key = if NOT_VERDICT_ALERTS.contains(&name.as_str()) {
            others.insert(format!("{name}{{table={:?}}} {}", label("table"), alert["state"]));
            continue;
        } else if FRESHNESS_ALERTS.contains(&name.as_str()) {
            (label("table"), "freshness".to_string(), label("metric"), String::new(), String::new())
        } else if name == "VolumeAnomalyDetected" {
            (label("table"), "volume".to_string(), "rows_added".to_string(), String::new(), String::new())
        } else {
            assert!(!label("sensor").is_empty() && !label("metric").is_empty(), "{name} does not name its verdict");
            (label("table"), label("sensor"), label("metric"), label("column"), label("statistic"))
        };
        covered.insert(key);
    }
    (covered, others)
}

fn show(keys: &BTreeSet<VerdictKey>) -> String {
    keys.iter()
        .map(|(table, sensor, metric, column, statistic)| format!("  {table} {sensor} {metric} {column} {statistic}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The verdicts icewatch reports and the alerts `rules/` raise are the same set: icewatch on the
/// demo warehouse without its live writer (so results only move with the clock: bronze and
/// silver are past `warn_after`, not yet past `critical_after`), a real Prometheus scraping it
/// every second with the shipped rules (`for:` zeroed). Each comparison reads the results,
/// waits for Prometheus to scrape and evaluate after that, reads its alerts, and reads the
/// results again: only a comparison between two identical reads counts.
#[test]
fn every_warning_and_critical_verdict_is_an_alert_and_nothing_else_is() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = prepare_demo(dir.path());
    let port = common::free_port();
    let config = demo_config(&warehouse, "verdicts.toml", port, "*/2 * * * * *", "");
    let icewatch = Icewatch::start(&config, port);
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    let prometheus = TestPrometheus::start(&format!(
        "{}scrape_configs:\n  - job_name: icewatch\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        rules_without_for(&rules_dir),
    ));
    // Every table's verdicts scraped, and the rules evaluated on them.
    wait_for("every demo table's verdicts in Prometheus", Duration::from_secs(90), || {
        let tables: BTreeSet<String> = vector(&prometheus, "icewatch_result_severity{sensor=\"distribution\"}")
            .into_iter()
            .filter_map(|(labels, _)| labels.get("table").cloned())
            .collect();
        // Four sensors on each of the three tables have run.
        let sensors_run = vector(&prometheus, "icewatch_sensor_up").len();
        (tables.len() == 3 && sensors_run >= 12 && !vector(&prometheus, "ALERTS").is_empty()).then_some(())
    });

    let mut attempts = Vec::new();
    let agreed = (0..5).find_map(|attempt| {
        let (before, total) = judged_problems(&icewatch);
        // Two scrapes and two evaluations after the read: Prometheus holds results at least as
        // new as `before`.
        std::thread::sleep(Duration::from_secs(3));
        let (alerted, others) = alerted_verdicts(&prometheus);
        let (after, _) = judged_problems(&icewatch);
        eprintln!(
            "attempt {attempt}: {total} results, {} warning/critical:\n{}\nverdict alerts cover {}:\n{}\nother alerts: {others:?}",
            before.len(),
            show(&before),
            alerted.len(),
            show(&alerted),
        );
        if before != after {
            eprintln!("the results changed while Prometheus scraped them; again");
            return None;
        }
        attempts.push((before.clone(), alerted.clone()));
        (before == alerted).then_some(before)
    });
    let Some(problems) = agreed else {
        let (results, alerted) = attempts.last().cloned().unwrap_or_default();
        panic!(
            "the alerts never matched the verdicts; last stable read:\nverdicts without an alert:\n{}\nalerts without a verdict:\n{}",
            show(&results.difference(&alerted).cloned().collect()),
            show(&alerted.difference(&results).cloned().collect())
        );
    };
    // The demo has problems to alert on: bronze and silver are stale.
    for table in ["bronze.raw_trades", "silver.cleaned_trades"] {
        let key =
            (table.to_string(), "freshness".to_string(), "freshness_seconds".to_string(), String::new(), String::new());
        assert!(problems.contains(&key), "{table} should be judged stale: {problems:?}");
    }
    // And something past an old fixed threshold that the judge did not call a problem.
    let quiet_raw = vector(
        &prometheus,
        "(abs(data_distribution_zscore) >= 3 or data_drift_psi > 0.25 or data_commit_gap_zscore >= 3) \
         unless on (table, column, statistic) (icewatch_result_severity >= 1)",
    );
    eprintln!("raw figures past the old fixed thresholds, judged ok or insufficient_history: {quiet_raw:?}");
    assert!(
        !quiet_raw.is_empty(),
        "the demo should have a figure past an old fixed threshold that icewatch does not call a problem \
         (gold's drift over too few values): nothing here shows the alerts follow the verdict"
    );
    icewatch.assert_running();
    eprintln!("whole test {:.1}s", started.elapsed().as_secs_f64());
}

/// A bronze table stopped hours ago, past its `critical_after`, feeding silver and gold (declared
/// lineage, both fresh by their own thresholds): the rules raise seven alerts about it
/// (FreshnessCriticalFailure, BronzeFreshnessViolation, PipelineStageRootCause,
/// PipelineStageFailure, PipelineEndToEndFailure, PipelineStageImpacted for silver and gold),
/// and the receiver behind the shipped Alertmanager config gets exactly one notification with
/// one alert; after a fresh append, exactly one resolved notification. The real stack: icewatch,
/// Prometheus with the rules (durations scaled by [`TEST_MINUTE`]), Alertmanager with the shipped
/// routing and inhibit rules (`group_wait` 1 s, `group_interval` 2 s), and a webhook receiver.
#[test]
fn one_stopped_table_with_two_downstream_stages_pages_once_and_resolves_once() {
    use crate::lineage::{BRONZE, GOLD, HOUR_MS, SILVER};
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let warehouse = runtime.block_on(crate::lineage::warehouse());
    runtime.block_on(async {
        warehouse.backdate(BRONZE, 3 * HOUR_MS).await;
        warehouse.backdate(SILVER, 3 * HOUR_MS - 600_000).await;
        warehouse.backdate(GOLD, 3 * HOUR_MS - 1_200_000).await;
    });
    let port = common::free_port();
    let config = warehouse.dir.join("one-page.toml");
    std::fs::write(
        &config,
        format!(
            r#"[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "warehouse"

[history]
path = "history.db"

[server]
listen = "127.0.0.1:{port}"
runbook_base_url = "https://runbooks.example.org/icewatch"

[defaults]
schedule = "* * * * * *"

[tables."{BRONZE}"]
layer = "bronze"

[tables."{BRONZE}".freshness]
warn_after = "1h"
critical_after = "2h"

[tables."{SILVER}".freshness]
warn_after = "6h"

[tables."{GOLD}".freshness]
warn_after = "6h"

[pipelines.trade_pipeline]
stages = [
  {{ stage = "bronze", table = "{BRONZE}" }},
  {{ stage = "silver", table = "{SILVER}", upstream = ["bronze"] }},
  {{ stage = "gold", table = "{GOLD}", upstream = ["silver"] }},
]
"#
        ),
    )
    .expect("write sensors.toml");
    let icewatch = Icewatch::start(&config, port);
    let webhook = Webhook::start();
    let alertmanager_dir = tempfile::tempdir().expect("temp dir");
    let alertmanager = TestAlertmanager::start_with(
        alertmanager_dir.path(),
        &webhook,
        &[("group_wait: 30s", "group_wait: 1s"), ("group_interval: 5m", "group_interval: 2s")],
    );
    let rules_dir = alertmanager_dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    // deploy/prometheus.yml's scrape job (`honor_labels` for the lineage `job` label), on this
    // test's ports.
    let prometheus = TestPrometheus::start(&format!(
        "{}alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\nscrape_configs:\n  - job_name: icewatch\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        rules_scaled(&rules_dir, TEST_MINUTE),
        alertmanager.base_url.trim_start_matches("http://"),
    ));
    let scraping = Instant::now();

    // (alertname, stage) of every alert the stopped table raises.
    let expected: BTreeSet<(String, String)> = [
        ("BronzeFreshnessViolation", ""),
        ("FreshnessCriticalFailure", ""),
        ("PipelineEndToEndFailure", ""),
        ("PipelineStageFailure", "bronze"),
        ("PipelineStageImpacted", "gold"),
        ("PipelineStageImpacted", "silver"),
        ("PipelineStageRootCause", "bronze"),
    ]
    .into_iter()
    .map(|(name, stage)| (name.to_string(), stage.to_string()))
    .collect();
    let key = |labels: &Value| {
        (labels["alertname"].as_str().unwrap_or("").to_string(), labels["stage"].as_str().unwrap_or("").to_string())
    };
    // Every one of them firing in Prometheus, each naming the stopped table.
    let firing = wait_for("the stopped table's alerts to fire", Duration::from_secs(60), || {
        let body = http_get(&format!("{}/api/v1/alerts", prometheus.base_url))?;
        let alerts: Value = serde_json::from_str(&body).ok()?;
        let alerts = alerts["data"]["alerts"].as_array()?.clone();
        let firing: BTreeSet<(String, String)> =
            alerts.iter().filter(|alert| alert["state"] == "firing").map(|alert| key(&alert["labels"])).collect();
        (firing == expected && alerts.len() == expected.len()).then_some(alerts)
    });
    let all_fired = scraping.elapsed();
    for alert in &firing {
        assert_eq!(alert["labels"]["table"], BRONZE, "every alert names the root-cause table: {alert}");
        let runbook = alert["annotations"]["runbook_url"].as_str().unwrap_or_default();
        assert!(runbook.starts_with("https://runbooks.example.org/icewatch/"), "runbook_url from the config: {alert}");
    }
    let critical = firing
        .iter()
        .find(|alert| alert["labels"]["alertname"] == "FreshnessCriticalFailure")
        .expect("FreshnessCriticalFailure");
    let description = critical["annotations"]["description"].as_str().unwrap_or_default();
    assert!(description.contains("icewatch says: last commit that added rows"), "the verdict's message: {description}");

    // Alertmanager holds all seven, six of them inhibited; the receiver got one notification of
    // one alert. Alertmanager has had every alert for a `group_wait` and two `group_interval`s.
    let states = wait_for("Alertmanager to hold every alert", Duration::from_secs(30), || {
        let alerts = alertmanager.alerts();
        let states: BTreeMap<(String, String), String> = alerts
            .iter()
            .map(|alert| (key(&alert["labels"]), alert["status"]["state"].as_str().unwrap_or("").to_string()))
            .collect();
        (states.keys().cloned().collect::<BTreeSet<_>>() == expected).then_some(states)
    });
    std::thread::sleep(Duration::from_secs(5));
    let active: Vec<&(String, String)> =
        states.iter().filter(|(_, state)| state.as_str() == "active").map(|(key, _)| key).collect();
    assert_eq!(active, [&("FreshnessCriticalFailure".to_string(), String::new())], "{states:#?}");
    let bodies = webhook.bodies.lock().expect("lock").clone();
    let notified: Vec<(String, String, usize)> = bodies
        .iter()
        .map(|body| {
            let alerts = body["alerts"].as_array().map_or(0, Vec::len);
            (
                body["status"].as_str().unwrap_or("").to_string(),
                body["receiver"].as_str().unwrap_or("").to_string(),
                alerts,
            )
        })
        .collect();
    assert_eq!(notified, [("firing".to_string(), "data-oncall".to_string(), 1)], "{bodies:#?}");
    assert_eq!(bodies[0]["alerts"][0]["labels"]["alertname"], "FreshnessCriticalFailure");
    assert_eq!(bodies[0]["alerts"][0]["labels"]["table"], BRONZE);
    let paged = scraping.elapsed();

    // A fresh append: everything resolves, and the receiver hears of it once.
    runtime.block_on(warehouse.append(BRONZE, 5));
    let appended = Instant::now();
    wait_for("every alert to resolve in Prometheus", Duration::from_secs(60), || {
        let body = http_get(&format!("{}/api/v1/alerts", prometheus.base_url))?;
        let alerts: Value = serde_json::from_str(&body).ok()?;
        alerts["data"]["alerts"].as_array()?.is_empty().then_some(())
    });
    let resolved_in_prometheus = appended.elapsed();
    wait_for("the resolved notification", Duration::from_secs(30), || {
        (webhook.bodies.lock().expect("lock").len() >= 2).then_some(())
    });
    let notified_resolved = appended.elapsed();
    // Two more `group_interval`s: nothing else arrives.
    std::thread::sleep(Duration::from_secs(5));
    let bodies = webhook.bodies.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    assert_eq!(bodies[1]["status"], "resolved", "{bodies:#?}");
    let resolved = bodies[1]["alerts"].as_array().cloned().unwrap_or_default();
    assert_eq!(resolved.len(), 1, "{bodies:#?}");
    assert_eq!(resolved[0]["labels"]["alertname"], "FreshnessCriticalFailure");
    assert_eq!(resolved[0]["status"], "resolved");
    icewatch.assert_running();
    eprintln!(
        "all seven alerts firing {:.1}s after scraping started, one page checked at {:.1}s; after the append: \
         resolved in Prometheus {:.1}s, resolved notification {:.1}s; whole test {:.1}s",
        all_fired.as_secs_f64(),
        paged.as_secs_f64(),
        resolved_in_prometheus.as_secs_f64(),
        notified_resolved.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
