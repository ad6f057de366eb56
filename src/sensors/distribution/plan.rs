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
    use std::collections::HashMap;

    use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, NestedField};

    use super::*;
    use crate::config::Statistic::*;
    use crate::sensors::distribution::synthetic;

    /// `amount` double, `label` string, `payload` binary, `quantity` long; `region` (field 5) was
    /// added after this snapshot.
    fn schema() -> Schema {
        let fields = [
            NestedField::optional(1, "amount", Type::Primitive(PrimitiveType::Double)),
            NestedField::optional(2, "label", Type::Primitive(PrimitiveType::String)),
            NestedField::optional(3, "payload", Type::Primitive(PrimitiveType::Binary)),
            NestedField::optional(4, "quantity", Type::Primitive(PrimitiveType::Long)),
        ];
        Schema::builder().with_fields(fields.into_iter().map(Into::into)).build().unwrap()
    }

    fn column(name: &str, field_id: i32, statistics: &[Statistic]) -> ConfiguredColumn {
        ConfiguredColumn { name: name.to_string(), field_id, statistics: statistics.to_vec() }
    }

    /// A data file of `rows` rows whose `amount` has `nulls` nulls, `nans` NaNs and the bounds given.
    fn file(rows: u64, nulls: u64, nans: u64, bounds: Option<(f64, f64)>) -> DataFile {
        let mut builder = DataFileBuilder::default();
        builder
            .content(DataContentType::Data)
            .file_path(format!("file-{rows}-{nulls}-{nans}.parquet"))
            .file_format(DataFileFormat::Parquet)
            .file_size_in_bytes(1024)
            .record_count(rows)
            .null_value_counts(HashMap::from([(1, nulls), (2, 0), (3, 0), (4, 0)]))
            .nan_value_counts(HashMap::from([(1, nans)]));
        if let Some((lower, upper)) = bounds {
            builder
                .lower_bounds(HashMap::from([(1, Datum::double(lower))]))
                .upper_bounds(HashMap::from([(1, Datum::double(upper))]));
        }
        builder.build().unwrap()
    }

    /// The plan of a batch of `files` for statistics, against [`schema`].
    fn plan_for(
        columns: &[ConfiguredColumn],
        config: &DistributionConfig,
        files: Vec<DataFile>,
        deletes: bool,
    ) -> BatchPlan {
        plan_batch(&schema(), columns, config, &Batch { files, has_deletes: deletes }, Purpose::Statistics)
    }

    /// The test config with drift tests off (no reference batches) and `sample` as given.
    fn config(sample: Option<f64>) -> DistributionConfig {
        let mut config = synthetic::config();
        config.drift.reference_batches = 0;
        config.sample = sample;
        config
    }

    fn metadata(column: &str, statistic: Statistic, value: f64) -> ColumnStatistic {
        ColumnStatistic { column: column.to_string(), statistic, value, source: ValueSource::Metadata }
    }

    fn scan(name: &str, field_id: i32, kind: ValueKind, statistics: &[Statistic], wanted: Wanted) -> ColumnScan {
        ColumnScan { name: name.to_string(), field_id, kind, statistics: statistics.to_vec(), wanted }
    }

    #[test]
    fn exact_metadata_answers_counts_and_numeric_bounds_the_rest_is_scanned() {
        let columns = [column("amount", 1, &[RowCount, NullCount, NullPercent, NanPercent, Min, Max, Mean, P50])];
        let files = vec![file(20, 2, 1, Some((-1.5, 8.0))), file(10, 1, 0, Some((0.5, 9.5)))];
        let plan = plan_for(&columns, &config(None), files, false);
        assert_eq!(
            plan.from_metadata,
            [
                metadata("amount", RowCount, 30.0),
                metadata("amount", NullCount, 3.0),
                metadata("amount", NullPercent, 10.0),
                metadata("amount", NanPercent, 100.0 / 30.0),
                metadata("amount", Min, -1.5),
                metadata("amount", Max, 9.5),
            ]
        );
        let wanted = Wanted { distinct: false, sample: QUANTILE_SAMPLE };
        assert_eq!(plan.scans, [scan("amount", 1, ValueKind::Numeric, &[Mean, P50], wanted)]);
        assert_eq!((plan.skipped.len(), plan.row_cap, plan.metadata_exact, plan.metadata_rows), (0, None, true, 30));
    }

    #[test]
    fn with_deletes_nothing_comes_from_metadata_and_every_column_is_read() {
        let columns = [column("amount", 1, &[RowCount, Min]), column("payload", 3, &[NullCount])];
        let files = vec![file(20, 2, 0, Some((1.0, 2.0)))];
        let plan = plan_for(&columns, &config(None), files, true);
        assert!(plan.from_metadata.is_empty() && !plan.metadata_exact, "{plan:?}");
        assert_eq!(
            plan.scans,
            [
                scan("amount", 1, ValueKind::Numeric, &[RowCount, Min], Wanted::default()),
                scan("payload", 3, ValueKind::Other, &[NullCount], Wanted::default()),
            ]
        );
    }

    #[test]
    fn missing_bounds_send_min_and_max_to_the_scan_but_a_file_without_numbers_needs_none() {
        let columns = [column("amount", 1, &[Min, Max])];
        // A file of nulls and NaNs has no bounds and needs none.
        let without_numbers = file(5, 3, 2, None);
        let plan = plan_for(&columns, &config(None), vec![file(10, 0, 0, Some((1.0, 2.0))), without_numbers], false);
        assert_eq!(plan.from_metadata, [metadata("amount", Min, 1.0), metadata("amount", Max, 2.0)]);
        assert!(plan.scans.is_empty(), "{plan:?}");
        // A file with numbers but no bounds (a writer that keeps none) sends both to the scan.
        let files = vec![file(10, 0, 0, Some((1.0, 2.0))), file(10, 0, 0, None)];
        let plan = plan_for(&columns, &config(None), files, false);
        assert!(plan.from_metadata.is_empty(), "{plan:?}");
        assert_eq!(plan.scans, [scan("amount", 1, ValueKind::Numeric, &[Min, Max], Wanted::default())]);
    }

    #[test]
    fn strings_integers_and_other_types_get_their_own_rules() {
        let columns = [
            column("label", 2, &[RowCount, Mean, EmptyPercent, DistinctCount]),
            column("payload", 3, &[NullPercent, MinLength]),
            column("quantity", 4, &[NanPercent, ZeroPercent]),
        ];
        let files = vec![file(10, 0, 0, None)];
        let plan = plan_for(&columns, &config(None), files, false);
        // An integer has no NaN: 0 % without a NaN count.
        assert_eq!(
            plan.from_metadata,
            [
                metadata("label", RowCount, 10.0),
                metadata("payload", NullPercent, 0.0),
                metadata("quantity", NanPercent, 0.0)
            ]
        );
        let misconfigured: Vec<(&str, Statistic)> = plan
            .skipped
            .iter()
            .filter(|skipped| skipped.misconfigured)
            .map(|skipped| (skipped.column.as_str(), skipped.statistic))
            .collect();
        assert_eq!(misconfigured, [("label", Mean), ("payload", MinLength)]);
        assert_eq!(
            plan.scans,
            [
                scan("label", 2, ValueKind::Text, &[EmptyPercent, DistinctCount], Wanted { distinct: true, sample: 0 }),
                scan("quantity", 4, ValueKind::Numeric, &[ZeroPercent], Wanted::default()),
            ]
        );
    }

    #[test]
    fn a_column_added_later_is_skipped_and_drift_samples_numbers_and_strings() {
        let columns = [
            column("amount", 1, &[RowCount]),
            column("label", 2, &[NullCount]),
            column("payload", 3, &[NullCount]),
            column("region", 5, &[RowCount, NullCount]),
        ];
        let drift = synthetic::config();
        let files = vec![file(10, 0, 0, None)];
        let plan = plan_for(&columns, &drift, files, false);
        let added_later: Vec<_> = plan.skipped.iter().filter(|skipped| skipped.column == "region").collect();
        assert_eq!(added_later.len(), 2);
        assert!(added_later.iter().all(|skipped| !skipped.misconfigured && skipped.reason.contains("did not exist")));
        // Metadata answered every statistic; only the drift samples need a scan, not `payload`.
        assert_eq!(plan.from_metadata.len(), 3);
        let sample = Wanted { distinct: false, sample: DRIFT_SAMPLE };
        assert_eq!(
            plan.scans,
            [scan("amount", 1, ValueKind::Numeric, &[], sample), scan("label", 2, ValueKind::Text, &[], sample)]
        );
        // Without drift tests, nothing is read at all.
        let plan = plan_for(&columns, &config(None), vec![file(10, 0, 0, None)], false);
        assert!(plan.scans.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_reference_plans_drift_samples_only() {
        let columns = [column("amount", 1, &[Mean, P50]), column("region", 5, &[Mean])];
        let plan = plan_batch(
            &schema(),
            &columns,
            &synthetic::config(),
            &Batch { files: vec![file(10, 0, 0, None)], has_deletes: true },
            Purpose::Reference,
        );
        assert!(plan.from_metadata.is_empty() && plan.skipped.is_empty(), "{plan:?}");
        let sample = Wanted { distinct: false, sample: DRIFT_SAMPLE };
        assert_eq!(plan.scans, [scan("amount", 1, ValueKind::Numeric, &[], sample)]);
        assert_eq!(plan.row_cap, Some(REFERENCE_ROW_CAP));
    }

    #[test]
    fn row_caps_follow_the_sample_setting() {
        let rows = 30;
        assert_eq!(row_cap(Purpose::Statistics, None, rows), None);
        // A fraction of the batch, rounded up; a count above 1 is a cap.
        assert_eq!(row_cap(Purpose::Statistics, Some(0.25), rows), Some(8));
        assert_eq!(row_cap(Purpose::Statistics, Some(1.0), rows), Some(30));
        assert_eq!(row_cap(Purpose::Statistics, Some(5_000.0), rows), Some(5_000));
        // A reference reads its own cap at most, or the configured count when smaller.
        assert_eq!(row_cap(Purpose::Reference, None, rows), Some(REFERENCE_ROW_CAP));
        assert_eq!(row_cap(Purpose::Reference, Some(0.25), rows), Some(REFERENCE_ROW_CAP));
        assert_eq!(row_cap(Purpose::Reference, Some(5_000.0), rows), Some(5_000));
        assert_eq!(row_cap(Purpose::Reference, Some(1e9), rows), Some(REFERENCE_ROW_CAP));
    }

    #[test]
    fn configured_columns_resolve_by_name_and_an_unknown_one_is_an_error() {
        let mut config = config(None);
        config.columns = vec![("quantity".to_string(), vec![Statistic::Mean])];
        let columns = configured_columns(&schema(), "db.t", &config).unwrap();
        assert_eq!(columns, [column("quantity", 4, &[Statistic::Mean])]);
        config.columns.push(("region".to_string(), vec![Statistic::Mean]));
        let error = configured_columns(&schema(), "db.t", &config).unwrap_err();
        assert!(
            matches!(&error, SensorError::ColumnNotFound { table, column } if table == "db.t" && column == "region"),
            "{error:?}"
        );
    }

    #[test]
    fn statistics_that_do_not_apply_are_named() {
        assert!(not_applicable(ValueKind::Text, Statistic::Mean).unwrap().contains("string column"));
        assert!(not_applicable(ValueKind::Numeric, Statistic::EmptyPercent).is_some());
        assert!(not_applicable(ValueKind::Text, Statistic::DistinctCount).is_none());
        assert!(not_applicable(ValueKind::Other, Statistic::NullPercent).is_none());
    }
}
