//! Pushes a Prometheus text-format (0.0.4) body to a Pushgateway group and deletes that group,
//! with bounded retries. It does not build the body (the metrics registry does) and does not
//! decide when to push (the service does). It never logs or displays the password.
//!
//! Pushgateway 1.5 semantics this relies on: `PUT /metrics/job/<job>{/<label>/<value>}` replaces
//! the whole group, `DELETE` on the same path removes it; a label value that is empty or would not
//! survive as one URL path segment (here: anything beyond unreserved URL characters and `:`, and `.`/`..`)
//! is sent as URL-safe base64 under `<label>@base64`. Bodies must be the 0.0.4 text format
//! (OpenMetrics would be parsed as 0.0.4 and counters would lose their type) without timestamps.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};

/// The content type of the Prometheus text exposition format, version 0.0.4.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Backoff between retries doubles from `initial_backoff` up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How much of an error response body is kept for the error message.
const MAX_ERROR_BODY_BYTES: usize = 1024;

#[derive(Clone)]
pub struct PushgatewayOptions {
    /// `http(s)://host:port[/prefix]`, without credentials, query or fragment.
    pub url: String,
    /// The `job` grouping label.
    pub job: String,
    /// Further grouping labels (e.g. `instance`), in URL order. Values may be anything, including
    /// empty or containing `/`.
    pub grouping: Vec<(String, String)>,
    /// Per attempt, connecting included.
    pub timeout: Duration,
    /// Attempts after the first one, for connection errors, timeouts and 5xx answers.
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one (at most 30 s).
    pub initial_backoff: Duration,
    /// User and password for HTTP basic authentication.
    pub basic_auth: Option<(String, String)>,
    /// PEM file with the certificate(s) to trust for an `https` gateway, besides the built-in roots.
    pub ca_certificate: Option<PathBuf>,
    /// Accept any server certificate. For tests and emergencies only.
    pub insecure_skip_verify: bool,
}

impl PushgatewayOptions {
    /// Options with defaults: no extra grouping labels, 10 s timeout, 3 retries from 500 ms.
    pub fn new(url: impl Into<String>, job: impl Into<String>) -> PushgatewayOptions {
        PushgatewayOptions {
            url: url.into(),
            job: job.into(),
            grouping: Vec::new(),
            timeout: Duration::from_secs(10),
            retries: 3,
            initial_backoff: Duration::from_millis(500),
            basic_auth: None,
            ca_certificate: None,
            insecure_skip_verify: false,
        }
    }
}

impl fmt::Debug for PushgatewayOptions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PushgatewayOptions")
            .field("url", &self.url)
            .field("job", &self.job)
            .field("grouping", &self.grouping)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("basic_auth", &self.basic_auth.as_ref().map(|(user, _)| (user, "<redacted>")))
            .field("ca_certificate", &self.ca_certificate)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid pushgateway url: {reason}")]
    InvalidUrl { reason: String },
    #[error("invalid pushgateway grouping label `{label}`: {reason}")]
    InvalidGrouping { label: String, reason: &'static str },
    #[error("failed to load the pushgateway ca certificate `{}`", path.display())]
    CaCertificate {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to build the pushgateway http client")]
    Client(#[source] reqwest::Error),
    /// The gateway answered, and not with 2xx or 5xx: retrying would not help.
    #[error("pushgateway rejected {method} `{url}` with {status}: {body}")]
    Rejected { method: Method, url: String, status: StatusCode, body: String },
    /// Every attempt failed to connect, timed out or got a 5xx answer.
    #[error("pushgateway {method} `{url}` failed after {attempts} attempts")]
    Unavailable {
        method: Method,
        url: String,
        attempts: u32,
        #[source]
        last: AttemptError,
    },
}

/// Why one attempt failed in a way worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Transport(reqwest::Error),
    #[error("server answered {status}: {body}")]
    Server { status: StatusCode, body: String },
}

/// A client for one Pushgateway group (job plus grouping labels).
pub struct PushgatewayClient {
    http: reqwest::Client,
    /// The group's URL; it never holds credentials.
    group_url: Url,
    basic_auth: Option<(String, String)>,
    retries: u32,
    initial_backoff: Duration,
}

impl fmt::Debug for PushgatewayClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PushgatewayClient")
            .field("group_url", &self.group_url.as_str())
            .field("basic_auth_user", &self.basic_auth.as_ref().map(|(user, _)| user))
            .field("retries", &self.retries)
            .field("initial_backoff", &self.initial_backoff)
            .finish_non_exhaustive()
    }
}

