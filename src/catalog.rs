//! The only module that talks to an Iceberg catalog: connects the SQL (SQLite / PostgreSQL) or
//! REST catalog named in `[catalog]`, with local or S3-compatible storage, and loads tables.
//! Errors name the catalog URI with its password hidden and keep the driver's noise to one line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableIdent};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

use crate::config::{CatalogConfig, CatalogKind, TableName};
use crate::errors::root_cause;

/// How long connecting to a catalog may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a catalog or a table could not be reached. Display never shows a password: it names the
/// redacted URI and the innermost cause on one line (`reason`); the driver's error itself stays
/// reachable as `source()` for logs. Cloneable, so one failed load fails every sensor of a run
/// with the same error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot reach catalog `{uri}`: {reason}")]
    Unreachable {
        uri: String,
        reason: String,
        #[source]
        source: Option<Arc<iceberg::Error>>,
    },
    #[error("invalid catalog setting `{key}`: {reason}")]
    InvalidSetting { key: String, reason: String },
    #[error("table `{table}` not found in catalog `{uri}`")]
    TableNotFound { table: String, uri: String },
    #[error("failed to load table `{table}`: {reason}")]
    LoadTable {
        table: String,
        reason: String,
        #[source]
        source: Option<Arc<iceberg::Error>>,
    },
}

impl CatalogError {
    /// A bounded label value for `icewatch_sensor_errors_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            CatalogError::Unreachable { .. } | CatalogError::InvalidSetting { .. } => "catalog_unavailable",
            CatalogError::TableNotFound { .. } => "table_not_found",
            CatalogError::LoadTable { .. } => "metadata_invalid",
        }
    }
}

/// A connected catalog plus the redacted URI used in messages.
#[derive(Clone)]
pub struct CatalogHandle {
    catalog: Arc<dyn Catalog>,
    uri: String,
}

impl std::fmt::Debug for CatalogHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CatalogHandle").field("uri", &self.uri).finish()
    }
}

impl CatalogHandle {
    /// Connects to the catalog of `config`. SQL catalogs open their connection pool here, so
    /// an unreachable database fails now; REST catalogs are contacted on first use.
    pub async fn connect(config: &CatalogConfig) -> Result<CatalogHandle, CatalogError> {
        let uri = config.uri.redacted();
        let mut properties: HashMap<String, String> =
            config.properties.iter().map(|(key, value)| (key.clone(), value.expose().to_string())).collect();
        check_pool_properties(&properties)?;
        properties.insert("uri".to_string(), config.uri.expose().to_string());
        if let Some(warehouse) = &config.warehouse {
            properties.insert("warehouse".to_string(), warehouse.clone());
        }
        let storage = Arc::new(OpenDalResolvingStorageFactory::new());
        let connecting = async {
            let catalog: Arc<dyn Catalog> = match config.kind {
                CatalogKind::Sql => {
                    check_sqlite_file(config.uri.expose(), &uri)?;
                    let bind_style = if config.uri.expose().starts_with("postgres") {
                        SqlBindStyle::DollarNumeric
                    } else {
                        SqlBindStyle::QMark
                    };
                    properties.insert("sql_bind_style".to_string(), bind_style.to_string());
                    let catalog = SqlCatalogBuilder::default()
                        .with_storage_factory(storage)
                        .load(config.name.clone(), properties)
                        .await
                        .map_err(|error| unreachable(&uri, error))?;
                    Arc::new(catalog)
                }
                CatalogKind::Rest => {
                    let catalog = RestCatalogBuilder::default()
                        .with_storage_factory(storage)
                        .load(config.name.clone(), properties)
                        .await
                        .map_err(|error| unreachable(&uri, error))?;
                    Arc::new(catalog)
                }
            };
            Ok::<_, CatalogError>(catalog)
        };
        let catalog =
            tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.map_err(|_| CatalogError::Unreachable {
                uri: uri.clone(),
                reason: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                source: None,
            })??;
        Ok(CatalogHandle { catalog, uri })
    }

    /// The catalog URI with its password hidden.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// Loads the current metadata of `name`.
    pub async fn load_table(&self, name: &TableName) -> Result<Table, CatalogError> {
        let ident = table_ident(name)?;
        let loading = self.catalog.load_table(&ident);
        let result = tokio::time::timeout(CONNECT_TIMEOUT, loading).await.map_err(|_| CatalogError::Unreachable {
            uri: self.uri.clone(),
            reason: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            source: None,
        })?;
        result.map_err(|error| match error.kind() {
            ErrorKind::TableNotFound | ErrorKind::NamespaceNotFound => {
                CatalogError::TableNotFound { table: name.to_string(), uri: self.uri.clone() }
            }
            _ if error.kind() != ErrorKind::DataInvalid
                && error.kind() != ErrorKind::FeatureUnsupported
                && is_connection_error(&error) =>
            {
                unreachable(&self.uri, error)
            }
            _ => load_failed(name, error),
        })
    }
}

