//! HTML of the status page: the overview (summary, pipelines, tables by layer) and a table's
//! page (results, history charts, schema timeline, lineage), each as a `<main>` fragment the
//! refresh script swaps in, and the page shell around it. Pure: it gets everything it shows
//! as arguments, escapes every piece of text, and does no IO.

use std::fmt::Write as _;

use super::charts::{self, Chart};
use super::html::{escape, table_href, time, value_in_unit};
use super::lineage::{self, LineageMarks};
use crate::config::{Config, PipelineConfig};
use crate::history::Event;
use crate::lineage::PipelineStatus;
use crate::sensors::SensorResult;
use crate::sensors::{Evaluation, Status};

const CSS: &str = include_str!("assets/status.css");
const SCRIPT: &str = include_str!("assets/refresh.js");

/// How often the refresh script fetches the fragment again.
pub const REFRESH_SECONDS: u64 = 10;

/// One monitored table with its latest results.
#[derive(Clone, Debug)]
pub struct TableView {
    pub name: String,
    pub layer: String,
    pub results: Vec<SensorResult>,
    /// (pipeline, stage) pairs the table is a stage of.
    pub stages: Vec<(String, String)>,
}

impl TableView {
    /// Worst status over the latest results; `None` when no sensor has run yet.
    pub fn status(&self) -> Option<Status> {
        self.results.iter().map(SensorResult::status).max()
    }

    pub fn last_checked_ms(&self) -> Option<i64> {
        self.results.iter().map(|result| result.finished_at_ms).max()
    }
}

/// Every configured table, in config order, with its latest results.
pub fn table_views(config: &Config, results: &[SensorResult]) -> Vec<TableView> {
    config
        .tables
        .iter()
        .map(|table| TableView {
            name: table.name.to_string(),
            layer: table.layer.clone(),
            results: results.iter().filter(|result| result.table == table.name.as_str()).cloned().collect(),
            stages: config
                .pipelines
                .iter()
                .flat_map(|pipeline| {
                    pipeline
                        .stages
                        .iter()
                        .filter(|stage| stage.table == table.name.as_str())
                        .map(|stage| (pipeline.name.clone(), stage.stage.clone()))
                })
                .collect(),
        })
        .collect()
}

fn status_name(status: Option<Status>) -> &'static str {
    status.map_or("pending", Status::as_str)
}

fn status_label(status: Option<Status>) -> &'static str {
    match status {
        None => "not checked yet",
        Some(Status::Ok) => "ok",
        Some(Status::InsufficientHistory) => "insufficient history",
        Some(Status::Warning) => "warning",
        Some(Status::Critical) => "critical",
        Some(Status::Error) => "error",
    }
}

fn pill(status: Option<Status>) -> String {
    format!(r#"<span class="pill pill-{}">{}</span>"#, status_name(status), status_label(status))
}

/// The page shell: inline CSS and script (no external asset), the fragment inside `<main>`.
/// Without JavaScript a `<noscript>` meta refresh reloads the whole page instead.
pub fn page(title: &str, fragment_url: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{CSS}</style>
<noscript><meta http-equiv="refresh" content="{noscript_refresh}"></noscript></head>
<body><header class="top"><a class="brand" href="/"><span class="logo">❄</span> icewatch</a><span class="top-note">Iceberg table sensors</span><span id="refresh-state" class="refresh">auto-refresh every {REFRESH_SECONDS} s</span></header>
<main id="live" data-refresh-url="{url}" data-refresh-seconds="{REFRESH_SECONDS}" data-refresh-count="0">{body}</main>
<footer class="foot">Served by icewatch {version}. <a href="/metrics">/metrics</a> · <a href="/api/v1/results">/api/v1/results</a></footer>
<script>{SCRIPT}</script></body></html>
"#,
        title = escape(title),
        noscript_refresh = REFRESH_SECONDS * 3,
        url = escape(fragment_url),
        version = env!("CARGO_PKG_VERSION"),
    )
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    format!("{} ago", crate::sensors::human_seconds(((now_ms - then_ms) as f64 / 1000.0).max(0.0)))
}

