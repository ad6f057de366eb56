//! Lineage: the declared pipelines (`[pipelines.*]`) plus the graph learned from OpenLineage
//! run events; stage health, root cause and propagation lag from the latest sensor results
//! ([`health`]); the `pipeline_*` metrics; the run that wrote a snapshot. It owns the lineage
//! state of the service (OpenLineage runs, learned edges, previous stage health). It must not
//! run sensors or read tables: it only reads results the pipeline already produced. Its HTTP
//! endpoint (`/api/v1/lineage`) is `server`'s, which reads it through the pipeline.

mod graph;
pub mod health;
pub mod openlineage;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{Config, SensorKind};
use crate::export::metrics::Metrics;
use crate::history::{Event, HistoryError, HistoryStore};
use crate::pipeline::Pipeline;
use crate::sensors::Status;
use crate::sensors::{ResultListener, SensorResult};

pub use graph::{GraphFormat, render_graph};
pub use health::{Health, PipelineStatus, StageStatus};
pub use openlineage::{DatasetRef, EventError, RunEvent, RunState, parse_event};

/// History-store event kind of a received OpenLineage event (payload: the event as posted).
pub const EVENT_KIND: &str = "openlineage";
/// Runs, snapshot links and learned edges kept in memory (oldest forgotten first).
const MAX_RUNS: usize = 10_000;
const MAX_EDGES: usize = 10_000;
/// Events replayed from the history store at start-up.
const RESTORE_LIMIT: usize = 10_000;

/// Why an OpenLineage event could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("failed to store the OpenLineage event")]
    History(#[source] HistoryError),
}

/// What icewatch knows of one OpenLineage run.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    /// `namespace/name` of the job.
    pub job: String,
    pub state: RunState,
    /// Time of the START event, when seen.
    pub started_ms: Option<i64>,
    /// Time of the COMPLETE / FAIL / ABORT event.
    pub ended_ms: Option<i64>,
    /// Time of the newest event of the run.
    pub event_time_ms: i64,
    /// Time of the first event seen (orders runs of the same table).
    pub first_seen_ms: i64,
    pub inputs: Vec<DatasetRef>,
    pub outputs: Vec<DatasetRef>,
}

impl RunRecord {
    /// START → COMPLETE, for a run that completed.
    pub fn duration_seconds(&self) -> Option<f64> {
        match (self.state, self.started_ms, self.ended_ms) {
            (RunState::Complete, Some(start), Some(end)) if end >= start => Some((end - start) as f64 / 1000.0),
            _ => None,
        }
    }
}

/// An edge learned from OpenLineage: a job read `from` and wrote `to`.
#[derive(Clone, Debug, Serialize)]
pub struct LearnedEdge {
    pub from: String,
    pub to: String,
    pub jobs: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    runs: HashMap<String, RunRecord>,
    run_order: VecDeque<String>,
    /// Table → the newest run that wrote it.
    latest_by_table: HashMap<String, String>,
    /// (table, snapshot id) → the run whose commit produced it.
    snapshots: HashMap<(String, i64), String>,
    edges: BTreeMap<(String, String), BTreeSet<String>>,
    /// `pipeline_stage_success` per (stage, job) at the last refresh.
    stage_success: HashMap<(String, String), bool>,
    last_status: Vec<PipelineStatus>,
}

