//! `icewatch run`: reads its arguments and the configuration, then runs the service (see
//! `service`) with the server's routes until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::{server, service};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Path of sensors.toml.
    #[arg(long, short, default_value = "sensors.toml", env = "ICEWATCH_CONFIG")]
    pub config: PathBuf,
}

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let config = Arc::new(Config::load(&args.config)?);
    let shutdown = CancellationToken::new();
    tokio::spawn(service::stop_on_signal(shutdown.clone()));
    service::serve(config, server::router, shutdown).await?;
    Ok(0)
}
