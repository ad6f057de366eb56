//! `sensors.toml`: the validated configuration the rest of icewatch reads.
//!
//! Loading goes file text → spanned TOML document ([`parse`]) → the sections ([`sections`], read
//! with [`reader`], one table of keys each) → the checks across sections ([`validate`]) → the
//! typed [`Config`] below, with every problem collected (not just the first) and pointing at
//! `file:line:col`. Checks that need a catalog (does the table / column exist, for
//! `icewatch validate --online`) are in [`validate`] too, and get the catalog's answers through
//! [`TableColumns`]: this module never imports the catalog or the sensors. It owns no IO beyond
//! reading the file and the environment (`${VAR}`).

mod diagnostics;
#[cfg(test)]
mod key_docs;
mod parse;
mod reader;
mod sections;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use diagnostics::{ConfigError, Locations, Problem, did_you_mean};
pub use reader::Key;
pub use sections::kinds::{SectionReader, SectionSpec, SensorSection};
pub use validate::{TableColumns, online_problems};
pub use values::{Scope, Secret, SensorKind, Statistic, TableName, duration_to_string, parse_duration};

use crate::history::HistoryLocation;
use crate::stats::Direction;

/// Where the HTTP server listens when `[server] listen` is not set (the Dockerfile's `EXPOSE`).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (for messages and reloads).
    pub source: PathBuf,
    pub catalog: CatalogConfig,
    pub history: HistoryConfig,
    pub server: ServerConfig,
    pub pushgateway: Option<PushgatewayConfig>,
    pub defaults: Defaults,
    /// Monitored tables by their configured name (`namespace.table`), in file order.
    pub tables: Vec<TableConfig>,
    pub pipelines: Vec<PipelineConfig>,
    /// `[lineage]`: how OpenLineage datasets map to catalog tables.
    pub lineage: LineageConfig,
}

impl Config {
    /// Reads, parses and validates `path`. Every problem in the file is reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_locations(path).map(|(config, _)| config)
    }

    /// [`Config::load`], also returning where the keys naming tables and columns were written,
    /// for [`online_problems`].
    pub fn load_with_locations(path: &Path) -> Result<(Config, Locations), ConfigError> {
        let bytes = parse::read_file(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|error| parse::not_utf8(&bytes, &error, path))?;
        parse::parse_with_locations(text, path, &|name| std::env::var(name).ok())
    }

    /// Parses `text` as if it had been read from `path` (relative paths resolve against the
    /// folder of `path`).
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        parse::parse(text, path, &|name| std::env::var(name).ok())
    }

    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|table| table.name.as_str() == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogKind {
    /// SQL catalog (SQLite or PostgreSQL) as written by PyIceberg, Spark's JdbcCatalog, iceberg-rust.
    Sql,
    /// Iceberg REST catalog.
    Rest,
}

#[derive(Clone, Debug)]
pub struct CatalogConfig {
    pub kind: CatalogKind,
    /// Database or REST URI; may carry credentials, so it is a [`Secret`]. SQLite paths are
    /// already resolved against the config file's folder.
    pub uri: Secret,
    /// Warehouse location: a local path (resolved) or an object-store URI such as `s3://bucket/prefix`.
    pub warehouse: Option<String>,
    /// Catalog name inside a SQL catalog (PyIceberg's default is `default`); for REST, a label.
    pub name: String,
    /// Properties handed to the catalog and its FileIO (`s3.endpoint`, `token`, ...). Values may be secrets.
    pub properties: BTreeMap<String, Secret>,
}

#[derive(Clone, Debug)]
pub struct HistoryConfig {
    pub location: HistoryLocation,
    pub retention: PointRetention,
}

/// How long history points are kept (`[history]` `retention`, `sensor_retention`, `keep_points`).
/// The service deletes older points at start-up and hourly; the newest `keep_points` of every
/// series stay whatever their age, so a count window of a table that commits rarely stays full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointRetention {
    pub max_age: Duration,
    /// Per sensor kind (`distribution`, ...), instead of `max_age`.
    pub by_sensor: BTreeMap<String, Duration>,
    pub keep_points: usize,
}

impl PointRetention {
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(90 * 86_400);
    pub const DEFAULT_KEEP_POINTS: usize = 1000;

    /// How long the points of `sensor`'s series are kept.
    pub fn max_age(&self, sensor: &str) -> Duration {
        self.by_sensor.get(sensor).copied().unwrap_or(self.max_age)
    }

