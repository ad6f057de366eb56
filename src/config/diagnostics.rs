//! Config problems with their place in the file: `file:line:col`, the key path, what was
//! expected; and the [`Locations`] of keys that checks after loading point at. Knows how to turn
//! a byte offset into a line and column, how much of a key or value a problem quotes and how
//! many problems are printed; nothing else.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `tables."bronze.raw_trades".volume.deviation_percent`.
    pub key_path: String,
    pub message: String,
}

impl Problem {
    /// `file:line:col: `key.path`: message`, as every config problem is printed.
    pub fn at<'a>(&'a self, path: &'a Path) -> impl fmt::Display + 'a {
        ProblemAt { path, problem: self }
    }
}

/// Where some keys of a loaded config were written (line and column of their value, or of the
/// key when the key itself names something), by key path. The loader keeps the places of the
/// keys that name catalog objects, so `validate --online` points at them like offline problems.
#[derive(Clone, Debug, Default)]
pub struct Locations {
    places: BTreeMap<String, (usize, usize)>,
}

impl Locations {
    pub(super) fn insert(&mut self, key_path: &str, line: usize, column: usize) {
        self.places.insert(key_path.to_string(), (line, column));
    }

    /// Line and column of `key_path`, when the loader kept it.
    pub fn get(&self, key_path: &str) -> Option<(usize, usize)> {
        self.places.get(key_path).copied()
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file `{}` not found (pass `--config FILE` or set `ICEWATCH_CONFIG`)", path.display())]
    NotFound { path: PathBuf },
    #[error("failed to read config file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A directory, FIFO, device or socket: refused before it is opened (opening a FIFO waits
    /// for a writer; a device may never end).
    #[error("config file `{}` is {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("config file `{}` is larger than the {} MiB limit ({size} bytes)", path.display(), MAX_FILE_BYTES >> 20)]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}", render_problems(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::NotFound { .. }
            | ConfigError::Read { .. }
            | ConfigError::NotAFile { .. }
            | ConfigError::TooLarge { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// Largest config file read. A sensors.toml for thousands of tables is well under 1 MiB; a
/// larger file is the wrong file (or a generator gone wrong), and is refused unread.
pub(crate) const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Problems printed, in file order; the rest are counted. A broken generated file can hold
/// tens of thousands, and the first ones are the ones to fix.
const PRINTED_PROBLEMS: usize = 100;

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out =
        format!("{} problem{} in `{}`", problems.len(), if problems.len() == 1 { "" } else { "s" }, path.display());
    for problem in problems.iter().take(PRINTED_PROBLEMS) {
        out.push_str(&format!("\n  {}", problem.at(path)));
    }
    if let Some(more) = problems.len().checked_sub(PRINTED_PROBLEMS).filter(|more| *more > 0) {
        out.push_str(&format!("\n  and {more} more"));
    }
    out
}

/// Longest key or value from the file that a problem quotes whole, in characters.
const QUOTED_CHARACTERS: usize = 100;

/// `text` (a key or value from the file) as a problem quotes it: whole up to
/// [`QUOTED_CHARACTERS`], else its first characters, `…` and its length, so a 10 MB key makes a
/// problem of one short line.
pub(crate) fn shortened(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(QUOTED_CHARACTERS) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}… ({} characters)", &text[..cut], text.chars().count())),
    }
}

struct ProblemAt<'a> {
    path: &'a Path,
    problem: &'a Problem,
}

impl fmt::Display for ProblemAt<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = self.problem;
        write!(formatter, "{}:{}:{}: ", self.path.display(), problem.line, problem.column)?;
        if !problem.key_path.is_empty() {
            write!(formatter, "`{}`: ", problem.key_path)?;
        }
        formatter.write_str(&problem.message)
    }
}

