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

mod accumulate;
mod sensor;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use iceberg::scan::FileScanTask;
use iceberg::spec::{
    DataContentType, DataFile, Datum, ManifestContentType, ManifestStatus, PrimitiveLiteral, PrimitiveType, Schema,
    SnapshotRef, Type,
};
use iceberg::table::Table;
use serde::Serialize;

use self::accumulate::{ColumnAccumulator, ValueKind, Wanted};
use super::snapshots::{Commit, CommitOperation, commits};
use super::{Evaluation, Metric, SensorError, Status, WindowRequest, Windows, human_number};
use crate::config::{DistributionConfig, Scope, SensorKind, Statistic};
use crate::history::{Point, SeriesKey};
use crate::judging::{self, Measure};
use crate::stats;

pub use self::accumulate::HLL_STANDARD_ERROR;
pub use self::sensor::DistributionSensor;

/// Values kept per numeric column for quantiles (exact up to this many values).
pub const QUANTILE_SAMPLE: usize = 100_000;
/// Values kept per column and batch for drift tests.
pub const DRIFT_SAMPLE: usize = 10_000;
/// Rows read at most from each reference batch of a drift test.
pub const REFERENCE_ROW_CAP: u64 = 200_000;
/// Categories compared by the chi-square test (the reference's most frequent; the rest is `other`).
pub const TOP_CATEGORIES: usize = 20;
/// Bins of the numeric PSI (cut at the reference's deciles).
pub const PSI_BINS: usize = 10;
/// Fewest values on each side for a drift test to give a verdict: with 10 PSI bins, about ten
/// values per bin; below that, PSI's sampling noise alone is near its 0.25 threshold and a
/// KS or chi-square p-value says little. Smaller batches report their drift figures as
/// `insufficient_history`.
pub const MIN_DRIFT_SAMPLE: usize = 100;
/// Rows per Arrow batch when reading Parquet (the reader's default is 1 024).
const READ_BATCH_ROWS: usize = 8192;
const OTHER_CATEGORY: &str = "\u{0}other";

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

/// Profiles each given snapshot, oldest first, one profile per snapshot that has a batch:
/// with `scope = "added"` only appends do (the files an overwrite adds are mostly rewritten
/// rows, a delete or compaction adds no new rows), so other snapshots are skipped; with
/// `scope = "table"` every data-changing snapshot is profiled as a whole.
///
/// A column missing from the table's current schema is [`SensorError::ColumnNotFound`]; one
/// that exists now but not in an older snapshot is skipped for that snapshot.
pub async fn observe(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    snapshot_ids: &[i64],
) -> Result<Vec<BatchProfile>, SensorError> {
    let plan = Plan { statistics: true, row_cap: row_cap(config.sample) };
    profile_many(table, table_name, config, snapshot_ids, plan).await
}

/// Profiles the drift reference of `newest`: samples only (no statistics), each batch read up
/// to [`REFERENCE_ROW_CAP`] rows, so the cost of a drift test stays bounded.
pub async fn observe_reference(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    newest: i64,
) -> Result<Vec<BatchProfile>, SensorError> {
    let ids = reference_snapshots(table, config, newest);
    let cap = row_cap(config.sample).map_or(REFERENCE_ROW_CAP, |cap| cap.min(REFERENCE_ROW_CAP));
    let plan = Plan { statistics: false, row_cap: Some(cap) };
    profile_many(table, table_name, config, &ids, plan).await
}

/// The newest `window` profileable snapshots of the current branch not yet profiled, oldest
/// first: on first sight the whole window (a backfill), afterwards the new snapshots.
pub fn snapshots_to_profile(
    table: &Table,
    config: &DistributionConfig,
    already_profiled: &dyn Fn(i64) -> bool,
) -> Vec<i64> {
    let batches: Vec<i64> =
        profileable(&commits(table.metadata()), config.scope).map(|commit| commit.snapshot_id).collect();
    let start = batches.len().saturating_sub(config.settings.window);
    batches[start..].iter().copied().filter(|&id| !already_profiled(id)).collect()
}

/// The snapshots whose batches are the drift reference of `newest`: the pinned
/// `drift.reference_snapshot`, or the `drift.reference_batches` batches before `newest`.
pub fn reference_snapshots(table: &Table, config: &DistributionConfig, newest: i64) -> Vec<i64> {
    if let Some(pinned) = config.drift.reference_snapshot {
        return vec![pinned];
    }
    if config.drift.reference_batches == 0 {
        return Vec::new();
    }
    let batches: Vec<i64> = profileable(&commits(table.metadata()), config.scope)
        .map(|commit| commit.snapshot_id)
        .take_while(|&id| id != newest)
        .collect();
    let start = batches.len().saturating_sub(config.drift.reference_batches);
    batches[start..].to_vec()
}

fn profileable(commits: &[Commit], scope: Scope) -> impl Iterator<Item = &Commit> {
    commits.iter().filter(move |commit| match scope {
        Scope::Added => commit.operation == CommitOperation::Append && commit.is_data_change(),
        Scope::Table => commit.is_data_change(),
    })
}

/// The history points of a profile: one per column and statistic, at the snapshot's time.
pub fn series(table_name: &str, profile: &BatchProfile) -> Vec<Point> {
    profile
        .values
        .iter()
        .filter(|value| value.value.is_finite())
        .map(|value| Point {
            series: series_key(table_name, &value.column, value.statistic),
            observed_at_ms: profile.timestamp_ms,
            snapshot_id: Some(profile.snapshot_id),
            value: value.value,
        })
        .collect()
}

pub fn series_key(table_name: &str, column: &str, statistic: Statistic) -> SeriesKey {
    SeriesKey::new(
        table_name,
        SensorKind::Distribution.as_str(),
        Metric::DistributionValue.as_str(),
        &[("column", column), ("statistic", statistic.as_str())],
    )
}

/// The history `judge` needs for `newest`: each series' `window` points before it.
pub fn window_requests(table_name: &str, config: &DistributionConfig, newest: &BatchProfile) -> Vec<WindowRequest> {
    newest
        .values
        .iter()
        .map(|value| WindowRequest {
            series: series_key(table_name, &value.column, value.statistic),
            before_ms: newest.timestamp_ms,
            limit: config.settings.window,
            since_ms: None,
        })
        .collect()
}

