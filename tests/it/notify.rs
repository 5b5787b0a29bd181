//! Certificate notifications (src/lifecycle/notify.rs): signed webhook deliveries to real HTTP
//! receivers on 127.0.0.1, retries and their bounds, and the `notifications:` config section.
//!
//! The receivers check signatures with their own HMAC (BoringSSL's, not the `hmac` crate the
//! gateway uses, and not `notify::verify`), so a wrong signature cannot pass on both sides.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use mtls_gateway::auth::Secret;
use mtls_gateway::config::{Config, NotificationsConfig, WebhookConfig};
use mtls_gateway::lifecycle::notify::{self, Event, EventKind, Notifier};

use crate::common::Pki;

const SECRET_A: &[u8] = b"receiver-a-secret-0123456789";
const SECRET_B: &[u8] = b"receiver-b-secret-9876543210";

/// HMAC-SHA256 with BoringSSL, hex.
fn boring_hmac_hex(secret: &[u8], msg: &[u8]) -> String {
    hex::encode(boring::hash::hmac_sha256(secret, msg).expect("hmac"))
}

/// The receiver's own check of `t=..,v1=..`: HMAC of "{t}.{body}", t within 60 s of now.
fn receiver_accepts(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_string()),
            Some(("v1", v)) => v1 = Some(v.to_string()),
            _ => return false,
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(ts) = t.parse::<i64>() else {
        return false;
    };
    let now = unix_now();
    if (now - ts).abs() > 60 {
        return false;
    }
    let mut msg = t.into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    let want = boring_hmac_hex(secret, &msg);
    want.len() == v1.len() && boring::memcmp::eq(want.as_bytes(), v1.as_bytes())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
    signature_ok: bool,
    answered: u16,
}

struct ReceiverState {
    secret: Vec<u8>,
    /// Statuses to answer, in order; 200 once empty. A pair (status, retry-after secs).
    script: Mutex<VecDeque<(u16, Option<u64>)>>,
    seen: Mutex<Vec<Seen>>,
}

/// An HTTP webhook receiver on 127.0.0.1 that checks signatures with its own secret.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(st): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let sig = headers
        .get("x-mtls-gateway-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signature_ok = receiver_accepts(&st.secret, sig, &body);
    let (status, retry_after) = st
        .script
        .lock()
        .expect("script")
        .pop_front()
        .unwrap_or((200, None));
    st.seen.lock().expect("seen").push(Seen {
        headers: headers.clone(),
        body,
        signature_ok,
        answered: status,
    });
    let mut out = HeaderMap::new();
    if let Some(s) = retry_after {
        out.insert("retry-after", s.to_string().parse().expect("header"));
    }
    (
        StatusCode::from_u16(status).expect("status"),
        out,
        "receiver",
    )
}

