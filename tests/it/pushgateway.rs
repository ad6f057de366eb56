//! The Pushgateway client against the real `prometheus-pushgateway` (Debian's 1.5): what is pushed
//! can be read back with its type and grouping labels, rejections are reported and not retried,
//! outages are retried within a bounded time, TLS and basic auth work. Bodies come from the
//! `prometheus` crate's text encoder, so the format is the one the service pushes.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use icewatch::export::pushgateway::{AttemptError, PushError, PushgatewayClient, PushgatewayOptions};
use prometheus::{Gauge, IntCounter, Registry, TextEncoder};

use crate::common::{ChildGuard, free_port, http_get, wait_for};

struct Gateway {
    process: ChildGuard,
    url: String,
}

impl Gateway {
    /// A fresh in-memory gateway on 127.0.0.1:`port`, ready to serve.
    fn start(port: u16) -> Gateway {
        Gateway::start_with(port, &[], "http")
    }

    fn start_with(port: u16, extra_args: &[String], scheme: &str) -> Gateway {
        let process = ChildGuard::spawn(
            "prometheus-pushgateway",
            Command::new("prometheus-pushgateway")
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--persistence.file=")
                .arg("--log.level=warn")
                .args(extra_args)
                .stdout(Stdio::null()),
        );
        let url = format!("{scheme}://127.0.0.1:{port}");
        if scheme == "http" {
            wait_for("the pushgateway to be ready", Duration::from_secs(15), || http_get(&format!("{url}/-/ready")));
        } else {
            wait_for("the pushgateway to listen", Duration::from_secs(15), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            });
        }
        Gateway { process, url }
    }

    fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.url)).expect("the gateway serves /metrics")
    }
}

fn options(url: &str, instance: &str) -> PushgatewayOptions {
    let mut options = PushgatewayOptions::new(url, "icewatch_it");
    options.grouping = vec![("instance".into(), instance.into())];
    options.timeout = Duration::from_secs(2);
    options.retries = 2;
    options.initial_backoff = Duration::from_millis(200);
    options
}

/// A counter and a gauge in the text format 0.0.4, as the `prometheus` crate writes it.
fn body(pushes: u64, rows: f64) -> String {
    let registry = Registry::new();
    let counter = IntCounter::new("icewatch_it_pushes_total", "Pushes made by the test").unwrap();
    counter.inc_by(pushes);
    let gauge = Gauge::new("icewatch_it_rows", "Rows seen by the test").unwrap();
    gauge.set(rows);
    registry.register(Box::new(counter)).unwrap();
    registry.register(Box::new(gauge)).unwrap();
    TextEncoder::new().encode_to_string(&registry.gather()).unwrap()
}

/// The sample lines of `name` in an exposition, e.g. `name{instance="a",job="b"} 3`.
fn samples<'a>(exposition: &'a str, name: &str) -> Vec<&'a str> {
    exposition.lines().filter(|line| line.starts_with(&format!("{name}{{"))).collect()
}