/// Scores each statistic of `newest` against its own earlier batches (`windows`, which must
/// not contain `newest`): `warning` when the z-score crosses the threshold on the configured
/// side, `critical` at twice the threshold, `insufficient_history` below `min_history`
/// batches. Statistics that could not be computed give an `error` (a configuration mistake)
/// or an `ok` without a value (an empty batch). Drift results, when given, add one `drift`
/// evaluation per column.
pub fn judge(
    table_name: &str,
    config: &DistributionConfig,
    newest: &BatchProfile,
    windows: &Windows,
    drift: Option<&[(String, DriftResult)]>,
) -> Vec<Evaluation> {
    let settings = &config.settings;
    let mut evaluations = Vec::new();
    for value in &newest.values {
        let measure = Measure::Distribution(value.statistic);
        let params = judging::scoring_params(settings, settings.direction, measure);
        let key = series_key(table_name, &value.column, value.statistic);
        let history: Vec<f64> = windows
            .get(&key)
            .map(|points| {
                let start = points.len().saturating_sub(settings.window);
                points[start..].iter().map(|point| point.value).collect()
            })
            .unwrap_or_default();
        let score = stats::score(value.value, &history, &params);
        let status = judging::zscore_verdict(score.as_ref(), settings.zscore_threshold);
        let origin = describe_source(newest, value.source);
        let verdict = match &score {
            None => format!(
                "{} earlier batches, {} needed to score",
                history.iter().filter(|value| value.is_finite()).count(),
                settings.min_history
            ),
            Some(score) => {
                let (lower, upper) = judging::band(score, measure);
                format!(
                    "z = {:.2} against {} earlier batches (expected {} to {})",
                    score.zscore,
                    history.len(),
                    human_number(lower),
                    human_number(upper)
                )
            }
        };
        let message = format!(
            "`{}` of `{}` is {} ({origin}); {verdict}",
            value.statistic,
            value.column,
            human_number(value.value)
        );
        let mut evaluation =
            Evaluation::new(table_name, SensorKind::Distribution, Metric::DistributionValue, status, message)
                .with_value(value.value)
                .with_score(score.as_ref(), measure)
                .at(newest.timestamp_ms, Some(newest.snapshot_id));
        evaluation.column = Some(value.column.clone());
        evaluation.statistic = Some(value.statistic.as_str().to_string());
        evaluations.push(evaluation);
    }
    for skipped in &newest.skipped {
        let status = if skipped.misconfigured { Status::Error } else { Status::Ok };
        let message = format!("`{}` of `{}` has no value: {}", skipped.statistic, skipped.column, skipped.reason);
        let mut evaluation =
            Evaluation::new(table_name, SensorKind::Distribution, Metric::DistributionValue, status, message)
                .at(newest.timestamp_ms, Some(newest.snapshot_id));
        evaluation.column = Some(skipped.column.clone());
        evaluation.statistic = Some(skipped.statistic.as_str().to_string());
        evaluations.push(evaluation);
    }
    for (column, result) in drift.unwrap_or_default() {
        let mut evaluation = Evaluation::new(
            table_name,
            SensorKind::Distribution,
            Metric::Drift,
            result.status,
            format!("drift of `{column}`: {}", result.describe(&config.drift)),
        )
        .at(newest.timestamp_ms, Some(newest.snapshot_id));
        if let Some(psi) = result.psi {
            evaluation = evaluation.with_value(psi);
        }
        evaluation.column = Some(column.clone());
        evaluations.push(evaluation);
    }
    evaluations
}

fn describe_source(profile: &BatchProfile, source: ValueSource) -> String {
    let batch = match profile.scope {
        Scope::Added => "added",
        Scope::Table => "live",
    };
    let files = plural(profile.files as u64, "file");
    match source {
        ValueSource::Metadata => format!("from manifest metadata of {files} {batch}"),
        ValueSource::Scan if profile.sampled => format!(
            "from a scan of a sample of {} of the {} rows {batch} in {files}",
            profile.scanned_rows, profile.row_count
        ),
        ValueSource::Scan => format!("from a scan of {} {batch} in {files}", plural(profile.scanned_rows, "row")),
    }
}

fn plural(count: u64, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

/// Drift of one column between the newest batch and the reference batches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftResult {
    /// Kolmogorov-Smirnov statistic and p-value (numeric columns).
    pub ks_statistic: Option<f64>,
    pub ks_p_value: Option<f64>,
    /// Population stability index (numeric: reference deciles; categorical: top categories).
    pub psi: Option<f64>,
    /// Chi-square test over the reference's top categories plus `other` (categorical columns).
    pub chi_square_p_value: Option<f64>,
    /// Sample sizes compared.
    pub reference_size: usize,
    pub newest_size: usize,
    /// `warning` when one test crosses its threshold, `critical` when both do, `ok`, or
    /// `insufficient_history` without a reference.
    pub status: Status,
}

impl DriftResult {
    fn describe(&self, config: &crate::config::DriftConfig) -> String {
        let mut parts = Vec::new();
        if let (Some(statistic), Some(p)) = (self.ks_statistic, self.ks_p_value) {
            parts.push(format!("KS D = {statistic:.3}, p = {p:.3} (threshold {})", config.ks_p_value));
        }
        if let Some(p) = self.chi_square_p_value {
            parts.push(format!("chi-square p = {p:.3} (threshold {})", config.chi_square_p_value));
        }
        if let Some(psi) = self.psi {
            parts.push(format!("PSI = {psi:.3} (threshold {})", config.psi_threshold));
        }
        if parts.is_empty() {
            return "no reference batch to compare with".to_string();
        }
        let too_small = if self.newest_size < MIN_DRIFT_SAMPLE || self.reference_size < MIN_DRIFT_SAMPLE {
            format!("; too few values for a verdict, need {MIN_DRIFT_SAMPLE} on each side")
        } else {
            String::new()
        };
        format!(
            "{} ({} sampled values against {} from the reference{too_small})",
            parts.join(", "),
            self.newest_size,
            self.reference_size
        )
    }
}

/// The drift status, or `insufficient_history` when either sample is below [`MIN_DRIFT_SAMPLE`].
fn drift_verdict(fired: &[Option<bool>], reference_size: usize, newest_size: usize) -> Status {
    if reference_size < MIN_DRIFT_SAMPLE || newest_size < MIN_DRIFT_SAMPLE {
        Status::InsufficientHistory
    } else {
        drift_status(fired)
    }
}

