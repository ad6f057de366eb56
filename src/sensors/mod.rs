//! Sensors: what a table looks like now, read from Iceberg metadata (and data where it must),
//! and the contract every kind implements ([`Sensor`]).
//!
//! A sensor observes a table and returns [`Step`]s, one per snapshot it has not judged yet, in
//! commit order; each carries the history points it brings and, unless it only backfills, the
//! window requests and a pure judge. The pipeline runs the same loop for every kind:
//! backfill → windows → judge → append → record. Metrics are derived from the judged
//! [`Evaluation`]s and the sensor's [`Reading`]s, so nothing downstream knows a kind's types.
//!
//! Adding a kind: one module implementing [`Sensor`] (declaring its metric families and, if it
//! has one, its config section), its `mod` line and one line in [`registry`], its docs.

pub mod distribution;
pub(crate) mod freshness;
pub(crate) mod health;
mod manifest_cache;
pub(crate) mod schema;
pub mod snapshots;
pub(crate) mod volume;

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;
use serde::Serialize;

use crate::config::{SectionSpec, SensorKind, TableConfig};
use crate::history::{Event, Point, SeriesKey};
/// The verdict type is the judging policy's; sensors and everything downstream use it from here.
pub use crate::judging::Status;

/// One judged result: what `check` prints, what `/metrics` and the status page show.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub table: String,
    pub sensor: SensorKind,
    pub metric: Metric,
    pub status: Status,
    pub value: Option<f64>,
    pub zscore: Option<f64>,
    pub expected_lower: Option<f64>,
    pub expected_upper: Option<f64>,
    /// Percent above (+) or below (−) the reference mean, where the sensor computes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deviation_percent: Option<f64>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
    /// The seasonal model the value was judged with (`hour_of_day+trend`, `auto: none`),
    /// where the judge uses one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seasonality: Option<String>,
    /// The snapshot the value belongs to, when there is one.
    pub snapshot_id: Option<i64>,
    /// When the value was true (the snapshot's commit time, or the time of the run), RFC 3339.
    pub observed_at: Option<String>,
}

impl Evaluation {
    /// A result with only the identifying fields set; the rest is filled by the caller.
    pub fn new(table: &str, sensor: SensorKind, metric: Metric, status: Status, message: String) -> Evaluation {
        Evaluation {
            table: table.to_string(),
            sensor,
            metric,
            status,
            value: None,
            zscore: None,
            expected_lower: None,
            expected_upper: None,
            deviation_percent: None,
            message,
            change_type: None,
            column: None,
            statistic: None,
            seasonality: None,
            snapshot_id: None,
            observed_at: None,
        }
    }

    /// An `error` result for a sensor that could not run.
    pub fn error(table: &str, sensor: SensorKind, error: &SensorError) -> Evaluation {
        Evaluation::new(table, sensor, Metric::RUN, Status::Error, error_chain(error))
    }

    pub fn with_value(mut self, value: f64) -> Evaluation {
        self.value = value.is_finite().then_some(value);
        self
    }

    pub fn at(mut self, observed_at_ms: i64, snapshot_id: Option<i64>) -> Evaluation {
        self.observed_at = format_ms(observed_at_ms);
        self.snapshot_id = snapshot_id;
        self
    }

    /// The z-score and the expected band of `score`, the band clamped to `measure`'s domain.
    pub fn with_score(mut self, score: Option<&crate::stats::Score>, measure: crate::judging::Measure) -> Evaluation {
        if let Some(score) = score {
            let (lower, upper) = crate::judging::band(score, measure);
            self.zscore = Some(score.zscore);
            self.expected_lower = Some(lower);
            self.expected_upper = Some(upper);
        }
        self
    }

    /// A warning or critical on a metric whose anomalies are counted (`*_anomaly_total`).
    pub fn is_counted_anomaly(&self) -> bool {
        self.metric.counts_anomalies() && matches!(self.status, Status::Warning | Status::Critical)
    }
}

/// What a result is about: the `metric` of `check` output and of the `icewatch_result_severity`
/// label. A kind's own metrics are constants in its module (`Metric::new("small_files")`); the
/// shared ones are here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metric {
    name: &'static str,
    /// Whether each anomalous value is counted once (per snapshot) in an `*_anomaly_total`.
    counts_anomalies: bool,
}

