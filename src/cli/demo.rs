//! `icewatch demo`: writes the demo warehouse (backdated history with past problems) and, unless
//! `--prepare-only`, runs the service on it with a simulated writer that keeps committing.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, parse_duration};
use crate::demo::{DemoOptions, prepare, run_writer};
use crate::{server, service};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder of the demo warehouse (its own files in it are replaced).
    #[arg(long, default_value = "demo")]
    pub dir: PathBuf,
    /// Only write the warehouse and its sensors.toml, then exit.
    #[arg(long)]
    pub prepare_only: bool,
    /// Days of backdated history.
    #[arg(long, default_value_t = 5)]
    pub days: u32,
    /// Seed of the simulated data (same seed, same warehouse).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How often the simulated writer commits.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Listen address for the service, overriding the demo's sensors.toml.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut options = DemoOptions::new(args.dir.clone());
    options.days = args.days;
    options.seed = args.seed;
    let warehouse = prepare(&options).await.context("failed to write the demo warehouse")?;
    println!(
        "demo warehouse written to `{}` in {:.1}s; config: `{}`",
        warehouse.dir.display(),
        started.elapsed().as_secs_f64(),
        warehouse.config_path.display()
    );
    if args.prepare_only {
        println!("try: icewatch check --config {}", warehouse.config_path.display());
        return Ok(0);
    }
    let mut config = Config::load(&warehouse.config_path)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    println!(
        "serving http://{}/ and /metrics; a simulated writer commits every {:?} (Ctrl-C stops)",
        config.server.listen, args.interval
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(service::stop_on_signal(shutdown.clone()));
    let writer_shutdown = shutdown.clone();
    let writer_warehouse = warehouse.clone();
    let writer = tokio::spawn(async move {
        run_writer(&writer_warehouse, args.interval, args.seed, async move { writer_shutdown.cancelled().await }).await
    });
    let served = service::serve(Arc::new(config), server::router, shutdown.clone()).await;
    shutdown.cancel();
    match writer.await {
        Ok(Err(error)) => tracing::error!(error = %crate::sensors::error_chain(&error), "the simulated writer stopped"),
        Err(error) => tracing::error!(%error, "the simulated writer task failed"),
        Ok(Ok(())) => {}
    }
    served?;
    Ok(0)
}
