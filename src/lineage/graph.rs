//! Renders the lineage graph (declared pipelines plus edges learned from OpenLineage) as text
//! for people or Graphviz `dot`. Pure formatting over a [`LineageView`]; no state, no IO.

use std::fmt::Write;

use clap::ValueEnum;

use super::{Health, LineageView};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Json,
}

pub fn render_graph(view: &LineageView, format: GraphFormat) -> String {
    match format {
        GraphFormat::Text => text(view),
        GraphFormat::Dot => dot(view),
        GraphFormat::Json => {
            let mut out =
                serde_json::to_string_pretty(view).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
            out.push('\n');
            out
        }
    }
}

fn health_word(health: Health, root: bool, impacted: bool) -> &'static str {
    match (health, root, impacted) {
        (Health::Failing, true, _) => "FAILING (root cause)",
        (Health::Failing, false, _) => "FAILING (impacted)",
        (Health::Healthy, _, true) => "ok (downstream of a failure)",
        (Health::Healthy, _, false) => "ok",
        (Health::Unknown, _, _) => "",
    }
}

fn text(view: &LineageView) -> String {
    let mut out = String::new();
    if view.pipelines.is_empty() {
        let _ = writeln!(out, "no pipelines declared ([pipelines.NAME] in sensors.toml)");
    }
    for pipeline in &view.pipelines {
        let _ = writeln!(out, "pipeline {}", pipeline.name);
        let width = pipeline.stages.iter().map(|stage| stage.stage.chars().count()).max().unwrap_or(0);
        for stage in &pipeline.stages {
            let upstream =
                if stage.upstream.is_empty() { String::new() } else { format!("  <- {}", stage.upstream.join(", ")) };
            let job = if stage.job == stage.table { String::new() } else { format!("  (job {})", stage.job) };
            let health = health_word(stage.health, stage.root_cause, stage.impacted);
            let health = if health.is_empty() { String::new() } else { format!("  [{health}]") };
            let _ = writeln!(out, "  {:<width$}  {}{upstream}{job}{health}", stage.stage, stage.table);
        }
    }
    let _ =
        writeln!(out, "\nlearned from OpenLineage: {} edge(s), {} run(s)", view.learned_edges.len(), view.runs.len());
    for edge in &view.learned_edges {
        let jobs: Vec<&str> = edge.jobs.iter().map(String::as_str).collect();
        let _ = writeln!(out, "  {} -> {}  (job {})", edge.from, edge.to, jobs.join(", "));
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn quote(text: &str) -> String {
    format!("\"{}\"", escape(text))
}

fn dot(view: &LineageView) -> String {
    let mut out = String::from("digraph lineage {\n  rankdir=LR;\n  node [shape=box];\n");
    for pipeline in &view.pipelines {
        let _ = writeln!(
            out,
            "  subgraph {} {{\n    label={};",
            quote(&format!("cluster_{}", pipeline.name)),
            quote(&pipeline.name)
        );
        for stage in &pipeline.stages {
            let color = match stage.health {
                Health::Failing => ", color=red",
                Health::Healthy => ", color=darkgreen",
                Health::Unknown => "",
            };
            let _ = writeln!(
                out,
                "    {} [label=\"{}\\n{}\"{color}];",
                quote(&stage.table),
                escape(&stage.stage),
                escape(&stage.table)
            );
        }
        let _ = writeln!(out, "  }}");
        for stage in &pipeline.stages {
            for parent in &stage.upstream {
                if let Some(upstream) = pipeline.stage(parent) {
                    let _ = writeln!(out, "  {} -> {};", quote(&upstream.table), quote(&stage.table));
                }
            }
        }
    }
    for edge in &view.learned_edges {
        let jobs: Vec<&str> = edge.jobs.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "  {} -> {} [style=dashed, label={}];",
            quote(&edge.from),
            quote(&edge.to),
            quote(&jobs.join(", "))
        );
    }
    out.push_str("}\n");
    out
}
