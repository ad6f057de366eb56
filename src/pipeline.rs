//! The one place the stages meet: load the table → sensor observes → history window → judge
//! (score) → append to history (after scoring, so a value never scores against itself) →
//! metrics and the latest results. Everything it calls is a leaf; it owns no maths and no SQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use iceberg::table::Table;
use tokio::sync::Mutex as AsyncMutex;

use crate::catalog::{CatalogError, CatalogHandle};
use crate::config::{Config, SensorKind, TableConfig};
use crate::export::metrics::Metrics;
use crate::history::{HistoryError, HistoryStore, Point, SeriesKey};
use crate::lineage::Lineage;
use crate::sensors::freshness::ManifestBoundsCache;
use crate::sensors::{
    Evaluation, SensorError, SensorResult, Status, WindowRequest, Windows, distribution, freshness, schema, volume,
};

/// Why the pipeline could not start at all (a failing sensor never gets here).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("failed to open the history store")]
    History(#[from] HistoryError),
}

pub struct Pipeline {
    config: Arc<Config>,
    catalog: AsyncMutex<Option<CatalogHandle>>,
    history: HistoryStore,
    metrics: Arc<Metrics>,
    bounds_cache: ManifestBoundsCache,
    results: Mutex<BTreeMap<(String, SensorKind), SensorResult>>,
    /// Pipelines and OpenLineage runs of this configuration, re-evaluated after every run.
    lineage: Lineage,
}

impl Pipeline {
    /// Opens the history store (an error stops the service: nothing could be recorded). The
    /// catalog is connected on first use and again after a failure, so a catalog that is down
    /// at start-up becomes `error` results, not a crash.
    pub async fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Pipeline, PipelineError> {
        let history = HistoryStore::open(&config.history.location).await?;
        let lineage = Lineage::new(config.clone(), metrics.clone(), history.clone());
        if let Err(error) = lineage.restore().await {
            tracing::warn!(error = %crate::sensors::error_chain(&error), "failed to replay stored OpenLineage events");
        }
        Ok(Pipeline {
            config,
            catalog: AsyncMutex::new(None),
            history,
            metrics,
            bounds_cache: ManifestBoundsCache::default(),
            results: Mutex::new(BTreeMap::new()),
            lineage,
        })
    }

    /// Pipeline stages, root causes and OpenLineage runs of this configuration.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
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

    /// The connected catalog, connecting (again) when needed.
    pub async fn catalog(&self) -> Result<CatalogHandle, CatalogError> {
        let mut slot = self.catalog.lock().await;
        if let Some(handle) = slot.as_ref() {
            return Ok(handle.clone());
        }
        let handle = CatalogHandle::connect(&self.config.catalog).await?;
        *slot = Some(handle.clone());
        Ok(handle)
    }

