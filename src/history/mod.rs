//! The durable history of every observed value and notable event, in SQLite (a file, the
//! default) or PostgreSQL. It stores and retrieves; it does not score, schedule or export, and it
//! never logs or prints a PostgreSQL password.
//!
//! Writes are idempotent, so a re-run of a tick or a backfill from the snapshot log can append
//! the same points again without duplicating them: a point is identified by its series, its
//! time and its snapshot id (a missing snapshot id counts as one value of its own). Each
//! `append` is one transaction: after a crash, a batch is either wholly there or not at all.

pub mod retention;
mod sql;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Where the history lives.
#[derive(Clone, PartialEq, Eq)]
pub enum HistoryLocation {
    /// A SQLite database file; its parent directory and the file are created when missing.
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URI. It may carry a password: `Display` and `Debug`
    /// replace it with `***`.
    Postgres(String),
}

impl HistoryLocation {
    /// The location as it may appear in logs and errors (a PostgreSQL password is masked).
    pub fn redacted(&self) -> String {
        match self {
            HistoryLocation::Sqlite(path) => path.display().to_string(),
            HistoryLocation::Postgres(uri) => crate::redact::redact_uri(uri),
        }
    }
}

impl fmt::Display for HistoryLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.redacted())
    }
}

impl fmt::Debug for HistoryLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryLocation::Sqlite(path) => formatter.debug_tuple("Sqlite").field(path).finish(),
            HistoryLocation::Postgres(uri) => {
                formatter.debug_tuple("Postgres").field(&crate::redact::redact_uri(uri)).finish()
            }
        }
    }
}

impl FromStr for HistoryLocation {
    type Err = HistoryError;

    /// `postgres://…` and `postgresql://…` are PostgreSQL; `sqlite://path`, `sqlite:path` and
    /// anything else is a SQLite file path.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(HistoryLocation::Postgres(text.to_string()));
        }
        let path = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")).unwrap_or(text);
        if path.is_empty() {
            return Err(HistoryError::EmptyLocation);
        }
        Ok(HistoryLocation::Sqlite(PathBuf::from(path)))
    }
}

/// One time series: a metric of a sensor on a table, with optional labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub table: String,
    pub sensor: String,
    pub metric: String,
    /// Canonical `k=v,k2=v2`, sorted by key, with `,` `=` `\` escaped by `\`; `""` if none.
    pub labels: String,
}

impl SeriesKey {
    pub fn new(table: &str, sensor: &str, metric: &str, labels: &[(&str, &str)]) -> Self {
        let mut sorted = labels.to_vec();
        sorted.sort();
        let labels = sorted
            .iter()
            .map(|(key, value)| format!("{}={}", escape_label(key), escape_label(value)))
            .collect::<Vec<_>>()
            .join(",");
        SeriesKey { table: table.to_string(), sensor: sensor.to_string(), metric: metric.to_string(), labels }
    }
}

fn escape_label(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, ',' | '=' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}/{}", self.table, self.sensor, self.metric)?;
        if !self.labels.is_empty() {
            write!(formatter, "{{{}}}", self.labels)?;
        }
        Ok(())
    }
}

/// One observed value of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub series: SeriesKey,
    /// When the value was true (a commit time for backfilled points), Unix milliseconds.
    pub observed_at_ms: i64,
    /// The Iceberg snapshot the value describes, when there is one.
    pub snapshot_id: Option<i64>,
    /// Always finite: `append` refuses anything else.
    pub value: f64,
}

/// Something that happened to a table (a schema change, an anomaly), kept once per `key`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub table: String,
    pub kind: String,
    /// Dedupe key: a second event with the same (table, kind, key) is ignored.
    pub key: String,
    pub occurred_at_ms: i64,
    pub payload: serde_json::Value,
}

/// An event as stored, its payload left as text, with where it sits in the store: what
/// [`HistoryStore::events_page`] returns, so a reader can bound what it holds by the bytes it
/// reads before parsing anything.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub table: String,
    pub key: String,
    pub occurred_at_ms: i64,
    /// The payload as stored (JSON text).
    pub payload: String,
    /// Where the next (older) page starts.
    pub cursor: EventCursor,
}

