//! Optional protection of the HTTP endpoints, configured under `[server]` like the Prometheus
//! exporters' web config: basic auth checked against bcrypt hashes, and TLS through rustls. It
//! wraps whatever router `server` builds and knows no routes or sensors; the one metric it
//! touches (requests turned away while bcrypt is saturated) is a counter it is handed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use prometheus::IntCounter;
use ring::hmac;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::config::{PasswordHash, ServerTlsConfig};

/// The highest bcrypt cost accepted. Each step doubles the work of one check: cost 14 is about
/// a second of one core, and anyone who can reach the port can make the server pay it.
pub const MAX_BCRYPT_COST: u32 = 14;
/// bcrypt checks that run at once (each holds a core for its whole duration). Passwords already
/// verified are answered from the cache and never wait for one.
const CONCURRENT_VERIFICATIONS: usize = 2;
/// Requests that may wait for one of those slots; any more are answered 503 at once, so a flood
/// of wrong passwords queues neither connections nor CPU work.
const VERIFICATION_QUEUE: usize = 8;

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
    #[error(
        "the bcrypt hash of user `{user}` has cost {cost}; at most {MAX_BCRYPT_COST} is accepted, since every check with a wrong password costs the server that much work (server.basic_auth_users.{user}); hash the password again, e.g. `htpasswd -nBC 10 {user}`"
    )]
    BcryptCost { user: String, cost: u32 },
    #[error("the hash of user `{user}` is not a bcrypt hash (server.basic_auth_users.{user})")]
    NotBcrypt {
        user: String,
        #[source]
        source: bcrypt::BcryptError,
    },
    #[error("no randomness for the key of the credentials cache")]
    Randomness,
}

// ---------------------------------------------------------------------------------------------
// Basic auth.

/// The users allowed in, a cache of the credentials already verified (bcrypt is slow on purpose:
/// a scrape every few seconds must not pay it each time), and the bound on bcrypt work.
pub struct BasicAuth {
    users: BTreeMap<String, PasswordHash>,
    /// Per user, the HMAC-SHA256 of the last password that passed bcrypt, under a key drawn at
    /// start-up: the cache holds no password, and its entries mean nothing outside this process.
    verified: Mutex<HashMap<String, hmac::Tag>>,
    key: hmac::Key,
    /// Requests checking or waiting to check a password with bcrypt.
    admitted: Semaphore,
    verifying: Semaphore,
    /// Counts the requests answered 503 because `admitted` was full.
    busy: IntCounter,
}

/// What [`BasicAuth::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Too many bcrypt checks running or waiting: try again later.
    Busy,
}

impl BasicAuth {
    /// `None` when no user is configured: the endpoints are open. Refuses a hash that is not
    /// bcrypt or costs more than [`MAX_BCRYPT_COST`], naming the user. `busy` counts the
    /// requests refused because bcrypt was saturated.
    pub fn new(
        users: &BTreeMap<String, PasswordHash>,
        busy: IntCounter,
    ) -> Result<Option<Arc<BasicAuth>>, WebConfigError> {
        if users.is_empty() {
            return Ok(None);
        }
        // TODO(config): this belongs with the other checks of `basic_auth_users` in config
        // validation, where it could point at the line; it lives here until that module settles.
        for (user, hash) in users {
            let parts: bcrypt::HashParts =
                hash.0.parse().map_err(|source| WebConfigError::NotBcrypt { user: user.clone(), source })?;
            if parts.get_cost() > MAX_BCRYPT_COST {
                return Err(WebConfigError::BcryptCost { user: user.clone(), cost: parts.get_cost() });
            }
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| WebConfigError::Randomness)?;
        Ok(Some(Arc::new(BasicAuth {
            users: users.clone(),
            verified: Mutex::new(HashMap::new()),
            key,
            admitted: Semaphore::new(CONCURRENT_VERIFICATIONS + VERIFICATION_QUEUE),
            verifying: Semaphore::new(CONCURRENT_VERIFICATIONS),
            busy,
        })))
    }

    /// Whether the `Authorization` header names a configured user with the right password.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = authorization.and_then(parse_basic) else { return Verdict::Denied };
        let message = credentials_message(&user, &password);
        let cached = self.verified.lock().unwrap_or_else(PoisonError::into_inner).get(&user).cloned();
        if let Some(tag) = cached
            && hmac::verify(&self.key, &message, tag.as_ref()).is_ok()
        {
            return Verdict::Allowed;
        }
        // An unknown user is checked against some configured hash anyway, so the answer takes
        // as long as for a known one and does not tell which user names exist.
        let known = self.users.get(&user);
        let Some(hash) = known.or_else(|| self.users.values().next()).map(|hash| hash.0.clone()) else {
            return Verdict::Denied;
        };
        let Ok(_admitted) = self.admitted.try_acquire() else {
            self.busy.inc();
            return Verdict::Busy;
        };
        let Ok(_verifying) = self.verifying.acquire().await else { return Verdict::Busy };
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !(known.is_some() && matches) {
            return Verdict::Denied;
        }
        self.verified.lock().unwrap_or_else(PoisonError::into_inner).insert(user, hmac::sign(&self.key, &message));
        Verdict::Allowed
    }
}

