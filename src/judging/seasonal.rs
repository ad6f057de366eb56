//! Seasonal models of a series, and their automatic choice. A model says which past points are
//! "like" a new one (the same hour of day, day of week, hour of week, or weekday/weekend class,
//! in UTC) and whether the series carries a growth trend; the automatic choice backtests each
//! model on held-out points of the table's own history and keeps the simplest one that predicts
//! clearly better than no model. Values (rows per commit) are compared with like points,
//! projected along the trend; commit gaps are measured in "activity time", the hours of the
//! week weighted by how often the table commits then, so a weekend without loads is not a gap.
//! Pure: no IO, no clocks.

use serde::Serialize;

use crate::config::Seasonality;
use crate::stats::{ScoringParams, baseline};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
pub const WEEK_MS: i64 = 7 * DAY_MS;
/// How close in time of day (or week) a past point must be to be like a new one.
pub const PHASE_TOLERANCE_MS: i64 = 45 * 60 * 1000;
/// History the automatic choice reads, and the longest span a weekly model looks back over.
pub const SELECTION_SPAN_MS: i64 = 35 * DAY_MS;
/// Points the choice backtests at most: a table committing every few seconds is thinned
/// evenly, which keeps its span (and so the weekly models) at a bounded cost.
const MAX_SELECTION_POINTS: usize = 1_000;
/// Held-out points of the backtest: a quarter of the history, within these bounds.
const MIN_HELD_OUT: usize = 10;
const MAX_HELD_OUT: usize = 48;
/// A cycle is chosen only when it predicts the held-out points with at most this share of the
/// error of no cycle: a model must earn its place, or noise would pick one.
const REQUIRED_ERROR_RATIO: f64 = 0.8;
/// A trend is kept only when it cuts the error of its cycle to at most this share.
const TREND_ERROR_RATIO: f64 = 0.9;
/// Models whose error is within this factor of the best one are as good; the simplest wins.
const AS_GOOD: f64 = 1.05;
/// Activity weight of an hour in which the table (almost) never commits, relative to an
/// average hour: low enough that a quiet weekend counts for about an hour, not zero, so a
/// table that stops for good is still late after a few quiet periods.
const MIN_ACTIVITY_WEIGHT: f64 = 0.02;

/// Which past points are like a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cycle {
    /// Every point is alike.
    None,
    /// Within 45 minutes of the same UTC time of day.
    HourOfDay,
    /// The same UTC weekday.
    DayOfWeek,
    /// Within 45 minutes of the same UTC time of the week.
    HourOfWeek,
    /// Both on a weekday, or both on a weekend (Saturday, Sunday UTC).
    WeekdayWeekend,
}

impl Cycle {
    /// From the simplest to the most detailed: when two predict as well, the earlier one wins.
    pub const ALL: [Cycle; 5] =
        [Cycle::None, Cycle::WeekdayWeekend, Cycle::DayOfWeek, Cycle::HourOfDay, Cycle::HourOfWeek];

