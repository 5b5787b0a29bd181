//! The gateway core, the same for every engine (the lean HTTP/1 loop in `crate::http1`,
//! Pingora's HTTP/2 server through `crate::proxy`): for each request, the decision (`admit`: the
//! client, the rate limit; `route`: mode, target URL with its path resolved, auth, mapping), the
//! upstream request policy ([`HeaderPolicy`]), and the answers the gateway gives itself
//! ([`Refusal`], [`upstream_failure`] for the 424).
//!
//! - *forward*: `{GET,POST,PUT,PATCH,DELETE} /mtls/account/{accountId}` with `LP-forward-url`,
//!   `LP-service-name`, `LP-authorization-override`, `LP-stop-if-certificate-not-found`;
//! - *transparent*: absolute-form (`GET http://bank.test/x`, as HTTP_PROXY clients send) or
//!   origin-form with `Host`; the target is always reached over https; account and service
//!   come from headers (`proxy.account_header`, `proxy.service_header`) or the listener's
//!   defaults.
//!
//! Target URLs are checked (RFC 3986 characters only) and their paths resolved
//! (`crate::http1::codec::resolve_path`) before the mapping lookup; the resolved path is what the
//! target receives.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use log::debug;
use pingora::prelude::*;
use serde_json::json;

use crate::auth::{Accepts, RequestParts};
use crate::config::{Config, ProxyAuth, UnmappedPolicy};
use crate::metrics;
use crate::ratelimit::RateLimiter;
use crate::refresh::SnapshotHandle;
use crate::snapshot::{normalize_url, normalize_url_checked, split_host_port, LoadedCert, Target};
use crate::upstream::Resolver;

const FORWARD_PREFIX: &str = "/mtls/account/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Transparent,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Transparent => "transparent",
        }
    }
}

/// Where the request goes.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub host: String,
    pub port: u16,
    /// `host[:port]` for the Host header (default port omitted).
    pub authority: String,
    /// Origin-form path and query.
    pub path_query: String,
    /// Normalised https URL (the matching key).
    pub url: String,
}

/// Requests being handled right now (the shutdown drain waits for it to reach zero).
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl InFlight {
    /// Count a request in flight until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }
}

pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Ctx {
    pub(crate) start: Instant,
    pub(crate) mode: Option<Mode>,
    pub(crate) outcome: &'static str,
    pub(crate) target: Option<UpstreamTarget>,
    pub(crate) cert: Option<Arc<LoadedCert>>,
    /// The matched mapping (for per-mapping metrics at the end of the request).
    pub(crate) mapping: Option<Arc<Target>>,
    pub(crate) authorization_override: Option<String>,
    /// The OAuth1 nonce accepted locally, still to be checked fleet-wide (with Redis) before
    /// the request is sent.
    pub(crate) nonce: Option<crate::auth::oauth1::NonceUse>,
    pub(crate) _inflight: Option<InFlightGuard>,
    /// Captured only with `proxy.access_log` (no allocation per request otherwise).
    pub(crate) access: Option<Box<Access>>,
}

/// What the access log line says of a request besides what [`Ctx`] holds.
pub(crate) struct Access {
    /// The client: the TCP peer, or the address a trusted proxy forwarded (`rate_limit.*`).
    client: Option<IpAddr>,
    method: http::Method,
    /// The request's path (absolute-form or not: `target` has the whole URL), without its query
    /// string, which may carry a caller's secret.
    path: String,
}

