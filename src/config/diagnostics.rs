//! Config problems with their place in the file: `file:line:col`, the key path, what was
//! expected; and the [`Locations`] of keys that checks after loading point at. Knows how to turn
//! a byte offset into a line and column; nothing else.

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
    pub(super) fn get(&self, key_path: &str) -> Option<(usize, usize)> {
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
    #[error("{}", render_problems(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::NotFound { .. } | ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out =
        format!("{} problem{} in `{}`", problems.len(), if problems.len() == 1 { "" } else { "s" }, path.display());
    for problem in problems {
        out.push_str(&format!("\n  {}", problem.at(path)));
    }
    out
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

/// The closest of `candidates` to `input`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(input, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4) && *distance < candidate.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
