//! Walks the spanned TOML document of `sensors.toml` into a [`Config`], collecting every
//! problem with its place instead of stopping at the first (as serde would). Also resolves
//! relative paths against the file's folder and substitutes `${VAR}` from the environment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::diagnostics::{did_you_mean, line_column};
use super::values::{Scope, Secret, SensorKind, Statistic, TableName, parse_duration};
use super::*;

const TOP_LEVEL_KEYS: &[&str] =
    &["catalog", "history", "server", "pushgateway", "defaults", "tables", "pipelines", "lineage"];
const CATALOG_KEYS: &[&str] = &[
    "type",
    "uri",
    "warehouse",
    "name",
    "token",
    "credential",
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_session_token",
    "s3_path_style_access",
    "properties",
];
const HISTORY_KEYS: &[&str] = &["path"];
const SERVER_KEYS: &[&str] = &["listen", "shutdown_grace", "tls_cert_file", "tls_key_file", "basic_auth_users"];
const PUSHGATEWAY_KEYS: &[&str] = &[
    "url",
    "job",
    "instance",
    "grouping",
    "timeout",
    "retries",
    "username",
    "password",
    "delete_on_shutdown",
    "ca_file",
    "insecure_skip_verify",
];
const DEFAULTS_KEYS: &[&str] =
    &["schedule", "zscore_threshold", "min_history", "window", "direction", "timeout", "concurrency"];
const TABLE_KEYS: &[&str] = &["layer", "freshness", "volume", "schema", "distribution"];
/// Keys every sensor section accepts (its scoring settings).
const SENSOR_COMMON_KEYS: &[&str] = &["schedule", "zscore_threshold", "min_history", "direction", "timeout"];
const FRESHNESS_KEYS: &[&str] = &["warn_after", "critical_after", "timestamp_column", "window"];
const VOLUME_KEYS: &[&str] = &["deviation_percent", "critical_deviation_percent", "window", "points", "seasonality"];
const SEASONALITIES: &[&str] = &["none", "daily", "weekly"];
const SCHEMA_KEYS: &[&str] = &["expect", "allow_extra_columns", "recent"];
const DISTRIBUTION_KEYS: &[&str] = &["columns", "scope", "sample", "drift", "window"];
const DRIFT_KEYS: &[&str] =
    &["reference_batches", "reference_snapshot", "psi_threshold", "ks_p_value", "chi_square_p_value"];
const PIPELINE_KEYS: &[&str] = &["stages"];
const STAGE_KEYS: &[&str] = &["stage", "table", "upstream", "job"];
const LINEAGE_KEYS: &[&str] = &["datasets"];
const DATASET_RULE_KEYS: &[&str] = &["namespace", "strip_prefix"];
const DIRECTIONS: &[&str] = &["spike", "drop", "both"];
const SCOPES: &[&str] = &["added", "table"];
const CATALOG_TYPES: &[&str] = &["sql", "rest"];

/// The problem of a file that is not UTF-8, at its first bad byte.
pub(super) fn not_utf8(bytes: &[u8], error: &std::str::Utf8Error, path: &Path) -> ConfigError {
    let valid = String::from_utf8_lossy(&bytes[..error.valid_up_to()]);
    let (line, column) = line_column(&valid, valid.len());
    let problem = Problem {
        line,
        column,
        key_path: String::new(),
        message: "the file is not valid UTF-8 (save it as UTF-8)".to_string(),
    };
    ConfigError::Invalid { path: path.to_path_buf(), problems: vec![problem] }
}

pub(super) fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut reader = Reader { text, base_dir, env, problems: Vec::new() };
    let config = match ImDocument::parse(text.to_string()) {
        Ok(document) => reader.config(document.as_table(), path),
        Err(error) => {
            // toml_edit puts "expected ..." on its own line; a problem is one line.
            let message =
                error.message().lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join("; ");
            reader.problem(error.span(), "", format!("invalid TOML: {message}"));
            None
        }
    };
    match config {
        Some(config) if reader.problems.is_empty() => Ok(config),
        _ => {
            let mut problems = reader.problems;
            problems.sort_by_key(|problem| (problem.line, problem.column));
            Err(ConfigError::Invalid { path: path.to_path_buf(), problems })
        }
    }
}

struct Reader<'a> {
    text: &'a str,
    base_dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

/// A pipeline stage as found: its position in `stages`, its table, its span.
type StageEntry<'d> = (usize, &'d dyn TableLike, Option<(usize, usize)>);
/// A table of an array of tables (or of an inline array) with its span.
type SpannedTable<'d> = (&'d dyn TableLike, Option<(usize, usize)>);

/// A spanned view of one table of the document and its key path.
struct Section<'d> {
    table: &'d dyn TableLike,
    /// Dotted key path of this table, for messages.
    path: String,
    span: Option<(usize, usize)>,
}

fn span_pair(span: Option<Range<usize>>) -> Option<(usize, usize)> {
    span.map(|range| (range.start, range.end))
}

