//! Upstream mutual TLS for the lean HTTP/1.1 path (`crate::http1`) and the admin's calls
//! ([`super::call`]): one `SslConnector`, built once in `lib.rs` and shared by both, with the
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
use std::time::Duration;

use boring::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use boring::x509::X509VerifyError;
use pingora::prelude::*;
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::io::BufReader;
use tokio::net::TcpStream;

use pingora::utils::tls::CertKey;

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

    /// TCP connect and TLS handshake to `addr`, presenting `cert` (none: plain TLS). The proxy
    /// passes a mapping's loaded certificate (`LoadedCert::cert_key`), the admin the one under
    /// test (`crate::p12::cert_key`).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        sni: &str,
        cert: Option<&CertKey>,
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
        if let Some(ck) = cert {
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
                // A handshake that failed before the peer's certificate was checked (a protocol
                // version refused, say) reports INVALID_CALL, not a verification failure.
                let bad_cert = e.ssl().is_some_and(
                    |s| matches!(s.verify_result(), Err(v) if v != X509VerifyError::INVALID_CALL),
                );
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
