//! Bounded work (issue 19, part 7), on the real binary with real sockets: the admin listener's
//! head deadline, credentials before the body, per-route body limits and the bound on bodies
//! read at once; a stored PKCS#12 over the iteration cap skipped at start. Requests are written
//! by hand so a test controls exactly which bytes the server has when it answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mtls_gateway::dev::certgen::{self, Issued};
use serde_json::{json, Value};

use crate::common::*;

const JWT_SECRET: &str = "bounds-tests-hs256-secret-0123456789abcdef";
/// The fixture: 10,000,000 PBKDF2 and MAC iterations (tests/fixtures/README.md).
const ITER_10M: &[u8] = include_bytes!("../fixtures/p12-iter-10000000.p12");

/// A PKCS#12 of `issued` made by the openssl CLI with `iter` PBKDF2 and MAC iterations.
pub fn p12_with_iterations(issued: &Issued, password: &str, iter: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key, out) = (
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
        dir.path().join("out.p12"),
    );
    std::fs::write(&cert, certgen::to_pem(&issued.cert)).expect("cert");
    std::fs::write(&key, certgen::key_to_pem(&issued.key)).expect("key");
    let status = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-passout",
            "env:BOUNDS_P12_PASS",
            "-iter",
        ])
        .arg(iter.to_string())
        .arg("-in")
        .arg(&cert)
        .arg("-inkey")
        .arg(&key)
        .arg("-out")
        .arg(&out)
        .env("BOUNDS_P12_PASS", password)
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl pkcs12 -export -iter {iter}");
    std::fs::read(out).expect("p12")
}

fn bearer(account: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": format!("user-of-{account}"), "iss": "https://idp.test",
                "aud": "mtls-gateway", "exp": exp, "accountId": account}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("jwt");
    format!("Bearer {token}")
}

/// A gateway whose admin section has `admin_keys` (indented lines) and Bearer auth.
fn start(dir: &std::path::Path, pki: &Pki, admin_keys: &str) -> Gw {
    let extra = format!(
        "admin:\n  listen: \"127.0.0.1:{{admin}}\"\n{admin_keys}auth:\n  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: https://idp.test\n    audience: mtls-gateway\n"
    );
    Gw::start(dir, &pki.ca_path, &extra)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// A request head; `auth` is an `Authorization` value.
fn head(method: &str, path: &str, auth: Option<&str>, content_type: &str, len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: admin.test\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{}\r\n",
        auth.map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default()
    )
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Reads one response (head, then a `Content-Length` body) within `within`.
fn read_reply(s: &mut TcpStream, within: Duration) -> Result<Reply, String> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hs);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = header(&headers, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= n + len {
                return Ok(Reply {
                    status: resp.code.unwrap_or(0),
                    body: String::from_utf8_lossy(&buf[n..n + len]).into_owned(),
                    headers,
                });
            }
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no complete answer within {within:?}"))?;
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk) {
            Ok(0) => return Err("the connection closed before a complete answer".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no complete answer within {within:?} ({e})")),
        }
    }
}

#[test]
fn admin_refuses_an_unauthenticated_upload_from_its_head_before_reading_the_body() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = start(dir.path(), &pki, "");
    // 4 MiB is within the route's own limit (6 x admin.max_upload_bytes for JSON certificates):
    // only the credentials can refuse it before the body arrives.
    let len = 4 << 20;
    let other = bearer("other-account");
    for (label, auth, status) in [
        ("no credentials", None, 401),
        (
            "a token that does not verify",
            Some("Bearer e30.e30.c2ln"),
            401,
        ),
        (
            "an OAuth1 signature with oauth_body_hash from an unknown key",
            Some("OAuth oauth_consumer_key=\"nobody\", oauth_body_hash=\"2jmj7l5rSw0yVb/vlWAYkK/YBwk=\", oauth_nonce=\"n1\", oauth_signature=\"c2ln\", oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"1\""),
            401,
        ),
        ("a token for another account", Some(other.as_str()), 403),
    ] {
        let mut s = connect(gw.admin);
        let h = head(
            "POST",
            "/mtls/account/acc/certificates",
            auth,
            "application/json",
            len,
        );
        s.write_all(h.as_bytes()).expect("head");
        let started = Instant::now();
        // Not one byte of the body is sent: the answer must come from the head alone.
        let r = read_reply(&mut s, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("{label}: {e}\n{}", gw.logs()));
        assert_eq!(r.status, status, "{label}: {r:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{label}");
        assert_eq!(r.header("connection"), Some("close"), "{label}: {r:?}");
        if status == 401 {
            assert!(r.header("www-authenticate").is_some(), "{label}: {r:?}");
        }
    }

    // With valid credentials the same head is answered only once the body is in.
    let mut s = connect(gw.admin);
    let ok = bearer("acc");
    let h = head(
        "POST",
        "/mtls/account/acc/certificates",
        Some(&ok),
        "application/json",
        len,
    );
    s.write_all(h.as_bytes()).expect("head");
    assert!(
        read_reply(&mut s, Duration::from_millis(500)).is_err(),
        "answered an authenticated request before its body"
    );
    s.write_all(&vec![b' '; len]).expect("body");
    let r = read_reply(&mut s, Duration::from_secs(10)).expect("answer after the body");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "malformed_json", "{r:?}");
}

