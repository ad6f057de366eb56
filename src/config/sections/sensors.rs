//! The sensor sub-tables of `[tables."ns.name"]`: `freshness`, `volume`, `schema` and
//! `distribution` (with its `drift` table), each into its `*Config` with the shared scoring
//! settings resolved (`tables.rs`). Catalog checks of the columns they name are `validate.rs`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::diagnostics::{did_you_mean, shortened};
use crate::config::reader::{Key, Reader, Section, join, positive, probability, span_pair, type_name};
use crate::config::sections::tables::SENSOR_COMMON_KEYS;
use crate::config::{
    Defaults, DistributionConfig, DriftConfig, FreshnessConfig, FreshnessCounts, SchemaConfig, Scope, Seasonality,
    Statistic, VolumeConfig,
};

pub(in crate::config) const FRESHNESS_KEYS: &[Key] = &[
    Key {
        name: "warn_after",
        default: "`critical_after`",
        doc: "Warning when the last data commit is older than this.",
    },
    Key {
        name: "critical_after",
        default: "none",
        doc: "Critical when the last data commit is older than this. With neither set, only the cadence score judges freshness. `warn_after` must not be longer.",
    },
    Key {
        name: "timestamp_column",
        default: "none",
        doc: "An event-time column; its maximum (from manifest bounds, scanning only files without them) gives the event-time lag. Checked by `validate --online`.",
    },
    Key {
        name: "lag_warn_after",
        default: "`lag_critical_after`",
        doc: "Warning when the newest `timestamp_column` value is older than this (the event-time lag's own threshold; `warn_after` is the commit age's).",
    },
    Key {
        name: "lag_critical_after",
        default: "none",
        doc: "Critical when the event-time lag is over this. With neither set, the lag is reported but not judged, except an event time more than 5 minutes in the future, which is a warning (clock skew or bad data). Needs `timestamp_column`; `lag_warn_after` must not be longer.",
    },
    Key {
        name: "counts",
        default: r#"`"arrivals"`"#,
        doc: "Which commits make the table fresh: `\"arrivals\"`, those that added rows (an append, an overwrite's new rows; not a delete, a compaction, an empty append or a metadata-only commit), or `\"any_data_change\"`, any commit that added or removed records, for tables where a delete is the writer's signal.",
    },
    Key { name: "window", default: "`defaults.window`", doc: "Past commit gaps in the cadence window." },
    Key {
        name: "seasonality",
        default: r#"`"auto"`"#,
        doc: r#"How the cadence weighs the hours of the week: `"auto"` chooses per table by backtesting on its history (a table that never loads at weekends is not late on Sunday); or one of `"none"`, `"hour_of_day"`, `"day_of_week"`, `"hour_of_week"`, `"weekday_weekend"` (UTC). See docs/design.md, "Seasonality"."#,
    },
];

pub(in crate::config) const VOLUME_KEYS: &[Key] = &[
    Key {
        name: "deviation_percent",
        default: "`20`",
        doc: "Warning at this deviation (percent) from the rolling mean.",
    },
    Key {
        name: "critical_deviation_percent",
        default: "twice `deviation_percent`",
        doc: "Critical at this deviation; must not be below `deviation_percent`.",
    },
    Key { name: "window", default: r#"`"7d"`"#, doc: "Time window of the rolling mean." },
    Key { name: "points", default: "`defaults.window`", doc: "At most this many past commits in the window." },
    Key {
        name: "seasonality",
        default: r#"`"auto"`"#,
        doc: r#"Which past commits the newest is compared with. `"auto"` (the default) chooses per table, from its own history, the model that best predicts held-out commits: none, `"hour_of_day"`, `"day_of_week"`, `"hour_of_week"` or `"weekday_weekend"` (UTC; hours match within 45 minutes), with a growth trend where that predicts better; a cycle needs three complete cycles of history (two weeks for weekday/weekend) before it can be chosen. A value other than `"auto"` fixes the cycle, with no trend (`"daily"` and `"weekly"` are `"hour_of_day"` and `"hour_of_week"`). Weekly cycles look back 5 weeks whatever `window` says. Falls back to all commits of the window while fewer than `min_history` are alike. See docs/design.md, "Seasonality"."#,
    },
];

const SEASONALITIES: &[&str] =
    &["auto", "none", "hour_of_day", "day_of_week", "hour_of_week", "weekday_weekend", "daily", "weekly"];

impl Reader<'_> {
    /// `seasonality`: `auto` (the default) or a fixed cycle.
    fn seasonality(&mut self, section: &Section<'_>) -> Seasonality {
        use crate::judging::seasonal::Cycle;
        match self.choice(section, "seasonality", SEASONALITIES).as_deref() {
            Some("none") => Seasonality::Fixed(Cycle::None),
            Some("hour_of_day" | "daily") => Seasonality::Fixed(Cycle::HourOfDay),
            Some("day_of_week") => Seasonality::Fixed(Cycle::DayOfWeek),
            Some("hour_of_week" | "weekly") => Seasonality::Fixed(Cycle::HourOfWeek),
            Some("weekday_weekend") => Seasonality::Fixed(Cycle::WeekdayWeekend),
            _ => Seasonality::Auto,
        }
    }
}