impl Metric {
    /// The sensor could not run (the status is `error`).
    pub const RUN: Metric = Metric::new("run");
    pub const FRESHNESS_SECONDS: Metric = Metric::new("freshness_seconds");
    pub const EVENT_TIME_LAG_SECONDS: Metric = Metric::new("event_time_lag_seconds");
    pub const COMMIT_GAP_SECONDS: Metric = Metric::new("commit_gap_seconds");
    pub const ROWS_ADDED: Metric = Metric { name: "rows_added", counts_anomalies: true };
    pub const ROWS_DELETED: Metric = Metric::new("rows_deleted");
    pub const TOTAL_ROWS: Metric = Metric::new("total_rows");
    pub const SCHEMA_CHANGE: Metric = Metric::new("schema_change");
    pub const SCHEMA_EXPECTATION: Metric = Metric::new("schema_expectation");
    pub const COLUMN_COUNT: Metric = Metric::new("column_count");
    /// One statistic of one column of a batch (`column` and `statistic` are set).
    pub const DISTRIBUTION_VALUE: Metric = Metric { name: "value", counts_anomalies: true };
    /// The drift tests of one column against its reference batches.
    pub const DRIFT: Metric = Metric::new("drift");
    /// One stage of a declared pipeline.
    pub const STAGE: Metric = Metric::new("stage");

    /// A metric whose anomalies are not counted (only the seed `*_anomaly_total` families count).
    pub const fn new(name: &'static str) -> Metric {
        Metric { name, counts_anomalies: false }
    }

    pub fn as_str(self) -> &'static str {
        self.name
    }

    /// Whether each anomalous value of this metric is counted once (per snapshot) in an
    /// `*_anomaly_total` counter.
    pub fn counts_anomalies(self) -> bool {
        self.counts_anomalies
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A metric equals its name, so results can be found by the name users see.
impl PartialEq<&str> for Metric {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A fact a sensor exports as it is, not judged (files, bytes, thresholds, drift statistics).
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub family: &'static Family,
    /// The values of the family's own labels (after `table`, and `layer` where it has one).
    pub labels: Vec<String>,
    pub value: f64,
}

impl Reading {
    pub fn new(family: &'static Family, value: f64) -> Reading {
        Reading { family, labels: Vec::new(), value }
    }

    pub fn labelled(family: &'static Family, labels: &[&str], value: f64) -> Reading {
        Reading { family, labels: labels.iter().map(|label| label.to_string()).collect(), value }
    }
}

/// An exported family that a sensor's [`Reading`]s set, declared as a `static` in the sensor's
/// module and listed by [`Sensor::families`]; the exporter registers every listed family once.
/// docs/metrics.md describes each (a test checks that every registered family is documented).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// The family's own labels, after `table` and (when `with_layer`) `layer`.
    pub labels: &'static [&'static str],
    pub with_layer: bool,
    pub export: Export,
}

impl Family {
    /// A gauge labelled `table, layer`.
    pub const fn table_gauge(name: &'static str, help: &'static str) -> Family {
        Family { name, help, labels: &[], with_layer: true, export: Export::Gauge }
    }
}

/// How a [`Reading`] sets its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Export {
    /// A gauge set to the value.
    Gauge,
    /// A gauge of which only the newest label set is kept per table: a reading with other
    /// labels replaces the previous series (`data_row_count{partition_date}`).
    LatestPerTable,
    /// A counter that catches up to the value (a count the table's metadata holds).
    CatchUpCounter,
}

/// A sensor kind. Implementations read the table (IO allowed) and return steps; they must not
/// read or write history, set metrics, sleep or retry: the pipeline and the scheduler do. The
/// pipeline bounds a run with the sensor's `timeout`, so `observe` may be cancelled at any
/// await point and must leave nothing half-done behind.
pub trait Sensor: Send + Sync {
    fn kind(&self) -> SensorKind;

    /// The series whose stored points tell which snapshots this sensor has already judged, and
    /// how many of its newest points to read; `None` when the sensor keeps no such record.
    /// Cost: one indexed history read per run.
    fn progress(&self, _table: &TableConfig) -> Option<(SeriesKey, usize)> {
        None
    }

