//! The distribution sensor: per-column statistics of each new batch (the data files a snapshot
//! added), their z-scores against earlier batches, and drift tests against reference batches.
//!
//! It profiles snapshots it is asked about and reports where each value came from: manifest
//! metadata when that is exact (row and null counts, numeric min/max), a scan of the batch's
//! Parquet files otherwise. It does not read history, choose when to run, or emit metrics.
//!
//! Exactness, as the statistics are documented to users:
//! - exact: `row_count`, `null_count`, `null_percent`, `nan_percent`, `zero_percent`, `min`,
//!   `max`, `sum`, `mean`, `stddev` (sample, n - 1), `min_length`, `max_length`, `mean_length`
//!   (characters), `empty_percent`. Numeric statistics ignore nulls and NaN; percentages are
//!   of all rows of the batch.
//! - `p01`..`p99`: linear interpolation (numpy's default, DuckDB's `quantile_cont`) over a
//!   uniform sample of [`QUANTILE_SAMPLE`] values, so exact for batches with at most that many
//!   non-null values. Above it, the rank error is at most
//!   `sqrt(ln(2 / 0.001) / (2 * 100 000)) = 0.62 %` with probability 99.9 % (DKW inequality).
//! - `distinct_count`: HyperLogLog with 2^14 registers (relative standard error 0.81 %; NaN
//!   counts as one value).
//! - with `sample` set, scanned statistics come from a file-level sample of the batch:
//!   intensive ones (means, percentages, quantiles) are estimates, counts and sums are scaled
//!   to the batch, `distinct_count` is that of the sample.
//!
//! The rooms, in the order a profile is made: `selection` (which snapshots are batches),
//! `metadata` (a batch's manifest entries and the statistics they answer), `plan` (what to
//! take from metadata and what to scan, pure), `scan` (reading the Parquet files into
//! `accumulate`'s column accumulators, which keep `sketch`'s HyperLogLog and samples),
//! `profile` (those put together), then `judge` (z-scores against earlier batches) and
//! `drift` (tests against reference batches). `sensor` turns them into the steps of the
//! [`Sensor`] contract.
//!
//! [`Sensor`]: crate::sensors::Sensor

mod accumulate;
mod drift;
mod judge;
mod metadata;
mod plan;
mod profile;
mod scan;
mod selection;
mod sensor;
mod sketch;
#[cfg(test)]
mod synthetic;

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Statistic;

pub use self::drift::{DriftResult, MIN_DRIFT_SAMPLE, PSI_BINS, TOP_CATEGORIES, drift};
pub use self::judge::{judge, series, series_key, window_requests};
pub use self::plan::{DRIFT_SAMPLE, QUANTILE_SAMPLE, REFERENCE_ROW_CAP};
pub use self::profile::{observe, observe_readable_reference, observe_reference, observe_until};
pub use self::selection::{reference_snapshots, snapshots_to_profile};
pub use self::sensor::DistributionSensor;
pub use self::sketch::HLL_STANDARD_ERROR;

/// Where a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// Manifest column statistics (no data read).
    Metadata,
    /// A scan of the batch's data files.
    Scan,
}

impl ValueSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueSource::Metadata => "metadata",
            ValueSource::Scan => "scan",
        }
    }
}

/// One statistic of one column for one batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColumnStatistic {
    pub column: String,
    pub statistic: Statistic,
    pub value: f64,
    pub source: ValueSource,
}

/// A configured statistic that has no value for this batch, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SkippedStatistic {
    pub column: String,
    pub statistic: Statistic,
    pub reason: String,
    /// A configuration mistake (a string statistic on a number, ...) rather than a data fact
    /// (an empty batch, a column that did not exist yet).
    pub misconfigured: bool,
}

/// A uniform sample of a column's non-null values, for drift tests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ColumnSample {
    Numeric(Vec<f64>),
    Categorical(Vec<String>),
}

/// The profile of one batch: the rows a snapshot added (or the whole table, `scope = "table"`).
#[derive(Clone, Debug, Serialize)]
pub struct BatchProfile {
    pub snapshot_id: i64,
    pub timestamp_ms: i64,
    pub scope: crate::config::Scope,
    pub row_count: u64,
    /// Data files in the batch.
    pub files: usize,
    /// Files, rows and bytes actually read (0 when metadata answered everything).
    pub scanned_files: usize,
    pub scanned_rows: u64,
    pub scanned_bytes: u64,
    /// Whether the scan covered a sample of the batch only.
    pub sampled: bool,
    pub values: Vec<ColumnStatistic>,
    pub skipped: Vec<SkippedStatistic>,
    pub samples: HashMap<String, ColumnSample>,
}

impl BatchProfile {
    pub fn value(&self, column: &str, statistic: Statistic) -> Option<&ColumnStatistic> {
        self.values.iter().find(|value| value.column == column && value.statistic == statistic)
    }
}
