//! Reading a batch's Parquet files into column accumulators: scan tasks from the batch's
//! manifest entries (or Iceberg's planner when deletes apply), files dealt to one worker per
//! core, columns split across workers when there are fewer files than cores, reading stopped at
//! the row cap. Then the value of each statistic from an accumulator. What to read, and how
//! much, is the plan's to decide.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use iceberg::scan::FileScanTask;
use iceberg::spec::{Schema, SnapshotRef};
use iceberg::table::Table;

use super::accumulate::{ColumnAccumulator, ValueKind, Wanted};
use super::metadata::Batch;
use super::sketch;
use crate::config::{Scope, Statistic};
use crate::sensors::SensorError;
use crate::stats;

/// Rows per Arrow batch when reading Parquet (the reader's default is 1 024).
const READ_BATCH_ROWS: usize = 8192;

/// The scan tasks of a batch: built from its manifest entries for `added` (no delete file
/// applies to the files an append added), planned by Iceberg (deletes attached) for `table`.
pub(super) async fn scan_tasks(
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

/// What a scan read: one accumulator per requested column, and the files, rows and bytes.
pub(super) struct Scanned {
    pub columns: Vec<ColumnAccumulator>,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// Reads `tasks` on up to one worker per core, each profiling its share into its own
/// accumulators, then merges them. Files are dealt to workers; when there are fewer files than
/// cores (a typical append), each worker reads all files but only its share of the columns.
/// With `row_cap`, files are visited in a seeded random order and reading stops once that
/// many rows were read.
pub(super) async fn scan(
    table: &Table,
    table_name: &str,
    mut tasks: Vec<FileScanTask>,
    field_ids: &[i32],
    kinds: &[(ValueKind, Wanted)],
    row_cap: Option<u64>,
    seed: i64,
) -> Result<Scanned, SensorError> {
    let seed = sketch::mix64(seed as u64);
    if row_cap.is_some() {
        tasks.sort_by_key(|task| sketch::hash_bytes(task.data_file_path.as_bytes()) ^ seed);
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
    let paths: Vec<String> = tasks.iter().map(|task| task.data_file_path.clone()).collect();
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
            let worker_seed = sketch::mix64(seed ^ group_index as u64);
            handles.push((
                columns,
                AbortOnDrop(tokio::spawn(async move {
                    read_group(reader, job_tasks, &ids, &job_kinds, per_group_cap, worker_seed).await
                })),
            ));
        }
    }
    let mut slots: Vec<Option<ColumnAccumulator>> = (0..field_ids.len()).map(|_| None).collect();
    let (mut files, mut rows, mut bytes) = (0usize, 0u64, 0u64);
    for (job, (columns, mut handle)) in handles.into_iter().enumerate() {
        let part = match (&mut handle.0).await.map_err(|error| scan_error(table_name, error))? {
            Ok(part) => part,
            Err(error) => return Err(read_failure(table, table_name, &paths, error).await),
        };
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
pub enum ReadError {
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
        .map(|(index, (kind, wanted))| ColumnAccumulator::new(*kind, *wanted, sketch::mix64(seed ^ index as u64)))
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

/// A spawned scan task that is aborted when dropped: a sensor run that times out (or fails on
/// another task) stops its reads instead of leaving them running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A data file the table's manifests list but storage does not have (the reader's error says
/// only "Failed to load Parquet metadata"; this one is what to act on).
#[derive(Debug, thiserror::Error)]
#[error("data file `{path}` is missing from storage")]
pub struct MissingDataFile {
    pub path: String,
}

/// The error of a failed read, naming the data file when one of the batch's files is missing
/// (the reader's own error names none).
async fn read_failure(table: &Table, table_name: &str, paths: &[String], error: ReadError) -> SensorError {
    for path in paths {
        if let Ok(false) = table.file_io().exists(path).await {
            tracing::debug!(path, error = %crate::errors::error_chain(&error), "read failed on a missing data file");
            return scan_error(table_name, MissingDataFile { path: path.clone() });
        }
    }
    scan_error(table_name, error)
}

fn scan_error(table_name: &str, error: impl std::error::Error + Send + Sync + 'static) -> SensorError {
    SensorError::Scan { table: table_name.to_string(), source: Box::new(error) }
}

/// The sorted quantile sample of a column (empty when none was kept).
pub(super) fn sorted_sample(accumulator: &ColumnAccumulator) -> Vec<f64> {
    let mut sorted: Vec<f64> =
        accumulator.numbers.as_ref().map(|sample| sample.values().copied().collect()).unwrap_or_default();
    sorted.sort_unstable_by(f64::total_cmp);
    sorted
}

pub(super) fn scan_value(
    accumulator: &ColumnAccumulator,
    sorted: &[f64],
    statistic: Statistic,
    scale: f64,
) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::AbortOnDrop;

    /// A run that times out drops its scan; the spawned reads must stop with it.
    #[tokio::test]
    async fn dropping_a_scan_task_aborts_it() {
        let held = Arc::new(());
        let in_task = held.clone();
        let task = AbortOnDrop(tokio::spawn(async move {
            let _held = in_task;
            std::future::pending::<()>().await;
        }));
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&held), 2, "the task holds its clone while it runs");
        drop(task);
        for _ in 0..100 {
            if Arc::strong_count(&held) == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the task still runs after its handle was dropped");
    }
}