    pub fn as_str(self) -> &'static str {
        match self {
            Cycle::None => "none",
            Cycle::HourOfDay => "hour_of_day",
            Cycle::DayOfWeek => "day_of_week",
            Cycle::HourOfWeek => "hour_of_week",
            Cycle::WeekdayWeekend => "weekday_weekend",
        }
    }

    /// How a message says which points were compared: "at this time of day".
    fn describe(self) -> &'static str {
        match self {
            Cycle::None => "",
            Cycle::HourOfDay => "at this time of day",
            Cycle::DayOfWeek => "on this day of the week",
            Cycle::HourOfWeek => "at this time of the week",
            Cycle::WeekdayWeekend => "on this kind of day (weekday or weekend)",
        }
    }

    /// History needed before the automatic choice may pick this cycle: three complete cycles
    /// (two weekends for weekday/weekend).
    fn min_span_ms(self) -> i64 {
        match self {
            Cycle::None => 0,
            Cycle::HourOfDay => 3 * DAY_MS,
            Cycle::WeekdayWeekend => 2 * WEEK_MS,
            Cycle::DayOfWeek | Cycle::HourOfWeek => 3 * WEEK_MS,
        }
    }

    /// History needed before the automatic choice may pick this cycle for commit gaps: the hour
    /// rates of a week need every hour seen once and a weekend, not three like points each.
    fn min_span_for_gaps_ms(self) -> i64 {
        match self {
            Cycle::None => 0,
            Cycle::HourOfDay => 3 * DAY_MS,
            Cycle::WeekdayWeekend | Cycle::DayOfWeek | Cycle::HourOfWeek => 8 * DAY_MS,
        }
    }

    /// The span like points are looked for in, at least: a weekly cycle has one like day a week.
    pub fn reference_span_ms(self) -> i64 {
        match self {
            Cycle::None | Cycle::HourOfDay => 0,
            Cycle::WeekdayWeekend => 2 * WEEK_MS,
            Cycle::DayOfWeek | Cycle::HourOfWeek => SELECTION_SPAN_MS,
        }
    }

    /// Whether points at `a_ms` and `b_ms` are alike under this cycle.
    pub fn alike(self, a_ms: i64, b_ms: i64) -> bool {
        let near = |period: i64| {
            let distance = (a_ms.rem_euclid(period) - b_ms.rem_euclid(period)).abs();
            distance.min(period - distance) <= PHASE_TOLERANCE_MS
        };
        match self {
            Cycle::None => true,
            Cycle::HourOfDay => near(DAY_MS),
            Cycle::HourOfWeek => near(WEEK_MS),
            Cycle::DayOfWeek => weekday(a_ms) == weekday(b_ms),
            Cycle::WeekdayWeekend => (weekday(a_ms) >= 5) == (weekday(b_ms) >= 5),
        }
    }

    /// The activity bucket of an instant, and the number of buckets.
    fn bucket(self, at_ms: i64) -> (usize, usize) {
        match self {
            Cycle::None => (0, 1),
            Cycle::HourOfDay => ((at_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize, 24),
            Cycle::HourOfWeek => ((monday_based(at_ms).rem_euclid(WEEK_MS) / HOUR_MS) as usize, 168),
            Cycle::DayOfWeek => (weekday(at_ms), 7),
            Cycle::WeekdayWeekend => (usize::from(weekday(at_ms) >= 5), 2),
        }
    }

    /// Whether neighbouring buckets are neighbours in time (hours), so that rates are smoothed
    /// across them.
    fn hourly(self) -> bool {
        matches!(self, Cycle::HourOfDay | Cycle::HourOfWeek)
    }
}

/// Milliseconds since Monday 1970-01-05 00:00 UTC (the epoch was a Thursday).
fn monday_based(at_ms: i64) -> i64 {
    at_ms - 4 * DAY_MS
}

/// 0 = Monday … 6 = Sunday, in UTC.
fn weekday(at_ms: i64) -> usize {
    (monday_based(at_ms).rem_euclid(WEEK_MS) / DAY_MS) as usize
}

/// A seasonal model: which points are alike, and whether values grow (or shrink) over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    pub cycle: Cycle,
    pub trend: bool,
}

impl Model {
    pub const NONE: Model = Model { cycle: Cycle::None, trend: false };

    /// `hour_of_day`, `none+trend`: as exported and printed.
    pub fn label(self) -> String {
        if self.trend { format!("{}+trend", self.cycle.as_str()) } else { self.cycle.as_str().to_string() }
    }
}

/// The model a series is judged with, and how it came to be.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub model: Model,
    /// Growth of the values in natural log per day (0.03 ≈ 3 % a day), when `model.trend`.
    pub growth_per_day: f64,
    /// Whether the model was chosen automatically (else it was configured).
    pub automatic: bool,
}

impl Choice {
    pub fn fixed(cycle: Cycle) -> Choice {
        Choice { model: Model { cycle, trend: false }, growth_per_day: 0.0, automatic: false }
    }

    /// The label of the model, with `auto:` when it was chosen automatically.
    pub fn describe(&self) -> String {
        if self.automatic { format!("auto: {}", self.model.label()) } else { self.model.label() }
    }
}

/// One past value of a series: when it was observed and when its cycle phase is (the commit
/// time for rows added).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timed {
    pub at_ms: i64,
    pub value: f64,
}

/// The past values a new value at `at_ms` is compared with.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub values: Vec<f64>,
    /// When each value was observed.
    pub at_ms: Vec<i64>,
    /// What the message says about them: " at this time of day", or why all points were used.
    pub note: String,
}