impl State {
    fn apply(&mut self, event: &RunEvent) {
        if !self.runs.contains_key(&event.run_id) {
            self.run_order.push_back(event.run_id.clone());
            while self.run_order.len() > MAX_RUNS {
                if let Some(old) = self.run_order.pop_front() {
                    self.runs.remove(&old);
                    self.latest_by_table.retain(|_, run| *run != old);
                    self.snapshots.retain(|_, run| *run != old);
                }
            }
        }
        let record = self.runs.entry(event.run_id.clone()).or_insert_with(|| RunRecord {
            run_id: event.run_id.clone(),
            job: event.job.clone(),
            state: event.event_type,
            started_ms: None,
            ended_ms: None,
            event_time_ms: event.event_time_ms,
            first_seen_ms: event.event_time_ms,
            inputs: Vec::new(),
            outputs: Vec::new(),
        });
        // A terminal state sticks: a late START or RUNNING does not reopen a finished run.
        let newer = event.event_time_ms >= record.event_time_ms;
        if event.event_type.is_terminal() || (!record.state.is_terminal() && newer) {
            record.state = event.event_type;
        }
        record.event_time_ms = record.event_time_ms.max(event.event_time_ms);
        record.first_seen_ms = record.first_seen_ms.min(event.event_time_ms);
        match event.event_type {
            RunState::Start => {
                record.started_ms =
                    Some(record.started_ms.map_or(event.event_time_ms, |start| start.min(event.event_time_ms)))
            }
            state if state.is_terminal() => record.ended_ms = Some(event.event_time_ms),
            _ => {}
        }
        for dataset in &event.inputs {
            merge_dataset(&mut record.inputs, dataset);
        }
        for dataset in &event.outputs {
            merge_dataset(&mut record.outputs, dataset);
        }
        let first_seen = record.first_seen_ms;
        for output in &event.outputs {
            let Some(table) = &output.table else { continue };
            let replace = match self.latest_by_table.get(table).and_then(|run| self.runs.get(run)) {
                Some(current) => current.run_id == event.run_id || current.first_seen_ms <= first_seen,
                None => true,
            };
            if replace {
                self.latest_by_table.insert(table.clone(), event.run_id.clone());
            }
            if let Some(snapshot) = output.snapshot_id {
                self.snapshots.insert((table.clone(), snapshot), event.run_id.clone());
            }
        }
        for input in &event.inputs {
            for output in &event.outputs {
                let key = (input.node(), output.node());
                if key.0 == key.1 || (self.edges.len() >= MAX_EDGES && !self.edges.contains_key(&key)) {
                    continue;
                }
                self.edges.entry(key).or_default().insert(event.job.clone());
            }
        }
    }

    fn latest_runs(&self) -> HashMap<String, RunRecord> {
        self.latest_by_table
            .iter()
            .filter_map(|(table, run)| self.runs.get(run).map(|record| (table.clone(), record.clone())))
            .collect()
    }
}

fn merge_dataset(list: &mut Vec<DatasetRef>, dataset: &DatasetRef) {
    match list.iter_mut().find(|known| known.namespace == dataset.namespace && known.name == dataset.name) {
        Some(known) => {
            if dataset.snapshot_id.is_some() {
                known.snapshot_id = dataset.snapshot_id;
            }
        }
        None => list.push(dataset.clone()),
    }
}

/// The lineage state of one process (the service, or one `check` / `lineage` command).
pub struct Lineage {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    history: HistoryStore,
    state: Mutex<State>,
}

/// The graph and its state, as `GET /api/v1/lineage` returns it.
#[derive(Clone, Debug, Serialize)]
pub struct LineageView {
    pub pipelines: Vec<PipelineStatus>,
    pub learned_edges: Vec<LearnedEdge>,
    /// The newest runs first (at most 100).
    pub runs: Vec<RunRecord>,
}

impl Lineage {
    /// The lineage of `pipeline`'s configuration, following the pipeline's results from now on.
    /// The stored OpenLineage events are not replayed yet: call [`Lineage::replay`] (the service
    /// does once its listener is up, so a large store never delays `/healthz`).
    pub fn attach(pipeline: &Pipeline) -> Arc<Lineage> {
        let lineage =
            Arc::new(Lineage::new(pipeline.config().clone(), pipeline.metrics().clone(), pipeline.history().clone()));
        pipeline.subscribe(lineage.clone());
        lineage
    }