impl Ctx {
    pub(crate) fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            mode: None,
            outcome: "proxied",
            target: None,
            cert: None,
            mapping: None,
            authorization_override: None,
            nonce: None,
            _inflight: None,
            access: None,
        }
    }

    /// The access log line (`proxy.access_log`): who asked for what, which mapping and
    /// certificate served it, the answer and the time. Never a query string, header value or
    /// body.
    fn log_access(&self, a: &Access, status: u16) {
        use std::fmt::Write as _;
        const TIME: &[time::format_description::BorrowedFormatItem<'_>] =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        let mut line = String::with_capacity(256);
        let now = time::OffsetDateTime::now_utc();
        // The prefix of the gateway's other log lines (env_logger's), so that one parser reads
        // both.
        let _ = write!(
            line,
            "[{} INFO  mtls_gateway::access] ",
            now.format(TIME).unwrap_or_default()
        );
        let _ = match a.client {
            Some(c) => write!(line, "client={c}"),
            None => write!(line, "client=-"),
        };
        let _ = write!(
            line,
            " method={} path={} mode={}",
            a.method,
            a.path,
            self.mode.map_or("-", Mode::label)
        );
        let _ = match self.mapping.as_deref() {
            Some(t) => write!(
                line,
                " account={} service={} mapping={} certificate={}",
                t.account, t.service, t.mapping_id, t.certificate_id
            ),
            None => write!(line, " account=- service=- mapping=- certificate=-"),
        };
        let _ = match &self.target {
            Some(t) => write!(line, " target={}", t.url.split('?').next().unwrap_or("")),
            None => write!(line, " target=-"),
        };
        let _ = if status == 0 {
            write!(line, " status=-")
        } else {
            write!(line, " status={status}")
        };
        let _ = write!(
            line,
            " outcome={} ms={:.1}",
            self.outcome,
            self.start.elapsed().as_secs_f64() * 1000.0
        );
        crate::access_log::log(line);
    }

    /// Metrics and the debug line at the end of a request (both request paths).
    pub(crate) fn record(&self, status: u16) {
        if let Some(a) = &self.access {
            self.log_access(a, status);
        }
        let Some(mode) = self.mode else {
            if self.outcome == "rate_limited" {
                metrics::REQUESTS
                    .with_label_values(&["none", "rate_limited", "4xx"])
                    .inc();
            } else if self.outcome != "proxied" {
                metrics::REQUESTS
                    .with_label_values(&["none", self.outcome, metrics::status_class(status)])
                    .inc();
            }
            return;
        };
        let hot = &metrics::HOT[mode as usize];
        if self.outcome == "proxied" && (200..300).contains(&status) {
            hot.proxied_2xx.inc(); // pre-resolved handle: no label hashing on the common path
        } else {
            metrics::REQUESTS
                .with_label_values(&[mode.label(), self.outcome, metrics::status_class(status)])
                .inc();
        }
        hot.latency.observe(self.start.elapsed().as_secs_f64());
        if let Some(t) = &self.mapping {
            t.requests_counter().inc();
        }
        debug!(
            "{} {} -> {} ({})",
            mode.label(),
            self.target.as_ref().map(|t| t.host.as_str()).unwrap_or("-"),
            status,
            self.outcome
        );
    }
}

/// The one rule for the upstream request's header fields, on every engine (the lean HTTP/1 loop
/// writes the fields it keeps; Pingora's adapter removes the others):
/// - dropped: `Host` (the target's authority is written instead), the hop-by-hop fields (RFC
///   9110 7.6.1: `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`,
///   `HTTP2-Settings`) and any field the client's `Connection` nominated, the framing fields
///   (`Content-Length`, `Transfer-Encoding`, `Expect`: each engine writes its own framing),
///   `Proxy-Authorization` (the gateway's credential), `LP-*` and the account/service selection
///   headers (the gateway's own), and in forward mode `Authorization` (the caller's credential
///   for the gateway; `LP-authorization-override` takes its place);
/// - kept as they are: everything else, `X-Forwarded-*` included (the gateway adds none, as
///   nginx adds none by default).
pub(crate) struct HeaderPolicy<'a> {
    cfg: &'a crate::config::ProxyConfig,
    mode: Mode,
    nominated: &'a [String],
}

