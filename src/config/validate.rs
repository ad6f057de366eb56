//! Checks across sections, on what the sections read: a pipeline's stages against each other
//! (unique names, existing upstreams, no cycle) and against `[tables]`. Every problem points at
//! `file:line:col`.

use std::collections::BTreeSet;

use super::diagnostics::did_you_mean;
use super::reader::{Reader, join};
use super::sections::PipelineDraft;
use super::{PipelineConfig, StageConfig, TableConfig};

/// Makes each pipeline draft a pipeline, reporting a stage naming a table not declared under
/// `[tables]`, a stage name used twice, an upstream that is not a stage of the pipeline, and a
/// cycle. A pipeline with any of these but the first is left out.
pub(super) fn pipelines(
    reader: &mut Reader<'_>,
    drafts: Vec<PipelineDraft>,
    tables: &[TableConfig],
) -> Vec<PipelineConfig> {
    let table_names: Vec<&str> = tables.iter().map(|table| table.name.as_str()).collect();
    let mut pipelines = Vec::new();
    for draft in drafts {
        let mut stages: Vec<StageConfig> = Vec::new();
        let mut ok = true;
        for entry in &draft.stages {
            if let Some(table) = &entry.table
                && !table_names.contains(&table.name.as_str())
            {
                // Named as written: a `${VAR}` may hold a secret.
                let table_name = &table.raw;
                let suggestion = did_you_mean(table_name, &table_names)
                    .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                    .unwrap_or_default();
                reader.problem_at(
                    table.span,
                    &join(&entry.path, "table"),
                    format!("stage names table `{table_name}`, which is not declared under [tables]{suggestion}"),
                );
            }
            let (Some((stage, stage_span)), Some(table)) = (&entry.stage, &entry.table) else {
                ok = false;
                continue;
            };
            if stages.iter().any(|existing| existing.stage == *stage) {
                reader.problem_at(
                    *stage_span,
                    &join(&entry.path, "stage"),
                    format!("stage `{stage}` is declared twice in this pipeline"),
                );
                ok = false;
            }
            stages.push(StageConfig {
                stage: stage.clone(),
                table: table.name.clone(),
                upstream: entry.upstream.iter().map(|(name, _)| name.clone()).collect(),
                job: entry.job.clone().unwrap_or_else(|| table.name.clone()),
            });
        }

        let stage_names: Vec<&str> = stages.iter().map(|stage| stage.stage.as_str()).collect();
        for entry in &draft.stages {
            for (name, span) in &entry.upstream {
                if stage_names.contains(&name.as_str()) {
                    continue;
                }
                let suggestion = did_you_mean(name, &stage_names)
                    .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                    .unwrap_or_default();
                reader.problem_at(
                    *span,
                    &join(&entry.path, "upstream"),
                    format!("upstream stage `{name}` does not exist in this pipeline{suggestion}"),
                );
                ok = false;
            }
        }
        if ok && let Some(cycle) = find_cycle(&stages) {
            let message = format!("the pipeline has a cycle: {}", cycle.join(" → "));
            reader.problem_at(draft.stages_span, &draft.stages_path, message);
            ok = false;
        }
        if ok {
            pipelines.push(PipelineConfig { name: draft.name, stages });
        }
    }
    pipelines
}

/// The first cycle among the stages' upstream edges, as stage names (first repeated at the end).
fn find_cycle(stages: &[StageConfig]) -> Option<Vec<String>> {
    fn visit<'s>(
        stage: &'s str,
        stages: &'s [StageConfig],
        path: &mut Vec<&'s str>,
        done: &mut BTreeSet<&'s str>,
    ) -> Option<Vec<String>> {
        if let Some(position) = path.iter().position(|seen| *seen == stage) {
            let mut cycle: Vec<String> = path[position..].iter().map(|name| name.to_string()).collect();
            cycle.push(stage.to_string());
            return Some(cycle);
        }
        if done.contains(stage) {
            return None;
        }
        path.push(stage);
        let upstream = stages.iter().find(|candidate| candidate.stage == stage).map(|found| &found.upstream);
        for parent in upstream.into_iter().flatten() {
            if let Some(cycle) = visit(parent, stages, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(stage);
        None
    }
    let mut done = BTreeSet::new();
    for stage in stages {
        let mut path = Vec::new();
        if let Some(mut cycle) = visit(&stage.stage, stages, &mut path, &mut done) {
            // Upstream edges point backwards; print the cycle in data-flow order.
            cycle.reverse();
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_reported_in_data_flow_order() {
        let stage = |name: &str, upstream: &[&str]| StageConfig {
            stage: name.to_string(),
            table: format!("ns.{name}"),
            upstream: upstream.iter().map(|name| name.to_string()).collect(),
            job: name.to_string(),
        };
        let stages = [stage("bronze", &["gold"]), stage("silver", &["bronze"]), stage("gold", &["silver"])];
        assert_eq!(find_cycle(&stages), Some(["bronze", "silver", "gold", "bronze"].map(String::from).to_vec()));
        assert_eq!(find_cycle(&stages[1..]), None);
    }
}
