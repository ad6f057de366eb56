//! Freshness: how long since the table's data last changed, read from the snapshot log (no data
//! scan). Compactions and metadata-only commits do not count. Optionally the event-time lag of a
//! timestamp column, from manifest upper bounds (scanning only files that have none), and the
//! commit cadence: the current gap since the last data commit against past inter-commit gaps.

use std::collections::HashSet;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use futures::TryStreamExt;
use iceberg::spec::{DataContentType, ManifestContentType, ManifestStatus, PrimitiveLiteral, PrimitiveType, Type};
use iceberg::table::Table;

use futures::future::BoxFuture;

use super::manifest_cache::ManifestCache;
use super::snapshots::{Commit, commits};
use super::{
    Evaluation, Family, Input, Metric, Observed, Reading, Sensor, SensorError, Status, Step, WindowRequest, Windows,
    human_seconds,
};
use crate::config::{FreshnessConfig, FreshnessCounts, Seasonality, SensorKind};
use crate::history::{Point, SeriesKey};
use crate::judging::seasonal;
use crate::judging::{self, Measure};
use crate::stats::{Direction, score};

/// What the freshness sensor saw.
#[derive(Clone, Debug)]
pub struct FreshnessObservation {
    pub now_ms: i64,
    /// The newest commit that counts as data (`freshness.counts`: an arrival of rows by
    /// default), if the table ever had one.
    pub last_data_commit: Option<Commit>,
    /// The commits that count, oldest first: (snapshot id, commit time).
    pub data_commits: Vec<(i64, i64)>,
    /// What counted.
    pub counts: FreshnessCounts,
    /// The newer commits that did not count, as a message names them (`delete`, empty `append`),
    /// each kind once, oldest first.
    pub skipped_since: Vec<String>,
    /// The newest snapshot of any kind (a compaction after the last data commit shows here).
    pub last_commit: Option<Commit>,
    pub event_time: Option<EventTime>,
}

/// The max of the event-time column and how it was obtained.
#[derive(Clone, Debug, PartialEq)]
pub struct EventTime {
    pub column: String,
    pub max_ms: i64,
    /// Files whose bound came from the manifests, and files that had to be scanned.
    pub files_from_metadata: usize,
    pub files_scanned: usize,
}

impl FreshnessObservation {
    pub fn age_seconds(&self) -> Option<f64> {
        self.last_data_commit.as_ref().map(|commit| ((self.now_ms - commit.timestamp_ms) as f64 / 1000.0).max(0.0))
    }

    pub fn event_time_lag_seconds(&self) -> Option<f64> {
        self.event_time.as_ref().map(|event| (self.now_ms - event.max_ms) as f64 / 1000.0)
    }
}

/// Per manifest and column field id, the max of the column's upper bounds.
pub type ManifestBoundsCache = ManifestCache<i32, ManifestBounds>;

#[derive(Clone, Debug, Default)]
pub struct ManifestBounds {
    max_ms: Option<i64>,
    files_with_bound: usize,
    files_without_bound: Vec<String>,
}

pub async fn observe(
    table: &Table,
    table_name: &str,
    config: &FreshnessConfig,
    now_ms: i64,
    cache: &ManifestBoundsCache,
) -> Result<FreshnessObservation, SensorError> {
    let history = commits(table.metadata());
    let event_time = match &config.timestamp_column {
        Some(column) => max_event_time(table, table_name, column, cache).await?,
        None => None,
    };
    Ok(FreshnessObservation { event_time, ..observation_at(&history, config, now_ms) })
}

/// What the sensor sees at `now_ms` of a table whose snapshot log is `history` (oldest first;
/// `backtest` passes a prefix of it, to stand at a past moment), without the event time, which
/// needs the data files.
pub fn observation_at(history: &[Commit], config: &FreshnessConfig, now_ms: i64) -> FreshnessObservation {
    let counted = counted_commits(history, config.counts);
    FreshnessObservation {
        now_ms,
        last_data_commit: counted.data.last().map(|commit| (*commit).clone()),
        data_commits: counted.data.iter().map(|commit| (commit.snapshot_id, commit.timestamp_ms)).collect(),
        counts: config.counts,
        skipped_since: counted.skipped_since,
        last_commit: history.last().cloned(),
        event_time: None,
    }
}

/// The commits that count for freshness, and what came after the last of them.
struct Counted<'h> {
    /// Oldest first, one per table commit (an overwrite written as `delete` + `append` in one
    /// transaction is one data change for the cadence: its last snapshot).
    data: Vec<&'h Commit>,
    /// The newer commits that did not count, each kind once, oldest first.
    skipped_since: Vec<String>,
}

