//! Admin API, compatible with LivePerson's MTLS API: certificate and mapping CRUD, activate,
//! P12 tester, mapping checks. A plain router function ([`router`]) that tests call without a
//! socket; `lib.rs` serves it on `admin.listen`.
//!
//! Routes (the table is [`ROUTES`]; `docs/openapi.yaml` must list the same set, a test checks it;
//! `docs/admin-api.md` has bodies, codes and deviations). Auth: `E` = OAuth1 or Bearer,
//! `B` = Bearer only, `O` = OAuth1 only.
//!
//! | method | path | auth |
//! |---|---|---|
//! | GET | `/mtls/account/{accountId}/certificates` | E |
//! | POST, PUT | `/mtls/account/{accountId}/certificates` (JSON array) | E |
//! | GET, PUT, DELETE | `/mtls/account/{accountId}/certificates/{certificateId}` (`?cascade=true`) | E |
//! | POST, PUT | `/mtls/account/{accountId}/certificates/by-file` (and legacy `/byFile`) | B |
//! | POST | `/mtls/account/{accountId}/certificates/activate/{certificateId}` | E |
//! | POST | `/mtls/account/{accountId}/certificates/csr` (key kept in the store, or Vault PKI) | E |
//! | GET | `/mtls/account/{accountId}/certificates/{certificateId}/csr` | E |
//! | POST | `/mtls/account/{accountId}/certificates/{certificateId}/signed` | E |
//! | POST | `/mtls/account/{accountId}/certificates/{certificateId}/renew` | E |
//! | DELETE | `/mtls/account/{accountId}/certificates/{certificateId}/pending` | E |
//! | POST | `/mtls/account/{accountId}/p12-test/multipart` | B |
//! | GET, POST | `/api/account/{accountId}/configuration/ac-common/mtls` | E |
//! | GET, PUT, DELETE | `/api/account/{accountId}/configuration/ac-common/mtls/{mappingId}` | E |
//! | POST | `/api/account/{accountId}/configuration/ac-common/mtls/{mappingId}/test` (real handshake) | E |
//! | POST | `/mtls/mapping` (`?v=1|2`) | O, internal key or scoped to every account |
//! | POST | `/api/account/{accountId}/checks/serviceUrlMappings` | O |
//! | GET, POST | `/mtls/mapping/account/{accountId}` (legacy check) | O |
//!
//! Every request goes through [`handle`]: the caller is authenticated from the head against the
//! route's schemes (401 with `WWW-Authenticate`) and the path's account is checked against the
//! identity (403) **before the body is read**; only then is the body read, within the route's
//! limit ([`Op::body_limit`], 413), the body deadline (408) and the bound on bodies read at once
//! (503 with `Retry-After`), and parsed. The one exception is an OAuth1-signed form, whose
//! parameters the signature covers: at most [`SIGNED_FORM_MAX`] bytes of it are read first. An
//! `oauth_body_hash` is signed as a header parameter, so such a caller is verified from the head
//! and the hash checked once the body is in. [`serve`] is the listener: one deadline for a whole
//! request head (`admin.header_timeout_secs`). Writes go
//! to the store, are announced to the other replicas (with `redis:`, [`crate::shared`]), then
//! refresh this replica's snapshot at once; each change logs one JSON line on
//! the `audit` target. Nothing returns or logs a PKCS#12 file or a password.

mod certificates;
mod checks;
pub mod error;
pub(crate) mod input;
mod lifecycle;
mod mappings;
mod tester;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use bytes::Bytes;

use crate::auth::{Accepts, Identity, IdentityKind, RequestParts};
use crate::config::{AdminConfig, Config};
use crate::refresh::Refresher;
use crate::upstream::{Resolver, TlsClient};

pub use error::ApiError;

