//! Every metric family icewatch exports, declared once with its help text (docs/metrics.md
//! lists the same), and the functions that set them from sensor results. The families of a
//! sensor's readings are declared by the sensor (`Sensor::families`) and registered here without
//! naming the kind. Label values are bounded: names from the config and fixed enums only.
//! Encodes the 0.0.4 text format that `/metrics` serves and the Pushgateway receives.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::SensorKind;
use crate::sensors::{Evaluation, Export, Family, Metric, Reading, Status};

/// The registry and every family in it.
pub struct Metrics {
    registry: Registry,
    // Seed metrics: names and labels fixed by the original design.
    pub data_volume_deviation_percent: GaugeVec,
    pub data_volume_anomaly_total: IntCounterVec,
    pub data_distribution_value: GaugeVec,
    pub data_distribution_zscore: GaugeVec,
    pub data_distribution_anomaly_total: IntCounterVec,
    pub pipeline_stage_success: GaugeVec,
    pub pipeline_stage_duration_seconds: GaugeVec,
    pub pipeline_end_to_end_success: GaugeVec,
    pub pipeline_stage_failure_total: IntCounterVec,
    pub pipeline_downstream_impact_count: GaugeVec,
    // Freshness and volume detail.
    pub data_commit_gap_zscore: GaugeVec,
    pub data_rows_added: GaugeVec,
    pub data_rows_added_zscore: GaugeVec,
    pub data_rows_added_expected_lower: GaugeVec,
    pub data_rows_added_expected_upper: GaugeVec,
    // Distribution detail.
    pub data_distribution_expected_lower: GaugeVec,
    pub data_distribution_expected_upper: GaugeVec,
    // Lineage detail.
    pub pipeline_stage_root_cause: GaugeVec,
    pub pipeline_stage_impacted: GaugeVec,
    pub pipeline_propagation_lag_seconds: GaugeVec,
    // Verdicts and the service itself.
    pub icewatch_result_severity: IntGaugeVec,
    pub icewatch_result_message_info: IntGaugeVec,
    pub icewatch_runbook_info: IntGaugeVec,
    pub icewatch_build_info: IntGaugeVec,
    pub icewatch_seasonality_info: IntGaugeVec,
    pub icewatch_up: IntGauge,
    pub icewatch_sensor_runs_total: IntCounterVec,
    pub icewatch_sensor_run_duration_seconds: HistogramVec,
    pub icewatch_sensor_errors_total: IntCounterVec,
    pub icewatch_sensor_up: IntGaugeVec,
    pub icewatch_sensor_last_success_timestamp_seconds: GaugeVec,
    pub icewatch_sensor_skipped_runs_total: IntCounterVec,
    pub icewatch_scheduler_lag_seconds: prometheus::Gauge,
    pub icewatch_history_points: IntGauge,
    pub icewatch_push_failures_total: prometheus::IntCounter,
    pub icewatch_history_points_deleted_total: prometheus::IntCounter,
    pub icewatch_lineage_events_refused_total: IntCounterVec,
    pub icewatch_last_push_success_timestamp_seconds: prometheus::Gauge,
    pub icewatch_http_refused_total: IntCounterVec,
    /// The families sensors declare for their readings, by name.
    sensor_families: HashMap<&'static str, SensorFamily>,
    /// The labels currently exported per (family, table) of the `LatestPerTable` families.
    latest_labels: Mutex<HashMap<(&'static str, String), Vec<String>>>,
    /// The `icewatch_result_severity` label sets of each (table, sensor)'s last run, so a
    /// result the next run no longer has (a statistic or column dropped) loses its series.
    verdict_labels: Mutex<HashMap<(String, SensorKind), BTreeSet<VerdictLabels>>>,
    /// The `model` label each (table, sensor, metric) series of `icewatch_seasonality_info`
    /// has now, so a new model replaces the old series instead of adding one.
    seasonality_labels: Mutex<HashMap<ResultKey, [String; 5]>>,
    /// The `icewatch_result_message_info` label sets of each (table, sensor)'s last run.
    message_labels: Mutex<HashMap<(String, SensorKind), BTreeSet<MessageLabels>>>,
    /// Every family with a `table` label, for [`Metrics::forget_tables`].
    table_families: Vec<Box<dyn TableFamily>>,
}

/// A labelled family whose series of one table can be dropped (after a reload removed it).
trait TableFamily: Send + Sync {
    /// Removes every series whose `table` label is not kept; returns how many.
    fn forget_tables(&self, keep: &dyn Fn(&str) -> bool) -> usize;
}

impl<T: prometheus::core::MetricVecBuilder> TableFamily for prometheus::core::MetricVec<T> {
    fn forget_tables(&self, keep: &dyn Fn(&str) -> bool) -> usize {
        use prometheus::core::Collector;
        let mut removed = 0;
        for family in self.collect() {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> =
                    metric.get_label().iter().map(|pair| (pair.name(), pair.value())).collect();
                if labels.get("table").is_some_and(|table| !keep(table)) && self.remove(&labels).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// The registry while families are declared, noting those with a `table` label.
struct Declarations {
    registry: Registry,
    table_families: RefCell<Vec<Box<dyn TableFamily>>>,
}

impl Declarations {
    fn note<T: prometheus::core::MetricVecBuilder + 'static>(
        &self,
        family: &prometheus::core::MetricVec<T>,
        labels: &[&str],
    ) where
        prometheus::core::MetricVec<T>: TableFamily,
    {
        if labels.contains(&"table") {
            self.table_families.borrow_mut().push(Box::new(family.clone()));
        }
    }
}

const TABLE_LAYER: &[&str] = &["table", "layer"];
/// `column` and `statistic` are empty when a result has none (a table-level metric), so each
/// distribution statistic and each drift column has its own verdict.
const VERDICT_LABELS: &[&str] = &["table", "layer", "sensor", "metric", "column", "statistic"];
/// (table, sensor, metric) of a result.
type ResultKey = (String, String, &'static str);
/// The values of [`VERDICT_LABELS`] of one `icewatch_result_severity` series.
type VerdictLabels = [String; 6];
/// A warning or critical result and what icewatch says about it: the verdict's labels, the
/// schema change type, the status and the message (cut to [`MESSAGE_MAX_CHARS`]).
const MESSAGE_LABELS: &[&str] =
    &["table", "layer", "sensor", "metric", "column", "statistic", "change_type", "status", "message"];
type MessageLabels = [String; 9];
/// The longest `message` label value, in characters (longer messages end with `…`).
pub const MESSAGE_MAX_CHARS: usize = 300;
const DISTRIBUTION: &[&str] = &["table", "column", "statistic"];

fn gauge(declarations: &Declarations, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let family =
        GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|error| panic!("metric `{name}`: {error}"));
    declarations.registry.register(Box::new(family.clone())).unwrap_or_else(|error| panic!("metric `{name}`: {error}"));
    declarations.note(&family, labels);
    family
}

fn counter(declarations: &Declarations, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family =
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|error| panic!("metric `{name}`: {error}"));
    declarations.registry.register(Box::new(family.clone())).unwrap_or_else(|error| panic!("metric `{name}`: {error}"));
    declarations.note(&family, labels);
    family
}

impl Metrics {
    /// Declares every family. Panics only on a programming error (a bad name or a duplicate),
    /// which the unit tests catch.
    pub fn new() -> Metrics {
        let declarations = Declarations { registry: Registry::new(), table_families: RefCell::new(Vec::new()) };
        let r = &declarations;
        let registry = &declarations.registry;
        let icewatch_result_severity = IntGaugeVec::new(
            Opts::new(
                "icewatch_result_severity",
                "Verdict of the latest result: 0 ok or insufficient history, 1 warning, 2 critical.",
            ),
            VERDICT_LABELS,
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_result_severity.clone())).expect("register once");
        r.note(&icewatch_result_severity, &["table"]);
        let icewatch_result_message_info = IntGaugeVec::new(
            Opts::new(
                "icewatch_result_message_info",
                "Always 1; one series per warning or critical result of the latest runs, whose message label says what icewatch found.",
            ),
            MESSAGE_LABELS,
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_result_message_info.clone())).expect("register once");
        r.note(&icewatch_result_message_info, &["table"]);
        let icewatch_runbook_info = IntGaugeVec::new(
            Opts::new(
                "icewatch_runbook_info",
                "Always 1; base_url is [server] runbook_base_url, where the alerts' runbook_url points.",
            ),
            &["base_url"],
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_runbook_info.clone())).expect("register once");
        icewatch_runbook_info.with_label_values(&[crate::runbook::DEFAULT_BASE_URL]).set(1);
        let icewatch_build_info = IntGaugeVec::new(
            Opts::new("icewatch_build_info", "Always 1; the version label says which icewatch runs."),
            &["version"],
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_build_info.clone())).expect("register once");
        icewatch_build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let icewatch_seasonality_info = IntGaugeVec::new(
            Opts::new(
                "icewatch_seasonality_info",
                "Always 1; `model` is the seasonal model the latest result of the series was judged with.",
            ),
            &["table", "layer", "sensor", "metric", "model"],
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_seasonality_info.clone())).expect("register once");
        r.note(&icewatch_seasonality_info, &["table"]);
        let icewatch_up = IntGauge::new("icewatch_up", "1 while the icewatch service runs.").expect("valid metric");
        registry.register(Box::new(icewatch_up.clone())).expect("register once");
        let icewatch_sensor_run_duration_seconds = HistogramVec::new(
            HistogramOpts::new("icewatch_sensor_run_duration_seconds", "Wall time of a sensor run.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["table", "sensor"],
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_sensor_run_duration_seconds.clone())).expect("register once");
        r.note(&icewatch_sensor_run_duration_seconds, &["table"]);
        let icewatch_sensor_up = IntGaugeVec::new(
            Opts::new("icewatch_sensor_up", "1 when the last run of the sensor succeeded, else 0."),
            &["table", "sensor"],
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_sensor_up.clone())).expect("register once");
        r.note(&icewatch_sensor_up, &["table"]);
        let icewatch_scheduler_lag_seconds = prometheus::Gauge::new(
            "icewatch_scheduler_lag_seconds",
            "How late the last sensor run started against its cron time.",
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_scheduler_lag_seconds.clone())).expect("register once");
        let icewatch_history_points =
            IntGauge::new("icewatch_history_points", "Observations held in the history store.").expect("valid metric");
        registry.register(Box::new(icewatch_history_points.clone())).expect("register once");
        let icewatch_history_points_deleted_total = prometheus::IntCounter::new(
            "icewatch_history_points_deleted_total",
            "History points deleted past their retention (history.retention, history.keep_points).",
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_history_points_deleted_total.clone())).expect("register once");
        let icewatch_push_failures_total = prometheus::IntCounter::new(
            "icewatch_push_failures_total",
            "Failed pushes to the Pushgateway, after retries.",
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_push_failures_total.clone())).expect("register once");
        let icewatch_last_push_success_timestamp_seconds = prometheus::Gauge::new(
            "icewatch_last_push_success_timestamp_seconds",
            "Unix time of the last successful push to the Pushgateway.",
        )
        .expect("valid metric");
        registry.register(Box::new(icewatch_last_push_success_timestamp_seconds.clone())).expect("register once");
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }

        Metrics {
            data_volume_deviation_percent: gauge(
                r,
                "data_volume_deviation_percent",
                "Rows added by the latest append, in percent above or below the rolling mean of the volume window.",
                TABLE_LAYER,
            ),
            data_volume_anomaly_total: counter(
                r,
                "data_volume_anomaly_total",
                "Append commits judged anomalous by the volume sensor.",
                TABLE_LAYER,
            ),
            data_distribution_value: gauge(
                r,
                "data_distribution_value",
                "Column statistic of the newest profiled batch.",
                DISTRIBUTION,
            ),
            data_distribution_zscore: gauge(
                r,
                "data_distribution_zscore",
                "Z-score of the statistic against its rolling window.",
                DISTRIBUTION,
            ),
            data_distribution_anomaly_total: counter(
                r,
                "data_distribution_anomaly_total",
                "Batches whose statistic was anomalous.",
                DISTRIBUTION,
            ),
            pipeline_stage_success: gauge(
                r,
                "pipeline_stage_success",
                "1 when the stage's table is healthy, else 0.",
                &["stage", "job"],
            ),
            pipeline_stage_duration_seconds: gauge(
                r,
                "pipeline_stage_duration_seconds",
                "Duration of the stage's last job run, else the lag behind its upstream's last data commit.",
                &["stage", "job"],
            ),
            pipeline_end_to_end_success: gauge(
                r,
                "pipeline_end_to_end_success",
                "1 when every stage of the pipeline succeeds.",
                &["pipeline_name"],
            ),
            pipeline_stage_failure_total: counter(
                r,
                "pipeline_stage_failure_total",
                "Transitions of a stage from success to failure.",
                &["stage", "job"],
            ),
            pipeline_downstream_impact_count: gauge(
                r,
                "pipeline_downstream_impact_count",
                "Stages downstream (transitively) of this stage while it fails, else 0.",
                &["stage"],
            ),
            data_commit_gap_zscore: gauge(
                r,
                "data_commit_gap_zscore",
                "Z-score of the current gap since the last data commit against past gaps.",
                TABLE_LAYER,
            ),
            data_rows_added: gauge(r, "data_rows_added", "Records added by the latest append.", TABLE_LAYER),
            data_rows_added_zscore: gauge(
                r,
                "data_rows_added_zscore",
                "Z-score of data_rows_added against the rolling window of appends.",
                TABLE_LAYER,
            ),
            data_rows_added_expected_lower: gauge(
                r,
                "data_rows_added_expected_lower",
                "Lower edge of the expected band of rows added.",
                TABLE_LAYER,
            ),
            data_rows_added_expected_upper: gauge(
                r,
                "data_rows_added_expected_upper",
                "Upper edge of the expected band of rows added.",
                TABLE_LAYER,
            ),
            data_distribution_expected_lower: gauge(
                r,
                "data_distribution_expected_lower",
                "Lower edge of the statistic's expected band.",
                DISTRIBUTION,
            ),
            data_distribution_expected_upper: gauge(
                r,
                "data_distribution_expected_upper",
                "Upper edge of the statistic's expected band.",
                DISTRIBUTION,
            ),
            pipeline_stage_root_cause: gauge(
                r,
                "pipeline_stage_root_cause",
                "1 when the stage fails while all its upstream stages succeed; `table` is the stage's table.",
                &["pipeline_name", "stage", "job", "table"],
            ),
            pipeline_stage_impacted: gauge(
                r,
                "pipeline_stage_impacted",
                "1 when the stage is downstream of a failing stage; `table` is its root cause's table while it is, else the stage's own.",
                &["pipeline_name", "stage", "job", "table"],
            ),
            pipeline_propagation_lag_seconds: gauge(
                r,
                "pipeline_propagation_lag_seconds",
                "How far the downstream table's last data commit lags behind its upstream's.",
                &["pipeline_name", "upstream", "downstream"],
            ),
            icewatch_result_severity,
            icewatch_result_message_info,
            icewatch_runbook_info,
            icewatch_build_info,
            icewatch_seasonality_info,
            seasonality_labels: Mutex::new(HashMap::new()),
            icewatch_up,
            icewatch_sensor_runs_total: counter(
                r,
                "icewatch_sensor_runs_total",
                "Sensor runs by outcome (ok, error, timeout).",
                &["table", "sensor", "outcome"],
            ),
            icewatch_sensor_run_duration_seconds,
            icewatch_sensor_errors_total: counter(
                r,
                "icewatch_sensor_errors_total",
                "Failed sensor runs by bounded reason.",
                &["table", "sensor", "reason"],
            ),
            icewatch_sensor_up,
            icewatch_sensor_last_success_timestamp_seconds: gauge(
                r,
                "icewatch_sensor_last_success_timestamp_seconds",
                "Unix time of the last successful run of the sensor.",
                &["table", "sensor"],
            ),
            icewatch_sensor_skipped_runs_total: counter(
                r,
                "icewatch_sensor_skipped_runs_total",
                "Ticks skipped because the previous run was still going.",
                &["table", "sensor"],
            ),
            icewatch_scheduler_lag_seconds,
            icewatch_history_points,
            icewatch_history_points_deleted_total,
            icewatch_push_failures_total,
            icewatch_lineage_events_refused_total: counter(
                r,
                "icewatch_lineage_events_refused_total",
                "OpenLineage events refused by bounded reason (malformed, body_too_large, name_too_long, too_many_datasets).",
                &["reason"],
            ),
            icewatch_last_push_success_timestamp_seconds,
            icewatch_http_refused_total: counter(
                r,
                "icewatch_http_refused_total",
                "Connections and requests the HTTP server closed or refused to protect itself, by reason.",
                &["reason"],
            ),
            sensor_families: crate::sensors::registry()
                .iter()
                .flat_map(|sensor| sensor.families())
                .map(|family| (family.name, SensorFamily::declare(r, family)))
                .collect(),
            latest_labels: Mutex::new(HashMap::new()),
            verdict_labels: Mutex::new(HashMap::new()),
            message_labels: Mutex::new(HashMap::new()),
            table_families: declarations.table_families.take(),
            registry: declarations.registry,
        }
    }

    /// Drops every series of tables for which `keep` is false (a reload removed them from the
    /// configuration), so they do not linger with their last values. Returns how many went.
    pub fn forget_tables(&self, keep: &dyn Fn(&str) -> bool) -> usize {
        if let Ok(mut latest) = self.latest_labels.lock() {
            latest.retain(|(_, table), _| keep(table));
        }
        if let Ok(mut verdicts) = self.verdict_labels.lock() {
            verdicts.retain(|(table, _), _| keep(table));
        }
        if let Ok(mut models) = self.seasonality_labels.lock() {
            models.retain(|(table, _, _), _| keep(table));
        }
        if let Ok(mut messages) = self.message_labels.lock() {
            messages.retain(|(table, _), _| keep(table));
        }
        self.table_families.iter().map(|family| family.forget_tables(keep)).sum()
    }

    /// The whole registry in the Prometheus 0.0.4 text format.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "failed to encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// One finished sensor run: outcome, duration, and the verdicts per (metric, column,
    /// statistic). A run that only failed keeps the previous verdicts (the alerts on them keep
    /// their state; `icewatch_sensor_up` says the run failed); any other run replaces them, so
    /// a result the run no longer has (a column or statistic removed) loses its series.
    pub fn record_run(
        &self,
        table: &str,
        layer: &str,
        sensor: SensorKind,
        evaluations: &[Evaluation],
        seconds: f64,
        now_s: f64,
    ) {
        let sensor_name = sensor.as_str();
        self.icewatch_sensor_run_duration_seconds.with_label_values(&[table, sensor_name]).observe(seconds);
        let failed = evaluations.iter().any(|evaluation| evaluation.status == Status::Error);
        let outcome = if failed { "error" } else { "ok" };
        self.icewatch_sensor_runs_total.with_label_values(&[table, sensor_name, outcome]).inc();
        self.icewatch_sensor_up.with_label_values(&[table, sensor_name]).set(i64::from(!failed));
        if !failed {
            self.icewatch_sensor_last_success_timestamp_seconds.with_label_values(&[table, sensor_name]).set(now_s);
        }
        if evaluations.iter().all(|evaluation| evaluation.status == Status::Error) {
            return;
        }
        // Every result of the run keeps its series; an `error` one keeps its previous value.
        let mut worst: BTreeMap<VerdictLabels, Option<i64>> = BTreeMap::new();
        for evaluation in evaluations {
            let labels = [
                table.to_string(),
                layer.to_string(),
                sensor_name.to_string(),
                evaluation.metric.as_str().to_string(),
                evaluation.column.clone().unwrap_or_default(),
                evaluation.statistic.clone().unwrap_or_default(),
            ];
            let severity = (evaluation.status != Status::Error).then(|| evaluation.status.severity());
            let entry = worst.entry(labels).or_insert(None);
            *entry = (*entry).max(severity);
        }
        for (labels, severity) in &worst {
            if let Some(severity) = severity {
                self.icewatch_result_severity.with_label_values(&labels.each_ref().map(String::as_str)).set(*severity);
            }
        }
        let current: BTreeSet<VerdictLabels> = worst.into_keys().collect();
        if let Ok(mut verdicts) = self.verdict_labels.lock() {
            let previous = verdicts.insert((table.to_string(), sensor), current.clone()).unwrap_or_default();
            for gone in previous.difference(&current) {
                let _ = self.icewatch_result_severity.remove_label_values(&gone.each_ref().map(String::as_str));
            }
        }
        self.record_messages(table, layer, sensor, evaluations);
    }

    /// `icewatch_result_message_info` for the warning and critical results of a run, replacing
    /// the previous run's: the message changes from run to run, so an ok result has no series
    /// and a problem has one series at a time (a new one when its message changes).
    fn record_messages(&self, table: &str, layer: &str, sensor: SensorKind, evaluations: &[Evaluation]) {
        let current: BTreeSet<MessageLabels> = evaluations
            .iter()
            .filter(|evaluation| matches!(evaluation.status, Status::Warning | Status::Critical))
            .map(|evaluation| {
                [
                    table.to_string(),
                    layer.to_string(),
                    sensor.as_str().to_string(),
                    evaluation.metric.as_str().to_string(),
                    evaluation.column.clone().unwrap_or_default(),
                    evaluation.statistic.clone().unwrap_or_default(),
                    evaluation.change_type.clone().unwrap_or_default(),
                    evaluation.status.as_str().to_string(),
                    bounded_message(&evaluation.message),
                ]
            })
            .collect();
        for labels in &current {
            self.icewatch_result_message_info.with_label_values(&labels.each_ref().map(String::as_str)).set(1);
        }
        let Ok(mut messages) = self.message_labels.lock() else { return };
        let previous = messages.insert((table.to_string(), sensor), current.clone()).unwrap_or_default();
        for gone in previous.difference(&current) {
            let _ = self.icewatch_result_message_info.remove_label_values(&gone.each_ref().map(String::as_str));
        }
    }

    /// Exports `[server] runbook_base_url` as `icewatch_runbook_info{base_url}` (one series).
    pub fn set_runbook_base_url(&self, base_url: &str) {
        use prometheus::core::Collector;
        for family in self.icewatch_runbook_info.collect() {
            for metric in family.get_metric() {
                let known = metric.get_label().iter().map(|pair| pair.value()).next().unwrap_or_default();
                if known != base_url {
                    let _ = self.icewatch_runbook_info.remove_label_values(&[known]);
                }
            }
        }
        self.icewatch_runbook_info.with_label_values(&[base_url]).set(1);
    }

    /// A failed run's bounded reason (the error itself goes to the log and the result message).
    pub fn record_error(&self, table: &str, sensor: SensorKind, reason: &str) {
        self.icewatch_sensor_errors_total.with_label_values(&[table, sensor.as_str(), reason]).inc();
    }

    /// The gauges of one successful run: from its results (by metric), the anomalies counted
    /// once per snapshot new to the store, and the sensor's readings.
    pub fn record_judged(
        &self,
        table: &str,
        layer: &str,
        evaluations: &[Evaluation],
        new_anomalies: &[Evaluation],
        readings: &[Reading],
    ) {
        for evaluation in evaluations {
            self.record_evaluation(table, layer, evaluation);
        }
        for anomaly in new_anomalies {
            if let Some(counter) = self.anomaly_counter(table, layer, anomaly) {
                counter.inc();
            }
        }
        for reading in readings {
            self.record_reading(table, layer, reading);
        }
    }

    fn record_evaluation(&self, table: &str, layer: &str, evaluation: &Evaluation) {
        // Touching the counter exports it at 0 until the first anomaly.
        let _ = self.anomaly_counter(table, layer, evaluation);
        if let Some(model) = &evaluation.seasonality {
            self.record_seasonality(table, layer, evaluation, model);
        }
        let table_layer = [table, layer];
        match evaluation.metric {
            Metric::COMMIT_GAP_SECONDS => {
                if let Some(z) = evaluation.zscore {
                    self.data_commit_gap_zscore.with_label_values(&table_layer).set(z);
                }
            }
            Metric::ROWS_ADDED => {
                for (family, value) in [
                    (&self.data_rows_added, evaluation.value),
                    (&self.data_rows_added_zscore, evaluation.zscore),
                    (&self.data_rows_added_expected_lower, evaluation.expected_lower),
                    (&self.data_rows_added_expected_upper, evaluation.expected_upper),
                    (&self.data_volume_deviation_percent, evaluation.deviation_percent),
                ] {
                    if let Some(value) = value {
                        family.with_label_values(&table_layer).set(value);
                    }
                }
            }
            Metric::DISTRIBUTION_VALUE => {
                let (Some(column), Some(statistic), Some(value)) =
                    (&evaluation.column, &evaluation.statistic, evaluation.value)
                else {
                    return;
                };
                let labels = [table, column.as_str(), statistic.as_str()];
                self.data_distribution_value.with_label_values(&labels).set(value);
                if let Some(z) = evaluation.zscore {
                    self.data_distribution_zscore.with_label_values(&labels).set(z);
                }
                if let (Some(lower), Some(upper)) = (evaluation.expected_lower, evaluation.expected_upper) {
                    self.data_distribution_expected_lower.with_label_values(&labels).set(lower);
                    self.data_distribution_expected_upper.with_label_values(&labels).set(upper);
                }
            }
            _ => {}
        }
    }

    /// `icewatch_seasonality_info` of one result: its model now, the previous one's series gone.
    fn record_seasonality(&self, table: &str, layer: &str, evaluation: &Evaluation, model: &str) {
        let labels = [
            table.to_string(),
            layer.to_string(),
            evaluation.sensor.as_str().to_string(),
            evaluation.metric.as_str().to_string(),
            model.to_string(),
        ];
        let Ok(mut current) = self.seasonality_labels.lock() else { return };
        let key = (table.to_string(), evaluation.sensor.as_str().to_string(), evaluation.metric.as_str());
        if let Some(previous) = current.insert(key, labels.clone())
            && previous != labels
        {
            let _ = self.icewatch_seasonality_info.remove_label_values(&previous.each_ref().map(String::as_str));
        }
        self.icewatch_seasonality_info.with_label_values(&labels.each_ref().map(String::as_str)).set(1);
    }

    /// The `*_anomaly_total` series an evaluation's anomalies count in, if its metric has one.
    fn anomaly_counter(&self, table: &str, layer: &str, evaluation: &Evaluation) -> Option<prometheus::IntCounter> {
        match evaluation.metric {
            Metric::ROWS_ADDED => Some(self.data_volume_anomaly_total.with_label_values(&[table, layer])),
            Metric::DISTRIBUTION_VALUE => {
                let (column, statistic) = (evaluation.column.as_deref()?, evaluation.statistic.as_deref()?);
                Some(self.data_distribution_anomaly_total.with_label_values(&[table, column, statistic]))
            }
            _ => None,
        }
    }

    fn record_reading(&self, table: &str, layer: &str, reading: &Reading) {
        let family = reading.family;
        let Some(exported) = self.sensor_families.get(family.name) else {
            tracing::error!(family = family.name, "a reading of a family no sensor declared (a bug)");
            return;
        };
        let mut labels: Vec<&str> = vec![table];
        if family.with_layer {
            labels.push(layer);
        }
        labels.extend(reading.labels.iter().map(String::as_str));
        match (family.export, exported) {
            (Export::CatchUpCounter, SensorFamily::Counter(counter)) => {
                let counter = counter.with_label_values(&labels);
                let count = reading.value as u64;
                if count > counter.get() {
                    counter.inc_by(count - counter.get());
                }
            }
            (_, SensorFamily::Gauge(gauge)) => {
                if family.export == Export::LatestPerTable
                    && let Ok(mut latest) = self.latest_labels.lock()
                    && let Some(previous) = latest.insert((family.name, table.to_string()), reading.labels.clone())
                    && previous != reading.labels
                {
                    let previous: Vec<&str> = labels[..labels.len() - reading.labels.len()]
                        .iter()
                        .copied()
                        .chain(previous.iter().map(String::as_str))
                        .collect();
                    let _ = gauge.remove_label_values(&previous);
                }
                gauge.with_label_values(&labels).set(reading.value);
            }
            (_, SensorFamily::Counter(_)) => {}
        }
    }
}

