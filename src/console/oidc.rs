//! Sign-in through an OpenID Connect provider (`admin.console.oidc`): the authorization code
//! flow with PKCE (RFC 7636, S256), `state` and `nonce`.
//!
//! 1. `GET /console/oidc/start`: reads the provider's discovery document (cached for an hour),
//!    keeps a fresh `state`, `nonce` and PKCE verifier in a short-lived cookie
//!    (`mtls_console_oidc`: HttpOnly, `SameSite=Lax` so that it comes back on the provider's
//!    redirect, `Path=/console/oidc`, 10 minutes) and sends the browser to the provider.
//! 2. `GET /console/oidc/callback?code=..&state=..`: checks `state`, exchanges the code at the
//!    token endpoint (with the verifier, and the client secret if one is configured), takes the
//!    configured token (`id_token` by default, whose `nonce` must match), and verifies it exactly
//!    as the admin API verifies a Bearer token (`auth.jwt`): only a token the API would accept
//!    becomes a session. The answer is a small page that moves on to `/console/` by itself: the
//!    session cookie is `SameSite=Strict`, which a browser does not send on a redirect that began
//!    at another site, but does on the next navigation from this page.
//!
//! Nothing of the exchange (code, verifier, tokens) is logged or shown.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{cookie, login_form, session_cookie, token_claims};
use crate::admin::AdminState;
use crate::config::{OidcConfig, OidcToken};

/// The flow's cookie.
const FLOW_COOKIE: &str = "mtls_console_oidc";
/// How long a sign-in at the provider may take.
const FLOW_SECS: u64 = 600;
/// Deadline of each call to the provider.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a discovery document is used.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The largest answer read from the provider.
const MAX_ANSWER: usize = 1024 * 1024;

/// The endpoints of the provider's discovery document.
#[derive(Clone)]
struct Endpoints {
    authorization: url::Url,
    token: url::Url,
}

static DISCOVERED: parking_lot::Mutex<Option<(String, Endpoints, Instant)>> =
    parking_lot::Mutex::new(None);

fn client(cfg: &OidcConfig) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mtls-gateway-console/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = &cfg.ca_file {
        let pem = std::fs::read(p).map_err(|e| format!("cannot read {} ({e})", p.display()))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} holds no usable certificate ({e})", p.display()))?
        {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client ({e})"))
}

/// An endpoint URL of the discovery document: https, or http only when the issuer itself is
/// plain http on loopback (a test provider).
fn endpoint(doc: &Value, key: &str, issuer: &url::Url) -> Result<url::Url, String> {
    let raw = doc[key]
        .as_str()
        .ok_or_else(|| format!("the discovery document has no {key}"))?;
    let u = url::Url::parse(raw).map_err(|e| format!("{key} is not a URL ({e})"))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" if issuer.scheme() == "http" => Ok(u),
        _ => Err(format!("{key} is not https")),
    }
}

async fn discover(cfg: &OidcConfig) -> Result<Endpoints, String> {
    let issuer = cfg.issuer.as_str().trim_end_matches('/').to_string();
    if let Some((i, e, at)) = DISCOVERED.lock().as_ref() {
        if *i == issuer && at.elapsed() < DISCOVERY_TTL {
            return Ok(e.clone());
        }
    }
    let url = format!("{issuer}/.well-known/openid-configuration");
    let resp = client(cfg)?
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("the provider's discovery document could not be read ({e})"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "the provider answered {} for its discovery document",
            resp.status()
        ));
    }
    let body = read_limited(resp).await?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the discovery document is not JSON ({e})"))?;
    // OpenID Connect Discovery 1.0, 4.3: the issuer must be exactly the configured one.
    if doc["issuer"].as_str().map(|s| s.trim_end_matches('/')) != Some(issuer.as_str()) {
        return Err(
            "the discovery document names another issuer than admin.console.oidc.issuer".into(),
        );
    }
    let e = Endpoints {
        authorization: endpoint(&doc, "authorization_endpoint", &cfg.issuer)?,
        token: endpoint(&doc, "token_endpoint", &cfg.issuer)?,
    };
    *DISCOVERED.lock() = Some((issuer, e.clone(), Instant::now()));
    Ok(e)
}

async fn read_limited(resp: reqwest::Response) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err("the provider's answer is too large".into());
    }
    let b = resp
        .bytes()
        .await
        .map_err(|e| format!("the provider's answer could not be read ({e})"))?;
    if b.len() > MAX_ANSWER {
        return Err("the provider's answer is too large".into());
    }
    Ok(b.to_vec())
}