/// Line and column of any byte offset in one file's text, for every problem and remembered key
/// of that file. Built once, in one pass; a lookup walks at most [`LineIndex::STRIDE`] bytes, so
/// 50,000 problems cost 50,000 short walks, not 50,000 scans from the start of the file (and a
/// file written on one long line costs no more than one with many lines).
pub(crate) struct LineIndex<'t> {
    text: &'t str,
    /// Line and column at byte `STRIDE * i`, for each `i`.
    checkpoints: Vec<(usize, usize)>,
}

impl<'t> LineIndex<'t> {
    const STRIDE: usize = 256;

    pub(crate) fn new(text: &'t str) -> LineIndex<'t> {
        let mut checkpoints = Vec::with_capacity(text.len() / Self::STRIDE + 1);
        let mut position = (1, 1);
        for chunk in text.as_bytes().chunks(Self::STRIDE) {
            checkpoints.push(position);
            position = chunk.iter().fold(position, advance);
        }
        LineIndex { text, checkpoints }
    }

    /// 1-based line and column (in characters, a tab or `\r` counting as one) of byte `offset`;
    /// an offset inside a character is that character's, one past the end is the end.
    pub(crate) fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let checkpoint = (offset / Self::STRIDE).min(self.checkpoints.len().saturating_sub(1));
        let start = checkpoint * Self::STRIDE;
        let position = self.checkpoints.get(checkpoint).copied().unwrap_or((1, 1));
        self.text.as_bytes()[start..offset].iter().fold(position, advance)
    }
}

