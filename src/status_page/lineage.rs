//! The lineage graph of the status page: the declared stages of each pipeline
//! (`Config.pipelines`) laid out left to right by depth and drawn as inline SVG, each stage
//! coloured by its table's worst status.
//!
//! Root cause and impact come in through [`LineageMarks`], built from the lineage module's
//! verdicts ([`crate::lineage`] decides what fails a stage; this only draws it). It reads no
//! history and no catalog.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use super::html::{escape, table_href};
use crate::config::PipelineConfig;
use crate::lineage::PipelineStatus;
use crate::sensors::Status;

/// Which stages to highlight as root cause or impacted, by stage name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineageMarks {
    pub root_causes: BTreeSet<String>,
    pub impacted: BTreeSet<String>,
}

/// Whether a status makes a stage "failing" in the graph (red).
pub fn is_failing(status: Option<Status>) -> bool {
    matches!(status, Some(Status::Critical | Status::Error))
}

impl LineageMarks {
    /// The root causes and impacted stages the lineage module found for this pipeline.
    pub fn from_pipeline_status(status: &PipelineStatus) -> LineageMarks {
        let stages = |keep: fn(&crate::lineage::StageStatus) -> bool| -> BTreeSet<String> {
            status.stages.iter().filter(|stage| keep(stage)).map(|stage| stage.stage.clone()).collect()
        };
        LineageMarks { root_causes: stages(|stage| stage.root_cause), impacted: stages(|stage| stage.impacted) }
    }
}

