//! Schema: changes between consecutive schemas of the table, read from its metadata (every
//! schema it ever had, and which snapshot used which), matched by field id so a rename is a
//! rename and not drop+add. A change made while icewatch was down is still seen, because it is
//! read from the table, not remembered. Also checks the declared `expect` baseline.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::{PrimitiveType, Schema, Type};
use iceberg::table::Table;
use serde::Serialize;

use futures::future::BoxFuture;

use super::{
    Evaluation, Export, Family, Input, Metric, Observed, Reading, Sensor, SensorError, Status, Step, format_ms,
};
use crate::config::{SchemaConfig, SensorKind};
use crate::history::{Event, Point, SeriesKey};

/// One change between two consecutive schemas.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemaChange {
    pub change_type: &'static str,
    /// Dotted path of the column in the newer schema (older one for drops).
    pub column: String,
    pub field_id: i32,
    /// Human description: `int → long (promotion)`, `qty → quantity`.
    pub detail: String,
    /// Whether the change can break readers (drop, non-promotion type change, optional → required).
    pub breaking: bool,
    pub from_schema_id: i32,
    pub to_schema_id: i32,
    /// When the newer schema came into use: its first snapshot, else the metadata update time.
    pub changed_at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct SchemaObservation {
    pub now_ms: i64,
    pub current_schema_id: i32,
    pub column_count: usize,
    pub columns: Vec<(String, String)>,
    /// Every change in the table's schema history, oldest first.
    pub changes: Vec<SchemaChange>,
}

pub fn observe(table: &Table, now_ms: i64) -> SchemaObservation {
    let metadata = table.metadata();
    let mut schemas: Vec<&Schema> = metadata.schemas_iter().map(|schema| schema.as_ref()).collect();
    schemas.sort_by_key(|schema| schema.schema_id());
    // When each schema came into use: the first snapshot that was written with it.
    let mut first_use: HashMap<i32, i64> = HashMap::new();
    for snapshot in metadata.snapshots() {
        if let Some(schema_id) = snapshot.schema_id() {
            let at = first_use.entry(schema_id).or_insert(snapshot.timestamp_ms());
            *at = (*at).min(snapshot.timestamp_ms());
        }
    }
    let changed_at = |index: usize| -> i64 {
        // A schema no snapshot used yet (e.g. ALTER TABLE without a write) took effect no later
        // than the next schema's first use, or the last metadata update.
        schemas[index..]
            .iter()
            .find_map(|schema| first_use.get(&schema.schema_id()).copied())
            .unwrap_or(metadata.last_updated_ms())
            .min(metadata.last_updated_ms())
    };
    let mut changes = Vec::new();
    for index in 1..schemas.len() {
        diff_schemas(schemas[index - 1], schemas[index], changed_at(index), &mut changes);
    }
    let current = metadata.current_schema();
    // Writers reuse the id of an existing schema when a change leads back to it (add a column,
    // then drop it: the table is on schema 0 again, after 0 → 1). Then the newest schema is
    // not the current one, and the way back is a change of its own.
    if let Some(newest) = schemas.last()
        && newest.schema_id() != current.schema_id()
    {
        diff_schemas(newest, current, metadata.last_updated_ms(), &mut changes);
    }
    SchemaObservation {
        now_ms,
        current_schema_id: current.schema_id(),
        column_count: current.as_struct().fields().len(),
        columns: current
            .as_struct()
            .fields()
            .iter()
            .map(|field| (field.name.clone(), type_text(&field.field_type)))
            .collect(),
        changes,
    }
}

