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
//! to. Keep-alive is on: the gateway pools its connections to this target.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Record>>,
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
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let cert_sha256 = cert_sha256.clone();
        async move { Ok::<_, Infallible>(handle(req, port, conn, cert_sha256, &shared).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).timer(TokioTimer::new());
    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
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
    {
        let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
        log[idx].body = Some(body);
        log[idx].trailers = trailers;
    }
    Response::new(Full::new(Bytes::from(format!(
        "seen:{seq}:{method} {path}"
    ))))
}
