//! Console pages: certificates.
//!
//! - `GET  /console/a/{account}/certificates`: the list (`table#certificates`), with each
//!   certificate's subject, issuer, serial, key type, not-after, status ([`display_state`]) and
//!   the mappings that use it.
//! - `GET  /console/a/{account}/certificates/new`: add one, by PKCS#12 file (`form#upload-form`:
//!   check it with the tester in place, then save) or by CSR (`form#csr-form`).
//! - `POST /console/a/{account}/certificates/new`: `action=test` (the tester's verdict,
//!   `section#tester-verdict`; only that fragment with `X-Console-Fragment: 1`) or `action=save`.
//! - `POST /console/a/{account}/certificates/csr`: a new entry whose key the gateway makes.
//! - `GET  /console/a/{account}/certificates/{id}`: one certificate: facts, versions, the pending
//!   CSR and its completion, renew, replace, delete.
//! - `GET  /console/a/{account}/certificates/{id}/csr`: the pending CSR as a download.
//! - `POST .../{id}/signed`, `.../{id}/discard`, `.../{id}/renew`, `.../{id}/replace`.
//! - `GET|POST /console/a/{account}/certificates/{id}/delete`: names the mappings that would
//!   break, then deletes (with them, when asked).
//!
//! Every page reads and writes through the admin API's own handlers ([`super::api`]); the
//! PKCS#12 password and file are handed to the API and never rendered back.

use std::collections::HashMap;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use maud::{html, Markup};
use serde_json::{json, Value};

use super::layout::{badge, csrf_field, date, error_box, page, page_with_status, Notice};
use super::{
    account_certificates, account_mappings, api, certificate_url, days_left, enc, form_post,
    id_text, json_body, see_other, session_for, unix_of, Answer, FormBody, Refusal, Session,
    FORM_MAX,
};
use crate::admin::{AdminState, Op};

pub fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/console/a/{account}/certificates", get(list))
        .route(
            "/console/a/{account}/certificates/new",
            get(new_page).post(new_post),
        )
        .route("/console/a/{account}/certificates/csr", post(csr_post))
        .route("/console/a/{account}/certificates/{id}", get(show))
        .route(
            "/console/a/{account}/certificates/{id}/csr",
            get(csr_download),
        )
        .route(
            "/console/a/{account}/certificates/{id}/signed",
            post(signed_post),
        )
        .route(
            "/console/a/{account}/certificates/{id}/discard",
            post(discard_post),
        )
        .route(
            "/console/a/{account}/certificates/{id}/renew",
            post(renew_post),
        )
        .route(
            "/console/a/{account}/certificates/{id}/replace",
            post(replace_post),
        )
        .route(
            "/console/a/{account}/certificates/{id}/delete",
            get(delete_page).post(delete_post),
        )
}

/// Days before the not-after from which a certificate shows as expiring soon.
pub(crate) const EXPIRING_DAYS: i64 = 30;

// ---------------------------------------------------------------------------------------------
// Pure helpers.

/// The one status a page shows for a certificate entity of the API, the first that applies:
/// `awaiting_signature` (the entity's state), `cutover_refused` (`lifecycle.cutoverRefused`),
/// `renewing` (`lifecycle.pending` while a version serves), `expired`, the entity's own state
/// when the version cannot serve (`unusable`, `load_failed`, `not_yet_valid`), `expiring` (at
/// most [`EXPIRING_DAYS`] days left), `available`.
pub(crate) fn display_state(entity: &Value, now: i64) -> &'static str {
    let state = entity["state"].as_str().unwrap_or("");
    if state == "awaiting_signature" {
        return "awaiting_signature";
    }
    let lifecycle = &entity["lifecycle"];
    if lifecycle["cutoverRefused"].is_object() {
        return "cutover_refused";
    }
    if lifecycle["pending"].is_object() {
        return "renewing";
    }
    let not_after = not_after_of(entity);
    if state == "expired" || not_after.is_some_and(|t| t < now) {
        return "expired";
    }
    // A version that cannot serve says so before it says when it expires.
    match state {
        "unusable" => return "unusable",
        "load_failed" => return "load_failed",
        "not_yet_valid" => return "not_yet_valid",
        _ => {}
    }
    if not_after.is_some_and(|t| days_left(t, now) <= EXPIRING_DAYS) {
        return "expiring";
    }
    match state {
        "available" => "available",
        _ => "load_failed",
    }
}

/// The entity's not-after (unix seconds): `expirationDate`, else the loaded leaf's.
fn not_after_of(entity: &Value) -> Option<i64> {
    entity["expirationDate"]
        .as_str()
        .or_else(|| entity["certificate"]["notAfter"].as_str())
        .and_then(unix_of)
}

/// An RFC 3339 time of the API as the console writes dates, or the text itself.
fn show_time(s: Option<&str>) -> Option<String> {
    s.map(|t| unix_of(t).map(date).unwrap_or_else(|| t.to_string()))
}

/// `(N days left)` or `(expired N days ago)`.
fn days_words(not_after: i64, now: i64) -> String {
    let plural = |n: i64| if n == 1 { "day" } else { "days" };
    if not_after < now {
        let ago = (now - not_after).div_euclid(86_400);
        format!("(expired {ago} {} ago)", plural(ago))
    } else {
        let left = days_left(not_after, now);
        format!("({left} {} left)", plural(left))
    }
}

