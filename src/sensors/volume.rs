//! Volume: rows, files and bytes per commit and in total, from snapshot summaries (never a
//! `count(*)`). The rows added by the newest append are judged against the table's own past
//! appends: a z-score over the rolling window of points and a deviation from the mean of the
//! time window, optionally comparing like with like (same hour of day or of week). Deletes and
//! overwrites are reported as deleted records, not as a drop; compactions are not volume.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::snapshots::{Commit, CommitOperation, commits};
use super::{
    Evaluation, Export, Family, Input, Metric, Observed, Reading, Sensor, SensorError, Status, Step, WindowRequest,
    Windows, human_number,
};
use crate::config::{SensorKind, TableConfig, VolumeConfig};
use crate::history::{Point, SeriesKey};
use crate::judging::seasonal::{self, Timed};
use crate::judging::{self, Measure};
use crate::stats::{Direction, deviation_percent};

/// Most points read for one time window (a table committing every few seconds for 7 days).
const MAX_WINDOW_POINTS: usize = 50_000;

#[derive(Clone, Debug)]
pub struct VolumeObservation {
    /// Every append of the current branch, and every full refresh (an overwrite that leaves
    /// only the rows it wrote), oldest first: the commits whose rows are the table's volume (an
    /// empty append is still an append).
    pub appends: Vec<Commit>,
    /// The newest commit that changed data (append, overwrite or delete). When one table
    /// commit published several snapshots (PyIceberg's `overwrite()`: a `delete` and an
    /// `append`), they are merged into one: the first one's operation, the counts summed, the
    /// last one's id, time and totals.
    pub latest_data_commit: Option<Commit>,
    /// The current snapshot, whose summary has the table's totals.
    pub current: Option<Commit>,
    /// Totals per snapshot, for the history charts.
    pub totals: Vec<(i64, i64, u64)>,
}

pub fn observe(table: &iceberg::table::Table) -> VolumeObservation {
    observe_commits(&commits(table.metadata()))
}

/// What the sensor sees of a snapshot log (oldest first).
pub fn observe_commits(history: &[Commit]) -> VolumeObservation {
    VolumeObservation {
        appends: history.iter().filter(|commit| commit.is_append() || commit.is_full_refresh()).cloned().collect(),
        latest_data_commit: latest_data_change(history),
        current: history.last().cloned(),
        totals: history
            .iter()
            .filter_map(|commit| commit.total_records.map(|total| (commit.snapshot_id, commit.timestamp_ms, total)))
            .collect(),
    }
}

/// The newest data-changing commit, merged with the other data changes of its table commit.
fn latest_data_change(history: &[Commit]) -> Option<Commit> {
    let latest = history.iter().rev().find(|commit| commit.is_data_change())?;
    let together: Vec<&Commit> =
        history.iter().filter(|commit| commit.table_commit == latest.table_commit && commit.is_data_change()).collect();
    let first = together.first().copied().unwrap_or(latest);
    if together.len() < 2 {
        return Some(latest.clone());
    }
    let sum = |count: fn(&Commit) -> Option<u64>| -> Option<u64> {
        together.iter().map(|commit| count(commit)).reduce(|total, next| match (total, next) {
            (None, None) => None,
            (total, next) => Some(total.unwrap_or(0) + next.unwrap_or(0)),
        })?
    };
    Some(Commit {
        operation: first.operation,
        added_records: sum(|commit| commit.added_records),
        deleted_records: sum(|commit| commit.deleted_records),
        added_files: sum(|commit| commit.added_files),
        deleted_files: sum(|commit| commit.deleted_files),
        added_bytes: sum(|commit| commit.added_bytes),
        added_delete_records: sum(|commit| commit.added_delete_records),
        replaces_rows: false,
        ..latest.clone()
    })
}

pub fn rows_added_series(table_name: &str) -> SeriesKey {
    SeriesKey::new(table_name, SensorKind::VOLUME.as_str(), Metric::ROWS_ADDED.as_str(), &[])
}

pub fn total_rows_series(table_name: &str) -> SeriesKey {
    SeriesKey::new(table_name, SensorKind::VOLUME.as_str(), Metric::TOTAL_ROWS.as_str(), &[])
}

