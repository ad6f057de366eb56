//! Planning one batch's profile before any data is read: which statistics manifest metadata
//! answers exactly, which need a scan of which columns, how large the samples are and how many
//! rows to read at most. A pure function of the snapshot's schema, the configuration and the
//! batch's file metadata: no IO, no table, so every planning rule is unit-tested here.

use iceberg::spec::{PrimitiveType, Schema, Type};

use super::accumulate::{ValueKind, Wanted};
use super::metadata::{self, Batch, Field};
use super::{ColumnStatistic, SkippedStatistic, ValueSource};
use crate::config::{DistributionConfig, Statistic};
use crate::sensors::SensorError;

/// Values kept per numeric column for quantiles (exact up to this many values).
pub const QUANTILE_SAMPLE: usize = 100_000;
/// Values kept per column and batch for drift tests.
pub const DRIFT_SAMPLE: usize = 10_000;
/// Rows read at most from each reference batch of a drift test.
pub const REFERENCE_ROW_CAP: u64 = 200_000;

/// What a batch is profiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// The configured statistics (and the drift sample) of a batch being judged.
    Statistics,
    /// The drift reference of another batch: samples only, at most [`REFERENCE_ROW_CAP`] rows.
    Reference,
}

/// A configured column, by the field id it has in the table's current schema (a rename keeps
/// the id, so older snapshots resolve it by id).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ConfiguredColumn {
    pub name: String,
    pub field_id: i32,
    pub statistics: Vec<Statistic>,
}

/// The configured columns as the table's current schema has them; a column it lacks is
/// [`SensorError::ColumnNotFound`].
pub(super) fn configured_columns(
    current_schema: &Schema,
    table_name: &str,
    config: &DistributionConfig,
) -> Result<Vec<ConfiguredColumn>, SensorError> {
    let mut columns = Vec::new();
    for (name, statistics) in &config.columns {
        let field = current_schema
            .field_by_name(name)
            .ok_or_else(|| SensorError::ColumnNotFound { table: table_name.to_string(), column: name.clone() })?;
        columns.push(ConfiguredColumn { name: name.clone(), field_id: field.id, statistics: statistics.clone() });
    }
    Ok(columns)
}

/// One column to read and what to compute from it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ColumnScan {
    pub name: String,
    pub field_id: i32,
    pub kind: ValueKind,
    /// The statistics the scan must produce (metadata did not answer them); may be empty when
    /// the column is read for its drift sample or for the row count.
    pub statistics: Vec<Statistic>,
    pub wanted: Wanted,
}

/// How one batch is profiled.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BatchPlan {
    /// Statistics manifest metadata answers, with their values.
    pub from_metadata: Vec<ColumnStatistic>,
    /// Configured statistics that get no value for this batch, and why.
    pub skipped: Vec<SkippedStatistic>,
    /// Columns to read, in configured order; empty when metadata answered everything.
    pub scans: Vec<ColumnScan>,
    /// Rows to read at most (`None`: all of them).
    pub row_cap: Option<u64>,
    /// Whether the manifests' counts are the batch's (no delete file applies); when not, the
    /// row count comes from the scan.
    pub metadata_exact: bool,
    /// Rows the manifests record for the batch.
    pub metadata_rows: u64,
}

/// Plans the profile of one batch. `schema` is the snapshot's (a column added later is
/// skipped, not an error), `columns` come from [`configured_columns`], `batch` holds the
/// files' manifest entries.
///
/// The rules: a statistic that does not apply to the column's type is skipped as a
/// configuration mistake; with no delete file, row and null counts, NaN percentages and
/// numeric min/max come from metadata when every file records them; everything else is
/// scanned, quantiles with a [`QUANTILE_SAMPLE`]-value sample, `distinct_count` with a
/// sketch; with drift tests on, every numeric or string column keeps a [`DRIFT_SAMPLE`]
/// sample; with deletes, each column is read so the rows that remain are counted.
pub(super) fn plan_batch(
    schema: &Schema,
    columns: &[ConfiguredColumn],
    config: &DistributionConfig,
    batch: &Batch,
    purpose: Purpose,
) -> BatchPlan {
    let statistics = purpose == Purpose::Statistics;
    let metadata_rows: u64 = batch.files.iter().map(|file| file.record_count()).sum();
    let metadata_exact = !batch.has_deletes;
    let drift_enabled = config.drift.reference_batches > 0 || config.drift.reference_snapshot.is_some();
    let mut plan = BatchPlan {
        from_metadata: Vec::new(),
        skipped: Vec::new(),
        scans: Vec::new(),
        row_cap: row_cap(purpose, config.sample, metadata_rows),
        metadata_exact,
        metadata_rows,
    };
    for configured in columns {
        let Some(field) = schema.field_by_id(configured.field_id) else {
            if statistics {
                for &statistic in &configured.statistics {
                    plan.skipped.push(SkippedStatistic {
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
            Type::Primitive(primitive) => Some(primitive),
            _ => None,
        };
        let kind = value_kind(primitive);
        let column = Field { id: configured.field_id, kind, primitive };
        let mut scanned = Vec::new();
        let mut wanted = Wanted::default();
        if statistics {
            for &statistic in &configured.statistics {
                if let Some(reason) = not_applicable(kind, statistic) {
                    plan.skipped.push(SkippedStatistic {
                        column: configured.name.clone(),
                        statistic,
                        reason,
                        misconfigured: true,
                    });
                    continue;
                }
                let from_metadata = metadata_exact
                    .then(|| metadata::metadata_value(&column, statistic, &batch.files, metadata_rows))
                    .flatten();
                match from_metadata {
                    Some(value) => plan.from_metadata.push(ColumnStatistic {
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
        if !scanned.is_empty() || wanted.sample > 0 || (!metadata_exact && statistics) {
            plan.scans.push(ColumnScan {
                name: configured.name.clone(),
                field_id: configured.field_id,
                kind,
                statistics: scanned,
                wanted,
            });
        }
    }
    plan
}

/// Rows to read at most: for statistics, a `sample` fraction of the batch's rows or a `sample`
/// row count; for a reference, that count but never more than [`REFERENCE_ROW_CAP`].
fn row_cap(purpose: Purpose, sample: Option<f64>, metadata_rows: u64) -> Option<u64> {
    let count = sample.filter(|sample| *sample > 1.0).map(|sample| sample as u64);
    match (purpose, sample) {
        (Purpose::Statistics, Some(fraction)) if fraction <= 1.0 => {
            Some(((metadata_rows as f64) * fraction).ceil() as u64)
        }
        (Purpose::Statistics, _) => count,
        (Purpose::Reference, _) => Some(count.map_or(REFERENCE_ROW_CAP, |cap| cap.min(REFERENCE_ROW_CAP))),
    }
}

/// What the values of a column of this type are: integers, floats, decimals, dates, times,
/// timestamps and booleans are read as numbers.
fn value_kind(primitive: Option<&PrimitiveType>) -> ValueKind {
    match primitive {
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
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_that_do_not_apply_are_named() {
        assert!(not_applicable(ValueKind::Text, Statistic::Mean).unwrap().contains("string column"));
        assert!(not_applicable(ValueKind::Numeric, Statistic::EmptyPercent).is_some());
        assert!(not_applicable(ValueKind::Text, Statistic::DistinctCount).is_none());
        assert!(not_applicable(ValueKind::Other, Statistic::NullPercent).is_none());
    }
}