/// Everything the admin handlers need.
#[derive(Clone)]
pub struct AdminState {
    pub cfg: Arc<Config>,
    pub refresher: Arc<Refresher>,
    /// The proxy's upstream TLS connector (one trust and version set-up for every call to a
    /// target), for the activate validation and the tester's test call.
    pub tls: Arc<TlsClient>,
    /// The proxy's resolver (one DNS cache).
    pub resolver: Arc<Resolver>,
    /// One permit per request body being read (`admin.max_concurrent_bodies`), the console's
    /// forms included.
    pub(crate) bodies: Arc<tokio::sync::Semaphore>,
    /// The lifecycle engine (CSR completion's cut-over proof, "renew now", PKI issuance).
    pub engine: Arc<crate::lifecycle::engine::Engine>,
    /// Shared state (`redis:`): change notices after writes. `None`: per replica.
    pub shared: Option<Arc<crate::shared::Redis>>,
}

impl AdminState {
    /// Announces this replica's writes to the others through `redis` ([`Call::refresh`]).
    pub fn with_shared(mut self, redis: Option<Arc<crate::shared::Redis>>) -> AdminState {
        self.shared = redis;
        self
    }

    /// Shares the gateway's lifecycle engine (one per process) instead of the admin's own.
    pub fn with_engine(mut self, engine: Arc<crate::lifecycle::engine::Engine>) -> AdminState {
        self.engine = engine;
        self
    }

    pub fn new(
        cfg: Arc<Config>,
        refresher: Arc<Refresher>,
        tls: Arc<TlsClient>,
        resolver: Arc<Resolver>,
    ) -> AdminState {
        let bodies = Arc::new(tokio::sync::Semaphore::new(cfg.admin.max_concurrent_bodies));
        let engine = crate::lifecycle::engine::Engine::new(
            refresher.clone(),
            tls.clone(),
            resolver.clone(),
            // Until `with_engine` hands over the process's engine: no notifications of its own.
            crate::lifecycle::notify::Notifier::new(&Default::default())
                .unwrap_or_else(|_| unreachable!("a notifier without webhooks builds")),
            cfg.lifecycle.clone(),
            cfg.admin.validate_timeout,
        );
        AdminState {
            cfg,
            refresher,
            tls,
            resolver,
            bodies,
            engine,
            shared: None,
        }
    }
}

/// The largest request head (request line and headers): 431 past it. hyper's read buffer is
/// kept near this size too, so a connection holds about this much however slowly it sends.
const MAX_HEAD: usize = 64 * 1024;

/// Serves the admin router on `listener` until `shutdown` resolves: HTTP/1.1 only, each request
/// head within `admin.header_timeout_secs` from its first byte (hyper's `header_read_timeout`;
/// on a kept-alive connection the wait for the next request counts too), after which the
/// connection is closed, and at most [`MAX_HEAD`] bytes. On shutdown, connections finish their
/// current request and close.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let header_timeout = state.cfg.admin.header_timeout;
    let app = hyper_util::service::TowerToHyperService::new(router(state));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    log::warn!("admin API: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_header_size(MAX_HEAD)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), app);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { drop(stop.wait_for(|s| *s).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            if let Err(e) = result {
                log::debug!("admin API: connection from {peer}: {e}");
            }
        });
    }
    let _ = stop_tx.send(true);
}

