//! HTTP endpoints of the service: `/metrics` (Prometheus text format 0.0.4), `/healthz`
//! (liveness), `/readyz` (config loaded and the catalog answered), `/api/v1/results` (the
//! latest result of every sensor as JSON), `POST /-/reload` (re-read `sensors.toml`), the status
//! page (`/`, `/tables/{name}`; see `status_page`) and `/api/v1/lineage` (see `lineage::routes`).
//! Builds the router; binding, TLS, auth and serving are `run`'s (auth wraps the router as a
//! layer, so routes added here are protected too).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

use crate::pipeline::Pipeline;

/// A request to re-read the configuration; `reply` (when someone waits) gets the outcome, the
/// error chain as text when the new configuration was rejected.
pub struct ReloadRequest {
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// What the handlers share. The pipeline is swapped whole when the configuration is reloaded;
/// a handler takes the current one once and uses it to the end of the request.
pub struct AppState {
    pipeline: RwLock<Arc<Pipeline>>,
    /// Set once the catalog has answered.
    pub ready: AtomicBool,
    reload: Option<mpsc::Sender<ReloadRequest>>,
}

impl AppState {
    /// `reload`: where `POST /-/reload` sends its requests (`None`: the endpoint answers 503).
    pub fn new(pipeline: Arc<Pipeline>, reload: Option<mpsc::Sender<ReloadRequest>>) -> AppState {
        AppState { pipeline: RwLock::new(pipeline), ready: AtomicBool::new(false), reload }
    }

    /// The pipeline of the configuration in force.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        match self.pipeline.read() {
            Ok(pipeline) => pipeline.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts the pipeline of a newly loaded configuration in force.
    pub fn set_pipeline(&self, pipeline: Arc<Pipeline>) {
        match self.pipeline.write() {
            Ok(mut slot) => *slot = pipeline,
            Err(poisoned) => *poisoned.into_inner() = pipeline,
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/results", get(results))
        .route("/-/reload", post(reload))
        .merge(crate::status_page::routes())
        .merge(crate::lineage::routes())
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let pipeline = state.pipeline();
    pipeline.refresh_store_metrics().await;
    let body = pipeline.metrics().encode();
    ([(header::CONTENT_TYPE, crate::export::pushgateway::TEXT_FORMAT)], body).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the catalog has not answered yet\n").into_response()
    }
}

async fn results(State(state): State<Arc<AppState>>) -> Response {
    let evaluations: Vec<_> =
        state.pipeline().latest_results().into_iter().flat_map(|result| result.evaluations).collect();
    axum::Json(serde_json::json!({ "results": evaluations })).into_response()
}

/// `POST /-/reload`: 200 once the new configuration runs, 500 with the reasons when it was
/// rejected (the old one keeps running), as Prometheus' own `/-/reload` answers.
async fn reload(State(state): State<Arc<AppState>>) -> Response {
    let Some(sender) = &state.reload else {
        return (StatusCode::SERVICE_UNAVAILABLE, "reloading is not available\n").into_response();
    };
    let (reply, outcome) = oneshot::channel();
    if sender.send(ReloadRequest { reply: Some(reply) }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the service is shutting down\n").into_response();
    }
    match outcome.await {
        Ok(Ok(())) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Ok(Err(reason)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload the configuration: {reason}\n"))
                .into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the service is shutting down\n").into_response(),
    }
}
