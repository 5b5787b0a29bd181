//! Certificate lifecycle calls: a CSR whose key stays in the store, its completion with the
//! signed certificate, renewal (a new pending version, or at once from Vault PKI), and the
//! discarding of a pending version.
//!
//! - `POST .../certificates/csr`: a new entry. Without `pki`: the gateway generates the key,
//!   keeps it in the store, and answers with the CSR (state `awaiting_signature`). With `pki`:
//!   the entry's first version is signed by Vault at once and serves.
//! - `GET .../certificates/{id}/csr`: the pending version's CSR (never its key).
//! - `POST .../certificates/{id}/signed`: the signed certificate (and chain) for the pending
//!   key: checked against the key and the chain, packed as PKCS#12 by the gateway, proved by a
//!   handshake with the targets of mappings that ask for it, then put into service.
//! - `POST .../certificates/{id}/renew`: the next version. PKI-sourced: renewed now (the same
//!   path as the automatic renewal, lease included). Otherwise: a new key and CSR, while the
//!   current version keeps serving until the signed certificate is uploaded.
//! - `DELETE .../certificates/{id}/pending`: drops a pending version.
//!
//! No call returns or logs a private key or a PKCS#12 password.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::certificates::{self, check_name, entity_of};
use super::error::ApiError;
use super::input::{self, Obj};
use super::{json, Call, WRITE_LOCK};
use crate::lifecycle::engine::{self, Outcome};
use crate::lifecycle::{keys, pki};
use crate::store::{
    CertificateMeta, CertificateSecret, CutoverRefusal, KeyType, Lifecycle, PendingVersion,
    PkiSource, StoreError, StoredCertificate, SubjectSpec,
};

/// Most PEM text accepted for a signed certificate and its chain.
const MAX_PEM: usize = 64 * 1024;

fn strings(obj: &Obj<'_>, key: &str) -> Result<Vec<String>, ApiError> {
    match obj.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.trim().to_string()),
                _ => Err(ApiError::invalid_type(
                    &format!("{}[{i}]", obj.name(key)),
                    "a string",
                )),
            })
            .collect(),
        Some(Value::String(s)) => Ok(vec![s.trim().to_string()]),
        Some(_) => Err(ApiError::invalid_type(
            &obj.name(key),
            "an array of strings",
        )),
    }
}

fn opt_string(obj: &Obj<'_>, key: &str) -> Result<Option<String>, ApiError> {
    Ok(obj
        .str_opt(key)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string))
}

/// `subject` of a CSR request: `commonName` required, the rest optional.
fn subject(obj: &Obj<'_>) -> Result<SubjectSpec, ApiError> {
    let s = SubjectSpec {
        common_name: obj
            .str_req("commonName", "give the certificate's subject a commonName")?
            .trim()
            .to_string(),
        organization: opt_string(obj, "organization")?,
        organizational_unit: opt_string(obj, "organizationalUnit")?,
        country: opt_string(obj, "country")?,
        state: opt_string(obj, "state")?,
        locality: opt_string(obj, "locality")?,
        dns_names: strings(obj, "dnsNames")?,
        ip_addresses: strings(obj, "ipAddresses")?,
        emails: strings(obj, "emails")?,
        uris: strings(obj, "uris")?,
    };
    keys::validate_subject(&s).map_err(|(field, message)| {
        let field = format!("{}.{}", obj.path, field.trim_start_matches("subject."));
        ApiError::bad(
            "invalid_value",
            field.clone(),
            format!("{field}: {message}"),
        )
    })?;
    Ok(s)
}

fn key_type(obj: &Obj<'_>) -> Result<Option<KeyType>, ApiError> {
    match obj.str_opt("keyType")? {
        None => Ok(None),
        Some(k) => KeyType::parse(k).map(Some).ok_or_else(|| {
            ApiError::bad(
                "invalid_value",
                obj.name("keyType"),
                format!(
                    "{}: {k:?} is not offered; use EC-P256 (default), RSA-2048 or RSA-3072",
                    obj.name("keyType")
                ),
            )
        }),
    }
}

fn pki_source(obj: &Obj<'_>) -> Result<PkiSource, ApiError> {
    let src = PkiSource {
        mount: obj
            .str_req("mount", "name the Vault PKI mount, e.g. pki")?
            .trim()
            .to_string(),
        role: obj
            .str_req("role", "name the PKI role to sign with")?
            .trim()
            .to_string(),
        mode: opt_string(obj, "mode")?.unwrap_or_else(|| "sign".into()),
        ttl: opt_string(obj, "ttl")?,
    };
    pki::validate_source(&src).map_err(|(field, message)| {
        let field = obj.name(field.trim_start_matches("pki."));
        ApiError::bad(
            "invalid_value",
            field.clone(),
            format!("{field}: {message}"),
        )
    })?;
    Ok(src)
}

