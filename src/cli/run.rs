//! `icewatch run`: the long-running service. Starts the HTTP server (optionally with TLS and
//! basic auth), runs every sensor once, then on its cron schedule; pushes to the Pushgateway
//! when configured. SIGHUP or `POST /-/reload` re-reads `sensors.toml`: a valid file replaces
//! the pipeline and its scheduler (the metrics registry stays; series of removed tables go), an
//! invalid one is logged and rejected while the old configuration keeps running. On
//! SIGTERM/SIGINT it stops new runs, waits for running ones up to `server.shutdown_grace`,
//! pushes a last time (with `icewatch_up` 0), closes the history store and exits 0.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SensorKind, ServerConfig, TableName};
use crate::export::metrics::Metrics;
use crate::export::pushgateway::{PushgatewayClient, PushgatewayOptions};
use crate::pipeline::Pipeline;
use crate::scheduler::{Clock, Job, RunOutcome, SchedulerEvents, SchedulerOptions, ShutdownReport, run_scheduler};
use crate::server::{AppState, ReloadRequest, router};
use crate::web_config::{BasicAuth, TlsListener, require_basic_auth, tls_acceptor};

/// Longest a push may wait after a run before it is sent (runs close together share a push).
const PUSH_DEBOUNCE: Duration = Duration::from_secs(1);

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

/// Turns every SIGHUP into a reload request, until `shutdown`.
async fn reload_on_hangup(reloads: mpsc::Sender<ReloadRequest>, shutdown: CancellationToken) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reload with POST /-/reload");
            return;
        }
    };
    loop {
        tokio::select! {
            received = hangups.recv() => {
                if received.is_none() || reloads.send(ReloadRequest { reply: None }).await.is_err() {
                    return;
                }
                tracing::info!("SIGHUP: reloading the configuration");
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Runs the service for `config` until `shutdown` is cancelled.
pub async fn serve(config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    metrics.icewatch_up.set(1);
    let pipeline = Arc::new(Pipeline::new(config.clone(), metrics.clone()).await?);
    let (reload_sender, mut reloads) = mpsc::channel(4);
    let state = Arc::new(AppState::new(pipeline.clone(), Some(reload_sender.clone())));

    // The server outlives the sensor runs: it stops after the last push, so /metrics answers
    // while runs drain.
    let server_stop = CancellationToken::new();
    let server = start_server(&config.server, state.clone(), server_stop.clone()).await?;
    tracing::info!(address = %config.server.listen, tls = config.server.tls.is_some(), basic_auth = !config.server.basic_auth_users.is_empty(), tables = config.tables.len(), "icewatch serving /metrics");
    tokio::spawn(reload_on_hangup(reload_sender, shutdown.clone()));

    let pusher = match &config.pushgateway {
        Some(push) => Some(Arc::new(Pusher::new(push, metrics.clone(), state.clone())?)),
        None => None,
    };
    let push_task = pusher.clone().map(|pusher| tokio::spawn(pusher.run(shutdown.clone())));

    let mut current = Generation::start(pipeline, state.clone(), pusher.clone(), metrics.clone(), &shutdown);
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = current.drive() => break,
            request = reloads.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let outcome = match prepare_reload(&current, &config, &metrics).await {
            Ok(next) => {
                let old = current.stop().await;
                state.set_pipeline(next.clone());
                old.history().close().await;
                let configured = next.config().clone();
                let forgotten = metrics.forget_tables(&|table| configured.table(table).is_some());
                tracing::info!(tables = configured.tables.len(), removed_series = forgotten, "configuration reloaded");
                current = Generation::start(next, state.clone(), pusher.clone(), metrics.clone(), &shutdown);
                Ok(())
            }
            Err(error) => {
                let reason = format!("{error:#}");
                tracing::error!(error = %reason, "the new configuration was rejected; the previous one keeps running");
                Err(reason)
            }
        };
        if let Some(reply) = request.reply {
            let _ = reply.send(outcome);
        }
    }

    let pipeline = current.stop().await;
    metrics.icewatch_up.set(0);
    if let Some(task) = push_task {
        let _ = task.await;
    }
    if let Some(pusher) = &pusher {
        pusher.finish().await;
    }
    pipeline.history().close().await;
    server_stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "HTTP server failed"),
        Err(error) => tracing::error!(%error, "HTTP server task failed"),
    }
    tracing::info!("icewatch stopped");
    Ok(())
}

/// Binds `server.listen` and serves the router there (HTTPS and basic auth when configured)
/// until `stop`.
async fn start_server(
    server: &ServerConfig,
    state: Arc<AppState>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(server.listen)
        .await
        .with_context(|| format!("failed to listen on `{}` (server.listen)", server.listen))?;
    let mut app = router(state);
    if let Some(auth) = BasicAuth::new(&server.basic_auth_users) {
        app = app.layer(axum::middleware::from_fn_with_state(auth, require_basic_auth));
    }
    let task = match &server.tls {
        Some(tls) => {
            let acceptor = tls_acceptor(tls)?;
            let listener = TlsListener::new(listener, acceptor)?;
            tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await })
        }
        None => {
            tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await })
        }
    };
    Ok(task)
}

