//! The proxy listener's lean HTTP/1.1 loop (src/fast.rs) and its hand-over to Pingora: what only
//! shows on one downstream connection (keep-alive across the two paths, pipelining, HTTP/1.0) and
//! a pooled upstream connection that the target has closed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

const GW_NO_LIMIT: &str = "rate_limit:\n  enabled: false\n";

/// Stop the mapping's echo target and start a new one on the same port (idle connections to the
/// old one are closed).
fn restart_echo(m: &OneMapping) -> mtls_gateway::echo::EchoServer {
    let addr = m.echo.addr;
    m.echo.shutdown();
    block(m.echo.stopped());
    mtls_gateway::echo::spawn_on_thread(mtls_gateway::echo::EchoConfig {
        listen: addr,
        cert: m.pki.server.cert.clone(),
        key: m.pki.server.key.clone(),
        chain: vec![],
        client_ca: vec![m.pki.ca.cert.clone()],
        require_client_cert: true,
    })
    .expect("echo on the same port")
}

/// One mapping to an echo target, a gateway without rate limit, the target's `Host` value and
/// a client connection to the proxy.
fn lean() -> (OneMapping, Gw, String, TcpStream) {
    let m = OneMapping::new("a");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    let host = format!("localhost:{}", m.port);
    let s = connect(&gw);
    (m, gw, host, s)
}