async fn generate(kt: KeyType, subject: &SubjectSpec) -> Result<keys::NewKey, ApiError> {
    let s = subject.clone();
    tokio::task::spawn_blocking(move || keys::generate(kt, &s))
        .await
        .map_err(|_| ApiError::internal("key generation"))?
        .map_err(|e| ApiError::bad("invalid_value", "subject", format!("subject: {e}")))
}

/// The lifecycle part of a certificate's entity (never the key, the CSR only by its own call).
pub fn lifecycle_view(doc: &StoredCertificate, due_at: Option<i64>) -> Option<Value> {
    let lc = doc.lifecycle.as_ref()?;
    // A plain upload whose lifecycle holds only the tester's warnings has nothing to show here
    // (the warnings are in the entity's own `warnings`).
    if lc.pki.is_none()
        && lc.pending.is_none()
        && lc.generation == 0
        && lc.cutover_refused.is_none()
    {
        return None;
    }
    let mut v = json!({
        "source": if lc.pki.is_some() { "vault-pki" } else if lc.generation > 0 || lc.pending.is_some() { "csr" } else { "upload" },
        "version": lc.generation,
        "keyType": lc.key_type.as_str(),
    });
    if let Some(p) = &lc.pki {
        v["pki"] = json!({"mount": p.mount, "role": p.role, "mode": p.mode, "ttl": p.ttl});
    }
    if let Some(s) = &lc.subject {
        v["subject"] = serde_json::to_value(s).unwrap_or(Value::Null);
    }
    if let Some(p) = &lc.pending {
        v["pending"] = json!({
            "reason": p.reason,
            "keyType": p.key_type.as_str(),
            "createdAt": engine::rfc3339(p.created_at),
        });
    }
    let r = &lc.renewal;
    if lc.pki.is_some() {
        v["renewal"] = json!({
            "renewAt": due_at.and_then(engine::rfc3339),
            "failures": r.failures,
            "lastError": r.last_error,
            "nextAttemptAt": (r.next_attempt_at > 0).then(|| engine::rfc3339(r.next_attempt_at)).flatten(),
            "lastRenewedAt": (r.last_renewed_at > 0).then(|| engine::rfc3339(r.last_renewed_at)).flatten(),
            "leaseOwner": r.lease_owner,
        });
    }
    if let Some(c) = &lc.cutover_refused {
        v["cutoverRefused"] = json!({
            "serial": c.serial,
            "at": engine::rfc3339(c.at),
            "mappingIds": c.mapping_ids,
            "reason": c.reason,
        });
    }
    Some(v)
}

/// The P12 tester's warnings on a version the gateway built, merged into `c.warnings` (the same
/// checks an uploaded file gets: key strength, curve, signature, clientAuth, Java readability).
fn add_tester_warnings(call: &Call, c: &mut keys::Completed) {
    let policy = super::tester::key_policy(call);
    let report = crate::p12::test_report(&c.p12, &c.password, call.now, &policy);
    for w in certificates::warnings(&report, &policy) {
        if !c.warnings.contains(&w) {
            c.warnings.push(w);
        }
    }
}

/// Adds the lifecycle view of `doc` to its entity `e` (when it has one).
pub fn decorate(
    call: &Call,
    e: &mut Value,
    doc: &StoredCertificate,
    snap: &crate::snapshot::Snapshot,
) {
    let due = snap
        .certs
        .get(&(doc.meta.account_id.clone(), doc.meta.id))
        .and_then(crate::snapshot::CertEntry::cert)
        .map(|c| call.state.engine.due_at(c));
    if let Some(v) = lifecycle_view(doc, due) {
        e["lifecycle"] = v;
    }
}

/// The entity of `doc` with its lifecycle view.
async fn full_entity(call: &Call, doc: &StoredCertificate) -> Value {
    let snap = call.state.refresher.snapshot().load();
    let mut e = entity_of(doc, &snap, call.now);
    decorate(call, &mut e, doc, &snap);
    e
}

