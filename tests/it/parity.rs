//! No observable difference between the two engines (issue 19, deliverable 2): the same cases go
//! through the lean HTTP/1 loop (`src/http1`) and through Pingora's path (`src/proxy.rs`, which
//! serves HTTP/2 with prior knowledge), and the test asserts, case by case, that the target
//! received the same head and body (its method, resolved path, Host, field names, body framing
//! and body, as the echo target reports them) and that the client got the same status, the same
//! headers that matter and the same body: header rules, refusals, 424s (refused, timed out, TLS
//! below 1.2), paths.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use boring::ssl::{SslAcceptor, SslMethod, SslVersion};

use crate::common::*;
use crate::fast::h2_ask;

/// One request, rendered for either engine.
struct Case {
    name: &'static str,
    method: &'static str,
    /// Transparent mode: `http://authority/path`; forward mode: `/mtls/account/acc`.
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// What the client saw, reduced to what must not differ between engines.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    /// Response headers that matter, lower-case name = value (`lp-error-from-transport` cut to
    /// its error type: the context after it is each connector's own wording).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

const COMPARED: [&str; 12] = [
    "content-type",
    "www-authenticate",
    "retry-after",
    "lp-message-from-transport",
    "lp-error-from-transport",
    "x-client-cert-subject",
    "x-client-cert-sha256",
    "x-seen-method",
    "x-seen-path",
    "x-seen-host",
    "x-seen-header-names",
    "x-seen-framing",
];

fn reduce(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Seen {
    let mut kept: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| COMPARED.contains(&k.as_str()))
        .map(|(k, v)| {
            if k == "lp-error-from-transport" {
                let t = v.split(':').next().unwrap_or("").to_string();
                (k, t)
            } else {
                (k, v)
            }
        })
        .collect();
    kept.sort();
    Seen {
        status,
        headers: kept,
        body,
    }
}

fn over_http1(proxy: SocketAddr, c: &Case) -> Seen {
    let host = match c.target.strip_prefix("http://") {
        Some(rest) => rest.split('/').next().unwrap_or("").to_string(),
        None => proxy.to_string(),
    };
    let mut req = format!("{} {} HTTP/1.1\r\nHost: {host}\r\n", c.method, c.target);
    for (k, v) in &c.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !c.body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", c.body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&c.body);
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(&bytes).expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let (status, headers, body) = mtls_gateway::demo::parse_response(&buf).expect("response");
    reduce(status, headers, body)
}

async fn over_h2(
    client: &h2::client::SendRequest<bytes::Bytes>,
    proxy: SocketAddr,
    c: &Case,
) -> Seen {
    let uri = if c.target.starts_with("http://") {
        c.target.clone()
    } else {
        format!("http://{proxy}{}", c.target)
    };
    let mut b = http::Request::builder().method(c.method).uri(uri);
    for (k, v) in &c.headers {
        b = b.header(*k, v.as_str());
    }
    if !c.body.is_empty() {
        b = b.header("content-length", c.body.len().to_string());
    }
    let req = b.body(()).expect("request");
    let body: Option<&'static [u8]> = if c.body.is_empty() {
        None
    } else {
        Some(Box::leak(c.body.clone().into_boxed_slice()))
    };
    let (status, headers, out) = h2_ask(client, req, body).await;
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    reduce(status, headers, out)
}