fn counted_commits(history: &[Commit], counts: FreshnessCounts) -> Counted<'_> {
    let counts_as_data = |commit: &Commit| match counts {
        FreshnessCounts::Arrivals => commit.is_arrival(),
        FreshnessCounts::AnyDataChange => commit.is_data_change(),
    };
    let newest_counted = history.iter().rposition(counts_as_data);
    let mut skipped_since: Vec<String> = Vec::new();
    for commit in &history[newest_counted.map_or(0, |index| index + 1)..] {
        let described = commit.describe_without_rows();
        if !skipped_since.contains(&described) {
            skipped_since.push(described);
        }
    }
    let mut data: Vec<&Commit> = history.iter().filter(|commit| counts_as_data(commit)).collect();
    data.dedup_by(|later, earlier| {
        let same = later.table_commit == earlier.table_commit;
        if same {
            *earlier = *later;
        }
        same
    });
    Counted { data, skipped_since }
}

/// Inter-commit gaps, one point per data commit after the first: backfilled from the snapshot
/// log, so the cadence has a history on first sight.
pub fn series(table_name: &str, observation: &FreshnessObservation) -> Vec<Point> {
    let key = gap_series(table_name);
    observation
        .data_commits
        .windows(2)
        .map(|pair| Point {
            series: key.clone(),
            observed_at_ms: pair[1].1,
            snapshot_id: Some(pair[1].0),
            value: ((pair[1].1 - pair[0].1) as f64 / 1000.0).max(0.0),
        })
        .collect()
}

pub fn gap_series(table_name: &str) -> SeriesKey {
    SeriesKey::new(table_name, SensorKind::FRESHNESS.as_str(), Metric::COMMIT_GAP_SECONDS.as_str(), &[])
}

/// The gaps the cadence score needs: those its seasonal model is chosen from and the `window`
/// newest before now.
pub fn window_requests(
    table_name: &str,
    config: &FreshnessConfig,
    observation: &FreshnessObservation,
) -> Vec<WindowRequest> {
    let limit = match config.seasonality {
        Seasonality::Fixed(seasonal::Cycle::None) => config.settings.window,
        _ => MAX_GAP_POINTS.max(config.settings.window),
    };
    vec![WindowRequest { series: gap_series(table_name), before_ms: observation.now_ms + 1, limit, since_ms: None }]
}

/// Most past gaps read for the cadence's seasonal model (35 days of a table committing every
/// five minutes).
const MAX_GAP_POINTS: usize = 10_000;

pub fn judge(
    table_name: &str,
    config: &FreshnessConfig,
    observation: &FreshnessObservation,
    windows: &Windows,
) -> Vec<Evaluation> {
    judge_with(table_name, config, observation, windows, None)
}

/// [`judge`] with the cadence's seasonal model already chosen (`backtest` chooses once a day).
pub fn judge_with(
    table_name: &str,
    config: &FreshnessConfig,
    observation: &FreshnessObservation,
    windows: &Windows,
    cadence: Option<&(seasonal::Choice, seasonal::Activity)>,
) -> Vec<Evaluation> {
    let kind = SensorKind::FRESHNESS;
    let Some(last) = &observation.last_data_commit else {
        let message = match (&observation.last_commit, observation.counts) {
            (Some(_), FreshnessCounts::Arrivals) => format!(
                "no commit in the table's history added rows (it has only {} commits)",
                observation.skipped_since.join(" and ")
            ),
            (Some(commit), FreshnessCounts::AnyDataChange) => format!(
                "no data-changing commit in the table's history (latest commit is a `{}` that changed no records)",
                commit.operation.as_str()
            ),
            (None, _) => "the table has no snapshot: it never received data".to_string(),
        };
        return vec![Evaluation::new(table_name, kind, Metric::FRESHNESS_SECONDS, Status::Critical, message)];
    };
    let age = observation.age_seconds().unwrap_or(0.0);
    let mut results = Vec::new();

    let (status, verdict) = threshold_status(age, config);
    // The append half of an overwrite written as `delete` + `append` in one commit.
    let operation = if last.replaces_rows { "overwrite: delete + append" } else { last.operation.as_str() };
    let what = match observation.counts {
        FreshnessCounts::Arrivals => "last commit that added rows",
        FreshnessCounts::AnyDataChange => "last data commit",
    };
    let mut message = format!("{what} ({operation}) {} ago{}", human_seconds(age), verdict);
    if !observation.skipped_since.is_empty() {
        let changed = match observation.counts {
            FreshnessCounts::Arrivals => "added no rows",
            FreshnessCounts::AnyDataChange => "changed no data",
        };
        message.push_str(&format!("; newer {} commits {changed}", observation.skipped_since.join(" and ")));
    }
    let mut freshness = Evaluation::new(table_name, kind, Metric::FRESHNESS_SECONDS, status, message)
        .with_value(age)
        .at(last.timestamp_ms, Some(last.snapshot_id));
    if let Some(warn) = config.warn_after {
        freshness.expected_lower = Some(0.0);
        freshness.expected_upper = Some(warn.as_secs_f64());
    }
    results.push(freshness);

    results.push(judge_cadence(table_name, config, observation, windows, (age, status), cadence));

    if let (Some(event), Some(lag)) = (&observation.event_time, observation.event_time_lag_seconds()) {
        let (status, verdict) = lag_status(lag, config);
        let source = if event.files_scanned == 0 {
            "from manifest bounds, no data scanned".to_string()
        } else {
            format!("{} file(s) from manifest bounds, {} scanned", event.files_from_metadata, event.files_scanned)
        };
        let age = if lag < 0.0 {
            format!("{} in the future", human_seconds(-lag))
        } else {
            format!("{} old", human_seconds(lag))
        };
        let mut lag_result = Evaluation::new(
            table_name,
            kind,
            Metric::EVENT_TIME_LAG_SECONDS,
            status,
            format!("newest `{}` is {age}{verdict} ({source})", event.column),
        )
        .with_value(lag)
        .at(observation.now_ms, None);
        lag_result.column = Some(event.column.clone());
        results.push(lag_result);
    }
    results
}