/// `POST /mtls/account/{accountId}/certificates/csr`
pub async fn create(call: &Call) -> Result<Response, ApiError> {
    let v = input::parse_json(&call.body)?;
    let obj = Obj::new(&v, "")?;
    let name = check_name(
        obj.str_req("name", "give the certificate a unique name")?,
        "name",
    )?;
    let display_name = match obj.str_opt("displayName")? {
        Some(d) => check_name(d, "displayName")?,
        None => name.clone(),
    };
    let kt = key_type(&obj)?.unwrap_or_default();
    let subj = match obj.get("subject") {
        Some(s) => subject(&Obj::new(s, "subject")?)?,
        None => {
            return Err(ApiError::missing(
                "subject",
                "send subject {\"commonName\": ..., \"dnsNames\": [...]} for the CSR",
            ))
        }
    };
    let pki = obj
        .get("pki")
        .map(|p| Obj::new(p, "pki").and_then(|o| pki_source(&o)))
        .transpose()?;

    let mut doc = StoredCertificate {
        meta: CertificateMeta {
            id: crate::store::new_id(),
            account_id: call.account.clone(),
            name: name.clone(),
            display_name,
            deleted: false,
            not_after: None,
            updated_at: call.now,
        },
        secret: CertificateSecret {
            p12: Vec::new(),
            password: String::new(),
        },
        lifecycle: Some(Lifecycle {
            pki: pki.clone(),
            key_type: kt,
            subject: Some(subj.clone()),
            ..Lifecycle::default()
        }),
    };
    let mut csr = None;
    let mut warnings = Vec::new();
    if pki.is_some() {
        // The first version from Vault now; nothing is stored when Vault refuses.
        let mut c = call
            .state
            .engine
            .new_version(&doc)
            .await
            .map_err(|e| pki_failed(&e))?;
        add_tester_warnings(call, &mut c);
        warnings = c.warnings.clone();
        engine::install(&mut doc, &c, call.now);
        if let Some(lc) = doc.lifecycle.as_mut() {
            lc.renewal.last_renewed_at = 0;
        }
    } else {
        let nk = generate(kt, &subj).await?;
        csr = Some(nk.csr_pem.clone());
        if let Some(lc) = doc.lifecycle.as_mut() {
            lc.pending = Some(PendingVersion {
                key_pem: nk.key_pem,
                csr_pem: nk.csr_pem,
                key_type: kt,
                created_at: call.now,
                reason: "csr".into(),
            });
        }
    }
    let _guard = WRITE_LOCK.lock().await;
    let existing = certificates::account_certs(call).await?;
    if let Some(c) = existing.iter().find(|c| c.meta.name == name) {
        return Err(ApiError::conflict(
            "duplicate_name",
            "name",
            format!(
                "account {} already has a certificate named {name:?} (id {}); pick another name",
                call.account, c.meta.id
            ),
        ));
    }
    call.state
        .refresher
        .store()
        .put_certificate_if(&doc, "")
        .await?;
    call.audit(
        "create",
        "certificate",
        doc.meta.id,
        json!({"name": doc.meta.name, "source": if pki.is_some() { "vault-pki" } else { "csr" }}),
    );
    drop(_guard);
    call.refresh().await;
    let mut out = full_entity(call, &doc).await;
    if let Some(csr) = csr {
        out["csr"] = json!(csr);
    }
    if !warnings.is_empty() {
        out["warnings"] = json!(warnings);
    }
    Ok(json(StatusCode::CREATED, out))
}

fn pki_failed(e: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "pki_failed",
        format!("Vault PKI did not issue the certificate: {e}; nothing was stored"),
    )
    .field("pki")
}

fn no_pending(id: u64) -> ApiError {
    ApiError::conflict(
        "no_pending_version",
        "certificateId",
        format!(
            "certificate {id} has no pending version; start one with POST .../certificates/{id}/renew"
        ),
    )
}

/// `GET .../certificates/{certificateId}/csr`
pub async fn get_csr(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("certificateId"), "certificateId")?;
    let doc = certificates::load(call, id, "certificateId").await?;
    let p = doc
        .lifecycle
        .as_ref()
        .and_then(|l| l.pending.as_ref())
        .ok_or_else(|| no_pending(id))?;
    Ok(json(
        StatusCode::OK,
        json!({
            "id": id,
            "csr": p.csr_pem,
            "keyType": p.key_type.as_str(),
            "reason": p.reason,
            "createdAt": engine::rfc3339(p.created_at),
        }),
    ))
}

