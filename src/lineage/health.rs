//! Stage health, root cause and propagation lag of the declared pipelines, from the latest
//! sensor results and the latest OpenLineage run of each table. Pure: no IO, no metrics.
//!
//! A stage fails when its table is unhealthy:
//! - every sensor of the table ended in `error` (the table is not loadable, the catalog is
//!   down); one failing sensor among working ones is icewatch's problem, not the data's, and
//!   shows in `icewatch_sensor_errors_total` instead;
//! - `freshness_seconds` is `warning` or `critical`: the last data commit is older than
//!   `warn_after` ("fresh within its thresholds");
//! - any other result is `critical` (volume, schema, distribution, event-time lag);
//! - or the latest OpenLineage run that wrote the table ended in FAIL or ABORT.
//!
//! Other warnings (a volume deviation, the statistical commit-cadence score) do not fail a
//! stage. A stage whose table has no result yet is unknown: neither failing nor healthy.
//! A failing stage is a root cause when none of its upstream stages fails, or when its own
//! table is unreadable: a failing upstream explains a stale or late table, never metadata
//! that cannot be loaded. Every stage transitively downstream of a failing stage is impacted;
//! a root cause lists no upstream cause of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::config::{PipelineConfig, SensorKind};
use crate::sensors::SensorResult;
use crate::sensors::{Evaluation, Metric, Status};

use super::RunRecord;

/// What the pipeline knows of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Failing,
    Unknown,
}

/// Why a stage fails: a short word for sentences ("stale") and the result that says so.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    pub word: String,
    pub detail: String,
    /// The status of the result behind it (`critical` for a failed job run).
    pub status: Status,
    pub snapshot_id: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageStatus {
    pub stage: String,
    pub table: String,
    pub job: String,
    pub upstream: Vec<String>,
    pub health: Health,
    pub reasons: Vec<Reason>,
    pub root_cause: bool,
    pub impacted: bool,
    /// Failing stages upstream of this one that are root causes.
    pub caused_by: Vec<String>,
    /// Stages transitively downstream, while this one fails (else 0).
    pub downstream_impact_count: usize,
    /// Unix ms of the table's last data commit (from the freshness result).
    pub last_data_commit_ms: Option<i64>,
    /// Duration of the last finished job run writing the table, else how long after its
    /// newest upstream's last data commit this table's came.
    pub duration_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EdgeLag {
    pub upstream: String,
    pub downstream: String,
    /// How far the downstream's last data commit lags behind the upstream's (0 when newer).
    pub lag_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    pub stages: Vec<StageStatus>,
    pub edges: Vec<EdgeLag>,
    /// `Some(true)` when every stage is healthy, `Some(false)` when one fails, `None` while
    /// a stage is unknown and none fails.
    pub end_to_end_success: Option<bool>,
}

impl PipelineStatus {
    pub fn stage(&self, name: &str) -> Option<&StageStatus> {
        self.stages.iter().find(|stage| stage.stage == name)
    }
}

/// The health of one table from its latest results: `None` when it has none.
pub fn table_reasons(table: &str, results: &[SensorResult]) -> Option<(Vec<Reason>, Option<i64>)> {
    let own: Vec<&SensorResult> =
        results.iter().filter(|result| result.table == table && result.sensor != SensorKind::LINEAGE).collect();
    if own.is_empty() {
        return None;
    }
    let mut reasons = Vec::new();
    let mut last_data_commit_ms = None;
    let unreadable = own.iter().all(|result| result.status() == Status::Error);
    for evaluation in own.iter().flat_map(|result| &result.evaluations) {
        if evaluation.status == Status::Error && !unreadable {
            continue;
        }
        if evaluation.sensor == SensorKind::FRESHNESS && evaluation.metric == Metric::FRESHNESS_SECONDS {
            last_data_commit_ms = evaluation.observed_at.as_deref().and_then(parse_time_ms);
        }
        if let Some(word) = failure_word(evaluation) {
            reasons.push(Reason {
                word: word.to_string(),
                detail: format!("{} {}: {}", evaluation.sensor, evaluation.metric, evaluation.message),
                status: evaluation.status,
                snapshot_id: evaluation.snapshot_id,
            });
        }
    }
    Some((reasons, last_data_commit_ms))
}

/// The word of a table whose sensors all ended in `error`: it cannot be loaded at all.
const UNREADABLE: &str = "unreadable";

/// Whether the stage fails for a reason no upstream can explain (its table is unreadable).
fn fails_on_its_own(stage: &StageStatus) -> bool {
    stage.reasons.iter().any(|reason| reason.word == UNREADABLE)
}

/// The word for a result that fails a stage, `None` for one that does not.
fn failure_word(evaluation: &Evaluation) -> Option<&'static str> {
    let freshness = evaluation.sensor == SensorKind::FRESHNESS && evaluation.metric == Metric::FRESHNESS_SECONDS;
    match evaluation.status {
        Status::Error => Some(UNREADABLE),
        Status::Warning if freshness => Some("stale"),
        Status::Critical if freshness => Some("stale"),
        Status::Critical => Some(match evaluation.sensor {
            SensorKind::FRESHNESS => "late",
            SensorKind::VOLUME => "off in volume",
            SensorKind::SCHEMA => "broken in schema",
            SensorKind::DISTRIBUTION => "off in distribution",
            // Lineage, and a kind added later, whose critical result names itself in the message.
            _ => "failing",
        }),
        _ => None,
    }
}

