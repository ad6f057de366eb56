//! `icewatch backtest`: replays every declared table's history through the judges `check`
//! uses and reports the alerts per table and sensor at a range of z-score thresholds, the
//! seasonal models chosen, and the smallest threshold within an alert budget. Reads only the
//! snapshot logs and the stored history (the history store is opened only when it exists);
//! writes nothing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::ValueEnum;
use serde::Serialize;

use crate::backtest::{self, Replay, THRESHOLDS, ThresholdCount};
use crate::catalog::CatalogConnection;
use crate::config::{Config, SensorKind};
use crate::history::{HistoryLocation, HistoryStore, Point, SeriesKey};
use crate::sensors::human_number;
use crate::sensors::snapshots::commits;

#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Path of sensors.toml.
    #[arg(long, short, default_value = "sensors.toml", env = "ICEWATCH_CONFIG")]
    pub config: PathBuf,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Only these tables (repeatable); all tables when not given.
    #[arg(long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
    /// Only this sensor.
    #[arg(long, value_enum)]
    pub sensor: Option<ReplayedSensor>,
    /// Count only the checks once a table has this much history (its first commit plus this):
    /// the earlier ones are a brand-new table's, replayed as history. `0s` counts all.
    #[arg(long, default_value = "0s", value_parser = parse_warm_up)]
    pub warm_up: std::time::Duration,
    /// Alerts per check the suggested threshold must stay within: `1/1000` or `0.001`.
    #[arg(long, default_value = "1/1000", value_parser = parse_budget)]
    pub budget: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The sensors whose history can be replayed from metadata alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReplayedSensor {
    Freshness,
    Volume,
}

impl ReplayedSensor {
    fn kind(self) -> SensorKind {
        match self {
            ReplayedSensor::Freshness => SensorKind::FRESHNESS,
            ReplayedSensor::Volume => SensorKind::VOLUME,
        }
    }
}

fn parse_warm_up(text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text)
}

/// `1/1000`, `0.001` or `0.1%`: a share between 0 and 1.
fn parse_budget(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = if let Some((alerts, checks)) = text.split_once('/') {
        let alerts: f64 = alerts.trim().parse().map_err(|_| format!("`{alerts}` is not a number"))?;
        let checks: f64 = checks.trim().parse().map_err(|_| format!("`{checks}` is not a number"))?;
        alerts / checks
    } else if let Some(percent) = text.strip_suffix('%') {
        percent.trim().parse::<f64>().map_err(|_| format!("`{percent}` is not a number"))? / 100.0
    } else {
        text.parse().map_err(|_| format!("`{text}` is not a number, a share like `1/1000` or a percentage"))?
    };
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("the budget must be between 0 and 1 alert per check, not {value}"))
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    replays: Vec<JsonReplay<'a>>,
    failed: &'a [Failure],
    summary: Summary,
}

#[derive(Serialize)]
struct JsonReplay<'a> {
    #[serde(flatten)]
    replay: &'a Replay,
    suggested_zscore_threshold: Option<f64>,
}

#[derive(Serialize)]
struct Failure {
    table: String,
    error: String,
}

#[derive(Serialize)]
struct Summary {
    checks: usize,
    alerts: usize,
    alerts_per_thousand: f64,
    budget: f64,
    by_threshold: Vec<ThresholdCount>,
    suggested_zscore_threshold: Option<f64>,
}

pub async fn backtest(args: BacktestArgs) -> anyhow::Result<u8> {
    let config = Config::load(&args.config)?;
    if let Some(code) = super::check::unknown_tables(&config, &args.tables, &args.config) {
        return Ok(code);
    }
    let history = open_existing_history(&config).await?;
    let catalog = CatalogConnection::new(config.catalog.clone());
    let mut replays = Vec::new();
    let mut failed = Vec::new();
    let only = args.sensor.map(ReplayedSensor::kind);
    for table in &config.tables {
        if !args.tables.is_empty() && !args.tables.iter().any(|name| name == table.name.as_str()) {
            continue;
        }
        let loaded = match catalog.get().await {
            Ok(handle) => handle.load_table(&table.name).await,
            Err(error) => Err(error),
        };
        let iceberg_table = match loaded {
            Ok(iceberg_table) => iceberg_table,
            Err(error) => {
                failed.push(Failure { table: table.name.to_string(), error: crate::errors::error_chain(&error) });
                continue;
            }
        };
        let stored = stored_points(history.as_ref(), table.name.as_str()).await;
        let warm_up_ms = i64::try_from(args.warm_up.as_millis()).unwrap_or(i64::MAX);
        replays.extend(backtest::replay_table(table, &commits(iceberg_table.metadata()), &stored, only, warm_up_ms));
    }
    if let Some(history) = &history {
        history.close().await;
    }
    let summary = summarise(&replays, args.budget);
    let output = match args.format {
        Format::Json => {
            let replays = replays
                .iter()
                .map(|replay| JsonReplay {
                    replay,
                    suggested_zscore_threshold: replay.suggested_threshold(args.budget),
                })
                .collect();
            serde_json::to_string_pretty(&JsonReport { replays, failed: &failed, summary })? + "\n"
        }
        Format::Text => render_text(&replays, &failed, &summary),
    };
    print!("{output}");
    Ok(if failed.is_empty() { 0 } else { super::EXIT_PROBLEM })
}

