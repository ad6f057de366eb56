//! A generation: one configuration at work, its pipeline plus its first pass and scheduler, and
//! the sweeps that delete OpenLineage events past `lineage.retention` and history points past
//! `history.retention`. A reload prepares the next generation beside the running one and swaps
//! them only once the new one opened; the swap itself (and what it does to the metrics) is
//! `serve`'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::jobs::{MetricEvents, SensorJob, sensor_jobs};
use super::pusher::Pusher;
use crate::config::Config;
use crate::export::metrics::Metrics;
use crate::lineage::Lineage;
use crate::pipeline::Pipeline;
use crate::scheduler::{Clock, SchedulerEvents, SchedulerOptions, ShutdownReport, run_scheduler};
use crate::sensors::Status;

/// One configuration at work: its pipeline, and its first pass and scheduler as a future that
/// `serve` polls next to the reload requests (the scheduler spawns the runs themselves).
pub(super) struct Generation {
    pipeline: Arc<Pipeline>,
    stop: CancellationToken,
    running: Pin<Box<dyn Future<Output = ShutdownReport<SensorJob>>>>,
    /// Set once `running` has finished (it only does after `stop` or the shutdown).
    report: Option<ShutdownReport<SensorJob>>,
    /// The retention sweeps of lineage events and history points (at the start, then hourly)
    /// until `stop`.
    retention: JoinHandle<()>,
}

impl Generation {
    pub(super) fn start(
        pipeline: Arc<Pipeline>,
        state: Arc<AppState>,
        pusher: Option<Arc<Pusher>>,
        metrics: Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> Generation {
        let stop = shutdown.child_token();
        // `serve` puts this generation's lineage in force before starting it.
        let lineage_retention = state.lineage().keep_retention(stop.clone());
        let config = pipeline.config();
        let deleted = metrics.icewatch_history_points_deleted_total.clone();
        let point_retention = crate::history::retention::keep(
            pipeline.history().clone(),
            config.history.retention.covering(&config.tables),
            move |count| deleted.inc_by(count),
            stop.clone(),
        );
        let retention = tokio::spawn(async move {
            tokio::join!(lineage_retention, point_retention);
        });
        let running = Box::pin(run_generation(pipeline.clone(), state, pusher, metrics, stop.clone()));
        Generation { pipeline, stop, running, report: None, retention }
    }

    /// Drives the first pass and the scheduler; returns when they end.
    pub(super) async fn drive(&mut self) {
        if self.report.is_none() {
            self.report = Some((&mut self.running).await);
        }
    }

    /// Stops new runs, waits for running ones up to the grace period, and hands the pipeline back.
    pub(super) async fn stop(mut self) -> Arc<Pipeline> {
        self.stop.cancel();
        self.drive().await;
        // It returns at `stop`: nothing of it is left running against the store once it closes.
        let _ = (&mut self.retention).await;
        if let Some(report) = &self.report
            && !report.still_running.is_empty()
        {
            let runs: Vec<String> = report.still_running.iter().map(SensorJob::to_string).collect();
            tracing::warn!(?runs, "sensor runs still going at the end of the grace period were stopped");
        }
        self.pipeline
    }
}

/// Reads the configuration file again and opens its pipeline, without touching the running
/// one: any error here leaves the service as it was. The file is read and parsed on tokio's
/// blocking pool: a large file takes a while, and the server's workers must keep serving.
pub(super) async fn prepare_reload(
    current: &Generation,
    started_with: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<Pipeline>, Arc<Lineage>)> {
    let path = current.pipeline.config().source.clone();
    let config = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .context("reading the configuration file stopped before it finished")??;
    for warning in restart_only_changes(&config, started_with) {
        tracing::warn!("{warning}");
    }
    let pipeline = Pipeline::new(Arc::new(config), metrics.clone())
        .await
        .context("failed to open the history store of the new configuration")?;
    let lineage = Lineage::attach(&pipeline);
    lineage.replay().await;
    Ok((Arc::new(pipeline), lineage))
}

/// What differs between `new` and the configuration the service `started_with` that a reload
/// cannot apply (the listener, its TLS and users, and the pusher are built once at start-up).
fn restart_only_changes(new: &Config, started_with: &Config) -> Vec<&'static str> {
    let (server, old_server) = (&new.server, &started_with.server);
    let mut warnings = Vec::new();
    if server.listen != old_server.listen
        || server.tls != old_server.tls
        || server.basic_auth_users != old_server.basic_auth_users
    {
        warnings.push("`[server]` listen, TLS and basic auth changes take effect at the next restart");
    }
    if new.pushgateway != started_with.pushgateway {
        warnings.push("`[pushgateway]` changes take effect at the next restart");
    }
    warnings
}

