//! Certificates: list, get, create and update (JSON or multipart file), delete.
//!
//! A certificate is one store document (metadata, PKCS#12 and password together), so each
//! write is all or nothing. A batch is validated whole (types, sizes, names, the file opening
//! with its password) before the first write; a store failure part-way is reported per item in
//! `failedSaveToVaultCertificates`, as LivePerson's save result does.
//!
//! A file that opens is accepted even when the P12 tester would call it unusable (LivePerson's
//! clients upload such files and must keep working); the tester's checks run in the same
//! blocking job that opens it, their failures are kept as `lifecycle.warnings` and every entity
//! says what is wrong: `state`, `stateReason` and `warnings` next to LivePerson's `status`.

use std::collections::HashSet;

use axum::http::StatusCode;
use axum::response::Response;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{self, Obj};
use super::{json, mappings, Call, WRITE_LOCK};
use crate::p12::{self, check, KeyPolicy, P12Error, Report};
use crate::refresh::AWAITING_SIGNATURE;
use crate::snapshot::{CertEntry, LoadedCert, Snapshot};
use crate::store::{CertificateMeta, CertificateSecret, Lifecycle, StoreError, StoredCertificate};

/// Longest certificate or mapping name accepted.
pub const MAX_NAME: usize = 256;

/// `Available`, `UnAvailable` or `Expired` (LivePerson's literals; the last is ours, they never
/// published it).
pub fn status(meta: &CertificateMeta, snap: &Snapshot, now: i64) -> &'static str {
    let entry = snap.certs.get(&(meta.account_id.clone(), meta.id));
    let not_after = meta
        .not_after
        .or_else(|| entry.and_then(CertEntry::cert).map(|c| c.not_after));
    if not_after.is_some_and(|t| t < now) {
        return "Expired";
    }
    match entry {
        Some(CertEntry::Ready { stale: None, .. }) => "Available",
        _ => "UnAvailable",
    }
}

/// ISO 8601 / RFC 3339 in UTC, e.g. `2027-11-28T00:00:00Z`.
pub fn iso8601(t: i64) -> Option<String> {
    crate::lifecycle::notify::rfc3339(t)
}

/// Why a certificate may not work, for the entity and the mapping checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertState {
    /// `available`, `expired`, `not_yet_valid`, `unusable`, `awaiting_signature` or
    /// `load_failed`.
    pub state: &'static str,
    /// One sentence; `None` exactly when `state` is `available`.
    pub reason: Option<String>,
    /// The dates' warning (expired / not yet valid, worked out now), then the tester's warnings
    /// kept at write time.
    pub warnings: Vec<String>,
}

impl CertState {
    /// Nothing to say: available and no warning.
    pub fn is_clean(&self) -> bool {
        self.reason.is_none() && self.warnings.is_empty()
    }

    /// Adds `state`, `stateReason` (unless available) and `warnings` (unless empty) to `out`.
    pub fn add_to(&self, out: &mut serde_json::Map<String, Value>) {
        out.insert("state".into(), json!(self.state));
        if let Some(r) = &self.reason {
            out.insert("stateReason".into(), json!(r));
        }
        if !self.warnings.is_empty() {
            out.insert("warnings".into(), json!(self.warnings));
        }
    }
}

