//! HTTP endpoints of the service: `/metrics` (Prometheus text format 0.0.4), `/healthz`
//! (liveness), `/readyz` (config loaded and the catalog answered), `/api/v1/results` (the
//! latest result of every sensor as JSON), the status page (`/`, `/tables/{name}`; see
//! `status_page`) and `/api/v1/lineage` (see `lineage::routes`). Builds the router; binding
//! and serving is `run`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::pipeline::Pipeline;

/// What the handlers share.
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    /// Set once the catalog has answered.
    pub ready: AtomicBool,
    /// Pipelines, OpenLineage runs and the `pipeline_*` metrics.
    pub lineage: Arc<crate::lineage::Lineage>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/results", get(results))
        .merge(crate::status_page::routes())
        .merge(crate::lineage::routes())
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.pipeline.refresh_store_metrics().await;
    let body = state.pipeline.metrics().encode();
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
    let evaluations: Vec<_> = state.pipeline.latest_results().into_iter().flat_map(|result| result.evaluations).collect();
    axum::Json(serde_json::json!({ "results": evaluations })).into_response()
}
