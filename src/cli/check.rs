//! `icewatch check`: one pass of the sensors, a readable report (or JSON), and an exit code
//! for orchestrators: 0 all fine, 1 a result at or above `--fail-on`, 2 usage/config error.

use std::path::PathBuf;
use std::sync::Arc;

use clap::ValueEnum;

use super::report::{self, ReportFormat};
use crate::config::Config;
use crate::export::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::sensors::Status;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Path of sensors.toml.
    #[arg(long, short, default_value = "sensors.toml", env = "ICEWATCH_CONFIG")]
    pub config: PathBuf,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Only these tables (repeatable); all tables when not given.
    #[arg(long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
    /// Lowest status that makes the exit code 1 (`error` always counts as critical).
    #[arg(long, value_enum, default_value_t = FailOn::Warning)]
    pub fail_on: FailOn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Warning,
    Critical,
}

/// The usage exit code, after saying so on stderr, when a `--table` is not declared in the
/// config at `path`.
pub fn unknown_tables(config: &Config, tables: &[String], path: &std::path::Path) -> Option<u8> {
    for name in tables {
        if config.table(name).is_none() {
            let known: Vec<&str> = config.tables.iter().map(|table| table.name.as_str()).collect();
            let suggestion = crate::config::did_you_mean(name, &known)
                .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                .unwrap_or_default();
            eprintln!("error: table `{name}` is not declared in `{}`{suggestion}", path.display());
            return Some(super::EXIT_USAGE);
        }
    }
    None
}

pub async fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let config = Arc::new(Config::load(&args.config)?);
    if let Some(code) = unknown_tables(&config, &args.tables, &args.config) {
        return Ok(code);
    }
    let pipeline = Pipeline::new(config, Arc::new(Metrics::new())).await?;
    let lineage = crate::lineage::Lineage::attach(&pipeline);
    lineage.replay().await;
    let results = pipeline.run_all(&args.tables).await;
    // Lineage lines: stage root causes, and the OpenLineage run that wrote an anomalous snapshot.
    let results = lineage.check_results(results);
    let level = match args.fail_on {
        FailOn::Warning => Status::Warning,
        FailOn::Critical => Status::Critical,
    };
    let failed =
        results.iter().flat_map(|result| &result.evaluations).any(|evaluation| evaluation.status.reaches(level));
    let exit_code = if failed { super::EXIT_PROBLEM } else { 0 };
    print!("{}", report::render(&results, args.format, exit_code, &pipeline.config().server.runbook_base_url));
    pipeline.history().close().await;
    Ok(exit_code)
}
