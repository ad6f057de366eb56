//! Checks across sections, on what the sections read: a pipeline's stages against each other
//! (unique names, existing upstreams, no cycle) and against `[tables]`; and the online checks
//! (`validate --online`: every table loads, every column the config names exists), which get the
//! catalog's answers through [`TableColumns`] so that config never imports the catalog. Every
//! problem points at `file:line:col`.

use std::collections::BTreeSet;

use super::diagnostics::{Locations, did_you_mean, shortened, shortened_quotes};
use super::reader::{Reader, escape_invisible, join};
use super::sections::PipelineDraft;
use super::{Config, PipelineConfig, Problem, StageConfig, TableConfig, TableName};

/// One table's current schema, as the online checks ask about it. The caller that can reach the
/// catalog implements it (the CLI, over the Iceberg schema).
pub trait TableColumns {
    /// Whether the table has a column called `name` (a nested field by its dotted name too).
    fn has_column(&self, name: &str) -> bool;
    /// The table's top-level column names, in schema order: the "did you mean" candidates.
    fn column_names(&self) -> Vec<&str>;
}

/// The problems `validate --online` finds, in file order: a table that does not load (`schema`
/// gives why, at the key that declared the table), and a `freshness.timestamp_column` or
/// `distribution.columns` entry naming a column the table does not have (at the key that
/// named it). `locations` is what [`Config::load_with_locations`] returned with `config`.
pub fn online_problems<'s>(
    config: &Config,
    locations: &Locations,
    mut schema: impl FnMut(&TableName) -> Result<&'s dyn TableColumns, String>,
) -> Vec<Problem> {
    let place = |key_path: &str| locations.get(key_path).unwrap_or((1, 1));
    let mut problems = Vec::new();
    for table in &config.tables {
        let table_path = join("tables", table.name.as_str());
        let columns = match schema(&table.name) {
            Ok(columns) => columns,
            Err(reason) => {
                let (line, column) = place(&table_path);
                problems.push(Problem {
                    line,
                    column,
                    key_path: String::new(),
                    message: escape_invisible(&shortened_quotes(&reason)),
                });
                continue;
            }
        };
        for (name, key_path, named_at) in named_columns(table, &table_path) {
            if columns.has_column(name) {
                continue;
            }
            let suggestion = did_you_mean(name, &columns.column_names())
                .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                .unwrap_or_default();
            let (line, column) = place(&named_at);
            problems.push(Problem {
                line,
                column,
                key_path: escape_invisible(&key_path),
                message: escape_invisible(&format!(
                    "column `{}` not found in table `{}`{suggestion}",
                    shortened(name),
                    shortened(table.name.as_str())
                )),
            });
        }
    }
    problems.sort_by_key(|problem| (problem.line, problem.column));
    problems
}

/// The columns `table`'s sensors name: (column, key path in messages, key path of its place).
fn named_columns<'t>(table: &'t TableConfig, table_path: &str) -> Vec<(&'t str, String, String)> {
    let mut named = Vec::new();
    if let Some(column) = table.freshness.as_ref().and_then(|freshness| freshness.timestamp_column.as_deref()) {
        let key_path = join(&join(table_path, "freshness"), "timestamp_column");
        named.push((column, key_path.clone(), key_path));
    }
    if let Some(distribution) = &table.distribution {
        let key_path = join(&join(table_path, "distribution"), "columns");
        for (column, _) in &distribution.columns {
            named.push((column.as_str(), key_path.clone(), join(&key_path, column)));
        }
    }
    named
}

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
                    format!(
                        "stage names table `{}`, which is not declared under [tables]{suggestion}",
                        shortened(table_name)
                    ),
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
                    format!("stage `{}` is declared twice in this pipeline", shortened(stage)),
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
                    format!("upstream stage `{}` does not exist in this pipeline{suggestion}", shortened(name)),
                );
                ok = false;
            }
        }
        if ok && let Some(cycle) = find_cycle(&stages) {
            let cycle: Vec<_> = cycle.iter().map(|stage| shortened(stage)).collect();
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
    use std::path::Path;

    use super::*;

    /// A table with the given top-level columns (and nested `address.city`).
    struct Columns(&'static [&'static str]);

    impl TableColumns for Columns {
        fn has_column(&self, name: &str) -> bool {
            self.0.contains(&name) || name == "address.city"
        }

        fn column_names(&self) -> Vec<&str> {
            self.0.to_vec()
        }
    }

    const TEXT: &str = r#"[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "warehouse"

[tables."bronze.trades".freshness]
timestamp_column = "event_ts"

[tables."bronze.trades".distribution]
columns = { price = ["mean"], quantty = ["mean"], "address.city" = ["distinct_count"] }

[tables."bronze.missing".volume]
"#;

    #[test]
    fn online_problems_point_at_the_key_that_named_the_table_or_column() {
        let path = Path::new("/srv/icewatch/sensors.toml");
        let (config, locations) = super::super::parse::parse_with_locations(TEXT, path, &|_| None).expect("valid");
        let trades = Columns(&["ts", "price", "quantity"]);
        let problems = online_problems(&config, &locations, |name| match name.as_str() {
            "bronze.trades" => Ok(&trades as &dyn TableColumns),
            other => Err(format!("table `{other}` not found in catalog `sqlite://catalog.db`")),
        });
        let rendered: Vec<String> = problems.iter().map(|problem| problem.at(path).to_string()).collect();
        assert_eq!(
            rendered,
            [
                "/srv/icewatch/sensors.toml:7:20: `tables.\"bronze.trades\".freshness.timestamp_column`: \
                 column `event_ts` not found in table `bronze.trades`",
                "/srv/icewatch/sensors.toml:10:31: `tables.\"bronze.trades\".distribution.columns`: \
                 column `quantty` not found in table `bronze.trades` (did you mean `quantity`?)",
                "/srv/icewatch/sensors.toml:12:9: table `bronze.missing` not found in catalog `sqlite://catalog.db`",
            ]
        );
    }

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
