//! Iceberg plumbing shared by the demo and by tests that need real tables: opening the SQL
//! catalog, appending an Arrow batch as one snapshot, and rewriting a table's metadata JSON
//! (backdating, type widening). It must not decide what data to write: that is `simulate`'s job.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use iceberg::io::{FileIO, LocalFsStorageFactory};
use iceberg::spec::{DataFileFormat, TableMetadata};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, MetadataLocation, TableIdent};
use iceberg_catalog_sql::{
    SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlBindStyle, SqlCatalog,
    SqlCatalogBuilder,
};
use serde_json::Value;
use sqlx::sqlite::SqlitePoolOptions;

use super::DemoError;

/// Opens (creating if needed) the SQL catalog `name` at the sqlx URI `catalog_uri` (SQLite:
/// `sqlite:///abs/catalog.db?mode=rwc`, or a PostgreSQL `postgres://` database) with a
/// local-filesystem warehouse at `warehouse`. Table locations are written as `file://` URLs so
/// PyIceberg reads them as they are.
pub async fn open_sql_catalog(catalog_uri: &str, warehouse: &Path, name: &str) -> Result<SqlCatalog, DemoError> {
    let props = HashMap::from([
        (SQL_CATALOG_PROP_URI.to_string(), catalog_uri.to_string()),
        (SQL_CATALOG_PROP_WAREHOUSE.to_string(), format!("file://{}", warehouse.display())),
        (SQL_CATALOG_PROP_BIND_STYLE.to_string(), sql_bind_style(catalog_uri).to_string()),
    ]);
    SqlCatalogBuilder::default()
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load(name, props)
        .await
        .map_err(|source| DemoError::Catalog { uri: catalog_uri.to_string(), source: Box::new(source) })
}

/// PostgreSQL numbers its placeholders (`$1`); SQLite takes `?`.
fn sql_bind_style(catalog_uri: &str) -> SqlBindStyle {
    if catalog_uri.starts_with("postgres://") || catalog_uri.starts_with("postgresql://") {
        SqlBindStyle::DollarNumeric
    } else {
        SqlBindStyle::QMark
    }
}

/// Appends `batch` to the table `ident` as one `append` snapshot (ZSTD Parquet, one data file
/// per write with a unique name) and returns the table as committed.
///
/// The batch is matched to the table's current schema by column name: columns are reordered,
/// cast where Arrow can (an `Int64` column into an `int` field, a `UTC` timestamp into the
/// table's `+00:00` one), and missing optional columns are filled with nulls. A column the table
/// does not have is an error, so a typo cannot drop data silently.
pub async fn append_batch(catalog: &dyn Catalog, ident: &TableIdent, batch: RecordBatch) -> Result<Table, DemoError> {
    let table = super::load_table(catalog, ident).await?;
    append_batch_to(catalog, &table, batch).await
}

/// [`append_batch`] for a table already in hand (e.g. the one the previous append returned),
/// which saves reading its metadata once more. The commit still refreshes it from the catalog.
pub async fn append_batch_to(catalog: &dyn Catalog, table: &Table, batch: RecordBatch) -> Result<Table, DemoError> {
    let table_name = table.identifier().to_string();
    let iceberg_error = |operation: &'static str| {
        let table = table_name.clone();
        move |source| DemoError::Iceberg { operation, table, source: Box::new(source) }
    };
    let schema = table.metadata().current_schema().clone();
    let arrow_schema =
        Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).map_err(iceberg_error("convert the schema of"))?);
    let batch = conform_batch(&batch, arrow_schema, &table_name)?;

    let properties = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let parquet = ParquetWriterBuilder::new(properties, schema);
    let locations = DefaultLocationGenerator::new(table.metadata()).map_err(iceberg_error("locate the data of"))?;
    // A fresh prefix per write: the generator's counter restarts with every generator, and a
    // reused name would overwrite a committed data file.
    let names =
        DefaultFileNameGenerator::new(format!("icewatch-{}", uuid::Uuid::new_v4()), None, DataFileFormat::Parquet);
    let rolling =
        RollingFileWriterBuilder::new_with_default_file_size(parquet, table.file_io().clone(), locations, names);
    let mut writer =
        DataFileWriterBuilder::new(rolling).build(None).await.map_err(iceberg_error("open a writer for"))?;
    writer.write(batch).await.map_err(iceberg_error("write data to"))?;
    let data_files = writer.close().await.map_err(iceberg_error("close the writer of"))?;

    let transaction = Transaction::new(table);
    // The duplicate check reads every manifest of the table (a cost that grows with each
    // commit); the uuid-prefixed names above cannot collide with an existing file.
    let transaction = transaction
        .fast_append()
        .with_check_duplicate(false)
        .add_data_files(data_files)
        .apply(transaction)
        .map_err(iceberg_error("prepare an append to"))?;
    transaction.commit(catalog).await.map_err(iceberg_error("commit an append to"))
}

