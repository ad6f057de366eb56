//! A batch's manifest entries and the statistics they answer exactly: row and null counts, NaN
//! counts, numeric bounds. Reads manifests, never a data file; deciding when their answer is
//! used is the plan's.

use std::collections::HashMap;

use iceberg::spec::{
    DataContentType, DataFile, Datum, ManifestContentType, ManifestStatus, PrimitiveLiteral, PrimitiveType, SnapshotRef,
};
use iceberg::table::Table;

use super::accumulate::ValueKind;
use crate::config::{Scope, Statistic};
use crate::sensors::SensorError;

/// A column as one snapshot's schema types it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Field<'a> {
    pub id: i32,
    pub kind: ValueKind,
    /// `None` for a nested type.
    pub primitive: Option<&'a PrimitiveType>,
}

/// The data files of a batch and whether delete files apply to them.
pub(super) struct Batch {
    pub files: Vec<DataFile>,
    pub has_deletes: bool,
}

/// The data files of `snapshot`'s batch: with `scope = "added"` the files it added (from the
/// manifests it wrote), with `scope = "table"` every live data file.
pub(super) async fn batch_files(
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

/// The value of `statistic` from manifest column statistics, when they are present for every
/// file of the batch and exact (numeric bounds are; string bounds may be truncated).
pub(super) fn metadata_value(column: &Field<'_>, statistic: Statistic, files: &[DataFile], rows: u64) -> Option<f64> {
    let field_id = column.id;
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
            let primitive = column.primitive?;
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