    async fn load(&self, table: &TableConfig) -> Result<Table, SensorError> {
        let catalog = self.catalog().await?;
        match catalog.load_table(&table.name).await {
            Err(error @ CatalogError::Unreachable { .. }) => {
                // Reconnect next time: the pool may be broken.
                *self.catalog.lock().await = None;
                Err(error.into())
            }
            other => Ok(other?),
        }
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

    /// Runs `kinds` on one table, loading its metadata once.
    pub async fn run_table(&self, table: &TableConfig, kinds: &[SensorKind]) -> Vec<SensorResult> {
        let started = Instant::now();
        let loaded = self.load(table).await;
        let mut results = Vec::new();
        for kind in kinds {
            let kind_started = Instant::now();
            let outcome = match &loaded {
                Ok(iceberg_table) => self.observe_with_timeout(iceberg_table, table, *kind).await,
                Err(error) => Err(clone_load_error(error, table.name.as_str())),
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
        tokio::time::timeout(timeout, self.observe_and_judge(iceberg_table, table, kind)).await.unwrap_or_else(|_| {
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
        self.lineage.refresh(&self.latest_results());
        result
    }

    async fn observe_and_judge(
        &self,
        iceberg_table: &Table,
        table: &TableConfig,
        kind: SensorKind,
    ) -> Result<Vec<Evaluation>, SensorError> {
        let name = table.name.as_str();
        let layer = table.layer.as_str();
        let now_ms = chrono::Utc::now().timestamp_millis();
        match kind {
            SensorKind::Freshness => {
                let Some(config) = &table.freshness else { return Ok(Vec::new()) };
                let observation = freshness::observe(iceberg_table, name, config, now_ms, &self.bounds_cache).await?;
                let requests = freshness::window_requests(name, config, &observation);
                let (evaluations, _) = self
                    .score_series(name, freshness::series(name, &observation), &requests, |windows| {
                        freshness::judge(name, config, &observation, windows)
                    })
                    .await?;
                self.metrics.record_freshness(name, layer, config, &observation, &evaluations);
                Ok(evaluations)
            }
            SensorKind::Volume => {
                let Some(config) = &table.volume else { return Ok(Vec::new()) };
                let observation = volume::observe(iceberg_table, now_ms);
                let missed_anomalies = self.judge_missed_appends(name, config, &observation).await?;
                let requests = volume::window_requests(name, config, &observation);
                let (evaluations, stored) = self
                    .score_series(name, volume::series(name, &observation), &requests, |windows| {
                        volume::judge(name, config, &observation, windows)
                    })
                    .await?;
                let newest_added = volume::rows_added_series(name);
                let newest_anomaly =
                    stored.iter().any(|point| point.series == newest_added) && is_volume_anomaly(&evaluations);
                self.metrics.record_volume(
                    name,
                    layer,
                    &observation,
                    &evaluations,
                    missed_anomalies + u64::from(newest_anomaly),
                );
                Ok(evaluations)
            }
            SensorKind::Schema => {
                let Some(config) = &table.schema else { return Ok(Vec::new()) };
                let observation = schema::observe(iceberg_table, now_ms);
                self.history
                    .record_events(&schema::events(name, &observation))
                    .await
                    .map_err(|source| SensorError::History { table: name.to_string(), source })?;
                let column_count = Point {
                    series: SeriesKey::new(name, SensorKind::Schema.as_str(), "column_count", &[]),
                    observed_at_ms: iceberg_table.metadata().last_updated_ms(),
                    snapshot_id: iceberg_table.metadata().current_snapshot_id(),
                    value: observation.column_count as f64,
                };
                self.history
                    .append(&[column_count])
                    .await
                    .map_err(|source| SensorError::History { table: name.to_string(), source })?;
                let evaluations = schema::judge(name, config, &observation);
                self.metrics.record_schema(name, layer, &observation, &evaluations);
                Ok(evaluations)
            }
            SensorKind::Distribution => {
                let Some(config) = &table.distribution else { return Ok(Vec::new()) };
                self.profile_distribution(iceberg_table, name, config).await
            }
            // Lineage is judged per pipeline (from every table's results) by `Lineage`, not per table.
            SensorKind::Lineage => Ok(Vec::new()),
        }
    }

    /// Stores the history the observation brings (backfill: everything newer than what the
    /// store has, except the newest point of each series), reads the windows the judge asks
    /// for, judges, then stores the newest points. Returns the judge's results and the newest
    /// points that were not stored before (new snapshots since the last run).
    async fn score_series(
        &self,
        table: &str,
        points: Vec<Point>,
        requests: &[WindowRequest],
        judge: impl FnOnce(&Windows) -> Vec<Evaluation>,
    ) -> Result<(Vec<Evaluation>, Vec<Point>), SensorError> {
        let history_error = |source| SensorError::History { table: table.to_string(), source };
        let mut by_series: BTreeMap<SeriesKey, Vec<Point>> = BTreeMap::new();
        for point in points {
            by_series.entry(point.series.clone()).or_default().push(point);
        }
        let mut newest = Vec::new();
        for (series, mut series_points) in by_series {
            series_points.sort_by_key(|point| (point.observed_at_ms, point.snapshot_id));
            let Some(last) = series_points.pop() else { continue };
            let stored_until =
                self.history.latest(&series).await.map_err(history_error)?.map(|point| point.observed_at_ms);
            let backfill: Vec<Point> = series_points
                .into_iter()
                .filter(|point| stored_until.is_none_or(|until| point.observed_at_ms > until))
                .collect();
            if !backfill.is_empty() {
                if stored_until.is_none() && backfill.len() > 1 {
                    tracing::info!(table, series = %series, points = backfill.len(), "backfilling history from the snapshot log");
                }
                self.history.append(&backfill).await.map_err(history_error)?;
            }
            newest.push(last);
        }
        let windows = self.fetch_windows(table, requests).await?;
        let evaluations = judge(&windows);
        let mut stored = Vec::new();
        for point in newest {
            if !self
                .history
                .contains(&point.series, point.observed_at_ms, point.snapshot_id)
                .await
                .map_err(history_error)?
            {
                stored.push(point);
            }
        }
        self.history.append(&stored).await.map_err(history_error)?;
        Ok((evaluations, stored))
    }

    /// Profiles the batches the store has not seen (on first sight the last `window` of them: a
    /// backfill), judging each new one against the batches before it, in commit order; the
    /// newest also gets the drift tests against its reference batches. When nothing new was
    /// committed, the newest batch's last verdict is kept, or (in a new process) it is profiled
    /// again: batches are the files a snapshot added, so that costs one batch, not the table.
    async fn profile_distribution(
        &self,
        iceberg_table: &Table,
        name: &str,
        config: &crate::config::DistributionConfig,
    ) -> Result<Vec<Evaluation>, SensorError> {
        let history_error = |source| SensorError::History { table: name.to_string(), source };
        let Some((first_column, first_statistics)) = config.columns.first() else { return Ok(Vec::new()) };
        let Some(first_statistic) = first_statistics.first() else { return Ok(Vec::new()) };
        let marker = distribution::series_key(name, first_column, *first_statistic);
        let stored: std::collections::HashSet<i64> = self
            .history
            .window(&marker, i64::MAX, config.settings.window.max(1) * 4)
            .await
            .map_err(history_error)?
            .into_iter()
            .filter_map(|point| point.snapshot_id)
            .collect();
        let first_sight = stored.is_empty();
        let mut pending = distribution::snapshots_to_profile(iceberg_table, config, &|id| stored.contains(&id));
        if pending.is_empty() {
            let newest = distribution::snapshots_to_profile(iceberg_table, config, &|_| false).pop();
            let Some(newest) = newest else {
                return Ok(vec![Evaluation::new(
                    name,
                    SensorKind::Distribution,
                    "value",
                    Status::InsufficientHistory,
                    "no batch to profile yet: the table has no append".to_string(),
                )]);
            };
            let previous = self
                .results
                .lock()
                .ok()
                .and_then(|results| results.get(&(name.to_string(), SensorKind::Distribution)).cloned());
            if let Some(previous) = previous
                && previous.evaluations.iter().any(|evaluation| evaluation.snapshot_id == Some(newest))
            {
                return Ok(previous.evaluations);
            }
            pending.push(newest);
        }
        if pending.len() > 1 {
            tracing::info!(
                table = name,
                batches = pending.len(),
                "profiling batches (each over the files its snapshot added)"
            );
        }
        let profiles = distribution::observe(iceberg_table, name, config, &pending).await?;
        let Some((newest, earlier)) = profiles.split_last() else {
            return Ok(vec![Evaluation::new(
                name,
                SensorKind::Distribution,
                "value",
                Status::Ok,
                "the newest snapshots added no rows to profile".to_string(),
            )]);
        };
        let mut anomalies: Vec<(String, String)> = Vec::new();
        for (index, profile) in earlier.iter().enumerate() {
            let windows = self.fetch_windows(name, &distribution::window_requests(name, config, profile)).await?;
            if !first_sight {
                anomalies.extend(distribution_anomalies(&distribution::judge(name, config, profile, &windows, None)));
            }
            self.history.append(&distribution::series(name, profile)).await.map_err(history_error)?;
            if index % 10 == 9 {
                tracing::info!(
                    table = name,
                    profiled = index + 1,
                    of = profiles.len(),
                    "distribution backfill progress"
                );
            }
        }
        let windows = self.fetch_windows(name, &distribution::window_requests(name, config, newest)).await?;
        let reference = distribution::observe_reference(iceberg_table, name, config, newest.snapshot_id).await?;
        let drift = distribution::drift(config, newest, &reference);
        let evaluations = distribution::judge(name, config, newest, &windows, Some(&drift));
        let newest_is_new = !stored.contains(&newest.snapshot_id);
        if newest_is_new {
            anomalies.extend(distribution_anomalies(&evaluations));
        }
        self.history.append(&distribution::series(name, newest)).await.map_err(history_error)?;
        self.metrics.record_distribution(name, &evaluations, &drift, &anomalies);
        Ok(evaluations)
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

    /// Appends that landed since the last run, before the newest one, are judged one by one in
    /// commit order (each against the history before it) and stored, so an anomaly between two
    /// runs is counted too. On first sight nothing is judged: history is only backfilled.
    async fn judge_missed_appends(
        &self,
        table: &str,
        config: &crate::config::VolumeConfig,
        observation: &volume::VolumeObservation,
    ) -> Result<u64, SensorError> {
        let history_error = |source| SensorError::History { table: table.to_string(), source };
        let series = volume::rows_added_series(table);
        let Some(stored_until) =
            self.history.latest(&series).await.map_err(history_error)?.map(|point| point.observed_at_ms)
        else {
            return Ok(0);
        };
        let missed: Vec<usize> = (0..observation.appends.len().saturating_sub(1))
            .filter(|index| observation.appends[*index].timestamp_ms > stored_until)
            .collect();
        let mut anomalies = 0;
        for index in missed {
            let upto =
                volume::VolumeObservation { appends: observation.appends[..=index].to_vec(), ..observation.clone() };
            let mut windows = Windows::new();
            for request in volume::window_requests(table, config, &upto) {
                let since = request.since_ms.unwrap_or(i64::MIN);
                windows.insert(
                    request.series.clone(),
                    self.history.range(&request.series, since, request.before_ms).await.map_err(history_error)?,
                );
            }
            if is_volume_anomaly(&volume::judge(table, config, &upto, &windows)) {
                anomalies += 1;
            }
            let points: Vec<Point> =
                volume::series(table, &upto).into_iter().filter(|point| point.series == series).skip(index).collect();
            self.history.append(&points).await.map_err(history_error)?;
        }
        Ok(anomalies)
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

    /// Refreshes the gauges that describe the store itself.
    pub async fn refresh_store_metrics(&self) {
        if let Ok(count) = self.history.point_count().await {
            self.metrics.icewatch_history_points.set(count as i64);
        }
    }
}

/// (column, statistic) of every anomalous statistic among `evaluations`.
fn distribution_anomalies(evaluations: &[Evaluation]) -> Vec<(String, String)> {
    evaluations
        .iter()
        .filter(|evaluation| {
            evaluation.metric == "value" && matches!(evaluation.status, Status::Warning | Status::Critical)
        })
        .filter_map(|evaluation| Some((evaluation.column.clone()?, evaluation.statistic.clone()?)))
        .collect()
}

fn is_volume_anomaly(evaluations: &[Evaluation]) -> bool {
    evaluations.iter().any(|evaluation| {
        evaluation.metric == volume::ROWS_ADDED && matches!(evaluation.status, Status::Warning | Status::Critical)
    })
}

/// A table that failed to load fails every sensor of the run with the same error.
fn clone_load_error(error: &SensorError, table_name: &str) -> SensorError {
    match error {
        SensorError::Catalog(CatalogError::Unreachable { uri, reason }) => {
            SensorError::Catalog(CatalogError::Unreachable { uri: uri.clone(), reason: reason.clone() })
        }
        SensorError::Catalog(CatalogError::TableNotFound { table, uri }) => {
            SensorError::Catalog(CatalogError::TableNotFound { table: table.clone(), uri: uri.clone() })
        }
        SensorError::Catalog(CatalogError::InvalidSetting { key, reason }) => {
            SensorError::Catalog(CatalogError::InvalidSetting { key: key.clone(), reason: reason.clone() })
        }
        SensorError::Catalog(CatalogError::LoadTable { table, reason }) => {
            SensorError::Catalog(CatalogError::LoadTable { table: table.clone(), reason: reason.clone() })
        }
        other => SensorError::Catalog(CatalogError::LoadTable {
            table: table_name.to_string(),
            reason: crate::sensors::error_chain(other),
        }),
    }
}