/// A TLS target that speaks nothing newer than TLS 1.1.
fn tls11_target(pki: &Pki) -> SocketAddr {
    let mut b = SslAcceptor::mozilla_intermediate(SslMethod::tls()).expect("acceptor");
    b.set_certificate(&pki.server.cert).expect("cert");
    b.set_private_key(&pki.server.key).expect("key");
    b.set_min_proto_version(Some(SslVersion::TLS1))
        .expect("min");
    b.set_max_proto_version(Some(SslVersion::TLS1_1))
        .expect("max");
    let _ = b.set_cipher_list("ALL");
    let acceptor = Arc::new(b.build());
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().take(50).flatten() {
            let a = acceptor.clone();
            std::thread::spawn(move || {
                if let Ok(mut tls) = a.accept(s) {
                    use std::io::Write;
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_lean_loop_and_pingoras_path_answer_every_case_alike() {
    let m = OneMapping::new("parity");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let old_tls = tls11_target(&m.pki).port();
    let p = m.port;
    m.seed.mappings(
        "acc",
        &[
            (10, "TEST_SERVICE", &format!("https://localhost:{p}/*"), 1),
            (
                11,
                "TEST_SERVICE",
                &format!("https://localhost:{dead}/*"),
                1,
            ),
            (
                12,
                "TEST_SERVICE",
                &format!("https://localhost:{old_tls}/*"),
                1,
            ),
        ],
    );
    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        &format!(
            "rate_limit:\n  enabled: false\nupstream:\n  ca_files: [\"{}\"]\n  connect_timeout_ms: 1000\n  read_timeout_ms: 1000\n",
            m.pki.ca_path.display()
        ),
    );
    let t = |path: &str| format!("http://localhost:{p}{path}");
    let fwd = || "/mtls/account/acc".to_string();
    let body = pattern_body(100 * 1024);
    let cases = vec![
        Case {
            name: "transparent GET: header rules",
            method: "GET",
            target: t("/headers?x=1"),
            headers: vec![
                ("x-app", "1".into()),
                ("lp-debug", "x".into()),
                ("x-mtls-account", "acc".into()),
                ("proxy-authorization", "Basic eA==".into()),
                ("authorization", "Bearer for-the-target".into()),
                ("x-forwarded-for", "10.0.0.1".into()),
                ("te", "trailers".into()),
                ("user-agent", "parity".into()),
            ],
            body: vec![],
        },
        Case {
            name: "transparent POST: body and content-type",
            method: "POST",
            target: t("/collect"),
            headers: vec![("content-type", "application/json".into())],
            body: br#"{"amount":100}"#.to_vec(),
        },
        Case {
            name: "transparent POST: 100 KiB body",
            method: "POST",
            target: t("/collect"),
            headers: vec![],
            body: body.clone(),
        },
        Case {
            name: "transparent PUT echo",
            method: "PUT",
            target: t("/echo"),
            headers: vec![("content-type", "text/plain".into())],
            body: b"put me".to_vec(),
        },
        Case {
            name: "transparent HEAD",
            method: "HEAD",
            target: t("/bytes/10"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "transparent DELETE",
            method: "DELETE",
            target: t("/x"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "target status passed through",
            method: "GET",
            target: t("/status/404"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "chunked answer",
            method: "GET",
            target: t("/chunked/5000"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "dot-segments resolved",
            method: "GET",
            target: t("/a/./b/../c?q=/../x"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "encoded slash refused",
            method: "GET",
            target: t("/a%2Fb"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "encoded dot-segment refused",
            method: "GET",
            target: t("/a/%2e%2e/b"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "unmapped host refused",
            method: "GET",
            target: format!("http://127.0.0.1:{p}/x"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "unknown service refused",
            method: "GET",
            target: t("/x"),
            headers: vec![("x-mtls-service", "NOPE".into())],
            body: vec![],
        },
        Case {
            name: "forward: override replaces the caller's Authorization",
            method: "POST",
            target: fwd(),
            headers: vec![
                ("lp-forward-url", format!("https://localhost:{p}/collect")),
                ("lp-service-name", "TEST_SERVICE".into()),
                ("authorization", "Bearer the-gateways".into()),
                ("lp-authorization-override", "Bearer the-targets".into()),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
            body: b"a=1&b=2".to_vec(),
        },
        Case {
            name: "forward: GET /headers",
            method: "GET",
            target: fwd(),
            headers: vec![
                ("lp-forward-url", format!("https://localhost:{p}/headers")),
                ("lp-service-name", "TEST_SERVICE".into()),
                ("lp-authorization-override", "Bearer the-targets".into()),
                ("x-app", "2".into()),
            ],
            body: vec![],
        },
        Case {
            name: "forward: missing LP-forward-url",
            method: "POST",
            target: fwd(),
            headers: vec![("lp-service-name", "TEST_SERVICE".into())],
            body: vec![],
        },
        Case {
            name: "forward: space in LP-forward-url",
            method: "POST",
            target: fwd(),
            headers: vec![
                ("lp-forward-url", format!("https://localhost:{p}/a b")),
                ("lp-service-name", "TEST_SERVICE".into()),
            ],
            body: vec![],
        },
        Case {
            name: "forward: dot-segments leave the mapping",
            method: "POST",
            target: fwd(),
            headers: vec![
                ("lp-forward-url", "https://other.test/api/../x".to_string()),
                ("lp-service-name", "TEST_SERVICE".into()),
            ],
            body: vec![],
        },
        Case {
            name: "forward: method not forwarded",
            method: "OPTIONS",
            target: fwd(),
            headers: vec![
                ("lp-forward-url", format!("https://localhost:{p}/x")),
                ("lp-service-name", "TEST_SERVICE".into()),
            ],
            body: vec![],
        },
        Case {
            name: "424: connection refused",
            method: "GET",
            target: format!("http://localhost:{dead}/x"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "424: read timeout",
            method: "GET",
            target: t("/slow/3000"),
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "424: target below TLS 1.2",
            method: "GET",
            target: format!("http://localhost:{old_tls}/x"),
            headers: vec![],
            body: vec![],
        },
    ];
    assert!(cases.len() >= 20);

    let tcp = tokio::net::TcpStream::connect(gw.proxy)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    let mut differ = Vec::new();
    for c in &cases {
        let proxy = gw.proxy;
        let h1 = {
            let c2 = Case {
                name: c.name,
                method: c.method,
                target: c.target.clone(),
                headers: c.headers.clone(),
                body: c.body.clone(),
            };
            tokio::task::spawn_blocking(move || over_http1(proxy, &c2))
                .await
                .expect("http/1 case")
        };
        let h2 = over_h2(&client, gw.proxy, c).await;
        eprintln!("{:<55} HTTP/1.1 {} | h2c {}", c.name, h1.status, h2.status);
        if h1 != h2 {
            differ.push(format!(
                "{}:\n  HTTP/1.1: {:?} {:?} {:?}\n  h2c:      {:?} {:?} {:?}",
                c.name,
                h1.status,
                h1.headers,
                String::from_utf8_lossy(&h1.body[..h1.body.len().min(300)]),
                h2.status,
                h2.headers,
                String::from_utf8_lossy(&h2.body[..h2.body.len().min(300)])
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "the engines differ in {} of {} cases:\n{}",
        differ.len(),
        cases.len(),
        differ.join("\n")
    );
    // The cases did reach the target (not two identical failures).
    assert!(m.echo.requests() >= 2 * 9, "{}", m.echo.requests());
}

fn pattern_body(n: usize) -> Vec<u8> {
    mtls_gateway::echo::pattern(n)
}
