//! `icewatch run` as a service, against a real demo warehouse, a real Prometheus and a real
//! Pushgateway on 127.0.0.1: the seed metrics arrive by both paths, a Pushgateway outage is
//! survived and counted, SIGTERM ends with a last push and exit 0, SIGHUP and `POST /-/reload`
//! swap the configuration (and reject a broken one), basic auth and TLS protect the endpoints,
//! `/metrics` passes `promtool check metrics`, and memory stays flat under an accelerated
//! schedule. The helpers here (`prepare_demo`, `Icewatch`, `Pushgateway`, `samples`) are reused
//! by `alerting.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use icewatch::demo::{self, DemoOptions, DemoWarehouse};

use crate::common::{self, ChildGuard, http_get, wait_for};
use crate::ops::TestPrometheus;

// ---------------------------------------------------------------------------------------------
// Helpers shared with alerting.rs.

/// Writes a demo warehouse (2 days of backdated history: quicker than the default 5) into `dir`.
pub(crate) fn prepare_demo(dir: &Path) -> DemoWarehouse {
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut options = DemoOptions::new(dir);
    options.days = 2;
    let warehouse = runtime.block_on(demo::prepare(&options)).expect("prepare the demo warehouse");
    eprintln!("demo warehouse prepared in {:.1}s", started.elapsed().as_secs_f64());
    warehouse
}

/// The demo's sensors.toml listening on `port`, with every sensor on `schedule` and `extra`
/// (e.g. a `[pushgateway]` table) appended. Written next to the demo's own, returns its path.
pub(crate) fn demo_config(warehouse: &DemoWarehouse, name: &str, port: u16, schedule: &str, extra: &str) -> PathBuf {
    let text = common::read(&warehouse.config_path);
    assert!(
        text.contains("listen = \"127.0.0.1:9464\"") && text.contains("schedule = \"*/10 * * * * *\""),
        "the demo config changed shape:\n{text}"
    );
    let text = text
        .replace("listen = \"127.0.0.1:9464\"", &format!("listen = \"127.0.0.1:{port}\""))
        .replace("schedule = \"*/10 * * * * *\"", &format!("schedule = \"{schedule}\""));
    let path = warehouse.dir.join(name);
    std::fs::write(&path, format!("{text}\n{extra}\n")).expect("write config");
    path
}

/// A configuration without tables listening on `port` (the catalog need not exist: `/healthz`
/// answers, `/readyz` does not), for tests of the endpoints themselves; `server` is appended to
/// its `[server]` table.
pub(crate) fn endpoints_only_config(port: u16, server: &str) -> String {
    format!(
        "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"warehouse\"\n\n[history]\npath = \"history.db\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n{server}"
    )
}

