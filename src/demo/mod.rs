//! `icewatch demo`: writes a local warehouse (SQL catalog on SQLite + a folder) with a
//! bronze → silver → gold trade pipeline, several days of backdated history with a few past
//! problems in it, a `sensors.toml` that watches it, and a live writer that keeps committing
//! and now and then injects an anomaly. It writes tables only through the iceberg crate (plus
//! the metadata rewrite in [`rewrite_table_metadata`]); it must not observe or score anything:
//! that is the sensors' job.
//!
//! Everything is deterministic for a seed except the wall clock: the history ends a few
//! minutes before `prepare` runs.

mod config;
pub mod simulate;
mod tables;

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use tracing::{info, warn};

use simulate::{
    BASE_ROWS_PER_COMMIT, BRONZE_INTERVAL_MS, BatchShape, DROP_ROW_FACTOR, DailySummary, GOLD_EVERY_BRONZE, HOUR_US,
    MINUTE_MS, Market, NORMAL_NULL_RATE, Rng, SILVER_EVERY_BRONZE, SPIKE_NULL_RATE, SPIKE_ROW_FACTOR, Trade,
};
pub use tables::{
    append_batch, append_batch_to, open_sql_catalog, retime_snapshots, rewrite_table_metadata, widen_column,
};

/// The catalog name the demo registers its tables under (PyIceberg's default).
pub const CATALOG_NAME: &str = "default";
/// The bronze table: raw trades as they arrive.
pub const BRONZE_TABLE: &str = "bronze.raw_trades";
/// The silver table: deduplicated trades with a price.
pub const SILVER_TABLE: &str = "silver.cleaned_trades";
/// The gold table: per-symbol daily aggregates.
pub const GOLD_TABLE: &str = "gold.trade_summary_daily";

/// How far before `prepare`'s clock the last backdated bronze commit lands (silver follows 3
/// minutes later, gold 6).
const HISTORY_LAG_MS: i64 = 10 * MINUTE_MS;
const SILVER_DELAY_MS: i64 = 3 * MINUTE_MS;
const GOLD_DELAY_MS: i64 = 6 * MINUTE_MS;
/// The live writer commits gold every this many ticks.
const LIVE_GOLD_EVERY_TICKS: u64 = 6;
/// The live writer gives up after this many failed ticks in a row.
const LIVE_MAX_CONSECUTIVE_FAILURES: u32 = 5;

/// Errors of the demo: preparing the warehouse, writing tables, rewriting metadata.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid demo options: {reason}")]
    InvalidOptions { reason: String },
    #[error("failed to access `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the SQL catalog at `{uri}`")]
    Catalog {
        uri: String,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error("failed to {operation} `{table}`")]
    Iceberg {
        operation: &'static str,
        table: String,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error("failed to build a record batch for `{table}`")]
    Arrow {
        table: String,
        #[source]
        source: ArrowError,
    },
    #[error("cannot append to `{table}`: {reason}")]
    Batch { table: String, reason: String },
    #[error("failed to use the catalog database `{uri}`")]
    CatalogDatabase {
        uri: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid metadata for `{table}`: {reason}")]
    Metadata { table: String, reason: String },
    #[error("invalid metadata JSON for `{table}`")]
    MetadataJson {
        table: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("table `{table}` changed while its metadata was being rewritten")]
    ConcurrentCommit { table: String },
}

/// What `prepare` builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// The demo's folder (created if missing).
    pub dir: PathBuf,
    /// Days of backdated history (2 to 60; 5 by default).
    pub days: u32,
    /// Seed of the simulated market: the same seed gives the same rows.
    pub seed: u64,
}

impl DemoOptions {
    pub const DEFAULT_DAYS: u32 = 5;
    pub const DEFAULT_SEED: u64 = 42;

    pub fn new(dir: impl Into<PathBuf>) -> DemoOptions {
        DemoOptions { dir: dir.into(), days: Self::DEFAULT_DAYS, seed: Self::DEFAULT_SEED }
    }
}

