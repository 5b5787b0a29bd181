//! A real mutual-TLS target that reports the client certificate it saw.
//!
//! Used by the integration tests, the benchmarks and the `demo` command: BoringSSL (through
//! tokio-boring) terminates TLS, hyper 1 serves HTTP/1.1 with keep-alive, and every response tells
//! the caller what arrived:
//!
//! | header                   | value                                                          |
//! |--------------------------|----------------------------------------------------------------|
//! | `x-client-cert-sha256`   | hex SHA-256 of the client leaf (DER), or `none`                |
//! | `x-client-cert-subject`  | one-line subject DN (`C=US, O=Acme, CN=client`), or `none`     |
//! | `x-client-cert-serial`   | serial number in lower-case hex (`BN_bn2hex`), or `none`      |
//! | `x-connection-id`        | 1, 2, 3... per accepted TLS connection (shows pooled reuse)    |
//! | `x-seen-host`            | the `Host` header received (empty if none)                     |
//! | `x-seen-method`          | the request method                                             |
//! | `x-seen-path`            | path and query exactly as received                             |
//! | `x-seen-header-names`    | the request's field names, lower case, sorted, comma-separated |
//! | `x-seen-framing`         | the request body's framing: `length:N`, `chunked` or `none`    |
//!
//! Routes (`GET` or `HEAD`; any other method on these paths falls through to the echo):
//! - `/bytes/{n}`: `n` bytes of [`pattern`] with a `content-length`;
//! - `/chunked/{n}`: the same bytes, streamed with `transfer-encoding: chunked`;
//! - `/cut/{n}`: announces `n` bytes with a `content-length`, sends the first half, then drops
//!   the connection (a target failing in the middle of a body);
//! - `/headers`: a JSON object of the request headers (repeated names joined with `, `);
//! - `/slow/{ms}`: waits `ms` milliseconds (at most [`MAX_SLOW_MS`]) then answers `ok`;
//! - `/status/{code}`: that status (200-599) with a short body;
//! - `/collect` (any method): the whole request body read first, then sent back (status 200);
//!   with `Expect: 100-continue` the client gets a `100 Continue` before it sends the body;
//! - `/drop` (any method): the whole request read, then the connection closed without an answer
//!   (a target that acted on a request and failed before answering);
//! - `/refuse/{code}` (any method): that status (200-599) at once, the request body never read
//!   (and so no `100 Continue`);
//! - anything else, any method: the request body streamed back byte for byte, status 200, the
//!   request's `content-type` copied.
//!
//! Client certificates: with an empty [`EchoConfig::client_ca`] none is requested; otherwise one is
//! requested and verified against those CAs, and with `require_client_cert` a handshake without one
//! fails (`SslVerifyMode::PEER | FAIL_IF_NO_PEER_CERT`).
//!
//! Lifecycle: [`EchoServer::start`] runs on the caller's tokio runtime, [`spawn_on_thread`] on a
//! runtime of its own. [`EchoServer::shutdown`] (also run on drop) stops accepting and lets
//! in-flight requests finish (idle keep-alive connections close at once); [`EchoServer::stopped`]
//! waits for that.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use boring::hash::MessageDigest;
use boring::pkey::{PKey, Private};
use boring::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use boring::x509::X509;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Longest wait `/slow/{ms}` accepts.
pub const MAX_SLOW_MS: u64 = 600_000;
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown, in-flight requests get this long before their connections are aborted.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Size of the body chunks `/bytes` and `/chunked` produce.
const CHUNK: usize = 64 * 1024;
/// The pattern repeats every `PERIOD` bytes.
const PERIOD: usize = 251;

pub const HDR_CERT_SHA256: &str = "x-client-cert-sha256";
pub const HDR_CERT_SUBJECT: &str = "x-client-cert-subject";
pub const HDR_CERT_SERIAL: &str = "x-client-cert-serial";
pub const HDR_CONNECTION_ID: &str = "x-connection-id";
pub const HDR_SEEN_HOST: &str = "x-seen-host";
pub const HDR_SEEN_METHOD: &str = "x-seen-method";
pub const HDR_SEEN_PATH: &str = "x-seen-path";
pub const HDR_SEEN_HEADER_NAMES: &str = "x-seen-header-names";
pub const HDR_SEEN_FRAMING: &str = "x-seen-framing";

/// What the echo server serves and whom it accepts.
pub struct EchoConfig {
    /// Usually `127.0.0.1:0`; the bound address is [`EchoServer::addr`].
    pub listen: SocketAddr,
    /// Server leaf certificate.
    pub cert: X509,
    pub key: PKey<Private>,
    /// Intermediates sent after the leaf.
    pub chain: Vec<X509>,
    /// CAs that client certificates must chain to; empty means no client certificate is requested.
    pub client_ca: Vec<X509>,
    /// Fail the handshake when the client sends no certificate (needs a non-empty `client_ca`).
    pub require_client_cert: bool,
}

