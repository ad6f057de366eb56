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

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
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

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbb = 2\n  é = 3";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
        assert_eq!(line_column(text, text.len() - 3), (3, 5));
    }

    #[test]
    fn typos_get_suggestions() {
        assert_eq!(did_you_mean("volum", &["freshness", "volume"]), Some("volume"));
        assert_eq!(did_you_mean("warn_afer", &["warn_after", "critical_after"]), Some("warn_after"));
        assert_eq!(did_you_mean("zzz", &["freshness", "volume"]), None);
    }
}