    /// This retention, raised where `tables` need more: at least twice the longest volume time
    /// window, and at least twice the largest point window, kept whatever their age.
    pub fn covering(&self, tables: &[TableConfig]) -> PointRetention {
        let longest_window = tables.iter().filter_map(|table| table.volume.as_ref()).map(|volume| volume.window).max();
        let most_points = tables
            .iter()
            .flat_map(|table| table.sensor_kinds().into_iter().filter_map(|kind| table.settings(kind)))
            .map(|settings| settings.window)
            .max()
            .unwrap_or(0);
        let floor = longest_window.map_or(Duration::ZERO, |window| window * 2);
        PointRetention {
            max_age: self.max_age.max(floor),
            by_sensor: self.by_sensor.iter().map(|(sensor, age)| (sensor.clone(), (*age).max(floor))).collect(),
            keep_points: self.keep_points.max(most_points.saturating_mul(2)),
        }
    }
}

impl Default for PointRetention {
    fn default() -> Self {
        PointRetention {
            max_age: Self::DEFAULT_MAX_AGE,
            by_sensor: BTreeMap::new(),
            keep_points: Self::DEFAULT_KEEP_POINTS,
        }
    }
}

/// `[server]`: where `/metrics` listens, how it shuts down, and its optional TLS and basic auth
/// (the same model as the Prometheus exporters' web config: bcrypt-hashed passwords).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// After SIGTERM/SIGINT (or a reload), how long running sensor runs may finish.
    pub shutdown_grace: Duration,
    /// HTTPS instead of HTTP when set.
    pub tls: Option<ServerTlsConfig>,
    /// User name → bcrypt hash of the password. Empty: no authentication.
    pub basic_auth_users: BTreeMap<String, PasswordHash>,
    /// Where the runbooks are (no trailing `/`): `check`, the status page and, through
    /// `icewatch_runbook_info`, the alerts link each problem to a section under it.
    pub runbook_base_url: String,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            basic_auth_users: BTreeMap::new(),
            runbook_base_url: crate::runbook::DEFAULT_BASE_URL.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A bcrypt hash (`$2b$...`, `$2y$...`, as `htpasswd -B` writes). Not printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PasswordHash(***)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushgatewayConfig {
    pub url: String,
    pub job: String,
    /// Grouping labels beyond `job` (`instance` defaults to the host name).
    pub grouping: BTreeMap<String, String>,
    pub timeout: Duration,
    pub retries: u32,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub delete_on_shutdown: bool,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// Defaults every sensor falls back to.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub schedule: Schedule,
    pub zscore_threshold: f64,
    pub min_history: usize,
    /// Points in the rolling window.
    pub window: usize,
    /// Consecutive points beyond the band after which their level is the baseline (0: never).
    pub rebaseline_after: usize,
    pub direction: Direction,
    /// Longest a single sensor run may take.
    pub timeout: Duration,
    /// Sensor runs allowed at the same time.
    pub concurrency: usize,
}

/// A cron schedule with a seconds field, kept with the text it came from.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub expression: String,
    pub cron: cron::Schedule,
}

/// Scoring settings of one sensor, resolved from its own keys and `[defaults]`.
#[derive(Clone, Debug)]
pub struct SensorSettings {
    pub schedule: Schedule,
    pub zscore_threshold: f64,
    pub min_history: usize,
    pub window: usize,
    /// Consecutive points beyond the band after which their level is the baseline (0: never).
    pub rebaseline_after: usize,
    pub direction: Direction,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct TableConfig {
    pub name: TableName,
    /// `layer` label of the table's metrics (empty when not set).
    pub layer: String,
    pub freshness: Option<FreshnessConfig>,
    pub volume: Option<VolumeConfig>,
    pub schema: Option<SchemaConfig>,
    pub distribution: Option<DistributionConfig>,
    /// The sections of the kinds that declare their own (`Sensor::section`), by kind.
    pub sections: BTreeMap<SensorKind, Arc<dyn SensorSection>>,
}

impl TableConfig {
    /// The section of `kind` as the type its parser returned; `None` when the table has no such
    /// section (or `T` is not its type).
    pub fn section<T: SensorSection>(&self, kind: SensorKind) -> Option<&T> {
        let section: &dyn std::any::Any = self.sections.get(&kind)?.as_ref();
        section.downcast_ref::<T>()
    }

    /// The sensor kinds configured for this table, in a fixed order.
    pub fn sensor_kinds(&self) -> Vec<SensorKind> {
        let mut kinds = Vec::new();
        if self.freshness.is_some() {
            kinds.push(SensorKind::FRESHNESS);
        }
        if self.volume.is_some() {
            kinds.push(SensorKind::VOLUME);
        }
        if self.schema.is_some() {
            kinds.push(SensorKind::SCHEMA);
        }
        if self.distribution.is_some() {
            kinds.push(SensorKind::DISTRIBUTION);
        }
        kinds.extend(self.sections.keys().copied());
        kinds
    }

