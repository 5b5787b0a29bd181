//! Upstream mutual TLS for the lean HTTP/1.1 path (`crate::fast`): one `SslConnector` with the
//! trust bundle, the mapping's certificate and key set per connection, SNI = target host, the
//! server certificate and its name (or IP) verified. Equivalent to what Pingora's connector does
//! for the full path (same trust bundle, same verification), with one difference that matters
//! for speed: TLS reads go through a read buffer, so a record costs one `recv` instead of two
//! (BoringSSL reads the 5-byte record header and the record body separately, and Pingora's
//! upstream streams are unbuffered).
//!
//! Errors are Pingora errors of the same types its connector uses (`ConnectRefused`,
//! `ConnectTimedout`, `TLSHandshakeFailure`, `InvalidCert`, ...), so the 424 answer and the
//! metrics read the same whichever path served the request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use boring::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use pingora::prelude::*;
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::io::BufReader;
use tokio::net::TcpStream;

use crate::snapshot::LoadedCert;

/// An established upstream connection.
pub type UpConn = tokio_boring::SslStream<BufReader<TcpStream>>;

/// Read buffer under TLS: one full record (16 KiB of data plus the record overhead), so a
/// record is one `recv`; kept small because every pooled connection holds one.
const READ_BUFFER: usize = 17 * 1024;

pub struct TlsClient {
    connector: SslConnector,
    connect_timeout: Duration,
    tls_timeout: Duration,
}

impl TlsClient {
    /// `ca_file`: the trust bundle (system roots + `upstream.ca_files`); `None`: the system
    /// default paths.
    pub fn new(
        ca_file: Option<&Path>,
        connect_timeout: Duration,
        tls_timeout: Duration,
    ) -> Result<TlsClient, boring::error::ErrorStack> {
        let mut b = SslConnector::builder(SslMethod::tls())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
        match ca_file {
            Some(p) => b.set_ca_file(p)?,
            None => b.set_default_verify_paths()?,
        }
        b.set_verify(SslVerifyMode::PEER);
        b.set_alpn_protos(b"\x08http/1.1")?;
        Ok(TlsClient {
            connector: b.build(),
            connect_timeout,
            tls_timeout,
        })
    }

    /// TCP connect and TLS handshake to `addr`, presenting `cert` (none: plain TLS).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        sni: &str,
        cert: Option<&Arc<LoadedCert>>,
    ) -> Result<UpConn> {
        let tcp = match fast_timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let etype = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ConnectRefused,
                    std::io::ErrorKind::TimedOut => ConnectTimedout,
                    _ => ConnectError,
                };
                return Err(Error::because(etype, format!("connecting to {addr}"), e));
            }
            Err(_) => {
                return Error::e_explain(
                    ConnectTimedout,
                    format!("connecting to {addr}, timeout {:?}", self.connect_timeout),
                )
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut cfg = self
            .connector
            .configure()
            .or_err(InternalError, "TLS configuration")?;
        if let Some(c) = cert {
            let ck = &c.cert_key;
            cfg.set_certificate(ck.leaf())
                .or_err(InternalError, "invalid client certificate")?;
            cfg.set_private_key(ck.key())
                .or_err(InternalError, "invalid client key")?;
            for int in ck.intermediates() {
                cfg.add_chain_cert(int)
                    .or_err(InternalError, "invalid intermediate client certificate")?;
            }
        }
        let stream = BufReader::with_capacity(READ_BUFFER, tcp);
        match fast_timeout(self.tls_timeout, tokio_boring::connect(cfg, sni, stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                let context = format!("TLS handshake with {sni} ({addr}): {e}");
                // A certificate that did not verify, as opposed to a handshake that failed before
                // the target showed one (a protocol version or cipher refused, a client
                // certificate refused), which BoringSSL also reports with a verify error.
                let bad_cert = e
                    .ssl()
                    .is_some_and(|s| s.peer_certificate().is_some() && s.verify_result().is_err());
                Error::e_explain(
                    if bad_cert {
                        InvalidCert
                    } else {
                        TLSHandshakeFailure
                    },
                    context,
                )
            }
            Err(_) => Error::e_explain(
                TLSHandshakeTimedout,
                format!(
                    "TLS handshake with {sni} ({addr}), timeout {:?}",
                    self.tls_timeout
                ),
            ),
        }
    }
}