fn random_b64(n: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; n];
    if boring::rand::rand_bytes(&mut b).is_err() {
        // BoringSSL's RNG does not fail; if it ever did, refuse to continue rather than use zeros.
        return String::new();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn failed(state: &AdminState, status: StatusCode, why: &str) -> Response {
    log::warn!("console: single sign-on failed: {why}");
    login_form(
        state,
        status,
        Some(&format!(
            "Single sign-on did not complete: {why}. Try again, or paste a token."
        )),
    )
}

/// `GET /console/oidc/start`.
pub(super) async fn start(State(state): State<AdminState>) -> Response {
    let Some(cfg) = state.cfg.admin.console.oidc.as_ref() else {
        return failed(
            &state,
            StatusCode::NOT_FOUND,
            "single sign-on is not configured",
        );
    };
    let ep = match discover(cfg).await {
        Ok(e) => e,
        Err(e) => return failed(&state, StatusCode::BAD_GATEWAY, &e),
    };
    let (flow_state, nonce, verifier) = (random_b64(24), random_b64(24), random_b64(32));
    if flow_state.is_empty() || nonce.is_empty() || verifier.is_empty() {
        return failed(&state, StatusCode::INTERNAL_SERVER_ERROR, "no random bytes");
    }
    let challenge = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    };
    let mut to = ep.authorization.clone();
    to.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &cfg.client_id)
        .append_pair("redirect_uri", cfg.redirect_url.as_str())
        .append_pair("scope", &cfg.scopes.join(" "))
        .append_pair("state", &flow_state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut r = Redirect::to(to.as_str()).into_response();
    let c = format!(
        "{FLOW_COOKIE}={flow_state}.{nonce}.{verifier}; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age={FLOW_SECS}{}",
        if cfg.redirect_url.scheme() == "https" { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn clear_flow_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "mtls_console_oidc=; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age=0",
    )
}

fn eq_ct(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `GET /console/oidc/callback`.
pub(super) async fn callback(
    State(state): State<AdminState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let mut resp = finish(&state, &headers, &uri).await;
    resp.headers_mut()
        .append(header::SET_COOKIE, clear_flow_cookie());
    resp
}

async fn finish(state: &AdminState, headers: &HeaderMap, uri: &axum::http::Uri) -> Response {
    let Some(cfg) = state.cfg.admin.console.oidc.as_ref() else {
        return failed(
            state,
            StatusCode::NOT_FOUND,
            "single sign-on is not configured",
        );
    };
    let q: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(e) = param("error") {
        let e: String = e
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return failed(
            state,
            StatusCode::UNAUTHORIZED,
            &format!("the provider answered {e}"),
        );
    }
    let Some(flow) = cookie(headers, FLOW_COOKIE) else {
        return failed(
            state,
            StatusCode::BAD_REQUEST,
            "this sign-in was not started here, or took longer than 10 minutes",
        );
    };
    let mut parts = flow.splitn(3, '.');
    let (Some(flow_state), Some(nonce), Some(verifier)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return failed(
            state,
            StatusCode::BAD_REQUEST,
            "the sign-in cookie is damaged",
        );
    };
    if !param("state").is_some_and(|s| eq_ct(s, flow_state)) {
        return failed(
            state,
            StatusCode::BAD_REQUEST,
            "the answer does not belong to this sign-in (state)",
        );
    }
    let Some(code) = param("code").filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return failed(state, StatusCode::BAD_REQUEST, "the provider sent no code");
    };
    let ep = match discover(cfg).await {
        Ok(e) => e,
        Err(e) => return failed(state, StatusCode::BAD_GATEWAY, &e),
    };
    let client = match client(cfg) {
        Ok(c) => c,
        Err(e) => return failed(state, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", cfg.redirect_url.as_str()),
        ("code_verifier", verifier),
    ];
    let mut req = client.post(ep.token.clone());
    let secret;
    match &cfg.client_secret {
        Some(s) => {
            // RFC 6749 2.3.1: client_secret_basic, each part form-encoded.
            secret = String::from_utf8_lossy(s.expose()).into_owned();
            let enc =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&cfg.client_id), Some(enc(&secret)));
        }
        None => form.push(("client_id", cfg.client_id.as_str())),
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let resp = match req
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return failed(
                state,
                StatusCode::BAD_GATEWAY,
                &format!("the token endpoint could not be reached ({e})"),
            )
        }
    };
    let status = resp.status();
    let answer: Value = match read_limited(resp).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Err(e) => return failed(state, StatusCode::BAD_GATEWAY, &e),
    };
    if !status.is_success() {
        let e: String = answer["error"]
            .as_str()
            .unwrap_or("no error code")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return failed(
            state,
            StatusCode::BAD_GATEWAY,
            &format!("the token endpoint answered {status} ({e})"),
        );
    }
    let field = match cfg.token {
        OidcToken::IdToken => "id_token",
        OidcToken::AccessToken => "access_token",
    };
    let Some(token) = answer[field].as_str().map(str::to_string) else {
        return failed(
            state,
            StatusCode::BAD_GATEWAY,
            &format!("the token endpoint's answer has no {field}"),
        );
    };
    let Some(jwt) = state.cfg.auth.jwt.as_ref() else {
        return failed(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "auth.jwt is not configured",
        );
    };
    let identity = match jwt.verify(&token, crate::admin::unix_now()) {
        Ok(i) => i,
        Err(e) => {
            return failed(
                state,
                StatusCode::UNAUTHORIZED,
                &format!(
                    "the provider's {field} is not accepted by the admin API's auth.jwt ({e})"
                ),
            )
        }
    };
    if cfg.token == OidcToken::IdToken
        && !token_claims(&token)
            .and_then(|c| c["nonce"].as_str().map(|n| eq_ct(n, nonce)))
            .unwrap_or(false)
    {
        return failed(
            state,
            StatusCode::UNAUTHORIZED,
            "the id token's nonce does not match this sign-in",
        );
    }
    let Some(set_cookie) = session_cookie(state, headers, &token) else {
        return failed(
            state,
            StatusCode::BAD_REQUEST,
            "the token cannot be kept in a cookie",
        );
    };
    log::info!(target: "audit", "{}", serde_json::json!({"action": "console_sign_in", "subject": identity.subject, "method": "oidc"}));
    // A page, not a redirect: see the module's notes on SameSite=Strict.
    let page = super::layout::bare(
        "Signed in",
        html! {
            meta http-equiv="refresh" content="0;url=/console/";
            h1 { "Signed in" }
            p { "Signed in as " strong { (identity.subject) } ". " a href="/console/" id="continue" { "Continue to the console" } }
        },
    );
    let mut r = (StatusCode::OK, page).into_response();
    r.headers_mut().insert(header::SET_COOKIE, set_cookie);
    r
}
