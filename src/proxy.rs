//! Pingora's HTTP/2 server, the adapter for connections that open with HTTP/2's preface (h2c
//! with prior knowledge). Pingora multiplexes the streams; each stream is then served by the one
//! request path, the lean loop (`crate::http1::conn::Lean`): the stream is written as the
//! HTTP/1.1 request it stands for (origin-form, `:authority` as `Host`, its fields, its body with
//! `Content-Length`) into an in-memory pipe, the lean loop serves it exactly as it serves a
//! request from a socket (strict parse, `Gateway::admit`, `HeaderPolicy`, the upstream module's
//! resolver, connector and pool, the retry rule, the 424), and its HTTP/1.1 answer is read back
//! from the pipe and sent on the stream.
//!
//! So there is one decision, one upstream head, one connector and one pool whatever the engine;
//! `tests/it/parity.rs` checks that the target and the client see no difference. What the pipe
//! costs (a copy of each body, both ways) is paid by HTTP/2 streams only.
//!
//! Bounds: a stream's request body is read whole first, at most [`H2_MAX_BODY`] (413 beyond), so
//! that the request can be written to the pipe while the answer is read from it; the stream's
//! reads and writes have `proxy.client_timeout_secs` each.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
};
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use crate::http1::codec::ChunkedDecoder;
use crate::http1::conn::Lean;

/// The largest request body of an HTTP/2 stream (read whole before it is written to the pipe).
pub const H2_MAX_BODY: usize = 8 * 1024 * 1024;
/// The pipe's buffer each way.
const PIPE: usize = 64 * 1024;
/// Header fields of an answer read back from the pipe.
const MAX_HEADERS: usize = 128;

/// Pingora's `ProxyHttp` for HTTP/2 streams: every stream is answered in `request_filter` by
/// the lean loop (see the module documentation); Pingora's own upstream phases never run.
pub struct H2Streams {
    lean: Arc<Lean>,
}

impl H2Streams {
    pub(crate) fn new(lean: Arc<Lean>) -> H2Streams {
        H2Streams { lean }
    }
}

/// One end of the in-memory pipe, as a Pingora stream (the lean loop reads requests from and
/// writes answers to a `pingora::protocols::Stream`).
#[derive(Debug)]
struct Pipe(DuplexStream);

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Pipe {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.0).await;
    }
}
impl UniqueID for Pipe {
    fn id(&self) -> UniqueIDType {
        0
    }
}
impl Ssl for Pipe {}
impl GetTimingDigest for Pipe {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        Vec::new()
    }
}
impl GetProxyDigest for Pipe {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        None
    }
}
impl GetSocketDigest for Pipe {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        None
    }
}
impl Peek for Pipe {}

