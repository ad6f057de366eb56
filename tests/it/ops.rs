//! Operations artefacts checked with the real tools: the Prometheus rules (`rules/`) and their
//! promtool unit tests (`tests/rules/`), the runbooks they link to, the example Prometheus and
//! Alertmanager configs (`deploy/`) and the Grafana dashboards (`dashboards/`). Must not need a
//! running icewatch: tests that check dashboards return data against a live service build on
//! `dashboard_expressions`, `grafana_to_promql` and `TestPrometheus` from here.
//!
//! YAML is read in two ways, neither needing a YAML crate: alert definitions come from
//! Prometheus itself (`/api/v1/rules`, JSON) after it loaded `rules/`, and the promtool test
//! files are scanned line by line for `alertname:` / `exp_alerts:` pairs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, ChildGuard};

/// The alert names of the original design; rules and dashboards elsewhere rely on them.
const ORIGINAL_ALERTS: [&str; 13] = [
    "BronzeFreshnessViolation",
    "SilverFreshnessViolation",
    "GoldFreshnessViolation",
    "FreshnessCriticalFailure",
    "VolumeAnomalyDetected",
    "ZeroRowCount",
    "UnexpectedColumnDrop",
    "ColumnAdded",
    "ColumnTypeChanged",
    "DistributionAnomaly",
    "HighNullPercentage",
    "PipelineStageFailure",
    "PipelineEndToEndFailure",
];

/// Every `runbook_url` starts with this template, the base icewatch exports from `[server]
/// runbook_base_url` (the repository's `docs/runbooks` without one); then `/<file>#<anchor>` in
/// docs/runbooks/. No address is written in the rules.
const RUNBOOK_URL_PREFIX: &str =
    r#"{{ with query "icewatch_runbook_info" }}{{ . | first | label "base_url" }}{{ else }}docs/runbooks{{ end }}/"#;

fn files_in(dir: &str, extension: &str) -> Vec<PathBuf> {
    let dir = common::repo_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.{extension} files in {}", dir.display());
    files
}

fn rule_files() -> Vec<PathBuf> {
    files_in("rules", "yml")
}

fn rule_test_files() -> Vec<PathBuf> {
    files_in("tests/rules", "yml")
}

fn dashboard_files() -> Vec<PathBuf> {
    files_in("dashboards", "json")
}

/// Alert names declared in `rules/`, by a line scan (`- alert: Name`); cross-checked against
/// what Prometheus loads in `alerts_carry_labels_annotations_and_existing_runbooks`.
fn alert_names_in_rule_files() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in rule_files() {
        for line in common::read(&file).lines() {
            if let Some(name) = line.trim().strip_prefix("- alert:") {
                assert!(names.insert(name.trim().to_string()), "alert {name} declared twice");
            }
        }
    }
    names
}

/// A Prometheus duration (`5m`, `1h30m`, `0s`) in milliseconds.
pub(crate) fn duration_ms(text: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit_ms = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                1
            }
            ('s', _) => 1_000,
            ('m', _) => 60_000,
            ('h', _) => 3_600_000,
            ('d', _) => 86_400_000,
            ('w', _) => 7 * 86_400_000,
            _ => panic!("not a Prometheus duration: {text:?}"),
        };
        total += number.parse::<u64>().unwrap_or_else(|_| panic!("not a Prometheus duration: {text:?}")) * unit_ms;
        number.clear();
    }
    assert!(number.is_empty(), "not a Prometheus duration: {text:?}");
    total
}

/// The `for:`, `keep_firing_for:` (milliseconds) and `severity` of every alert, from a line scan
/// of `rules/` (each alert's block runs to the next `- alert:`).
fn alert_timings() -> BTreeMap<String, (u64, u64, String)> {
    let mut timings = BTreeMap::new();
    for file in rule_files() {
        let mut current: Option<(String, u64, u64, String)> = None;
        let text = common::read(&file);
        for line in text.lines().map(str::trim).chain(["- alert: (end)"]) {
            if let Some(name) = line.strip_prefix("- alert:") {
                if let Some((name, for_ms, keep_ms, severity)) = current.take() {
                    timings.insert(name, (for_ms, keep_ms, severity));
                }
                current = Some((name.trim().to_string(), 0, 0, String::new()));
            } else if let Some((_, for_ms, keep_ms, severity)) = current.as_mut() {
                if let Some(value) = line.strip_prefix("for:") {
                    *for_ms = duration_ms(value);
                } else if let Some(value) = line.strip_prefix("keep_firing_for:") {
                    *keep_ms = duration_ms(value);
                } else if let Some(value) = line.strip_prefix("severity:") {
                    *severity = value.trim().to_string();
                }
            }
        }
    }
    timings
}