fn parse_time_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|time| time.timestamp_millis())
}

/// Health of every stage of `pipeline`. `runs` is the latest OpenLineage run that wrote each table.
pub fn evaluate(
    pipeline: &PipelineConfig,
    results: &[SensorResult],
    runs: &HashMap<String, RunRecord>,
) -> PipelineStatus {
    let mut stages: Vec<StageStatus> = pipeline
        .stages
        .iter()
        .map(|stage| {
            let observed = table_reasons(&stage.table, results);
            let run = runs.get(&stage.table);
            let mut reasons = observed.as_ref().map(|(reasons, _)| reasons.clone()).unwrap_or_default();
            if let Some(run) = run.filter(|run| run.state.is_failure()) {
                reasons.push(Reason {
                    word: "not written (its job failed)".to_string(),
                    detail: format!(
                        "job `{}` run `{}` ended {} at {}",
                        run.job,
                        run.run_id,
                        run.state.as_str(),
                        crate::sensors::format_ms(run.event_time_ms).unwrap_or_default()
                    ),
                    status: Status::Critical,
                    snapshot_id: None,
                });
            }
            let health = if !reasons.is_empty() {
                Health::Failing
            } else if observed.is_some() || run.is_some() {
                Health::Healthy
            } else {
                Health::Unknown
            };
            StageStatus {
                stage: stage.stage.clone(),
                table: stage.table.clone(),
                job: stage.job.clone(),
                upstream: stage.upstream.clone(),
                health,
                reasons,
                root_cause: false,
                impacted: false,
                caused_by: Vec::new(),
                downstream_impact_count: 0,
                last_data_commit_ms: observed.and_then(|(_, commit)| commit),
                duration_seconds: run.and_then(RunRecord::duration_seconds),
            }
        })
        .collect();

    let index: HashMap<String, usize> =
        stages.iter().enumerate().map(|(position, stage)| (stage.stage.clone(), position)).collect();
    let mut downstream: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (position, stage) in stages.iter().enumerate() {
        for parent in &stage.upstream {
            if let Some(&parent) = index.get(parent) {
                downstream.entry(parent).or_default().push(position);
            }
        }
    }
    // Config validation rejects cycles; `reach` still guards with a visited set.
    let reach = |start: usize| -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for &child in downstream.get(&node).into_iter().flatten() {
                if seen.insert(child) {
                    stack.push(child);
                }
            }
        }
        seen
    };
    let failing: Vec<bool> = stages.iter().map(|stage| stage.health == Health::Failing).collect();
    let mut roots = Vec::new();
    for position in 0..stages.len() {
        if !failing[position] {
            continue;
        }
        let upstream_fails =
            stages[position].upstream.iter().any(|parent| index.get(parent).is_some_and(|&parent| failing[parent]));
        if !upstream_fails || fails_on_its_own(&stages[position]) {
            roots.push(position);
        }
    }
    for position in 0..stages.len() {
        if !failing[position] {
            continue;
        }
        let below = reach(position);
        stages[position].downstream_impact_count = below.len();
        for child in below {
            stages[child].impacted = true;
        }
    }
    for &root in &roots {
        stages[root].root_cause = true;
        let root_name = stages[root].stage.clone();
        for child in reach(root) {
            if !roots.contains(&child) {
                stages[child].caused_by.push(root_name.clone());
            }
        }
    }

    let mut edges = Vec::new();
    for position in 0..stages.len() {
        let own_commit = stages[position].last_data_commit_ms;
        let mut newest_upstream: Option<i64> = None;
        for parent in stages[position].upstream.clone() {
            let upstream_commit = index.get(&parent).and_then(|&parent| stages[parent].last_data_commit_ms);
            newest_upstream = newest_upstream.max(upstream_commit);
            let lag_seconds = match (upstream_commit, own_commit) {
                (Some(upstream), Some(own)) => Some(((upstream - own) as f64 / 1000.0).max(0.0)),
                _ => None,
            };
            edges.push(EdgeLag { upstream: parent, downstream: stages[position].stage.clone(), lag_seconds });
        }
        if stages[position].duration_seconds.is_none()
            && let (Some(upstream), Some(own)) = (newest_upstream, own_commit)
            && own >= upstream
        {
            stages[position].duration_seconds = Some((own - upstream) as f64 / 1000.0);
        }
    }

    let end_to_end_success = if failing.iter().any(|&fails| fails) {
        Some(false)
    } else if stages.iter().all(|stage| stage.health == Health::Healthy) {
        Some(true)
    } else {
        None
    };
    PipelineStatus { name: pipeline.name.clone(), stages, edges, end_to_end_success }
}

