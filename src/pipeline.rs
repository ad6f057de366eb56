//! The one place the stages meet: load the table → the sensor observes (given what history
//! holds of its progress) → for each step: history windows → judge → append (after judging, so a
//! value never scores against itself) → metrics and the latest results. The loop is the same
//! for every kind; it owns no maths, no SQL and nothing kind-specific.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use iceberg::table::Table;

use crate::catalog::{CatalogConnection, CatalogError, CatalogHandle};
use crate::config::{Config, SensorKind, TableConfig};
use crate::export::metrics::Metrics;
use crate::history::{HistoryError, HistoryStore, Point, SeriesKey};
use crate::sensors::{
    Evaluation, Input, ResultListener, Seen, Sensor, SensorError, SensorResult, Step, WindowRequest, Windows,
};

/// Why the pipeline could not start at all (a failing sensor never gets here).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("failed to open the history store")]
    History(#[from] HistoryError),
}

pub struct Pipeline {
    config: Arc<Config>,
    catalog: CatalogConnection,
    history: HistoryStore,
    metrics: Arc<Metrics>,
    /// Every sensor kind of this build ([`crate::sensors::registry`]).
    sensors: Vec<Box<dyn Sensor>>,
    results: Mutex<BTreeMap<(String, SensorKind), SensorResult>>,
    /// Told the latest results after every run ([`Pipeline::subscribe`]).
    listeners: std::sync::RwLock<Vec<Arc<dyn ResultListener>>>,
}

