//! A strict, recording mTLS target for the framing tests: hyper 1's HTTP/1.1 server (whose
//! parser follows RFC 9112: it refuses `Content-Length` with a bad value, chunk-size lines that
//! do not parse, bare LF in chunk extensions, ...) behind BoringSSL that demands a client
//! certificate from the test CA. It listens on many loopback ports at once (one per case, so
//! every case has an upstream pool key, and so upstream connections, of its own) and records
//! every request it parsed: the port, the TLS connection, method, path-and-query, headers, the
//! whole body (or why reading it failed), trailers, and the client certificate's SHA-256.
//!
//! Each request is answered `seen:<n>:<method> <path-and-query>` (`n` counts requests across
//! all ports, from 1), so an answer that reaches the wrong client names the request it belongs
//! to; a request whose body hyper could not read (bad framing) gets a 400
//! `body-failed:<n>:<method> <path-and-query>`. Every byte each connection delivered is kept
//! too, for [`canonical`]. Keep-alive is on: the gateway pools its connections to this target.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use boring::hash::MessageDigest;
use boring::pkey::{PKey, Private};
use boring::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use boring::x509::X509;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// One request as the target parsed it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Position in the target's log, from 1 (the `n` of `seen:<n>:...`).
    pub seq: u64,
    /// The listening port it arrived on.
    pub port: u16,
    /// The TLS connection it arrived on (1, 2, ... across all ports).
    pub conn: u64,
    pub method: String,
    pub path: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Names lower-cased, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// `None` while the body is still being read; `Err` if reading it failed (bad framing).
    pub body: Option<Result<Vec<u8>, String>>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Hex SHA-256 of the client certificate, or `none`.
    pub cert_sha256: String,
}