/// Handle to a running echo server. Dropping it shuts the server down.
pub struct EchoServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

struct Shared {
    connections: AtomicU64,
    handshake_failures: AtomicU64,
    requests: AtomicU64,
}

impl EchoServer {
    /// Binds and starts serving on the current tokio runtime (panics outside one, like
    /// `tokio::spawn`); returns once the listener is bound.
    pub async fn start(cfg: EchoConfig) -> io::Result<EchoServer> {
        let (server, serve) = prepare(cfg).await?;
        tokio::spawn(serve);
        Ok(server)
    }

    /// Stops accepting connections; in-flight requests finish, idle connections close. Idempotent,
    /// returns at once; see [`EchoServer::stopped`].
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once the listener is closed and every connection has ended (or the runtime serving
    /// them is gone). Works from any runtime.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        // An error means the serving task was dropped with its runtime: stopped as well.
        let _ = done.wait_for(|d| *d).await;
    }

    /// TLS connections accepted so far (completed handshakes).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Requests whose head has been received (counted before they are answered, so a test can
    /// wait for a slow request to be in flight).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Handshakes that failed or timed out (e.g. a missing or untrusted client certificate).
    pub fn handshake_failures(&self) -> u64 {
        self.shared.handshake_failures.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs the server on a dedicated thread with its own tokio runtime (for the `demo` command and
/// callers outside a runtime); returns once the listener is bound. The thread ends after
/// [`EchoServer::shutdown`] (or drop) once connections have drained.
pub fn spawn_on_thread(cfg: EchoConfig) -> io::Result<EchoServer> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<EchoServer>>(1);
    std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("echo-worker")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match prepare(cfg).await {
                    Ok((server, serve)) => {
                        if tx.send(Ok(server)).is_ok() {
                            serve.await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    rx.recv()
        .map_err(|_| io::Error::other("echo server thread exited before binding"))?
}

/// The bytes `/bytes/{n}` and `/chunked/{n}` return: byte `i` is `(i % 251) as u8`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % PERIOD) as u8).collect()
}

fn tls_error(what: &str, e: boring::error::ErrorStack) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("echo server {what}: {e}"),
    )
}

fn build_acceptor(cfg: &EchoConfig) -> io::Result<SslAcceptor> {
    if cfg.require_client_cert && cfg.client_ca.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "echo server: require_client_cert needs at least one client_ca to verify against",
        ));
    }
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|e| tls_error("TLS context", e))?;
    b.set_certificate(&cfg.cert)
        .map_err(|e| tls_error("certificate", e))?;
    b.set_private_key(&cfg.key)
        .map_err(|e| tls_error("private key", e))?;
    b.check_private_key()
        .map_err(|e| tls_error("key does not match certificate", e))?;
    for c in &cfg.chain {
        b.add_extra_chain_cert(c.clone())
            .map_err(|e| tls_error("chain certificate", e))?;
    }
    if !cfg.client_ca.is_empty() {
        for ca in &cfg.client_ca {
            b.cert_store_mut()
                .add_cert(ca.clone())
                .map_err(|e| tls_error("client CA", e))?;
            b.add_client_ca(ca)
                .map_err(|e| tls_error("client CA name", e))?;
        }
        let mut mode = SslVerifyMode::PEER;
        if cfg.require_client_cert {
            mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
        }
        b.set_verify(mode);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(b.build())
}

/// Builds the TLS acceptor, binds, and returns the handle plus the future that serves.
async fn prepare(
    cfg: EchoConfig,
) -> io::Result<(EchoServer, impl Future<Output = ()> + Send + 'static)> {
    let acceptor = build_acceptor(&cfg)?;
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        connections: AtomicU64::new(0),
        handshake_failures: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let serve = serve(listener, acceptor, shared.clone(), shutdown_rx, done_tx);
    Ok((
        EchoServer {
            addr,
            shared,
            shutdown: shutdown_tx,
            done: done_rx,
        },
        serve,
    ))
}