const HOP_BY_HOP: [&str; 12] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "proxy-authorization",
    "content-length",
    "transfer-encoding",
    "expect",
];

impl<'a> HeaderPolicy<'a> {
    pub(crate) fn new(
        cfg: &'a crate::config::ProxyConfig,
        mode: Mode,
        nominated: &'a [String],
    ) -> HeaderPolicy<'a> {
        HeaderPolicy {
            cfg,
            mode,
            nominated,
        }
    }

    /// Whether the client's field `name` goes to the target.
    pub(crate) fn keeps(&self, name: &str) -> bool {
        !(HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("lp-"))
            || name.eq_ignore_ascii_case(&self.cfg.account_header)
            || name.eq_ignore_ascii_case(&self.cfg.service_header)
            || (self.mode == Mode::Forward && name.eq_ignore_ascii_case("authorization"))
            || self.nominated.iter().any(|n| name.eq_ignore_ascii_case(n)))
    }

    /// The `Authorization` the gateway adds: `LP-authorization-override`, forward mode only.
    pub(crate) fn authorization(&self, ctx: &mut Ctx) -> Option<String> {
        match self.mode {
            Mode::Forward => ctx.authorization_override.take(),
            Mode::Transparent => None,
        }
    }
}

/// What routing needs to see of a request: the lean loop's borrowed view of the parsed head
/// (`crate::http1`).
pub(crate) trait ReqView {
    fn method(&self) -> &http::Method;
    fn uri(&self) -> &http::Uri;
    /// The first value of header `name` (lower-case), if it is visible ASCII.
    fn header(&self, name: &str) -> Option<&str>;
    /// Every value of header `name` (lower-case) that is visible ASCII.
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a;
    /// The whole request body, when it was read before routing (the lean path reads a
    /// form-encoded body of known length first when OAuth1 must cover it); `None`: it streams.
    fn body(&self) -> Option<&[u8]> {
        None
    }
}

/// Whether a request's OAuth1 credentials, in `Authorization` or `Proxy-Authorization`, cover
/// its body ([`crate::auth::oauth1_covers_body`]), so the body must be read before routing.
pub(crate) fn oauth1_covers_body(req: &impl ReqView) -> bool {
    let content_type = header_str(req, "content-type");
    ["authorization", "proxy-authorization"]
        .iter()
        .any(|h| crate::auth::oauth1_covers_body(header_str(req, h), content_type))
}

/// Pingora's request head as a [`ReqView`], for the unit tests' requests.
#[cfg(test)]
impl ReqView for pingora::http::RequestHeader {
    fn method(&self) -> &http::Method {
        &self.method
    }
    fn uri(&self) -> &http::Uri {
        &self.uri
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
    }
}

/// The gateway's request logic, shared (cheap clones) by the request path and the admin: one
/// rate limiter, one DNS cache, one in-flight count.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) cfg: Arc<Config>,
    snapshot: SnapshotHandle,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) inflight: Arc<InFlight>,
}

impl Gateway {
    pub fn new(cfg: Arc<Config>, snapshot: SnapshotHandle, inflight: Arc<InFlight>) -> Gateway {
        let limiter = cfg
            .rate_limit
            .enabled
            .then(|| Arc::new(RateLimiter::new(&cfg.rate_limit)));
        let resolver = Arc::new(Resolver::new(cfg.upstream.dns_cache));
        Gateway {
            cfg,
            snapshot,
            limiter,
            resolver,
            inflight,
        }
    }
}

/// A refusal answered by the gateway itself.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    code: &'static str,
    message: String,
    pub(crate) extra: Vec<(&'static str, String)>,
    pub(crate) outcome: &'static str,
    fields: serde_json::Value,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, outcome: &'static str, message: String) -> Self {
        Refusal {
            status,
            code,
            message,
            extra: Vec::new(),
            outcome,
            fields: serde_json::Value::Null,
        }
    }

    /// The JSON body: `error`, `message` and the request's fields when known.
    pub(crate) fn body(&mut self) -> serde_json::Value {
        let mut body = json!({"error": self.code, "message": self.message});
        if let (Some(obj), serde_json::Value::Object(f)) =
            (body.as_object_mut(), self.fields.take())
        {
            obj.extend(f);
        }
        body
    }
}