/// The overview fragment: summary, pipelines, then tables grouped by layer.
pub fn overview(config: &Config, tables: &[TableView], lineage: &[PipelineStatus], now_ms: i64) -> String {
    let mut out = String::new();
    let count = |status: Option<Status>| tables.iter().filter(|table| table.status() == status).count();
    let worst = tables.iter().filter_map(TableView::status).max();
    let problems: Vec<String> = [Status::Error, Status::Critical, Status::Warning]
        .into_iter()
        .filter(|status| count(Some(*status)) > 0)
        .map(|status| format!("{} {}", count(Some(status)), status_label(Some(status))))
        .collect();
    let headline = if tables.is_empty() {
        "No table is configured".to_string()
    } else if tables.iter().all(|table| table.status().is_none()) {
        "Waiting for the first sensor run".to_string()
    } else if problems.is_empty() {
        format!("All {} tables look as usual", tables.len())
    } else {
        format!(
            "{} of {} tables need attention: {}",
            tables.iter().filter(|table| table.status() >= Some(Status::Warning)).count(),
            tables.len(),
            problems.join(", ")
        )
    };
    let last_run = tables.iter().filter_map(TableView::last_checked_ms).max();
    let _ = write!(
        out,
        r#"<section class="summary status-{worst}" data-worst-status="{worst}"><h1 class="headline">{}</h1><p class="meta">{} tables · {} sensor results · last check {} · page rendered {}</p><div class="cards">"#,
        escape(&headline),
        tables.len(),
        tables
            .iter()
            .map(|table| table.results.iter().map(|result| result.evaluations.len()).sum::<usize>())
            .sum::<usize>(),
        last_run.map_or_else(|| "never".to_string(), |ms| escape(&ago(now_ms, ms))),
        escape(&time(now_ms)),
        worst = status_name(worst),
    );
    for status in [
        Some(Status::Critical),
        Some(Status::Error),
        Some(Status::Warning),
        Some(Status::InsufficientHistory),
        Some(Status::Ok),
        None,
    ] {
        let number = count(status);
        if number == 0 && matches!(status, None | Some(Status::InsufficientHistory) | Some(Status::Error)) {
            continue;
        }
        let _ = write!(
            out,
            r#"<div class="card card-{name}{zero}" data-count-status="{name}"><span class="count">{number}</span><span class="label">{label}</span></div>"#,
            name = status_name(status),
            zero = if number == 0 { " card-zero" } else { "" },
            label = status_label(status),
        );
    }
    out.push_str("</div></section>");

    if !config.pipelines.is_empty() {
        out.push_str(r#"<section class="pipelines"><h2>Pipelines</h2><div class="pipeline-list">"#);
        for pipeline in &config.pipelines {
            out.push_str(&pipeline_block(pipeline, tables, lineage, None));
        }
        out.push_str("</div></section>");
    }

    let mut layers: Vec<&str> = Vec::new();
    for table in tables {
        if !layers.contains(&table.layer.as_str()) {
            layers.push(&table.layer);
        }
    }
    for layer in layers {
        let in_layer: Vec<&TableView> = tables.iter().filter(|table| table.layer == layer).collect();
        let layer_worst = in_layer.iter().filter_map(|table| table.status()).max();
        let _ = write!(
            out,
            r#"<section class="layer" data-layer="{}"><h2>{} <span class="layer-count">{} table{}</span> {}</h2>"#,
            escape(layer),
            if layer.is_empty() { "(no layer)".to_string() } else { format!("Layer {}", escape(layer)) },
            in_layer.len(),
            if in_layer.len() == 1 { "" } else { "s" },
            pill(layer_worst),
        );
        for table in in_layer {
            out.push_str(&table_card(table, now_ms, &config.server.runbook_base_url));
        }
        out.push_str("</section>");
    }
    out
}

fn pipeline_block(
    pipeline: &PipelineConfig,
    tables: &[TableView],
    lineage: &[PipelineStatus],
    highlight: Option<&str>,
) -> String {
    let status_of = |name: &str| tables.iter().find(|table| table.name == name).and_then(TableView::status);
    let marks = lineage
        .iter()
        .find(|status| status.name == pipeline.name)
        .map(LineageMarks::from_pipeline_status)
        .unwrap_or_default();
    let mut note = String::new();
    if !marks.root_causes.is_empty() {
        let names: Vec<String> = marks.root_causes.iter().map(|stage| format!("<b>{}</b>", escape(stage))).collect();
        let _ = write!(note, "Likely root cause: {}", names.join(", "));
        if !marks.impacted.is_empty() {
            let impacted: Vec<String> = marks.impacted.iter().map(|stage| escape(stage)).collect();
            let _ = write!(note, "; impacted downstream: {}", impacted.join(", "));
        }
    } else {
        note.push_str("No failing stage.");
    }
    format!(
        r#"<div class="pipeline"><h3>{}</h3>{}<p class="lineage-note">{note}</p></div>"#,
        escape(&pipeline.name),
        lineage::render(pipeline, &status_of, &marks, highlight)
    )
}

fn table_card(table: &TableView, now_ms: i64, runbook_base: &str) -> String {
    let status = table.status();
    let stages: Vec<String> =
        table.stages.iter().map(|(pipeline, stage)| format!("{} › {}", escape(pipeline), escape(stage))).collect();
    let mut out = format!(
        r#"<article class="table-card status-{name}" data-table="{table}" data-status="{name}"><header><a class="table-name" href="{href}">{table}</a>{pill}{stages}<span class="checked">{checked}</span></header>"#,
        name = status_name(status),
        table = escape(&table.name),
        href = escape(&table_href(&table.name)),
        pill = pill(status),
        stages = if stages.is_empty() {
            String::new()
        } else {
            format!(r#"<span class="stages">{}</span>"#, stages.join(" · "))
        },
        checked = table
            .last_checked_ms()
            .map_or_else(|| "not checked yet".to_string(), |ms| format!("checked {}", escape(&ago(now_ms, ms)))),
    );
    out.push_str(&evaluations_table(&table.results, &table.layer, runbook_base));
    out.push_str("</article>");
    out
}

/// The results of a table in `layer`, worst first; each problem links to its runbook section
/// under `runbook_base` (the section its alert links to).
pub fn evaluations_table(results: &[SensorResult], layer: &str, runbook_base: &str) -> String {
    let mut evaluations: Vec<&Evaluation> = results.iter().flat_map(|result| result.evaluations.iter()).collect();
    if evaluations.is_empty() {
        return r#"<p class="empty">No sensor has run on this table yet.</p>"#.to_string();
    }
    evaluations.sort_by_key(|evaluation| std::cmp::Reverse(evaluation.status));
    let mut out = String::from(
        r#"<table class="evaluations"><thead><tr><th>status</th><th>sensor</th><th>check</th><th class="num">value</th><th class="num">expected</th><th>why</th></tr></thead><tbody>"#,
    );
    for evaluation in evaluations {
        let mut check = escape(&evaluation.metric.as_str().replace('_', " "));
        if let Some(column) = &evaluation.column {
            let _ = write!(check, r#"<span class="column">column <code>{}</code></span>"#, escape(column));
        }
        if let Some(statistic) = &evaluation.statistic {
            let _ = write!(check, r#"<span class="column">{}</span>"#, escape(statistic));
        }
        if let Some(change_type) = &evaluation.change_type {
            let _ = write!(check, r#"<span class="column">{}</span>"#, escape(&change_type.replace('_', " ")));
        }
        let value = evaluation.value.map(|value| value_in_unit(evaluation.metric.as_str(), value)).unwrap_or_default();
        let expected = match (evaluation.expected_lower, evaluation.expected_upper) {
            (Some(lower), Some(upper)) => {
                format!(
                    "{} – {}",
                    value_in_unit(evaluation.metric.as_str(), lower),
                    value_in_unit(evaluation.metric.as_str(), upper)
                )
            }
            _ => String::new(),
        };
        let zscore = evaluation.zscore.map(|z| format!(r#"<span class="z">z = {z:.1}</span>"#)).unwrap_or_default();
        let runbook = crate::runbook::url(runbook_base, evaluation, layer)
            .map(|url| format!(r#" <a class="runbook" href="{}">runbook</a>"#, escape(&url)))
            .unwrap_or_default();
        let seasonality = evaluation
            .seasonality
            .as_ref()
            .map(|model| format!(r#" <span class="model" title="seasonal model">{}</span>"#, escape(model)))
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<tr class="status-{status}" data-sensor="{sensor}" data-metric="{metric}" data-status="{status}"><td>{pill}</td><td>{sensor}</td><td>{check}</td><td class="num">{value}{zscore}</td><td class="num">{expected}</td><td class="why">{message}{seasonality}{runbook}</td></tr>"#,
            status = evaluation.status.as_str(),
            sensor = evaluation.sensor.as_str(),
            metric = escape(evaluation.metric.as_str()),
            pill = pill(Some(evaluation.status)),
            value = escape(&value),
            expected = escape(&expected),
            message = escape(&evaluation.message),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// What a table's page shows beyond its results.
pub struct TableHistory {
    pub charts: Vec<Chart>,
    /// Newest first.
    pub schema_changes: Vec<Event>,
    /// History reads that failed (shown, not fatal).
    pub problems: Vec<String>,
}

/// A table's page fragment.
pub fn table_page(
    config: &Config,
    tables: &[TableView],
    table: &TableView,
    history: &TableHistory,
    lineage: &[PipelineStatus],
    now_ms: i64,
) -> String {
    let status = table.status();
    let mut out = format!(
        r#"<nav class="crumbs"><a href="/">← all tables</a></nav><section class="table-head status-{name}" data-table="{table_name}" data-status="{name}"><h1>{table_name} {pill}</h1><p class="meta">layer {layer} · {checked}</p></section>"#,
        name = status_name(status),
        table_name = escape(&table.name),
        pill = pill(status),
        layer = if table.layer.is_empty() { "(none)".to_string() } else { escape(&table.layer) },
        checked = table
            .last_checked_ms()
            .map_or_else(|| "not checked yet".to_string(), |ms| format!("checked {}", escape(&ago(now_ms, ms)))),
    );
    for problem in &history.problems {
        let _ = write!(out, r#"<p class="problem">{}</p>"#, escape(problem));
    }
    out.push_str(r#"<section><h2>Latest results</h2>"#);
    out.push_str(&evaluations_table(&table.results, &table.layer, &config.server.runbook_base_url));
    out.push_str("</section>");

    out.push_str(r#"<section><h2>History</h2><p class="hint">Shaded: the expected band each point was judged against, computed from the points before it. Red points fall outside it.</p><div class="charts">"#);
    if history.charts.is_empty() {
        out.push_str(r#"<p class="empty">No history stored yet.</p>"#);
    }
    for chart in &history.charts {
        out.push_str(&charts::render(chart));
    }
    out.push_str("</div></section>");

    out.push_str(r#"<section><h2>Schema changes</h2>"#);
    if history.schema_changes.is_empty() {
        out.push_str(r#"<p class="empty">No schema change recorded.</p>"#);
    } else {
        out.push_str(r#"<ol class="timeline">"#);
        for event in &history.schema_changes {
            let field =
                |key: &str| event.payload.get(key).and_then(|value| value.as_str()).unwrap_or_default().to_string();
            let breaking = event.payload.get("breaking").and_then(serde_json::Value::as_bool).unwrap_or(false);
            let _ = write!(
                out,
                r#"<li class="{class}" data-change-type="{change_type}"><time>{when}</time><span class="pill pill-{pill_class}">{kind}</span> <code>{column}</code> <span class="detail">{detail}</span>{schema}</li>"#,
                class = if breaking { "breaking" } else { "compatible" },
                change_type = escape(&field("change_type")),
                when = escape(&time(event.occurred_at_ms)),
                pill_class = if breaking { "critical" } else { "warning" },
                kind = escape(&format!(
                    "{}{}",
                    field("change_type").replace('_', " "),
                    if breaking { " (breaking)" } else { "" }
                )),
                column = escape(&field("column")),
                detail = escape(&field("detail")),
                schema = match (event.payload.get("from_schema_id"), event.payload.get("to_schema_id")) {
                    (Some(from), Some(to)) => format!(
                        r#" <span class="schema-ids">schema {} → {}</span>"#,
                        escape(&from.to_string()),
                        escape(&to.to_string())
                    ),
                    _ => String::new(),
                },
            );
        }
        out.push_str("</ol>");
    }
    out.push_str("</section>");

    let pipelines: Vec<&PipelineConfig> = config
        .pipelines
        .iter()
        .filter(|pipeline| pipeline.stages.iter().any(|stage| stage.table == table.name))
        .collect();
    out.push_str(r#"<section><h2>Lineage</h2>"#);
    if pipelines.is_empty() {
        out.push_str(r#"<p class="empty">This table is not a stage of any declared pipeline.</p>"#);
    }
    for pipeline in pipelines {
        out.push_str(&pipeline_block(pipeline, tables, lineage, Some(&table.name)));
    }
    out.push_str("</section>");
    out
}

/// The fragment for a table that is not configured.
pub fn unknown_table(name: &str) -> String {
    format!(
        r#"<nav class="crumbs"><a href="/">← all tables</a></nav><section class="table-head"><h1>Unknown table</h1><p class="meta"><code>{}</code> is not monitored by this icewatch.</p></section>"#,
        escape(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SensorKind;

    const HOSTILE: &str = "<img src=x onerror=alert(1)>";

    fn config() -> Config {
        let text = r#"
[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "warehouse"

[tables."bronze.events"]
layer = "<b>bronze</b>"

[tables."bronze.events".schema]
expect = { "<img src=x onerror=alert(1)>" = "long" }

[pipelines."p<script>"]
stages = [{ stage = "s\"1", table = "bronze.events" }]
"#;
        Config::from_str(text, std::path::Path::new("/tmp/sensors.toml")).unwrap()
    }

    fn result(status: Status) -> SensorResult {
        let mut evaluation = Evaluation::new(
            "bronze.events",
            SensorKind::SCHEMA,
            crate::sensors::Metric::SCHEMA_EXPECTATION,
            status,
            format!("column `{HOSTILE}` is missing"),
        );
        evaluation.column = Some(HOSTILE.to_string());
        SensorResult {
            table: "bronze.events".to_string(),
            layer: "<b>bronze</b>".to_string(),
            sensor: SensorKind::SCHEMA,
            evaluations: vec![evaluation],
            finished_at_ms: 1_000,
            duration: std::time::Duration::from_millis(3),
        }
    }

    /// A problem links to the runbook section its alert links to, under `[server]
    /// runbook_base_url`; an ok result has no link.
    #[test]
    fn a_problem_links_to_its_runbook_section_under_the_configured_base() {
        let mut config = config();
        config.server.runbook_base_url = "https://runbooks.example.org/icewatch".to_string();
        let tables = table_views(&config, &[result(Status::Critical)]);
        let html = overview(&config, &tables, &[], 5_000);
        assert!(
            html.contains(r#"<a class="runbook" href="https://runbooks.example.org/icewatch/schema.md#schemaexpectationviolated">runbook</a>"#),
            "{html}"
        );
        let tables = table_views(&config, &[result(Status::Ok)]);
        assert!(!overview(&config, &tables, &[], 5_000).contains(r#"class="runbook""#));
    }

    #[test]
    fn overview_escapes_table_column_layer_and_pipeline_names() {
        let config = config();
        let tables = table_views(&config, &[result(Status::Critical)]);
        let html = overview(&config, &tables, &[], 5_000);
        for raw in [HOSTILE, "<b>bronze</b>", "p<script>", "s\"1"] {
            assert!(!html.contains(raw), "{raw} is not escaped");
        }
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains(r#"data-table="bronze.events" data-status="critical""#));
        assert!(html.contains("1 of 1 tables need attention: 1 critical"));
        let page = page("t", "/?fragment=1", &html);
        assert_eq!(page.matches("<script>").count(), 1, "only the refresh script");
    }

    #[test]
    fn a_table_without_results_is_pending() {
        let config = config();
        let tables = table_views(&config, &[]);
        let html = overview(&config, &tables, &[], 5_000);
        assert!(html.contains("Waiting for the first sensor run"));
        assert!(html.contains(r#"data-status="pending""#));
    }
}
