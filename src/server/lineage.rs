//! `GET /api/v1/lineage` (the graph and stage health as JSON) and `POST /api/v1/lineage`
//! (one OpenLineage RunEvent per request, at most [`MAX_EVENT_BYTES`]). Only the HTTP shape
//! lives here: validation is `lineage::openlineage`'s, state and storage are
//! [`crate::lineage::Lineage`]'s.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::lineage::LineageError;
use crate::service::AppState;

/// Largest accepted event body; a larger one is answered 413 before it is read whole.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The lineage routes, merged into the server's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/lineage", get(show).post(receive)).layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
}

async fn show(State(state): State<Arc<AppState>>) -> Response {
    let (pipeline, lineage) = (state.pipeline(), state.lineage());
    lineage.refresh(&pipeline.latest_results());
    axum::Json(lineage.view()).into_response()
}

async fn receive(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let (pipeline, lineage) = (state.pipeline(), state.lineage());
    match lineage.ingest(&body).await {
        Ok(event) => {
            lineage.refresh(&pipeline.latest_results());
            let links: Vec<_> = event
                .outputs
                .iter()
                .filter_map(|output| {
                    Some(json!({ "table": output.table.as_ref()?, "snapshot_id": output.snapshot_id? }))
                })
                .collect();
            let tables: Vec<String> =
                event.inputs.iter().chain(&event.outputs).filter_map(|dataset| dataset.table.clone()).collect();
            let body = json!({ "accepted": true, "run_id": event.run_id, "event_type": event.event_type, "tables": tables, "snapshots": links });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Err(LineageError::Event(error)) => {
            tracing::warn!(%error, "OpenLineage event refused");
            (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": error.to_string() }))).into_response()
        }
        Err(error @ LineageError::History(_)) => {
            let message = crate::sensors::error_chain(&error);
            tracing::error!(error = %message, "OpenLineage event not stored");
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": message }))).into_response()
        }
    }
}