/// Adds the changes from `old` to `new` (matched by field id, nested fields included).
pub fn diff_schemas(old: &Schema, new: &Schema, changed_at_ms: i64, changes: &mut Vec<SchemaChange>) {
    let old_fields = flatten(old);
    let new_fields = flatten(new);
    let mut push = |change_type: &'static str, column: &str, field_id: i32, detail: String, breaking: bool| {
        changes.push(SchemaChange {
            change_type,
            column: column.to_string(),
            field_id,
            detail,
            breaking,
            from_schema_id: old.schema_id(),
            to_schema_id: new.schema_id(),
            changed_at_ms,
        })
    };
    for (id, new_field) in &new_fields {
        match old_fields.get(id) {
            None => {
                // A field inside a column that is itself new is part of that addition.
                if new_field.parent.is_none_or(|parent| old_fields.contains_key(&parent)) {
                    let detail = format!("added `{}` {}", new_field.path, new_field.type_text);
                    push("column_added", &new_field.path, *id, detail, new_field.required);
                }
            }
            Some(old_field) => {
                if old_field.name != new_field.name {
                    let detail = format!("renamed `{}` → `{}`", old_field.path, new_field.path);
                    push("column_renamed", &new_field.path, *id, detail, true);
                }
                if let (Some(old_type), Some(new_type)) = (&old_field.primitive, &new_field.primitive)
                    && old_type != new_type
                {
                    let promotion = is_promotion(old_type, new_type);
                    let detail = format!(
                        "`{}` {old_type} → {new_type}{}",
                        new_field.path,
                        if promotion { " (promotion)" } else { "" }
                    );
                    let change_type = if promotion { "type_promoted" } else { "type_changed" };
                    push(change_type, &new_field.path, *id, detail, !promotion);
                } else if old_field.primitive.is_none() != new_field.primitive.is_none() {
                    let detail = format!("`{}` {} → {}", new_field.path, old_field.type_text, new_field.type_text);
                    push("type_changed", &new_field.path, *id, detail, true);
                }
                if old_field.required != new_field.required {
                    let (from, to) =
                        if new_field.required { ("optional", "required") } else { ("required", "optional") };
                    let detail = format!("`{}` {from} → {to}", new_field.path);
                    push("nullability_changed", &new_field.path, *id, detail, new_field.required);
                }
            }
        }
    }
    for (id, old_field) in &old_fields {
        if !new_fields.contains_key(id) && old_field.parent.is_none_or(|parent| new_fields.contains_key(&parent)) {
            let detail = format!("dropped `{}` {}", old_field.path, old_field.type_text);
            push("column_dropped", &old_field.path, *id, detail, true);
        }
    }
}

struct FlatField {
    name: String,
    path: String,
    parent: Option<i32>,
    required: bool,
    primitive: Option<PrimitiveType>,
    type_text: String,
}

