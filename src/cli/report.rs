//! The `check` report: a table per monitored table and sensor (status, value, expected range,
//! why, and for a problem the runbook section its alert links to) for people, or one JSON object
//! with a `results` array for machines.

use std::collections::BTreeMap;
use std::fmt::Write;

use clap::ValueEnum;
use serde::Serialize;

use crate::sensors::SensorResult;
use crate::sensors::{Evaluation, Status, human_number};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    results: Vec<JsonResult<'a>>,
    summary: BTreeMap<&'static str, usize>,
    exit_code: u8,
}

/// One result of the JSON report: the evaluation, and for a problem its runbook section.
#[derive(Serialize)]
struct JsonResult<'a> {
    #[serde(flatten)]
    evaluation: &'a Evaluation,
    #[serde(skip_serializing_if = "Option::is_none")]
    runbook_url: Option<String>,
}

/// The report of `results`; `runbook_base` is `[server] runbook_base_url`.
pub fn render(results: &[SensorResult], format: ReportFormat, exit_code: u8, runbook_base: &str) -> String {
    let evaluations: Vec<&Evaluation> = results.iter().flat_map(|result| &result.evaluations).collect();
    let mut summary: BTreeMap<&'static str, usize> = BTreeMap::new();
    for status in [Status::Ok, Status::InsufficientHistory, Status::Warning, Status::Critical, Status::Error] {
        summary.insert(status.as_str(), evaluations.iter().filter(|evaluation| evaluation.status == status).count());
    }
    match format {
        ReportFormat::Json => {
            let results = results
                .iter()
                .flat_map(|result| {
                    result.evaluations.iter().map(|evaluation| JsonResult {
                        evaluation,
                        runbook_url: crate::runbook::url(runbook_base, evaluation, &result.layer),
                    })
                })
                .collect();
            let report = JsonReport { results, summary, exit_code };
            let mut text =
                serde_json::to_string_pretty(&report).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
            text.push('\n');
            text
        }
        ReportFormat::Text => render_text(results, &summary, runbook_base),
    }
}

/// The text report's width: every line fits, the message wrapped under its result.
const REPORT_WIDTH: usize = 120;
/// Where a result's message starts, under its status.
const MESSAGE_INDENT: &str = "      ";

/// One result as the text report shows it.
struct Row<'a> {
    status: &'static str,
    sensor: &'static str,
    check: String,
    value: String,
    range: String,
    message: std::borrow::Cow<'a, str>,
    runbook_url: Option<String>,
}

impl<'a> Row<'a> {
    fn of(evaluation: &'a Evaluation, layer: &str, runbook_base: &str) -> Row<'a> {
        let mut check = evaluation.metric.to_string();
        if let Some(column) = &evaluation.column {
            check = format!("{check} {column}");
        }
        if let Some(statistic) = &evaluation.statistic {
            check = format!("{check}.{statistic}");
        }
        let range = match (evaluation.expected_lower, evaluation.expected_upper) {
            (Some(lower), Some(upper)) => format!("expected {} to {}", human_number(lower), human_number(upper)),
            _ => String::new(),
        };
        Row {
            status: evaluation.status.as_str(),
            sensor: evaluation.sensor.as_str(),
            check,
            value: evaluation.value.map(human_number).unwrap_or_default(),
            range,
            message: match &evaluation.seasonality {
                Some(model) => format!("{} [seasonality {model}]", evaluation.message).into(),
                None => evaluation.message.as_str().into(),
            },
            runbook_url: crate::runbook::url(runbook_base, evaluation, layer),
        }
    }
}

/// Per table, one line per result (status, sensor, check, value, expected range), aligned
/// over the whole report, its message wrapped beneath and, for a problem, its runbook link:
/// nothing is cut, and every line fits [`REPORT_WIDTH`] unless a single word (a long column
/// name, a long link) does not.
fn render_text(results: &[SensorResult], summary: &BTreeMap<&'static str, usize>, runbook_base: &str) -> String {
    let rows: Vec<Vec<Row>> = results
        .iter()
        .map(|result| {
            result.evaluations.iter().map(|evaluation| Row::of(evaluation, &result.layer, runbook_base)).collect()
        })
        .collect();
    let width = |cell: fn(&Row) -> usize| rows.iter().flatten().map(cell).max().unwrap_or(0);
    let status_width = width(|row| row.status.len());
    let sensor_width = width(|row| row.sensor.len());
    let value_width = width(|row| row.value.chars().count());
    let mut check_width = width(|row| row.check.chars().count());
    let range_width = width(|row| row.range.chars().count());
    if 2 + status_width + sensor_width + check_width + value_width + range_width + 8 > REPORT_WIDTH {
        check_width = 0;
    }
    let mut out = String::new();
    let mut current_table: Option<&str> = None;
    for (result, rows) in results.iter().zip(&rows) {
        if current_table != Some(result.table.as_str()) {
            current_table = Some(result.table.as_str());
            let layer = if result.layer.is_empty() { String::new() } else { format!("  (layer {})", result.layer) };
            let _ = writeln!(out, "\n{}{layer}", result.table);
        }
        for row in rows {
            let line = format!(
                "  {:<status_width$}  {:<sensor_width$}  {:<check_width$}  {:>value_width$}  {}",
                row.status, row.sensor, row.check, row.value, row.range
            );
            let _ = writeln!(out, "{}", line.trim_end());
            for wrapped in wrap(&row.message, REPORT_WIDTH - MESSAGE_INDENT.len()) {
                let _ = writeln!(out, "{MESSAGE_INDENT}{wrapped}");
            }
            if let Some(url) = &row.runbook_url {
                let _ = writeln!(out, "{MESSAGE_INDENT}runbook: {url}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{} ok, {} insufficient history, {} warning, {} critical, {} error",
        summary["ok"], summary["insufficient_history"], summary["warning"], summary["critical"], summary["error"]
    );
    out
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word keeps its
/// own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_wrap_at_spaces_within_the_width() {
        let text = "drift of `amount`: KS D = 1.000, p = 0.000, adjusted p = 0.000 over the check's 2 tests";
        let lines = wrap(text, 30);
        assert!(lines.iter().all(|line| line.chars().count() <= 30), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        assert_eq!(wrap("a-very-long-word-that-cannot-break", 10), vec!["a-very-long-word-that-cannot-break"]);
        assert!(wrap("", 10).is_empty());
    }
}
