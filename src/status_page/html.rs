//! HTML text helpers for the status page: escaping of every value that comes from tables,
//! config or history, path-segment encoding for links, and number/time formatting. It builds
//! no page structure (that is `render`'s) and never trusts its input.

use std::fmt::Write as _;

/// Escapes `text` for use in element content and in double- or single-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Percent-encodes `text` as one URL path segment (RFC 3986 unreserved characters pass).
pub fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// The link to a table's page.
pub fn table_href(table: &str) -> String {
    format!("/tables/{}", path_segment(table))
}

/// A number for display: integers with thousands separators, others with a few decimals.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return "–".to_string();
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        let digits = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        return if value < 0.0 { format!("-{grouped}") } else { grouped };
    }
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        number(value.round())
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A value in the unit of its metric (`*_seconds` as a duration).
pub fn value_in_unit(metric: &str, value: f64) -> String {
    if metric.ends_with("seconds") {
        crate::sensors::human_seconds(value)
    } else if metric.ends_with("percent") {
        format!("{}%", number(value))
    } else {
        number(value)
    }
}

/// Milliseconds since the epoch as `2024-05-01 13:45 UTC`.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "?".to_string())
}

/// Milliseconds since the epoch as `05-01 13:45` (chart axes).
pub fn short_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.format("%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("bronze.raw_trades"), "bronze.raw_trades");
    }

    #[test]
    fn path_segment_encodes_everything_but_unreserved() {
        assert_eq!(path_segment("bronze.raw_trades"), "bronze.raw_trades");
        assert_eq!(path_segment("a/b c<\"é"), "a%2Fb%20c%3C%22%C3%A9");
    }

    #[test]
    fn numbers_are_grouped_and_bounded() {
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(-1000.0), "-1,000");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(8.12), "8.12");
        assert_eq!(number(5.5), "5.5");
        assert_eq!(number(1234.56), "1,235");
        assert_eq!(number(f64::NAN), "–");
        assert_eq!(value_in_unit("freshness_seconds", 125.0), "2m");
    }
}