/// Every (method, path) the router serves. The router is built from this table alone and the
/// OpenAPI test compares it with `docs/openapi.yaml`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/mtls/account/{accountId}/certificates"),
    ("POST", "/mtls/account/{accountId}/certificates"),
    ("PUT", "/mtls/account/{accountId}/certificates"),
    (
        "GET",
        "/mtls/account/{accountId}/certificates/{certificateId}",
    ),
    (
        "PUT",
        "/mtls/account/{accountId}/certificates/{certificateId}",
    ),
    (
        "DELETE",
        "/mtls/account/{accountId}/certificates/{certificateId}",
    ),
    ("POST", "/mtls/account/{accountId}/certificates/by-file"),
    ("PUT", "/mtls/account/{accountId}/certificates/by-file"),
    ("POST", "/mtls/account/{accountId}/certificates/byFile"),
    ("PUT", "/mtls/account/{accountId}/certificates/byFile"),
    (
        "POST",
        "/mtls/account/{accountId}/certificates/activate/{certificateId}",
    ),
    ("POST", "/mtls/account/{accountId}/certificates/csr"),
    (
        "GET",
        "/mtls/account/{accountId}/certificates/{certificateId}/csr",
    ),
    (
        "POST",
        "/mtls/account/{accountId}/certificates/{certificateId}/signed",
    ),
    (
        "POST",
        "/mtls/account/{accountId}/certificates/{certificateId}/renew",
    ),
    (
        "DELETE",
        "/mtls/account/{accountId}/certificates/{certificateId}/pending",
    ),
    ("POST", "/mtls/account/{accountId}/p12-test/multipart"),
    (
        "GET",
        "/api/account/{accountId}/configuration/ac-common/mtls",
    ),
    (
        "POST",
        "/api/account/{accountId}/configuration/ac-common/mtls",
    ),
    (
        "GET",
        "/api/account/{accountId}/configuration/ac-common/mtls/{mappingId}",
    ),
    (
        "PUT",
        "/api/account/{accountId}/configuration/ac-common/mtls/{mappingId}",
    ),
    (
        "DELETE",
        "/api/account/{accountId}/configuration/ac-common/mtls/{mappingId}",
    ),
    (
        "POST",
        "/api/account/{accountId}/configuration/ac-common/mtls/{mappingId}/test",
    ),
    ("POST", "/mtls/mapping"),
    ("POST", "/api/account/{accountId}/checks/serviceUrlMappings"),
    ("GET", "/mtls/mapping/account/{accountId}"),
    ("POST", "/mtls/mapping/account/{accountId}"),
];

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ListCertificates,
    GetCertificate,
    CreateCertificates,
    UpdateCertificates,
    UpdateCertificateById,
    DeleteCertificate,
    CreateCertificateByFile,
    UpdateCertificateByFile,
    Activate,
    P12Test,
    CreateCsr,
    GetCsr,
    CompleteCsr,
    Renew,
    DiscardPending,
    ListMappings,
    CreateMappings,
    GetMapping,
    UpdateMapping,
    DeleteMapping,
    TestMapping,
    CheckMappings,
    CheckAccountMappings,
    LegacyCheckGet,
    LegacyCheckPost,
}

impl Op {
    /// The operation behind a [`ROUTES`] entry.
    pub fn of(method: &str, path: &str) -> Option<Op> {
        const CERTS: &str = "/mtls/account/{accountId}/certificates";
        const MAPS: &str = "/api/account/{accountId}/configuration/ac-common/mtls";
        let sub = |base: &str| path.strip_prefix(base).map(str::to_string);
        Some(match (method, path) {
            ("GET", p) if p == CERTS => Op::ListCertificates,
            ("POST", p) if p == CERTS => Op::CreateCertificates,
            ("PUT", p) if p == CERTS => Op::UpdateCertificates,
            ("GET", _) if sub(CERTS).as_deref() == Some("/{certificateId}") => Op::GetCertificate,
            ("PUT", _) if sub(CERTS).as_deref() == Some("/{certificateId}") => {
                Op::UpdateCertificateById
            }
            ("DELETE", _) if sub(CERTS).as_deref() == Some("/{certificateId}") => {
                Op::DeleteCertificate
            }
            ("POST", _) if matches!(sub(CERTS).as_deref(), Some("/by-file" | "/byFile")) => {
                Op::CreateCertificateByFile
            }
            ("PUT", _) if matches!(sub(CERTS).as_deref(), Some("/by-file" | "/byFile")) => {
                Op::UpdateCertificateByFile
            }
            ("POST", _) if sub(CERTS).as_deref() == Some("/activate/{certificateId}") => {
                Op::Activate
            }
            ("POST", _) if sub(CERTS).as_deref() == Some("/csr") => Op::CreateCsr,
            ("GET", _) if sub(CERTS).as_deref() == Some("/{certificateId}/csr") => Op::GetCsr,
            ("POST", _) if sub(CERTS).as_deref() == Some("/{certificateId}/signed") => {
                Op::CompleteCsr
            }
            ("POST", _) if sub(CERTS).as_deref() == Some("/{certificateId}/renew") => Op::Renew,
            ("DELETE", _) if sub(CERTS).as_deref() == Some("/{certificateId}/pending") => {
                Op::DiscardPending
            }
            ("POST", "/mtls/account/{accountId}/p12-test/multipart") => Op::P12Test,
            ("GET", p) if p == MAPS => Op::ListMappings,
            ("POST", p) if p == MAPS => Op::CreateMappings,
            ("GET", _) if sub(MAPS).as_deref() == Some("/{mappingId}") => Op::GetMapping,
            ("PUT", _) if sub(MAPS).as_deref() == Some("/{mappingId}") => Op::UpdateMapping,
            ("DELETE", _) if sub(MAPS).as_deref() == Some("/{mappingId}") => Op::DeleteMapping,
            ("POST", _) if sub(MAPS).as_deref() == Some("/{mappingId}/test") => Op::TestMapping,
            ("POST", "/mtls/mapping") => Op::CheckMappings,
            ("POST", "/api/account/{accountId}/checks/serviceUrlMappings") => {
                Op::CheckAccountMappings
            }
            ("GET", "/mtls/mapping/account/{accountId}") => Op::LegacyCheckGet,
            ("POST", "/mtls/mapping/account/{accountId}") => Op::LegacyCheckPost,
            _ => return None,
        })
    }

