//! Certificates: list, get, create and update (JSON or multipart file), delete.
//!
//! A certificate is one store document (metadata, PKCS#12 and password together), so each
//! write is all or nothing. A batch is validated whole (types, sizes, names, the file opening
//! with its password) before the first write; a store failure part-way is reported per item in
//! `failedSaveToVaultCertificates`, as LivePerson's save result does.

use std::collections::HashSet;

use axum::http::StatusCode;
use axum::response::Response;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{self, Obj};
use super::{json, mappings, Call, WRITE_LOCK};
use crate::p12::P12Error;
use crate::snapshot::{CertEntry, Snapshot};
use crate::store::{CertificateMeta, CertificateSecret, StoreError, StoredCertificate};

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
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// The certificate entity LivePerson returns: never the file or the password.
pub fn entity(meta: &CertificateMeta, snap: &Snapshot, now: i64) -> Value {
    let not_after = meta.not_after.or_else(|| {
        snap.certs
            .get(&(meta.account_id.clone(), meta.id))
            .and_then(CertEntry::cert)
            .map(|c| c.not_after)
    });
    json!({
        "id": meta.id,
        "deleted": meta.deleted,
        "name": meta.name,
        "displayName": meta.display_name,
        "siteId": meta.account_id,
        "status": status(meta, snap, now),
        "expirationDate": not_after.and_then(iso8601),
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
        .map(|c| entity(&c.meta, &snap, call.now))
        .collect();
    Ok(json(StatusCode::OK, Value::Array(out)))
}

pub async fn get(call: &Call) -> Result<Response, ApiError> {
    call.ensure_snapshot().await;
    let id = input::id_param(call.param("certificateId"), "certificateId")?;
    let cert = load(call, id, "certificateId").await?;
    let snap = call.state.refresher.snapshot().load();
    Ok(json(StatusCode::OK, entity(&cert.meta, &snap, call.now)))
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

/// Opens the file with its password and returns the leaf's not-after: through the shared
/// decoder (iteration cap first, then the blocking pool, a bounded number at a time), never
/// under [`WRITE_LOCK`]. Errors name the field; they never contain the password (`P12Error`
/// guarantees it).
async fn opens(call: &Call, p12: Vec<u8>, password: String, prefix: &str) -> Result<i64, ApiError> {
    match call.state.refresher.decoder().decode(p12, password).await {
        Ok(d) => Ok(d.not_after),
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
                saved.push(doc.meta);
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
        "successfulySavedCertificates": saved.iter().map(|m| entity(m, &snap, call.now)).collect::<Vec<_>>(),
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
    let mut not_after = Vec::with_capacity(items.len());
    for it in &items {
        not_after.push(opens(call, it.p12.clone(), it.password.clone(), &it.field).await?);
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
        .zip(not_after)
        .map(|(it, na)| StoredCertificate {
            meta: CertificateMeta {
                id: crate::store::new_id(),
                account_id: call.account.clone(),
                name: it.name,
                display_name: it.display_name,
                deleted: false,
                not_after: Some(na),
                updated_at: call.now,
            },
            secret: CertificateSecret {
                p12: it.p12,
                password: it.password,
            },
            lifecycle: None,
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
    let mut opened: Vec<Option<(CertificateSecret, i64)>> = Vec::with_capacity(changes.len());
    for c in &changes {
        let Some(cur) = before.iter().find(|e| e.meta.id == c.id) else {
            return Err(not_in_account(call, c));
        };
        opened.push(match merged_secret(cur, c) {
            Some(secret) => {
                let na = opens(call, secret.p12.clone(), secret.password.clone(), &c.field).await?;
                Some((secret, na))
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
            (Some(secret), Some((checked, not_after)))
                if secret.p12 == checked.p12 && secret.password == checked.password =>
            {
                doc.secret = secret;
                doc.meta.not_after = Some(not_after);
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
    Ok(json(StatusCode::OK, out))
}