/// The 429 answer (body and headers), the same on both request paths.
pub(crate) fn rate_limited_body(limit: u32) -> serde_json::Value {
    json!({"error": "rate_limited", "message": format!("more than {limit} requests per second from this client; retry after 1 second")})
}

/// The 424 answer for a target that failed (LivePerson's `LP-*-from-transport` headers), the
/// same on every engine: the error type and a fixed reason for it, never the connector's own
/// wording (which differs between the lean loop's connector and Pingora's, and can name the
/// client certificate); the details go to the gateway's log. `idempotent`: the request's
/// method; a failure after a non-idempotent request was sent says it was not sent again.
pub(crate) fn upstream_failure(
    url: &str,
    e: &Error,
    idempotent: bool,
) -> (serde_json::Value, Vec<(&'static str, String)>) {
    let etype = e.etype();
    let reason = match etype {
        ConnectRefused => "the target refused the connection",
        ConnectTimedout => "no connection within upstream.connect_timeout_ms",
        ConnectNoRoute => "the target's host did not resolve, or has no route",
        ConnectError => "the connection to the target could not be made",
        TLSHandshakeFailure | HandshakeError | TLSWantX509Lookup => {
            "the TLS handshake failed (TLS 1.2 or 1.3 is required; the target may have refused the client certificate)"
        }
        TLSHandshakeTimedout => "no TLS handshake within upstream.tls_timeout_ms",
        InvalidCert => "the target's certificate did not verify (trust bundle, host name, validity)",
        ReadTimedout => "no answer within upstream.read_timeout_ms",
        WriteTimedout => "the request was not taken within upstream.write_timeout_ms",
        ConnectionClosed => "the target closed the connection before answering",
        ReadError | WriteError => "the connection to the target failed",
        InvalidHTTPHeader => {
            "the target's answer is not valid HTTP/1.1 (ambiguous or malformed framing)"
        }
        _ => "",
    };
    let mut error = etype.as_str().to_string();
    if !reason.is_empty() {
        error.push_str(": ");
        error.push_str(reason);
    }
    if !idempotent
        && matches!(
            etype,
            ConnectionClosed | ReadError | WriteError | ReadTimedout
        )
    {
        error.push_str("; a non-idempotent request is not sent twice");
    }
    (
        json!({"error": "upstream_failed", "message": format!("the target {url} failed: {error}"), "url": url}),
        vec![
            ("lp-message-from-transport", url.to_string()),
            ("lp-error-from-transport", crate::header_safe(&error)),
        ],
    )
}

/// Count a failed upstream connection attempt as a TLS or a connect failure.
pub(crate) fn count_connect_failure(e: &Error) {
    match e.etype() {
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
        | TLSWantX509Lookup => metrics::UPSTREAM_TLS_FAILURES.inc(),
        _ => metrics::UPSTREAM_CONNECT_FAILURES.inc(),
    }
}

fn header_str<'a>(req: &'a impl ReqView, name: &str) -> Option<&'a str> {
    req.header(name)
}