    /// LivePerson's per-resource scheme rules.
    pub fn accepts(self) -> Accepts {
        match self {
            Op::CreateCertificateByFile | Op::UpdateCertificateByFile | Op::P12Test => {
                Accepts::BearerOnly
            }
            Op::CheckMappings
            | Op::CheckAccountMappings
            | Op::LegacyCheckGet
            | Op::LegacyCheckPost => Accepts::OAuth1Only,
            _ => Accepts::Either,
        }
    }

    /// Largest request body accepted, and the config keys it derives from. Multipart uploads
    /// get the file cap plus room for the other parts; JSON certificate bodies carry the file as
    /// a byte array (up to 5 characters per byte, `-128,`), so they get 6x the file cap; the
    /// routes that carry no certificate `admin.max_json_bytes`.
    pub fn body_limit(self, admin: &AdminConfig) -> (usize, &'static str) {
        let max_upload = admin.max_upload_bytes;
        match self {
            Op::CreateCertificateByFile | Op::UpdateCertificateByFile | Op::P12Test => (
                max_upload.saturating_add(64 * 1024),
                "admin.max_upload_bytes + 64 KiB for a multipart upload",
            ),
            Op::CreateCertificates | Op::UpdateCertificates | Op::UpdateCertificateById => (
                max_upload.saturating_mul(6).saturating_add(64 * 1024),
                "6 x admin.max_upload_bytes + 64 KiB for certificates sent as JSON",
            ),
            _ => (admin.max_json_bytes, "admin.max_json_bytes"),
        }
    }
}

/// The most of an OAuth1-signed form body read before its signature is checked (the form's
/// parameters are part of what is signed, so the body is needed to verify the caller).
pub const SIGNED_FORM_MAX: usize = 64 * 1024;

/// A body refused before being read is drained (read and dropped, within [`DRAIN_TIME`]) when
/// it announces at most this much, so the client sees the answer instead of a connection reset;
/// a larger one is not read at all and the connection is closed after the answer.
const DRAIN_UNREAD_MAX: u64 = 64 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// One authenticated request, ready for its handler.
pub(crate) struct Call {
    pub state: AdminState,
    pub identity: Identity,
    /// The path's `accountId`, validated and accessible to `identity` (empty for `/mtls/mapping`).
    pub account: String,
    pub params: HashMap<String, String>,
    pub parts: Parts,
    pub body: Bytes,
    pub now: i64,
}