#[tokio::test]
async fn pushed_counter_and_gauge_are_read_back_with_their_type_and_grouping() {
    let gateway = Gateway::start(free_port());
    let client = PushgatewayClient::new(options(&gateway.url, "host-1:9100")).unwrap();
    let pushed = body(3, 42.5);
    client.push(&pushed).await.unwrap();

    let exposition = gateway.metrics();
    assert!(exposition.contains("# TYPE icewatch_it_pushes_total counter\n"), "{exposition}");
    assert!(exposition.contains("# TYPE icewatch_it_rows gauge\n"), "{exposition}");
    assert_eq!(
        samples(&exposition, "icewatch_it_pushes_total"),
        vec![r#"icewatch_it_pushes_total{instance="host-1:9100",job="icewatch_it"} 3"#]
    );
    assert_eq!(
        samples(&exposition, "icewatch_it_rows"),
        vec![r#"icewatch_it_rows{instance="host-1:9100",job="icewatch_it"} 42.5"#]
    );

    // PUT replaces the group: a second push updates the values in place.
    client.push(&body(5, 7.0)).await.unwrap();
    let exposition = gateway.metrics();
    assert_eq!(
        samples(&exposition, "icewatch_it_pushes_total"),
        vec![r#"icewatch_it_pushes_total{instance="host-1:9100",job="icewatch_it"} 5"#]
    );
}

#[tokio::test]
async fn grouping_values_with_slashes_or_empty_reach_the_gateway_intact() {
    let gateway = Gateway::start(free_port());
    let mut options = options(&gateway.url, "pods/icewatch-0");
    options.job = "batch/nightly".into();
    options.grouping.push(("warehouse".into(), "/var/lib/warehouse".into()));
    options.grouping.push(("region".into(), String::new()));
    let client = PushgatewayClient::new(options).unwrap();
    assert!(client.group_url().contains("/job@base64/"), "{}", client.group_url());
    client.push(&body(1, 1.0)).await.unwrap();

    let exposition = gateway.metrics();
    let lines = samples(&exposition, "icewatch_it_pushes_total");
    assert_eq!(lines.len(), 1, "{exposition}");
    // The gateway sorts labels by name; the empty value arrives as an explicit empty label.
    assert_eq!(
        lines[0],
        r#"icewatch_it_pushes_total{instance="pods/icewatch-0",job="batch/nightly",region="",warehouse="/var/lib/warehouse"} 1"#
    );

    client.delete().await.unwrap();
    assert!(samples(&gateway.metrics(), "icewatch_it_pushes_total").is_empty());
}

#[tokio::test]
async fn a_sample_with_a_timestamp_is_rejected_clearly_and_not_retried() {
    let gateway = Gateway::start(free_port());
    let mut options = options(&gateway.url, "stamped");
    // Retries would take at least 2 + 4 + 8 s: the answer must come long before.
    options.retries = 3;
    options.initial_backoff = Duration::from_secs(2);
    let client = PushgatewayClient::new(options).unwrap();

    let registry = Registry::new();
    let gauge = Gauge::new("icewatch_it_stamped", "A gauge with a sample timestamp").unwrap();
    gauge.set(1.0);
    registry.register(Box::new(gauge)).unwrap();
    let mut families = registry.gather();
    families[0].mut_metric()[0].set_timestamp_ms(1_700_000_000_000);
    let stamped = TextEncoder::new().encode_to_string(&families).unwrap();
    assert!(stamped.contains(" 1700000000000\n"), "{stamped}");

    let started = Instant::now();
    let error = client.push(&stamped).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}: was it retried?");
    match &error {
        PushError::Rejected { status, body, .. } => {
            assert_eq!(status.as_u16(), 400);
            assert!(body.contains("timestamp"), "{body}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let message = error.to_string();
    eprintln!("{message}");
    assert!(message.starts_with("pushgateway rejected PUT `http://127.0.0.1:"), "{message}");
    assert!(message.contains("with 400 Bad Request: "), "{message}");
    assert!(samples(&gateway.metrics(), "icewatch_it_stamped").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_after_bounded_retries_and_a_returning_gateway_is_reached() {
    let port = free_port();
    let mut gateway = Gateway::start(port);
    let client = PushgatewayClient::new(options(&gateway.url, "outage")).unwrap();
    client.push(&body(1, 1.0)).await.unwrap();

    gateway.process.terminate(Duration::from_secs(10)).expect("the gateway stops on SIGTERM");
    let started = Instant::now();
    let error = client.push(&body(2, 2.0)).await.unwrap_err();
    let took = started.elapsed();
    match &error {
        PushError::Unavailable { attempts, last: AttemptError::Transport(cause), .. } => {
            assert_eq!(*attempts, 3);
            assert!(cause.is_connect(), "{cause:?}");
        }
        other => panic!("expected the gateway to be unavailable, got {other:?}"),
    }
    // Two backoffs (200 ms, 400 ms) between three refused connections.
    assert!(took >= Duration::from_millis(600), "took {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    eprintln!("push to a stopped gateway failed after {took:?}: {error}");

    // A push that starts during the outage succeeds once a new gateway listens on the same port.
    let mut patient = options(&gateway.url, "outage");
    patient.retries = 50;
    patient.initial_backoff = Duration::from_millis(100);
    let patient = PushgatewayClient::new(patient).unwrap();
    let push = tokio::spawn(async move { patient.push(&body(3, 3.0)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!push.is_finished(), "the push must still be retrying");
    drop(gateway);
    let gateway = Gateway::start(port);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), push).await.unwrap().unwrap().unwrap();
    eprintln!("retrying push landed {:?} after the new gateway was ready", started.elapsed());
    assert_eq!(
        samples(&gateway.metrics(), "icewatch_it_pushes_total"),
        vec![r#"icewatch_it_pushes_total{instance="outage",job="icewatch_it"} 3"#]
    );
}

#[tokio::test]
async fn delete_removes_only_its_own_group() {
    let gateway = Gateway::start(free_port());
    let first = PushgatewayClient::new(options(&gateway.url, "first")).unwrap();
    let second = PushgatewayClient::new(options(&gateway.url, "second")).unwrap();
    first.push(&body(1, 1.0)).await.unwrap();
    second.push(&body(2, 2.0)).await.unwrap();
    assert_eq!(samples(&gateway.metrics(), "icewatch_it_pushes_total").len(), 2);

    first.delete().await.unwrap();
    assert_eq!(
        samples(&gateway.metrics(), "icewatch_it_pushes_total"),
        vec![r#"icewatch_it_pushes_total{instance="second",job="icewatch_it"} 2"#]
    );
    // Deleting a group that is gone is not an error.
    first.delete().await.unwrap();
}

/// Gateway answers 503 twice, then 204: the client retries exactly as configured and sends the
/// format's content type and the basic-auth header on every attempt.
#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    use axum::http::{HeaderMap, StatusCode};

    let seen = Arc::new(std::sync::Mutex::new(Vec::<(Instant, HeaderMap)>::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let app = {
        let seen = seen.clone();
        let attempts = attempts.clone();
        axum::Router::new().route(
            "/metrics/job/{job}/instance/{instance}",
            axum::routing::put(move |headers: HeaderMap| async move {
                seen.lock().unwrap().push((Instant::now(), headers));
                if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy")
                } else {
                    (StatusCode::NO_CONTENT, "")
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut options = options(&url, "flaky");
    options.retries = 3;
    options.basic_auth = Some(("pusher".into(), "s3cret-test-password".into()));
    let client = PushgatewayClient::new(options).unwrap();
    client.push(&body(1, 1.0)).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two 503s, then success");
    let gaps: Vec<Duration> = seen.windows(2).map(|pair| pair[1].0 - pair[0].0).collect();
    assert!(gaps[0] >= Duration::from_millis(200) && gaps[1] >= Duration::from_millis(400), "{gaps:?}");
    for (_, headers) in &seen {
        assert_eq!(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        // base64("pusher:s3cret-test-password")
        assert_eq!(headers["authorization"], "Basic cHVzaGVyOnMzY3JldC10ZXN0LXBhc3N3b3Jk");
    }

    // When the 503s outlast the retries, the last answer is in the error chain.
    attempts.store(0, Ordering::SeqCst);
    let mut options = self::options(&url, "flaky");
    options.retries = 1;
    options.initial_backoff = Duration::from_millis(10);
    let error = PushgatewayClient::new(options).unwrap().push("x 1\n").await.unwrap_err();
    match &error {
        PushError::Unavailable { attempts, last: AttemptError::Server { status, body }, .. } => {
            assert_eq!((*attempts, status.as_u16(), body.as_str()), (2, 503, "busy"));
        }
        other => panic!("expected unavailable after 503s, got {other:?}"),
    }
    server.abort();
}

/// TLS with a private CA and basic auth, configured through the gateway's `--web.config.file`.
#[tokio::test]
async fn tls_with_a_private_ca_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(status.unwrap().success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=icewatch test ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &path("server.key"),
        "-out",
        &path("server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.path().join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-out",
        &path("server.pem"),
        "-days",
        "1",
        "-extfile",
        &path("server.ext"),
    ]);
    // bcrypt (cost 4) of "s3cret-test-password": a test fixture, not a secret.
    let web_config = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  pusher: \
         $2b$04$aBnYWenKiUs9X3C9CeXrduO6jSjQQQ7wV7bd289Hvw0G7EPPWpf22\n",
        path("server.pem"),
        path("server.key")
    );
    std::fs::write(dir.path().join("web.yml"), web_config).unwrap();

    let port = free_port();
    let gateway = Gateway::start_with(port, &[format!("--web.config.file={}", path("web.yml"))], "https");

    let mut trusted = options(&gateway.url, "tls");
    trusted.ca_certificate = Some(dir.path().join("ca.pem"));
    trusted.basic_auth = Some(("pusher".into(), "s3cret-test-password".into()));
    let client = PushgatewayClient::new(trusted.clone()).unwrap();
    client.push(&body(4, 4.0)).await.unwrap();

    // Read back through curl with the same CA and credentials.
    let output = Command::new("curl")
        .args(["-fsS", "--max-time", "5", "--cacert", &path("ca.pem"), "-u", "pusher:s3cret-test-password"])
        .arg(format!("{}/metrics", gateway.url))
        .output()
        .unwrap();
    let exposition = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        samples(&exposition, "icewatch_it_pushes_total"),
        vec![r#"icewatch_it_pushes_total{instance="tls",job="icewatch_it"} 4"#]
    );

    // A wrong password is a 401: rejected at once, and the password is in no message.
    let mut wrong = trusted.clone();
    wrong.basic_auth = Some(("pusher".into(), "not-the-password".into()));
    let error = PushgatewayClient::new(wrong).unwrap().push(&body(5, 5.0)).await.unwrap_err();
    assert!(matches!(&error, PushError::Rejected { status, .. } if status.as_u16() == 401), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("not-the-password"));

    // Without the CA the server certificate is not trusted; skipping verification gets through.
    let mut untrusted = trusted.clone();
    untrusted.ca_certificate = None;
    untrusted.retries = 0;
    let error = PushgatewayClient::new(untrusted.clone()).unwrap().push(&body(6, 6.0)).await.unwrap_err();
    let chain = error_chain(&error);
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
    untrusted.insecure_skip_verify = true;
    PushgatewayClient::new(untrusted).unwrap().push(&body(7, 7.0)).await.unwrap();

    // A CA file that is not PEM is reported when the client is built.
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    let mut bad = trusted;
    bad.ca_certificate = Some(dir.path().join("bad.pem"));
    let error = PushgatewayClient::new(bad).unwrap_err();
    assert!(matches!(error, PushError::CaCertificate { .. }), "{error:?}");
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(" / ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
