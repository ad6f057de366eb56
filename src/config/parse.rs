//! The way in: file text → spanned TOML document → the sections (`sections/`, read with
//! `reader.rs`) → the checks across them (`validate.rs`) → a [`Config`], or every problem found,
//! in file order. Also the problem of a file that is not UTF-8.

use std::path::Path;

use toml_edit::ImDocument;

use super::diagnostics::{LineIndex, Locations, shortened_quotes};
use super::reader::Reader;
use super::{Config, ConfigError, Problem};

/// The problem of a file that is not UTF-8, at its first bad byte.
pub(super) fn not_utf8(bytes: &[u8], error: &std::str::Utf8Error, path: &Path) -> ConfigError {
    let valid = String::from_utf8_lossy(&bytes[..error.valid_up_to()]);
    let (line, column) = LineIndex::new(&valid).line_column(valid.len());
    let problem = Problem {
        line,
        column,
        key_path: String::new(),
        message: "the file is not valid UTF-8 (save it as UTF-8)".to_string(),
    };
    ConfigError::Invalid { path: path.to_path_buf(), problems: vec![problem] }
}

pub(super) fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    parse_with_locations(text, path, env).map(|(config, _)| config)
}

/// [`parse`], also returning where the keys that name catalog objects were written.
pub(super) fn parse_with_locations(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Locations), ConfigError> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut reader = Reader::new(text, base_dir, env);
    let config = match ImDocument::parse(text.to_string()) {
        Ok(document) => reader.config(document.as_table(), path),
        Err(error) => {
            // toml_edit puts "expected ..." on its own line; a problem is one line.
            let message =
                error.message().lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join("; ");
            let message = shortened_quotes(&message);
            reader.problem(error.span(), "", format!("invalid TOML: {message}"));
            None
        }
    };
    let (problems, locations) = reader.finish();
    match config {
        Some(config) if problems.is_empty() => Ok((config, locations)),
        _ => Err(ConfigError::Invalid { path: path.to_path_buf(), problems }),
    }
}
