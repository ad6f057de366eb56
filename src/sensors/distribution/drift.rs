//! Drift tests of a batch against its reference batches: KS and PSI for numeric columns,
//! chi-square and PSI over the reference's top categories for string columns, and the verdict
//! they give together. Pure: the samples come from the profiles.

use std::collections::HashMap;

use serde::Serialize;

use super::{BatchProfile, ColumnSample};
use crate::config::{DistributionConfig, DriftConfig};
use crate::sensors::Status;
use crate::stats;

/// Categories compared by the chi-square test (the reference's most frequent; the rest is `other`).
pub const TOP_CATEGORIES: usize = 20;
/// Bins of the numeric PSI (cut at the reference's deciles).
pub const PSI_BINS: usize = 10;
/// Fewest values on each side for a drift test to give a verdict: with 10 PSI bins, about ten
/// values per bin; below that, PSI's sampling noise alone is near its 0.25 threshold and a
/// KS or chi-square p-value says little. Smaller batches report their drift figures as
/// `insufficient_history`.
pub const MIN_DRIFT_SAMPLE: usize = 100;
const OTHER_CATEGORY: &str = "\u{0}other";

/// Drift of one column between the newest batch and the reference batches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftResult {
    /// Kolmogorov-Smirnov statistic and p-value (numeric columns).
    pub ks_statistic: Option<f64>,
    pub ks_p_value: Option<f64>,
    /// Population stability index (numeric: reference deciles; categorical: top categories).
    pub psi: Option<f64>,
    /// Chi-square test over the reference's top categories plus `other` (categorical columns).
    pub chi_square_p_value: Option<f64>,
    /// The KS or chi-square p-value adjusted (Benjamini–Hochberg) over the tests of the whole
    /// check, one per column with enough values: what is compared with the threshold.
    pub adjusted_p_value: Option<f64>,
    /// How many tests that adjustment was over.
    pub tests_in_check: usize,
    /// Sample sizes compared.
    pub reference_size: usize,
    pub newest_size: usize,
    /// `warning` when one test crosses its threshold, `critical` when both do, `ok`, or
    /// `insufficient_history` without a reference.
    pub status: Status,
}

impl DriftResult {
    pub(super) fn describe(&self, config: &DriftConfig) -> String {
        let mut parts = Vec::new();
        let adjusted = |threshold: f64| match self.adjusted_p_value {
            Some(q) if self.tests_in_check > 1 => format!(
                ", adjusted p = {q:.3} over the check's {} tests (Benjamini–Hochberg; threshold {threshold})",
                self.tests_in_check
            ),
            _ => format!(" (threshold {threshold})"),
        };
        if let (Some(statistic), Some(p)) = (self.ks_statistic, self.ks_p_value) {
            parts.push(format!("KS D = {statistic:.3}, p = {p:.3}{}", adjusted(config.ks_p_value)));
        }
        if let Some(p) = self.chi_square_p_value {
            parts.push(format!("chi-square p = {p:.3}{}", adjusted(config.chi_square_p_value)));
        }
        if let Some(psi) = self.psi {
            parts.push(format!("PSI = {psi:.3} (threshold {})", config.psi_threshold));
        }
        if parts.is_empty() {
            return "no reference batch to compare with".to_string();
        }
        let too_small = if self.newest_size < MIN_DRIFT_SAMPLE || self.reference_size < MIN_DRIFT_SAMPLE {
            format!("; too few values for a verdict, need {MIN_DRIFT_SAMPLE} on each side")
        } else {
            String::new()
        };
        format!(
            "{} ({} sampled values against {} from the reference{too_small})",
            parts.join(", "),
            self.newest_size,
            self.reference_size
        )
    }
}

/// The drift status, or `insufficient_history` when either sample is below [`MIN_DRIFT_SAMPLE`].
fn drift_verdict(fired: &[Option<bool>], reference_size: usize, newest_size: usize) -> Status {
    if reference_size < MIN_DRIFT_SAMPLE || newest_size < MIN_DRIFT_SAMPLE {
        Status::InsufficientHistory
    } else {
        drift_status(fired)
    }
}

