//! The self-service console: server-rendered pages on the admin listener (`/console/`) for the
//! people who own the certificates, built on the admin API.
//!
//! - **Off by default** (`admin.console.enabled`); it needs `auth.jwt`, because a session is a
//!   Bearer JWT the admin API accepts.
//! - **Sign-in**: the token, pasted on `/console/login`, is verified exactly as the API verifies
//!   a Bearer token ([`crate::auth::JwtVerifier::verify`]) and becomes the `mtls_console` cookie:
//!   `HttpOnly`, `SameSite=Strict`, `Path=/console`, `Secure` over https
//!   (`admin.console.cookie_secure`), expiring with the token (at most
//!   `admin.console.session_max_secs`). Every request verifies the token again; nothing is kept
//!   on the server, so any replica serves any session.
//! - **Authorisation**: every action goes through [`crate::admin::invoke`], the API's own handler
//!   after the same account check (account scope, admin role): a page can show nothing the
//!   token could not read from the API, and do nothing it could not do there.
//! - **CSRF**: every state change is a POST carrying the session's CSRF token (an HMAC of the
//!   session token, [`Session::csrf`]), compared in constant time; a POST whose `Origin` is
//!   another origin, or whose `Sec-Fetch-Site` says `cross-site`, is refused too.
//! - **Secrets**: no password, key or token is ever rendered into a page or logged; uploads are
//!   handed to the API and dropped.
//! - **Headers**: a strict Content-Security-Policy (`default-src 'none'`, scripts and styles from
//!   this origin only, no inline), `X-Frame-Options: DENY`, `no-store`, `Referrer-Policy: same-origin`.
//! - **Assets**: one stylesheet and one small script ([`assets`]), embedded in the binary. Every
//!   read page works without JavaScript; the script only runs the PKCS#12 tester in place.
//!
//! Pages: [`overview`] (expiring, refused cut-overs, failing mappings, snapshot age),
//! [`certificates`] (list, add by file or CSR, a certificate's versions, renew, replace, delete),
//! [`mappings`] (list with checks, create, edit, enable/disable, delete, test). `docs/console.md`
//! is the user's guide.

mod certificates;
mod layout;
mod mappings;
mod oidc;
mod overview;

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use maud::html;
use serde_json::Value;
use sha2::Sha256;

use crate::admin::{AdminState, Op};
use crate::auth::{AccountScope, Identity};
use crate::config::CookieSecure;

pub(crate) use layout::{page, Notice};

/// The session cookie's name.
pub const COOKIE: &str = "mtls_console";
/// Where the console lives on the admin listener.
pub const BASE: &str = "/console";
/// The longest pasted token accepted.
const MAX_TOKEN: usize = 16 * 1024;

/// The console's routes, merged into the admin router when `admin.console.enabled`.
pub fn router() -> axum::Router<AdminState> {
    axum::Router::new()
        .route(BASE, get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/switch", get(switch))
        .route("/console/oidc/start", get(oidc::start))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/assets/console.css", get(assets::css))
        .route("/console/assets/console.js", get(assets::js))
        .merge(overview::routes())
        .merge(certificates::routes())
        .merge(mappings::routes())
        // Any other path under /console/ gets the console's own 404 page (and its headers).
        .route("/console/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::map_response(security_headers))
}

/// The headers every console answer carries.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` with
    // every form POST, which the CSRF origin check must refuse.
    set(h, "referrer-policy", "same-origin");
    set(h, "cache-control", "no-store");
    set(h, "cross-origin-opener-policy", "same-origin");
    resp
}

/// The embedded stylesheet and script.
mod assets {
    use super::*;

    pub async fn css() -> Response {
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            include_str!("assets/console.css"),
        )
            .into_response()
    }

    pub async fn js() -> Response {
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            include_str!("assets/console.js"),
        )
            .into_response()
    }
}

/// A signed-in user: the token's identity, re-verified on this request.
pub(crate) struct Session {
    pub identity: Identity,
    /// The anti-CSRF token every form of this session carries ([`Session::csrf_of`]).
    pub csrf: String,
}