#[test]
fn admin_cuts_off_a_request_head_sent_slowly_at_the_header_timeout() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = start(dir.path(), &pki, "  header_timeout_secs: 2\n");
    let mut s = connect(gw.admin);
    s.write_all(b"GET /mtls/account/acc/certificates HTTP/1.1\r\nHost: admin.test\r\nX-Slow: ")
        .expect("start of head");
    let started = Instant::now();
    let cut_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "a head trickling one byte every 250 ms is still open after 6 s (header timeout 2 s)"
        );
        if s.write_all(b"a").is_err() {
            break started.elapsed();
        }
        s.set_read_timeout(Some(Duration::from_millis(250)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            // Closed, or an answer (a 408) to a head that never ended: cut off either way.
            Ok(_) => break started.elapsed(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert!(
        cut_after >= Duration::from_millis(1500) && cut_after < Duration::from_secs(4),
        "cut off after {cut_after:?}; the header timeout is 2 s"
    );

    // A head over 64 KiB is refused however fast it comes (431), so a slow one cannot hold more.
    let mut s = connect(gw.admin);
    let big = format!(
        "GET /mtls/account/acc/certificates HTTP/1.1\r\nHost: admin.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70 * 1024)
    );
    let _ = s.write_all(big.as_bytes());
    let r = read_reply(&mut s, Duration::from_secs(3)).expect("answer to a big head");
    assert_eq!(r.status, 431, "{r:?}");
}

#[test]
fn admin_bodies_over_the_route_limit_are_413_naming_the_limit_before_being_read() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = start(dir.path(), &pki, "");
    let auth = bearer("acc");
    let maps = "/api/account/acc/configuration/ac-common/mtls";
    let tester = "/mtls/account/acc/p12-test/multipart";
    for (label, path, ct, len, limit, key) in [
        (
            "JSON mappings",
            maps,
            "application/json",
            300 * 1024,
            256 * 1024,
            "admin.max_json_bytes",
        ),
        (
            "the P12 tester",
            tester,
            "multipart/form-data; boundary=x",
            1200 * 1024,
            1024 * 1024 + 64 * 1024,
            "admin.max_upload_bytes",
        ),
    ] {
        let mut s = connect(gw.admin);
        s.write_all(head("POST", path, Some(&auth), ct, len).as_bytes())
            .expect("head");
        let r =
            read_reply(&mut s, Duration::from_secs(3)).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(r.status, 413, "{label}: {r:?}");
        let v = r.json();
        assert_eq!(v["error"], "payload_too_large", "{label}: {r:?}");
        assert_eq!(v["limit"], limit, "{label}: {r:?}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains(key)),
            "{label}: {r:?}"
        );
    }
    // Under its route's limit, the same size is read and parsed.
    let len = 200 * 1024;
    let mut s = connect(gw.admin);
    s.write_all(head("POST", maps, Some(&auth), "application/json", len).as_bytes())
        .expect("head");
    s.write_all(&vec![b' '; len]).expect("body");
    let r = read_reply(&mut s, Duration::from_secs(5)).expect("answer");
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn admin_refuses_bodies_beyond_the_concurrent_bound_with_503_and_retry_after() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = start(
        dir.path(),
        &pki,
        "  max_concurrent_bodies: 2\n  body_timeout_secs: 30\n",
    );
    let auth = bearer("acc");
    let maps = "/api/account/acc/configuration/ac-common/mtls";
    let len = 1000;
    // Two authenticated uploads that stall after 10 bytes.
    let slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(gw.admin);
            s.write_all(head("POST", maps, Some(&auth), "application/json", len).as_bytes())
                .expect("head");
            s.write_all(&[b' '; 10]).expect("part of the body");
            s
        })
        .collect();
    // A third, sent whole, is refused once both are being read.
    let whole = |s: &mut TcpStream| {
        s.write_all(head("POST", maps, Some(&auth), "application/json", len).as_bytes())
            .expect("head");
        s.write_all(&vec![b' '; len]).expect("body");
    };
    let started = Instant::now();
    let refused = loop {
        let mut s = connect(gw.admin);
        whole(&mut s);
        let r = read_reply(&mut s, Duration::from_secs(3)).expect("answer");
        if r.status == 503 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a third body was read while two others stalled (max_concurrent_bodies 2): {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert_eq!(refused.json()["error"], "too_many_bodies", "{refused:?}");
    assert!(refused.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("admin.max_concurrent_bodies")));

    // When the stalled clients go away, their slots are free again.
    drop(slow);
    let started = Instant::now();
    loop {
        let mut s = connect(gw.admin);
        whole(&mut s);
        let r = read_reply(&mut s, Duration::from_secs(3)).expect("answer");
        if r.status != 503 {
            assert_eq!(r.status, 400, "spaces are not a JSON body: {r:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the slots of closed connections were not released"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stored_file_over_the_iteration_cap_is_skipped_at_start_and_the_others_serve() {
    let m = OneMapping::new("beside-the-slow-one");
    m.seed.raw_cert("acc", 2, ITER_10M.to_vec(), "pw");
    let port = m.port;
    m.seed.mappings(
        "acc",
        &[
            (
                10,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/*"),
                1,
            ),
            (11, "TEST_SERVICE", "https://slow.example/*", 2),
        ],
    );
    let started = Instant::now();
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, "");
    // Opening the file would cost 12 s or more of CPU before the first snapshot.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "ready after {:?}",
        started.elapsed()
    );
    let r = raw_request(
        gw.proxy,
        &format!(
            "GET http://localhost:{port}/x HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
        ),
    )
    .expect("proxied request");
    assert_eq!(r.0, 200, "{r:?}\n{}", gw.logs());

    let series = "mtls_gateway_certificates_skipped_total{reason=\"iterations\"}";
    assert_eq!(gw.metric(series), 1.0, "{}", gw.metrics());
    // Refreshes run every second here: the skipped version is neither decoded nor counted again.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(gw.metric(series), 1.0);
    let logs = gw.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("certificate acc/2"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains("iteration count 10000000 exceeds the cap"),
        "{}",
        lines[0]
    );
}
