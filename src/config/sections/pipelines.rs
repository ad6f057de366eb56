//! `[pipelines.NAME]` and `[lineage]`: which tables feed which, declared and learned. A pipeline
//! is read into a [`PipelineDraft`] (every stage entry, with where it was written); the checks
//! across its stages and against `[tables]` are `validate.rs`'s, which make it a pipeline.

use toml_edit::{Item, TableLike, Value};

use crate::config::reader::{Key, Reader, Section, join, span_pair, type_name};
use crate::config::{DatasetRule, LineageConfig};

pub(in crate::config) const PIPELINE_KEYS: &[Key] =
    &[Key { name: "stages", default: "required", doc: "The stages, each `{ stage, table, upstream, job }`." }];

/// One entry of a pipeline's `stages`.
pub(in crate::config) const STAGE_KEYS: &[Key] = &[
    Key { name: "stage", default: "required", doc: "Stage name, unique in the pipeline (the `stage` label)." },
    Key { name: "table", default: "required", doc: "The table of this stage; must be declared under `[tables]`." },
    Key {
        name: "upstream",
        default: "`[]`",
        doc: "Stages of this pipeline that feed this one; they must exist and must not form a cycle.",
    },
    Key { name: "job", default: "the table name", doc: "The `job` label of the stage's metrics." },
];

pub(in crate::config) const LINEAGE_KEYS: &[Key] = &[
    Key {
        name: "datasets",
        default: "`[]`",
        doc: "tried in order; the first rule that matches a dataset names its table",
    },
    Key {
        name: "retention",
        default: r#"`"7d"`"#,
        doc: "received events older than this (by `eventTime`; one in the future counts from its arrival) are deleted from the history store when the service starts and hourly, and are not replayed",
    },
];

/// One rule of `[lineage] datasets`.
pub(in crate::config) const DATASET_RULE_KEYS: &[Key] = &[
    Key {
        name: "namespace",
        default: "required",
        doc: "the dataset namespace the rule applies to (exact match; a trailing `/` is ignored)",
    },
    Key {
        name: "strip_prefix",
        default: r#"`""`"#,
        doc: "the dataset name must start with it; the rest of the name, with surrounding `/` trimmed and `/` read as `.`, is the table (`silver/cleaned_trades` → `silver.cleaned_trades`); it must have at least two parts",
    },
];

/// A pipeline as read, before the checks across its stages.
pub(in crate::config) struct PipelineDraft {
    pub name: String,
    /// Key path of `stages` and the span of its value (where a cycle is reported).
    pub stages_path: String,
    pub stages_span: Option<(usize, usize)>,
    /// Every stage table of `stages`, in order, with what could be read of it.
    pub stages: Vec<StageDraft>,
}

/// One entry of `stages` as read; a key that could not be read is `None` (its problem is recorded).
pub(in crate::config) struct StageDraft {
    /// Key path of the entry: `pipelines.NAME.stages[INDEX]`.
    pub path: String,
    /// The stage name and its value's span.
    pub stage: Option<(String, Option<(usize, usize)>)>,
    pub table: Option<StageTable>,
    /// The upstream stage names, each with its span.
    pub upstream: Vec<(String, Option<(usize, usize)>)>,
    pub job: Option<String>,
}

/// The `table` of a stage entry.
pub(in crate::config) struct StageTable {
    pub name: String,
    /// The text as written: a `${VAR}` may hold a secret.
    pub raw: String,
    pub span: Option<(usize, usize)>,
}

/// A pipeline stage as found: its position in `stages`, its table, its span.
type StageEntry<'d> = (usize, &'d dyn TableLike, Option<(usize, usize)>);
/// A table of an array of tables (or of an inline array) with its span.
type SpannedTable<'d> = (&'d dyn TableLike, Option<(usize, usize)>);