/// The history store, when it already exists: a backtest never creates one.
async fn open_existing_history(config: &Config) -> anyhow::Result<Option<HistoryStore>> {
    let location = &config.history.location;
    if let HistoryLocation::Sqlite(path) = location
        && !path.exists()
    {
        return Ok(None);
    }
    Ok(Some(HistoryStore::open(location).await?))
}

/// The stored volume and freshness points of `table`, by series.
async fn stored_points(history: Option<&HistoryStore>, table: &str) -> HashMap<SeriesKey, Vec<Point>> {
    let mut stored = HashMap::new();
    let Some(history) = history else { return stored };
    for key in [crate::sensors::volume::rows_added_series(table), crate::sensors::freshness::gap_series(table)] {
        match history.range(&key, i64::MIN, i64::MAX).await {
            Ok(points) => {
                stored.insert(key, points);
            }
            Err(error) => {
                tracing::warn!(%error, table, "could not read stored history; replaying the snapshot log only")
            }
        }
    }
    stored
}

fn summarise(replays: &[Replay], budget: f64) -> Summary {
    let checks = replays.iter().map(|replay| replay.checks).sum();
    let alerts = replays.iter().map(|replay| replay.alerts).sum();
    let by_threshold: Vec<ThresholdCount> = THRESHOLDS
        .iter()
        .enumerate()
        .map(|(index, threshold)| ThresholdCount {
            zscore_threshold: *threshold,
            alerts: replays.iter().map(|replay| replay.by_threshold[index].alerts).sum(),
        })
        .collect();
    Summary {
        checks,
        alerts,
        alerts_per_thousand: if checks == 0 { 0.0 } else { 1000.0 * alerts as f64 / checks as f64 },
        budget,
        suggested_zscore_threshold: backtest::suggest(&by_threshold, checks, budget),
        by_threshold,
    }
}

/// Alerts the text report lists per table and sensor (the newest).
const MAX_ALERTS_SHOWN: usize = 10;

fn render_text(replays: &[Replay], failed: &[Failure], summary: &Summary) -> String {
    let mut out = String::new();
    let threshold_heads: Vec<String> = THRESHOLDS.iter().map(|threshold| format!("z≥{threshold}")).collect();
    let name_width = replays.iter().map(|replay| replay.table.chars().count()).max().unwrap_or(5).max(5);
    let _ = write!(out, "{:<name_width$}  {:<9}  {:>7}  {:>6}", "table", "sensor", "checks", "alerts");
    for head in &threshold_heads {
        let _ = write!(out, "  {head:>6}");
    }
    let _ = writeln!(out, "  suggested");
    for replay in replays {
        let _ = write!(
            out,
            "{:<name_width$}  {:<9}  {:>7}  {:>6}",
            replay.table,
            replay.sensor.as_str(),
            replay.checks,
            replay.alerts
        );
        for count in &replay.by_threshold {
            let _ = write!(out, "  {:>6}", count.alerts);
        }
        let suggested =
            replay.suggested_threshold(summary.budget).map_or("none".to_string(), |threshold| threshold.to_string());
        let _ = writeln!(out, "  {suggested}");
        if !replay.models.is_empty() {
            let models: Vec<String> =
                replay.models.iter().map(|(model, count)| format!("{model} ({count} checks)")).collect();
            let _ = writeln!(out, "    seasonality: {}", models.join(", "));
        }
        let shown = replay.alerted.len().saturating_sub(MAX_ALERTS_SHOWN);
        if shown > 0 {
            let _ = writeln!(out, "    … {shown} earlier alert(s); `--format json` lists them all");
        }
        for alert in &replay.alerted[shown..] {
            let _ = writeln!(
                out,
                "    {} {} {}: {}",
                alert.observed_at.as_deref().unwrap_or("-"),
                alert.status,
                alert.metric,
                alert.message
            );
        }
    }
    for failure in failed {
        let _ = writeln!(out, "{}: not replayed: {}", failure.table, failure.error);
    }
    let suggested = match summary.suggested_zscore_threshold {
        Some(threshold) => format!("zscore_threshold = {threshold} keeps within it"),
        None => "no threshold up to 6 keeps within it".to_string(),
    };
    let _ = writeln!(
        out,
        "\n{} checks replayed, {} with an alert at the configured thresholds ({:.2} per 1,000); budget {} per 1,000: {suggested}",
        human_number(summary.checks as f64),
        human_number(summary.alerts as f64),
        summary.alerts_per_thousand,
        summary.budget * 1000.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_shares_of_checks() {
        assert_eq!(parse_budget("1/1000"), Ok(0.001));
        assert_eq!(parse_budget("0.5%"), Ok(0.005));
        assert_eq!(parse_budget("0.002"), Ok(0.002));
        assert!(parse_budget("2").is_err());
        assert!(parse_budget("one/1000").is_err());
    }
}