pub(in crate::config) const SCHEMA_KEYS: &[Key] = &[
    Key {
        name: "expect",
        default: "`{}`",
        doc: "Columns that must exist with these types: `boolean`, `int`, `long`, `float`, `double`, `date`, `time`, `timestamp`, `timestamptz`, `timestamp_ns`, `timestamptz_ns`, `string`, `uuid`, `binary`, `decimal(P,S)`, `fixed[N]`, `struct`, `list`, `map`.",
    },
    Key { name: "allow_extra_columns", default: "`true`", doc: "When `false`, a column not in `expect` is a problem." },
    Key {
        name: "recent",
        default: r#"`"1d"`"#,
        doc: "How long after it happened a schema change keeps the sensor at warning / critical.",
    },
];

pub(in crate::config) const DISTRIBUTION_KEYS: &[Key] = &[
    Key {
        name: "columns",
        default: "required",
        doc: "Statistics per column: `row_count`, `mean`, `stddev`, `min`, `max`, `sum`, `null_percent`, `null_count`, `zero_percent`, `nan_percent`, `distinct_count`, `p01`, `p05`, `p25`, `p50`, `p75`, `p95`, `p99`, and for strings `min_length`, `max_length`, `mean_length`, `empty_percent`. Column names are checked by `validate --online`.",
    },
    Key {
        name: "scope",
        default: r#"`"added"`"#,
        doc: "`added`: the files the snapshot added. `table`: the whole table as of the snapshot.",
    },
    Key {
        name: "sample",
        default: "all rows",
        doc: "A fraction in (0, 1] of rows to profile, or a whole row cap above 1.",
    },
    Key { name: "drift", default: "see below", doc: "Drift tests against reference batches." },
    Key { name: "window", default: "`defaults.window`", doc: "Points in the rolling window." },
];

const SCOPES: &[&str] = &["added", "table"];

/// `drift` of a distribution sensor.
pub(in crate::config) const DRIFT_KEYS: &[Key] = &[
    Key {
        name: "reference_batches",
        default: "`5`",
        doc: "Previous batches that make the reference; `0` disables drift tests.",
    },
    Key { name: "reference_snapshot", default: "none", doc: "A pinned snapshot id to use as the reference instead." },
    Key {
        name: "psi_threshold",
        default: "`0.25`",
        doc: "Population stability index at or above which a numeric column has drifted.",
    },
    Key {
        name: "ks_p_value",
        default: "`0.01`",
        doc: "Kolmogorov–Smirnov p-value below which a numeric column has drifted, after the Benjamini–Hochberg adjustment over the p-value tests of all columns of the check (one column: no adjustment).",
    },
    Key {
        name: "chi_square_p_value",
        default: "`0.01`",
        doc: "Chi-square p-value below which a categorical column has drifted, adjusted the same way.",
    },
];