/// Rows added per append and total rows per snapshot, backfilled from the snapshot log.
pub fn series(table_name: &str, observation: &VolumeObservation) -> Vec<Point> {
    let added = rows_added_series(table_name);
    let total = total_rows_series(table_name);
    let mut points: Vec<Point> = observation
        .appends
        .iter()
        .map(|commit| Point {
            series: added.clone(),
            observed_at_ms: commit.timestamp_ms,
            snapshot_id: Some(commit.snapshot_id),
            value: commit.added_rows().unwrap_or(0) as f64,
        })
        .collect();
    points.extend(observation.totals.iter().map(|(snapshot_id, timestamp_ms, records)| Point {
        series: total.clone(),
        observed_at_ms: *timestamp_ms,
        snapshot_id: Some(*snapshot_id),
        value: *records as f64,
    }));
    points
}

/// The past appends before the newest one that its judgement reads: the time window, or the
/// longer history the seasonal model is chosen from and looked up in.
pub fn window_requests(table_name: &str, config: &VolumeConfig, observation: &VolumeObservation) -> Vec<WindowRequest> {
    let Some(newest) = observation.appends.last() else { return Vec::new() };
    vec![WindowRequest {
        series: rows_added_series(table_name),
        before_ms: newest.timestamp_ms,
        limit: MAX_WINDOW_POINTS,
        since_ms: Some(seasonal::history_since(config.seasonality, newest.timestamp_ms, window_ms(config))),
    }]
}

fn window_ms(config: &VolumeConfig) -> i64 {
    config.window.as_millis() as i64
}

pub fn judge(
    table_name: &str,
    config: &VolumeConfig,
    observation: &VolumeObservation,
    windows: &Windows,
) -> Vec<Evaluation> {
    let choice = observation.appends.last().map(|newest| choose(table_name, config, windows, newest.timestamp_ms));
    judge_with(table_name, config, observation, windows, choice.as_ref())
}

/// The past appends in `windows`, as the seasonal model reads them.
fn past_values<'w>(table_name: &str, windows: &'w Windows) -> (&'w [Point], Vec<Timed>) {
    let points: &[Point] = windows.get(&rows_added_series(table_name)).map(Vec::as_slice).unwrap_or_default();
    (points, points.iter().map(|point| Timed { at_ms: point.observed_at_ms, value: point.value }).collect())
}

fn backtest_of(config: &VolumeConfig) -> seasonal::Backtest {
    let settings = &config.settings;
    seasonal::Backtest {
        window_ms: window_ms(config),
        points: settings.window,
        min_history: settings.min_history,
        zscore_threshold: settings.zscore_threshold,
    }
}

/// The seasonal model an append at `at_ms` is judged with: the configured one, or the
/// automatic choice from the appends before that day (the same for every append of the day).
pub fn choose(table_name: &str, config: &VolumeConfig, windows: &Windows, at_ms: i64) -> seasonal::Choice {
    let (_, past) = past_values(table_name, windows);
    backtest_of(config).choose(config.seasonality, &past, at_ms)
}

