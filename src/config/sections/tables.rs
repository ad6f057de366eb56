//! `[defaults]`, `[tables."ns.name"]` and the scoring keys every sensor table shares: which
//! tables are monitored, with which sensors, and the settings a sensor falls back to. The sensor
//! sub-tables themselves are read in `sensors.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::diagnostics::{did_you_mean, shortened};
use crate::config::reader::{Key, Reader, Section, join, key_names, parse_schedule, positive, span_pair};
use crate::config::sections::kinds::{SectionReader, SectionSpec};
use crate::config::{Defaults, SensorKind, SensorSettings, TableConfig, TableName};
use crate::stats::Direction;

pub(in crate::config) const DEFAULTS_KEYS: &[Key] = &[
    Key { name: "schedule", default: r#"`"0 */5 * * * *"`"#, doc: "When sensors run (every five minutes)." },
    Key {
        name: "zscore_threshold",
        default: "`3.0`",
        doc: "A value is unusual when it is this many standard deviations from the rolling mean.",
    },
    Key {
        name: "min_history",
        default: "`5`",
        doc: "Points needed before a value is scored; until then the status is `insufficient_history`.",
    },
    Key { name: "window", default: "`50`", doc: "Points in the rolling window (must be at least `min_history`)." },
    Key {
        name: "rebaseline_after",
        default: "`5`",
        doc: "After this many consecutive points beyond the band on one side, that level is the new baseline: a persistent level shift alerts, then the band follows it. `0` never re-baselines.",
    },
    Key { name: "direction", default: r#"`"both"`"#, doc: "Which side of the band counts as a problem." },
    Key {
        name: "timeout",
        default: r#"`"60s"`"#,
        doc: "Longest a single sensor run may take; a run over it is stopped and counted as an error.",
    },
    Key { name: "concurrency", default: "`4`", doc: "Sensor runs allowed at the same time." },
];

pub(in crate::config) const TABLE_KEYS: &[Key] = &[
    Key {
        name: "layer",
        default: r#"`""`"#,
        doc: "The `layer` label of the table's metrics (`bronze`, `silver`, `gold`).",
    },
    Key { name: "freshness", default: "none", doc: "[Freshness sensor](#tablesnsnamefreshness)." },
    Key { name: "volume", default: "none", doc: "[Volume sensor](#tablesnsnamevolume)." },
    Key { name: "schema", default: "none", doc: "[Schema sensor](#tablesnsnameschema)." },
    Key { name: "distribution", default: "none", doc: "[Distribution sensor](#tablesnsnamedistribution)." },
];

/// Keys every sensor table accepts: its scoring settings, falling back to `[defaults]`.
pub(in crate::config) const SENSOR_COMMON_KEYS: &[Key] = &[
    Key { name: "schedule", default: "`defaults.schedule`", doc: "When this sensor runs." },
    Key {
        name: "zscore_threshold",
        default: "`defaults.zscore_threshold`",
        doc: "A value is unusual when it is this many standard deviations from the rolling mean.",
    },
    Key {
        name: "min_history",
        default: "`defaults.min_history`",
        doc: "Points needed before a value is scored; until then the status is `insufficient_history`.",
    },
    Key {
        name: "rebaseline_after",
        default: "`defaults.rebaseline_after`",
        doc: "Consecutive points at a new level after which it becomes the baseline (`0`: never).",
    },
    Key { name: "direction", default: "`defaults.direction`", doc: "Which side of the band counts as a problem." },
    Key {
        name: "timeout",
        default: "`defaults.timeout`",
        doc: "Longest a single run of this sensor may take; a run over it is stopped and counted as an error.",
    },
];

impl Reader<'_> {
    pub(super) fn defaults(&mut self, root: &Section<'_>) -> Option<Defaults> {
        let mut defaults = Defaults {
            schedule: parse_schedule("0 */5 * * * *").ok()?,
            zscore_threshold: 3.0,
            min_history: 5,
            window: 50,
            rebaseline_after: 5,
            direction: Direction::Both,
            timeout: Duration::from_secs(60),
            concurrency: 4,
        };
        let Some(section) = self.section(root, "defaults") else {
            return root.table.get("defaults").is_none().then_some(defaults);
        };
        self.check_keys(&section, &[DEFAULTS_KEYS], "[defaults]");
        if let Some(schedule) = self.schedule(&section, "schedule") {
            defaults.schedule = schedule;
        }
        if let Some(threshold) = self.number(&section, "zscore_threshold", positive) {
            defaults.zscore_threshold = threshold;
        }
        if let Some(min_history) = self.integer(&section, "min_history", 2, 100_000) {
            defaults.min_history = min_history as usize;
        }
        if let Some(window) = self.integer(&section, "window", 2, 100_000) {
            defaults.window = window as usize;
        }
        if let Some(points) = self.integer(&section, "rebaseline_after", 0, 100_000) {
            defaults.rebaseline_after = points as usize;
        }
        if let Some(direction) = self.direction(&section, "direction") {
            defaults.direction = direction;
        }
        if let Some(timeout) = self.duration(&section, "timeout") {
            defaults.timeout = timeout;
        }
        if let Some(concurrency) = self.integer(&section, "concurrency", 1, 256) {
            defaults.concurrency = concurrency as usize;
        }
        if defaults.window < defaults.min_history {
            let span = Reader::value_span(&section, "window");
            self.problem_at(
                span,
                "defaults.window",
                format!(
                    "the window ({}) must hold at least `min_history` ({}) points",
                    defaults.window, defaults.min_history
                ),
            );
        }
        Some(defaults)
    }

    /// Scoring settings of a sensor section, falling back to `[defaults]`; `window_key` is the
    /// key holding its point count (`points` for volume, whose `window` is a duration).
    pub(super) fn settings(
        &mut self,
        section: &Section<'_>,
        defaults: &Defaults,
        window_key: Option<&str>,
    ) -> SensorSettings {
        let mut settings = SensorSettings {
            schedule: defaults.schedule.clone(),
            zscore_threshold: defaults.zscore_threshold,
            min_history: defaults.min_history,
            window: defaults.window,
            rebaseline_after: defaults.rebaseline_after,
            direction: defaults.direction,
            timeout: defaults.timeout,
        };
        if let Some(schedule) = self.schedule(section, "schedule") {
            settings.schedule = schedule;
        }
        if let Some(threshold) = self.number(section, "zscore_threshold", positive) {
            settings.zscore_threshold = threshold;
        }
        if let Some(min_history) = self.integer(section, "min_history", 2, 100_000) {
            settings.min_history = min_history as usize;
        }
        if let Some(key) = window_key
            && let Some(window) = self.integer(section, key, 2, 100_000)
        {
            settings.window = window as usize;
            if settings.window < settings.min_history {
                let span = Reader::value_span(section, key);
                self.problem_at(
                    span,
                    &join(&section.path, key),
                    format!(
                        "the window ({}) must hold at least `min_history` ({}) points",
                        settings.window, settings.min_history
                    ),
                );
            }
        }
        if let Some(points) = self.integer(section, "rebaseline_after", 0, 100_000) {
            settings.rebaseline_after = points as usize;
        }
        if let Some(direction) = self.direction(section, "direction") {
            settings.direction = direction;
        }
        if let Some(timeout) = self.duration(section, "timeout") {
            settings.timeout = timeout;
        }
        settings
    }

    pub(super) fn tables(&mut self, root: &Section<'_>, defaults: &Defaults) -> Vec<TableConfig> {
        let Some(section) = self.section(root, "tables") else {
            return Vec::new();
        };
        let kinds = declared_kinds();
        let mut tables = Vec::new();
        // Where each table was first declared, by its name with whitespace trimmed: TOML sees
        // `"a.b"` and `"a.b "` as two keys, but they are meant as one table.
        let mut declared: BTreeMap<String, Option<(usize, usize)>> = BTreeMap::new();
        for (key, _) in section.table.iter() {
            let path = join("tables", key);
            let key_span = span_pair(section.table.key(key).and_then(|key| key.span()));
            // `validate --online` names a table that does not load at the key that declared it.
            self.remember(&path, key_span);
            let normalized = TableName::normalized(key);
            let name = if let Some(first) = declared.get(&normalized) {
                let (line, column) = self.line_column(*first);
                let message = format!(
                    "table `{}` is declared twice, here and at line {line}, column {column} (the names differ only in whitespace)",
                    shortened(&normalized)
                );
                self.problem_at(key_span, &path, message);
                None
            } else {
                declared.insert(normalized, key_span);
                match TableName::parse(key) {
                    Ok(name) => Some(name),
                    Err(message) => {
                        let message = format!("invalid table name `{}`: {message}", shortened(key));
                        self.problem_at(key_span, &path, message);
                        None
                    }
                }
            };
            let Some(table) = self.section(&section, key) else { continue };
            if let Some(table) = self.table(&table, name, defaults, &kinds) {
                tables.push(table);
            }
        }
        tables
    }

    fn table(
        &mut self,
        section: &Section<'_>,
        name: Option<TableName>,
        defaults: &Defaults,
        kinds: &DeclaredKinds,
    ) -> Option<TableConfig> {
        let mut table_keys = key_names(&[TABLE_KEYS]);
        table_keys.extend(kinds.sections.iter().map(|(kind, _)| kind.as_str()));
        for (key, _) in section.table.iter() {
            if table_keys.contains(&key) {
                continue;
            }
            let span = section.table.key(key).and_then(|key| key.span());
            let suggestion = did_you_mean(key, &table_keys)
                .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                .unwrap_or_default();
            let kinds = kinds.all.iter().map(|kind| format!("`{kind}`")).collect::<Vec<_>>().join(", ");
            self.problem(
                span,
                &join(&section.path, key),
                format!(
                    "unknown sensor kind `{}`{suggestion}; valid kinds are {kinds} (and the key `layer`)",
                    shortened(key)
                ),
            );
        }
        let layer = self.string(section, "layer").unwrap_or_default();
        let freshness = self.section(section, "freshness").map(|sensor| self.freshness(&sensor, defaults));
        let volume = self.section(section, "volume").map(|sensor| self.volume(&sensor, defaults));
        let schema = self.section(section, "schema").map(|sensor| self.schema(&sensor, defaults));
        let distribution = self.section(section, "distribution").map(|sensor| self.distribution(&sensor, defaults));
        let mut sections = BTreeMap::new();
        for (kind, spec) in &kinds.sections {
            let Some(sensor) = self.section(section, kind.as_str()) else { continue };
            self.check_keys(&sensor, &[spec.keys, SENSOR_COMMON_KEYS], &format!("a {kind} sensor"));
            let mut reader = SectionReader::new(self, &sensor, defaults, spec.window_key);
            if let Some(parsed) = (spec.parse)(&mut reader) {
                sections.insert(*kind, parsed);
            }
        }
        Some(TableConfig {
            name: name?,
            layer,
            freshness: freshness.flatten(),
            volume: volume.flatten(),
            schema: schema.flatten(),
            distribution: distribution.flatten(),
            sections,
        })
    }
}

/// The kinds this build has, and the sections of those that declare their own.
pub(in crate::config) struct DeclaredKinds {
    pub all: Vec<SensorKind>,
    pub sections: Vec<(SensorKind, SectionSpec)>,
}

/// Every kind of the sensor registry, with its section spec where it declares one.
pub(in crate::config) fn declared_kinds() -> DeclaredKinds {
    let registry = crate::sensors::registry();
    DeclaredKinds {
        all: registry.iter().map(|sensor| sensor.kind()).collect(),
        sections: registry.iter().filter_map(|sensor| Some((sensor.kind(), sensor.section()?))).collect(),
    }
}