/// Reorders, casts and null-fills the columns of `batch` into `target` (see [`append_batch`]).
fn conform_batch(batch: &RecordBatch, target: SchemaRef, table: &str) -> Result<RecordBatch, DemoError> {
    let input = batch.schema();
    if let Some(extra) = input.fields().iter().find(|field| target.field_with_name(field.name()).is_err()) {
        return Err(DemoError::Batch {
            table: table.to_string(),
            reason: format!("the table has no column `{}`", extra.name()),
        });
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match input.index_of(field.name()) {
            Ok(index) => {
                let column = batch.column(index);
                if column.data_type() == field.data_type() {
                    Arc::clone(column)
                } else {
                    cast(column, field.data_type())
                        .map_err(|source| DemoError::Arrow { table: table.to_string(), source })?
                }
            }
            Err(_) if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
            Err(_) => {
                return Err(DemoError::Batch {
                    table: table.to_string(),
                    reason: format!("the required column `{}` is missing", field.name()),
                });
            }
        };
        columns.push(column);
    }
    RecordBatch::try_new(target, columns).map_err(|source| DemoError::Arrow { table: table.to_string(), source })
}

/// Rewrites the current metadata of table `ident` in the SQL catalog `catalog_name` stored in
/// the SQLite database `catalog_uri` (a sqlx URI), and returns the new metadata location.
///
/// The current metadata JSON is read, passed to `edit`, checked by parsing it as Iceberg table
/// metadata (so an edit that breaks the format fails here, before anything points at it),
/// written as the next `NNNNN-<uuid>.metadata.json` in the table's `metadata/` folder, and the
/// catalog row is switched to it with a compare-and-swap on `metadata_location` (like a commit).
///
/// This is how the demo backdates snapshots and widens a column type, which iceberg-rust's
/// transaction API cannot do. Only for tables on a local (or `file://`) warehouse, and only
/// for metadata this process wrote: it does not coordinate with other writers beyond the
/// compare-and-swap.
pub async fn rewrite_table_metadata(
    catalog_uri: &str,
    catalog_name: &str,
    ident: &TableIdent,
    edit: impl FnOnce(&mut Value) -> Result<(), DemoError>,
) -> Result<String, DemoError> {
    let table = ident.to_string();
    let namespace = ident.namespace().join(".");
    let database_error = |source| DemoError::CatalogDatabase { uri: catalog_uri.to_string(), source };
    let pool = SqlitePoolOptions::new().max_connections(1).connect(catalog_uri).await.map_err(database_error)?;
    let current: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
    )
    .bind(catalog_name)
    .bind(&namespace)
    .bind(ident.name())
    .fetch_optional(&pool)
    .await
    .map_err(database_error)?;
    let Some((Some(current),)) = current else {
        pool.close().await;
        return Err(DemoError::Metadata { table, reason: "the catalog has no metadata location for it".to_string() });
    };

    let result = async {
        let iceberg_error = |operation: &'static str| {
            let table = table.clone();
            move |source| DemoError::Iceberg { operation, table, source: Box::new(source) }
        };
        let file_io = FileIO::new_with_fs();
        let metadata =
            TableMetadata::read_from(&file_io, &current).await.map_err(iceberg_error("read the metadata of"))?;
        let mut json = serde_json::to_value(&metadata)
            .map_err(|source| DemoError::MetadataJson { table: table.clone(), source })?;
        edit(&mut json)?;
        let edited: TableMetadata =
            serde_json::from_value(json).map_err(|source| DemoError::MetadataJson { table: table.clone(), source })?;
        let location = MetadataLocation::from_str(&current)
            .map_err(iceberg_error("parse the metadata location of"))?
            .with_next_version()
            .with_new_metadata(&edited);
        edited.write_to(&file_io, &location).await.map_err(iceberg_error("write the metadata of"))?;
        let location = location.to_string();
        let updated = sqlx::query(
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location = ?",
        )
        .bind(&location)
        .bind(&current)
        .bind(catalog_name)
        .bind(&namespace)
        .bind(ident.name())
        .bind(&current)
        .execute(&pool)
        .await
        .map_err(database_error)?;
        if updated.rows_affected() != 1 {
            return Err(DemoError::ConcurrentCommit { table: table.clone() });
        }
        Ok(location)
    }
    .await;
    pool.close().await;
    result
}

