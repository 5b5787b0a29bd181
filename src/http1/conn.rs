//! The proxy listener's HTTP/1.1 engine: a lean request loop for ordinary requests, Pingora's
//! proxy for everything else.
//!
//! Why: on the load harness, Pingora's general proxy path (HTTP/1 session objects, header maps,
//! the duplex body tasks of `proxy_h1`, the pool's idle-watch task per released connection) cost
//! about twice nginx's CPU per request, and on a sidecar the CPU per request *is* the throughput
//! (see docs/performance.md). This module serves the common case with a parse-once, copy-through
//! loop and its own upstream pool, and hands anything unusual to Pingora unchanged.
//!
//! Served here: HTTP/1.1 and HTTP/1.0 requests (CONNECT, whatever its target, is refused with
//! the gateway's own 405, which says to send plain `http://` URLs instead); request bodies with a
//! `Content-Length` up to 64 KiB are read whole before they are sent (so the request can be sent
//! again on a new connection), larger ones, `Transfer-Encoding: chunked` ones and those after
//! `Expect: 100-continue` are streamed: sent on as they arrive *while* the answer is relayed (a
//! target may answer, or echo, before it has read the whole body; sending everything first
//! stalls such an exchange once the socket buffers are full, which Pingora's HTTP/1 proxy did).
//! Responses of every framing (length, chunked, until-close, none) are passed through byte for
//! byte; 1xx interim responses (the target's `100 Continue`) go to the client as they come;
//! pipelined requests are served in order.
//! The gateway logic is the same code as Pingora's
//! path (`Gateway::rate_limit`, `Gateway::route`, `Gateway::resolve`, `Ctx::record`,
//! `upstream_failure`), so refusals, metrics and the 424 answer are the same on both.
//!
//! Handed to Pingora (`HttpProxy<Gateway>`, the bytes already read are put back with
//! `Stream::rewind`): transfer codings other than `chunked`, both `Content-Length` and
//! `Transfer-Encoding`, `Expect` values other than `100-continue`, `Upgrade` other than an `h2c`
//! offer (which is ignored, as RFC 9113 3.1 allows: the answer is HTTP/1.1), `Connection`
//! options other than `close`/`keep-alive` (and `upgrade`/`http2-settings` with that offer),
//! heads that do not parse or are larger than 64 KiB. After such a request the
//! connection comes back to this loop. A connection that opens with the HTTP/2 preface (h2c
//! with prior knowledge) is Pingora's HTTP/2 server's for good: each stream goes through the same
//! gateway logic, routed as origin-form with `:authority` as Host (`proxy::h2_as_origin_form`).
//!
//! Upstream connections (`crate::upstream`) are pooled by (address, client-certificate
//! SHA-256, SNI): two identities never share a connection, whatever their serial numbers. A
//! pooled connection the target has closed is noticed when no byte of the answer arrives; the
//! request (its body is buffered) is then sent once more on a new connection, as browsers and
//! nginx do.
//!
//! A request the gateway refuses itself (rate limit, routing, auth) has its `Content-Length` body
//! (up to 1 MiB) read and dropped before the answer, and the connection stays open after it; after
//! a larger or chunked body the answer closes the connection instead (and an `Expect:
//! 100-continue` client is answered before it sends the body).
//!
//! Timeouts: `proxy.client_idle_timeout_secs` (60 s, Pingora's default) idle on a client
//! connection between requests, `proxy.client_timeout_secs` (60 s) for the rest of a request head
//! or body and for handing a response (part) to the client, 5 s to read the body of a refused
//! request;
//! `upstream.*_timeout` towards the target.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use futures::FutureExt;
use http::StatusCode;
use log::warn;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::prelude::*;
use pingora::protocols::Stream;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{self, Bad, BodyFraming, ChunkError, ChunkedDecoder};
use crate::gateway::{count_connect_failure, upstream_failure, Ctx, Gateway, ReqView};
use crate::metrics;
use crate::upstream::pool::{Pool, PoolKey};
use crate::upstream::{TlsClient, UpConn};

/// Headers per message this loop parses; more goes to Pingora (requests) or fails (responses).
const MAX_HEADERS: usize = 96;
/// A request head larger than this goes to Pingora (which answers it with its own limits).
const MAX_HEAD: usize = 64 * 1024;
/// A request body up to this size is read whole before it is sent, so it can be sent again.
const REPLAY_BODY: u64 = 64 * 1024;
/// Time allowed to read (and drop) the body of a refused request before the answer.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// The largest body of a refused request read and dropped (so that the connection stays usable);
/// after a larger one the answer closes the connection.
const DRAIN_BODY: u64 = 1024 * 1024;
const IO_CHUNK: usize = 64 * 1024;
/// How long, and how much, the client's remaining bytes are read and dropped after a refusal
/// that closes the connection (see `linger`).
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;

/// The listener's app: see the module documentation.
pub struct ProxyApp {
    gw: Gateway,
    full: Arc<HttpProxy<Gateway>>,
    tls: Arc<TlsClient>,
    pool: Arc<Pool>,
    sweeper: AtomicBool,
}

impl ProxyApp {
    /// `tls` is the upstream connector (built from the trust bundle in `conf.ca_file`, which
    /// Pingora's path verifies targets with too), shared with the admin's calls.
    pub fn new(
        gw: Gateway,
        conf: &Arc<ServerConf>,
        tls: Arc<TlsClient>,
    ) -> anyhow::Result<ProxyApp> {
        let up = &gw.cfg.upstream;
        let pool = Arc::new(Pool::new(up.keepalive_pool_size, up.idle_timeout));
        let mut full = pingora_proxy::http_proxy(conf, gw.clone());
        // HTTP/2 with prior knowledge (h2c): Pingora's `process_new` of this app is called only
        // for a connection that opens with the HTTP/2 preface (HTTP/1 requests go to its
        // `process_new_http`), so h2c is on for it.
        let mut opts = HttpServerOptions::default();
        opts.h2c = true;
        opts.h2_idle_timeout = Some(gw.cfg.proxy.client_idle_timeout);
        full.server_options = Some(opts);
        Ok(ProxyApp {
            full: Arc::new(full),
            tls,
            gw,
            pool,
            sweeper: AtomicBool::new(false),
        })
    }
}

/// What to do with the downstream connection after a request.
enum Next {
    Again,
    Close,
    /// HTTP/2 with prior knowledge: the rest of the connection is Pingora's HTTP/2 server
    /// (the preface is in the buffer).
    H2,
}

/// Why a proxied exchange stopped early.
enum Fail {
    /// The client went away or stalled: nothing more can be said to it.
    Down,
    /// The target failed (connect, TLS, I/O, a malformed answer).
    Up(Box<Error>),
    /// A pooled connection was closed by the target before any answer: try a new one.
    Stale,
    /// The client's chunked request body does not follow the chunked framing.
    BadChunked,
}

