//! Pure statistics: rolling baselines, z-scores with a floored standard deviation, deviation
//! from a rolling mean, quantiles, and drift tests (KS, PSI, chi-square). No IO, no async, no
//! clocks: every function is a deterministic map from numbers to numbers, and never returns NaN
//! or infinity (when a number cannot be produced, the answer is `None`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Which side of the baseline counts as an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only values above the band (z >= threshold).
    Spike,
    /// Only values below the band (z <= -threshold).
    Drop,
    /// Either side (|z| >= threshold).
    Both,
}

/// How a value is scored against its history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoringParams {
    /// Fewer finite history points than this gives no score at all.
    pub min_history: usize,
    /// |z| at or beyond this is an anomaly (on the side(s) `direction` selects).
    pub zscore_threshold: f64,
    pub direction: Direction,
    /// The standard deviation used for scoring is never below this.
    pub min_stddev_absolute: f64,
    /// ... nor below this fraction of |mean|, so a near-constant series (row counts that are
    /// exactly 1 000 000 every day, plus or minus a handful) does not turn noise into huge z-scores.
    pub min_stddev_relative: f64,
    /// ... nor below `min_stddev_sqrt` · sqrt(|mean|): the Poisson noise of a count (rows per
    /// commit, nulls per batch); 0 for statistics that are not counts.
    pub min_stddev_sqrt: f64,
    /// When the newest this-many points (or more) of the window all lie beyond the band of the
    /// points before them, on one side, they are a new level and the baseline is theirs alone
    /// (see [`score`]); 0 never re-baselines.
    pub rebaseline_after: usize,
}

impl Default for ScoringParams {
    fn default() -> Self {
        ScoringParams {
            min_history: 5,
            zscore_threshold: 3.0,
            direction: Direction::Both,
            min_stddev_absolute: 1e-9,
            min_stddev_relative: 0.01,
            min_stddev_sqrt: 0.0,
            rebaseline_after: 0,
        }
    }
}

/// Mean and floored sample standard deviation of a history window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    /// Finite points the baseline was computed from.
    pub count: usize,
    pub mean: f64,
    /// Sample standard deviation, already raised to the floors of [`ScoringParams`].
    pub stddev: f64,
}

/// Past points further than this from the window's median, in robust z (Iglewicz and
/// Hoaglin's modified z-score, 0.6745·|x − median| / MAD), are left out of the baseline.
pub const OUTLIER_MODIFIED_Z: f64 = 3.5;
/// ... but only while they are rare: when more than this share of the window lies beyond the
/// cut on one side, those points are a regular part of the series (a peak-hour load, one of a
/// table's several levels), not outliers, and they stay.
pub const MAX_OUTLIER_SHARE: f64 = 0.1;

/// The baseline of `window`, ignoring non-finite points; `None` with fewer than
/// `params.min_history` finite points (or at least one, whatever `min_history` says).
///
/// Past outliers (see [`OUTLIER_MODIFIED_Z`]) are left out, so an anomaly last week does not
/// widen this week's band and hide the next one; when that would leave fewer than
/// `min_history` points, or the spread around the median is zero, every point counts.
pub fn baseline(window: &[f64], params: &ScoringParams) -> Option<Baseline> {
    let finite: Vec<f64> = window.iter().copied().filter(|value| value.is_finite()).collect();
    if finite.is_empty() || finite.len() < params.min_history {
        return None;
    }
    let kept = without_outliers(&finite, params.min_history.max(1));
    let (count, mean, m2) = welford(kept.iter().copied());
    let raw_stddev = if count >= 2 { (m2 / (count - 1) as f64).sqrt() } else { 0.0 };
    let floor = params
        .min_stddev_absolute
        .max(params.min_stddev_relative * mean.abs())
        .max(params.min_stddev_sqrt * mean.abs().sqrt())
        .max(0.0);
    let stddev = raw_stddev.max(floor);
    let usable = mean.is_finite() && stddev.is_finite() && stddev > 0.0;
    usable.then_some(Baseline { count, mean, stddev })
}

/// `values` without the points whose modified z-score exceeds [`OUTLIER_MODIFIED_Z`], one side
/// at a time and only where that side's such points are at most [`MAX_OUTLIER_SHARE`] of the
/// window; all of them when the median absolute deviation is 0 or fewer than `keep_at_least`
/// would remain.
///
/// Without the share, a table that loads at four levels a day lost its whole peak-hour mode:
/// the three dense modes set the median and a small MAD, so every peak point looked like an
/// outlier, the mean fell to that of the other modes, and the next normal peak alarmed.
fn without_outliers(values: &[f64], keep_at_least: usize) -> Vec<f64> {
    let median_of = |sorted: &[f64]| -> f64 {
        let middle = sorted.len() / 2;
        if sorted.len().is_multiple_of(2) { (sorted[middle - 1] + sorted[middle]) / 2.0 } else { sorted[middle] }
    };
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = median_of(&sorted);
    let mut deviations: Vec<f64> = values.iter().map(|value| (value - median).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    let mad = median_of(&deviations);
    if !(mad > 0.0 && mad.is_finite()) {
        return values.to_vec();
    }
    let beyond = |value: f64| 0.6745 * (value - median).abs() / mad > OUTLIER_MODIFIED_Z;
    let rare = |count: usize| count as f64 <= MAX_OUTLIER_SHARE * values.len() as f64;
    let above_are_rare = rare(values.iter().filter(|value| **value > median && beyond(**value)).count());
    let below_are_rare = rare(values.iter().filter(|value| **value < median && beyond(**value)).count());
    let kept: Vec<f64> = values
        .iter()
        .copied()
        .filter(|value| !beyond(*value) || (*value > median && !above_are_rare) || (*value < median && !below_are_rare))
        .collect();
    if kept.len() >= keep_at_least { kept } else { values.to_vec() }
}

/// How one value compares with its history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub zscore: f64,
    pub mean: f64,
    /// The floored standard deviation the z-score was divided by.
    pub stddev: f64,
    /// `mean - threshold * stddev`: the lowest value that is not a drop.
    pub expected_lower: f64,
    /// `mean + threshold * stddev`: the highest value that is not a spike.
    pub expected_upper: f64,
    pub is_anomaly: bool,
    /// Where in the window the accepted new level begins, when the baseline was re-based onto
    /// it (see [`ScoringParams::rebaseline_after`]).
    pub rebased_from: Option<usize>,
}