/// [`judge`] with the seasonal model already chosen (`backtest` chooses once per day).
pub fn judge_with(
    table_name: &str,
    config: &VolumeConfig,
    observation: &VolumeObservation,
    windows: &Windows,
    choice: Option<&seasonal::Choice>,
) -> Vec<Evaluation> {
    let kind = SensorKind::VOLUME;
    let mut results = Vec::new();
    let Some(newest) = observation.appends.last() else {
        let status = if observation.current.is_some() { Status::Ok } else { Status::InsufficientHistory };
        results.push(Evaluation::new(
            table_name,
            kind,
            Metric::ROWS_ADDED,
            status,
            "the table has no append commit yet".to_string(),
        ));
        return results;
    };
    let rows = newest.added_rows().unwrap_or(0) as f64;
    let (past_points, past) = past_values(table_name, windows);
    let settings = &config.settings;
    let choice = choice.cloned().unwrap_or_else(|| choose(table_name, config, windows, newest.timestamp_ms));
    let reference = seasonal::reference(
        &past,
        newest.timestamp_ms,
        &choice,
        window_ms(config),
        settings.window,
        settings.min_history,
    );
    let (recent, like_note) = (&reference.values, &reference.note);
    let params = judging::scoring_params(settings, settings.direction, Measure::RowsAdded);
    let scored = judging::score_counts(rows, recent, &params);
    let deviation = deviation_percent(rows, recent);
    let window_text = crate::config::duration_to_string(config.window);

    let refresh = newest.is_full_refresh();
    let added = if refresh { "a full refresh left" } else { "added" };
    let (status, message) = if newest.added_rows() == Some(0) && refresh {
        (Status::Critical, "the newest full refresh left the table with 0 rows".to_string())
    } else if newest.added_rows() == Some(0) {
        let recorded = if newest.added_records.is_some() {
            ""
        } else {
            " (its summary has no `added-records` and it added no data file)"
        };
        (Status::Critical, format!("the newest append commit added 0 rows{recorded}"))
    } else {
        match (&scored, deviation) {
            (None, _) => (
                Status::InsufficientHistory,
                format!(
                    "{added} {} rows; {} comparable past commit(s) in the last {window_text}{like_note}, need {}",
                    human_number(rows),
                    recent.len(),
                    params.min_history
                ),
            ),
            (Some(score), Some(deviation)) => {
                let direction_ok = match config.settings.direction {
                    Direction::Spike => deviation > 0.0,
                    Direction::Drop => deviation < 0.0,
                    Direction::Both => true,
                };
                let magnitude = deviation.abs();
                let anomalous = score.is_anomaly && direction_ok && magnitude >= config.deviation_percent;
                let status = if !anomalous {
                    Status::Ok
                } else if magnitude >= config.critical_deviation_percent {
                    Status::Critical
                } else {
                    Status::Warning
                };
                let side = if deviation >= 0.0 { "above" } else { "below" };
                let verdict = match status {
                    Status::Ok if score.is_anomaly => format!(
                        " — unusual (z={:.1}) but under the {}% threshold",
                        score.zscore, config.deviation_percent
                    ),
                    Status::Ok => String::new(),
                    _ => format!(" (threshold {}%)", config.deviation_percent),
                };
                let since = |start: usize| {
                    let at = reference.at_ms[start];
                    let snapshot = past_points
                        .iter()
                        .find(|point| point.observed_at_ms == at)
                        .and_then(|point| point.snapshot_id)
                        .map(|id| format!("snapshot {id} "))
                        .unwrap_or_default();
                    format!("{snapshot}({})", crate::sensors::format_ms(at).unwrap_or_default())
                };
                let new_level = judging::new_level_note(score, recent.len(), since);
                (
                    status,
                    format!(
                        "{added} {} rows, {:.0}% {side} the mean of {} of {} past commit(s){like_note} (z={:.1}){verdict}{new_level}",
                        human_number(rows),
                        magnitude,
                        human_number(score.mean),
                        recent.len(),
                        score.zscore
                    ),
                )
            }
            (Some(score), None) => (
                Status::Ok,
                format!(
                    "{added} {} rows; the window mean is 0, no deviation (z={:.1})",
                    human_number(rows),
                    score.zscore
                ),
            ),
        }
    };
    let mut evaluation = Evaluation::new(table_name, kind, Metric::ROWS_ADDED, status, message)
        .with_value(rows)
        .with_score(scored.as_ref(), Measure::RowsAdded)
        .at(newest.timestamp_ms, Some(newest.snapshot_id));
    evaluation.deviation_percent = deviation.filter(|_| newest.added_rows() != Some(0) || !recent.is_empty());
    evaluation.seasonality = Some(choice.describe());
    results.push(evaluation);

    // A partial delete or overwrite after the newest judged commit is a deliberate change; a
    // full refresh was judged above as the table's volume.
    if let Some(latest) = &observation.latest_data_commit
        && latest.operation != CommitOperation::Append
        && latest.timestamp_ms >= newest.timestamp_ms
        && !(refresh && latest.snapshot_id == newest.snapshot_id)
    {
        let deleted = latest.deleted_records.unwrap_or(0) + latest.added_delete_records.unwrap_or(0);
        let written = latest.added_records.unwrap_or(0);
        let net = written as f64 - deleted as f64;
        let article = if latest.operation == CommitOperation::Overwrite { "an" } else { "a" };
        results.push(
            Evaluation::new(
                table_name,
                kind,
                Metric::ROWS_DELETED,
                Status::Ok,
                format!(
                    "the newest data commit is {article} `{}` that removed {} record(s) and wrote {} (net {}{}): a deliberate change, not a volume drop",
                    latest.operation.as_str(),
                    human_number(deleted as f64),
                    human_number(written as f64),
                    if net >= 0.0 { "+" } else { "−" },
                    human_number(net.abs())
                ),
            )
            .with_value(deleted as f64)
            .at(latest.timestamp_ms, Some(latest.snapshot_id)),
        );
    }
    if let Some(current) = &observation.current
        && let Some(total) = current.total_records
    {
        let files = current
            .total_files
            .map(|files| format!(" in {} data file(s)", human_number(files as f64)))
            .unwrap_or_default();
        results.push(
            Evaluation::new(
                table_name,
                kind,
                Metric::TOTAL_ROWS,
                Status::Ok,
                format!("{} rows{files}", human_number(total as f64)),
            )
            .with_value(total as f64)
            .at(current.timestamp_ms, Some(current.snapshot_id)),
        );
    }
    results
}