/// The state of certificate `id` of `account`. `stored` is the store document when the caller
/// read it (its warnings and whether it awaits a signature are then taken from it); without it,
/// from what this replica's snapshot loaded. `not_after` as in [`status`].
///
/// In order: `awaiting_signature` (no file yet); `expired` (not-after passed: LivePerson's
/// `Expired`); `load_failed` (this replica does not present the current version: LivePerson's
/// `UnAvailable`); `not_yet_valid` (not-before still ahead); `unusable` (the P12 tester failed
/// a check other than the dates when the file was written: the gateway presents it, partners are
/// expected to refuse it); `available`. Only the first two and `load_failed` change `status`.
pub fn state_of(
    snap: &Snapshot,
    account: &str,
    id: u64,
    not_after: Option<i64>,
    stored: Option<&StoredCertificate>,
    now: i64,
) -> CertState {
    let entry = snap.certs.get(&(account.to_string(), id));
    let loaded = entry.and_then(CertEntry::cert);
    let not_after = not_after.or_else(|| loaded.map(|c| c.not_after));
    let awaiting = match stored {
        Some(doc) => doc.awaiting_signature(),
        None => {
            matches!(entry, Some(CertEntry::Failed { reason, .. }) if reason == AWAITING_SIGNATURE)
        }
    };
    let kept = match stored {
        Some(doc) => doc.lifecycle.as_ref(),
        None => loaded.and_then(|c| c.lifecycle.as_deref()),
    }
    .map(|l| l.warnings.clone())
    .unwrap_or_default();

    let expired_at = not_after.filter(|t| *t < now);
    let valid_from = loaded.map(|c| c.not_before).filter(|t| *t > now);
    let mut warnings = Vec::with_capacity(kept.len() + 1);
    if let Some(t) = expired_at {
        warnings.push(format!(
            "certificate expired at {}: upload a renewed certificate",
            iso8601(t).unwrap_or_else(|| t.to_string())
        ));
    } else if let Some(t) = valid_from {
        warnings.push(format!(
            "certificate is not valid before {}: partners refuse it until then; upload one valid now if it is needed sooner",
            iso8601(t).unwrap_or_else(|| t.to_string())
        ));
    }
    let dated = !warnings.is_empty();
    warnings.extend(kept);

    let (state, reason) = if awaiting {
        (
            "awaiting_signature",
            Some(
                "a CSR was made and no signed certificate was uploaded for it yet; nothing is presented until it is"
                    .to_string(),
            ),
        )
    } else if expired_at.is_some() {
        ("expired", Some(warnings[0].clone()))
    } else if let Some(why) = load_problem(entry) {
        ("load_failed", Some(why))
    } else if dated {
        ("not_yet_valid", Some(warnings[0].clone()))
    } else if let Some(first) = warnings.first() {
        let more = match warnings.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more problem(s): see warnings)"),
        };
        (
            "unusable",
            Some(format!(
                "the P12 tester calls this file unusable: {first}{more}"
            )),
        )
    } else {
        ("available", None)
    };
    CertState {
        state,
        reason,
        warnings,
    }
}

/// Why this replica does not present the current version, if it does not.
fn load_problem(entry: Option<&CertEntry>) -> Option<String> {
    match entry {
        None => Some(
            "this replica has not loaded the certificate yet; it will on its next refresh".into(),
        ),
        Some(CertEntry::Failed { reason, .. }) => Some(format!(
            "this replica could not load the stored file: {reason}"
        )),
        Some(CertEntry::Ready {
            stale: Some((_, reason)),
            ..
        }) => Some(format!(
            "the newest stored version could not be loaded ({reason}); this replica still presents the previous one"
        )),
        Some(CertEntry::Ready { stale: None, .. }) => None,
    }
}

/// The certificate entity LivePerson returns (never the file or the password), plus `state`,
/// `stateReason` and `warnings` from this replica's snapshot.
pub fn entity(meta: &CertificateMeta, snap: &Snapshot, now: i64) -> Value {
    entity_with(meta, None, snap, now)
}

/// [`entity`] of a store document: its warnings and awaiting-signature state come from it.
pub fn entity_of(doc: &StoredCertificate, snap: &Snapshot, now: i64) -> Value {
    entity_with(&doc.meta, Some(doc), snap, now)
}

fn entity_with(
    meta: &CertificateMeta,
    doc: Option<&StoredCertificate>,
    snap: &Snapshot,
    now: i64,
) -> Value {
    let not_after = meta.not_after.or_else(|| {
        snap.certs
            .get(&(meta.account_id.clone(), meta.id))
            .and_then(CertEntry::cert)
            .map(|c| c.not_after)
    });
    let mut out = json!({
        "id": meta.id,
        "deleted": meta.deleted,
        "name": meta.name,
        "displayName": meta.display_name,
        "siteId": meta.account_id,
        "status": status(meta, snap, now),
        "expirationDate": not_after.and_then(iso8601),
    });
    if let Value::Object(m) = &mut out {
        state_of(snap, &meta.account_id, meta.id, not_after, doc, now).add_to(m);
        if let Some(c) = snap
            .certs
            .get(&(meta.account_id.clone(), meta.id))
            .and_then(CertEntry::cert)
        {
            m.insert("certificate".into(), loaded_view(c));
        }
    }
    out
}

/// The `certificate` object of an entity: the leaf this replica presents (public facts only).
fn loaded_view(c: &LoadedCert) -> Value {
    let leaf = c.cert_key.leaf();
    let key_type = leaf.public_key().ok().map(|k| match p12::describe_key(&k) {
        (name, bits) if name == "RSA" => format!("RSA {bits}"),
        (name, _) => name,
    });
    json!({
        "subject": c.subject,
        "issuer": p12::one_line_name(leaf.issuer_name()),
        "serial": c.serial_hex,
        "keyType": key_type,
        "notBefore": iso8601(c.not_before),
        "notAfter": iso8601(c.not_after),
        "sha256": hex::encode(c.leaf_sha256),
    })
}