fn connect(gw: &Gw) -> TcpStream {
    let s = TcpStream::connect(gw.proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// Read one response head (up to its blank line): status and headers.
fn read_head(s: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read head");
        assert!(n > 0, "connection closed inside a response head: {buf:?}");
        buf.push(byte[0]);
    }
    let (status, headers, _) = mtls_gateway::demo::parse_response(&buf).expect("head");
    (status, headers)
}

/// Send one request on a kept-alive connection and read its `Content-Length` answer.
fn ask(s: &mut TcpStream, request: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    s.write_all(request.as_bytes()).expect("write");
    read_one(s)
}

/// Read exactly one response with a `Content-Length` body from a kept-alive connection.
fn read_one(s: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (status, headers) = read_head(s);
    let len: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("a content-length response");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("body");
    (status, headers, body)
}

/// Read one response head, then its body by its framing (`Content-Length` or chunked, which is
/// decoded).
fn read_framed(s: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (status, headers) = read_head(s);
    let mut byte = [0u8; 1];
    if let Some(len) = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).expect("body");
        return (status, headers, body);
    }
    assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            assert!(
                s.read(&mut byte).expect("read size") > 0,
                "closed in a body"
            );
            line.push(byte[0]);
        }
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&line[..line.len() - 2])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .expect("chunk size");
        let mut chunk = vec![0u8; size + 2];
        s.read_exact(&mut chunk).expect("chunk");
        if size == 0 {
            return (status, headers, body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Every complete response in `buf` (Content-Length bodies only).
fn split_responses(mut buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let (status, headers, _) =
            mtls_gateway::demo::parse_response(&buf[..end + 4]).expect("head");
        let len: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = buf[end + 4..end + 4 + len].to_vec();
        out.push((status, body));
        buf = &buf[end + 4 + len..];
    }
    out
}

#[test]
fn a_field_the_clients_connection_header_nominates_is_not_sent_on() {
    let (m, _gw, host, mut s) = lean();
    // 1: an ordinary request.
    let (status, _, body) = ask(
        &mut s,
        &format!("GET /bytes/3 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    assert_eq!((status, body.len()), (200, 3));
    // 2: `x-hop` is hop-by-hop for this request (RFC 9110 7.6.1): the target does not get it.
    let (status, _, body) = ask(&mut s, &format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nx-end: 2\r\n\r\n"));
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(seen.get("x-hop").is_none(), "{seen}");
    assert_eq!(seen["x-end"], "2", "{seen}");
    // 3: the same connection serves the next one.
    let (status, headers, body) = ask(
        &mut s,
        &format!("GET /bytes/4 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!((status, body.len()), (200, 4));
    assert_eq!(header(&headers, "connection"), Some("close"));
    let mut byte = [0u8; 1];
    assert_eq!(
        s.read(&mut byte).expect("eof"),
        0,
        "closed after Connection: close"
    );
    assert_eq!(m.echo.requests(), 3);
}

#[test]
fn an_h2c_upgrade_offer_is_answered_over_http_1_1_by_the_lean_loop() {
    // What Java's HttpClient sends for a plain-http URL by default.
    let (m, _gw, host, mut s) = lean();
    let (status, first, _) = ask(
        &mut s,
        &format!("GET /bytes/3 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    assert_eq!(status, 200);
    let (status, headers, body) = ask(&mut s, &format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nx-app: 1\r\n\r\n"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("the echo's JSON");
    for hop in ["upgrade", "http2-settings", "connection"] {
        assert!(seen.get(hop).is_none(), "{hop} reached the target: {seen}");
    }
    assert_eq!(seen["x-app"], "1", "{seen}");
    // Served by the lean loop: the same pooled target connection as the first request
    // (Pingora's proxy has a pool of its own and would have opened a new one).
    assert_eq!(
        header(&headers, "x-connection-id"),
        header(&first, "x-connection-id")
    );
    // An upgrade to something else is ignored too, as nginx does by default: answered over
    // HTTP/1.1 on the same pooled connection, `Upgrade` not sent on.
    let (status, ws, body) = ask(&mut s, &format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(seen.get("upgrade").is_none(), "{seen}");
    assert_eq!(
        header(&ws, "x-connection-id"),
        header(&first, "x-connection-id")
    );
    drop(m);
}

/// One HTTP/2 request on `client`: status, headers and the whole body.
pub(crate) async fn h2_ask(
    client: &h2::client::SendRequest<bytes::Bytes>,
    req: http::Request<()>,
    body: Option<&'static [u8]>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut send = client.clone().ready().await.expect("h2 stream capacity");
    let (response, mut stream) = send
        .send_request(req, body.is_none())
        .expect("h2 request sent");
    if let Some(b) = body {
        stream
            .send_data(bytes::Bytes::from_static(b), true)
            .expect("h2 body sent");
    }
    let response = response.await.expect("h2 response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut data = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = data.data().await {
        let chunk = chunk.expect("h2 body");
        let _ = data.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, headers, out)
}

/// HTTP/2 with prior knowledge (h2c): each stream is routed like an HTTP/1.1 origin-form request
/// with `:authority` as its Host: transparent mode presents the mapping's certificate, the
/// forward resource works, an unmapped authority is refused, and streams run concurrently on
/// one connection.
#[tokio::test]
async fn h2c_prior_knowledge_streams_are_proxied_with_the_mapping_certificate() {
    let m = OneMapping::new("h2-client");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    let tcp = tokio::net::TcpStream::connect(gw.proxy)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);

    // Transparent mode, 20 streams at once.
    let asks = (0..20).map(|i| {
        let req = http::Request::get(format!("http://localhost:{}/headers?i={i}", m.port))
            .header("x-app", i.to_string())
            .body(())
            .expect("request");
        h2_ask(&client, req, None)
    });
    for (i, (status, headers, body)) in futures::future::join_all(asks)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let subject = headers
            .get(mtls_gateway::echo::HDR_CERT_SUBJECT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(subject.contains("CN=h2-client"), "{subject}");
        let seen: serde_json::Value = serde_json::from_slice(&body).expect("the echo's JSON");
        assert_eq!(seen["x-app"], i.to_string(), "{seen}");
    }

    // The forward resource, addressed to the gateway itself.
    let req = http::Request::post(format!("http://{}/mtls/account/acc", gw.proxy))
        .header(
            "LP-forward-url",
            format!("https://localhost:{}/echo", m.port),
        )
        .header("LP-service-name", "TEST_SERVICE")
        .body(())
        .expect("request");
    let (status, headers, body) = h2_ask(&client, req, Some(b"hello over h2c")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"hello over h2c");
    assert!(headers
        .get(mtls_gateway::echo::HDR_CERT_SUBJECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s.contains("CN=h2-client")));

    // No mapping for this authority: the gateway's own refusal, as over HTTP/1.1.
    let req = http::Request::get(format!("http://127.0.0.1:{}/x", m.port))
        .body(())
        .expect("request");
    let (status, _, body) = h2_ask(&client, req, None).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("no_mapping"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_m, _gw, host, mut s) = lean();
    s.write_all(
        format!(
            "GET /bytes/1 HTTP/1.1\r\nHost: {host}\r\n\r\nGET /bytes/2 HTTP/1.1\r\nHost: {host}\r\n\r\nGET /bytes/3 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let got: Vec<(u16, usize)> = split_responses(&buf)
        .into_iter()
        .map(|(st, b)| (st, b.len()))
        .collect();
    assert_eq!(got, vec![(200, 1), (200, 2), (200, 3)]);
}

/// Started under a soft open-file limit of 256 (the hard limit higher), the gateway serves 300
/// clients held open at once: it lifts its soft limit to the hard one at start. Before, accept()
/// failed with EMFILE near 240 connections and Pingora paused accepting, so the rest waited.
#[test]
fn three_hundred_open_clients_are_served_when_started_under_a_soft_limit_of_256() {
    let (_, hard) = nofile_limits("self");
    if hard < 1024 {
        eprintln!("SKIPPED: this process's hard open-file limit is {hard}, under 1024");
        return;
    }
    let m = OneMapping::new("a");
    let gw = Gw::start_with(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT, Some(256));
    let (soft, _) = nofile_limits(&gw.pid().to_string());
    assert!(soft >= 1024, "the gateway runs with a soft limit of {soft}");
    // ...and the metrics page says so (the standard process collector).
    assert_eq!(gw.metric("process_max_fds"), soft as f64);
    assert!(
        gw.logs().contains("open-file limit raised from 256"),
        "{}",
        gw.logs()
    );
    let host = format!("localhost:{}", m.port);
    let mut open = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(gw.proxy).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(s, "GET /bytes/3 HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
        let (status, _, body) = read_one(&mut s);
        assert_eq!((status, body.len()), (200, 3), "client {i}");
        open.push(s);
    }
    let fds = gw.metric("process_open_fds");
    assert!(fds >= 300.0, "process_open_fds {fds} with 300 clients open");
}

#[test]
fn http_1_0_requests_are_served_on_a_pooled_target_connection() {
    let m = OneMapping::new("a");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    for i in 1..=3 {
        // read to the end: the client's connection closes after an HTTP/1.0 answer
        let (status, headers, body) = raw_request(
            gw.proxy,
            &format!("GET http://localhost:{}/bytes/7 HTTP/1.0\r\n\r\n", m.port),
        )
        .expect("HTTP/1.0");
        assert_eq!((status, body.len()), (200, 7), "request {i}: {headers:?}");
        assert_eq!(header(&headers, "connection"), Some("close"), "request {i}");
    }
    // ...but the target's connection is kept: one handshake for the three (sent on as
    // HTTP/1.0, each request cost a new TLS connection).
    assert_eq!(
        (
            gw.metric("mtls_gateway_upstream_connections_total{reused=\"false\"}"),
            gw.metric("mtls_gateway_upstream_connections_total{reused=\"true\"}")
        ),
        (1.0, 2.0)
    );
}

#[test]
fn http_1_0_keep_alive_is_honoured() {
    let (m, _gw, host, mut s) = lean();
    for i in 1..=2 {
        write!(
            s,
            "GET /bytes/{i} HTTP/1.0\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"
        )
        .expect("write");
        let (status, headers, body) = read_one(&mut s);
        assert_eq!((status, body.len()), (200, i), "request {i}: {headers:?}");
        assert_eq!(
            header(&headers, "connection"),
            Some("keep-alive"),
            "{headers:?}"
        );
        assert_eq!(header(&headers, "transfer-encoding"), None);
    }
    // A 1.0 request without keep-alive on the same connection: answered, then closed.
    write!(s, "GET /bytes/3 HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("write");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to the close");
    let got = split_responses(&rest);
    assert_eq!(got.len(), 1, "{}", String::from_utf8_lossy(&rest));
    assert_eq!((got[0].0, got[0].1.len()), (200, 3));
    drop(m);
}

#[test]
fn a_chunked_answer_reaches_an_http_1_0_client_decoded_and_then_the_connection_closes() {
    let (m, gw, host, mut s) = lean();
    let n = 300_000;
    // keep-alive asked for, but a body without a length can only end with the connection
    write!(
        s,
        "GET /chunked/{n} HTTP/1.0\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read to the close");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let (status, headers, _) = mtls_gateway::demo::parse_response(&raw[..end]).expect("head");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "transfer-encoding"), None, "{headers:?}");
    assert_eq!(header(&headers, "connection"), Some("close"), "{headers:?}");
    assert!(
        raw[end..] == mtls_gateway::echo::pattern(n)[..],
        "the body must be the chunks' data only: {} bytes, starting {:?}",
        raw.len() - end,
        String::from_utf8_lossy(&raw[end..(end + 16).min(raw.len())])
    );
    // The target's connection went back to the pool after its chunked body ended.
    let (status, _, body) = raw_request(
        gw.proxy,
        &format!("GET /bytes/5 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .expect("next request");
    assert_eq!((status, body.len()), (200, 5));
    assert_eq!(
        gw.metric("mtls_gateway_upstream_connections_total{reused=\"true\"}"),
        1.0
    );
    drop(m);
}

#[test]
fn a_pooled_connection_the_target_closed_is_replaced_without_an_error() {
    let m = OneMapping::new("a");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    let url = format!("http://{}/bytes/5", gw.proxy);
    let get = || {
        raw_request(
            gw.proxy,
            &format!(
                "GET /bytes/5 HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
                m.port
            ),
        )
        .unwrap_or_else(|e| panic!("{url}: {e}"))
    };
    assert_eq!(get().0, 200);
    assert_eq!(
        gw.metric("mtls_gateway_upstream_connections_total{reused=\"false\"}"),
        1.0
    );
    assert_eq!(get().0, 200);
    assert_eq!(
        gw.metric("mtls_gateway_upstream_connections_total{reused=\"true\"}"),
        1.0
    );

    // The target restarts on the same port: the idle pooled connection is now closed.
    let echo = restart_echo(&m);
    let (status, _, body) = get();
    assert_eq!(
        (status, body.len()),
        (200, 5),
        "no 424 for a stale pooled connection"
    );
    assert_eq!(echo.requests(), 1);
    assert_eq!(
        gw.metric("mtls_gateway_upstream_connections_total{reused=\"false\"}"),
        2.0
    );
    // (not a bare "424": a port number in the log may contain it)
    assert!(!gw.logs().contains("answered 424"), "{}", gw.logs());
}

#[test]
fn a_body_cut_by_the_target_ends_the_client_connection_short() {
    let m = OneMapping::new("a");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    // The body is relayed as it arrives (the head is on its way before the body is complete),
    // so when the target fails half way the client must see a short body and a closed
    // connection, never a complete-looking response; small and large bodies alike.
    for n in [10_000usize, 1_000_000] {
        let mut s = connect(&gw);
        write!(
            s,
            "GET /cut/{n} HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            m.port
        )
        .expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
        let end = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let (status, headers, _) =
            mtls_gateway::demo::parse_response(&got[..end + 4]).expect("head");
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "content-length"),
            Some(n.to_string().as_str())
        );
        let body = got.len() - (end + 4);
        assert!(body < n, "the body must end short ({body} of {n} bytes)");
        assert!(body > 0, "the part that arrived is passed on ({n} bytes)");
    }
    assert!(gw
        .logs()
        .contains("failed after its response head was sent on"));
    // The failed connections are not pooled: the next request is served normally.
    let (status, _, body) = raw_request(
        gw.proxy,
        &format!(
            "GET /bytes/7 HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            m.port
        ),
    )
    .expect("request after the cut ones");
    assert_eq!((status, body.len()), (200, 7));
}

#[test]
fn a_refused_request_with_a_body_is_answered_and_the_connection_stays_usable() {
    let m = OneMapping::new("a");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    let mut s = connect(&gw);
    // No mapping for this target: refused by the gateway itself. The body (one read whole, one
    // over 64 KiB that would be streamed) is read and dropped, so the answer is not lost to a
    // reset and the connection can go on.
    for size in [20_000, 600_000] {
        let body = vec![b'x'; size];
        let mut req = format!(
            "POST /nowhere HTTP/1.1\r\nHost: localhost:{}\r\nContent-Length: {}\r\n\r\n",
            free_port(),
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        s.write_all(&req).expect("send");
        let (status, headers, answer) = read_one(&mut s);
        assert!(
            (400..500).contains(&status),
            "refused: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            header(&headers, "connection"),
            None,
            "kept open after {size} bytes"
        );
    }
    s.write_all(
        format!(
            "GET /bytes/3 HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            m.port
        )
        .as_bytes(),
    )
    .unwrap_or_else(|e| {
        panic!(
            "a request on the same connection: {e}; gateway log:\n{}",
            gw.logs()
        )
    });
    let (status, _, body) = read_one(&mut s);
    assert_eq!((status, body.len()), (200, 3));
    assert_eq!(
        m.echo.requests(),
        1,
        "the refused requests never reached a target"
    );
}

#[test]
fn an_idle_client_connection_is_closed_after_client_idle_timeout_secs() {
    let m = OneMapping::new("a");
    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        &format!("{GW_NO_LIMIT}{PROXY_DEFAULTS}  client_idle_timeout_secs: 1\n"),
    );
    let mut s = connect(&gw);
    write!(
        s,
        "GET /bytes/2 HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        m.port
    )
    .expect("send");
    let (status, _, _) = read_one(&mut s);
    assert_eq!(status, 200);
    // Kept open after the answer, then closed by the gateway once idle for 1 s (not 60).
    let t = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let n = s
        .read(&mut byte)
        .expect("EOF from the gateway, not our 20 s read timeout");
    assert_eq!(n, 0);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
}

#[test]
fn a_chunked_request_body_is_streamed_and_a_pipelined_request_after_it_is_served() {
    let (m, _gw, host, mut s) = lean();
    // The body's end is found by its chunked framing, so the request after it (sent in the same
    // write) is not taken for body bytes.
    s.write_all(
        format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET /bytes/4 HTTP/1.1\r\nHost: {host}\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("write");
    let (status, _, body) = read_framed(&mut s);
    assert_eq!((status, body.as_slice()), (200, b"hello world".as_slice()));
    let (status, _, body) = read_framed(&mut s);
    assert_eq!((status, body.len()), (200, 4));
    assert_eq!(m.echo.requests(), 2);
}

#[test]
fn expect_100_continue_gets_the_targets_100_before_the_body_is_sent() {
    let (_m, _gw, host, mut s) = lean();
    let body = mtls_gateway::echo::pattern(100_000);
    s.write_all(
        format!(
            "PUT /collect HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .expect("write head");
    // The client holds its body back until the target's 100 arrives through the gateway.
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (status, _) = read_head(&mut s);
    assert_eq!(status, 100, "a 100 Continue first");
    s.write_all(&body).expect("write body");
    let (status, _, echoed) = read_framed(&mut s);
    assert_eq!(status, 200);
    assert!(echoed == body, "the 100,000-byte body comes back unchanged");
    // The connection goes on.
    s.write_all(format!("GET /bytes/2 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .expect("write");
    let (status, _, b) = read_framed(&mut s);
    assert_eq!((status, b.len()), (200, 2));
}

#[test]
fn a_final_answer_to_expect_100_continue_ends_the_exchange_without_the_body() {
    let (_m, _gw, host, mut s) = lean();
    // The target answers /refuse/413 without reading the body: the client gets the answer at
    // once, not after a timeout waiting for a body it will never send.
    s.write_all(
        format!(
            "POST /refuse/413 HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("write head");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let t = std::time::Instant::now();
    let (status, _, _) = read_framed(&mut s);
    assert_eq!(status, 413);
    assert!(t.elapsed() < Duration::from_secs(5), "answered at once");
    let mut rest = [0u8; 16];
    assert_eq!(
        s.read(&mut rest).expect("the connection closes"),
        0,
        "closed: the body was never sent"
    );
}

#[test]
fn a_slow_upload_is_not_cut_by_the_upstream_read_timeout_while_it_is_still_sent() {
    let m = OneMapping::new("a");
    // The target answers /collect only once it has the whole body; the body takes about 2.4 s
    // to arrive, twice the read timeout. The timeout counts from the end of the body.
    let extra = format!(
        "rate_limit:\n  enabled: false\nupstream:\n  ca_files: [\"{}\"]\n  read_timeout_ms: 1200\n",
        m.pki.ca_path.display()
    );
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, &extra);
    let host = format!("localhost:{}", m.port);
    let mut s = connect(&gw);
    let part = vec![b'y'; 100_000];
    s.write_all(
        format!(
            "POST /collect HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
            part.len() * 5
        )
        .as_bytes(),
    )
    .expect("head");
    for _ in 0..5 {
        if let Err(e) = s.write_all(&part) {
            panic!("part: {e}; gateway log:\n{}", gw.logs());
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    let (status, _, body) = read_framed(&mut s);
    assert_eq!(
        (status, body.len()),
        (200, part.len() * 5),
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
}

#[test]
fn streamed_bodies_go_on_the_pooled_upstream_connection() {
    let (_m, gw, host, mut s) = lean();
    let big = mtls_gateway::echo::pattern(100_000);
    let mut ids = Vec::new();
    let mut req = format!("GET /bytes/1 HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    for chunked in [false, true, false] {
        s.write_all(&req).expect("send");
        let (status, headers, _) = read_framed(&mut s);
        assert_eq!(status, 200);
        ids.push(
            header(&headers, mtls_gateway::echo::HDR_CONNECTION_ID)
                .expect("the echo's connection id")
                .to_string(),
        );
        req = if chunked {
            format!(
                "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                big.len()
            )
        } else {
            format!(
                "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
                big.len()
            )
        }
        .into_bytes();
        req.extend_from_slice(&big);
        if chunked {
            req.extend_from_slice(b"\r\n0\r\n\r\n");
        }
    }
    s.write_all(&req).expect("send");
    let (status, headers, body) = read_framed(&mut s);
    assert_eq!(status, 200);
    assert!(body == big, "echoed unchanged");
    ids.push(
        header(&headers, mtls_gateway::echo::HDR_CONNECTION_ID)
            .expect("id")
            .to_string(),
    );
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one upstream connection for a GET and three streamed bodies: {ids:?}"
    );
    assert_eq!(
        gw.metric("mtls_gateway_upstream_connections_total{reused=\"false\"}"),
        1.0
    );
}

#[test]
fn a_streamed_body_skips_a_pooled_connection_the_target_closed() {
    let m = OneMapping::new("a");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, GW_NO_LIMIT);
    let host = format!("localhost:{}", m.port);
    let (status, _, _) = raw_request(
        gw.proxy,
        &format!("GET /bytes/5 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .expect("first request");
    assert_eq!(status, 200);

    // The target restarts on the same port: the idle pooled connection is now closed. A
    // streamed body cannot be sent twice, so that must be noticed before it is sent.
    let echo = restart_echo(&m);
    let big = mtls_gateway::echo::pattern(200_000);
    let mut s = connect(&gw);
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    s.write_all(&req).expect("send");
    let (status, _, body) = read_framed(&mut s);
    assert_eq!(status, 200, "no 424 for a stale pooled connection");
    assert!(body == big, "echoed unchanged");
    assert_eq!(echo.requests(), 1);
    assert_eq!(
        gw.metric("mtls_gateway_upstream_connections_total{reused=\"false\"}"),
        2.0
    );
}

#[test]
fn a_malformed_chunked_request_body_gets_a_400_naming_the_framing() {
    let (_m, _gw, host, mut s) = lean();
    // The target reads the whole body before it answers, so nothing of its answer has gone to
    // the client when the bad chunk size arrives.
    let (status, headers, body) = ask(&mut s, &format!("POST /collect HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("malformed_chunked_body"), "{text}");
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert_eq!(header(&headers, "connection"), Some("close"));
    let mut rest = [0u8; 8];
    assert_eq!(s.read(&mut rest).expect("closed"), 0);
}

#[test]
fn a_connect_tunnel_request_gets_the_gateways_405_naming_plain_http_and_the_connection_closes() {
    let (m, gw, _host, first) = lean();
    // What curl sends for an https:// URL through HTTPS_PROXY: the gateway cannot add a client
    // certificate inside a tunnel. Pingora would answer an empty 405 with `Server: Pingora`,
    // also for a target that is no URI at all.
    let targets = [format!("localhost:{}", m.port), "bad{host}:443".to_string()];
    let mut conn = Some(first);
    for target in &targets {
        let mut s = conn.take().unwrap_or_else(|| connect(&gw));
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .expect("send");
        let (status, headers, body) = read_one(&mut s);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 405, "{target}: {text}");
        assert!(
            text.contains("connect_not_supported") && text.contains("HTTP_PROXY"),
            "{target}: names the fix: {text}"
        );
        assert_eq!(header(&headers, "connection"), Some("close"), "{target}");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("closed by the gateway");
        assert!(
            rest.is_empty(),
            "{target}: nothing after the answer: {rest:?}"
        );
    }
    assert_eq!(m.echo.requests(), 0, "nothing reached the target");
    let metrics = gw.metrics();
    assert!(
        metrics.contains(
            "mtls_gateway_requests_total{mode=\"none\",outcome=\"bad_request\",status_class=\"4xx\"} 2"
        ),
        "counted as refused requests: {metrics}"
    );
}
