//! `backtest`: replays a table's history through the same judges `check` uses, as if a check
//! had run after every past append (volume) and just before every past arrival (freshness: the
//! longest each gap grew), and counts the alerts at a range of z-score thresholds. It reads the
//! snapshot log and the stored history only, never data files, and it is deterministic: the
//! "now" of each replayed check is a commit time, never the clock.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::config::{FreshnessConfig, SensorKind, SensorSettings, TableConfig, VolumeConfig};
use crate::history::Point;
use crate::judging::seasonal::{self, Choice};
use crate::sensors::snapshots::Commit;
use crate::sensors::{Evaluation, Metric, Status, WindowRequest, Windows, freshness, volume};

/// The z-score thresholds every replay is counted at (besides the configured one).
pub const THRESHOLDS: [f64; 7] = [2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0];

/// One past alert of a replay.
#[derive(Clone, Debug, Serialize)]
pub struct PastAlert {
    pub observed_at: Option<String>,
    /// The replayed check's moment: the append judged (volume), or just before the arrival that
    /// closed the gap (freshness), in Unix milliseconds.
    pub checked_at_ms: i64,
    pub snapshot_id: Option<i64>,
    pub metric: String,
    pub status: Status,
    pub message: String,
}

/// The replay of one sensor of one table.
#[derive(Clone, Debug, Serialize)]
pub struct Replay {
    pub table: String,
    pub sensor: SensorKind,
    /// Checks before this moment (the table's first commit plus `--warm-up`) are replayed as
    /// history but not counted.
    pub counted_from_ms: i64,
    /// Replayed checks that reached a verdict (not `insufficient_history`).
    pub checks: usize,
    /// Of them, those with a warning or critical result at the configured thresholds.
    pub alerts: usize,
    /// Alerts at each z-score threshold of [`THRESHOLDS`] (the other settings as configured).
    pub by_threshold: Vec<ThresholdCount>,
    /// Seasonal models the replayed checks were judged with, and how often each.
    pub models: BTreeMap<String, usize>,
    /// The alerts at the configured thresholds, oldest first.
    pub alerted: Vec<PastAlert>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ThresholdCount {
    pub zscore_threshold: f64,
    pub alerts: usize,
}

impl Replay {
    fn new(table: &str, sensor: SensorKind, counted_from_ms: i64) -> Replay {
        Replay {
            table: table.to_string(),
            sensor,
            counted_from_ms,
            checks: 0,
            alerts: 0,
            by_threshold: THRESHOLDS
                .iter()
                .map(|threshold| ThresholdCount { zscore_threshold: *threshold, alerts: 0 })
                .collect(),
            models: BTreeMap::new(),
            alerted: Vec::new(),
        }
    }

    /// The smallest threshold of [`THRESHOLDS`] whose alert rate is within `budget` (alerts per
    /// check), if one is.
    pub fn suggested_threshold(&self, budget: f64) -> Option<f64> {
        suggest(&self.by_threshold, self.checks, budget)
    }

