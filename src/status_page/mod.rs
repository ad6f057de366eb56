//! The status page: `/` (every monitored table by layer and pipeline, with each sensor's
//! status, value, expected range and why) and `/tables/{name}` (history charts with expected
//! bands, schema-change timeline, lineage). Server-side rendered HTML with inline SVG, CSS and
//! a small refresh script, all embedded in the binary; `?fragment=1` returns only the `<main>`
//! content the script swaps in. It reads the pipeline's latest results and the history store;
//! it never runs sensors, writes history or talks to the catalog.

mod charts;
mod html;
mod lineage;
mod render;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use charts::{Chart, ChartPoint};

use crate::config::{SensorKind, Statistic, TableConfig};
use crate::history::{HistoryError, HistoryStore, Point, SeriesKey};
use crate::judging::Measure;
use crate::lineage::PipelineStatus;
use crate::pipeline::Pipeline;
use crate::sensors::{freshness, volume};
use crate::service::AppState;
use crate::stats::Direction;

/// Most points drawn in one chart (the newest).
const MAX_CHART_POINTS: usize = 240;
/// Most stored points read before the first drawn one, as the judges' history for its band.
const MAX_PRECEDING_POINTS: usize = 5_000;
/// Schema changes listed on a table's page.
const MAX_SCHEMA_EVENTS: usize = 50;

/// The status-page routes, merged into the server's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/", get(overview)).route("/tables/{name}", get(table))
}

fn wants_fragment(query: &HashMap<String, String>) -> bool {
    query.get("fragment").is_some_and(|value| value != "0")
}

fn html_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body)
        .into_response()
}

async fn overview(State(state): State<Arc<AppState>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let pipeline = state.pipeline();
    let body = render_overview(&pipeline, &state.lineage().view().pipelines);
    if wants_fragment(&query) {
        return html_response(StatusCode::OK, body);
    }
    html_response(StatusCode::OK, render::page("icewatch · status", "/?fragment=1", &body))
}

async fn table(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let pipeline = state.pipeline();
    let (status, body) = match render_table(&pipeline, &state.lineage().view().pipelines, &name).await {
        Some(body) => (StatusCode::OK, body),
        None => (StatusCode::NOT_FOUND, render::unknown_table(&name)),
    };
    if wants_fragment(&query) {
        return html_response(status, body);
    }
    let fragment_url = format!("{}?fragment=1", html::table_href(&name));
    html_response(status, render::page(&format!("{name} · icewatch"), &fragment_url, &body))
}

/// The overview fragment for the pipeline's current results.
pub fn render_overview(pipeline: &Pipeline, lineage: &[PipelineStatus]) -> String {
    let config = pipeline.config();
    let tables = render::table_views(config, &pipeline.latest_results());
    render::overview(config, &tables, lineage, chrono::Utc::now().timestamp_millis())
}

/// A table's page fragment; `None` when the table is not configured.
pub async fn render_table(pipeline: &Pipeline, lineage: &[PipelineStatus], name: &str) -> Option<String> {
    let config = pipeline.config();
    let table_config = config.table(name)?;
    let results = pipeline.latest_results();
    let tables = render::table_views(config, &results);
    let view = tables.iter().find(|view| view.name == name)?;
    let history = table_history(pipeline.history(), table_config, view).await;
    Some(render::table_page(config, &tables, view, &history, lineage, chrono::Utc::now().timestamp_millis()))
}

/// The newest points of `series` to draw and the stored points before them (oldest first).
async fn points_with_history(
    store: &HistoryStore,
    series: &SeriesKey,
    preceding_limit: usize,
) -> Result<(Vec<Point>, Vec<Point>), HistoryError> {
    let shown = store.window(series, i64::MAX, MAX_CHART_POINTS).await?;
    let preceding = match shown.first() {
        Some(first) if preceding_limit > 0 => store.window(series, first.observed_at_ms, preceding_limit).await?,
        _ => Vec::new(),
    };
    Ok((preceding, shown))
}

