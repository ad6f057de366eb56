//! Judging a batch's profile: its history points (one series per column and statistic), the
//! windows it needs, and the verdicts with the messages users read, where each value came from
//! included. Pure: the pipeline fetches the windows and stores the points.

use super::drift::DriftResult;
use super::{BatchProfile, ValueSource};
use crate::config::{DistributionConfig, Scope, SensorKind, Statistic};
use crate::history::{Point, SeriesKey};
use crate::judging::{self, Measure};
use crate::sensors::{Evaluation, Metric, Status, WindowRequest, Windows, human_number};
use crate::stats;

/// The history points of a profile: one per column and statistic, at the snapshot's time.
pub fn series(table_name: &str, profile: &BatchProfile) -> Vec<Point> {
    profile
        .values
        .iter()
        .filter(|value| value.value.is_finite())
        .map(|value| Point {
            series: series_key(table_name, &value.column, value.statistic),
            observed_at_ms: profile.timestamp_ms,
            snapshot_id: Some(profile.snapshot_id),
            value: value.value,
        })
        .collect()
}

pub fn series_key(table_name: &str, column: &str, statistic: Statistic) -> SeriesKey {
    SeriesKey::new(
        table_name,
        SensorKind::DISTRIBUTION.as_str(),
        Metric::DISTRIBUTION_VALUE.as_str(),
        &[("column", column), ("statistic", statistic.as_str())],
    )
}

/// The history `judge` needs for `newest`: each series' `window` points before it.
pub fn window_requests(table_name: &str, config: &DistributionConfig, newest: &BatchProfile) -> Vec<WindowRequest> {
    newest
        .values
        .iter()
        .map(|value| WindowRequest {
            series: series_key(table_name, &value.column, value.statistic),
            before_ms: newest.timestamp_ms,
            limit: config.settings.window,
            since_ms: None,
        })
        .collect()
}

/// Scores each statistic of `newest` against its own earlier batches (`windows`, which must
/// not contain `newest`): `warning` when the z-score crosses the threshold on the configured
/// side, `critical` at twice the threshold, `insufficient_history` below `min_history`
/// batches. Statistics that could not be computed give an `error` (a configuration mistake)
/// or an `ok` without a value (an empty batch). Drift results, when given, add one `drift`
/// evaluation per column.
pub fn judge(
    table_name: &str,
    config: &DistributionConfig,
    newest: &BatchProfile,
    windows: &Windows,
    drift: Option<&[(String, DriftResult)]>,
) -> Vec<Evaluation> {
    let settings = &config.settings;
    let mut evaluations = Vec::new();
    for value in &newest.values {
        let measure = Measure::Distribution(value.statistic);
        let params = judging::scoring_params(settings, settings.direction, measure);
        let key = series_key(table_name, &value.column, value.statistic);
        let points: &[Point] = windows.get(&key).map(Vec::as_slice).unwrap_or_default();
        let points = &points[points.len().saturating_sub(settings.window)..];
        let history: Vec<f64> = points.iter().map(|point| point.value).collect();
        let score = stats::score(value.value, &history, &params);
        let status = judging::zscore_verdict(score.as_ref(), settings.zscore_threshold);
        let origin = describe_source(newest, value.source);
        let verdict = match &score {
            None => format!(
                "{} earlier batches, {} needed to score",
                history.iter().filter(|value| value.is_finite()).count(),
                settings.min_history
            ),
            Some(score) => {
                let (lower, upper) = judging::band(score, measure);
                let since = |start: usize| match points[start].snapshot_id {
                    Some(id) => format!("snapshot {id}"),
                    None => crate::sensors::format_ms(points[start].observed_at_ms).unwrap_or_default(),
                };
                format!(
                    "z = {:.2} against {} earlier batches (expected {} to {}){}",
                    score.zscore,
                    history.len(),
                    human_number(lower),
                    human_number(upper),
                    judging::new_level_note(score, history.len(), since)
                )
            }
        };
        let message = format!(
            "`{}` of `{}` is {} ({origin}); {verdict}",
            value.statistic,
            value.column,
            human_number(value.value)
        );
        let mut evaluation =
            Evaluation::new(table_name, SensorKind::DISTRIBUTION, Metric::DISTRIBUTION_VALUE, status, message)
                .with_value(value.value)
                .with_score(score.as_ref(), measure)
                .at(newest.timestamp_ms, Some(newest.snapshot_id));
        evaluation.column = Some(value.column.clone());
        evaluation.statistic = Some(value.statistic.as_str().to_string());
        evaluations.push(evaluation);
    }
    for skipped in &newest.skipped {
        let status = if skipped.misconfigured { Status::Error } else { Status::Ok };
        let message = format!("`{}` of `{}` has no value: {}", skipped.statistic, skipped.column, skipped.reason);
        let mut evaluation =
            Evaluation::new(table_name, SensorKind::DISTRIBUTION, Metric::DISTRIBUTION_VALUE, status, message)
                .at(newest.timestamp_ms, Some(newest.snapshot_id));
        evaluation.column = Some(skipped.column.clone());
        evaluation.statistic = Some(skipped.statistic.as_str().to_string());
        evaluations.push(evaluation);
    }
    for (column, result) in drift.unwrap_or_default() {
        let mut evaluation = Evaluation::new(
            table_name,
            SensorKind::DISTRIBUTION,
            Metric::DRIFT,
            result.status,
            format!("drift of `{column}`: {}", result.describe(&config.drift)),
        )
        .at(newest.timestamp_ms, Some(newest.snapshot_id));
        if let Some(psi) = result.psi {
            evaluation = evaluation.with_value(psi);
        }
        evaluation.column = Some(column.clone());
        evaluations.push(evaluation);
    }
    evaluations
}