/// Drops the TOML sections (a header and its lines) whose header starts with one of `headers`.
fn without_sections(text: &str, headers: &[&str]) -> String {
    let mut keep = true;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            keep = !headers.iter().any(|header| line.starts_with(header));
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A running `icewatch run`, stopped (SIGKILL) on drop unless terminated before.
pub(crate) struct Icewatch {
    pub(crate) process: ChildGuard,
    pub(crate) base_url: String,
    pub(crate) log: PathBuf,
}

impl Icewatch {
    /// Starts `icewatch run --config <config>` (logging to `<config>.log`) and waits for
    /// `/readyz` (which needs the catalog to answer).
    pub(crate) fn start(config: &Path, port: u16) -> Icewatch {
        let icewatch = Icewatch::spawn(config, port, "http");
        wait_for("icewatch /readyz", Duration::from_secs(90), || {
            icewatch.assert_running();
            http_get(&format!("{}/readyz", icewatch.base_url))
        });
        icewatch
    }

    pub(crate) fn spawn(config: &Path, port: u16, scheme: &str) -> Icewatch {
        Icewatch::spawn_through(Command::new(common::icewatch_bin()), config, port, scheme)
    }

    /// As [`Icewatch::spawn`], with `run --config <config>` appended to `command`: the icewatch
    /// binary itself, or a wrapper that ends by running it (`sh -c 'ulimit -n 256; exec "$@"'`).
    pub(crate) fn spawn_through(mut command: Command, config: &Path, port: u16, scheme: &str) -> Icewatch {
        let log = config.with_extension("log");
        command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,sqlx=warn,iceberg=warn,datafusion=warn,opendal=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create icewatch log"));
        let process = ChildGuard::spawn("icewatch", &mut command);
        Icewatch { process, base_url: format!("{scheme}://127.0.0.1:{port}"), log }
    }

    pub(crate) fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.base_url))
            .unwrap_or_else(|| panic!("icewatch /metrics failed; log:\n{}", self.log_text()))
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn assert_running(&self) {
        assert!(self.pid_alive(), "icewatch exited; log:\n{}", self.log_text());
    }

    fn pid_alive(&self) -> bool {
        // Read without reaping: an exited child stays a zombie until the guard waits for it.
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).unwrap_or_default();
        status.lines().any(|line| line.starts_with("State:") && !line.contains("zombie"))
    }

    /// Resident memory in bytes, from /proc.
    fn rss_bytes(&self) -> u64 {
        common::rss_bytes(self.process.pid())
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.process.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

/// A real Pushgateway (in-memory) on a fixed loopback port, which can be stopped and started
/// again on the same port.
pub(crate) struct Pushgateway {
    pub(crate) port: u16,
    pub(crate) url: String,
    process: Option<ChildGuard>,
}

impl Pushgateway {
    pub(crate) fn start(port: u16) -> Pushgateway {
        let mut gateway = Pushgateway { port, url: format!("http://127.0.0.1:{port}"), process: None };
        gateway.restart();
        gateway
    }

    pub(crate) fn restart(&mut self) {
        assert!(self.process.is_none(), "the pushgateway already runs");
        let process = ChildGuard::spawn(
            "prometheus-pushgateway",
            Command::new("prometheus-pushgateway")
                .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                .arg("--persistence.file=")
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.process = Some(process);
        wait_for("the pushgateway to be ready", Duration::from_secs(20), || http_get(&format!("{}/-/ready", self.url)));
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(10));
        }
    }

    pub(crate) fn metrics(&self) -> Option<String> {
        http_get(&format!("{}/metrics", self.url))
    }
}

/// Values of the samples of `name` in a text exposition whose labels include every
/// `key="value"` pair in `labels`.
pub(crate) fn samples(exposition: &str, name: &str, labels: &[&str]) -> Vec<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(inner) => inner.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|label| label_text.split(',').any(|pair| pair == *label))
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .collect()
}

/// The instant vector of `promql` as (labels, value) pairs.
pub(crate) fn vector(prometheus: &TestPrometheus, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let data = prometheus.query(promql).unwrap_or_else(|error| panic!("query `{promql}`: {error}"));
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let labels = series["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or("").to_string()))
                .collect();
            let value = series["value"][1].as_str().and_then(|value| value.parse().ok()).unwrap_or(f64::NAN);
            (labels, value)
        })
        .collect()
}

/// The seed metric names (docs/metrics.md, first table).
pub(crate) fn seed_metric_names() -> Vec<String> {
    let doc = common::read(&common::repo_root().join("docs/metrics.md"));
    let section =
        doc.split("## Seed metrics").nth(1).expect("a seed metrics section").split("\n## ").next().unwrap_or("");
    let names: Vec<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 14, "the seed table lists 14 metrics: {names:?}");
    names
}

/// Metric family names in a text exposition.
fn family_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// Runs `promtool check metrics` on `exposition`; returns its exit code and its problems.
fn promtool_check_metrics(exposition: &str) -> (i32, Vec<String>) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write to promtool");
    let output = child.wait_with_output().expect("promtool output");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (
        output.status.code().unwrap_or(-1),
        text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_string).collect(),
    )
}