/// `message` cut to [`MESSAGE_MAX_CHARS`] characters, so one long error cannot make a huge label.
fn bounded_message(message: &str) -> String {
    if message.chars().count() <= MESSAGE_MAX_CHARS {
        return message.to_string();
    }
    let mut cut: String = message.chars().take(MESSAGE_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A family a sensor declared, as registered.
enum SensorFamily {
    Gauge(GaugeVec),
    Counter(IntCounterVec),
}

impl SensorFamily {
    fn declare(declarations: &Declarations, family: &Family) -> SensorFamily {
        let mut labels = vec!["table"];
        if family.with_layer {
            labels.push("layer");
        }
        labels.extend_from_slice(family.labels);
        match family.export {
            Export::CatchUpCounter => SensorFamily::Counter(counter(declarations, family.name, family.help, &labels)),
            Export::Gauge | Export::LatestPerTable => {
                SensorFamily::Gauge(gauge(declarations, family.name, family.help, &labels))
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::SensorError;

    /// A kind's families reach the docs without anyone remembering: every family a registered
    /// sensor declares has its row in docs/metrics.md, with its type and its labels in order.
    #[test]
    fn every_family_a_sensor_declares_is_documented_with_its_labels() {
        let docs = include_str!("../../docs/metrics.md");
        let mut problems = Vec::new();
        for family in crate::sensors::registry().iter().flat_map(|sensor| sensor.families()) {
            let mut labels = vec!["table"];
            if family.with_layer {
                labels.push("layer");
            }
            labels.extend_from_slice(family.labels);
            let kind = if family.export == Export::CatchUpCounter { "counter" } else { "gauge" };
            let labels = labels.iter().map(|label| format!("`{label}`")).collect::<Vec<_>>().join(", ");
            let row = format!("| `{}` | {kind} | {labels} |", family.name);
            if !docs.lines().any(|line| line.starts_with(&row)) {
                problems.push(row);
            }
        }
        assert!(problems.is_empty(), "families without their row in docs/metrics.md:\n{}", problems.join("\n"));
    }

    fn statistic(name: &str, status: Status) -> Evaluation {
        let mut evaluation =
            Evaluation::new("a.b", SensorKind::DISTRIBUTION, Metric::DISTRIBUTION_VALUE, status, String::new());
        evaluation.column = Some("price".to_string());
        evaluation.statistic = Some(name.to_string());
        evaluation
    }

    fn severities(metrics: &Metrics) -> Vec<String> {
        metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with("icewatch_result_severity{"))
            .map(str::to_string)
            .collect()
    }

    /// Each statistic (and drift column) has its own verdict; a run replaces the previous
    /// run's verdicts, except a run that only failed; a table dropped by a reload loses them.
    #[test]
    fn verdicts_are_per_column_and_statistic_and_follow_the_last_run() {
        let metrics = Metrics::new();
        let kind = SensorKind::DISTRIBUTION;
        let mut drift = Evaluation::new("a.b", kind, Metric::DRIFT, Status::InsufficientHistory, String::new());
        drift.column = Some("price".to_string());
        let first = [statistic("mean", Status::Critical), statistic("max", Status::Ok), drift];
        metrics.record_run("a.b", "bronze", kind, &first, 0.1, 1.0);
        assert_eq!(
            severities(&metrics),
            [
                r#"icewatch_result_severity{column="price",layer="bronze",metric="drift",sensor="distribution",statistic="",table="a.b"} 0"#,
                r#"icewatch_result_severity{column="price",layer="bronze",metric="value",sensor="distribution",statistic="max",table="a.b"} 0"#,
                r#"icewatch_result_severity{column="price",layer="bronze",metric="value",sensor="distribution",statistic="mean",table="a.b"} 2"#,
            ]
        );

        let error = SensorError::Internal { table: "a.b".to_string(), sensor: kind, panic: "boom".to_string() };
        metrics.record_run("a.b", "bronze", kind, &[Evaluation::error("a.b", kind, &error)], 0.1, 2.0);
        assert_eq!(severities(&metrics).len(), 3, "a failed run keeps the last verdicts");

        // `max` fails to compute (its previous verdict stays), `mean` is fine, drift is gone.
        let second = [statistic("mean", Status::Warning), statistic("max", Status::Error)];
        metrics.record_run("a.b", "bronze", kind, &second, 0.1, 3.0);
        assert_eq!(
            severities(&metrics),
            [
                r#"icewatch_result_severity{column="price",layer="bronze",metric="value",sensor="distribution",statistic="max",table="a.b"} 0"#,
                r#"icewatch_result_severity{column="price",layer="bronze",metric="value",sensor="distribution",statistic="mean",table="a.b"} 1"#,
            ]
        );

        assert!(metrics.forget_tables(&|table| table != "a.b") >= 2);
        assert!(severities(&metrics).is_empty());
        metrics.record_run("a.b", "bronze", kind, &[statistic("mean", Status::Ok)], 0.1, 4.0);
        assert_eq!(severities(&metrics).len(), 1, "nothing of the forgotten table comes back");
    }

    #[test]
    fn no_two_sensors_declare_the_same_family() {
        let mut names: Vec<&str> =
            crate::sensors::registry().iter().flat_map(|sensor| sensor.families()).map(|family| family.name).collect();
        let declared = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), declared, "a family name is declared twice");
    }
}