impl PushgatewayClient {
    /// Validates the options and builds the HTTP client (reading `ca_certificate`, if any).
    pub fn new(options: PushgatewayOptions) -> Result<PushgatewayClient, PushError> {
        let group_url = group_url(&options.url, &options.job, &options.grouping)?;
        if options.basic_auth.is_some() && group_url.scheme() == "http" {
            tracing::warn!(url = %group_url, "pushgateway basic auth over plain http sends the password unencrypted");
        }
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            // A redirect is a misconfigured URL: report it instead of following it with the body.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("icewatch/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &options.ca_certificate {
            let certificate_error = |source: Box<dyn std::error::Error + Send + Sync>| PushError::CaCertificate {
                path: path.clone(),
                source,
            };
            let pem = std::fs::read(path).map_err(|error| certificate_error(error.into()))?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| certificate_error(error.into()))?;
            if certificates.is_empty() {
                return Err(certificate_error("no PEM certificate in the file".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if options.insecure_skip_verify {
            tracing::warn!(url = %group_url, "pushgateway tls certificate verification is disabled");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(PushError::Client)?;
        Ok(PushgatewayClient {
            http,
            group_url,
            basic_auth: options.basic_auth,
            retries: options.retries,
            initial_backoff: options.initial_backoff,
        })
    }

    /// The group's URL (no credentials), for logs.
    pub fn group_url(&self) -> &str {
        self.group_url.as_str()
    }

    /// Replaces the group's metrics with `body` (Prometheus text format 0.0.4, no timestamps).
    pub async fn push(&self, body: &str) -> Result<(), PushError> {
        self.send(Method::PUT, Some(body)).await
    }

    /// Deletes the group and all its metrics.
    pub async fn delete(&self) -> Result<(), PushError> {
        self.send(Method::DELETE, None).await
    }

    async fn send(&self, method: Method, body: Option<&str>) -> Result<(), PushError> {
        let attempts = self.retries.saturating_add(1);
        let mut backoff = self.initial_backoff;
        let mut attempt = 1;
        loop {
            let mut request = self.http.request(method.clone(), self.group_url.clone());
            if let Some(body) = body {
                request = request.header(CONTENT_TYPE, TEXT_FORMAT).body(body.to_owned());
            }
            if let Some((user, password)) = &self.basic_auth {
                request = request.basic_auth(user, Some(password));
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let body = error_body(response).await;
                    if !status.is_server_error() {
                        return Err(PushError::Rejected { method, url: self.group_url.to_string(), status, body });
                    }
                    AttemptError::Server { status, body }
                }
                // The URL is in our own error already.
                Err(error) => AttemptError::Transport(error.without_url()),
            };
            let worth_retrying = !matches!(&failure, AttemptError::Transport(error) if error.is_builder());
            if attempt >= attempts || !worth_retrying {
                return Err(PushError::Unavailable {
                    method,
                    url: self.group_url.to_string(),
                    attempts: attempt,
                    last: failure,
                });
            }
            tracing::warn!(
                url = %self.group_url, %method, attempt, error = %crate::sensors::error_chain(&failure),
                retry_in = ?backoff, "pushgateway request failed; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(MAX_BACKOFF.max(self.initial_backoff));
            attempt += 1;
        }
    }
}

/// `<url>/metrics/job/<job>{/<label>/<value>}`, validated.
fn group_url(url: &str, job: &str, grouping: &[(String, String)]) -> Result<Url, PushError> {
    let invalid = |reason: String| PushError::InvalidUrl { reason };
    // The text is not echoed back: it might hold credentials.
    let mut group_url = Url::parse(url).map_err(|error| invalid(format!("cannot parse it as a url ({error})")))?;
    if !matches!(group_url.scheme(), "http" | "https") {
        return Err(invalid(format!("scheme `{}` is not `http` or `https`", group_url.scheme())));
    }
    if !group_url.username().is_empty() || group_url.password().is_some() {
        return Err(invalid("it holds credentials: set `basic_auth` instead".into()));
    }
    if group_url.query().is_some() || group_url.fragment().is_some() {
        return Err(invalid(format!("`{group_url}` has a query or fragment")));
    }
    if job.is_empty() {
        return Err(PushError::InvalidGrouping { label: "job".into(), reason: "the job must not be empty" });
    }
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in grouping {
        let reason = if !is_label_name(name) {
            Some("not a valid label name")
        } else if name.starts_with("__") {
            Some("names starting with `__` are reserved")
        } else if name == "job" {
            Some("the job is set by `job`, not as a grouping label")
        } else if seen.contains(&name.as_str()) {
            Some("given twice")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(PushError::InvalidGrouping { label: name.clone(), reason });
        }
        seen.push(name);
    }
    {
        let mut segments = group_url.path_segments_mut().map_err(|()| invalid("it cannot be a base url".into()))?;
        segments.pop_if_empty().push("metrics");
        for (name, value) in
            std::iter::once(("job", job)).chain(grouping.iter().map(|(name, value)| (name.as_str(), value.as_str())))
        {
            if needs_base64(value) {
                // Pushgateway spells the empty value `=`.
                let encoded = if value.is_empty() { "=".to_string() } else { URL_SAFE.encode(value) };
                segments.push(&format!("{name}@base64")).push(&encoded);
            } else {
                segments.push(name).push(value);
            }
        }
    }
    Ok(group_url)
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `value` must travel base64-encoded to arrive intact as one path segment.
fn needs_base64(value: &str) -> bool {
    value.is_empty()
        || value == "."
        || value == ".."
        || !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':'))
}

/// The start of an error response's body, trimmed, for the error message.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY_BYTES - bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() >= room {
            truncated = chunk.len() > room;
            break;
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    match (text.is_empty(), truncated) {
        (true, _) => "(empty body)".to_string(),
        (false, false) => text.to_string(),
        (false, true) => format!("{text}…"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grouping(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn group_url_encodes_values_that_are_not_plain_path_segments() {
        let url = group_url(
            "http://127.0.0.1:9091",
            "icewatch",
            &grouping(&[("instance", "host-1:9100"), ("path", "/var/tmp"), ("empty", ""), ("dots", "..")]),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9091/metrics/job/icewatch/instance/host-1:9100\
             /path@base64/L3Zhci90bXA=/empty@base64/=/dots@base64/Li4="
        );
        let url = group_url("https://gw.example/prefix/", "a/b", &grouping(&[("instance", "host_1.x")])).unwrap();
        assert_eq!(url.as_str(), "https://gw.example/prefix/metrics/job@base64/YS9i/instance/host_1.x");
    }

    #[test]
    fn group_url_rejects_bad_options_without_echoing_credentials() {
        let error = group_url("http://user:hunter2@gw:9091", "j", &[]).unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(matches!(error, PushError::InvalidUrl { .. }));
        assert!(matches!(group_url("ftp://gw", "j", &[]), Err(PushError::InvalidUrl { .. })));
        assert!(matches!(group_url("gw:9091", "j", &[]), Err(PushError::InvalidUrl { .. })));
        assert!(matches!(group_url("http://gw/?x=1", "j", &[]), Err(PushError::InvalidUrl { .. })));
        for (label, bad) in [
            ("job", grouping(&[])),
            ("job", grouping(&[("job", "x")])),
            ("1x", grouping(&[("1x", "x")])),
            ("__name__", grouping(&[("__name__", "x")])),
            ("a", grouping(&[("a", "x"), ("a", "y")])),
        ] {
            let job = if bad.is_empty() { "" } else { "j" };
            match group_url("http://gw", job, &bad) {
                Err(PushError::InvalidGrouping { label: got, .. }) => assert_eq!(got, label),
                other => panic!("expected invalid grouping `{label}`, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let mut options = PushgatewayOptions::new("http://gw:9091", "icewatch");
        options.basic_auth = Some(("icewatch".into(), "hunter2".into()));
        assert!(!format!("{options:?}").contains("hunter2"));
        let client = PushgatewayClient::new(options).unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