/// The like points of `past` (oldest first, all before `at_ms`) within `window_ms` before
/// `at_ms` (or the cycle's own span, if longer), the newest `points` of them, projected to
/// `at_ms` along the choice's trend. All points of the window when fewer than `min_history`
/// are alike, and the note says so.
pub fn reference(
    past: &[Timed],
    at_ms: i64,
    choice: &Choice,
    window_ms: i64,
    points: usize,
    min_history: usize,
) -> Reference {
    let cycle = choice.model.cycle;
    let since = at_ms - window_ms.max(cycle.reference_span_ms());
    let in_window = |point: &&Timed| point.at_ms >= since && point.at_ms < at_ms;
    let project = |point: &Timed| {
        if choice.model.trend {
            point.value * (choice.growth_per_day * (at_ms - point.at_ms) as f64 / DAY_MS as f64).exp()
        } else {
            point.value
        }
    };
    let newest = |selected: Vec<&Timed>, note: String| -> Reference {
        let selected = &selected[selected.len().saturating_sub(points)..];
        Reference {
            values: selected.iter().map(|point| project(point)).collect(),
            at_ms: selected.iter().map(|point| point.at_ms).collect(),
            note,
        }
    };
    let trend = if choice.model.trend { ", trend-adjusted" } else { "" };
    if cycle != Cycle::None {
        let like: Vec<&Timed> = past.iter().filter(in_window).filter(|point| cycle.alike(point.at_ms, at_ms)).collect();
        if like.len() >= min_history {
            return newest(like, format!(" {}{trend}", cycle.describe()));
        }
        let fallback = format!(" (too few past commits {} for the {} model{trend})", cycle.describe(), cycle.as_str());
        return newest(past.iter().filter(in_window).collect(), fallback);
    }
    let note = if choice.model.trend { " (trend-adjusted)".to_string() } else { String::new() };
    newest(past.iter().filter(in_window).collect(), note)
}

