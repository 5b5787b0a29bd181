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
//! | POST | `/mtls/account/{accountId}/p12-test/multipart` | B |
//! | GET, POST | `/api/account/{accountId}/configuration/ac-common/mtls` | E |
//! | GET, PUT, DELETE | `/api/account/{accountId}/configuration/ac-common/mtls/{mappingId}` | E |
//! | POST | `/mtls/mapping` (`?v=1|2`) | O, internal key or scoped to every account |
//! | POST | `/api/account/{accountId}/checks/serviceUrlMappings` | O |
//! | GET, POST | `/mtls/mapping/account/{accountId}` (legacy check) | O |
//!
//! Every request goes through [`handle`]: the body is read as bytes (capped: 413), the caller
//! is authenticated against the route's schemes (401 with `WWW-Authenticate`), the path's
//! account is checked against the identity (403), and only then is the body parsed. Writes go
//! to the store, then refresh this replica's snapshot at once; each change logs one JSON line on
//! the `audit` target. Nothing returns or logs a PKCS#12 file or a password.

mod certificates;
mod checks;
pub mod error;
mod input;
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
use crate::config::Config;
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
    ListMappings,
    CreateMappings,
    GetMapping,
    UpdateMapping,
    DeleteMapping,
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
            ("POST", "/mtls/account/{accountId}/p12-test/multipart") => Op::P12Test,
            ("GET", p) if p == MAPS => Op::ListMappings,
            ("POST", p) if p == MAPS => Op::CreateMappings,
            ("GET", _) if sub(MAPS).as_deref() == Some("/{mappingId}") => Op::GetMapping,
            ("PUT", _) if sub(MAPS).as_deref() == Some("/{mappingId}") => Op::UpdateMapping,
            ("DELETE", _) if sub(MAPS).as_deref() == Some("/{mappingId}") => Op::DeleteMapping,
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

    /// Largest request body accepted. Multipart uploads get the file cap plus room for the
    /// other parts; JSON certificate bodies carry the file as a byte array (up to 5 characters
    /// per byte, `-128,`), so they get 6x the file cap; everything else the file cap.
    fn body_limit(self, max_upload: usize) -> usize {
        match self {
            Op::CreateCertificateByFile | Op::UpdateCertificateByFile | Op::P12Test => {
                max_upload.saturating_add(64 * 1024)
            }
            Op::CreateCertificates | Op::UpdateCertificates | Op::UpdateCertificateById => {
                max_upload.saturating_mul(6).saturating_add(64 * 1024)
            }
            _ => max_upload,
        }
    }
}

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

    /// Publishes the store's new state on this replica; a failure is logged, not returned (the
    /// write itself succeeded, and the background refresh will retry).
    pub async fn refresh(&self) {
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
            self.refresh().await;
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
    let params = Path::<HashMap<String, String>>::from_request_parts(&mut parts, &state)
        .await
        .map(|Path(p)| p)
        .map_err(|_| {
            ApiError::bad(
                "invalid_path",
                "path",
                "a path parameter is not valid percent-encoded UTF-8",
            )
        })?;
    let body = read_body(
        &parts,
        body,
        op.body_limit(state.cfg.admin.max_upload_bytes),
    )
    .await?;

    let now = unix_now();
    let identity = {
        let h = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let host = h(header::HOST)
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let rp = RequestParts {
            method: parts.method.as_str(),
            scheme: "http",
            host: &host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            authorization: h(header::AUTHORIZATION),
            content_type: h(header::CONTENT_TYPE),
            body: &body,
            forwarded_proto: h(header::HeaderName::from_static("x-forwarded-proto")),
        };
        state
            .cfg
            .auth
            .authenticate(&rp, op.accepts(), now)
            .map_err(|e| ApiError::unauthorized(&e))?
    };

    let account = params.get("accountId").cloned().unwrap_or_default();
    if params.contains_key("accountId") {
        if !crate::store::valid_account_id(&account) {
            return Err(ApiError::bad(
                "invalid_account_id",
                "accountId",
                "accountId must be 1-64 letters, digits, - or _ (the LP site id)",
            ));
        }
        if !identity.may_access(&account) {
            return Err(ApiError::forbidden(format!(
                "{} is not allowed to act on account {account}",
                identity.subject
            )));
        }
    }

    let call = Call {
        state,
        identity,
        account,
        params,
        parts,
        body,
        now,
    };
    match op {
        Op::ListCertificates => certificates::list(&call).await,
        Op::GetCertificate => certificates::get(&call).await,
        Op::CreateCertificates => certificates::create_json(&call).await,
        Op::UpdateCertificates => certificates::update_json(&call).await,
        Op::UpdateCertificateById => certificates::update_one_json(&call).await,
        Op::DeleteCertificate => certificates::delete(&call).await,
        Op::CreateCertificateByFile => certificates::create_file(&call).await,
        Op::UpdateCertificateByFile => certificates::update_file(&call).await,
        Op::Activate => mappings::activate(&call).await,
        Op::P12Test => tester::run(&call).await,
        Op::ListMappings => mappings::list(&call).await,
        Op::CreateMappings => mappings::create(&call).await,
        Op::GetMapping => mappings::get(&call).await,
        Op::UpdateMapping => mappings::update(&call).await,
        Op::DeleteMapping => mappings::delete(&call).await,
        Op::CheckMappings => checks::global(&call).await,
        Op::CheckAccountMappings => checks::account(&call).await,
        Op::LegacyCheckGet => checks::legacy_get(&call).await,
        Op::LegacyCheckPost => checks::legacy_post(&call).await,
    }
}

/// Reads the whole body, at most `limit` bytes (413 past it, checked against Content-Length
/// first so an oversized upload is refused before it is read).
/// The largest oversized body read to its end before the 413 (see `read_body`).
const DRAIN_MAX: u64 = 8 * 1024 * 1024;

async fn read_body(parts: &Parts, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        // Read (and drop) a moderately oversized body before answering: closing a connection
        // with unread data makes the kernel send a reset, and the client may then never see
        // the 413. Bounded in size and time; beyond that the connection just closes.
        if n <= DRAIN_MAX {
            let drain = async {
                use http_body_util::BodyExt;
                let mut body = body;
                while let Some(Ok(_)) = body.frame().await {}
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
        }
        return Err(body_too_large(limit));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
                || body_limit_in_chain(&*inner)
            {
                Err(body_too_large(limit))
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

fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the request body is larger than {limit} bytes (derived from admin.max_upload_bytes); send a smaller file or raise the limit"
        ),
    )
    .field("body")
}

/// JSON response with a status.
pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// Runs CPU-bound work (PKCS#12 decoding) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&format!("blocking task failed: {e}")))
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