impl Record {
    pub fn header(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

/// The bytes one TLS connection delivered (after decryption), as hyper read them.
type Raw = Arc<Mutex<Vec<u8>>>;

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Record>>,
    /// (port, connection, bytes received) per TLS connection.
    raw: Mutex<Vec<(u16, u64, Raw)>>,
    conns: AtomicU64,
    handshake_failures: AtomicU64,
}

/// The running target; dropping it stops the runtime that serves it (and so every connection).
pub struct StrictTarget {
    pub ports: Vec<u16>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StrictTarget {
    /// Listen on `n` ephemeral loopback ports with this server certificate; client
    /// certificates must chain to `client_ca`.
    pub fn start(n: usize, cert: &X509, key: &PKey<Private>, client_ca: &X509) -> StrictTarget {
        let acceptor = Arc::new(acceptor(cert, key, client_ca));
        let shared = Arc::new(Shared::default());
        let (ports_tx, ports_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("strict-target".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("target runtime");
                rt.block_on(async move {
                    let mut ports = Vec::with_capacity(n);
                    for _ in 0..n {
                        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                        ports.push(l.local_addr().expect("addr").port());
                        tokio::spawn(accept_loop(l, acceptor.clone(), sh.clone()));
                    }
                    ports_tx.send(ports).expect("ports");
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("target thread");
        let ports = ports_rx.recv().expect("target ports");
        StrictTarget {
            ports,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Every request parsed so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests parsed on `port`.
    pub fn records_on(&self, port: u16) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.port == port)
            .collect()
    }

    /// The bytes each connection on `port` received so far: (connection, bytes).
    pub fn raw_on(&self, port: u16) -> Vec<(u64, Vec<u8>)> {
        self.shared
            .raw
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(p, _, _)| *p == port)
            .map(|(_, c, raw)| (*c, raw.lock().unwrap_or_else(|e| e.into_inner()).clone()))
            .collect()
    }

    /// TLS connections accepted so far (completed handshakes).
    pub fn connections(&self) -> u64 {
        self.shared.conns.load(Ordering::Relaxed)
    }

    pub fn handshake_failures(&self) -> u64 {
        self.shared.handshake_failures.load(Ordering::Relaxed)
    }
}

impl Drop for StrictTarget {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn acceptor(cert: &X509, key: &PKey<Private>, client_ca: &X509) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("TLS context");
    b.set_certificate(cert).expect("certificate");
    b.set_private_key(key).expect("key");
    b.cert_store_mut()
        .add_cert(client_ca.clone())
        .expect("client CA");
    b.add_client_ca(client_ca).expect("client CA name");
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.build()
}

async fn accept_loop(l: TcpListener, acceptor: Arc<SslAcceptor>, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let port = tcp.local_addr().map(|a: SocketAddr| a.port()).unwrap_or(0);
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, port, acceptor.clone(), shared.clone()));
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    port: u16,
    acceptor: Arc<SslAcceptor>,
    shared: Arc<Shared>,
) {
    let tls = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_boring::accept(&acceptor, tcp),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        _ => {
            shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let conn = shared.conns.fetch_add(1, Ordering::Relaxed) + 1;
    let cert_sha256 = tls
        .ssl()
        .peer_certificate()
        .and_then(|c| c.digest(MessageDigest::sha256()).ok())
        .map(hex::encode)
        .unwrap_or_else(|| "none".into());
    let raw = Raw::default();
    shared
        .raw
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((port, conn, raw.clone()));
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let cert_sha256 = cert_sha256.clone();
        async move { Ok::<_, Infallible>(handle(req, port, conn, cert_sha256, &shared).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).timer(TokioTimer::new());
    let _ = builder
        .serve_connection(TokioIo::new(Tap { inner: tls, raw }), svc)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    port: u16,
    conn: u64,
    cert_sha256: String,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string());
    let version = format!("{:?}", req.version());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    // Recorded as soon as the head is parsed: a head whose body never arrives whole still
    // counts as a request the target parsed.
    let (seq, idx) = {
        let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
        let seq = log.len() as u64 + 1;
        log.push(Record {
            seq,
            port,
            conn,
            method: method.clone(),
            path: path.clone(),
            version,
            headers,
            body: None,
            trailers: Vec::new(),
            cert_sha256,
        });
        (seq, log.len() - 1)
    };
    let (body, trailers) = match req.into_body().collect().await {
        Ok(c) => {
            let trailers = c
                .trailers()
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            (Ok(c.to_bytes().to_vec()), trailers)
        }
        Err(e) => (Err(e.to_string()), Vec::new()),
    };
    let failed = body.is_err();
    {
        let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
        log[idx].body = Some(body);
        log[idx].trailers = trailers;
    }
    if failed {
        // Not a request the target could read whole (hyper closes the connection after it).
        let mut resp = Response::new(Full::new(Bytes::from(format!(
            "body-failed:{seq}:{method} {path}"
        ))));
        *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
        return resp;
    }
    Response::new(Full::new(Bytes::from(format!(
        "seen:{seq}:{method} {path}"
    ))))
}

/// A stream that keeps a copy of every byte read from it.
struct Tap<S> {
    inner: S,
    raw: Raw,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.raw
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether `raw`, the bytes a connection to the target carried, is canonical HTTP/1.1 framing
/// as a re-framing gateway writes it: CRLF line ends only, never `Content-Length` with
/// `Transfer-Encoding`, `Transfer-Encoding` only `chunked`, `Content-Length` only digits, and
/// chunked bodies whose size lines are hex digits alone (no extension, no whitespace, no
/// leading zero) and whose trailer lines are plain fields. Bytes cut off at the end (an
/// aborted body) are fine; `Err` names the first thing that is not canonical.
pub fn canonical(raw: &[u8]) -> Result<(), String> {
    let mut rest = raw;
    while !rest.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut hs);
        let head_len = match req.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(()),
            Err(e) => return Err(format!("a head that does not parse ({e}): {}", esc(rest))),
        };
        let head = &rest[..head_len];
        for (i, b) in head.iter().enumerate() {
            let bare_lf = *b == b'\n' && (i == 0 || head[i - 1] != b'\r');
            let bare_cr = *b == b'\r' && head.get(i + 1) != Some(&b'\n');
            if bare_lf || bare_cr {
                return Err(format!("a bare CR or LF in a head: {}", esc(head)));
            }
        }
        let values = |name: &str| -> Vec<String> {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .collect()
        };
        let te = values("transfer-encoding");
        let cl = values("content-length");
        let body = &rest[head_len..];
        let used = if !te.is_empty() {
            if !cl.is_empty() {
                return Err(format!(
                    "Content-Length with Transfer-Encoding: {}",
                    esc(head)
                ));
            }
            if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
                return Err(format!("Transfer-Encoding {te:?}"));
            }
            match canonical_chunked(body)? {
                Some(n) => n,
                None => return Ok(()),
            }
        } else if !cl.is_empty() {
            if cl.len() != 1 || cl[0].is_empty() || !cl[0].bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("Content-Length {cl:?}"));
            }
            let n: usize = cl[0]
                .parse()
                .map_err(|_| format!("Content-Length {cl:?}"))?;
            if body.len() < n {
                return Ok(());
            }
            n
        } else {
            0
        };
        rest = &body[used..];
    }
    Ok(())
}

