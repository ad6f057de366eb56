//! The judging policy, in one place: how a sensor's settings become scoring parameters for a
//! series, which values that series can take (so its band is clamped to them), and how a
//! z-score becomes a severity. The judges and the status page's charts both call these, so the
//! band drawn for a point is the band that point was judged against. It owns [`Status`], the
//! verdict every judge returns. Pure: no IO, no history; it depends on no sensor.

pub mod seasonal;

use serde::Serialize;

use crate::config::{SensorSettings, Statistic};
use crate::stats::{Direction, Score, ScoringParams};

/// A verdict, ordered by severity (`Ok` < `InsufficientHistory` < `Warning` < `Critical` < `Error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    InsufficientHistory,
    Warning,
    Critical,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::InsufficientHistory => "insufficient_history",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Error => "error",
        }
    }

    /// The value of `icewatch_result_severity`.
    pub fn severity(self) -> i64 {
        match self {
            Status::Ok | Status::InsufficientHistory | Status::Error => 0,
            Status::Warning => 1,
            Status::Critical => 2,
        }
    }

    /// Whether a `check --fail-on` level is reached: `error` counts as critical.
    pub fn reaches(self, level: Status) -> bool {
        let rank = |status: Status| match status {
            Status::Ok | Status::InsufficientHistory => 0,
            Status::Warning => 1,
            Status::Critical | Status::Error => 2,
        };
        rank(self) >= rank(level) && rank(self) > 0
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What a scored series measures, as far as judging it differs from other series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Rows added by one append commit (volume).
    RowsAdded,
    /// Seconds between data commits (freshness cadence).
    CommitGap,
    /// One distribution statistic of one column, per profiled batch.
    Distribution(Statistic),
}

/// The smallest standard deviation a series is scored with, whatever its history says: the
/// larger of `absolute`, `relative` · |mean| and `sqrt` · sqrt(|mean|). Each kind of statistic
/// has its own, because each has its own noise (docs/design.md, "Floors"): without them a
/// series that happened to be constant turns the first tiny change into an enormous z-score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Floors {
    pub absolute: f64,
    pub relative: f64,
    pub sqrt: f64,
}

impl Measure {
    /// The floors of this series' scoring standard deviation.
    pub fn floors(self) -> Floors {
        let floors = |absolute: f64, relative: f64, sqrt: f64| Floors { absolute, relative, sqrt };
        match self {
            // Counts: at least Poisson noise (a 5-row table varies by ±2 rows), and 1 %.
            Measure::RowsAdded => floors(1e-9, 0.01, 1.0),
            // Gaps: a quarter of the usual gap. Loads jitter by minutes and a pause's edges
            // add a little activity time, so a gap is unusual only from about 1.75 times the
            // usual one (at z = 3), not 1.03 times.
            Measure::CommitGap => floors(1.0, 0.25, 0.0),
            Measure::Distribution(statistic) => match statistic {
                Statistic::RowCount | Statistic::NullCount => floors(1e-9, 0.01, 1.0),
                // A low-cardinality column's distinct count is exact, not noisy: a fourth
                // category where there were always three is news.
                Statistic::DistinctCount => floors(1e-9, 0.01, 0.0),
                // Percentages: a tenth of a percentage point (one null in a thousand rows).
                Statistic::NullPercent | Statistic::ZeroPercent | Statistic::NanPercent | Statistic::EmptyPercent => {
                    floors(0.1, 0.01, 0.0)
                }
                // Means of large batches are far steadier than 1 % of their level (the mean of
                // 2 000 draws of N(50, 10) varies by 0.45 %): a tenth of a percent.
                Statistic::Mean | Statistic::Sum | Statistic::MeanLength => floors(1e-9, 0.001, 0.0),
                // Central quantiles and spreads move with the sample a little more.
                Statistic::P25 | Statistic::P50 | Statistic::P75 | Statistic::Stddev => floors(1e-9, 0.005, 0.0),
                // Extremes depend on the batch's size and often sit at a bound (a price's min
                // is 0.01 in every large batch): 2 %, so a small batch's higher min is not a
                // 20-sigma event while a unit change (×100) or a new negative is.
                Statistic::Min
                | Statistic::Max
                | Statistic::P01
                | Statistic::P05
                | Statistic::P95
                | Statistic::P99
                | Statistic::MinLength
                | Statistic::MaxLength => floors(1e-9, 0.02, 0.0),
            },
        }
    }