    /// Observes the table and returns the steps to run, oldest first, and the readings of the
    /// newest state. A table without this sensor's section returns no step. Cost: metadata
    /// reads for the metadata kinds; for distribution, a scan of the files the unseen
    /// snapshots added.
    fn observe<'a>(&'a self, input: &'a Input<'a>) -> BoxFuture<'a, Result<Observed<'a>, SensorError>>;

    /// The families this sensor's readings set. Declared here so the exporter registers them
    /// without knowing the kind.
    fn families(&self) -> &'static [&'static Family] {
        &[]
    }

    /// How this kind's `[tables."ns.name".KIND]` section is read and documented. The first four
    /// kinds return `None`: config reads their sections into typed fields of [`TableConfig`].
    fn section(&self) -> Option<SectionSpec> {
        None
    }
}

/// Every sensor kind this build has: one line per kind.
pub fn registry() -> Vec<Box<dyn Sensor>> {
    vec![
        Box::new(freshness::FreshnessSensor::default()),
        Box::new(volume::VolumeSensor),
        Box::new(schema::SchemaSensor),
        Box::new(distribution::DistributionSensor),
        Box::new(health::HealthSensor::default()),
    ]
}

/// What a sensor is given to observe one table.
pub struct Input<'a> {
    pub table: &'a iceberg::table::Table,
    pub config: &'a TableConfig,
    pub now_ms: i64,
    /// When the pipeline cancels this run (the sensor's `timeout`). A sensor whose work can be
    /// split (distribution: one batch at a time) returns what it has well before it, so the
    /// next run resumes instead of starting over.
    pub deadline: std::time::Instant,
    /// What history holds of the sensor's progress series ([`Sensor::progress`]).
    pub seen: Seen,
    /// This sensor's latest result on this table in this process, if any.
    pub previous: Option<SensorResult>,
}

/// The newest stored points of a sensor's progress series.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Time of the newest stored point; `None` on first sight (nothing stored yet).
    pub latest_ms: Option<i64>,
    /// Snapshots of the newest stored points.
    pub snapshot_ids: HashSet<i64>,
}

impl Seen {
    pub fn first_sight(&self) -> bool {
        self.latest_ms.is_none()
    }
}

/// What a sensor saw: the steps to run and the readings of the newest state.
#[derive(Default)]
pub struct Observed<'a> {
    pub steps: Vec<Step<'a>>,
    pub readings: Vec<Reading>,
}

impl<'a> Observed<'a> {
    /// One step that stores nothing and gives `evaluations` as the run's result.
    pub fn verdict(evaluations: Vec<Evaluation>) -> Observed<'a> {
        Observed {
            steps: vec![Step::judged(Vec::new(), Vec::new(), false, move |_| evaluations)],
            readings: Vec::new(),
        }
    }
}

/// One snapshot (or the present moment) to store and, unless it only backfills, to judge.
pub struct Step<'a> {
    /// Points this step brings to history, stored after its judge ran (a value never scores
    /// against itself) and only where newer than what the store held before the run.
    pub points: Vec<Point>,
    pub events: Vec<Event>,
    /// `None`: a backfill step, stored and not judged.
    pub judging: Option<Judging<'a>>,
}

/// How a step is judged: the history it needs and a pure function of that history.
pub struct Judging<'a> {
    pub requests: Vec<WindowRequest>,
    /// Whether this step's snapshot is new to the store, so its anomalies are counted.
    pub counts_anomalies: bool,
    pub judge: Judge<'a>,
}

/// A step's judge: pure, it sees only the windows it asked for (and what it captured).
pub type Judge<'a> = Box<dyn FnOnce(&Windows) -> Vec<Evaluation> + Send + 'a>;

impl<'a> Step<'a> {
    pub fn backfill(points: Vec<Point>) -> Step<'a> {
        Step { points, events: Vec::new(), judging: None }
    }

    pub fn judged(
        points: Vec<Point>,
        requests: Vec<WindowRequest>,
        counts_anomalies: bool,
        judge: impl FnOnce(&Windows) -> Vec<Evaluation> + Send + 'a,
    ) -> Step<'a> {
        Step {
            points,
            events: Vec::new(),
            judging: Some(Judging { requests, counts_anomalies, judge: Box::new(judge) }),
        }
    }
}

