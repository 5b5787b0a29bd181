//! Pingora's proxy, the adapter for what the lean HTTP/1 loop (`crate::http1`) does not serve:
//! HTTP/2 with prior knowledge (h2c). Every decision is the gateway core's (`crate::gateway`):
//! `request_filter` runs `Gateway::admit`, `upstream_request_filter` applies the same
//! `HeaderPolicy`, `fail_to_proxy` renders the same 424 and JSON errors.
//!
//! Phase order (Pingora `ProxyHttp`), and what each does here:
//! 1. `request_filter`: the h2 request routed as origin-form with `:authority` as Host; client
//!    read/write timeouts (`proxy.client_timeout_secs`); `admit` (rate limit, route, auth,
//!    mapping); refusals answered with JSON.
//! 2. `upstream_peer`: resolve the host asynchronously (cached), build an `HttpPeer` with SNI =
//!    target host, verification on, timeouts set, the mapping's `Arc<CertKey>`, and a `group_key`
//!    derived from the leaf certificate's SHA-256 so that the connection pool follows the real
//!    identity (Pingora's own key hashes only serial numbers).
//! 3. `upstream_request_filter`: origin-form URI with the resolved path, `Host` = target
//!    authority, `HeaderPolicy`.
//! 4. `connected_to_upstream`: the TLS 1.2 floor (Pingora's connector allows 1.0).
//! 5. `fail_to_proxy`: a target that cannot be reached or whose TLS fails gives 424 with
//!    `LP-message-from-transport` / `LP-error-from-transport` (LivePerson's contract).
//!    A non-idempotent request is never retried (Pingora's default `error_while_proxy`).
//! 6. `logging`: metrics (bounded labels).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::json;

use crate::gateway::{
    count_connect_failure, upstream_failure, Ctx, Gateway, HeaderPolicy, Mode, UpstreamTarget,
};
use crate::metrics;
use crate::snapshot::LoadedCert;