/// Scores `value` against `window`.
///
/// `window` must NOT contain `value` itself: the caller scores first and appends to history
/// afterwards, otherwise a spike pulls its own baseline towards itself and hides.
///
/// `None` when `value` is not finite, the window is too short (see [`baseline`]), or a field
/// would not be a finite number (values near `f64::MAX`).
pub fn score(value: f64, window: &[f64], params: &ScoringParams) -> Option<Score> {
    if !value.is_finite() {
        return None;
    }
    let Some(start) = new_level_start(window, params) else { return score_against(value, window, params) };
    let new_level = score_against(value, &window[start..], &ScoringParams { min_history: 1, ..*params })?;
    // A return to the level before the shift is the norm coming back, not a new anomaly.
    match score_against(value, &window[..start], params) {
        Some(before) if new_level.is_anomaly && !before.is_anomaly => Some(before),
        _ => Some(Score { rebased_from: Some(start), ..new_level }),
    }
}

/// `value` against the baseline of `window`, with the band of a prediction (see
/// [`prediction_widening`]).
fn score_against(value: f64, window: &[f64], params: &ScoringParams) -> Option<Score> {
    let Baseline { count, mean, stddev } = baseline(window, params)?;
    let stddev = stddev * prediction_widening(count, params.zscore_threshold);
    let zscore = (value - mean) / stddev;
    let half_band = params.zscore_threshold * stddev;
    let expected_lower = mean - half_band;
    let expected_upper = mean + half_band;
    if ![zscore, expected_lower, expected_upper].iter().all(|number| number.is_finite()) {
        return None;
    }
    let threshold = params.zscore_threshold;
    let is_anomaly = match params.direction {
        Direction::Spike => zscore >= threshold,
        Direction::Drop => zscore <= -threshold,
        Direction::Both => zscore.abs() >= threshold,
    };
    Some(Score { zscore, mean, stddev, expected_lower, expected_upper, is_anomaly, rebased_from: None })
}

/// How much wider than `threshold` standard deviations the band of a new value must be when
/// mean and spread come from only `count` points: a new value varies around an estimated mean
/// by σ·√(1 + 1/n), and σ itself is estimated, so the threshold's coverage needs Student's t
/// with n − 1 degrees of freedom instead of the normal quantile. 1.7 for 6 points at z = 3,
/// 1.2 for 20, 1.06 for 50: without it a short window raised several times the false alarms
/// its threshold promises (a table with 14 past commits of 1 to 8 rows alarmed on a 1).
/// The t quantile is the Cornish–Fisher expansion (within 2 % of the exact one from 4
/// degrees of freedom, exact in the limit).
fn prediction_widening(count: usize, threshold: f64) -> f64 {
    if count < 2 {
        return 1.0;
    }
    let degrees = (count - 1) as f64;
    let z = threshold;
    let t = z
        + (z.powi(3) + z) / (4.0 * degrees)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * degrees.powi(2))
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * degrees.powi(3));
    let widening = (1.0 + 1.0 / count as f64).sqrt() * t / z;
    if widening.is_finite() && widening >= 1.0 { widening } else { 1.0 }
}

/// The start of a new level at the end of `window`: the earliest index `s` such that at least
/// `rebaseline_after` points follow it, all beyond the band (`zscore_threshold`) of the
/// baseline of `window[..s]`, on the same side. `None` when there is no such level (or
/// re-baselining is off), so a shift alerts for its first `rebaseline_after` points and then
/// becomes the norm, while a lone past outlier is still left out by the baseline itself.
fn new_level_start(window: &[f64], params: &ScoringParams) -> Option<usize> {
    let needed = params.rebaseline_after;
    if needed == 0 || window.len() < needed + params.min_history.max(1) {
        return None;
    }
    let plain = ScoringParams { rebaseline_after: 0, ..*params };
    let beyond = |start: usize| -> bool {
        let Some(Baseline { mean, stddev, .. }) = baseline(&window[..start], &plain) else { return false };
        let cut = params.zscore_threshold * stddev;
        let tail = &window[start..];
        tail.iter().all(|value| *value - mean >= cut) || tail.iter().all(|value| mean - *value >= cut)
    };
    let newest_start = window.len() - needed;
    if !beyond(newest_start) {
        return None;
    }
    // Extend the level backwards while it still stands apart from what came before it.
    let mut start = newest_start;
    while start > params.min_history.max(1) && beyond(start - 1) {
        start -= 1;
    }
    Some(start)
}