/// Resolves when shutdown is requested or the [`EchoServer`] handle is gone. (A helper so the
/// watch guard is dropped here and never held across an await in the select.)
async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn serve(
    listener: TcpListener,
    acceptor: SslAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    done: watch::Sender<bool>,
) {
    let acceptor = Arc::new(acceptor);
    // Handed to each connection; `shutdown` itself stays borrowed by the select below.
    let conn_shutdown = shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // A dropped sender also means stop.
            _ = stop_requested(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(connection(tcp, acceptor.clone(), shared.clone(), conn_shutdown.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    log::warn!("echo server accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log::warn!("echo server: connections still busy after {DRAIN_TIMEOUT:?}; aborting them");
        conns.shutdown().await;
    }
    done.send_replace(true);
}

/// What one TLS connection knows about its client; stamped on every response.
struct ConnInfo {
    id: u64,
    sha256: HeaderValue,
    subject: HeaderValue,
    serial: HeaderValue,
}

impl ConnInfo {
    fn new(id: u64, peer: Option<X509>) -> ConnInfo {
        let none = HeaderValue::from_static("none");
        let Some(cert) = peer else {
            return ConnInfo {
                id,
                sha256: none.clone(),
                subject: none.clone(),
                serial: none,
            };
        };
        let sha256 = cert
            .digest(MessageDigest::sha256())
            .map(|d| lossy_header(&hex::encode(d)))
            .unwrap_or_else(|_| none.clone());
        let serial = cert
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| lossy_header(&s)))
            .unwrap_or_else(|_| none.clone());
        ConnInfo {
            id,
            sha256,
            subject: lossy_header(&one_line_dn(cert.subject_name())),
            serial,
        }
    }
}

/// `C=US, O=Acme, CN=client`, in the order the entries appear in the certificate.
fn one_line_dn(name: &boring::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e
                .data()
                .as_utf8()
                .map(|s| s.to_string())
                .unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A header value from arbitrary text: bytes outside visible ASCII become `\xNN`.
fn lossy_header(s: &str) -> HeaderValue {
    if let Ok(v) = HeaderValue::from_str(s) {
        return v;
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: Arc<SslAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tls =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_boring::accept(&acceptor, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
                log::debug!("echo server handshake failed: {e}");
                return;
            }
            Err(_) => {
                shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
                log::debug!("echo server handshake timed out");
                return;
            }
        };
    let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let info = Arc::new(ConnInfo::new(id, tls.ssl().peer_certificate()));
    let svc = service_fn(move |req: Request<Incoming>| {
        let info = info.clone();
        shared.requests.fetch_add(1, Ordering::Relaxed);
        async move {
            if req.uri().path() == "/drop" {
                // Read the whole request, then close the connection without an answer (a
                // target that fails after it has acted on a request).
                let _ = req.into_body().collect().await;
                return Err(io::Error::other("dropped on purpose (/drop)"));
            }
            Ok::<_, io::Error>(handle(req, &info).await)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                log::debug!("echo server connection {id}: {e}");
            }
            return;
        }
        _ = stop_requested(&mut shutdown) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        log::debug!("echo server connection {id} during shutdown: {e}");
    }
}

type EchoError = Box<dyn std::error::Error + Send + Sync>;
type EchoBody = UnsyncBoxBody<Bytes, EchoError>;

fn full(body: impl Into<Bytes>) -> EchoBody {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<EchoBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn bad_request(msg: &str) -> Response<EchoBody> {
    plain(StatusCode::BAD_REQUEST, format!("{msg}\n"))
}

async fn handle(req: Request<Incoming>, info: &ConnInfo) -> Response<EchoBody> {
    let method = req.method().clone();
    let host = req
        .headers()
        .get(HOST)
        .cloned()
        .or_else(|| req.uri().authority().map(|a| lossy_header(a.as_str())))
        .unwrap_or_else(|| HeaderValue::from_static(""));
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    // The request's field names (sorted, once each) and its body framing, as this target read
    // them: two requests that differ in either show it in the answer.
    let mut names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let names = lossy_header(&names.join(","));
    let framing = if req.headers().get(http::header::TRANSFER_ENCODING).is_some() {
        "chunked".to_string()
    } else {
        match req.headers().get(http::header::CONTENT_LENGTH) {
            Some(v) => format!("length:{}", v.to_str().unwrap_or("?")),
            None => "none".to_string(),
        }
    };

    let mut resp = route(req).await;

    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static(HDR_CERT_SHA256),
        info.sha256.clone(),
    );
    h.insert(
        HeaderName::from_static(HDR_CERT_SUBJECT),
        info.subject.clone(),
    );
    h.insert(
        HeaderName::from_static(HDR_CERT_SERIAL),
        info.serial.clone(),
    );
    h.insert(
        HeaderName::from_static(HDR_CONNECTION_ID),
        HeaderValue::from(info.id),
    );
    h.insert(HeaderName::from_static(HDR_SEEN_HOST), host);
    h.insert(
        HeaderName::from_static(HDR_SEEN_METHOD),
        lossy_header(method.as_str()),
    );
    h.insert(
        HeaderName::from_static(HDR_SEEN_PATH),
        lossy_header(&path_and_query),
    );
    h.insert(HeaderName::from_static(HDR_SEEN_HEADER_NAMES), names);
    h.insert(
        HeaderName::from_static(HDR_SEEN_FRAMING),
        lossy_header(&framing),
    );
    resp
}

async fn route(req: Request<Incoming>) -> Response<EchoBody> {
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    let path = req.uri().path();
    if path == "/collect" {
        return match req.into_body().collect().await {
            Ok(b) => plain(StatusCode::OK, b.to_bytes()),
            Err(e) => bad_request(&format!("/collect: reading the body failed: {e}")),
        };
    }
    if let Some(code) = path.strip_prefix("/refuse/") {
        return match final_status(code) {
            Some(s) => plain(s, format!("status {}\n", s.as_u16())),
            None => bad_request("/refuse/{code}: code must be 200-599"),
        };
    }
    if is_get {
        if let Some(n) = path.strip_prefix("/bytes/") {
            return match n.parse::<u64>() {
                Ok(n) => pattern_response(n, true, None),
                Err(_) => bad_request("/bytes/{n}: n must be a non-negative integer"),
            };
        }
        if let Some(n) = path.strip_prefix("/chunked/") {
            return match n.parse::<u64>() {
                Ok(n) => pattern_response(n, false, None),
                Err(_) => bad_request("/chunked/{n}: n must be a non-negative integer"),
            };
        }
        if let Some(n) = path.strip_prefix("/cut/") {
            return match n.parse::<u64>() {
                Ok(n) => pattern_response(n, true, Some(n / 2)),
                Err(_) => bad_request("/cut/{n}: n must be a non-negative integer"),
            };
        }
        if path == "/headers" {
            return headers_response(&req);
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            return match ms.parse::<u64>() {
                Ok(ms) if ms <= MAX_SLOW_MS => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    plain(StatusCode::OK, "ok")
                }
                _ => bad_request("/slow/{ms}: ms must be an integer up to 600000"),
            };
        }
        if let Some(code) = path.strip_prefix("/status/") {
            return match final_status(code) {
                Some(s) => {
                    let body = if s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED {
                        String::new()
                    } else {
                        format!("status {}\n", s.as_u16())
                    };
                    plain(s, body)
                }
                None => bad_request("/status/{code}: code must be 200-599"),
            };
        }
    }
    echo_response(req)
}

/// A final status (200-599) from a path segment.
fn final_status(code: &str) -> Option<StatusCode> {
    code.parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| s.as_u16() >= 200)
}