    /// [`Lineage::restore`], logging a failure instead of returning it (lineage then starts
    /// from what new events bring).
    pub async fn replay(&self) {
        if let Err(error) = self.restore().await {
            tracing::warn!(error = %crate::errors::error_chain(&error), "failed to replay stored OpenLineage events");
        }
    }

    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, history: HistoryStore) -> Lineage {
        Lineage { config, metrics, history, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing lineage: keep going with what is there.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replays the OpenLineage events kept in the history store (mapped with the current
    /// `[lineage]` rules); returns how many were applied. Events that no longer parse are skipped.
    pub async fn restore(&self) -> Result<usize, HistoryError> {
        let mut events = self.history.events(None, EVENT_KIND, RESTORE_LIMIT).await?;
        events.reverse();
        let mut parsed: Vec<RunEvent> = events
            .iter()
            .filter_map(|event| {
                serde_json::to_vec(&event.payload).ok().and_then(|body| parse_event(&body, &self.config).ok())
            })
            .collect();
        parsed.sort_by_key(|event| event.event_time_ms);
        let mut state = self.state();
        for event in &parsed {
            state.apply(event);
        }
        Ok(parsed.len())
    }

    /// Validates `body`, stores it, then applies it: a refused or unstored event changes nothing.
    pub async fn ingest(&self, body: &[u8]) -> Result<RunEvent, LineageError> {
        let event = parse_event(body, &self.config)?;
        let payload: serde_json::Value =
            serde_json::from_slice(body).map_err(|error| EventError::NotJson(error.to_string()))?;
        let table =
            event.outputs.iter().chain(&event.inputs).find_map(|dataset| dataset.table.clone()).unwrap_or_default();
        let stored = Event {
            table,
            kind: EVENT_KIND.to_string(),
            key: event.key(),
            occurred_at_ms: event.event_time_ms,
            payload,
        };
        self.history.record_events(&[stored]).await.map_err(LineageError::History)?;
        self.state().apply(&event);
        tracing::info!(run_id = %event.run_id, job = %event.job, event_type = event.event_type.as_str(), "OpenLineage event received");
        Ok(event)
    }

    /// Re-evaluates every declared pipeline from `results` and sets the `pipeline_*` metrics.
    pub fn refresh(&self, results: &[SensorResult]) -> Vec<PipelineStatus> {
        let mut state = self.state();
        let runs = state.latest_runs();
        let statuses: Vec<PipelineStatus> =
            self.config.pipelines.iter().map(|pipeline| health::evaluate(pipeline, results, &runs)).collect();
        let metrics = &self.metrics;
        let mut success: BTreeMap<(String, String), bool> = BTreeMap::new();
        let mut impact: BTreeMap<String, usize> = BTreeMap::new();
        for status in &statuses {
            if let Some(ok) = status.end_to_end_success {
                metrics
                    .pipeline_end_to_end_success
                    .with_label_values(&[status.name.as_str()])
                    .set(f64::from(u8::from(ok)));
            }
            for stage in &status.stages {
                let labels = [status.name.as_str(), stage.stage.as_str(), stage.job.as_str()];
                metrics.pipeline_stage_root_cause.with_label_values(&labels).set(f64::from(u8::from(stage.root_cause)));
                metrics.pipeline_stage_impacted.with_label_values(&labels).set(f64::from(u8::from(stage.impacted)));
                *impact.entry(stage.stage.clone()).or_default() += stage.downstream_impact_count;
                if stage.health != Health::Unknown {
                    let healthy = stage.health == Health::Healthy;
                    let entry = success.entry((stage.stage.clone(), stage.job.clone())).or_insert(true);
                    *entry = *entry && healthy;
                }
                if let Some(seconds) = stage.duration_seconds {
                    metrics
                        .pipeline_stage_duration_seconds
                        .with_label_values(&[stage.stage.as_str(), stage.job.as_str()])
                        .set(seconds);
                }
            }
            for edge in &status.edges {
                if let Some(lag) = edge.lag_seconds {
                    metrics
                        .pipeline_propagation_lag_seconds
                        .with_label_values(&[status.name.as_str(), edge.upstream.as_str(), edge.downstream.as_str()])
                        .set(lag);
                }
            }
        }
        for (stage, count) in impact {
            metrics.pipeline_downstream_impact_count.with_label_values(&[stage.as_str()]).set(count as f64);
        }
        for ((stage, job), healthy) in success {
            let labels = [stage.as_str(), job.as_str()];
            metrics.pipeline_stage_success.with_label_values(&labels).set(f64::from(u8::from(healthy)));
            let failures = metrics.pipeline_stage_failure_total.with_label_values(&labels);
            let previous = state.stage_success.insert((stage.clone(), job.clone()), healthy);
            if previous == Some(true) && !healthy {
                failures.inc();
            }
        }
        state.last_status = statuses.clone();
        statuses
    }

    /// The run whose Iceberg commit produced `snapshot_id` of `table`, when an event said so.
    pub fn run_for_snapshot(&self, table: &str, snapshot_id: i64) -> Option<RunRecord> {
        let state = self.state();
        state.snapshots.get(&(table.to_string(), snapshot_id)).and_then(|run| state.runs.get(run)).cloned()
    }

    /// The graph and the state at the last refresh.
    pub fn view(&self) -> LineageView {
        let state = self.state();
        let pipelines = if state.last_status.is_empty() {
            let runs = state.latest_runs();
            self.config.pipelines.iter().map(|pipeline| health::evaluate(pipeline, &[], &runs)).collect()
        } else {
            state.last_status.clone()
        };
        let learned_edges = state
            .edges
            .iter()
            .map(|((from, to), jobs)| LearnedEdge { from: from.clone(), to: to.clone(), jobs: jobs.clone() })
            .collect();
        let runs = state.run_order.iter().rev().take(100).filter_map(|run| state.runs.get(run).cloned()).collect();
        LineageView { pipelines, learned_edges, runs }
    }

    /// `results` for the `check` report: each anomaly on a snapshot names the run that wrote
    /// it, and each pipeline stage gets a `lineage` result right after its table's results.
    pub fn check_results(&self, mut results: Vec<SensorResult>) -> Vec<SensorResult> {
        for result in &mut results {
            for evaluation in &mut result.evaluations {
                if !matches!(evaluation.status, Status::Warning | Status::Critical) {
                    continue;
                }
                if let Some(run) =
                    evaluation.snapshot_id.and_then(|snapshot| self.run_for_snapshot(&result.table, snapshot))
                {
                    evaluation.message.push_str(&format!(
                        " (snapshot {} written by job `{}` run `{}`, {})",
                        evaluation.snapshot_id.unwrap_or_default(),
                        run.job,
                        run.run_id,
                        run.state.as_str()
                    ));
                }
            }
        }
        let statuses = self.refresh(&results);
        let mut by_table: BTreeMap<String, Vec<crate::sensors::Evaluation>> = BTreeMap::new();
        for status in &statuses {
            for evaluation in health::stage_evaluations(status) {
                by_table.entry(evaluation.table.clone()).or_default().push(evaluation);
            }
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut merged = Vec::with_capacity(results.len() + by_table.len());
        let mut results = results.into_iter().peekable();
        while let Some(result) = results.next() {
            let table = result.table.clone();
            let layer = result.layer.clone();
            merged.push(result);
            // Results come grouped by table: the lineage result goes after the table's last one.
            let last_of_table = results.peek().is_none_or(|next| next.table != table);
            if last_of_table && let Some(evaluations) = by_table.remove(&table) {
                merged.push(SensorResult {
                    table,
                    layer,
                    sensor: SensorKind::Lineage,
                    evaluations,
                    finished_at_ms: now_ms,
                    duration: std::time::Duration::ZERO,
                });
            }
        }
        merged
    }
}

impl ResultListener for Lineage {
    fn results_changed(&self, latest: &[SensorResult]) {
        self.refresh(latest);
    }
}
