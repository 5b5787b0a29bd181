//! One mutual-TLS HTTP/1.1 call for the admin: the activate validation and the P12 tester's test
//! call. Built only from the parts production traffic uses, so a call that succeeds here is one
//! the proxy could make with the same certificate:
//!
//! - DNS through the shared [`Resolver`] (async, cached);
//! - TCP and TLS through the shared [`TlsClient`]: the one trust bundle (system roots unless
//!   `upstream.use_system_roots: false`, plus `upstream.ca_files`, assembled once by
//!   `trust_bundle` in `lib.rs`; with no `ca_files`, the system default paths), TLS 1.2 to 1.3,
//!   SNI and the target's name (or IP) verified, the certificate under test presented;
//! - the request head written canonically: origin-form, the path checked
//!   ([`codec::check_uri_chars`]) and its dot-segments resolved ([`codec::resolve_path`]) as the
//!   proxy does, `Host`, `Content-Length` when there is a body (or the method expects one),
//!   `Connection: close`;
//! - the response head parsed with httparse (interim 1xx answers skipped) and the body read by
//!   its framing, as the lean loop reads it: chunked through the strict [`ChunkedDecoder`],
//!   `Content-Length`, or until close. Both framings at once, or differing `Content-Length`
//!   values, are refused. At most [`MAX_BODY`] bytes are kept (`truncated` set).
//!
//! The whole call, DNS to last byte, runs under one deadline (`admin.validate_timeout`).

use std::time::Duration;

use pingora::utils::tls::CertKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Resolver, TlsClient};
use crate::http1::codec::{self, ChunkedDecoder, Framing};
use crate::snapshot::split_host_port;

/// Most response body bytes kept (the rest is dropped and `truncated` set).
pub const MAX_BODY: usize = 256 * 1024;
/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 96;
/// Most interim (1xx) answers skipped before the final one.
const MAX_INTERIM: usize = 8;
const READ_CHUNK: usize = 16 * 1024;

/// What to send.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub method: String,
    pub url: String,
    /// Extra request headers (content type, authorization override).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Stop after the response head (the activate validation needs only the status).
    pub head_only: bool,
}

/// What came back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallResult {
    pub status: u16,
    /// Names in lower case, values as sent (lossy UTF-8, trimmed).
    pub headers: Vec<(String, String)>,
    /// Lossy UTF-8 of the body.
    pub body: String,
    pub truncated: bool,
}

/// Why the call failed: the target side (424 material) or the request itself (400).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Transport(String),
}

/// Headers the call writes itself; a caller may not set them.
const MANAGED: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
];

/// Makes the call, presenting `cert`, through the shared resolver and TLS connector.
pub async fn call(
    tls: &TlsClient,
    resolver: &Resolver,
    cert: &CertKey,
    spec: &CallSpec,
    timeout: Duration,
) -> Result<CallResult, CallError> {
    let target = Target::parse(&spec.url)?;
    let request = request_head(&target, spec)?;
    match tokio::time::timeout(
        timeout,
        exchange(tls, resolver, cert, &target, spec, &request),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(CallError::Transport(format!(
            "no complete answer from {} within {} ms (admin.validate_timeout_ms)",
            target.authority,
            timeout.as_millis()
        ))),
    }
}

#[derive(Debug)]
struct Target {
    /// Host without brackets: SNI, name verification and DNS.
    host: String,
    port: u16,
    /// `host[:port]` as the Host header carries it.
    authority: String,
    /// Checked and resolved origin-form target.
    path_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, CallError> {
        let bad = || {
            CallError::BadRequest(
                "the URL must be an absolute https URL, e.g. https://api.example.com/path".into(),
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("https") {
            return Err(CallError::BadRequest(
                "the URL must use https (the call presents a client certificate over TLS)".into(),
            ));
        }
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_query) = rest.split_at(end);
        let (host, port) = split_host_port(authority).ok_or_else(|| {
            CallError::BadRequest(format!(
                "the URL's host {authority:?} is not a host[:port] (no user info, a numeric port)"
            ))
        })?;
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 443,
        };
        let path_query = if path_query.starts_with('/') {
            path_query.to_string()
        } else {
            format!("/{path_query}")
        };
        codec::check_uri_chars(&path_query, "the URL's path").map_err(CallError::BadRequest)?;
        let path_query = codec::resolve_path(&path_query)
            .map_err(|e| CallError::BadRequest(format!("the URL's path: {e}")))?;
        Ok(Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port,
            authority: authority.to_ascii_lowercase(),
            path_query,
        })
    }
}