/// Every live certificate of the account, by id.
pub(crate) async fn account_certs(call: &Call) -> Result<Vec<StoredCertificate>, ApiError> {
    let store = call.state.refresher.store().clone();
    let inv = store.inventory().await?;
    let ids: Vec<u64> = inv
        .certificates
        .iter()
        .filter(|(a, _, _)| *a == call.account)
        .map(|(_, id, _)| *id)
        .collect();
    let account = call.account.clone();
    let mut certs: Vec<StoredCertificate> = stream::iter(ids)
        .map(|id| {
            let store = store.clone();
            let account = account.clone();
            async move {
                match store.get_certificate(&account, id).await {
                    // A corrupt document must not block the account: it is left out of lists
                    // and name checks (the refresher reports it) and can still be deleted.
                    Err(StoreError::Corrupt { key, reason }) => {
                        log::warn!("admin: skipping corrupt store entry {key}: {reason}");
                        Ok(None)
                    }
                    other => other,
                }
            }
        })
        .buffer_unordered(8)
        .try_filter_map(|c| async move { Ok(c.map(|v| v.value).filter(|c| !c.meta.deleted)) })
        .try_collect()
        .await?;
    certs.sort_by_key(|c| c.meta.id);
    Ok(certs)
}

/// One certificate of the account, or 404.
pub(crate) async fn load(call: &Call, id: u64, field: &str) -> Result<StoredCertificate, ApiError> {
    match call
        .state
        .refresher
        .store()
        .get_certificate(&call.account, id)
        .await?
    {
        Some(v) if !v.value.meta.deleted => Ok(v.value),
        _ => Err(not_found(call, id, field)),
    }
}

pub(super) fn not_found_id(call: &Call, id: u64) -> ApiError {
    not_found(call, id, "certificateId")
}

fn not_found(call: &Call, id: u64, field: &str) -> ApiError {
    ApiError::not_found(
        "certificate_not_found",
        field,
        format!("account {} has no certificate {id}", call.account),
    )
}

pub async fn list(call: &Call) -> Result<Response, ApiError> {
    call.ensure_snapshot().await;
    let certs = account_certs(call).await?;
    let snap = call.state.refresher.snapshot().load();
    let out: Vec<Value> = certs
        .iter()
        .map(|c| {
            let mut e = entity_of(c, &snap, call.now);
            super::lifecycle::decorate(call, &mut e, c, &snap);
            e
        })
        .collect();
    Ok(json(StatusCode::OK, Value::Array(out)))
}

pub async fn get(call: &Call) -> Result<Response, ApiError> {
    call.ensure_snapshot().await;
    let id = input::id_param(call.param("certificateId"), "certificateId")?;
    let cert = load(call, id, "certificateId").await?;
    let snap = call.state.refresher.snapshot().load();
    let mut e = entity_of(&cert, &snap, call.now);
    super::lifecycle::decorate(call, &mut e, &cert, &snap);
    Ok(json(StatusCode::OK, e))
}

/// A certificate to create, validated except for the name clash and the decode.
struct NewCert {
    field: String,
    name: String,
    display_name: String,
    p12: Vec<u8>,
    password: String,
}

/// A change to an existing certificate.
struct CertChange {
    field: String,
    id: u64,
    name: Option<String>,
    display_name: Option<String>,
    p12: Option<Vec<u8>>,
    password: Option<String>,
}

pub(super) fn check_name(name: &str, field: &str) -> Result<String, ApiError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(ApiError::bad(
            "invalid_value",
            field,
            format!("{field} is empty; give the certificate a name"),
        ));
    }
    if trimmed.chars().count() > MAX_NAME || trimmed.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "invalid_value",
            field,
            format!("{field} must be at most {MAX_NAME} characters without control characters"),
        ));
    }
    Ok(trimmed.to_string())
}

