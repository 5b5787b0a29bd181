//! The request path's safety rules, end to end through the real binary (issue 19): a request is
//! never sent twice unless that is safe, a path is resolved before it is matched, a URL from a
//! header never brings characters into the request line, and a head has one deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

const GW_NO_LIMIT: &str = "rate_limit:\n  enabled: false\n";

fn connect(gw: &Gw) -> TcpStream {
    let s = TcpStream::connect(gw.proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// A mapping for `https://localhost:PORT/api/*` only.
fn api_only() -> (OneMapping, Gw) {
    let m = OneMapping::new("api");
    m.seed.mappings(
        "acc",
        &[(
            10,
            "TEST_SERVICE",
            &format!("https://localhost:{}/api/*", m.port),
            1,
        )],
    );
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    (m, gw)
}

#[test]
fn a_post_the_target_reads_and_drops_is_sent_once_and_the_client_gets_a_424() {
    let m = OneMapping::new("once");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    let host = format!("localhost:{}", m.port);
    // A pooled connection to the target first.
    let (status, _, _) = raw_request(
        gw.proxy,
        &format!("GET /bytes/1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .expect("warm-up");
    assert_eq!(status, 200);
    assert_eq!(m.echo.requests(), 1);

    // A payment-like POST: the target reads it whole, then closes without answering.
    let form = "amount=100&to=acct-2";
    let (status, headers, body) = raw_request(
        gw.proxy,
        &format!(
            "POST /drop HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )
    .expect("answer");
    assert_eq!(status, 424, "{}", String::from_utf8_lossy(&body));
    let why = header(&headers, "lp-error-from-transport").unwrap_or_default();
    assert!(why.contains("not sent twice"), "{why}");
    // Exactly once at the target.
    assert_eq!(m.echo.requests(), 2, "the POST reached the target twice");

    // An idempotent request in the same situation may be sent again, once, on a new
    // connection (RFC 9110 9.2.2): the target sees it at most twice, never more.
    let (status, _, _) = raw_request(
        gw.proxy,
        &format!("GET /bytes/1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .expect("warm-up again");
    assert_eq!(status, 200);
    let before = m.echo.requests();
    let (status, _, _) = raw_request(
        gw.proxy,
        &format!("GET /drop HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .expect("answer");
    assert_eq!(status, 424);
    assert_eq!(m.echo.requests() - before, 2, "one retry for a GET");
    assert_eq!(gw.metric("mtls_gateway_upstream_retries_total"), 1.0);
}

#[test]
fn dot_segments_are_resolved_before_the_mapping_is_matched_in_both_modes() {
    let (m, gw) = api_only();
    let host = format!("localhost:{}", m.port);
    let ask = |target: &str| {
        raw_request(
            gw.proxy,
            &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .expect("answer")
    };
    // Inside the prefix after resolution: served, and the target gets the resolved path.
    let (status, headers, _) = ask("/api/x/../y?q=/../z");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-seen-path"), Some("/api/y?q=/../z"));
    let (status, headers, _) = ask(&format!("http://{host}/api/./v1/../v2"));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-seen-path"), Some("/api/v2"));
    // Outside the prefix after resolution: refused as unmapped, the target never asked.
    let before = m.echo.requests();
    for t in [
        "/api/../other",
        "/api/../../other",
        &format!("http://{host}/api/../other"),
    ] {
        let (status, _, body) = ask(t);
        assert_eq!(status, 403, "{t}: {}", String::from_utf8_lossy(&body));
    }
    // Encoded separators and dot-segments: refused before matching.
    for t in [
        "/api/%2e%2e/other",
        "/api/.%2E/other",
        "/api%2Fother",
        "/api/%5C..%5Cother",
        "/api/..;/other",
        "/api/x%00",
    ] {
        let (status, _, body) = ask(t);
        assert_eq!(status, 400, "{t}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(
        m.echo.requests(),
        before,
        "nothing outside /api/ reached the target"
    );

    // Forward mode, the same rules on LP-forward-url.
    let fwd = |url: &str| {
        raw_request(
            gw.proxy,
            &format!("POST /mtls/account/acc HTTP/1.1\r\nHost: gw\r\nLP-forward-url: {url}\r\nLP-service-name: TEST_SERVICE\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .expect("answer")
    };
    let (status, headers, _) = fwd(&format!("https://{host}/api/a/../b"));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-seen-path"), Some("/api/b"));
    let (status, _, _) = fwd(&format!("https://{host}/api/../admin"));
    assert_eq!(status, 403);
    let (status, _, _) = fwd(&format!("https://{host}/api/%2e%2e/admin"));
    assert_eq!(status, 400);
}

#[test]
fn characters_a_url_may_not_hold_never_reach_the_upstream_request_line() {
    let (m, gw) = api_only();
    let host = format!("localhost:{}", m.port);
    let before = m.echo.requests();
    for bad in [
        "/api/a b HTTP/1.1\r\nX-Smuggled: 1",
        "/api/a\tb",
        "/api/\"quoted\"",
        "/api/{braces}",
        "/api/a%zz",
        "/api/caf\u{e9}",
    ] {
        let (status, _, body) = raw_request(
            gw.proxy,
            &format!("POST /mtls/account/acc HTTP/1.1\r\nHost: gw\r\nLP-forward-url: https://{host}{bad}\r\nLP-service-name: TEST_SERVICE\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .expect("answer");
        assert_eq!(status, 400, "{bad:?}: {}", String::from_utf8_lossy(&body));
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("LP-forward-url"), "{text}");
    }
    assert_eq!(m.echo.requests(), before);
}

#[test]
fn a_head_sent_one_byte_at_a_time_is_cut_off_at_client_timeout_secs() {
    let m = OneMapping::new("slow");
    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        &format!("{}  client_timeout_secs: 2\n{GW_NO_LIMIT}", PROXY_DEFAULTS),
    );
    let mut s = connect(&gw);
    let head = format!(
        "GET /bytes/1 HTTP/1.1\r\nHost: localhost:{}\r\nX-Pad: {}\r\n\r\n",
        m.port,
        "a".repeat(200)
    );
    let start = Instant::now();
    let mut closed_at = None;
    for b in head.as_bytes() {
        if s.write_all(&[*b]).is_err() {
            closed_at = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    if closed_at.is_none() {
        // The gateway closes; a read sees the end (or a reset).
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "no answer to a head that never completed");
        closed_at = Some(start.elapsed());
    }
    let t = closed_at.expect("closed");
    assert!(
        t < Duration::from_secs(6),
        "a head trickled in one byte per 100 ms was allowed {t:?} (client_timeout_secs: 2)"
    );
    assert_eq!(m.echo.requests(), 0);
}

#[test]
fn ambiguous_framing_and_two_hosts_are_refused_with_400_and_the_connection_closed() {
    let m = OneMapping::new("strict");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    let host = format!("localhost:{}", m.port);
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let cases = [
        format!("POST /collect HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /collect HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /collect HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 5\r\n\r\nhello"),
        format!("GET /bytes/1 HTTP/1.1\r\nHost: {host}\r\nHost: other.test\r\n\r\n"),
        format!("GET /bytes/1 HTTP/1.1\r\nHost: {host}\r\nX-Fold: a\r\n b\r\n\r\n"),
        format!("GET /bytes/1 HTTP/1.1\r\nHost : {host}\r\n\r\n"),
        format!("POST /collect HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST /collect HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n{smuggled}"),
    ];
    for c in &cases {
        let (status, headers, body) = raw_request(gw.proxy, c).expect("answer");
        assert_eq!(status, 400, "{c:?}: {}", String::from_utf8_lossy(&body));
        assert_eq!(header(&headers, "connection"), Some("close"), "{c:?}");
    }
    assert_eq!(
        m.echo.requests(),
        0,
        "no refused request reached the target"
    );
}