impl Call {
    pub fn cfg(&self) -> &Config {
        &self.state.cfg
    }

    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }

    /// A query parameter (first occurrence, percent-decoded).
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.parts.uri.query()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k) == name).then(|| decode_component(v))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// After a write: announces it to the other replicas (with `redis:`, in the background,
    /// so that they refresh at once) and publishes the store's new state on this replica; a
    /// failure is logged, not returned (the write itself succeeded, and the background refresh
    /// will retry).
    pub async fn refresh(&self) {
        if let Some(redis) = &self.state.shared {
            let (redis, account) = (redis.clone(), self.account.clone());
            let (kind, id) = self.changed();
            tokio::spawn(async move { redis.announce(&account, kind, id).await });
        }
        self.refresh_local().await;
    }

    /// What a write on this route changed, for the change notice: `mapping` for the mapping
    /// routes, else `certificate`, with the path's id when it has one.
    fn changed(&self) -> (&'static str, Option<u64>) {
        let path = self.parts.uri.path();
        let kind = if path.starts_with("/api/") || path.starts_with("/mtls/mapping") {
            "mapping"
        } else {
            "certificate"
        };
        let id = ["certificateId", "mappingId"]
            .iter()
            .find_map(|p| self.params.get(*p).and_then(|v| v.parse().ok()));
        (kind, id)
    }

    async fn refresh_local(&self) {
        if let Err(e) = self.state.refresher.refresh().await {
            log::warn!(
                "admin: the write succeeded but refreshing the runtime snapshot failed ({e}); it will be visible after the next refresh"
            );
        }
    }

    /// Makes sure a snapshot exists before answering from it (only matters before the
    /// background refresher's first run).
    pub async fn ensure_snapshot(&self) {
        if !self.state.refresher.is_ready() {
            self.refresh_local().await;
        }
    }

    /// One structured audit line per change. Never a secret: callers pass ids and names only.
    pub fn audit(&self, action: &str, object: &str, id: u64, extra: serde_json::Value) {
        let mut line = serde_json::json!({
            "action": action,
            "object": object,
            "account": self.account,
            "id": id,
            "subject": self.identity.subject,
            "scheme": match self.identity.kind {
                IdentityKind::AppKey => "oauth1",
                IdentityKind::Bearer => "bearer",
            },
        });
        if let (Some(l), serde_json::Value::Object(e)) = (line.as_object_mut(), extra) {
            l.extend(e);
        }
        log::info!(target: "audit", "{line}");
    }
}

fn decode_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The admin router: a plain function tests can call without a socket.
pub fn router(state: AdminState) -> axum::Router {
    let mut by_path: Vec<(&str, MethodRouter<AdminState>)> = Vec::new();
    for &(method, path) in ROUTES {
        let op = Op::of(method, path)
            .expect("every ROUTES entry has an Op (tested by every_route_has_an_operation)");
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "DELETE" => MethodFilter::DELETE,
            _ => MethodFilter::PATCH,
        };
        let handler = move |State(s): State<AdminState>, req: Request| handle(op, s, req);
        match by_path.iter_mut().find(|(p, _)| *p == path) {
            Some((_, mr)) => *mr = std::mem::take(mr).on(filter, handler),
            None => by_path.push((path, on(filter, handler))),
        }
    }
    let mut r = axum::Router::new();
    for (path, mr) in by_path {
        r = r.route(path, mr.fallback(method_not_allowed));
    }
    if state.cfg.admin.console.enabled {
        r = r.merge(crate::console::router());
    }
    r.fallback(not_found)
        // The handlers enforce admin.max_upload_bytes themselves (and answer 413 in JSON).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no admin resource {method} {}; see docs/openapi.yaml for the routes",
            uri.path()
        ),
    )
    .into_response()
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not supported on {}; see docs/openapi.yaml for the methods",
            uri.path()
        ),
    )
    .into_response()
}