/// The volume sensor: one step per append the store has not seen, each judged against the
/// appends before it.
pub struct VolumeSensor;

static ROW_COUNT: Family = Family {
    name: "data_row_count",
    help: "Total records in the current snapshot; partition_date is the UTC date of the latest data commit.",
    labels: &["partition_date"],
    with_layer: true,
    export: Export::LatestPerTable,
};
static ROWS_DELETED: Family = Family::table_gauge("data_rows_deleted", "Records deleted by the latest data commit.");
static FILES_ADDED: Family = Family::table_gauge("data_files_added", "Data files added by the latest data commit.");
static BYTES_ADDED: Family =
    Family::table_gauge("data_bytes_added", "Bytes of data files added by the latest data commit.");
static FILES: Family = Family::table_gauge("data_files", "Data files in the current snapshot.");
static SIZE_BYTES: Family = Family::table_gauge("data_size_bytes", "Bytes of data files in the current snapshot.");

static FAMILIES: [&Family; 6] = [&ROW_COUNT, &ROWS_DELETED, &FILES_ADDED, &BYTES_ADDED, &FILES, &SIZE_BYTES];

impl Sensor for VolumeSensor {
    fn kind(&self) -> SensorKind {
        SensorKind::VOLUME
    }

    fn families(&self) -> &'static [&'static Family] {
        &FAMILIES
    }

    fn progress(&self, table: &TableConfig) -> Option<(SeriesKey, usize)> {
        table.volume.as_ref().map(|_| (rows_added_series(table.name.as_str()), 1))
    }

    fn observe<'a>(&'a self, input: &'a Input<'a>) -> BoxFuture<'a, Result<Observed<'a>, SensorError>> {
        Box::pin(async move { Ok(steps(input)) })
    }
}

/// Appends the store already holds are history. On first sight every append before the newest
/// is backfilled unjudged; afterwards each unseen one is judged against the history before it,
/// in commit order, so an anomaly between two runs is counted too. The newest append is judged
/// last and gives the run's result.
fn steps<'a>(input: &'a Input<'a>) -> Observed<'a> {
    let Some(config) = &input.config.volume else { return Observed::default() };
    let name = input.config.name.as_str();
    let observation = Arc::new(observe(input.table));
    let added = rows_added_series(name);
    let (added_points, total_points): (Vec<Point>, Vec<Point>) =
        series(name, &observation).into_iter().partition(|point| point.series == added);
    let mut steps = vec![Step::backfill(total_points)];
    let newest_index = observation.appends.len().saturating_sub(1);
    for (index, point) in added_points.into_iter().enumerate() {
        let unseen = input.seen.latest_ms.is_none_or(|until| point.observed_at_ms > until);
        if index == newest_index {
            let observation = observation.clone();
            let requests = window_requests(name, config, &observation);
            steps.push(Step::judged(vec![point], requests, unseen, move |windows| {
                judge(name, config, &observation, windows)
            }));
        } else if unseen && !input.seen.first_sight() {
            let upto = VolumeObservation { appends: observation.appends[..=index].to_vec(), ..(*observation).clone() };
            let requests = window_requests(name, config, &upto);
            steps.push(Step::judged(vec![point], requests, true, move |windows| judge(name, config, &upto, windows)));
        } else {
            steps.push(Step::backfill(vec![point]));
        }
    }
    if observation.appends.is_empty() {
        let observation = observation.clone();
        steps.push(Step::judged(Vec::new(), Vec::new(), false, move |windows| {
            judge(name, config, &observation, windows)
        }));
    }
    Observed { steps, readings: readings(&observation) }
}