/// A place in the newest-first order of the events of a kind: pass the last one of a page to
/// [`HistoryStore::events_page`] to read the page after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventCursor {
    occurred_at_ms: i64,
    id: i64,
}

/// Everything that can go wrong at the history boundary. `location` is always redacted.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history location is empty")]
    EmptyLocation,
    #[error("failed to create directory `{}` for the history store", path.display())]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open history store `{location}`")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to create or upgrade the schema of history store `{location}`")]
    Migrate {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "history store `{location}` has schema version {found}, newer than version {supported} that this icewatch understands"
    )]
    NewerSchema { location: String, found: i64, supported: i64 },
    #[error("failed to {operation} in history store `{location}`")]
    Query {
        location: String,
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("refusing to store non-finite value `{value}` of series `{series}` at {observed_at_ms} ms")]
    NonFiniteValue { series: SeriesKey, observed_at_ms: i64, value: f64 },
    #[error("event `{kind}` `{key}` of table `{table}` in history store `{location}` has a payload that is not JSON")]
    EventPayload {
        location: String,
        table: String,
        kind: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same body against whichever pool the store holds: the statements are shared text
/// (see `sql.rs`) and the row types decode the same in both drivers.
macro_rules! on_backend {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// How long a SQLite writer waits for another writer's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a pooled connection (and for PostgreSQL to accept a new one).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);
const POOL_SIZE: u32 = 4;

/// A handle to the history store; cloning is cheap (the pool is shared).
#[derive(Clone)]
pub struct HistoryStore {
    backend: Backend,
    /// Redacted, for error messages.
    location: Arc<str>,
    tally: Arc<PointTally>,
}

/// How many points the store holds, without counting rows on every scrape: counted once at
/// open, kept current by this process's appends, and recounted in the background when older
/// than [`RECOUNT_AFTER`] (other processes, `check` or a replica, may write the same store).
#[derive(Debug, Default)]
struct PointTally {
    points: std::sync::atomic::AtomicU64,
    counted_at: std::sync::Mutex<Option<std::time::Instant>>,
    recounting: std::sync::atomic::AtomicBool,
}

/// How old the point tally may get before a background recount.
const RECOUNT_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

impl fmt::Debug for HistoryStore {
    /// Only the redacted location: pool internals could carry connection options.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("HistoryStore").field("location", &self.location).finish()
    }
}

type PointRow = (i64, Option<i64>, f64);
type EventRow = (String, String, String, i64, String);
type EventPageRow = (i64, String, String, i64, String);

impl HistoryStore {
    /// Opens (and creates when missing) the store and brings its schema up to date.
    ///
    /// SQLite runs in WAL mode with `synchronous=FULL`, so a transaction that returned is on
    /// disk even if the process is killed right after, and with a busy timeout so concurrent
    /// writers wait instead of failing.
    pub async fn open(location: &HistoryLocation) -> Result<Self, HistoryError> {
        let redacted = location.redacted();
        let open_error = |source| HistoryError::Open { location: redacted.clone(), source };
        let backend = match location {
            HistoryLocation::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|source| HistoryError::CreateDirectory { path: parent.to_path_buf(), source })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                Backend::Sqlite(pool)
            }
            HistoryLocation::Postgres(uri) => {
                let options = PgConnectOptions::from_str(uri).map_err(open_error)?;
                let pool = PgPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                Backend::Postgres(pool)
            }
        };
        let store = HistoryStore { backend, location: Arc::from(redacted.as_str()), tally: Arc::default() };
        store.migrate().await?;
        store.recount().await?;
        Ok(store)
    }

    /// A private SQLite database in memory (one connection that never closes), for tests.
    pub async fn open_in_memory() -> Result<Self, HistoryError> {
        let location = ":memory:";
        let open_error = |source| HistoryError::Open { location: location.to_string(), source };
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(open_error)?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let store =
            HistoryStore { backend: Backend::Sqlite(pool), location: Arc::from(location), tally: Arc::default() };
        store.migrate().await?;
        store.recount().await?;
        Ok(store)
    }

    /// The location this store was opened at, password masked.
    pub fn location(&self) -> &str {
        &self.location
    }

    async fn migrate(&self) -> Result<(), HistoryError> {
        let migrate_error = |source| HistoryError::Migrate { location: self.location.to_string(), source };
        let found: Option<i64> = on_backend!(&self.backend, pool => {
            let mut transaction = pool.begin().await.map_err(migrate_error)?;
            let statements = if matches!(self.backend, Backend::Postgres(_)) {
                sqlx::query(sql::POSTGRES_MIGRATION_LOCK)
                    .execute(&mut *transaction)
                    .await
                    .map_err(migrate_error)?;
                sql::POSTGRES_SCHEMA
            } else {
                sql::SQLITE_SCHEMA
            };
            for statement in statements {
                sqlx::query(statement).execute(&mut *transaction).await.map_err(migrate_error)?;
            }
            let found: Option<i64> = sqlx::query_scalar(sql::SELECT_SCHEMA_VERSION)
                .fetch_one(&mut *transaction)
                .await
                .map_err(migrate_error)?;
            if found.is_none() {
                sqlx::query(sql::INSERT_SCHEMA_VERSION)
                    .bind(sql::SCHEMA_VERSION)
                    .execute(&mut *transaction)
                    .await
                    .map_err(migrate_error)?;
            }
            transaction.commit().await.map_err(migrate_error)?;
            found
        });
        match found {
            Some(found) if found > sql::SCHEMA_VERSION => Err(HistoryError::NewerSchema {
                location: self.location.to_string(),
                found,
                supported: sql::SCHEMA_VERSION,
            }),
            _ => Ok(()),
        }
    }

    fn query_error(&self, operation: &'static str) -> impl Fn(sqlx::Error) -> HistoryError + '_ {
        move |source| HistoryError::Query { location: self.location.to_string(), operation, source }
    }

    /// Appends `points` in one transaction and returns how many were new. A point whose
    /// (series, time, snapshot) is already stored, or repeated within `points`, is skipped.
    /// Non-finite values are refused before anything is written.
    pub async fn append(&self, points: &[Point]) -> Result<usize, HistoryError> {
        if let Some(point) = points.iter().find(|point| !point.value.is_finite()) {
            return Err(HistoryError::NonFiniteValue {
                series: point.series.clone(),
                observed_at_ms: point.observed_at_ms,
                value: point.value,
            });
        }
        if points.is_empty() {
            return Ok(0);
        }
        let query_error = self.query_error("append points");
        let inserted = on_backend!(&self.backend, pool => {
            let mut transaction = pool.begin().await.map_err(&query_error)?;
            let mut series_ids: HashMap<&SeriesKey, i64> = HashMap::new();
            let mut inserted = 0u64;
            for point in points {
                let series_id = match series_ids.get(&point.series) {
                    Some(id) => *id,
                    None => {
                        let series = &point.series;
                        sqlx::query(sql::INSERT_SERIES)
                            .bind(series.table.as_str())
                            .bind(series.sensor.as_str())
                            .bind(series.metric.as_str())
                            .bind(series.labels.as_str())
                            .execute(&mut *transaction)
                            .await
                            .map_err(&query_error)?;
                        let id: i64 = sqlx::query_scalar(sql::SELECT_SERIES_ID)
                            .bind(series.table.as_str())
                            .bind(series.sensor.as_str())
                            .bind(series.metric.as_str())
                            .bind(series.labels.as_str())
                            .fetch_one(&mut *transaction)
                            .await
                            .map_err(&query_error)?;
                        series_ids.insert(series, id);
                        id
                    }
                };
                let result = sqlx::query(sql::INSERT_POINT)
                    .bind(series_id)
                    .bind(point.observed_at_ms)
                    .bind(point.snapshot_id)
                    .bind(point.value)
                    .execute(&mut *transaction)
                    .await
                    .map_err(&query_error)?;
                inserted += result.rows_affected();
            }
            transaction.commit().await.map_err(&query_error)?;
            inserted
        });
        self.tally.points.fetch_add(inserted, std::sync::atomic::Ordering::Relaxed);
        Ok(usize::try_from(inserted).unwrap_or(usize::MAX))
    }

    /// The newest `limit` points of `series` observed strictly before `before_ms`, oldest first:
    /// the scoring window for a value observed at `before_ms`.
    pub async fn window(&self, series: &SeriesKey, before_ms: i64, limit: usize) -> Result<Vec<Point>, HistoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query_error = self.query_error("read a history window");
        let rows: Vec<PointRow> = on_backend!(&self.backend, pool => {
            sqlx::query_as(sql::WINDOW)
                .bind(series.table.as_str())
                .bind(series.sensor.as_str())
                .bind(series.metric.as_str())
                .bind(series.labels.as_str())
                .bind(before_ms)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(&query_error)?
        });
        Ok(rows.into_iter().rev().map(|row| to_point(series, row)).collect())
    }

    /// Points of `series` with `since_ms <= observed_at_ms < before_ms`, oldest first.
    pub async fn range(&self, series: &SeriesKey, since_ms: i64, before_ms: i64) -> Result<Vec<Point>, HistoryError> {
        let query_error = self.query_error("read a history range");
        let rows: Vec<PointRow> = on_backend!(&self.backend, pool => {
            sqlx::query_as(sql::RANGE)
                .bind(series.table.as_str())
                .bind(series.sensor.as_str())
                .bind(series.metric.as_str())
                .bind(series.labels.as_str())
                .bind(since_ms)
                .bind(before_ms)
                .fetch_all(pool)
                .await
                .map_err(&query_error)?
        });
        Ok(rows.into_iter().map(|row| to_point(series, row)).collect())
    }

    /// The newest point of `series`, if any.
    pub async fn latest(&self, series: &SeriesKey) -> Result<Option<Point>, HistoryError> {
        let query_error = self.query_error("read the latest point");
        let row: Option<PointRow> = on_backend!(&self.backend, pool => {
            sqlx::query_as(sql::LATEST)
                .bind(series.table.as_str())
                .bind(series.sensor.as_str())
                .bind(series.metric.as_str())
                .bind(series.labels.as_str())
                .fetch_optional(pool)
                .await
                .map_err(&query_error)?
        });
        Ok(row.map(|row| to_point(series, row)))
    }

    /// Whether the point identified by (series, time, snapshot) is stored.
    pub async fn contains(
        &self,
        series: &SeriesKey,
        observed_at_ms: i64,
        snapshot_id: Option<i64>,
    ) -> Result<bool, HistoryError> {
        let query_error = self.query_error("look up a point");
        let row: Option<PointRow> = on_backend!(&self.backend, pool => {
            let query = match snapshot_id {
                Some(_) => sqlx::query_as(sql::CONTAINS_WITH_SNAPSHOT),
                None => sqlx::query_as(sql::CONTAINS_WITHOUT_SNAPSHOT),
            };
            let query = query
                .bind(series.table.as_str())
                .bind(series.sensor.as_str())
                .bind(series.metric.as_str())
                .bind(series.labels.as_str())
                .bind(observed_at_ms);
            let query = match snapshot_id {
                Some(snapshot_id) => query.bind(snapshot_id),
                None => query,
            };
            query.fetch_optional(pool).await.map_err(&query_error)?
        });
        Ok(row.is_some())
    }

    /// Every series stored for `table`, sorted.
    pub async fn series_for_table(&self, table: &str) -> Result<Vec<SeriesKey>, HistoryError> {
        let query_error = self.query_error("list series");
        let rows: Vec<(String, String, String, String)> = on_backend!(&self.backend, pool => {
            sqlx::query_as(sql::SERIES_FOR_TABLE)
                .bind(table)
                .fetch_all(pool)
                .await
                .map_err(&query_error)?
        });
        Ok(rows
            .into_iter()
            .map(|(table, sensor, metric, labels)| SeriesKey { table, sensor, metric, labels })
            .collect())
    }

    /// Records `events` in one transaction and returns how many were new; an event whose
    /// (table, kind, key) is already stored is skipped.
    pub async fn record_events(&self, events: &[Event]) -> Result<usize, HistoryError> {
        if events.is_empty() {
            return Ok(0);
        }
        let query_error = self.query_error("record events");
        let inserted = on_backend!(&self.backend, pool => {
            let mut transaction = pool.begin().await.map_err(&query_error)?;
            let mut inserted = 0u64;
            for event in events {
                let result = sqlx::query(sql::INSERT_EVENT)
                    .bind(event.table.as_str())
                    .bind(event.kind.as_str())
                    .bind(event.key.as_str())
                    .bind(event.occurred_at_ms)
                    .bind(event.payload.to_string())
                    .execute(&mut *transaction)
                    .await
                    .map_err(&query_error)?;
                inserted += result.rows_affected();
            }
            transaction.commit().await.map_err(&query_error)?;
            inserted
        });
        Ok(usize::try_from(inserted).unwrap_or(usize::MAX))
    }

    /// The newest `limit` events of `kind` (of one table, or of all), newest first.
    pub async fn events(&self, table: Option<&str>, kind: &str, limit: usize) -> Result<Vec<Event>, HistoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query_error = self.query_error("read events");
        let rows: Vec<EventRow> = on_backend!(&self.backend, pool => {
            let query = match table {
                Some(table) => sqlx::query_as(sql::EVENTS_OF_KIND_FOR_TABLE).bind(kind).bind(limit).bind(table),
                None => sqlx::query_as(sql::EVENTS_OF_KIND).bind(kind).bind(limit),
            };
            query.fetch_all(pool).await.map_err(&query_error)?
        });
        rows.into_iter()
            .map(|(table, kind, key, occurred_at_ms, payload)| match serde_json::from_str(&payload) {
                Ok(payload) => Ok(Event { table, kind, key, occurred_at_ms, payload }),
                Err(source) => {
                    Err(HistoryError::EventPayload { location: self.location.to_string(), table, kind, key, source })
                }
            })
            .collect()
    }

    /// At most `limit` events of `kind` that occurred at or after `since_ms`, newest first,
    /// starting after `after` (the cursor of the last event of the previous page; `None` for the
    /// first page). Payloads stay text: the caller decides how much of them to keep.
    pub async fn events_page(
        &self,
        kind: &str,
        since_ms: i64,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, HistoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = after.unwrap_or(EventCursor { occurred_at_ms: i64::MAX, id: i64::MAX });
        let query_error = self.query_error("read a page of events");
        let rows: Vec<EventPageRow> = on_backend!(&self.backend, pool => {
            sqlx::query_as(sql::EVENTS_PAGE)
                .bind(kind)
                .bind(since_ms)
                .bind(after.occurred_at_ms)
                .bind(after.id)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(&query_error)?
        });
        Ok(rows
            .into_iter()
            .map(|(id, table, key, occurred_at_ms, payload)| StoredEvent {
                table,
                key,
                occurred_at_ms,
                payload,
                cursor: EventCursor { occurred_at_ms, id },
            })
            .collect())
    }

    /// Deletes at most `limit` events of `kind` that occurred before `before_ms`, oldest first,
    /// and returns how many went. One bounded statement: call it again while it returns `limit`.
    pub async fn delete_events_before(&self, kind: &str, before_ms: i64, limit: usize) -> Result<u64, HistoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query_error = self.query_error("delete old events");
        let deleted = on_backend!(&self.backend, pool => {
            sqlx::query(sql::DELETE_EVENTS_BEFORE)
                .bind(kind)
                .bind(before_ms)
                .bind(limit)
                .execute(pool)
                .await
                .map_err(&query_error)?
                .rows_affected()
        });
        Ok(deleted)
    }

    /// Every series by its store id, with its sensor kind (for retention).
    pub async fn series_sensors(&self) -> Result<Vec<(i64, String)>, HistoryError> {
        let query_error = self.query_error("list series");
        let rows: Vec<(i64, String)> = on_backend!(&self.backend, pool => {
            sqlx::query_as(sql::SELECT_SERIES_SENSORS).fetch_all(pool).await.map_err(&query_error)?
        });
        Ok(rows)
    }

    /// The time of the series' `keep`-th newest point; `None` when it holds fewer. Points
    /// strictly older than it are the ones beyond the newest `keep`.
    pub async fn newest_points_since(&self, series_id: i64, keep: usize) -> Result<Option<i64>, HistoryError> {
        let offset = i64::try_from(keep.saturating_sub(1)).unwrap_or(i64::MAX);
        let query_error = self.query_error("find the newest points of a series");
        let found: Option<i64> = on_backend!(&self.backend, pool => {
            sqlx::query_scalar(sql::NTH_NEWEST_POINT)
                .bind(series_id)
                .bind(offset)
                .fetch_optional(pool)
                .await
                .map_err(&query_error)?
        });
        Ok(found)
    }

    /// Deletes about `limit` of the series' oldest points observed before `before_ms` (one
    /// bounded statement: call again while it returns `limit` or more); returns how many went.
    pub async fn delete_points_before(
        &self,
        series_id: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<u64, HistoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query_error = self.query_error("delete old points");
        let deleted = on_backend!(&self.backend, pool => {
            sqlx::query(sql::DELETE_POINTS_BEFORE)
                .bind(series_id)
                .bind(before_ms)
                .bind(limit)
                .execute(pool)
                .await
                .map_err(&query_error)?
                .rows_affected()
        });
        let tally = &self.tally.points;
        let _ =
            tally.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |count| {
                Some(count.saturating_sub(deleted))
            });
        Ok(deleted)
    }

    /// How many points the store holds, from the tally (no query; see [`PointTally`]). Starts a
    /// background recount when the tally is stale.
    pub fn stored_points(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let stale = self.tally.counted_at.lock().ok().and_then(|at| *at).is_none_or(|at| at.elapsed() > RECOUNT_AFTER);
        if stale && !self.tally.recounting.swap(true, Ordering::AcqRel) && tokio::runtime::Handle::try_current().is_ok()
        {
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(error) = store.recount().await {
                    tracing::warn!(error = %crate::errors::error_chain(&error), "failed to recount history points");
                }
                store.tally.recounting.store(false, Ordering::Release);
            });
        }
        self.tally.points.load(Ordering::Relaxed)
    }

    /// Counts the points (a full count: at open and in the background only).
    async fn recount(&self) -> Result<(), HistoryError> {
        let count = self.point_count().await?;
        self.tally.points.store(count, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut at) = self.tally.counted_at.lock() {
            *at = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// How many points are stored, over all series (a full count).
    pub async fn point_count(&self) -> Result<u64, HistoryError> {
        let query_error = self.query_error("count points");
        let count: i64 = on_backend!(&self.backend, pool => {
            sqlx::query_scalar(sql::POINT_COUNT).fetch_one(pool).await.map_err(&query_error)?
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Problems SQLite's `PRAGMA integrity_check` finds (empty when the file is sound). PostgreSQL
    /// guards its own pages, so there it is always empty.
    pub async fn integrity_check(&self) -> Result<Vec<String>, HistoryError> {
        let query_error = self.query_error("check integrity");
        match &self.backend {
            Backend::Sqlite(pool) => {
                let rows: Vec<String> =
                    sqlx::query_scalar(sql::SQLITE_INTEGRITY_CHECK).fetch_all(pool).await.map_err(&query_error)?;
                Ok(rows.into_iter().filter(|row| row != "ok").collect())
            }
            Backend::Postgres(_) => Ok(Vec::new()),
        }
    }

    /// Closes every pooled connection (SQLite checkpoints its WAL when the last one closes).
    pub async fn close(&self) {
        on_backend!(&self.backend, pool => pool.close().await)
    }
}

fn to_point(series: &SeriesKey, (observed_at_ms, snapshot_id, value): PointRow) -> Point {
    Point { series: series.clone(), observed_at_ms, snapshot_id, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(metric: &str) -> SeriesKey {
        SeriesKey::new("bronze.trades", "volume", metric, &[])
    }

    fn point(series: &SeriesKey, observed_at_ms: i64, snapshot_id: Option<i64>, value: f64) -> Point {
        Point { series: series.clone(), observed_at_ms, snapshot_id, value }
    }

    #[test]
    fn labels_are_sorted_and_escaped() {
        let series = SeriesKey::new("t", "s", "m", &[("z", "1"), ("a", "x=y,\\")]);
        assert_eq!(series.labels, "a=x\\=y\\,\\\\,z=1");
        assert_eq!(series.to_string(), "t/s/m{a=x\\=y\\,\\\\,z=1}");
        assert_eq!(SeriesKey::new("t", "s", "m", &[]).labels, "");
        // Escaping keeps distinct label sets distinct.
        assert_ne!(
            SeriesKey::new("t", "s", "m", &[("a", "b,c=d")]),
            SeriesKey::new("t", "s", "m", &[("a", "b"), ("c", "d")])
        );
    }

    #[test]
    fn postgres_passwords_are_masked() {
        let location = HistoryLocation::Postgres(
            "postgres://icewatch:s3cr%40t@db.internal:5432/history?sslmode=require&password=other".into(),
        );
        let shown = format!("{location} {location:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(!shown.contains("other"), "{shown}");
        assert_eq!(
            location.to_string(),
            "postgres://icewatch:***@db.internal:5432/history?sslmode=require&password=***"
        );
        let without = HistoryLocation::Postgres("postgresql://db/history".into());
        assert_eq!(without.to_string(), "postgresql://db/history");
    }

    #[test]
    fn locations_parse() {
        assert_eq!(
            "postgres://u:p@h/db".parse::<HistoryLocation>().unwrap(),
            HistoryLocation::Postgres("postgres://u:p@h/db".into())
        );
        assert_eq!(
            "sqlite:///var/lib/icewatch/history.db".parse::<HistoryLocation>().unwrap(),
            HistoryLocation::Sqlite("/var/lib/icewatch/history.db".into())
        );
        assert_eq!(
            "state/history.db".parse::<HistoryLocation>().unwrap(),
            HistoryLocation::Sqlite("state/history.db".into())
        );
        assert!(matches!("  ".parse::<HistoryLocation>(), Err(HistoryError::EmptyLocation)));
    }

    #[tokio::test]
    async fn window_excludes_the_boundary_and_is_oldest_first() {
        let store = HistoryStore::open_in_memory().await.unwrap();
        let series = key("row_count");
        let points: Vec<Point> = (0..10).map(|i| point(&series, i * 1000, Some(i), i as f64)).collect();
        assert_eq!(store.append(&points).await.unwrap(), 10);
        let window = store.window(&series, 7000, 3).await.unwrap();
        let times: Vec<i64> = window.iter().map(|p| p.observed_at_ms).collect();
        assert_eq!(times, vec![4000, 5000, 6000]);
        let range = store.range(&series, 2000, 4000).await.unwrap();
        assert_eq!(range, vec![points[2].clone(), points[3].clone()]);
        assert_eq!(store.latest(&series).await.unwrap(), Some(points[9].clone()));
        assert_eq!(store.latest(&key("other")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn null_snapshot_is_deduplicated_like_any_other() {
        let store = HistoryStore::open_in_memory().await.unwrap();
        let series = key("freshness");
        let batch = vec![
            point(&series, 1, None, 1.0),
            point(&series, 1, None, 1.0),
            point(&series, 1, Some(0), 2.0),
            point(&series, 1, Some(7), 3.0),
        ];
        assert_eq!(store.append(&batch).await.unwrap(), 3);
        assert_eq!(store.append(&batch).await.unwrap(), 0);
        assert_eq!(store.point_count().await.unwrap(), 3);
        assert_eq!(store.stored_points(), 3, "the tally follows appends, duplicates not counted");
        assert!(store.contains(&series, 1, None).await.unwrap());
        assert!(store.contains(&series, 1, Some(0)).await.unwrap());
        assert!(!store.contains(&series, 1, Some(8)).await.unwrap());
        assert!(!store.contains(&series, 2, None).await.unwrap());
        // At one timestamp: no snapshot first, then snapshot ids ascending.
        let window = store.window(&series, 2, 10).await.unwrap();
        let snapshots: Vec<Option<i64>> = window.iter().map(|p| p.snapshot_id).collect();
        assert_eq!(snapshots, vec![None, Some(0), Some(7)]);
        assert_eq!(store.latest(&series).await.unwrap().unwrap().snapshot_id, Some(7));
    }

    #[tokio::test]
    async fn non_finite_values_are_refused_and_nothing_is_written() {
        let store = HistoryStore::open_in_memory().await.unwrap();
        let series = key("mean");
        let batch = vec![point(&series, 1, None, 1.0), point(&series, 2, None, f64::NAN)];
        let error = store.append(&batch).await.unwrap_err();
        assert!(matches!(error, HistoryError::NonFiniteValue { observed_at_ms: 2, .. }), "{error}");
        assert_eq!(store.point_count().await.unwrap(), 0);
        assert_eq!(store.stored_points(), 0);
    }

    #[tokio::test]
    async fn events_dedupe_and_filter() {
        let store = HistoryStore::open_in_memory().await.unwrap();
        let event = |table: &str, key: &str, at: i64| Event {
            table: table.into(),
            kind: "schema_change".into(),
            key: key.into(),
            occurred_at_ms: at,
            payload: json!({"change_type": "column_added", "column": key}),
        };
        let events = vec![event("a", "k1", 10), event("a", "k2", 30), event("b", "k1", 20)];
        assert_eq!(store.record_events(&events).await.unwrap(), 3);
        assert_eq!(store.record_events(&events).await.unwrap(), 0);
        let all = store.events(None, "schema_change", 10).await.unwrap();
        let order: Vec<i64> = all.iter().map(|e| e.occurred_at_ms).collect();
        assert_eq!(order, vec![30, 20, 10]);
        assert_eq!(all[0], events[1]);
        let only_a = store.events(Some("a"), "schema_change", 1).await.unwrap();
        assert_eq!(only_a, vec![events[1].clone()]);
        assert!(store.events(None, "anomaly", 10).await.unwrap().is_empty());
        let series = store.series_for_table("a").await.unwrap();
        assert!(series.is_empty());
    }

    fn lineage_event(key: usize, at: i64, payload_bytes: usize) -> Event {
        Event {
            table: String::new(),
            kind: "openlineage".into(),
            key: format!("k{key}"),
            occurred_at_ms: at,
            payload: json!({ "padding": "x".repeat(payload_bytes) }),
        }
    }

    #[tokio::test]
    async fn events_page_by_page_newest_first_and_not_before_since() {
        let store = HistoryStore::open_in_memory().await.unwrap();
        // Two events share each time, so the cursor must order by id within a time.
        let events: Vec<Event> = (0..10).map(|index| lineage_event(index, (index / 2) as i64 * 10, 1)).collect();
        store.record_events(&events).await.unwrap();
        let mut keys = Vec::new();
        let mut after = None;
        for _ in 0..10 {
            let page = store.events_page("openlineage", 10, after, 3).await.unwrap();
            keys.extend(page.iter().map(|event| event.key.clone()));
            match page.last() {
                Some(last) if page.len() == 3 => after = Some(last.cursor),
                _ => break,
            }
        }
        // Newest first; within a time the later insert first; nothing before `since` (k0, k1).
        assert_eq!(keys, ["k9", "k8", "k7", "k6", "k5", "k4", "k3", "k2"]);
        let page = store.events_page("openlineage", 0, None, 1).await.unwrap();
        assert_eq!(page[0].payload, r#"{"padding":"x"}"#, "payload stays text");
        assert!(store.events_page("schema_change", 0, None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn old_events_of_a_kind_are_deleted_in_bounded_steps() {
        let store = HistoryStore::open_in_memory().await.unwrap();
        let mut events: Vec<Event> = (0..25).map(|index| lineage_event(index, index as i64, 1)).collect();
        let mut other = lineage_event(99, 0, 1);
        other.kind = "schema_change".into();
        events.push(other);
        store.record_events(&events).await.unwrap();
        // Before 20: 20 events in steps of at most 8, oldest first.
        assert_eq!(store.delete_events_before("openlineage", 20, 8).await.unwrap(), 8);
        assert_eq!(store.delete_events_before("openlineage", 20, 8).await.unwrap(), 8);
        assert_eq!(store.delete_events_before("openlineage", 20, 8).await.unwrap(), 4);
        assert_eq!(store.delete_events_before("openlineage", 20, 8).await.unwrap(), 0);
        let left = store.events(None, "openlineage", 100).await.unwrap();
        let times: Vec<i64> = left.iter().map(|event| event.occurred_at_ms).collect();
        assert_eq!(times, vec![24, 23, 22, 21, 20]);
        assert_eq!(store.events(None, "schema_change", 10).await.unwrap().len(), 1, "other kinds stay");
    }
}