/// A prepared demo warehouse: where everything is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoWarehouse {
    /// The demo's folder (absolute).
    pub dir: PathBuf,
    /// `<dir>/sensors.toml`, watching the demo tables.
    pub config_path: PathBuf,
    /// sqlx URI of the catalog database: `sqlite://<dir>/catalog.db?mode=rwc`.
    pub catalog_uri: String,
    /// `<dir>/warehouse`, the tables' data and metadata.
    pub warehouse: PathBuf,
}

impl DemoWarehouse {
    fn at(dir: PathBuf) -> DemoWarehouse {
        DemoWarehouse {
            config_path: dir.join("sensors.toml"),
            catalog_uri: format!("sqlite://{}?mode=rwc", dir.join("catalog.db").display()),
            warehouse: dir.join("warehouse"),
            dir,
        }
    }

    /// Opens the demo's catalog.
    pub async fn catalog(&self) -> Result<iceberg_catalog_sql::SqlCatalog, DemoError> {
        open_sql_catalog(&self.catalog_uri, &self.warehouse, CATALOG_NAME).await
    }
}

/// The demo's table identifier for `bronze.raw_trades` style names.
pub fn table_ident(name: &str) -> TableIdent {
    let (namespace, table) = name.split_once('.').unwrap_or(("default", name));
    TableIdent::new(NamespaceIdent::new(namespace.to_string()), table.to_string())
}

/// (Re)creates the demo in `options.dir`: removes only the demo's own files (`catalog.db*`,
/// `warehouse/`, `sensors.toml`, `icewatch-history.db*`), creates the three tables, writes
/// `options.days` days of backdated history and `sensors.toml`.
pub async fn prepare(options: &DemoOptions) -> Result<DemoWarehouse, DemoError> {
    if !(2..=60).contains(&options.days) {
        return Err(DemoError::InvalidOptions { reason: format!("`days` must be 2 to 60, not {}", options.days) });
    }
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Io { path, source }
    };
    std::fs::create_dir_all(&options.dir).map_err(io_error(&options.dir))?;
    let dir = std::fs::canonicalize(&options.dir).map_err(io_error(&options.dir))?;
    remove_demo_files(&dir)?;
    let demo = DemoWarehouse::at(dir);
    std::fs::create_dir_all(&demo.warehouse).map_err(io_error(&demo.warehouse))?;

    let started = std::time::Instant::now();
    let catalog = demo.catalog().await?;
    create_tables(&catalog).await?;
    let times = write_history(&demo, &catalog, options).await?;
    for (name, times) in [(BRONZE_TABLE, &times.bronze), (SILVER_TABLE, &times.silver), (GOLD_TABLE, &times.gold)] {
        rewrite_table_metadata(&demo.catalog_uri, CATALOG_NAME, &table_ident(name), |metadata| {
            retime_snapshots(metadata, times)
        })
        .await?;
    }
    std::fs::write(&demo.config_path, config::SENSORS_TOML).map_err(io_error(&demo.config_path))?;
    info!(
        dir = %demo.dir.display(),
        bronze_commits = times.bronze.len(),
        silver_commits = times.silver.len(),
        gold_commits = times.gold.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "demo warehouse prepared"
    );
    Ok(demo)
}

fn remove_demo_files(dir: &Path) -> Result<(), DemoError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DemoError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| DemoError::Io { path: dir.to_path_buf(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let removal = if name == "warehouse" && path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if name.starts_with("catalog.db") || name.starts_with("icewatch-history.db") || name == "sensors.toml" {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        removal.map_err(|source| DemoError::Io { path, source })?;
    }
    Ok(())
}

/// `bronze.raw_trades` as first created: `quantity` is an `int` and there is no `venue` yet
/// (the history adds one and widens the other).
pub fn bronze_schema() -> Result<Schema, iceberg::Error> {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "trade_id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "symbol", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(3, "side", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(4, "price", Type::Primitive(PrimitiveType::Double)).into(),
            NestedField::optional(5, "quantity", Type::Primitive(PrimitiveType::Int)).into(),
            NestedField::optional(6, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
        ])
        .build()
}

