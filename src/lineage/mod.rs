//! Lineage: the declared pipelines (`[pipelines.*]`) plus the graph learned from OpenLineage
//! run events; stage health, root cause and propagation lag from the latest sensor results
//! ([`health`]); the `pipeline_*` metrics; the run that wrote a snapshot. It owns the lineage
//! state of the service (OpenLineage runs, learned edges, previous stage health). It must not
//! run sensors or read tables: it only reads results the pipeline already produced. Its HTTP
//! endpoint (`/api/v1/lineage`) is `server`'s, which reads it through the pipeline.
//!
//! Everything it holds is bounded, whatever is posted: each event by `openlineage`'s limits,
//! their sum by the caps below (runs, snapshot links, edges, jobs per edge), the replay of the
//! stored events by count and bytes, the stored events themselves by `lineage.retention`.
//! Parsing and applying an event run on blocking threads; the state lock is only held for work
//! bounded by the caps.

mod graph;
pub mod health;
pub mod openlineage;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SensorKind};
use crate::export::metrics::Metrics;
use crate::history::{Event, HistoryError, HistoryStore};
use crate::pipeline::Pipeline;
use crate::sensors::Status;
use crate::sensors::{ResultListener, SensorResult};

pub use graph::{GraphFormat, render_graph};
pub use health::{Health, PipelineStatus, StageStatus};
pub use openlineage::{DatasetRef, EventError, MAX_DATASETS, MAX_EVENT_BYTES, RunEvent, RunState, parse_event};

/// History-store event kind of a received OpenLineage event (payload: the event as posted).
pub const EVENT_KIND: &str = "openlineage";

// What the lineage state may hold. Each event is bounded by `openlineage`'s limits; these bound
// the sum of them, so memory and the cost of one event stay flat however many arrive.
/// Runs kept (oldest first seen forgotten first), and the bytes their names may take.
const MAX_RUNS: usize = 10_000;
const MAX_RUN_BYTES: usize = 64 * 1024 * 1024;
/// (table, snapshot) → run links kept (oldest forgotten first).
const MAX_SNAPSHOT_LINKS: usize = 20_000;
/// Learned edges: at the cap no edge is added, the jobs of known ones still are.
const MAX_EDGES: usize = 10_000;
/// Jobs kept per learned edge (the one seen longest ago goes first).
const MAX_JOBS_PER_EDGE: usize = 16;

/// How much of the history store a replay reads: the newest events, until either bound.
#[derive(Clone, Copy, Debug)]
struct ReplayBounds {
    events: usize,
    /// Stored payload bytes (the text of the events as posted).
    bytes: usize,
}

/// Bounds of the replay at start-up and reload.
const REPLAY_BOUNDS: ReplayBounds = ReplayBounds { events: 10_000, bytes: 64 * 1024 * 1024 };
/// Events per page read (a page of the largest events is 16 MiB of text).
const RESTORE_PAGE: usize = 16;
/// Events applied per hold of the state lock during a replay.
const RESTORE_APPLY_CHUNK: usize = 256;

// Retention: stored events older than `lineage.retention` go, in bounded steps.
/// How often the service deletes old events (and once when a configuration starts).
const RETENTION_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3_600);
/// Events deleted per statement, and statements per sweep (the rest waits for the next one).
const RETENTION_BATCH: usize = 1_000;
const RETENTION_MAX_BATCHES: usize = 1_000;