/// How to read a response head, besides the streams.
#[derive(Clone, Copy)]
struct HeadWant<'a> {
    /// The request was HEAD (no body follows the answer).
    is_head: bool,
    /// The client's connection closes after this exchange.
    close: bool,
    /// The client spoke HTTP/1.0: no interim answers, no chunked body (it is decoded for it),
    /// and `Connection: keep-alive` on an answer after which its connection stays open.
    http10: bool,
    /// Set while a streamed request body is still being sent.
    sending: Option<&'a AtomicBool>,
}

/// How a streamed request body is exchanged.
struct Streamed {
    /// `Length` (over `REPLAY_BODY`, or after `Expect`) or `Chunked`, with what was already
    /// decoded of it.
    body: BodyEnd,
    /// Bytes of the body, framed by the gateway, to send before the rest.
    prefix: Vec<u8>,
    expect: bool,
    /// How to read the answer (`sending` is set by the exchange).
    want: HeadWant<'static>,
}

/// The outcome of looking at a buffered request head.
enum Prep {
    /// The head is not complete yet.
    Partial,
    /// The head is complete, and routing needs the body too: this many bytes from the start
    /// of the head (at most `MAX_HEAD` + `REPLAY_BODY`).
    NeedBody(usize),
    /// HTTP/2 with prior knowledge: Pingora's HTTP/2 server takes the connection.
    H2,
    /// Refused before routing (framing, grammar): answered, then the connection is closed.
    Bad(Bad),
    /// Answered by the gateway itself (rate limit, routing, auth).
    Refused {
        refusal: Box<(Ctx, crate::gateway::Refusal)>,
        head_len: usize,
        /// The body to read and drop before the answer; `None`: not read, the answer closes
        /// the connection (chunked, over `DRAIN_BODY`, or held back for a `100 Continue`).
        drain: Option<u64>,
        /// The client asked to close (or spoke HTTP/1.0 without `Connection: keep-alive`).
        close: bool,
        http10: bool,
    },
    Go(Box<Prepared>),
}

struct Prepared {
    ctx: Ctx,
    /// The upstream request head; a buffered body is appended before sending.
    up_req: Vec<u8>,
    head_len: usize,
    /// A body read whole before sending (at most `REPLAY_BODY`); 0 when it is streamed.
    body_len: u64,
    /// A body streamed to the target while its answer is relayed.
    streamed: Option<Framing>,
    /// The client sent `Expect: 100-continue` (and waits for the target's 100 to send the body).
    expect: bool,
    close: bool,
    is_head: bool,
    http10: bool,
    /// The method is idempotent (RFC 9110 9.2.2): the request may be sent again on a new
    /// connection when a pooled one fails before any byte of the answer.
    idempotent: bool,
    /// Where the framing fields start in `up_req` (they and the blank line after them are
    /// written again when a chunked body is read whole first).
    framing_at: usize,
}

struct Down {
    stream: Stream,
    buf: BytesMut,
    peer: Option<IpAddr>,
    /// `proxy.client_idle_timeout_secs`: idle time allowed between requests.
    idle: Duration,
    /// `proxy.client_timeout_secs`: time allowed to receive the rest of a request, or to hand a
    /// response (part) to the client.
    io: Duration,
}

/// The parsed request head as routing sees it (borrowed from the read buffer).
struct Head<'a> {
    method: http::Method,
    uri: http::Uri,
    headers: &'a [httparse::Header<'a>],
    /// The body, when it had to be read before routing (OAuth1 that covers the body).
    body: Option<&'a [u8]>,
}

/// A header value as text, under the rules of `http::HeaderValue::to_str` (visible ASCII).
fn text(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

impl ReqView for Head<'_> {
    fn method(&self) -> &http::Method {
        &self.method
    }
    fn uri(&self) -> &http::Uri {
        &self.uri
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| text(h.value))
    }
    fn body(&self) -> Option<&[u8]> {
        self.body
    }
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| text(h.value))
    }
}

