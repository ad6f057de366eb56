//! `GET /api/v1/lineage` (the graph and stage health as JSON) and `POST /api/v1/lineage`
//! (one OpenLineage RunEvent per request, at most [`MAX_EVENT_BYTES`]). Only the HTTP shape
//! lives here: validation and its limits are `lineage::openlineage`'s, state and storage are
//! [`crate::lineage::Lineage`]'s. A refused event is answered with `{"error": ...}` and counted
//! in `icewatch_lineage_events_refused_total{reason}` (a body declared longer than the limit
//! never gets here: the service's listener refuses it first).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

pub use crate::lineage::MAX_EVENT_BYTES;
use crate::lineage::{EventError, LineageError};
use crate::service::AppState;

/// The lineage routes, merged into the server's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/lineage", get(show).post(receive)).layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
}

async fn show(State(state): State<Arc<AppState>>) -> Response {
    let (pipeline, lineage) = (state.pipeline(), state.lineage());
    lineage.refresh(&pipeline.latest_results());
    axum::Json(lineage.view()).into_response()
}

async fn receive(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let (pipeline, lineage) = (state.pipeline(), state.lineage());
    let refuse = |status: StatusCode, reason: &'static str, message: String| {
        pipeline.metrics().icewatch_lineage_events_refused_total.with_label_values(&[reason]).inc();
        tracing::warn!(error = %message, reason, "OpenLineage event refused");
        (status, axum::Json(json!({ "error": message }))).into_response()
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("the body is larger than the {MAX_EVENT_BYTES} bytes accepted");
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message);
        }
        Err(rejection) => return rejection.into_response(),
    };
    match lineage.ingest(body).await {
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
        Err(LineageError::Event(error)) => refuse(status_of(&error), error.reason(), bounded(error.to_string())),
        Err(error @ LineageError::History(_)) => {
            let message = crate::sensors::error_chain(&error);
            tracing::error!(error = %message, "OpenLineage event not stored");
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": message }))).into_response()
        }
    }
}

/// 413 for a name over its length limit, 422 for too many datasets, 400 for the rest.
fn status_of(error: &EventError) -> StatusCode {
    match error {
        EventError::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        EventError::TooManyDatasets { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        EventError::NotJson(_) | EventError::Shape(_) | EventError::Invalid { .. } => StatusCode::BAD_REQUEST,
    }
}

/// Longest refusal message answered and logged: a message may quote the value it refuses.
const MAX_MESSAGE_CHARS: usize = 1_000;

fn bounded(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message,
    }
}