impl Reader<'_> {
    pub(super) fn freshness(&mut self, section: &Section<'_>, defaults: &Defaults) -> Option<FreshnessConfig> {
        self.check_keys(section, &[FRESHNESS_KEYS, SENSOR_COMMON_KEYS], "a freshness sensor");
        let warn_after = self.duration(section, "warn_after");
        let critical_after = self.duration(section, "critical_after");
        if let (Some(warn), Some(critical)) = (warn_after, critical_after)
            && warn > critical
        {
            let span = Reader::value_span(section, "warn_after");
            self.problem_at(
                span,
                &join(&section.path, "warn_after"),
                "`warn_after` must not be longer than `critical_after`",
            );
        }
        let timestamp_column = self.column_name(section, "timestamp_column");
        let lag_warn_after = self.duration(section, "lag_warn_after");
        let lag_critical_after = self.duration(section, "lag_critical_after");
        if let (Some(warn), Some(critical)) = (lag_warn_after, lag_critical_after)
            && warn > critical
        {
            let span = Reader::value_span(section, "lag_warn_after");
            self.problem_at(
                span,
                &join(&section.path, "lag_warn_after"),
                "`lag_warn_after` must not be longer than `lag_critical_after`",
            );
        }
        for key in ["lag_warn_after", "lag_critical_after"] {
            if timestamp_column.is_none() && section.table.get(key).is_some() {
                let span = Reader::value_span(section, key);
                self.problem_at(
                    span,
                    &join(&section.path, key),
                    "needs `timestamp_column`: there is no event time to judge",
                );
            }
        }
        let counts = match self.choice(section, "counts", &["arrivals", "any_data_change"]).as_deref() {
            Some("any_data_change") => FreshnessCounts::AnyDataChange,
            _ => FreshnessCounts::Arrivals,
        };
        let seasonality = self.seasonality(section);
        let settings = self.settings(section, defaults, Some("window"));
        Some(FreshnessConfig {
            warn_after: warn_after.or(critical_after),
            critical_after,
            timestamp_column,
            lag_warn_after: lag_warn_after.or(lag_critical_after),
            lag_critical_after,
            counts,
            seasonality,
            settings,
        })
    }

    /// A column name; its place is kept for `validate --online`, which looks the column up.
    fn column_name(&mut self, section: &Section<'_>, key: &str) -> Option<String> {
        let column = self.string(section, key)?;
        let span = Reader::value_span(section, key);
        if column.is_empty() {
            self.problem_at(span, &join(&section.path, key), "a column name cannot be empty");
            return None;
        }
        self.remember(&join(&section.path, key), span);
        Some(column)
    }

    pub(super) fn volume(&mut self, section: &Section<'_>, defaults: &Defaults) -> Option<VolumeConfig> {
        self.check_keys(section, &[VOLUME_KEYS, SENSOR_COMMON_KEYS], "a volume sensor");
        let deviation_percent = self.number(section, "deviation_percent", positive).unwrap_or(20.0);
        let critical_deviation_percent =
            self.number(section, "critical_deviation_percent", positive).unwrap_or(deviation_percent * 2.0);
        if critical_deviation_percent < deviation_percent {
            let span = Reader::value_span(section, "critical_deviation_percent");
            self.problem_at(
                span,
                &join(&section.path, "critical_deviation_percent"),
                "must not be below `deviation_percent`",
            );
        }
        let window = self.duration(section, "window").unwrap_or(Duration::from_secs(7 * 86_400));
        let seasonality = self.seasonality(section);
        let settings = self.settings(section, defaults, Some("points"));
        Some(VolumeConfig { deviation_percent, critical_deviation_percent, window, seasonality, settings })
    }

    pub(super) fn schema(&mut self, section: &Section<'_>, defaults: &Defaults) -> Option<SchemaConfig> {
        self.check_keys(section, &[SCHEMA_KEYS, SENSOR_COMMON_KEYS], "a schema sensor");
        let mut expect = BTreeMap::new();
        if let Some(map) = self.section(section, "expect") {
            for (column, _) in map.table.iter() {
                let Some((type_text, raw)) = self.string_as(&map, column, "an Iceberg type name such as `long`") else {
                    continue;
                };
                match normalize_iceberg_type(&type_text) {
                    Ok(normalized) => {
                        expect.insert(column.to_string(), normalized);
                    }
                    Err(message) => {
                        let span = Reader::value_span(&map, column);
                        // Name the type as written: a `${VAR}` may hold a secret.
                        let message = if raw == type_text {
                            message
                        } else {
                            format!(
                                "unknown Iceberg type `{}`; expected a primitive such as `long`, `double`, `string`, `timestamptz`, or `decimal(P,S)`, `fixed[N]`",
                                shortened(&raw)
                            )
                        };
                        self.problem_at(span, &join(&map.path, column), message);
                    }
                }
            }
        }
        let allow_extra_columns = self.boolean(section, "allow_extra_columns").unwrap_or(true);
        let recent = self.duration(section, "recent").unwrap_or(Duration::from_secs(86_400));
        let settings = self.settings(section, defaults, None);
        Some(SchemaConfig { expect, allow_extra_columns, recent, settings })
    }

    pub(super) fn distribution(&mut self, section: &Section<'_>, defaults: &Defaults) -> Option<DistributionConfig> {
        self.check_keys(section, &[DISTRIBUTION_KEYS, SENSOR_COMMON_KEYS], "a distribution sensor");
        let columns_path = join(&section.path, "columns");
        let mut columns = Vec::new();
        match self.section(section, "columns") {
            Some(map) => {
                for (column, item) in map.table.iter() {
                    let column_path = join(&map.path, column);
                    // The key names the column: `validate --online` points at it.
                    self.remember(&column_path, span_pair(map.table.key(column).and_then(|key| key.span())));
                    let Some(array) = item.as_array() else {
                        let span = Reader::value_span(&map, column);
                        self.problem_at(
                            span,
                            &column_path,
                            format!("expected an array of statistic names, found {}", type_name(item)),
                        );
                        continue;
                    };
                    let mut statistics = Vec::new();
                    for value in array.iter() {
                        let span = span_pair(value.span());
                        match value.as_str() {
                            Some(name) => match Statistic::parse(name) {
                                Some(statistic) if !statistics.contains(&statistic) => statistics.push(statistic),
                                Some(_) => self.problem_at(
                                    span,
                                    &column_path,
                                    format!("statistic `{}` is listed twice", shortened(name)),
                                ),
                                None => {
                                    let names: Vec<&str> =
                                        Statistic::ALL.iter().map(|statistic| statistic.as_str()).collect();
                                    let suggestion = did_you_mean(name, &names)
                                        .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                                        .unwrap_or_default();
                                    self.problem_at(
                                        span,
                                        &column_path,
                                        format!(
                                            "unknown statistic `{}`{suggestion}; valid statistics are {}",
                                            shortened(name),
                                            names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
                                        ),
                                    );
                                }
                            },
                            None => self.problem_at(span, &column_path, "expected a statistic name (a string)"),
                        }
                    }
                    if statistics.is_empty() && array.is_empty() {
                        let span = Reader::value_span(&map, column);
                        self.problem_at(span, &column_path, "list at least one statistic");
                    }
                    columns.push((column.to_string(), statistics));
                }
                if map.table.is_empty() {
                    self.problem_at(map.span, &columns_path, "list at least one column");
                }
            }
            None if section.table.get("columns").is_none() => {
                self.problem_at(section.span, &columns_path, "missing required key `columns` (column = [statistics])");
            }
            None => {}
        }
        let scope = match self.choice(section, "scope", SCOPES).as_deref() {
            Some("table") => Scope::Table,
            _ => Scope::Added,
        };
        let sample = self.number(section, "sample", |value| {
            if value > 0.0 && (value <= 1.0 || value.fract() == 0.0) {
                Ok(())
            } else {
                Err("expected a fraction in (0, 1] or a whole row count above 1".to_string())
            }
        });
        let mut drift = DriftConfig {
            reference_batches: 5,
            reference_snapshot: None,
            psi_threshold: 0.25,
            ks_p_value: 0.01,
            chi_square_p_value: 0.01,
        };
        if let Some(drift_section) = self.section(section, "drift") {
            self.check_keys(&drift_section, &[DRIFT_KEYS], "drift settings");
            if let Some(batches) = self.integer(&drift_section, "reference_batches", 0, 10_000) {
                drift.reference_batches = batches as usize;
            }
            drift.reference_snapshot = self.integer(&drift_section, "reference_snapshot", i64::MIN, i64::MAX);
            if let Some(threshold) = self.number(&drift_section, "psi_threshold", positive) {
                drift.psi_threshold = threshold;
            }
            if let Some(p) = self.number(&drift_section, "ks_p_value", probability) {
                drift.ks_p_value = p;
            }
            if let Some(p) = self.number(&drift_section, "chi_square_p_value", probability) {
                drift.chi_square_p_value = p;
            }
        }
        let settings = self.settings(section, defaults, Some("window"));
        Some(DistributionConfig { columns, scope, sample, drift, settings })
    }
}

