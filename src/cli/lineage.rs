//! `icewatch lineage`: prints the lineage graph: the declared pipelines and the edges learned
//! from the OpenLineage events in the history store (text, Graphviz `dot`, or JSON). It runs
//! no sensor and needs no catalog.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::export::metrics::Metrics;
use crate::history::HistoryStore;
use crate::lineage::{GraphFormat, Lineage, render_graph};

#[derive(Debug, clap::Args)]
pub struct LineageArgs {
    /// Path of sensors.toml.
    #[arg(long, short, default_value = "sensors.toml", env = "ICEWATCH_CONFIG")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
}

pub async fn lineage(args: LineageArgs) -> anyhow::Result<u8> {
    let config = Arc::new(Config::load(&args.config)?);
    let history = HistoryStore::open(&config.history.location).await?;
    let lineage = Lineage::new(config, Arc::new(Metrics::new()), history.clone());
    lineage.restore().await?;
    print!("{}", render_graph(&lineage.view(), args.format));
    history.close().await;
    Ok(0)
}