/// `silver.cleaned_trades`: one row per trade with a price, plus `notional` (price × quantity).
pub fn silver_schema() -> Result<Schema, iceberg::Error> {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "trade_id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "symbol", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(3, "side", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(4, "price", Type::Primitive(PrimitiveType::Double)).into(),
            NestedField::optional(5, "quantity", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(6, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
            NestedField::optional(7, "venue", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(8, "notional", Type::Primitive(PrimitiveType::Double)).into(),
        ])
        .build()
}

/// `gold.trade_summary_daily`: per (UTC trade date, symbol) aggregates of a window of silver rows.
pub fn gold_schema() -> Result<Schema, iceberg::Error> {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "trade_date", Type::Primitive(PrimitiveType::Date)).into(),
            NestedField::required(2, "symbol", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(3, "trades", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(4, "volume", Type::Primitive(PrimitiveType::Double)).into(),
            NestedField::optional(5, "vwap", Type::Primitive(PrimitiveType::Double)).into(),
        ])
        .build()
}

async fn create_tables(catalog: &dyn Catalog) -> Result<(), DemoError> {
    let tables = [(BRONZE_TABLE, bronze_schema()), (SILVER_TABLE, silver_schema()), (GOLD_TABLE, gold_schema())];
    for (name, schema) in tables {
        let ident = table_ident(name);
        let iceberg_error = |operation: &'static str| {
            move |source| DemoError::Iceberg { operation, table: name.to_string(), source: Box::new(source) }
        };
        let schema = schema.map_err(iceberg_error("build the schema of"))?;
        let namespace = ident.namespace().clone();
        if !catalog.namespace_exists(&namespace).await.map_err(iceberg_error("look up the namespace of"))? {
            catalog
                .create_namespace(&namespace, Default::default())
                .await
                .map_err(iceberg_error("create the namespace of"))?;
        }
        let creation = TableCreation::builder()
            .name(ident.name().to_string())
            .schema(schema)
            .properties([("write.parquet.compression-codec".to_string(), "zstd".to_string())])
            .build();
        catalog.create_table(&namespace, creation).await.map_err(iceberg_error("create"))?;
    }
    Ok(())
}

/// The simulated commit times of each table, oldest first (one per snapshot).
struct HistoryTimes {
    bronze: Vec<i64>,
    silver: Vec<i64>,
    gold: Vec<i64>,
}

/// Writes the backdated history with the real clock and records the simulated time of every
/// commit, so `prepare` can re-time the snapshots afterwards.
async fn write_history(
    demo: &DemoWarehouse,
    catalog: &dyn Catalog,
    options: &DemoOptions,
) -> Result<HistoryTimes, DemoError> {
    let mut rng = Rng::new(options.seed);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let bronze_times = simulate::bronze_commit_times(&mut rng, now_ms, options.days, HISTORY_LAG_MS);
    let problems = simulate::place_problems(bronze_times.len());
    let (bronze, silver, gold) = (table_ident(BRONZE_TABLE), table_ident(SILVER_TABLE), table_ident(GOLD_TABLE));
    let mut market = Market::new(1);
    let mut seen = HashSet::new();
    let mut awaiting_silver: Vec<Trade> = Vec::new();
    let mut awaiting_gold: Vec<Trade> = Vec::new();
    let mut times = HistoryTimes { bronze: Vec::new(), silver: Vec::new(), gold: Vec::new() };
    let mut bronze_table = load_table(catalog, &bronze).await?;
    let mut silver_table = load_table(catalog, &silver).await?;
    let mut gold_table = load_table(catalog, &gold).await?;

    for (index, &at_ms) in bronze_times.iter().enumerate() {
        if index == problems.venue_added_at {
            bronze_table = add_venue_column(catalog, &bronze_table).await?;
        }
        if index == problems.quantity_widened_at {
            rewrite_table_metadata(&demo.catalog_uri, CATALOG_NAME, &bronze, |metadata| {
                widen_column(metadata, "quantity", "long")
            })
            .await?;
            bronze_table = load_table(catalog, &bronze).await?;
        }
        let mut rows = simulate::rows_for_commit(&mut rng, BASE_ROWS_PER_COMMIT, at_ms);
        if index == problems.volume_drop_at {
            rows = ((rows as f64) * DROP_ROW_FACTOR).round().max(1.0) as usize;
        }
        let null_rate = if index == problems.null_spike_at { SPIKE_NULL_RATE } else { NORMAL_NULL_RATE };
        let shape = BatchShape { rows, null_rate, with_venue: index >= problems.venue_added_at };
        let window_start_ms =
            index.checked_sub(1).map_or(at_ms - BRONZE_INTERVAL_MS, |previous| bronze_times[previous]);
        let trades = market.trades(&mut rng, window_start_ms * 1000, at_ms * 1000, shape);
        bronze_table =
            append_batch_to(catalog, &bronze_table, trades_batch(&trades, shape.with_venue, BRONZE_TABLE)?).await?;
        times.bronze.push(at_ms);
        awaiting_silver.extend(trades);

        let silver_due =
            (index + 1).is_multiple_of(SILVER_EVERY_BRONZE) && !simulate::silver_is_stale(&problems, index);
        if silver_due {
            let cleaned = simulate::clean(&awaiting_silver, &mut seen);
            awaiting_silver.clear();
            if !cleaned.is_empty() {
                silver_table = append_batch_to(catalog, &silver_table, silver_batch(&cleaned)?).await?;
                times.silver.push(at_ms + SILVER_DELAY_MS);
                awaiting_gold.extend(cleaned);
            }
        }
        if (index + 1).is_multiple_of(GOLD_EVERY_BRONZE) && !awaiting_gold.is_empty() {
            gold_table =
                append_batch_to(catalog, &gold_table, gold_batch(&simulate::summarize(&awaiting_gold))?).await?;
            times.gold.push(at_ms + GOLD_DELAY_MS);
            awaiting_gold.clear();
        }
    }
    Ok(times)
}