impl Session {
    /// The CSRF token of a session token: HMAC-SHA256 keyed by the session token, so it can be
    /// checked by any replica without server-side state, and does not reveal the token.
    fn csrf_of(token: &str) -> String {
        use base64::Engine;
        let mut mac = match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes a key of any length"),
        };
        mac.update(b"mtls-gateway console csrf v1");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The accounts this session may pick: its token's accounts, or (admin role) the accounts
    /// the store has, plus any typed in the switcher.
    pub fn accounts(&self, state: &AdminState) -> Vec<String> {
        match &self.identity.accounts {
            AccountScope::Only(list) => list.clone(),
            AccountScope::All => {
                let snap = state.refresher.snapshot().load();
                let mut all: Vec<String> = snap
                    .mappings
                    .keys()
                    .cloned()
                    .chain(snap.certs.keys().map(|(a, _)| a.clone()))
                    .collect();
                all.sort();
                all.dedup();
                all.truncate(500);
                all
            }
        }
    }

    /// Whether this session may see `account` (the API's own rule).
    pub fn may_access(&self, account: &str) -> bool {
        crate::store::valid_account_id(account) && self.identity.may_access(account)
    }
}

/// Why a request gets no page.
pub(crate) enum Refusal {
    /// No valid session: to the sign-in page.
    SignIn(Option<&'static str>),
    /// A page with a status and a message (403, 404, 400...).
    Page(StatusCode, String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn(why) => {
                let to = match why {
                    Some(w) => format!("/console/login?why={w}"),
                    None => "/console/login".into(),
                };
                let mut r = Redirect::to(&to).into_response();
                // A token that no longer verifies is dropped.
                if why.is_some() {
                    r.headers_mut().insert(header::SET_COOKIE, clear_cookie());
                }
                r
            }
            Refusal::Page(status, message) => {
                let body = layout::bare(
                    "Not possible",
                    html! {
                        h1 { "Not possible" }
                        p role="alert" { (message) }
                        p { a href="/console/" { "Back to the console" } }
                    },
                );
                (status, body).into_response()
            }
        }
    }
}

/// The session of this request, or a redirect to the sign-in page.
pub(crate) fn session(state: &AdminState, headers: &HeaderMap) -> Result<Session, Refusal> {
    // The cookie, or a Bearer token a single sign-on proxy in front adds to every request
    // (docs/console.md): the same token, verified the same way.
    let Some(token) = cookie(headers, COOKIE).or_else(|| bearer(headers)) else {
        return Err(Refusal::SignIn(None));
    };
    let Some(jwt) = state.cfg.auth.jwt.as_ref() else {
        return Err(Refusal::SignIn(Some("unavailable")));
    };
    let identity = jwt
        .verify(&token, crate::admin::unix_now())
        .map_err(|_| Refusal::SignIn(Some("expired")))?;
    Ok(Session {
        identity,
        csrf: Session::csrf_of(&token),
    })
}

/// The session of this request for `account`: 403 when the token may not see it.
pub(crate) fn session_for(
    state: &AdminState,
    headers: &HeaderMap,
    account: &str,
) -> Result<Session, Refusal> {
    let s = session(state, headers)?;
    if !s.may_access(account) {
        return Err(Refusal::Page(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not see account {account}; pick one of your accounts from the switcher",
                s.identity.subject
            ),
        ));
    }
    Ok(s)
}