/// The https target for a transparent-mode request (absolute-form or origin-form + Host).
fn transparent_target(req: &impl ReqView) -> Result<UpstreamTarget, String> {
    let uri = req.uri();
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => header_str(req, "host")
            .ok_or("the request has neither an absolute URL nor a Host header")?,
    };
    if let Some(s) = uri.scheme_str() {
        if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") {
            return Err(format!(
                "scheme {s:?} is not supported; use http:// or https://"
            ));
        }
    }
    let (host, port) =
        split_host_port(authority).ok_or_else(|| format!("{authority:?} is not a valid host"))?;
    // The app speaks plain http to us; the target is always reached over https. An http default
    // port (80, or none) means the https default.
    let port: u16 = match port {
        None | Some("80") => 443,
        Some(p) => p
            .parse()
            .map_err(|_| format!("bad port in {authority:?}"))?,
    };
    let path_query = match uri.path_and_query().map(|pq| pq.as_str()) {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{}", p.trim_start_matches('*')),
        None => "/".to_string(),
    };
    // Resolved before it is matched, and sent resolved: `/api/../admin` is `/admin`. (Its
    // characters were checked with the request-target by the codec: every request, HTTP/2
    // streams included, is parsed by the lean loop first.)
    let path_query = crate::http1::codec::resolve_path(&path_query)?;
    let host_lc = host.to_ascii_lowercase();
    let authority = if port == 443 {
        host_lc.clone()
    } else {
        format!("{host_lc}:{port}")
    };
    // Built normalised (lower-case host, default port dropped, path from `/`; a request URI has
    // no fragment), so the request path does not normalise it a second time.
    let url = format!("https://{authority}{path_query}");
    debug_assert_eq!(normalize_url(&url).as_deref(), Some(url.as_str()));
    Ok(UpstreamTarget {
        host: host_lc,
        port,
        authority,
        path_query,
        url,
    })
}

/// The target of a forward-resource request, from `LP-forward-url`.
fn forward_target(raw: &str) -> Result<UpstreamTarget, String> {
    let raw = raw.trim();
    crate::http1::codec::check_uri_chars(raw, "LP-forward-url")?;
    let url = normalize_url_checked(raw).map_err(|why| {
        format!("LP-forward-url {raw:?} is not usable ({why}); send an absolute https URL, e.g. https://partner.example/api")
    })?;
    let rest = url
        .strip_prefix("https://")
        .ok_or("LP-forward-url must use https:// (the gateway originates TLS)")?;
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_query) = rest.split_at(auth_end);
    let (host, port) =
        split_host_port(authority).ok_or_else(|| format!("{authority:?} is not a valid host"))?;
    let port = match port {
        None => 443,
        Some(p) => p
            .parse()
            .map_err(|_| format!("bad port in {authority:?}"))?,
    };
    Ok(UpstreamTarget {
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path_query: if path_query.starts_with('/') {
            path_query.to_string()
        } else {
            format!("/{path_query}")
        },
        url,
    })
}