impl Pipeline {
    /// Opens the history store (an error stops the service: nothing could be recorded). The
    /// catalog is connected on first use and retried with backoff after a failed attempt, so a
    /// catalog that is down at start-up becomes `error` results, not a crash.
    pub async fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Pipeline, PipelineError> {
        let history = HistoryStore::open(&config.history.location).await?;
        metrics.set_runbook_base_url(&config.server.runbook_base_url);
        Ok(Pipeline {
            catalog: CatalogConnection::new(config.catalog.clone()),
            config,
            history,
            metrics,
            sensors: crate::sensors::registry(),
            results: Mutex::new(BTreeMap::new()),
            listeners: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Tells `listener` the latest results after every run from now on.
    pub fn subscribe(&self, listener: Arc<dyn ResultListener>) {
        self.listeners.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(listener);
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn history(&self) -> &HistoryStore {
        &self.history
    }

    /// The connected catalog, connecting when needed ([`CatalogConnection`]).
    pub async fn catalog(&self) -> Result<CatalogHandle, CatalogError> {
        self.catalog.get().await
    }

    async fn load(&self, table: &TableConfig) -> Result<Table, CatalogError> {
        self.catalog().await?.load_table(&table.name).await
    }

    /// One pass over the tables named in `only` (all when empty), each table loaded once and
    /// its sensors run in order; tables run concurrently up to `defaults.concurrency`.
    pub async fn run_all(&self, only: &[String]) -> Vec<SensorResult> {
        let tables: Vec<&TableConfig> = self
            .config
            .tables
            .iter()
            .filter(|table| only.is_empty() || only.iter().any(|name| name == table.name.as_str()))
            .collect();
        let concurrency = self.config.defaults.concurrency.max(1);
        let runs = futures::stream::iter(
            tables.into_iter().map(|table| async move { self.run_table(table, &table.sensor_kinds()).await }),
        )
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
        let mut results: Vec<SensorResult> = runs.into_iter().flatten().collect();
        let order: HashMap<&str, usize> =
            self.config.tables.iter().enumerate().map(|(index, table)| (table.name.as_str(), index)).collect();
        results.sort_by_key(|result| (order.get(result.table.as_str()).copied(), result.sensor));
        results
    }

    /// Runs `kinds` on one table, loading its metadata once. A panic while loading or in a
    /// sensor is caught and becomes that run's `error` result (`reason="internal"`), so every
    /// pass (the first, the one after a reload, `check`, a scheduled run) is isolated alike.
    pub async fn run_table(&self, table: &TableConfig, kinds: &[SensorKind]) -> Vec<SensorResult> {
        let started = Instant::now();
        let loaded = isolated(self.load(table)).await;
        let mut results = Vec::new();
        for kind in kinds {
            let kind_started = Instant::now();
            let internal =
                |panic: String| SensorError::Internal { table: table.name.to_string(), sensor: *kind, panic };
            let outcome = match &loaded {
                Ok(Ok(iceberg_table)) => isolated(self.observe_with_timeout(iceberg_table, table, *kind))
                    .await
                    .unwrap_or_else(|panic| Err(internal(panic))),
                Ok(Err(error)) => Err(SensorError::Catalog(error.clone())),
                Err(panic) => Err(internal(panic.clone())),
            };
            let elapsed = if results.is_empty() { started.elapsed() } else { kind_started.elapsed() };
            results.push(self.finish(table, *kind, outcome, elapsed));
        }
        results
    }

    /// Runs one sensor of one table (what the scheduler calls).
    pub async fn run_sensor(&self, table_name: &str, kind: SensorKind) -> Option<SensorResult> {
        let table = self.config.table(table_name)?;
        self.run_table(table, &[kind]).await.pop()
    }

    async fn observe_with_timeout(
        &self,
        iceberg_table: &Table,
        table: &TableConfig,
        kind: SensorKind,
    ) -> Result<Vec<Evaluation>, SensorError> {
        let timeout = table.settings(kind).map_or(self.config.defaults.timeout, |settings| settings.timeout);
        let deadline = Instant::now() + timeout;
        tokio::time::timeout(timeout, self.observe_and_judge(iceberg_table, table, kind, deadline))
            .await
            .unwrap_or_else(|_| {
                Err(SensorError::Timeout { table: table.name.to_string(), sensor: kind, seconds: timeout.as_secs() })
            })
    }

    fn finish(
        &self,
        table: &TableConfig,
        kind: SensorKind,
        outcome: Result<Vec<Evaluation>, SensorError>,
        elapsed: Duration,
    ) -> SensorResult {
        let name = table.name.as_str();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let evaluations = match outcome {
            Ok(evaluations) => evaluations,
            Err(error) => {
                tracing::warn!(table = name, sensor = %kind, reason = error.reason(), error = %crate::sensors::error_chain(&error), "sensor run failed");
                self.metrics.record_error(name, kind, error.reason());
                vec![Evaluation::error(name, kind, &error)]
            }
        };
        self.metrics.record_run(name, &table.layer, kind, &evaluations, elapsed.as_secs_f64(), now_ms as f64 / 1000.0);
        let result = SensorResult {
            table: name.to_string(),
            layer: table.layer.clone(),
            sensor: kind,
            evaluations,
            finished_at_ms: now_ms,
            duration: elapsed,
        };
        if let Ok(mut results) = self.results.lock() {
            results.insert((name.to_string(), kind), result.clone());
        }
        let listeners = self.listeners.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if !listeners.is_empty() {
            let latest = self.latest_results();
            for listener in listeners {
                listener.results_changed(&latest);
            }
        }
        result
    }

    /// The one loop every kind runs: the sensor observes (given what history holds of its
    /// progress), then each step in commit order has its windows read, is judged and has its
    /// points stored; the last judged step is the run's result. Metrics are set from the
    /// results and the sensor's readings.
    async fn observe_and_judge(
        &self,
        iceberg_table: &Table,
        table: &TableConfig,
        kind: SensorKind,
        deadline: Instant,
    ) -> Result<Vec<Evaluation>, SensorError> {
        // Lineage is judged per pipeline (from every table's results) by `Lineage`, not per table.
        let Some(sensor) = self.sensors.iter().find(|sensor| sensor.kind() == kind) else { return Ok(Vec::new()) };
        let name = table.name.as_str();
        // The newest stored time of each series the steps touch; the progress series' is known.
        let mut stored_until: HashMap<SeriesKey, Option<i64>> = HashMap::new();
        let seen = match sensor.progress(table) {
            Some((series, limit)) => {
                let seen = self.seen(name, &series, limit).await?;
                stored_until.insert(series, seen.latest_ms);
                seen
            }
            None => Seen::default(),
        };
        let previous = self.results.lock().ok().and_then(|results| results.get(&(name.to_string(), kind)).cloned());
        let input = Input {
            table: iceberg_table,
            config: table,
            now_ms: chrono::Utc::now().timestamp_millis(),
            deadline,
            seen,
            previous,
        };
        let observed = sensor.observe(&input).await?;
        let (evaluations, new_anomalies) = self.run_steps(name, observed.steps, stored_until).await?;
        self.metrics.record_judged(name, &table.layer, &evaluations, &new_anomalies, &observed.readings);
        Ok(evaluations)
    }

    /// The newest stored points of a sensor's progress series.
    async fn seen(&self, table: &str, series: &SeriesKey, limit: usize) -> Result<Seen, SensorError> {
        let points = self
            .history
            .window(series, i64::MAX, limit.max(1))
            .await
            .map_err(|source| SensorError::History { table: table.to_string(), source })?;
        Ok(Seen {
            latest_ms: points.iter().map(|point| point.observed_at_ms).max(),
            snapshot_ids: points.iter().filter_map(|point| point.snapshot_id).collect(),
        })
    }

    /// Runs the steps in order: backfill points are stored before the next judge reads its
    /// windows, a judged step's own points after its judge ran. A point is stored only when it
    /// is newer than its series' newest point before the run (the store keeps history, the
    /// snapshot log only repeats it). Returns the last judge's results and the counted
    /// anomalies of the steps new to the store.
    async fn run_steps(
        &self,
        table: &str,
        steps: Vec<Step<'_>>,
        mut stored_until: HashMap<SeriesKey, Option<i64>>,
    ) -> Result<(Vec<Evaluation>, Vec<Evaluation>), SensorError> {
        let history_error = |source| SensorError::History { table: table.to_string(), source };
        let mut unstored: Vec<Point> = Vec::new();
        let mut events = Vec::new();
        let mut evaluations = Vec::new();
        let mut new_anomalies = Vec::new();
        let total = steps.len();
        for (index, step) in steps.into_iter().enumerate() {
            if let Some(judging) = step.judging {
                self.store(table, &mut unstored, &mut events).await?;
                let windows = self.fetch_windows(table, &judging.requests).await?;
                evaluations = (judging.judge)(&windows);
                if judging.counts_anomalies {
                    new_anomalies
                        .extend(evaluations.iter().filter(|evaluation| evaluation.is_counted_anomaly()).cloned());
                }
                if index % 10 == 9 && total > 10 {
                    tracing::info!(table, judged = index + 1, of = total, "catching up with the snapshot log");
                }
            }
            for point in step.points {
                if !stored_until.contains_key(&point.series) {
                    let until = self
                        .history
                        .latest(&point.series)
                        .await
                        .map_err(history_error)?
                        .map(|point| point.observed_at_ms);
                    if until.is_none() {
                        tracing::info!(table, series = %point.series, "starting the history of a series (backfilled from the snapshot log)");
                    }
                    stored_until.insert(point.series.clone(), until);
                }
                if stored_until[&point.series].is_none_or(|until| point.observed_at_ms > until) {
                    unstored.push(point);
                }
            }
            events.extend(step.events);
        }
        self.store(table, &mut unstored, &mut events).await?;
        Ok((evaluations, new_anomalies))
    }

    /// Stores what the steps so far brought, in one write each.
    async fn store(
        &self,
        table: &str,
        points: &mut Vec<Point>,
        events: &mut Vec<crate::history::Event>,
    ) -> Result<(), SensorError> {
        let history_error = |source| SensorError::History { table: table.to_string(), source };
        if !events.is_empty() {
            self.history.record_events(events).await.map_err(history_error)?;
            events.clear();
        }
        if !points.is_empty() {
            self.history.append(points).await.map_err(history_error)?;
            points.clear();
        }
        Ok(())
    }

    async fn fetch_windows(&self, table: &str, requests: &[WindowRequest]) -> Result<Windows, SensorError> {
        let mut windows = Windows::new();
        for request in requests {
            let points = match request.since_ms {
                Some(since) => {
                    let mut points = self
                        .history
                        .range(&request.series, since, request.before_ms)
                        .await
                        .map_err(|source| SensorError::History { table: table.to_string(), source })?;
                    if points.len() > request.limit {
                        points.drain(..points.len() - request.limit);
                    }
                    points
                }
                None => self
                    .history
                    .window(&request.series, request.before_ms, request.limit)
                    .await
                    .map_err(|source| SensorError::History { table: table.to_string(), source })?,
            };
            windows.insert(request.series.clone(), points);
        }
        Ok(windows)
    }

    /// The latest result of every sensor that ran, in config order.
    pub fn latest_results(&self) -> Vec<SensorResult> {
        let Ok(results) = self.results.lock() else { return Vec::new() };
        let order: HashMap<&str, usize> =
            self.config.tables.iter().enumerate().map(|(index, table)| (table.name.as_str(), index)).collect();
        let mut latest: Vec<SensorResult> = results.values().cloned().collect();
        latest.sort_by_key(|result| (order.get(result.table.as_str()).copied(), result.sensor));
        latest
    }

    /// Refreshes the gauges that describe the store itself. Cheap: it reads the store's
    /// tally, never counts rows (this runs on every scrape and push).
    pub async fn refresh_store_metrics(&self) {
        self.metrics.icewatch_history_points.set(i64::try_from(self.history.stored_points()).unwrap_or(i64::MAX));
    }
}

/// Runs `future`, turning a panic into its message.
async fn isolated<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    std::panic::AssertUnwindSafe(future).catch_unwind().await.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}