/// Every field of the schema by id, with its dotted path (list elements and map values are
/// reached through `element` / `key` / `value` like Iceberg's own names).
fn flatten(schema: &Schema) -> BTreeMap<i32, FlatField> {
    fn walk(
        fields: &[iceberg::spec::NestedFieldRef],
        prefix: &str,
        parent: Option<i32>,
        out: &mut BTreeMap<i32, FlatField>,
    ) {
        for field in fields {
            let path = if prefix.is_empty() { field.name.clone() } else { format!("{prefix}.{}", field.name) };
            let primitive = match field.field_type.as_ref() {
                Type::Primitive(primitive) => Some(primitive.clone()),
                _ => None,
            };
            out.insert(
                field.id,
                FlatField {
                    name: field.name.clone(),
                    path: path.clone(),
                    parent,
                    required: field.required,
                    primitive,
                    type_text: type_text(&field.field_type),
                },
            );
            match field.field_type.as_ref() {
                Type::Struct(inner) => walk(inner.fields(), &path, Some(field.id), out),
                Type::List(list) => walk(std::slice::from_ref(&list.element_field), &path, Some(field.id), out),
                Type::Map(map) => walk(&[map.key_field.clone(), map.value_field.clone()], &path, Some(field.id), out),
                Type::Primitive(_) => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(schema.as_struct().fields(), "", None, &mut out);
    out
}

/// Iceberg's type name, in the form `schema.expect` uses (`decimal(10,2)`, `struct`).
pub fn type_text(field_type: &Type) -> String {
    match field_type {
        Type::Primitive(PrimitiveType::Decimal { precision, scale }) => format!("decimal({precision},{scale})"),
        Type::Primitive(PrimitiveType::Fixed(size)) => format!("fixed[{size}]"),
        Type::Primitive(primitive) => primitive.to_string(),
        Type::Struct(_) => "struct".to_string(),
        Type::List(_) => "list".to_string(),
        Type::Map(_) => "map".to_string(),
    }
}

/// Type changes the Iceberg spec allows without rewriting data.
fn is_promotion(from: &PrimitiveType, to: &PrimitiveType) -> bool {
    match (from, to) {
        (PrimitiveType::Int, PrimitiveType::Long) | (PrimitiveType::Float, PrimitiveType::Double) => true,
        (PrimitiveType::Date, PrimitiveType::Timestamp | PrimitiveType::TimestampNs) => true,
        (
            PrimitiveType::Decimal { precision: from_precision, scale: from_scale },
            PrimitiveType::Decimal { precision: to_precision, scale: to_scale },
        ) => from_scale == to_scale && to_precision > from_precision,
        _ => false,
    }
}

/// Each change as a history event (deduplicated on schema ids + field + kind).
pub fn events(table_name: &str, observation: &SchemaObservation) -> Vec<Event> {
    observation
        .changes
        .iter()
        .map(|change| Event {
            table: table_name.to_string(),
            kind: "schema_change".to_string(),
            key: format!(
                "{}>{}:{}:{}",
                change.from_schema_id, change.to_schema_id, change.change_type, change.field_id
            ),
            occurred_at_ms: change.changed_at_ms,
            payload: serde_json::to_value(change).unwrap_or_default(),
        })
        .collect()
}

pub fn judge(table_name: &str, config: &SchemaConfig, observation: &SchemaObservation) -> Vec<Evaluation> {
    let kind = SensorKind::SCHEMA;
    let mut results = Vec::new();
    let recent_since = observation.now_ms - config.recent.as_millis() as i64;
    for change in observation.changes.iter().filter(|change| change.changed_at_ms >= recent_since) {
        let status = if change.breaking { Status::Critical } else { Status::Warning };
        let when = format_ms(change.changed_at_ms).unwrap_or_default();
        let mut evaluation = Evaluation::new(
            table_name,
            kind,
            Metric::SCHEMA_CHANGE,
            status,
            format!("{} (schema {} → {}, at {when})", change.detail, change.from_schema_id, change.to_schema_id),
        )
        .at(change.changed_at_ms, None);
        evaluation.change_type = Some(change.change_type.to_string());
        evaluation.column = Some(change.column.clone());
        results.push(evaluation);
    }

    let actual: HashMap<&str, &str> =
        observation.columns.iter().map(|(name, field_type)| (name.as_str(), field_type.as_str())).collect();
    for (column, expected) in &config.expect {
        let (status, message) = match actual.get(column.as_str()) {
            None => (Status::Critical, format!("expected column `{column}` ({expected}) is missing")),
            Some(found) if found != expected => {
                (Status::Critical, format!("column `{column}` is {found}, expected {expected}"))
            }
            Some(_) => continue,
        };
        let mut evaluation =
            Evaluation::new(table_name, kind, Metric::SCHEMA_EXPECTATION, status, message).at(observation.now_ms, None);
        evaluation.column = Some(column.clone());
        results.push(evaluation);
    }
    if !config.allow_extra_columns && !config.expect.is_empty() {
        for (column, found) in &observation.columns {
            if !config.expect.contains_key(column) {
                let mut evaluation = Evaluation::new(
                    table_name,
                    kind,
                    Metric::SCHEMA_EXPECTATION,
                    Status::Warning,
                    format!("unexpected column `{column}` ({found}) is not in `expect`"),
                )
                .at(observation.now_ms, None);
                evaluation.column = Some(column.clone());
                results.push(evaluation);
            }
        }
    }
    let recent_count = observation.changes.iter().filter(|change| change.changed_at_ms >= recent_since).count();
    let message = format!(
        "{} column(s), schema id {}; {} change(s) in the table's history, {} in the last {}",
        observation.column_count,
        observation.current_schema_id,
        observation.changes.len(),
        recent_count,
        crate::config::duration_to_string(config.recent)
    );
    results.push(
        Evaluation::new(table_name, kind, Metric::COLUMN_COUNT, Status::Ok, message)
            .with_value(observation.column_count as f64)
            .at(observation.now_ms, None),
    );
    results
}

/// The schema sensor. Its changes are read from the table's own schema history, so it needs no
/// window: one judged step stores the change events and the column count.
pub struct SchemaSensor;

static COLUMN_COUNT: Family = Family::table_gauge("schema_column_count", "Top-level columns in the current schema.");
static CHANGES_TOTAL: Family = Family {
    name: "schema_changes_total",
    help: "Schema changes seen in the table's schema history.",
    labels: &["change_type"],
    with_layer: false,
    export: Export::CatchUpCounter,
};
static LAST_CHANGE_TIMESTAMP_SECONDS: Family = Family {
    name: "schema_last_change_timestamp_seconds",
    help: "Unix time of the newest schema change of that type.",
    labels: &["change_type"],
    with_layer: false,
    export: Export::Gauge,
};
static EXPECTATION_VIOLATIONS: Family =
    Family::table_gauge("schema_expectation_violations", "Columns that break the declared schema.expect baseline.");

static FAMILIES: [&Family; 4] =
    [&COLUMN_COUNT, &CHANGES_TOTAL, &LAST_CHANGE_TIMESTAMP_SECONDS, &EXPECTATION_VIOLATIONS];

impl Sensor for SchemaSensor {
    fn kind(&self) -> SensorKind {
        SensorKind::SCHEMA
    }

    fn families(&self) -> &'static [&'static Family] {
        &FAMILIES
    }

    fn observe<'a>(&'a self, input: &'a Input<'a>) -> BoxFuture<'a, Result<Observed<'a>, SensorError>> {
        Box::pin(async move {
            let Some(config) = &input.config.schema else { return Ok(Observed::default()) };
            let name = input.config.name.as_str();
            let observation = observe(input.table, input.now_ms);
            let column_count = Point {
                series: SeriesKey::new(name, SensorKind::SCHEMA.as_str(), Metric::COLUMN_COUNT.as_str(), &[]),
                observed_at_ms: input.table.metadata().last_updated_ms(),
                snapshot_id: input.table.metadata().current_snapshot_id(),
                value: observation.column_count as f64,
            };
            let evaluations = judge(name, config, &observation);
            let readings = readings(&observation, &evaluations);
            let mut step = Step::judged(vec![column_count], Vec::new(), false, move |_| evaluations);
            step.events = events(name, &observation);
            Ok(Observed { steps: vec![step], readings })
        })
    }
}

/// The column count, the changes of each type the table's history holds (the counter catches
/// up to them, so a restart neither loses nor double-counts a change), the newest change of
/// each type and the expectations violated.
fn readings(observation: &SchemaObservation, evaluations: &[Evaluation]) -> Vec<Reading> {
    let mut readings = vec![Reading::new(&COLUMN_COUNT, observation.column_count as f64)];
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
    for change in &observation.changes {
        *counts.entry(change.change_type).or_default() += 1;
        let at = newest.entry(change.change_type).or_insert(change.changed_at_ms);
        *at = (*at).max(change.changed_at_ms);
    }
    for (change_type, count) in counts {
        readings.push(Reading::labelled(&CHANGES_TOTAL, &[change_type], count as f64));
    }
    for (change_type, at_ms) in newest {
        readings.push(Reading::labelled(&LAST_CHANGE_TIMESTAMP_SECONDS, &[change_type], at_ms as f64 / 1000.0));
    }
    let violations = evaluations.iter().filter(|evaluation| evaluation.metric == Metric::SCHEMA_EXPECTATION).count();
    readings.push(Reading::new(&EXPECTATION_VIOLATIONS, violations as f64));
    readings
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{NestedField, StructType};
    use std::sync::Arc;

    fn schema(id: i32, fields: Vec<NestedField>) -> Schema {
        Schema::builder()
            .with_schema_id(id)
            .with_fields(fields.into_iter().map(Arc::new).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    fn changes(old: &Schema, new: &Schema) -> Vec<(String, String)> {
        let mut out = Vec::new();
        diff_schemas(old, new, 0, &mut out);
        out.into_iter().map(|change| (change.change_type.to_string(), change.column)).collect()
    }

    #[test]
    fn renames_are_matched_by_field_id() {
        let old = schema(0, vec![NestedField::optional(1, "qty", Type::Primitive(PrimitiveType::Int))]);
        let new = schema(1, vec![NestedField::optional(1, "quantity", Type::Primitive(PrimitiveType::Int))]);
        assert_eq!(changes(&old, &new), vec![("column_renamed".to_string(), "quantity".to_string())]);
    }

    #[test]
    fn adds_drops_promotions_and_nullability() {
        let old = schema(
            0,
            vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)),
                NestedField::optional(2, "quantity", Type::Primitive(PrimitiveType::Int)),
                NestedField::optional(3, "legacy", Type::Primitive(PrimitiveType::String)),
            ],
        );
        let new = schema(
            1,
            vec![
                NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Long)),
                NestedField::optional(2, "quantity", Type::Primitive(PrimitiveType::Long)),
                NestedField::optional(4, "venue", Type::Primitive(PrimitiveType::String)),
            ],
        );
        let mut found = changes(&old, &new);
        found.sort();
        assert_eq!(
            found,
            vec![
                ("column_added".to_string(), "venue".to_string()),
                ("column_dropped".to_string(), "legacy".to_string()),
                ("nullability_changed".to_string(), "id".to_string()),
                ("type_promoted".to_string(), "quantity".to_string()),
            ]
        );
        let mut detailed = Vec::new();
        diff_schemas(&old, &new, 0, &mut detailed);
        let promotion = detailed.iter().find(|change| change.change_type == "type_promoted").unwrap();
        assert!(promotion.detail.contains("int → long (promotion)") && !promotion.breaking);
    }

    #[test]
    fn nested_fields_are_diffed_with_dotted_paths() {
        let address =
            |fields: Vec<NestedField>| Type::Struct(StructType::new(fields.into_iter().map(Arc::new).collect()));
        let old = schema(
            0,
            vec![NestedField::optional(
                1,
                "address",
                address(vec![NestedField::optional(2, "zip", Type::Primitive(PrimitiveType::Int))]),
            )],
        );
        let new = schema(
            1,
            vec![NestedField::optional(
                1,
                "address",
                address(vec![
                    NestedField::optional(2, "zip", Type::Primitive(PrimitiveType::Int)),
                    NestedField::optional(3, "city", Type::Primitive(PrimitiveType::String)),
                ]),
            )],
        );
        assert_eq!(changes(&old, &new), vec![("column_added".to_string(), "address.city".to_string())]);
    }
}