/// Robust growth rate of positive values, in natural log per day: the median slope of
/// ln(value) over pairs at least a day apart (Theil–Sen), from at most 120 evenly spread
/// points. `None` with less than three days of positive values.
pub fn growth_per_day(past: &[Timed]) -> Option<f64> {
    let positive: Vec<&Timed> = past.iter().filter(|point| point.value > 0.0 && point.value.is_finite()).collect();
    let thinned = thin(&positive, 120);
    let span = thinned.last()?.at_ms - thinned.first()?.at_ms;
    if span < 3 * DAY_MS {
        return None;
    }
    let mut slopes = Vec::new();
    for (index, early) in thinned.iter().enumerate() {
        for late in &thinned[index + 1..] {
            let days = (late.at_ms - early.at_ms) as f64 / DAY_MS as f64;
            if days >= 1.0 {
                slopes.push((late.value.ln() - early.value.ln()) / days);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let median = slopes[slopes.len() / 2];
    median.is_finite().then_some(median)
}

/// At most `most` of `items`, evenly spread, keeping the first and the last.
fn thin<T: Copy>(items: &[T], most: usize) -> Vec<T> {
    if items.len() <= most || most < 2 {
        return items.to_vec();
    }
    let step = (items.len() - 1) as f64 / (most - 1) as f64;
    (0..most).map(|index| items[((index as f64 * step).round() as usize).min(items.len() - 1)]).collect()
}

/// How the held-out points of a backtest are predicted and their errors aggregated.
pub struct Backtest {
    pub window_ms: i64,
    pub points: usize,
    pub min_history: usize,
    /// The judge's threshold: a held-out gap at or beyond it would have alarmed.
    pub zscore_threshold: f64,
}

impl Backtest {
    /// The model of a value at `at_ms`: the configured cycle, or the automatic choice from the
    /// points of `past` (oldest first) before the day of `at_ms` began.
    pub fn choose(&self, seasonality: Seasonality, past: &[Timed], at_ms: i64) -> Choice {
        match seasonality {
            Seasonality::Fixed(cycle) => Choice::fixed(cycle),
            Seasonality::Auto => {
                let before = day_start(at_ms);
                let first = past.partition_point(|point| point.at_ms < before - SELECTION_SPAN_MS);
                let last = past.partition_point(|point| point.at_ms < before);
                self.choose_for_values(&past[first..last.max(first)])
            }
        }
    }

    /// The model that best predicts the newest points of `past` (oldest first) from the points
    /// before each, among the cycles the span of `past` allows, with a trend where it helps.
    /// `past` should hold only points before the day being judged, so that the choice is the
    /// same for every run of one day (see `day_start`).
    pub fn choose_for_values(&self, past: &[Timed]) -> Choice {
        let thinned = thin(past, MAX_SELECTION_POINTS);
        let Some(held_out) = held_out_count(thinned.len(), self.min_history) else { return Choice::automatic_none() };
        let train = &thinned[..thinned.len() - held_out];
        let growth = growth_per_day(train).filter(|growth| growth.abs() > 1e-4);
        let span = thinned[thinned.len() - 1].at_ms - thinned[0].at_ms;
        let error_of = |choice: &Choice| -> f64 {
            let errors: Vec<f64> = (thinned.len() - held_out..thinned.len())
                .map(|index| {
                    let target = thinned[index];
                    let reference = reference(
                        &thinned[..index],
                        target.at_ms,
                        choice,
                        self.window_ms,
                        self.points,
                        self.min_history,
                    );
                    match predict(&reference.values, self.min_history) {
                        Some(predicted) => (target.value - predicted).abs(),
                        None => f64::NAN,
                    }
                })
                .collect();
            trimmed_mean(errors)
        };
        let mut candidates = Vec::new();
        for cycle in Cycle::ALL.into_iter().filter(|cycle| span >= cycle.min_span_ms()) {
            let plain = Choice { model: Model { cycle, trend: false }, growth_per_day: 0.0, automatic: true };
            let plain_error = error_of(&plain);
            candidates.push((plain, plain_error));
            if let Some(growth) = growth {
                let trended = Choice { model: Model { cycle, trend: true }, growth_per_day: growth, automatic: true };
                let trended_error = error_of(&trended);
                if trended_error <= TREND_ERROR_RATIO * plain_error {
                    let last = candidates.len() - 1;
                    candidates[last] = (trended, trended_error);
                }
            }
        }
        pick(candidates)
    }

    /// The activity model of the commit cadence at `now_ms`: the configured cycle's, or the
    /// automatic choice from the commits (oldest first) before the day of `now_ms` began.
    pub fn choose_activity(&self, seasonality: Seasonality, commits_ms: &[i64], now_ms: i64) -> (Choice, Activity) {
        let before = day_start(now_ms);
        let first = commits_ms.partition_point(|at| *at < before - SELECTION_SPAN_MS);
        let last = commits_ms.partition_point(|at| *at < before).max(first);
        match seasonality {
            Seasonality::Fixed(cycle) => (Choice::fixed(cycle), Activity::estimate(&commits_ms[first..last], cycle)),
            Seasonality::Auto => self.choose_for_gaps(&commits_ms[first..last]),
        }
    }

    /// The cycle whose activity time best explains the newest gaps of `commits_ms` (commit
    /// times, oldest first) from the gaps before them: first the fewest held-out gaps that
    /// would have alarmed (a weekend pause is one gap in sixty, so an average error would not
    /// see it), then the smallest relative error (each cycle measures gaps on its own scale).
    /// The held-out gaps are the last week's when there are eight days of history, so that a
    /// weekly pause is among them. The hour rates come from the whole history, held-out gaps
    /// included: a week of loads holds at most one weekend, and rates learnt without it would
    /// never know the weekend is quiet. That favours detailed cycles, which must still cut the
    /// alarms, or the error by a fifth, to be chosen.
    pub fn choose_for_gaps(&self, commits_ms: &[i64]) -> (Choice, Activity) {
        let thinned = thin(commits_ms, MAX_SELECTION_POINTS);
        let none = (Choice::automatic_none(), Activity::uniform());
        let gap_count = thinned.len().saturating_sub(1);
        let Some(mut held_out) = held_out_count(gap_count, self.min_history) else { return none };
        let span = thinned[thinned.len() - 1] - thinned[0];
        if span >= 8 * DAY_MS {
            let last_week = thinned.len() - thinned.partition_point(|at| *at <= thinned[thinned.len() - 1] - WEEK_MS);
            held_out = last_week.clamp(held_out, gap_count - self.min_history.max(1));
        }
        let floors = super::Measure::CommitGap.floors();
        let params = ScoringParams {
            min_history: self.min_history.max(1),
            zscore_threshold: self.zscore_threshold,
            direction: crate::stats::Direction::Spike,
            min_stddev_absolute: floors.absolute,
            min_stddev_relative: floors.relative,
            ..ScoringParams::default()
        };
        let mut candidates: Vec<(Choice, (usize, f64), Activity)> = Vec::new();
        for cycle in Cycle::ALL.into_iter().filter(|cycle| span >= cycle.min_span_for_gaps_ms()) {
            let activity = Activity::estimate(&thinned, cycle);
            let gaps: Vec<f64> = thinned.windows(2).map(|pair| activity.between(pair[0], pair[1])).collect();
            let (mut alarms, mut errors) = (0usize, Vec::new());
            for index in gaps.len() - held_out..gaps.len() {
                let past = &gaps[index.saturating_sub(self.points)..index];
                match crate::stats::score(gaps[index], past, &params) {
                    Some(score) if score.mean > 0.0 => {
                        alarms += usize::from(score.is_anomaly);
                        errors.push((gaps[index] - score.mean).abs() / score.mean);
                    }
                    _ => errors.push(f64::NAN),
                }
            }
            let error = trimmed_mean(errors);
            let choice = Choice { model: Model { cycle, trend: false }, growth_per_day: 0.0, automatic: true };
            candidates.push((choice, (alarms, error), activity));
        }
        let Some((_, none_fit, _)) = candidates.first().cloned() else { return none };
        let beats_none = |(alarms, error): (usize, f64)| {
            alarms < none_fit.0 || (alarms == none_fit.0 && error <= REQUIRED_ERROR_RATIO * none_fit.1)
        };
        let contenders: Vec<&(Choice, (usize, f64), Activity)> =
            candidates.iter().skip(1).filter(|(_, fit, _)| beats_none(*fit) && fit.1.is_finite()).collect();
        let Some(best) =
            contenders.iter().map(|(_, fit, _)| *fit).min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        else {
            return none;
        };
        contenders
            .into_iter()
            .find(|(_, fit, _)| fit.0 == best.0 && fit.1 <= best.1 * AS_GOOD + f64::EPSILON)
            .map(|(choice, _, activity)| (choice.clone(), activity.clone()))
            .unwrap_or(none)
    }
}

impl Choice {
    fn automatic_none() -> Choice {
        Choice { model: Model::NONE, growth_per_day: 0.0, automatic: true }
    }
}

/// Held-out points for a backtest of `count` points: none (no choice) when there are fewer
/// than four times `min_history` (at least 20).
fn held_out_count(count: usize, min_history: usize) -> Option<usize> {
    if count < (4 * min_history).max(20) {
        return None;
    }
    Some((count / 4).clamp(MIN_HELD_OUT, MAX_HELD_OUT))
}

/// The prediction of the next value from `reference`: the robust baseline mean the judge uses.
fn predict(reference: &[f64], min_history: usize) -> Option<f64> {
    let params = ScoringParams { min_history: min_history.max(1), ..ScoringParams::default() };
    baseline(reference, &params).map(|baseline| baseline.mean)
}

/// Mean of the errors without the largest tenth (a past anomaly among the held-out points
/// should not decide the model); a point that could not be predicted counts as the worst
/// error, so a model is not rewarded for predicting fewer points. Infinity when none could.
fn trimmed_mean(errors: Vec<f64>) -> f64 {
    let Some(worst) = errors.iter().copied().filter(|error| error.is_finite()).reduce(f64::max) else {
        return f64::INFINITY;
    };
    let mut errors: Vec<f64> = errors.into_iter().map(|error| if error.is_finite() { error } else { worst }).collect();
    errors.sort_by(f64::total_cmp);
    let kept = errors.len() - errors.len() / 10;
    errors[..kept].iter().sum::<f64>() / kept as f64
}

/// The simplest candidate as good as the best, provided it beats no cycle clearly; else the
/// no-cycle candidate (with its trend, if it has one).
fn pick(candidates: Vec<(Choice, f64)>) -> Choice {
    let Some((none, none_error)) = candidates.first().cloned() else { return Choice::automatic_none() };
    let best = candidates.iter().map(|(_, error)| *error).fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return none;
    }
    candidates
        .into_iter()
        .find(|(choice, error)| {
            *error <= best * AS_GOOD + f64::EPSILON
                && (choice.model.cycle == Cycle::None || *error <= REQUIRED_ERROR_RATIO * none_error)
        })
        .map(|(choice, _)| choice)
        .unwrap_or(none)
}

/// The oldest instant whose points the judgement of a value at `at_ms` reads: the window, the
/// span of the configured cycle, or with `auto` the history the choice is made from.
pub fn history_since(seasonality: Seasonality, at_ms: i64, window_ms: i64) -> i64 {
    match seasonality {
        Seasonality::Fixed(cycle) => at_ms - window_ms.max(cycle.reference_span_ms()),
        Seasonality::Auto => (at_ms - window_ms).min(day_start(at_ms) - SELECTION_SPAN_MS),
    }
}

/// The start (00:00 UTC) of the day of `at_ms`: the automatic choice reads only history before
/// it, so every run of one day judges with the same model.
pub fn day_start(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(DAY_MS)
}

/// How busy each bucket of a cycle is, relative to an average hour: the weight an hour of it
/// carries in activity time.
#[derive(Clone, Debug, PartialEq)]
pub struct Activity {
    cycle: Cycle,
    weights: Vec<f64>,
}

impl Activity {
    /// Every hour weighs 1: activity time is clock time.
    pub fn uniform() -> Activity {
        Activity { cycle: Cycle::None, weights: vec![1.0] }
    }

    /// The commit rate of each bucket over the span of `commits_ms`, relative to the mean rate,
    /// smoothed over neighbouring hours (a load at 02:50 one day and 03:10 the next is one
    /// habit) and never below [`MIN_ACTIVITY_WEIGHT`].
    pub fn estimate(commits_ms: &[i64], cycle: Cycle) -> Activity {
        let (_, buckets) = cycle.bucket(0);
        let (Some(first), Some(last)) = (commits_ms.first(), commits_ms.last()) else { return Activity::uniform() };
        if cycle == Cycle::None || last <= first {
            return Activity::uniform();
        }
        let mut commits = vec![0.0f64; buckets];
        for at in commits_ms {
            commits[cycle.bucket(*at).0] += 1.0;
        }
        // Hours of each bucket within the span, counted hour by hour (bounded by the span).
        let mut hours = vec![0.0f64; buckets];
        let mut hour = *first - first.rem_euclid(HOUR_MS);
        while hour < *last {
            hours[cycle.bucket(hour).0] += 1.0;
            hour += HOUR_MS;
        }
        if cycle.hourly() {
            commits = smooth_circular(&commits);
            hours = smooth_circular(&hours);
        }
        let total_rate = commits_ms.len() as f64 / hours.iter().sum::<f64>().max(1.0);
        let weights = commits
            .iter()
            .zip(&hours)
            .map(|(commits, hours)| {
                let rate = if *hours > 0.0 { commits / hours } else { total_rate };
                (rate / total_rate).max(MIN_ACTIVITY_WEIGHT)
            })
            .collect();
        Activity { cycle, weights }
    }

    /// Activity time between two instants, in seconds: clock seconds weighted by the busyness
    /// of each hour they cover.
    pub fn between(&self, from_ms: i64, to_ms: i64) -> f64 {
        if to_ms <= from_ms {
            return 0.0;
        }
        if self.cycle == Cycle::None {
            return (to_ms - from_ms) as f64 / 1000.0;
        }
        // Whole weeks at once (a long outage), then hour by hour.
        let weeks = (to_ms - from_ms) / WEEK_MS;
        let week_weight: f64 = (0..168).map(|hour| self.weight(monday_based_hour(hour))).sum::<f64>();
        let mut seconds = weeks as f64 * week_weight * 3600.0;
        let mut at = from_ms + weeks * WEEK_MS;
        while at < to_ms {
            let next = (at - at.rem_euclid(HOUR_MS) + HOUR_MS).min(to_ms);
            seconds += self.weight(at) * (next - at) as f64 / 1000.0;
            at = next;
        }
        seconds
    }

    /// Clock seconds after `from_ms` until `activity_seconds` of activity time have passed: when a
    /// gap of that activity length ends. Bounded: at most a year is stepped through.
    pub fn clock_after(&self, from_ms: i64, activity_seconds: f64) -> f64 {
        if self.cycle == Cycle::None || activity_seconds <= 0.0 {
            return activity_seconds.max(0.0);
        }
        let mut left = activity_seconds;
        let mut at = from_ms;
        while at < from_ms + 365 * DAY_MS {
            let next = at - at.rem_euclid(HOUR_MS) + HOUR_MS;
            let available = self.weight(at) * (next - at) as f64 / 1000.0;
            if available >= left {
                return (at - from_ms) as f64 / 1000.0 + left / self.weight(at);
            }
            left -= available;
            at = next;
        }
        (at - from_ms) as f64 / 1000.0
    }

    fn weight(&self, at_ms: i64) -> f64 {
        self.weights.get(self.cycle.bucket(at_ms).0).copied().unwrap_or(1.0)
    }

    pub fn cycle(&self) -> Cycle {
        self.cycle
    }
}

/// An instant in the `hour`-th hour of a week starting on Monday.
fn monday_based_hour(hour: i64) -> i64 {
    4 * DAY_MS + hour * HOUR_MS
}

/// Each bucket as ¼ of its previous, ½ of itself and ¼ of its next (circularly).
fn smooth_circular(values: &[f64]) -> Vec<f64> {
    let count = values.len();
    (0..count)
        .map(|index| {
            0.25 * values[(index + count - 1) % count] + 0.5 * values[index] + 0.25 * values[(index + 1) % count]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Monday, 00:00 UTC.
    const MONDAY: i64 = 1_767_571_200_000;

    fn noise(index: usize) -> f64 {
        // A deterministic ±10 % jitter.
        let x = ((index as u64).wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
        0.9 + 0.2 * x
    }

    fn backtest() -> Backtest {
        Backtest { window_ms: 7 * DAY_MS, points: 50, min_history: 5, zscore_threshold: 3.0 }
    }

    #[test]
    fn weekdays_and_phases_are_utc() {
        assert_eq!(weekday(MONDAY), 0);
        assert_eq!(weekday(MONDAY + 6 * DAY_MS), 6);
        assert!(Cycle::HourOfDay.alike(MONDAY + 2 * HOUR_MS, MONDAY + DAY_MS + 2 * HOUR_MS + 40 * 60_000));
        assert!(!Cycle::HourOfDay.alike(MONDAY + 2 * HOUR_MS, MONDAY + 3 * HOUR_MS));
        assert!(Cycle::HourOfDay.alike(MONDAY + 23 * HOUR_MS + 50 * 60_000, MONDAY + DAY_MS + 10 * 60_000));
        assert!(Cycle::WeekdayWeekend.alike(MONDAY + 5 * DAY_MS, MONDAY + 6 * DAY_MS));
        assert!(!Cycle::WeekdayWeekend.alike(MONDAY + 4 * DAY_MS, MONDAY + 5 * DAY_MS));
    }

    #[test]
    fn a_flat_noisy_series_gets_no_model() {
        let past: Vec<Timed> = (0..24 * 21)
            .map(|hour| Timed { at_ms: MONDAY + hour as i64 * HOUR_MS, value: 1000.0 * noise(hour) })
            .collect();
        assert_eq!(backtest().choose_for_values(&past).model, Model::NONE);
    }

    #[test]
    fn a_daily_cycle_is_found_and_a_trend_when_the_table_grows() {
        let daily = |hour: usize| 1000.0 * (1.0 + 0.66 * (hour as f64 * std::f64::consts::TAU / 24.0).sin());
        let past: Vec<Timed> = (0..24 * 10)
            .map(|hour| Timed { at_ms: MONDAY + hour as i64 * HOUR_MS, value: daily(hour) * noise(hour) })
            .collect();
        let choice = backtest().choose_for_values(&past);
        assert_eq!(choice.model, Model { cycle: Cycle::HourOfDay, trend: false }, "{choice:?}");

        let growing: Vec<Timed> = (0..24 * 21)
            .map(|hour| Timed {
                at_ms: MONDAY + hour as i64 * HOUR_MS,
                value: daily(hour) * noise(hour) * (0.04 * hour as f64 / 24.0).exp(),
            })
            .collect();
        let choice = backtest().choose_for_values(&growing);
        assert_eq!(choice.model, Model { cycle: Cycle::HourOfDay, trend: true }, "{choice:?}");
        assert!((choice.growth_per_day - 0.04).abs() < 0.01, "{choice:?}");
    }

    #[test]
    fn quiet_weekends_are_a_weekly_cycle() {
        let past: Vec<Timed> = (0..24 * 28)
            .map(|hour| {
                let weekend = weekday(MONDAY + hour as i64 * HOUR_MS) >= 5;
                Timed {
                    at_ms: MONDAY + hour as i64 * HOUR_MS,
                    value: if weekend { 100.0 } else { 1000.0 } * noise(hour),
                }
            })
            .collect();
        let choice = backtest().choose_for_values(&past);
        assert_eq!(choice.model.cycle, Cycle::WeekdayWeekend, "{choice:?}");
    }

    #[test]
    fn weekday_only_loads_make_the_weekend_quiet_in_activity_time() {
        // Hourly loads from 08:00 to 18:00 on weekdays, four weeks.
        let commits: Vec<i64> = (0..24 * 28)
            .map(|hour| MONDAY + hour as i64 * HOUR_MS + 5 * 60_000)
            .filter(|at| weekday(*at) < 5 && (8..=18).contains(&(at.rem_euclid(DAY_MS) / HOUR_MS)))
            .collect();
        let (choice, activity) = backtest().choose_for_gaps(&commits);
        assert_ne!(choice.model.cycle, Cycle::None, "{choice:?}");
        let friday_evening = MONDAY + 4 * DAY_MS + 18 * HOUR_MS;
        let sunday_noon = MONDAY + 6 * DAY_MS + 12 * HOUR_MS;
        let tuesday = MONDAY + DAY_MS;
        let usual = activity.between(tuesday + 10 * HOUR_MS, tuesday + 11 * HOUR_MS);
        let weekend = activity.between(friday_evening, sunday_noon);
        assert!(weekend < 3.0 * usual, "the weekend {weekend} s vs a usual hour {usual} s");
        let stopped = activity.between(tuesday + 9 * HOUR_MS, tuesday + 15 * HOUR_MS);
        assert!(stopped > 4.0 * usual, "six working hours without a load {stopped} s vs {usual} s");
    }

    #[test]
    fn the_reference_projects_along_the_trend_and_falls_back_when_few_are_alike() {
        let past: Vec<Timed> = (0..10)
            .map(|day| Timed { at_ms: MONDAY + day * DAY_MS, value: 100.0 * (0.1 * day as f64).exp() })
            .collect();
        let choice = Choice { model: Model { cycle: Cycle::None, trend: true }, growth_per_day: 0.1, automatic: true };
        let at = MONDAY + 10 * DAY_MS;
        let reference = reference(&past, at, &choice, 14 * DAY_MS, 50, 5);
        for value in reference.values {
            assert!((value - 100.0 * 1.0f64.exp()).abs() < 1e-6);
        }
        let weekly = Choice::fixed(Cycle::HourOfWeek);
        let reference = super::reference(&past, at, &weekly, 14 * DAY_MS, 50, 5);
        assert_eq!(reference.values.len(), 10);
        assert!(reference.note.contains("too few"), "{}", reference.note);
    }

    #[test]
    fn clock_after_inverts_activity_time() {
        let commits: Vec<i64> =
            (0..24 * 28).map(|hour| MONDAY + hour as i64 * HOUR_MS).filter(|at| weekday(*at) < 5).collect();
        let activity = Activity::estimate(&commits, Cycle::WeekdayWeekend);
        let friday_evening = MONDAY + 4 * DAY_MS + 20 * HOUR_MS;
        let activity_seconds = activity.between(friday_evening, friday_evening + 60 * HOUR_MS);
        let clock = activity.clock_after(friday_evening, activity_seconds);
        assert!((clock - 60.0 * 3600.0).abs() < 1.0, "{clock}");
    }

    #[test]
    fn activity_time_is_clock_time_without_a_cycle_and_long_gaps_are_bounded_work() {
        let uniform = Activity::uniform();
        assert_eq!(uniform.between(0, 3_600_000), 3600.0);
        let commits: Vec<i64> = (0..24 * 28).map(|hour| MONDAY + hour as i64 * HOUR_MS).collect();
        let activity = Activity::estimate(&commits, Cycle::HourOfWeek);
        let year = activity.between(MONDAY, MONDAY + 365 * DAY_MS);
        assert!((year / (365.0 * 86_400.0) - 1.0).abs() < 0.05, "{year}");
    }
}
