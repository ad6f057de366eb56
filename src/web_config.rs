//! Optional protection of the HTTP endpoints, configured under `[server]` like the Prometheus
//! exporters' web config: basic auth checked against bcrypt hashes, and TLS through rustls. It
//! wraps whatever router `server` builds and knows no routes, metrics or sensors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::config::{PasswordHash, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("failed to read the TLS certificate `{path}` (server.tls_cert_file)")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in `{path}` (server.tls_cert_file)")]
    NoCertificate { path: PathBuf },
    #[error("failed to read the TLS private key `{path}` (server.tls_key_file)")]
    PrivateKey {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the TLS certificate and key do not make a usable server configuration")]
    Tls(#[source] rustls::Error),
}

// ---------------------------------------------------------------------------------------------
// Basic auth.

/// The users allowed in, and a cache of passwords already verified (bcrypt is slow on purpose:
/// a scrape every few seconds must not pay it each time).
pub struct BasicAuth {
    users: BTreeMap<String, PasswordHash>,
    verified: Mutex<HashMap<String, String>>,
}

impl BasicAuth {
    /// `None` when no user is configured: the endpoints are open.
    pub fn new(users: &BTreeMap<String, PasswordHash>) -> Option<Arc<BasicAuth>> {
        (!users.is_empty()).then(|| Arc::new(BasicAuth { users: users.clone(), verified: Mutex::new(HashMap::new()) }))
    }

    /// Whether the `Authorization` header names a configured user with the right password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else { return false };
        if let Ok(verified) = self.verified.lock()
            && let Some(known) = verified.get(&user)
            && constant_time_eq(known.as_bytes(), password.as_bytes())
        {
            return true;
        }
        // An unknown user is checked against some configured hash anyway, so the answer takes
        // as long as for a known one and does not tell which user names exist.
        let known = self.users.get(&user);
        let Some(hash) = known.or_else(|| self.users.values().next()).map(|hash| hash.0.clone()) else { return false };
        let candidate = password.clone();
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(candidate, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        let allowed = known.is_some() && matches;
        if allowed && let Ok(mut verified) = self.verified.lock() {
            verified.insert(user, password);
        }
        allowed
    }
}

/// Axum middleware: 401 with a `WWW-Authenticate` challenge unless [`BasicAuth::allows`].
pub async fn require_basic_auth(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    if auth.allows(request.headers().get(header::AUTHORIZATION)).await {
        return next.run(request).await;
    }
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"icewatch\"")], "unauthorized\n")
        .into_response()
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// TLS.

/// Reads the certificate chain and key and builds the rustls server configuration (HTTP/1.1).
pub fn tls_acceptor(config: &ServerTlsConfig) -> Result<TlsAcceptor, WebConfigError> {
    let certificates = read_certificates(&config.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|source| WebConfigError::PrivateKey { path: config.key_file.clone(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(WebConfigError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(WebConfigError::Tls)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|source| WebConfigError::Certificate { path: path.to_path_buf(), source })?;
    if certificates.is_empty() {
        return Err(WebConfigError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_for(user: &str, password: &str) -> Arc<BasicAuth> {
        let hash = bcrypt::hash(password, 4).unwrap();
        BasicAuth::new(&BTreeMap::from([(user.to_string(), PasswordHash(hash))])).unwrap()
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[tokio::test]
    async fn only_the_right_user_and_password_get_in() {
        let auth = auth_for("prometheus", "pa:ss");
        assert!(auth.allows(Some(&basic("prometheus", "pa:ss"))).await);
        // Twice: the second answer comes from the cache and must agree.
        assert!(auth.allows(Some(&basic("prometheus", "pa:ss"))).await);
        assert!(!auth.allows(Some(&basic("prometheus", "wrong"))).await);
        assert!(!auth.allows(Some(&basic("someone", "pa:ss"))).await);
        assert!(!auth.allows(None).await);
        assert!(!auth.allows(Some(&HeaderValue::from_static("Bearer abc"))).await);
        assert!(!auth.allows(Some(&HeaderValue::from_static("Basic %%%"))).await);
    }

    #[test]
    fn no_users_means_no_auth() {
        assert!(BasicAuth::new(&BTreeMap::new()).is_none());
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
