//! `icewatch validate`: parse and validate the config; `--online` also connects to the catalog,
//! loads every table and checks that every column the config names exists.

use std::path::PathBuf;

use anyhow::Context;

use crate::catalog::CatalogHandle;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Path of sensors.toml.
    #[arg(long, short, default_value = "sensors.toml", env = "ICEWATCH_CONFIG")]
    pub config: PathBuf,
    /// Also connect to the catalog, load every table and check the named columns.
    #[arg(long)]
    pub online: bool,
}

pub async fn validate(args: ValidateArgs) -> anyhow::Result<u8> {
    let config = Config::load(&args.config)?;
    if !args.online {
        println!(
            "`{}` is valid: {} table(s), {} pipeline(s)",
            args.config.display(),
            config.tables.len(),
            config.pipelines.len()
        );
        return Ok(0);
    }
    let catalog = CatalogHandle::connect(&config.catalog).await.context("online validation failed")?;
    let mut problems = Vec::new();
    for table in &config.tables {
        let loaded = match catalog.load_table(&table.name).await {
            Ok(loaded) => loaded,
            Err(error) => {
                problems.push(error.to_string());
                continue;
            }
        };
        let schema = loaded.metadata().current_schema();
        let mut named: Vec<(&str, &str)> = Vec::new();
        if let Some(column) = table.freshness.as_ref().and_then(|freshness| freshness.timestamp_column.as_deref()) {
            named.push((column, "freshness.timestamp_column"));
        }
        if let Some(distribution) = &table.distribution {
            named.extend(distribution.columns.iter().map(|(column, _)| (column.as_str(), "distribution.columns")));
        }
        for (column, key) in named {
            if schema.field_by_name(column).is_none() {
                let known: Vec<&str> = schema.as_struct().fields().iter().map(|field| field.name.as_str()).collect();
                let suggestion = crate::config::did_you_mean(column, &known)
                    .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                    .unwrap_or_default();
                problems.push(format!(
                    "`tables.\"{}\".{key}`: column `{column}` not found in table `{}`{suggestion}",
                    table.name, table.name
                ));
            }
        }
    }
    if problems.is_empty() {
        println!(
            "`{}` is valid and all {} table(s) load from `{}`",
            args.config.display(),
            config.tables.len(),
            catalog.uri()
        );
        Ok(0)
    } else {
        eprintln!("{} problem(s) found online in `{}`:", problems.len(), args.config.display());
        for problem in &problems {
            eprintln!("  {problem}");
        }
        Ok(super::EXIT_USAGE)
    }
}