fn new_cert(obj: &Obj<'_>, max: usize) -> Result<NewCert, ApiError> {
    let name = check_name(
        obj.str_req("name", "give the certificate a unique name")?,
        &obj.name("name"),
    )?;
    let display_name = match obj.str_opt("displayName")? {
        Some(d) => check_name(d, &obj.name("displayName"))?,
        None => name.clone(),
    };
    let password = obj
        .str_req("password", "send the PKCS#12 file's password")?
        .to_string();
    let p12 = match obj.get("p12") {
        Some(v) => input::p12_bytes(v, &obj.name("p12"), max)?,
        None => {
            return Err(ApiError::missing(
                &obj.name("p12"),
                "send the PKCS#12 file as a byte array or a base64 string",
            ))
        }
    };
    Ok(NewCert {
        field: obj.path.clone(),
        name,
        display_name,
        p12,
        password,
    })
}

fn cert_change(obj: &Obj<'_>, max: usize, path_id: Option<u64>) -> Result<CertChange, ApiError> {
    let id = match (obj.id_opt("id")?, path_id) {
        (Some(b), Some(p)) if b != p => {
            return Err(ApiError::bad(
                "id_mismatch",
                obj.name("id"),
                format!(
                    "{} is {b} but the path says {p}; send the same id or leave it out",
                    obj.name("id")
                ),
            ))
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            return Err(ApiError::missing(
                &obj.name("id"),
                "send the id of the certificate to update",
            ))
        }
    };
    let name = obj
        .str_opt("name")?
        .map(|n| check_name(n, &obj.name("name")))
        .transpose()?;
    let display_name = obj
        .str_opt("displayName")?
        .map(|n| check_name(n, &obj.name("displayName")))
        .transpose()?;
    let password = obj.str_opt("password")?.map(str::to_string);
    let p12 = obj
        .get("p12")
        .map(|v| input::p12_bytes(v, &obj.name("p12"), max))
        .transpose()?;
    Ok(CertChange {
        field: obj.path.clone(),
        id,
        name,
        display_name,
        p12,
        password,
    })
}

fn field(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// What the write path learned from a file that opens.
struct Checked {
    /// The leaf's not-after, unix seconds.
    not_after: i64,
    /// The tester's failed checks (the dates aside), as sentences for `lifecycle.warnings`.
    warnings: Vec<String>,
}

/// Opens the file with its password and runs the tester's checks on it, in one job of the
/// shared decoder (iteration cap first, then the blocking pool, a bounded number at a time),
/// never under [`WRITE_LOCK`]. A file that does not open is refused as before; one that opens is
/// accepted whatever the checks say. Errors name the field; they never contain the password
/// (`P12Error` guarantees it).
async fn opens(
    call: &Call,
    p12: Vec<u8>,
    password: String,
    prefix: &str,
) -> Result<Checked, ApiError> {
    let decoder = call.state.refresher.decoder().clone();
    let policy = super::tester::key_policy(call);
    let now = call.now;
    let result = match decoder.check(&p12) {
        Err(e) => Err(e),
        Ok(()) => decoder
            .run(move || examine(&p12, &password, now, &policy))
            .await
            .and_then(|r| r),
    };
    match result {
        Ok(c) => Ok(c),
        Err(P12Error::WrongPassword) => Err(ApiError::bad(
            "wrong_password",
            field(prefix, "password"),
            format!(
                "{}: the password does not open this PKCS#12 file (or the file was altered); check the password",
                field(prefix, "password")
            ),
        )),
        Err(e) => Err(ApiError::bad(
            "invalid_p12",
            field(prefix, "p12"),
            format!(
                "{}: {e}; the P12 tester (POST /mtls/account/{{accountId}}/p12-test/multipart) reports every check",
                field(prefix, "p12")
            ),
        )),
    }
}

/// Blocking: the tester's report (which opens the file once); when it says the file does not
/// open as the runtime needs it (the password, one key matching the leaf), [`p12::decode`] gives
/// the exact reason, so refusals read as they always did.
fn examine(der: &[u8], password: &str, now: i64, policy: &KeyPolicy) -> Result<Checked, P12Error> {
    let report = p12::test_report(der, password, now, policy);
    let opened = report
        .checks
        .iter()
        .filter(|c| c.name == check::OPENS || c.name == check::PRIVATE_KEY)
        .all(|c| c.passed);
    let not_after = report.not_after.as_deref().and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|d| d.unix_timestamp())
    });
    let not_after = match (opened, not_after) {
        (true, Some(t)) => t,
        _ => p12::decode(der, password)?.not_after,
    };
    Ok(Checked {
        not_after,
        warnings: warnings(&report, policy),
    })
}

