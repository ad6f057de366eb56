//! `icewatch run`: the long-running service. Starts the HTTP server, runs every sensor once,
//! then on its cron schedule; pushes to the Pushgateway when configured; on SIGTERM/SIGINT stops
//! new runs, waits for running ones, pushes a last time and exits 0.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SensorKind};
use crate::export::metrics::Metrics;
use crate::export::pushgateway::{PushgatewayClient, PushgatewayOptions};
use crate::pipeline::Pipeline;
use crate::scheduler::{Clock, Job, RunOutcome, SchedulerEvents, SchedulerOptions, run_scheduler};
use crate::server::{AppState, router};

/// Longest a push may wait after a run before it is sent (runs close together share a push).
const PUSH_DEBOUNCE: Duration = Duration::from_secs(1);
/// How long running sensors may finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub async fn run(config_path: &Path) -> anyhow::Result<u8> {
    let config = Arc::new(Config::load(config_path)?);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    serve(config, shutdown).await?;
    Ok(0)
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn stop_on_signal(token: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}

/// Runs the service for `config` until `shutdown` is cancelled.
pub async fn serve(config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    metrics.icewatch_up.set(1);
    let pipeline = Arc::new(Pipeline::new(config.clone(), metrics.clone()).await?);
    // Lineage: replay stored OpenLineage events, re-evaluated after every sensor run.
    let lineage = Arc::new(crate::lineage::Lineage::new(config.clone(), metrics.clone(), pipeline.history().clone()));
    if let Err(error) = lineage.restore().await {
        tracing::warn!(error = %crate::sensors::error_chain(&error), "failed to replay stored OpenLineage events");
    }
    let state = Arc::new(AppState { pipeline: pipeline.clone(), ready: false.into(), lineage });

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("failed to listen on `{}` (server.listen)", config.server.listen))?;
    tracing::info!(address = %config.server.listen, tables = config.tables.len(), "icewatch serving /metrics");
    let server_shutdown = shutdown.clone();
    let app = router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await
    });

    let pusher = match &config.pushgateway {
        Some(push) => Some(Arc::new(Pusher::new(push, metrics.clone())?)),
        None => None,
    };
    let push_task = pusher.clone().map(|pusher| tokio::spawn(pusher.run(shutdown.clone())));

    // Readiness: the catalog answered.
    match pipeline.catalog().await {
        Ok(catalog) => {
            tracing::info!(catalog = catalog.uri(), "catalog connected");
            state.ready.store(true, Ordering::Relaxed);
        }
        Err(error) => tracing::error!(%error, "catalog not reachable yet; sensors will report errors and retry"),
    }

    // A first pass at once, so /metrics has data before the first cron tick.
    tokio::select! {
        results = pipeline.run_all(&[]) => {
            state.lineage.refresh(&pipeline.latest_results()); // lineage
            if results.iter().any(|result| result.evaluations.iter().all(|evaluation| evaluation.status != crate::sensors::Status::Error)) {
                state.ready.store(true, Ordering::Relaxed);
            }
        }
        _ = shutdown.cancelled() => {}
    }
    if let Some(pusher) = &pusher {
        pusher.request();
    }

    let jobs: Vec<Job> = config
        .tables
        .iter()
        .flat_map(|table| {
            table.sensor_kinds().into_iter().filter_map(move |kind| {
                let settings = table.settings(kind)?;
                Some(Job {
                    key: job_key(table.name.as_str(), kind),
                    schedule: settings.schedule.cron.clone(),
                    timeout: settings.timeout + Duration::from_secs(5),
                })
            })
        })
        .collect();
    let options = SchedulerOptions { concurrency: config.defaults.concurrency, shutdown_grace: SHUTDOWN_GRACE, ..SchedulerOptions::default() };
    let events: Arc<dyn SchedulerEvents> = Arc::new(MetricEvents { metrics: metrics.clone() });
    let run_pipeline = pipeline.clone();
    let run_pusher = pusher.clone();
    let run_state = state.clone();
    let report = run_scheduler(
        jobs,
        options,
        Clock::system(),
        events,
        move |key| {
            let pipeline = run_pipeline.clone();
            let pusher = run_pusher.clone();
            let state = run_state.clone();
            async move {
                let Some((table, kind)) = parse_job_key(&key) else { return };
                if let Some(result) = pipeline.run_sensor(table, kind).await
                    && result.status() != crate::sensors::Status::Error
                {
                    state.ready.store(true, Ordering::Relaxed);
                }
                state.lineage.refresh(&pipeline.latest_results()); // lineage
                if let Some(pusher) = &pusher {
                    pusher.request();
                }
            }
        },
        shutdown.clone(),
    )
    .await;
    if !report.still_running.is_empty() {
        tracing::warn!(runs = ?report.still_running, "sensor runs still going at the end of the grace period were stopped");
    }

    metrics.icewatch_up.set(0);
    if let Some(task) = push_task {
        let _ = task.await;
    }
    if let Some(pusher) = &pusher {
        pusher.finish().await;
    }
    pipeline.history().close().await;
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "HTTP server failed"),
        Err(error) => tracing::error!(%error, "HTTP server task failed"),
    }
    tracing::info!("icewatch stopped");
    Ok(())
}

