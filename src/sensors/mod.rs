//! Sensors: what a table looks like now, read from Iceberg metadata (and data where it must).
//!
//! Each kind has its own module with three parts:
//! - `observe(table, config, now)`: reads metadata (IO allowed) and returns an observation.
//!   It does not read history, emit metrics, sleep or retry: the pipeline and the scheduler do.
//! - `series(observation)`: the points worth keeping in the history store (one per snapshot
//!   where the snapshot log allows, which is what makes backfill free).
//! - `judge(observation, windows, config, now)`: pure; turns the observation plus the history
//!   windows into [`Evaluation`]s (status, value, z-score, expected band, why).

pub mod distribution;
pub mod freshness;
pub mod schema;
pub mod snapshots;
pub mod volume;

use std::collections::HashMap;

use serde::Serialize;

use crate::config::SensorKind;
use crate::history::{Point, SeriesKey};
/// The verdict type is the judging policy's; sensors and everything downstream use it from here.
pub use crate::judging::Status;

/// One judged result: what `check` prints, what `/metrics` and the status page show.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub table: String,
    pub sensor: SensorKind,
    pub metric: String,
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
    /// The snapshot the value belongs to, when there is one.
    pub snapshot_id: Option<i64>,
    /// When the value was true (the snapshot's commit time, or the time of the run), RFC 3339.
    pub observed_at: Option<String>,
}

impl Evaluation {
    /// A result with only the identifying fields set; the rest is filled by the caller.
    pub fn new(table: &str, sensor: SensorKind, metric: &str, status: Status, message: String) -> Evaluation {
        Evaluation {
            table: table.to_string(),
            sensor,
            metric: metric.to_string(),
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
            snapshot_id: None,
            observed_at: None,
        }
    }

    /// An `error` result for a sensor that could not run.
    pub fn error(table: &str, sensor: SensorKind, error: &SensorError) -> Evaluation {
        Evaluation::new(table, sensor, "run", Status::Error, error_chain(error))
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
}

impl SensorError {
    /// A bounded label value for `icewatch_sensor_errors_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            SensorError::Catalog(error) => error.reason(),
            SensorError::ColumnNotFound { .. } => "column_not_found",
            SensorError::Metadata { .. } => "metadata_invalid",
            SensorError::Scan { .. } => "query",
            SensorError::History { .. } => "history",
            SensorError::Timeout { .. } => "timeout",
        }
    }
}

/// `error: cause: cause` on one line, for result messages.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(text.lines().next().unwrap_or_default());
        }
        source = cause.source();
    }
    message
}

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