/// Depth of each stage: 0 for stages without upstream, else 1 + the deepest upstream (cycles
/// and unknown upstream names are cut, so this always ends).
fn depths(pipeline: &PipelineConfig) -> HashMap<&str, usize> {
    let by_name: HashMap<&str, &crate::config::StageConfig> =
        pipeline.stages.iter().map(|stage| (stage.stage.as_str(), stage)).collect();
    let mut depth: HashMap<&str, usize> = pipeline.stages.iter().map(|stage| (stage.stage.as_str(), 0)).collect();
    for _ in 0..pipeline.stages.len() {
        let mut changed = false;
        for stage in &pipeline.stages {
            let wanted = stage
                .upstream
                .iter()
                .filter(|upstream| by_name.contains_key(upstream.as_str()))
                .map(|upstream| depth.get(upstream.as_str()).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0)
                .min(pipeline.stages.len());
            if depth.get(stage.stage.as_str()) != Some(&wanted) {
                depth.insert(stage.stage.as_str(), wanted);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

const NODE_WIDTH: f64 = 190.0;
const NODE_HEIGHT: f64 = 52.0;
const COLUMN_GAP: f64 = 60.0;
const ROW_GAP: f64 = 16.0;

/// The pipeline as an SVG graph; `highlight` names a table to outline (the table page's own).
pub fn render(
    pipeline: &PipelineConfig,
    status_of: &dyn Fn(&str) -> Option<Status>,
    marks: &LineageMarks,
    highlight: Option<&str>,
) -> String {
    let depth = depths(pipeline);
    let mut columns: BTreeMap<usize, Vec<&crate::config::StageConfig>> = BTreeMap::new();
    for stage in &pipeline.stages {
        columns.entry(depth.get(stage.stage.as_str()).copied().unwrap_or(0)).or_default().push(stage);
    }
    let rows = columns.values().map(Vec::len).max().unwrap_or(1).max(1);
    let width = columns.len().max(1) as f64 * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP + 8.0;
    let height = rows as f64 * (NODE_HEIGHT + ROW_GAP) - ROW_GAP + 8.0;
    let mut position: HashMap<&str, (f64, f64)> = HashMap::new();
    for (column_index, (_, stages)) in columns.iter().enumerate() {
        let offset = (rows - stages.len()) as f64 * (NODE_HEIGHT + ROW_GAP) / 2.0;
        for (row, stage) in stages.iter().enumerate() {
            position.insert(
                stage.stage.as_str(),
                (
                    4.0 + column_index as f64 * (NODE_WIDTH + COLUMN_GAP),
                    4.0 + offset + row as f64 * (NODE_HEIGHT + ROW_GAP),
                ),
            );
        }
    }
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<figure class="lineage" data-pipeline="{}"><svg viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="lineage of pipeline {}">"#,
        escape(&pipeline.name),
        escape(&pipeline.name)
    );
    for stage in &pipeline.stages {
        let Some(&(to_x, to_y)) = position.get(stage.stage.as_str()) else {
            continue;
        };
        for upstream in &stage.upstream {
            let Some(&(from_x, from_y)) = position.get(upstream.as_str()) else {
                continue;
            };
            let impacted = marks.impacted.contains(&stage.stage) || marks.root_causes.contains(&stage.stage);
            let (x1, y1, x2, y2) = (from_x + NODE_WIDTH, from_y + NODE_HEIGHT / 2.0, to_x, to_y + NODE_HEIGHT / 2.0);
            let middle = (x1 + x2) / 2.0;
            let _ = write!(
                out,
                r#"<path class="edge{}" d="M{x1:.1},{y1:.1} C{middle:.1},{y1:.1} {middle:.1},{y2:.1} {x2:.1},{y2:.1}"/>"#,
                if impacted { " edge-impacted" } else { "" }
            );
        }
    }
    for stage in &pipeline.stages {
        let Some(&(x, y)) = position.get(stage.stage.as_str()) else {
            continue;
        };
        let status = status_of(&stage.table);
        let status_text = status.map_or("not_checked", Status::as_str);
        let role = if marks.root_causes.contains(&stage.stage) {
            "root_cause"
        } else if marks.impacted.contains(&stage.stage) {
            "impacted"
        } else {
            "none"
        };
        let label = match role {
            "root_cause" => "root cause",
            "impacted" => "impacted",
            _ => status_text,
        };
        let here = highlight == Some(stage.table.as_str());
        let _ = write!(
            out,
            r#"<a href="{}"><g class="stage status-{status_text} role-{role}{}" data-stage="{}" data-table="{}" data-status="{status_text}" data-role="{role}" data-failing="{}"><rect x="{x:.1}" y="{y:.1}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="8"/><text class="stage-name" x="{:.1}" y="{:.1}">{}</text><text class="stage-table" x="{:.1}" y="{:.1}">{}</text><text class="stage-state" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><title>{} ({}): {}</title></g></a>"#,
            escape(&table_href(&stage.table)),
            if here { " here" } else { "" },
            escape(&stage.stage),
            escape(&stage.table),
            is_failing(status),
            x + 10.0,
            y + 20.0,
            escape(&truncate(&stage.stage, 16)),
            x + 10.0,
            y + 40.0,
            escape(&truncate(&stage.table, 26)),
            x + NODE_WIDTH - 10.0,
            y + 20.0,
            escape(&label.replace('_', " ")),
            escape(&stage.stage),
            escape(&stage.table),
            escape(&label.replace('_', " ")),
        );
    }
    out.push_str("</svg></figure>");
    out
}

fn truncate(text: &str, characters: usize) -> String {
    if text.chars().count() <= characters {
        text.to_string()
    } else {
        let kept: String = text.chars().take(characters.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StageConfig;

    fn pipeline() -> PipelineConfig {
        let stage = |name: &str, upstream: &[&str]| StageConfig {
            stage: name.to_string(),
            table: format!("{name}.t"),
            upstream: upstream.iter().map(|name| name.to_string()).collect(),
            job: name.to_string(),
        };
        PipelineConfig {
            name: "p".to_string(),
            stages: vec![stage("bronze", &[]), stage("silver", &["bronze"]), stage("gold", &["silver"])],
        }
    }

    #[test]
    fn root_cause_and_impacted_stages_are_marked() {
        let status_of =
            |table: &str| Some(if table == "silver.t" || table == "gold.t" { Status::Critical } else { Status::Ok });
        let marks = LineageMarks {
            root_causes: BTreeSet::from(["silver".to_string()]),
            impacted: BTreeSet::from(["gold".to_string()]),
        };
        let svg = render(&pipeline(), &status_of, &marks, Some("gold.t"));
        assert!(svg.contains(r#"data-stage="silver" data-table="silver.t" data-status="critical" data-role="root_cause" data-failing="true""#));
        assert!(svg.contains(r#"data-role="impacted""#));
    }

    #[test]
    fn cycles_do_not_hang_the_layout() {
        let mut cyclic = pipeline();
        cyclic.stages[0].upstream = vec!["gold".to_string()];
        let svg = render(&cyclic, &|_| None, &LineageMarks::default(), None);
        assert_eq!(svg.matches("<rect").count(), 3);
    }
}