/// The tester's failed checks as short sentences naming the problem and the fix. The validity
/// window is left out: whether a certificate is expired or not yet valid changes with time, so
/// [`state_of`] works it out from the dates on every read instead of keeping a sentence that
/// goes stale. Never a secret: the report holds names, algorithms and dates only.
pub fn warnings(report: &Report, policy: &KeyPolicy) -> Vec<String> {
    report
        .checks
        .iter()
        .filter(|c| !c.passed && c.name != check::VALIDITY && !c.detail.starts_with("not run"))
        .map(|c| match c.name {
            check::KEY_STRENGTH => {
                let allowed = format!(
                    "an EC key on {} or an RSA key of at least {} bits",
                    policy.ec_curves.join("/"),
                    policy.rsa_min_bits
                );
                match (report.key_algorithm.as_deref(), report.key_bits) {
                    (Some("RSA"), Some(bits)) if bits < policy.rsa_min_bits => format!(
                        "key is RSA {bits} bits; partners require at least {}: upload a new certificate with a stronger key",
                        policy.rsa_min_bits
                    ),
                    (Some("Ed25519"), _) => format!(
                        "key is Ed25519, which most partners' TLS servers (and Java before 15) refuse as a client key: upload a new certificate with {allowed}"
                    ),
                    (Some(alg), _) if alg.starts_with("EC ") => format!(
                        "key is {alg}, not an allowed curve (allowed: {}): upload a new certificate with {allowed}",
                        policy.ec_curves.join(", ")
                    ),
                    _ => format!(
                        "key: {}: upload a new certificate with {allowed}",
                        c.detail
                    ),
                }
            }
            check::SIGNATURE => format!(
                "certificate is signed with {}; partners' TLS servers refuse MD5 and SHA-1 signatures: have it reissued with SHA-256 or better and upload it",
                report.signature_algorithm.as_deref().unwrap_or("a weak digest")
            ),
            check::CLIENT_AUTH => format!(
                "{}: have it reissued with the clientAuth extended key usage and upload it",
                c.detail
            ),
            check::CHAIN_ORDER => format!(
                "chain out of order in the file: {}, and upload it again",
                c.detail
            ),
            check::JAVA_READABLE => format!(
                "Java cannot read this file: {}; re-export it with `openssl pkcs12 -export` (encrypted by default) and upload it again",
                c.detail
            ),
            other => format!("{other}: {}", c.detail),
        })
        .collect()
}

/// Keeps `warnings` as the entry's lifecycle warnings: a lifecycle is created for them when
/// there was none, and one left with nothing but defaults is dropped again (a good file after a
/// bad one stores the same document as before warnings existed).
fn set_warnings(lifecycle: &mut Option<Lifecycle>, warnings: Vec<String>) {
    match lifecycle {
        Some(l) => l.warnings = warnings,
        None if warnings.is_empty() => {}
        None => {
            *lifecycle = Some(Lifecycle {
                warnings,
                ..Lifecycle::default()
            })
        }
    }
    if lifecycle
        .as_ref()
        .is_some_and(|l| *l == Lifecycle::default())
    {
        *lifecycle = None;
    }
}

/// Writes each certificate (one document each); returns LivePerson's save result.
async fn save_all(call: &Call, docs: Vec<StoredCertificate>, action: &str) -> Value {
    let store = call.state.refresher.store().clone();
    let mut saved = Vec::new();
    let mut failed = Vec::new();
    for doc in docs {
        match store.put_certificate(&doc).await {
            Ok(_) => {
                call.audit(
                    action,
                    "certificate",
                    doc.meta.id,
                    json!({"name": doc.meta.name}),
                );
                saved.push(doc);
            }
            Err(e) => {
                log::warn!(
                    "admin: saving certificate {}/{} failed: {e}",
                    doc.meta.account_id,
                    doc.meta.id
                );
                failed.push(json!({
                    "id": doc.meta.id,
                    "name": doc.meta.name,
                    "error": "store_unavailable",
                    "message": "the store refused or did not answer; nothing was saved for this certificate; retry",
                }));
            }
        }
    }
    if !saved.is_empty() {
        call.refresh().await;
    }
    let snap = call.state.refresher.snapshot().load();
    json!({
        "successfulySavedCertificates": saved.iter().map(|d| entity_of(d, &snap, call.now)).collect::<Vec<_>>(),
        "failedSaveToVaultCertificates": failed,
    })
}

fn save_status(result: &Value, ok: StatusCode) -> Result<Response, ApiError> {
    let none_saved = result["successfulySavedCertificates"]
        .as_array()
        .is_some_and(Vec::is_empty);
    if none_saved {
        let mut extra = serde_json::Map::new();
        if let Value::Object(m) = result {
            extra.extend(m.clone());
        }
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "no certificate could be saved: the store refused or did not answer; retry later",
        )
        .extra(extra));
    }
    Ok(json(ok, result.clone()))
}