/// A decimal `Content-Length` value.
fn content_length(v: &[u8]) -> Option<u64> {
    let v = text(v)?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(v: &[u8], token: &str) -> bool {
    text(v).is_some_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn up_err(etype: ErrorType, context: String) -> Fail {
    Fail::Up(Error::explain(etype, context))
}

/// `fut` under a timeout, without arming a timer when it completes at once (as a write to a
/// socket with room in its buffer does).
async fn timed<F: std::future::Future>(d: Duration, fut: F) -> Result<F::Output, ()> {
    let mut fut = std::pin::pin!(fut);
    if let Some(v) = fut.as_mut().now_or_never() {
        return Ok(v);
    }
    fast_timeout(d, fut).await.map_err(|_| ())
}

/// Write `buf` to the client and flush, within `io`; `false` if that failed.
async fn write_down<W: AsyncWrite + Unpin + ?Sized>(
    stream: &mut W,
    io: Duration,
    buf: &[u8],
) -> bool {
    let w = timed(io, async {
        stream.write_all(buf).await?;
        stream.flush().await
    })
    .await;
    matches!(w, Ok(Ok(())))
}

/// Read from the client until `down.buf` holds `len` bytes; false if the client stopped
/// sending or a read took longer than `down.io`.
async fn fill_to(down: &mut Down, len: usize) -> bool {
    while down.buf.len() < len {
        if !read_more(down).await {
            return false;
        }
    }
    true
}

/// One read from the client into `down.buf`, within `down.io`; false at its end or on an error.
async fn read_more(down: &mut Down) -> bool {
    matches!(
        fast_timeout(down.io, down.stream.read_buf(&mut down.buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Read and drop the next `n` bytes from the client (bytes after them stay in `down.buf`);
/// false if the client stopped sending or a read took longer than `down.io`.
async fn discard(down: &mut Down, mut n: u64) -> bool {
    loop {
        let t = (down.buf.len() as u64).min(n) as usize;
        down.buf.advance(t);
        n -= t as u64;
        if n == 0 {
            return true;
        }
        down.buf.reserve(IO_CHUNK);
        if !read_more(down).await {
            return false;
        }
    }
}

/// After an answer that closes the connection on a request whose rest was not read: stop
/// sending, then read and drop what the client still sends for a short while (at most
/// `LINGER_BYTES`), so that the close does not reset the connection before the client has read
/// the answer (nginx's `lingering_close`).
async fn linger(down: &mut Down) {
    let _ = timed(down.io, down.stream.shutdown()).await;
    let until = Instant::now() + LINGER_TIME;
    let mut seen = 0usize;
    while seen < LINGER_BYTES {
        down.buf.clear();
        down.buf.reserve(IO_CHUNK);
        let left = until.saturating_duration_since(Instant::now());
        match fast_timeout(left, down.stream.read_buf(&mut down.buf)).await {
            Ok(Ok(n)) if n > 0 => seen += n,
            _ => return,
        }
    }
}

/// A JSON answer from the gateway itself; `keep`: the connection stays open after it (else
/// `connection: close`, as on Pingora's path; an HTTP/1.0 client is told `keep-alive`).
async fn write_json(
    down: &mut Down,
    status: StatusCode,
    body: &serde_json::Value,
    extra: &[(&'static str, String)],
    keep: bool,
    http10: bool,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut out = Vec::with_capacity(256 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (k, v) in extra {
        let _ = write!(out, "{k}: {}\r\n", crate::header_safe(v));
    }
    out.extend_from_slice(connection_header(!keep, http10));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    if write_down(&mut down.stream, down.io, &out).await {
        Ok(())
    } else {
        Err(std::io::Error::other("the client did not take the answer"))
    }
}

/// Whether the first line of `buf` has the request line's shape, `METHOD SP target SP
/// HTTP/x.y`: an unsupported version is then a 505, anything else (a space inside the target)
/// a 400.
fn request_line_well_formed(buf: &[u8]) -> bool {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts[2].len() == 8
        && parts[2].starts_with(b"HTTP/")
        && parts[2][5].is_ascii_digit()
        && parts[2][6] == b'.'
        && parts[2][7].is_ascii_digit()
}

/// How an HTTP/2 connection with prior knowledge starts (RFC 9113 3.4: the first line of the
/// client's preface; a head that ends after it does not parse as HTTP/1).
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Put bytes already read back in front of the stream (for Pingora's parser).
fn rewind(stream: Stream, data: &[u8]) -> Option<Stream> {
    if data.is_empty() {
        return Some(stream);
    }
    match stream
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
    {
        Ok(mut s) => {
            s.rewind(data);
            Some(s)
        }
        Err(_) => None,
    }
}

#[async_trait]
impl ServerApp for ProxyApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.start_sweeper();
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut down = Down {
            stream,
            buf: BytesMut::with_capacity(4096),
            peer,
            idle: self.gw.cfg.proxy.client_idle_timeout,
            io: self.gw.cfg.proxy.client_timeout,
        };
        let mut shutdown = shutdown.clone();
        loop {
            match self.serve_one(&mut down, &mut shutdown).await {
                Next::Again => {}
                Next::Close => return None,
                Next::H2 => {
                    let stream = rewind(down.stream, &down.buf)?;
                    return ServerApp::process_new(&self.full, stream, &shutdown).await;
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.pool.clear();
    }
}

/// Send a streamed request body to the target as it arrives: the bytes already in `buf`
/// first, then what the client sends, up to the end of the body by its framing (bytes after
/// it, a pipelined request, stay in `buf`). `Fail::Down`: the client stopped sending or took
/// longer than `io` for a part; `Fail::BadChunked`: a malformed chunked body.
async fn pump_body<R, W>(
    dr: &mut R,
    buf: &mut BytesMut,
    io: Duration,
    uw: &mut W,
    mut body: BodyEnd,
    prefix: Vec<u8>,
    wt: Duration,
) -> Result<(), Fail>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut end = body.empty();
    if !prefix.is_empty() {
        match timed(wt, uw.write_all(&prefix)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(up_err(WriteError, e.to_string())),
            Err(()) => return Err(up_err(WriteTimedout, "request body".into())),
        }
    }
    let mut out = Vec::new();
    while !end {
        if !buf.is_empty() {
            let take;
            out.clear();
            (take, end) = body
                .take(buf, &mut out, true)
                .map_err(|_| Fail::BadChunked)?;
            match timed(wt, uw.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(up_err(WriteError, e.to_string())),
                Err(()) => return Err(up_err(WriteTimedout, "request body".into())),
            }
            buf.advance(take);
            if end {
                break;
            }
        }
        buf.reserve(IO_CHUNK);
        match fast_timeout(io, dr.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(Fail::Down),
        }
    }
    match timed(wt, uw.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(up_err(WriteError, e.to_string())),
        Err(()) => Err(up_err(WriteTimedout, "request body".into())),
    }
}

/// Framing of a message body (RFC 9112 6.3 for responses; a streamed request body is `Length`
/// or `Chunked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Where a body ends, found from the bytes as they come, by its framing, and what of them is
/// sent on.
struct BodyEnd {
    framing: Framing,
    /// `Length`: bytes still to come.
    left: u64,
    chunked: ChunkedDecoder,
    /// Decoded chunk data, before it is framed again.
    scratch: Vec<u8>,
}

impl BodyEnd {
    fn new(framing: Framing) -> BodyEnd {
        BodyEnd {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: ChunkedDecoder::new(),
            scratch: Vec::new(),
        }
    }

    /// No body at all.
    fn empty(&self) -> bool {
        matches!(self.framing, Framing::None | Framing::Length(0))
    }

    /// How many bytes at the start of `buf` are body, and whether the body ends with them; what
    /// goes on is appended to `out`. A `Length` or until-close body is data as it is; a chunked
    /// body is decoded and its data framed again by the gateway (`rechunk`: in its own chunks,
    /// ending with the last chunk; otherwise bare, for an HTTP/1.0 client): the sender's chunk
    /// sizes, extensions and trailers never go on.
    fn take(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        rechunk: bool,
    ) -> Result<(usize, bool), ChunkError> {
        Ok(match self.framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let t = (buf.len() as u64).min(self.left) as usize;
                self.left -= t as u64;
                out.extend_from_slice(&buf[..t]);
                (t, self.left == 0)
            }
            Framing::Chunked if rechunk => {
                self.scratch.clear();
                let end = self.chunked.feed(buf, &mut self.scratch)?;
                codec::encode_chunk(&self.scratch, out);
                match end {
                    Some(n) => {
                        out.extend_from_slice(codec::LAST_CHUNK);
                        (n, true)
                    }
                    None => (buf.len(), false),
                }
            }
            Framing::Chunked => match self.chunked.feed(buf, out)? {
                Some(n) => (n, true),
                None => (buf.len(), false),
            },
            Framing::UntilClose => {
                out.extend_from_slice(buf);
                (buf.len(), false)
            }
        })
    }
}

/// What the response head said, and the head to send downstream.
struct RespHead {
    status: u16,
    framing: Framing,
    keepalive: bool,
    head_len: usize,
    /// The client's connection closes after this response.
    down_close: bool,
    /// The client spoke HTTP/1.0.
    http10: bool,
    /// A chunked body decoded for an HTTP/1.0 client (which then reads it to the close).
    dechunk: bool,
    /// The head for the client: the target's, with hop-by-hop headers replaced.
    out: Vec<u8>,
}

impl ProxyApp {
    fn start_sweeper(&self) {
        // A plain load first: after the first connection this is a read of a shared cache line,
        // not a write that both cores fight over on every accepted connection.
        if self.sweeper.load(Ordering::Acquire) || self.sweeper.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(&self.pool);
        let every = (self.gw.cfg.upstream.idle_timeout / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match pool.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
    }

    /// One request on the downstream connection.
    async fn serve_one(&self, down: &mut Down, shutdown: &mut ShutdownWatch) -> Next {
        // 1. A complete request head, parsed once it is complete, and what to do with it. The
        //    head has one deadline in all (`proxy.client_timeout_secs` from its first byte, as
        //    nginx's `client_header_timeout`): a head sent a byte at a time is cut off, not kept
        //    alive by each byte. A body that routing needs (OAuth1 over a form) is read under
        //    the per-read deadline of a body.
        let mut deadline: Option<Instant> = None;
        let mut need_body = false;
        let prep = loop {
            if !down.buf.is_empty() {
                match self.prepare(&down.buf, down.peer) {
                    Prep::Partial if down.buf.len() <= MAX_HEAD => {}
                    Prep::Partial => {
                        break Prep::Bad(Bad::new(
                            431,
                            "header_fields_too_large",
                            format!("the request head is larger than {} KiB", MAX_HEAD / 1024),
                        ));
                    }
                    Prep::NeedBody(end) => {
                        need_body = true;
                        down.buf.reserve(end.saturating_sub(down.buf.len()))
                    }
                    other => break other,
                }
            }
            let read = if down.buf.is_empty() {
                if *shutdown.borrow() {
                    return Next::Close;
                }
                tokio::select! {
                    r = fast_timeout(down.idle, down.stream.read_buf(&mut down.buf)) => r,
                    _ = shutdown.changed() => return Next::Close,
                }
            } else if need_body {
                fast_timeout(down.io, down.stream.read_buf(&mut down.buf)).await
            } else {
                let at = *deadline.get_or_insert_with(|| Instant::now() + down.io);
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Next::Close;
                }
                fast_timeout(left, down.stream.read_buf(&mut down.buf)).await
            };
            match read {
                Ok(Ok(n)) if n > 0 => {
                    if deadline.is_none() {
                        deadline = Some(Instant::now() + down.io);
                    }
                }
                _ => return Next::Close,
            }
        };
        let Prepared {
            mut ctx,
            mut up_req,
            head_len,
            body_len,
            streamed,
            expect,
            close,
            is_head,
            http10,
            idempotent,
            framing_at,
        } = match prep {
            Prep::Go(p) => *p,
            Prep::Refused {
                refusal,
                head_len,
                drain,
                close,
                http10,
            } => {
                let (mut ctx, mut r) = *refusal;
                ctx.outcome = r.outcome;
                // The request's body (up to DRAIN_BODY) is read and dropped first: closing with
                // unread bytes would reset the connection, and the client could lose the
                // answer; read whole (within DRAIN_TIME in all), the connection can also stay
                // open (as nginx does on 429).
                down.buf.advance(head_len);
                let drained = match drain {
                    Some(n) => matches!(fast_timeout(DRAIN_TIME, discard(down, n)).await, Ok(true)),
                    None => false,
                };
                let keep = drained && !close && !*shutdown.borrow();
                let body = r.body();
                let sent = write_json(down, r.status, &body, &r.extra, keep, http10).await;
                ctx.record(r.status.as_u16());
                return if keep && sent.is_ok() {
                    Next::Again
                } else {
                    Next::Close
                };
            }
            // HTTP/2 with prior knowledge (h2c): served by Pingora's HTTP/2 server, each
            // stream through the same gateway logic (`Gateway::request_filter`).
            Prep::H2 => return Next::H2,
            Prep::Bad(bad) => {
                let mut ctx = Ctx::new();
                ctx.outcome = "bad_request";
                let status = StatusCode::from_u16(bad.status).unwrap_or(StatusCode::BAD_REQUEST);
                let body = serde_json::json!({"error": bad.code, "message": bad.message});
                let _ = write_json(down, status, &body, &[], false, false).await;
                ctx.record(bad.status);
                linger(down).await;
                return Next::Close;
            }
            Prep::Partial | Prep::NeedBody(_) => return Next::Close,
        };
        down.buf.advance(head_len);

        // 5. The body (at most 64 KiB) is read whole, so that the request can be sent again.
        if !fill_to(down, body_len as usize).await {
            ctx.outcome = "error";
            ctx.record(0);
            return Next::Close;
        }
        up_req.extend_from_slice(&down.buf[..body_len as usize]);
        down.buf.advance(body_len as usize);

        // 5b. A chunked body (without `Expect`) is read and decoded before the target is asked,
        //     up to `REPLAY_BODY` of data, as nginx buffers a request body: a whole one goes on
        //     with `Content-Length` (and can be sent again like any buffered body); a larger one
        //     streams on in the gateway's own chunks; a malformed one gets its 400 before any
        //     byte of the request reached the target.
        let mut streamed = streamed;
        let mut pre: Option<(BodyEnd, Vec<u8>)> = None;
        if streamed == Some(Framing::Chunked) && !expect {
            let mut dec = BodyEnd::new(Framing::Chunked);
            let mut data = Vec::new();
            let complete = loop {
                match dec.chunked.feed(&down.buf, &mut data) {
                    Err(e) => {
                        ctx.outcome = "bad_request";
                        let body = serde_json::json!({
                            "error": "malformed_chunked_body",
                            "message": format!("the request body does not follow Transfer-Encoding: chunked (RFC 9112 7.1: each chunk is a hex size line ending in CRLF, the data and CRLF, the last is 0 and an empty line): {e}")
                        });
                        let _ =
                            write_json(down, StatusCode::BAD_REQUEST, &body, &[], false, http10)
                                .await;
                        ctx.record(400);
                        linger(down).await;
                        return Next::Close;
                    }
                    Ok(Some(n)) => {
                        down.buf.advance(n);
                        break true;
                    }
                    Ok(None) => {
                        let n = down.buf.len();
                        down.buf.advance(n);
                    }
                }
                if data.len() as u64 > REPLAY_BODY {
                    break false;
                }
                down.buf.reserve(IO_CHUNK);
                if !read_more(down).await {
                    ctx.outcome = "error";
                    ctx.record(0);
                    return Next::Close;
                }
            };
            up_req.truncate(framing_at);
            if complete {
                let _ = write!(up_req, "Content-Length: {}\r\n\r\n", data.len());
                up_req.extend_from_slice(&data);
                streamed = None;
            } else {
                up_req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut prefix = Vec::with_capacity(data.len() + 16);
                codec::encode_chunk(&data, &mut prefix);
                pre = Some((dec, prefix));
            }
        }

        // 6. Connect (pooled) and exchange; a stale pooled connection is replaced once. A
        //    streamed body goes on a new connection, sent while the answer is relayed.
        let want = HeadWant {
            is_head,
            close,
            http10,
            sending: None,
        };
        let result = match streamed {
            None => {
                self.exchange(down, &mut ctx, &up_req, want, idempotent)
                    .await
            }
            Some(body) => {
                let (body, prefix) = pre.unwrap_or_else(|| (BodyEnd::new(body), Vec::new()));
                let how = Streamed {
                    body,
                    prefix,
                    expect,
                    want,
                };
                self.exchange_streamed(down, &mut ctx, &up_req, how).await
            }
        };
        match result {
            Ok((status, keep)) => {
                ctx.record(status);
                if keep && !close && !*shutdown.borrow() {
                    Next::Again
                } else {
                    Next::Close
                }
            }
            Err((Fail::Up(e), false)) => {
                ctx.outcome = "upstream_error";
                let url = ctx.target.as_ref().map(|t| t.url.as_str()).unwrap_or("");
                // The host and path only: a query string may carry a caller's secret.
                warn!(
                    "target {} failed, answered 424: {e}",
                    url.split('?').next().unwrap_or("")
                );
                let (body, extra) = upstream_failure(url, &e, idempotent);
                let _ = write_json(
                    down,
                    StatusCode::FAILED_DEPENDENCY,
                    &body,
                    &extra,
                    false,
                    http10,
                )
                .await;
                ctx.record(424);
                Next::Close
            }
            Err((Fail::Up(e), true)) => {
                let url = ctx.target.as_ref().map(|t| t.url.as_str()).unwrap_or("");
                warn!(
                    "target {} failed after its response head was sent on: {e}",
                    url.split('?').next().unwrap_or("")
                );
                ctx.outcome = "upstream_error";
                ctx.record(0);
                Next::Close
            }
            Err((Fail::BadChunked, false)) => {
                // Nothing of the target's answer went to the client yet: say what was wrong.
                ctx.outcome = "bad_request";
                let body = serde_json::json!({
                    "error": "malformed_chunked_body",
                    "message": "the request body does not follow Transfer-Encoding: chunked (RFC 9112 7.1): each chunk is a hex size line, the data and CRLF, the last is 0"
                });
                let _ = write_json(down, StatusCode::BAD_REQUEST, &body, &[], false, http10).await;
                ctx.record(400);
                Next::Close
            }
            Err((_, _)) => {
                ctx.outcome = "error";
                ctx.record(0);
                Next::Close
            }
        }
    }

    /// Step 3: the gateway's logic (rate limit, mode, target, auth, mapping) for a parsed head.
    #[inline]
    fn decide(
        &self,
        peer: Option<IpAddr>,
        head: &Head<'_>,
    ) -> (Ctx, Result<(), crate::gateway::Refusal>) {
        let mut ctx = Ctx::new();
        ctx._inflight = Some(self.gw.inflight.enter());
        let routed = self.gw.admit(peer, head, &mut ctx);
        (ctx, routed)
    }

    /// Steps 2-4 for a buffered request head (no I/O): parse it strictly, apply the gateway's
    /// logic, and build the upstream request head (`crate::gateway::upstream_headers` decides
    /// which of the client's fields go on; the framing fields are the gateway's own).
    fn prepare(&self, buf: &[u8], peer: Option<IpAddr>) -> Prep {
        // 2. Parse, strictly: a head off the grammar is refused, never handed on.
        let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut hdrs);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
                return Prep::Bad(Bad::new(
                    431,
                    "header_fields_too_large",
                    format!("the request head is larger than {} KiB", MAX_HEAD / 1024),
                ))
            }
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Prep::Partial,
            Err(_) if buf.starts_with(H2_PREFACE_LINE) => return Prep::H2,
            Err(httparse::Error::TooManyHeaders) => {
                return Prep::Bad(Bad::new(
                    431,
                    "header_fields_too_large",
                    format!("more than {MAX_HEADERS} header fields"),
                ))
            }
            Err(httparse::Error::Version) if !request_line_well_formed(buf) => {
                return Prep::Bad(Bad::new(
                    400,
                    "bad_request",
                    "the request line is not `METHOD target HTTP/1.1` (a space or another character a target may not hold?)",
                ))
            }
            Err(httparse::Error::Version) => {
                return Prep::Bad(Bad::new(
                    505,
                    "http_version_not_supported",
                    "only HTTP/1.0 and HTTP/1.1 (and HTTP/2 with prior knowledge) are served",
                ))
            }
            Err(e) => {
                return Prep::Bad(Bad::new(
                    400,
                    "bad_request",
                    format!("the request head does not parse (RFC 9112): {e}"),
                ))
            }
        };
        let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
            return Prep::Bad(Bad::new(400, "bad_request", "incomplete request line"));
        };
        // HTTP/1.0: sent on as HTTP/1.1, as nginx's `proxy_http_version 1.1` does, so that the
        // target's connection is kept and pooled (sent on as HTTP/1.0, every request would cost
        // a new TLS handshake). The client's connection closes after the answer unless it asked
        // for `Connection: keep-alive`; a chunked answer is decoded for it (HTTP/1.0 has no
        // chunked framing), interim answers are not sent to it.
        let http10 = minor == 0;
        let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
            return Prep::Bad(Bad::new(400, "bad_request", "the method is not a token"));
        };
        // A CONNECT target that is no URI (`CONNECT a b`, a bare `CONNECT /`) is refused the
        // same way: the method alone decides.
        let uri = if method == http::Method::CONNECT {
            http::Uri::try_from(path).unwrap_or_else(|_| http::Uri::from_static("/"))
        } else {
            if let Err(m) = codec::check_uri_chars(path, "the request-target") {
                return Prep::Bad(Bad::new(400, "bad_request", m));
            }
            match http::Uri::try_from(path) {
                Ok(uri) => uri,
                Err(e) => {
                    return Prep::Bad(Bad::new(
                        400,
                        "bad_request",
                        format!("the request-target is not a URI: {e}"),
                    ))
                }
            }
        };
        let framing = match codec::request_framing(req.headers, http10) {
            Ok(f) => f,
            Err(bad) => return Prep::Bad(bad),
        };
        if method == http::Method::CONNECT {
            // Refused by `route` with the gateway's own answer (what to do instead). No body
            // framing applies to a CONNECT request, so the answer closes the connection.
            let head = Head {
                method,
                uri,
                headers: req.headers,
                body: None,
            };
            let (ctx, refused) = self.decide(peer, &head);
            return match refused {
                Err(r) => Prep::Refused {
                    refusal: Box::new((ctx, r)),
                    head_len,
                    drain: None,
                    close: true,
                    http10,
                },
                Ok(()) => Prep::Bad(Bad::new(405, "method_not_allowed", "CONNECT")),
            };
        }
        let expect = framing.expect_continue;
        let close = framing.close;
        // A large or chunked body is sent on as it arrives while the answer is relayed (a target
        // may answer while it still reads), and so is one the client only sends after a `100
        // Continue`; a small one is read whole first.
        let (streamed, body_len) = match framing.body {
            None => (None, 0),
            Some(BodyFraming::Chunked) => (Some(Framing::Chunked), 0),
            Some(BodyFraming::Length(n)) if n > REPLAY_BODY || expect => {
                (Some(Framing::Length(n)), 0)
            }
            Some(BodyFraming::Length(n)) => (None, n),
        };
        let mut head = Head {
            method,
            uri,
            headers: req.headers,
            body: None,
        };
        if streamed.is_none()
            && self.gw.cfg.proxy.auth == crate::config::ProxyAuth::Required
            && crate::gateway::oauth1_covers_body(&head)
        {
            // OAuth1 covers a form-encoded body's parameters (RFC 5849 3.4.1.3.1), and any
            // other body with `oauth_body_hash`: this body, read whole before sending in any
            // case, is waited for before authenticating.
            let end = head_len + body_len as usize;
            match buf.get(head_len..end) {
                Some(body) => head.body = Some(body),
                None => return Prep::NeedBody(end),
            }
        }

        // 3. The gateway's logic: rate limit, mode, target, auth, mapping.
        let (mut ctx, routed) = self.decide(peer, &head);
        if let Err(r) = routed {
            let drain = match streamed {
                None => Some(body_len),
                Some(Framing::Length(n)) if !expect && n <= DRAIN_BODY => Some(n),
                Some(_) => None,
            };
            return Prep::Refused {
                refusal: Box::new((ctx, r)),
                head_len,
                drain,
                close,
                http10,
            };
        }
        let (Some(mode), Some(target)) = (ctx.mode, ctx.target.as_ref()) else {
            return Prep::Bad(Bad::new(500, "internal_error", "no target chosen"));
        };

        // 4. The upstream request head, written by the gateway: origin-form with the resolved
        //    path, Host = target, the client's fields that the policy keeps, then the framing.
        let mut up_req = Vec::with_capacity(head_len + body_len as usize + 64);
        up_req.extend_from_slice(head.method.as_str().as_bytes());
        up_req.push(b' ');
        up_req.extend_from_slice(target.path_query.as_bytes());
        up_req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        up_req.extend_from_slice(target.authority.as_bytes());
        up_req.extend_from_slice(b"\r\n");
        let policy =
            crate::gateway::HeaderPolicy::new(&self.gw.cfg.proxy, mode, &framing.nominated);
        for h in head.headers {
            if policy.keeps(h.name) {
                up_req.extend_from_slice(h.name.as_bytes());
                up_req.extend_from_slice(b": ");
                up_req.extend_from_slice(h.value);
                up_req.extend_from_slice(b"\r\n");
            }
        }
        if let Some(v) = policy.authorization(&mut ctx) {
            up_req.extend_from_slice(b"Authorization: ");
            up_req.extend_from_slice(v.as_bytes());
            up_req.extend_from_slice(b"\r\n");
        }
        let framing_at = up_req.len();
        match framing.body {
            None => {}
            Some(BodyFraming::Length(n)) => {
                let _ = write!(up_req, "Content-Length: {n}\r\n");
            }
            Some(BodyFraming::Chunked) => {
                up_req.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
            }
        }
        if expect {
            up_req.extend_from_slice(b"Expect: 100-continue\r\n");
        }
        up_req.extend_from_slice(b"\r\n");
        let is_head = head.method == http::Method::HEAD;
        let idempotent = head.method.is_idempotent();
        Prep::Go(Box::new(Prepared {
            ctx,
            up_req,
            head_len,
            body_len,
            streamed,
            expect,
            close,
            is_head,
            http10,
            idempotent,
            framing_at,
        }))
    }

    /// Send the request and relay the answer. `Ok((status, downstream may stay open))`;
    /// `Err((why, whether the response head was already sent))`.
    ///
    /// Sent again, on a new connection, only when that cannot deliver it twice (RFC 9110
    /// 9.2.2, nginx's `proxy_next_upstream` without `non_idempotent`): an idempotent request
    /// whose pooled connection failed before any byte of the answer. A pooled connection is
    /// first checked for a close the target already sent (a non-idempotent request never goes
    /// on one); once a non-idempotent request was written, a failure is the client's 424,
    /// never a second send.
    async fn exchange(
        &self,
        down: &mut Down,
        ctx: &mut Ctx,
        up_req: &[u8],
        want: HeadWant<'_>,
        idempotent: bool,
    ) -> Result<(u16, bool), (Fail, bool)> {
        let (key, sni) = self.upstream_of(ctx).await?;
        let addr = key.addr;
        let mut ubuf = BytesMut::with_capacity(16 * 1024);
        let mut retried = false;
        let (mut up, mut resp) = loop {
            let pooled = if idempotent && !retried {
                self.pool.take(&key, sni)
            } else {
                self.take_open(&key, sni)
            };
            let (mut up, reused) = match pooled {
                Some(s) => (s, true),
                None => match self
                    .tls
                    .connect(addr, sni, ctx.cert.as_deref().map(|c| &*c.cert_key))
                    .await
                {
                    Ok(s) => (s, false),
                    Err(e) => {
                        count_connect_failure(&e);
                        return Err((Fail::Up(e), false));
                    }
                },
            };
            metrics::upstream_connection(reused);
            ubuf.clear();
            let got = match self.send(&mut up, up_req).await {
                Ok(()) => {
                    self.read_head(&mut down.stream, down.io, &mut up, &mut ubuf, want)
                        .await
                }
                Err(Fail::Up(e)) if reused && e.etype() == &WriteError => Err(Fail::Stale),
                Err(f) => Err(f),
            };
            match got {
                Ok(h) => break (up, h),
                Err(Fail::Stale) if reused && idempotent && !retried => {
                    retried = true;
                    metrics::UPSTREAM_RETRIES.inc();
                    continue;
                }
                Err(Fail::Stale) => {
                    let why = if idempotent {
                        "the target closed the connection before answering".to_string()
                    } else {
                        "the target closed the connection after the request was sent, before answering; a non-idempotent request is not sent twice".to_string()
                    };
                    return Err((up_err(ConnectionClosed, why), false));
                }
                Err(f) => return Err((f, false)),
            }
        };

        let down_close = resp.down_close;
        let clean = self
            .relay_body(&mut down.stream, down.io, &mut up, &mut ubuf, &mut resp)
            .await?;
        if resp.keepalive && clean {
            self.pool.put(key, sni, up);
        }
        Ok((resp.status, !down_close))
    }

    /// A pooled connection that shows no sign of a close by the target (no end of stream, reset
    /// or stray byte waiting to be read), for a request that must not be sent twice; those that
    /// do are dropped.
    fn take_open(&self, key: &PoolKey, sni: &str) -> Option<UpConn> {
        while let Some(mut s) = self.pool.take(key, sni) {
            let mut probe = [0u8; 1];
            if s.read(&mut probe).now_or_never().is_none() {
                return Some(s);
            }
        }
        None
    }

    /// The target's pool key (resolved address, client identity) and TLS server name.
    async fn upstream_of<'c>(&self, ctx: &'c Ctx) -> Result<(PoolKey, &'c str), (Fail, bool)> {
        let target = ctx
            .target
            .as_ref()
            .ok_or((up_err(InternalError, "no target".into()), false))?;
        let addr = self
            .gw
            .resolve(target)
            .await
            .map_err(|e| (Fail::Up(e), false))?;
        let key = PoolKey {
            addr,
            identity: ctx.cert.as_ref().map(|c| c.leaf_sha256).unwrap_or([0; 32]),
        };
        Ok((key, Gateway::sni(target)))
    }

    /// The exchange for a streamed request body (over `REPLAY_BODY`, chunked, or after
    /// `Expect: 100-continue`), on a pooled connection that is still open or a new one; it is not
    /// sent twice (as nginx does not for a non-idempotent request). After the head, the body is sent on as it arrives *while* the answer is
    /// relayed, in one task: a target may answer, or echo, before it has read the whole body,
    /// and a proxy that only reads once it has written everything stalls such an exchange as
    /// soon as the socket buffers on both sides are full.
    async fn exchange_streamed(
        &self,
        down: &mut Down,
        ctx: &mut Ctx,
        up_head: &[u8],
        how: Streamed,
    ) -> Result<(u16, bool), (Fail, bool)> {
        let Streamed {
            body,
            prefix,
            expect,
            want,
        } = how;
        let (key, sni) = self.upstream_of(ctx).await?;
        // The body cannot be sent twice, so a pooled connection the target has already closed
        // is dropped before it is used rather than found out after the body went.
        let (mut up, reused) = match self.take_open(&key, sni) {
            Some(s) => (s, true),
            None => match self
                .tls
                .connect(key.addr, sni, ctx.cert.as_deref().map(|c| &*c.cert_key))
                .await
            {
                Ok(s) => (s, false),
                Err(e) => {
                    count_connect_failure(&e);
                    return Err((Fail::Up(e), false));
                }
            },
        };
        metrics::upstream_connection(reused);
        self.send(&mut up, up_head).await.map_err(|f| (f, false))?;
        let wt = self.gw.cfg.upstream.write_timeout;
        let io = down.io;
        // While the body is still being sent, a target that has not answered yet is not late
        // (most answer only after the whole body): the head's read timeout counts from then.
        let sending = AtomicBool::new(true);
        // Set once the target's final answer starts (after it, the client cannot get a 400).
        let answered = AtomicBool::new(false);
        let (resp, clean, body_sent) = {
            let (mut ur, mut uw) = tokio::io::split(&mut up);
            let (mut dr, mut dw) = tokio::io::split(&mut down.stream);
            let mut pump = std::pin::pin!(async {
                let r = pump_body(&mut dr, &mut down.buf, io, &mut uw, body, prefix, wt).await;
                sending.store(false, Ordering::Relaxed);
                r
            });
            let mut relay = std::pin::pin!(async {
                let mut ubuf = BytesMut::with_capacity(16 * 1024);
                let want = HeadWant {
                    sending: Some(&sending),
                    ..want
                };
                let mut resp = self
                    .read_head(&mut dw, io, &mut ur, &mut ubuf, want)
                    .await
                    .map_err(|f| match f {
                        // Nothing to send again with: the client gets the 424.
                        Fail::Stale => (
                            up_err(
                                ConnectionClosed,
                                "the target closed the connection before answering".into(),
                            ),
                            false,
                        ),
                        f => (f, false),
                    })?;
                answered.store(true, Ordering::Relaxed);
                let clean = self
                    .relay_body(&mut dw, io, &mut ur, &mut ubuf, &mut resp)
                    .await?;
                Ok::<_, (Fail, bool)>((resp, clean))
            });
            let mut pumped: Option<Result<(), Fail>> = None;
            let (resp, clean) = loop {
                tokio::select! {
                    r = &mut pump, if pumped.is_none() => {
                        match r {
                            // The client stopped sending: nothing can be completed.
                            Err(Fail::Down) => return Err((Fail::Down, true)),
                            Err(Fail::BadChunked) => {
                                return Err((Fail::BadChunked, answered.load(Ordering::Relaxed)))
                            }
                            _ => {}
                        }
                        // A write to the target failed: it may still answer (say, a 413 and
                        // close), so the relay goes on.
                        pumped = Some(r);
                    }
                    r = &mut relay => break r?,
                }
            };
            // The answer is complete; the rest of the body (a target may answer before it has
            // read it all) is still sent, within the client and upstream timeouts.
            let body_sent = match pumped {
                Some(r) => r.is_ok(),
                // After a final answer to `Expect: 100-continue` the client may never send the
                // body (RFC 9110 10.1.1): the connection closes instead of waiting for it.
                None if expect => false,
                None => pump.await.is_ok(),
            };
            (resp, clean, body_sent)
        };
        if resp.keepalive && clean && body_sent {
            self.pool.put(key, sni, up);
        }
        Ok((resp.status, body_sent && !resp.down_close))
    }

    /// Relay the response body after `resp` (its head, already parsed, goes first) from the
    /// target to the client as it arrives, framing checked, bytes unchanged. `Ok(clean)`: the
    /// target sent nothing after the end of the body; `Err((why, whether the head was sent))`.
    async fn relay_body<R, W>(
        &self,
        dw: &mut W,
        io: Duration,
        up: &mut R,
        ubuf: &mut BytesMut,
        resp: &mut RespHead,
    ) -> Result<bool, (Fail, bool)>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let up_cfg = &self.gw.cfg.upstream;
        let mut out = std::mem::take(&mut resp.out);
        ubuf.advance(resp.head_len);

        // The body: relayed as it arrives, framing checked, bytes unchanged (a chunked body for
        // an HTTP/1.0 client: its data only).
        let mut body = BodyEnd::new(resp.framing);
        let mut done = body.empty();
        let mut clean = true; // nothing after the end of the body
        let mut head_sent = false;
        loop {
            if !done {
                let take;
                (take, done) = body.take(ubuf, &mut out, !resp.dechunk).map_err(|e| {
                    (
                        up_err(InvalidHTTPHeader, format!("response body: {e}")),
                        head_sent,
                    )
                })?;
                ubuf.advance(take);
            }
            if done && !ubuf.is_empty() {
                clean = false;
            }
            if done {
                if !out.is_empty() && !write_down(dw, io, &out).await {
                    return Err((Fail::Down, true));
                }
                break;
            }
            // Not done: hand what we have to the client *while* reading the next part from the
            // target (two buffers), so a large response costs max(write, read) per round, not
            // their sum.
            ubuf.clear();
            ubuf.reserve(IO_CHUNK);
            let read = fast_timeout(up_cfg.read_timeout, up.read_buf(ubuf));
            let r = if out.is_empty() {
                read.await
            } else {
                let (written, r) = tokio::join!(write_down(dw, io, &out), read);
                if !written {
                    return Err((Fail::Down, true));
                }
                head_sent = true;
                out.clear();
                r
            };
            match r {
                Ok(Ok(0)) if resp.framing == Framing::UntilClose => {
                    done = true;
                    clean = false;
                }
                Ok(Ok(0)) => {
                    return Err((
                        up_err(ConnectionClosed, "the target closed during the body".into()),
                        true,
                    ))
                }
                Ok(Ok(_)) => {
                    // Take what has already arrived too (no waiting): fewer, larger writes to
                    // the client.
                    while ubuf.len() < 2 * IO_CHUNK
                        && !matches!(resp.framing, Framing::Length(_) if ubuf.len() as u64 >= body.left)
                    {
                        match up.read_buf(ubuf).now_or_never() {
                            Some(Ok(n)) if n > 0 => {}
                            _ => break,
                        }
                    }
                }
                Ok(Err(e)) => return Err((up_err(ReadError, e.to_string()), true)),
                Err(_) => return Err((up_err(ReadTimedout, "response body".into()), true)),
            }
        }
        Ok(clean)
    }

    /// Write the whole request (head and buffered body).
    async fn send(&self, up: &mut UpConn, up_req: &[u8]) -> Result<(), Fail> {
        let w = timed(self.gw.cfg.upstream.write_timeout, async {
            up.write_all(up_req).await?;
            up.flush().await
        })
        .await;
        match w {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(up_err(WriteError, e.to_string())),
            Err(_) => Err(up_err(WriteTimedout, "request".into())),
        }
    }

    /// Read up to the end of the final response head; 1xx interim heads go to the client as
    /// they come. `ubuf` keeps the head (and any body bytes after it).
    async fn read_head<R, W>(
        &self,
        dw: &mut W,
        io: Duration,
        up: &mut R,
        ubuf: &mut BytesMut,
        want: HeadWant<'_>,
    ) -> Result<RespHead, Fail>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let timeout = self.gw.cfg.upstream.read_timeout;
        let mut got_any = false;
        loop {
            if !ubuf.is_empty() {
                let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut r = httparse::Response::new(&mut hdrs);
                match r.parse(ubuf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = r.code.unwrap_or(0);
                        if (100..200).contains(&status) {
                            if status == 101 {
                                return Err(up_err(
                                    InvalidHTTPHeader,
                                    "101 Switching Protocols without an upgrade request".into(),
                                ));
                            }
                            let interim = ubuf.split_to(n);
                            // RFC 9110 15.2: no 1xx to an HTTP/1.0 client.
                            if !want.http10 && !write_down(dw, io, &interim).await {
                                return Err(Fail::Down);
                            }
                            continue;
                        }
                        let mut h = response_framing(&r, n, want.is_head)?;
                        h.dechunk = want.http10 && h.framing == Framing::Chunked;
                        h.down_close = want.close || h.framing == Framing::UntilClose || h.dechunk;
                        h.http10 = want.http10;
                        client_head(&r, &mut h);
                        return Ok(h);
                    }
                    Ok(httparse::Status::Partial) if ubuf.len() <= MAX_HEAD => {}
                    Ok(httparse::Status::Partial) => {
                        return Err(up_err(InvalidHTTPHeader, "response head too large".into()))
                    }
                    Err(e) => return Err(up_err(InvalidHTTPHeader, format!("response head: {e}"))),
                }
            }
            match fast_timeout(timeout, up.read_buf(ubuf)).await {
                Ok(Ok(0)) if !got_any => return Err(Fail::Stale),
                Ok(Ok(0)) => {
                    return Err(up_err(
                        ConnectionClosed,
                        "the target closed during the response head".into(),
                    ))
                }
                Ok(Ok(_)) => got_any = true,
                Ok(Err(e)) if !got_any => {
                    // A reset on a pooled connection is the same case as a close.
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) {
                        return Err(Fail::Stale);
                    }
                    return Err(up_err(ReadError, e.to_string()));
                }
                Ok(Err(e)) => return Err(up_err(ReadError, e.to_string())),
                Err(_) if want.sending.is_some_and(|s| s.load(Ordering::Relaxed)) => {}
                Err(_) => return Err(up_err(ReadTimedout, "response head".into())),
            }
        }
    }
}