/// Readiness, a first pass at once (so /metrics has data before the first cron tick), then the
/// scheduler until `stop`.
async fn run_generation(
    pipeline: Arc<Pipeline>,
    state: Arc<AppState>,
    pusher: Option<Arc<Pusher>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> ShutdownReport<SensorJob> {
    let config = pipeline.config().clone();
    match pipeline.catalog().await {
        Ok(catalog) => {
            tracing::info!(catalog = catalog.uri(), "catalog connected");
            state.ready.store(true, Ordering::Relaxed);
        }
        Err(error) => tracing::error!(%error, "catalog not reachable yet; sensors will report errors and retry"),
    }
    tokio::select! {
        results = pipeline.run_all(&[]) => {
            if results.iter().any(|result| result.evaluations.iter().all(|evaluation| evaluation.status != Status::Error)) {
                state.ready.store(true, Ordering::Relaxed);
            }
        }
        _ = stop.cancelled() => return ShutdownReport::default(),
    }
    if let Some(pusher) = &pusher {
        pusher.request();
    }

    let jobs = sensor_jobs(&config);
    let events: Arc<dyn SchedulerEvents<SensorJob>> = Arc::new(MetricEvents::new(metrics, &jobs));
    let options = SchedulerOptions {
        concurrency: config.defaults.concurrency,
        shutdown_grace: config.server.shutdown_grace,
        ..SchedulerOptions::default()
    };
    run_scheduler(
        jobs,
        options,
        Clock::system(),
        events,
        move |job: SensorJob| {
            let pipeline = pipeline.clone();
            let pusher = pusher.clone();
            let state = state.clone();
            async move {
                if let Some(result) = pipeline.run_sensor(job.table.as_str(), job.kind).await
                    && result.status() != Status::Error
                {
                    state.ready.store(true, Ordering::Relaxed);
                }
                if let Some(pusher) = &pusher {
                    pusher.request();
                }
            }
        },
        stop,
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"/w\"\n";

    fn config(extra: &str) -> Config {
        Config::from_str(&format!("{BASE}{extra}"), Path::new("/srv/sensors.toml")).expect("valid config")
    }

    const PUSH: &str = "[pushgateway]\nurl = \"http://push:9091\"\nusername = \"icewatch\"\npassword = \"one\"\n";

    #[test]
    fn only_listener_and_pushgateway_changes_wait_for_a_restart() {
        let started_with = config(PUSH);
        assert!(restart_only_changes(&config(PUSH), &started_with).is_empty());
        assert!(
            restart_only_changes(&config(&format!("{PUSH}[server]\nshutdown_grace = \"5s\"\n")), &started_with)
                .is_empty(),
            "the grace period applies at once"
        );

        let moved = config(&format!("{PUSH}[server]\nlisten = \"127.0.0.1:9999\"\n"));
        assert_eq!(
            restart_only_changes(&moved, &started_with),
            ["`[server]` listen, TLS and basic auth changes take effect at the next restart"]
        );
        let pushgateway = ["`[pushgateway]` changes take effect at the next restart"];
        assert_eq!(restart_only_changes(&config(""), &started_with), pushgateway, "pushgateway removed");
        let new_password = config(&PUSH.replace("\"one\"", "\"two\""));
        assert_eq!(restart_only_changes(&new_password, &started_with), pushgateway, "a secret compares by value");
    }
}