/// The PEM text of a `signed` upload: JSON `{"certificate": PEM, "chain": PEM}`, or the PEM
/// itself (`application/x-pem-file`, `text/plain`).
fn signed_input(call: &Call) -> Result<(String, Option<String>), ApiError> {
    if call.body.len() > MAX_PEM {
        let mut extra = serde_json::Map::new();
        extra.insert("limit".into(), json!(MAX_PEM));
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "certificate: the upload is larger than {MAX_PEM} bytes; send the leaf and its chain only (PEM)"
            ),
        )
        .field("certificate")
        .extra(extra));
    }
    let ct = call
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/json") || call.body.first() == Some(&b'{') {
        let v = input::parse_json(&call.body)?;
        let obj = Obj::new(&v, "")?;
        let cert = obj
            .str_req(
                "certificate",
                "send the signed certificate as PEM (leaf first, chain may follow)",
            )?
            .to_string();
        let chain = opt_string(&obj, "chain")?;
        Ok((cert, chain))
    } else {
        let text = std::str::from_utf8(&call.body).map_err(|_| {
            ApiError::bad(
                "invalid_value",
                "certificate",
                "certificate: the body is not PEM text; send the PEM or JSON {\"certificate\": PEM}",
            )
        })?;
        Ok((text.to_string(), None))
    }
}