/// Normalizes an Iceberg type name as written in `schema.expect` (`long`, `decimal(10, 2)`).
fn normalize_iceberg_type(text: &str) -> Result<String, String> {
    const PRIMITIVES: &[&str] = &[
        "boolean",
        "int",
        "long",
        "float",
        "double",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "timestamp_ns",
        "timestamptz_ns",
        "string",
        "uuid",
        "binary",
        "struct",
        "list",
        "map",
    ];
    let normalized: String = text.trim().to_ascii_lowercase().chars().filter(|c| !c.is_whitespace()).collect();
    if PRIMITIVES.contains(&normalized.as_str()) {
        return Ok(normalized);
    }
    let parse_args = |prefix: &str| -> Option<Vec<u32>> {
        let inner = normalized.strip_prefix(prefix)?.strip_suffix([')', ']'])?;
        inner.split(',').map(|part| part.parse().ok()).collect()
    };
    if let Some(args) = parse_args("decimal(")
        && args.len() == 2
        && (1..=38).contains(&args[0])
        && args[1] <= args[0]
    {
        return Ok(normalized);
    }
    if let Some(args) = parse_args("fixed[")
        && args.len() == 1
    {
        return Ok(normalized);
    }
    let suggestion = did_you_mean(&normalized, PRIMITIVES)
        .or(match normalized.as_str() {
            "bigint" | "int64" => Some("long"),
            "integer" | "int32" => Some("int"),
            "varchar" | "text" | "str" => Some("string"),
            "bool" => Some("boolean"),
            "float64" => Some("double"),
            _ => None,
        })
        .map(|candidate| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default();
    Err(format!(
        "unknown Iceberg type `{}`{suggestion}; expected a primitive such as `long`, `double`, `string`, `timestamptz`, or `decimal(P,S)`, `fixed[N]`",
        shortened(text)
    ))
}