fn parse_bool_header(v: Option<&str>) -> bool {
    v.map(|s| s.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

impl Gateway {
    fn service_name(&self, raw: Option<&str>, header: &str, key: &str) -> Result<String, Refusal> {
        match raw.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => {
                let upper = s.to_ascii_uppercase();
                if self.cfg.services.contains_key(&upper) {
                    Ok(upper)
                } else if let Some((name, _)) =
                    self.cfg.services.iter().find(|(_, id)| id.to_string() == s)
                {
                    Ok(name.clone())
                } else {
                    Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "unknown_service",
                        "bad_request",
                        format!(
                            "{header}: {s:?} is not a known service; use one of {}",
                            self.cfg
                                .services
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            }
            None => self.cfg.proxy.default_service.clone().ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "missing_service",
                    "bad_request",
                    format!("{header} is required (no {key} is configured)"),
                )
            }),
        }
    }

    /// Steps 1b-1e of `admit`: mode, target, auth, mapping.
    fn route(&self, req: &impl ReqView, ctx: &mut Ctx) -> Result<(), Refusal> {
        if req.method() == http::Method::CONNECT {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "connect_not_supported",
                "bad_request",
                "CONNECT tunnels are not supported: the gateway must originate the TLS itself. Send plain http:// URLs through the proxy (HTTP_PROXY, not HTTPS_PROXY)".into(),
            ));
        }
        let path = req.uri().path();
        let forward_account = if req.uri().authority().is_none() {
            path.strip_prefix(FORWARD_PREFIX)
        } else {
            None
        };
        let (mode, account, service, target, stop) = if let Some(account) = forward_account {
            let account = account.trim_end_matches('/');
            if !crate::store::valid_account_id(account) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_account",
                    "bad_request",
                    format!("{account:?} in the path is not a valid account id"),
                ));
            }
            if !matches!(
                *req.method(),
                http::Method::GET
                    | http::Method::POST
                    | http::Method::PUT
                    | http::Method::PATCH
                    | http::Method::DELETE
            ) {
                return Err(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "bad_request",
                    format!(
                        "{} is not forwarded; use GET, POST, PUT, PATCH or DELETE",
                        req.method()
                    ),
                ));
            }
            let raw = header_str(req, "lp-forward-url").ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "missing_forward_url",
                    "bad_request",
                    "LP-forward-url is required: the full https URL of the target".into(),
                )
            })?;
            let target = forward_target(raw).map_err(|m| {
                Refusal::new(StatusCode::BAD_REQUEST, "bad_forward_url", "bad_request", m)
            })?;
            let service = self.service_name(
                header_str(req, "lp-service-name"),
                "LP-service-name",
                "proxy.default_service",
            )?;
            if self.cfg.proxy.auth == ProxyAuth::Required {
                ctx.nonce = self.authenticate(req, account, "authorization")?;
            }
            ctx.authorization_override =
                header_str(req, "lp-authorization-override").map(String::from);
            let stop = parse_bool_header(header_str(req, "lp-stop-if-certificate-not-found"));
            (Mode::Forward, account.to_string(), service, target, stop)
        } else {
            let target = transparent_target(req).map_err(|m| {
                Refusal::new(StatusCode::BAD_REQUEST, "bad_target", "bad_request", m)
            })?;
            let account = match header_str(req, &self.cfg.proxy.account_header) {
                Some(a) => a.trim().to_string(),
                None => self.cfg.proxy.default_account.clone().ok_or_else(|| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "missing_account",
                        "bad_request",
                        format!(
                            "header {} is required (no proxy.default_account is configured)",
                            self.cfg.proxy.account_header
                        ),
                    )
                })?,
            };
            if !crate::store::valid_account_id(&account) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_account",
                    "bad_request",
                    format!(
                        "{}: {account:?} is not a valid account id",
                        self.cfg.proxy.account_header
                    ),
                ));
            }
            let service = self.service_name(
                header_str(req, &self.cfg.proxy.service_header),
                &self.cfg.proxy.service_header,
                "proxy.default_service",
            )?;
            if self.cfg.proxy.auth == ProxyAuth::Required {
                ctx.nonce = self.authenticate(req, &account, "proxy-authorization")?;
            }
            let stop = parse_bool_header(header_str(req, "lp-stop-if-certificate-not-found"));
            (Mode::Transparent, account, service, target, stop)
        };
        ctx.mode = Some(mode);

        let snap = self.snapshot.load();
        match snap.lookup(&account, &service, &target.url) {
            Some((t, _kind)) => match &t.certificate {
                Some(cert) => {
                    ctx.cert = Some(cert.clone());
                    ctx.mapping = Some(t.clone());
                }
                None => {
                    let mut r = Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "certificate_unavailable",
                        "certificate_unavailable",
                        format!(
                            "mapping {:?} uses certificate {} which is not loaded (missing from the store or failed to decode); see the gateway log",
                            t.mapping_name, t.certificate_id
                        ),
                    );
                    r.fields =
                        json!({"accountId": account, "serviceName": service, "url": target.url});
                    ctx.target = Some(target); // for the access log
                    return Err(r);
                }
            },
            None => {
                let fallback_ok = match &self.cfg.unmapped {
                    UnmappedPolicy::PlainTls { hosts } => !stop && hosts.contains(&target.host),
                    UnmappedPolicy::Refuse => false,
                };
                if !fallback_ok {
                    // LivePerson answers the stop flag with 500 and the reason; a refusal by
                    // policy is a 403 (the mapping table is the allowlist).
                    let (status, why) = if stop {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "LP-stop-if-certificate-not-found is true",
                        )
                    } else {
                        (
                            StatusCode::FORBIDDEN,
                            "unmapped requests are refused (unmapped.policy)",
                        )
                    };
                    let mut r = Refusal::new(
                        status,
                        "no_mapping",
                        "no_mapping",
                        format!(
                            "no mapping for account {account:?}, service {service:?}, url {:?}; {why}",
                            target.url
                        ),
                    );
                    r.fields =
                        json!({"accountId": account, "serviceName": service, "url": target.url});
                    ctx.target = Some(target); // for the access log
                    return Err(r);
                }
            }
        }
        ctx.target = Some(target);
        Ok(())
    }

    /// `header` is `authorization` on the forward resource and `proxy-authorization` in
    /// transparent mode (where `Authorization` belongs to the target and is passed on).
    /// The caller's credential, for `account`; an OAuth1 nonce (accepted by this replica's
    /// cache) is returned for the fleet-wide check.
    fn authenticate(
        &self,
        req: &impl ReqView,
        account: &str,
        header: &str,
    ) -> Result<Option<crate::auth::oauth1::NonceUse>, Refusal> {
        let host = header_str(req, "host").unwrap_or("");
        let parts = RequestParts {
            method: req.method().as_str(),
            scheme: "http",
            host,
            path: req.uri().path(),
            query: req.uri().query(),
            authorization: header_str(req, header),
            content_type: header_str(req, "content-type"),
            // OAuth1 covers a form-encoded body (its parameters) and, with `oauth_body_hash`,
            // any other: the lean path reads such a body (of known length, at most 64 KiB)
            // before routing. Other bodies stream through untouched.
            body: req.body().unwrap_or(&[]),
            forwarded_proto: header_str(req, "x-forwarded-proto"),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if req.body().is_none()
            && crate::auth::oauth1_covers_body(parts.authorization, parts.content_type)
        {
            // This body streams through unread, so it cannot be checked against the signature
            // (form parameters) or `oauth_body_hash`: say so instead of "bad signature".
            let mut r = Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unauthorized",
                "OAuth1 that covers the body (a form-encoded body, or oauth_body_hash) is verified on the proxy listener only for a body sent with Content-Length (at most 64 KiB) and without Expect: 100-continue; this one streams (chunked, larger, or held for 100 Continue), so it cannot be checked. Send it with Content-Length, or use a Bearer token".into(),
            );
            r.extra
                .push(("www-authenticate", "Bearer realm=\"mtls-gateway\"".into()));
            return Err(r);
        }
        match self
            .cfg
            .auth
            .authenticate_keeping_nonce(&parts, Accepts::Either, now)
        {
            Ok((id, nonce)) if id.may_access(account) => Ok(nonce),
            Ok(_) => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "unauthorized",
                format!("the credential is not allowed to act for account {account:?}"),
            )),
            Err(e) => {
                let mut r = Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "unauthorized",
                    e.to_string(),
                );
                r.extra.push(("www-authenticate", e.www_authenticate()));
                Err(r)
            }
        }
    }

    /// Steps 1a-1e for a request head, on both request paths: the access log's record, the
    /// rate limit, then `route`. `peer` is the TCP peer.
    pub(crate) fn admit(
        &self,
        peer: Option<IpAddr>,
        req: &impl ReqView,
        ctx: &mut Ctx,
    ) -> Result<(), Refusal> {
        // The client: a forwarded-for header counts only from trusted proxies (`rate_limit.*`).
        let client = match (&self.limiter, peer) {
            (Some(l), Some(p)) => Some(l.client_ip(p, req.header_values(l.forwarded_header()))),
            _ => peer,
        };
        if self.cfg.proxy.access_log {
            ctx.access = Some(Box::new(Access {
                client,
                method: req.method().clone(),
                path: req.uri().path().to_string(),
            }));
        }
        self.rate_limit(client)?;
        self.route(req, ctx)
    }

    /// Step 1a: the rate limit for the client `admit` found. `Err` carries the 429 refusal.
    fn rate_limit(&self, client: Option<IpAddr>) -> Result<(), Refusal> {
        let (Some(limiter), Some(ip)) = (&self.limiter, client) else {
            return Ok(());
        };
        if limiter.allow(&ip) {
            return Ok(());
        }
        metrics::RATE_LIMITED.inc();
        let limit = self.cfg.rate_limit.requests_per_second;
        let mut r = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate_limited",
            String::new(),
        );
        r.extra.push(("retry-after", "1".to_string()));
        r.fields = rate_limited_body(limit);
        Err(r)
    }
}