    /// The values this series can take.
    pub fn domain(self) -> Domain {
        match self {
            Measure::RowsAdded | Measure::CommitGap => Domain::NonNegative,
            Measure::Distribution(statistic) => match statistic {
                Statistic::NullPercent | Statistic::ZeroPercent | Statistic::NanPercent | Statistic::EmptyPercent => {
                    Domain::Percent
                }
                Statistic::RowCount
                | Statistic::NullCount
                | Statistic::DistinctCount
                | Statistic::Stddev
                | Statistic::MinLength
                | Statistic::MaxLength
                | Statistic::MeanLength => Domain::NonNegative,
                Statistic::Mean
                | Statistic::Min
                | Statistic::Max
                | Statistic::Sum
                | Statistic::P01
                | Statistic::P05
                | Statistic::P25
                | Statistic::P50
                | Statistic::P75
                | Statistic::P95
                | Statistic::P99 => Domain::Any,
            },
        }
    }
}

/// The scoring parameters of `measure` under a sensor's `settings`, watching `direction`.
pub fn scoring_params(settings: &SensorSettings, direction: Direction, measure: Measure) -> ScoringParams {
    let floors = measure.floors();
    ScoringParams {
        min_history: settings.min_history,
        zscore_threshold: settings.zscore_threshold,
        direction,
        min_stddev_absolute: floors.absolute,
        min_stddev_relative: floors.relative,
        min_stddev_sqrt: floors.sqrt,
        rebaseline_after: settings.rebaseline_after,
    }
}

/// The values a statistic can take; its expected band never leaves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    Any,
    /// Counts, sizes, durations, lengths, spreads: never below 0.
    NonNegative,
    /// A percentage: from 0 to 100.
    Percent,
}

impl Domain {
    /// `(lower, upper)` clamped to the domain. Negative zero becomes 0, so a band of a
    /// constant-zero series reads "0 to 0", not "-0.000 to 0.000".
    pub fn clamp(self, lower: f64, upper: f64) -> (f64, f64) {
        let (low, high) = match self {
            Domain::Any => (f64::NEG_INFINITY, f64::INFINITY),
            Domain::NonNegative => (0.0, f64::INFINITY),
            Domain::Percent => (0.0, 100.0),
        };
        let clamp = |value: f64| {
            let value = value.clamp(low, high);
            if value == 0.0 { 0.0 } else { value }
        };
        (clamp(lower), clamp(upper))
    }
}

/// The expected band of `score`, clamped to `measure`'s domain.
pub fn band(score: &Score, measure: Measure) -> (f64, f64) {
    measure.domain().clamp(score.expected_lower, score.expected_upper)
}

/// Scores a count that grows and shrinks by factors (rows per commit) on a log scale:
/// `ln(1 + x)` of the value against `ln(1 + x)` of the window, so a batch twice the usual size
/// and one half of it are equally far, and heavy-tailed batch sizes (a lognormal spread) do not
/// turn every large batch into a spike. The floors of `params` are read in counts (1 % and
/// Poisson noise of the window's mean) and carried over to the log scale. The returned score is
/// in counts again: `mean` the window's arithmetic mean, the band `e^(log band) − 1`, `stddev`
/// half the band over the threshold; `zscore` is the log-scale one.
pub fn score_counts(value: f64, window: &[f64], params: &ScoringParams) -> Option<Score> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let linear_mean = crate::stats::mean(window)?.max(0.0);
    let linear_floor = params
        .min_stddev_absolute
        .max(params.min_stddev_relative * linear_mean)
        .max(params.min_stddev_sqrt * linear_mean.sqrt());
    let log_floor = (linear_floor / (1.0 + linear_mean)).ln_1p().max(1e-9);
    let log_window: Vec<f64> = window.iter().filter(|value| **value >= 0.0).map(|value| value.ln_1p()).collect();
    let log_params =
        ScoringParams { min_stddev_absolute: log_floor, min_stddev_relative: 0.0, min_stddev_sqrt: 0.0, ..*params };
    let log_score = crate::stats::score(value.ln_1p(), &log_window, &log_params)?;
    let expected_lower = log_score.expected_lower.exp_m1();
    let expected_upper = log_score.expected_upper.exp_m1();
    let stddev = (expected_upper - expected_lower) / (2.0 * params.zscore_threshold.max(f64::MIN_POSITIVE));
    [expected_lower, expected_upper, stddev].iter().all(|number| number.is_finite()).then_some(Score {
        mean: linear_mean,
        stddev,
        expected_lower,
        expected_upper,
        ..log_score
    })
}