/// The bytes the cache's HMAC covers: the user name's length, the user name, the password.
fn credentials_message(user: &str, password: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(8 + user.len() + password.len());
    message.extend_from_slice(&(user.len() as u64).to_be_bytes());
    message.extend_from_slice(user.as_bytes());
    message.extend_from_slice(password.as_bytes());
    message
}

/// Axum middleware: 401 with a `WWW-Authenticate` challenge unless [`BasicAuth::check`] allows
/// the request; 503 with `Retry-After` while bcrypt is saturated.
pub async fn require_basic_auth(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    match auth.check(request.headers().get(header::AUTHORIZATION)).await {
        Verdict::Allowed => next.run(request).await,
        Verdict::Denied => {
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"icewatch\"")], "unauthorized\n")
                .into_response()
        }
        Verdict::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many password checks at once; try again\n",
        )
            .into_response(),
    }
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
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

    fn users(user: &str, hash: String) -> BTreeMap<String, PasswordHash> {
        BTreeMap::from([(user.to_string(), PasswordHash(hash))])
    }

    fn auth_for(user: &str, password: &str) -> (Arc<BasicAuth>, IntCounter) {
        let busy = IntCounter::new("busy", "busy").unwrap();
        let hash = bcrypt::hash(password, 4).unwrap();
        (BasicAuth::new(&users(user, hash), busy.clone()).unwrap().unwrap(), busy)
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[tokio::test]
    async fn only_the_right_user_and_password_get_in() {
        let (auth, _) = auth_for("prometheus", "pa:ss");
        assert_eq!(auth.check(Some(&basic("prometheus", "pa:ss"))).await, Verdict::Allowed);
        // Twice: the second answer comes from the cache and must agree.
        assert_eq!(auth.check(Some(&basic("prometheus", "pa:ss"))).await, Verdict::Allowed);
        assert_eq!(auth.check(Some(&basic("prometheus", "wrong"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&basic("someone", "pa:ss"))).await, Verdict::Denied);
        assert_eq!(auth.check(None).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&HeaderValue::from_static("Bearer abc"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&HeaderValue::from_static("Basic %%%"))).await, Verdict::Denied);
        // The cache is keyed by user: another user's cached password does not open this one.
        assert_eq!(auth.check(Some(&basic("prometheus", "pa:s"))).await, Verdict::Denied);
    }

    #[tokio::test]
    async fn a_flood_of_wrong_passwords_is_refused_beyond_the_queue_and_cached_ones_still_pass() {
        let (auth, busy) = auth_for("prometheus", "right");
        assert_eq!(auth.check(Some(&basic("prometheus", "right"))).await, Verdict::Allowed);
        let wrong = basic("prometheus", "wrong");
        let flood = 40;
        let verdicts = futures::future::join_all((0..flood).map(|_| auth.check(Some(&wrong)))).await;
        let refused = verdicts.iter().filter(|verdict| **verdict == Verdict::Busy).count();
        let denied = verdicts.iter().filter(|verdict| **verdict == Verdict::Denied).count();
        // At least the slots and the queue got a bcrypt check (more when a check finished before
        // the last of the flood arrived); the rest were refused at once.
        assert!(denied >= CONCURRENT_VERIFICATIONS + VERIFICATION_QUEUE, "{verdicts:?}");
        assert!(refused >= 1, "{verdicts:?}");
        assert_eq!(refused, flood - denied);
        assert_eq!(busy.get(), refused as u64);
        // While the slots are taken, a cached password needs none of them.
        let slots = auth.admitted.try_acquire_many(auth.admitted.available_permits() as u32).unwrap();
        assert_eq!(auth.check(Some(&basic("prometheus", "right"))).await, Verdict::Allowed);
        assert_eq!(auth.check(Some(&basic("prometheus", "other"))).await, Verdict::Busy);
        drop(slots);
    }

    #[test]
    fn a_bcrypt_cost_above_the_maximum_is_refused_naming_the_user() {
        let busy = IntCounter::new("busy", "busy").unwrap();
        // A cost-4 hash relabelled: well-formed, and never verified here.
        let hash = bcrypt::hash("secret", 4).unwrap().replacen("$04$", "$15$", 1);
        let error = BasicAuth::new(&users("prometheus", hash), busy.clone()).err().expect("refused");
        let message = error.to_string();
        assert!(matches!(error, WebConfigError::BcryptCost { cost: 15, .. }), "{message}");
        assert!(message.contains("`prometheus`") && message.contains("at most 14"), "{message}");
        let at_maximum = bcrypt::hash("secret", 4).unwrap().replacen("$04$", "$14$", 1);
        assert!(BasicAuth::new(&users("prometheus", at_maximum), busy).is_ok());
    }

    #[test]
    fn no_users_means_no_auth() {
        let busy = IntCounter::new("busy", "busy").unwrap();
        assert!(BasicAuth::new(&BTreeMap::new(), busy).unwrap().is_none());
    }
}