impl Gateway {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_header_policy_drops_hop_by_hop_framing_and_the_gateways_own_fields() {
        let cfg = Config::from_yaml("{}", std::path::Path::new("/"))
            .expect("the default config")
            .proxy;
        let nominated = vec!["x-secret-hop".to_string()];
        let t = HeaderPolicy::new(&cfg, Mode::Transparent, &nominated);
        for n in [
            "Host",
            "Connection",
            "LP-forward-url",
            "Proxy-Authorization",
            "te",
            "HTTP2-Settings",
            "Content-Length",
            "Transfer-Encoding",
            "Expect",
            "X-Secret-Hop",
            "Upgrade",
            "Trailer",
            "Keep-Alive",
        ] {
            assert!(!t.keeps(n), "{n} must not go on");
        }
        let acc = cfg.account_header.clone();
        assert!(!t.keeps(&acc.to_ascii_uppercase()));
        for n in [
            "Authorization",
            "X-Forwarded-For",
            "lp",
            "Content-Type",
            "X-App",
        ] {
            assert!(t.keeps(n), "{n} goes on in transparent mode");
        }
        let f = HeaderPolicy::new(&cfg, Mode::Forward, &[]);
        assert!(!f.keeps("authorization"));
        assert!(f.keeps("content-type"));
    }