/// Drift tests of every sampled column of `newest` against the pooled samples of `reference`.
pub fn drift(
    config: &DistributionConfig,
    newest: &BatchProfile,
    reference: &[BatchProfile],
) -> Vec<(String, DriftResult)> {
    let thresholds = &config.drift;
    let mut results = Vec::new();
    for (column, _) in &config.columns {
        let Some(sample) = newest.samples.get(column) else { continue };
        let pooled: Vec<&ColumnSample> = reference.iter().filter_map(|profile| profile.samples.get(column)).collect();
        let result = match sample {
            ColumnSample::Numeric(values) => {
                let reference: Vec<f64> = pooled
                    .iter()
                    .filter_map(|sample| match sample {
                        ColumnSample::Numeric(values) => Some(values.as_slice()),
                        ColumnSample::Categorical(_) => None,
                    })
                    .flatten()
                    .copied()
                    .collect();
                let ks = stats::ks_two_sample(&reference, values);
                let psi = stats::psi(&reference, values, PSI_BINS);
                let fired =
                    [ks.map(|ks| ks.p_value < thresholds.ks_p_value), psi.map(|psi| psi >= thresholds.psi_threshold)];
                DriftResult {
                    ks_statistic: ks.map(|ks| ks.statistic),
                    ks_p_value: ks.map(|ks| ks.p_value),
                    psi,
                    chi_square_p_value: None,
                    reference_size: reference.len(),
                    newest_size: values.len(),
                    status: drift_verdict(&fired, reference.len(), values.len()),
                }
            }
            ColumnSample::Categorical(values) => {
                let reference: Vec<&str> = pooled
                    .iter()
                    .filter_map(|sample| match sample {
                        ColumnSample::Categorical(values) => Some(values.as_slice()),
                        ColumnSample::Numeric(_) => None,
                    })
                    .flatten()
                    .map(String::as_str)
                    .collect();
                let (expected, actual) = category_counts(&reference, values);
                let chi_square = stats::chi_square(&expected, &actual);
                let psi = stats::psi_categorical(&expected, &actual);
                let fired = [
                    chi_square.map(|result| result.p_value < thresholds.chi_square_p_value),
                    psi.map(|psi| psi >= thresholds.psi_threshold),
                ];
                DriftResult {
                    ks_statistic: None,
                    ks_p_value: None,
                    psi,
                    chi_square_p_value: chi_square.map(|result| result.p_value),
                    reference_size: reference.len(),
                    newest_size: values.len(),
                    status: drift_verdict(&fired, reference.len(), values.len()),
                }
            }
        };
        results.push((column.clone(), result));
    }
    results
}

fn drift_status(fired: &[Option<bool>]) -> Status {
    let known: Vec<bool> = fired.iter().flatten().copied().collect();
    match known.iter().filter(|&&fired| fired).count() {
        _ if known.is_empty() => Status::InsufficientHistory,
        0 => Status::Ok,
        count if count == known.len() && count > 1 => Status::Critical,
        _ => Status::Warning,
    }
}

/// Counts of the reference's [`TOP_CATEGORIES`] most frequent values on both sides; every
/// other value (on either side) counts as one `other` category.
/// Named category counts, as `stats::chi_square` takes them.
type CategoryCounts = Vec<(String, u64)>;

fn category_counts(reference: &[&str], newest: &[String]) -> (CategoryCounts, CategoryCounts) {
    let mut frequency: HashMap<&str, u64> = HashMap::new();
    for value in reference {
        *frequency.entry(value).or_default() += 1;
    }
    let mut ranked: Vec<(&str, u64)> = frequency.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(TOP_CATEGORIES);
    let top: HashMap<&str, usize> = ranked.iter().enumerate().map(|(index, (value, _))| (*value, index)).collect();
    let count = |values: &mut dyn Iterator<Item = &str>| {
        let mut counts = vec![0u64; top.len() + 1];
        for value in values {
            counts[top.get(value).copied().unwrap_or(top.len())] += 1;
        }
        let mut named: Vec<(String, u64)> =
            ranked.iter().zip(&counts).map(|((value, _), &count)| (value.to_string(), count)).collect();
        named.push((OTHER_CATEGORY.to_string(), counts[top.len()]));
        named
    };
    let expected = count(&mut reference.iter().copied());
    let actual = count(&mut newest.iter().map(String::as_str));
    (expected, actual)
}

// ---------------------------------------------------------------------------------------------
// Profiling

#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Compute statistics (false: drift samples only).
    statistics: bool,
    /// Read at most this many rows of the batch.
    row_cap: Option<u64>,
}

/// `sample` as a row cap: a fraction is applied per batch later, a count is a cap.
fn row_cap(sample: Option<f64>) -> Option<u64> {
    sample.filter(|sample| *sample > 1.0).map(|sample| sample as u64)
}

async fn profile_many(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    snapshot_ids: &[i64],
    plan: Plan,
) -> Result<Vec<BatchProfile>, SensorError> {
    let metadata = table.metadata();
    let current_schema = metadata.current_schema();
    let mut columns = Vec::new();
    for (name, statistics) in &config.columns {
        let field = current_schema
            .field_by_name(name)
            .ok_or_else(|| SensorError::ColumnNotFound { table: table_name.to_string(), column: name.clone() })?;
        columns.push(ConfiguredColumn { name: name.clone(), field_id: field.id, statistics: statistics.clone() });
    }
    let history = commits(metadata);
    let mut wanted: Vec<&Commit> = history.iter().filter(|commit| snapshot_ids.contains(&commit.snapshot_id)).collect();
    wanted.retain(|commit| profileable(std::slice::from_ref(*commit), config.scope).next().is_some());
    let total = wanted.len();
    let mut profiles = Vec::with_capacity(total);
    for (index, commit) in wanted.into_iter().enumerate() {
        let snapshot = metadata.snapshot_by_id(commit.snapshot_id).ok_or_else(|| {
            metadata_error(table_name, format!("snapshot {} is not in the table metadata", commit.snapshot_id))
        })?;
        let started = std::time::Instant::now();
        let profile = profile_snapshot(table, table_name, config, &columns, snapshot, plan).await?;
        tracing::info!(
            table = table_name,
            snapshot_id = commit.snapshot_id,
            progress = format!("{}/{total}", index + 1),
            rows = profile.row_count,
            scanned_rows = profile.scanned_rows,
            scanned_bytes = profile.scanned_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "profiled batch"
        );
        profiles.push(profile);
    }
    Ok(profiles)
}

#[derive(Clone, Debug)]
struct ConfiguredColumn {
    name: String,
    field_id: i32,
    statistics: Vec<Statistic>,
}

/// A configured column as it is in one snapshot.
struct ResolvedColumn<'a> {
    configured: &'a ConfiguredColumn,
    /// Name in the snapshot's schema (a rename keeps the field id).
    kind: ValueKind,
    primitive: Option<PrimitiveType>,
}

