//! The long-running service behind `icewatch run` and `icewatch demo`. Starts the HTTP server
//! (optionally with TLS and basic auth), runs every sensor once, then on its cron schedule; pushes
//! to the Pushgateway when configured. SIGHUP or `POST /-/reload` re-reads `sensors.toml`: a valid
//! file replaces the pipeline and its scheduler (the metrics registry stays; series of removed
//! tables go), an invalid one is logged and rejected while the old configuration keeps running.
//! On SIGTERM/SIGINT it stops new runs, waits for running ones up to `server.shutdown_grace`,
//! pushes a last time (with `icewatch_up` 0), closes the history store and exits 0.
//!
//! It owns the service's lifecycle and shared state; it does not parse arguments (`cli`), define
//! routes (`server`, whose router it is handed so that the handlers can depend on [`AppState`]
//! without a cycle), run sensors (`pipeline`) or decide when runs happen (`scheduler`).
//!
//! - `state`: [`AppState`] and [`ReloadRequest`], shared with the HTTP handlers.
//! - `generation`: one configuration's pipeline and scheduler; preparing a reload.
//! - `jobs`: a scheduler job per sensor of a table, and the scheduler-event metrics.
//! - `pusher`: the Pushgateway pusher.
//! - `http`: the accept loop, with the server's timeouts and connection cap.

mod generation;
mod http;
mod jobs;
mod pusher;
mod state;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use http::{BODY_TIMEOUT, HEADER_READ_TIMEOUT, MAX_REQUEST_BODY_BYTES};
pub use state::{AppState, ReloadRequest};

use crate::config::{Config, ServerConfig};
use crate::export::metrics::Metrics;
use crate::lineage::Lineage;
use crate::pipeline::Pipeline;
use crate::web_config::{BasicAuth, require_basic_auth, tls_acceptor};
use generation::{Generation, prepare_reload};
use pusher::Pusher;

/// Builds the HTTP routes over the shared state (`server::router`).
pub type Routes = fn(Arc<AppState>) -> Router;

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

/// Runs the service for `config`, serving `routes`, until `shutdown` is cancelled.
pub async fn serve(config: Arc<Config>, routes: Routes, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    metrics.icewatch_up.set(1);
    // Auth and TLS are checked before anything connects anywhere: a bad hash or certificate
    // stops start-up with its reason.
    let protection = Protection::new(&config.server, &metrics)?;
    let pipeline = Arc::new(Pipeline::new(config.clone(), metrics.clone()).await?);
    let lineage = Lineage::attach(&pipeline);
    let (reload_sender, mut reloads) = mpsc::channel(4);
    let state = Arc::new(AppState::new(pipeline.clone(), lineage, Some(reload_sender.clone())));

    // The server outlives the sensor runs: it stops after the last push, so /metrics answers
    // while runs drain.
    let server_stop = CancellationToken::new();
    let server = start_server(&config.server, protection, routes(state.clone()), &metrics, server_stop.clone()).await?;
    tracing::info!(address = %config.server.listen, tls = config.server.tls.is_some(), basic_auth = !config.server.basic_auth_users.is_empty(), tables = config.tables.len(), "icewatch serving /metrics");
    tokio::spawn(reload_on_hangup(reload_sender, shutdown.clone()));
    // Replayed with the listener up: liveness answers meanwhile, readiness waits for the first pass.
    state.lineage().replay().await;

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
            Ok((next, lineage)) => {
                let old = current.stop().await;
                state.set_pipeline(next.clone(), lineage);
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

/// What `[server]` puts in front of the routes: TLS and basic auth, when configured.
struct Protection {
    tls: Option<TlsAcceptor>,
    auth: Option<Arc<BasicAuth>>,
}

impl Protection {
    fn new(server: &ServerConfig, metrics: &Metrics) -> anyhow::Result<Protection> {
        let busy = metrics.icewatch_http_refused_total.with_label_values(&["auth_busy"]);
        let auth = BasicAuth::new(&server.basic_auth_users, busy)?;
        let tls = server.tls.as_ref().map(tls_acceptor).transpose()?;
        Ok(Protection { tls, auth })
    }
}

/// Binds `server.listen` and serves `app` there (HTTPS and basic auth when configured, the
/// limits of `http`) until `stop`. Auth wraps the whole router as a layer, so every route is
/// protected.
async fn start_server(
    server: &ServerConfig,
    protection: Protection,
    mut app: Router,
    metrics: &Metrics,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(server.listen)
        .await
        .with_context(|| format!("failed to listen on `{}` (server.listen)", server.listen))?;
    if let Some(auth) = protection.auth {
        app = app.layer(axum::middleware::from_fn_with_state(auth, require_basic_auth));
    }
    let refusals = http::Refusals::new(&metrics.icewatch_http_refused_total);
    Ok(tokio::spawn(http::serve(listener, protection.tls, app, refusals, stop)))
}
