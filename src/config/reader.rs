//! The spanned-TOML reader every section is read with: typed getters that record a problem at
//! the value's `line:col` and carry on, `${VAR}` substitution, paths resolved against the
//! config file's folder, and the unknown-key check (with "did you mean") fed by each section's
//! table of [`Key`]s. It knows no section: those are in `sections/`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::diagnostics::{LineIndex, Locations, did_you_mean, shortened};
use super::values::{is_invisible, parse_duration};
use super::{Problem, Schedule};
use crate::stats::Direction;

/// One key a section accepts. Each section has one table of them: the parser's unknown-key check
/// and "did you mean" read the names, and `docs/configuration.md` documents every one (its
/// `default` and `doc` are the docs' "default" and "meaning" cells word for word; the tests in
/// `key_docs.rs` keep the two equal).
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    /// The default as the docs show it: a TOML value (`` `"30s"` ``), `required`, `none`, or
    /// what it falls back to (`` `defaults.window` ``).
    pub default: &'static str,
    /// What the key means.
    pub doc: &'static str,
}

/// The names of `tables`' keys, in order.
pub(super) fn key_names(tables: &[&[Key]]) -> Vec<&'static str> {
    tables.iter().flat_map(|keys| keys.iter().map(|key| key.name)).collect()
}

const DIRECTIONS: &[&str] = &["spike", "drop", "both"];

/// Reads sections of one file, collecting problems (and the places later checks need).
pub(super) struct Reader<'a> {
    lines: LineIndex<'a>,
    base_dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    locations: Locations,
}

/// A spanned view of one table of the document and its key path.
pub(super) struct Section<'d> {
    pub table: &'d dyn TableLike,
    /// Dotted key path of this table, for messages.
    pub path: String,
    pub span: Option<(usize, usize)>,
}

pub(super) fn span_pair(span: Option<Range<usize>>) -> Option<(usize, usize)> {
    span.map(|range| (range.start, range.end))
}

/// Key path segment, quoted when it is not a bare TOML key, and [`shortened`] when long (so
/// that the key paths of a section under a 10 MB key stay short too). Two keys alike in their
/// first 100 characters and in length then have one path: [`Locations`] keeps the later's place.
pub(super) fn segment(key: &str) -> String {
    let key = shortened(key);
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// `path.key`, with `key` quoted when it needs to be.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() { segment(key) } else { format!("{path}.{}", segment(key)) }
}