/// A value of the `Cookie` header.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (word, rest) = v.split_once(' ')?;
    word.eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("mtls_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether a state-changing request comes from this console's own pages by its browser
/// headers: an `Origin` naming another host, or `Sec-Fetch-Site: cross-site`, is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// A state change's checks: the session, its CSRF token (`submitted`, from the form), and the
/// browser's origin headers. 403 on any failure; nothing is done.
pub(crate) fn check_post(
    session: &Session,
    headers: &HeaderMap,
    submitted: Option<&str>,
) -> Result<(), Refusal> {
    let forged = || {
        Refusal::Page(
            StatusCode::FORBIDDEN,
            "this form did not come from the console (its CSRF token is missing or wrong, or it was sent from another site); nothing was changed. Reload the page and try again".into(),
        )
    };
    if !same_origin(headers) {
        return Err(forged());
    }
    let Some(got) = submitted else {
        return Err(forged());
    };
    let (a, b) = (got.as_bytes(), session.csrf.as_bytes());
    let differs = a.len() != b.len() || a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0;
    if differs {
        return Err(forged());
    }
    Ok(())
}

/// The start of every state change on an account's page, in this order: the session and its
/// account scope ([`session_for`]), the form read within `limit` ([`read_form`]), then the CSRF
/// token and the origin ([`check_post`]). Nothing is done before all three pass.
pub(crate) async fn form_post(
    state: &AdminState,
    account: &str,
    req: Request,
    limit: usize,
) -> Result<(Session, FormBody), Response> {
    let headers = req.headers().clone();
    let s = session_for(state, &headers, account).map_err(IntoResponse::into_response)?;
    let (_, form) = read_form(state, req, limit)
        .await
        .map_err(IntoResponse::into_response)?;
    check_post(&s, &headers, form.csrf()).map_err(IntoResponse::into_response)?;
    Ok((s, form))
}

/// A form body, read within the limit and the admin's body deadline.
pub(crate) struct FormBody {
    fields: Vec<(String, String)>,
    /// The multipart form, when the body was one.
    multipart: Option<crate::admin::input::Form>,
}

impl FormBody {
    /// A text field (first occurrence), trimmed of nothing.
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(m) = &self.multipart {
            return m.text(name).ok().flatten();
        }
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A file part of a multipart form.
    pub fn file(&self, name: &str) -> Option<&Bytes> {
        self.multipart.as_ref().and_then(|m| m.get(name))
    }

    pub fn csrf(&self) -> Option<&str> {
        self.get("csrf")
    }
}

/// Reads a form (urlencoded or multipart) of at most `limit` bytes within
/// `admin.body_timeout_secs`, holding one of the `admin.max_concurrent_bodies` permits (503 when
/// none is free).
pub(crate) async fn read_form(
    state: &AdminState,
    req: Request,
    limit: usize,
) -> Result<(axum::http::request::Parts, FormBody), Refusal> {
    let (parts, body) = req.into_parts();
    // The admin's bound on bodies read at once covers the console's forms too.
    let Ok(_permit) = state.bodies.clone().try_acquire_owned() else {
        return Err(Refusal::Page(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{n} request bodies are being received already (admin.max_concurrent_bodies = {n}); try again in a second",
                n = state.cfg.admin.max_concurrent_bodies
            ),
        ));
    };
    let timeout = state.cfg.admin.body_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return Err(Refusal::Page(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the form is larger than {limit} bytes or did not arrive whole; send a smaller file (admin.max_upload_bytes)"),
            ))
        }
        Err(_) => {
            return Err(Refusal::Page(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the form did not arrive within {} s (admin.body_timeout_secs)",
                    timeout.as_secs()
                ),
            ))
        }
    };
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("multipart/form-data") {
        let form = crate::admin::input::multipart(&parts, bytes)
            .await
            .map_err(|e| Refusal::Page(StatusCode::BAD_REQUEST, e.message.clone()))?;
        return Ok((
            parts,
            FormBody {
                fields: Vec::new(),
                multipart: Some(form),
            },
        ));
    }
    let fields = url::form_urlencoded::parse(&bytes).into_owned().collect();
    Ok((
        parts,
        FormBody {
            fields,
            multipart: None,
        },
    ))
}

/// The largest urlencoded form the console reads (mappings, CSR subjects, signed chains).
pub(crate) const FORM_MAX: usize = 256 * 1024;

