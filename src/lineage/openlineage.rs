//! OpenLineage `RunEvent`s: parsing and validating one event, and mapping its datasets to
//! catalog tables with the `[lineage]` rules. Pure: no IO, no state; a malformed event is an
//! error here and is never half-applied by the caller.
//!
//! Facets read (all optional): an output's `outputFacets.icebergCommitReport.snapshotId` (what
//! OpenLineage's Spark integration emits for an Iceberg commit, `IcebergCommitReportOutputDatasetFacet`),
//! else its `facets.version.datasetVersion` when that is a whole number (Iceberg's snapshot id in
//! `DatasetVersionDatasetFacet`), and `facets.symlinks.identifiers` (Spark names an Iceberg table
//! by its location and puts `namespace.table` there).
//!
//! Limits: what one event can make icewatch hold, store and compute is bounded by
//! [`MAX_EVENT_BYTES`] (checked by the server before the body is read), [`MAX_DATASETS`] and
//! [`MAX_NAME_BYTES`]. An event over one of them is refused whole, before it is mapped.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{Config, LineageConfig};

/// The run states of the OpenLineage spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    Start,
    Running,
    Complete,
    Abort,
    Fail,
    Other,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Start => "START",
            RunState::Running => "RUNNING",
            RunState::Complete => "COMPLETE",
            RunState::Abort => "ABORT",
            RunState::Fail => "FAIL",
            RunState::Other => "OTHER",
        }
    }

    /// A state after which the run does not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Complete | RunState::Abort | RunState::Fail)
    }

    pub fn is_failure(self) -> bool {
        matches!(self, RunState::Abort | RunState::Fail)
    }
}

/// Largest accepted event body.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Most entries accepted in `inputs`, and in `outputs`.
pub const MAX_DATASETS: usize = 1_000;
/// Longest accepted job or dataset namespace or name (symlink identifiers included), in bytes.
pub const MAX_NAME_BYTES: usize = 512;

/// Why an event was refused (the HTTP answer carries this text; the status is the server's).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("not an OpenLineage RunEvent: {0}")]
    Shape(String),
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error("`{field}` lists {count} datasets, more than the {limit} accepted")]
    TooManyDatasets { field: &'static str, count: usize, limit: usize },
    #[error("`{field}` is {length} bytes long, longer than the {limit} accepted")]
    TooLong { field: String, length: usize, limit: usize },
}

impl EventError {
    /// The bounded `reason` label of `icewatch_lineage_events_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::NotJson(_) | EventError::Shape(_) | EventError::Invalid { .. } => "malformed",
            EventError::TooManyDatasets { .. } => "too_many_datasets",
            EventError::TooLong { .. } => "name_too_long",
        }
    }
}