async fn handle(op: Op, state: AdminState, req: Request) -> Response {
    match run(op, state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(op: Op, state: AdminState, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let params = match Path::<HashMap<String, String>>::from_request_parts(&mut parts, &state).await
    {
        Ok(Path(p)) => p,
        Err(_) => {
            let e = ApiError::bad(
                "invalid_path",
                "path",
                "a path parameter is not valid percent-encoded UTF-8",
            );
            return Err(refuse_unread(&parts, body, e).await);
        }
    };
    let now = unix_now();
    let (limit, limit_key) = op.body_limit(&state.cfg.admin);
    let h = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let (authorization, content_type) = (h(header::AUTHORIZATION), h(header::CONTENT_TYPE));

    let (identity, body) = if crate::auth::oauth1_signs_form(authorization, content_type) {
        // The form's parameters are signed: read it first, within a small bound.
        let bound = limit.min(SIGNED_FORM_MAX);
        let key = if bound < limit {
            "an OAuth1-signed form is read before its signature is checked, so it is limited to 65536 bytes; sign a JSON body (with oauth_body_hash) instead"
        } else {
            limit_key
        };
        let body = read_limited(&state, &parts, body, bound, key, false).await?;
        let identity = authenticate(&state, &parts, op, &body, now).await?;
        check_account(&params, &identity)?;
        (identity, body)
    } else {
        let (identity, body_hash) =
            match authenticate_head(&state, &parts, op, now)
                .await
                .and_then(|(identity, hash)| {
                    check_account(&params, &identity)?;
                    Ok((identity, hash))
                }) {
                Ok(v) => v,
                Err(e) => return Err(refuse_unread(&parts, body, e).await),
            };
        let body = if has_body(&parts) {
            read_limited(&state, &parts, body, limit, limit_key, true).await?
        } else {
            Bytes::new()
        };
        if let Some(hash) = body_hash {
            hash.check(&body).map_err(|e| ApiError::unauthorized(&e))?;
        }
        (identity, body)
    };
    let account = params.get("accountId").cloned().unwrap_or_default();

    let call = Call {
        state,
        identity,
        account,
        params,
        parts,
        body,
        now,
    };
    dispatch(op, &call).await
}

/// The console's way into the API ([`crate::console`]): runs `op` for an identity the console
/// verified from its session (the same Bearer verification as [`authenticate_head`]), with the
/// same account check ([`check_account`], 400/403), the route's body limit (413) and the same
/// handler as a request on the socket. `request` carries the route's real path (the change
/// notice and the audit line read it), any query, the content type and the body; `params` the
/// path's parameters. Only the per-resource scheme rule ([`Op::accepts`], LivePerson's choice of
/// OAuth1 or Bearer per route) is not applied: the console's session is a Bearer token, and the
/// OAuth1-only account checks are open to it within its account scope.
pub(crate) async fn invoke(
    state: &AdminState,
    identity: Identity,
    op: Op,
    params: HashMap<String, String>,
    request: http::Request<Bytes>,
) -> Response {
    let (parts, body) = request.into_parts();
    let (limit, limit_key) = op.body_limit(&state.cfg.admin);
    let checked = check_account(&params, &identity).and_then(|()| {
        if body.len() > limit {
            Err(body_too_large(limit, limit_key))
        } else {
            Ok(())
        }
    });
    if let Err(e) = checked {
        return e.into_response();
    }
    let call = Call {
        state: state.clone(),
        identity,
        account: params.get("accountId").cloned().unwrap_or_default(),
        params,
        parts,
        body,
        now: unix_now(),
    };
    match dispatch(op, &call).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The handler of `op`, for an authenticated, account-checked call with its body read.
async fn dispatch(op: Op, call: &Call) -> Result<Response, ApiError> {
    match op {
        Op::ListCertificates => certificates::list(call).await,
        Op::GetCertificate => certificates::get(call).await,
        Op::CreateCertificates => certificates::create_json(call).await,
        Op::UpdateCertificates => certificates::update_json(call).await,
        Op::UpdateCertificateById => certificates::update_one_json(call).await,
        Op::DeleteCertificate => certificates::delete(call).await,
        Op::CreateCertificateByFile => certificates::create_file(call).await,
        Op::UpdateCertificateByFile => certificates::update_file(call).await,
        Op::Activate => mappings::activate(call).await,
        Op::P12Test => tester::run(call).await,
        Op::CreateCsr => lifecycle::create(call).await,
        Op::GetCsr => lifecycle::get_csr(call).await,
        Op::CompleteCsr => lifecycle::complete(call).await,
        Op::Renew => lifecycle::renew(call).await,
        Op::DiscardPending => lifecycle::discard(call).await,
        Op::ListMappings => mappings::list(call).await,
        Op::CreateMappings => mappings::create(call).await,
        Op::GetMapping => mappings::get(call).await,
        Op::UpdateMapping => mappings::update(call).await,
        Op::DeleteMapping => mappings::delete(call).await,
        Op::TestMapping => mappings::test(call).await,
        Op::CheckMappings => checks::global(call).await,
        Op::CheckAccountMappings => checks::account(call).await,
        Op::LegacyCheckGet => checks::legacy_get(call).await,
        Op::LegacyCheckPost => checks::legacy_post(call).await,
    }
}

/// The request as the auth module sees it, with `body` (empty until read).
fn request_parts<'a>(parts: &'a Parts, host: &'a str, body: &'a [u8]) -> RequestParts<'a> {
    let h = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    RequestParts {
        method: parts.method.as_str(),
        scheme: "http",
        host,
        path: parts.uri.path(),
        query: parts.uri.query(),
        authorization: h(header::AUTHORIZATION),
        content_type: h(header::CONTENT_TYPE),
        body,
        forwarded_proto: h(header::HeaderName::from_static("x-forwarded-proto")),
    }
}

fn host_of(parts: &Parts) -> String {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// Verifies the caller from the head alone (see [`crate::auth::AuthConfig::authenticate_deferring_body_hash`]).
async fn authenticate_head(
    state: &AdminState,
    parts: &Parts,
    op: Op,
    now: i64,
) -> Result<(Identity, Option<crate::auth::oauth1::BodyHash>), ApiError> {
    let host = host_of(parts);
    state
        .cfg
        .auth
        .authenticate_deferring_body_hash_shared(
            &request_parts(parts, &host, b""),
            op.accepts(),
            now,
        )
        .await
        .map_err(|e| ApiError::unauthorized(&e))
}

/// Verifies the caller with the body read.
async fn authenticate(
    state: &AdminState,
    parts: &Parts,
    op: Op,
    body: &[u8],
    now: i64,
) -> Result<Identity, ApiError> {
    let host = host_of(parts);
    state
        .cfg
        .auth
        .authenticate_shared(&request_parts(parts, &host, body), op.accepts(), now)
        .await
        .map_err(|e| ApiError::unauthorized(&e))
}

/// The path's account, when it has one, is valid and open to `identity` (400 / 403).
fn check_account(params: &HashMap<String, String>, identity: &Identity) -> Result<(), ApiError> {
    let Some(account) = params.get("accountId") else {
        return Ok(());
    };
    if !crate::store::valid_account_id(account) {
        return Err(ApiError::bad(
            "invalid_account_id",
            "accountId",
            "accountId must be 1-64 letters, digits, - or _ (the LP site id)",
        ));
    }
    if !identity.may_access(account) {
        return Err(ApiError::forbidden(format!(
            "{} is not allowed to act on account {account}",
            identity.subject
        )));
    }
    Ok(())
}

/// The `Content-Length` the client announced, when it sent one that parses.
fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Whether the request has a body to read (a non-zero `Content-Length`, or chunked).
fn has_body(parts: &Parts) -> bool {
    parts.headers.contains_key(header::TRANSFER_ENCODING) || declared_length(parts).unwrap_or(0) > 0
}

/// `e`, answered without reading the body: a small announced body is drained first (bounded in
/// size and time) so the client reads the answer instead of a reset; otherwise the connection
/// closes after the answer.
async fn refuse_unread(parts: &Parts, body: Body, e: ApiError) -> ApiError {
    if !has_body(parts) {
        return e;
    }
    if declared_length(parts).is_some_and(|n| n <= DRAIN_UNREAD_MAX)
        && drain(body, DRAIN_TIME).await
    {
        return e;
    }
    e.header("connection", "close")
}

/// Reads and drops `body` until its end or `within`; true when the end was reached.
async fn drain(body: Body, within: std::time::Duration) -> bool {
    let drain = async {
        use http_body_util::BodyExt;
        let mut body = body;
        loop {
            match body.frame().await {
                None => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
            }
        }
    };
    tokio::time::timeout(within, drain).await.unwrap_or(false)
}

/// The most of an oversized body read and dropped before its 413 to an authenticated caller
/// (see [`read_limited`]); an unauthenticated one gets [`DRAIN_UNREAD_MAX`].
const DRAIN_MAX: u64 = 8 * 1024 * 1024;

/// Reads the whole body: at most `limit` bytes (413 naming `limit_key`, checked against
/// `Content-Length` first), within `admin.body_timeout_secs` (408), holding one of the
/// `admin.max_concurrent_bodies` permits (503 when none is free). `authenticated` is false only
/// for an OAuth1-signed form, read to verify its caller.
async fn read_limited(
    state: &AdminState,
    parts: &Parts,
    body: Body,
    limit: usize,
    limit_key: &str,
    authenticated: bool,
) -> Result<Bytes, ApiError> {
    let Ok(_permit) = state.bodies.clone().try_acquire_owned() else {
        let n = state.cfg.admin.max_concurrent_bodies;
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_bodies",
            format!(
                "{n} request bodies are being received already (admin.max_concurrent_bodies = {n}); retry in a second"
            ),
        )
        .header("retry-after", "1");
        return Err(refuse_unread(parts, body, e).await);
    };
    let timeout = state.cfg.admin.body_timeout;
    if let Some(n) = declared_length(parts).filter(|n| *n > limit as u64) {
        // Read (and drop) a moderately oversized body before answering: closing a connection
        // with unread data makes the kernel send a reset, and the client may then never see
        // the 413. Bounded in size and time; beyond that the connection just closes.
        let e = body_too_large(limit, limit_key);
        let drain_max = if authenticated {
            DRAIN_MAX
        } else {
            DRAIN_UNREAD_MAX
        };
        if n <= drain_max && drain(body, timeout.min(std::time::Duration::from_secs(2))).await {
            return Err(e);
        }
        return Err(e.header("connection", "close"));
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s (admin.body_timeout_secs); send it faster or raise the limit",
                timeout.as_secs()
            ),
        )
        .field("body")
        .header("connection", "close")),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
                || body_limit_in_chain(&*inner)
            {
                Err(body_too_large(limit, limit_key).header("connection", "close"))
            } else {
                Err(ApiError::bad(
                    "invalid_body",
                    "body",
                    "the request body could not be read completely",
                ))
            }
        }
    }
}