/// One `lineage` result per stage with a known health, for the `check` report: the cause of a
/// failure in words ("`silver.cleaned_trades` is stale because `bronze.raw_trades` is stale").
/// Its status is the worst of the stage's own failing results, so the report's exit code does
/// not change; a healthy stage downstream of a failure is `ok` with a note.
pub fn stage_evaluations(status: &PipelineStatus) -> Vec<Evaluation> {
    let mut out = Vec::new();
    for stage in &status.stages {
        let word = |stage: &StageStatus| {
            stage.reasons.first().map_or_else(|| "failing".to_string(), |reason| reason.word.clone())
        };
        let roots: Vec<&StageStatus> = stage.caused_by.iter().filter_map(|name| status.stage(name)).collect();
        let because =
            roots.iter().map(|root| format!("`{}` is {}", root.table, word(root))).collect::<Vec<_>>().join(" and ");
        let (evaluation_status, message) = match stage.health {
            Health::Unknown => continue,
            Health::Failing => {
                let worst = stage.reasons.iter().map(|reason| reason.status).max().unwrap_or(Status::Critical);
                let message = if stage.root_cause {
                    let impact = match stage.downstream_impact_count {
                        0 => String::new(),
                        count => format!("; {count} downstream stage(s) impacted"),
                    };
                    format!(
                        "root cause in pipeline `{}`: `{}` is {} ({}){impact}",
                        status.name,
                        stage.table,
                        word(stage),
                        stage.reasons[0].detail
                    )
                } else {
                    format!("`{}` is {} because {because}", stage.table, word(stage))
                };
                (worst, message)
            }
            Health::Healthy if stage.impacted => {
                (Status::Ok, format!("`{}` is healthy but downstream of a failure: {because}", stage.table))
            }
            Health::Healthy => {
                (Status::Ok, format!("stage `{}` of pipeline `{}` is healthy", stage.stage, status.name))
            }
        };
        let mut evaluation =
            Evaluation::new(&stage.table, SensorKind::LINEAGE, Metric::STAGE, evaluation_status, message)
                .with_value(if stage.health == Health::Healthy { 1.0 } else { 0.0 });
        evaluation.snapshot_id = stage.reasons.iter().find_map(|reason| reason.snapshot_id);
        out.push(evaluation);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StageConfig;
    use std::time::Duration;

    fn pipeline() -> PipelineConfig {
        let stage = |stage: &str, table: &str, upstream: &[&str]| StageConfig {
            stage: stage.to_string(),
            table: table.to_string(),
            upstream: upstream.iter().map(|name| name.to_string()).collect(),
            job: table.to_string(),
        };
        PipelineConfig {
            name: "trades".to_string(),
            stages: vec![
                stage("bronze", "b.t", &[]),
                stage("silver", "s.t", &["bronze"]),
                stage("gold", "g.t", &["silver"]),
            ],
        }
    }

    fn freshness(table: &str, status: Status, commit_ms: i64) -> SensorResult {
        let evaluation = Evaluation::new(
            table,
            SensorKind::FRESHNESS,
            Metric::FRESHNESS_SECONDS,
            status,
            "last data commit 3h ago".to_string(),
        )
        .at(commit_ms, Some(1));
        SensorResult {
            table: table.to_string(),
            layer: String::new(),
            sensor: SensorKind::FRESHNESS,
            evaluations: vec![evaluation],
            finished_at_ms: 0,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn stale_bronze_is_the_root_and_everything_below_is_impacted() {
        let results = [
            freshness("b.t", Status::Warning, 1_000_000),
            freshness("s.t", Status::Warning, 1_060_000),
            freshness("g.t", Status::Ok, 1_030_000),
        ];
        let status = evaluate(&pipeline(), &results, &HashMap::new());
        let bronze = status.stage("bronze").unwrap();
        assert!(bronze.root_cause && !bronze.impacted);
        assert_eq!(bronze.downstream_impact_count, 2);
        let silver = status.stage("silver").unwrap();
        assert!(!silver.root_cause && silver.impacted && silver.health == Health::Failing);
        assert_eq!(silver.caused_by, ["bronze"]);
        assert!(status.stage("gold").unwrap().impacted);
        assert_eq!(status.end_to_end_success, Some(false));
        // silver committed after bronze: no lag; gold is 30 s behind silver.
        assert_eq!(status.edges[0].lag_seconds, Some(0.0));
        assert_eq!(status.edges[1].lag_seconds, Some(30.0));
        let messages: Vec<String> =
            stage_evaluations(&status).into_iter().map(|evaluation| evaluation.message).collect();
        assert!(messages[1].contains("`s.t` is stale because `b.t` is stale"), "{messages:?}");
        assert!(messages[0].starts_with("root cause"), "{messages:?}");
    }

    #[test]
    fn warnings_other_than_staleness_do_not_fail_and_missing_results_are_unknown() {
        let mut volume = freshness("b.t", Status::Ok, 0);
        volume.evaluations.push(Evaluation::new(
            "b.t",
            SensorKind::VOLUME,
            Metric::ROWS_ADDED,
            Status::Warning,
            "x".to_string(),
        ));
        let status = evaluate(&pipeline(), &[volume, freshness("s.t", Status::Ok, 0)], &HashMap::new());
        assert_eq!(status.stage("bronze").unwrap().health, Health::Healthy);
        assert_eq!(status.stage("gold").unwrap().health, Health::Unknown);
        assert_eq!(status.end_to_end_success, None);
    }

    #[test]
    fn a_table_fails_on_errors_only_when_no_sensor_could_run() {
        let error = |table: &str, sensor: SensorKind| SensorResult {
            table: table.to_string(),
            layer: String::new(),
            sensor,
            evaluations: vec![Evaluation::new(
                table,
                sensor,
                Metric::RUN,
                Status::Error,
                "failed to load table".to_string(),
            )],
            finished_at_ms: 0,
            duration: Duration::ZERO,
        };
        let results = [
            error("b.t", SensorKind::FRESHNESS),
            error("b.t", SensorKind::VOLUME),
            freshness("s.t", Status::Ok, 0),
            error("s.t", SensorKind::DISTRIBUTION),
        ];
        let status = evaluate(&pipeline(), &results, &HashMap::new());
        let bronze = status.stage("bronze").unwrap();
        assert_eq!(bronze.health, Health::Failing);
        assert_eq!(bronze.reasons[0].word, "unreadable");
        assert_eq!(status.stage("silver").unwrap().health, Health::Healthy);
    }

    /// Every combination of bronze's and silver's states: which of them is the root cause,
    /// and whether silver is blamed on bronze.
    #[test]
    fn root_cause_for_each_combination_of_upstream_and_downstream_states() {
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum State {
            Healthy,
            StaleWarning,
            StaleCritical,
            Unreadable,
            Unknown,
        }
        let results_for = |table: &str, state: State| -> Vec<SensorResult> {
            match state {
                State::Healthy => vec![freshness(table, Status::Ok, 0)],
                State::StaleWarning => vec![freshness(table, Status::Warning, 0)],
                State::StaleCritical => vec![freshness(table, Status::Critical, 0)],
                State::Unreadable => {
                    let mut result = freshness(table, Status::Error, 0);
                    result.evaluations = vec![Evaluation::new(
                        table,
                        SensorKind::FRESHNESS,
                        Metric::RUN,
                        Status::Error,
                        "corrupt".to_string(),
                    )];
                    vec![result]
                }
                State::Unknown => Vec::new(),
            }
        };
        let failing = |state: State| matches!(state, State::StaleWarning | State::StaleCritical | State::Unreadable);
        let states = [State::Healthy, State::StaleWarning, State::StaleCritical, State::Unreadable, State::Unknown];
        for upstream in states {
            for downstream in states {
                let mut results = results_for("b.t", upstream);
                results.extend(results_for("s.t", downstream));
                let status = evaluate(&pipeline(), &results, &HashMap::new());
                let bronze = status.stage("bronze").unwrap();
                let silver = status.stage("silver").unwrap();
                let case = format!("bronze {upstream:?}, silver {downstream:?}");
                assert_eq!(bronze.root_cause, failing(upstream), "{case}");
                let silver_is_root = failing(downstream) && (!failing(upstream) || downstream == State::Unreadable);
                assert_eq!(silver.root_cause, silver_is_root, "{case}");
                assert_eq!(silver.impacted, failing(upstream), "{case}");
                let blamed_on_bronze = failing(upstream) && !silver_is_root;
                assert_eq!(silver.caused_by == ["bronze"], blamed_on_bronze, "{case}");
                let silver_message = stage_evaluations(&status)
                    .into_iter()
                    .map(|evaluation| evaluation.message)
                    .find(|message| message.contains("`s.t`"));
                if let Some(message) = silver_message.filter(|_| failing(downstream)) {
                    assert_eq!(message.contains("because `b.t`"), blamed_on_bronze, "{case}: {message}");
                }
            }
        }
    }

    #[test]
    fn a_failing_middle_stage_is_the_root_when_its_upstream_is_healthy() {
        let results = [
            freshness("b.t", Status::Ok, 0),
            freshness("s.t", Status::Critical, 0),
            freshness("g.t", Status::Warning, 0),
        ];
        let status = evaluate(&pipeline(), &results, &HashMap::new());
        assert!(!status.stage("bronze").unwrap().impacted);
        assert!(status.stage("silver").unwrap().root_cause);
        assert_eq!(status.stage("silver").unwrap().downstream_impact_count, 1);
        assert!(!status.stage("gold").unwrap().root_cause);
    }
}