/// Loads `ident`, naming it in the error.
pub(crate) async fn load_table(catalog: &dyn Catalog, ident: &TableIdent) -> Result<Table, DemoError> {
    catalog.load_table(ident).await.map_err(|source| DemoError::Iceberg {
        operation: "load",
        table: ident.to_string(),
        source: Box::new(source),
    })
}

async fn add_venue_column(catalog: &dyn Catalog, table: &Table) -> Result<Table, DemoError> {
    let iceberg_error = |operation: &'static str| {
        move |source| DemoError::Iceberg { operation, table: BRONZE_TABLE.to_string(), source: Box::new(source) }
    };
    let transaction = Transaction::new(table);
    let transaction = transaction
        .update_schema()
        .add_column(AddColumn::optional("venue", Type::Primitive(PrimitiveType::String)))
        .apply(transaction)
        .map_err(iceberg_error("prepare adding `venue` to"))?;
    transaction.commit(catalog).await.map_err(iceberg_error("add `venue` to"))
}

fn utc_timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("+00:00")))
}

/// A bronze batch of `trades` (`venue` only when the table has it). `quantity` is built as
/// `Int64`; [`append_batch`] casts it to the table's type.
pub fn trades_batch(trades: &[Trade], with_venue: bool, table: &str) -> Result<RecordBatch, DemoError> {
    let mut fields = vec![
        Field::new("trade_id", DataType::Int64, false),
        Field::new("symbol", DataType::Utf8, true),
        Field::new("side", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("quantity", DataType::Int64, true),
        Field::new("ts", utc_timestamp_type(), true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(trades.iter().map(|trade| trade.trade_id))),
        Arc::new(StringArray::from_iter_values(trades.iter().map(|trade| trade.symbol))),
        Arc::new(StringArray::from_iter_values(trades.iter().map(|trade| trade.side))),
        Arc::new(Float64Array::from_iter(trades.iter().map(|trade| trade.price))),
        Arc::new(Int64Array::from_iter_values(trades.iter().map(|trade| trade.quantity))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(trades.iter().map(|trade| trade.ts_us)).with_timezone("+00:00"),
        ),
    ];
    if with_venue {
        fields.push(Field::new("venue", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter(trades.iter().map(|trade| trade.venue))));
    }
    RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), columns)
        .map_err(|source| DemoError::Arrow { table: table.to_string(), source })
}