fn metadata_error(table_name: &str, message: String) -> SensorError {
    SensorError::Metadata {
        table: table_name.to_string(),
        source: iceberg::Error::new(iceberg::ErrorKind::DataInvalid, message),
    }
}

fn scan_error(table_name: &str, error: impl std::error::Error + Send + Sync + 'static) -> SensorError {
    SensorError::Scan { table: table_name.to_string(), source: Box::new(error) }
}

/// The data files of a batch and whether delete files apply to them.
struct Batch {
    files: Vec<DataFile>,
    has_deletes: bool,
}

async fn batch_files(
    table: &Table,
    table_name: &str,
    snapshot: &SnapshotRef,
    scope: Scope,
) -> Result<Batch, SensorError> {
    let snapshot_id = snapshot.snapshot_id();
    let read_error = |source: iceberg::Error| SensorError::Metadata { table: table_name.to_string(), source };
    let list = table.manifest_list_reader(snapshot).load().await.map_err(read_error)?;
    let mut files = Vec::new();
    let mut has_deletes = false;
    for manifest in list.entries() {
        let is_data = manifest.content == ManifestContentType::Data;
        match scope {
            // Only manifests written by this snapshot can hold the files it added.
            Scope::Added if !is_data || manifest.added_snapshot_id != snapshot_id => continue,
            Scope::Added => {}
            Scope::Table if !is_data => {
                if manifest.has_added_files() || manifest.has_existing_files() {
                    has_deletes = true;
                }
                continue;
            }
            Scope::Table => {}
        }
        let loaded = manifest.load_manifest(table.file_io()).await.map_err(read_error)?;
        for entry in loaded.entries() {
            let keep = match scope {
                Scope::Added => entry.status() == ManifestStatus::Added && entry.snapshot_id() == Some(snapshot_id),
                Scope::Table => entry.is_alive(),
            };
            if keep && entry.content_type() == DataContentType::Data {
                files.push(entry.data_file().clone());
            }
        }
    }
    Ok(Batch { files, has_deletes })
}

