//! The P12 tester: `POST /mtls/account/{accountId}/p12-test/multipart`, parts `file` and
//! `password` (and optional `body`). Nothing is stored and nothing about the file is logged.
//!
//! The answer is the [`crate::p12::Report`] (every check with its verdict and reason): 200 when
//! the file is usable, 422 `p12_unusable` otherwise (LivePerson answers a bare 500; see
//! `docs/admin-api.md`). With an `LP-forward-url` header and a usable file, a real call is made
//! to that URL with the file's certificate (`LP-method-override`, default GET, or POST when a
//! `body` part is sent; `LP-content-type-override`; `LP-authorization-override`) and its result
//! is added as `call`; a target that cannot be reached is 424 with LivePerson's transport
//! headers. The call is [`crate::upstream::call`], through the proxy's resolver and TLS connector
//! (`AdminState::tls`, `AdminState::resolver`): the same trust and TLS set-up as proxied traffic.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::error::ApiError;
use super::input;
use super::mappings::transport_error;
use super::{json, Call};
use crate::p12::KeyPolicy;
use crate::upstream::call::{self as upstream_call, CallError, CallSpec};

/// What the tester accepts as a client key: `admin.rsa_min_bits`, `admin.ec_curves` and the
/// shared decoder's iteration cap. The certificate writes check files with the same policy.
pub(crate) fn key_policy(call: &Call) -> KeyPolicy {
    KeyPolicy {
        rsa_min_bits: call.cfg().admin.rsa_min_bits,
        ec_curves: call.cfg().admin.ec_curves.clone(),
        max_iterations: call.state.refresher.decoder().max_iterations(),
    }
}

pub async fn run(call: &Call) -> Result<Response, ApiError> {
    let form = input::multipart(&call.parts, call.body.clone()).await?;
    let max = call.cfg().admin.max_upload_bytes;
    let file = match form.get("file") {
        Some(b) if b.len() > max => return Err(ApiError::too_large("file", max)),
        Some(b) => b.to_vec(),
        None => {
            return Err(ApiError::missing(
                "file",
                "attach the .p12/.pfx file as the multipart part named file",
            ))
        }
    };
    let password = form
        .text("password")?
        .ok_or_else(|| {
            ApiError::missing(
                "password",
                "add a text part named password (empty for a file without one)",
            )
        })?
        .to_string();
    let body = form.get("body").map(|b| b.to_vec()).unwrap_or_default();
    let forward = call
        .header("lp-forward-url")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string);

    let decoder = call.state.refresher.decoder().clone();
    let policy = key_policy(call);
    let now = call.now;
    let (der, pw) = (file.clone(), password.clone());
    // The report checks the iteration cap before opening the file; a file over it is refused
    // here without taking a decode slot.
    let report = if decoder.check(&der).is_err() {
        crate::p12::test_report(&der, &pw, now, &policy)
    } else {
        decoder
            .run(move || crate::p12::test_report(&der, &pw, now, &policy))
            .await
            .map_err(|e| ApiError::internal(&e.to_string()))?
    };
    let mut out = match serde_json::to_value(&report) {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::internal("the tester report did not serialise")),
    };

    if !report.usable {
        if forward.is_some() {
            out.insert(
                "call".into(),
                json!({"skipped": "the file is not usable, so no test call was made"}),
            );
        }
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "p12_unusable",
            format!(
                "the file is not usable: failed check(s) {}; see checks for the reasons",
                failed.join(", ")
            ),
        )
        .field("file")
        .extra(out));
    }

    if let Some(url) = forward {
        let decoded = decoder
            .decode(file, password)
            .await
            .map_err(|e| ApiError::internal(&format!("a usable file did not decode: {e}")))?;
        let method = call
            .header("lp-method-override")
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| if body.is_empty() { "GET" } else { "POST" }.to_string());
        let mut headers = Vec::new();
        if let Some(ct) = call.header("lp-content-type-override") {
            headers.push(("Content-Type".to_string(), ct.to_string()));
        }
        if let Some(a) = call.header("lp-authorization-override") {
            headers.push(("Authorization".to_string(), a.to_string()));
        }
        let spec = CallSpec {
            method: method.clone(),
            url: url.clone(),
            headers,
            body,
            head_only: false,
        };
        match upstream_call::call(
            &call.state.tls,
            &call.state.resolver,
            &crate::p12::cert_key(&decoded),
            &spec,
            call.cfg().admin.validate_timeout,
        )
        .await
        {
            Ok(r) => {
                out.insert(
                    "call".into(),
                    json!({
                        "url": url,
                        "method": method,
                        "status": r.status,
                        "headers": r.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                        "body": r.body,
                        "truncated": r.truncated,
                    }),
                );
            }
            Err(CallError::BadRequest(msg)) => {
                return Err(ApiError::bad(
                    "invalid_value",
                    "LP-forward-url",
                    format!("LP-forward-url / LP-method-override: {msg}"),
                ))
            }
            Err(CallError::Transport(msg)) => {
                out.insert(
                    "call".into(),
                    json!({"url": url, "method": method, "error": msg}),
                );
                return Err(transport_error(&url, &msg).extra(out));
            }
        }
    }
    Ok(json(StatusCode::OK, Value::Object(out)))
}