/// A JSON answer from the adapter itself (the only one: a body over [`H2_MAX_BODY`]).
async fn respond_json(
    session: &mut Session,
    status: StatusCode,
    body: serde_json::Value,
) -> Result<()> {
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// The HTTP/1.1 request an HTTP/2 stream stands for: origin-form with its path, `:authority`
/// as `Host` (or its `host` field), its fields (HTTP/2 has no connection-specific ones), and the
/// body with its `Content-Length`. The lean loop parses it strictly like any other.
fn as_http1(session: &Session, body: &[u8]) -> Vec<u8> {
    let req = session.req_header();
    let authority = req
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let path = req
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in req.headers.iter() {
        let n = name.as_str();
        if matches!(
            n,
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let has_length = req.headers.get(http::header::CONTENT_LENGTH).is_some();
    if !body.is_empty() || has_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Read the lean loop's HTTP/1.1 answer from the pipe and send it on the stream: the status and
/// fields (less the connection-specific ones HTTP/2 forbids), then the body by its framing
/// (`Content-Length`, the gateway's own chunks, or to the close). Interim 1xx answers are not
/// sent on. `Ok(status)`, 0 when the pipe closed before an answer.
async fn relay_answer<R: AsyncRead + Unpin>(
    session: &mut Session,
    pipe: &mut R,
    is_head: bool,
) -> Result<u16> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let (resp, framing, head_len) = loop {
        let n = pipe
            .read(&mut chunk)
            .await
            .or_err(ReadError, "reading the answer from the pipe")?;
        if n == 0 {
            return Ok(0);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut hdrs);
        let head_len = match r.parse(&buf) {
            Ok(httparse::Status::Complete(h)) => h,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Error::e_explain(InvalidHTTPHeader, format!("piped answer: {e}")),
        };
        let status = r.code.unwrap_or(500);
        if (100..200).contains(&status) {
            buf.drain(..head_len);
            continue;
        }
        let mut resp = ResponseHeader::build(status, Some(r.headers.len()))?;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        for h in r.headers.iter() {
            let n = h.name.to_ascii_lowercase();
            match n.as_str() {
                "connection" | "keep-alive" | "proxy-connection" | "upgrade" => continue,
                "transfer-encoding" => {
                    chunked = true;
                    continue;
                }
                "content-length" => {
                    length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                }
                _ => {}
            }
            resp.append_header(n, h.value)?;
        }
        let framing = if is_head || status == 204 || status == 304 {
            Some(0)
        } else if chunked {
            None
        } else {
            length.or(Some(u64::MAX))
        };
        break (resp, framing, head_len);
    };
    let status = resp.status.as_u16();
    buf.drain(..head_len);
    let no_body = framing == Some(0);
    session
        .write_response_header(Box::new(resp), no_body)
        .await?;
    if no_body {
        return Ok(status);
    }
    // The body: `Some(n)` bytes (u64::MAX: to the close), `None`: chunked.
    let mut left = framing.unwrap_or(0);
    let mut dec = ChunkedDecoder::new();
    let mut data = Vec::with_capacity(16 * 1024);
    loop {
        if !buf.is_empty() {
            data.clear();
            let done = match framing {
                Some(_) => {
                    let take = (buf.len() as u64).min(left) as usize;
                    data.extend_from_slice(&buf[..take]);
                    if left != u64::MAX {
                        left -= take as u64;
                    }
                    buf.clear();
                    left == 0
                }
                None => {
                    let end = dec.feed(&buf, &mut data).map_err(|e| {
                        Error::explain(InvalidHTTPHeader, format!("piped chunked answer: {e}"))
                    })?;
                    buf.clear();
                    end.is_some()
                }
            };
            if done {
                session
                    .write_response_body(Some(Bytes::from(std::mem::take(&mut data))), true)
                    .await?;
                return Ok(status);
            }
            if !data.is_empty() {
                session
                    .write_response_body(Some(Bytes::copy_from_slice(&data)), false)
                    .await?;
            }
        }
        let n = pipe
            .read(&mut chunk)
            .await
            .or_err(ReadError, "reading the answer body from the pipe")?;
        if n == 0 {
            if framing == Some(u64::MAX) {
                session.write_response_body(None, true).await?;
                return Ok(status);
            }
            // The lean loop cut the answer (the target failed in the middle of the body).
            return Error::e_explain(ConnectionClosed, "the answer ended early");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[async_trait]
impl ProxyHttp for H2Streams {
    type CTX = ();

    fn new_ctx(&self) {}

    /// No downstream modules: the answer is the lean loop's, unchanged.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let timeout = self.lean.client_timeout();
        session.set_read_timeout(Some(timeout));
        session.set_write_timeout(Some(timeout));
        // 1. The stream's body, whole (bounded).
        let mut body = Vec::new();
        while let Some(part) = session.read_request_body().await? {
            if body.len() + part.len() > H2_MAX_BODY {
                let _ = respond_json(
                    session,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": "body_too_large", "message": format!("an HTTP/2 request body is limited to {H2_MAX_BODY} bytes; send larger bodies over HTTP/1.1, where they stream"), "limit": H2_MAX_BODY}),
                )
                .await;
                return Ok(true);
            }
            body.extend_from_slice(&part);
        }
        let request = as_http1(session, &body);
        let is_head = session.req_header().method == http::Method::HEAD;
        let peer: Option<IpAddr> = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());

        // 2. The lean loop serves it on the pipe while the request goes in and the answer
        //    comes out.
        let (client, server) = tokio::io::duplex(PIPE);
        let (mut from_lean, mut to_lean) = tokio::io::split(client);
        let serve = self.lean.serve_piped(Box::new(Pipe(server)), peer);
        let send = async {
            let _ = to_lean.write_all(&request).await;
            // The answer may come before the whole request was taken (a refusal): nothing
            // more to do then.
        };
        let answer = relay_answer(session, &mut from_lean, is_head);
        let ((), (), answered) = tokio::join!(serve, send, answer);
        match answered {
            Ok(0) => Error::e_explain(ConnectionClosed, "no answer for the stream"),
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Never called: every stream is answered in `request_filter`.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            InternalError,
            "HTTP/2 streams are served by the lean loop in request_filter",
        )
    }

    /// A client that goes away before its answer is not the gateway's error.
    fn suppress_error_log(&self, _session: &Session, _ctx: &(), error: &Error) -> bool {
        matches!(error.etype(), ConnectionClosed | ReadError | WriteError)
    }
}