/// `100 * (value - mean) / |mean|` against the mean of `reference` (non-finite points ignored);
/// `None` when there is no finite reference point, the mean is 0, or the result is not finite.
pub fn deviation_percent(value: f64, reference: &[f64]) -> Option<f64> {
    if !value.is_finite() {
        return None;
    }
    let reference_mean = mean(reference)?;
    if reference_mean == 0.0 {
        return None;
    }
    let percent = 100.0 * (value - reference_mean) / reference_mean.abs();
    percent.is_finite().then_some(percent)
}

/// Arithmetic mean of the finite values; `None` when there are none.
pub fn mean(values: &[f64]) -> Option<f64> {
    let (count, mean, _) = welford(values.iter().copied().filter(|value| value.is_finite()));
    (count > 0 && mean.is_finite()).then_some(mean)
}

/// Sample (n - 1) standard deviation of the finite values, computed with Welford's update so a
/// series of large, nearly equal numbers does not cancel catastrophically; `None` with fewer
/// than two finite values. (The tests' reference for the scores' spread.)
#[cfg(test)]
pub fn sample_stddev(values: &[f64]) -> Option<f64> {
    let (count, _, m2) = welford(values.iter().copied().filter(|value| value.is_finite()));
    if count < 2 {
        return None;
    }
    let stddev = (m2 / (count - 1) as f64).sqrt();
    stddev.is_finite().then_some(stddev)
}

/// (count, mean, sum of squared deviations) in one pass.
fn welford(values: impl Iterator<Item = f64>) -> (usize, f64, f64) {
    let mut count = 0usize;
    let mut mean = 0.0f64;
    let mut m2 = 0.0f64;
    for value in values {
        count += 1;
        let delta = value - mean;
        mean += delta / count as f64;
        m2 += delta * (value - mean);
    }
    (count, mean, m2)
}

fn finite_sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|value| value.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Result of a two-sample Kolmogorov-Smirnov test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KsResult {
    /// D = sup |F_a(x) - F_b(x)|, exact.
    pub statistic: f64,
    /// Asymptotic p-value (small for different distributions).
    pub p_value: f64,
}

/// Benjamini–Hochberg adjusted p-values ("q-values"), in the order given: a test whose q is
/// below α rejects while the expected share of false discoveries among the rejections stays
/// at most α, however many tests one check runs. `q_(i) = min over j ≥ i of m·p_(j)/j`,
/// capped at 1, for the p-values sorted ascending.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![1.0; m];
    let mut running_min: f64 = 1.0;
    for (rank, &index) in order.iter().enumerate().rev() {
        let q = (p_values[index] * m as f64 / (rank + 1) as f64).min(1.0);
        running_min = running_min.min(q);
        adjusted[index] = running_min;
    }
    adjusted
}

/// Two-sample Kolmogorov-Smirnov test; non-finite values are ignored, `None` when either side
/// has no finite value.
///
/// D is exact (ties are stepped over together). The p-value uses the asymptotic Kolmogorov
/// distribution with the effective sample size `n_e = n_a n_b / (n_a + n_b)` and the
/// small-sample correction of Numerical Recipes (`kstwo`):
/// `p = Q_KS((sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) * D)`, clamped to [0, 1].
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> Option<KsResult> {
    let a = finite_sorted(a);
    let b = finite_sorted(b);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (n_a, n_b) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut statistic = 0.0f64;
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        statistic = statistic.max((i as f64 / n_a - j as f64 / n_b).abs());
    }
    let effective = (n_a * n_b / (n_a + n_b)).sqrt();
    let p_value = kolmogorov_q((effective + 0.12 + 0.11 / effective) * statistic).clamp(0.0, 1.0);
    Some(KsResult { statistic, p_value })
}

/// Q_KS(λ) = 2 Σ_{j>=1} (-1)^(j-1) exp(-2 j² λ²), the Kolmogorov survival function
/// (Numerical Recipes' `probks`): 1 when the series does not converge (λ near 0).
fn kolmogorov_q(lambda: f64) -> f64 {
    let a2 = -2.0 * lambda * lambda;
    let mut sign = 2.0f64;
    let mut sum = 0.0f64;
    let mut previous_term = 0.0f64;
    for j in 1..=100 {
        let j = f64::from(j);
        let term = sign * (a2 * j * j).exp();
        sum += term;
        if term.abs() <= 0.001 * previous_term || term.abs() <= 1e-8 * sum {
            return sum;
        }
        sign = -sign;
        previous_term = term.abs();
    }
    1.0
}

/// Proportions below this count as this, so an empty bin contributes a large but finite term.
const PSI_EPSILON: f64 = 1e-4;