/// How far in the future the newest event time may be before it is a warning: clocks of
/// writers and of icewatch drift a little; more is clock skew or bad data.
pub const FUTURE_EVENT_TOLERANCE_SECONDS: f64 = 300.0;

/// Status of the event-time lag against its own thresholds (`lag_warn_after`,
/// `lag_critical_after`), and the words that explain it. An event time in the future beyond
/// [`FUTURE_EVENT_TOLERANCE_SECONDS`] is a warning whatever the thresholds.
fn lag_status(lag_seconds: f64, config: &FreshnessConfig) -> (Status, String) {
    if lag_seconds < -FUTURE_EVENT_TOLERANCE_SECONDS {
        return (Status::Warning, ": an event time in the future (clock skew, or bad data in the column)".to_string());
    }
    let thresholds = (config.lag_warn_after, config.lag_critical_after);
    against(
        lag_seconds,
        thresholds,
        ("lag_warn_after", "lag_critical_after"),
        " (no lag_warn_after: reported, not judged)",
    )
}

/// Status of an age against `warn_after` / `critical_after`, and the words that explain it.
fn threshold_status(age_seconds: f64, config: &FreshnessConfig) -> (Status, String) {
    against(age_seconds, (config.warn_after, config.critical_after), ("warn_after", "critical_after"), "")
}

/// `seconds` against a (warning, critical) pair of thresholds named `names`, and the words
/// that explain the status; `unset` is said when there is no warning threshold.
fn against(
    seconds: f64,
    (warn, critical): (Option<Duration>, Option<Duration>),
    (warn_name, critical_name): (&str, &str),
    unset: &str,
) -> (Status, String) {
    if let Some(critical) = critical
        && seconds > critical.as_secs_f64()
    {
        return (Status::Critical, format!(", over {critical_name} {}", human_seconds(critical.as_secs_f64())));
    }
    match warn {
        Some(warn) if seconds > warn.as_secs_f64() => {
            (Status::Warning, format!(", over {warn_name} {}", human_seconds(warn.as_secs_f64())))
        }
        Some(warn) => (Status::Ok, format!(", within {warn_name} {}", human_seconds(warn.as_secs_f64()))),
        None => (Status::Ok, unset.to_string()),
    }
}

/// The commit times the cadence reads, oldest first: both ends of every stored gap and the
/// arrivals of the snapshot log. The value judged is the open gap since the last commit, so
/// every closed gap of the snapshot log is history: the store receives a series' newest point
/// only after the judge ran (right for volume, whose newest point is the value judged), and
/// without the log's own gaps a first run (or one after the store was lost) would score
/// against one gap fewer than every later run.
fn cadence_commits(table_name: &str, observation: &FreshnessObservation, windows: &Windows) -> Vec<i64> {
    let stored = windows.get(&gap_series(table_name)).map(Vec::as_slice).unwrap_or_default();
    let mut commits_ms: Vec<i64> = stored
        .iter()
        .flat_map(|gap| [gap.observed_at_ms - (gap.value * 1000.0).round() as i64, gap.observed_at_ms])
        .chain(observation.data_commits.iter().map(|(_, at_ms)| *at_ms))
        .collect();
    commits_ms.sort_unstable();
    commits_ms.dedup();
    commits_ms
}