/// Something that follows the results as they come (lineage re-derives the pipelines' health
/// from them). Called after every run with the latest result of every sensor; it must be quick
/// and must not block: it runs on the pipeline's task.
pub trait ResultListener: Send + Sync {
    fn results_changed(&self, latest: &[SensorResult]);
}

/// The results of one sensor run, kept for the status page and `check`.
#[derive(Clone, Debug)]
pub struct SensorResult {
    pub table: String,
    pub layer: String,
    pub sensor: SensorKind,
    pub evaluations: Vec<Evaluation>,
    pub finished_at_ms: i64,
    pub duration: std::time::Duration,
}

impl SensorResult {
    pub fn status(&self) -> Status {
        self.evaluations.iter().map(|evaluation| evaluation.status).max().unwrap_or(Status::Ok)
    }
}

/// History the pipeline fetched for a judge: the points of each series strictly before the
/// value being judged, oldest first.
pub type Windows = HashMap<SeriesKey, Vec<Point>>;

/// What a judge needs from history for one series.
#[derive(Clone, Debug)]
pub struct WindowRequest {
    pub series: SeriesKey,
    /// Points strictly before this time.
    pub before_ms: i64,
    /// At most this many of the newest points.
    pub limit: usize,
    /// Only points at or after this time, when set.
    pub since_ms: Option<i64>,
}

/// Why a sensor could not observe a table. `reason()` is the bounded metric label.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("column `{column}` not found in table `{table}`")]
    ColumnNotFound { table: String, column: String },
    #[error("failed to read metadata of table `{table}`")]
    Metadata {
        table: String,
        #[source]
        source: iceberg::Error,
    },
    /// A snapshot the table's history names is missing from the metadata it was read from:
    /// the metadata is inconsistent (the history comes from the same metadata).
    #[error("snapshot {snapshot_id} of table `{table}` is not in the table metadata")]
    SnapshotNotFound { table: String, snapshot_id: i64 },
    #[error("failed to scan table `{table}`")]
    Scan {
        table: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("history store failed for table `{table}`")]
    History {
        table: String,
        #[source]
        source: crate::history::HistoryError,
    },
    #[error("sensor `{sensor}` on table `{table}` timed out after {seconds}s")]
    Timeout { table: String, sensor: SensorKind, seconds: u64 },
    /// A bug: the run panicked. The panic was caught, so only this run failed.
    #[error("sensor `{sensor}` on table `{table}` failed on an internal error (a bug, please report it): {panic}")]
    Internal { table: String, sensor: SensorKind, panic: String },
}

impl SensorError {
    /// A bounded label value for `icewatch_sensor_errors_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            SensorError::Catalog(error) => error.reason(),
            SensorError::ColumnNotFound { .. } => "column_not_found",
            // An OS-level failure (too many open files, a reset connection) is `io`, whatever
            // was being read.
            SensorError::Metadata { .. } | SensorError::Scan { .. } if crate::errors::os_error(self).is_some() => "io",
            SensorError::Metadata { .. } => "metadata_invalid",
            SensorError::SnapshotNotFound { .. } => "snapshot_not_found",
            SensorError::Scan { .. } => "query",
            SensorError::History { .. } => "history",
            SensorError::Timeout { .. } => "timeout",
            SensorError::Internal { .. } => "internal",
        }
    }
}

pub use crate::errors::error_chain;

/// Milliseconds since the epoch as RFC 3339 (UTC, seconds precision).
pub fn format_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A human duration for messages: `45s`, `12m`, `3h05m`, `2d4h`.
pub fn human_seconds(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".to_string();
    }
    let negative = seconds < 0.0;
    let total = seconds.abs().round() as u64;
    let text = match total {
        0..=119 => format!("{total}s"),
        120..=3599 => format!("{}m", total / 60),
        3600..=86_399 => format!("{}h{:02}m", total / 3600, (total % 3600) / 60),
        _ => format!("{}d{}h", total / 86_400, (total % 86_400) / 3600),
    };
    if negative { format!("-{text}") } else { text }
}

/// A number for messages: whole numbers without decimals, others with up to 3 significant decimals.
pub fn human_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}