/// The length of a canonical chunked body at the start of `b`; `None` if it is cut off.
fn canonical_chunked(b: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0;
    loop {
        let Some(eol) = b[pos..].windows(2).position(|w| w == b"\r\n") else {
            return if b.len() - pos > 18
                || b[pos..]
                    .iter()
                    .any(|c| !c.is_ascii_hexdigit() && *c != b'\r')
            {
                Err(format!(
                    "a chunk-size line that is not hex digits: {}",
                    esc(&b[pos..])
                ))
            } else {
                Ok(None)
            };
        };
        let line = &b[pos..pos + eol];
        let ok = !line.is_empty()
            && line.len() <= 16
            && line.iter().all(|c| c.is_ascii_hexdigit())
            && (line == b"0" || line[0] != b'0');
        if !ok {
            return Err(format!("chunk-size line {}", esc(line)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(line).unwrap_or("x"), 16)
            .map_err(|e| format!("chunk size {}: {e}", esc(line)))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = b[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let line = &b[pos..pos + eol];
                pos += eol + 2;
                if line.is_empty() {
                    return Ok(Some(pos));
                }
                let colon = line.iter().position(|c| *c == b':');
                let name_ok = colon.is_some_and(|c| {
                    c > 0
                        && line[..c]
                            .iter()
                            .all(|x| x.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(x))
                });
                if !name_ok || line.iter().any(|c| *c == b'\r' || *c == b'\n' || *c == 0) {
                    return Err(format!("trailer line {}", esc(line)));
                }
            }
        }
        if b.len() < pos.saturating_add(size).saturating_add(2) {
            return Ok(None);
        }
        if &b[pos + size..pos + size + 2] != b"\r\n" {
            return Err(format!(
                "chunk data not followed by CRLF: {}",
                esc(&b[pos + size..])
            ));
        }
        pos += size + 2;
    }
}

/// At most 100 bytes, escaped.
fn esc(b: &[u8]) -> String {
    let s: String = b
        .iter()
        .take(100)
        .flat_map(|c| std::ascii::escape_default(*c))
        .map(char::from)
        .collect();
    if b.len() > 100 {
        format!("{s}...({} bytes)", b.len())
    } else {
        s
    }
}

#[test]
fn the_canonical_check_tells_re_framed_bodies_from_client_framing() {
    let ok = b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi";
    assert_eq!(canonical(ok), Ok(()));
    // Cut off anywhere: still fine.
    for n in 0..ok.len() {
        assert_eq!(canonical(&ok[..n]), Ok(()), "cut at {n}");
    }
    for bad in [
        &b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n"[..],
        b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n05\r\nhello\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n",
        b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello",
    ] {
        assert!(canonical(bad).is_err(), "{}", esc(bad));
    }
}

/// A raw mTLS target that answers with canned bytes chosen by the request path (see
/// [`ambiguous_response`]), keeps every connection open, and records (connection, path) for
/// every request head it read: it shows whether the gateway reused a connection after an
/// ambiguous answer.
pub struct RawTarget {
    pub port: u16,
    seen: Arc<Mutex<Vec<(u64, String)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The answer the smuggled bytes of an ambiguous response form, if the gateway reads them as
/// the answer to the next request on that connection.
pub const SMUGGLED_RESPONSE: &str =
    "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nx-connection-id: 999\r\n\r\nsmuggled";

/// The canned answer for `path` on connection `id`; `None` for an unknown path.
pub fn ambiguous_response(path: &str, id: u64) -> Option<String> {
    let smug = SMUGGLED_RESPONSE;
    let h = format!("HTTP/1.1 200 OK\r\nx-connection-id: {id}\r\n");
    Some(match path {
        "/ok" => format!("{h}Content-Length: 2\r\n\r\nok"),
        "/cl-te" => {
            let body = format!("0\r\n\r\n{smug}");
            format!(
                "{h}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
                body.len()
            )
        }
        "/te-cl" => format!(
            "{h}Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n{smug}"
        ),
        "/two-cl" => format!(
            "{h}Content-Length: 2\r\nContent-Length: {}\r\n\r\nok{smug}",
            2 + smug.len()
        ),
        "/cl-list" => format!("{h}Content-Length: 2, {}\r\n\r\nok{smug}", 2 + smug.len()),
        "/cl-plus" => format!("{h}Content-Length: +2\r\n\r\nok{smug}"),
        "/cl-hex" => format!("{h}Content-Length: 0x2\r\n\r\nok{smug}"),
        "/chunk-bare-lf" => {
            format!("{h}Transfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n{smug}")
        }
        "/chunk-junk" => {
            format!("{h}Transfer-Encoding: chunked\r\n\r\n2 junk\r\nok\r\n0\r\n\r\n{smug}")
        }
        "/chunk-overflow" => format!(
            "{h}Transfer-Encoding: chunked\r\n\r\n1{:016x}\r\nok\r\n0\r\n\r\n{smug}",
            2
        ),
        "/chunk-no-crlf" => {
            format!("{h}Transfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n{smug}")
        }
        _ => return None,
    })
}

impl RawTarget {
    pub fn start(cert: &X509, key: &PKey<Private>, client_ca: &X509) -> RawTarget {
        let acceptor = Arc::new(acceptor(cert, key, client_ca));
        let seen: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let (port_tx, port_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sn = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                port_tx
                    .send(l.local_addr().expect("addr").port())
                    .expect("port");
                let conns = Arc::new(AtomicU64::new(0));
                let accept = async move {
                    loop {
                        let Ok((tcp, _)) = l.accept().await else {
                            continue;
                        };
                        let (acceptor, seen, conns) = (acceptor.clone(), sn.clone(), conns.clone());
                        tokio::spawn(async move {
                            let Ok(mut tls) = tokio_boring::accept(&acceptor, tcp).await else {
                                return;
                            };
                            let id = conns.fetch_add(1, Ordering::Relaxed) + 1;
                            raw_connection(&mut tls, id, &seen).await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        RawTarget {
            port: port_rx.recv().expect("raw target port"),
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// (connection, path) of every request head read so far.
    pub fn seen(&self) -> Vec<(u64, String)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RawTarget {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read request heads (bodies are not expected) and answer each with its canned bytes.
async fn raw_connection<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    id: u64,
    seen: &Mutex<Vec<(u64, String)>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            let path = match req.parse(&head) {
                Ok(httparse::Status::Complete(_)) => req.path.unwrap_or("").to_string(),
                _ => return,
            };
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((id, path.clone()));
            let resp = ambiguous_response(&path, id).unwrap_or_else(|| {
                format!(
                    "HTTP/1.1 404 Not Found\r\nx-connection-id: {id}\r\nContent-Length: 0\r\n\r\n"
                )
            });
            if s.write_all(resp.as_bytes()).await.is_err() || s.flush().await.is_err() {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}