/// The seasonal model of the cadence at the observation's moment: the configured cycle, or the
/// automatic choice from the commits before that day (the same for every run of the day).
pub fn choose_cadence(
    table_name: &str,
    config: &FreshnessConfig,
    observation: &FreshnessObservation,
    windows: &Windows,
) -> (seasonal::Choice, seasonal::Activity) {
    let settings = &config.settings;
    let backtest = seasonal::Backtest {
        window_ms: 0,
        points: settings.window,
        min_history: settings.min_history,
        zscore_threshold: settings.zscore_threshold,
    };
    backtest.choose_activity(config.seasonality, &cadence_commits(table_name, observation, windows), observation.now_ms)
}

/// The current open gap since the last data commit, scored against past gaps (spikes only:
/// committing sooner than usual is not a problem), both in the activity time of `cadence`.
fn judge_cadence(
    table_name: &str,
    config: &FreshnessConfig,
    observation: &FreshnessObservation,
    windows: &Windows,
    (age, threshold_status): (f64, Status),
    cadence: Option<&(seasonal::Choice, seasonal::Activity)>,
) -> Evaluation {
    let commits_ms = cadence_commits(table_name, observation, windows);
    let settings = &config.settings;
    let chosen;
    let (choice, activity) = match cadence {
        Some((choice, activity)) => (choice, activity),
        None => {
            chosen = choose_cadence(table_name, config, observation, windows);
            (&chosen.0, &chosen.1)
        }
    };
    let recent = &commits_ms[commits_ms.len().saturating_sub(settings.window + 1)..];
    let gaps: Vec<f64> = recent.windows(2).map(|pair| activity.between(pair[0], pair[1])).collect();
    let last_ms = observation.last_data_commit.as_ref().map_or(observation.now_ms, |commit| commit.timestamp_ms);
    let open_gap = activity.between(last_ms, observation.now_ms.max(last_ms));
    let seasonal = activity.cycle() != seasonal::Cycle::None;
    let params = judging::scoring_params(settings, Direction::Spike, Measure::CommitGap);
    let scored = score(open_gap, &gaps, &params);
    // In clock time: the band ends when the open gap's activity time reaches its upper bound.
    let due = |activity_seconds: f64| activity.clock_after(last_ms, activity_seconds);
    let busy = |activity_seconds: f64| {
        if seasonal {
            format!(
                " ({} of it in the table's usual busy hours, {})",
                human_seconds(activity_seconds),
                choice.describe()
            )
        } else {
            String::new()
        }
    };
    let new_level = scored.as_ref().map_or(String::new(), |score| {
        judging::new_level_note(score, gaps.len(), |start| {
            format!("the gap that ended {}", crate::sensors::format_ms(recent[start + 1]).unwrap_or_default())
        })
    });
    let (status, message) = match &scored {
        None => (
            Status::InsufficientHistory,
            format!("{} past commit gap(s), need {} to score the cadence", gaps.len(), params.min_history),
        ),
        Some(score) if score.is_anomaly && threshold_status == Status::Ok && config.warn_after.is_some() => (
            Status::Ok,
            format!(
                "no commit for {}{}, later than the usual {} (z={:.1}), but within warn_after{new_level}",
                human_seconds(age),
                busy(open_gap),
                human_seconds(score.mean),
                score.zscore
            ),
        ),
        Some(score) if score.is_anomaly => (
            Status::Warning,
            format!(
                "no commit for {}{}, the table usually commits every {} (z={:.1}){new_level}",
                human_seconds(age),
                busy(open_gap),
                human_seconds(score.mean),
                score.zscore
            ),
        ),
        Some(score) => (
            Status::Ok,
            format!(
                "commit cadence as usual: {} since the last{}, typically {}{new_level}",
                human_seconds(age),
                busy(open_gap),
                human_seconds(score.mean)
            ),
        ),
    };
    let mut evaluation =
        Evaluation::new(table_name, SensorKind::FRESHNESS, Metric::COMMIT_GAP_SECONDS, status, message)
            .with_value(age)
            .at(observation.now_ms, None);
    if let Some(score) = &scored {
        let (lower, upper) = Measure::CommitGap.domain().clamp(due(score.expected_lower), due(score.expected_upper));
        evaluation.zscore = Some(score.zscore);
        evaluation.expected_lower = Some(lower);
        evaluation.expected_upper = Some(upper);
    }
    evaluation.seasonality = Some(choice.describe());
    evaluation
}

