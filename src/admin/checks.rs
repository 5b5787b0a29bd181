//! Mapping checks, answered from this replica's runtime snapshot (what the proxy would do now),
//! not from the store.
//!
//! A triplet "exists" when an enabled mapping matches it the way the proxy matches: same
//! account, same service (case-insensitive), the URL normalised, exact match first, then the
//! longest `*` prefix. An unknown service or a URL that does not parse simply does not exist.
//!
//! The answers in object form (v2, the account check) also say when an existing triplet leads
//! to a certificate that may not work: a `certificate` object with its `state`, `stateReason`
//! and `warnings` (see [`super::certificates::state_of`]), only then, so answers about good
//! certificates are LivePerson's shape exactly. The v1 and legacy maps stay booleans.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::certificates::state_of;
use super::error::ApiError;
use super::input::{self, Obj};
use super::{json, Call};
use crate::snapshot::{normalize_url, Snapshot};

/// The certificate id of the enabled mapping the proxy would use for the triplet.
fn mapped(snap: &Snapshot, account: &str, service: &str, url: &str) -> Option<u64> {
    let u = normalize_url(url.trim())?;
    snap.lookup(account, &service.trim().to_ascii_uppercase(), &u)
        .map(|(t, _)| t.certificate_id)
}

fn exists(snap: &Snapshot, account: &str, service: &str, url: &str) -> bool {
    mapped(snap, account, service, url).is_some()
}

/// Adds `exist`-style `key` and, when the triplet's certificate is not `available` or has
/// warnings, `certificate: {id, state, stateReason?, warnings?}` (`id` a numeric string, like a
/// mapping's `certificationId`).
fn answer(snap: &Snapshot, t: &Triplet, mut out: Map<String, Value>, key: &str, now: i64) -> Value {
    let cert = mapped(snap, &t.account, &t.service, &t.url);
    out.insert(key.into(), json!(cert.is_some()));
    if let Some(id) = cert {
        let st = state_of(snap, &t.account, id, None, None, now);
        if !st.is_clean() {
            let mut c = Map::new();
            c.insert("id".into(), json!(id.to_string()));
            st.add_to(&mut c);
            out.insert("certificate".into(), Value::Object(c));
        }
    }
    Value::Object(out)
}

/// A string field, also accepting a number (account ids are sometimes sent as numbers).
fn text(o: &Obj<'_>, key: &str, hint: &str) -> Result<String, ApiError> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(ApiError::invalid_type(&o.name(key), "a string")),
        None => Err(ApiError::missing(&o.name(key), hint)),
    }
}

/// The key LivePerson's v1 answer uses: Java's `toString` of the triplet, spelling included.
fn v1_key(service: &str, account: &str, url: &str) -> String {
    format!("CertificateMappingParamters{{serviceName='{service}', accountId='{account}', url='{url}'}}")
}

struct Triplet {
    service: String,
    account: String,
    url: String,
}

fn triplets(call: &Call, account_from_path: bool) -> Result<Vec<Triplet>, ApiError> {
    let v = input::parse_json(&call.body)?;
    let objs = input::items(&v, call.cfg().admin.max_items, false)?;
    objs.iter()
        .map(|o| {
            let service = text(o, "serviceName", "send the service name, e.g. IDP")?;
            let url = text(o, "url", "send the full URL, query included")?;
            let account = if account_from_path {
                match o.get("accountId") {
                    None => call.account.clone(),
                    Some(_) => {
                        let a = text(o, "accountId", "")?;
                        if a != call.account {
                            return Err(ApiError::bad(
                                "site_mismatch",
                                o.name("accountId"),
                                format!(
                                    "{} is {a:?} but the path's account is {}; leave it out or make them equal",
                                    o.name("accountId"),
                                    call.account
                                ),
                            ));
                        }
                        a
                    }
                }
            } else {
                text(o, "accountId", "send the account (LP site id) of the triplet")?
            };
            Ok(Triplet {
                service,
                account,
                url,
            })
        })
        .collect()
}

fn v1(snap: &Snapshot, ts: &[Triplet]) -> Value {
    let mut m = Map::new();
    for t in ts {
        m.insert(
            v1_key(&t.service, &t.account, &t.url),
            json!(exists(snap, &t.account, &t.service, &t.url)),
        );
    }
    Value::Object(m)
}

/// `POST /mtls/mapping?v=1|2`: the global check. The identity must be an internal app key or
/// be scoped to every account it asks about.
pub async fn global(call: &Call) -> Result<Response, ApiError> {
    let version = match call.query("v").as_deref().map(str::trim) {
        None | Some("") | Some("1") | Some("1.0") => 1,
        Some("2") | Some("2.0") => 2,
        Some(_) => {
            return Err(ApiError::bad(
                "invalid_value",
                "v",
                "v must be 1 (a map keyed by the triplet) or 2 (a list with doExist)",
            ))
        }
    };
    let ts = triplets(call, false)?;
    if !call.identity.internal {
        if let Some(t) = ts.iter().find(|t| !call.identity.may_access(&t.account)) {
            return Err(ApiError::forbidden(format!(
                "{} may not check account {}; the global mapping check needs an internal app key or one scoped to every account asked about",
                call.identity.subject, t.account
            )));
        }
    }
    call.ensure_snapshot().await;
    let snap = call.state.refresher.snapshot().load();
    let out = if version == 1 {
        v1(&snap, &ts)
    } else {
        Value::Array(
            ts.iter()
                .map(|t| {
                    let mut m = Map::new();
                    m.insert("serviceName".into(), json!(t.service));
                    m.insert("accountId".into(), json!(t.account));
                    m.insert("url".into(), json!(t.url));
                    answer(&snap, t, m, "doExist", call.now)
                })
                .collect(),
        )
    };
    Ok(json(StatusCode::OK, out))
}

/// `POST /api/account/{accountId}/checks/serviceUrlMappings`.
pub async fn account(call: &Call) -> Result<Response, ApiError> {
    let ts = triplets(call, true)?;
    call.ensure_snapshot().await;
    let snap = call.state.refresher.snapshot().load();
    Ok(json(
        StatusCode::OK,
        Value::Array(
            ts.iter()
                .map(|t| {
                    let mut m = Map::new();
                    m.insert("serviceName".into(), json!(t.service));
                    m.insert("url".into(), json!(t.url));
                    answer(&snap, t, m, "exist", call.now)
                })
                .collect(),
        ),
    ))
}

/// Legacy `GET /mtls/mapping/account/{accountId}` with `LP-service-name` and `LP-forward-url`.
pub async fn legacy_get(call: &Call) -> Result<Response, ApiError> {
    let service = call.header("lp-service-name").ok_or_else(|| {
        ApiError::missing("LP-service-name", "send the service name header, e.g. IDP")
    })?;
    let url = call.header("lp-forward-url").ok_or_else(|| {
        ApiError::missing("LP-forward-url", "send the URL header, query included")
    })?;
    call.ensure_snapshot().await;
    let snap = call.state.refresher.snapshot().load();
    let t = Triplet {
        service: service.to_string(),
        account: call.account.clone(),
        url: url.to_string(),
    };
    Ok(json(StatusCode::OK, v1(&snap, &[t])))
}

/// Legacy `POST /mtls/mapping/account/{accountId}` with an array of triplets: the v1 map.
pub async fn legacy_post(call: &Call) -> Result<Response, ApiError> {
    let ts = triplets(call, true)?;
    call.ensure_snapshot().await;
    let snap = call.state.refresher.snapshot().load();
    Ok(json(StatusCode::OK, v1(&snap, &ts)))
}