fn body_limit_in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn body_too_large(limit: usize, limit_key: &str) -> ApiError {
    let mut extra = serde_json::Map::new();
    extra.insert("limit".into(), serde_json::json!(limit));
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the request body is larger than {limit} bytes, this route's limit ({limit_key}); send a smaller body or raise the limit"
        ),
    )
    .field("body")
    .extra(extra)
}

/// JSON response with a status.
pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// Serialises this replica's admin writes, so the read-check-write of a name or a reference is
/// not interleaved with another admin request here. (Across replicas, mapping documents are
/// compare-and-set; certificate names are checked best effort.)
pub(crate) static WRITE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_an_operation() {
        for (m, p) in ROUTES {
            assert!(Op::of(m, p).is_some(), "{m} {p} has no Op");
        }
    }

    #[test]
    fn routes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r), "{r:?} listed twice");
        }
    }

    #[test]
    fn lp_auth_rules() {
        assert_eq!(Op::P12Test.accepts(), Accepts::BearerOnly);
        assert_eq!(Op::CreateCertificateByFile.accepts(), Accepts::BearerOnly);
        assert_eq!(Op::CheckMappings.accepts(), Accepts::OAuth1Only);
        assert_eq!(Op::CreateCertificates.accepts(), Accepts::Either);
        assert_eq!(Op::Activate.accepts(), Accepts::Either);
    }
}
