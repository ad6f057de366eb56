//! How errors read: one line that names what failed and the cause a person can act on. Error
//! types keep their sources for logs; these functions decide what a result message shows.

use std::error::Error;

/// `error: cause: cause` on one line, for result messages. Stops once the message already says
/// the innermost cause (error types that quote their root cause, like the catalog's, keep the
/// driver's error as `source()` for logs without repeating it here).
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        if message.contains(&root_cause(cause)) {
            break;
        }
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(text.lines().next().unwrap_or_default());
        }
        source = cause.source();
    }
    message
}

/// The innermost cause's message, on one line: what a person can act on. For an iceberg error
/// without a source that is its message, without the `Kind =>` prefix of its `Display`.
pub fn root_cause(error: &(dyn Error + 'static)) -> String {
    let mut current: &(dyn Error + 'static) = error;
    while let Some(source) = current.source() {
        current = source;
    }
    let iceberg = current
        .downcast_ref::<iceberg::Error>()
        .or_else(|| current.downcast_ref::<std::sync::Arc<iceberg::Error>>().map(|error| error.as_ref()));
    let message = match iceberg {
        Some(iceberg_error) if iceberg_error.source().is_none() => iceberg_error.message().to_string(),
        _ => current.to_string(),
    };
    message.lines().next().unwrap_or_default().trim().to_string()
}

/// The operating-system error somewhere in `error`'s causes (too many open files, permission
/// denied, connection reset), if any.
pub fn os_error<'e>(error: &'e (dyn Error + 'static)) -> Option<&'e std::io::Error> {
    let mut current: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(cause) = current {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to load table `t`: {reason}")]
    struct Quoting {
        reason: String,
        #[source]
        source: std::sync::Arc<iceberg::Error>,
    }

    #[test]
    fn a_message_that_quotes_its_root_cause_is_not_repeated() {
        let driver = iceberg::Error::new(iceberg::ErrorKind::DataInvalid, "bad metadata file");
        let error = Quoting { reason: root_cause(&driver), source: std::sync::Arc::new(driver) };
        assert_eq!(error_chain(&error), "failed to load table `t`: bad metadata file");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("failed to scan table `t`")]
    struct Wrapping {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn causes_not_yet_said_are_appended_on_one_line() {
        let error = Wrapping { source: std::io::Error::other("disk full\nmore detail") };
        assert_eq!(error_chain(&error), "failed to scan table `t`: disk full");
    }
}