async fn table_history(store: &HistoryStore, table: &TableConfig, view: &render::TableView) -> render::TableHistory {
    let name = table.name.as_str();
    let mut charts = Vec::new();
    let mut problems = Vec::new();
    let mut failed = |what: &str, error: HistoryError| {
        problems.push(format!("could not read {what}: {}", crate::sensors::error_chain(&error)))
    };

    if let Some(config) = &table.volume {
        match points_with_history(store, &volume::rows_added_series(name), MAX_PRECEDING_POINTS).await {
            Ok((preceding, shown)) => charts.push(Chart {
                series: "volume/rows_added".to_string(),
                title: "Rows added per commit".to_string(),
                note: format!(
                    "band: the volume judge's mean ± {} σ over the {} before each append",
                    config.settings.zscore_threshold,
                    crate::config::duration_to_string(config.window)
                ),
                seconds: false,
                points: charts::volume_points(name, config, &preceding, &shown),
            }),
            Err(error) => failed("rows added", error),
        }
        match points_with_history(store, &volume::total_rows_series(name), 0).await {
            Ok((_, shown)) => charts.push(Chart {
                series: "volume/total_rows".to_string(),
                title: "Total rows".to_string(),
                note: "per snapshot, from the snapshot summary".to_string(),
                seconds: false,
                points: shown.iter().map(ChartPoint::plain).collect(),
            }),
            Err(error) => failed("total rows", error),
        }
    }
    if let Some(config) = &table.freshness {
        match points_with_history(store, &freshness::gap_series(name), config.settings.window).await {
            Ok((preceding, shown)) => {
                let mut points =
                    charts::scored_points(&config.settings, Direction::Spike, Measure::CommitGap, &preceding, &shown);
                // The open gap of the latest run (time since the last data commit), with its band.
                let live = view
                    .results
                    .iter()
                    .filter(|result| result.sensor == SensorKind::FRESHNESS)
                    .flat_map(|result| {
                        result.evaluations.iter().map(move |evaluation| (result.finished_at_ms, evaluation))
                    })
                    .find(|(_, evaluation)| evaluation.metric == crate::sensors::Metric::COMMIT_GAP_SECONDS);
                if let Some((at_ms, evaluation)) = live
                    && let Some(value) = evaluation.value
                    && points.last().is_none_or(|last| last.at_ms < at_ms)
                {
                    points.push(ChartPoint {
                        at_ms,
                        value,
                        band: evaluation.expected_lower.zip(evaluation.expected_upper),
                        anomaly: matches!(
                            evaluation.status,
                            crate::sensors::Status::Warning | crate::sensors::Status::Critical
                        ),
                        snapshot_id: None,
                        live: true,
                        watched: Direction::Spike,
                    });
                }
                charts.push(Chart {
                    series: "freshness/commit_gap_seconds".to_string(),
                    title: "Time between data commits".to_string(),
                    note: format!(
                        "band: mean + {} σ of the {} gaps before (later than usual is late); hollow point: the gap open now",
                        config.settings.zscore_threshold, config.settings.window
                    ),
                    seconds: true,
                    points,
                });
            }
            Err(error) => failed("commit gaps", error),
        }
    }
    if table.schema.is_some() {
        let series = SeriesKey::new(name, SensorKind::SCHEMA.as_str(), "column_count", &[]);
        match points_with_history(store, &series, 0).await {
            Ok((_, shown)) => charts.push(Chart {
                series: "schema/column_count".to_string(),
                title: "Columns".to_string(),
                note: "top-level column count per check".to_string(),
                seconds: false,
                points: shown.iter().map(ChartPoint::plain).collect(),
            }),
            Err(error) => failed("column counts", error),
        }
    }
    if let Some(config) = &table.distribution {
        match store.series_for_table(name).await {
            Ok(all_series) => {
                for series in all_series.into_iter().filter(|series| series.sensor == SensorKind::DISTRIBUTION.as_str())
                {
                    match points_with_history(store, &series, config.settings.window).await {
                        Ok((preceding, shown)) => {
                            let labels = parse_labels(&series.labels);
                            let label =
                                |key: &str| labels.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone());
                            // Every distribution series names its statistic; one that
                            // does not (or names a statistic this version has not) cannot
                            // be judged, so it is not drawn with a band either.
                            let Some(statistic) = label("statistic").as_deref().and_then(Statistic::parse) else {
                                continue;
                            };
                            let title = match (label("column"), label("statistic")) {
                                (Some(column), Some(statistic)) => {
                                    format!("{column} · {statistic}")
                                }
                                _ => format!("{} {}", series.metric, series.labels),
                            };
                            let suffix =
                                if series.labels.is_empty() { String::new() } else { format!("{{{}}}", series.labels) };
                            charts.push(Chart {
                                series: format!("distribution/{}{suffix}", series.metric),
                                title,
                                note: format!(
                                    "band: mean ± {} σ of the {} values before",
                                    config.settings.zscore_threshold, config.settings.window
                                ),
                                seconds: false,
                                points: charts::scored_points(
                                    &config.settings,
                                    config.settings.direction,
                                    Measure::Distribution(statistic),
                                    &preceding,
                                    &shown,
                                ),
                            });
                        }
                        Err(error) => failed("a distribution series", error),
                    }
                }
            }
            Err(error) => failed("the table's series", error),
        }
    }
    let schema_changes = match store.events(Some(name), "schema_change", MAX_SCHEMA_EVENTS).await {
        Ok(events) => events,
        Err(error) => {
            failed("schema changes", error);
            Vec::new()
        }
    };
    render::TableHistory { charts, schema_changes, problems }
}

/// Splits a canonical `k=v,k2=v2` label string (`,` `=` `\` escaped by `\`).
fn parse_labels(labels: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let (mut key, mut value, mut in_value, mut escaped) = (String::new(), String::new(), false, false);
    for character in labels.chars() {
        let target = if in_value { &mut value } else { &mut key };
        match character {
            _ if escaped => {
                target.push(character);
                escaped = false;
            }
            '\\' => escaped = true,
            '=' if !in_value => in_value = true,
            ',' => {
                pairs.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                in_value = false;
            }
            other => target.push(other),
        }
    }
    if !key.is_empty() || in_value {
        pairs.push((key, value));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_through_series_keys() {
        let key = SeriesKey::new("a.b", "distribution", "value", &[("statistic", "mean"), ("column", "we,ird=col\\")]);
        assert_eq!(
            parse_labels(&key.labels),
            vec![("column".to_string(), "we,ird=col\\".to_string()), ("statistic".to_string(), "mean".to_string())]
        );
        assert!(parse_labels("").is_empty());
    }
}