fn headers_response(req: &Request<Incoming>) -> Response<EchoBody> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    match serde_json::to_vec(&map) {
        Ok(json) => {
            let mut resp = Response::new(full(json));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn echo_response(req: Request<Incoming>) -> Response<EchoBody> {
    let content_type = req.headers().get(CONTENT_TYPE).cloned();
    // Incoming reports the request's content-length as its exact size, so a sized request gets a
    // sized response and a chunked one a chunked response; bytes stream through as they arrive.
    let mut resp = Response::new(req.into_body().map_err(EchoError::from).boxed_unsync());
    if let Some(ct) = content_type {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

/// `cut_at`: fail the body after that many bytes (see [`PatternBody`]).
fn pattern_response(n: u64, sized: bool, cut_at: Option<u64>) -> Response<EchoBody> {
    let mut resp = Response::new(
        PatternBody {
            pos: 0,
            end: n,
            sized,
            cut_at,
            cut_pause: None,
        }
        .boxed_unsync(),
    );
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// `PERIOD + CHUNK` bytes of the pattern: any chunk, at any offset, is a zero-copy slice of it.
fn pattern_block() -> &'static Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK.get_or_init(|| Bytes::from(pattern(PERIOD + CHUNK)))
}

/// Streams `pattern` bytes `pos..end`. `sized` reports an exact size (hyper sends
/// `content-length`); otherwise the size is unknown and hyper sends it chunked.
struct PatternBody {
    pos: u64,
    end: u64,
    sized: bool,
    /// Fail the body (hyper then drops the connection) once this many bytes are sent, after a
    /// pause that lets hyper flush what came before.
    cut_at: Option<u64>,
    cut_pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = EchoError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, EchoError>>> {
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        let stop = self.cut_at.unwrap_or(self.end);
        if self.pos >= stop {
            let pause = self
                .cut_pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(200))));
            return match pause.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => Poll::Ready(Some(Err("the body is cut here (/cut/{n})".into()))),
            };
        }
        let len = (stop - self.pos).min(CHUNK as u64) as usize;
        let off = (self.pos % PERIOD as u64) as usize;
        self.pos += len as u64;
        Poll::Ready(Some(Ok(Frame::data(pattern_block().slice(off..off + len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sized && self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.end - self.pos)
        } else {
            SizeHint::default()
        }
    }
}