    pub fn settings(&self, kind: SensorKind) -> Option<&SensorSettings> {
        match kind {
            SensorKind::FRESHNESS => self.freshness.as_ref().map(|sensor| &sensor.settings),
            SensorKind::VOLUME => self.volume.as_ref().map(|sensor| &sensor.settings),
            SensorKind::SCHEMA => self.schema.as_ref().map(|sensor| &sensor.settings),
            SensorKind::DISTRIBUTION => self.distribution.as_ref().map(|sensor| &sensor.settings),
            other => self.sections.get(&other).map(|section| section.settings()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FreshnessConfig {
    /// Warning when the last data commit is older than this (falls back to `critical_after`).
    pub warn_after: Option<Duration>,
    /// Critical when the last data commit is older than this. With neither set, only the
    /// commit-cadence score judges freshness.
    pub critical_after: Option<Duration>,
    /// Event-time column whose max gives the event-time lag.
    pub timestamp_column: Option<String>,
    /// Warning / critical when the event-time lag is older than these (its own check: the
    /// commit-age thresholds above do not apply to it). Neither set: the lag is reported, not
    /// judged, except an event time in the future, which is a warning.
    pub lag_warn_after: Option<Duration>,
    pub lag_critical_after: Option<Duration>,
    /// Which commits count as the table receiving data (for the age and the cadence).
    pub counts: FreshnessCounts,
    /// How the commit cadence weighs the hours of the week.
    pub seasonality: Seasonality,
    pub settings: SensorSettings,
}

/// `freshness.counts`: which commits make a table fresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FreshnessCounts {
    /// Commits that added rows (an append, or an overwrite's new rows): data is arriving.
    #[default]
    Arrivals,
    /// Any commit that added or removed records (deletes too): for tables where a delete is
    /// the writer's signal.
    AnyDataChange,
}

#[derive(Clone, Debug)]
pub struct VolumeConfig {
    /// Warning when rows added deviate this many percent from the rolling mean.
    pub deviation_percent: f64,
    /// Critical at this deviation (default twice `deviation_percent`).
    pub critical_deviation_percent: f64,
    /// Time window of the rolling mean.
    pub window: Duration,
    /// Which past commits are like the newest one.
    pub seasonality: Seasonality,
    pub settings: SensorSettings,
}

/// Which past commits a series is compared with (`seasonality`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Seasonality {
    /// Chosen per series by backtesting each model on the table's own history.
    #[default]
    Auto,
    /// Always this cycle, with no trend.
    Fixed(crate::judging::seasonal::Cycle),
}

#[derive(Clone, Debug)]
pub struct SchemaConfig {
    /// Declared baseline: column name → Iceberg type (`double`, `long`, `decimal(10,2)`, ...).
    pub expect: BTreeMap<String, String>,
    /// Columns not in `expect` are fine unless this is false.
    pub allow_extra_columns: bool,
    /// How long after it happened a schema change keeps the sensor at warning/critical.
    pub recent: Duration,
    pub settings: SensorSettings,
}

#[derive(Clone, Debug)]
pub struct DistributionConfig {
    /// Column → statistics to compute, in file order.
    pub columns: Vec<(String, Vec<Statistic>)>,
    pub scope: Scope,
    /// Fraction (0, 1] of rows to profile, or a row cap when > 1.
    pub sample: Option<f64>,
    pub drift: DriftConfig,
    pub settings: SensorSettings,
}

#[derive(Clone, Debug)]
pub struct DriftConfig {
    /// How many previous batches make the reference (0 disables drift tests).
    pub reference_batches: usize,
    /// Pinned reference snapshot instead of the previous batches.
    pub reference_snapshot: Option<i64>,
    pub psi_threshold: f64,
    pub ks_p_value: f64,
    pub chi_square_p_value: f64,
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub name: String,
    pub stages: Vec<StageConfig>,
}

#[derive(Clone, Debug)]
pub struct StageConfig {
    pub stage: String,
    pub table: String,
    pub upstream: Vec<String>,
    /// `job` label of the stage's metrics (default: the table name).
    pub job: String,
}

// ---- [lineage] (owned by the lineage module) ----

/// `[lineage]`: how OpenLineage dataset identifiers map to catalog table names, and how long
/// the received events are kept.
#[derive(Clone, Debug)]
pub struct LineageConfig {
    /// Tried in order; the first rule that matches a dataset names its table. A dataset no rule
    /// matches still maps when its name (or a `symlinks` identifier) is a declared table.
    pub datasets: Vec<DatasetRule>,
    /// Stored OpenLineage events older than this are deleted and not replayed.
    pub retention: Duration,
}

impl LineageConfig {
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
}

impl Default for LineageConfig {
    fn default() -> Self {
        LineageConfig { datasets: Vec::new(), retention: LineageConfig::DEFAULT_RETENTION }
    }
}

/// One mapping rule: datasets in `namespace` whose name starts with `strip_prefix` map to the
/// rest of the name, with `/` read as the namespace separator (`raw/trades` → `raw.trades`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetRule {
    pub namespace: String,
    pub strip_prefix: String,
}

#[cfg(test)]
mod tests;