/// Re-times the snapshots of a metadata JSON: the snapshots, oldest first by sequence number,
/// get `times_ms` in order; the snapshot log is rebuilt from them, the metadata log is cleared
/// (its entries point at files stamped with the real clock) and `last-updated-ms` becomes the
/// last time. `times_ms` must be strictly increasing and as many as the snapshots.
pub fn retime_snapshots(metadata: &mut Value, times_ms: &[i64]) -> Result<(), DemoError> {
    let invalid = |reason: String| DemoError::Metadata { table: table_location(metadata), reason };
    let snapshots = metadata.get("snapshots").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut order: Vec<(i64, i64)> = Vec::with_capacity(snapshots.len());
    for snapshot in &snapshots {
        let id = snapshot.get("snapshot-id").and_then(Value::as_i64);
        let sequence = snapshot.get("sequence-number").and_then(Value::as_i64).unwrap_or(0);
        match id {
            Some(id) => order.push((sequence, id)),
            None => return Err(invalid("a snapshot has no `snapshot-id`".to_string())),
        }
    }
    // v1 tables have no sequence numbers: fall back to the current timestamps, then ids.
    order.sort_by_key(|&(sequence, id)| {
        let timestamp = snapshots
            .iter()
            .find(|snapshot| snapshot.get("snapshot-id").and_then(Value::as_i64) == Some(id))
            .and_then(|snapshot| snapshot.get("timestamp-ms").and_then(Value::as_i64))
            .unwrap_or(0);
        (sequence, timestamp, id)
    });
    let ids: Vec<i64> = order.iter().map(|&(_, id)| id).collect();
    let plan = super::simulate::retime_plan(&ids, times_ms).ok_or_else(|| {
        invalid(format!(
            "{} snapshots cannot take {} times (they must match and strictly increase)",
            ids.len(),
            times_ms.len()
        ))
    })?;
    let time_of: HashMap<i64, i64> = plan.iter().copied().collect();
    if let Some(snapshots) = metadata.get_mut("snapshots").and_then(Value::as_array_mut) {
        for snapshot in snapshots {
            if let Some(time) = snapshot.get("snapshot-id").and_then(Value::as_i64).and_then(|id| time_of.get(&id)) {
                snapshot["timestamp-ms"] = Value::from(*time);
            }
        }
    }
    metadata["snapshot-log"] = Value::Array(
        plan.iter().map(|&(id, time)| serde_json::json!({ "snapshot-id": id, "timestamp-ms": time })).collect(),
    );
    metadata["metadata-log"] = Value::Array(Vec::new());
    if let Some(&(_, last)) = plan.last() {
        metadata["last-updated-ms"] = Value::from(last);
    }
    Ok(())
}

/// Widens the primitive type of the top-level column `column` (e.g. `int` → `long`) in a
/// metadata JSON: adds a copy of the current schema with the same field ids and the new type
/// under the next schema id, and makes it current. Older data files keep their type; readers
/// promote it. Only int → long and float → double are accepted.
pub fn widen_column(metadata: &mut Value, column: &str, new_type: &str) -> Result<(), DemoError> {
    let invalid = |reason: String| DemoError::Metadata { table: table_location(metadata), reason };
    let current_id = metadata
        .get("current-schema-id")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("no `current-schema-id`".to_string()))?;
    let schemas = metadata.get("schemas").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut schema = schemas
        .iter()
        .find(|schema| schema.get("schema-id").and_then(Value::as_i64) == Some(current_id))
        .cloned()
        .ok_or_else(|| invalid(format!("schema {current_id} is missing")))?;
    let next_id =
        schemas.iter().filter_map(|schema| schema.get("schema-id").and_then(Value::as_i64)).max().unwrap_or(0) + 1;
    let field = schema
        .get_mut("fields")
        .and_then(Value::as_array_mut)
        .and_then(|fields| fields.iter_mut().find(|field| field.get("name").and_then(Value::as_str) == Some(column)))
        .ok_or_else(|| invalid(format!("the current schema has no column `{column}`")))?;
    let old_type = field.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    if !matches!((old_type.as_str(), new_type), ("int", "long") | ("float", "double")) {
        return Err(DemoError::Metadata {
            table: table_location(metadata),
            reason: format!("`{column}` cannot be widened from `{old_type}` to `{new_type}`"),
        });
    }
    field["type"] = Value::from(new_type);
    schema["schema-id"] = Value::from(next_id);
    if let Some(schemas) = metadata.get_mut("schemas").and_then(Value::as_array_mut) {
        schemas.push(schema);
    }
    metadata["current-schema-id"] = Value::from(next_id);
    Ok(())
}

fn table_location(metadata: &Value) -> String {
    metadata.get("location").and_then(Value::as_str).unwrap_or("<unknown table>").to_string()
}
