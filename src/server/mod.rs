//! HTTP endpoints of the service: `/metrics` (Prometheus text format 0.0.4), `/healthz`
//! (liveness), `/readyz` (config loaded and the catalog answered), `/api/v1/results` (the
//! latest result of every sensor as JSON), `POST /-/reload` (re-read `sensors.toml`), the status
//! page (`/`, `/tables/{name}`; see `status_page`) and `/api/v1/lineage` (`server::lineage`: the
//! HTTP side of the `lineage` module, kept here so that `lineage` stays below the pipeline).
//! Builds the router over the service's [`AppState`]; binding, TLS, auth and serving are the
//! service's (auth wraps the router as a layer, so routes added here are protected too).

mod lineage;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::oneshot;

/// The server's own limits (the listener in `service` enforces them), public for the tests.
pub use crate::service::{BODY_TIMEOUT, HEADER_READ_TIMEOUT};
pub use lineage::MAX_EVENT_BYTES;

// The service answers 413 to any body declared over its limit before a route sees it.
const _: () = assert!(
    MAX_EVENT_BYTES <= crate::service::MAX_REQUEST_BODY_BYTES,
    "lineage events must fit the server's body limit"
);

use crate::service::{AppState, ReloadRequest};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/results", get(results))
        .route("/-/reload", post(reload))
        .merge(crate::status_page::routes())
        .merge(lineage::routes())
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
    let Some(sender) = state.reload_requests() else {
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