/// Refuses `text` (the value of `field`) when it is longer than [`MAX_NAME_BYTES`].
fn within_name_limit(text: &str, field: impl FnOnce() -> String) -> Result<(), EventError> {
    if text.len() > MAX_NAME_BYTES {
        return Err(EventError::TooLong { field: field(), length: text.len(), limit: MAX_NAME_BYTES });
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRunEvent {
    event_type: Option<String>,
    event_time: String,
    producer: Option<String>,
    run: RawRun,
    job: RawJob,
    inputs: Option<Vec<RawDataset>>,
    outputs: Option<Vec<RawDataset>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRun {
    run_id: String,
}

#[derive(Deserialize)]
struct RawJob {
    namespace: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDataset {
    namespace: String,
    name: String,
    facets: Option<Map<String, Value>>,
    output_facets: Option<Map<String, Value>>,
}

/// One dataset of an event, with the table it maps to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    pub namespace: String,
    pub name: String,
    /// The catalog table (`namespace.table`) the `[lineage]` rules map it to.
    pub table: Option<String>,
    /// The Iceberg snapshot an output's commit produced.
    pub snapshot_id: Option<i64>,
}

impl DatasetRef {
    /// The node name in the graph: the table, else `namespace:name`.
    pub fn node(&self) -> String {
        self.table.clone().unwrap_or_else(|| format!("{}:{}", self.namespace, self.name))
    }
}

/// A validated RunEvent, reduced to what icewatch uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub event_type: RunState,
    pub event_time_ms: i64,
    pub run_id: String,
    /// `job.namespace/job.name`.
    pub job: String,
    pub producer: Option<String>,
    pub inputs: Vec<DatasetRef>,
    pub outputs: Vec<DatasetRef>,
}

impl RunEvent {
    /// Dedupe key in the history store: the same event posted twice is stored once.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.run_id, self.event_type.as_str(), self.event_time_ms)
    }
}

/// Parses and validates `body` as a RunEvent and maps its datasets to tables.
pub fn parse_event(body: &[u8], config: &Config) -> Result<RunEvent, EventError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| EventError::NotJson(error.to_string()))?;
    let object = value.as_object().ok_or_else(|| EventError::Shape("expected a JSON object".to_string()))?;
    if !object.contains_key("run") {
        return Err(EventError::Shape("missing `run` (DatasetEvent and JobEvent are not accepted here)".to_string()));
    }
    // Counted before the datasets are read into their own structures.
    for field in ["inputs", "outputs"] {
        let count = object.get(field).and_then(Value::as_array).map_or(0, Vec::len);
        if count > MAX_DATASETS {
            return Err(EventError::TooManyDatasets { field, count, limit: MAX_DATASETS });
        }
    }
    let raw: RawRunEvent = serde_json::from_value(value).map_err(|error| EventError::Shape(error.to_string()))?;
    let invalid = |field: &str, reason: String| EventError::Invalid { field: field.to_string(), reason };

    let event_type = match raw.event_type.as_deref() {
        None => RunState::Other,
        Some(text) => serde_json::from_value(Value::String(text.to_string())).map_err(|_| {
            invalid("eventType", format!("`{text}` is not one of START, RUNNING, COMPLETE, ABORT, FAIL, OTHER"))
        })?,
    };
    let event_time_ms = chrono::DateTime::parse_from_rfc3339(&raw.event_time)
        .map_err(|error| invalid("eventTime", format!("`{}` is not an ISO 8601 date-time: {error}", raw.event_time)))?
        .timestamp_millis();
    uuid::Uuid::parse_str(&raw.run.run_id)
        .map_err(|error| invalid("run.runId", format!("`{}` is not a UUID: {error}", raw.run.run_id)))?;
    if raw.job.namespace.trim().is_empty() {
        return Err(invalid("job.namespace", "must not be empty".to_string()));
    }
    if raw.job.name.trim().is_empty() {
        return Err(invalid("job.name", "must not be empty".to_string()));
    }
    within_name_limit(&raw.job.namespace, || "job.namespace".to_string())?;
    within_name_limit(&raw.job.name, || "job.name".to_string())?;
    let inputs = datasets(raw.inputs.unwrap_or_default(), "inputs", &config.lineage, config)?;
    let outputs = datasets(raw.outputs.unwrap_or_default(), "outputs", &config.lineage, config)?;
    Ok(RunEvent {
        event_type,
        event_time_ms,
        run_id: raw.run.run_id,
        job: format!("{}/{}", raw.job.namespace, raw.job.name),
        producer: raw.producer,
        inputs,
        outputs,
    })
}

fn datasets(
    raw: Vec<RawDataset>,
    field: &str,
    rules: &LineageConfig,
    config: &Config,
) -> Result<Vec<DatasetRef>, EventError> {
    let mut out = Vec::with_capacity(raw.len());
    for (index, dataset) in raw.into_iter().enumerate() {
        let path = format!("{field}[{index}]");
        if dataset.namespace.is_empty() || dataset.name.is_empty() {
            return Err(EventError::Invalid {
                field: path,
                reason: "`namespace` and `name` must not be empty".to_string(),
            });
        }
        within_name_limit(&dataset.namespace, || format!("{path}.namespace"))?;
        within_name_limit(&dataset.name, || format!("{path}.name"))?;
        let facets = dataset.facets.unwrap_or_default();
        let mut candidates = vec![(dataset.namespace.clone(), dataset.name.clone())];
        candidates.extend(symlinks(&facets, &path)?);
        let table = candidates.iter().find_map(|(namespace, name)| map_dataset(namespace, name, rules, config));
        let snapshot_id = snapshot_id(dataset.output_facets.as_ref(), &facets, &path)?;
        out.push(DatasetRef { namespace: dataset.namespace, name: dataset.name, table, snapshot_id });
    }
    Ok(out)
}

