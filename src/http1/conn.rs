//! The proxy listener's connection loop: every HTTP/1.0 and HTTP/1.1 request, parsed strictly
//! ([`super::codec`]), decided by the gateway core (`crate::gateway`), exchanged with the target
//! by [`relay`]. A connection that opens with the HTTP/2 preface (h2c with prior knowledge) is
//! handed to Pingora's HTTP/2 server for good (`crate::proxy`); nothing else is.
//!
//! Why a loop of its own: on the load harness, Pingora's general proxy path (HTTP/1 session
//! objects, header maps, the duplex body tasks of `proxy_h1`, the pool's idle-watch task per
//! released connection) cost about twice nginx's CPU per request, and on a sidecar the CPU per
//! request *is* the throughput (docs/performance.md). This loop parses each head once and writes
//! each upstream request in one write.
//!
//! Per request (`serve_one`):
//! 1. the head, under one deadline from its first byte (`proxy.client_timeout_secs`, as nginx's
//!    `client_header_timeout`); a head off the grammar, ambiguous framing, two Hosts, a target
//!    with characters RFC 3986 does not allow: 400 (or 417/431/501/505) and the connection closed
//!    (after a short lingering read, so the client gets the answer);
//! 2. the gateway's decision (`Gateway::admit`: rate limit, mode, target with its path resolved,
//!    auth, mapping); a refusal is answered here, after reading and dropping a `Content-Length`
//!    body up to 1 MiB, so that the connection can stay open (after a larger or chunked body, the
//!    answer closes it; an `Expect: 100-continue` client is answered before it sends the body);
//! 3. the upstream head, written by the gateway: the resolved path, `Host`, the fields
//!    `HeaderPolicy` keeps, and the gateway's own framing fields;
//! 4. the body: up to 64 KiB (`Content-Length`, or the data of a chunked body, decoded first) is
//!    read whole and sent with `Content-Length`; larger bodies and those after `Expect:
//!    100-continue` are streamed in the gateway's own framing while the answer is relayed (a
//!    target may answer, or echo, before it has read the whole body);
//! 5. the exchange ([`relay`]): a request is sent again only when it is idempotent and the
//!    pooled connection failed before any byte of the answer; the answer's head is checked, its
//!    body re-framed by the gateway; interim 1xx answers go to the client as they come.
//!
//! Pipelined requests are served in order. An HTTP/1.0 request goes on as HTTP/1.1 (so the
//! target connection is pooled) and its client gets a chunked answer decoded, then the close.
//!
//! Timeouts: `proxy.client_idle_timeout_secs` (60 s) idle between requests,
//! `proxy.client_timeout_secs` (60 s) for a whole head, for each read of a body and for handing
//! a response (part) to the client; 5 s to read the body of a refused request;
//! `upstream.*_timeout_ms` towards the target.

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

mod relay;
use relay::{connection_header, BodyEnd, Framing};

/// Header fields per message this loop parses; more is a 431 (requests) or fails (responses).
const MAX_HEADERS: usize = 96;
/// A request head larger than this is a 431.
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

/// The listener's app: the lean loop for HTTP/1, Pingora's HTTP/2 server for h2c connections
/// (whose streams the lean loop serves too, through `crate::proxy::H2Streams`).
pub struct ProxyApp {
    lean: Arc<Lean>,
    h2: Arc<HttpProxy<crate::proxy::H2Streams>>,
}

/// The one request path: parse, decide, exchange, relay. Every request of the proxy listener,
/// HTTP/1 or HTTP/2, is served here.
pub struct Lean {
    gw: Gateway,
    tls: Arc<TlsClient>,
    pool: Arc<Pool>,
    sweeper: AtomicBool,
}

impl ProxyApp {
    /// `tls` is the upstream connector (built from the trust bundle), shared with the admin's
    /// calls.
    pub fn new(
        gw: Gateway,
        conf: &Arc<ServerConf>,
        tls: Arc<TlsClient>,
    ) -> anyhow::Result<ProxyApp> {
        let up = &gw.cfg.upstream;
        let pool = Arc::new(Pool::new(up.keepalive_pool_size, up.idle_timeout));
        let idle = gw.cfg.proxy.client_idle_timeout;
        let lean = Arc::new(Lean {
            gw,
            tls,
            pool,
            sweeper: AtomicBool::new(false),
        });
        let mut h2 = pingora_proxy::http_proxy(conf, crate::proxy::H2Streams::new(lean.clone()));
        // HTTP/2 with prior knowledge (h2c): Pingora's `process_new` of this app is called only
        // for a connection that opens with the HTTP/2 preface, so h2c is on for it.
        let mut opts = HttpServerOptions::default();
        opts.h2c = true;
        opts.h2_idle_timeout = Some(idle);
        h2.server_options = Some(opts);
        Ok(ProxyApp {
            lean,
            h2: Arc::new(h2),
        })
    }
}

impl Lean {
    /// `proxy.client_timeout_secs`.
    pub(crate) fn client_timeout(&self) -> Duration {
        self.gw.cfg.proxy.client_timeout
    }

    /// Serve the one HTTP/1.1 request written into `stream` (an HTTP/2 stream, written as
    /// HTTP/1.1 by `crate::proxy::H2Streams`) from the client `peer`, and close.
    pub(crate) async fn serve_piped(&self, stream: Stream, peer: Option<IpAddr>) {
        self.start_sweeper();
        let mut down = Down {
            stream,
            buf: BytesMut::with_capacity(4096),
            peer,
            idle: self.gw.cfg.proxy.client_idle_timeout,
            io: self.gw.cfg.proxy.client_timeout,
        };
        let (_never, mut shutdown) = tokio::sync::watch::channel(false);
        let _ = self.serve_one(&mut down, &mut shutdown).await;
        let _ = down.stream.shutdown().await;
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
        let lean = &self.lean;
        lean.start_sweeper();
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut down = Down {
            stream,
            buf: BytesMut::with_capacity(4096),
            peer,
            idle: lean.gw.cfg.proxy.client_idle_timeout,
            io: lean.gw.cfg.proxy.client_timeout,
        };
        let mut shutdown = shutdown.clone();
        loop {
            match lean.serve_one(&mut down, &mut shutdown).await {
                Next::Again => {}
                Next::Close => return None,
                Next::H2 => {
                    let stream = rewind(down.stream, &down.buf)?;
                    return ServerApp::process_new(&self.h2, stream, &shutdown).await;
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.lean.pool.clear();
    }
}

impl Lean {
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
        // 4b. An OAuth1 nonce this replica accepted is checked fleet-wide (Redis `SET NX`; a
        //     no-op without Redis or while it is down): a replay on another replica is refused
        //     here, before anything reaches the target.
        if let Some(n) = ctx.nonce.take() {
            let now = crate::admin::unix_now();
            if let Err(e) = self.gw.cfg.auth.oauth1.check_shared_nonce(&n, now).await {
                ctx.outcome = "unauthorized";
                let body = serde_json::json!({"error": "unauthorized", "message": e.to_string()});
                let extra = [("www-authenticate", e.www_authenticate())];
                let _ =
                    write_json(down, StatusCode::UNAUTHORIZED, &body, &extra, false, http10).await;
                ctx.record(401);
                return Next::Close;
            }
        }
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
}
