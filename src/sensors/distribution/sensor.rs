//! The distribution sensor's steps: which batches to profile this run (the snapshots the store
//! has not seen, on first sight the last `window` of them), one step per batch in commit order,
//! and the drift tests of the newest batch against its reference batches.

use futures::future::BoxFuture;

use super::{
    drift, judge, observe_readable_reference, observe_until, series, series_key, snapshots_to_profile, window_requests,
};
use crate::config::{SensorKind, TableConfig};
use crate::history::SeriesKey;
use crate::sensors::{Evaluation, Export, Family, Input, Metric, Observed, Reading, Sensor, SensorError, Status, Step};

/// Profiles the batches the store has not seen, judging each against the batches before it;
/// the newest also gets the drift tests. When nothing new was committed, the newest batch's
/// last verdict in this process is kept, or it is profiled again: a batch is the files its
/// snapshot added, so that costs one batch, not the table.
pub struct DistributionSensor;

/// A drift family, labelled `table, column`.
const fn drift_family(name: &'static str, help: &'static str) -> Family {
    Family { name, help, labels: &["column"], with_layer: false, export: Export::Gauge }
}
static DRIFT_PSI: Family =
    drift_family("data_drift_psi", "Population stability index of the newest batch against the reference.");
static DRIFT_KS_STATISTIC: Family =
    drift_family("data_drift_ks_statistic", "Kolmogorov-Smirnov statistic of the newest batch against the reference.");
static DRIFT_KS_PVALUE: Family = drift_family("data_drift_ks_pvalue", "Kolmogorov-Smirnov p-value.");
static DRIFT_CHI2_PVALUE: Family = drift_family(
    "data_drift_chi2_pvalue",
    "Chi-square p-value of the newest batch's categories against the reference.",
);

static FAMILIES: [&Family; 4] = [&DRIFT_PSI, &DRIFT_KS_STATISTIC, &DRIFT_KS_PVALUE, &DRIFT_CHI2_PVALUE];

impl Sensor for DistributionSensor {
    fn kind(&self) -> SensorKind {
        SensorKind::DISTRIBUTION
    }

    fn families(&self) -> &'static [&'static Family] {
        &FAMILIES
    }

    fn progress(&self, table: &TableConfig) -> Option<(SeriesKey, usize)> {
        let config = table.distribution.as_ref()?;
        let (column, statistics) = config.columns.first()?;
        let statistic = statistics.first()?;
        Some((series_key(table.name.as_str(), column, *statistic), config.settings.window.max(1) * 4))
    }

    fn observe<'a>(&'a self, input: &'a Input<'a>) -> BoxFuture<'a, Result<Observed<'a>, SensorError>> {
        Box::pin(steps(input))
    }
}

async fn steps<'a>(input: &'a Input<'a>) -> Result<Observed<'a>, SensorError> {
    let Some(config) = &input.config.distribution else { return Ok(Observed::default()) };
    if DistributionSensor.progress(input.config).is_none() {
        return Ok(Observed::default());
    }
    let (table, name) = (input.table, input.config.name.as_str());
    let stored = &input.seen.snapshot_ids;
    let first_sight = stored.is_empty();
    let mut pending = snapshots_to_profile(table, config, &|id| stored.contains(&id));
    if pending.is_empty() {
        let Some(newest) = snapshots_to_profile(table, config, &|_| false).pop() else {
            let message = "no batch to profile yet: the table has no append".to_string();
            return Ok(Observed::verdict(vec![value_result(name, Status::InsufficientHistory, message)]));
        };
        if let Some(previous) = &input.previous
            && previous.evaluations.iter().any(|evaluation| evaluation.snapshot_id == Some(newest))
        {
            return Ok(Observed::verdict(previous.evaluations.clone()));
        }
        pending.push(newest);
    }
    if pending.len() > 1 {
        tracing::info!(
            table = name,
            batches = pending.len(),
            "profiling batches (each over the files its snapshot added)"
        );
    }
    // Leave 40 % of the run's time for the reference, drift and history.
    let budget = input.deadline.saturating_duration_since(std::time::Instant::now()).mul_f64(0.6);
    let profiles = observe_until(table, name, config, &pending, std::time::Instant::now() + budget).await?;
    let Some(newest) = profiles.last() else {
        let message = "the newest snapshots added no rows to profile".to_string();
        return Ok(Observed::verdict(vec![value_result(name, Status::Ok, message)]));
    };
    let (reference, unreadable) = observe_readable_reference(table, name, config, newest.snapshot_id).await?;
    let drift = drift(config, newest, &reference);
    let incomplete: Option<String> = unreadable.first().map(|(snapshot_id, error)| {
        format!(
            "reference incomplete: {} of {} reference batch(es) could not be read (snapshot {snapshot_id}: {})",
            unreadable.len(),
            unreadable.len() + reference.len(),
            crate::errors::error_chain(error)
        )
    });
    let readings = drift_readings(&drift);
    let newest_is_new = !stored.contains(&newest.snapshot_id);
    // Batches older than the newest one stored were left by an earlier run (its time budget ran
    // out): judged now, but not counted as new anomalies.
    let is_new = |profile: &super::BatchProfile| input.seen.latest_ms.is_none_or(|until| profile.timestamp_ms > until);
    let newest_index = profiles.len() - 1;
    let mut steps = Vec::with_capacity(profiles.len());
    let mut drift = Some(drift);
    for (index, profile) in profiles.into_iter().enumerate() {
        let points = series(name, &profile);
        let requests = window_requests(name, config, &profile);
        if index == newest_index {
            let drift = drift.take().unwrap_or_default();
            let incomplete = incomplete.clone();
            steps.push(Step::judged(points, requests, newest_is_new, move |windows| {
                let mut evaluations = judge(name, config, &profile, windows, Some(&drift));
                if let Some(incomplete) = incomplete {
                    degrade_drift(&mut evaluations, &incomplete);
                }
                evaluations
            }));
        } else if first_sight {
            steps.push(Step::backfill(points));
        } else {
            let counts = is_new(&profile);
            steps.push(Step::judged(points, requests, counts, move |windows| {
                judge(name, config, &profile, windows, None)
            }));
        }
    }
    Ok(Observed { steps, readings })
}

/// A drift test over an incomplete reference is at least a warning, and says what is missing.
fn degrade_drift(evaluations: &mut [Evaluation], incomplete: &str) {
    for evaluation in evaluations.iter_mut().filter(|evaluation| evaluation.metric == Metric::DRIFT) {
        evaluation.status = evaluation.status.max(Status::Warning);
        evaluation.message = format!("{incomplete}; {}", evaluation.message);
    }
}

fn value_result(table: &str, status: Status, message: String) -> Evaluation {
    Evaluation::new(table, SensorKind::DISTRIBUTION, Metric::DISTRIBUTION_VALUE, status, message)
}

/// The drift statistics of each column, as they are (non-finite values are not exported).
fn drift_readings(drift: &[(String, super::DriftResult)]) -> Vec<Reading> {
    let mut readings = Vec::new();
    for (column, result) in drift {
        for (family, value) in [
            (&DRIFT_PSI, result.psi),
            (&DRIFT_KS_STATISTIC, result.ks_statistic),
            (&DRIFT_KS_PVALUE, result.ks_p_value),
            (&DRIFT_CHI2_PVALUE, result.chi_square_p_value),
        ] {
            if let Some(value) = value.filter(|value| value.is_finite()) {
                readings.push(Reading::labelled(family, &[column], value));
            }
        }
    }
    readings
}