fn describe_source(profile: &BatchProfile, source: ValueSource) -> String {
    let batch = match profile.scope {
        Scope::Added => "added",
        Scope::Table => "live",
    };
    let files = plural(profile.files as u64, "file");
    match source {
        ValueSource::Metadata => format!("from manifest metadata of {files} {batch}"),
        ValueSource::Scan if profile.sampled => format!(
            "from a scan of a sample of {} of the {} rows {batch} in {files}",
            profile.scanned_rows, profile.row_count
        ),
        ValueSource::Scan => format!("from a scan of {} {batch} in {files}", plural(profile.scanned_rows, "row")),
    }
}

fn plural(count: u64, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::distribution::synthetic::{Normal, batch, config, profile};

    /// `history` profiles into the windows the pipeline would fetch.
    fn windows(history: &[BatchProfile]) -> Windows {
        let mut windows = Windows::new();
        for profile in history {
            for point in series("db.t", profile) {
                windows.entry(point.series.clone()).or_default().push(point);
            }
        }
        windows
    }

    const ROWS: usize = 1_000;
    const HISTORY: usize = 30;

    fn run(seed: u64, newest: impl Fn(&mut Normal) -> Vec<Option<f64>>) -> Vec<Evaluation> {
        let mut normal = Normal(seed);
        let history: Vec<BatchProfile> =
            (0..HISTORY as i64).map(|index| profile(index, &batch(&mut normal, ROWS, 50.0, 0.02))).collect();
        let newest = profile(HISTORY as i64, &newest(&mut normal));
        judge("db.t", &config(), &newest, &windows(&history), None)
    }

    fn flagged<'a>(evaluations: &'a [Evaluation], statistic: &str) -> &'a Evaluation {
        evaluations.iter().find(|evaluation| evaluation.statistic.as_deref() == Some(statistic)).unwrap()
    }

    #[test]
    fn unchanged_distributions_rarely_alarm() {
        let seeds = 200u64;
        let (mut evaluations, mut alarms, mut batches_with_alarm) = (0usize, 0usize, 0usize);
        for seed in 0..seeds {
            let results = run(seed, |normal| batch(normal, ROWS, 50.0, 0.02));
            let count = results.iter().filter(|evaluation| evaluation.status >= Status::Warning).count();
            assert!(results.iter().all(|evaluation| evaluation.status != Status::InsufficientHistory));
            evaluations += results.len();
            alarms += count;
            batches_with_alarm += usize::from(count > 0);
        }
        let per_evaluation = alarms as f64 / evaluations as f64;
        let per_batch = batches_with_alarm as f64 / seeds as f64;
        println!(
            "false positives over {seeds} seeds: {alarms}/{evaluations} evaluations ({:.2} %), {batches_with_alarm} batches with any alarm ({:.1} %)",
            100.0 * per_evaluation,
            100.0 * per_batch
        );
        // Threshold 3 with a 30-point window: about 0.5 % per statistic if the series were normal;
        // min/max are heavier-tailed.
        assert!(per_evaluation < 0.02, "{per_evaluation}");
    }

    #[test]
    fn a_four_sigma_mean_shift_is_flagged() {
        // The batch mean of N(50, 10) over 980 non-null rows varies with sd 10 / sqrt(980).
        let sigma = 10.0 / ((ROWS as f64) * 0.98).sqrt();
        let seeds = 200u64;
        let mut detected = 0;
        for seed in 0..seeds {
            let results = run(seed, |normal| batch(normal, ROWS, 50.0 + 4.0 * sigma, 0.02));
            detected += usize::from(flagged(&results, "mean").status >= Status::Warning);
        }
        let rate = detected as f64 / seeds as f64;
        println!("4-sigma mean shift detected in {detected}/{seeds} seeds ({:.1} %)", 100.0 * rate);
        // z is about N(4, 1) against a threshold of 3: detected about 84 % of the time.
        assert!(rate >= 0.7, "{rate}");
        let results = run(7, |normal| batch(normal, ROWS, 50.0 + 8.0 * sigma, 0.02));
        assert_eq!(flagged(&results, "mean").status, Status::Critical, "{results:#?}");
    }

    #[test]
    fn a_null_rate_jump_is_flagged() {
        for seed in 0..20 {
            let results = run(seed, |normal| batch(normal, ROWS, 50.0, 0.30));
            let null_percent = flagged(&results, "null_percent");
            assert!(null_percent.status >= Status::Warning, "{null_percent:?}");
            assert!(null_percent.message.contains("from a scan of"), "{}", null_percent.message);
        }
    }

    #[test]
    fn short_history_is_insufficient() {
        let mut normal = Normal(1);
        let history: Vec<BatchProfile> =
            (0..3).map(|index| profile(index, &batch(&mut normal, 100, 50.0, 0.0))).collect();
        let newest = profile(3, &batch(&mut normal, 100, 500.0, 0.0));
        let results = judge("db.t", &config(), &newest, &windows(&history), None);
        assert!(results.iter().all(|evaluation| evaluation.status == Status::InsufficientHistory));
        assert!(results.iter().all(|evaluation| evaluation.column.as_deref() == Some("amount")
            && evaluation.metric == Metric::DISTRIBUTION_VALUE));
    }
}