/// The request head, canonical: request line in origin-form, `Host`, the caller's headers,
/// `Content-Length` when there is a body or the method expects one, `Connection: close`.
fn request_head(target: &Target, spec: &CallSpec) -> Result<Vec<u8>, CallError> {
    let method = spec.method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
        return Err(CallError::BadRequest(
            "the method must be an HTTP method name such as GET or POST".into(),
        ));
    }
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mtls-gateway-admin\r\nAccept: */*\r\n",
        target.path_query, target.authority
    );
    for (n, v) in &spec.headers {
        if n.is_empty() || !n.bytes().all(codec::is_tchar) {
            return Err(CallError::BadRequest(format!(
                "header name {n:?} is not a token (letters, digits, and !#$%&'*+-.^_`|~)"
            )));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(CallError::BadRequest(format!(
                "header {n} contains a line break; send a single-line value"
            )));
        }
        if MANAGED.iter().any(|m| n.eq_ignore_ascii_case(m)) {
            return Err(CallError::BadRequest(format!(
                "header {n} is written by the gateway itself"
            )));
        }
        head.push_str(&format!("{n}: {}\r\n", v.trim()));
    }
    if !spec.body.is_empty() || !matches!(method.as_str(), "GET" | "HEAD" | "DELETE") {
        head.push_str(&format!("Content-Length: {}\r\n", spec.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&spec.body);
    Ok(out)
}

async fn exchange(
    tls: &TlsClient,
    resolver: &Resolver,
    cert: &CertKey,
    target: &Target,
    spec: &CallSpec,
    request: &[u8],
) -> Result<CallResult, CallError> {
    // Keyed by `host[:port]`, as the proxy keys it, so both share the cache entry.
    let addr = resolver
        .resolve(&target.authority, &target.host, target.port)
        .await
        .map_err(|e| CallError::Transport(format!("cannot resolve {}: {e}", target.authority)))?;
    let mut conn = tls
        .connect(addr, &target.host, Some(cert))
        .await
        .map_err(|e| {
            let cause = e
                .cause
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            let context = e
                .context
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            CallError::Transport(format!("{}: {context}{cause}", e.etype().as_str()))
        })?;
    let transport = |e: std::io::Error| {
        CallError::Transport(format!(
            "the connection to {} failed: {e}",
            target.authority
        ))
    };
    conn.write_all(request).await.map_err(transport)?;
    conn.flush().await.map_err(transport)?;
    let no_body = spec.head_only || spec.method.eq_ignore_ascii_case("HEAD");
    read_response(&mut conn, &target.authority, no_body).await
}

/// Reads one response from `s`: the head (after any interim 1xx), then the body by its framing
/// unless `no_body` (a HEAD request, or only the status wanted).
async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    authority: &str,
    no_body: bool,
) -> Result<CallResult, CallError> {
    let fail = |what: String| CallError::Transport(format!("{authority} {what}"));
    let io = |e: std::io::Error| fail(format!("connection failed while reading the answer: {e}"));
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut interim = 0;
    let (status, headers, framing) = loop {
        let parsed = {
            let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut r = httparse::Response::new(&mut hdrs);
            match r.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).trim().to_string(),
                            )
                        })
                        .collect();
                    let framing = if (100..200).contains(&status) && status != 101 {
                        None // interim: skipped
                    } else {
                        Some(
                            codec::response_framing(status, r.headers, no_body)
                                .map_err(|why| fail(why.to_string()))?,
                        )
                    };
                    Some((n, status, headers, framing))
                }
                Ok(httparse::Status::Partial) => None,
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(fail(format!(
                        "sent a response head with more than {MAX_HEADERS} header fields"
                    )))
                }
                Err(e) => {
                    return Err(fail(format!(
                        "sent an invalid HTTP/1.x response head ({e})"
                    )))
                }
            }
        };
        match parsed {
            Some((n, status, headers, framing)) => {
                buf.drain(..n);
                match framing {
                    Some(framing) => break (status, headers, framing),
                    None => {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(fail(format!(
                                "sent more than {MAX_INTERIM} interim answers"
                            )));
                        }
                    }
                }
            }
            None => {
                if buf.len() > MAX_HEAD {
                    return Err(fail(format!(
                        "sent a response head longer than {MAX_HEAD} bytes"
                    )));
                }
                if fill(s, &mut buf).await.map_err(io)? == 0 {
                    return Err(fail(if buf.is_empty() {
                        "closed the connection without an HTTP response (did it refuse the client certificate?)".into()
                    } else {
                        "closed the connection in the middle of the response head".into()
                    }));
                }
            }
        }
    };
    let mut result = CallResult {
        status,
        headers,
        body: String::new(),
        truncated: false,
    };
    let (body, truncated) = match framing {
        Framing::None => (Vec::new(), false),
        Framing::Length(n) => {
            let want = usize::try_from(n).unwrap_or(usize::MAX);
            let keep = want.min(MAX_BODY);
            while buf.len() < keep {
                if fill(s, &mut buf).await.map_err(io)? == 0 {
                    return Err(fail(format!(
                        "closed the connection after {} of {n} body bytes (Content-Length)",
                        buf.len()
                    )));
                }
            }
            buf.truncate(keep);
            (buf, want > MAX_BODY)
        }
        Framing::UntilClose => {
            while buf.len() <= MAX_BODY {
                if fill(s, &mut buf).await.map_err(io)? == 0 {
                    break;
                }
            }
            let truncated = buf.len() > MAX_BODY;
            buf.truncate(MAX_BODY);
            (buf, truncated)
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut out = Vec::new();
            loop {
                let chunk_err =
                    |e: codec::ChunkError| fail(format!("sent a malformed chunked body: {e}"));
                if !buf.is_empty() {
                    let ended = dec.feed(&buf, &mut out).map_err(chunk_err)?;
                    buf.clear();
                    if ended.is_some() && out.len() <= MAX_BODY {
                        break (out, false);
                    }
                }
                if out.len() > MAX_BODY {
                    // Over the bound, whether the body ended in this read or goes on.
                    out.truncate(MAX_BODY);
                    break (out, true);
                }
                if fill(s, &mut buf).await.map_err(io)? == 0 {
                    return Err(fail(
                        "closed the connection before the end of the chunked body".into(),
                    ));
                }
            }
        }
    };
    result.body = String::from_utf8_lossy(&body).into_owned();
    result.truncated = truncated;
    Ok(result)
}

/// Reads more into `buf`; the number of bytes read (0: end of stream).
async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = s.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(raw: &[u8]) -> Result<CallResult, CallError> {
        let mut s = raw;
        read_response(&mut s, "t.test", false).await
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_strictly() {
        let ok = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n")
            .await
            .expect("valid chunked body");
        assert_eq!(
            (ok.status, ok.body.as_str(), ok.truncated),
            (200, "hello!", false)
        );

        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        ] {
            match read(bad).await {
                Err(CallError::Transport(m)) => assert!(m.contains("chunked"), "{m}"),
                other => panic!("accepted {:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        // Cut short, or framed two ways: refused too.
        assert!(
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
                .await
                .is_err()
        );
        assert!(read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .await
        .is_err());
        assert!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_huge_body_is_truncated_at_max_body() {
        let head = &b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n"[..];
        let mut s = head.chain(tokio::io::repeat(b'a'));
        let r = read_response(&mut s, "t.test", false)
            .await
            .expect("answer");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), MAX_BODY);
        assert!(r.truncated);

        // Chunked and until-close bodies too.
        let head = &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n"[..];
        let mut s = head.chain(tokio::io::repeat(b'b'));
        let r = read_response(&mut s, "t.test", false)
            .await
            .expect("answer");
        assert_eq!((r.body.len(), r.truncated), (MAX_BODY, true));
        // A chunked body one byte over the bound that ends in the same read.
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(format!("{:x}\r\n", MAX_BODY + 1).as_bytes());
        raw.extend(std::iter::repeat_n(b'd', MAX_BODY + 1));
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        let r = read(&raw).await.expect("answer");
        assert_eq!((r.body.len(), r.truncated), (MAX_BODY, true));
        let head = &b"HTTP/1.0 200 OK\r\n\r\n"[..];
        let mut s = head.chain(tokio::io::repeat(b'c'));
        let r = read_response(&mut s, "t.test", false)
            .await
            .expect("answer");
        assert_eq!((r.body.len(), r.truncated), (MAX_BODY, true));

        // A short body is kept whole; interim answers are skipped; HEAD has no body.
        let r = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nX: y\r\n\r\nok")
            .await
            .expect("answer");
        assert_eq!((r.status, r.body.as_str(), r.truncated), (201, "ok", false));
        assert!(r.headers.contains(&("x".into(), "y".into())));
        let mut s = &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"[..];
        let r = read_response(&mut s, "t.test", true).await.expect("head");
        assert_eq!((r.status, r.body.as_str()), (200, ""));
    }

    #[test]
    fn the_request_head_is_canonical() {
        let spec = |url: &str| CallSpec {
            method: "post".into(),
            url: url.into(),
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"hi".to_vec(),
            head_only: false,
        };
        let s = spec("https://API.test:8443/a/./b/../c?q=1#frag");
        let t = Target::parse(&s.url).expect("url");
        assert_eq!((t.host.as_str(), t.port), ("api.test", 8443));
        let head = String::from_utf8(request_head(&t, &s).expect("head")).expect("utf8");
        assert_eq!(
            head,
            "POST /a/c?q=1 HTTP/1.1\r\nHost: api.test:8443\r\nUser-Agent: mtls-gateway-admin\r\nAccept: */*\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        for bad in [
            "http://api.test/",
            "https://user@api.test/",
            "https://api.test/a b",
            "https://api.test/a/%2e%2e/b",
            "https://api.test/a%2Fb",
            "https://api.test/{x}",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(CallError::BadRequest(_))),
                "{bad}"
            );
        }
        let mut s = spec("https://api.test/");
        s.headers
            .push(("Transfer-Encoding".into(), "chunked".into()));
        let t = Target::parse(&s.url).expect("url");
        assert!(matches!(
            request_head(&t, &s),
            Err(CallError::BadRequest(_))
        ));
        s.headers = vec![("X-A".into(), "1\r\nX-B: 2".into())];
        assert!(matches!(
            request_head(&t, &s),
            Err(CallError::BadRequest(_))
        ));
    }
}