/// Key path segment, quoted when it is not a bare TOML key.
fn segment(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { segment(key) } else { format!("{path}.{}", segment(key)) }
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) | Item::Value(Value::InlineTable(_)) => "a table",
        Item::ArrayOfTables(_) | Item::Value(Value::Array(_)) => "an array",
        Item::Value(Value::String(_)) => "a string",
        Item::Value(Value::Integer(_)) => "an integer",
        Item::Value(Value::Float(_)) => "a float",
        Item::Value(Value::Boolean(_)) => "a boolean",
        Item::Value(Value::Datetime(_)) => "a datetime",
    }
}

impl<'a> Reader<'a> {
    fn problem(&mut self, span: Option<Range<usize>>, key_path: &str, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.map_or(0, |range| range.start));
        // Keys and values come from the file: a control or bidi character in them must not
        // reach the terminal as itself.
        self.problems.push(Problem {
            line,
            column,
            key_path: escape_invisible(key_path),
            message: escape_invisible(&message.into()),
        });
    }

    fn problem_at(&mut self, span: Option<(usize, usize)>, key_path: &str, message: impl Into<String>) {
        self.problem(span.map(|(start, end)| start..end), key_path, message)
    }

    /// Span of `key`'s value in `section`, falling back to the key, then the section.
    fn value_span(section: &Section<'_>, key: &str) -> Option<(usize, usize)> {
        section
            .table
            .get(key)
            .and_then(Item::span)
            .or_else(|| section.table.key(key).and_then(|key| key.span()))
            .map(|range| (range.start, range.end))
            .or(section.span)
    }

    /// Reports every key of `section` not in `allowed`, with a suggestion.
    fn check_keys(&mut self, section: &Section<'_>, allowed: &[&str], what: &str) {
        for (key, _) in section.table.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let span = section.table.key(key).and_then(|key| key.span());
            let suggestion = did_you_mean(key, allowed)
                .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                .unwrap_or_default();
            let expected = allowed.iter().map(|key| format!("`{key}`")).collect::<Vec<_>>().join(", ");
            self.problem(
                span,
                &join(&section.path, key),
                format!("unknown key `{key}` in {what}{suggestion}; expected one of {expected}"),
            );
        }
    }

    /// The sub-table at `key`, if present; a problem when it is not a table.
    fn section<'d>(&mut self, parent: &Section<'d>, key: &str) -> Option<Section<'d>> {
        let item = parent.table.get(key)?;
        let path = join(&parent.path, key);
        match item.as_table_like() {
            Some(table) => Some(Section {
                table,
                path,
                span: span_pair(item.span()).or_else(|| span_pair(parent.table.key(key)?.span())).or(parent.span),
            }),
            None => {
                let span = Self::value_span(parent, key);
                let message = match item {
                    Item::ArrayOfTables(_) => format!(
                        "expected a table, found an array of tables: write `[{path}.NAME]` headers, not `[[{path}]]`"
                    ),
                    _ => format!("expected a table, found {}", type_name(item)),
                };
                self.problem_at(span, &path, message);
                None
            }
        }
    }

    /// Replaces `${VAR}` with the environment variable's value.
    fn substitute(&mut self, raw: &str, span: Option<(usize, usize)>, path: &str) -> Option<String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.problem_at(span, path, "unterminated `${` (expected `${VARIABLE}`)");
                return None;
            };
            let name = &after[..end];
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.problem_at(span, path, format!("`${{{name}}}` is not a valid environment variable reference"));
                return None;
            }
            match (self.env)(name) {
                Some(value) => out.push_str(&value),
                None => {
                    self.problem_at(span, path, format!("environment variable `{name}` is not set"));
                    return None;
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }

    /// A string value (after `${VAR}` substitution) and the raw text as written.
    fn string_with_raw(&mut self, section: &Section<'_>, key: &str) -> Option<(String, String)> {
        self.string_as(section, key, "a string")
    }

    /// Like [`Reader::string_with_raw`]; `expected` says what the string holds when the value
    /// has another type ("a duration such as `15m`").
    fn string_as(&mut self, section: &Section<'_>, key: &str, expected: &str) -> Option<(String, String)> {
        let item = section.table.get(key)?;
        let path = join(&section.path, key);
        let span = Self::value_span(section, key);
        match item.as_str() {
            Some(raw) => {
                let value = self.substitute(raw, span, &path)?;
                Some((value, raw.to_string()))
            }
            None => {
                self.problem_at(span, &path, format!("expected {expected}, found {}", type_name(item)));
                None
            }
        }
    }

    fn string(&mut self, section: &Section<'_>, key: &str) -> Option<String> {
        self.string_with_raw(section, key).map(|(value, _)| value)
    }

    fn required_string(&mut self, section: &Section<'_>, key: &str) -> Option<String> {
        self.required_string_with_raw(section, key).map(|(value, _)| value)
    }

    fn required_string_with_raw(&mut self, section: &Section<'_>, key: &str) -> Option<(String, String)> {
        if section.table.get(key).is_none() {
            let path = join(&section.path, key);
            self.problem_at(section.span, &path, format!("missing required key `{key}`"));
            return None;
        }
        self.string_with_raw(section, key)
    }

    /// A string that must be one of `choices`.
    fn choice(&mut self, section: &Section<'_>, key: &str, choices: &[&str]) -> Option<String> {
        let (value, raw) = self.string_with_raw(section, key)?;
        if choices.contains(&value.as_str()) {
            return Some(value);
        }
        // The raw text, not the value: a `${VAR}` may hold a secret.
        let value = raw;
        let suggestion = did_you_mean(&value, choices)
            .map(|candidate| format!(" (did you mean `{candidate}`?)"))
            .unwrap_or_default();
        let expected = choices.iter().map(|choice| format!("`{choice}`")).collect::<Vec<_>>().join(", ");
        let span = Self::value_span(section, key);
        self.problem_at(
            span,
            &join(&section.path, key),
            format!("unknown value `{value}`{suggestion}; expected one of {expected}"),
        );
        None
    }

    /// A number (integer or float) checked by `check`.
    fn number(&mut self, section: &Section<'_>, key: &str, check: impl Fn(f64) -> Result<(), String>) -> Option<f64> {
        let item = section.table.get(key)?;
        let path = join(&section.path, key);
        let span = Self::value_span(section, key);
        let value = match item {
            Item::Value(Value::Integer(value)) => *value.value() as f64,
            Item::Value(Value::Float(value)) => *value.value(),
            _ => {
                self.problem_at(span, &path, format!("expected a number, found {}", type_name(item)));
                return None;
            }
        };
        if !value.is_finite() {
            self.problem_at(span, &path, "expected a finite number");
            return None;
        }
        match check(value) {
            Ok(()) => Some(value),
            Err(message) => {
                self.problem_at(span, &path, message);
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    fn integer(&mut self, section: &Section<'_>, key: &str, min: i64, max: i64) -> Option<i64> {
        let item = section.table.get(key)?;
        let path = join(&section.path, key);
        let span = Self::value_span(section, key);
        match item {
            Item::Value(Value::Integer(value)) if (min..=max).contains(value.value()) => Some(*value.value()),
            Item::Value(Value::Integer(value)) => {
                let message = if max == i64::MAX {
                    format!("expected a whole number of at least {min}, found {}", value.value())
                } else {
                    format!("expected a whole number from {min} to {max}, found {}", value.value())
                };
                self.problem_at(span, &path, message);
                None
            }
            _ => {
                self.problem_at(span, &path, format!("expected a whole number, found {}", type_name(item)));
                None
            }
        }
    }

    fn boolean(&mut self, section: &Section<'_>, key: &str) -> Option<bool> {
        let item = section.table.get(key)?;
        match item.as_bool() {
            Some(value) => Some(value),
            None => {
                let span = Self::value_span(section, key);
                self.problem_at(
                    span,
                    &join(&section.path, key),
                    format!("expected true or false, found {}", type_name(item)),
                );
                None
            }
        }
    }

    fn duration(&mut self, section: &Section<'_>, key: &str) -> Option<Duration> {
        let (value, raw) = self.string_as(section, key, "a duration string such as `30s`, `15m`, `2h` or `7d`")?;
        match parse_duration(&value) {
            Ok(duration) if !duration.is_zero() => Some(duration),
            Ok(_) => {
                let span = Self::value_span(section, key);
                self.problem_at(span, &join(&section.path, key), "expected a duration longer than zero");
                None
            }
            Err(message) => {
                let span = Self::value_span(section, key);
                self.problem_at(span, &join(&section.path, key), format!("invalid duration `{raw}`: {message}"));
                None
            }
        }
    }

    fn schedule(&mut self, section: &Section<'_>, key: &str) -> Option<Schedule> {
        let (value, raw) =
            self.string_as(section, key, "a cron schedule string with a seconds field such as `0 */5 * * * *`")?;
        match parse_schedule(&value) {
            Ok(schedule) => Some(schedule),
            Err(message) => {
                let span = Self::value_span(section, key);
                self.problem_at(span, &join(&section.path, key), format!("invalid cron schedule `{raw}`: {message}"));
                None
            }
        }
    }

    fn direction(&mut self, section: &Section<'_>, key: &str) -> Option<Direction> {
        Some(match self.choice(section, key, DIRECTIONS)?.as_str() {
            "spike" => Direction::Spike,
            "drop" => Direction::Drop,
            _ => Direction::Both,
        })
    }

    /// A path resolved against the config file's folder.
    fn path_value(&mut self, section: &Section<'_>, key: &str) -> Option<PathBuf> {
        let value = self.string(section, key)?;
        Some(self.resolve(&value))
    }

    fn resolve(&self, value: &str) -> PathBuf {
        let path = Path::new(value);
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    fn absolute(&self, value: &str) -> String {
        let resolved = self.resolve(value);
        let absolute = if resolved.is_absolute() {
            resolved
        } else {
            std::env::current_dir().map(|dir| dir.join(&resolved)).unwrap_or(resolved)
        };
        absolute.to_string_lossy().into_owned()
    }

    /// Entries of a table-valued key (`grouping = { a = "b" }`) as strings.
    fn string_map(&mut self, section: &Section<'_>, key: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(map) = self.section(section, key) {
            for (entry, _) in map.table.iter() {
                if let Some(value) = self.string(&map, entry) {
                    out.push((entry.to_string(), value));
                }
            }
        }
        out
    }

    // ---- sections ----

    fn config(&mut self, root_table: &toml_edit::Table, path: &Path) -> Option<Config> {
        let root = Section { table: root_table, path: String::new(), span: Some((0, 0)) };
        self.check_keys(&root, TOP_LEVEL_KEYS, "the top level");

        let catalog = self.catalog(&root);
        let history = self.history(&root);
        let server = self.server(&root);
        let pushgateway = self.pushgateway(&root);
        let defaults = self.defaults(&root);
        let tables = defaults.as_ref().map(|defaults| self.tables(&root, defaults)).unwrap_or_default();
        let pipelines = self.pipelines(&root, &tables);
        let lineage = self.lineage(&root);
        Some(Config {
            source: path.to_path_buf(),
            catalog: catalog?,
            history: history?,
            server: server?,
            pushgateway: pushgateway?,
            defaults: defaults?,
            tables,
            pipelines,
            lineage,
        })
    }

    fn catalog(&mut self, root: &Section<'_>) -> Option<CatalogConfig> {
        let Some(section) = self.section(root, "catalog") else {
            if root.table.get("catalog").is_none() {
                self.problem_at(Some((0, 0)), "catalog", "missing required table `[catalog]`");
            }
            return None;
        };
        self.check_keys(&section, CATALOG_KEYS, "[catalog]");
        let kind = match section.table.get("type") {
            None => {
                self.problem_at(section.span, "catalog.type", "missing required key `type` (`sql` or `rest`)");
                None
            }
            Some(_) => self
                .choice(&section, "type", CATALOG_TYPES)
                .map(|kind| if kind == "rest" { CatalogKind::Rest } else { CatalogKind::Sql }),
        };
        let uri = self.required_string(&section, "uri");
        let uri_span = Self::value_span(&section, "uri");
        let uri = match (kind, uri) {
            (Some(CatalogKind::Sql), Some(uri)) => self.sql_catalog_uri(&uri, uri_span),
            (Some(CatalogKind::Rest), Some(uri)) => {
                if uri.starts_with("http://") || uri.starts_with("https://") {
                    Some(uri)
                } else {
                    self.problem_at(
                        uri_span,
                        "catalog.uri",
                        "a REST catalog URI must start with `http://` or `https://`",
                    );
                    None
                }
            }
            _ => None,
        };
        let warehouse = self
            .string(&section, "warehouse")
            .map(|warehouse| if warehouse.contains("://") { warehouse } else { self.absolute(&warehouse) });
        if kind == Some(CatalogKind::Sql) && warehouse.is_none() && section.table.get("warehouse").is_none() {
            self.problem_at(
                section.span,
                "catalog.warehouse",
                "missing required key `warehouse` (a SQL catalog needs a warehouse location)",
            );
        }
        let name = self.string(&section, "name").unwrap_or_else(|| "default".to_string());
        if name.trim().is_empty() {
            let span = Self::value_span(&section, "name");
            self.problem_at(span, "catalog.name", "the catalog name cannot be empty");
        }

        let mut properties = BTreeMap::new();
        for (key, property) in [
            ("token", "token"),
            ("credential", "credential"),
            ("s3_endpoint", iceberg::io::S3_ENDPOINT),
            ("s3_region", iceberg::io::S3_REGION),
            ("s3_access_key_id", iceberg::io::S3_ACCESS_KEY_ID),
            ("s3_secret_access_key", iceberg::io::S3_SECRET_ACCESS_KEY),
            ("s3_session_token", iceberg::io::S3_SESSION_TOKEN),
        ] {
            if let Some(value) = self.string(&section, key) {
                properties.insert(property.to_string(), Secret::new(value));
            }
        }
        if let Some(path_style) = self.boolean(&section, "s3_path_style_access") {
            properties.insert(iceberg::io::S3_PATH_STYLE_ACCESS.to_string(), Secret::new(path_style.to_string()));
        }
        for (key, value) in self.string_map(&section, "properties") {
            properties.insert(key, Secret::new(value));
        }
        Some(CatalogConfig { kind: kind?, uri: Secret::new(uri?), warehouse, name, properties })
    }

    /// Checks a SQL catalog URI and makes a relative SQLite path absolute.
    fn sql_catalog_uri(&mut self, uri: &str, span: Option<(usize, usize)>) -> Option<String> {
        if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
            return Some(uri.to_string());
        }
        let Some(rest) = uri.strip_prefix("sqlite:") else {
            self.problem_at(span, "catalog.uri", "a SQL catalog URI must start with `sqlite:` or `postgres://`");
            return None;
        };
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (file, query) = rest.split_once('?').map_or((rest, None), |(file, query)| (file, Some(query)));
        if file.is_empty() {
            self.problem_at(
                span,
                "catalog.uri",
                "the SQLite URI has no file path (expected `sqlite://path/to/catalog.db`)",
            );
            return None;
        }
        if file == ":memory:" {
            return Some(uri.to_string());
        }
        let absolute = self.absolute(file);
        Some(match query {
            Some(query) => format!("sqlite://{absolute}?{query}"),
            None => format!("sqlite://{absolute}"),
        })
    }

    fn history(&mut self, root: &Section<'_>) -> Option<HistoryConfig> {
        let default_path = || HistoryLocation::Sqlite(PathBuf::from("icewatch-history.db"));
        let Some(section) = self.section(root, "history") else {
            if root.table.get("history").is_some() {
                return None;
            }
            let HistoryLocation::Sqlite(path) = default_path() else { return None };
            return Some(HistoryConfig { location: HistoryLocation::Sqlite(self.resolve(&path.to_string_lossy())) });
        };
        self.check_keys(&section, HISTORY_KEYS, "[history]");
        let location = match self.string(&section, "path") {
            None if section.table.get("path").is_some() => return None,
            None => HistoryLocation::Sqlite(self.resolve("icewatch-history.db")),
            Some(path) if path.starts_with("postgres://") || path.starts_with("postgresql://") => {
                HistoryLocation::Postgres(path)
            }
            Some(path) => {
                let file = path.strip_prefix("sqlite://").or_else(|| path.strip_prefix("sqlite:")).unwrap_or(&path);
                if file.trim().is_empty() {
                    let span = Self::value_span(&section, "path");
                    self.problem_at(span, "history.path", "expected a file path or a `postgres://` URI");
                    return None;
                }
                HistoryLocation::Sqlite(self.resolve(file))
            }
        };
        Some(HistoryConfig { location })
    }

    fn server(&mut self, root: &Section<'_>) -> Option<ServerConfig> {
        let default = DEFAULT_LISTEN;
        let Some(section) = self.section(root, "server") else {
            return root.table.get("server").is_none().then_some(ServerConfig::new(default));
        };
        self.check_keys(&section, SERVER_KEYS, "[server]");
        let listen = match self.string_with_raw(&section, "listen") {
            None if section.table.get("listen").is_some() => return None,
            None => default,
            Some((value, raw)) => match SocketAddr::from_str(&value) {
                Ok(address) => address,
                Err(_) => {
                    let span = Self::value_span(&section, "listen");
                    self.problem_at(span, "server.listen", format!("invalid listen address `{raw}`: expected `host:port` such as `127.0.0.1:9464` or `0.0.0.0:9464`"));
                    return None;
                }
            },
        };
        let mut server = ServerConfig::new(listen);
        if let Some(grace) = self.duration(&section, "shutdown_grace") {
            server.shutdown_grace = grace;
        }
        let cert_file = self.path_value(&section, "tls_cert_file");
        let key_file = self.path_value(&section, "tls_key_file");
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => server.tls = Some(ServerTlsConfig { cert_file, key_file }),
            (None, None) => {}
            (Some(_), None) => {
                let span = Self::value_span(&section, "tls_cert_file");
                self.problem_at(span, "server.tls_cert_file", "`tls_cert_file` needs `tls_key_file` too");
            }
            (None, Some(_)) => {
                let span = Self::value_span(&section, "tls_key_file");
                self.problem_at(span, "server.tls_key_file", "`tls_key_file` needs `tls_cert_file` too");
            }
        }
        if let Some(users) = self.section(&section, "basic_auth_users") {
            for (user, _) in users.table.iter() {
                let Some(hash) = self.string(&users, user) else { continue };
                if bcrypt_cost(&hash).is_none() {
                    let span = Self::value_span(&users, user);
                    self.problem_at(span, &format!("server.basic_auth_users.{user}"), "expected a bcrypt hash (`$2b$` or `$2y$`, 60 characters), e.g. from `htpasswd -nBC 10 user`; never the password itself");
                    continue;
                }
                server.basic_auth_users.insert(user.to_string(), PasswordHash(hash));
            }
        }
        Some(server)
    }

    fn pushgateway(&mut self, root: &Section<'_>) -> Option<Option<PushgatewayConfig>> {
        let Some(section) = self.section(root, "pushgateway") else {
            return root.table.get("pushgateway").is_none().then_some(None);
        };
        self.check_keys(&section, PUSHGATEWAY_KEYS, "[pushgateway]");
        let url = self.required_string(&section, "url");
        let url = url.and_then(|url| {
            if url.starts_with("http://") || url.starts_with("https://") {
                Some(url.trim_end_matches('/').to_string())
            } else {
                let span = Self::value_span(&section, "url");
                self.problem_at(span, "pushgateway.url", "expected an `http://` or `https://` URL");
                None
            }
        });
        let job = self.string(&section, "job").unwrap_or_else(|| "icewatch".to_string());
        let mut grouping: BTreeMap<String, String> = self.string_map(&section, "grouping").into_iter().collect();
        let instance = self.string(&section, "instance").unwrap_or_else(host_name);
        grouping.entry("instance".to_string()).or_insert(instance);
        if grouping.contains_key("job") {
            let span = Self::value_span(&section, "grouping");
            self.problem_at(span, "pushgateway.grouping.job", "set the job with `pushgateway.job`, not in `grouping`");
        }
        let timeout = self.duration(&section, "timeout").unwrap_or(Duration::from_secs(10));
        let retries = self.integer(&section, "retries", 0, 20).unwrap_or(3) as u32;
        let username = self.string(&section, "username");
        let password = self.string(&section, "password").map(Secret::new);
        let delete_on_shutdown = self.boolean(&section, "delete_on_shutdown").unwrap_or(false);
        let ca_file = self.path_value(&section, "ca_file");
        let insecure_skip_verify = self.boolean(&section, "insecure_skip_verify").unwrap_or(false);
        Some(Some(PushgatewayConfig {
            url: url?,
            job,
            grouping,
            timeout,
            retries,
            username,
            password,
            delete_on_shutdown,
            ca_file,
            insecure_skip_verify,
        }))
    }

    fn defaults(&mut self, root: &Section<'_>) -> Option<Defaults> {
        let mut defaults = Defaults {
            schedule: parse_schedule("0 */5 * * * *").ok()?,
            zscore_threshold: 3.0,
            min_history: 5,
            window: 50,
            direction: Direction::Both,
            timeout: Duration::from_secs(60),
            concurrency: 4,
        };
        let Some(section) = self.section(root, "defaults") else {
            return root.table.get("defaults").is_none().then_some(defaults);
        };
        self.check_keys(&section, DEFAULTS_KEYS, "[defaults]");
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
            let span = Self::value_span(&section, "window");
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
    fn settings(&mut self, section: &Section<'_>, defaults: &Defaults, window_key: Option<&str>) -> SensorSettings {
        let mut settings = SensorSettings {
            schedule: defaults.schedule.clone(),
            zscore_threshold: defaults.zscore_threshold,
            min_history: defaults.min_history,
            window: defaults.window,
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
                let span = Self::value_span(section, key);
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
        if let Some(direction) = self.direction(section, "direction") {
            settings.direction = direction;
        }
        if let Some(timeout) = self.duration(section, "timeout") {
            settings.timeout = timeout;
        }
        settings
    }

    fn tables(&mut self, root: &Section<'_>, defaults: &Defaults) -> Vec<TableConfig> {
        let Some(section) = self.section(root, "tables") else {
            return Vec::new();
        };
        let mut tables = Vec::new();
        for (key, _) in section.table.iter() {
            let path = join("tables", key);
            let key_span = span_pair(section.table.key(key).and_then(|key| key.span()));
            let name = match TableName::parse(key) {
                Ok(name) => Some(name),
                Err(message) => {
                    self.problem_at(key_span, &path, format!("invalid table name `{key}`: {message}"));
                    None
                }
            };
            let Some(table) = self.section(&section, key) else { continue };
            if let Some(table) = self.table(&table, name, defaults) {
                tables.push(table);
            }
        }
        tables
    }

    fn table(&mut self, section: &Section<'_>, name: Option<TableName>, defaults: &Defaults) -> Option<TableConfig> {
        for (key, _) in section.table.iter() {
            if TABLE_KEYS.contains(&key) {
                continue;
            }
            let span = section.table.key(key).and_then(|key| key.span());
            let kinds: Vec<&str> = SensorKind::TABLE_KINDS.iter().map(|kind| kind.as_str()).collect();
            let suggestion = did_you_mean(key, TABLE_KEYS)
                .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                .unwrap_or_default();
            let kinds = kinds.iter().map(|kind| format!("`{kind}`")).collect::<Vec<_>>().join(", ");
            self.problem(
                span,
                &join(&section.path, key),
                format!("unknown sensor kind `{key}`{suggestion}; valid kinds are {kinds} (and the key `layer`)"),
            );
        }
        let layer = self.string(section, "layer").unwrap_or_default();
        let freshness = self.section(section, "freshness").map(|sensor| self.freshness(&sensor, defaults));
        let volume = self.section(section, "volume").map(|sensor| self.volume(&sensor, defaults));
        let schema = self.section(section, "schema").map(|sensor| self.schema(&sensor, defaults));
        let distribution = self.section(section, "distribution").map(|sensor| self.distribution(&sensor, defaults));
        Some(TableConfig {
            name: name?,
            layer,
            freshness: freshness.flatten(),
            volume: volume.flatten(),
            schema: schema.flatten(),
            distribution: distribution.flatten(),
        })
    }

    fn allowed_sensor_keys(specific: &[&'static str]) -> Vec<&'static str> {
        specific.iter().chain(SENSOR_COMMON_KEYS).copied().collect()
    }

    fn freshness(&mut self, section: &Section<'_>, defaults: &Defaults) -> Option<FreshnessConfig> {
        self.check_keys(section, &Self::allowed_sensor_keys(FRESHNESS_KEYS), "a freshness sensor");
        let warn_after = self.duration(section, "warn_after");
        let critical_after = self.duration(section, "critical_after");
        if let (Some(warn), Some(critical)) = (warn_after, critical_after)
            && warn > critical
        {
            let span = Self::value_span(section, "warn_after");
            self.problem_at(
                span,
                &join(&section.path, "warn_after"),
                "`warn_after` must not be longer than `critical_after`",
            );
        }
        let timestamp_column = self.column_name(section, "timestamp_column");
        let settings = self.settings(section, defaults, Some("window"));
        Some(FreshnessConfig { warn_after: warn_after.or(critical_after), critical_after, timestamp_column, settings })
    }

    fn column_name(&mut self, section: &Section<'_>, key: &str) -> Option<String> {
        let column = self.string(section, key)?;
        if column.is_empty() {
            let span = Self::value_span(section, key);
            self.problem_at(span, &join(&section.path, key), "a column name cannot be empty");
            return None;
        }
        Some(column)
    }

    fn volume(&mut self, section: &Section<'_>, defaults: &Defaults) -> Option<VolumeConfig> {
        self.check_keys(section, &Self::allowed_sensor_keys(VOLUME_KEYS), "a volume sensor");
        let deviation_percent = self.number(section, "deviation_percent", positive).unwrap_or(20.0);
        let critical_deviation_percent =
            self.number(section, "critical_deviation_percent", positive).unwrap_or(deviation_percent * 2.0);
        if critical_deviation_percent < deviation_percent {
            let span = Self::value_span(section, "critical_deviation_percent");
            self.problem_at(
                span,
                &join(&section.path, "critical_deviation_percent"),
                "must not be below `deviation_percent`",
            );
        }
        let window = self.duration(section, "window").unwrap_or(Duration::from_secs(7 * 86_400));
        let seasonality = match self.choice(section, "seasonality", SEASONALITIES).as_deref() {
            Some("daily") => Seasonality::Daily,
            Some("weekly") => Seasonality::Weekly,
            _ => Seasonality::None,
        };
        let settings = self.settings(section, defaults, Some("points"));
        Some(VolumeConfig { deviation_percent, critical_deviation_percent, window, seasonality, settings })
    }

    fn schema(&mut self, section: &Section<'_>, defaults: &Defaults) -> Option<SchemaConfig> {
        self.check_keys(section, &Self::allowed_sensor_keys(SCHEMA_KEYS), "a schema sensor");
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
                        let span = Self::value_span(&map, column);
                        // Name the type as written: a `${VAR}` may hold a secret.
                        let message = if raw == type_text {
                            message
                        } else {
                            format!(
                                "unknown Iceberg type `{raw}`; expected a primitive such as `long`, `double`, `string`, `timestamptz`, or `decimal(P,S)`, `fixed[N]`"
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

    fn distribution(&mut self, section: &Section<'_>, defaults: &Defaults) -> Option<DistributionConfig> {
        self.check_keys(section, &Self::allowed_sensor_keys(DISTRIBUTION_KEYS), "a distribution sensor");
        let columns_path = join(&section.path, "columns");
        let mut columns = Vec::new();
        match self.section(section, "columns") {
            Some(map) => {
                for (column, item) in map.table.iter() {
                    let column_path = join(&map.path, column);
                    let Some(array) = item.as_array() else {
                        let span = Self::value_span(&map, column);
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
                                Some(_) => {
                                    self.problem_at(span, &column_path, format!("statistic `{name}` is listed twice"))
                                }
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
                                            "unknown statistic `{name}`{suggestion}; valid statistics are {}",
                                            names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
                                        ),
                                    );
                                }
                            },
                            None => self.problem_at(span, &column_path, "expected a statistic name (a string)"),
                        }
                    }
                    if statistics.is_empty() && array.is_empty() {
                        let span = Self::value_span(&map, column);
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
            self.check_keys(&drift_section, DRIFT_KEYS, "drift settings");
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

    // ---- [lineage] (owned by the lineage module) ----

    /// `[lineage]`: `datasets = [{ namespace = "...", strip_prefix = "..." }, ...]`.
    fn lineage(&mut self, root: &Section<'_>) -> LineageConfig {
        let Some(section) = self.section(root, "lineage") else { return LineageConfig::default() };
        self.check_keys(&section, LINEAGE_KEYS, "[lineage]");
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
            self.check_keys(&rule, DATASET_RULE_KEYS, "a lineage dataset rule");
            let namespace = self.required_string(&rule, "namespace");
            let strip_prefix = self.string(&rule, "strip_prefix").unwrap_or_default();
            if let Some(namespace) = namespace {
                datasets.push(DatasetRule { namespace, strip_prefix });
            }
        }
        LineageConfig { datasets }
    }

    fn pipelines(&mut self, root: &Section<'_>, tables: &[TableConfig]) -> Vec<PipelineConfig> {
        let Some(section) = self.section(root, "pipelines") else {
            return Vec::new();
        };
        let table_names: Vec<&str> = tables.iter().map(|table| table.name.as_str()).collect();
        let mut pipelines = Vec::new();
        for (name, _) in section.table.iter() {
            let Some(pipeline) = self.section(&section, name) else { continue };
            self.check_keys(&pipeline, PIPELINE_KEYS, "a pipeline");
            if let Some(stages) = self.stages(&pipeline, &table_names) {
                pipelines.push(PipelineConfig { name: name.to_string(), stages });
            }
        }
        pipelines
    }

    fn stages(&mut self, pipeline: &Section<'_>, table_names: &[&str]) -> Option<Vec<StageConfig>> {
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
        let mut upstream_spans = Vec::new();
        let mut ok = true;
        for (index, table, span) in entries {
            let stage_section = Section { table, path: format!("{stages_path}[{index}]"), span };
            let path = stage_section.path.as_str();
            self.check_keys(&stage_section, STAGE_KEYS, "a pipeline stage");
            let stage = self.required_string(&stage_section, "stage");
            let table_name = self.required_string_with_raw(&stage_section, "table");
            if let Some((table_name, raw)) = &table_name
                && !table_names.contains(&table_name.as_str())
            {
                // Named as written: a `${VAR}` may hold a secret.
                let table_name = raw;
                let suggestion = did_you_mean(table_name, table_names)
                    .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                    .unwrap_or_default();
                let span = Reader::value_span(&stage_section, "table");
                self.problem_at(
                    span,
                    &join(path, "table"),
                    format!("stage names table `{table_name}`, which is not declared under [tables]{suggestion}"),
                );
            }
            let mut upstream = Vec::new();
            if let Some(item) = table.get("upstream") {
                match item.as_array() {
                    Some(array) => {
                        for value in array.iter() {
                            match value.as_str() {
                                Some(name) => {
                                    upstream.push(name.to_string());
                                    upstream_spans.push((
                                        name.to_string(),
                                        span_pair(value.span()),
                                        join(path, "upstream"),
                                    ));
                                }
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
            match (stage, table_name.map(|(value, _)| value)) {
                (Some(stage), Some(table_name)) => {
                    if stages.iter().any(|existing: &StageConfig| existing.stage == stage) {
                        let span = Reader::value_span(&stage_section, "stage");
                        self.problem_at(
                            span,
                            &join(path, "stage"),
                            format!("stage `{stage}` is declared twice in this pipeline"),
                        );
                        ok = false;
                    }
                    stages.push(StageConfig {
                        job: job.unwrap_or_else(|| table_name.clone()),
                        stage,
                        table: table_name,
                        upstream,
                    });
                }
                _ => ok = false,
            }
        }

        let stage_names: Vec<&str> = stages.iter().map(|stage| stage.stage.as_str()).collect();
        for (name, span, path) in &upstream_spans {
            if !stage_names.contains(&name.as_str()) {
                let suggestion = did_you_mean(name, &stage_names)
                    .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                    .unwrap_or_default();
                self.problem_at(
                    *span,
                    path,
                    format!("upstream stage `{name}` does not exist in this pipeline{suggestion}"),
                );
                ok = false;
            }
        }
        if ok && let Some(cycle) = find_cycle(&stages) {
            self.problem_at(stages_span, &stages_path, format!("the pipeline has a cycle: {}", cycle.join(" → ")));
            ok = false;
        }
        ok.then_some(stages)
    }
}

/// `text` with control characters and invisible bidi/formatting characters written as
/// `\u{..}` escapes, so a hostile key cannot rewrite the terminal line it is printed on.
pub(crate) fn escape_invisible(text: &str) -> String {
    let invisible = super::values::is_invisible;
    if !text.chars().any(invisible) {
        return text.to_string();
    }
    text.chars().map(|c| if invisible(c) { format!("\\u{{{:04x}}}", c as u32) } else { c.to_string() }).collect()
}

fn positive(value: f64) -> Result<(), String> {
    if value > 0.0 { Ok(()) } else { Err(format!("expected a number above 0, found {value}")) }
}

fn probability(value: f64) -> Result<(), String> {
    if value > 0.0 && value < 1.0 { Ok(()) } else { Err(format!("expected a p-value between 0 and 1, found {value}")) }
}

/// Parses a cron expression with a seconds field (6 or 7 fields).
pub(crate) fn parse_schedule(expression: &str) -> Result<Schedule, String> {
    let fields = expression.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "expected 6 or 7 fields (seconds minutes hours day-of-month month day-of-week [year]), found {fields}"
        ));
    }
    // The cron crate's message repeats the expression with a caret line; keep its last line
    // ("Minutes must be between ...") so a problem stays one line.
    let cron = cron::Schedule::from_str(expression).map_err(|error| {
        let text = error.to_string();
        let last = text.lines().map(str::trim).rfind(|line| !line.is_empty()).unwrap_or("invalid expression");
        let mut chars = last.chars();
        chars.next().map_or_else(String::new, |first| first.to_lowercase().chain(chars).collect())
    })?;
    if cron.upcoming(chrono::Utc).next().is_none() {
        return Err("the schedule never fires".to_string());
    }
    Ok(Schedule { expression: expression.to_string(), cron })
}

/// Normalizes an Iceberg type name as written in `schema.expect` (`long`, `decimal(10, 2)`).
pub(crate) fn normalize_iceberg_type(text: &str) -> Result<String, String> {
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
        "unknown Iceberg type `{text}`{suggestion}; expected a primitive such as `long`, `double`, `string`, `timestamptz`, or `decimal(P,S)`, `fixed[N]`"
    ))
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

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "icewatch".to_string())
}

/// The cost of a well-formed bcrypt hash (`$2a$`/`$2b$`/`$2x$`/`$2y$`, two-digit cost 4..=31,
/// 53 characters of salt and hash), else `None`.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2a$", "$2b$", "$2x$", "$2y$"].iter().find_map(|prefix| hash.strip_prefix(prefix))?;
    let (cost, tail) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok().filter(|cost| (4..=31).contains(cost))?;
    let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    (tail.len() == 53 && tail.chars().all(alphabet)).then_some(cost)
}