/// Drift tests of every sampled column of `newest` against the pooled samples of `reference`.
pub fn drift(
    config: &DistributionConfig,
    newest: &BatchProfile,
    reference: &[BatchProfile],
) -> Vec<(String, DriftResult)> {
    let thresholds = &config.drift;
    let mut results = Vec::new();
    for (column, _) in &config.columns {
        let Some(sample) = newest.samples.get(column) else { continue };
        let pooled: Vec<&ColumnSample> = reference.iter().filter_map(|profile| profile.samples.get(column)).collect();
        let result = match sample {
            ColumnSample::Numeric(values) => {
                let reference: Vec<f64> = pooled
                    .iter()
                    .filter_map(|sample| match sample {
                        ColumnSample::Numeric(values) => Some(values.as_slice()),
                        ColumnSample::Categorical(_) => None,
                    })
                    .flatten()
                    .copied()
                    .collect();
                let ks = stats::ks_two_sample(&reference, values);
                DriftResult {
                    ks_statistic: ks.map(|ks| ks.statistic),
                    ks_p_value: ks.map(|ks| ks.p_value),
                    psi: stats::psi(&reference, values, PSI_BINS),
                    chi_square_p_value: None,
                    adjusted_p_value: None,
                    tests_in_check: 0,
                    reference_size: reference.len(),
                    newest_size: values.len(),
                    status: Status::InsufficientHistory,
                }
            }
            ColumnSample::Categorical(values) => {
                let reference: Vec<&str> = pooled
                    .iter()
                    .filter_map(|sample| match sample {
                        ColumnSample::Categorical(values) => Some(values.as_slice()),
                        ColumnSample::Numeric(_) => None,
                    })
                    .flatten()
                    .map(String::as_str)
                    .collect();
                let (expected, actual) = category_counts(&reference, values);
                DriftResult {
                    ks_statistic: None,
                    ks_p_value: None,
                    psi: stats::psi_categorical(&expected, &actual),
                    chi_square_p_value: stats::chi_square(&expected, &actual).map(|result| result.p_value),
                    adjusted_p_value: None,
                    tests_in_check: 0,
                    reference_size: reference.len(),
                    newest_size: values.len(),
                    status: Status::InsufficientHistory,
                }
            }
        };
        results.push((column.clone(), result));
    }
    judge_together(&mut results, thresholds);
    results
}