/// The position after `byte`: a newline starts the next line; any byte that starts a character
/// (not a UTF-8 continuation byte) moves one column on.
fn advance((line, column): (usize, usize), byte: &u8) -> (usize, usize) {
    match byte {
        b'\n' => (line + 1, 1),
        byte if byte & 0b1100_0000 == 0b1000_0000 => (line, column),
        _ => (line, column + 1),
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// `message` (written by a library: toml_edit, a catalog) with every text it quotes in backticks
/// [`shortened`]. The text between the quotes is shortened too: a quoted key may hold a backtick.
pub(crate) fn shortened_quotes(message: &str) -> String {
    message.split('`').map(shortened).collect::<Vec<_>>().join("`")
}

/// The closest of `candidates` to `input`, when it is close enough to be a likely typo.
/// Words that mean a candidate without being spelt like it: (what was written, what is meant).
/// Used only when the meant word is among the candidates.
const SYNONYMS: &[(&str, &str)] = &[
    ("median", "p50"),
    ("avg", "mean"),
    ("average", "mean"),
    ("std", "stddev"),
    ("stdev", "stddev"),
    ("count", "row_count"),
    ("nulls", "null_percent"),
    ("null_rate", "null_percent"),
    ("sqlite", "sql"),
    ("postgres", "sql"),
    ("postgresql", "sql"),
    ("jdbc", "sql"),
    ("http", "rest"),
];

pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // What people write for a name we spell otherwise: no edit distance finds these.
    if let Some((_, meant)) = SYNONYMS.iter().find(|(said, _)| said.eq_ignore_ascii_case(input.trim()))
        && let Some(candidate) = candidates.iter().find(|candidate| *candidate == meant)
    {
        return Some(candidate);
    }
    let close_enough = |candidate: &str| 2.max(candidate.len() / 4);
    // An edit distance is at least the difference in length: a candidate too far off by length
    // alone is not measured (measuring is quadratic, and a key can be 10 MB long).
    let input_length = input.chars().count();
    candidates
        .iter()
        .filter(|candidate| input_length.abs_diff(candidate.chars().count()) <= close_enough(candidate))
        .map(|candidate| (strsim::damerau_levenshtein(input, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= close_enough(candidate) && *distance < candidate.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonyms_are_suggested_where_the_edit_distance_finds_nothing() {
        assert_eq!(did_you_mean("median", &["mean", "p25", "p50", "p75"]), Some("p50"));
        assert_eq!(did_you_mean("sqlite", &["sql", "rest"]), Some("sql"));
        assert_eq!(did_you_mean("Postgres", &["sql", "rest"]), Some("sql"));
        // A synonym whose word is not among the candidates suggests nothing of its own.
        assert_eq!(did_you_mean("median", &["freshness", "volume"]), None);
        assert_eq!(did_you_mean("volumen", &["freshness", "volume"]), Some("volume"));
    }

    /// The scan from the start of the text that [`LineIndex`] replaces, as the reference.
    fn scanned(text: &str, offset: usize) -> (usize, usize) {
        let before = &text[..floor_char_boundary(text, offset.min(text.len()))];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbb = 2\n  é = 3";
        let index = LineIndex::new(text);
        assert_eq!(index.line_column(0), (1, 1));
        assert_eq!(index.line_column(6), (2, 1));
        assert_eq!(index.line_column(11), (2, 6));
        assert_eq!(index.line_column(text.len() - 3), (3, 5));
        assert_eq!(index.line_column(text.len() - 5), (3, 3), "inside `é`: the column of `é`");
        assert_eq!(index.line_column(text.len() + 10), (3, 8), "past the end: the end");
        assert_eq!(LineIndex::new("").line_column(0), (1, 1));
    }

    #[test]
    fn the_index_agrees_with_a_scan_at_every_offset_across_checkpoints() {
        // Long lines, short lines, `\r\n`, tabs and multi-byte characters on both sides of
        // several checkpoints (and a text ending exactly on one).
        let line = "kéy\t= \"☃ value\"\r\n";
        for repeat in [1, 37] {
            let mut text = format!("{}\n{}", line.repeat(repeat), "x".repeat(3 * LineIndex::STRIDE + 5));
            for _ in 0..2 {
                let index = LineIndex::new(&text);
                for offset in 0..=text.len() + 1 {
                    assert_eq!(index.line_column(offset), scanned(&text, offset), "offset {offset} of {repeat}");
                }
                text.truncate(floor_char_boundary(&text, text.len() / LineIndex::STRIDE * LineIndex::STRIDE));
            }
        }
    }

    #[test]
    fn typos_get_suggestions() {
        assert_eq!(did_you_mean("volum", &["freshness", "volume"]), Some("volume"));
        assert_eq!(did_you_mean("warn_afer", &["warn_after", "critical_after"]), Some("warn_after"));
        assert_eq!(did_you_mean("zzz", &["freshness", "volume"]), None);
        assert_eq!(did_you_mean("volumexx", &["volume"]), Some("volume"), "two longer is still close");
        assert_eq!(did_you_mean(&"v".repeat(10_000_000), &["volume"]), None);
    }

    #[test]
    fn long_keys_and_values_are_quoted_shortened() {
        assert_eq!(shortened("bronze.raw_trades"), "bronze.raw_trades");
        let exactly = "é".repeat(QUOTED_CHARACTERS);
        assert_eq!(shortened(&exactly), exactly);
        let long = format!("{exactly}☃{}", "x".repeat(10_000_000));
        assert_eq!(shortened(&long), format!("{exactly}… (10000101 characters)"));
        assert_eq!(
            shortened_quotes(&format!("duplicate key `{long}` in table `a.b`")),
            format!("duplicate key `{exactly}… (10000101 characters)` in table `a.b`")
        );
    }

    #[test]
    fn the_first_hundred_problems_are_printed_and_the_rest_counted() {
        let problem = |line| Problem { line, column: 1, key_path: String::new(), message: "bad".to_string() };
        let path = Path::new("sensors.toml");
        let rendered = render_problems(path, &(1..=250).map(problem).collect::<Vec<_>>());
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 1 + PRINTED_PROBLEMS + 1, "{rendered}");
        assert_eq!(lines[0], "250 problems in `sensors.toml`");
        assert_eq!(lines[PRINTED_PROBLEMS], "  sensors.toml:100:1: bad");
        assert_eq!(lines[PRINTED_PROBLEMS + 1], "  and 150 more");
        let exactly = render_problems(path, &(1..=PRINTED_PROBLEMS).map(problem).collect::<Vec<_>>());
        assert!(!exactly.contains("more"), "{exactly}");
    }
}