/// Requests applying an event at once (parsing a large body is the costly part).
const INGEST_CONCURRENCY: usize = 2;

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
    /// The record with empty `inputs` and `outputs` (cheap to clone).
    fn without_datasets(&self) -> RunRecord {
        RunRecord {
            run_id: self.run_id.clone(),
            job: self.job.clone(),
            state: self.state,
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            event_time_ms: self.event_time_ms,
            first_seen_ms: self.first_seen_ms,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

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

/// Learned edges: `from` → `to` → the jobs seen on the edge, the most recent last.
type Edges = BTreeMap<String, BTreeMap<String, VecDeque<String>>>;

/// What lineage holds in memory. Every part is capped (see the constants above), and applying
/// one event costs time linear in its datasets plus the edges, never inputs × outputs.
#[derive(Default)]
struct State {
    runs: HashMap<String, RunRecord>,
    /// Run ids, oldest first seen first.
    run_order: VecDeque<String>,
    /// Roughly the bytes `runs` holds ([`record_bytes`]).
    run_bytes: usize,
    /// Table → the newest run that wrote it (a table among that run's kept outputs).
    latest_by_table: HashMap<String, String>,
    /// (table, snapshot id) → the run whose commit produced it; `snapshot_order` oldest first.
    snapshots: HashMap<(String, i64), String>,
    snapshot_order: VecDeque<(String, i64)>,
    edges: Edges,
    edge_count: usize,
    /// `pipeline_stage_success` per (stage, job) at the last refresh.
    stage_success: HashMap<(String, String), bool>,
    /// The (job, table) labels of each (pipeline, stage)'s `pipeline_stage_impacted` series at
    /// the last refresh: its `table` moves to the root cause while the stage is impacted.
    impacted_labels: HashMap<(String, String), (String, String)>,
    last_status: Vec<PipelineStatus>,
}

impl State {
    fn apply(&mut self, event: &RunEvent) {
        let known = self.runs.contains_key(&event.run_id);
        if !known {
            self.run_order.push_back(event.run_id.clone());
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
        let bytes_before = if known { record_bytes(record) } else { 0 };
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
        merge_datasets(&mut record.inputs, &event.inputs);
        let outputs_held = merge_datasets(&mut record.outputs, &event.outputs);
        self.run_bytes = self.run_bytes.saturating_sub(bytes_before) + record_bytes(record);
        let first_seen = record.first_seen_ms;
        for (output, held) in event.outputs.iter().zip(outputs_held) {
            // An output the run record could not keep is not linked either: forgetting the
            // run must find every table it is the latest writer of among its outputs.
            let Some(table) = output.table.as_ref().filter(|_| held) else { continue };
            let replace = match self.latest_by_table.get(table).and_then(|run| self.runs.get(run)) {
                Some(current) => current.run_id == event.run_id || current.first_seen_ms <= first_seen,
                None => true,
            };
            if replace {
                self.latest_by_table.insert(table.clone(), event.run_id.clone());
            }
            if let Some(snapshot) = output.snapshot_id {
                self.link_snapshot(table, snapshot, &event.run_id);
            }
        }
        self.learn_edges(event);
        self.forget_old_runs();
    }

    fn link_snapshot(&mut self, table: &str, snapshot: i64, run_id: &str) {
        let key = (table.to_string(), snapshot);
        if self.snapshots.insert(key.clone(), run_id.to_string()).is_none() {
            self.snapshot_order.push_back(key);
        }
        while self.snapshot_order.len() > MAX_SNAPSHOT_LINKS {
            if let Some(old) = self.snapshot_order.pop_front() {
                self.snapshots.remove(&old);
            }
        }
    }

    /// Each input × output pair of `event` (but a dataset to itself) becomes an edge labelled
    /// with its job. Pairs are walked only while each one either is a known edge or may become
    /// one, so at most 2 × [`MAX_EDGES`] of them (plus one dataset to itself per input); once the
    /// cap stops a new edge, the known edges out of the event's inputs are walked instead, to
    /// give them the job.
    fn learn_edges(&mut self, event: &RunEvent) {
        let inputs = distinct_nodes(&event.inputs);
        let outputs = distinct_nodes(&event.outputs);
        let mut at_cap = false;
        'pairs: for from in &inputs {
            for to in outputs.iter().filter(|to| *to != from) {
                if let Some(jobs) = self.edges.get_mut(from).and_then(|targets| targets.get_mut(to)) {
                    note_job(jobs, &event.job);
                } else if self.edge_count < MAX_EDGES {
                    note_job(self.edges.entry(from.clone()).or_default().entry(to.clone()).or_default(), &event.job);
                    self.edge_count += 1;
                } else {
                    at_cap = true;
                    break 'pairs;
                }
            }
        }
        if at_cap {
            let outputs: HashSet<&str> = outputs.iter().map(String::as_str).collect();
            for from in &inputs {
                let Some(targets) = self.edges.get_mut(from) else { continue };
                for (_, jobs) in targets.iter_mut().filter(|(to, _)| outputs.contains(to.as_str())) {
                    note_job(jobs, &event.job);
                }
            }
        }
    }

    /// Forgets the runs first seen longest ago while there are too many or they hold too much.
    fn forget_old_runs(&mut self) {
        while self.run_order.len() > MAX_RUNS || (self.run_bytes > MAX_RUN_BYTES && self.run_order.len() > 1) {
            let Some(old) = self.run_order.pop_front() else { break };
            let Some(record) = self.runs.remove(&old) else { continue };
            self.run_bytes = self.run_bytes.saturating_sub(record_bytes(&record));
            for table in record.outputs.iter().filter_map(|output| output.table.as_ref()) {
                if self.latest_by_table.get(table) == Some(&old) {
                    self.latest_by_table.remove(table);
                }
            }
            // Its snapshot links stay until they age out: they no longer resolve to a run.
        }
    }

    /// The newest run that wrote each table of a declared stage, without its datasets (health
    /// reads a run's state and times only).
    fn latest_runs(&self, config: &Config) -> HashMap<String, RunRecord> {
        config
            .pipelines
            .iter()
            .flat_map(|pipeline| &pipeline.stages)
            .filter_map(|stage| {
                let run = self.runs.get(self.latest_by_table.get(&stage.table)?)?;
                Some((stage.table.clone(), run.without_datasets()))
            })
            .collect()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the state half-updated in a way that
    // matters more than losing lineage: keep going with what is there.
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `work` on a blocking thread, off the async workers; a panic in it panics here.
async fn off_worker<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down, which ends this task too.
            Err(error) => panic!("blocking lineage work did not run: {error}"),
        },
    }
}

/// Merges `datasets` into `list` (a dataset already there takes a newer snapshot id) while `list`
/// has fewer than [`MAX_DATASETS`] entries; returns, for each of `datasets`, whether `list` holds
/// it. Linear in both lengths.
fn merge_datasets(list: &mut Vec<DatasetRef>, datasets: &[DatasetRef]) -> Vec<bool> {
    let positions: Vec<Option<usize>> = {
        let known: HashMap<(&str, &str), usize> = list
            .iter()
            .enumerate()
            .map(|(position, known)| ((known.namespace.as_str(), known.name.as_str()), position))
            .collect();
        let mut added: HashMap<(&str, &str), usize> = HashMap::new();
        let mut next = list.len();
        datasets
            .iter()
            .map(|dataset| {
                let key = (dataset.namespace.as_str(), dataset.name.as_str());
                let found = known.get(&key).or_else(|| added.get(&key)).copied();
                found.or_else(|| {
                    (next < MAX_DATASETS).then(|| {
                        added.insert(key, next);
                        next += 1;
                        next - 1
                    })
                })
            })
            .collect()
    };
    for (dataset, position) in datasets.iter().zip(&positions) {
        match (*position, dataset.snapshot_id) {
            // New datasets were numbered in the order they are pushed here.
            (Some(position), _) if position == list.len() => list.push(dataset.clone()),
            (Some(position), Some(snapshot)) => list[position].snapshot_id = Some(snapshot),
            _ => {}
        }
    }
    positions.iter().map(Option::is_some).collect()
}

/// The graph nodes of `datasets`, each once, in order.
fn distinct_nodes(datasets: &[DatasetRef]) -> Vec<String> {
    let mut seen = HashSet::new();
    datasets.iter().map(DatasetRef::node).filter(|node| seen.insert(node.clone())).collect()
}

/// Puts `job` last among an edge's jobs, dropping the one seen longest ago beyond the cap.
fn note_job(jobs: &mut VecDeque<String>, job: &str) {
    if let Some(position) = jobs.iter().position(|known| known == job) {
        if let Some(known) = jobs.remove(position) {
            jobs.push_back(known);
        }
        return;
    }
    if jobs.len() >= MAX_JOBS_PER_EDGE {
        jobs.pop_front();
    }
    jobs.push_back(job.to_string());
}

/// Roughly the heap a run record takes: its strings plus a fixed cost per record and dataset.
fn record_bytes(record: &RunRecord) -> usize {
    const PER_RECORD: usize = 256;
    const PER_DATASET: usize = 128;
    let datasets: usize = record
        .inputs
        .iter()
        .chain(&record.outputs)
        .map(|dataset| {
            PER_DATASET + dataset.namespace.len() + dataset.name.len() + dataset.table.as_ref().map_or(0, String::len)
        })
        .sum();
    PER_RECORD + record.run_id.len() + record.job.len() + datasets
}

/// The lineage state of one process (the service, or one `check` / `lineage` command).
pub struct Lineage {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    history: HistoryStore,
    /// Shared with the blocking tasks that apply events; held only for bounded work.
    state: Arc<Mutex<State>>,
    /// Bounds the events parsed at once (each parse may hold a large body several times over).
    ingest_slots: tokio::sync::Semaphore,
}

/// The graph and its state, as `GET /api/v1/lineage` returns it.
#[derive(Clone, Debug, Serialize)]
pub struct LineageView {
    pub pipelines: Vec<PipelineStatus>,
    pub learned_edges: Vec<LearnedEdge>,
    /// The newest runs first: at most 100, fewer past the first when they hold over 4 MiB.
    pub runs: Vec<RunRecord>,
}

/// Runs shown in a [`LineageView`], and roughly how many bytes of them past the first.
const VIEW_RUNS: usize = 100;
const VIEW_RUN_BYTES: usize = 4 * 1024 * 1024;

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
        Lineage {
            config,
            metrics,
            history,
            state: Arc::default(),
            ingest_slots: tokio::sync::Semaphore::new(INGEST_CONCURRENCY),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The oldest event time still within `lineage.retention`.
    fn retention_cutoff_ms(&self) -> i64 {
        let retention = i64::try_from(self.config.lineage.retention.as_millis()).unwrap_or(i64::MAX);
        chrono::Utc::now().timestamp_millis().saturating_sub(retention)
    }

    /// Replays the OpenLineage events kept in the history store (mapped with the current
    /// `[lineage]` rules); returns how many were applied. Events that no longer parse are skipped.
    ///
    /// Bounded: only events within `lineage.retention`, read newest first a page at a time, at
    /// most 10,000 of them and 64 MiB of stored text; parsing and applying
    /// run on blocking threads, the state locked for a chunk of events at a time.
    pub async fn restore(&self) -> Result<usize, HistoryError> {
        self.restore_within(REPLAY_BOUNDS).await
    }

    async fn restore_within(&self, bounds: ReplayBounds) -> Result<usize, HistoryError> {
        let since_ms = self.retention_cutoff_ms();
        let mut events: Vec<RunEvent> = Vec::new();
        let (mut read, mut read_bytes, mut complete) = (0usize, 0usize, false);
        let mut after = None;
        // Every page but the last is full, and reading stops at `bounds.events`.
        for _ in 0..=bounds.events / RESTORE_PAGE {
            let page = self.history.events_page(EVENT_KIND, since_ms, after, RESTORE_PAGE).await?;
            let page_len = page.len();
            after = page.last().map(|event| event.cursor);
            let mut payloads = Vec::with_capacity(page_len);
            for stored in page {
                if read == bounds.events || read_bytes + stored.payload.len() > bounds.bytes {
                    break;
                }
                read += 1;
                read_bytes += stored.payload.len();
                payloads.push(stored.payload);
            }
            let taken_whole = payloads.len() == page_len;
            let config = self.config.clone();
            events.extend(
                off_worker(move || {
                    payloads
                        .iter()
                        .filter_map(|payload| parse_event(payload.as_bytes(), &config).ok())
                        .collect::<Vec<_>>()
                })
                .await,
            );
            if !taken_whole {
                break;
            }
            if page_len < RESTORE_PAGE {
                complete = true;
                break;
            }
        }
        if !complete {
            tracing::warn!(
                events = read,
                bytes = read_bytes,
                "replayed only the newest stored OpenLineage events: the rest is past the replay bounds"
            );
        }
        // Oldest first; events at the same time in the order they were stored.
        events.reverse();
        events.sort_by_key(|event| event.event_time_ms);
        let count = events.len();
        let state = self.state.clone();
        off_worker(move || {
            for chunk in events.chunks(RESTORE_APPLY_CHUNK) {
                let mut state = lock(&state);
                for event in chunk {
                    state.apply(event);
                }
            }
        })
        .await;
        Ok(count)
    }

    /// Validates `body`, stores it, then applies it: a refused or unstored event changes nothing.
    /// Parsing and applying run on blocking threads, a few requests at a time.
    pub async fn ingest(&self, body: impl AsRef<[u8]> + Send + 'static) -> Result<RunEvent, LineageError> {
        // Never closed: the semaphore lives as long as `self`.
        let _slot = self.ingest_slots.acquire().await.ok();
        let config = self.config.clone();
        let (event, payload) = off_worker(move || -> Result<_, EventError> {
            let event = parse_event(body.as_ref(), &config)?;
            let payload: serde_json::Value =
                serde_json::from_slice(body.as_ref()).map_err(|error| EventError::NotJson(error.to_string()))?;
            Ok((event, payload))
        })
        .await?;
        let table =
            event.outputs.iter().chain(&event.inputs).find_map(|dataset| dataset.table.clone()).unwrap_or_default();
        let stored = Event {
            table,
            kind: EVENT_KIND.to_string(),
            key: event.key(),
            // Retention counts from the event's time, or from now for one that claims to come
            // from the future (it would otherwise never expire and always replay first).
            occurred_at_ms: event.event_time_ms.min(chrono::Utc::now().timestamp_millis()),
            payload,
        };
        self.history.record_events(&[stored]).await.map_err(LineageError::History)?;
        let state = self.state.clone();
        let event = off_worker(move || {
            lock(&state).apply(&event);
            event
        })
        .await;
        tracing::info!(run_id = %event.run_id, job = %event.job, event_type = event.event_type.as_str(), "OpenLineage event received");
        Ok(event)
    }

    /// Deletes the stored OpenLineage events older than `lineage.retention`, oldest first, 1,000
    /// per statement and at most 1,000 statements (the rest waits for the next sweep); returns
    /// how many went.
    pub async fn forget_old_events(&self) -> Result<u64, HistoryError> {
        let before_ms = self.retention_cutoff_ms();
        let mut deleted = 0;
        for _ in 0..RETENTION_MAX_BATCHES {
            let step = self.history.delete_events_before(EVENT_KIND, before_ms, RETENTION_BATCH).await?;
            deleted += step;
            if step < RETENTION_BATCH as u64 {
                break;
            }
        }
        Ok(deleted)
    }

    /// [`Lineage::forget_old_events`] now and then hourly, until `stop`.
    pub async fn keep_retention(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                outcome = self.forget_old_events() => match outcome {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "deleted OpenLineage events older than `lineage.retention`"),
                    Err(error) => tracing::warn!(error = %crate::errors::error_chain(&error), "failed to delete old OpenLineage events"),
                },
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_SWEEP_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Re-evaluates every declared pipeline from `results` and sets the `pipeline_*` metrics.
    pub fn refresh(&self, results: &[SensorResult]) -> Vec<PipelineStatus> {
        let mut state = self.state();
        let runs = state.latest_runs(&self.config);
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
                let labels = [status.name.as_str(), stage.stage.as_str(), stage.job.as_str(), stage.table.as_str()];
                metrics.pipeline_stage_root_cause.with_label_values(&labels).set(f64::from(u8::from(stage.root_cause)));
                // An impacted stage names its root cause (the first upstream, in declaration
                // order), so Alertmanager can group and inhibit it with that table's alerts.
                let impact_table = match stage.caused_by.first().and_then(|root| status.stage(root)) {
                    Some(root) if stage.impacted => root.table.as_str(),
                    _ => stage.table.as_str(),
                };
                let labels = [status.name.as_str(), stage.stage.as_str(), stage.job.as_str(), impact_table];
                metrics.pipeline_stage_impacted.with_label_values(&labels).set(f64::from(u8::from(stage.impacted)));
                let current = (stage.job.clone(), impact_table.to_string());
                let previous =
                    state.impacted_labels.insert((status.name.clone(), stage.stage.clone()), current.clone());
                if let Some((job, table)) = previous.filter(|previous| *previous != current) {
                    let gone = [status.name.as_str(), stage.stage.as_str(), job.as_str(), table.as_str()];
                    let _ = metrics.pipeline_stage_impacted.remove_label_values(&gone);
                }
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
            let runs = state.latest_runs(&self.config);
            self.config.pipelines.iter().map(|pipeline| health::evaluate(pipeline, &[], &runs)).collect()
        } else {
            state.last_status.clone()
        };
        let learned_edges = state
            .edges
            .iter()
            .flat_map(|(from, targets)| {
                targets.iter().map(|(to, jobs)| LearnedEdge {
                    from: from.clone(),
                    to: to.clone(),
                    jobs: jobs.iter().cloned().collect(),
                })
            })
            .collect();
        let mut runs = Vec::new();
        let mut run_bytes = 0;
        for record in state.run_order.iter().rev().filter_map(|run| state.runs.get(run)).take(VIEW_RUNS) {
            run_bytes += record_bytes(record);
            if !runs.is_empty() && run_bytes > VIEW_RUN_BYTES {
                break;
            }
            runs.push(record.clone());
        }
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
                    sensor: SensorKind::LINEAGE,
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::openlineage::MAX_NAME_BYTES;
    use super::*;

    fn config(extra: &str) -> Arc<Config> {
        let text = format!(
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"warehouse\"\n\
             [tables.\"bronze.raw\".freshness]\nwarn_after = \"1h\"\n{extra}"
        );
        Arc::new(Config::from_str(&text, std::path::Path::new("/tmp/sensors.toml")).unwrap())
    }

    async fn lineage(extra: &str) -> Lineage {
        Lineage::new(config(extra), Arc::new(Metrics::new()), HistoryStore::open_in_memory().await.unwrap())
    }

    fn dataset(name: &str) -> DatasetRef {
        DatasetRef { namespace: "file".into(), name: name.into(), table: None, snapshot_id: None }
    }

    fn event(run: usize, job: &str, inputs: Vec<DatasetRef>, outputs: Vec<DatasetRef>) -> RunEvent {
        RunEvent {
            event_type: RunState::Complete,
            event_time_ms: 1_000 + run as i64,
            run_id: format!("run-{run}"),
            job: job.into(),
            producer: None,
            inputs,
            outputs,
        }
    }

    fn datasets(prefix: &str, count: usize) -> Vec<DatasetRef> {
        (0..count).map(|index| dataset(&format!("{prefix}{index}"))).collect()
    }

    /// A posted event as JSON, `padding` bytes of facet making it larger.
    fn body(run_id: &uuid::Uuid, event_time: &str, job: &str, padding: usize) -> String {
        serde_json::json!({
            "eventType": "COMPLETE", "eventTime": event_time,
            "run": { "runId": run_id.to_string(), "facets": { "padding": "x".repeat(padding) } },
            "job": { "namespace": "spark", "name": job },
            "inputs": [{ "namespace": "file", "name": "/in" }],
            "outputs": [{ "namespace": "file", "name": "/out" }],
        })
        .to_string()
    }

    #[test]
    fn a_wide_event_costs_the_edge_cap_not_inputs_times_outputs() {
        let mut state = State::default();
        let started = Instant::now();
        state.apply(&event(1, "spark/wide", datasets("in", MAX_DATASETS), datasets("out", MAX_DATASETS)));
        let first = started.elapsed();
        assert_eq!(state.edge_count, MAX_EDGES, "edges stop at the cap");
        // At the cap, a second job over the same datasets labels the known edges, adds none.
        let started = Instant::now();
        state.apply(&event(2, "spark/again", datasets("in", MAX_DATASETS), datasets("out", MAX_DATASETS)));
        let second = started.elapsed();
        println!("1,000 x 1,000 event: {first:?} up to the cap, {second:?} at the cap");
        let edges: usize = state.edges.values().map(BTreeMap::len).sum();
        assert_eq!(edges, MAX_EDGES);
        assert!(state.edges.values().flat_map(BTreeMap::values).all(|jobs| jobs.len() == 2));
        // 10^6 pairs took 0.66 s before; generous for a debug build on a shared machine.
        assert!(first + second < std::time::Duration::from_secs(5), "{first:?} + {second:?}");
    }

    #[test]
    fn an_edge_keeps_its_newest_jobs() {
        let mut state = State::default();
        for run in 0..40 {
            state.apply(&event(run, &format!("job-{run:02}"), vec![dataset("a")], vec![dataset("b")]));
        }
        // job-05 is seen again: it becomes the newest, so job-24 is the oldest left to go.
        state.apply(&event(99, "job-30", vec![dataset("a")], vec![dataset("b")]));
        state.apply(&event(100, "job-new", vec![dataset("a")], vec![dataset("b")]));
        let jobs: Vec<&str> = state.edges["file:a"]["file:b"].iter().map(String::as_str).collect();
        assert_eq!(jobs.len(), MAX_JOBS_PER_EDGE);
        assert_eq!(jobs.first(), Some(&"job-25"), "{jobs:?}");
        assert_eq!(&jobs[jobs.len() - 2..], ["job-30", "job-new"]);
        assert_eq!(state.edge_count, 1);
    }

    #[test]
    fn runs_are_forgotten_past_the_count_and_byte_caps_with_their_links() {
        let mut state = State::default();
        let mapped =
            |name: &str| DatasetRef { table: Some(format!("t.{name}")), snapshot_id: Some(7), ..dataset(name) };
        for run in 0..MAX_RUNS + 5 {
            state.apply(&event(run, "j", Vec::new(), vec![mapped(&format!("o{run}"))]));
        }
        assert_eq!(state.runs.len(), MAX_RUNS);
        assert_eq!(state.run_order.len(), MAX_RUNS);
        assert!(!state.latest_by_table.contains_key("t.o0"), "a forgotten run is no table's latest");
        assert_eq!(state.latest_by_table.len(), MAX_RUNS);
        assert_eq!(state.snapshots.len(), MAX_RUNS + 5);

        // Runs with the most and longest names the limits allow: the byte cap forgets them first.
        let mut state = State::default();
        let long = "n".repeat(MAX_NAME_BYTES - 8);
        for run in 0..120 {
            let outputs = (0..MAX_DATASETS).map(|index| dataset(&format!("{long}{run:03}{index:04}"))).collect();
            state.apply(&event(run, "j", Vec::new(), outputs));
            assert!(state.run_bytes <= MAX_RUN_BYTES + record_bytes(&state.runs[&format!("run-{run}")]));
        }
        let held: usize = state.runs.values().map(record_bytes).sum();
        assert_eq!(held, state.run_bytes, "the byte count follows the records");
        assert!(state.run_bytes <= MAX_RUN_BYTES, "{} bytes", state.run_bytes);
        assert!(state.runs.len() < 120 && state.runs.contains_key("run-119"), "{} runs", state.runs.len());
    }

    #[test]
    fn a_run_keeps_at_most_the_dataset_cap_and_links_only_what_it_keeps() {
        let mut state = State::default();
        let outputs = |from: usize| -> Vec<DatasetRef> {
            (from..from + MAX_DATASETS)
                .map(|index| DatasetRef {
                    table: Some(format!("t.o{index}")),
                    snapshot_id: Some(index as i64),
                    ..dataset(&format!("o{index}"))
                })
                .collect()
        };
        state.apply(&event(1, "j", Vec::new(), outputs(0)));
        // The same run, half of it new datasets: those are not kept, nor linked.
        state.apply(&event(1, "j", Vec::new(), outputs(MAX_DATASETS / 2)));
        let record = &state.runs["run-1"];
        assert_eq!(record.outputs.len(), MAX_DATASETS);
        assert!(state.latest_by_table.contains_key("t.o999") && !state.latest_by_table.contains_key("t.o1000"));
        assert!(!state.snapshots.contains_key(&("t.o1000".to_string(), 1000)));
        // Duplicates within one event are one dataset; a newer snapshot id wins.
        let mut state = State::default();
        let twice = vec![dataset("a"), DatasetRef { snapshot_id: Some(3), ..dataset("a") }];
        state.apply(&event(2, "j", Vec::new(), twice));
        assert_eq!(state.runs["run-2"].outputs, [DatasetRef { snapshot_id: Some(3), ..dataset("a") }]);
    }

    #[tokio::test]
    async fn replay_reads_the_newest_events_within_retention_and_the_byte_budget() {
        let lineage = lineage("[lineage]\nretention = \"1d\"\n").await;
        let now = chrono::Utc::now();
        let mut stored = Vec::new();
        for index in 0..40 {
            // 10 older than the retention, then 30 within it, a minute apart.
            let age = if index < 10 { chrono::Duration::days(2) } else { chrono::Duration::minutes(40 - index) };
            let at = now - age - chrono::Duration::seconds(index);
            let run = uuid::Uuid::new_v4();
            let body = body(&run, &at.to_rfc3339(), &format!("job-{index:02}"), 2_000);
            stored.push(Event {
                table: String::new(),
                kind: EVENT_KIND.into(),
                key: format!("{index}"),
                occurred_at_ms: at.timestamp_millis(),
                payload: serde_json::from_str(&body).unwrap(),
            });
        }
        lineage.history.record_events(&stored).await.unwrap();
        let payload_bytes = stored[39].payload.to_string().len();

        // Within the budget of 12 events' text: the newest 12, applied oldest first.
        let bounds = ReplayBounds { events: 1_000, bytes: 12 * payload_bytes + 10 };
        assert_eq!(lineage.restore_within(bounds).await.unwrap(), 12);
        let view = lineage.view();
        let jobs: Vec<&str> = view.runs.iter().map(|run| run.job.as_str()).collect();
        let newest: Vec<String> = (28..40).rev().map(|index| format!("spark/job-{index:02}")).collect();
        assert_eq!(jobs, newest, "newest first in the view");

        // Everything within retention, not the 10 older events.
        let lineage =
            Lineage::new(config("[lineage]\nretention = \"1d\"\n"), lineage.metrics.clone(), lineage.history.clone());
        assert_eq!(lineage.restore().await.unwrap(), 30);
        // Bounded by count too.
        let lineage = Lineage::new(lineage.config.clone(), lineage.metrics.clone(), lineage.history.clone());
        assert_eq!(lineage.restore_within(ReplayBounds { events: 17, bytes: usize::MAX }).await.unwrap(), 17);
    }

    #[tokio::test]
    async fn retention_deletes_only_events_older_than_it_in_steps() {
        let lineage = lineage("[lineage]\nretention = \"2h\"\n").await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let event = |index: usize, at: i64, kind: &str| Event {
            table: String::new(),
            kind: kind.into(),
            key: format!("{index}"),
            occurred_at_ms: at,
            payload: serde_json::json!({}),
        };
        // More old events than one delete step takes.
        let old: Vec<Event> =
            (0..RETENTION_BATCH * 2 + 10).map(|index| event(index, now_ms - 3 * 3_600_000, EVENT_KIND)).collect();
        let recent: Vec<Event> = (0..5).map(|index| event(100_000 + index, now_ms - 3_600_000, EVENT_KIND)).collect();
        let other_kind = event(0, 0, "schema_change");
        lineage.history.record_events(&old).await.unwrap();
        lineage.history.record_events(&recent).await.unwrap();
        lineage.history.record_events(&[other_kind]).await.unwrap();

        assert_eq!(lineage.forget_old_events().await.unwrap(), old.len() as u64);
        let left = lineage.history.events(None, EVENT_KIND, 10_000).await.unwrap();
        assert_eq!(left.len(), recent.len());
        assert_eq!(lineage.history.events(None, "schema_change", 10).await.unwrap().len(), 1);
        assert_eq!(lineage.forget_old_events().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_event_from_the_future_expires_from_when_it_arrived() {
        let lineage = lineage("").await;
        let run = uuid::Uuid::new_v4();
        let before_ms = chrono::Utc::now().timestamp_millis();
        lineage.ingest(body(&run, "2999-01-01T00:00:00Z", "future", 0).into_bytes()).await.unwrap();
        let stored = lineage.history.events(None, EVENT_KIND, 10).await.unwrap();
        let after_ms = chrono::Utc::now().timestamp_millis();
        assert!((before_ms..=after_ms).contains(&stored[0].occurred_at_ms), "{}", stored[0].occurred_at_ms);
        assert_eq!(lineage.view().runs[0].event_time_ms, 32_472_144_000_000, "the run keeps its own time");
    }

    #[tokio::test]
    async fn an_event_over_a_limit_is_refused_and_changes_nothing() {
        let lineage = lineage("").await;
        let run = uuid::Uuid::new_v4();
        let long_job = "j".repeat(MAX_NAME_BYTES + 1);
        let error = lineage.ingest(body(&run, "2025-01-01T00:00:00Z", &long_job, 0).into_bytes()).await.unwrap_err();
        assert!(matches!(&error, LineageError::Event(EventError::TooLong { .. })), "{error}");
        assert!(lineage.history.events(None, EVENT_KIND, 10).await.unwrap().is_empty());
        assert!(lineage.view().runs.is_empty());
    }
}