/// Reads the configuration file again and opens its pipeline, without touching the running
/// one: any error here leaves the service as it was.
async fn prepare_reload(
    current: &Generation,
    started_with: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<Pipeline>> {
    let path = current.pipeline.config().source.clone();
    let config = Config::load(&path)?;
    let restart_only = |new: &ServerConfig, old: &ServerConfig| {
        new.listen != old.listen || new.tls != old.tls || new.basic_auth_users != old.basic_auth_users
    };
    if restart_only(&config.server, &started_with.server) {
        tracing::warn!("`[server]` listen, TLS and basic auth changes take effect at the next restart");
    }
    if config.pushgateway != started_with.pushgateway {
        tracing::warn!("`[pushgateway]` changes take effect at the next restart");
    }
    let pipeline = Pipeline::new(Arc::new(config), metrics.clone())
        .await
        .context("failed to open the history store of the new configuration")?;
    Ok(Arc::new(pipeline))
}

/// One configuration at work: its pipeline, and its first pass and scheduler as a future that
/// `serve` polls next to the reload requests (the scheduler spawns the runs themselves).
struct Generation {
    pipeline: Arc<Pipeline>,
    stop: CancellationToken,
    running: Pin<Box<dyn Future<Output = ShutdownReport<SensorJob>>>>,
    /// Set once `running` has finished (it only does after `stop` or the shutdown).
    report: Option<ShutdownReport<SensorJob>>,
}

impl Generation {
    fn start(
        pipeline: Arc<Pipeline>,
        state: Arc<AppState>,
        pusher: Option<Arc<Pusher>>,
        metrics: Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> Generation {
        let stop = shutdown.child_token();
        let running = Box::pin(run_generation(pipeline.clone(), state, pusher, metrics, stop.clone()));
        Generation { pipeline, stop, running, report: None }
    }

    /// Drives the first pass and the scheduler; returns when they end.
    async fn drive(&mut self) {
        if self.report.is_none() {
            self.report = Some((&mut self.running).await);
        }
    }

    /// Stops new runs, waits for running ones up to the grace period, and hands the pipeline back.
    async fn stop(mut self) -> Arc<Pipeline> {
        self.stop.cancel();
        self.drive().await;
        if let Some(report) = &self.report
            && !report.still_running.is_empty()
        {
            let runs: Vec<String> = report.still_running.iter().map(SensorJob::to_string).collect();
            tracing::warn!(?runs, "sensor runs still going at the end of the grace period were stopped");
        }
        self.pipeline
    }
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
            if results.iter().any(|result| result.evaluations.iter().all(|evaluation| evaluation.status != crate::sensors::Status::Error)) {
                state.ready.store(true, Ordering::Relaxed);
            }
        }
        _ = stop.cancelled() => return ShutdownReport::default(),
    }
    if let Some(pusher) = &pusher {
        pusher.request();
    }

    let jobs: Vec<Job<SensorJob>> = config
        .tables
        .iter()
        .flat_map(|table| {
            table.sensor_kinds().into_iter().filter_map(move |kind| {
                let settings = table.settings(kind)?;
                Some(Job {
                    key: SensorJob { table: table.name.clone(), kind },
                    schedule: settings.schedule.cron.clone(),
                    timeout: settings.timeout + Duration::from_secs(5),
                })
            })
        })
        .collect();
    // Counters of events that may never happen are exported at 0 from the start, so rate()
    // and increase() over them answer 0 rather than nothing.
    for job in &jobs {
        metrics.icewatch_sensor_skipped_runs_total.with_label_values(&[job.key.table.as_str(), job.key.kind.as_str()]);
    }
    let options = SchedulerOptions {
        concurrency: config.defaults.concurrency,
        shutdown_grace: config.server.shutdown_grace,
        ..SchedulerOptions::default()
    };
    let events: Arc<dyn SchedulerEvents<SensorJob>> = Arc::new(MetricEvents { metrics });
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
                    && result.status() != crate::sensors::Status::Error
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

/// The scheduler's key of one sensor of one table. Its text, `bronze.raw_trades/volume`, names
/// the job in the scheduler's logs and seeds its jitter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SensorJob {
    table: TableName,
    kind: SensorKind,
}

impl fmt::Display for SensorJob {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.table, self.kind)
    }
}

/// Scheduler events become service metrics.
struct MetricEvents {
    metrics: Arc<Metrics>,
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

/// Pushes the whole registry to the Pushgateway after runs, at most once per debounce period;
/// failures are counted and the latest values go out with the next successful push.
struct Pusher {
    client: PushgatewayClient,
    metrics: Arc<Metrics>,
    /// For the pipeline in force, whose store gauges are refreshed before each push.
    state: Arc<AppState>,
    wanted: Notify,
    delete_on_shutdown: bool,
}

impl Pusher {
    fn new(
        config: &crate::config::PushgatewayConfig,
        metrics: Arc<Metrics>,
        state: Arc<AppState>,
    ) -> anyhow::Result<Pusher> {
        let mut options = PushgatewayOptions::new(config.url.clone(), config.job.clone());
        options.grouping = config.grouping.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
        options.timeout = config.timeout;
        options.retries = config.retries;
        options.basic_auth = config
            .username
            .clone()
            .map(|user| (user, config.password.as_ref().map(|secret| secret.expose().to_string()).unwrap_or_default()));
        options.ca_certificate = config.ca_file.clone();
        options.insecure_skip_verify = config.insecure_skip_verify;
        let client = PushgatewayClient::new(options).context("invalid [pushgateway] settings")?;
        Ok(Pusher { client, metrics, state, wanted: Notify::new(), delete_on_shutdown: config.delete_on_shutdown })
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
        self.state.pipeline().refresh_store_metrics().await;
        match self.client.push(&self.metrics.encode()).await {
            Ok(()) => self
                .metrics
                .icewatch_last_push_success_timestamp_seconds
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0),
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
