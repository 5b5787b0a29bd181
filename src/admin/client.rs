//! One real mutual-TLS HTTP/1.1 call, for the activate validation and the P12 tester's test call.
//!
//! BoringSSL (tokio-boring) connects with the certificate under test, verifying the target
//! against the system roots (unless `upstream.use_system_roots: false`) plus
//! `upstream.ca_files`, with SNI and host name checks. The HTTP/1.1 exchange is written by hand
//! (hyper's client is not compiled in): one request with `Connection: close`, then the response
//! head and at most [`MAX_BODY`] bytes of body (content-length, chunked or read-to-close).
//!
//! The whole call, connect to last byte, runs under one deadline (`admin.validate_timeout`).

use std::time::Duration;

use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use boring::x509::X509;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::p12::Decoded;
use crate::snapshot::split_host_port;

/// Most response body bytes kept (the rest is dropped and `truncated` set).
pub const MAX_BODY: usize = 256 * 1024;
/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

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

/// Makes the call with the decoded client certificate.
pub async fn call(
    cfg: &Config,
    client: &Decoded,
    spec: &CallSpec,
    timeout: Duration,
) -> Result<CallResult, CallError> {
    let target = Target::parse(&spec.url)?;
    if !spec
        .method
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || b == b'-')
        || spec.method.is_empty()
    {
        return Err(CallError::BadRequest(
            "the method must be an HTTP method name such as GET or POST".into(),
        ));
    }
    for (n, v) in &spec.headers {
        if v.bytes().any(|b| b == b'\r' || b == b'\n') || n.bytes().any(|b| b <= b' ') {
            return Err(CallError::BadRequest(format!(
                "header {n} contains a line break or spaces; send a single-line value"
            )));
        }
    }
    let connector = connector(cfg, client)?;
    match tokio::time::timeout(timeout, exchange(&connector, &target, spec)).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Transport(format!(
            "no complete answer from {} within {} ms (admin.validate_timeout_ms)",
            target.authority,
            timeout.as_millis()
        ))),
    }
}

struct Target {
    /// Host without brackets, for DNS / the socket.
    host: String,
    port: u16,
    /// `host[:port]` as the Host header carries it.
    authority: String,
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
        let (host, port) = split_host_port(authority).ok_or_else(bad)?;
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 443,
        };
        let path_query = if path_query.starts_with('/') {
            path_query.to_string()
        } else {
            format!("/{path_query}")
        };
        if path_query.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad());
        }
        Ok(Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            authority: authority.to_string(),
            path_query,
        })
    }
}

fn connector(cfg: &Config, client: &Decoded) -> Result<SslConnector, CallError> {
    let internal = |what: &str, e: boring::error::ErrorStack| {
        log::warn!("admin call: {what}: {e}");
        CallError::Transport(format!("cannot set up TLS ({what})"))
    };
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| internal("TLS context", e))?;
    if cfg.upstream.use_system_roots {
        b.set_default_verify_paths()
            .map_err(|e| internal("system roots", e))?;
    }
    for f in &cfg.upstream.ca_files {
        let pem = std::fs::read(f).map_err(|e| {
            log::warn!("admin call: cannot read {}: {e}", f.display());
            CallError::Transport("cannot read upstream.ca_files".into())
        })?;
        let certs = X509::stack_from_pem(&pem).map_err(|e| internal("upstream.ca_files", e))?;
        for c in certs {
            // A CA listed twice is not an error.
            let _ = b.cert_store_mut().add_cert(c);
        }
    }
    b.set_verify(SslVerifyMode::PEER);
    b.set_certificate(&client.leaf)
        .map_err(|e| internal("client certificate", e))?;
    for c in &client.chain {
        b.add_extra_chain_cert(c.clone())
            .map_err(|e| internal("client chain", e))?;
    }
    b.set_private_key(&client.key)
        .map_err(|e| internal("client key", e))?;
    Ok(b.build())
}

