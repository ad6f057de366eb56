//! The scheduler's side of the service: one job per configured sensor of each table, keyed by
//! [`SensorJob`], and what the scheduler's events (lag, timeouts, panics, skipped ticks) do to the
//! service metrics. What a run does is the generation's; when runs happen is the scheduler's.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, SensorKind, TableName};
use crate::export::metrics::Metrics;
use crate::scheduler::{Job, RunOutcome, SchedulerEvents};

/// Slack on top of a sensor's own timeout before the scheduler drops its run: the sensor times
/// itself out first and reports why; the scheduler's timeout only catches a run that hangs.
const SCHEDULER_TIMEOUT_SLACK: Duration = Duration::from_secs(5);

/// The scheduler's key of one sensor of one table. Its text, `bronze.raw_trades/volume`, names
/// the job in the scheduler's logs and seeds its jitter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SensorJob {
    pub(super) table: TableName,
    pub(super) kind: SensorKind,
}

impl fmt::Display for SensorJob {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.table, self.kind)
    }
}

/// One job per configured sensor, tables in file order and kinds in their fixed order.
pub(super) fn sensor_jobs(config: &Config) -> Vec<Job<SensorJob>> {
    config
        .tables
        .iter()
        .flat_map(|table| {
            table.sensor_kinds().into_iter().filter_map(move |kind| {
                let settings = table.settings(kind)?;
                Some(Job {
                    key: SensorJob { table: table.name.clone(), kind },
                    schedule: settings.schedule.cron.clone(),
                    timeout: settings.timeout + SCHEDULER_TIMEOUT_SLACK,
                })
            })
        })
        .collect()
}

/// Scheduler events become service metrics.
pub(super) struct MetricEvents {
    metrics: Arc<Metrics>,
}

impl MetricEvents {
    /// Counters of events that may never happen are exported at 0 from the start for every job,
    /// so rate() and increase() over them answer 0 rather than nothing.
    pub(super) fn new(metrics: Arc<Metrics>, jobs: &[Job<SensorJob>]) -> MetricEvents {
        for job in jobs {
            metrics
                .icewatch_sensor_skipped_runs_total
                .with_label_values(&[job.key.table.as_str(), job.key.kind.as_str()]);
        }
        MetricEvents { metrics }
    }
}

impl SchedulerEvents<SensorJob> for MetricEvents {
    fn run_started(&self, _job: &SensorJob, lag: Duration) {
        self.metrics.icewatch_scheduler_lag_seconds.set(lag.as_secs_f64());
    }

    fn run_finished(&self, job: &SensorJob, outcome: RunOutcome, elapsed: Duration) {
        let (table, kind) = (job.table.as_str(), job.kind);
        match outcome {
            RunOutcome::Completed => {}
            RunOutcome::TimedOut => {
                tracing::warn!(table, sensor = %kind, seconds = elapsed.as_secs_f64(), "sensor run timed out");
                self.metrics.icewatch_sensor_runs_total.with_label_values(&[table, kind.as_str(), "timeout"]).inc();
                self.metrics.record_error(table, kind, "timeout");
                self.metrics.icewatch_sensor_up.with_label_values(&[table, kind.as_str()]).set(0);
            }
            RunOutcome::Panicked => {
                tracing::error!(table, sensor = %kind, "sensor run panicked");
                self.metrics.icewatch_sensor_runs_total.with_label_values(&[table, kind.as_str(), "error"]).inc();
                self.metrics.record_error(table, kind, "internal");
                self.metrics.icewatch_sensor_up.with_label_values(&[table, kind.as_str()]).set(0);
            }
        }
    }

    fn run_skipped(&self, job: &SensorJob) {
        self.metrics
            .icewatch_sensor_skipped_runs_total
            .with_label_values(&[job.table.as_str(), job.kind.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = r#"
[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "/w"

[defaults]
timeout = "20s"

[tables."bronze.raw_trades".volume]
[tables."bronze.raw_trades".freshness]
schedule = "0 */5 * * * *"
timeout = "1m"

[tables."gold.daily".schema]
"#;

    #[test]
    fn one_job_per_configured_sensor_keyed_by_table_and_kind() {
        let config = Config::from_str(CONFIG, Path::new("/srv/sensors.toml")).expect("valid config");
        let jobs = sensor_jobs(&config);
        let keys: Vec<String> = jobs.iter().map(|job| job.key.to_string()).collect();
        assert_eq!(keys, ["bronze.raw_trades/freshness", "bronze.raw_trades/volume", "gold.daily/schema"]);
        assert_eq!(jobs[0].key.kind, SensorKind::FRESHNESS);
        assert_eq!(jobs[0].key.table.as_str(), "bronze.raw_trades");
        assert_eq!(jobs[0].timeout, Duration::from_secs(65), "the sensor's timeout plus the slack");
        assert_eq!(jobs[1].timeout, Duration::from_secs(25));
        assert_eq!(jobs[0].schedule.to_string(), "0 */5 * * * *");
    }

    #[test]
    fn skipped_run_counters_start_at_zero_and_count_skips() {
        let config = Config::from_str(CONFIG, Path::new("/srv/sensors.toml")).expect("valid config");
        let metrics = Arc::new(Metrics::new());
        let events = MetricEvents::new(metrics.clone(), &sensor_jobs(&config));
        let skipped = |table: &str, kind: &str| {
            metrics.icewatch_sensor_skipped_runs_total.with_label_values(&[table, kind]).get()
        };
        assert_eq!(skipped("gold.daily", "schema"), 0);
        assert!(
            metrics.encode().contains(r#"icewatch_sensor_skipped_runs_total{sensor="schema",table="gold.daily"} 0"#)
        );
        let job = SensorJob { table: TableName::parse("gold.daily").expect("table name"), kind: SensorKind::SCHEMA };
        events.run_skipped(&job);
        assert_eq!(skipped("gold.daily", "schema"), 1);
    }
}
