//! Single-value types of the config file: durations, table names, sensor kinds, statistics,
//! secrets. Each parses from text and says what it expected; none knows where it sits in a file.

use std::fmt;
use std::time::Duration;

use super::diagnostics::shortened;

/// A string that may hold a credential: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The real value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value with any password in a URI replaced by `***` (safe for messages).
    pub fn redacted(&self) -> String {
        crate::redact::redact_uri(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Secret({})", self.redacted())
    }
}

/// Control characters and the invisible bidi / zero-width formatting characters that can make
/// printed text read differently from what it is ("Trojan Source").
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A kind of sensor, by the name it has everywhere (the config section, the `sensor` label, the
/// history series). The kinds a build has are the ones `sensors::registry()` lists; a kind added
/// later defines its own constant in its module (`SensorKind::new("health")`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SensorKind(&'static str);

impl SensorKind {
    pub const FRESHNESS: SensorKind = SensorKind("freshness");
    pub const VOLUME: SensorKind = SensorKind("volume");
    pub const SCHEMA: SensorKind = SensorKind("schema");
    pub const DISTRIBUTION: SensorKind = SensorKind("distribution");
    /// The pipeline stages derived from results and OpenLineage events (not a table section).
    pub const LINEAGE: SensorKind = SensorKind("lineage");

    pub const fn new(name: &'static str) -> SensorKind {
        SensorKind(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// Reports list a table's results kind by kind: the first kinds in the order they were built
/// (the cheap metadata ones first), kinds added later after them by name.
impl Ord for SensorKind {
    fn cmp(&self, other: &SensorKind) -> std::cmp::Ordering {
        const FIRST: [SensorKind; 5] = [
            SensorKind::FRESHNESS,
            SensorKind::VOLUME,
            SensorKind::SCHEMA,
            SensorKind::DISTRIBUTION,
            SensorKind::LINEAGE,
        ];
        let rank = |kind: &SensorKind| FIRST.iter().position(|first| first == kind).unwrap_or(FIRST.len());
        rank(self).cmp(&rank(other)).then_with(|| self.0.cmp(other.0))
    }
}

impl PartialOrd for SensorKind {
    fn partial_cmp(&self, other: &SensorKind) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl serde::Serialize for SensorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl fmt::Display for SensorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A monitored table's identifier: one or more namespace levels and a table name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub namespace: Vec<String>,
    pub name: String,
    /// The name as written in the config (`bronze.raw_trades`): the `table` label.
    full: String,
}

impl TableName {
    /// Parses `namespace.table` (namespaces may be nested: `a.b.table`). A part may not begin or
    /// end with whitespace: trimmed silently, `"a.b "` would be a second name for `a.b`.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() < 2 {
            return Err("expected `namespace.table`".to_string());
        }
        if parts.iter().any(|part| part.trim().is_empty()) {
            return Err("expected `namespace.table` with no empty part".to_string());
        }
        if text.chars().any(is_invisible) {
            return Err("a table name cannot contain control or invisible formatting characters".to_string());
        }
        let normalized = TableName::normalized(text);
        if normalized != text {
            return Err(format!(
                "a namespace or table name cannot begin or end with whitespace (did you mean `{}`?)",
                shortened(&normalized)
            ));
        }
        let (name, namespace) = parts.split_last().expect("at least two parts");
        Ok(TableName {
            namespace: namespace.iter().map(|part| part.to_string()).collect(),
            name: name.to_string(),
            full: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// `text` with whitespace trimmed off each part: the same for two spellings of one table
    /// (`a.b` and `a. b `), and the name itself for a valid one.
    pub(crate) fn normalized(text: &str) -> String {
        text.split('.').map(str::trim).collect::<Vec<_>>().join(".")
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.full)
    }
}

/// Which rows the distribution sensor profiles for a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only the data files the snapshot added (incremental; the default).
    Added,
    /// The whole table as of the snapshot.
    Table,
}

/// A column statistic the distribution sensor can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    RowCount,
    Mean,
    Stddev,
    Min,
    Max,
    Sum,
    NullPercent,
    NullCount,
    ZeroPercent,
    NanPercent,
    DistinctCount,
    P01,
    P05,
    P25,
    P50,
    P75,
    P95,
    P99,
    MinLength,
    MaxLength,
    MeanLength,
    EmptyPercent,
}

impl Statistic {
    pub const ALL: [Statistic; 22] = [
        Statistic::RowCount,
        Statistic::Mean,
        Statistic::Stddev,
        Statistic::Min,
        Statistic::Max,
        Statistic::Sum,
        Statistic::NullPercent,
        Statistic::NullCount,
        Statistic::ZeroPercent,
        Statistic::NanPercent,
        Statistic::DistinctCount,
        Statistic::P01,
        Statistic::P05,
        Statistic::P25,
        Statistic::P50,
        Statistic::P75,
        Statistic::P95,
        Statistic::P99,
        Statistic::MinLength,
        Statistic::MaxLength,
        Statistic::MeanLength,
        Statistic::EmptyPercent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::RowCount => "row_count",
            Statistic::Mean => "mean",
            Statistic::Stddev => "stddev",
            Statistic::Min => "min",
            Statistic::Max => "max",
            Statistic::Sum => "sum",
            Statistic::NullPercent => "null_percent",
            Statistic::NullCount => "null_count",
            Statistic::ZeroPercent => "zero_percent",
            Statistic::NanPercent => "nan_percent",
            Statistic::DistinctCount => "distinct_count",
            Statistic::P01 => "p01",
            Statistic::P05 => "p05",
            Statistic::P25 => "p25",
            Statistic::P50 => "p50",
            Statistic::P75 => "p75",
            Statistic::P95 => "p95",
            Statistic::P99 => "p99",
            Statistic::MinLength => "min_length",
            Statistic::MaxLength => "max_length",
            Statistic::MeanLength => "mean_length",
            Statistic::EmptyPercent => "empty_percent",
        }
    }

    pub fn parse(text: &str) -> Option<Statistic> {
        Statistic::ALL.into_iter().find(|statistic| statistic.as_str() == text)
    }

    /// Quantile level of `p01`..`p99`.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Statistic::P01 => Some(0.01),
            Statistic::P05 => Some(0.05),
            Statistic::P25 => Some(0.25),
            Statistic::P50 => Some(0.50),
            Statistic::P75 => Some(0.75),
            Statistic::P95 => Some(0.95),
            Statistic::P99 => Some(0.99),
            _ => None,
        }
    }

    /// Statistics defined only for string columns.
    pub fn is_string_only(self) -> bool {
        matches!(self, Statistic::MinLength | Statistic::MaxLength | Statistic::MeanLength | Statistic::EmptyPercent)
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Parses durations such as `90s`, `2m`, `1h30m`, `7d`, `2w`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration such as `30s`, `15m`, `2h`, `7d` or `1h30m`";
    let text = text.trim();
    if text.is_empty() {
        return Err(EXPECTED.to_string());
    }
    let mut total_ms: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(EXPECTED.to_string());
        }
        let number: u128 = rest[..digits].parse().map_err(|_| EXPECTED.to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => return Err(format!("{EXPECTED} (the number needs a unit)")),
            _ => return Err(EXPECTED.to_string()),
        };
        rest = &rest[unit_len..];
        total_ms =
            total_ms.checked_add(number.saturating_mul(unit_ms)).ok_or_else(|| "duration is too long".to_string())?;
    }
    if total_ms > u64::MAX as u128 / 2 {
        return Err("duration is too long".to_string());
    }
    Ok(Duration::from_millis(total_ms as u64))
}