/// An admin API answer, as the console reads it.
pub(crate) struct Answer {
    pub status: StatusCode,
    /// The body as JSON (`Null` when it was not JSON).
    pub json: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message (with the field it names), for a page.
    pub fn error(&self) -> String {
        let msg = self.json["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("the request failed ({})", self.status));
        match self.json["field"].as_str() {
            Some(f) if !msg.contains(f) => format!("{msg} (field {f})"),
            _ => msg,
        }
    }
}

/// One admin API call for this session: `op` at `path` (the API's real path, with any query),
/// with the route's `params` (`accountId`, `certificateId`, `mappingId`), a content type and a
/// body. The API's handler answers, after its own account check.
#[allow(clippy::too_many_arguments)] // the parts of one API request, named at the call
pub(crate) async fn api(
    state: &AdminState,
    session: &Session,
    op: Op,
    method: Method,
    path: &str,
    params: &[(&str, &str)],
    content_type: Option<&str>,
    body: Bytes,
) -> Answer {
    let mut b = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b = b.header(header::CONTENT_LENGTH, body.len());
    let request = match b.body(body) {
        Ok(r) => r,
        Err(e) => {
            return Answer {
                status: StatusCode::BAD_REQUEST,
                json: serde_json::json!({"message": format!("bad request path: {e}")}),
            }
        }
    };
    let params: HashMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let resp = crate::admin::invoke(state, session.identity.clone(), op, params, request).await;
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Answer { status, json }
}

/// A JSON body for [`api`].
pub(crate) fn json_body(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Percent-encodes a path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A 303 to `to` (after a POST: the browser GETs the page).
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

async fn not_found() -> Response {
    Refusal::Page(
        StatusCode::NOT_FOUND,
        "there is no console page here; start again from the console's home".into(),
    )
    .into_response()
}

/// `/console/`: the first account's overview, or the sign-in page.
async fn home(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let s = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match s.accounts(&state).first() {
        Some(a) => see_other(&format!("/console/a/{}/", enc(a))),
        None => page(
            &state,
            &s,
            None,
            "Choose an account",
            None,
            html! {
                h1 { "Choose an account" }
                p { "Your token may act on every account. Type the account id in the switcher above." }
            },
        ),
    }
}

/// `GET /console/switch?account=...`: to that account's overview (the switcher's form).
async fn switch(
    State(state): State<AdminState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let account = uri
        .query()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "account")
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    match session_for(&state, &headers, &account) {
        Ok(_) => see_other(&format!("/console/a/{}/", enc(&account))),
        Err(r) => r.into_response(),
    }
}

/// `GET /console/login`: paste a token.
async fn login_page(State(state): State<AdminState>, uri: axum::http::Uri) -> Response {
    let why = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "why")
            .map(|(_, v)| v.into_owned())
    });
    let message = match why.as_deref() {
        Some("expired") => {
            Some("Your session ended (the token expired or is no longer accepted). Sign in again.")
        }
        Some("out") => Some("You are signed out."),
        Some("unavailable") => Some("Sign-in is not configured on this gateway (auth.jwt)."),
        _ => None,
    };
    login_form(&state, StatusCode::OK, message)
}

fn login_form(state: &AdminState, status: StatusCode, message: Option<&str>) -> Response {
    let body = layout::bare(
        "Sign in",
        html! {
            h1 { "Sign in to the mtls-gateway console" }
            @if let Some(m) = message {
                p.notice role="status" id="login-message" { (m) }
            }
            @if let Some(o) = &state.cfg.admin.console.oidc {
                p { a.button href="/console/oidc/start" id="sign-in-sso" { (o.label) } }
                p.hint { "Or paste a token:" }
            }
            form method="post" action="/console/login" {
                label for="token" { "Access token (a Bearer JWT the admin API accepts)" }
                textarea id="token" name="token" rows="6" required autocomplete="off" spellcheck="false" {}
                p.hint { "The token is kept only in an HttpOnly cookie of this browser until it expires; it is never shown again." }
                button type="submit" id="sign-in" { "Sign in" }
            }
        },
    );
    (status, body).into_response()
}

/// `POST /console/login`: the pasted token, verified as the API would, becomes the session.
async fn login(State(state): State<AdminState>, req: Request) -> Response {
    let headers = req.headers().clone();
    if !same_origin(&headers) {
        return Refusal::Page(
            StatusCode::FORBIDDEN,
            "sign-in must be sent from this console's own page".into(),
        )
        .into_response();
    }
    let form = match read_form(&state, req, MAX_TOKEN + 1024).await {
        Ok((_, f)) => f,
        Err(r) => return r.into_response(),
    };
    let token = form.get("token").unwrap_or("").trim().to_string();
    let Some(jwt) = state.cfg.auth.jwt.as_ref() else {
        return login_form(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("Sign-in is not configured on this gateway (auth.jwt)."),
        );
    };
    if token.is_empty() || token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return login_form(
            &state,
            StatusCode::BAD_REQUEST,
            Some("Paste the token itself (three base64url parts separated by dots), without \"Bearer\"."),
        );
    }
    let now = crate::admin::unix_now();
    let identity = match jwt.verify(&token, now) {
        Ok(i) => i,
        Err(e) => {
            log::info!(target: "audit", "{}", serde_json::json!({"action": "console_sign_in_refused", "reason": e.to_string()}));
            return login_form(
                &state,
                StatusCode::UNAUTHORIZED,
                Some(&format!("The token was not accepted: {e}.")),
            );
        }
    };
    log::info!(target: "audit", "{}", serde_json::json!({"action": "console_sign_in", "subject": identity.subject, "method": "token"}));
    match session_cookie(&state, &headers, &token) {
        Some(c) => {
            let mut r = see_other("/console/");
            r.headers_mut().insert(header::SET_COOKIE, c);
            r
        }
        None => login_form(
            &state,
            StatusCode::BAD_REQUEST,
            Some("The token has characters a cookie cannot carry."),
        ),
    }
}