async fn create_many(call: &Call, items: Vec<NewCert>) -> Result<Response, ApiError> {
    // Names unique within the batch.
    let mut names = HashSet::new();
    for it in &items {
        if !names.insert(it.name.clone()) {
            return Err(ApiError::conflict(
                "duplicate_name",
                &field(&it.field, "name"),
                format!(
                    "the name {:?} appears twice in this request; certificate names are unique per account",
                    it.name
                ),
            ));
        }
    }
    // Every file must open before anything is written.
    let mut checked = Vec::with_capacity(items.len());
    for it in &items {
        checked.push(opens(call, it.p12.clone(), it.password.clone(), &it.field).await?);
    }
    let _guard = WRITE_LOCK.lock().await;
    let existing = account_certs(call).await?;
    for it in &items {
        if let Some(c) = existing.iter().find(|c| c.meta.name == it.name) {
            return Err(ApiError::conflict(
                "duplicate_name",
                &field(&it.field, "name"),
                format!(
                    "account {} already has a certificate named {:?} (id {}); pick another name or update that one",
                    call.account, it.name, c.meta.id
                ),
            ));
        }
    }
    let docs = items
        .into_iter()
        .zip(checked)
        .map(|(it, ck)| {
            let mut doc = StoredCertificate {
                meta: CertificateMeta {
                    id: crate::store::new_id(),
                    account_id: call.account.clone(),
                    name: it.name,
                    display_name: it.display_name,
                    deleted: false,
                    not_after: Some(ck.not_after),
                    updated_at: call.now,
                },
                secret: CertificateSecret {
                    p12: it.p12,
                    password: it.password,
                },
                lifecycle: None,
            };
            set_warnings(&mut doc.lifecycle, ck.warnings);
            doc
        })
        .collect();
    let result = save_all(call, docs, "create").await;
    save_status(&result, StatusCode::CREATED)
}

/// The secret `c` asks for on top of `cur`, when it changes the file or the password.
fn merged_secret(cur: &StoredCertificate, c: &CertChange) -> Option<CertificateSecret> {
    if c.p12.is_none() && c.password.is_none() {
        return None;
    }
    Some(CertificateSecret {
        p12: c.p12.clone().unwrap_or_else(|| cur.secret.p12.clone()),
        password: c
            .password
            .clone()
            .unwrap_or_else(|| cur.secret.password.clone()),
    })
}

fn not_in_account(call: &Call, c: &CertChange) -> ApiError {
    ApiError::not_found(
        "certificate_not_found",
        &field(&c.field, "id"),
        format!("account {} has no certificate {}", call.account, c.id),
    )
}

