//! Synthetic batches for the judge and drift tests: a seeded normal generator, a distribution
//! config and the profile the scan path computes for given values. Test-only.

use std::collections::HashMap;

use datafusion::arrow::array::Float64Array;

use super::accumulate::{ColumnAccumulator, ValueKind, Wanted};
use super::scan::{scan_value, sorted_sample};
use super::sketch;
use super::{BatchProfile, ColumnSample, ColumnStatistic, DRIFT_SAMPLE, QUANTILE_SAMPLE, ValueSource};
use crate::config::{DistributionConfig, DriftConfig, Scope, SensorSettings, Statistic};
use crate::stats::Direction;

/// A seeded normal generator (SplitMix64 + Box-Muller) so the tests need no RNG crate.
pub(super) struct Normal(pub(super) u64);

impl Normal {
    pub(super) fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        ((sketch::mix64(self.0) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub(super) fn sample(&mut self, mean: f64, stddev: f64) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        mean + stddev * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

pub(super) const STATISTICS: [Statistic; 8] = [
    Statistic::Mean,
    Statistic::Stddev,
    Statistic::NullPercent,
    Statistic::P05,
    Statistic::P50,
    Statistic::P95,
    Statistic::Min,
    Statistic::Max,
];

pub(super) fn config() -> DistributionConfig {
    DistributionConfig {
        columns: vec![("amount".to_string(), STATISTICS.to_vec())],
        scope: Scope::Added,
        sample: None,
        drift: DriftConfig {
            reference_batches: 5,
            reference_snapshot: None,
            psi_threshold: 0.25,
            ks_p_value: 0.01,
            chi_square_p_value: 0.01,
        },
        settings: SensorSettings {
            schedule: crate::config::Schedule {
                expression: "0 * * * * *".to_string(),
                cron: "0 * * * * *".parse().unwrap(),
            },
            zscore_threshold: 3.0,
            min_history: 5,
            window: 30,
            rebaseline_after: 5,
            direction: Direction::Both,
            timeout: std::time::Duration::from_secs(60),
        },
    }
}

/// The profile the scan path computes for these values (batch `index`, one per hour).
pub(super) fn profile(index: i64, values: &[Option<f64>]) -> BatchProfile {
    let wanted = Wanted { distinct: false, sample: QUANTILE_SAMPLE };
    let mut accumulator = ColumnAccumulator::new(ValueKind::Numeric, wanted, index as u64);
    accumulator.add(&Float64Array::from(values.to_vec())).unwrap();
    let sorted = sorted_sample(&accumulator);
    let values = STATISTICS
        .iter()
        .filter_map(|&statistic| {
            scan_value(&accumulator, &sorted, statistic, 1.0).map(|value| ColumnStatistic {
                column: "amount".to_string(),
                statistic,
                value,
                source: ValueSource::Scan,
            })
        })
        .collect();
    let sample = accumulator.numbers.unwrap().into_first(DRIFT_SAMPLE);
    BatchProfile {
        snapshot_id: index,
        timestamp_ms: index * 3_600_000,
        scope: Scope::Added,
        row_count: accumulator.rows,
        files: 1,
        scanned_files: 1,
        scanned_rows: accumulator.rows,
        scanned_bytes: 0,
        sampled: false,
        values,
        skipped: Vec::new(),
        samples: HashMap::from([("amount".to_string(), ColumnSample::Numeric(sample))]),
    }
}

pub(super) fn batch(normal: &mut Normal, rows: usize, mean: f64, null_rate: f64) -> Vec<Option<f64>> {
    (0..rows)
        .map(|_| {
            let value = normal.sample(mean, 10.0);
            (normal.uniform() >= null_rate).then_some(value)
        })
        .collect()
}