/// The newest data commit's counts and the table's totals, as they are.
fn readings(observation: &VolumeObservation) -> Vec<Reading> {
    let mut readings = Vec::new();
    if let Some(latest) = &observation.latest_data_commit {
        let deleted = latest.deleted_records.unwrap_or(0) + latest.added_delete_records.unwrap_or(0);
        readings.push(Reading::new(&ROWS_DELETED, deleted as f64));
        readings.push(Reading::new(&FILES_ADDED, latest.added_files.unwrap_or(0) as f64));
        readings.push(Reading::new(&BYTES_ADDED, latest.added_bytes.unwrap_or(0) as f64));
    }
    if let Some(current) = &observation.current {
        if let Some(files) = current.total_files {
            readings.push(Reading::new(&FILES, files as f64));
        }
        if let Some(bytes) = current.total_bytes {
            readings.push(Reading::new(&SIZE_BYTES, bytes as f64));
        }
        if let Some(total) = current.total_records {
            let date_ms =
                observation.latest_data_commit.as_ref().map_or(current.timestamp_ms, |commit| commit.timestamp_ms);
            let date = chrono::DateTime::from_timestamp_millis(date_ms)
                .map(|time| time.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            readings.push(Reading::labelled(&ROW_COUNT, &[&date], total as f64));
        }
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> VolumeConfig {
        let text = format!(
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://c.db\"\nwarehouse = \"w\"\n[tables.\"a.b\".volume]\n{extra}\n"
        );
        let config = crate::config::Config::from_str(&text, std::path::Path::new("/tmp/s.toml")).unwrap();
        config.tables[0].volume.clone().unwrap()
    }

    fn append(snapshot_id: i64, timestamp_ms: i64, rows: u64) -> Commit {
        Commit { added_files: Some(1), ..Commit::new(snapshot_id, timestamp_ms, CommitOperation::Append, Some(rows)) }
    }

    /// Judges the newest of `rows` (one append an hour) against the ones before it.
    fn verdict(config: &VolumeConfig, rows: &[u64]) -> Evaluation {
        let commits: Vec<(i64, u64)> =
            rows.iter().enumerate().map(|(index, rows)| (index as i64 * 3_600_000, *rows)).collect();
        verdict_at(config, &commits)
    }

    #[test]
    fn a_sixty_percent_drop_is_critical_and_normal_variation_is_ok() {
        let config = config("deviation_percent = 20");
        let normal = [1000, 1080, 950, 1020, 990, 1050, 970, 1010, 1030, 960];
        let mut dropped = normal.to_vec();
        dropped.push(400);
        assert_eq!(verdict(&config, &dropped).status, Status::Critical);
        let mut usual = normal.to_vec();
        usual.push(1060);
        assert_eq!(verdict(&config, &usual).status, Status::Ok);
    }

    #[test]
    fn zero_rows_is_critical_and_short_history_is_not_scored() {
        let config = config("");
        assert_eq!(verdict(&config, &[100, 100, 100, 100, 100, 100, 0]).status, Status::Critical);
        assert_eq!(verdict(&config, &[100, 100, 50]).status, Status::InsufficientHistory);
    }

    #[test]
    fn direction_limits_what_is_anomalous() {
        let config = config("direction = \"drop\"");
        let spike = [1000, 1010, 990, 1005, 995, 1000, 3000];
        assert_eq!(verdict(&config, &spike).status, Status::Ok);
    }

    /// Judges the newest of `rows` committed at `times_ms`, with the auto-chosen model.
    fn verdict_at(config: &VolumeConfig, commits: &[(i64, u64)]) -> Evaluation {
        let appends: Vec<Commit> =
            commits.iter().enumerate().map(|(index, (at, rows))| append(index as i64 + 1, *at, *rows)).collect();
        let observation = VolumeObservation {
            appends: appends.clone(),
            latest_data_commit: appends.last().cloned(),
            current: appends.last().cloned(),
            totals: vec![],
        };
        let mut windows = Windows::new();
        let points = series("a.b", &observation);
        windows.insert(rows_added_series("a.b"), points[..points.len() - 1].to_vec());
        judge("a.b", config, &observation, &windows).remove(0)
    }

    /// A Monday, 00:00 UTC.
    const MONDAY: i64 = 1_767_571_200_000;
    const HOUR: i64 = 3_600_000;

    fn jitter(index: usize) -> f64 {
        0.92 + 0.16 * ((index as u64).wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0
    }

    #[test]
    fn a_daily_cycle_is_found_without_configuration_and_a_drop_at_one_hour_is_critical() {
        // Ten days of hourly appends with a ±66 % daily cycle, then one 60 % below its hour.
        let cycle = |hour: i64| 1000.0 * (1.0 + 0.66 * (hour as f64 * std::f64::consts::TAU / 24.0).sin());
        let mut commits: Vec<(i64, u64)> =
            (0..24 * 10).map(|hour| (MONDAY + hour * HOUR, (cycle(hour) * jitter(hour as usize)) as u64)).collect();
        let hour = 24 * 10 + 6; // 06:00, the peak
        commits.push((MONDAY + hour * HOUR, (cycle(hour) * 0.4) as u64));
        let auto = config("");
        let dropped = verdict_at(&auto, &commits);
        assert_eq!(dropped.status, Status::Critical, "{}", dropped.message);
        assert_eq!(dropped.seasonality.as_deref(), Some("auto: hour_of_day"), "{}", dropped.message);
        // Without a model the same drop is inside the spread of the whole day.
        let none = verdict_at(&config("seasonality = \"none\""), &commits);
        assert_eq!(none.status, Status::Ok, "{}", none.message);
        // A normal value at that hour stays ok.
        commits.last_mut().unwrap().1 = cycle(hour) as u64;
        assert_eq!(verdict_at(&auto, &commits).status, Status::Ok);
    }

    #[test]
    fn quiet_weekends_stay_quiet_on_sunday_and_a_tuesday_at_weekend_level_alerts() {
        // Four weeks of hourly appends: 1 000 rows on weekdays, 100 at weekends.
        let level = |at: i64| if (at - MONDAY).rem_euclid(7 * 24 * HOUR) >= 5 * 24 * HOUR { 100.0 } else { 1000.0 };
        let history: Vec<(i64, u64)> = (0..24 * 27)
            .map(|hour| {
                let at = MONDAY + hour * HOUR;
                (at, (level(at) * jitter(hour as usize)) as u64)
            })
            .collect();
        let auto = config("");
        // Sunday of week 4 at 12:00: weekend level.
        let mut sunday = history.clone();
        sunday.retain(|(at, _)| *at < MONDAY + (21 + 6) * 24 * HOUR + 12 * HOUR);
        sunday.push((MONDAY + (21 + 6) * 24 * HOUR + 12 * HOUR, 98));
        let quiet = verdict_at(&auto, &sunday);
        assert_eq!(quiet.status, Status::Ok, "{}", quiet.message);
        // Tuesday of week 4 at 12:00 at weekend level.
        let mut tuesday = history.clone();
        tuesday.retain(|(at, _)| *at < MONDAY + (21 + 1) * 24 * HOUR + 12 * HOUR);
        tuesday.push((MONDAY + (21 + 1) * 24 * HOUR + 12 * HOUR, 100));
        let low = verdict_at(&auto, &tuesday);
        assert_eq!(low.status, Status::Critical, "{}", low.message);
        assert_ne!(low.seasonality.as_deref(), Some("auto: none"), "{}", low.message);
    }

    #[test]
    fn a_drop_against_a_growing_tables_trend_is_found() {
        // Three weeks of hourly appends growing 4 % a day with a daily cycle; then 50 % below trend.
        let expected = |hour: i64| {
            1000.0
                * (1.0 + 0.5 * (hour as f64 * std::f64::consts::TAU / 24.0).sin())
                * (0.04 * hour as f64 / 24.0).exp()
        };
        let mut commits: Vec<(i64, u64)> =
            (0..24 * 21).map(|hour| (MONDAY + hour * HOUR, (expected(hour) * jitter(hour as usize)) as u64)).collect();
        let hour = 24 * 21 + 6;
        commits.push((MONDAY + hour * HOUR, (expected(hour) * 0.5) as u64));
        let judged = verdict_at(&config(""), &commits);
        assert_eq!(judged.status, Status::Critical, "{}", judged.message);
        assert_eq!(judged.seasonality.as_deref(), Some("auto: hour_of_day+trend"), "{}", judged.message);
        commits.last_mut().unwrap().1 = expected(hour) as u64;
        let normal = verdict_at(&config(""), &commits);
        assert_eq!(normal.status, Status::Ok, "{}", normal.message);
    }

    #[test]
    fn daily_seasonality_compares_like_with_like() {
        // Ten days of hourly appends: 2000 rows at noon, 200 at midnight.
        let mut rows = Vec::new();
        for _day in 0..10 {
            for hour in 0..24u64 {
                rows.push(if (8..20).contains(&hour) { 2000 + hour * 3 } else { 200 + hour });
            }
        }
        rows.push(205); // midnight of day 11: normal for midnight
        let seasonal = config("seasonality = \"daily\"\nwindow = \"14d\"");
        assert_eq!(verdict(&seasonal, &rows).status, Status::Ok);
        *rows.last_mut().unwrap() = 60; // a real drop at midnight
        assert_eq!(verdict(&seasonal, &rows).status, Status::Critical);
    }
}
