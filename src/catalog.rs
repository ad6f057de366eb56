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
    /// Reading the table's metadata failed in the operating system or storage (too many open
    /// files, permission denied, connection reset): not a sign the metadata is wrong.
    #[error("failed to read the metadata of table `{table}`: {reason}")]
    Io {
        table: String,
        reason: String,
        #[source]
        source: Option<Arc<iceberg::Error>>,
    },
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
            CatalogError::Io { .. } => "io",
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
        result.map_err(|error| classify_load_error(name, &self.uri, error))
    }
}

impl CatalogHandle {
    /// The tables the catalog lists in `name`'s namespace, as `ns.table` (empty when it cannot
    /// list them): what a "did you mean" for a table that was not found chooses from.
    pub async fn tables_beside(&self, name: &TableName) -> Vec<String> {
        let Ok(namespace) = NamespaceIdent::from_vec(name.namespace.clone()) else { return Vec::new() };
        match tokio::time::timeout(CONNECT_TIMEOUT, self.catalog.list_tables(&namespace)).await {
            Ok(Ok(tables)) => tables
                .iter()
                .map(|table| format!("{}.{}", table.namespace().clone().inner().join("."), table.name()))
                .collect(),
            _ => Vec::new(),
        }
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

/// What a failed `load_table` means, from the error's kind and causes: a missing table, a
/// catalog server that answered an HTTP error (its status kept in the message), a connection or
/// OS-level failure (`io`, the OS error kept), or metadata that does not parse.
fn classify_load_error(name: &TableName, uri: &str, error: iceberg::Error) -> CatalogError {
    match error.kind() {
        ErrorKind::TableNotFound | ErrorKind::NamespaceNotFound => {
            return CatalogError::TableNotFound { table: name.to_string(), uri: uri.to_string() };
        }
        ErrorKind::DataInvalid | ErrorKind::FeatureUnsupported => return load_failed(name, error),
        _ => {}
    }
    if let Some(status) = http_status(&error) {
        return CatalogError::Unreachable {
            uri: uri.to_string(),
            reason: format!("the catalog answered HTTP {status}"),
            source: Some(Arc::new(error)),
        };
    }
    if is_connection_error(&error) {
        return unreachable(uri, error);
    }
    if crate::errors::os_error(&error).is_some() {
        return CatalogError::Io { table: name.to_string(), reason: root_cause(&error), source: Some(Arc::new(error)) };
    }
    load_failed(name, error)
}

/// The HTTP status a REST catalog answered with, when the error is an unexpected response (the
/// REST client keeps it only in the error's context, so it is read from its text).
fn http_status(error: &iceberg::Error) -> Option<String> {
    let text = error.to_string();
    let start = text.find("status: ")? + "status: ".len();
    let status: String = text[start..].chars().take_while(|c| *c != ',' && *c != '\n' && *c != '}').collect();
    let status = status.trim();
    status.split(' ').next()?.parse::<u16>().ok().map(|_| status.to_string())
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

/// The catalog names a SQL catalog's database holds tables for (its `iceberg_tables`), read
/// with a short-lived read-only connection; `None` for a REST catalog or when it cannot be read.
/// For "a wrong catalog `name`": every table is then "not found", and this says why once.
pub async fn sql_catalog_names(config: &CatalogConfig) -> Option<Vec<String>> {
    use sqlx::Connection;
    if config.kind != CatalogKind::Sql {
        return None;
    }
    const QUERY: &str = "SELECT DISTINCT catalog_name FROM iceberg_tables ORDER BY catalog_name";
    let uri = config.uri.expose();
    let reading = async {
        if uri.starts_with("sqlite:") {
            let options: sqlx::sqlite::SqliteConnectOptions = uri.parse().ok()?;
            let mut connection = sqlx::SqliteConnection::connect_with(&options.read_only(true)).await.ok()?;
            let names: Vec<String> = sqlx::query_scalar(QUERY).fetch_all(&mut connection).await.ok()?;
            let _ = connection.close().await;
            Some(names)
        } else {
            let mut connection = sqlx::PgConnection::connect(uri).await.ok()?;
            let names: Vec<String> = sqlx::query_scalar(QUERY).fetch_all(&mut connection).await.ok()?;
            let _ = connection.close().await;
            Some(names)
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, reading).await.ok().flatten()
}

/// The SQLite file a SQL catalog names, when it does not exist (a wrong path in the config).
pub fn missing_sqlite_file(config: &CatalogConfig) -> Option<String> {
    if config.kind != CatalogKind::Sql {
        return None;
    }
    match check_sqlite_file(config.uri.expose(), "") {
        Err(CatalogError::Unreachable { reason, .. }) => Some(reason),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableName {
        TableName::parse("db.orders").unwrap()
    }

    /// The REST client's error for an unexpected answer, as iceberg-catalog-rest builds it.
    fn rest_answer(status: &str) -> iceberg::Error {
        iceberg::Error::new(ErrorKind::Unexpected, "Received response with unexpected status code")
            .with_context("status", status)
            .with_context("headers", "{\"content-type\": \"application/json\"}")
    }

    #[test]
    fn a_rest_server_error_is_the_catalog_being_unavailable_with_its_status() {
        let error = classify_load_error(&table(), "https://rest", rest_answer("500 Internal Server Error"));
        assert_eq!(error.reason(), "catalog_unavailable");
        assert!(error.to_string().contains("HTTP 500 Internal Server Error"), "{error}");
        let error = classify_load_error(&table(), "https://rest", rest_answer("503 Service Unavailable"));
        assert!(error.to_string().contains("HTTP 503"), "{error}");
    }

    #[test]
    fn an_os_error_is_io_and_keeps_the_os_message() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let error = iceberg::Error::new(ErrorKind::Unexpected, "Failure in doing io operation").with_source(emfile);
        let classified = classify_load_error(&table(), "sqlite://catalog.db", error);
        assert_eq!(classified.reason(), "io");
        let message = crate::errors::error_chain(&classified);
        assert!(message.contains("os error 24"), "{message}");
    }

    #[test]
    fn metadata_that_does_not_parse_stays_metadata_invalid() {
        let error = iceberg::Error::new(ErrorKind::DataInvalid, "Failed to parse table metadata");
        assert_eq!(classify_load_error(&table(), "sqlite://catalog.db", error).reason(), "metadata_invalid");
    }
}
