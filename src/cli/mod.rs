//! Command-line interface (clap derive): one module per subcommand. Each returns the process
//! exit code; `anyhow` errors stop here and are printed by `main` as `error:` / `caused by:`.

mod backtest;
mod check;
mod demo;
mod lineage;
mod report;
mod run;
mod validate;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code: a check found a problem at or above `--fail-on`.
pub const EXIT_PROBLEM: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// Data-observability sensors for Apache Iceberg tables, published as Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "icewatch", version, about, long_about = None)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ICEWATCH_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: sensors on their schedules, /metrics, optional Pushgateway.
    Run(run::RunArgs),
    /// One pass of every sensor, a report, and an exit code for orchestrators.
    Check(check::CheckArgs),
    /// Parse and validate the config; with --online also load every table and check columns.
    Validate(validate::ValidateArgs),
    /// Write a local demo warehouse with backdated history, then run the service on it with a
    /// simulated writer that keeps committing and now and then injects an anomaly.
    Demo(demo::DemoArgs),
    /// Print the lineage graph: declared pipelines plus edges learned from OpenLineage events.
    Lineage(lineage::LineageArgs),
    /// Replay each table's history through the judges, as if `check` had run after every past
    /// commit, and count the alerts per table and sensor at a range of thresholds.
    Backtest(backtest::BacktestArgs),
}

/// Runs the parsed command line and returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Check(args) => check::check(args).await,
            Command::Validate(args) => validate::validate(args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Lineage(args) => lineage::lineage(args).await,
            Command::Backtest(args) => backtest::backtest(args).await,
        }
    })
}

/// Configuration problems exit with 2 (including the `[server]` TLS files and password hashes
/// that are only read when the server starts); everything else that stops a command with 1.
pub fn exit_code_for(error: &anyhow::Error) -> u8 {
    let is_config = error.chain().any(|cause| {
        cause.downcast_ref::<crate::config::ConfigError>().is_some()
            || cause.downcast_ref::<crate::web_config::WebConfigError>().is_some()
    });
    if is_config { EXIT_USAGE } else { EXIT_PROBLEM }
}

/// Logs go to stderr so `check --format json` keeps stdout clean. `RUST_LOG` filters them.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,iceberg=warn,datafusion=warn,opendal=warn")
    });
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