async fn profile_snapshot(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    columns: &[ConfiguredColumn],
    snapshot: &SnapshotRef,
    plan: Plan,
) -> Result<BatchProfile, SensorError> {
    let metadata = table.metadata();
    let schema =
        snapshot.schema(metadata).map_err(|source| SensorError::Metadata { table: table_name.to_string(), source })?;
    let batch = batch_files(table, table_name, snapshot, config.scope).await?;
    let metadata_row_count: u64 = batch.files.iter().map(DataFile::record_count).sum();
    let metadata_exact = !batch.has_deletes;
    let drift_enabled = config.drift.reference_batches > 0 || config.drift.reference_snapshot.is_some();

    let mut profile = BatchProfile {
        snapshot_id: snapshot.snapshot_id(),
        timestamp_ms: snapshot.timestamp_ms(),
        scope: config.scope,
        row_count: metadata_row_count,
        files: batch.files.len(),
        scanned_files: 0,
        scanned_rows: 0,
        scanned_bytes: 0,
        sampled: false,
        values: Vec::new(),
        skipped: Vec::new(),
        samples: HashMap::new(),
    };

    // Decide, per column and statistic: skipped, from metadata, or from a scan.
    let mut to_scan: Vec<(ResolvedColumn<'_>, Vec<Statistic>, Wanted)> = Vec::new();
    for configured in columns {
        let Some(field) = schema.field_by_id(configured.field_id) else {
            if plan.statistics {
                for &statistic in &configured.statistics {
                    profile.skipped.push(SkippedStatistic {
                        column: configured.name.clone(),
                        statistic,
                        reason: "the column did not exist in this snapshot".to_string(),
                        misconfigured: false,
                    });
                }
            }
            continue;
        };
        let primitive = match field.field_type.as_ref() {
            Type::Primitive(primitive) => Some(primitive.clone()),
            _ => None,
        };
        let kind = match &primitive {
            Some(PrimitiveType::String) => ValueKind::Text,
            Some(
                PrimitiveType::Boolean
                | PrimitiveType::Int
                | PrimitiveType::Long
                | PrimitiveType::Float
                | PrimitiveType::Double
                | PrimitiveType::Decimal { .. }
                | PrimitiveType::Date
                | PrimitiveType::Time
                | PrimitiveType::Timestamp
                | PrimitiveType::Timestamptz
                | PrimitiveType::TimestampNs
                | PrimitiveType::TimestamptzNs,
            ) => ValueKind::Numeric,
            _ => ValueKind::Other,
        };
        let column = ResolvedColumn { configured, kind, primitive };
        let mut scanned = Vec::new();
        let mut wanted = Wanted::default();
        if plan.statistics {
            for &statistic in &configured.statistics {
                if let Some(reason) = not_applicable(kind, statistic) {
                    profile.skipped.push(SkippedStatistic {
                        column: configured.name.clone(),
                        statistic,
                        reason,
                        misconfigured: true,
                    });
                    continue;
                }
                let from_metadata = metadata_exact
                    .then(|| metadata_value(&column, statistic, &batch.files, metadata_row_count))
                    .flatten();
                match from_metadata {
                    Some(value) => profile.values.push(ColumnStatistic {
                        column: configured.name.clone(),
                        statistic,
                        value,
                        source: ValueSource::Metadata,
                    }),
                    None => {
                        wanted.distinct |= statistic == Statistic::DistinctCount;
                        if statistic.quantile().is_some() {
                            wanted.sample = wanted.sample.max(QUANTILE_SAMPLE);
                        }
                        scanned.push(statistic);
                    }
                }
            }
        }
        if drift_enabled && kind != ValueKind::Other {
            wanted.sample = wanted.sample.max(DRIFT_SAMPLE);
        }
        // With deletes, the row count itself needs a scan.
        if !scanned.is_empty() || wanted.sample > 0 || (!metadata_exact && plan.statistics) {
            to_scan.push((column, scanned, wanted));
        }
    }

    if !to_scan.is_empty() {
        let cap = match config.sample {
            Some(fraction) if fraction <= 1.0 && plan.statistics => {
                Some(((metadata_row_count as f64) * fraction).ceil() as u64)
            }
            _ => plan.row_cap,
        };
        let field_ids: Vec<i32> = to_scan.iter().map(|(column, _, _)| column.configured.field_id).collect();
        let tasks = scan_tasks(table, table_name, snapshot, &schema, &batch, &field_ids, config.scope).await?;
        let kinds: Vec<(ValueKind, Wanted)> =
            to_scan.iter().map(|(column, _, wanted)| (column.kind, *wanted)).collect();
        let scanned = scan(table, table_name, tasks, &field_ids, &kinds, cap, snapshot.snapshot_id()).await?;
        profile.scanned_files = scanned.files;
        profile.scanned_rows = scanned.rows;
        profile.scanned_bytes = scanned.bytes;
        let complete_rows = if metadata_exact { metadata_row_count } else { scanned.rows };
        profile.sampled = metadata_exact && scanned.rows < metadata_row_count;
        if !metadata_exact {
            profile.row_count = scanned.rows;
        }
        let scale = if profile.sampled && scanned.rows > 0 { complete_rows as f64 / scanned.rows as f64 } else { 1.0 };
        for ((column, statistics, _), accumulator) in to_scan.into_iter().zip(scanned.columns) {
            let sorted = if statistics.iter().any(|statistic| statistic.quantile().is_some()) {
                sorted_sample(&accumulator)
            } else {
                Vec::new()
            };
            for statistic in statistics {
                match scan_value(&accumulator, &sorted, statistic, scale) {
                    Some(value) => profile.values.push(ColumnStatistic {
                        column: column.configured.name.clone(),
                        statistic,
                        value,
                        source: ValueSource::Scan,
                    }),
                    None => profile.skipped.push(SkippedStatistic {
                        column: column.configured.name.clone(),
                        statistic,
                        reason: "the batch has no non-null value".to_string(),
                        misconfigured: false,
                    }),
                }
            }
            if let Some(numbers) = accumulator.numbers {
                let values = numbers.into_first(DRIFT_SAMPLE);
                profile.samples.insert(column.configured.name.clone(), ColumnSample::Numeric(values));
            } else if let Some(strings) = accumulator.strings {
                let values = strings.into_first(DRIFT_SAMPLE);
                profile.samples.insert(column.configured.name.clone(), ColumnSample::Categorical(values));
            }
        }
    }
    // Keep the configured order: column by column, statistic by statistic.
    let order: HashMap<(&str, Statistic), usize> = columns
        .iter()
        .flat_map(|column| column.statistics.iter().map(move |statistic| (column.name.as_str(), *statistic)))
        .enumerate()
        .map(|(index, key)| (key, index))
        .collect();
    let position = |column: &str, statistic: Statistic| order.get(&(column, statistic)).copied().unwrap_or(usize::MAX);
    profile.values.sort_by_key(|value| position(&value.column, value.statistic));
    profile.skipped.sort_by_key(|value| position(&value.column, value.statistic));
    Ok(profile)
}

fn not_applicable(kind: ValueKind, statistic: Statistic) -> Option<String> {
    let general = matches!(statistic, Statistic::RowCount | Statistic::NullCount | Statistic::NullPercent);
    let ok = match kind {
        ValueKind::Numeric => !statistic.is_string_only(),
        ValueKind::Text => general || statistic.is_string_only() || statistic == Statistic::DistinctCount,
        ValueKind::Other => general,
    };
    if ok {
        return None;
    }
    let what = match kind {
        ValueKind::Numeric => "a numeric column",
        ValueKind::Text => "a string column",
        ValueKind::Other => "a column that is neither numeric nor a string",
    };
    Some(format!("`{statistic}` does not apply to {what}"))
}

/// The value of `statistic` from manifest column statistics, when they are present for every
/// file of the batch and exact (numeric bounds are; string bounds may be truncated).
fn metadata_value(column: &ResolvedColumn<'_>, statistic: Statistic, files: &[DataFile], rows: u64) -> Option<f64> {
    let field_id = column.configured.field_id;
    let sum_of = |counts: fn(&DataFile) -> &HashMap<i32, u64>| -> Option<u64> {
        files.iter().map(|file| counts(file).get(&field_id).copied()).sum()
    };
    let percent = |count: u64| if rows == 0 { None } else { Some(100.0 * count as f64 / rows as f64) };
    let is_float = matches!(column.primitive, Some(PrimitiveType::Float | PrimitiveType::Double));
    match statistic {
        Statistic::RowCount => Some(rows as f64),
        Statistic::NullCount => sum_of(DataFile::null_value_counts).map(|count| count as f64),
        Statistic::NullPercent => percent(sum_of(DataFile::null_value_counts)?),
        Statistic::NanPercent if column.kind == ValueKind::Numeric && !is_float => percent(0),
        Statistic::NanPercent if is_float => percent(sum_of(DataFile::nan_value_counts)?),
        Statistic::Min | Statistic::Max => {
            let primitive = column.primitive.as_ref()?;
            let lower = statistic == Statistic::Min;
            let mut best: Option<f64> = None;
            for file in files {
                let nulls = file.null_value_counts().get(&field_id).copied()?;
                // Bounds never include NaN. A writer that records no NaN count (PyIceberg)
                // leaves a NaN-only file without bounds, which sends us to the scan below.
                let nans = file.nan_value_counts().get(&field_id).copied().unwrap_or(0);
                if nulls + nans >= file.record_count() {
                    continue; // no number in this file: no bound expected
                }
                let bounds = if lower { file.lower_bounds() } else { file.upper_bounds() };
                let bound = datum_as_f64(bounds.get(&field_id)?, primitive)?;
                best = Some(match best {
                    None => bound,
                    Some(best) if lower => best.min(bound),
                    Some(best) => best.max(bound),
                });
            }
            best
        }
        _ => None,
    }
}

/// A numeric bound as `f64`, in the unit the scan reads (days, microseconds, unscaled / 10^scale).
fn datum_as_f64(datum: &Datum, primitive: &PrimitiveType) -> Option<f64> {
    let value = match (datum.literal(), primitive) {
        (PrimitiveLiteral::Int(value), _) => f64::from(*value),
        (PrimitiveLiteral::Long(value), _) => *value as f64,
        (PrimitiveLiteral::Float(value), _) => f64::from(value.0),
        (PrimitiveLiteral::Double(value), _) => value.0,
        (PrimitiveLiteral::Int128(value), PrimitiveType::Decimal { scale, .. }) => {
            *value as f64 / 10f64.powi(i32::try_from(*scale).ok()?)
        }
        (PrimitiveLiteral::Boolean(value), _) => f64::from(u8::from(*value)),
        _ => return None,
    };
    value.is_finite().then_some(value)
}

/// The sorted quantile sample of a column (empty when none was kept).
fn sorted_sample(accumulator: &ColumnAccumulator) -> Vec<f64> {
    let mut sorted: Vec<f64> =
        accumulator.numbers.as_ref().map(|sample| sample.values().copied().collect()).unwrap_or_default();
    sorted.sort_unstable_by(f64::total_cmp);
    sorted
}

fn scan_value(accumulator: &ColumnAccumulator, sorted: &[f64], statistic: Statistic, scale: f64) -> Option<f64> {
    let rows = accumulator.rows;
    let percent = |count: u64| (rows > 0).then(|| 100.0 * count as f64 / rows as f64);
    let numbers = accumulator.count > 0;
    let value = match statistic {
        Statistic::RowCount => Some(rows as f64 * scale),
        Statistic::NullCount => Some(accumulator.nulls as f64 * scale),
        Statistic::NullPercent => percent(accumulator.nulls),
        Statistic::NanPercent => percent(accumulator.nans),
        Statistic::ZeroPercent => percent(accumulator.zeros),
        Statistic::EmptyPercent => percent(accumulator.empty),
        Statistic::Mean => numbers.then_some(accumulator.mean),
        Statistic::Stddev => accumulator.stddev(),
        Statistic::Sum => numbers.then_some(accumulator.sum * scale),
        Statistic::Min => numbers.then_some(accumulator.min),
        Statistic::Max => numbers.then_some(accumulator.max),
        Statistic::DistinctCount => accumulator.distinct.as_ref().map(|sketch| sketch.estimate().round()),
        Statistic::MinLength => numbers.then_some(accumulator.min_length as f64),
        Statistic::MaxLength => numbers.then_some(accumulator.max_length as f64),
        Statistic::MeanLength => numbers.then(|| accumulator.length_sum as f64 / accumulator.count as f64),
        quantile => {
            let level = quantile.quantile()?;
            stats::quantile_sorted(sorted, level)
        }
    };
    value.filter(|value| value.is_finite())
}

/// The scan tasks of a batch: built from its manifest entries for `added` (no delete file
/// applies to the files an append added), planned by Iceberg (deletes attached) for `table`.
async fn scan_tasks(
    table: &Table,
    table_name: &str,
    snapshot: &SnapshotRef,
    schema: &Arc<Schema>,
    batch: &Batch,
    field_ids: &[i32],
    scope: Scope,
) -> Result<Vec<FileScanTask>, SensorError> {
    if scope == Scope::Table {
        let names: Vec<String> =
            field_ids.iter().filter_map(|id| schema.name_by_field_id(*id).map(str::to_string)).collect();
        let scan = table
            .scan()
            .snapshot_id(snapshot.snapshot_id())
            .select(names)
            .build()
            .map_err(|error| scan_error(table_name, error))?;
        let tasks = scan.plan_files().await.map_err(|error| scan_error(table_name, error))?;
        return tasks.try_collect().await.map_err(|error| scan_error(table_name, error));
    }
    Ok(batch
        .files
        .iter()
        .map(|file| {
            FileScanTask::builder()
                .with_file_size_in_bytes(file.file_size_in_bytes())
                .with_start(0)
                .with_length(file.file_size_in_bytes())
                .with_record_count(Some(file.record_count()))
                .with_data_file_path(file.file_path().to_string())
                .with_data_file_format(file.file_format())
                .with_schema(schema.clone())
                .with_project_field_ids(field_ids.to_vec())
                .with_partition(Some(file.partition().clone()))
                .with_case_sensitive(true)
                .build()
        })
        .collect())
}

struct Scanned {
    columns: Vec<ColumnAccumulator>,
    files: usize,
    rows: u64,
    bytes: u64,
}

/// Reads `tasks` on up to one worker per core, each profiling its share into its own
/// accumulators, then merges them. Files are dealt to workers; when there are fewer files than
/// cores (a typical append), each worker reads all files but only its share of the columns.
/// With `row_cap`, files are visited in a seeded random order and reading stops once that
/// many rows were read.
async fn scan(
    table: &Table,
    table_name: &str,
    mut tasks: Vec<FileScanTask>,
    field_ids: &[i32],
    kinds: &[(ValueKind, Wanted)],
    row_cap: Option<u64>,
    seed: i64,
) -> Result<Scanned, SensorError> {
    let seed = accumulate::mix64(seed as u64);
    if row_cap.is_some() {
        tasks.sort_by_key(|task| accumulate::hash_bytes(task.data_file_path.as_bytes()) ^ seed);
        let mut planned = 0u64;
        let mut kept = 0;
        for task in &tasks {
            if row_cap.is_some_and(|cap| planned >= cap) {
                break;
            }
            planned += task.record_count.unwrap_or(u64::MAX / 4);
            kept += 1;
        }
        tasks.truncate(kept.max(1).min(tasks.len()));
    }
    let cores = std::thread::available_parallelism().map_or(2, |count| count.get());
    let file_groups = cores.min(tasks.len()).max(1);
    let column_groups = (cores / file_groups).clamp(1, field_ids.len().max(1));
    // Largest files first, dealt round-robin, so workers get similar loads.
    tasks.sort_by_key(|task| std::cmp::Reverse(task.length));
    let mut groups: Vec<Vec<FileScanTask>> = (0..file_groups).map(|_| Vec::new()).collect();
    for (index, task) in tasks.into_iter().enumerate() {
        groups[index % file_groups].push(task);
    }
    let per_group_cap = row_cap.map(|cap| cap.div_ceil(file_groups as u64));
    let mut handles = Vec::new();
    for (group_index, group) in groups.into_iter().enumerate() {
        for column_group in 0..column_groups {
            let columns: Vec<usize> = (column_group..field_ids.len()).step_by(column_groups).collect();
            let ids: Vec<i32> = columns.iter().map(|&index| field_ids[index]).collect();
            let job_kinds: Vec<(ValueKind, Wanted)> = columns.iter().map(|&index| kinds[index]).collect();
            let mut job_tasks = group.clone();
            for task in &mut job_tasks {
                task.project_field_ids = ids.clone();
            }
            let reader =
                table.reader_builder().with_data_file_concurrency_limit(1).with_batch_size(READ_BATCH_ROWS).build();
            let worker_seed = accumulate::mix64(seed ^ group_index as u64);
            handles.push((
                columns,
                tokio::spawn(async move {
                    read_group(reader, job_tasks, &ids, &job_kinds, per_group_cap, worker_seed).await
                }),
            ));
        }
    }
    let mut slots: Vec<Option<ColumnAccumulator>> = (0..field_ids.len()).map(|_| None).collect();
    let (mut files, mut rows, mut bytes) = (0usize, 0u64, 0u64);
    for (job, (columns, handle)) in handles.into_iter().enumerate() {
        let part = handle
            .await
            .map_err(|error| scan_error(table_name, error))?
            .map_err(|error| scan_error(table_name, error))?;
        // Column groups of one file group read the same rows: count them once.
        if job % column_groups == 0 {
            files += part.files;
            rows += part.rows;
        }
        bytes += part.bytes;
        for (index, accumulator) in columns.into_iter().zip(part.columns) {
            match &mut slots[index] {
                Some(existing) => existing.merge(accumulator),
                slot => *slot = Some(accumulator),
            }
        }
    }
    let columns = slots
        .into_iter()
        .zip(kinds)
        .map(|(slot, (kind, wanted))| slot.unwrap_or_else(|| ColumnAccumulator::new(*kind, *wanted, seed)))
        .collect();
    Ok(Scanned { columns, files, rows, bytes })
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("field {0} is missing from a record batch")]
    MissingField(i32),
}