impl Reader<'_> {
    pub(super) fn pipelines(&mut self, root: &Section<'_>) -> Vec<PipelineDraft> {
        let Some(section) = self.section(root, "pipelines") else {
            return Vec::new();
        };
        let mut pipelines = Vec::new();
        for (name, _) in section.table.iter() {
            let Some(pipeline) = self.section(&section, name) else { continue };
            self.check_keys(&pipeline, &[PIPELINE_KEYS], "a pipeline");
            if let Some(draft) = self.stages(&pipeline, name) {
                pipelines.push(draft);
            }
        }
        pipelines
    }

    /// The stages of `pipeline` as read; `None` when `stages` is missing or not an array.
    fn stages(&mut self, pipeline: &Section<'_>, name: &str) -> Option<PipelineDraft> {
        let stages_path = join(&pipeline.path, "stages");
        let stages_span = Reader::value_span(pipeline, "stages");
        // (position in the array, stage table, span): positions name the entry in messages.
        let entries: Vec<StageEntry<'_>> = match pipeline.table.get("stages") {
            None => {
                self.problem_at(pipeline.span, &stages_path, "missing required key `stages`");
                return None;
            }
            Some(Item::ArrayOfTables(array)) => array
                .iter()
                .enumerate()
                .map(|(index, table)| (index, table as &dyn TableLike, span_pair(table.span())))
                .collect(),
            Some(Item::Value(Value::Array(array))) => {
                let mut entries = Vec::new();
                for (index, value) in array.iter().enumerate() {
                    match value.as_inline_table() {
                        Some(table) => entries.push((index, table as &dyn TableLike, span_pair(value.span()))),
                        None => self.problem_at(span_pair(value.span()), &format!("{stages_path}[{index}]"), "expected a stage table such as `{ stage = \"silver\", table = \"silver.orders\", upstream = [\"bronze\"] }`"),
                    }
                }
                entries
            }
            Some(other) => {
                self.problem_at(
                    stages_span,
                    &stages_path,
                    format!("expected an array of stages, found {}", type_name(other)),
                );
                return None;
            }
        };

        let mut stages = Vec::new();
        for (index, table, span) in entries {
            let stage_section = Section { table, path: format!("{stages_path}[{index}]"), span };
            let path = stage_section.path.as_str();
            self.check_keys(&stage_section, &[STAGE_KEYS], "a pipeline stage");
            let stage = self
                .required_string(&stage_section, "stage")
                .map(|stage| (stage, Reader::value_span(&stage_section, "stage")));
            let table_name = self.required_string_with_raw(&stage_section, "table").map(|(name, raw)| StageTable {
                name,
                raw,
                span: Reader::value_span(&stage_section, "table"),
            });
            let mut upstream = Vec::new();
            if let Some(item) = table.get("upstream") {
                match item.as_array() {
                    Some(array) => {
                        for value in array.iter() {
                            match value.as_str() {
                                Some(name) => upstream.push((name.to_string(), span_pair(value.span()))),
                                None => self.problem_at(
                                    span_pair(value.span()),
                                    &join(path, "upstream"),
                                    "expected a stage name (a string)",
                                ),
                            }
                        }
                    }
                    None => {
                        let span = Reader::value_span(&stage_section, "upstream");
                        self.problem_at(
                            span,
                            &join(path, "upstream"),
                            format!("expected an array of stage names, found {}", type_name(item)),
                        );
                    }
                }
            }
            let job = self.string(&stage_section, "job");
            stages.push(StageDraft { path: stage_section.path.clone(), stage, table: table_name, upstream, job });
        }
        Some(PipelineDraft { name: name.to_string(), stages_path, stages_span, stages })
    }

    /// `[lineage]`: `datasets = [{ namespace = "...", strip_prefix = "..." }, ...]` and
    /// `retention = "7d"`.
    pub(super) fn lineage(&mut self, root: &Section<'_>) -> LineageConfig {
        let Some(section) = self.section(root, "lineage") else { return LineageConfig::default() };
        self.check_keys(&section, &[LINEAGE_KEYS], "[lineage]");
        let retention = self.duration(&section, "retention").unwrap_or(LineageConfig::DEFAULT_RETENTION);
        let path = join(&section.path, "datasets");
        let mut datasets = Vec::new();
        let entries: Vec<SpannedTable<'_>> = match section.table.get("datasets") {
            None => Vec::new(),
            Some(Item::ArrayOfTables(array)) => {
                array.iter().map(|table| (table as &dyn TableLike, span_pair(table.span()))).collect()
            }
            Some(Item::Value(Value::Array(array))) => {
                let mut entries = Vec::new();
                for value in array.iter() {
                    match value.as_inline_table() {
                        Some(table) => entries.push((table as &dyn TableLike, span_pair(value.span()))),
                        None => self.problem_at(
                            span_pair(value.span()),
                            &path,
                            "expected a rule such as `{ namespace = \"file\", strip_prefix = \"/warehouse/\" }`",
                        ),
                    }
                }
                entries
            }
            Some(other) => {
                let span = Reader::value_span(&section, "datasets");
                self.problem_at(span, &path, format!("expected an array of rules, found {}", type_name(other)));
                Vec::new()
            }
        };
        for (index, (table, span)) in entries.into_iter().enumerate() {
            let rule = Section { table, path: format!("{path}[{index}]"), span };
            self.check_keys(&rule, &[DATASET_RULE_KEYS], "a lineage dataset rule");
            let namespace = self.required_string(&rule, "namespace");
            let strip_prefix = self.string(&rule, "strip_prefix").unwrap_or_default();
            if let Some(namespace) = namespace {
                datasets.push(DatasetRule { namespace, strip_prefix });
            }
        }
        LineageConfig { datasets, retention }
    }
}
