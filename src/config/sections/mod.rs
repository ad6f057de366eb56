//! The sections of `sensors.toml`, each read by its own file into its part of [`Config`], each
//! with one table of the keys it accepts ([`Key`]: name, default, meaning). This file reads the
//! top level and hands the parts to the checks across sections (`validate.rs`).
//!
//! - `service.rs`: `[catalog]`, `[history]`, `[server]`, `[pushgateway]`: where icewatch reads,
//!   keeps and serves.
//! - `tables.rs`: `[defaults]`, `[tables."ns.name"]` and the scoring keys every sensor shares.
//! - `sensors.rs`: the four sensor sub-tables (`freshness`, `volume`, `schema`, `distribution`).
//! - `kinds.rs`: the sub-tables of the kinds that declare their own (`Sensor::section`).
//! - `pipelines.rs`: `[pipelines.NAME]` and `[lineage]`.

pub(super) mod kinds;
pub(super) mod pipelines;
pub(super) mod sensors;
pub(super) mod service;
pub(super) mod tables;

use std::path::Path;

use super::reader::{Key, Reader, Section};
use super::{Config, validate};

pub(super) use pipelines::PipelineDraft;

/// The sections; a section's `default` says whether it must be there.
pub(super) const TOP_LEVEL_KEYS: &[Key] = &[
    Key { name: "catalog", default: "required", doc: "Where the Iceberg tables are." },
    Key {
        name: "history",
        default: "optional",
        doc: "Where icewatch keeps the history each observation is scored against.",
    },
    Key { name: "server", default: "optional", doc: "Where icewatch serves `/metrics`" },
    Key {
        name: "pushgateway",
        default: "optional",
        doc: "Optional: also push every metric to a Prometheus Pushgateway",
    },
    Key { name: "defaults", default: "optional", doc: "Scoring settings every sensor falls back to." },
    Key { name: "tables", default: "optional", doc: "One table per monitored Iceberg table, keyed by its name." },
    Key { name: "pipelines", default: "optional", doc: "Lineage: which tables feed which." },
    Key {
        name: "lineage",
        default: "optional",
        doc: "Maps the datasets of [OpenLineage](https://openlineage.io) run events to the catalog's tables",
    },
];

impl Reader<'_> {
    /// Reads every section of the document; `None` when a required part could not be read (its
    /// problems are recorded).
    pub(in crate::config) fn config(&mut self, root_table: &toml_edit::Table, path: &Path) -> Option<Config> {
        let root = Section { table: root_table, path: String::new(), span: Some((0, 0)) };
        self.check_keys(&root, &[TOP_LEVEL_KEYS], "the top level");

        let catalog = self.catalog(&root);
        let history = self.history(&root);
        let server = self.server(&root);
        let pushgateway = self.pushgateway(&root);
        let defaults = self.defaults(&root);
        let tables = defaults.as_ref().map(|defaults| self.tables(&root, defaults)).unwrap_or_default();
        let pipelines = self.pipelines(&root);
        let lineage = self.lineage(&root);

        let pipelines = validate::pipelines(self, pipelines, &tables);
        Some(Config {
            source: path.to_path_buf(),
            catalog: catalog?,
            history: history?,
            server: server?,
            pushgateway: pushgateway?,
            defaults: defaults?,
            tables,
            pipelines,
            lineage,
        })
    }
}