async fn read_group(
    reader: iceberg::arrow::ArrowReader,
    tasks: Vec<FileScanTask>,
    field_ids: &[i32],
    kinds: &[(ValueKind, Wanted)],
    row_cap: Option<u64>,
    seed: u64,
) -> Result<Scanned, ReadError> {
    let files = tasks.len();
    let mut columns: Vec<ColumnAccumulator> = kinds
        .iter()
        .enumerate()
        .map(|(index, (kind, wanted))| ColumnAccumulator::new(*kind, *wanted, accumulate::mix64(seed ^ index as u64)))
        .collect();
    let stream = futures::stream::iter(tasks.into_iter().map(Ok)).boxed();
    let result = reader.read(stream)?;
    let metrics = result.metrics().clone();
    let mut batches = result.stream();
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let batch = match row_cap {
            Some(cap) if rows + batch.num_rows() as u64 > cap => batch.slice(0, (cap - rows) as usize),
            _ => batch,
        };
        rows += batch.num_rows() as u64;
        for (position, (accumulator, field_id)) in columns.iter_mut().zip(field_ids).enumerate() {
            let array = column_by_field_id(&batch, *field_id, position).ok_or(ReadError::MissingField(*field_id))?;
            accumulator.add(array.as_ref())?;
        }
        if row_cap.is_some_and(|cap| rows >= cap) {
            break;
        }
    }
    Ok(Scanned { columns, files, rows, bytes: metrics.bytes_read() })
}