/// Population Stability Index of `actual` against `expected`, with `bins` bins cut at the
/// quantiles of `expected` (linear interpolation; repeated cut points are merged, so a column
/// with few distinct values gets fewer bins). Empty bins count as [`PSI_EPSILON`]. Non-finite
/// values are ignored; `None` when `bins` is 0, either side has no finite value, or a cut point
/// is not finite (a reference spanning more than `f64::MAX`).
///
/// Rule of thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 significant shift.
pub fn psi(expected: &[f64], actual: &[f64], bins: usize) -> Option<f64> {
    let expected = finite_sorted(expected);
    let actual = finite_sorted(actual);
    if bins == 0 || expected.is_empty() || actual.is_empty() {
        return None;
    }
    let mut cuts: Vec<f64> =
        (1..bins).map(|bin| quantile_sorted(&expected, bin as f64 / bins as f64)).collect::<Option<_>>()?;
    cuts.dedup();
    let histogram = |sorted: &[f64]| {
        let mut counts = vec![0u64; cuts.len() + 1];
        for value in sorted {
            counts[cuts.partition_point(|cut| cut < value)] += 1;
        }
        counts
    };
    let expected_counts = histogram(&expected);
    let actual_counts = histogram(&actual);
    let value = psi_from_counts(&expected_counts, &actual_counts)?;
    value.is_finite().then_some(value)
}

/// PSI over categories (the union of both sides; repeated names are summed). `None` when either
/// side has no observations.
pub fn psi_categorical(expected: &[(String, u64)], actual: &[(String, u64)]) -> Option<f64> {
    let (expected_counts, actual_counts) = aligned_counts(expected, actual);
    psi_from_counts(&expected_counts, &actual_counts)
}

fn psi_from_counts(expected: &[u64], actual: &[u64]) -> Option<f64> {
    let expected_total: u64 = expected.iter().sum();
    let actual_total: u64 = actual.iter().sum();
    if expected_total == 0 || actual_total == 0 {
        return None;
    }
    let value = expected
        .iter()
        .zip(actual)
        .map(|(&expected_count, &actual_count)| {
            let e = (expected_count as f64 / expected_total as f64).max(PSI_EPSILON);
            let a = (actual_count as f64 / actual_total as f64).max(PSI_EPSILON);
            (a - e) * (a / e).ln()
        })
        .sum::<f64>();
    value.is_finite().then_some(value)
}

/// The `q` quantile of `sorted` (ascending) by linear interpolation between the closest ranks:
/// R's type 7, numpy's default, DuckDB's `quantile_cont`. `None` when `sorted` is empty, `q`
/// is outside `[0, 1]` (or NaN), or the interpolation is not finite.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let position = q * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    let fraction = position - lower as f64;
    let value = sorted[lower] + (sorted[upper] - sorted[lower]) * fraction;
    value.is_finite().then_some(value)
}

/// Counts of both sides over the union of their categories, in name order.
fn aligned_counts(expected: &[(String, u64)], actual: &[(String, u64)]) -> (Vec<u64>, Vec<u64>) {
    let mut table: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (category, count) in expected {
        let entry = table.entry(category.as_str()).or_default();
        entry.0 = entry.0.saturating_add(*count);
    }
    for (category, count) in actual {
        let entry = table.entry(category.as_str()).or_default();
        entry.1 = entry.1.saturating_add(*count);
    }
    table.values().map(|&(e, a)| (e, a)).unzip()
}

/// Result of a chi-square test of homogeneity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChiSquareResult {
    pub statistic: f64,
    pub degrees_of_freedom: f64,
    pub p_value: f64,
}