/// `facets.symlinks.identifiers[]` as (namespace, name).
fn symlinks(facets: &Map<String, Value>, path: &str) -> Result<Vec<(String, String)>, EventError> {
    let Some(symlinks) = facets.get("symlinks") else { return Ok(Vec::new()) };
    let identifiers = symlinks.get("identifiers").and_then(Value::as_array);
    let Some(identifiers) = identifiers else {
        return Err(EventError::Invalid {
            field: format!("{path}.facets.symlinks"),
            reason: "expected an `identifiers` array".to_string(),
        });
    };
    let mut out = Vec::new();
    for (index, identifier) in identifiers.iter().enumerate() {
        match (identifier.get("namespace").and_then(Value::as_str), identifier.get("name").and_then(Value::as_str)) {
            (Some(namespace), Some(name)) => {
                within_name_limit(namespace, || format!("{path}.facets.symlinks.identifiers[{index}].namespace"))?;
                within_name_limit(name, || format!("{path}.facets.symlinks.identifiers[{index}].name"))?;
                out.push((namespace.to_string(), name.to_string()))
            }
            _ => {
                return Err(EventError::Invalid {
                    field: format!("{path}.facets.symlinks.identifiers[{index}]"),
                    reason: "expected `namespace` and `name` strings".to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// The snapshot an output's Iceberg commit produced.
fn snapshot_id(
    output_facets: Option<&Map<String, Value>>,
    facets: &Map<String, Value>,
    path: &str,
) -> Result<Option<i64>, EventError> {
    if let Some(report) = output_facets.and_then(|facets| facets.get("icebergCommitReport")) {
        let field = format!("{path}.outputFacets.icebergCommitReport.snapshotId");
        return match report.get("snapshotId") {
            Some(value) => whole_number(value)
                .map(Some)
                .ok_or(EventError::Invalid { field, reason: format!("expected a whole number, found `{value}`") }),
            None => Err(EventError::Invalid { field, reason: "missing".to_string() }),
        };
    }
    Ok(facets.get("version").and_then(|version| version.get("datasetVersion")).and_then(whole_number))
}

fn whole_number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// The catalog table a dataset maps to: the first `[lineage]` rule whose namespace is the
/// dataset's and whose `strip_prefix` starts its name gives the rest of the name (slashes read
/// as dots); with no matching rule, a name that is a declared table maps to itself.
pub fn map_dataset(namespace: &str, name: &str, rules: &LineageConfig, config: &Config) -> Option<String> {
    for rule in &rules.datasets {
        if rule.namespace.trim_end_matches('/') != namespace.trim_end_matches('/') {
            continue;
        }
        let Some(rest) = name.strip_prefix(rule.strip_prefix.as_str()) else { continue };
        let table = rest.trim_matches('/').replace('/', ".");
        if table.split('.').filter(|part| !part.is_empty()).count() >= 2 {
            return Some(table);
        }
    }
    config.table(name).map(|table| table.name.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatasetRule;

    fn config(rules: Vec<DatasetRule>) -> Config {
        let text = r#"
[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "warehouse"
[history]
path = "history.db"
[tables."bronze.raw_trades".freshness]
warn_after = "1h"
[tables."silver.cleaned_trades".freshness]
warn_after = "1h"
"#;
        let mut config = Config::from_str(text, std::path::Path::new("/tmp/sensors.toml")).unwrap();
        config.lineage.datasets = rules;
        config
    }

    const EVENT: &str = r#"{
      "eventType": "COMPLETE", "eventTime": "2025-01-02T03:04:05.678Z",
      "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.30.0/integration/spark",
      "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
      "run": { "runId": "0195f2a4-7c1e-7d3a-9c59-3d2f0f5e4a11" },
      "job": { "namespace": "spark", "name": "clean_trades.append" },
      "inputs": [{ "namespace": "file", "name": "/wh/bronze/raw_trades" }],
      "outputs": [{ "namespace": "file", "name": "/wh/silver/cleaned_trades",
        "facets": { "symlinks": { "identifiers": [{ "namespace": "file:/wh", "name": "silver.cleaned_trades", "type": "TABLE" }] } },
        "outputFacets": { "icebergCommitReport": { "snapshotId": 4242, "sequenceNumber": 3, "operation": "append" } } }]
    }"#;

    #[test]
    fn maps_by_rule_and_by_symlink_and_reads_the_commit_facet() {
        let config = config(vec![DatasetRule { namespace: "file".to_string(), strip_prefix: "/wh/".to_string() }]);
        let event = parse_event(EVENT.as_bytes(), &config).unwrap();
        assert_eq!(event.event_type, RunState::Complete);
        assert_eq!(event.job, "spark/clean_trades.append");
        assert_eq!(event.inputs[0].table.as_deref(), Some("bronze.raw_trades"));
        assert_eq!(event.outputs[0].table.as_deref(), Some("silver.cleaned_trades"));
        assert_eq!(event.outputs[0].snapshot_id, Some(4242));
        // Without rules, the symlink's `namespace.table` name still maps; the bare path does not.
        let event = parse_event(EVENT.as_bytes(), &config_without_rules()).unwrap();
        assert_eq!(event.outputs[0].table.as_deref(), Some("silver.cleaned_trades"));
        assert_eq!(event.inputs[0].table, None);
        assert_eq!(event.inputs[0].node(), "file:/wh/bronze/raw_trades");
    }

    fn config_without_rules() -> Config {
        config(Vec::new())
    }

    #[test]
    fn refuses_malformed_events_with_a_reason() {
        let config = config_without_rules();
        let cases = [
            ("{", "not JSON"),
            (r#"{"eventTime":"2025-01-01T00:00:00Z","job":{"namespace":"a","name":"b"}}"#, "missing `run`"),
            (&EVENT.replace("COMPLETE", "DONE"), "eventType"),
            (&EVENT.replace("2025-01-02T03:04:05.678Z", "yesterday"), "eventTime"),
            (&EVENT.replace("0195f2a4-7c1e-7d3a-9c59-3d2f0f5e4a11", "run-1"), "run.runId"),
            (&EVENT.replace("\"snapshotId\": 4242", "\"snapshotId\": \"latest\""), "snapshotId"),
            (&EVENT.replace("\"name\": \"clean_trades.append\"", "\"name\": \"\""), "job.name"),
        ];
        for (body, expected) in cases {
            let error = parse_event(body.as_bytes(), &config).unwrap_err().to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn refuses_events_over_the_limits_naming_the_field() {
        let config = config_without_rules();
        let inputs = r#""inputs": [{ "namespace": "file", "name": "/wh/bronze/raw_trades" }]"#;
        let wide = |count: usize| {
            let list: Vec<String> =
                (0..count).map(|index| format!(r#"{{ "namespace": "n", "name": "d{index}" }}"#)).collect();
            EVENT.replace(inputs, &format!(r#""inputs": [{}]"#, list.join(",")))
        };
        assert_eq!(parse_event(wide(MAX_DATASETS).as_bytes(), &config).unwrap().inputs.len(), MAX_DATASETS);
        let error = parse_event(wide(MAX_DATASETS + 1).as_bytes(), &config).unwrap_err();
        assert!(matches!(error, EventError::TooManyDatasets { field: "inputs", count: 1001, limit: 1000 }), "{error}");
        assert_eq!(error.to_string(), "`inputs` lists 1001 datasets, more than the 1000 accepted");
        assert_eq!(error.reason(), "too_many_datasets");

        let at_limit = "n".repeat(MAX_NAME_BYTES);
        let over = "n".repeat(MAX_NAME_BYTES + 1);
        let job = |name: &str| EVENT.replace("clean_trades.append", name);
        assert!(parse_event(job(&at_limit).as_bytes(), &config).is_ok());
        let cases = [
            (job(&over), "job.name"),
            (EVENT.replace(r#""namespace": "spark""#, &format!(r#""namespace": "{over}""#)), "job.namespace"),
            (EVENT.replace("/wh/bronze/raw_trades", &over), "inputs[0].name"),
            (
                EVENT.replace(r#""name": "silver.cleaned_trades""#, &format!(r#""name": "{over}""#)),
                "outputs[0].facets.symlinks.identifiers[0].name",
            ),
        ];
        for (body, field) in cases {
            let error = parse_event(body.as_bytes(), &config).unwrap_err();
            assert_eq!(error.to_string(), format!("`{field}` is 513 bytes long, longer than the 512 accepted"));
            assert_eq!(error.reason(), "name_too_long");
        }
        assert_eq!(parse_event(b"[]", &config).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn dataset_version_is_the_snapshot_when_no_commit_report() {
        let config = config_without_rules();
        let body = EVENT
            .replace("\"outputFacets\"", "\"ignored\"")
            .replace("\"symlinks\"", "\"version\": { \"datasetVersion\": \"777\" }, \"symlinks\"");
        let event = parse_event(body.as_bytes(), &config).unwrap();
        assert_eq!(event.outputs[0].snapshot_id, Some(777));
    }
}