/// Max of `column` over the current snapshot's live data files: upper bounds from manifests,
/// and a scan of only the files whose manifest entry has no bound.
async fn max_event_time(
    table: &Table,
    table_name: &str,
    column: &str,
    cache: &ManifestBoundsCache,
) -> Result<Option<EventTime>, SensorError> {
    let schema = table.metadata().current_schema();
    let field = schema
        .field_by_name(column)
        .ok_or_else(|| SensorError::ColumnNotFound { table: table_name.to_string(), column: column.to_string() })?;
    let Type::Primitive(primitive) = field.field_type.as_ref() else {
        return Err(SensorError::ColumnNotFound {
            table: table_name.to_string(),
            column: format!("{column}` is not a date or timestamp column (it is `{}`", field.field_type),
        });
    };
    if to_millis(primitive, &PrimitiveLiteral::Long(0)).is_none() {
        return Err(SensorError::ColumnNotFound {
            table: table_name.to_string(),
            column: format!("{column}` is not a date or timestamp column (it is `{primitive}`"),
        });
    }
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(None);
    };
    let metadata_error = |source: iceberg::Error| SensorError::Metadata { table: table_name.to_string(), source };
    let manifest_list = table.manifest_list_reader(snapshot).load().await.map_err(metadata_error)?;

    let mut max_ms: Option<i64> = None;
    let mut files_from_metadata = 0;
    let mut unbounded_files: HashSet<String> = HashSet::new();
    let mut live = HashSet::new();
    for manifest_file in manifest_list.entries() {
        if manifest_file.content != ManifestContentType::Data {
            continue;
        }
        live.insert(manifest_file.manifest_path.as_str());
        let bounds = cache
            .get_or_load(table, manifest_file, &field.id, |manifest| {
                let mut bounds = ManifestBounds::default();
                for entry in manifest.entries() {
                    if entry.status() == ManifestStatus::Deleted || entry.content_type() != DataContentType::Data {
                        continue;
                    }
                    let file = entry.data_file();
                    match file.upper_bounds().get(&field.id).and_then(|datum| to_millis(primitive, datum.literal())) {
                        Some(upper) => {
                            bounds.files_with_bound += 1;
                            bounds.max_ms = Some(bounds.max_ms.map_or(upper, |max| max.max(upper)));
                        }
                        None if file.record_count() > 0 => {
                            bounds.files_without_bound.push(file.file_path().to_string())
                        }
                        None => {}
                    }
                }
                bounds
            })
            .await
            .map_err(metadata_error)?;
        files_from_metadata += bounds.files_with_bound;
        if let Some(upper) = bounds.max_ms {
            max_ms = Some(max_ms.map_or(upper, |max| max.max(upper)));
        }
        unbounded_files.extend(bounds.files_without_bound);
    }
    // Forget manifests of this table and column that are no longer part of the table.
    cache.keep_only(table, &field.id, &live);

    let files_scanned = unbounded_files.len();
    if !unbounded_files.is_empty()
        && let Some(scanned) = scan_max(table, table_name, column, &unbounded_files).await?
    {
        max_ms = Some(max_ms.map_or(scanned, |max| max.max(scanned)));
    }
    Ok(max_ms.map(|max_ms| EventTime { column: column.to_string(), max_ms, files_from_metadata, files_scanned }))
}

/// Milliseconds since the epoch of a date/timestamp literal of `primitive`.
fn to_millis(primitive: &PrimitiveType, literal: &PrimitiveLiteral) -> Option<i64> {
    match (primitive, literal) {
        (PrimitiveType::Timestamp | PrimitiveType::Timestamptz, PrimitiveLiteral::Long(micros)) => {
            Some(micros.div_euclid(1000))
        }
        (PrimitiveType::TimestampNs | PrimitiveType::TimestamptzNs, PrimitiveLiteral::Long(nanos)) => {
            Some(nanos.div_euclid(1_000_000))
        }
        (PrimitiveType::Date, PrimitiveLiteral::Int(days)) => Some(*days as i64 * 86_400_000),
        (PrimitiveType::Date, PrimitiveLiteral::Long(days)) => Some(days * 86_400_000),
        _ => None,
    }
}

/// Reads `column` from just `files` of the current snapshot and returns its max in ms.
async fn scan_max(
    table: &Table,
    table_name: &str,
    column: &str,
    files: &HashSet<String>,
) -> Result<Option<i64>, SensorError> {
    let scan_error =
        |source: iceberg::Error| SensorError::Scan { table: table_name.to_string(), source: Box::new(source) };
    let scan = table.scan().select([column]).build().map_err(scan_error)?;
    let tasks: Vec<_> = scan
        .plan_files()
        .await
        .map_err(scan_error)?
        .try_filter(|task| futures::future::ready(files.contains(task.data_file_path())))
        .try_collect()
        .await
        .map_err(scan_error)?;
    let stream = futures::stream::iter(tasks.into_iter().map(Ok)).boxed();
    let batches: Vec<_> = table
        .reader_builder()
        .build()
        .read(stream)
        .map_err(scan_error)?
        .stream()
        .try_collect()
        .await
        .map_err(scan_error)?;
    let mut max_ms: Option<i64> = None;
    for batch in batches {
        if let Some(values) = batch.column_by_name(column)
            && let Some(batch_max) = array_max_ms(values)
        {
            max_ms = Some(max_ms.map_or(batch_max, |max| max.max(batch_max)));
        }
    }
    Ok(max_ms)
}