/// Sets each column's verdict. The p-value tests of all columns with enough values are
/// adjusted together (Benjamini–Hochberg), so a check of many columns does not raise chance
/// alarms on unchanged data; PSI is a measure of size, not a test, and keeps its threshold.
fn judge_together(results: &mut [(String, DriftResult)], thresholds: &DriftConfig) {
    let testable =
        |result: &DriftResult| result.reference_size >= MIN_DRIFT_SAMPLE && result.newest_size >= MIN_DRIFT_SAMPLE;
    let tested: Vec<(usize, f64)> = results
        .iter()
        .enumerate()
        .filter(|(_, (_, result))| testable(result))
        .filter_map(|(index, (_, result))| Some((index, result.ks_p_value.or(result.chi_square_p_value)?)))
        .collect();
    let adjusted = stats::benjamini_hochberg(&tested.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    for ((index, _), q) in tested.iter().zip(adjusted) {
        results[*index].1.adjusted_p_value = Some(q);
        results[*index].1.tests_in_check = tested.len();
    }
    for (_, result) in results.iter_mut() {
        let threshold = if result.ks_p_value.is_some() { thresholds.ks_p_value } else { thresholds.chi_square_p_value };
        let fired =
            [result.adjusted_p_value.map(|q| q < threshold), result.psi.map(|psi| psi >= thresholds.psi_threshold)];
        result.status = drift_verdict(&fired, result.reference_size, result.newest_size);
    }
}

fn drift_status(fired: &[Option<bool>]) -> Status {
    let known: Vec<bool> = fired.iter().flatten().copied().collect();
    match known.iter().filter(|&&fired| fired).count() {
        _ if known.is_empty() => Status::InsufficientHistory,
        0 => Status::Ok,
        count if count == known.len() && count > 1 => Status::Critical,
        _ => Status::Warning,
    }
}

/// Named category counts, as `stats::chi_square` takes them.
type CategoryCounts = Vec<(String, u64)>;

/// Counts of the reference's [`TOP_CATEGORIES`] most frequent values on both sides; every
/// other value (on either side) counts as one `other` category.
fn category_counts(reference: &[&str], newest: &[String]) -> (CategoryCounts, CategoryCounts) {
    let mut frequency: HashMap<&str, u64> = HashMap::new();
    for value in reference {
        *frequency.entry(value).or_default() += 1;
    }
    let mut ranked: Vec<(&str, u64)> = frequency.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(TOP_CATEGORIES);
    let top: HashMap<&str, usize> = ranked.iter().enumerate().map(|(index, (value, _))| (*value, index)).collect();
    let count = |values: &mut dyn Iterator<Item = &str>| {
        let mut counts = vec![0u64; top.len() + 1];
        for value in values {
            counts[top.get(value).copied().unwrap_or(top.len())] += 1;
        }
        let mut named: Vec<(String, u64)> =
            ranked.iter().zip(&counts).map(|((value, _), &count)| (value.to_string(), count)).collect();
        named.push((OTHER_CATEGORY.to_string(), counts[top.len()]));
        named
    };
    let expected = count(&mut reference.iter().copied());
    let actual = count(&mut newest.iter().map(String::as_str));
    (expected, actual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::Metric;
    use crate::sensors::Windows;
    use crate::sensors::distribution::judge;
    use crate::sensors::distribution::synthetic::{Normal, batch, config, profile};

    #[test]
    fn drift_fires_on_a_shift_and_not_on_the_same_distribution() {
        let mut normal = Normal(3);
        let reference: Vec<BatchProfile> =
            (0..5).map(|index| profile(index, &batch(&mut normal, 5_000, 50.0, 0.0))).collect();
        let same = profile(5, &batch(&mut normal, 5_000, 50.0, 0.0));
        let shifted = profile(6, &batch(&mut normal, 5_000, 60.0, 0.0));
        let config = config();
        let quiet = drift(&config, &same, &reference);
        assert_eq!(quiet[0].1.status, Status::Ok, "{quiet:?}");
        let loud = drift(&config, &shifted, &reference);
        assert_eq!(loud[0].1.status, Status::Critical, "{loud:?}");
        assert!(loud[0].1.ks_p_value.unwrap() < 1e-6);
        let evaluations = judge("db.t", &config, &shifted, &Windows::new(), Some(&loud));
        let drift = evaluations.iter().find(|evaluation| evaluation.metric == Metric::DRIFT).unwrap();
        assert_eq!(drift.status, Status::Critical);
        assert!(drift.message.contains("KS"), "{}", drift.message);
    }

    #[test]
    fn categorical_drift_uses_top_categories() {
        let reference: Vec<String> = (0..1000).map(|index| ["a", "b", "c"][index % 3].to_string()).collect();
        let same: Vec<String> = (0..900).map(|index| ["a", "b", "c"][index % 3].to_string()).collect();
        let changed: Vec<String> = (0..900).map(|index| ["a", "a", "z"][index % 3].to_string()).collect();
        let make = |id: i64, values: Vec<String>| BatchProfile {
            samples: HashMap::from([("amount".to_string(), ColumnSample::Categorical(values))]),
            ..profile(id, &[Some(1.0)])
        };
        let config = config();
        let reference = [make(0, reference)];
        assert_eq!(drift(&config, &make(1, same), &reference)[0].1.status, Status::Ok);
        let result = &drift(&config, &make(2, changed), &reference)[0].1;
        assert_eq!(result.status, Status::Critical, "{result:?}");
        assert!(result.chi_square_p_value.unwrap() < 1e-6);
    }

    #[test]
    fn a_chance_p_value_among_many_columns_is_not_drift_but_a_real_shift_is() {
        let result = |p: f64, psi: f64| DriftResult {
            ks_statistic: Some(0.05),
            ks_p_value: Some(p),
            psi: Some(psi),
            chi_square_p_value: None,
            adjusted_p_value: None,
            tests_in_check: 0,
            reference_size: 2_000,
            newest_size: 500,
            status: Status::InsufficientHistory,
        };
        let config = config();
        // Six unchanged columns: one p of 0.004 is what one test in 250 gives by chance.
        let mut unchanged: Vec<(String, DriftResult)> = [0.004, 0.3, 0.5, 0.6, 0.8, 0.9]
            .iter()
            .enumerate()
            .map(|(index, p)| (format!("c{index}"), result(*p, 0.02)))
            .collect();
        judge_together(&mut unchanged, &config.drift);
        assert!(unchanged.iter().all(|(_, result)| result.status == Status::Ok), "{unchanged:?}");
        assert!((unchanged[0].1.adjusted_p_value.unwrap() - 0.024).abs() < 1e-12);
        assert!(unchanged[0].1.describe(&config.drift).contains("over the check's 6 tests (Benjamini–Hochberg"));
        // A real shift among them still fires.
        unchanged[1].1 = result(1e-9, 0.6);
        judge_together(&mut unchanged, &config.drift);
        assert_eq!(unchanged[1].1.status, Status::Critical, "{unchanged:?}");
        assert_eq!(unchanged[0].1.status, Status::Ok);
    }
}