    #[test]
    fn forward_target_keeps_path_and_query_and_default_port() {
        let t = forward_target("https://Bank.Test/api/x?y=1").expect("valid");
        assert_eq!(t.host, "bank.test");
        assert_eq!(t.port, 443);
        assert_eq!(t.authority, "bank.test");
        assert_eq!(t.path_query, "/api/x?y=1");
        assert_eq!(t.url, "https://bank.test/api/x?y=1");
        let t = forward_target("https://localhost:9443").expect("valid");
        assert_eq!((t.port, t.path_query.as_str()), (9443, "/"));
        assert!(forward_target("http://bank.test/").is_err());
        assert!(forward_target("bank.test/").is_err());
    }

    #[test]
    fn transparent_target_from_absolute_form_uses_https() {
        let absolute = |u: &'static str| {
            let mut req = RequestHeader::build("GET", b"/", None).expect("req");
            req.set_uri(http::Uri::from_static(u));
            req
        };
        let req = absolute("http://Bank.Test:9443/p?q=1");
        let t = transparent_target(&req).expect("target");
        assert_eq!(t.url, "https://bank.test:9443/p?q=1");
        assert_eq!(t.authority, "bank.test:9443");
        let req = absolute("http://bank.test/p");
        assert_eq!(transparent_target(&req).expect("t").port, 443);
        let mut req = RequestHeader::build("GET", b"/p", None).expect("req");
        req.insert_header("host", "bank.test:8443").expect("host");
        assert_eq!(
            transparent_target(&req).expect("t").url,
            "https://bank.test:8443/p"
        );
    }
}