/// The session cookie for a verified `token`: HttpOnly, SameSite=Strict, `Path=/console`,
/// `Secure` per `admin.console.cookie_secure`, expiring with the token (at most
/// `admin.console.session_max_secs`).
fn session_cookie(state: &AdminState, headers: &HeaderMap, token: &str) -> Option<HeaderValue> {
    let now = crate::admin::unix_now();
    let exp = token_claims(token)
        .and_then(|c| c["exp"].as_i64())
        .unwrap_or(now + 3600);
    let max_age = (exp - now).clamp(0, state.cfg.admin.console.session_max.as_secs() as i64);
    let secure = match state.cfg.admin.console.cookie_secure {
        CookieSecure::Always => true,
        CookieSecure::Never => false,
        CookieSecure::Auto => is_https(headers),
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).ok()
}

/// The claims of a token already verified (its payload, decoded without checking again).
fn token_claims(token: &str) -> Option<Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `POST /console/logout`: drops the cookie (CSRF-checked, so no other site signs you out).
async fn logout(State(state): State<AdminState>, req: Request) -> Response {
    let headers = req.headers().clone();
    let s = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let form = match read_form(&state, req, FORM_MAX).await {
        Ok((_, f)) => f,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_post(&s, &headers, form.csrf()) {
        return r.into_response();
    }
    let mut r = see_other("/console/login?why=out");
    r.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    r
}

// ---------------------------------------------------------------------------------------------
// The account's data, read through the API, and the pieces every page uses.

/// A JSON id (number or numeric string) as text.
pub(crate) fn id_text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// The account's certificate entities (the API's list), or the API's refusal.
pub(crate) async fn account_certificates(
    state: &AdminState,
    session: &Session,
    account: &str,
) -> Result<Vec<Value>, Answer> {
    let ans = api(
        state,
        session,
        Op::ListCertificates,
        Method::GET,
        &format!("/mtls/account/{}/certificates", enc(account)),
        &[("accountId", account)],
        None,
        Bytes::new(),
    )
    .await;
    match &ans.json {
        Value::Array(list) if ans.ok() => Ok(list.clone()),
        _ => Err(ans),
    }
}

/// The account's live mappings (the API's list, deleted ones left out), or the API's refusal.
pub(crate) async fn account_mappings(
    state: &AdminState,
    session: &Session,
    account: &str,
) -> Result<Vec<Value>, Answer> {
    let ans = api(
        state,
        session,
        Op::ListMappings,
        Method::GET,
        &format!("/api/account/{}/configuration/ac-common/mtls", enc(account)),
        &[("accountId", account)],
        None,
        Bytes::new(),
    )
    .await;
    match &ans.json {
        Value::Array(list) if ans.ok() => Ok(list
            .iter()
            .filter(|m| m["deleted"] != Value::Bool(true))
            .cloned()
            .collect()),
        _ => Err(ans),
    }
}

/// The console's page of one certificate.
pub(crate) fn certificate_url(account: &str, id: &str) -> String {
    format!("/console/a/{}/certificates/{}", enc(account), enc(id))
}

/// An RFC 3339 time (the API's dates) as unix seconds.
pub(crate) fn unix_of(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|d| d.unix_timestamp())
}

/// Days from `now` to `t` (negative when past).
pub(crate) fn days_left(t: i64, now: i64) -> i64 {
    (t - now).div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_token_depends_on_the_session_token() {
        let a = Session::csrf_of("a.b.c");
        assert_eq!(a, Session::csrf_of("a.b.c"));
        assert_ne!(a, Session::csrf_of("a.b.d"));
        assert!(!a.contains("a.b.c"));
    }

    #[test]
    fn origin_checks() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8081"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9999"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mtls_console=x.y.z; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("x.y.z"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
