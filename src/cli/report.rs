//! The `check` report: a table per monitored table and sensor (status, value, expected range,
//! why) for people, or one JSON object with a `results` array for machines.

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
    results: Vec<&'a Evaluation>,
    summary: BTreeMap<&'static str, usize>,
    exit_code: u8,
}

pub fn render(results: &[SensorResult], format: ReportFormat, exit_code: u8) -> String {
    let evaluations: Vec<&Evaluation> = results.iter().flat_map(|result| &result.evaluations).collect();
    let mut summary: BTreeMap<&'static str, usize> = BTreeMap::new();
    for status in [Status::Ok, Status::InsufficientHistory, Status::Warning, Status::Critical, Status::Error] {
        summary.insert(status.as_str(), evaluations.iter().filter(|evaluation| evaluation.status == status).count());
    }
    match format {
        ReportFormat::Json => {
            let report = JsonReport { results: evaluations, summary, exit_code };
            let mut text =
                serde_json::to_string_pretty(&report).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
            text.push('\n');
            text
        }
        ReportFormat::Text => render_text(results, &summary),
    }
}

fn render_text(results: &[SensorResult], summary: &BTreeMap<&'static str, usize>) -> String {
    let mut out = String::new();
    let mut current_table: Option<&str> = None;
    for result in results {
        if current_table != Some(result.table.as_str()) {
            current_table = Some(result.table.as_str());
            let layer = if result.layer.is_empty() { String::new() } else { format!("  (layer {})", result.layer) };
            let _ = writeln!(out, "\n{}{layer}", result.table);
        }
        for evaluation in &result.evaluations {
            let mut name = evaluation.metric.to_string();
            if let Some(column) = &evaluation.column {
                name = format!("{name} {column}");
            }
            if let Some(statistic) = &evaluation.statistic {
                name = format!("{name}.{statistic}");
            }
            let value = evaluation.value.map(human_number).unwrap_or_else(|| "-".to_string());
            let range = match (evaluation.expected_lower, evaluation.expected_upper) {
                (Some(lower), Some(upper)) => format!("[{}, {}]", human_number(lower), human_number(upper)),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<13} {:<28} {:<21} {:>12}  {:<22} {}",
                evaluation.sensor.as_str(),
                truncate(&name, 28),
                evaluation.status.as_str(),
                value,
                range,
                evaluation.message
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{} ok, {} insufficient history, {} warning, {} critical, {} error",
        summary["ok"], summary["insufficient_history"], summary["warning"], summary["critical"], summary["error"]
    );
    out
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width - 1).collect();
        cut.push('…');
        cut
    }
}