impl Receiver {
    async fn start(secret: &[u8], script: &[(u16, Option<u64>)]) -> Receiver {
        let state = Arc::new(ReceiverState {
            secret: secret.to_vec(),
            script: Mutex::new(script.iter().copied().collect()),
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hook/{token}", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, task }
    }

    /// The URL, with a path part that stands for a credential (it must never show in errors).
    fn url(&self) -> String {
        format!("http://{}/hook/path-token-s3cr3t", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }
}

fn hook(name: &str, url: &str, secret: &[u8]) -> WebhookConfig {
    WebhookConfig {
        name: name.to_string(),
        url: url.parse().expect("url"),
        secret: Secret::new(secret.to_vec()),
        ca_file: None,
    }
}

/// Short settings so that every test runs in well under a few seconds.
fn quick(webhooks: Vec<WebhookConfig>) -> NotificationsConfig {
    NotificationsConfig {
        webhooks,
        expiry_days: vec![30, 14, 7, 1],
        timeout: Duration::from_millis(1_000),
        max_attempts: 4,
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
    }
}

fn expiring() -> Event {
    Event::new(
        EventKind::Expiring,
        "123456",
        42,
        "partner-a",
        Some("0a1b2c"),
        Some(14),
        "certificate partner-a expires in 13 days",
    )
    .with_not_after(unix_now() + 13 * 86_400 + 60, unix_now())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("header {name} missing"))
        .to_str()
        .expect("ascii header")
}

#[tokio::test]
async fn notify_delivers_a_signed_event_with_every_header() {
    let rx = Receiver::start(SECRET_A, &[]).await;
    let n = Notifier::with_gateway(&quick(vec![hook("a", &rx.url(), SECRET_A)]), "replica-1")
        .expect("notifier");
    assert!(n.enabled());
    assert_eq!(n.expiry_days(), &[30, 14, 7, 1]);
    let ev = expiring();
    let report = n.deliver(&ev).await;
    assert!(report.all_delivered(), "{report:?}");
    assert_eq!(report.webhooks.len(), 1);
    assert_eq!(report.webhooks[0].attempts, 1);
    assert_eq!(report.webhooks[0].status, Some(200));
    assert_eq!(report.id, "certificate.expiring:123456:42:0a1b2c:14");

    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(s.signature_ok, "receiver's own HMAC check failed");
    assert_eq!(header(&s.headers, "content-type"), "application/json");
    assert_eq!(
        header(&s.headers, "x-mtls-gateway-event"),
        "certificate.expiring"
    );
    assert_eq!(
        header(&s.headers, "x-mtls-gateway-delivery"),
        "certificate.expiring:123456:42:0a1b2c:14"
    );
    assert_eq!(
        header(&s.headers, "user-agent"),
        concat!("mtls-gateway/", env!("CARGO_PKG_VERSION"))
    );
    let sig = header(&s.headers, "x-mtls-gateway-signature");
    assert!(sig.starts_with("t=") && sig.contains(",v1="), "{sig}");
    // The documented verifier agrees with the receiver's own check.
    assert!(notify::verify(SECRET_A, sig, &s.body, unix_now(), 300));

    let v: serde_json::Value = serde_json::from_slice(&s.body).expect("json body");
    assert_eq!(v["event"], "certificate.expiring");
    assert_eq!(v["id"], "certificate.expiring:123456:42:0a1b2c:14");
    assert_eq!(v["accountId"], "123456");
    assert_eq!(v["certificateId"], 42);
    assert_eq!(v["certificateName"], "partner-a");
    assert_eq!(v["serial"], "0a1b2c");
    assert_eq!(v["daysLeft"], 13);
    assert_eq!(v["thresholdDays"], 14);
    assert_eq!(v["gateway"], "replica-1");
    assert_eq!(v["message"], "certificate partner-a expires in 13 days");
    for k in ["notAfter", "occurredAt"] {
        let t = v[k].as_str().unwrap_or_else(|| panic!("{k} is a string"));
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{k} {t:?} is not RFC 3339: {e}"));
    }
}

#[tokio::test]
async fn notify_retries_503_twice_then_delivers_once() {
    let rx = Receiver::start(SECRET_A, &[(503, None), (503, None)]).await;
    let n = Notifier::new(&quick(vec![hook("a", &rx.url(), SECRET_A)])).expect("notifier");
    let counter = |result: &str| {
        mtls_gateway::metrics::NOTIFICATIONS
            .with_label_values(&["certificate.expiring", result])
            .get()
    };
    let (retried0, delivered0, failed0) =
        (counter("retried"), counter("delivered"), counter("failed"));
    let report = n.deliver(&expiring()).await;
    let w = &report.webhooks[0];
    assert!(w.delivered, "{report:?}");
    assert_eq!(w.attempts, 3);
    assert_eq!(w.status, Some(200));
    assert!(w.last_error.is_none(), "{w:?}");

    let seen = rx.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen.iter().map(|s| s.answered).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    // One delivery id on every attempt, each attempt signed (receivers deduplicate by id).
    for s in &seen {
        assert!(s.signature_ok);
        assert_eq!(
            header(&s.headers, "x-mtls-gateway-delivery"),
            report.id.as_str()
        );
        assert_eq!(s.body, seen[0].body);
    }
    // Per process under nextest; deltas under cargo test.
    assert!(counter("retried") - retried0 >= 2);
    assert!(counter("delivered") - delivered0 >= 1);
    assert_eq!(counter("failed"), failed0);
}

#[tokio::test]
async fn notify_does_not_retry_a_400() {
    let rx = Receiver::start(SECRET_A, &[(400, None)]).await;
    let n = Notifier::new(&quick(vec![hook("a", &rx.url(), SECRET_A)])).expect("notifier");
    let report = n.deliver(&expiring()).await;
    let w = &report.webhooks[0];
    assert!(!w.delivered);
    assert_eq!(w.attempts, 1);
    assert_eq!(w.status, Some(400));
    assert!(
        w.last_error.as_deref().unwrap_or("").contains("400"),
        "{w:?}"
    );
    assert_eq!(rx.seen().len(), 1);
    assert!(!report.any_delivered());
}

#[tokio::test]
async fn notify_retries_429_and_408_and_honours_retry_after_up_to_retry_max() {
    let rx = Receiver::start(SECRET_A, &[(429, Some(60)), (408, None)]).await;
    let n = Notifier::new(&quick(vec![hook("a", &rx.url(), SECRET_A)])).expect("notifier");
    let start = Instant::now();
    let report = n.deliver(&expiring()).await;
    let took = start.elapsed();
    assert!(report.all_delivered(), "{report:?}");
    assert_eq!(report.webhooks[0].attempts, 3);
    // Retry-After: 60 is capped at retry_max (200 ms).
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn notify_a_receiver_that_never_answers_is_bounded_by_timeout_and_attempts() {
    // Accepts connections, reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    let mut cfg = quick(vec![hook(
        "silent",
        &format!("http://{addr}/hook/path-token-s3cr3t"),
        SECRET_A,
    )]);
    cfg.timeout = Duration::from_millis(150);
    cfg.max_attempts = 3;
    let n = Notifier::new(&cfg).expect("notifier");
    let start = Instant::now();
    let report = n.deliver(&expiring()).await;
    let took = start.elapsed();
    silent.abort();
    let w = &report.webhooks[0];
    assert!(!w.delivered);
    assert_eq!(w.attempts, 3);
    assert_eq!(w.status, None);
    let why = w.last_error.clone().unwrap_or_default();
    assert!(why.contains("timed out"), "{why}");
    assert!(!why.contains("path-token"), "the URL's path leaked: {why}");
    // 3 x 150 ms plus waits of at most 20 + 40 ms.
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_millis(1_500), "{took:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn notify_connection_refused_is_retried_then_given_up_without_the_url() {
    let port = crate::common::free_port();
    let mut cfg = quick(vec![hook(
        "gone",
        &format!("http://127.0.0.1:{port}/hook/path-token-s3cr3t?key=query-s3cr3t"),
        SECRET_A,
    )]);
    cfg.max_attempts = 3;
    let n = Notifier::new(&cfg).expect("notifier");
    let report = n.deliver(&expiring()).await;
    let w = &report.webhooks[0];
    assert!(!w.delivered);
    assert_eq!(w.attempts, 3);
    let why = w.last_error.clone().unwrap_or_default();
    assert!(why.contains("cannot connect"), "{why}");
    assert!(!why.contains("s3cr3t"), "the URL leaked: {why}");
    assert!(w.elapsed < Duration::from_secs(2), "{w:?}");
    // Debug output of the config and the notifier shows neither the secret nor the URL's path.
    let shown = format!("{:?} {:?}", cfg, n);
    for secret in ["s3cr3t", "receiver-a-secret"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[tokio::test]
async fn notify_two_webhooks_each_get_their_own_signature() {
    let a = Receiver::start(SECRET_A, &[]).await;
    let b = Receiver::start(SECRET_B, &[(500, None)]).await;
    let n = Notifier::new(&quick(vec![
        hook("a", &a.url(), SECRET_A),
        hook("b", &b.url(), SECRET_B),
    ]))
    .expect("notifier");
    let report = n.deliver(&expiring()).await;
    assert!(report.all_delivered(), "{report:?}");
    assert_eq!(
        report
            .webhooks
            .iter()
            .map(|w| (w.name.as_str(), w.attempts))
            .collect::<Vec<_>>(),
        [("a", 1), ("b", 2)]
    );
    let (sa, sb) = (a.seen(), b.seen());
    assert_eq!(sa.len(), 1);
    assert_eq!(sb.len(), 2);
    assert!(sa[0].signature_ok && sb.iter().all(|s| s.signature_ok));
    assert_eq!(sa[0].body, sb[1].body, "one body for every webhook");
    // Each signature is valid only with its webhook's secret.
    let sig_a = header(&sa[0].headers, "x-mtls-gateway-signature");
    let sig_b = header(&sb[1].headers, "x-mtls-gateway-signature");
    assert!(!receiver_accepts(SECRET_B, sig_a, &sa[0].body));
    assert!(!receiver_accepts(SECRET_A, sig_b, &sb[1].body));
    assert!(!notify::verify(
        SECRET_B,
        sig_a,
        &sa[0].body,
        unix_now(),
        300
    ));
}

#[tokio::test]
async fn notify_spawn_delivers_without_waiting_and_a_disabled_notifier_does_nothing() {
    let rx = Receiver::start(SECRET_A, &[]).await;
    let n = Notifier::new(&quick(vec![hook("a", &rx.url(), SECRET_A)])).expect("notifier");
    n.spawn(expiring());
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx.seen().is_empty() {
        assert!(Instant::now() < deadline, "spawned delivery never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rx.seen()[0].signature_ok);

    let off = Notifier::new(&NotificationsConfig::default()).expect("notifier");
    assert!(!off.enabled());
    assert_eq!(off.expiry_days(), &[30, 14, 7, 1]);
    let report = off.deliver(&expiring()).await;
    assert!(report.webhooks.is_empty());
    off.spawn(expiring());
}

#[tokio::test]
async fn notify_https_verifies_the_server_certificate_with_the_webhooks_ca_file() {
    let pki = Pki::new();
    let target = pki.echo_plain(); // TLS, no client certificate, answers 200 to a POST
    let url = format!("https://127.0.0.1:{}/hook", target.addr.port());

    let mut trusted = hook("private-ca", &url, SECRET_A);
    trusted.ca_file = Some(pki.ca_path.clone());
    let n = Notifier::new(&quick(vec![trusted])).expect("notifier");
    let report = n.deliver(&expiring()).await;
    assert!(report.all_delivered(), "{report:?}");

    // Without the CA the server's certificate is not trusted: never delivered.
    let mut cfg = quick(vec![hook("system-roots", &url, SECRET_A)]);
    cfg.max_attempts = 2;
    let n = Notifier::new(&cfg).expect("notifier");
    let report = n.deliver(&expiring()).await;
    let w = &report.webhooks[0];
    assert!(!w.delivered, "{report:?}");
    assert!(
        w.last_error
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("certificate"),
        "{w:?}"
    );
}

#[test]
fn notify_verify_rejects_a_tampered_body_an_old_timestamp_and_a_wrong_secret() {
    let body = br#"{"event":"certificate.expiring","id":"x"}"#;
    let now = 1_767_225_600;
    let sig = notify::signature(SECRET_A, now, body);
    // The format, checked against BoringSSL's HMAC.
    let want = boring_hmac_hex(
        SECRET_A,
        format!("{now}.")
            .as_bytes()
            .iter()
            .chain(body)
            .copied()
            .collect::<Vec<u8>>()
            .as_slice(),
    );
    assert_eq!(sig, format!("t={now},v1={want}"));

    assert!(notify::verify(SECRET_A, &sig, body, now, 300));
    assert!(notify::verify(SECRET_A, &sig, body, now + 300, 300));
    assert!(notify::verify(SECRET_A, &sig, body, now - 300, 300));
    // Tampered body.
    assert!(!notify::verify(
        SECRET_A,
        &sig,
        br#"{"event":"certificate.expiring","id":"y"}"#,
        now,
        300
    ));
    // Too old (a replay), or from the future beyond the tolerance.
    assert!(!notify::verify(SECRET_A, &sig, body, now + 301, 300));
    assert!(!notify::verify(SECRET_A, &sig, body, now - 301, 300));
    // Wrong secret.
    assert!(!notify::verify(SECRET_B, &sig, body, now, 300));
    // A timestamp changed without re-signing.
    let moved = sig.replace(&format!("t={now}"), &format!("t={}", now + 1));
    assert!(!notify::verify(SECRET_A, &moved, body, now, 300));
    // Malformed headers.
    for bad in [
        "",
        "t=abc,v1=00",
        &format!("v1={want}"),
        &format!("t={now}"),
        &format!("t={now},v1=zz"),
    ] {
        assert!(!notify::verify(SECRET_A, bad, body, now, 300), "{bad:?}");
    }
    // A second v1 (a receiver rotating secrets) is accepted when one matches.
    let two = format!("{sig},v1={}", "00".repeat(32));
    assert!(notify::verify(SECRET_A, &two, body, now, 300));
}

// ---------------------------------------------------------------- config

fn load(yaml: &str, dir: &Path) -> Result<Config, mtls_gateway::config::ConfigError> {
    Config::from_yaml(yaml, dir)
}

fn with_secret_file() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hook.secret"), "0123456789abcdef0123\n").expect("write");
    dir
}

#[test]
fn notify_config_defaults_off_and_a_full_section_resolves() {
    let dir = with_secret_file();
    let c = load("", dir.path()).expect("defaults");
    let n = &c.notifications;
    assert!(!n.enabled());
    assert_eq!(n.expiry_days, [30, 14, 7, 1]);
    assert_eq!(n.timeout, Duration::from_millis(5_000));
    assert_eq!(n.max_attempts, 8);
    assert_eq!(n.retry_min, Duration::from_millis(500));
    assert_eq!(n.retry_max, Duration::from_secs(300));

    let c = load(
        "notifications:\n  webhooks:\n    - url: https://hooks.example.com/a/b?c=d\n      secret_file: hook.secret\n    - url: http://127.0.0.1:9999/x\n      name: local\n      secret_file: hook.secret\n    - url: http://localhost/x\n      secret_file: hook.secret\n    - url: http://hooks.internal/x\n      secret_file: hook.secret\n      allow_insecure: true\n  expiry_days: [1, 7, 60, 7]\n  timeout_ms: 250\n  max_attempts: 3\n  retry_min_ms: 20\n  retry_max_secs: 2\n",
        dir.path(),
    )
    .expect("full section");
    let n = &c.notifications;
    assert!(n.enabled());
    assert_eq!(n.webhooks.len(), 4);
    assert_eq!(n.webhooks[0].name, "hooks.example.com");
    assert_eq!(n.webhooks[1].name, "local");
    // The file's trailing newline is not part of the secret.
    assert_eq!(n.webhooks[0].secret.expose(), b"0123456789abcdef0123");
    assert_eq!(n.expiry_days, [60, 7, 1], "deduplicated, descending");
    assert_eq!(n.timeout, Duration::from_millis(250));
    assert_eq!(n.max_attempts, 3);
    assert_eq!(n.retry_min, Duration::from_millis(20));
    assert_eq!(n.retry_max, Duration::from_secs(2));
    // Never in Debug output: the secret, the URL's path and query.
    let shown = format!("{c:?}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    assert!(!shown.contains("c=d") && !shown.contains("/a/b"), "{shown}");
    assert!(shown.contains("https://hooks.example.com/..."), "{shown}");
}

#[test]
fn notify_config_secret_is_required_read_at_load_and_long_enough() {
    let dir = with_secret_file();
    let cases = [
        (
            "notifications:\n  webhooks:\n    - url: https://h.example/x\n      secret_file: missing.secret\n",
            "notifications.webhooks[0].secret_file",
            "cannot read",
        ),
        (
            "notifications:\n  webhooks:\n    - url: https://h.example/x\n",
            "notifications.webhooks[0].secret_file",
            "secret_env",
        ),
        (
            "notifications:\n  webhooks:\n    - url: https://h.example/x\n      secret_file: hook.secret\n    - url: https://h.example/y\n      secret_env: MTLS_GATEWAY_TEST_UNSET_HOOK_SECRET\n",
            "notifications.webhooks[1].secret_env",
            "MTLS_GATEWAY_TEST_UNSET_HOOK_SECRET",
        ),
        (
            "notifications:\n  webhooks:\n    - url: https://h.example/x\n      secret_file: short.secret\n",
            "notifications.webhooks[0].secret_file",
            "at least 16",
        ),
        (
            "notifications:\n  webhooks:\n    - url: https://h.example/x\n      secret_file: hook.secret\n      secret_env: X\n",
            "notifications.webhooks[0]",
            "only one",
        ),
        (
            "notifications:\n  webhooks:\n    - url: https://h.example/x\n      secret: inline-secrets-are-not-taken\n",
            "config",
            "secret",
        ),
    ];
    std::fs::write(dir.path().join("short.secret"), "short").expect("write");
    for (yaml, key, says) in cases {
        let e = load(yaml, dir.path()).expect_err(yaml);
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(says), "{e}");
        assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
    }

    // From the environment.
    std::env::set_var("MTLS_GATEWAY_TEST_HOOK_SECRET", "env-secret-0123456789");
    let c = load(
        "notifications:\n  webhooks:\n    - url: https://h.example/x\n      secret_env: MTLS_GATEWAY_TEST_HOOK_SECRET\n",
        dir.path(),
    )
    .expect("secret from env");
    assert_eq!(
        c.notifications.webhooks[0].secret.expose(),
        b"env-secret-0123456789"
    );
}

#[test]
fn notify_config_refuses_plain_http_beyond_loopback_and_other_schemes() {
    let dir = with_secret_file();
    let e = load(
        "notifications:\n  webhooks:\n    - url: http://hooks.example.com/token-in-path\n      secret_file: hook.secret\n",
        dir.path(),
    )
    .expect_err("plain http to a remote host");
    assert_eq!(e.key, "notifications.webhooks[0].url");
    assert!(
        e.message
            .contains("notifications.webhooks[0].allow_insecure: true"),
        "{e}"
    );
    assert!(!e.message.contains("token-in-path"), "{e}");
    for (yaml, key) in [
        (
            "notifications:\n  webhooks:\n    - url: ftp://h.example/x\n      secret_file: hook.secret\n",
            "notifications.webhooks[0].url",
        ),
        (
            "notifications:\n  webhooks:\n    - url: not a url\n      secret_file: hook.secret\n",
            "notifications.webhooks[0].url",
        ),
        (
            "notifications:\n  webhooks:\n    - secret_file: hook.secret\n",
            "notifications.webhooks[0].url",
        ),
        (
            "notifications:\n  webhooks:\n    - url: http://127.0.0.1/x\n      secret_file: hook.secret\n      ca_file: ca.pem\n",
            "notifications.webhooks[0].ca_file",
        ),
        (
            "notifications:\n  webhooks:\n    - url: https://h.example/x\n      secret_file: hook.secret\n      ca_file: missing-ca.pem\n",
            "notifications.webhooks[0].ca_file",
        ),
        (
            "notifications:\n  webhooks:\n    - url: https://h.example/x\n      secret_file: hook.secret\n      ca_file: hook.secret\n",
            "notifications.webhooks[0].ca_file",
        ),
    ] {
        let e = load(yaml, dir.path()).expect_err(yaml);
        assert_eq!(e.key, key, "{e}");
    }
}

#[test]
fn notify_config_validates_thresholds_and_retry_bounds() {
    let dir = with_secret_file();
    for (yaml, key) in [
        (
            "notifications:\n  expiry_days: [30, 0]\n",
            "notifications.expiry_days[1]",
        ),
        (
            "notifications:\n  expiry_days: [-1]\n",
            "notifications.expiry_days[0]",
        ),
        (
            "notifications:\n  expiry_days: [3651]\n",
            "notifications.expiry_days[0]",
        ),
        (
            "notifications:\n  timeout_ms: 0\n",
            "notifications.timeout_ms",
        ),
        (
            "notifications:\n  max_attempts: 0\n",
            "notifications.max_attempts",
        ),
        (
            "notifications:\n  retry_min_ms: 0\n",
            "notifications.retry_min_ms",
        ),
        (
            "notifications:\n  retry_max_secs: 0\n",
            "notifications.retry_max_secs",
        ),
    ] {
        let e = load(yaml, dir.path()).expect_err(yaml);
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains("out of range"), "{e}");
    }
    let e = load("notifications:\n  expiry_dayz: [1]\n", dir.path()).expect_err("unknown key");
    assert!(e.to_string().contains("expiry_dayz"), "{e}");
    let c = load("notifications:\n  expiry_days: [3650, 1, 1]\n", dir.path()).expect("bounds");
    assert_eq!(c.notifications.expiry_days, [3650, 1]);
    let c = load("notifications:\n  expiry_days: []\n", dir.path()).expect("none");
    assert!(c.notifications.expiry_days.is_empty());
}