async fn exchange(
    connector: &SslConnector,
    target: &Target,
    spec: &CallSpec,
) -> Result<CallResult, CallError> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| {
            CallError::Transport(format!("cannot connect to {}: {e}", target.authority))
        })?;
    let _ = tcp.set_nodelay(true);
    let config = connector.configure().map_err(|e| {
        log::warn!("admin call: TLS configuration: {e}");
        CallError::Transport("cannot set up TLS".into())
    })?;
    let mut tls = tokio_boring::connect(config, &target.host, tcp)
        .await
        .map_err(|e| {
            CallError::Transport(format!(
                "TLS handshake with {} failed: {e}",
                target.authority
            ))
        })?;

    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mtls-gateway-admin\r\nAccept: */*\r\nConnection: close\r\n",
        spec.method.to_ascii_uppercase(),
        target.path_query,
        target.authority
    );
    for (n, v) in &spec.headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !spec.body.is_empty()
        || !matches!(
            spec.method.to_ascii_uppercase().as_str(),
            "GET" | "HEAD" | "DELETE"
        )
    {
        req.push_str(&format!("Content-Length: {}\r\n", spec.body.len()));
    }
    req.push_str("\r\n");
    let transport = |e: std::io::Error| {
        CallError::Transport(format!(
            "the connection to {} failed: {e}",
            target.authority
        ))
    };
    tls.write_all(req.as_bytes()).await.map_err(transport)?;
    tls.write_all(&spec.body).await.map_err(transport)?;
    tls.flush().await.map_err(transport)?;

    let mut buf = Vec::with_capacity(8192);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(CallError::Transport(format!(
                "{} sent a response head longer than {MAX_HEAD} bytes",
                target.authority
            )));
        }
        let mut chunk = [0u8; 8192];
        let n = tls.read(&mut chunk).await.map_err(transport)?;
        if n == 0 {
            return Err(CallError::Transport(format!(
                "{} closed the connection without an HTTP response (did it refuse the client certificate?)",
                target.authority
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            CallError::Transport(format!("{} did not answer with HTTP/1.x", target.authority))
        })?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut result = CallResult {
        status,
        headers,
        body: String::new(),
        truncated: false,
    };
    let no_body = spec.head_only
        || spec.method.eq_ignore_ascii_case("HEAD")
        || status == 204
        || status == 304
        || (100..200).contains(&status);
    if no_body {
        return Ok(result);
    }
    let header = |name: &str| {
        result
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
    let (body, truncated) = if chunked {
        read_chunked(&mut tls, rest).await.map_err(transport)?
    } else {
        let want = length.unwrap_or(usize::MAX);
        while rest.len() < want.min(MAX_BODY + 1) {
            let mut chunk = [0u8; 8192];
            let n = tls.read(&mut chunk).await.map_err(transport)?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        let truncated = rest.len() > MAX_BODY;
        rest.truncate(want.min(MAX_BODY));
        (rest, truncated)
    };
    result.body = String::from_utf8_lossy(&body).into_owned();
    result.truncated = truncated;
    Ok(result)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// De-chunks a chunked body, keeping at most [`MAX_BODY`] bytes.
async fn read_chunked<S: AsyncRead + Unpin>(
    s: &mut S,
    mut buf: Vec<u8>,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunked encoding");
    loop {
        // Chunk size line.
        let line_end = loop {
            if let Some(i) = find(&buf, b"\r\n") {
                break i;
            }
            if buf.len() > 1024 || !fill(s, &mut buf).await? {
                return Err(bad());
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        buf.drain(..line_end + 2);
        if size == 0 {
            return Ok((out, false));
        }
        let room = MAX_BODY - out.len();
        if size > room {
            while buf.len() < room && fill(s, &mut buf).await? {}
            let take = room.min(buf.len());
            out.extend_from_slice(&buf[..take]);
            return Ok((out, true));
        }
        while buf.len() < size + 2 {
            if !fill(s, &mut buf).await? {
                return Err(bad());
            }
        }
        out.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let n = s.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}