fn array_max_ms(values: &ArrayRef) -> Option<i64> {
    use datafusion::arrow::datatypes::{
        Date32Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    };
    let max = |iter: &mut dyn Iterator<Item = Option<i64>>| iter.flatten().max();
    match values.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => max(&mut values
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|value| value.map(|v| v.div_euclid(1000)))),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => max(&mut values
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .map(|value| value.map(|v| v.div_euclid(1_000_000)))),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            max(&mut values.as_primitive::<TimestampMillisecondType>().iter())
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            max(&mut values.as_primitive::<TimestampSecondType>().iter().map(|value| value.map(|v| v * 1000)))
        }
        DataType::Date32 => {
            max(&mut values.as_primitive::<Date32Type>().iter().map(|value| value.map(|days| days as i64 * 86_400_000)))
        }
        _ => None,
    }
    .filter(|_| values.len() > values.null_count())
}

use futures::StreamExt;

/// The freshness sensor. It judges the present moment (the age of the newest data commit), so it
/// has one judged step; the closed commit gaps of the snapshot log before it are backfill.
#[derive(Debug, Default)]
pub struct FreshnessSensor {
    bounds_cache: ManifestBoundsCache,
}

static FRESHNESS_SECONDS: Family = Family::table_gauge(
    "data_freshness_seconds",
    "Seconds since the table's last data-changing commit, at the last sensor run.",
);
static WARNING_THRESHOLD_SECONDS: Family =
    Family::table_gauge("data_freshness_warning_threshold_seconds", "The table's freshness.warn_after.");
static CRITICAL_THRESHOLD_SECONDS: Family =
    Family::table_gauge("data_freshness_critical_threshold_seconds", "The table's freshness.critical_after.");
static LAST_COMMIT_TIMESTAMP_SECONDS: Family =
    Family::table_gauge("data_last_commit_timestamp_seconds", "Unix time of the last data-changing commit.");
static LAG_WARNING_THRESHOLD_SECONDS: Family =
    Family::table_gauge("data_event_time_lag_warning_threshold_seconds", "The table's freshness.lag_warn_after.");
static LAG_CRITICAL_THRESHOLD_SECONDS: Family =
    Family::table_gauge("data_event_time_lag_critical_threshold_seconds", "The table's freshness.lag_critical_after.");
static EVENT_TIME_LAG_SECONDS: Family =
    Family::table_gauge("data_event_time_lag_seconds", "Now minus the max of freshness.timestamp_column.");
static MAX_EVENT_TIMESTAMP_SECONDS: Family =
    Family::table_gauge("data_max_event_timestamp_seconds", "Max of freshness.timestamp_column as Unix time.");

static FAMILIES: [&Family; 8] = [
    &FRESHNESS_SECONDS,
    &WARNING_THRESHOLD_SECONDS,
    &CRITICAL_THRESHOLD_SECONDS,
    &LAST_COMMIT_TIMESTAMP_SECONDS,
    &EVENT_TIME_LAG_SECONDS,
    &LAG_WARNING_THRESHOLD_SECONDS,
    &LAG_CRITICAL_THRESHOLD_SECONDS,
    &MAX_EVENT_TIMESTAMP_SECONDS,
];

impl Sensor for FreshnessSensor {
    fn kind(&self) -> SensorKind {
        SensorKind::FRESHNESS
    }

    fn families(&self) -> &'static [&'static Family] {
        &FAMILIES
    }

    fn observe<'a>(&'a self, input: &'a Input<'a>) -> BoxFuture<'a, Result<Observed<'a>, SensorError>> {
        Box::pin(async move {
            let Some(config) = &input.config.freshness else { return Ok(Observed::default()) };
            let name = input.config.name.as_str();
            let observation = observe(input.table, name, config, input.now_ms, &self.bounds_cache).await?;
            let readings = readings(config, &observation);
            let mut gaps = series(name, &observation);
            let newest_gap: Vec<Point> = gaps.pop().into_iter().collect();
            let requests = window_requests(name, config, &observation);
            let judged =
                Step::judged(newest_gap, requests, false, move |windows| judge(name, config, &observation, windows));
            Ok(Observed { steps: vec![Step::backfill(gaps), judged], readings })
        })
    }
}

