//! Benchmark of the metadata sensors: one pass of freshness + volume + schema over many tables
//! of a local SQL catalog, through the same `Pipeline` that `icewatch check` uses. It only
//! measures and prints; the tables it writes are real Iceberg tables (iceberg crate).
//!
//! ```text
//! metadata_bench --dir DIR [--tables 1000] [--snapshots 20] [--concurrency 4]
//! ```
//!
//! On first use DIR gets `catalog.db`, `warehouse/` (namespace `bench`, tables `t0000`...,
//! each with `--snapshots` appends of 10 to 29 rows) and `sensors.toml`. Then, with the history
//! store deleted first, it runs a cold pass (history backfilled from every snapshot log) and a
//! warm pass (history already there), and prints one JSON line: milliseconds per table for
//! each pass, the statuses, and the peak resident memory (VmHWM) of the process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Int32Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::{Catalog, NamespaceIdent, TableCreation};
use icewatch::config::Config;
use icewatch::export::metrics::Metrics;
use icewatch::pipeline::Pipeline;

struct Options {
    dir: PathBuf,
    tables: usize,
    snapshots: usize,
    concurrency: usize,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options { dir: PathBuf::new(), tables: 1000, snapshots: 20, concurrency: 4 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("`{flag}` needs a value"));
        match flag.as_str() {
            "--dir" => options.dir = PathBuf::from(value()?),
            "--tables" => options.tables = value()?.parse()?,
            "--snapshots" => options.snapshots = value()?.parse()?,
            "--concurrency" => options.concurrency = value()?.parse()?,
            other => anyhow::bail!("unknown argument `{other}`"),
        }
    }
    anyhow::ensure!(!options.dir.as_os_str().is_empty(), "`--dir` is required");
    Ok(options)
}

fn table_name(index: usize) -> String {
    format!("t{index:04}")
}

/// Tables written at once: the commits wait on file and SQLite syncs more than on the CPU.
const WRITERS: usize = 16;

/// Writes the tables, several at a time (the SQLite catalog serializes the commits).
async fn write_tables(options: &Options) -> anyhow::Result<()> {
    let catalog_uri = format!("sqlite://{}/catalog.db?mode=rwc", options.dir.display());
    let catalog = icewatch::demo::open_sql_catalog(&catalog_uri, &options.dir.join("warehouse"), "default").await?;
    let namespace = NamespaceIdent::new("bench".to_string());
    catalog.create_namespace(&namespace, Default::default()).await?;
    let schema = Schema::builder()
        .with_fields(vec![
            Arc::new(NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long))),
            Arc::new(NestedField::optional(2, "qty", Type::Primitive(PrimitiveType::Int))),
        ])
        .build()?;
    let arrow = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("qty", DataType::Int32, true),
    ]));
    let catalog = &catalog;
    let writes = futures::stream::iter((0..options.tables).map(|index| {
        let (schema, arrow, namespace) = (schema.clone(), arrow.clone(), namespace.clone());
        async move {
            let name = table_name(index);
            let creation = TableCreation::builder().name(name).schema(schema).build();
            let mut table = catalog.create_table(&namespace, creation).await?;
            for snapshot in 0..options.snapshots {
                let rows = 10 + ((index + snapshot * 7) % 20) as i64;
                let batch = RecordBatch::try_new(
                    arrow.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(0..rows)),
                        Arc::new(Int32Array::from_iter_values((0..rows).map(|row| row as i32))),
                    ],
                )?;
                table = icewatch::demo::append_batch_to(catalog, &table, batch).await?;
            }
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(WRITERS)
    .collect::<Vec<_>>()
    .await;
    writes.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}

fn write_config(options: &Options) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"warehouse\"\nname = \"default\"\n\n\
         [history]\npath = \"history.db\"\n\n[defaults]\nconcurrency = {}\n",
        options.concurrency
    );
    for index in 0..options.tables {
        let name = table_name(index);
        text.push_str(&format!(
            "\n[tables.\"bench.{name}\".freshness]\nwarn_after = \"1h\"\n[tables.\"bench.{name}\".volume]\n[tables.\"bench.{name}\".schema]\n"
        ));
    }
    let path = options.dir.join("sensors.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Peak resident set size of this process in KiB (`VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What one pass measured.
struct Pass {
    seconds: f64,
    sensor_runs: usize,
    statuses: BTreeMap<String, usize>,
    /// Summed run time of each sensor kind in ms (the first sensor of a table includes loading it).
    sensor_ms: BTreeMap<String, f64>,
}

async fn one_pass(config: &Path) -> anyhow::Result<Pass> {
    let config = Arc::new(Config::load(config)?);
    let pipeline = Pipeline::new(config, Arc::new(Metrics::new())).await?;
    let started = Instant::now();
    let results = pipeline.run_all(&[]).await;
    let elapsed = started.elapsed().as_secs_f64();
    pipeline.history().close().await;
    let mut statuses = BTreeMap::new();
    for evaluation in results.iter().flat_map(|result| &result.evaluations) {
        *statuses.entry(evaluation.status.as_str().to_string()).or_insert(0) += 1;
    }
    let mut sensor_ms = BTreeMap::new();
    for result in &results {
        *sensor_ms.entry(result.sensor.as_str().to_string()).or_insert(0.0) += result.duration.as_secs_f64() * 1000.0;
    }
    Ok(Pass { seconds: elapsed, sensor_runs: results.len(), statuses, sensor_ms })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    std::fs::create_dir_all(&options.dir)?;
    let mut setup_seconds = 0.0;
    if !options.dir.join("catalog.db").exists() {
        let started = Instant::now();
        write_tables(&options).await?;
        setup_seconds = started.elapsed().as_secs_f64();
        eprintln!("wrote {} tables x {} snapshots in {setup_seconds:.1} s", options.tables, options.snapshots);
    }
    let config = write_config(&options)?;
    let _ = std::fs::remove_file(options.dir.join("history.db"));
    let cold = one_pass(&config).await?;
    let warm = one_pass(&config).await?;
    let per_table = |seconds: f64| seconds * 1000.0 / options.tables as f64;
    let sensor_ms_per_table = |pass: &Pass| -> BTreeMap<String, f64> {
        pass.sensor_ms.iter().map(|(kind, ms)| (kind.clone(), ms / options.tables as f64)).collect()
    };
    let report = serde_json::json!({
        "tables": options.tables,
        "snapshots_per_table": options.snapshots,
        "concurrency": options.concurrency,
        "sensor_runs": warm.sensor_runs,
        "setup_seconds": setup_seconds,
        "cold_pass_seconds": cold.seconds,
        "cold_ms_per_table": per_table(cold.seconds),
        "cold_sensor_ms_per_table": sensor_ms_per_table(&cold),
        "warm_pass_seconds": warm.seconds,
        "warm_ms_per_table": per_table(warm.seconds),
        "warm_sensor_ms_per_table": sensor_ms_per_table(&warm),
        "cold_statuses": cold.statuses,
        "warm_statuses": warm.statuses,
        "peak_rss_kib": peak_rss_kib(),
    });
    println!("{report}");
    Ok(())
}