fn job_key(table: &str, kind: SensorKind) -> String {
    format!("{table}/{kind}")
}

fn parse_job_key(key: &str) -> Option<(&str, SensorKind)> {
    let (table, kind) = key.rsplit_once('/')?;
    let kind = SensorKind::TABLE_KINDS.into_iter().find(|candidate| candidate.as_str() == kind)?;
    Some((table, kind))
}

/// Scheduler events become service metrics.
struct MetricEvents {
    metrics: Arc<Metrics>,
}

impl SchedulerEvents for MetricEvents {
    fn run_started(&self, _key: &str, lag: Duration) {
        self.metrics.icewatch_scheduler_lag_seconds.set(lag.as_secs_f64());
    }

    fn run_finished(&self, key: &str, outcome: RunOutcome, elapsed: Duration) {
        let Some((table, kind)) = parse_job_key(key) else { return };
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

    fn run_skipped(&self, key: &str) {
        if let Some((table, kind)) = parse_job_key(key) {
            self.metrics.icewatch_sensor_skipped_runs_total.with_label_values(&[table, kind.as_str()]).inc();
        }
    }
}

/// Pushes the whole registry to the Pushgateway after runs, at most once per debounce period;
/// failures are counted and the latest values go out with the next successful push.
struct Pusher {
    client: PushgatewayClient,
    metrics: Arc<Metrics>,
    wanted: Notify,
    delete_on_shutdown: bool,
}

impl Pusher {
    fn new(config: &crate::config::PushgatewayConfig, metrics: Arc<Metrics>) -> anyhow::Result<Pusher> {
        let mut options = PushgatewayOptions::new(config.url.clone(), config.job.clone());
        options.grouping = config.grouping.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
        options.timeout = config.timeout;
        options.retries = config.retries;
        options.basic_auth = config.username.clone().map(|user| (user, config.password.as_ref().map(|secret| secret.expose().to_string()).unwrap_or_default()));
        options.ca_certificate = config.ca_file.clone();
        options.insecure_skip_verify = config.insecure_skip_verify;
        let client = PushgatewayClient::new(options).context("invalid [pushgateway] settings")?;
        Ok(Pusher { client, metrics, wanted: Notify::new(), delete_on_shutdown: config.delete_on_shutdown })
    }

    fn request(&self) {
        self.wanted.notify_one();
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.wanted.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(PUSH_DEBOUNCE) => {}
                _ = shutdown.cancelled() => return,
            }
            self.push_once().await;
        }
    }

    async fn push_once(&self) {
        match self.client.push(&self.metrics.encode()).await {
            Ok(()) => self.metrics.icewatch_last_push_success_timestamp_seconds.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0),
            Err(error) => {
                self.metrics.icewatch_push_failures_total.inc();
                tracing::warn!(error = %crate::sensors::error_chain(&error), "push to the Pushgateway failed");
            }
        }
    }

    /// The last push at shutdown (with `icewatch_up` 0), or deleting the group when configured.
    async fn finish(&self) {
        if self.delete_on_shutdown {
            if let Err(error) = self.client.delete().await {
                tracing::warn!(error = %crate::sensors::error_chain(&error), "failed to delete the Pushgateway group");
            }
        } else {
            self.push_once().await;
        }
    }
}