async fn update_many(call: &Call, changes: Vec<CertChange>) -> Result<Response, ApiError> {
    let mut ids = HashSet::new();
    for c in &changes {
        if !ids.insert(c.id) {
            return Err(ApiError::bad(
                "duplicate_id",
                field(&c.field, "id"),
                format!(
                    "certificate {} appears twice in this request; send one change per certificate",
                    c.id
                ),
            ));
        }
    }
    // Every new file (or new password) opens before the write lock is taken: decoding can take
    // seconds, and the lock serialises every admin write of this replica. Under the lock the
    // secrets are merged again; one that changed meanwhile is a 409 (retry).
    let before = account_certs(call).await?;
    let mut opened: Vec<Option<(CertificateSecret, Checked)>> = Vec::with_capacity(changes.len());
    for c in &changes {
        let Some(cur) = before.iter().find(|e| e.meta.id == c.id) else {
            return Err(not_in_account(call, c));
        };
        opened.push(match merged_secret(cur, c) {
            Some(secret) => {
                let ck = opens(call, secret.p12.clone(), secret.password.clone(), &c.field).await?;
                Some((secret, ck))
            }
            None => None,
        });
    }
    drop(before);

    let _guard = WRITE_LOCK.lock().await;
    let existing = account_certs(call).await?;
    let mut docs = Vec::with_capacity(changes.len());
    for (c, opened) in changes.into_iter().zip(opened) {
        let Some(cur) = existing.iter().find(|e| e.meta.id == c.id) else {
            return Err(not_in_account(call, &c));
        };
        let mut doc = cur.clone();
        match (merged_secret(cur, &c), opened) {
            (None, _) => {}
            (Some(secret), Some((checked, ck)))
                if secret.p12 == checked.p12 && secret.password == checked.password =>
            {
                doc.secret = secret;
                doc.meta.not_after = Some(ck.not_after);
                set_warnings(&mut doc.lifecycle, ck.warnings);
            }
            _ => {
                return Err(ApiError::conflict(
                    "concurrent_write",
                    &field(&c.field, "id"),
                    format!(
                        "certificate {} changed while this update was being checked (another writer); retry",
                        c.id
                    ),
                ))
            }
        }
        if let Some(name) = c.name {
            if doc.meta.display_name == doc.meta.name && c.display_name.is_none() {
                doc.meta.display_name = name.clone();
            }
            doc.meta.name = name;
        }
        if let Some(d) = c.display_name {
            doc.meta.display_name = d;
        }
        doc.meta.updated_at = call.now;
        docs.push((c.field, doc));
    }
    // Names: unique among the results and the untouched certificates.
    for (i, (f, doc)) in docs.iter().enumerate() {
        let clash_batch = docs[..i].iter().any(|(_, d)| d.meta.name == doc.meta.name);
        let clash_store = existing.iter().find(|e| {
            e.meta.name == doc.meta.name && !docs.iter().any(|(_, d)| d.meta.id == e.meta.id)
        });
        if clash_batch || clash_store.is_some() {
            return Err(ApiError::conflict(
                "duplicate_name",
                &field(f, "name"),
                format!(
                    "account {} already has a certificate named {:?}{}; pick another name",
                    call.account,
                    doc.meta.name,
                    clash_store
                        .map(|c| format!(" (id {})", c.meta.id))
                        .unwrap_or_default()
                ),
            ));
        }
    }
    let result = save_all(call, docs.into_iter().map(|(_, d)| d).collect(), "update").await;
    save_status(&result, StatusCode::OK)
}

pub async fn create_json(call: &Call) -> Result<Response, ApiError> {
    let v = input::parse_json(&call.body)?;
    let max = call.cfg().admin.max_upload_bytes;
    let items = input::items(&v, call.cfg().admin.max_items, true)?
        .iter()
        .map(|o| new_cert(o, max))
        .collect::<Result<Vec<_>, _>>()?;
    create_many(call, items).await
}

pub async fn update_json(call: &Call) -> Result<Response, ApiError> {
    let v = input::parse_json(&call.body)?;
    let max = call.cfg().admin.max_upload_bytes;
    let items = input::items(&v, call.cfg().admin.max_items, true)?
        .iter()
        .map(|o| cert_change(o, max, None))
        .collect::<Result<Vec<_>, _>>()?;
    update_many(call, items).await
}

/// Legacy `PUT .../certificates/{certificateId}`: one object, the id from the path.
pub async fn update_one_json(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("certificateId"), "certificateId")?;
    let v = input::parse_json(&call.body)?;
    let max = call.cfg().admin.max_upload_bytes;
    let items = input::items(&v, 1, true)?;
    let change = cert_change(&items[0], max, Some(id))?;
    update_many(call, vec![change]).await
}

/// The `file` part (capped) and the `certificate` JSON part of a by-file upload.
async fn file_form(call: &Call, file_required: bool) -> Result<(Option<Vec<u8>>, Value), ApiError> {
    let form = input::multipart(&call.parts, call.body.clone()).await?;
    let max = call.cfg().admin.max_upload_bytes;
    let file = match form.get("file") {
        Some(b) if b.len() > max => return Err(ApiError::too_large("file", max)),
        Some(b) if b.is_empty() => {
            return Err(ApiError::bad(
                "invalid_p12",
                "file",
                "the file part is empty; attach the .p12/.pfx file",
            ))
        }
        Some(b) => Some(b.to_vec()),
        None if file_required => {
            return Err(ApiError::missing(
                "file",
                "attach the .p12/.pfx file as the multipart part named file",
            ))
        }
        None => None,
    };
    let cert = form.text("certificate")?.ok_or_else(|| {
        ApiError::missing(
            "certificate",
            "add a text part named certificate holding JSON {\"name\": ..., \"password\": ...}",
        )
    })?;
    let v: Value = serde_json::from_str(cert).map_err(|e| {
        ApiError::bad(
            "malformed_json",
            "certificate",
            format!(
                "the certificate part is not valid JSON (line {}, column {}); send {{\"name\": ..., \"password\": ...}}",
                e.line(),
                e.column()
            ),
        )
    })?;
    Ok((file, v))
}

