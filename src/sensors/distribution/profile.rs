//! Profiling batches: for each snapshot, its files' manifest entries, the plan, the scan the
//! plan asks for, and the [`BatchProfile`] that puts their answers together in configured
//! order. The one place the rooms of a profile meet; it judges nothing.

use std::collections::HashMap;

use iceberg::spec::SnapshotRef;
use iceberg::table::Table;

use super::accumulate::{ValueKind, Wanted};
use super::metadata::batch_files;
use super::plan::{BatchPlan, ConfiguredColumn, Purpose, configured_columns, plan_batch};
use super::scan::{scan, scan_tasks, scan_value, sorted_sample};
use super::selection::{is_batch, reference_snapshots};
use super::{BatchProfile, ColumnSample, ColumnStatistic, DRIFT_SAMPLE, SkippedStatistic, ValueSource};
use crate::config::{DistributionConfig, Statistic};
use crate::sensors::SensorError;
use crate::sensors::snapshots::{Commit, commits};

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
    let (profiles, _) = profile_many(table, table_name, config, snapshot_ids, Purpose::Statistics, None).await?;
    Ok(profiles)
}

/// [`observe`] within a time budget: batches are profiled newest first and no new one is
/// started after `until` (the newest is always profiled), then returned oldest first. What was
/// not profiled is left for the next run, which resumes with it instead of starting over.
pub async fn observe_until(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    snapshot_ids: &[i64],
    until: std::time::Instant,
) -> Result<Vec<BatchProfile>, SensorError> {
    let (profiles, _) = profile_many(table, table_name, config, snapshot_ids, Purpose::Statistics, Some(until)).await?;
    Ok(profiles)
}

/// Profiles the drift reference of `newest`: samples only (no statistics), each batch read up
/// to [`REFERENCE_ROW_CAP`](super::REFERENCE_ROW_CAP) rows, so the cost of a drift test stays
/// bounded.
pub async fn observe_reference(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    newest: i64,
) -> Result<Vec<BatchProfile>, SensorError> {
    let (profiles, unreadable) = observe_readable_reference(table, table_name, config, newest).await?;
    match unreadable.into_iter().next() {
        Some((_, error)) => Err(error),
        None => Ok(profiles),
    }
}

/// [`observe_reference`], keeping the batches that could be read: a reference batch whose
/// files cannot be read (a data file missing from storage, say) is left out and returned with
/// its error, so drift is tested against what remains instead of failing the sensor.
pub async fn observe_readable_reference(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    newest: i64,
) -> Result<(Vec<BatchProfile>, Vec<(i64, SensorError)>), SensorError> {
    let ids = reference_snapshots(table, config, newest);
    profile_many(table, table_name, config, &ids, Purpose::Reference, None).await
}