/// The column of `batch` carrying Iceberg field `field_id` (by its Parquet field-id metadata,
/// else by position in the projection).
fn column_by_field_id(
    batch: &RecordBatch,
    field_id: i32,
    position: usize,
) -> Option<&datafusion::arrow::array::ArrayRef> {
    let wanted = field_id.to_string();
    let schema = batch.schema_ref();
    let by_id = schema.fields().iter().position(|field| {
        field.metadata().get(datafusion::parquet::arrow::PARQUET_FIELD_ID_META_KEY).is_some_and(|id| *id == wanted)
    });
    batch.columns().get(by_id.unwrap_or(position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DriftConfig, SensorSettings};
    use crate::stats::Direction;
    use datafusion::arrow::array::Float64Array;

    /// A seeded normal generator (SplitMix64 + Box-Muller) so the tests need no RNG crate.
    struct Normal(u64);

    impl Normal {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            ((accumulate::mix64(self.0) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn sample(&mut self, mean: f64, stddev: f64) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            mean + stddev * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    const STATISTICS: [Statistic; 8] = [
        Statistic::Mean,
        Statistic::Stddev,
        Statistic::NullPercent,
        Statistic::P05,
        Statistic::P50,
        Statistic::P95,
        Statistic::Min,
        Statistic::Max,
    ];

    fn config() -> DistributionConfig {
        DistributionConfig {
            columns: vec![("amount".to_string(), STATISTICS.to_vec())],
            scope: Scope::Added,
            sample: None,
            drift: DriftConfig {
                reference_batches: 5,
                reference_snapshot: None,
                psi_threshold: 0.25,
                ks_p_value: 0.01,
                chi_square_p_value: 0.01,
            },
            settings: SensorSettings {
                schedule: crate::config::Schedule {
                    expression: "0 * * * * *".to_string(),
                    cron: "0 * * * * *".parse().unwrap(),
                },
                zscore_threshold: 3.0,
                min_history: 5,
                window: 30,
                direction: Direction::Both,
                timeout: std::time::Duration::from_secs(60),
            },
        }
    }

    /// The profile the scan path computes for these values (batch `index`, one per hour).
    fn profile(index: i64, values: &[Option<f64>]) -> BatchProfile {
        let wanted = Wanted { distinct: false, sample: QUANTILE_SAMPLE };
        let mut accumulator = ColumnAccumulator::new(ValueKind::Numeric, wanted, index as u64);
        accumulator.add(&Float64Array::from(values.to_vec())).unwrap();
        let sorted = sorted_sample(&accumulator);
        let values = STATISTICS
            .iter()
            .filter_map(|&statistic| {
                scan_value(&accumulator, &sorted, statistic, 1.0).map(|value| ColumnStatistic {
                    column: "amount".to_string(),
                    statistic,
                    value,
                    source: ValueSource::Scan,
                })
            })
            .collect();
        let sample = accumulator.numbers.unwrap().into_first(DRIFT_SAMPLE);
        BatchProfile {
            snapshot_id: index,
            timestamp_ms: index * 3_600_000,
            scope: Scope::Added,
            row_count: accumulator.rows,
            files: 1,
            scanned_files: 1,
            scanned_rows: accumulator.rows,
            scanned_bytes: 0,
            sampled: false,
            values,
            skipped: Vec::new(),
            samples: HashMap::from([("amount".to_string(), ColumnSample::Numeric(sample))]),
        }
    }

    fn batch(normal: &mut Normal, rows: usize, mean: f64, null_rate: f64) -> Vec<Option<f64>> {
        (0..rows)
            .map(|_| {
                let value = normal.sample(mean, 10.0);
                (normal.uniform() >= null_rate).then_some(value)
            })
            .collect()
    }

    /// `history` profiles into the windows the pipeline would fetch.
    fn windows(history: &[BatchProfile]) -> Windows {
        let mut windows = Windows::new();
        for profile in history {
            for point in series("db.t", profile) {
                windows.entry(point.series.clone()).or_default().push(point);
            }
        }
        windows
    }

    const ROWS: usize = 1_000;
    const HISTORY: usize = 30;

    fn run(seed: u64, newest: impl Fn(&mut Normal) -> Vec<Option<f64>>) -> Vec<Evaluation> {
        let mut normal = Normal(seed);
        let history: Vec<BatchProfile> =
            (0..HISTORY as i64).map(|index| profile(index, &batch(&mut normal, ROWS, 50.0, 0.02))).collect();
        let newest = profile(HISTORY as i64, &newest(&mut normal));
        judge("db.t", &config(), &newest, &windows(&history), None)
    }

    fn flagged<'a>(evaluations: &'a [Evaluation], statistic: &str) -> &'a Evaluation {
        evaluations.iter().find(|evaluation| evaluation.statistic.as_deref() == Some(statistic)).unwrap()
    }

    #[test]
    fn unchanged_distributions_rarely_alarm() {
        let seeds = 200u64;
        let (mut evaluations, mut alarms, mut batches_with_alarm) = (0usize, 0usize, 0usize);
        for seed in 0..seeds {
            let results = run(seed, |normal| batch(normal, ROWS, 50.0, 0.02));
            let count = results.iter().filter(|evaluation| evaluation.status >= Status::Warning).count();
            assert!(results.iter().all(|evaluation| evaluation.status != Status::InsufficientHistory));
            evaluations += results.len();
            alarms += count;
            batches_with_alarm += usize::from(count > 0);
        }
        let per_evaluation = alarms as f64 / evaluations as f64;
        let per_batch = batches_with_alarm as f64 / seeds as f64;
        println!(
            "false positives over {seeds} seeds: {alarms}/{evaluations} evaluations ({:.2} %), {batches_with_alarm} batches with any alarm ({:.1} %)",
            100.0 * per_evaluation,
            100.0 * per_batch
        );
        // Threshold 3 with a 30-point window: about 0.5 % per statistic if the series were normal;
        // min/max are heavier-tailed.
        assert!(per_evaluation < 0.02, "{per_evaluation}");
    }

    #[test]
    fn a_four_sigma_mean_shift_is_flagged() {
        // The batch mean of N(50, 10) over 980 non-null rows varies with sd 10 / sqrt(980).
        let sigma = 10.0 / ((ROWS as f64) * 0.98).sqrt();
        let seeds = 200u64;
        let mut detected = 0;
        for seed in 0..seeds {
            let results = run(seed, |normal| batch(normal, ROWS, 50.0 + 4.0 * sigma, 0.02));
            detected += usize::from(flagged(&results, "mean").status >= Status::Warning);
        }
        let rate = detected as f64 / seeds as f64;
        println!("4-sigma mean shift detected in {detected}/{seeds} seeds ({:.1} %)", 100.0 * rate);
        // z is about N(4, 1) against a threshold of 3: detected about 84 % of the time.
        assert!(rate >= 0.7, "{rate}");
        let results = run(7, |normal| batch(normal, ROWS, 50.0 + 8.0 * sigma, 0.02));
        assert_eq!(flagged(&results, "mean").status, Status::Critical, "{results:#?}");
    }

    #[test]
    fn a_null_rate_jump_is_flagged() {
        for seed in 0..20 {
            let results = run(seed, |normal| batch(normal, ROWS, 50.0, 0.30));
            let null_percent = flagged(&results, "null_percent");
            assert!(null_percent.status >= Status::Warning, "{null_percent:?}");
            assert!(null_percent.message.contains("from a scan of"), "{}", null_percent.message);
        }
    }

    #[test]
    fn short_history_is_insufficient() {
        let mut normal = Normal(1);
        let history: Vec<BatchProfile> =
            (0..3).map(|index| profile(index, &batch(&mut normal, 100, 50.0, 0.0))).collect();
        let newest = profile(3, &batch(&mut normal, 100, 500.0, 0.0));
        let results = judge("db.t", &config(), &newest, &windows(&history), None);
        assert!(results.iter().all(|evaluation| evaluation.status == Status::InsufficientHistory));
        assert!(results.iter().all(|evaluation| evaluation.column.as_deref() == Some("amount")
            && evaluation.metric == Metric::DistributionValue));
    }

    #[test]
    fn drift_fires_on_a_shift_and_not_on_the_same_distribution() {
        let mut normal = Normal(3);
        let reference: Vec<BatchProfile> =
            (0..5).map(|index| profile(index, &batch(&mut normal, 5_000, 50.0, 0.0))).collect();
        let same = profile(5, &batch(&mut normal, 5_000, 50.0, 0.0));
        let shifted = profile(6, &batch(&mut normal, 5_000, 60.0, 0.0));
        let config = config();
        let quiet = drift(&config, &same, &reference);
        assert_eq!(quiet[0].1.status, Status::Ok, "{quiet:?}");
        let loud = drift(&config, &shifted, &reference);
        assert_eq!(loud[0].1.status, Status::Critical, "{loud:?}");
        assert!(loud[0].1.ks_p_value.unwrap() < 1e-6);
        let evaluations = judge("db.t", &config, &shifted, &Windows::new(), Some(&loud));
        let drift = evaluations.iter().find(|evaluation| evaluation.metric == Metric::Drift).unwrap();
        assert_eq!(drift.status, Status::Critical);
        assert!(drift.message.contains("KS"), "{}", drift.message);
    }

    #[test]
    fn categorical_drift_uses_top_categories() {
        let reference: Vec<String> = (0..1000).map(|index| ["a", "b", "c"][index % 3].to_string()).collect();
        let same: Vec<String> = (0..900).map(|index| ["a", "b", "c"][index % 3].to_string()).collect();
        let changed: Vec<String> = (0..900).map(|index| ["a", "a", "z"][index % 3].to_string()).collect();
        let make = |id: i64, values: Vec<String>| BatchProfile {
            samples: HashMap::from([("amount".to_string(), ColumnSample::Categorical(values))]),
            ..profile(id, &[Some(1.0)])
        };
        let config = config();
        let reference = [make(0, reference)];
        assert_eq!(drift(&config, &make(1, same), &reference)[0].1.status, Status::Ok);
        let result = &drift(&config, &make(2, changed), &reference)[0].1;
        assert_eq!(result.status, Status::Critical, "{result:?}");
        assert!(result.chi_square_p_value.unwrap() < 1e-6);
    }

    #[test]
    fn statistics_that_do_not_apply_are_named() {
        assert!(not_applicable(ValueKind::Text, Statistic::Mean).unwrap().contains("string column"));
        assert!(not_applicable(ValueKind::Numeric, Statistic::EmptyPercent).is_some());
        assert!(not_applicable(ValueKind::Text, Statistic::DistinctCount).is_none());
        assert!(not_applicable(ValueKind::Other, Statistic::NullPercent).is_none());
    }
}