pub async fn create_file(call: &Call) -> Result<Response, ApiError> {
    let (file, v) = file_form(call, true).await?;
    let obj = Obj::new(&v, "certificate")?;
    let name = check_name(
        obj.str_req("name", "give the certificate a unique name")?,
        &obj.name("name"),
    )?;
    let display_name = match obj.str_opt("displayName")? {
        Some(d) => check_name(d, &obj.name("displayName"))?,
        None => name.clone(),
    };
    let password = obj
        .str_req("password", "send the PKCS#12 file's password")?
        .to_string();
    let item = NewCert {
        field: String::new(),
        name,
        display_name,
        p12: file.unwrap_or_default(),
        password,
    };
    create_many(call, vec![item])
        .await
        .map_err(file_field_names)
}

pub async fn update_file(call: &Call) -> Result<Response, ApiError> {
    let (file, v) = file_form(call, false).await?;
    let obj = Obj::new(&v, "certificate")?;
    let mut change = cert_change(&obj, call.cfg().admin.max_upload_bytes, None)?;
    change.field = String::new();
    if obj.has("p12") {
        return Err(ApiError::bad(
            "invalid_value",
            "certificate.p12",
            "send the file as the multipart part named file, not inside the certificate JSON",
        ));
    }
    change.p12 = file;
    update_many(call, vec![change])
        .await
        .map_err(file_field_names)
}

/// In by-file requests the file is the `file` part and the rest lives in `certificate`.
fn file_field_names(mut e: ApiError) -> ApiError {
    e.field = e.field.map(|f| match f.as_str() {
        "p12" => "file".to_string(),
        "name" | "password" | "id" | "displayName" => format!("certificate.{f}"),
        _ => f,
    });
    e.message = e.message.replacen("p12: ", "file: ", 1).replacen(
        "password: ",
        "certificate.password: ",
        1,
    );
    e
}

pub async fn delete(call: &Call) -> Result<Response, ApiError> {
    let id = input::id_param(call.param("certificateId"), "certificateId")?;
    let cascade = match call
        .query("cascade")
        .map(|c| c.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") | Some("") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid_type("cascade", "true or false"));
        }
    };
    let _guard = WRITE_LOCK.lock().await;
    // A corrupt document can still be deleted (its name is unknown then).
    let meta = match call
        .state
        .refresher
        .store()
        .get_certificate(&call.account, id)
        .await
    {
        Err(StoreError::Corrupt { .. }) => CertificateMeta {
            id,
            account_id: call.account.clone(),
            name: String::new(),
            display_name: String::new(),
            deleted: false,
            not_after: None,
            updated_at: 0,
        },
        Err(e) => return Err(e.into()),
        Ok(Some(v)) if !v.value.meta.deleted => v.value.meta,
        Ok(_) => return Err(not_found(call, id, "certificateId")),
    };
    let removed = mappings::modify(call, |doc| {
        let users: Vec<_> = doc
            .mappings
            .iter()
            .filter(|m| m.certificate_id == id)
            .map(|m| (m.id, m.name.clone()))
            .collect();
        if !users.is_empty() && !cascade {
            return Err(ApiError::conflict(
                "certificate_in_use",
                "certificateId",
                format!(
                    "certificate {id} is used by mapping(s) {}; delete or re-point them first, or repeat with ?cascade=true to delete them too",
                    users
                        .iter()
                        .map(|(i, n)| format!("{i} ({n:?})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        doc.mappings.retain(|m| m.certificate_id != id);
        Ok(users)
    })
    .await?;
    // Mappings first: a failure here leaves a certificate without mappings, never the reverse.
    call.state
        .refresher
        .store()
        .delete_certificate(&call.account, id)
        .await?;
    for (mid, name) in &removed {
        call.audit(
            "delete",
            "mapping",
            *mid,
            json!({"name": name, "cascadeFrom": id}),
        );
    }
    call.audit("delete", "certificate", id, json!({"name": meta.name}));
    call.refresh().await;
    let snap = call.state.refresher.snapshot().load();
    let mut meta = meta;
    meta.deleted = true;
    let mut out = entity(&meta, &snap, call.now);
    out["status"] = json!("UnAvailable");
    // The answer to a delete is the entity as it always was: a state says nothing about an
    // object that is gone.
    if let Value::Object(m) = &mut out {
        for k in ["state", "stateReason", "warnings", "certificate"] {
            m.remove(k);
        }
    }
    Ok(json(StatusCode::OK, out))
}