/// Alerts without a `table` label: no table inhibit rule applies to them.
const TABLE_LESS_ALERTS: [&str; 3] = ["IcewatchDown", "IcewatchPushFailures", "IcewatchSchedulerLag"];

/// docs/alerts.md, "One incident, one page": for each inhibit rule of deploy/alertmanager.yml,
/// the alerts that inhibit fire earlier (shorter `for:`) and resolve later (longer
/// `keep_firing_for:`) than every alert they inhibit, so Alertmanager never holds one of those
/// firing without its source. (PipelineEndToEndFailure is a critical with a `table`, but never
/// the only source of anything: its pipeline's PipelineStageRootCause fires whenever it does.)
#[test]
fn every_inhibiting_alert_fires_first_and_resolves_last() {
    let timings = alert_timings();
    let with_table = |name: &&String| !TABLE_LESS_ALERTS.contains(&name.as_str());
    let of = |severity: &str| -> Vec<&String> {
        timings.iter().filter(|(_, (_, _, s))| s == severity).map(|(name, _)| name).filter(with_table).collect()
    };
    let own_criticals: Vec<&String> = of("critical").into_iter().filter(|name| !name.starts_with("Pipeline")).collect();
    let root_cause = "PipelineStageRootCause".to_string();
    let end_to_end = "PipelineEndToEndFailure".to_string();
    let impacted = "PipelineStageImpacted".to_string();
    let mut table_criticals = own_criticals.clone();
    table_criticals.push(&root_cause);
    let rules: [(&str, Vec<&String>, Vec<&String>); 3] = [
        ("root cause → impacted stages, end to end", vec![&root_cause], vec![&impacted, &end_to_end]),
        ("a table's own critical → its pipeline criticals", own_criticals.clone(), vec![&root_cause, &end_to_end]),
        ("a table's critical → its warnings", table_criticals, of("warning")),
    ];
    assert!(own_criticals.len() >= 6 && rules[2].2.len() >= 20, "{timings:#?}");
    let mut problems = Vec::new();
    for (rule, sources, targets) in &rules {
        for source in sources {
            for target in targets {
                let (source_for, source_keep, _) = timings[*source];
                let (target_for, target_keep, _) = timings[*target];
                if source_for >= target_for || source_keep <= target_keep {
                    problems.push(format!(
                        "{rule}: {source} (for {source_for} ms, keeps {source_keep} ms) must fire before and resolve after {target} (for {target_for} ms, keeps {target_keep} ms)"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// A Prometheus of our own on 127.0.0.1.

/// A real Prometheus on a free loopback port, with its own TSDB directory; stopped on drop.
pub(crate) struct TestPrometheus {
    pub(crate) base_url: String,
    _process: ChildGuard,
    _dir: tempfile::TempDir,
}

impl TestPrometheus {
    /// Starts Prometheus with `extra_config` (YAML appended after a 1 s `global` block, e.g.
    /// `rule_files` or `scrape_configs`) and waits until it is ready.
    pub(crate) fn start(extra_config: &str) -> TestPrometheus {
        let dir = tempfile::tempdir().expect("temp dir for prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{extra_config}\n"))
            .expect("write prometheus config");
        let port = common::free_port();
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("create prometheus log"));
        let process = ChildGuard::spawn("prometheus", &mut command);
        let base_url = format!("http://127.0.0.1:{port}");
        common::wait_for("prometheus to be ready", Duration::from_secs(30), || {
            common::http_get(&format!("{base_url}/-/ready"))
        });
        TestPrometheus { base_url, _process: process, _dir: dir }
    }

    /// Runs an instant query; `Ok(data)` when Prometheus answers `"status": "success"`, else the
    /// error Prometheus gave.
    pub(crate) fn query(&self, promql: &str) -> Result<Value, String> {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-G", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("{}/api/v1/query", self.base_url))
            .output()
            .expect("run curl");
        let body = String::from_utf8_lossy(&output.stdout);
        let response: Value = serde_json::from_str(&body).map_err(|error| format!("not JSON ({error}): {body}"))?;
        if response["status"] == "success" {
            Ok(response["data"].clone())
        } else {
            Err(format!("{}: {}", response["errorType"], response["error"]))
        }
    }

    fn get_json(&self, path: &str) -> Value {
        let body = common::http_get(&format!("{}{path}", self.base_url)).unwrap_or_else(|| panic!("GET {path} failed"));
        serde_json::from_str(&body).expect("JSON from prometheus")
    }
}

// ---------------------------------------------------------------------------------------------
// Rules.

#[test]
fn promtool_check_rules_is_clean() {
    let (code, stdout, stderr) = common::run(Command::new("promtool").arg("check").arg("rules").args(rule_files()));
    assert_eq!(code, 0, "promtool check rules failed:\n{stdout}\n{stderr}");
    let output = format!("{stdout}{stderr}").to_lowercase();
    assert!(!output.contains("warning") && !output.contains("lint"), "promtool reported warnings:\n{stdout}\n{stderr}");
    assert_eq!(stdout.matches("SUCCESS").count(), rule_files().len(), "every rule file checked:\n{stdout}");
}

#[test]
fn promtool_unit_tests_pass() {
    let (code, stdout, stderr) = common::run(Command::new("promtool").arg("test").arg("rules").args(rule_test_files()));
    assert_eq!(code, 0, "promtool test rules failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.matches("SUCCESS").count(), rule_test_files().len(), "{stdout}");
}

/// For every `alertname:` in a promtool test file, whether that case expects the alert to fire
/// (a non-empty `exp_alerts`) or not (`exp_alerts: []`).
fn alert_test_cases() -> BTreeMap<String, (usize, usize)> {
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for file in rule_test_files() {
        let text = common::read(&file);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (index, line) in lines.iter().enumerate() {
            let Some(name) = line.strip_prefix("alertname:") else {
                continue;
            };
            let expectation = lines.get(index + 1).copied().unwrap_or_default();
            let entry = cases.entry(name.trim().to_string()).or_default();
            match expectation {
                "exp_alerts: []" => entry.1 += 1,
                "exp_alerts:" if lines.get(index + 2).is_some_and(|next| next.starts_with("- exp_labels:")) => {
                    entry.0 += 1
                }
                other => panic!("{}: `alertname: {name}` followed by `{other}`", file.display()),
            }
        }
    }
    cases
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let cases = alert_test_cases();
    let mut missing = Vec::new();
    for name in alert_names_in_rule_files() {
        let (firing, quiet) = cases.get(&name).copied().unwrap_or_default();
        if firing == 0 || quiet == 0 {
            missing.push(format!("{name} (firing cases: {firing}, quiet cases: {quiet})"));
        }
    }
    assert!(missing.is_empty(), "alerts without both kinds of promtool test: {missing:#?}");
    let unknown: Vec<&String> = cases.keys().filter(|name| !alert_names_in_rule_files().contains(*name)).collect();
    assert!(unknown.is_empty(), "tests for alerts that do not exist: {unknown:?}");
}

#[test]
fn the_original_alert_names_exist() {
    let names = alert_names_in_rule_files();
    let missing: Vec<&str> = ORIGINAL_ALERTS.iter().copied().filter(|name| !names.contains(*name)).collect();
    assert!(missing.is_empty(), "original alerts missing from rules/: {missing:?}");
}

/// GitHub's anchor for a Markdown heading: lowercase, punctuation dropped, spaces to dashes.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors_of(markdown: &Path) -> BTreeSet<String> {
    common::read(markdown)
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| github_anchor(line.trim_start_matches('#')))
        .collect()
}

/// Alerting rules as Prometheus loaded them: (name, labels, annotations), from `/api/v1/rules`.
fn loaded_alerts(prometheus: &TestPrometheus) -> Vec<(String, Value, Value)> {
    let rules = prometheus.get_json("/api/v1/rules?type=alert");
    assert_eq!(rules["status"], "success", "{rules}");
    rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .map(|rule| {
            (rule["name"].as_str().expect("rule name").to_string(), rule["labels"].clone(), rule["annotations"].clone())
        })
        .collect()
}

fn rule_files_config() -> String {
    let mut config = String::from("rule_files:\n");
    for file in rule_files() {
        config.push_str(&format!("  - {}\n", file.display()));
    }
    config
}

#[test]
fn alerts_carry_labels_annotations_and_existing_runbooks() {
    let prometheus = TestPrometheus::start(&rule_files_config());
    let alerts = loaded_alerts(&prometheus);
    let loaded: BTreeSet<String> = alerts.iter().map(|(name, _, _)| name.clone()).collect();
    assert_eq!(loaded, alert_names_in_rule_files(), "Prometheus loaded other alerts than the line scan found");

    let alerts_doc = common::read(&common::repo_root().join("docs/alerts.md"));
    let mut problems = Vec::new();
    for (name, labels, annotations) in &alerts {
        match labels["severity"].as_str() {
            Some("warning" | "critical") => {}
            other => problems.push(format!("{name}: severity {other:?}")),
        }
        if labels["service"] != "icewatch" {
            problems.push(format!("{name}: service label {}", labels["service"]));
        }
        for key in ["summary", "description", "runbook_url"] {
            if annotations[key].as_str().is_none_or(|text| text.trim().is_empty()) {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        if !alerts_doc.contains(&format!("[{name}]")) {
            problems.push(format!("{name}: not in docs/alerts.md"));
        }
        let Some(url) = annotations["runbook_url"].as_str() else {
            continue;
        };
        let Some((file, anchor)) = url.strip_prefix(RUNBOOK_URL_PREFIX).and_then(|rest| rest.split_once('#')) else {
            problems.push(format!("{name}: runbook_url {url} is not {RUNBOOK_URL_PREFIX}<file>#<anchor>"));
            continue;
        };
        let path = format!("docs/runbooks/{file}");
        let runbook = common::repo_root().join(&path);
        if file.contains('/') || !runbook.is_file() {
            problems.push(format!("{name}: runbook {path} does not exist in docs/runbooks/"));
        } else if !anchors_of(&runbook).contains(anchor) {
            problems.push(format!("{name}: no heading for #{anchor} in {path}"));
        }
    }
    assert!(problems.is_empty(), "alert problems: {problems:#?}");
}

/// Every query a runbook suggests comes in three forms, on consecutive lines of a list:
/// `- PyIceberg:`, `- Spark SQL:`, `- Trino:` (issue 21: the runbooks gave only Spark SQL), and no
/// SQL on the table (`ns.tbl`) is written anywhere else.
#[test]
fn runbook_queries_come_for_pyiceberg_spark_sql_and_trino() {
    let forms = ["- PyIceberg:", "- Spark SQL:", "- Trino:"];
    let mut problems = Vec::new();
    let mut trios = 0;
    for runbook in files_in("docs/runbooks", "md") {
        let text = common::read(&runbook);
        let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
        let name = runbook.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for (index, line) in lines.iter().enumerate() {
            if line.starts_with(forms[1]) {
                let before = index.checked_sub(1).and_then(|before| lines.get(before));
                if !before.is_some_and(|before| before.starts_with(forms[0]))
                    || !lines.get(index + 1).is_some_and(|after| after.starts_with(forms[2]))
                {
                    problems.push(format!("{name}:{}: Spark SQL without PyIceberg before and Trino after", index + 1));
                }
                trios += 1;
            }
            let sql = ["`SELECT ", "`CALL ", "`ALTER TABLE "].iter().any(|start| line.contains(start))
                && line.contains("ns.tbl");
            if sql && !forms[1..].iter().any(|form| line.starts_with(form)) {
                problems.push(format!("{name}:{}: SQL outside a Spark SQL / Trino line: {line}", index + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(trios >= 15, "only {trios} queries in the runbooks");
}

// ---------------------------------------------------------------------------------------------
// Example configs.

#[test]
fn example_prometheus_config_loads_every_rule_file() {
    let config = common::repo_root().join("deploy/prometheus.yml");
    // From another directory: `rule_files` must resolve against the config file's directory.
    let (code, stdout, stderr) =
        common::run(Command::new("promtool").arg("check").arg("config").arg(&config).current_dir(std::env::temp_dir()));
    assert_eq!(code, 0, "promtool check config failed:\n{stdout}\n{stderr}");
    let expected = format!("SUCCESS: {} rule files found", rule_files().len());
    assert!(stdout.contains(&expected), "expected `{expected}` (a glob matching nothing also passes):\n{stdout}");
}

#[test]
fn example_alertmanager_config_is_valid() {
    let config = common::repo_root().join("deploy/alertmanager.yml");
    let (code, stdout, stderr) = common::run(Command::new("amtool").arg("check-config").arg(&config));
    assert_eq!(code, 0, "amtool check-config failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("3 inhibit rules"), "{stdout}");
}

fn post_alerts(base_url: &str, alerts: &Value) {
    let (code, stdout, stderr) = common::run(
        Command::new("curl")
            .args(["-fsS", "--max-time", "5", "-X", "POST", "-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(alerts.to_string())
            .arg(format!("{base_url}/api/v2/alerts")),
    );
    assert_eq!(code, 0, "POST alerts failed:\n{stdout}\n{stderr}");
}

#[test]
fn example_alertmanager_leaves_one_alert_per_incident() {
    let dir = tempfile::tempdir().expect("temp dir for alertmanager");
    let port = common::free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let _alertmanager = ChildGuard::spawn(
        "alertmanager",
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", common::repo_root().join("deploy/alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    common::wait_for("alertmanager to be ready", Duration::from_secs(30), || {
        common::http_get(&format!("{base_url}/-/ready"))
    });

    let alert = |name: &str, severity: &str, extra: Value| {
        let mut labels = json!({"alertname": name, "severity": severity, "service": "icewatch"});
        for (key, value) in extra.as_object().expect("labels object") {
            labels[key] = value.clone();
        }
        json!({"labels": labels, "annotations": {"summary": name}})
    };
    post_alerts(
        &base_url,
        &json!([
            alert(
                "PipelineStageRootCause",
                "critical",
                json!({"pipeline_name": "orders", "stage": "ingest", "table": "raw.orders"}),
            ),
            alert(
                "PipelineStageImpacted",
                "warning",
                json!({"pipeline_name": "orders", "stage": "clean", "table": "raw.orders"})
            ),
            alert("PipelineEndToEndFailure", "critical", json!({"pipeline_name": "orders", "table": "raw.orders"})),
            // The pipeline alerts of a table that has a critical alert of its own.
            alert(
                "PipelineStageRootCause",
                "critical",
                json!({"pipeline_name": "trades", "stage": "bronze", "table": "bronze.trades"}),
            ),
            alert("PipelineEndToEndFailure", "critical", json!({"pipeline_name": "trades", "table": "bronze.trades"})),
            alert("PipelineStageImpacted", "warning", json!({"pipeline_name": "users", "stage": "users_clean"})),
            alert("FreshnessCriticalFailure", "critical", json!({"table": "bronze.trades", "layer": "bronze"})),
            alert("VolumeAnomalyDetected", "warning", json!({"table": "bronze.trades", "layer": "bronze"})),
            alert("VolumeAnomalyDetected", "warning", json!({"table": "bronze.events", "layer": "bronze"})),
            alert("IcewatchDown", "critical", json!({})),
            alert("IcewatchPushFailures", "warning", json!({"instance": "icewatch-0:9464"})),
        ]),
    );

    // (alertname, distinguishing label value) -> expected state.
    let expected: BTreeMap<(&str, &str), &str> = BTreeMap::from([
        (("PipelineStageRootCause", "ingest"), "active"),
        (("PipelineStageImpacted", "clean"), "suppressed"),
        (("PipelineEndToEndFailure", "raw.orders"), "suppressed"),
        // bronze.trades' own critical is its page, not its pipeline's.
        (("PipelineStageRootCause", "bronze"), "suppressed"),
        (("PipelineEndToEndFailure", "bronze.trades"), "suppressed"),
        (("PipelineStageImpacted", "users_clean"), "active"),
        (("FreshnessCriticalFailure", "bronze.trades"), "active"),
        (("VolumeAnomalyDetected", "bronze.trades"), "suppressed"),
        (("VolumeAnomalyDetected", "bronze.events"), "active"),
        (("IcewatchDown", ""), "active"),
        // A critical without `table` must not silence a warning without `table`.
        (("IcewatchPushFailures", "icewatch-0:9464"), "active"),
    ]);
    let mut last_seen = BTreeMap::new();
    let settled = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let Some(body) = common::http_get(&format!("{base_url}/api/v2/alerts")) else {
            return false;
        };
        let alerts: Value = serde_json::from_str(&body).expect("alerts JSON");
        last_seen = alerts
            .as_array()
            .expect("alerts array")
            .iter()
            .map(|alert| {
                let labels = &alert["labels"];
                let key = ["stage", "table", "instance"]
                    .iter()
                    .find_map(|label| labels[*label].as_str())
                    .unwrap_or("")
                    .to_string();
                let name = labels["alertname"].as_str().expect("alertname").to_string();
                (name, key, alert["status"]["state"].as_str().unwrap_or("").to_string())
            })
            .map(|(name, key, state)| ((name, key), state))
            .collect::<BTreeMap<_, _>>();
        expected.len() == last_seen.len()
            && expected.iter().all(|((name, key), state)| {
                last_seen.get(&(name.to_string(), key.to_string())).map(String::as_str) == Some(*state)
            })
    });
    assert!(settled, "alert states never matched\nexpected: {expected:#?}\nlast seen: {last_seen:#?}");
}

// ---------------------------------------------------------------------------------------------
// Dashboards.

/// One PromQL expression of a dashboard, still with its Grafana variables.
#[derive(Debug, Clone)]
pub(crate) struct PanelExpression {
    pub(crate) dashboard: String,
    /// The panel title, or `annotation: <name>` / `variable: <name>`.
    pub(crate) panel: String,
    pub(crate) expr: String,
}

fn load_dashboard(path: &Path) -> Value {
    serde_json::from_str(&common::read(path))
        .unwrap_or_else(|error| panic!("{} is not valid JSON: {error}", path.display()))
}

/// Panels of a dashboard, with the panels nested in collapsed rows.
fn panels_of(dashboard: &Value) -> Vec<Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel.clone());
        panels.extend(panel["panels"].as_array().into_iter().flatten().cloned());
    }
    panels
}

/// The metric selector inside a `label_values(<selector>, <label>)` variable query.
fn label_values_selector(query: &str) -> Option<String> {
    let inner = query.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, _label) = inner.rsplit_once(',')?;
    Some(selector.trim().to_string())
}

/// Every PromQL expression of every dashboard in `dashboards/`: panel targets, annotation
/// queries, and the selectors of `label_values(...)` variables.
pub(crate) fn dashboard_expressions() -> Vec<PanelExpression> {
    let mut expressions = Vec::new();
    for path in dashboard_files() {
        let dashboard = load_dashboard(&path);
        let title = dashboard["title"].as_str().unwrap_or("untitled").to_string();
        let mut push = |panel: String, expr: &str| {
            expressions.push(PanelExpression { dashboard: title.clone(), panel, expr: expr.to_string() })
        };
        for panel in panels_of(&dashboard) {
            let panel_title = panel["title"].as_str().unwrap_or("untitled").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    push(panel_title.clone(), expr);
                }
            }
        }
        for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
            if let Some(expr) = annotation["expr"].as_str() {
                push(format!("annotation: {}", annotation["name"].as_str().unwrap_or("")), expr);
            }
        }
        for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
            if variable["type"] != "query" {
                continue;
            }
            let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or("");
            let selector = label_values_selector(query)
                .unwrap_or_else(|| panic!("{title}: variable query `{query}` is not label_values(selector, label)"));
            push(format!("variable: {}", variable["name"].as_str().unwrap_or("")), &selector);
        }
    }
    expressions
}

/// Grafana's built-in interval variables, as a dashboard over the last hours would set them.
const GRAFANA_BUILTINS: [(&str, &str); 4] =
    [("__rate_interval", "1m"), ("__interval", "30s"), ("__range", "1h"), ("__range_s", "3600")];

/// Names of the `$name` / `${name}` variables used in `expr`.
fn grafana_variables(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find('$') {
        let after = &rest[start + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').unwrap_or(braced.len());
            (braced[..end].split(':').next().unwrap_or("").to_string(), end + 2)
        } else {
            let end = after.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(after.len());
            (after[..end].to_string(), end)
        };
        names.push(name);
        rest = &after[consumed.min(after.len())..];
    }
    names
}

/// `expr` with Grafana's variables replaced so Prometheus can run it: the interval built-ins by
/// fixed durations and every dashboard variable (`$table`, `$layer`, `$column`, ...) by `.*`,
/// as the dashboards' "All" value does. `$datasource` never belongs in an expression.
pub(crate) fn grafana_to_promql(expr: &str) -> String {
    let mut promql = expr.to_string();
    for (name, value) in GRAFANA_BUILTINS {
        promql = promql.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    for name in grafana_variables(&promql) {
        assert_ne!(name, "datasource", "`$datasource` inside a PromQL expression: {expr}");
        promql = promql.replace(&format!("${{{name}}}"), ".*").replace(&format!("${name}"), ".*");
    }
    promql
}

fn is_templated_datasource(datasource: &Value) -> bool {
    datasource["type"] == "prometheus" && matches!(datasource["uid"].as_str(), Some("${datasource}" | "$datasource"))
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for path in dashboard_files() {
        let dashboard = load_dashboard(&path);
        let file = path.file_name().expect("file name").to_string_lossy().to_string();
        let uid = dashboard["uid"].as_str().unwrap_or_default().to_string();
        if uid.is_empty() || !uids.insert(uid.clone()) {
            problems.push(format!("{file}: uid {uid:?} missing or not unique"));
        }
        if dashboard["schemaVersion"].as_u64().is_none_or(|version| version < 36) {
            problems.push(format!("{file}: schemaVersion {}", dashboard["schemaVersion"]));
        }
        let variables: BTreeMap<String, Value> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|variable| (variable["name"].as_str().unwrap_or("").to_string(), variable.clone()))
            .collect();
        match variables.get("datasource") {
            Some(variable) if variable["type"] == "datasource" && variable["query"] == "prometheus" => {}
            _ => problems.push(format!("{file}: no `datasource` variable of type prometheus")),
        }
        for (name, variable) in &variables {
            if variable["type"] == "query" && !is_templated_datasource(&variable["datasource"]) {
                problems.push(format!("{file}: variable {name} does not use $datasource"));
            }
        }
        let mut ids = BTreeSet::new();
        for panel in panels_of(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("untitled");
            match panel["id"].as_u64() {
                Some(id) if ids.insert(id) => {}
                id => problems.push(format!("{file}: panel {title:?} id {id:?} missing or duplicated")),
            }
            if panel["type"] == "row" {
                continue;
            }
            if !is_templated_datasource(&panel["datasource"]) {
                problems.push(format!("{file}: panel {title:?} datasource is not $datasource"));
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{file}: panel {title:?} has no targets"));
            }
            for target in targets {
                if !is_templated_datasource(&target["datasource"]) {
                    problems.push(format!("{file}: a target of {title:?} does not use $datasource"));
                }
                let expr = target["expr"].as_str().unwrap_or("");
                for name in grafana_variables(expr) {
                    let builtin = GRAFANA_BUILTINS.iter().any(|(builtin, _)| *builtin == name);
                    if !builtin && !variables.contains_key(&name) {
                        problems.push(format!("{file}: {title:?} uses undeclared variable ${name}"));
                    }
                }
            }
        }
        for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
            if !is_templated_datasource(&annotation["datasource"]) {
                problems.push(format!("{file}: annotation {} does not use $datasource", annotation["name"]));
            }
        }
    }
    assert!(problems.is_empty(), "dashboard problems: {problems:#?}");
}

#[test]
fn data_quality_dashboard_has_the_table_layer_and_column_variables() {
    let path = common::repo_root().join("dashboards/icewatch-data-quality.json");
    let dashboard = load_dashboard(&path);
    let names: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating list")
        .iter()
        .filter(|variable| variable["type"] == "query")
        .filter_map(|variable| variable["name"].as_str())
        .collect();
    for wanted in ["table", "layer", "column"] {
        assert!(names.contains(wanted), "variable {wanted} missing: {names:?}");
    }
    let schema_annotation = dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
        .iter()
        .any(|annotation| annotation["expr"].as_str().is_some_and(|expr| expr.contains("schema_changes_total")));
    assert!(schema_annotation, "no schema change annotation");
}

#[test]
fn every_dashboard_expression_parses_in_prometheus() {
    let expressions = dashboard_expressions();
    assert!(expressions.len() > 40, "only {} expressions found", expressions.len());
    // The rules are loaded so the recording rules the dashboards read are known names too.
    let prometheus = TestPrometheus::start(&rule_files_config());
    let mut failures = Vec::new();
    for expression in &expressions {
        let promql = grafana_to_promql(&expression.expr);
        if let Err(error) = prometheus.query(&promql) {
            failures.push(format!("{} / {}: `{promql}`: {error}", expression.dashboard, expression.panel));
        }
    }
    assert!(failures.is_empty(), "expressions Prometheus rejects: {failures:#?}");
}

/// Metric names in a PromQL expression: identifiers that are not functions (followed by `(`),
/// keywords, label names or values (inside `{...}`, `by (...)`, `on (...)` and friends),
/// durations or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Keywords, and aggregation operators (they may be followed by `by (...)` before their `(`).
    const KEYWORDS: [&str; 24] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut index = 0;
    let skip_to = |index: &mut usize, close: char| {
        while *index < chars.len() && chars[*index] != close {
            *index += 1;
        }
    };
    while index < chars.len() {
        let c = chars[index];
        if c == '{' {
            skip_to(&mut index, '}');
        } else if c == '"' {
            index += 1;
            skip_to(&mut index, '"');
        } else if c == '[' {
            skip_to(&mut index, ']');
        } else if c.is_alphabetic() || c == '_' || c == ':' {
            let start = index;
            while index < chars.len() && (chars[index].is_alphanumeric() || chars[index] == '_' || chars[index] == ':')
            {
                index += 1;
            }
            let word: String = chars[start..index].iter().collect();
            let mut next = index;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let is_call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) && is_call {
                index = next;
                skip_to(&mut index, ')');
            } else if !is_call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
            continue;
        } else if c.is_ascii_digit() || c == '.' {
            while index < chars.len() && (chars[index].is_alphanumeric() || chars[index] == '.') {
                index += 1;
            }
            continue;
        }
        index += 1;
    }
    names
}

#[test]
fn dashboards_use_only_documented_metrics() {
    let metrics_doc = common::read(&common::repo_root().join("docs/metrics.md"));
    let recorded: String = rule_files().iter().map(|file| common::read(file)).collect();
    let mut unknown = BTreeSet::new();
    let mut seen = 0;
    for expression in dashboard_expressions() {
        for name in metric_names(&grafana_to_promql(&expression.expr)) {
            seen += 1;
            let base = name.trim_end_matches("_bucket");
            let documented = metrics_doc.contains(&format!("`{base}`"))
                || (base.starts_with("process_") && metrics_doc.contains("`process_*`"))
                || base == "up"
                || (name.contains(':') && recorded.contains(&format!("record: {name}")));
            if !documented {
                unknown.insert(format!("{name} ({} / {})", expression.dashboard, expression.panel));
            }
        }
    }
    assert!(seen > 40, "only {seen} metric names found");
    assert!(unknown.is_empty(), "dashboard metrics not in docs/metrics.md or rules/: {unknown:#?}");
}

#[test]
fn grafana_variables_are_substituted() {
    assert_eq!(
        grafana_to_promql(r#"rate(x{table=~"$table", column=~"${column}"}[$__rate_interval]) > $__interval"#),
        r#"rate(x{table=~".*", column=~".*"}[1m]) > 30s"#
    );
    assert_eq!(grafana_variables("a{b=~\"$layer\"}[${__range}]"), vec!["layer", "__range"]);
    assert_eq!(github_anchor(" BronzeFreshnessViolation"), "bronzefreshnessviolation");
    assert_eq!(github_anchor("Freshness runbook"), "freshness-runbook");
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (sensor, le) (rate(a_bucket{x="y"}[1m]))) / on (t) group_left () max without (u) (b) > 3 or time() - c:d"#
        ),
        BTreeSet::from(["a_bucket".to_string(), "b".to_string(), "c:d".to_string()])
    );
}