/// What a message adds when `score` was judged against a new level that began with the point
/// `since` names (a snapshot, a time): the shift alerted while it was new, and is the norm now.
pub fn new_level_note(score: &Score, window_len: usize, since: impl FnOnce(usize) -> String) -> String {
    match score.rebased_from {
        Some(start) => {
            format!("; a new level since {}, accepted after {} points", since(start), window_len.saturating_sub(start))
        }
        None => String::new(),
    }
}

/// Severity of a z-score judgement: `insufficient_history` without a score, `critical` for an
/// anomaly at twice the threshold or more, `warning` for one below that, else `ok`.
pub fn zscore_verdict(score: Option<&Score>, zscore_threshold: f64) -> Status {
    match score {
        None => Status::InsufficientHistory,
        Some(score) if score.is_anomaly && score.zscore.abs() >= 2.0 * zscore_threshold => Status::Critical,
        Some(score) if score.is_anomaly => Status::Warning,
        Some(_) => Status::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::score;

    #[test]
    fn percentages_and_counts_keep_their_band_inside_their_domain() {
        let null_percent = Measure::Distribution(Statistic::NullPercent);
        assert_eq!(null_percent.domain().clamp(-1.64, 5.85), (0.0, 5.85));
        assert_eq!(null_percent.domain().clamp(97.0, 104.0), (97.0, 100.0));
        assert_eq!(Measure::RowsAdded.domain().clamp(-20.0, 300.0), (0.0, 300.0));
        assert_eq!(Measure::Distribution(Statistic::Mean).domain().clamp(-20.0, 3.0), (-20.0, 3.0));
        let (lower, upper) = Domain::NonNegative.clamp(-0.0, 0.0);
        assert!(lower.is_sign_positive() && upper.is_sign_positive());
    }

    #[test]
    fn band_of_a_near_zero_percentage_starts_at_zero() {
        let history = [0.0, 2.0, 0.0, 1.0, 3.0, 0.0, 2.0];
        let params = ScoringParams::default();
        let scored = score(1.0, &history, &params).unwrap();
        assert!(scored.expected_lower < 0.0, "the raw band dips below 0: {scored:?}");
        let (lower, upper) = band(&scored, Measure::Distribution(Statistic::NullPercent));
        assert_eq!(lower, 0.0);
        assert_eq!(upper, scored.expected_upper);
    }

    #[test]
    fn each_kind_of_statistic_has_the_floor_of_its_noise() {
        let floor = |measure: Measure, history: &[f64]| {
            let params = ScoringParams {
                min_stddev_absolute: measure.floors().absolute,
                min_stddev_relative: measure.floors().relative,
                min_stddev_sqrt: measure.floors().sqrt,
                ..ScoringParams::default()
            };
            crate::stats::baseline(history, &params).unwrap().stddev
        };
        let constant = [1.0; 10];
        // A min pinned at a bound: 2 % of it, so 1.02 is no alarm.
        assert!((floor(Measure::Distribution(Statistic::Min), &constant) - 0.02).abs() < 1e-12);
        // A mean: a tenth of a percent.
        assert!((floor(Measure::Distribution(Statistic::Mean), &[100.0; 10]) - 0.1).abs() < 1e-12);
        // A null percentage pinned at 0: a tenth of a point.
        assert!((floor(Measure::Distribution(Statistic::NullPercent), &[0.0; 10]) - 0.1).abs() < 1e-12);
        // Five rows per commit: Poisson noise, sqrt(5).
        assert!((floor(Measure::RowsAdded, &[5.0; 10]) - 5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn verdict_is_critical_at_twice_the_threshold() {
        let params = ScoringParams::default();
        let history = [10.0, 11.0, 9.0, 10.0, 10.5, 9.5];
        assert_eq!(zscore_verdict(None, 3.0), Status::InsufficientHistory);
        assert_eq!(zscore_verdict(score(10.2, &history, &params).as_ref(), 3.0), Status::Ok);
        // Mean 10, σ 0.71, widened 1.96× for six points: a warning from about 14.1 to 18.3.
        let warning = score(15.5, &history, &params).unwrap();
        assert!(warning.zscore > 3.0 && warning.zscore < 6.0, "{warning:?}");
        assert_eq!(zscore_verdict(Some(&warning), 3.0), Status::Warning);
        assert_eq!(zscore_verdict(score(30.0, &history, &params).as_ref(), 3.0), Status::Critical);
    }
}