/// Body framing and reuse from a final response head.
fn response_framing(
    r: &httparse::Response<'_, '_>,
    head_len: usize,
    is_head: bool,
) -> Result<RespHead, Fail> {
    let status = r.code.unwrap_or(0);
    let mut keepalive = r.version == Some(1);
    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None; // Some(last coding is chunked)
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match (content_length(h.value), length) {
                (Some(v), None) => length = Some(v),
                (Some(v), Some(p)) if v == p => {}
                _ => {
                    return Err(up_err(
                        InvalidHTTPHeader,
                        "invalid Content-Length in the response".into(),
                    ))
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The codings of every field, in order: the last one decides.
            let last = text(h.value)
                .and_then(|v| v.rsplit(',').map(str::trim).find(|t| !t.is_empty()))
                .map(|t| t.eq_ignore_ascii_case("chunked"));
            if let Some(last) = last {
                te = Some(last);
            } else if te.is_none() {
                te = Some(false);
            }
        } else if h.name.eq_ignore_ascii_case("connection") && has_token(h.value, "close") {
            keepalive = false;
        }
    }
    if te.is_some() && length.is_some() && !(is_head || status == 204 || status == 304) {
        // Framed two ways at once: which one the target meant is a guess, and a wrong guess
        // desynchronises the connection (nginx refuses such an answer too).
        return Err(up_err(
            InvalidHTTPHeader,
            "the response has both Content-Length and Transfer-Encoding".into(),
        ));
    }
    let framing = if is_head || status == 204 || status == 304 {
        Framing::None
    } else {
        match (te, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        keepalive = false;
    }
    Ok(RespHead {
        status,
        framing,
        keepalive,
        head_len,
        down_close: false,
        http10: false,
        dechunk: false,
        out: Vec::new(),
    })
}

/// The response head for the client (into `h.out`): the target's status and headers, without
/// its hop-by-hop ones, plus `Connection: close` when the client's connection ends.
///
/// The framing fields are the gateway's own: a `Length` body gets one `Content-Length`, a
/// chunked body `Transfer-Encoding: chunked` (re-chunked by the gateway; none for an HTTP/1.0
/// client, which reads to the close); a body without framing (HEAD, 204, 304) keeps the
/// target's `Content-Length`, which describes the resource.
fn client_head(r: &httparse::Response<'_, '_>, h: &mut RespHead) {
    let out = &mut h.out;
    out.reserve(h.head_len + 64);
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", h.status, r.reason.unwrap_or(""));
    let ours = matches!(h.framing, Framing::Length(_) | Framing::Chunked);
    for hd in r.headers.iter() {
        let n = hd.name;
        if n.eq_ignore_ascii_case("connection")
            || n.eq_ignore_ascii_case("keep-alive")
            || n.eq_ignore_ascii_case("proxy-connection")
            || n.eq_ignore_ascii_case("trailer")
            || ours
                && (n.eq_ignore_ascii_case("transfer-encoding")
                    || n.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(hd.value);
        out.extend_from_slice(b"\r\n");
    }
    match h.framing {
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::Chunked if !h.dechunk => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(connection_header(h.down_close, h.http10));
    out.extend_from_slice(b"\r\n");
}

/// The `Connection` header of an answer to the client: `close` when its connection ends after
/// it, `keep-alive` when it stays open for an HTTP/1.0 client (which would otherwise assume the
/// close), none for HTTP/1.1 (persistent by default).
fn connection_header(close: bool, http10: bool) -> &'static [u8] {
    if close {
        b"Connection: close\r\n"
    } else if http10 {
        b"Connection: keep-alive\r\n"
    } else {
        b""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_framing_follows_rfc_9112() {
        let frame = |raw: &[u8], head: bool| {
            let mut h = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut h);
            let n = match r.parse(raw) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("{other:?}"),
            };
            match response_framing(&r, n, head) {
                Ok(h) => (h.framing, h.keepalive),
                Err(_) => panic!("framing error"),
            }
        };
        assert_eq!(
            frame(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            (Framing::Length(5), true)
        );
        assert_eq!(
            frame(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            (Framing::None, true)
        );
        assert_eq!(
            frame(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            ),
            (Framing::Chunked, true)
        );
        assert_eq!(
            frame(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
                false
            ),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            frame(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            frame(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (Framing::None, true)
        );
        assert_eq!(
            frame(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            (Framing::Length(0), false)
        );
        assert_eq!(
            frame(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (Framing::Length(0), false)
        );
    }
}
