//! Mappings (LivePerson's ac-common `mtls` objects): list, get, create, update, delete, and
//! activate (map a certificate to a (service, url), optionally after a real mTLS call made with
//! [`crate::upstream::call`] through the proxy's resolver and TLS connector), and test (that same
//! call for a stored mapping, answered with its outcome; [`probe`] is the one call both make).
//!
//! All mappings of an account are one store document, written with compare-and-set: read, change,
//! write if nobody wrote in between, else retry (a few times, then 409 `concurrent_write`).
//! A mapping must point at a certificate of the same account; a name and a triplet (account,
//! service, normalised url) are unique among the account's live mappings.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{self, Obj};
use super::{certificates, json, Call, WRITE_LOCK};
use crate::config::Config;
use crate::snapshot::UrlPattern;
use crate::store::{Mapping, MappingDocument, StoreError};
use crate::upstream::call::{self as upstream_call, CallError, CallSpec};

/// Compare-and-set attempts before giving up with 409.
const CAS_ATTEMPTS: usize = 5;
/// Longest mapping URL accepted.
const MAX_URL: usize = 4096;

/// Reads the account's mapping document, applies `f`, writes it back if it changed
/// (compare-and-set, retried on a concurrent write). `f` may run more than once.
pub(crate) async fn modify<T>(
    call: &Call,
    mut f: impl FnMut(&mut MappingDocument) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let store = call.state.refresher.store();
    for _ in 0..CAS_ATTEMPTS {
        let cur = store.get_mappings(&call.account).await?;
        let mut doc = cur.value.clone();
        let out = f(&mut doc)?;
        if doc == cur.value {
            return Ok(out);
        }
        match store
            .put_mappings(&call.account, &doc, Some(&cur.version))
            .await
        {
            Ok(_) => return Ok(out),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::store(StoreError::Conflict(format!(
        "mappings of account {}",
        call.account
    ))))
}

/// The ac-common object for a stored mapping.
pub fn mapping_json(m: &Mapping, cfg: &Config) -> Value {
    let mut v = json!({
        "id": m.id,
        "deleted": m.deleted,
        "certificationId": m.certificate_id.to_string(),
        "serviceId": cfg.services.get(&m.service_name.to_ascii_uppercase()).map(|i| i.to_string()),
        "serviceName": m.service_name,
        "enable": m.enabled,
        "url": m.url,
        "siteId": m.account_id,
        "name": m.name,
    });
    if let Some(c) = m.cutover_check {
        v["cutoverCheck"] = json!(c);
    }
    v
}

/// The fields of a mapping object, each validated; absent ones are `None`.
#[derive(Debug, Default)]
struct MappingInput {
    certificate_id: Option<u64>,
    service: Option<String>,
    url: Option<String>,
    name: Option<String>,
    enable: Option<bool>,
    deleted: Option<bool>,
    /// Prove a new certificate version against this target before it serves.
    cutover_check: Option<bool>,
}

/// The service from `serviceName` and/or `serviceId`, checked against `services`.
fn service(obj: &Obj<'_>, cfg: &Config) -> Result<Option<String>, ApiError> {
    let known = || {
        cfg.services
            .iter()
            .map(|(n, i)| format!("{n} ({i})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let by_name = match obj.str_opt("serviceName")? {
        None => None,
        Some(n) => {
            let upper = n.trim().to_ascii_uppercase();
            if !cfg.services.contains_key(&upper) {
                return Err(ApiError::bad(
                    "unknown_service",
                    obj.name("serviceName"),
                    format!(
                        "{} {n:?} is not a known service; use one of {} (services.extra adds more)",
                        obj.name("serviceName"),
                        known()
                    ),
                ));
            }
            Some(upper)
        }
    };
    let by_id = match obj.id_opt("serviceId")? {
        None => None,
        Some(id) => match cfg.services.iter().find(|(_, i)| u64::from(**i) == id) {
            Some((n, _)) => Some(n.clone()),
            None => {
                return Err(ApiError::bad(
                    "unknown_service",
                    obj.name("serviceId"),
                    format!(
                    "{} {id} is not a known service id; use one of {} (services.extra adds more)",
                    obj.name("serviceId"),
                    known()
                ),
                ))
            }
        },
    };
    match (by_name, by_id) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad(
            "service_mismatch",
            obj.name("serviceId"),
            format!(
                "{} names {b} but serviceName names {a}; send one of them, or two that agree",
                obj.name("serviceId")
            ),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// A mapping URL: an absolute http(s) URL, optionally ending in `*` (prefix mapping).
pub(crate) fn check_url(url: &str, field: &str) -> Result<String, ApiError> {
    let base = url.strip_suffix('*').unwrap_or(url);
    if let Err(why) = crate::snapshot::normalize_url_checked(base) {
        if url.len() <= MAX_URL && url.contains("://") {
            return Err(ApiError::bad(
                "invalid_url",
                field,
                format!("{field} is not usable: {why}; send an absolute https URL, e.g. https://api.example.com/path (a trailing * maps every URL with that prefix)"),
            ));
        }
    }
    if url.len() > MAX_URL || UrlPattern::parse(url).is_none() {
        return Err(ApiError::bad(
            "invalid_url",
            field,
            format!(
                "{field} must be an absolute https URL with a host (no user@), at most {MAX_URL} characters, e.g. https://api.example.com/path (a trailing * maps every URL with that prefix)"
            ),
        ));
    }
    Ok(url.to_string())
}

fn parse(obj: &Obj<'_>, call: &Call) -> Result<MappingInput, ApiError> {
    if let Some(site) = obj.get("siteId") {
        let s = match site {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::invalid_type(
                    &obj.name("siteId"),
                    "a string (the account id)",
                ))
            }
        };
        if s != call.account {
            return Err(ApiError::bad(
                "site_mismatch",
                obj.name("siteId"),
                format!(
                    "{} is {s:?} but the path's account is {}; leave siteId out or make them equal",
                    obj.name("siteId"),
                    call.account
                ),
            ));
        }
    }
    let name = match obj.str_opt("name")? {
        None => None,
        Some(n) => {
            let t = n.trim();
            if t.is_empty()
                || t.chars().count() > certificates::MAX_NAME
                || t.chars().any(char::is_control)
            {
                return Err(ApiError::bad(
                    "invalid_value",
                    obj.name("name"),
                    format!(
                        "{} must be 1-{} characters without control characters",
                        obj.name("name"),
                        certificates::MAX_NAME
                    ),
                ));
            }
            Some(t.to_string())
        }
    };
    Ok(MappingInput {
        certificate_id: obj.id_opt("certificationId")?,
        service: service(obj, call.cfg())?,
        url: obj
            .str_opt("url")?
            .map(|u| check_url(u.trim(), &obj.name("url")))
            .transpose()?,
        name,
        enable: obj.bool_opt("enable")?,
        deleted: obj.bool_opt("deleted")?,
        cutover_check: obj.bool_opt("cutoverCheck")?,
    })
}

fn same_target(a: &Mapping, b: &Mapping) -> bool {
    a.service_name.eq_ignore_ascii_case(&b.service_name)
        && UrlPattern::parse(&a.url).is_some()
        && UrlPattern::parse(&a.url) == UrlPattern::parse(&b.url)
}

/// 409 when `m` clashes by name or triplet with a live mapping in `others` (itself excluded).
fn clash(m: &Mapping, others: &[Mapping], field_prefix: &str) -> Result<(), ApiError> {
    if m.deleted {
        return Ok(());
    }
    let f = |k: &str| {
        if field_prefix.is_empty() {
            k.to_string()
        } else {
            format!("{field_prefix}.{k}")
        }
    };
    for o in others.iter().filter(|o| !o.deleted && o.id != m.id) {
        if o.name == m.name {
            return Err(ApiError::conflict(
                "duplicate_name",
                &f("name"),
                format!(
                    "account {} already has a mapping named {:?} (id {}); mapping names are unique per account",
                    m.account_id, m.name, o.id
                ),
            ));
        }
        if same_target(o, m) {
            return Err(ApiError::conflict(
                "duplicate_mapping",
                &f("url"),
                format!(
                    "account {} already maps service {} and url {} (mapping {}, {:?}, certificate {}); each (account, service, url) has one certificate: update that mapping instead",
                    m.account_id, o.service_name, o.url, o.id, o.name, o.certificate_id
                ),
            ));
        }
    }
    Ok(())
}

/// 400 unless every certificate id exists in the account.
async fn certificates_exist(call: &Call, refs: &[(String, u64)]) -> Result<(), ApiError> {
    let store = call.state.refresher.store();
    for (field, id) in refs {
        match store.get_certificate(&call.account, *id).await? {
            Some(v) if !v.value.meta.deleted => {}
            _ => {
                return Err(ApiError::bad(
                    "unknown_certificate",
                    field,
                    format!(
                        "{field}: account {} has no certificate {id}; create it first (POST /mtls/account/{}/certificates) and use the id it returns",
                        call.account, call.account
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn generated_name(service: &str, url: &str, taken: &[Mapping]) -> String {
    let base: String = format!("{service} {url}")
        .chars()
        .take(certificates::MAX_NAME - 8)
        .collect();
    let free = |n: &str| !taken.iter().any(|m| !m.deleted && m.name == n);
    if free(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base} ({i})"))
        .find(|n| free(n))
        .unwrap_or(base)
}

pub async fn list(call: &Call) -> Result<Response, ApiError> {
    let doc = call
        .state
        .refresher
        .store()
        .get_mappings(&call.account)
        .await?;
    let out: Vec<Value> = doc
        .value
        .mappings
        .iter()
        .map(|m| mapping_json(m, call.cfg()))
        .collect();
    Ok(json(StatusCode::OK, Value::Array(out)))
}

fn not_found(call: &Call, id: u64) -> ApiError {
    ApiError::not_found(
        "mapping_not_found",
        "mappingId",
        format!("account {} has no mapping {id}", call.account),
    )
}

pub async fn get(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("mappingId"), "mappingId")?;
    let doc = call
        .state
        .refresher
        .store()
        .get_mappings(&call.account)
        .await?;
    let m = doc
        .value
        .mappings
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| not_found(call, id))?;
    Ok(json(StatusCode::OK, mapping_json(m, call.cfg())))
}

pub async fn create(call: &Call) -> Result<Response, ApiError> {
    let v = input::parse_json(&call.body)?;
    let objs = input::items(&v, call.cfg().admin.max_items, true)?;
    let mut new = Vec::with_capacity(objs.len());
    let mut refs = Vec::new();
    for o in &objs {
        let m = parse(o, call)?;
        let certificate_id = m.certificate_id.ok_or_else(|| {
            ApiError::missing(
                &o.name("certificationId"),
                "send the id of the certificate to use",
            )
        })?;
        let service = m.service.ok_or_else(|| {
            ApiError::missing(
                &o.name("serviceName"),
                "send serviceName (e.g. IDP) or serviceId (e.g. \"1\")",
            )
        })?;
        let url = m.url.ok_or_else(|| {
            ApiError::missing(&o.name("url"), "send the URL the runtime will call")
        })?;
        refs.push((o.name("certificationId"), certificate_id));
        new.push((
            o.path.clone(),
            m.name,
            Mapping {
                id: crate::store::new_id(),
                account_id: call.account.clone(),
                name: String::new(),
                service_name: service,
                url,
                certificate_id,
                enabled: m.enable.unwrap_or(true),
                deleted: m.deleted.unwrap_or(false),
                cutover_check: m.cutover_check,
            },
        ));
    }
    let _guard = WRITE_LOCK.lock().await;
    certificates_exist(call, &refs).await?;
    let created = modify(call, |doc| {
        let mut added: Vec<Mapping> = Vec::new();
        for (path, name, m) in &new {
            let mut m = m.clone();
            let all: Vec<Mapping> = doc.mappings.iter().chain(added.iter()).cloned().collect();
            m.name = match name {
                Some(n) => n.clone(),
                None => generated_name(&m.service_name, &m.url, &all),
            };
            clash(&m, &all, path)?;
            added.push(m);
        }
        doc.mappings.extend(added.iter().cloned());
        Ok(added)
    })
    .await?;
    for m in &created {
        call.audit(
            "create",
            "mapping",
            m.id,
            json!({"name": m.name, "serviceName": m.service_name, "url": m.url, "certificateId": m.certificate_id}),
        );
    }
    call.refresh().await;
    Ok(json(
        StatusCode::CREATED,
        Value::Array(
            created
                .iter()
                .map(|m| mapping_json(m, call.cfg()))
                .collect(),
        ),
    ))
}

pub async fn update(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("mappingId"), "mappingId")?;
    let v = input::parse_json(&call.body)?;
    let objs = input::items(&v, 1, true)?;
    let o = &objs[0];
    if let Some(body_id) = o.id_opt("id")? {
        if body_id != id {
            return Err(ApiError::bad(
                "id_mismatch",
                o.name("id"),
                format!(
                    "{} is {body_id} but the path says {id}; send the same id or leave it out",
                    o.name("id")
                ),
            ));
        }
    }
    let change = parse(o, call)?;
    let _guard = WRITE_LOCK.lock().await;
    if let Some(c) = change.certificate_id {
        certificates_exist(call, &[(o.name("certificationId"), c)]).await?;
    }
    let updated = modify(call, |doc| {
        let i = doc
            .mappings
            .iter()
            .position(|m| m.id == id)
            .ok_or_else(|| not_found(call, id))?;
        let mut m = doc.mappings[i].clone();
        if let Some(c) = change.certificate_id {
            m.certificate_id = c;
        }
        if let Some(s) = &change.service {
            m.service_name = s.clone();
        }
        if let Some(u) = &change.url {
            m.url = u.clone();
        }
        if let Some(n) = &change.name {
            m.name = n.clone();
        }
        if let Some(e) = change.enable {
            m.enabled = e;
        }
        if let Some(d) = change.deleted {
            m.deleted = d;
        }
        if let Some(c) = change.cutover_check {
            m.cutover_check = Some(c);
        }
        clash(&m, &doc.mappings, &o.path)?;
        doc.mappings[i] = m.clone();
        Ok(m)
    })
    .await?;
    call.audit(
        "update",
        "mapping",
        updated.id,
        json!({"name": updated.name, "serviceName": updated.service_name, "url": updated.url, "certificateId": updated.certificate_id, "enable": updated.enabled}),
    );
    call.refresh().await;
    Ok(json(StatusCode::OK, mapping_json(&updated, call.cfg())))
}

pub async fn delete(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("mappingId"), "mappingId")?;
    let _guard = WRITE_LOCK.lock().await;
    let removed = modify(call, |doc| {
        let i = doc
            .mappings
            .iter()
            .position(|m| m.id == id)
            .ok_or_else(|| not_found(call, id))?;
        Ok(doc.mappings.remove(i))
    })
    .await?;
    call.audit("delete", "mapping", id, json!({"name": removed.name}));
    call.refresh().await;
    let mut out = removed;
    out.deleted = true;
    Ok(json(StatusCode::OK, mapping_json(&out, call.cfg())))
}

/// The outcome of one real mTLS call made with a certificate ([`probe`]).
pub(crate) struct Probe {
    /// The URL called: the mapping URL, or the prefix of a `*` URL.
    pub target: String,
    /// The serial (upper-case hex) of the certificate presented.
    pub serial: String,
    pub elapsed: std::time::Duration,
    pub result: Result<upstream_call::CallResult, CallError>,
}

/// A real mTLS `GET` (head only) to `url` (a prefix mapping: its prefix) presenting certificate
/// `cert_id`, through the proxy's resolver and TLS connector, within
/// `admin.validate_timeout_ms`: the activate validation and the mapping test. 422
/// `certificate_unusable` when the stored file does not open; the call's own failure is in
/// [`Probe::result`] (any HTTP answer is a completed handshake).
pub(crate) async fn probe(
    call: &Call,
    cert_id: u64,
    cert: &crate::store::StoredCertificate,
    url: &str,
) -> Result<Probe, ApiError> {
    let (p12, password) = (cert.secret.p12.clone(), cert.secret.password.clone());
    let decoded = call
        .state
        .refresher
        .decoder()
        .decode(p12, password)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "certificate_unusable",
                format!("certificate {cert_id} cannot be opened ({e}); upload it again"),
            )
            .field("certificateId")
        })?;
    let target = url.strip_suffix('*').unwrap_or(url).to_string();
    let spec = CallSpec {
        method: "GET".into(),
        url: target.clone(),
        headers: Vec::new(),
        body: Vec::new(),
        head_only: true,
    };
    let started = std::time::Instant::now();
    let result = upstream_call::call(
        &call.state.tls,
        &call.state.resolver,
        &crate::p12::cert_key(&decoded),
        &spec,
        call.cfg().admin.validate_timeout,
    )
    .await;
    Ok(Probe {
        target,
        serial: decoded.serial_hex.clone(),
        elapsed: started.elapsed(),
        result,
    })
}

/// `POST /api/account/{accountId}/configuration/ac-common/mtls/{mappingId}/test` (body empty or
/// `{}`): the handshake the mapping would make, made now ([`probe`] with the mapping's
/// certificate and URL; a disabled mapping too). 200 with `outcome` `ok` (the target answered
/// HTTP, any status) or `failed` (connection, TLS or timeout failure, or a URL the call cannot
/// use, with `error`): a target's failure is not an error of this route.
pub async fn test(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("mappingId"), "mappingId")?;
    if !call.body.iter().all(u8::is_ascii_whitespace) {
        let v = input::parse_json(&call.body)?;
        Obj::new(&v, "")?;
    }
    let doc = call
        .state
        .refresher
        .store()
        .get_mappings(&call.account)
        .await?;
    let m = doc
        .value
        .mappings
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .ok_or_else(|| not_found(call, id))?;
    let cert = certificates::load(call, m.certificate_id, "certificationId").await?;
    let probe = probe(call, m.certificate_id, &cert, &m.url).await?;
    let (outcome, status, error) = match &probe.result {
        Ok(r) => ("ok", Some(r.status), None),
        Err(CallError::BadRequest(msg)) => ("failed", None, Some(format!("url: {msg}"))),
        Err(CallError::Transport(msg)) => ("failed", None, Some(msg.clone())),
    };
    let elapsed_ms = u64::try_from(probe.elapsed.as_millis()).unwrap_or(u64::MAX);
    call.audit(
        "test",
        "mapping",
        m.id,
        json!({"name": m.name, "url": probe.target, "certificateId": m.certificate_id,
               "serial": probe.serial, "outcome": outcome, "status": status}),
    );
    Ok(json(
        StatusCode::OK,
        json!({
            "mappingId": m.id.to_string(),
            "url": probe.target,
            "certificateId": m.certificate_id.to_string(),
            "outcome": outcome,
            "status": status,
            "serial": probe.serial,
            "elapsedMs": elapsed_ms,
            "error": error,
        }),
    ))
}

/// `POST /mtls/account/{accountId}/certificates/activate/{certificateId}` with
/// `{serviceName, url}`: creates the mapping for that triplet, or re-points the existing one to
/// this certificate. With `isValidateUrlEnabled=true` (query or body) a real mTLS GET to the URL
/// with this certificate must succeed first (any HTTP answer counts; a connection, TLS or
/// timeout failure is 424 with LivePerson's transport headers and nothing is saved).
pub async fn activate(call: &Call) -> Result<Response, ApiError> {
    let cert_id = input::id_param(call.param("certificateId"), "certificateId")?;
    let v = input::parse_json(&call.body)?;
    let o = Obj::new(&v, "")?;
    let m = parse(&o, call)?;
    let service = m.service.ok_or_else(|| {
        ApiError::missing("serviceName", "send serviceName (e.g. IDP) or serviceId")
    })?;
    let url = m
        .url
        .ok_or_else(|| ApiError::missing("url", "send the URL the runtime will call"))?;
    let validate = match call.query("isValidateUrlEnabled") {
        Some(q) => match q.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" | "" => false,
            _ => {
                return Err(ApiError::invalid_type(
                    "isValidateUrlEnabled",
                    "true or false",
                ))
            }
        },
        None => o.bool_opt("isValidateUrlEnabled")?.unwrap_or(false),
    };

    let cert = certificates::load(call, cert_id, "certificateId").await?;
    if validate {
        let probe = probe(call, cert_id, &cert, &url).await?;
        match probe.result {
            Ok(r) => log::info!(
                "admin: activate validation of certificate {}/{cert_id} against {}: HTTP {}",
                call.account,
                probe.target,
                r.status
            ),
            Err(CallError::BadRequest(msg)) => {
                return Err(ApiError::bad("invalid_url", "url", format!("url: {msg}")))
            }
            Err(CallError::Transport(msg)) => return Err(transport_error(&probe.target, &msg)),
        }
    }

    let _guard = WRITE_LOCK.lock().await;
    certificates_exist(call, &[("certificateId".into(), cert_id)]).await?;
    let (mapping, created) = modify(call, |doc| {
        let probe = Mapping {
            id: 0,
            account_id: call.account.clone(),
            name: String::new(),
            service_name: service.clone(),
            url: url.clone(),
            certificate_id: cert_id,
            enabled: true,
            deleted: false,
            cutover_check: None,
        };
        if let Some(existing) = doc
            .mappings
            .iter_mut()
            .find(|e| !e.deleted && same_target(e, &probe))
        {
            existing.certificate_id = cert_id;
            existing.enabled = true;
            return Ok((existing.clone(), false));
        }
        let mut m = probe;
        m.id = crate::store::new_id();
        m.name = match &m_name(&o)? {
            Some(n) => n.clone(),
            None => generated_name(&service, &url, &doc.mappings),
        };
        clash(&m, &doc.mappings, "")?;
        doc.mappings.push(m.clone());
        Ok((m, true))
    })
    .await?;
    call.audit(
        if created { "create" } else { "update" },
        "mapping",
        mapping.id,
        json!({"name": mapping.name, "serviceName": mapping.service_name, "url": mapping.url, "certificateId": cert_id, "via": "activate", "validated": validate}),
    );
    call.refresh().await;
    Ok(json(
        StatusCode::CREATED,
        mapping_json(&mapping, call.cfg()),
    ))
}

fn m_name(o: &Obj<'_>) -> Result<Option<String>, ApiError> {
    Ok(o.str_opt("name")?
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty()))
}

/// LivePerson's 424: the target failed; `LP-message-from-transport` carries the URL and
/// `LP-error-from-transport` the error.
pub(crate) fn transport_error(url: &str, msg: &str) -> ApiError {
    ApiError::new(
        StatusCode::FAILED_DEPENDENCY,
        "upstream_failed",
        format!("the call to {url} with this certificate failed: {msg}; nothing was saved"),
    )
    .field("url")
    .header("lp-message-from-transport", url.to_string())
    .header("lp-error-from-transport", msg.to_string())
}
