//! Distribution-sensor benchmark (run by `bench/distribution.sh`, which writes the table first):
//! profiles the 10M-row snapshot of `bench.wide` as a whole (`scope = "table"`), then the 1 %
//! append that follows it incrementally (`scope = "added"`) and as a whole table, and prints
//! time, rows and bytes read for each pass as JSON lines.
//!
//! Usage: profile_bench <dir written by distribution_bench.py write>

use std::path::PathBuf;
use std::time::Instant;

use icewatch::catalog::CatalogHandle;
use icewatch::config::{Config, TableName};
use icewatch::sensors::distribution::{BatchProfile, observe};
use icewatch::sensors::snapshots::commits;

const NUMERIC: &str = r#"["mean", "stddev", "min", "max", "sum", "null_percent", "zero_percent", "nan_percent", "distinct_count", "p05", "p50", "p95"]"#;
const TEXT: &str = r#"["null_percent", "empty_percent", "mean_length", "max_length", "distinct_count"]"#;

fn config(dir: &std::path::Path, scope: &str) -> anyhow::Result<Config> {
    let mut columns = String::new();
    for column in ["c0", "c1", "c2", "c3", "c4", "c5", "c8", "c9"] {
        columns.push_str(&format!("{column} = {NUMERIC}\n"));
    }
    for column in ["c6", "c7"] {
        columns.push_str(&format!("{column} = {TEXT}\n"));
    }
    let text = format!(
        r#"
[catalog]
type = "sql"
uri = "sqlite://{dir}/catalog.db"
warehouse = "{dir}/warehouse"

[tables."bench.wide".distribution]
scope = "{scope}"

[tables."bench.wide".distribution.columns]
{columns}"#,
        dir = dir.display()
    );
    Ok(Config::from_str(&text, &dir.join("sensors.toml"))?)
}

fn report(pass: &str, seconds: f64, profile: &BatchProfile) {
    println!(
        "{}",
        serde_json::json!({
            "pass": pass,
            "seconds": seconds,
            "rows": profile.row_count,
            "files": profile.files,
            "scanned_rows": profile.scanned_rows,
            "scanned_bytes": profile.scanned_bytes,
            "values": profile.values.len(),
        })
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: profile_bench <dir>"))?);
    let dir = dir.canonicalize()?;
    let name = TableName::parse("bench.wide").map_err(anyhow::Error::msg)?;
    let table_config = config(&dir, "table")?;
    let catalog = CatalogHandle::connect(&table_config.catalog).await?;
    let table = catalog.load_table(&name).await?;
    let history = commits(table.metadata());
    anyhow::ensure!(history.len() >= 2, "expected the 10M-row snapshot and the 1 % append");
    let full = history[history.len() - 2].snapshot_id;
    let newest = history[history.len() - 1].snapshot_id;

    let table_sensor = table_config.tables[0].distribution.clone().ok_or_else(|| anyhow::anyhow!("no sensor"))?;
    let added_config = config(&dir, "added")?;
    let added_sensor = added_config.tables[0].distribution.clone().ok_or_else(|| anyhow::anyhow!("no sensor"))?;

    let passes = [
        ("full_table_10m", &table_sensor, full),
        ("incremental_1pct_append", &added_sensor, newest),
        ("full_table_after_append", &table_sensor, newest),
    ];
    for (pass, sensor, snapshot) in passes {
        let started = Instant::now();
        let profiles = observe(&table, "bench.wide", sensor, &[snapshot]).await?;
        let seconds = started.elapsed().as_secs_f64();
        let profile = profiles.first().ok_or_else(|| anyhow::anyhow!("snapshot {snapshot} was not profiled"))?;
        report(pass, seconds, profile);
    }
    Ok(())
}
