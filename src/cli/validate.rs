//! `icewatch validate`: parse and validate the config; `--online` also connects to the catalog,
//! loads every table and has the config's online checks ([`online_problems`]) look up every
//! column the config names. This file only connects, loads and prints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use iceberg::spec::SchemaRef;

use crate::catalog::{CatalogError, CatalogHandle};
use crate::config::{Config, Problem, TableColumns, online_problems};

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
    let (config, locations) = Config::load_with_locations(&args.config)?;
    if !args.online {
        println!(
            "`{}` is valid: {} table(s), {} pipeline(s)",
            args.config.display(),
            config.tables.len(),
            config.pipelines.len()
        );
        return Ok(0);
    }
    // A catalog file that is not there is a wrong path in the config: a problem at its key.
    if let Some(reason) = crate::catalog::missing_sqlite_file(&config.catalog) {
        let (line, column) = locations.get("catalog.uri").unwrap_or((1, 1));
        let message = format!("cannot reach catalog `{}`: {reason}", config.catalog.uri.redacted());
        let problem = Problem { line, column, key_path: "catalog.uri".to_string(), message };
        eprintln!("1 problem(s) found online in `{}`:", args.config.display());
        eprintln!("  {}", problem.at(&args.config));
        return Ok(super::EXIT_USAGE);
    }
    let catalog = CatalogHandle::connect(&config.catalog).await.context("online validation failed")?;
    // Each table's current schema, or why it did not load.
    let mut schemas: BTreeMap<&str, Result<CurrentSchema, String>> = BTreeMap::new();
    for table in &config.tables {
        let schema = match catalog.load_table(&table.name).await {
            Ok(loaded) => Ok(CurrentSchema(loaded.metadata().current_schema().clone())),
            Err(error @ CatalogError::TableNotFound { .. }) => {
                let beside = catalog.tables_beside(&table.name).await;
                let beside: Vec<&str> = beside.iter().map(String::as_str).collect();
                let suggestion = crate::config::did_you_mean(table.name.as_str(), &beside)
                    .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                    .unwrap_or_default();
                Err(format!("{error}{suggestion}"))
            }
            Err(error) => Err(error.to_string()),
        };
        schemas.insert(table.name.as_str(), schema);
    }
    // Not one table found, and the database holds tables for other catalog names: the
    // `[catalog] name` is wrong. Said once, at that key, instead of once per table.
    let none_found = !schemas.is_empty()
        && schemas.values().all(|schema| schema.as_ref().is_err_and(|reason| reason.contains("not found")));
    if none_found
        && let Some(names) = crate::catalog::sql_catalog_names(&config.catalog).await
        && !names.is_empty()
        && !names.contains(&config.catalog.name)
    {
        let (line, column) = locations.get("catalog.name").or(locations.get("catalog.uri")).unwrap_or((1, 1));
        let listed = names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
        let suggestion =
            crate::config::did_you_mean(&config.catalog.name, &names.iter().map(String::as_str).collect::<Vec<_>>())
                .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                .unwrap_or_default();
        let message = format!(
            "no table of this config is in catalog `{}` of `{}`{suggestion}; the database holds tables for catalog(s) {listed}",
            config.catalog.name,
            catalog.uri()
        );
        let problem = Problem { line, column, key_path: "catalog.name".to_string(), message };
        eprintln!("1 problem(s) found online in `{}`:", args.config.display());
        eprintln!("  {}", problem.at(&args.config));
        return Ok(super::EXIT_USAGE);
    }
    let problems = online_problems(&config, &locations, |name| match schemas.get(name.as_str()) {
        Some(Ok(schema)) => Ok(schema as &dyn TableColumns),
        Some(Err(reason)) => Err(reason.clone()),
        None => Err(format!("table `{name}` was not loaded")),
    });
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
            eprintln!("  {}", problem.at(&args.config));
        }
        Ok(super::EXIT_USAGE)
    }
}

/// A loaded table's current Iceberg schema, as the config's online checks see it.
struct CurrentSchema(SchemaRef);

impl TableColumns for CurrentSchema {
    fn has_column(&self, name: &str) -> bool {
        self.0.field_by_name(name).is_some()
    }

    fn column_names(&self) -> Vec<&str> {
        self.0.as_struct().fields().iter().map(|field| field.name.as_str()).collect()
    }
}