async fn profile_many(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    snapshot_ids: &[i64],
    purpose: Purpose,
    until: Option<std::time::Instant>,
) -> Result<(Vec<BatchProfile>, Vec<(i64, SensorError)>), SensorError> {
    let metadata = table.metadata();
    let columns = configured_columns(metadata.current_schema(), table_name, config)?;
    let history = commits(metadata);
    let wanted: Vec<&Commit> = history
        .iter()
        .filter(|commit| snapshot_ids.contains(&commit.snapshot_id) && is_batch(commit, config.scope))
        .collect();
    let total = wanted.len();
    let mut profiles = Vec::with_capacity(total);
    let mut unreadable = Vec::new();
    let mut wanted = wanted;
    if until.is_some() {
        wanted.reverse();
    }
    for (index, commit) in wanted.into_iter().enumerate() {
        if until.is_some_and(|until| index > 0 && std::time::Instant::now() >= until) {
            tracing::warn!(
                table = table_name,
                profiled = index,
                of = total,
                "distribution time budget used up: the older batches are profiled by the next run"
            );
            break;
        }
        let snapshot = metadata.snapshot_by_id(commit.snapshot_id).ok_or_else(|| SensorError::SnapshotNotFound {
            table: table_name.to_string(),
            snapshot_id: commit.snapshot_id,
        })?;
        let started = std::time::Instant::now();
        let profile = match profile_snapshot(table, table_name, config, &columns, snapshot, purpose).await {
            Ok(profile) => profile,
            Err(error @ (SensorError::Scan { .. } | SensorError::Metadata { .. })) if purpose == Purpose::Reference => {
                tracing::warn!(table = table_name, snapshot_id = commit.snapshot_id, error = %crate::errors::error_chain(&error), "a drift reference batch could not be read; drift is tested without it");
                unreadable.push((commit.snapshot_id, error));
                continue;
            }
            Err(error) => return Err(error),
        };
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
    if until.is_some() {
        profiles.reverse();
    }
    Ok((profiles, unreadable))
}

async fn profile_snapshot(
    table: &Table,
    table_name: &str,
    config: &DistributionConfig,
    columns: &[ConfiguredColumn],
    snapshot: &SnapshotRef,
    purpose: Purpose,
) -> Result<BatchProfile, SensorError> {
    let schema = snapshot
        .schema(table.metadata())
        .map_err(|source| SensorError::Metadata { table: table_name.to_string(), source })?;
    let batch = batch_files(table, table_name, snapshot, config.scope).await?;
    let BatchPlan { from_metadata, skipped, scans, row_cap, metadata_exact, metadata_rows } =
        plan_batch(&schema, columns, config, &batch, purpose);

    let mut profile = BatchProfile {
        snapshot_id: snapshot.snapshot_id(),
        timestamp_ms: snapshot.timestamp_ms(),
        scope: config.scope,
        row_count: metadata_rows,
        files: batch.files.len(),
        scanned_files: 0,
        scanned_rows: 0,
        scanned_bytes: 0,
        sampled: false,
        values: from_metadata,
        skipped,
        samples: HashMap::new(),
    };

    if !scans.is_empty() {
        let field_ids: Vec<i32> = scans.iter().map(|column| column.field_id).collect();
        let tasks = scan_tasks(table, table_name, snapshot, &schema, &batch, &field_ids, config.scope).await?;
        let kinds: Vec<(ValueKind, Wanted)> = scans.iter().map(|column| (column.kind, column.wanted)).collect();
        let scanned = scan(table, table_name, tasks, &field_ids, &kinds, row_cap, snapshot.snapshot_id()).await?;
        profile.scanned_files = scanned.files;
        profile.scanned_rows = scanned.rows;
        profile.scanned_bytes = scanned.bytes;
        let complete_rows = if metadata_exact { metadata_rows } else { scanned.rows };
        profile.sampled = metadata_exact && scanned.rows < metadata_rows;
        if !metadata_exact {
            profile.row_count = scanned.rows;
        }
        let scale = if profile.sampled && scanned.rows > 0 { complete_rows as f64 / scanned.rows as f64 } else { 1.0 };
        for (column, accumulator) in scans.into_iter().zip(scanned.columns) {
            let sorted = if column.statistics.iter().any(|statistic| statistic.quantile().is_some()) {
                sorted_sample(&accumulator)
            } else {
                Vec::new()
            };
            for statistic in column.statistics {
                match scan_value(&accumulator, &sorted, statistic, scale) {
                    Some(value) => profile.values.push(ColumnStatistic {
                        column: column.name.clone(),
                        statistic,
                        value,
                        source: ValueSource::Scan,
                    }),
                    None => profile.skipped.push(SkippedStatistic {
                        column: column.name.clone(),
                        statistic,
                        reason: "the batch has no non-null value".to_string(),
                        misconfigured: false,
                    }),
                }
            }
            if let Some(numbers) = accumulator.numbers {
                let values = numbers.into_first(DRIFT_SAMPLE);
                profile.samples.insert(column.name.clone(), ColumnSample::Numeric(values));
            } else if let Some(strings) = accumulator.strings {
                let values = strings.into_first(DRIFT_SAMPLE);
                profile.samples.insert(column.name.clone(), ColumnSample::Categorical(values));
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