/// Formats a duration the way the config writes them (`1h30m`, `45s`, `7d`).
pub fn duration_to_string(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("-5m").is_err());
        assert_eq!(duration_to_string(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration_to_string(Duration::from_secs(7 * 86400)), "7d");
    }

    #[test]
    fn secrets_print_redacted() {
        assert!(!format!("{:?}", Secret::new("postgres://a:b@c/d")).contains(":b@"));
    }

    #[test]
    fn table_names_split_namespace() {
        let name = TableName::parse("bronze.raw_trades").unwrap();
        assert_eq!(name.namespace, vec!["bronze"]);
        assert_eq!(name.name, "raw_trades");
        let nested = TableName::parse("a.b.c").unwrap();
        assert_eq!(nested.namespace, vec!["a", "b"]);
        assert!(TableName::parse("raw_trades").is_err());
        assert!(TableName::parse("bronze.").is_err());
        assert!(TableName::parse("bronze.evil\u{202e}gnp").is_err());
        assert!(TableName::parse("münze.händel_☃").is_ok());
        assert!(TableName::parse("my ns.my table").is_ok(), "whitespace inside a part is part of the name");
    }

    #[test]
    fn whitespace_around_a_part_is_refused_with_the_name_meant() {
        for written in ["a.b ", " a.b", "a .b", "a. b", "a.b\u{a0}", "a.\u{3000}b"] {
            let message = TableName::parse(written).expect_err(written);
            assert_eq!(
                message, "a namespace or table name cannot begin or end with whitespace (did you mean `a.b`?)",
                "{written:?}"
            );
        }
        assert_eq!(TableName::normalized(" x . y.z\t"), "x.y.z");
        assert_eq!(TableName::normalized("bronze.raw_trades"), "bronze.raw_trades");
    }
}