/// A silver batch: the cleaned trades plus `notional`.
pub fn silver_batch(cleaned: &[Trade]) -> Result<RecordBatch, DemoError> {
    let batch = trades_batch(cleaned, true, SILVER_TABLE)?;
    let notional = Float64Array::from_iter(
        cleaned.iter().map(|trade| trade.price.map(|price| (price * trade.quantity as f64 * 100.0).round() / 100.0)),
    );
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|field| field.as_ref().clone()).collect();
    fields.push(Field::new("notional", DataType::Float64, true));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(notional));
    RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), columns)
        .map_err(|source| DemoError::Arrow { table: SILVER_TABLE.to_string(), source })
}

/// A gold batch of daily summaries.
pub fn gold_batch(summaries: &[DailySummary]) -> Result<RecordBatch, DemoError> {
    let schema = ArrowSchema::new(vec![
        Field::new("trade_date", DataType::Date32, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("trades", DataType::Int64, true),
        Field::new("volume", DataType::Float64, true),
        Field::new("vwap", DataType::Float64, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Date32Array::from_iter_values(summaries.iter().map(|summary| summary.trade_date))),
        Arc::new(StringArray::from_iter_values(summaries.iter().map(|summary| summary.symbol))),
        Arc::new(Int64Array::from_iter_values(summaries.iter().map(|summary| summary.trades))),
        Arc::new(Float64Array::from_iter_values(summaries.iter().map(|summary| summary.volume))),
        Arc::new(Float64Array::from_iter_values(
            summaries.iter().map(|summary| (summary.vwap * 10_000.0).round() / 10_000.0),
        )),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
        .map_err(|source| DemoError::Arrow { table: GOLD_TABLE.to_string(), source })
}

/// An anomaly the live writer injects into one bronze commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveAnomaly {
    /// About 70 % fewer rows than usual.
    VolumeDrop,
    /// About three times the usual rows.
    VolumeSpike,
    /// About 30 % of `price` null instead of about 2 %.
    NullBurst,
}

impl LiveAnomaly {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveAnomaly::VolumeDrop => "volume_drop",
            LiveAnomaly::VolumeSpike => "volume_spike",
            LiveAnomaly::NullBurst => "null_burst",
        }
    }
}

/// The live writer's anomaly schedule: one anomaly every 8 to 16 ticks (about every 12th),
/// its kind and spacing drawn from the seed.
#[derive(Debug, Clone)]
pub struct AnomalySchedule {
    rng: Rng,
    next_tick: u64,
}

impl AnomalySchedule {
    pub fn new(seed: u64) -> AnomalySchedule {
        let mut rng = Rng::new(seed ^ 0x5EED_A11A);
        let next_tick = rng.below(8, 17) as u64;
        AnomalySchedule { rng, next_tick }
    }

    /// The anomaly to inject at `tick` (1-based, called once per tick in order), if any.
    pub fn at(&mut self, tick: u64) -> Option<LiveAnomaly> {
        if tick < self.next_tick {
            return None;
        }
        self.next_tick = tick + self.rng.below(8, 17) as u64;
        Some(match self.rng.below(0, 3) {
            0 => LiveAnomaly::VolumeDrop,
            1 => LiveAnomaly::VolumeSpike,
            _ => LiveAnomaly::NullBurst,
        })
    }
}

/// The simulated live writer: every `interval` it commits a bronze batch of trades timed in the
/// last interval, then their cleaned rows to silver; every 6th tick the gold aggregates of the
/// silver rows since the previous gold commit. About every 12th tick (deterministic for `seed`)
/// one bronze commit carries an anomaly: a volume drop, a volume spike or a null burst. Each
/// commit and each anomaly is logged with `tracing::info!`.
///
/// Returns when `shutdown` completes (a commit in progress is finished first), or with an
/// error after 5 failed ticks in a row. Tables must exist (run [`prepare`] first).
pub async fn run_writer(
    demo: &DemoWarehouse,
    interval: Duration,
    seed: u64,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    if interval.is_zero() {
        return Err(DemoError::InvalidOptions { reason: "the writer interval must be positive".to_string() });
    }
    let catalog = demo.catalog().await?;
    let mut writer = LiveWriter::start(&catalog, seed).await?;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut failures = 0;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        match writer.tick(&catalog).await {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                warn!(error = %crate::sensors::error_chain(&error), failures, "demo writer tick failed");
                if failures >= LIVE_MAX_CONSECUTIVE_FAILURES {
                    return Err(error);
                }
            }
        }
    }
    info!(ticks = writer.tick, "demo writer stopped");
    Ok(())
}