pub(super) fn type_name(item: &Item) -> &'static str {
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
    /// A reader of `text`, resolving relative paths against `base_dir` and `${VAR}` with `env`.
    pub(super) fn new(text: &'a str, base_dir: PathBuf, env: &'a dyn Fn(&str) -> Option<String>) -> Reader<'a> {
        Reader { lines: LineIndex::new(text), base_dir, env, problems: Vec::new(), locations: Locations::default() }
    }

    /// The problems found, in file order, and the places remembered for later checks.
    pub(super) fn finish(self) -> (Vec<Problem>, Locations) {
        let mut problems = self.problems;
        problems.sort_by_key(|problem| (problem.line, problem.column));
        (problems, self.locations)
    }

    /// Line and column where `span` starts (the start of the file without one).
    pub(super) fn line_column(&self, span: Option<(usize, usize)>) -> (usize, usize) {
        self.lines.line_column(span.map_or(0, |(start, _)| start))
    }

    /// Keeps where `key_path` was written, for checks made after loading (`validate --online`).
    pub(super) fn remember(&mut self, key_path: &str, span: Option<(usize, usize)>) {
        let (line, column) = self.line_column(span);
        self.locations.insert(key_path, line, column);
    }

    pub(super) fn problem(&mut self, span: Option<Range<usize>>, key_path: &str, message: impl Into<String>) {
        let (line, column) = self.lines.line_column(span.map_or(0, |range| range.start));
        // Keys and values come from the file: a control or bidi character in them must not
        // reach the terminal as itself.
        self.problems.push(Problem {
            line,
            column,
            key_path: escape_invisible(key_path),
            message: escape_invisible(&message.into()),
        });
    }

    pub(super) fn problem_at(&mut self, span: Option<(usize, usize)>, key_path: &str, message: impl Into<String>) {
        self.problem(span.map(|(start, end)| start..end), key_path, message)
    }

    /// Span of `key`'s value in `section`, falling back to the key, then the section.
    pub(super) fn value_span(section: &Section<'_>, key: &str) -> Option<(usize, usize)> {
        section
            .table
            .get(key)
            .and_then(Item::span)
            .or_else(|| section.table.key(key).and_then(|key| key.span()))
            .map(|range| (range.start, range.end))
            .or(section.span)
    }

    /// Reports every key of `section` that is in none of the key `tables`, with a suggestion.
    pub(super) fn check_keys(&mut self, section: &Section<'_>, tables: &[&[Key]], what: &str) {
        let allowed = key_names(tables);
        for (key, _) in section.table.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let span = section.table.key(key).and_then(|key| key.span());
            let suggestion = did_you_mean(key, &allowed)
                .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                .unwrap_or_default();
            let expected = allowed.iter().map(|key| format!("`{key}`")).collect::<Vec<_>>().join(", ");
            self.problem(
                span,
                &join(&section.path, key),
                format!("unknown key `{}` in {what}{suggestion}; expected one of {expected}", shortened(key)),
            );
        }
    }

    /// The sub-table at `key`, if present; a problem when it is not a table.
    pub(super) fn section<'d>(&mut self, parent: &Section<'d>, key: &str) -> Option<Section<'d>> {
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
    pub(super) fn substitute(&mut self, raw: &str, span: Option<(usize, usize)>, path: &str) -> Option<String> {
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
                let message = format!("`${{{}}}` is not a valid environment variable reference", shortened(name));
                self.problem_at(span, path, message);
                return None;
            }
            match (self.env)(name) {
                Some(value) => out.push_str(&value),
                None => {
                    self.problem_at(span, path, format!("environment variable `{}` is not set", shortened(name)));
                    return None;
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }

    /// A string value (after `${VAR}` substitution) and the raw text as written.
    pub(super) fn string_with_raw(&mut self, section: &Section<'_>, key: &str) -> Option<(String, String)> {
        self.string_as(section, key, "a string")
    }

    /// Like [`Reader::string_with_raw`]; `expected` says what the string holds when the value
    /// has another type ("a duration such as `15m`").
    pub(super) fn string_as(&mut self, section: &Section<'_>, key: &str, expected: &str) -> Option<(String, String)> {
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

    pub(super) fn string(&mut self, section: &Section<'_>, key: &str) -> Option<String> {
        self.string_with_raw(section, key).map(|(value, _)| value)
    }

    pub(super) fn required_string(&mut self, section: &Section<'_>, key: &str) -> Option<String> {
        self.required_string_with_raw(section, key).map(|(value, _)| value)
    }

    pub(super) fn required_string_with_raw(&mut self, section: &Section<'_>, key: &str) -> Option<(String, String)> {
        if section.table.get(key).is_none() {
            let path = join(&section.path, key);
            self.problem_at(section.span, &path, format!("missing required key `{key}`"));
            return None;
        }
        self.string_with_raw(section, key)
    }

    /// A string that must be one of `choices`.
    pub(super) fn choice(&mut self, section: &Section<'_>, key: &str, choices: &[&str]) -> Option<String> {
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
            format!("unknown value `{}`{suggestion}; expected one of {expected}", shortened(&value)),
        );
        None
    }

    /// A number (integer or float) checked by `check`.
    pub(super) fn number(
        &mut self,
        section: &Section<'_>,
        key: &str,
        check: impl Fn(f64) -> Result<(), String>,
    ) -> Option<f64> {
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
    pub(super) fn integer(&mut self, section: &Section<'_>, key: &str, min: i64, max: i64) -> Option<i64> {
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

    pub(super) fn boolean(&mut self, section: &Section<'_>, key: &str) -> Option<bool> {
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

    pub(super) fn duration(&mut self, section: &Section<'_>, key: &str) -> Option<Duration> {
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
                let message = format!("invalid duration `{}`: {message}", shortened(&raw));
                self.problem_at(span, &join(&section.path, key), message);
                None
            }
        }
    }

    pub(super) fn schedule(&mut self, section: &Section<'_>, key: &str) -> Option<Schedule> {
        let (value, raw) =
            self.string_as(section, key, "a cron schedule string with a seconds field such as `0 */5 * * * *`")?;
        match parse_schedule(&value) {
            Ok(schedule) => Some(schedule),
            Err(message) => {
                let span = Self::value_span(section, key);
                let message = format!("invalid cron schedule `{}`: {message}", shortened(&raw));
                self.problem_at(span, &join(&section.path, key), message);
                None
            }
        }
    }

    pub(super) fn direction(&mut self, section: &Section<'_>, key: &str) -> Option<Direction> {
        Some(match self.choice(section, key, DIRECTIONS)?.as_str() {
            "spike" => Direction::Spike,
            "drop" => Direction::Drop,
            _ => Direction::Both,
        })
    }

    /// A path resolved against the config file's folder.
    pub(super) fn path_value(&mut self, section: &Section<'_>, key: &str) -> Option<PathBuf> {
        let value = self.string(section, key)?;
        Some(self.resolve(&value))
    }

    pub(super) fn resolve(&self, value: &str) -> PathBuf {
        let path = Path::new(value);
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    pub(super) fn absolute(&self, value: &str) -> String {
        let resolved = self.resolve(value);
        let absolute = if resolved.is_absolute() {
            resolved
        } else {
            std::env::current_dir().map(|dir| dir.join(&resolved)).unwrap_or(resolved)
        };
        absolute.to_string_lossy().into_owned()
    }

    /// Entries of a table-valued key (`grouping = { a = "b" }`) as strings.
    pub(super) fn string_map(&mut self, section: &Section<'_>, key: &str) -> Vec<(String, String)> {
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
}

/// `text` with control characters and invisible bidi/formatting characters written as
/// `\u{..}` escapes, so a hostile key cannot rewrite the terminal line it is printed on.
pub(super) fn escape_invisible(text: &str) -> String {
    let invisible = is_invisible;
    if !text.chars().any(invisible) {
        return text.to_string();
    }
    text.chars().map(|c| if invisible(c) { format!("\\u{{{:04x}}}", c as u32) } else { c.to_string() }).collect()
}

pub(super) fn positive(value: f64) -> Result<(), String> {
    if value > 0.0 { Ok(()) } else { Err(format!("expected a number above 0, found {value}")) }
}

pub(super) fn probability(value: f64) -> Result<(), String> {
    if value > 0.0 && value < 1.0 { Ok(()) } else { Err(format!("expected a p-value between 0 and 1, found {value}")) }
}

/// Parses a cron expression with a seconds field (6 or 7 fields).
pub(super) fn parse_schedule(expression: &str) -> Result<Schedule, String> {
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