    /// Counts one replayed check: `judged` at the configured settings, `at_thresholds` the
    /// alert verdict at each of [`THRESHOLDS`].
    fn count(&mut self, checked_at_ms: i64, judged: &[Evaluation], at_thresholds: &[bool]) {
        if checked_at_ms < self.counted_from_ms {
            return;
        }
        if judged.iter().all(|evaluation| evaluation.status == Status::InsufficientHistory) {
            return;
        }
        self.checks += 1;
        for evaluation in judged {
            if let Some(model) = &evaluation.seasonality {
                *self.models.entry(model.clone()).or_default() += 1;
            }
        }
        let alerts: Vec<&Evaluation> = judged.iter().filter(|evaluation| is_alert(evaluation.status)).collect();
        if !alerts.is_empty() {
            self.alerts += 1;
        }
        for alert in alerts {
            self.alerted.push(PastAlert {
                observed_at: alert.observed_at.clone(),
                checked_at_ms,
                snapshot_id: alert.snapshot_id,
                metric: alert.metric.as_str().to_string(),
                status: alert.status,
                message: alert.message.clone(),
            });
        }
        for (count, alerted) in self.by_threshold.iter_mut().zip(at_thresholds) {
            count.alerts += usize::from(*alerted);
        }
    }
}

/// The smallest threshold whose alerts per check are within `budget`.
pub fn suggest(by_threshold: &[ThresholdCount], checks: usize, budget: f64) -> Option<f64> {
    if checks == 0 {
        return None;
    }
    by_threshold.iter().find(|count| count.alerts as f64 / checks as f64 <= budget).map(|count| count.zscore_threshold)
}

fn is_alert(status: Status) -> bool {
    matches!(status, Status::Warning | Status::Critical)
}

/// Merges stored points with the snapshot log's: the log's point wins for a snapshot both
/// have; stored points of expired snapshots stay history. Oldest first.
fn merged(from_log: Vec<Point>, stored: &[Point]) -> Vec<Point> {
    let known: std::collections::HashSet<(i64, Option<i64>)> =
        from_log.iter().map(|point| (point.observed_at_ms, point.snapshot_id)).collect();
    let mut all = from_log;
    all.extend(stored.iter().filter(|point| !known.contains(&(point.observed_at_ms, point.snapshot_id))).cloned());
    all.sort_by_key(|point| point.observed_at_ms);
    all
}

/// `config` at each of [`THRESHOLDS`], its other settings unchanged.
fn at_each_threshold<C: Clone>(config: &C, settings: fn(&mut C) -> &mut SensorSettings) -> Vec<C> {
    THRESHOLDS
        .iter()
        .map(|threshold| {
            let mut config = config.clone();
            settings(&mut config).zscore_threshold = *threshold;
            config
        })
        .collect()
}

/// The windows a judge asked for, answered from `points` (all of the series, oldest first) as
/// the store answers them: before `before_ms`, from `since_ms`, the newest `limit`.
fn windows_of(requests: Vec<WindowRequest>, points: &[Point]) -> Windows {
    let mut windows = Windows::new();
    for request in requests {
        let before = points.partition_point(|point| point.observed_at_ms < request.before_ms);
        let since =
            request.since_ms.map_or(0, |since| points[..before].partition_point(|point| point.observed_at_ms < since));
        let first = since.max(before.saturating_sub(request.limit));
        windows.insert(request.series, points[first..before].to_vec());
    }
    windows
}

/// Replays the volume sensor: every append judged against the appends before it.
pub fn replay_volume(
    table: &TableConfig,
    config: &VolumeConfig,
    history: &[Commit],
    stored: &[Point],
    counted_from_ms: i64,
) -> Replay {
    let name = table.name.as_str();
    let mut replay = Replay::new(name, SensorKind::VOLUME, counted_from_ms);
    let observation = volume::observe_commits(history);
    let key = volume::rows_added_series(name);
    let from_log: Vec<Point> =
        volume::series(name, &observation).into_iter().filter(|point| point.series == key).collect();
    let points = merged(from_log, stored);
    let at_threshold = at_each_threshold(config, |config: &mut VolumeConfig| &mut config.settings);
    let mut choices: HashMap<i64, Choice> = HashMap::new();
    for (index, newest) in observation.appends.iter().enumerate() {
        let upto = volume::VolumeObservation {
            appends: observation.appends[..=index].to_vec(),
            latest_data_commit: Some(newest.clone()),
            current: None,
            totals: Vec::new(),
        };
        let windows = windows_of(volume::window_requests(name, config, &upto), &points);
        let day = seasonal::day_start(newest.timestamp_ms);
        let choice =
            choices.entry(day).or_insert_with(|| volume::choose(name, config, &windows, newest.timestamp_ms)).clone();
        let judged: Vec<Evaluation> = volume::judge_with(name, config, &upto, &windows, Some(&choice))
            .into_iter()
            .filter(|evaluation| evaluation.metric == Metric::ROWS_ADDED)
            .collect();
        let at_thresholds: Vec<bool> = at_threshold
            .iter()
            .map(|config| {
                volume::judge_with(name, config, &upto, &windows, Some(&choice))
                    .iter()
                    .any(|evaluation| evaluation.metric == Metric::ROWS_ADDED && is_alert(evaluation.status))
            })
            .collect();
        replay.count(newest.timestamp_ms, &judged, &at_thresholds);
    }
    replay
}

/// Replays the freshness sensor just before every arrival: the moment the gap that arrival
/// closed was longest, so a check at any time during it alerts here if it would have at all.
/// The event-time lag is not replayed (it needs the data files).
pub fn replay_freshness(
    table: &TableConfig,
    config: &FreshnessConfig,
    history: &[Commit],
    stored: &[Point],
    counted_from_ms: i64,
) -> Replay {
    let name = table.name.as_str();
    let mut replay = Replay::new(name, SensorKind::FRESHNESS, counted_from_ms);
    let whole = freshness::observation_at(history, config, i64::MAX);
    let points = merged(freshness::series(name, &whole), stored);
    let at_threshold = at_each_threshold(config, |config: &mut FreshnessConfig| &mut config.settings);
    let position: HashMap<i64, usize> =
        history.iter().enumerate().map(|(index, commit)| (commit.snapshot_id, index)).collect();
    let mut choices = HashMap::new();
    for (snapshot_id, arrival_ms) in whole.data_commits.iter().skip(1) {
        let now_ms = arrival_ms - 1;
        let end = position.get(snapshot_id).copied().unwrap_or(history.len());
        let observation = freshness::observation_at(&history[..end], config, now_ms);
        let windows = windows_of(freshness::window_requests(name, config, &observation), &points);
        let cadence = choices
            .entry(seasonal::day_start(now_ms))
            .or_insert_with(|| freshness::choose_cadence(name, config, &observation, &windows))
            .clone();
        let judged = freshness::judge_with(name, config, &observation, &windows, Some(&cadence));
        let at_thresholds: Vec<bool> = at_threshold
            .iter()
            .map(|config| {
                freshness::judge_with(name, config, &observation, &windows, Some(&cadence))
                    .iter()
                    .any(|result| is_alert(result.status))
            })
            .collect();
        replay.count(now_ms, &judged, &at_thresholds);
    }
    replay
}

/// The replays of one table's volume and freshness sensors (those it declares and `only`
/// allows), from its snapshot log and its stored points by series; checks within `warm_up_ms`
/// of the table's first commit (or stored point) are history, not counted.
pub fn replay_table(
    table: &TableConfig,
    history: &[Commit],
    stored: &HashMap<crate::history::SeriesKey, Vec<Point>>,
    only: Option<SensorKind>,
    warm_up_ms: i64,
) -> Vec<Replay> {
    let name = table.name.as_str();
    let first_ms = history
        .iter()
        .map(|commit| commit.timestamp_ms)
        .chain(stored.values().flatten().map(|point| point.observed_at_ms))
        .min()
        .unwrap_or(0);
    let counted_from_ms = first_ms.saturating_add(warm_up_ms);
    let wanted = |kind: SensorKind| only.is_none_or(|only| only == kind);
    let none = Vec::new();
    let mut replays = Vec::new();
    if let Some(config) = &table.freshness
        && wanted(SensorKind::FRESHNESS)
    {
        let stored = stored.get(&freshness::gap_series(name)).unwrap_or(&none);
        replays.push(replay_freshness(table, config, history, stored, counted_from_ms));
    }
    if let Some(config) = &table.volume
        && wanted(SensorKind::VOLUME)
    {
        let stored = stored.get(&volume::rows_added_series(name)).unwrap_or(&none);
        replays.push(replay_volume(table, config, history, stored, counted_from_ms));
    }
    replays
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::snapshots::CommitOperation;

    const HOUR: i64 = 3_600_000;

    fn table(extra: &str) -> TableConfig {
        let text = format!(
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://c.db\"\nwarehouse = \"w\"\n[tables.\"a.b\".volume]\n[tables.\"a.b\".freshness]\n{extra}\n"
        );
        crate::config::Config::from_str(&text, std::path::Path::new("/tmp/s.toml")).unwrap().tables.remove(0)
    }

    fn appends(rows: &[u64]) -> Vec<Commit> {
        rows.iter()
            .enumerate()
            .map(|(index, rows)| Commit {
                added_files: Some(1),
                table_commit: index,
                ..Commit::new(
                    index as i64 + 1,
                    1_767_571_200_000 + index as i64 * HOUR,
                    CommitOperation::Append,
                    Some(*rows),
                )
            })
            .collect()
    }

    #[test]
    fn a_steady_table_replays_quietly_and_a_drop_is_one_alert() {
        let table = table("");
        let steady: Vec<u64> = (0..200).map(|index| 1000 + (index * 37 % 60)).collect();
        let replays = replay_table(&table, &appends(&steady), &HashMap::new(), None, 0);
        let volume = replays.iter().find(|replay| replay.sensor == SensorKind::VOLUME).unwrap();
        assert_eq!(volume.alerts, 0, "{:?}", volume.alerted);
        assert!(volume.checks >= 190, "{}", volume.checks);
        let freshness = replays.iter().find(|replay| replay.sensor == SensorKind::FRESHNESS).unwrap();
        assert_eq!(freshness.alerts, 0, "{:?}", freshness.alerted);

        let mut dropped = steady.clone();
        dropped[150] = 300;
        let replays = replay_table(&table, &appends(&dropped), &HashMap::new(), Some(SensorKind::VOLUME), 0);
        // A warm-up past the drop leaves it uncounted.
        let warm = replay_table(&table, &appends(&dropped), &HashMap::new(), Some(SensorKind::VOLUME), 160 * HOUR);
        assert_eq!(warm[0].alerts, 0);
        assert!(warm[0].checks < 45, "{}", warm[0].checks);
        assert_eq!(replays.len(), 1);
        assert_eq!(replays[0].alerts, 1, "{:?}", replays[0].alerted);
        assert_eq!(replays[0].alerted[0].snapshot_id, Some(151));
        // Lower thresholds never alert less.
        let counts: Vec<usize> = replays[0].by_threshold.iter().map(|count| count.alerts).collect();
        assert!(counts.windows(2).all(|pair| pair[0] >= pair[1]), "{counts:?}");
    }

    #[test]
    fn the_suggestion_is_the_smallest_threshold_within_the_budget() {
        let counts = [
            ThresholdCount { zscore_threshold: 2.0, alerts: 30 },
            ThresholdCount { zscore_threshold: 3.0, alerts: 2 },
            ThresholdCount { zscore_threshold: 4.0, alerts: 0 },
        ];
        assert_eq!(suggest(&counts, 1000, 0.005), Some(3.0));
        assert_eq!(suggest(&counts, 1000, 0.001), Some(4.0));
        assert_eq!(suggest(&counts, 0, 0.001), None);
    }
}