struct LiveWriter {
    rng: Rng,
    market: Market,
    anomalies: AnomalySchedule,
    seen: HashSet<i64>,
    awaiting_gold: Vec<Trade>,
    last_tick_us: i64,
    tick: u64,
}

impl LiveWriter {
    async fn start(catalog: &dyn Catalog, seed: u64) -> Result<LiveWriter, DemoError> {
        let table = catalog.load_table(&table_ident(BRONZE_TABLE)).await.map_err(|source| DemoError::Iceberg {
            operation: "load",
            table: BRONZE_TABLE.to_string(),
            source: Box::new(source),
        })?;
        // History ids run 1, 2, ... and re-sent trades reuse an id, so the table's record count
        // is at least the largest id: continuing after it keeps ids unique.
        let total_records = table
            .metadata()
            .current_snapshot()
            .and_then(|snapshot| snapshot.summary().additional_properties.get("total-records").cloned())
            .and_then(|total| total.parse::<i64>().ok())
            .unwrap_or(0);
        Ok(LiveWriter {
            rng: Rng::new(seed),
            market: Market::new(total_records + 1),
            anomalies: AnomalySchedule::new(seed),
            seen: HashSet::new(),
            awaiting_gold: Vec::new(),
            last_tick_us: chrono::Utc::now().timestamp_micros() - HOUR_US / 120,
            tick: 0,
        })
    }

    async fn tick(&mut self, catalog: &dyn Catalog) -> Result<(), DemoError> {
        self.tick += 1;
        let now_us = chrono::Utc::now().timestamp_micros();
        let mut rows = simulate::rows_for_commit(&mut self.rng, BASE_ROWS_PER_COMMIT, now_us / 1000);
        let mut null_rate = NORMAL_NULL_RATE;
        let anomaly = self.anomalies.at(self.tick);
        match anomaly {
            Some(LiveAnomaly::VolumeDrop) => rows = ((rows as f64) * DROP_ROW_FACTOR).round().max(1.0) as usize,
            Some(LiveAnomaly::VolumeSpike) => rows = ((rows as f64) * SPIKE_ROW_FACTOR).round() as usize,
            Some(LiveAnomaly::NullBurst) => null_rate = SPIKE_NULL_RATE,
            None => {}
        }
        if let Some(anomaly) = anomaly {
            info!(
                table = BRONZE_TABLE,
                anomaly = anomaly.as_str(),
                rows,
                null_rate,
                tick = self.tick,
                "demo writer injects an anomaly"
            );
        }
        let shape = BatchShape { rows, null_rate, with_venue: true };
        let start_us = self.last_tick_us.min(now_us - 1);
        let trades = self.market.trades(&mut self.rng, start_us, now_us, shape);
        self.last_tick_us = now_us;

        let table =
            append_batch(catalog, &table_ident(BRONZE_TABLE), trades_batch(&trades, true, BRONZE_TABLE)?).await?;
        log_commit(BRONZE_TABLE, &table, trades.len());
        if self.seen.len() > 1_000_000 {
            self.seen.clear();
        }
        let cleaned = simulate::clean(&trades, &mut self.seen);
        if !cleaned.is_empty() {
            let table = append_batch(catalog, &table_ident(SILVER_TABLE), silver_batch(&cleaned)?).await?;
            log_commit(SILVER_TABLE, &table, cleaned.len());
            self.awaiting_gold.extend(cleaned);
        }
        if self.tick.is_multiple_of(LIVE_GOLD_EVERY_TICKS) && !self.awaiting_gold.is_empty() {
            let summaries = simulate::summarize(&self.awaiting_gold);
            let table = append_batch(catalog, &table_ident(GOLD_TABLE), gold_batch(&summaries)?).await?;
            log_commit(GOLD_TABLE, &table, summaries.len());
            self.awaiting_gold.clear();
        }
        Ok(())
    }
}