async fn respond_json(
    session: &mut Session,
    status: StatusCode,
    body: serde_json::Value,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    for (k, v) in extra {
        resp.insert_header(*k, v.as_str())?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// An HTTP/2 request (h2c with prior knowledge) carries its target in `:authority`, which
/// the URI here holds, as though it were absolute-form. It is sent to the gateway as to an
/// origin (HTTP/2 has no proxy form), so it is routed as HTTP/1.1 origin-form with that `Host`:
/// the forward resource by its path, transparent mode by `Host`.
fn h2_as_origin_form(req: &mut RequestHeader) {
    let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string()) else {
        return;
    };
    if req.headers.get(http::header::HOST).is_none() {
        let _ = req.insert_header(http::header::HOST, authority);
    }
    let path = req
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    req.set_uri(http::Uri::from(path));
}

impl Gateway {
    /// Step 2: the upstream peer for a routed request: address (async DNS, cached), SNI =
    /// target host, verification on, timeouts, the mapping's certificate and a pool group
    /// derived from its leaf digest.
    pub(crate) async fn peer_for(
        &self,
        target: &UpstreamTarget,
        cert: Option<&Arc<LoadedCert>>,
    ) -> Result<HttpPeer> {
        let addr = self.resolve(target).await?;
        Ok(self.build_peer(addr, target, cert))
    }

    /// The target's address (async DNS, cached; counted as a connect failure when it fails).
    pub(crate) async fn resolve(&self, target: &UpstreamTarget) -> Result<SocketAddr> {
        self.resolver
            .resolve(&target.authority, &target.host, target.port)
            .await
            .map_err(|e| {
                metrics::UPSTREAM_CONNECT_FAILURES.inc();
                Error::explain(
                    ConnectNoRoute,
                    format!("cannot resolve {}: {e}", target.host),
                )
            })
    }

    /// The SNI for a target: its host without IPv6 brackets.
    pub(crate) fn sni(target: &UpstreamTarget) -> &str {
        target.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The peer for a resolved target (see `peer_for`).
    pub(crate) fn build_peer(
        &self,
        addr: SocketAddr,
        target: &UpstreamTarget,
        cert: Option<&Arc<LoadedCert>>,
    ) -> HttpPeer {
        let sni = Self::sni(target).to_string();
        let mut peer = HttpPeer::new(addr, true, sni);
        let up = &self.cfg.upstream;
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.total_connection_timeout = Some(up.connect_timeout + up.tls_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        peer.options.write_timeout = Some(up.write_timeout);
        peer.options.idle_timeout = Some(up.idle_timeout);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        if let Some(cert) = cert {
            peer.client_cert_key = Some(cert.cert_key.clone());
            peer.group_key = cert.identity_key();
        } else {
            // Plain TLS fallback: its own pool group, never shared with an identity.
            peer.group_key = 0;
        }
        peer
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    /// No downstream modules: Pingora's default adds a (disabled) compression module to every
    /// session; the gateway returns the target's response unchanged, so it has nothing to do.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx._inflight = Some(self.inflight.enter());
        ctx.start = Instant::now();
        // `proxy.client_timeout_secs` bounds each read of the request body, as on the lean loop.
        session.set_read_timeout(Some(self.cfg.proxy.client_timeout));
        session.set_write_timeout(Some(self.cfg.proxy.client_timeout));
        if session.is_http2() {
            h2_as_origin_form(session.req_header_mut());
        }

        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        match self.admit(peer, session.req_header(), ctx) {
            Ok(()) => Ok(false),
            Err(mut r) => {
                ctx.outcome = r.outcome;
                respond_json(session, r.status, r.body(), &r.extra).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let target = ctx
            .target
            .as_ref()
            .ok_or_else(|| Error::explain(InternalError, "no target chosen"))?;
        let peer = self.peer_for(target, ctx.cert.as_ref()).await?;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(target) = &ctx.target else {
            return Error::e_explain(InternalError, "no target chosen");
        };
        let uri: http::Uri = target
            .path_query
            .parse()
            .map_err(|_| Error::explain(InternalError, "target path is not a valid URI"))?;
        upstream_request.set_uri(uri);
        // The one header policy (`HeaderPolicy`, as on the lean loop). Pingora frames the body
        // itself (a known `Content-Length` is kept, anything else goes chunked), so the
        // client's `Content-Length`, checked by the HTTP/2 layer, stays.
        let mode = ctx.mode.unwrap_or(Mode::Transparent);
        let policy = HeaderPolicy::new(&self.cfg.proxy, mode, &[]);
        let drop: Vec<http::HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|k| k.as_str() != "content-length" && !policy.keeps(k.as_str()))
            .cloned()
            .collect();
        for k in drop {
            upstream_request.remove_header(&k);
        }
        upstream_request.insert_header("host", target.authority.as_str())?;
        if let Some(v) = policy.authorization(ctx) {
            upstream_request.insert_header("authorization", v)?;
        }
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        // The lean loop's connector refuses anything below TLS 1.2 in the handshake; Pingora's
        // connector allows TLS 1.0 and has no setting for it, so the same floor is held here,
        // before any request byte is sent.
        if let Some(v) = digest
            .and_then(|d| d.ssl_digest.as_ref())
            .map(|s| s.version.as_ref())
        {
            if v != "TLSv1.2" && v != "TLSv1.3" {
                metrics::UPSTREAM_TLS_FAILURES.inc();
                return Error::e_explain(
                    TLSHandshakeFailure,
                    format!("the target negotiated {v}; TLS 1.2 or 1.3 is required"),
                );
            }
        }
        metrics::upstream_connection(reused);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        count_connect_failure(&e);
        e
    }

    /// A client that goes away before its answer (a load tool stopping, a caller timing out) is
    /// not the gateway's error: counted as outcome `client_closed`, not logged at ERROR.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        matches!(error.esource(), ErrorSource::Downstream)
            && matches!(error.etype(), ConnectionClosed | ReadError | WriteError)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let upstream_side = matches!(e.esource(), ErrorSource::Upstream)
            || matches!(
                e.etype(),
                ConnectTimedout
                    | ConnectRefused
                    | ConnectNoRoute
                    | ConnectError
                    | TLSHandshakeFailure
                    | TLSHandshakeTimedout
                    | InvalidCert
                    | HandshakeError
                    | TLSWantX509Lookup
            );
        let code = if session.response_written().is_some() {
            // Headers already went out: nothing sensible can be sent any more.
            0
        } else if upstream_side {
            424
        } else {
            match e.etype() {
                HTTPStatus(c) => *c,
                ReadError | WriteError | ConnectionClosed => 0,
                _ => 500,
            }
        };
        ctx.outcome = if upstream_side {
            "upstream_error"
        } else {
            "error"
        };
        if code == 424 {
            let url = ctx
                .target
                .as_ref()
                .map(|t| t.url.as_str())
                .unwrap_or_default();
            let (body, extra) =
                upstream_failure(url, e, session.req_header().method.is_idempotent());
            let _ = respond_json(session, StatusCode::FAILED_DEPENDENCY, body, &extra).await;
        } else if code > 0 {
            // The same JSON answer the lean loop gives for its own errors.
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = json!({"error": "error", "message": format!("the gateway could not serve the request: {}", e.etype().as_str())});
            let _ = respond_json(session, status, body, &[]).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        ctx.record(status);
    }
}