fn http_status(method: &str, url: &str, extra: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// The exact promtool lint problems that come from the fixed seed names: they end in `_count`
/// without being histograms or summaries, and docs/metrics.md fixes them.
fn seed_name_lint(problem: &str, seeds: &[String]) -> bool {
    seeds.iter().any(|seed| {
        problem == format!("{seed} non-histogram and non-summary metrics should not have \"_count\" suffix")
    })
}

#[test]
fn scrape_and_push_paths_survive_a_pushgateway_outage_and_shut_down_cleanly() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = prepare_demo(dir.path());
    let port = common::free_port();
    let mut gateway = Pushgateway::start(common::free_port());
    let config = demo_config(
        &warehouse,
        "service.toml",
        port,
        "*/2 * * * * *",
        &format!(
            "[pushgateway]\nurl = \"{}\"\njob = \"icewatch_push\"\ninstance = \"test\"\ntimeout = \"1s\"\nretries = 1\n",
            gateway.url
        ),
    );
    let mut icewatch = Icewatch::start(&config, port);
    assert_eq!(http_get(&format!("{}/healthz", icewatch.base_url)).as_deref(), Some("ok\n"));
    let prometheus = TestPrometheus::start(&format!(
        "scrape_configs:\n  - job_name: icewatch\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        gateway.port
    ));

    // Which seed metrics icewatch exports today (distribution and lineage need their sensors).
    let required = [
        "data_freshness_seconds",
        "data_row_count",
        "data_volume_deviation_percent",
        "data_volume_anomaly_total",
        "schema_changes_total",
        "schema_column_count",
    ];
    let tables = ["bronze.raw_trades", "silver.cleaned_trades", "gold.trade_summary_daily"];
    let body = wait_for(
        "the freshness, volume and schema seed metrics of every table on /metrics",
        Duration::from_secs(60),
        || {
            let body = icewatch.metrics();
            let bronze = "table=\"bronze.raw_trades\"";
            let complete = required.iter().all(|name| !samples(&body, name, &[bronze]).is_empty())
                && tables.iter().all(|table| {
                    !samples(&body, "data_freshness_seconds", &[&format!("table=\"{table}\"")]).is_empty()
                });
            complete.then_some(body)
        },
    );
    let families = family_names(&body);
    let seeds = seed_metric_names();
    let (exported, not_yet): (Vec<&String>, Vec<&String>) = seeds.iter().partition(|name| families.contains(*name));
    eprintln!(
        "seed metrics exported: {exported:?}\nseed metrics not exported yet (their sensors are not built): {not_yet:?}"
    );

    // promtool: no problem at all, except the `_count` suffix of seed names that are fixed.
    let (code, problems) = promtool_check_metrics(&body);
    let (excused, real): (Vec<String>, Vec<String>) =
        problems.into_iter().partition(|problem| seed_name_lint(problem, &seeds));
    eprintln!("promtool check metrics: exit {code}; excused (fixed seed names): {excused:?}");
    assert!(real.is_empty(), "promtool check metrics found problems:\n{}", real.join("\n"));
    assert!(code == 0 || (code == 3 && !excused.is_empty()), "promtool exit code {code}");
    assert!(
        samples(&body, "process_resident_memory_bytes", &[]).first().is_some_and(|rss| *rss > 1e6),
        "process metrics missing"
    );
    assert!(
        samples(&body, "icewatch_history_points", &[]).first().is_some_and(|points| *points > 100.0),
        "icewatch_history_points not updated"
    );

    // Both paths, through Prometheus' API.
    let arrived = Instant::now();
    wait_for(
        "every exported seed metric through the scrape job and the pushgateway job",
        Duration::from_secs(60),
        || {
            exported
                .iter()
                .all(|name| {
                    let jobs: BTreeSet<String> = vector(&prometheus, &format!("count by (job) ({name})"))
                        .into_iter()
                        .filter_map(|(labels, _)| labels.get("job").cloned())
                        .collect();
                    jobs.contains("icewatch") && jobs.contains("icewatch_push")
                })
                .then_some(())
        },
    );
    eprintln!("seed metrics seen by both paths {:.1}s after the first samples", arrived.elapsed().as_secs_f64());
    assert_eq!(vector(&prometheus, "icewatch_up{job=\"icewatch_push\"}").first().map(|(_, value)| *value), Some(1.0));

    // The Pushgateway goes away: the service keeps running and serving, and counts failures.
    let outage = Instant::now();
    gateway.stop();
    let failures = wait_for("a counted push failure", Duration::from_secs(60), || {
        icewatch.assert_running();
        let failures =
            samples(&icewatch.metrics(), "icewatch_push_failures_total", &[]).first().copied().unwrap_or(0.0);
        (failures >= 2.0).then_some(failures)
    });
    eprintln!("{failures} push failures counted within {:.1}s of the outage", outage.elapsed().as_secs_f64());
    // Keep it down a while longer: runs go on, /metrics answers every time.
    let runs = |body: &str| {
        samples(body, "icewatch_sensor_runs_total", &["table=\"bronze.raw_trades\"", "sensor=\"freshness\""])
            .iter()
            .sum::<f64>()
    };
    let runs_before = runs(&icewatch.metrics());
    while outage.elapsed() < Duration::from_secs(12) {
        icewatch.assert_running();
        let body = icewatch.metrics();
        assert!(
            !samples(&body, "data_row_count", &["table=\"bronze.raw_trades\""]).is_empty(),
            "/metrics kept serving the table metrics during the outage"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let body = icewatch.metrics();
    let failures = samples(&body, "icewatch_push_failures_total", &[]).first().copied().unwrap_or(0.0);
    assert!(runs(&body) > runs_before, "sensors kept running during the outage");
    eprintln!("{failures} push failures after {:.1}s of outage", outage.elapsed().as_secs_f64());

    // It comes back (empty: no persistence): the latest values arrive, failures included.
    gateway.restart();
    let back = Instant::now();
    wait_for("the latest values in the returning pushgateway", Duration::from_secs(60), || {
        let pushed = gateway.metrics()?;
        let counted = samples(&pushed, "icewatch_push_failures_total", &["job=\"icewatch_push\""])
            .first()
            .copied()
            .unwrap_or(0.0);
        (counted >= failures
            && !samples(&pushed, "data_freshness_seconds", &["job=\"icewatch_push\"", "table=\"bronze.raw_trades\""])
                .is_empty())
        .then_some(())
    });
    wait_for("the pushed failure count through Prometheus", Duration::from_secs(30), || {
        (vector(&prometheus, "icewatch_push_failures_total{job=\"icewatch_push\"}")
            .first()
            .map(|(_, value)| *value)
            .unwrap_or(0.0)
            >= failures)
            .then_some(())
    });
    eprintln!("values pushed again {:.1}s after the pushgateway returned", back.elapsed().as_secs_f64());

    // SIGTERM: exit 0 after a last push that says icewatch_up 0.
    let stopping = Instant::now();
    let status = icewatch
        .process
        .terminate(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("icewatch did not stop within 60 s; log:\n{}", icewatch.log_text()));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", icewatch.log_text());
    let pushed = gateway.metrics().expect("pushgateway metrics");
    assert_eq!(
        samples(&pushed, "icewatch_up", &["job=\"icewatch_push\""]),
        vec![0.0],
        "the final push carries icewatch_up 0"
    );
    assert!(icewatch.log_text().contains("icewatch stopped"));
    eprintln!(
        "stopped in {:.1}s; whole test {:.1}s",
        stopping.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn reload_swaps_a_valid_configuration_and_keeps_the_old_one_on_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = prepare_demo(dir.path());
    let port = common::free_port();
    let config = demo_config(&warehouse, "reload.toml", port, "*/2 * * * * *", "");
    let original = common::read(&config);
    let icewatch = Icewatch::start(&config, port);
    let gold = "table=\"gold.trade_summary_daily\"";
    wait_for("gold metrics", Duration::from_secs(60), || {
        (!samples(&icewatch.metrics(), "data_freshness_seconds", &[gold]).is_empty()).then_some(())
    });
    let reload_url = format!("{}/-/reload", icewatch.base_url);

    // A broken file: 500 with the reason, the old configuration keeps running.
    std::fs::write(&config, original.replace("zscore_threshold = 3.0", "zscore_threshold = \"high\""))
        .expect("write config");
    let (code, body) = http_status("POST", &reload_url, &[]);
    assert_eq!(code, 500, "reload of a broken config: {body}");
    assert!(body.contains("reload.toml") && body.contains("zscore_threshold"), "the answer says what is wrong: {body}");
    icewatch.signal("HUP");
    wait_for("the SIGHUP rejection in the log", Duration::from_secs(30), || {
        (icewatch.log_text().matches("the new configuration was rejected").count() >= 2).then_some(())
    });
    icewatch.assert_running();
    assert!(
        !samples(&icewatch.metrics(), "data_freshness_seconds", &[gold]).is_empty(),
        "the old configuration still runs"
    );
    assert_eq!(http_status("GET", &reload_url, &[]).0, 405, "reload needs POST");

    // Gold removed: its series go at once, the others stay and keep updating.
    let without_gold = without_sections(&original, &["[tables.\"gold.", "[pipelines."]);
    std::fs::write(&config, &without_gold).expect("write config");
    let reload_started = Instant::now();
    let (code, body) = http_status("POST", &reload_url, &[]);
    assert_eq!(code, 200, "reload: {body}");
    eprintln!("reload answered in {:.2}s", reload_started.elapsed().as_secs_f64());
    let metrics = icewatch.metrics();
    assert!(
        !metrics.lines().any(|line| !line.starts_with('#') && line.contains(gold)),
        "gold series left after the reload:\n{metrics}"
    );
    let runs = |metrics: &str| {
        samples(
            metrics,
            "icewatch_sensor_runs_total",
            &["table=\"bronze.raw_trades\"", "sensor=\"freshness\"", "outcome=\"ok\""],
        )
        .first()
        .copied()
        .unwrap_or(0.0)
    };
    let before = runs(&metrics);
    wait_for("bronze runs going on after the reload", Duration::from_secs(30), || {
        (runs(&icewatch.metrics()) > before).then_some(())
    });

    // SIGHUP with gold back: it returns.
    std::fs::write(&config, &original).expect("write config");
    icewatch.signal("HUP");
    wait_for("gold metrics after SIGHUP", Duration::from_secs(60), || {
        (!samples(&icewatch.metrics(), "data_freshness_seconds", &[gold]).is_empty()).then_some(())
    });
    assert!(icewatch.log_text().matches("configuration reloaded").count() >= 2);
}

#[test]
fn basic_auth_and_tls_protect_the_endpoints_and_prometheus_scrapes_through_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(status.is_ok_and(|status| status.success()), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=icewatch test ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &path("server.key"),
        "-out",
        &path("server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.path().join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-out",
        &path("server.pem"),
        "-days",
        "1",
        "-extfile",
        &path("server.ext"),
    ]);

    let password = "correct horse battery staple";
    let hash = bcrypt::hash(password, 4).expect("bcrypt");
    let port = common::free_port();
    // No tables: the endpoints are what is tested here.
    let base = endpoints_only_config(port, "tls_cert_file = \"server.pem\"\ntls_key_file = \"server.key\"\n");
    // A plain password instead of a hash is a configuration error pointing at the value.
    let bad = dir.path().join("plain_password.toml");
    std::fs::write(&bad, format!("{base}\n[server.basic_auth_users]\nprometheus = \"{password}\"\n"))
        .expect("write config");
    let (code, _, stderr) = common::run(Command::new(common::icewatch_bin()).args(["validate", "--config"]).arg(&bad));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("plain_password.toml:")
            && stderr.contains("server.basic_auth_users.prometheus")
            && stderr.contains("bcrypt"),
        "{stderr}"
    );
    assert!(!stderr.contains(password), "the password is not echoed: {stderr}");

    let config = dir.path().join("secure.toml");
    std::fs::write(&config, format!("{base}\n[server.basic_auth_users]\nprometheus = \"{hash}\"\n"))
        .expect("write config");
    let icewatch = Icewatch::spawn(&config, port, "https");
    let url = |endpoint: &str| format!("{}{endpoint}", icewatch.base_url);
    let ca = path("ca.pem");
    let credentials = format!("prometheus:{password}");
    wait_for("icewatch over TLS", Duration::from_secs(60), || {
        icewatch.assert_running();
        (http_status("GET", &url("/healthz"), &["--cacert", &ca, "-u", &credentials]).0 == 200).then_some(())
    });
    for endpoint in ["/metrics", "/healthz", "/readyz", "/api/v1/results", "/"] {
        assert_eq!(http_status("GET", &url(endpoint), &["--cacert", &ca]).0, 401, "{endpoint} without credentials");
        assert_eq!(
            http_status("GET", &url(endpoint), &["--cacert", &ca, "-u", "prometheus:wrong"]).0,
            401,
            "{endpoint} with a wrong password"
        );
        assert_eq!(
            http_status("GET", &url(endpoint), &["--cacert", &ca, "-u", &format!("someone:{password}")]).0,
            401,
            "{endpoint} as an unknown user"
        );
    }
    assert_eq!(http_status("POST", &url("/-/reload"), &["--cacert", &ca]).0, 401, "reload without credentials");
    let (code, body) = http_status("GET", &url("/metrics"), &["--cacert", &ca, "-u", &credentials]);
    assert_eq!(code, 200);
    assert!(body.contains("icewatch_up 1"), "{body}");
    // Plain HTTP on the TLS port gets nowhere.
    assert!(http_get(&format!("http://127.0.0.1:{port}/metrics")).is_none());

    let prometheus = TestPrometheus::start(&format!(
        "scrape_configs:\n  - job_name: icewatch\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: prometheus\n      password: '{password}'\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    ));
    wait_for("Prometheus scraping through TLS and basic auth", Duration::from_secs(30), || {
        (vector(&prometheus, "up{job=\"icewatch\"}").first().map(|(_, value)| *value) == Some(1.0)
            && vector(&prometheus, "icewatch_up{job=\"icewatch\"}").first().map(|(_, value)| *value) == Some(1.0))
        .then_some(())
    });
}

/// Reads icewatch's RSS while it runs every sensor every second against the demo warehouse with
/// the demo writer committing every second. Bounded: `ICEWATCH_SOAK_SECONDS` (default 150) of
/// measurement after a 30 s warm-up.
#[test]
fn soak_memory_stays_flat_under_an_accelerated_schedule() {
    let soak = Duration::from_secs(
        std::env::var("ICEWATCH_SOAK_SECONDS").ok().and_then(|value| value.parse().ok()).unwrap_or(150),
    );
    let warm_up = Duration::from_secs(30);
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = prepare_demo(dir.path());
    let port = common::free_port();
    let config = demo_config(&warehouse, "soak.toml", port, "* * * * * *", "");

    // The demo's live writer, in this process, committing every second until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer_warehouse = warehouse.clone();
    let writer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        runtime.block_on(demo::run_writer(&writer_warehouse, Duration::from_secs(1), 7, async move {
            while !writer_stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
    });
    struct StopWriter(Arc<AtomicBool>);
    impl Drop for StopWriter {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop_guard = StopWriter(stop);

    let mut icewatch = Icewatch::start(&config, port);
    std::thread::sleep(warm_up);
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut scrapes = 0;
    while started.elapsed() < soak {
        icewatch.assert_running();
        let body = icewatch.metrics();
        scrapes += 1;
        assert!(!samples(&body, "data_freshness_seconds", &[]).is_empty());
        rss.push(icewatch.rss_bytes());
        std::thread::sleep(Duration::from_secs(2));
    }
    let body = icewatch.metrics();
    let runs: f64 = samples(&body, "icewatch_sensor_runs_total", &[]).iter().sum();
    let skipped: f64 = samples(&body, "icewatch_sensor_skipped_runs_total", &[]).iter().sum();
    let history = samples(&body, "icewatch_history_points", &[]).first().copied().unwrap_or(0.0);
    let status = icewatch.process.terminate(Duration::from_secs(60));
    drop(stop_guard);
    let written = writer.join().expect("writer thread");
    assert!(written.is_ok(), "the demo writer failed: {written:?}");
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(0),
        "icewatch exit; log tail:\n{}",
        icewatch.log_text().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );

    let quarter = rss.len() / 4;
    assert!(quarter >= 3, "too few samples: {}", rss.len());
    let mean = |values: &[u64]| values.iter().sum::<u64>() as f64 / values.len() as f64;
    let first = mean(&rss[..quarter]);
    let last = mean(&rss[rss.len() - quarter..]);
    let growth = (last - first) / first * 100.0;
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    eprintln!(
        "soak: {:.0}s after a {:.0}s warm-up, {} RSS samples, {scrapes} scrapes, {runs} sensor runs ({skipped} skipped), {history} history points; RSS first quarter {:.1} MiB, last quarter {:.1} MiB, min {:.1}, max {:.1}: growth {growth:+.2} %",
        soak.as_secs_f64(),
        warm_up.as_secs_f64(),
        rss.len(),
        mib(first),
        mib(last),
        mib(*rss.iter().min().unwrap_or(&0) as f64),
        mib(*rss.iter().max().unwrap_or(&0) as f64),
    );
    let trace: Vec<String> =
        rss.iter().step_by((rss.len() / 10).max(1)).map(|bytes| format!("{:.1}", mib(*bytes as f64))).collect();
    eprintln!("soak: RSS every {}s (MiB): {}", 2 * (rss.len() / 10).max(1), trace.join(" "));
    assert!(runs > soak.as_secs_f64(), "the accelerated schedule ran only {runs} sensor runs");
    assert!(growth < 5.0, "RSS grew {growth:.2} % between the first and the last quarter");
}