fn log_commit(name: &str, table: &Table, rows: usize) {
    let snapshot_id = table.metadata().current_snapshot().map(|snapshot| snapshot.snapshot_id());
    info!(table = name, rows, snapshot_id, "demo writer committed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_schedule_is_deterministic_and_about_every_twelfth_tick() {
        let ticks = |seed| {
            let mut schedule = AnomalySchedule::new(seed);
            (1..=600).filter_map(|tick| schedule.at(tick).map(|kind| (tick, kind))).collect::<Vec<_>>()
        };
        let first = ticks(11);
        assert_eq!(first, ticks(11));
        assert_ne!(first, ticks(12));
        assert!((38..=75).contains(&first.len()), "{} anomalies in 600 ticks", first.len());
        assert!(first.windows(2).all(|pair| (8..=16).contains(&(pair[1].0 - pair[0].0))));
        for kind in [LiveAnomaly::VolumeDrop, LiveAnomaly::VolumeSpike, LiveAnomaly::NullBurst] {
            assert!(first.iter().any(|(_, seen)| *seen == kind), "{kind:?} never injected");
        }
    }

    #[test]
    fn table_ident_splits_namespace_and_name() {
        let ident = table_ident(BRONZE_TABLE);
        assert_eq!(ident.namespace().join("."), "bronze");
        assert_eq!(ident.name(), "raw_trades");
    }

    #[test]
    fn widening_adds_a_schema_with_the_same_field_ids() {
        let mut metadata = serde_json::json!({
            "location": "file:///t",
            "current-schema-id": 0,
            "schemas": [{"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "quantity", "required": false, "type": "int"},
                {"id": 2, "name": "symbol", "required": false, "type": "string"}
            ]}]
        });
        widen_column(&mut metadata, "quantity", "long").unwrap();
        assert_eq!(metadata["current-schema-id"], 1);
        assert_eq!(
            metadata["schemas"][1]["fields"][0],
            serde_json::json!({"id": 1, "name": "quantity", "required": false, "type": "long"})
        );
        assert_eq!(metadata["schemas"][0]["fields"][0]["type"], "int");
        assert!(widen_column(&mut metadata, "symbol", "long").is_err());
        assert!(widen_column(&mut metadata, "missing", "long").is_err());
    }

    #[test]
    fn retiming_orders_by_sequence_number_and_rebuilds_the_logs() {
        let mut metadata = serde_json::json!({
            "location": "file:///t",
            "last-updated-ms": 9_000,
            "snapshots": [
                {"snapshot-id": 20, "sequence-number": 2, "timestamp-ms": 9_000},
                {"snapshot-id": 10, "sequence-number": 1, "timestamp-ms": 8_000}
            ],
            "snapshot-log": [{"snapshot-id": 10, "timestamp-ms": 8_000}, {"snapshot-id": 20, "timestamp-ms": 9_000}],
            "metadata-log": [{"metadata-file": "file:///t/metadata/00000-x.metadata.json", "timestamp-ms": 7_000}]
        });
        retime_snapshots(&mut metadata, &[100, 200]).unwrap();
        assert_eq!(metadata["snapshots"][0]["timestamp-ms"], 200);
        assert_eq!(metadata["snapshots"][1]["timestamp-ms"], 100);
        assert_eq!(
            metadata["snapshot-log"],
            serde_json::json!([{"snapshot-id": 10, "timestamp-ms": 100}, {"snapshot-id": 20, "timestamp-ms": 200}])
        );
        assert_eq!(metadata["metadata-log"], serde_json::json!([]));
        assert_eq!(metadata["last-updated-ms"], 200);
        assert!(retime_snapshots(&mut metadata, &[100]).is_err());
        assert!(retime_snapshots(&mut metadata, &[300, 300]).is_err());
    }
}