/// The SANs typed in the CSR form: one per line or comma separated, blanks dropped.
fn split_names(text: &str) -> Vec<String> {
    text.split(['\n', '\r', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The tester's check names in words.
fn check_words(name: &str) -> &str {
    match name {
        "opens_with_password" => "Opens with the password",
        "one_private_key_matching_leaf" => "One private key, matching the certificate",
        "chain_order" => "Chain in order",
        "key_algorithm_and_strength" => "Key algorithm and strength",
        "signature_algorithm" => "Signature algorithm",
        "validity_window" => "Valid now",
        "client_auth_usage" => "Allowed for client authentication",
        "readable_by_java_pkcs12" => "Readable by Java",
        other => other,
    }
}

/// A multipart/form-data body of `parts` (name, file name for a file part, bytes), with a
/// boundary that none of the parts contains. Returns (content type, body).
fn multipart_body(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Bytes) {
    let mut boundary = String::from("mtls-console-boundary-7f3a9c");
    let mut n = 0u32;
    while parts
        .iter()
        .any(|(_, _, data)| contains(data, boundary.as_bytes()))
    {
        n += 1;
        boundary = format!("mtls-console-boundary-7f3a9c-{n}");
    }
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Mapping id -> name, and certificate id -> the mappings using it (id, name), of a
/// `ListMappings` answer (deleted mappings left out).
struct MappingUse {
    names: HashMap<String, String>,
    by_cert: HashMap<String, Vec<(String, String)>>,
}

impl MappingUse {
    fn of(list: &[Value]) -> MappingUse {
        let mut names = HashMap::new();
        let mut by_cert: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for m in list {
            if m["deleted"].as_bool() == Some(true) {
                continue;
            }
            let id = id_text(&m["id"]);
            let name = m["name"].as_str().unwrap_or("").to_string();
            let name = if name.is_empty() { id.clone() } else { name };
            names.insert(id.clone(), name.clone());
            by_cert
                .entry(id_text(&m["certificationId"]))
                .or_default()
                .push((id, name));
        }
        MappingUse { names, by_cert }
    }

    fn users(&self, cert_id: &str) -> &[(String, String)] {
        self.by_cert.get(cert_id).map(Vec::as_slice).unwrap_or(&[])
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces.

fn list_url(account: &str) -> String {
    format!("/console/a/{}/certificates", enc(account))
}

fn mapping_link(account: &str, id: &str, name: &str) -> Markup {
    html! { a href={ "/console/a/" (enc(account)) "/mappings/" (enc(id)) } { (name) } }
}

fn certs_path(account: &str) -> String {
    format!("/mtls/account/{}/certificates", enc(account))
}

/// A refusal page from an API answer that failed.
fn api_refusal(a: &Answer) -> Response {
    Refusal::Page(a.status, a.error()).into_response()
}

fn is_fragment(headers: &HeaderMap) -> bool {
    headers
        .get("x-console-fragment")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1")
}

/// The form limit of a multipart upload: the API's file limit plus room for the other fields.
fn upload_limit(state: &AdminState) -> usize {
    state.cfg.admin.max_upload_bytes + 64 * 1024
}

/// A non-empty file part of a form.
fn chosen_file<'a>(form: &'a FormBody, name: &str) -> Option<&'a Bytes> {
    form.file(name).filter(|b| !b.is_empty())
}

// ---------------------------------------------------------------------------------------------
// The list.

async fn list(
    State(state): State<AdminState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let s = match session_for(&state, &headers, &account) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let items = match account_certificates(&state, &s, &account).await {
        Ok(list) => list,
        Err(a) => return api_refusal(&a),
    };
    let maps = account_mappings(&state, &s, &account).await;
    let uses = MappingUse::of(maps.as_deref().unwrap_or_default());
    let now = crate::admin::unix_now();
    let content = html! {
        h1 { "Certificates" }
        p { a id="add-certificate" href={ (list_url(&account)) "/new" } { "Add a certificate" } }
        @if let Err(a) = &maps {
            p.error role="alert" { "The mappings could not be read: " (a.error()) }
        }
        @if items.is_empty() {
            p id="no-certificates" { "This account has no certificates yet." }
        }
        table id="certificates" {
            caption { "Certificates of account " (account) }
            thead {
                tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Subject" }
                    th scope="col" { "Issuer" }
                    th scope="col" { "Serial" }
                    th scope="col" { "Key type" }
                    th scope="col" { "Not after" }
                    th scope="col" { "Status" }
                    th scope="col" { "Used by" }
                }
            }
            tbody {
                @for e in &items {
                    (list_row(&account, e, &uses, now))
                }
            }
        }
    };
    page(
        &state,
        &s,
        Some(&account),
        "Certificates",
        Notice::from_query(uri.query()),
        content,
    )
}

fn list_row(account: &str, e: &Value, uses: &MappingUse, now: i64) -> Markup {
    let id = id_text(&e["id"]);
    let name = e["name"].as_str().unwrap_or("");
    let c = &e["certificate"];
    let not_after = not_after_of(e);
    let users = uses.users(&id);
    html! {
        tr data-cert-id=(id) data-name=(name) {
            th scope="row" { a href=(certificate_url(account, &id)) { (if name.is_empty() { id.as_str() } else { name }) } }
            td { (c["subject"].as_str().unwrap_or("—")) }
            td { (c["issuer"].as_str().unwrap_or("—")) }
            td.mono { (c["serial"].as_str().unwrap_or("—")) }
            td { (c["keyType"].as_str().unwrap_or("—")) }
            td {
                @if let Some(t) = not_after {
                    (date(t)) " " span.days { (days_words(t, now)) }
                } @else { "—" }
            }
            td.status { (badge(display_state(e, now))) }
            td {
                @if users.is_empty() {
                    span.none { "none" }
                } @else {
                    ul.inline {
                        @for (mid, mname) in users {
                            li { (mapping_link(account, mid, mname)) }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Adding a certificate.

/// What the user typed into the two forms of the new page (never the password or the file).
#[derive(Default)]
struct NewValues {
    upload_name: String,
    csr_name: String,
    csr_cn: String,
    csr_org: String,
    csr_dns: String,
    csr_key_type: String,
}

/// Which form an error belongs to.
enum NewError {
    Upload(String),
    Csr(String),
}

async fn new_page(
    State(state): State<AdminState>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = match session_for(&state, &headers, &account) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    new_form(
        &state,
        &s,
        &account,
        StatusCode::OK,
        &NewValues::default(),
        None,
        None,
    )
}

fn new_form(
    state: &AdminState,
    s: &Session,
    account: &str,
    status: StatusCode,
    v: &NewValues,
    error: Option<NewError>,
    verdict: Option<Markup>,
) -> Response {
    let base = list_url(account);
    let key_types = [
        ("EC-P256", "EC P-256 (recommended)"),
        ("RSA-2048", "RSA 2048"),
        ("RSA-3072", "RSA 3072"),
    ];
    let chosen_kt = if v.csr_key_type.is_empty() {
        "EC-P256"
    } else {
        v.csr_key_type.as_str()
    };
    let content = html! {
        h1 { "Add a certificate" }
        p { a href=(base) { "Back to the certificates" } }
        section id="upload-section" aria-labelledby="upload-heading" {
            h2 id="upload-heading" { "Upload a PKCS#12 file" }
            @if let Some(NewError::Upload(m)) = &error { (error_box(m)) }
            form id="upload-form" method="post" enctype="multipart/form-data" action={ (base) "/new" } {
                (csrf_field(s))
                p {
                    label for="upload-name" { "Name" }
                    input id="upload-name" name="name" type="text" required maxlength="256" value=(v.upload_name);
                }
                p {
                    label for="upload-file" { "PKCS#12 file (.p12, .pfx)" }
                    input id="upload-file" name="file" type="file" accept=".p12,.pfx" required;
                }
                p {
                    label for="upload-password" { "File password" }
                    input id="upload-password" name="password" type="password" autocomplete="off";
                }
                p.hint { "Check the file first: the tester opens it and lists what partners will think of it. Nothing is saved until you choose Save." }
                p.actions {
                    button type="submit" id="test-file" name="action" value="test" data-inplace="tester-result" { "Check the file" }
                    " "
                    button type="submit" id="save-file" name="action" value="save" { "Save" }
                }
                div id="tester-result" tabindex="-1" aria-live="polite" {
                    @if let Some(m) = verdict { (m) }
                }
            }
        }
        section id="csr-section" aria-labelledby="csr-heading" {
            h2 id="csr-heading" { "Or start with a certificate signing request" }
            p.hint { "The gateway makes the key and keeps it; you download the CSR, have it signed, and upload the signed certificate on the certificate's page." }
            @if let Some(NewError::Csr(m)) = &error { (error_box(m)) }
            form id="csr-form" method="post" action={ (base) "/csr" } {
                (csrf_field(s))
                p {
                    label for="csr-name" { "Name" }
                    input id="csr-name" name="name" type="text" required maxlength="256" value=(v.csr_name);
                }
                p {
                    label for="csr-cn" { "Common name (CN)" }
                    input id="csr-cn" name="commonName" type="text" required value=(v.csr_cn);
                }
                p {
                    label for="csr-org" { "Organization (O, optional)" }
                    input id="csr-org" name="organization" type="text" value=(v.csr_org);
                }
                p {
                    label for="csr-dns" { "DNS names (one per line or comma separated, optional)" }
                    textarea id="csr-dns" name="dnsNames" rows="3" spellcheck="false" { (v.csr_dns) }
                }
                p {
                    label for="csr-key-type" { "Key type" }
                    select id="csr-key-type" name="keyType" {
                        @for (val, words) in key_types {
                            option value=(val) selected[val == chosen_kt] { (words) }
                        }
                    }
                }
                p.actions { button type="submit" id="start-csr" { "Make the key and CSR" } }
            }
        }
    };
    page_with_status(
        state,
        s,
        Some(account),
        "Add a certificate",
        None,
        status,
        content,
    )
}

/// The tester's verdict (a 200 report or a 422 `p12_unusable` with the report).
fn verdict(report: &Value) -> Markup {
    let usable = report["usable"].as_bool() == Some(true);
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    // Whether the save would accept it: it opens, with one key matching the leaf.
    let opens = ["opens_with_password", "one_private_key_matching_leaf"]
        .iter()
        .all(|n| {
            checks
                .iter()
                .any(|c| c["name"] == *n && c["passed"].as_bool() == Some(true))
        });
    let facts = [
        ("Subject", report["subject"].as_str().map(str::to_string)),
        ("Issuer", report["issuer"].as_str().map(str::to_string)),
        ("Serial", report["serial"].as_str().map(str::to_string)),
        (
            "Key",
            report["keyAlgorithm"]
                .as_str()
                .map(|k| match report["keyBits"].as_u64() {
                    Some(b) if k == "RSA" => format!("RSA {b}"),
                    _ => k.to_string(),
                }),
        ),
        ("Not before", show_time(report["notBefore"].as_str())),
        ("Not after", show_time(report["notAfter"].as_str())),
        (
            "Signature",
            report["signatureAlgorithm"].as_str().map(str::to_string),
        ),
        (
            "Chain",
            report["chainLength"]
                .as_u64()
                .map(|n| format!("{n} certificate(s) besides the leaf")),
        ),
        (
            "Protection",
            report["protection"].as_str().map(str::to_string),
        ),
    ];
    html! {
        section id="tester-verdict" data-verdict=(if usable { "pass" } else { "fail" }) aria-labelledby="verdict-heading" {
            h3 id="verdict-heading" {
                @if usable { "The file passes every check" } @else { "The file fails some checks" }
            }
            @if !usable {
                @if opens {
                    p.hint { "It can still be saved: it opens with its password. The certificate then shows the problems as warnings, and partners may refuse it." }
                } @else {
                    p.hint { "It cannot be saved: it does not open with this password as a certificate with its key." }
                }
            }
            ul.checks {
                @for c in &checks {
                    @let ok = c["passed"].as_bool() == Some(true);
                    @let name = c["name"].as_str().unwrap_or("");
                    li data-check=(name) data-ok=(if ok { "true" } else { "false" }) {
                        span.verdict { (if ok { "Passed" } else { "Failed" }) }
                        ": " strong { (check_words(name)) } " — " (c["detail"].as_str().unwrap_or(""))
                    }
                }
            }
            @if facts.iter().any(|(_, v)| v.is_some()) {
                dl.facts {
                    @for (k, v) in &facts {
                        @if let Some(v) = v { dt { (k) } dd { (v) } }
                    }
                }
            }
        }
    }
}

/// Runs the P12 tester on `file` with `password` through the API: the verdict, or the API's
/// error (status, message) when it gave no report.
async fn run_tester(
    state: &AdminState,
    s: &Session,
    account: &str,
    file: &[u8],
    password: &str,
) -> Result<Markup, (StatusCode, String)> {
    let (ct, body) = multipart_body(&[
        ("file", Some("upload.p12"), file),
        ("password", None, password.as_bytes()),
    ]);
    let a = api(
        state,
        s,
        Op::P12Test,
        Method::POST,
        &format!("/mtls/account/{}/p12-test/multipart", enc(account)),
        &[("accountId", account)],
        Some(&ct),
        body,
    )
    .await;
    if a.json["checks"].is_array() {
        Ok(verdict(&a.json))
    } else {
        Err((a.status, a.error()))
    }
}

async fn new_post(
    State(state): State<AdminState>,
    Path(account): Path<String>,
    req: Request,
) -> Response {
    let fragment = is_fragment(req.headers());
    let limit = upload_limit(&state);
    let (s, form) = match form_post(&state, &account, req, limit).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let values = NewValues {
        upload_name: form.get("name").unwrap_or("").to_string(),
        ..NewValues::default()
    };
    let password = form.get("password").unwrap_or("").to_string();
    let file = chosen_file(&form, "file").cloned();
    let redo = |status: StatusCode, error: Option<NewError>, verdict: Option<Markup>| {
        new_form(&state, &s, &account, status, &values, error, verdict)
    };
    match form.get("action").unwrap_or("save") {
        "test" => {
            let Some(file) = file else {
                let msg = "Choose the .p12/.pfx file to check first.";
                if fragment {
                    return (StatusCode::BAD_REQUEST, Html(error_box(msg).into_string()))
                        .into_response();
                }
                return redo(
                    StatusCode::BAD_REQUEST,
                    Some(NewError::Upload(msg.into())),
                    None,
                );
            };
            match run_tester(&state, &s, &account, &file, &password).await {
                Ok(v) if fragment => Html(v.into_string()).into_response(),
                Ok(v) => redo(StatusCode::OK, None, Some(v)),
                Err((status, msg)) if fragment => {
                    (status, Html(error_box(&msg).into_string())).into_response()
                }
                Err((status, msg)) => redo(status, Some(NewError::Upload(msg)), None),
            }
        }
        "save" => {
            let Some(file) = file else {
                return redo(
                    StatusCode::BAD_REQUEST,
                    Some(NewError::Upload(
                        "Choose the .p12/.pfx file to save.".into(),
                    )),
                    None,
                );
            };
            let meta = json!({"name": values.upload_name, "password": password});
            let meta = serde_json::to_vec(&meta).unwrap_or_default();
            let (ct, body) = multipart_body(&[
                ("file", Some("upload.p12"), &file),
                ("certificate", None, &meta),
            ]);
            let a = api(
                &state,
                &s,
                Op::CreateCertificateByFile,
                Method::POST,
                &format!("{}/by-file", certs_path(&account)),
                &[("accountId", &account)],
                Some(&ct),
                body,
            )
            .await;
            if a.ok() {
                let id = id_text(&a.json["successfulySavedCertificates"][0]["id"]);
                if !id.is_empty() {
                    return see_other(&format!(
                        "{}?notice=created",
                        certificate_url(&account, &id)
                    ));
                }
                return see_other(&format!("{}?notice=created", list_url(&account)));
            }
            let file_problem = matches!(
                a.json["error"].as_str(),
                Some("invalid_p12" | "wrong_password")
            );
            let v = if file_problem {
                run_tester(&state, &s, &account, &file, &password)
                    .await
                    .ok()
            } else {
                None
            };
            redo(a.status, Some(NewError::Upload(a.error())), v)
        }
        _ => redo(
            StatusCode::BAD_REQUEST,
            Some(NewError::Upload(
                "Choose \"Check the file\" or \"Save\".".into(),
            )),
            None,
        ),
    }
}

async fn csr_post(
    State(state): State<AdminState>,
    Path(account): Path<String>,
    req: Request,
) -> Response {
    let (s, form) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let values = NewValues {
        csr_name: form.get("name").unwrap_or("").to_string(),
        csr_cn: form.get("commonName").unwrap_or("").to_string(),
        csr_org: form.get("organization").unwrap_or("").to_string(),
        csr_dns: form.get("dnsNames").unwrap_or("").to_string(),
        csr_key_type: form.get("keyType").unwrap_or("").to_string(),
        ..NewValues::default()
    };
    let mut subject = json!({
        "commonName": values.csr_cn.trim(),
        "dnsNames": split_names(&values.csr_dns),
    });
    if !values.csr_org.trim().is_empty() {
        subject["organization"] = json!(values.csr_org.trim());
    }
    let mut body = json!({"name": values.csr_name, "subject": subject});
    if !values.csr_key_type.is_empty() {
        body["keyType"] = json!(values.csr_key_type);
    }
    let a = api(
        &state,
        &s,
        Op::CreateCsr,
        Method::POST,
        &format!("{}/csr", certs_path(&account)),
        &[("accountId", &account)],
        Some("application/json"),
        json_body(&body),
    )
    .await;
    if a.ok() {
        let id = id_text(&a.json["id"]);
        return see_other(&format!(
            "{}?notice=created",
            certificate_url(&account, &id)
        ));
    }
    new_form(
        &state,
        &s,
        &account,
        a.status,
        &values,
        Some(NewError::Csr(a.error())),
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// One certificate.

async fn show(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let s = match session_for(&state, &headers, &account) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    cert_page(
        &state,
        &s,
        &account,
        &id,
        Notice::from_query(uri.query()),
        None,
    )
    .await
}

/// A form of the certificate page shown again: the API's refusal, and what was typed.
struct PageError {
    status: StatusCode,
    /// The form it belongs to (`signed`, `discard`, `renew`, `replace`).
    form: &'static str,
    message: String,
    /// The PEM text typed into the signed-certificate form (public).
    signed: Option<String>,
}

async fn get_cert(state: &AdminState, s: &Session, account: &str, id: &str) -> Answer {
    api(
        state,
        s,
        Op::GetCertificate,
        Method::GET,
        &format!("{}/{}", certs_path(account), enc(id)),
        &[("accountId", account), ("certificateId", id)],
        None,
        Bytes::new(),
    )
    .await
}

async fn cert_page(
    state: &AdminState,
    s: &Session,
    account: &str,
    id: &str,
    notice: Option<Notice>,
    error: Option<PageError>,
) -> Response {
    let e = get_cert(state, s, account, id).await;
    if !e.ok() {
        return api_refusal(&e);
    }
    let e = e.json;
    let maps = account_mappings(state, s, account).await;
    let uses = MappingUse::of(maps.as_deref().unwrap_or_default());
    let now = crate::admin::unix_now();
    let lc = &e["lifecycle"];
    let pending = lc["pending"].is_object();
    let awaiting = e["state"].as_str() == Some("awaiting_signature");
    let csr = if pending {
        let a = api(
            state,
            s,
            Op::GetCsr,
            Method::GET,
            &format!("{}/{}/csr", certs_path(account), enc(id)),
            &[("accountId", account), ("certificateId", id)],
            None,
            Bytes::new(),
        )
        .await;
        a.json["csr"].as_str().map(str::to_string)
    } else {
        None
    };
    let name = e["name"].as_str().unwrap_or(id).to_string();
    let base = certificate_url(account, id);
    let status_name = display_state(&e, now);
    let c = &e["certificate"];
    let not_after = not_after_of(&e);
    let not_before = c["notBefore"].as_str().and_then(unix_of);
    let users = uses.users(id);
    let err_for = |form: &str| {
        error
            .as_ref()
            .filter(|pe| pe.form == form)
            .map(|pe| error_box(&pe.message))
    };
    let signed_text = error
        .as_ref()
        .and_then(|pe| pe.signed.clone())
        .unwrap_or_default();
    let version = lc["version"].as_u64().unwrap_or(1);
    let warnings: Vec<&str> = e["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let unknown = if awaiting {
        "none yet (no signed certificate was uploaded)"
    } else {
        "not known (this replica has not loaded the certificate)"
    };
    let title = format!("Certificate {name}");
    // An error of a form this page no longer shows (the pending version is gone) goes on top.
    let shown = |form: &str| match form {
        "signed" => pending,
        "discard" => pending && !awaiting,
        _ => true,
    };
    let top_error = error
        .as_ref()
        .filter(|pe| !shown(pe.form))
        .map(|pe| error_box(&pe.message));

    let content = html! {
        h1 { (name) }
        p { a href=(list_url(account)) { "All certificates" } }
        @if let Some(b) = &top_error { (b) }
        p { "Status: " span id="cert-status" { (badge(status_name)) } }
        dl id="cert-facts" {
            dt { "Subject" } dd { (c["subject"].as_str().unwrap_or(unknown)) }
            dt { "Issuer" } dd { (c["issuer"].as_str().unwrap_or(unknown)) }
            dt { "Serial" } dd.mono { (c["serial"].as_str().unwrap_or(unknown)) }
            dt { "Key type" } dd { (c["keyType"].as_str().unwrap_or(unknown)) }
            dt { "Not before" } dd { (not_before.map(date).unwrap_or_else(|| unknown.to_string())) }
            dt { "Not after" } dd { (not_after.map(date).unwrap_or_else(|| unknown.to_string())) }
            dt { "Days left" } dd id="days-left" {
                @if let Some(t) = not_after {
                    @if t < now { "none: " (days_words(t, now)) } @else { (days_left(t, now)) }
                } @else { (unknown) }
            }
            @if let Some(sha) = c["sha256"].as_str() {
                dt { "SHA-256" } dd.mono { (sha) }
            }
            dt { "Status" } dd { (status_words(status_name)) }
            @if let Some(src) = lc["source"].as_str() {
                dt { "Source" } dd { (source_words(src)) }
            }
            @if let Some(r) = e["stateReason"].as_str() {
                dt { "Why" } dd id="state-reason" { (r) }
            }
            @if !warnings.is_empty() {
                dt { "Warnings" }
                dd { ul id="cert-warnings" { @for w in &warnings { li { (w) } } } }
            }
        }

        section id="versions-section" aria-labelledby="versions-heading" {
            h2 id="versions-heading" { "Versions" }
            table id="versions" {
                thead {
                    tr {
                        th scope="col" { "Version" }
                        th scope="col" { "Role" }
                        th scope="col" { "Serial" }
                        th scope="col" { "Key type" }
                        th scope="col" { "Dates" }
                    }
                }
                tbody {
                    @if awaiting {
                        tr id="serving-version" {
                            th scope="row" { "—" }
                            td colspan="4" { "No version serves yet: the first CSR waits for its signed certificate." }
                        }
                    } @else {
                        tr id="serving-version" {
                            th scope="row" { (version) }
                            td { "Serving" }
                            td.mono { (c["serial"].as_str().unwrap_or("—")) }
                            td { (c["keyType"].as_str().unwrap_or("—")) }
                            td { "not after " (not_after.map(date).unwrap_or_else(|| "—".into())) }
                        }
                    }
                    @if pending {
                        @let p = &lc["pending"];
                        tr id="pending-version" {
                            th scope="row" { (if awaiting { 1 } else { version + 1 }) }
                            td { "Pending: " (pending_words(p["reason"].as_str().unwrap_or(""))) }
                            td.mono { "—" }
                            td { (p["keyType"].as_str().unwrap_or("—")) }
                            td { "created " (show_time(p["createdAt"].as_str()).unwrap_or_else(|| "—".into())) }
                        }
                    }
                }
            }
            @if lc["cutoverRefused"].is_object() {
                @let r = &lc["cutoverRefused"];
                section id="cutover-refused" aria-labelledby="cutover-heading" {
                    h3 id="cutover-heading" { "Cut-over refused" }
                    p {
                        "A target refused the new version "
                        span.mono { (r["serial"].as_str().unwrap_or("")) }
                        @if let Some(at) = show_time(r["at"].as_str()) { " at " (at) }
                        ": " (r["reason"].as_str().unwrap_or("no reason given"))
                        ". The previous version keeps serving; fix the target's trust and upload the signed certificate again."
                    }
                    @let ids = r["mappingIds"].as_array().cloned().unwrap_or_default();
                    @if !ids.is_empty() {
                        p { "Mappings whose target refused it:" }
                        ul id="refusing-mappings" {
                            @for m in &ids {
                                @let mid = id_text(m);
                                li { (mapping_link(account, &mid, uses.names.get(&mid).map(String::as_str).unwrap_or(&mid))) }
                            }
                        }
                    }
                }
            }
            @if lc["renewal"].is_object() {
                @let r = &lc["renewal"];
                section id="renewal" aria-labelledby="renewal-heading" {
                    h3 id="renewal-heading" { "Automatic renewal (Vault PKI)" }
                    dl id="renewal-facts" {
                        dt { "PKI mount / role" }
                        dd { (lc["pki"]["mount"].as_str().unwrap_or("?")) " / " (lc["pki"]["role"].as_str().unwrap_or("?")) }
                        dt { "Renews at" } dd { (show_time(r["renewAt"].as_str()).unwrap_or_else(|| "not known on this replica".into())) }
                        dt { "Last renewed" } dd { (show_time(r["lastRenewedAt"].as_str()).unwrap_or_else(|| "never".into())) }
                        dt { "Failed attempts" } dd { (r["failures"].as_u64().unwrap_or(0)) }
                        @if let Some(err) = r["lastError"].as_str() { dt { "Last error" } dd { (err) } }
                        @if let Some(t) = show_time(r["nextAttemptAt"].as_str()) { dt { "Next attempt" } dd { (t) } }
                        @if let Some(o) = r["leaseOwner"].as_str() { dt { "Renewing replica" } dd { (o) } }
                    }
                }
            }
        }

        @if pending {
            section id="pending-section" aria-labelledby="pending-heading" {
                h2 id="pending-heading" { "Complete the pending version" }
                p { "Have this CSR signed by your CA, then paste the signed certificate (leaf first, then its chain) below." }
                @if let Some(pem) = &csr {
                    pre id="csr-pem" { (pem) }
                }
                p { a id="download-csr" href={ (base) "/csr" } download={ "certificate-" (id) ".csr" } { "Download the CSR" } }
                (err_for("signed").unwrap_or_default())
                form id="signed-form" method="post" action={ (base) "/signed" } {
                    (csrf_field(s))
                    p {
                        label for="signed-certificate" { "Signed certificate (PEM: leaf first, then the chain)" }
                        textarea id="signed-certificate" name="certificate" rows="10" required spellcheck="false" { (signed_text) }
                    }
                    p.actions { button type="submit" id="complete-csr" { "Put it into service" } }
                }
                @if !awaiting {
                    (err_for("discard").unwrap_or_default())
                    form id="discard-form" method="post" action={ (base) "/discard" } {
                        (csrf_field(s))
                        p.actions { button type="submit" id="discard-pending" { "Discard the pending version" } }
                    }
                }
            }
        }

        section id="renew-section" aria-labelledby="renew-heading" {
            h2 id="renew-heading" { "Renew" }
            @if lc["pki"].is_object() {
                p { "Vault PKI issues the next version now; it serves at once." }
            } @else {
                p { "The gateway makes a new key and CSR (same subject and key type); the current version keeps serving until the signed certificate is uploaded." }
            }
            (err_for("renew").unwrap_or_default())
            form id="renew-form" method="post" action={ (base) "/renew" } {
                (csrf_field(s))
                p.actions { button type="submit" id="renew" { "Renew" } }
            }
        }

        section id="replace-section" aria-labelledby="replace-heading" {
            h2 id="replace-heading" { "Replace with another PKCS#12 file" }
            (err_for("replace").unwrap_or_default())
            form id="replace-form" method="post" enctype="multipart/form-data" action={ (base) "/replace" } {
                (csrf_field(s))
                p {
                    label for="replace-file" { "New PKCS#12 file (.p12, .pfx)" }
                    input id="replace-file" name="file" type="file" accept=".p12,.pfx" required;
                }
                p {
                    label for="replace-password" { "Its password" }
                    input id="replace-password" name="password" type="password" autocomplete="off";
                }
                p.actions { button type="submit" id="replace" { "Replace" } }
            }
        }

        section id="used-by-section" aria-labelledby="used-by-heading" {
            h2 id="used-by-heading" { "Used by" }
            @if users.is_empty() {
                p id="used-by-none" { "No mapping uses this certificate." }
            }
            ul id="used-by" {
                @for (mid, mname) in users { li { (mapping_link(account, mid, mname)) } }
            }
        }

        p { a id="delete-certificate" href={ (base) "/delete" } { "Delete this certificate…" } }
    };
    match error {
        Some(pe) => page_with_status(state, s, Some(account), &title, notice, pe.status, content),
        None => page(state, s, Some(account), &title, notice, content),
    }
}

fn status_words(state: &str) -> &'static str {
    match state {
        "available" => "Available: presented to partners",
        "expiring" => "Expiring soon: renew or replace it",
        "expired" => "Expired: partners refuse it; renew or replace it",
        "awaiting_signature" => "Awaiting signature: upload the signed certificate for its CSR",
        "renewing" => "Renewing: a new version waits for its signed certificate",
        "cutover_refused" => "Cut-over refused: a target refused the new version",
        "not_yet_valid" => "Not yet valid: partners refuse it until its not-before",
        "unusable" => "Unusable: the P12 tester found problems (see the warnings)",
        _ => "Load failed: this replica does not present the current version",
    }
}

fn source_words(source: &str) -> &str {
    match source {
        "vault-pki" => "Vault PKI (renewed automatically)",
        "csr" => "CSR made by the gateway",
        "upload" => "uploaded PKCS#12 file",
        other => other,
    }
}

fn pending_words(reason: &str) -> &str {
    match reason {
        "csr" => "first CSR, waiting for its signed certificate",
        "renew" => "renewal, waiting for its signed certificate",
        other => other,
    }
}

/// The certificate id of a path as a number, or a 404 page.
fn numeric_id(id: &str) -> Result<u64, Refusal> {
    id.parse::<u64>().map_err(|_| {
        Refusal::Page(
            StatusCode::NOT_FOUND,
            format!("there is no certificate {id:?}: certificate ids are numbers"),
        )
    })
}

async fn csr_download(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = match session_for(&state, &headers, &account) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let n = match numeric_id(&id) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let a = api(
        &state,
        &s,
        Op::GetCsr,
        Method::GET,
        &format!("{}/{n}/csr", certs_path(&account)),
        &[("accountId", &account), ("certificateId", &id)],
        None,
        Bytes::new(),
    )
    .await;
    let Some(pem) = a.json["csr"].as_str().filter(|_| a.ok()) else {
        return api_refusal(&a);
    };
    let disposition = format!("attachment; filename=\"certificate-{n}.csr\"");
    let mut r = (
        [(header::CONTENT_TYPE, "application/pkcs10")],
        pem.to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// A POST of the certificate page that calls the API once: 303 to the page with `notice` on
/// success, the page with the API's error on the form `form` otherwise.
#[allow(clippy::too_many_arguments)]
async fn page_action(
    state: &AdminState,
    s: &Session,
    account: &str,
    id: &str,
    form: &'static str,
    op: Op,
    method: Method,
    path: String,
    params: &[(&str, &str)],
    content_type: Option<&str>,
    body: Bytes,
    notice: impl Fn(&Answer) -> Notice,
    signed: Option<String>,
) -> Response {
    let a = api(state, s, op, method, &path, params, content_type, body).await;
    if a.ok() {
        return see_other(&format!(
            "{}?notice={}",
            certificate_url(account, id),
            notice(&a).name()
        ));
    }
    let message = match a.json["error"].as_str() {
        Some("cutover_refused") => format!(
            "A target refused the new certificate in the cut-over handshake, so it was not put into service; the current version keeps serving and the pending version is kept. {}",
            a.error()
        ),
        _ => a.error(),
    };
    cert_page(
        state,
        s,
        account,
        id,
        None,
        Some(PageError {
            status: a.status,
            form,
            message,
            signed,
        }),
    )
    .await
}

async fn signed_post(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (s, form) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let pem = form.get("certificate").unwrap_or("").to_string();
    page_action(
        &state,
        &s,
        &account,
        &id,
        "signed",
        Op::CompleteCsr,
        Method::POST,
        format!("{}/{}/signed", certs_path(&account), enc(&id)),
        &[("accountId", &account), ("certificateId", &id)],
        Some("application/json"),
        json_body(&json!({"certificate": pem})),
        |_| Notice::Completed,
        Some(pem.clone()),
    )
    .await
}

async fn discard_post(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (s, _) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    page_action(
        &state,
        &s,
        &account,
        &id,
        "discard",
        Op::DiscardPending,
        Method::DELETE,
        format!("{}/{}/pending", certs_path(&account), enc(&id)),
        &[("accountId", &account), ("certificateId", &id)],
        None,
        Bytes::new(),
        |_| Notice::Discarded,
        None,
    )
    .await
}

async fn renew_post(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (s, _) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    page_action(
        &state,
        &s,
        &account,
        &id,
        "renew",
        Op::Renew,
        Method::POST,
        format!("{}/{}/renew", certs_path(&account), enc(&id)),
        &[("accountId", &account), ("certificateId", &id)],
        Some("application/json"),
        json_body(&json!({"newKey": true})),
        // A CSR renewal answers with the new CSR; a Vault PKI renewal serves at once.
        |a| {
            if a.json["csr"].is_string() {
                Notice::Renewing
            } else {
                Notice::Updated
            }
        },
        None,
    )
    .await
}

async fn replace_post(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let limit = upload_limit(&state);
    let (s, form) = match form_post(&state, &account, req, limit).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let n = match numeric_id(&id) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let Some(file) = chosen_file(&form, "file") else {
        return cert_page(
            &state,
            &s,
            &account,
            &id,
            None,
            Some(PageError {
                status: StatusCode::BAD_REQUEST,
                form: "replace",
                message: "Choose the new .p12/.pfx file.".into(),
                signed: None,
            }),
        )
        .await;
    };
    let meta = json!({"id": n, "password": form.get("password").unwrap_or("")});
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    let (ct, body) = multipart_body(&[
        ("file", Some("upload.p12"), file),
        ("certificate", None, &meta),
    ]);
    page_action(
        &state,
        &s,
        &account,
        &id,
        "replace",
        Op::UpdateCertificateByFile,
        Method::PUT,
        format!("{}/by-file", certs_path(&account)),
        &[("accountId", &account)],
        Some(&ct),
        body,
        |_| Notice::Updated,
        None,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Deleting.

async fn delete_page(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = match session_for(&state, &headers, &account) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    delete_form(&state, &s, &account, &id, None).await
}

async fn delete_form(
    state: &AdminState,
    s: &Session,
    account: &str,
    id: &str,
    error: Option<(StatusCode, String, bool)>,
) -> Response {
    let e = get_cert(state, s, account, id).await;
    if !e.ok() {
        return api_refusal(&e);
    }
    let name = e.json["name"].as_str().unwrap_or(id).to_string();
    let maps = account_mappings(state, s, account).await;
    let uses = MappingUse::of(maps.as_deref().unwrap_or_default());
    let users = uses.users(id);
    let base = certificate_url(account, id);
    let cascade = error.as_ref().is_some_and(|(_, _, c)| *c);
    let content = html! {
        h1 { "Delete certificate " (name) }
        p { a href=(base) { "Back to the certificate" } }
        @if let Some((_, m, _)) = &error { (error_box(m)) }
        @if let Err(a) = &maps {
            p.error role="alert" { "The mappings could not be read: " (a.error()) }
        }
        @if users.is_empty() {
            p id="no-breaking-mappings" { "No mapping uses this certificate: deleting it breaks nothing." }
        } @else {
            p { "These mappings use it and stop working (their requests are refused) unless they are deleted with it or pointed at another certificate first:" }
            ul id="breaking-mappings" {
                @for (mid, mname) in users { li { (mapping_link(account, mid, mname)) } }
            }
        }
        form id="delete-form" method="post" action={ (base) "/delete" } {
            (csrf_field(s))
            @if !users.is_empty() {
                p {
                    input id="cascade" type="checkbox" name="cascade" value="true" checked[cascade];
                    " "
                    label for="cascade" { "also delete the mappings that use it" }
                }
            }
            p.actions { button type="submit" id="confirm-delete" { "Delete the certificate" } }
        }
    };
    let title = format!("Delete certificate {name}");
    match error {
        Some((status, _, _)) => {
            page_with_status(state, s, Some(account), &title, None, status, content)
        }
        None => page(state, s, Some(account), &title, None, content),
    }
}

async fn delete_post(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (s, form) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let cascade = matches!(form.get("cascade"), Some("true" | "on"));
    let query = if cascade { "?cascade=true" } else { "" };
    let a = api(
        &state,
        &s,
        Op::DeleteCertificate,
        Method::DELETE,
        &format!("{}/{}{query}", certs_path(&account), enc(&id)),
        &[("accountId", &account), ("certificateId", &id)],
        None,
        Bytes::new(),
    )
    .await;
    if a.ok() {
        return see_other(&format!("{}?notice=deleted", list_url(&account)));
    }
    delete_form(
        &state,
        &s,
        &account,
        &id,
        Some((a.status, a.error(), cascade)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn iso(t: i64) -> String {
        crate::lifecycle::notify::rfc3339(t).expect("in range")
    }

    #[test]
    fn display_state_order() {
        let far = iso(NOW + 200 * 86_400);
        let soon = iso(NOW + 10 * 86_400);
        let past = iso(NOW - 86_400);
        let e = |v: Value| display_state(&v, NOW);
        assert_eq!(
            e(json!({"state": "available", "expirationDate": far})),
            "available"
        );
        assert_eq!(
            e(json!({"state": "available", "expirationDate": soon})),
            "expiring"
        );
        assert_eq!(
            e(json!({"state": "available", "expirationDate": iso(NOW + 30 * 86_400)})),
            "expiring"
        );
        assert_eq!(
            e(json!({"state": "available", "expirationDate": iso(NOW + 31 * 86_400)})),
            "available"
        );
        assert_eq!(
            e(json!({"state": "expired", "expirationDate": past})),
            "expired"
        );
        // A version that cannot serve says so before it says it expires soon.
        assert_eq!(
            e(json!({"state": "unusable", "expirationDate": soon})),
            "unusable"
        );
        assert_eq!(
            e(json!({"state": "not_yet_valid", "expirationDate": soon})),
            "not_yet_valid"
        );
        // The date alone says expired, whatever the state.
        assert_eq!(
            e(json!({"state": "available", "expirationDate": past})),
            "expired"
        );
        assert_eq!(
            e(
                json!({"state": "awaiting_signature", "expirationDate": null,
                     "lifecycle": {"pending": {"reason": "csr"}}})
            ),
            "awaiting_signature"
        );
        assert_eq!(
            e(json!({"state": "available", "expirationDate": soon,
                     "lifecycle": {"pending": {"reason": "renew"}}})),
            "renewing"
        );
        assert_eq!(
            e(json!({"state": "available", "expirationDate": far,
                     "lifecycle": {"pending": {"reason": "renew"}, "cutoverRefused": {"serial": "AB"}}})),
            "cutover_refused"
        );
        assert_eq!(
            e(json!({"state": "expired", "expirationDate": past,
                     "lifecycle": {"cutoverRefused": {"serial": "AB"}}})),
            "cutover_refused"
        );
        for s in ["unusable", "load_failed", "not_yet_valid"] {
            assert_eq!(e(json!({"state": s, "expirationDate": far})), s);
        }
        assert_eq!(e(json!({"state": "load_failed"})), "load_failed");
        // The loaded leaf's date when there is no expirationDate.
        assert_eq!(
            e(json!({"state": "available", "certificate": {"notAfter": soon}})),
            "expiring"
        );
    }

    #[test]
    fn days_in_words() {
        assert_eq!(days_words(NOW + 10 * 86_400 + 5, NOW), "(10 days left)");
        assert_eq!(days_words(NOW + 86_400, NOW), "(1 day left)");
        assert_eq!(days_words(NOW + 3600, NOW), "(0 days left)");
        assert_eq!(days_words(NOW - 3 * 86_400, NOW), "(expired 3 days ago)");
        assert_eq!(days_words(NOW - 60, NOW), "(expired 0 days ago)");
    }

    #[test]
    fn sans_split_on_lines_and_commas() {
        assert_eq!(
            split_names("a.example\r\nb.example, c.example,,\n \n"),
            vec!["a.example", "b.example", "c.example"]
        );
        assert!(split_names("  ").is_empty());
    }

    #[test]
    fn mapping_use_by_certificate() {
        let list = json!([
            {"id": 1, "name": "one", "certificationId": "10"},
            {"id": 2, "name": "", "certificationId": "10"},
            {"id": 3, "name": "gone", "certificationId": "10", "deleted": true},
            {"id": 4, "name": "four", "certificationId": "11"},
        ]);
        let u = MappingUse::of(list.as_array().expect("a list"));
        assert_eq!(
            u.users("10"),
            &[
                ("1".to_string(), "one".to_string()),
                ("2".to_string(), "2".to_string())
            ]
        );
        assert_eq!(u.users("12"), &[]);
        assert_eq!(u.names.get("4").map(String::as_str), Some("four"));
        assert!(MappingUse::of(&[]).by_cert.is_empty());
    }

    #[tokio::test]
    async fn multipart_round_trip() {
        let file = b"--mtls-console-boundary-7f3a9c inside\r\n\x00\xff".to_vec();
        let (ct, body) = multipart_body(&[
            ("file", Some("upload.p12"), &file),
            ("password", None, b"s3cret"),
        ]);
        assert!(ct.ends_with("-1"), "{ct}");
        let req = http::Request::builder()
            .header(header::CONTENT_TYPE, ct)
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        let form = crate::admin::input::multipart(&parts, body)
            .await
            .expect("parses");
        assert_eq!(form.get("file").map(|b| b.to_vec()), Some(file));
        assert_eq!(form.text("password").expect("utf-8"), Some("s3cret"));
    }

    #[test]
    fn verdict_lists_every_check() {
        let report = json!({
            "usable": false,
            "checks": [
                {"name": "opens_with_password", "passed": true, "detail": "opens"},
                {"name": "key_algorithm_and_strength", "passed": false, "detail": "RSA 1024"},
            ],
            "subject": "CN=a", "keyAlgorithm": "RSA", "keyBits": 1024,
        });
        let html = verdict(&report).into_string();
        assert!(html.contains(r#"id="tester-verdict""#));
        assert!(html.contains(r#"data-verdict="fail""#));
        assert!(html.contains(r#"data-check="opens_with_password" data-ok="true""#));
        assert!(html.contains(r#"data-check="key_algorithm_and_strength" data-ok="false""#));
        assert!(html.contains("RSA 1024"));
        assert!(!html.contains("style="));
    }
}