/// The thresholds, the age and the event-time lag, as they are.
fn readings(config: &FreshnessConfig, observation: &FreshnessObservation) -> Vec<Reading> {
    let mut readings = Vec::new();
    if let Some(warn) = config.warn_after {
        readings.push(Reading::new(&WARNING_THRESHOLD_SECONDS, warn.as_secs_f64()));
    }
    if let Some(critical) = config.critical_after {
        readings.push(Reading::new(&CRITICAL_THRESHOLD_SECONDS, critical.as_secs_f64()));
    }
    if let Some(warn) = config.lag_warn_after {
        readings.push(Reading::new(&LAG_WARNING_THRESHOLD_SECONDS, warn.as_secs_f64()));
    }
    if let Some(critical) = config.lag_critical_after {
        readings.push(Reading::new(&LAG_CRITICAL_THRESHOLD_SECONDS, critical.as_secs_f64()));
    }
    if let (Some(age), Some(commit)) = (observation.age_seconds(), &observation.last_data_commit) {
        readings.push(Reading::new(&FRESHNESS_SECONDS, age));
        readings.push(Reading::new(&LAST_COMMIT_TIMESTAMP_SECONDS, commit.timestamp_ms as f64 / 1000.0));
    }
    if let (Some(lag), Some(event)) = (observation.event_time_lag_seconds(), &observation.event_time) {
        readings.push(Reading::new(&EVENT_TIME_LAG_SECONDS, lag));
        readings.push(Reading::new(&MAX_EVENT_TIMESTAMP_SECONDS, event.max_ms as f64 / 1000.0));
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::snapshots::CommitOperation;

    fn commit(snapshot_id: i64, timestamp_ms: i64, operation: CommitOperation, added: u64) -> Commit {
        Commit::new(snapshot_id, timestamp_ms, operation, Some(added))
    }

    fn config(warn: u64, critical: u64) -> FreshnessConfig {
        let text = format!(
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://c.db\"\nwarehouse = \"w\"\n[tables.\"a.b\".freshness]\nwarn_after = \"{warn}s\"\ncritical_after = \"{critical}s\"\n"
        );
        let config = crate::config::Config::from_str(&text, std::path::Path::new("/tmp/s.toml")).unwrap();
        config.tables[0].freshness.clone().unwrap()
    }

    #[test]
    fn age_is_judged_against_thresholds() {
        let config = config(120, 900);
        let observation = |age_s: i64| FreshnessObservation {
            now_ms: 1_000_000_000,
            last_data_commit: Some(commit(1, 1_000_000_000 - age_s * 1000, CommitOperation::Append, 10)),
            data_commits: vec![(1, 1_000_000_000 - age_s * 1000)],
            counts: FreshnessCounts::Arrivals,
            skipped_since: Vec::new(),
            last_commit: None,
            event_time: None,
        };
        let status = |age| judge("a.b", &config, &observation(age), &Windows::new())[0].status;
        assert_eq!(status(60), Status::Ok);
        assert_eq!(status(121), Status::Warning);
        assert_eq!(status(901), Status::Critical);
    }

    #[test]
    fn a_table_without_data_commits_is_critical() {
        let observation = FreshnessObservation {
            now_ms: 0,
            last_data_commit: None,
            data_commits: vec![],
            counts: FreshnessCounts::Arrivals,
            skipped_since: vec!["`replace`".to_string()],
            last_commit: Some(commit(1, 0, CommitOperation::Replace, 0)),
            event_time: None,
        };
        let results = judge("a.b", &config(1, 2), &observation, &Windows::new());
        assert_eq!(results[0].status, Status::Critical);
        assert!(results[0].message.contains("replace"), "{}", results[0].message);
    }

    #[test]
    fn gaps_are_one_per_data_commit_after_the_first() {
        let observation = FreshnessObservation {
            now_ms: 0,
            last_data_commit: None,
            data_commits: vec![(1, 0), (2, 60_000), (3, 180_000)],
            counts: FreshnessCounts::Arrivals,
            skipped_since: Vec::new(),
            last_commit: None,
            event_time: None,
        };
        let points = series("a.b", &observation);
        assert_eq!(points.iter().map(|point| point.value).collect::<Vec<_>>(), vec![60.0, 120.0]);
        assert_eq!(points[1].snapshot_id, Some(3));
    }

    #[test]
    fn deletes_and_empty_appends_do_not_make_a_table_fresh_unless_any_change_counts() {
        let empty = Commit { added_files: None, ..Commit::new(4, 4000, CommitOperation::Append, None) };
        let history = vec![
            commit(1, 1000, CommitOperation::Append, 10),
            commit(2, 2000, CommitOperation::Append, 12),
            Commit { deleted_records: Some(500), ..Commit::new(3, 3000, CommitOperation::Delete, None) },
            empty,
        ];
        let arrivals = counted_commits(&history, FreshnessCounts::Arrivals);
        assert_eq!(arrivals.data.iter().map(|commit| commit.snapshot_id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(arrivals.skipped_since, vec!["`delete`", "empty `append`"]);
        let any = counted_commits(&history, FreshnessCounts::AnyDataChange);
        assert_eq!(any.data.last().map(|commit| commit.snapshot_id), Some(3));
        assert_eq!(any.skipped_since, vec!["empty `append`"]);

        let config = config(1800, 7200);
        let observation = FreshnessObservation {
            now_ms: 2000 + 3 * 3_600_000,
            last_data_commit: arrivals.data.last().map(|commit| (*commit).clone()),
            data_commits: arrivals.data.iter().map(|commit| (commit.snapshot_id, commit.timestamp_ms)).collect(),
            counts: FreshnessCounts::Arrivals,
            skipped_since: arrivals.skipped_since.clone(),
            last_commit: history.last().cloned(),
            event_time: None,
        };
        let result = &judge("a.b", &config, &observation, &Windows::new())[0];
        assert_eq!(result.status, Status::Critical, "{}", result.message);
        assert!(
            result.message.contains("last commit that added rows (append) 3h00m ago")
                && result.message.contains("newer `delete` and empty `append` commits added no rows"),
            "{}",
            result.message
        );
    }

    /// The cadence verdict at `now_ms` of a table whose arrivals were `commits_ms`, with no
    /// freshness thresholds (only the cadence judges).
    fn cadence_at(commits_ms: &[i64], now_ms: i64) -> Evaluation {
        let text =
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://c.db\"\nwarehouse = \"w\"\n[tables.\"a.b\".freshness]\n";
        let config = crate::config::Config::from_str(text, std::path::Path::new("/tmp/s.toml")).unwrap();
        let config = config.tables[0].freshness.clone().unwrap();
        let history: Vec<Commit> = commits_ms
            .iter()
            .enumerate()
            .map(|(index, at)| Commit {
                table_commit: index,
                ..commit(index as i64 + 1, *at, CommitOperation::Append, 10)
            })
            .collect();
        let observation = observation_at(&history, &config, now_ms);
        judge("a.b", &config, &observation, &Windows::new())
            .into_iter()
            .find(|result| result.metric == Metric::COMMIT_GAP_SECONDS)
            .unwrap()
    }

    #[test]
    fn a_table_that_loads_only_on_weekdays_is_not_late_on_sunday_but_is_on_a_quiet_tuesday() {
        const MONDAY: i64 = 1_767_571_200_000;
        const HOUR: i64 = 3_600_000;
        // Four weeks of hourly loads at :05 from 08:00 to 18:00, Monday to Friday.
        let loads: Vec<i64> = (0..24 * 28)
            .map(|hour| MONDAY + hour * HOUR + 5 * 60_000)
            .filter(|at| {
                let day = (at - MONDAY).rem_euclid(7 * 24 * HOUR) / (24 * HOUR);
                let hour = at.rem_euclid(24 * HOUR) / HOUR;
                day < 5 && (8..=18).contains(&hour)
            })
            .collect();
        let week5 = MONDAY + 28 * 24 * HOUR;
        // Sunday noon of week 4: the last load was Friday 18:05.
        let sunday = cadence_at(&loads, week5 - 12 * HOUR);
        assert_eq!(sunday.status, Status::Ok, "{}", sunday.message);
        assert_ne!(sunday.seasonality.as_deref(), Some("auto: none"), "{}", sunday.message);
        // Tuesday of week 5: loads until 09:05, then nothing until 15:00.
        let tuesday = week5 + 24 * HOUR;
        let mut quiet: Vec<i64> = loads.clone();
        quiet.extend((0..11).map(|hour| week5 + (8 + hour) * HOUR + 5 * 60_000));
        quiet.extend([tuesday + 8 * HOUR + 5 * 60_000, tuesday + 9 * HOUR + 5 * 60_000]);
        let late = cadence_at(&quiet, tuesday + 15 * HOUR);
        assert_eq!(late.status, Status::Warning, "{}", late.message);
        // The band is in clock time: the next load was due within a few hours of the last.
        assert!(late.expected_upper.unwrap() < 6.0 * 3600.0, "{late:?}");
    }

    #[test]
    fn the_event_time_lag_has_its_own_thresholds_and_the_future_is_a_warning() {
        let mut config = config(60, 120);
        // No lag threshold: reported, not judged, however old (the commit-age thresholds do
        // not apply to it).
        assert_eq!(lag_status(3600.0, &config).0, Status::Ok);
        assert_eq!(lag_status(-3600.0, &config).0, Status::Warning, "an hour in the future");
        assert_eq!(lag_status(-60.0, &config).0, Status::Ok, "a minute of clock skew");
        config.lag_warn_after = Some(std::time::Duration::from_secs(1800));
        config.lag_critical_after = Some(std::time::Duration::from_secs(7200));
        assert_eq!(lag_status(1000.0, &config).0, Status::Ok);
        let (status, words) = lag_status(2000.0, &config);
        assert_eq!((status, words.as_str()), (Status::Warning, ", over lag_warn_after 30m"));
        assert_eq!(lag_status(8000.0, &config).0, Status::Critical);
    }
}