/// A catalog connected on first use and shared by every sensor. Connecting never holds a lock
/// the others need: one attempt runs at a time and every caller awaits that same attempt. A
/// failed attempt is remembered and returned at once until its backoff (1 s, doubling to 60 s)
/// has passed, so a catalog that is down costs each run nothing. A connected handle is kept
/// when a query fails: its pool replaces broken connections itself, and reconnecting would
/// repeat the SQL catalog's `CREATE TABLE IF NOT EXISTS`, which needs write access.
pub struct CatalogConnection {
    config: CatalogConfig,
    slot: std::sync::Mutex<Slot>,
}

type Connecting = futures::future::Shared<futures::future::BoxFuture<'static, Result<CatalogHandle, CatalogError>>>;

enum Slot {
    Idle { backoff: Duration },
    Connecting { attempt: Connecting, backoff: Duration },
    Connected(CatalogHandle),
    Failed { error: CatalogError, retry_at: std::time::Instant, backoff: Duration },
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl CatalogConnection {
    pub fn new(config: CatalogConfig) -> CatalogConnection {
        CatalogConnection { config, slot: std::sync::Mutex::new(Slot::Idle { backoff: FIRST_BACKOFF }) }
    }

    /// The connected catalog, connecting when needed (or the last failure, within its backoff).
    pub async fn get(&self) -> Result<CatalogHandle, CatalogError> {
        use futures::FutureExt;
        let attempt = {
            let mut slot = self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match &*slot {
                Slot::Connected(handle) => return Ok(handle.clone()),
                Slot::Failed { error, retry_at, .. } if std::time::Instant::now() < *retry_at => {
                    return Err(error.clone());
                }
                Slot::Connecting { attempt, .. } => attempt.clone(),
                Slot::Idle { backoff } | Slot::Failed { backoff, .. } => {
                    let config = self.config.clone();
                    let attempt = async move { CatalogHandle::connect(&config).await }.boxed().shared();
                    *slot = Slot::Connecting { attempt: attempt.clone(), backoff: *backoff };
                    attempt
                }
            }
        };
        let outcome = attempt.await;
        let mut slot = self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Slot::Connecting { backoff, .. } = &*slot {
            let backoff = *backoff;
            *slot = match &outcome {
                Ok(handle) => Slot::Connected(handle.clone()),
                Err(error) => Slot::Failed {
                    error: error.clone(),
                    retry_at: std::time::Instant::now() + backoff,
                    backoff: (backoff * 2).min(MAX_BACKOFF),
                },
            };
        }
        outcome
    }
}

/// The catalog identifier of a configured table name.
pub fn table_ident(name: &TableName) -> Result<TableIdent, CatalogError> {
    let namespace = NamespaceIdent::from_vec(name.namespace.clone()).map_err(|error| load_failed(name, error))?;
    Ok(TableIdent::new(namespace, name.name.clone()))
}

fn unreachable(uri: &str, error: iceberg::Error) -> CatalogError {
    CatalogError::Unreachable { uri: uri.to_string(), reason: root_cause(&error), source: Some(Arc::new(error)) }
}

fn load_failed(name: &TableName, error: iceberg::Error) -> CatalogError {
    CatalogError::LoadTable { table: name.to_string(), reason: root_cause(&error), source: Some(Arc::new(error)) }
}

fn is_connection_error(error: &iceberg::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = current {
        if cause.downcast_ref::<sqlx::Error>().is_some() || cause.downcast_ref::<reqwest::Error>().is_some() {
            return true;
        }
        current = cause.source();
    }
    false
}

/// The SQL catalog parses its pool settings with `unwrap()`: check them first.
fn check_pool_properties(properties: &HashMap<String, String>) -> Result<(), CatalogError> {
    for (key, kind) in [
        ("pool.max-connections", "a whole number"),
        ("pool.idle-timeout", "a whole number of seconds"),
        ("pool.test-before-acquire", "true or false"),
    ] {
        let Some(value) = properties.get(key) else { continue };
        let valid = match key {
            "pool.test-before-acquire" => value.parse::<bool>().is_ok(),
            _ => value.parse::<u64>().is_ok(),
        };
        if !valid {
            return Err(CatalogError::InvalidSetting {
                key: key.to_string(),
                reason: format!("expected {kind}, found `{value}`"),
            });
        }
    }
    Ok(())
}

/// A missing SQLite file would otherwise surface as "unable to open database file".
fn check_sqlite_file(uri: &str, redacted: &str) -> Result<(), CatalogError> {
    let Some(rest) = uri.strip_prefix("sqlite:") else { return Ok(()) };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (file, query) = rest.split_once('?').map_or((rest, ""), |(file, query)| (file, query));
    if file == ":memory:" || query.contains("mode=rwc") {
        return Ok(());
    }
    if std::path::Path::new(file).is_file() {
        Ok(())
    } else {
        Err(CatalogError::Unreachable {
            uri: redacted.to_string(),
            reason: format!("the catalog database file `{file}` does not exist"),
            source: None,
        })
    }
}
