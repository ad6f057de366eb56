//! The way in: the file (a regular one, of bounded size) → its text → spanned TOML document →
//! the sections (`sections/`, read with `reader.rs`) → the checks across them (`validate.rs`) →
//! a [`Config`], or every problem found, in file order. Also the problem of a file that is not
//! UTF-8.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use toml_edit::ImDocument;

use super::diagnostics::{LineIndex, Locations, MAX_FILE_BYTES, shortened_quotes};
use super::reader::Reader;
use super::{Config, ConfigError, Problem};

/// The bytes of the config file at `path`, which must be a regular file (or a link to one) of
/// at most [`MAX_FILE_BYTES`]. Its metadata is checked before it is opened, and the open file's
/// again: the path may have been replaced in between, and the open does not block on a FIFO.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let failed = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound { path: path.to_path_buf() },
        _ => ConfigError::Read { path: path.to_path_buf(), source },
    };
    check_regular_file(path, &std::fs::metadata(path).map_err(failed)?)?;
    let file = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(failed)?;
    let metadata = file.metadata().map_err(failed)?;
    check_regular_file(path, &metadata)?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(failed)?;
    match bytes.len() as u64 {
        // It grew while it was read.
        size if size > MAX_FILE_BYTES => Err(ConfigError::TooLarge { path: path.to_path_buf(), size }),
        _ => Ok(bytes),
    }
}

fn check_regular_file(path: &Path, metadata: &Metadata) -> Result<(), ConfigError> {
    let file_type = metadata.file_type();
    let kind = if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("something other than a file")
    };
    if let Some(kind) = kind {
        return Err(ConfigError::NotAFile { path: path.to_path_buf(), kind });
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge { path: path.to_path_buf(), size: metadata.len() });
    }
    Ok(())
}

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