/// `POST .../certificates/{certificateId}/signed`
pub async fn complete(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("certificateId"), "certificateId")?;
    let (cert_pem, chain_pem) = signed_input(call)?;
    let store = call.state.refresher.store().clone();
    let Some(cur) = store.get_certificate(&call.account, id).await? else {
        return Err(certificates::not_found_id(call, id));
    };
    if cur.value.meta.deleted {
        return Err(certificates::not_found_id(call, id));
    }
    let pending = cur
        .value
        .lifecycle
        .as_ref()
        .and_then(|l| l.pending.clone())
        .ok_or_else(|| no_pending(id))?;
    let (key, c_pem, ch_pem) = (pending.key_pem.clone(), cert_pem, chain_pem);
    let mut c =
        tokio::task::spawn_blocking(move || keys::complete(&key, &c_pem, ch_pem.as_deref()))
            .await
            .map_err(|_| ApiError::internal("certificate check"))?
            .map_err(|e| {
                ApiError::bad(
                    "invalid_certificate",
                    "certificate",
                    format!("certificate: {e}"),
                )
            })?;
    add_tester_warnings(call, &mut c);
    // The proof: every mapping of this certificate that asks for it (cutoverCheck: true).
    if let Err(r) = call.state.engine.prove(&call.account, id, &c, false).await {
        let refusal = CutoverRefusal {
            serial: c.serial_hex.clone(),
            at: call.now,
            mapping_ids: r.mapping_ids.clone(),
            reason: r.reason.clone(),
        };
        let mut doc = cur.value.clone();
        if let Some(lc) = doc.lifecycle.as_mut() {
            lc.cutover_refused = Some(refusal);
        }
        if let Err(e) = store.put_certificate_if(&doc, &cur.version).await {
            log::warn!(
                "admin: recording the refused cut-over of {}/{id}: {e}",
                call.account
            );
        }
        call.state.engine.notify(crate::lifecycle::notify::Event {
            event: "certificate.cutover_refused".into(),
            id: format!(
                "certificate.cutover_refused:{}:{id}:{}:upload",
                call.account, c.serial_hex
            ),
            account_id: call.account.clone(),
            certificate_id: id,
            certificate_name: cur.value.meta.name.clone(),
            serial: Some(c.serial_hex.clone()),
            not_after: engine::rfc3339(c.not_after),
            days_left: Some((c.not_after - call.now).div_euclid(86_400)),
            threshold_days: None,
            message: format!(
                "the uploaded certificate {} for entry {id} ({}) was refused by a target ({}); the current version keeps serving",
                c.serial_hex, cur.value.meta.name, r.reason
            ),
            occurred_at: engine::rfc3339(call.now).unwrap_or_default(),
            gateway: call.state.engine.config().replica_id.clone(),
        });
        let mut extra = serde_json::Map::new();
        extra.insert("mappingIds".into(), json!(r.mapping_ids));
        extra.insert("serial".into(), json!(c.serial_hex));
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cutover_refused",
            format!(
                "a target refused the new certificate ({}); the current version keeps serving and the pending version is kept: fix the target's trust and upload again",
                r.reason
            ),
        )
        .field("certificate")
        .extra(extra));
    }
    let _guard = WRITE_LOCK.lock().await;
    let mut doc = cur.value.clone();
    engine::install(&mut doc, &c, call.now);
    match store.put_certificate_if(&doc, &cur.version).await {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "concurrent_write",
                "certificateId",
                format!("certificate {id} changed while the upload was checked; upload again"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    call.audit(
        "complete",
        "certificate",
        id,
        json!({"name": doc.meta.name, "serial": c.serial_hex}),
    );
    drop(_guard);
    call.refresh().await;
    let mut out = full_entity(call, &doc).await;
    if !c.warnings.is_empty() {
        out["warnings"] = json!(c.warnings);
    }
    Ok(json(StatusCode::OK, out))
}

/// `POST .../certificates/{certificateId}/renew`
pub async fn renew(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("certificateId"), "certificateId")?;
    let v = if call.body.is_empty() {
        json!({})
    } else {
        input::parse_json(&call.body)?
    };
    let obj = Obj::new(&v, "")?;
    let cur = certificates::load(call, id, "certificateId").await?;
    if cur.lifecycle.as_ref().is_some_and(|l| l.pki.is_some()) {
        return match call.state.engine.renew(&call.account, id, true).await {
            Outcome::Renewed { .. } => {
                let doc = certificates::load(call, id, "certificateId").await?;
                call.audit("renew", "certificate", id, json!({"name": doc.meta.name}));
                Ok(json(StatusCode::OK, full_entity(call, &doc).await))
            }
            Outcome::Busy | Outcome::NotDue => Err(ApiError::conflict(
                "renewal_in_progress",
                "certificateId",
                format!("certificate {id} is being renewed by another replica; look again in a minute"),
            )),
            Outcome::Refused { reason } => Err(ApiError::conflict(
                "cutover_refused",
                "certificateId",
                format!("the renewed certificate was refused by a target ({reason}); the current version keeps serving"),
            )),
            Outcome::Failed { error } => Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "renewal_failed",
                format!("renewal failed: {error}; the current version keeps serving"),
            )
            .field("certificateId")),
        };
    }
    if cur.awaiting_signature() {
        return Err(ApiError::conflict(
            "awaiting_signature",
            "certificateId",
            format!("certificate {id} still waits for the signed certificate of its first CSR (GET .../certificates/{id}/csr); complete or delete it"),
        ));
    }
    if obj.bool_opt("newKey")? == Some(false) {
        return Err(ApiError::bad(
            "invalid_value",
            "newKey",
            "newKey: a renewal always makes a new key (the old key never leaves the PKCS#12 it came in); leave newKey out",
        ));
    }
    let lc = cur.lifecycle.clone().unwrap_or_default();
    let kt = key_type(&obj)?.unwrap_or(lc.key_type);
    let subj = match obj.get("subject") {
        Some(s) => subject(&Obj::new(s, "subject")?)?,
        None => engine::subject_of(&cur),
    };
    let nk = generate(kt, &subj).await?;
    let _guard = WRITE_LOCK.lock().await;
    let store = call.state.refresher.store().clone();
    let Some(v) = store.get_certificate(&call.account, id).await? else {
        return Err(certificates::not_found_id(call, id));
    };
    let mut doc = v.value;
    let l = doc.lifecycle.get_or_insert_with(Lifecycle::default);
    l.key_type = kt;
    l.subject = Some(subj);
    l.pending = Some(PendingVersion {
        key_pem: nk.key_pem,
        csr_pem: nk.csr_pem.clone(),
        key_type: kt,
        created_at: call.now,
        reason: "renew".into(),
    });
    // The serving version is unknown to older documents: count it as the first.
    if l.generation == 0 {
        l.generation = 1;
    }
    match store.put_certificate_if(&doc, &v.version).await {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "concurrent_write",
                "certificateId",
                format!("certificate {id} changed meanwhile; retry"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    call.audit("renew", "certificate", id, json!({"name": doc.meta.name}));
    drop(_guard);
    call.refresh().await;
    let mut out = full_entity(call, &doc).await;
    out["csr"] = json!(nk.csr_pem);
    Ok(json(StatusCode::OK, out))
}

/// `DELETE .../certificates/{certificateId}/pending`
pub async fn discard(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("certificateId"), "certificateId")?;
    let _guard = WRITE_LOCK.lock().await;
    let store = call.state.refresher.store().clone();
    let Some(v) = store.get_certificate(&call.account, id).await? else {
        return Err(certificates::not_found_id(call, id));
    };
    let mut doc = v.value;
    if doc.meta.deleted {
        return Err(certificates::not_found_id(call, id));
    }
    if doc.awaiting_signature() {
        return Err(ApiError::conflict(
            "awaiting_signature",
            "certificateId",
            format!("certificate {id} has no other version: delete the certificate instead"),
        ));
    }
    let had = doc
        .lifecycle
        .as_mut()
        .and_then(|l| l.pending.take())
        .is_some();
    if !had {
        return Err(no_pending(id));
    }
    store.put_certificate_if(&doc, &v.version).await?;
    call.audit(
        "discard_pending",
        "certificate",
        id,
        json!({"name": doc.meta.name}),
    );
    drop(_guard);
    call.refresh().await;
    Ok(json(StatusCode::OK, full_entity(call, &doc).await))
}