/// Chi-square test that two samples of a categorical column come from the same distribution:
/// a 2 x k contingency table over the union of categories (categories absent from both sides
/// are dropped), `k - 1` degrees of freedom, no continuity correction. `None` when either
/// sample is empty or fewer than two categories occur.
pub fn chi_square(expected_counts: &[(String, u64)], actual_counts: &[(String, u64)]) -> Option<ChiSquareResult> {
    let (expected, actual) = aligned_counts(expected_counts, actual_counts);
    let columns: Vec<(f64, f64)> =
        expected.iter().zip(&actual).filter(|&(&e, &a)| e > 0 || a > 0).map(|(&e, &a)| (e as f64, a as f64)).collect();
    let expected_total: f64 = columns.iter().map(|column| column.0).sum();
    let actual_total: f64 = columns.iter().map(|column| column.1).sum();
    if columns.len() < 2 || expected_total == 0.0 || actual_total == 0.0 {
        return None;
    }
    let grand_total = expected_total + actual_total;
    let statistic: f64 = columns
        .iter()
        .map(|&(e, a)| {
            let column_total = e + a;
            let e_hat = expected_total * column_total / grand_total;
            let a_hat = actual_total * column_total / grand_total;
            (e - e_hat).powi(2) / e_hat + (a - a_hat).powi(2) / a_hat
        })
        .sum();
    let degrees_of_freedom = (columns.len() - 1) as f64;
    let distribution = ChiSquared::new(degrees_of_freedom).ok()?;
    let p_value = distribution.sf(statistic).clamp(0.0, 1.0);
    (statistic.is_finite() && p_value.is_finite()).then_some(ChiSquareResult { statistic, degrees_of_freedom, p_value })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_level_shift_alerts_until_it_has_lasted_rebaseline_after_points() {
        let params = ScoringParams { rebaseline_after: 5, ..ScoringParams::default() };
        let old: Vec<f64> = (0..40).map(|index| 100.0 + (index % 5) as f64 - 2.0).collect();
        let mut window = old.clone();
        window.extend([150.0, 151.0, 149.0]);
        let early = score(150.0, &window, &params).unwrap();
        assert!(early.is_anomaly && early.rebased_from.is_none(), "{early:?}");
        window.extend([150.5, 149.5]);
        let accepted = score(150.0, &window, &params).unwrap();
        assert!(!accepted.is_anomaly, "{accepted:?}");
        assert_eq!(accepted.rebased_from, Some(40));
        // A return to the old level is the norm coming back, not a new anomaly.
        let back = score(100.0, &window, &params).unwrap();
        assert!(!back.is_anomaly && back.rebased_from.is_none(), "{back:?}");
        // Anything else away from the new level is.
        assert!(score(125.0, &window, &params).unwrap().is_anomaly);
        assert!(accepted.stddev < 5.0, "the band is the new level's own: {accepted:?}");
        // Off: once the new points are more than a tenth of the window they count, and the band
        // spans both levels, so neither the new level nor a return to the old one stands out.
        let off = score(150.0, &window, &ScoringParams::default()).unwrap();
        assert!(!off.is_anomaly && off.rebased_from.is_none() && off.stddev > 10.0, "{off:?}");
        assert!(!score(100.0, &window, &ScoringParams::default()).unwrap().is_anomaly);
    }

    #[test]
    fn short_windows_widen_the_band_to_a_prediction_interval() {
        let widening = |count| prediction_widening(count, 3.0);
        assert_eq!(widening(1), 1.0);
        assert!(widening(6) > widening(20) && widening(20) > widening(50) && widening(50) > widening(1000));
        assert!((1.15..1.3).contains(&widening(20)), "{}", widening(20));
        assert!((1.0..1.1).contains(&widening(50)), "{}", widening(50));
        assert!((widening(100_000) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn a_past_one_off_outlier_is_not_a_new_level() {
        let params = ScoringParams { rebaseline_after: 5, ..ScoringParams::default() };
        let mut window: Vec<f64> = (0..40).map(|index| 100.0 + (index % 5) as f64 - 2.0).collect();
        window.insert(30, 400.0);
        let scored = score(101.0, &window, &params).unwrap();
        assert!(!scored.is_anomaly && scored.rebased_from.is_none(), "{scored:?}");
        assert!(score(400.0, &window, &params).unwrap().is_anomaly);
    }

    #[test]
    fn a_past_outlier_does_not_hide_the_next_one() {
        let params = ScoringParams::default();
        let mut window = vec![100.0, 104.0, 97.0, 101.0, 99.0, 103.0, 98.0, 102.0, 100.0, 101.0];
        window.push(300.0); // last week's spike
        window.push(30.0); // and a drop
        let drop = score(35.0, &window, &params).unwrap();
        assert!(drop.is_anomaly && drop.zscore < -10.0, "{drop:?}");
        let usual = score(102.0, &window, &params).unwrap();
        assert!(!usual.is_anomaly, "{usual:?}");
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_regular_mode_of_the_series_is_not_left_out_as_outliers() {
        // Four loads a day at four levels for a week: 400, 500, 600 and a 1600 peak.
        let window: Vec<f64> =
            (0..28).map(|index| [400.0, 500.0, 600.0, 1600.0][index % 4] + (index % 3) as f64).collect();
        let params = ScoringParams::default();
        let kept = baseline(&window, &params).unwrap();
        let all = mean(&window).unwrap();
        assert!((kept.mean - all).abs() < 1e-9, "the peak mode was dropped: mean {} vs {all}", kept.mean);
        // So the next normal peak is not an anomaly.
        assert!(!score(1602.0, &window, &params).unwrap().is_anomaly);
    }

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance * expected.abs().max(1.0)
    }

    fn owned(counts: &[(&str, u64)]) -> Vec<(String, u64)> {
        counts.iter().map(|(name, count)| (name.to_string(), *count)).collect()
    }

    #[test]
    fn mean_and_stddev_by_hand() {
        // 2 4 4 4 5 5 7 9: mean 5, squared deviations sum 32, sample variance 32/7.
        let values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&values), Some(5.0));
        assert!(close(sample_stddev(&values).unwrap(), (32.0f64 / 7.0).sqrt(), 1e-12));
        assert_eq!(mean(&[]), None);
        assert_eq!(sample_stddev(&[1.0]), None);
        assert_eq!(mean(&[f64::NAN, 3.0, f64::INFINITY]), Some(3.0));
    }

    #[test]
    fn welford_survives_large_offsets() {
        // Naive sum-of-squares loses everything here; the true sample stddev is 1.
        let values: Vec<f64> = [-1.0, 0.0, 1.0].iter().map(|d| 1e9 + d).collect();
        assert!(close(sample_stddev(&values).unwrap(), 1.0, 1e-9));
    }

    #[test]
    fn score_by_hand() {
        // window mean 10, sample stddev sqrt(2.5) = 1.5811, widened for 5 points by
        // sqrt(1.2) · t(4 df) / 3 = 2.35; value 26 -> z = 16 / (1.5811 · 2.35) = 4.3.
        let window = [8.0, 9.0, 10.0, 11.0, 12.0];
        let widening = prediction_widening(5, 3.0);
        assert!((2.2..2.5).contains(&widening), "{widening}");
        let stddev = 2.5f64.sqrt() * widening;
        let score = score(26.0, &window, &ScoringParams::default()).unwrap();
        assert!(close(score.zscore, 16.0 / stddev, 1e-12));
        assert!(close(score.expected_upper, 10.0 + 3.0 * stddev, 1e-12));
        assert!(close(score.expected_lower, 10.0 - 3.0 * stddev, 1e-12));
        assert!(score.is_anomaly);
    }

    #[test]
    fn direction_selects_the_side() {
        let window = [8.0, 9.0, 10.0, 11.0, 12.0];
        let spike = ScoringParams { direction: Direction::Spike, ..ScoringParams::default() };
        let drop = ScoringParams { direction: Direction::Drop, ..ScoringParams::default() };
        assert!(score(30.0, &window, &spike).unwrap().is_anomaly);
        assert!(!score(-10.0, &window, &spike).unwrap().is_anomaly);
        assert!(score(-10.0, &window, &drop).unwrap().is_anomaly);
        assert!(!score(30.0, &window, &drop).unwrap().is_anomaly);
    }

    #[test]
    fn short_history_and_bad_values_give_no_score() {
        let params = ScoringParams::default();
        assert_eq!(score(1.0, &[1.0, 2.0, 3.0, 4.0], &params), None);
        assert_eq!(score(1.0, &[1.0, 2.0, 3.0, 4.0, f64::NAN], &params), None);
        assert_eq!(score(f64::NAN, &[1.0, 2.0, 3.0, 4.0, 5.0], &params), None);
        assert_eq!(score(1.0, &[], &ScoringParams { min_history: 0, ..params }), None);
    }

    #[test]
    fn relative_floor_tames_a_constant_series() {
        // Row count 1 000 000 every day: sample stddev 0, floor 1% of the mean = 10 000.
        let window = [1_000_000.0; 10];
        let params = ScoringParams::default();
        let widening = prediction_widening(10, 3.0);
        let quiet = score(1_000_050.0, &window, &params).unwrap();
        assert!(close(quiet.zscore, 0.005 / widening, 1e-12));
        assert!(!quiet.is_anomaly);
        let halved = score(500_000.0, &window, &params).unwrap();
        assert!(close(halved.zscore, -50.0 / widening, 1e-12));
        assert!(halved.is_anomaly);
    }

    #[test]
    fn deviation_percent_by_hand() {
        assert_eq!(deviation_percent(120.0, &[100.0, 100.0]), Some(20.0));
        assert_eq!(deviation_percent(-150.0, &[-100.0]), Some(-50.0));
        assert_eq!(deviation_percent(1.0, &[-1.0, 1.0]), None);
        assert_eq!(deviation_percent(1.0, &[]), None);
    }

    #[test]
    fn ks_disjoint_samples() {
        // D = 1; n_e = 25/10, sqrt = 1.58114; lambda = 1.58114 + 0.12 + 0.11/1.58114 = 1.77071;
        // Q = 2 (e^{-2 l^2} - e^{-8 l^2} + ...) = 2 * 0.0018934 = 0.0037868 (to 5 digits).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let result = ks_two_sample(&a, &b).unwrap();
        assert_eq!(result.statistic, 1.0);
        let lambda = 2.5f64.sqrt() + 0.12 + 0.11 / 2.5f64.sqrt();
        let expected = 2.0 * ((-2.0 * lambda * lambda).exp() - (-8.0 * lambda * lambda).exp());
        assert!(close(result.p_value, expected, 1e-6), "{result:?} vs {expected}");
        assert!(close(result.p_value, 0.0037868, 1e-3), "{result:?}");
    }

    #[test]
    fn ks_identical_and_tied_samples() {
        let a = [1.0, 2.0, 2.0, 3.0];
        let same = ks_two_sample(&a, &a).unwrap();
        assert_eq!(same.statistic, 0.0);
        assert_eq!(same.p_value, 1.0);
        // a = {1,1,2}, b = {1,2,2}: at x=1, F_a = 2/3, F_b = 1/3 -> D = 1/3 (ties stepped together).
        let tied = ks_two_sample(&[1.0, 1.0, 2.0], &[1.0, 2.0, 2.0]).unwrap();
        assert!(close(tied.statistic, 1.0 / 3.0, 1e-12));
        assert_eq!(ks_two_sample(&[], &[1.0]), None);
        assert_eq!(ks_two_sample(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn ks_shifted_halves() {
        // a = 0..10, b = 5..15 (10 each): D = 0.5 at x = 4. n_e = 5, sqrt = 2.23607,
        // lambda = (2.23607 + 0.12 + 0.04919) * 0.5 = 1.20263; Q = 2(e^{-2.89264} - e^{-11.5706}
        // + ...) = 0.1108403 (independently summed in Python).
        let a: Vec<f64> = (0..10).map(f64::from).collect();
        let b: Vec<f64> = (5..15).map(f64::from).collect();
        let result = ks_two_sample(&a, &b).unwrap();
        assert_eq!(result.statistic, 0.5);
        assert!(close(result.p_value, 0.1108403, 1e-5), "{result:?}");
    }

    #[test]
    fn chi_square_two_by_two() {
        // [[10, 20], [20, 10]]: every expected cell 15, statistic 4 * 25/15 = 6.6667, df 1,
        // p = erfc(sqrt(6.6667 / 2)) = 0.0098233.
        let result = chi_square(&owned(&[("a", 10), ("b", 20)]), &owned(&[("a", 20), ("b", 10)])).unwrap();
        assert!(close(result.statistic, 20.0 / 3.0, 1e-12));
        assert_eq!(result.degrees_of_freedom, 1.0);
        assert!(close(result.p_value, 0.0098233, 1e-5), "{result:?}");
    }

    #[test]
    fn chi_square_union_of_categories() {
        // expected {a:30, b:30}, actual {a:30, c:30}: columns a (60), b (30), c (30) of N = 120;
        // expected cells a 30/30, b 15/15, c 15/15 -> 0 + 0 + 15 + 15 + 15 + 15 = 60, df 2,
        // p = exp(-60/2) = 9.36e-14 (chi-square with 2 df has survival exp(-x/2)).
        let result = chi_square(&owned(&[("a", 30), ("b", 30)]), &owned(&[("a", 30), ("c", 30)])).unwrap();
        assert!(close(result.statistic, 60.0, 1e-12));
        assert_eq!(result.degrees_of_freedom, 2.0);
        assert!((result.p_value - (-30.0f64).exp()).abs() < 1e-15, "{result:?}");
        let same = chi_square(&owned(&[("a", 5), ("b", 5)]), &owned(&[("b", 5), ("a", 5)]));
        assert_eq!(same.map(|r| r.statistic), Some(0.0));
        assert_eq!(chi_square(&owned(&[("a", 5)]), &owned(&[("a", 7)])), None);
        assert_eq!(chi_square(&owned(&[]), &owned(&[("a", 7), ("b", 1)])), None);
    }

    #[test]
    fn psi_by_hand() {
        // expected {a:50, b:50}, actual {a:80, b:20}:
        // (0.8-0.5) ln(1.6) + (0.2-0.5) ln(0.4) = 0.3*0.470004 + 0.3*0.916291 = 0.415888.
        let value = psi_categorical(&owned(&[("a", 50), ("b", 50)]), &owned(&[("a", 80), ("b", 20)]));
        assert!(close(value.unwrap(), 0.415888, 1e-5), "{value:?}");
        // A category only one side has counts as epsilon on the other: finite, large.
        let new_category = psi_categorical(&owned(&[("a", 10)]), &owned(&[("a", 5), ("z", 5)]));
        let new_category = new_category.unwrap();
        assert!(new_category.is_finite() && new_category > 2.0, "{new_category}");
    }

    #[test]
    fn psi_numeric_quantile_bins() {
        // expected 1..=100, 4 bins: cuts at 25.75, 50.5, 75.25 -> 25/25/25/25.
        let expected: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!(psi(&expected, &expected, 4).unwrap().abs() < 1e-12);
        // actual all in the top bin: 3 * (1e-4 - 0.25) ln(1e-4/0.25) + (1 - 0.25) ln(4).
        let actual = vec![90.0; 40];
        let by_hand = 3.0 * (1e-4 - 0.25) * (1e-4f64 / 0.25).ln() + 0.75 * 4.0f64.ln();
        assert!(close(psi(&expected, &actual, 4).unwrap(), by_hand, 1e-12));
        assert_eq!(psi(&expected, &actual, 0), None);
        assert_eq!(psi(&[], &actual, 4), None);
        // Constant expected: every cut merges into one; values above it land in the upper bin.
        let constant = vec![5.0; 10];
        assert!(psi(&constant, &constant, 10).unwrap().abs() < 1e-12);
        assert!(psi(&constant, &[6.0; 10], 10).unwrap() > 1.0);
    }

    #[test]
    fn quantiles_interpolate_linearly() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&sorted, 0.5), Some(2.5));
        assert_eq!(quantile_sorted(&sorted, 0.0), Some(1.0));
        assert_eq!(quantile_sorted(&sorted, 1.0), Some(4.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
        // numpy.quantile([1, 2, 3, 4], 0.1) = 1.3: position 0.3 between the first two values.
        assert!(close(quantile_sorted(&sorted, 0.1).unwrap(), 1.3, 1e-12));
        assert_eq!(quantile_sorted(&[7.0], 0.99), Some(7.0));
        for outside in [-0.01, 1.01, f64::NAN] {
            assert_eq!(quantile_sorted(&sorted, outside), None, "{outside}");
        }
    }

    fn finite() -> impl Strategy<Value = f64> {
        -1e12f64..1e12f64
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => finite(),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::MAX),
            1 => Just(-f64::MAX),
            1 => Just(0.0),
        ]
    }

    fn params() -> impl Strategy<Value = ScoringParams> {
        (
            0usize..8,
            0.5f64..6.0,
            prop_oneof![Just(Direction::Spike), Just(Direction::Drop), Just(Direction::Both)],
            prop_oneof![Just(0.0), Just(1e-9), Just(1.0)],
            prop_oneof![Just(0.0), Just(0.01), Just(0.5)],
        )
            .prop_map(|(min_history, zscore_threshold, direction, absolute, relative)| ScoringParams {
                min_history,
                zscore_threshold,
                direction,
                min_stddev_absolute: absolute,
                min_stddev_relative: relative,
                min_stddev_sqrt: 0.0,
                rebaseline_after: 0,
            })
    }

    proptest! {
        #[test]
        fn every_field_is_finite(
            value in any_f64(),
            window in prop::collection::vec(any_f64(), 0..40),
            params in params(),
        ) {
            if let Some(score) = score(value, &window, &params) {
                for field in [score.zscore, score.mean, score.stddev, score.expected_lower, score.expected_upper] {
                    prop_assert!(field.is_finite(), "{score:?}");
                }
                prop_assert!(score.stddev > 0.0);
            }
            if let Some(deviation) = deviation_percent(value, &window) {
                prop_assert!(deviation.is_finite());
            }
            if let Some(stddev) = sample_stddev(&window) {
                prop_assert!(stddev.is_finite() && stddev >= 0.0);
            }
        }

        #[test]
        fn short_history_gives_none(
            value in finite(),
            window in prop::collection::vec(finite(), 0..5),
        ) {
            prop_assert_eq!(score(value, &window, &ScoringParams::default()), None);
        }

        #[test]
        fn constant_history_with_a_wobble_is_quiet(
            level in prop_oneof![1e-3f64..1e12, -1e12f64..-1e-3],
            wobble in prop::collection::vec(-1e-4f64..1e-4, 5..40),
            step in -1e-4f64..1e-4,
        ) {
            // Wobbles of up to 0.01% of the level stay far inside a 1%-of-mean floor.
            let window: Vec<f64> = wobble.iter().map(|w| level * (1.0 + w)).collect();
            let score = score(level * (1.0 + step), &window, &ScoringParams::default()).unwrap();
            prop_assert!(score.zscore.abs() < 0.05, "{score:?}");
            prop_assert!(!score.is_anomaly);
        }

        #[test]
        fn zscore_invariant_under_shift_and_positive_scale(
            window in prop::collection::vec(-1e3f64..1e3, 5..30),
            value in -1e4f64..1e4,
            shift in -1e4f64..1e4,
            scale in 1e-2f64..1e2,
        ) {
            // Floors are absolute/relative by design; keep them out of the way for this property.
            let params = ScoringParams { min_stddev_absolute: 1e-12, min_stddev_relative: 0.0, ..ScoringParams::default() };
            prop_assume!(sample_stddev(&window).unwrap() > 1e-3);
            let original = score(value, &window, &params).unwrap();
            let moved: Vec<f64> = window.iter().map(|x| x * scale + shift).collect();
            let transformed = score(value * scale + shift, &moved, &params).unwrap();
            prop_assert!((original.zscore - transformed.zscore).abs() <= 1e-6 * original.zscore.abs().max(1.0),
                "{original:?} vs {transformed:?}");
            if (original.zscore.abs() - params.zscore_threshold).abs() > 1e-6 {
                prop_assert_eq!(original.is_anomaly, transformed.is_anomaly);
            }
        }

        #[test]
        fn negation_flips_the_sign(
            window in prop::collection::vec(-1e6f64..1e6, 5..30),
            value in -1e7f64..1e7,
            params in params(),
        ) {
            let negated: Vec<f64> = window.iter().map(|x| -x).collect();
            let original = score(value, &window, &params);
            let flipped = score(-value, &negated, &params);
            prop_assert_eq!(original.is_some(), flipped.is_some());
            if let (Some(original), Some(flipped)) = (original, flipped) {
                prop_assert!((original.zscore + flipped.zscore).abs() <= 1e-9 * original.zscore.abs().max(1.0));
            }
        }

        #[test]
        fn bounds_contain_the_mean(
            window in prop::collection::vec(finite(), 1..30),
            value in finite(),
            params in params(),
        ) {
            if let Some(score) = score(value, &window, &params) {
                prop_assert!(score.expected_lower <= score.mean && score.mean <= score.expected_upper);
            }
        }

        #[test]
        fn quantiles_are_monotone_and_within_the_data(
            values in prop::collection::vec(finite(), 1..60),
            q in 0.0f64..=1.0,
            r in 0.0f64..=1.0,
        ) {
            let sorted = finite_sorted(&values);
            let (low, high) = (q.min(r), q.max(r));
            let (at_low, at_high) = (quantile_sorted(&sorted, low).unwrap(), quantile_sorted(&sorted, high).unwrap());
            prop_assert!(sorted[0] <= at_low && at_low <= at_high && at_high <= sorted[sorted.len() - 1]);
        }

        #[test]
        fn drift_statistics_are_in_range(
            a in prop::collection::vec(any_f64(), 0..60),
            b in prop::collection::vec(any_f64(), 0..60),
            bins in 0usize..12,
        ) {
            if let Some(ks) = ks_two_sample(&a, &b) {
                prop_assert!((0.0..=1.0).contains(&ks.statistic), "{ks:?}");
                prop_assert!((0.0..=1.0).contains(&ks.p_value), "{ks:?}");
            }
            if let Some(value) = psi(&a, &b, bins) {
                prop_assert!(value.is_finite() && value >= 0.0, "{value}");
            }
        }

        #[test]
        fn categorical_tests_are_in_range(
            expected in prop::collection::vec(("[a-e]", 0u64..1000), 0..8),
            actual in prop::collection::vec(("[a-e]", 0u64..1000), 0..8),
        ) {
            if let Some(result) = chi_square(&expected, &actual) {
                prop_assert!(result.statistic.is_finite() && result.statistic >= 0.0);
                prop_assert!((0.0..=1.0).contains(&result.p_value));
                prop_assert!(result.degrees_of_freedom >= 1.0);
            }
            if let Some(value) = psi_categorical(&expected, &actual) {
                prop_assert!(value.is_finite() && value >= 0.0);
            }
        }
    }

    #[test]
    fn benjamini_hochberg_matches_the_textbook_adjustment() {
        // m = 5: q = (0.005*5/1, min(0.01*5/2, ..), ...): the classic step-up with monotonicity.
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.005, 0.5]);
        let expected = [0.025, 0.05, 0.05, 0.025, 0.5];
        for (got, want) in q.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{q:?}");
        }
        assert_eq!(benjamini_hochberg(&[0.2]), vec![0.2]);
        assert!(benjamini_hochberg(&[]).is_empty());
    }
}
