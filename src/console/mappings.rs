//! Console pages: mappings. The list with each mapping's checks (v2: the account check, which
//! also judges the certificate; v1: the legacy boolean), create, a mapping's page (edit,
//! enable/disable, the checks, "test this mapping" running the real handshake), delete after a
//! confirmation. Every read and write is the admin API's own handler ([`super::api`]).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{html, Markup};
use serde_json::{json, Map, Value};

use super::layout::{badge, csrf_field, error_box, page_with_status};
use super::{
    account_certificates, account_mappings, api, certificate_url, enc, form_post, id_text,
    json_body, see_other, session_for, Answer, FormBody, Notice, Refusal, Session, FORM_MAX,
};
use crate::admin::{AdminState, Op};

pub fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/console/a/{account}/mappings", get(list).post(create))
        .route("/console/a/{account}/mappings/{id}", get(show).post(save))
        .route("/console/a/{account}/mappings/{id}/toggle", post(toggle))
        .route("/console/a/{account}/mappings/{id}/test", post(test))
        .route(
            "/console/a/{account}/mappings/{id}/delete",
            get(confirm_delete).post(delete),
        )
}

// ------------------------------------------------------------------ paths

fn maps_api(account: &str) -> String {
    format!("/api/account/{}/configuration/ac-common/mtls", enc(account))
}

fn map_api(account: &str, id: &str) -> String {
    format!("{}/{}", maps_api(account), enc(id))
}

/// The console's list of the account's mappings.
pub(crate) fn list_url(account: &str) -> String {
    format!("/console/a/{}/mappings", enc(account))
}

/// The console's page of one mapping.
pub(crate) fn mapping_url(account: &str, id: &str) -> String {
    format!("{}/{}", list_url(account), enc(id))
}

// ------------------------------------------------------------------ data from the API

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// One check's verdict on a mapping.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub ok: bool,
    /// Why it fails (`None` when ok).
    pub reason: Option<String>,
}

impl Check {
    fn ok() -> Check {
        Check {
            ok: true,
            reason: None,
        }
    }

    fn failing(reason: impl Into<String>) -> Check {
        Check {
            ok: false,
            reason: Some(reason.into()),
        }
    }

    fn render(&self) -> Markup {
        html! {
            @if self.ok { (badge("ok")) } @else { (badge("failing")) }
            @if let Some(r) = &self.reason { " " span.reason { (r) } }
        }
    }
}

/// A mapping with its v2 and v1 checks.
pub(crate) struct Checked {
    pub mapping: Value,
    pub v2: Check,
    pub v1: Check,
}

/// The URL a mapping's checks ask about: the mapping's URL, the prefix of a `*` URL.
fn check_url(mapping: &Value) -> String {
    let url = text(mapping, "url");
    url.strip_suffix('*').unwrap_or(url).to_string()
}

/// The key of a triplet in the v1 answer (LivePerson's spelling).
fn v1_key(service: &str, account: &str, url: &str) -> String {
    format!("CertificateMappingParamters{{serviceName='{service}', accountId='{account}', url='{url}'}}")
}

const DISABLED: &str = "the mapping is disabled, so the runtime does not route this URL";
const NOT_ROUTED: &str = "no enabled mapping of the runtime snapshot matches this service and URL (the change may not be loaded yet)";

/// The v2 check (`POST /api/account/{a}/checks/serviceUrlMappings`) and the v1 check (the legacy
/// `POST /mtls/mapping/account/{a}`, the same answer as its `GET` for every mapping at once) of
/// `maps`, asked in batches of `admin.max_items`.
pub(crate) async fn checked(
    state: &AdminState,
    session: &Session,
    account: &str,
    maps: Vec<Value>,
) -> Vec<Checked> {
    let mut out = Vec::with_capacity(maps.len());
    for chunk in maps.chunks(state.cfg.admin.max_items.max(1)) {
        let triplets: Vec<Value> = chunk
            .iter()
            .map(|m| json!({"serviceName": text(m, "serviceName"), "url": check_url(m)}))
            .collect();
        let body = json_body(&Value::Array(triplets));
        let v2 = api(
            state,
            session,
            Op::CheckAccountMappings,
            Method::POST,
            &format!("/api/account/{}/checks/serviceUrlMappings", enc(account)),
            &[("accountId", account)],
            Some("application/json"),
            body.clone(),
        )
        .await;
        let v1 = api(
            state,
            session,
            Op::LegacyCheckPost,
            Method::POST,
            &format!("/mtls/mapping/account/{}", enc(account)),
            &[("accountId", account)],
            Some("application/json"),
            body,
        )
        .await;
        for (i, m) in chunk.iter().enumerate() {
            let enabled = m["enable"] != Value::Bool(false);
            let v2_check = if !v2.ok() {
                Check::failing(format!("the check could not run: {}", v2.error()))
            } else {
                let a = &v2.json[i];
                if !enabled {
                    Check::failing(DISABLED)
                } else if a["exist"] != Value::Bool(true) {
                    Check::failing(NOT_ROUTED)
                } else if let Some(c) = a["certificate"].as_object() {
                    let state = c.get("state").and_then(Value::as_str).unwrap_or("");
                    let reason = c
                        .get("stateReason")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| {
                            c.get("warnings")
                                .and_then(Value::as_array)
                                .and_then(|w| w.first())
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| format!("the certificate is {state}"));
                    // Only a certificate with something wrong is named in the answer.
                    Check::failing(format!("certificate: {reason}"))
                } else {
                    Check::ok()
                }
            };
            let v1_check = if !v1.ok() {
                Check::failing(format!("the check could not run: {}", v1.error()))
            } else {
                let key = v1_key(text(m, "serviceName"), account, &check_url(m));
                match v1.json[&key].as_bool() {
                    Some(true) => Check::ok(),
                    _ if !enabled => Check::failing(DISABLED),
                    _ => Check::failing(NOT_ROUTED),
                }
            };
            out.push(Checked {
                mapping: m.clone(),
                v2: v2_check,
                v1: v1_check,
            });
        }
    }
    out
}

/// The API's refusal as a page.
fn refusal(ans: &Answer) -> Response {
    let status = if ans.status.is_success() {
        StatusCode::BAD_GATEWAY
    } else {
        ans.status
    };
    Refusal::Page(status, ans.error()).into_response()
}

// ------------------------------------------------------------------ forms

/// What the user typed in a mapping form (shown again with an error).
#[derive(Debug, Clone)]
struct Typed {
    name: String,
    service: String,
    url: String,
    certificate: String,
    enabled: bool,
}

impl Default for Typed {
    fn default() -> Typed {
        Typed {
            name: String::new(),
            service: String::new(),
            url: String::new(),
            certificate: String::new(),
            enabled: true,
        }
    }
}

impl Typed {
    fn from_form(f: &FormBody) -> Typed {
        let t = |k: &str| f.get(k).unwrap_or("").trim().to_string();
        Typed {
            name: t("name"),
            service: t("service"),
            url: t("url"),
            certificate: t("certificate"),
            enabled: f.get("enabled").is_some(),
        }
    }

    fn of_mapping(m: &Value) -> Typed {
        Typed {
            name: text(m, "name").to_string(),
            service: text(m, "serviceName").to_string(),
            url: text(m, "url").to_string(),
            certificate: id_text(&m["certificationId"]),
            enabled: m["enable"] != Value::Bool(false),
        }
    }

    /// The ac-common object: empty fields are left out (the API names what is missing; an
    /// empty name is generated on create and kept on update).
    fn to_json(&self) -> Value {
        let mut o = Map::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                o.insert(k.into(), json!(v));
            }
        };
        put("name", &self.name);
        put("serviceName", &self.service);
        put("url", &self.url);
        put("certificationId", &self.certificate);
        o.insert("enable".into(), json!(self.enabled));
        Value::Object(o)
    }
}

/// The fields of a mapping form, ids prefixed with `prefix` (`mapping` or `edit`).
fn fields(state: &AdminState, certs: &[Value], typed: &Typed, prefix: &str) -> Markup {
    let id = |f: &str| format!("{prefix}-{f}");
    let known_cert = certs.iter().any(|c| id_text(&c["id"]) == typed.certificate);
    html! {
        label for=(id("name")) { "Name" }
        input type="text" id=(id("name")) name="name" value=(typed.name) maxlength="256"
            aria-describedby=(id("name-hint"));
        p.hint id=(id("name-hint")) {
            @if prefix == "edit" { "Unique in the account; left empty, the name is kept." }
            @else { "Unique in the account; left empty, one is made from the service and URL." }
        }
        label for=(id("service")) { "Service" }
        select id=(id("service")) name="service" required {
            @for (name, sid) in &state.cfg.services {
                option value=(name) selected[typed.service.eq_ignore_ascii_case(name)] { (name) " (" (sid) ")" }
            }
        }
        label for=(id("url")) { "URL" }
        input type="url" id=(id("url")) name="url" value=(typed.url) required maxlength="4096"
            placeholder="https://api.partner.example/path" aria-describedby=(id("url-hint"));
        p.hint id=(id("url-hint")) { "An absolute https URL; a trailing * maps every URL with that prefix." }
        label for=(id("certificate")) { "Certificate" }
        select id=(id("certificate")) name="certificate" required {
            @if !known_cert && !typed.certificate.is_empty() {
                option value=(typed.certificate) selected { "certificate " (typed.certificate) " (not in this account)" }
            }
            // With several certificates the user picks one; a single one is preselected.
            @if typed.certificate.is_empty() && certs.len() != 1 {
                option value="" selected disabled { "Choose a certificate" }
            }
            @for c in certs {
                @let cid = id_text(&c["id"]);
                option value=(cid) selected[cid == typed.certificate || (typed.certificate.is_empty() && certs.len() == 1)] {
                    (text(c, "name")) " (" (cid) ")"
                }
            }
        }
        div.check-row {
            input type="checkbox" id=(id("enabled")) name="enabled" value="true" checked[typed.enabled];
            " "
            label for=(id("enabled")) { "Enabled (the runtime uses this mapping)" }
        }
    }
}

/// The name of certificate `id` among `certs`, if it is there.
fn cert_name<'a>(certs: &'a [Value], id: &str) -> Option<&'a str> {
    certs
        .iter()
        .find(|c| id_text(&c["id"]) == id)
        .map(|c| text(c, "name"))
}

// ------------------------------------------------------------------ the list

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
    list_page(
        &state,
        &s,
        &account,
        Notice::from_query(uri.query()),
        StatusCode::OK,
        None,
        &Typed::default(),
    )
    .await
}

async fn list_page(
    state: &AdminState,
    s: &Session,
    account: &str,
    notice: Option<Notice>,
    status: StatusCode,
    error: Option<String>,
    typed: &Typed,
) -> Response {
    let maps = match account_mappings(state, s, account).await {
        Ok(m) => m,
        Err(ans) => return refusal(&ans),
    };
    let certs = match account_certificates(state, s, account).await {
        Ok(c) => c,
        Err(ans) => return refusal(&ans),
    };
    let rows = checked(state, s, account, maps).await;
    let content = html! {
        h1 { "Mappings" }
        p.hint { "Each mapping sends calls for a service and URL with a certificate. The checks are the API's: v2 (the account check, which also judges the certificate) and v1 (the legacy check)." }
        @if rows.is_empty() {
            p id="no-mappings" { "This account has no mappings yet." }
        } @else {
            table id="mappings" {
                caption { "Mappings of account " (account) }
                thead {
                    tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Service" }
                        th scope="col" { "URL" }
                        th scope="col" { "Certificate" }
                        th scope="col" { "Enabled" }
                        th scope="col" { "Check v2" }
                        th scope="col" { "Check v1" }
                    }
                }
                tbody {
                    @for r in &rows {
                        @let m = &r.mapping;
                        @let id = id_text(&m["id"]);
                        @let cid = id_text(&m["certificationId"]);
                        tr data-mapping-id=(id) data-name=(text(m, "name")) {
                            th scope="row" { a href=(mapping_url(account, &id)) { (text(m, "name")) } }
                            td.service { (text(m, "serviceName")) }
                            td.mono { (text(m, "url")) }
                            td.certificate {
                                a href=(certificate_url(account, &cid)) {
                                    (cert_name(&certs, &cid).map(str::to_string).unwrap_or_else(|| format!("certificate {cid} (missing)")))
                                }
                            }
                            td.enabled {
                                @if m["enable"] == Value::Bool(false) { (badge("disabled")) } @else { (badge("enabled")) }
                            }
                            td.check-v2 { (r.v2.render()) }
                            td.check-v1 { (r.v1.render()) }
                        }
                    }
                }
            }
        }
        h2 id="create-heading" { "Add a mapping" }
        @if certs.is_empty() {
            p.hint { "Add a certificate first: a mapping needs one." }
        }
        form.stack id="mapping-create" method="post" action=(list_url(account)) aria-labelledby="create-heading" {
            (csrf_field(s))
            @if let Some(e) = &error { (error_box(e)) }
            (fields(state, &certs, typed, "mapping"))
            div.actions {
                button type="submit" id="create-mapping" { "Create mapping" }
            }
        }
    };
    page_with_status(state, s, Some(account), "Mappings", notice, status, content)
}

async fn create(
    State(state): State<AdminState>,
    Path(account): Path<String>,
    req: Request,
) -> Response {
    let (s, form) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let typed = Typed::from_form(&form);
    let ans = api(
        &state,
        &s,
        Op::CreateMappings,
        Method::POST,
        &maps_api(&account),
        &[("accountId", &account)],
        Some("application/json"),
        json_body(&json!([typed.to_json()])),
    )
    .await;
    if ans.ok() {
        return see_other(&format!("{}?notice=created", list_url(&account)));
    }
    list_page(
        &state,
        &s,
        &account,
        None,
        ans.status,
        Some(ans.error()),
        &typed,
    )
    .await
}

// ------------------------------------------------------------------ one mapping

/// What a mapping page shows besides the mapping.
enum Extra {
    None,
    /// The edit form's error, with what was typed.
    EditError(String, Typed),
    /// An error of another action (enable/disable).
    Error(String),
    /// The answer of the test route.
    Test(Answer),
}

async fn get_mapping(
    state: &AdminState,
    s: &Session,
    account: &str,
    id: &str,
) -> Result<Value, Answer> {
    let ans = api(
        state,
        s,
        Op::GetMapping,
        Method::GET,
        &map_api(account, id),
        &[("accountId", account), ("mappingId", id)],
        None,
        bytes::Bytes::new(),
    )
    .await;
    if ans.ok() && ans.json.is_object() {
        Ok(ans.json)
    } else {
        Err(ans)
    }
}

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
    mapping_page(
        &state,
        &s,
        &account,
        &id,
        Notice::from_query(uri.query()),
        StatusCode::OK,
        Extra::None,
    )
    .await
}

fn test_result(ans: &Answer) -> Markup {
    let v = &ans.json;
    let outcome = if ans.ok() && v["outcome"] == "ok" {
        "ok"
    } else {
        "failed"
    };
    let error = if ans.ok() {
        v["error"].as_str().map(str::to_string)
    } else {
        Some(ans.error())
    };
    html! {
        section id="mapping-test-result" data-outcome=(outcome) aria-labelledby="test-heading" tabindex="-1" {
            h2 id="test-heading" { "Test result" }
            p role="status" {
                @if outcome == "ok" {
                    (badge("ok")) " The handshake completed: the target answered with this certificate."
                } @else {
                    (badge("failing")) " The handshake did not complete."
                }
            }
            dl.facts {
                @if let Some(u) = v["url"].as_str() { dt { "URL called" } dd.mono { (u) } }
                dt { "Target status" }
                dd.target-status {
                    @match v["status"].as_u64() { Some(st) => { "HTTP " (st) }, None => { "no answer" } }
                }
                @if let Some(serial) = v["serial"].as_str() {
                    dt { "Certificate serial presented" } dd.mono.serial { (serial) }
                }
                @if let Some(ms) = v["elapsedMs"].as_u64() { dt { "Time" } dd.elapsed { (ms) " ms" } }
                @if let Some(e) = &error { dt { "Error" } dd.test-error { (e) } }
            }
        }
    }
}

async fn mapping_page(
    state: &AdminState,
    s: &Session,
    account: &str,
    id: &str,
    notice: Option<Notice>,
    status: StatusCode,
    extra: Extra,
) -> Response {
    let m = match get_mapping(state, s, account, id).await {
        Ok(m) => m,
        Err(ans) => return refusal(&ans),
    };
    let certs = match account_certificates(state, s, account).await {
        Ok(c) => c,
        Err(ans) => return refusal(&ans),
    };
    let check = checked(state, s, account, vec![m.clone()]).await.pop();
    let name = text(&m, "name").to_string();
    let cid = id_text(&m["certificationId"]);
    let enabled = m["enable"] != Value::Bool(false);
    let here = mapping_url(account, id);
    let (edit_error, typed) = match &extra {
        Extra::EditError(e, t) => (Some(e.clone()), t.clone()),
        _ => (None, Typed::of_mapping(&m)),
    };
    let content = html! {
        h1 { "Mapping " (name) }
        p { a href=(list_url(account)) { "All mappings" } }
        @if let Extra::Error(e) = &extra { (error_box(e)) }
        dl.facts id="mapping-facts" {
            dt { "Service" } dd { (text(&m, "serviceName")) }
            dt { "URL" } dd.mono { (text(&m, "url")) }
            dt { "Certificate" }
            dd {
                a href=(certificate_url(account, &cid)) {
                    (cert_name(&certs, &cid).map(str::to_string).unwrap_or_else(|| format!("certificate {cid} (missing)")))
                }
            }
            dt { "Enabled" }
            dd.enabled { @if enabled { (badge("enabled")) } @else { (badge("disabled")) } }
        }
        div.actions {
            form.inline id="toggle-form" method="post" action={(here) "/toggle"} {
                (csrf_field(s))
                button.secondary type="submit" id="toggle-enabled" {
                    @if enabled { "Disable" } @else { "Enable" }
                }
            }
            form.inline id="test-form" method="post" action={(here) "/test"} {
                (csrf_field(s))
                button type="submit" id="test-mapping" { "Test this mapping" }
            }
            a id="delete-mapping" href={(here) "/delete"} { "Delete this mapping" }
        }
        @if let Extra::Test(ans) = &extra { (test_result(ans)) }
        section id="mapping-checks" aria-labelledby="checks-heading" {
            h2 id="checks-heading" { "Checks" }
            @if let Some(c) = &check {
                table {
                    thead { tr { th scope="col" { "Check" } th scope="col" { "Result" } } }
                    tbody {
                        tr { th scope="row" { "v2 (account check)" } td.check-v2 { (c.v2.render()) } }
                        tr { th scope="row" { "v1 (legacy check)" } td.check-v1 { (c.v1.render()) } }
                    }
                }
            }
            p.hint { "The checks ask the runtime snapshot whether this service and URL lead to a usable certificate; \"Test this mapping\" makes the real mTLS handshake." }
        }
        h2 id="edit-heading" { "Edit" }
        form.stack id="mapping-form" method="post" action=(here) aria-labelledby="edit-heading" {
            (csrf_field(s))
            @if let Some(e) = &edit_error { (error_box(e)) }
            (fields(state, &certs, &typed, "edit"))
            div.actions {
                button type="submit" id="save-mapping" { "Save" }
            }
        }
    };
    page_with_status(
        state,
        s,
        Some(account),
        &format!("Mapping {name}"),
        notice,
        status,
        content,
    )
}

async fn update(state: &AdminState, s: &Session, account: &str, id: &str, body: &Value) -> Answer {
    api(
        state,
        s,
        Op::UpdateMapping,
        Method::PUT,
        &map_api(account, id),
        &[("accountId", account), ("mappingId", id)],
        Some("application/json"),
        json_body(body),
    )
    .await
}

async fn save(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (s, form) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let typed = Typed::from_form(&form);
    let ans = update(&state, &s, &account, &id, &typed.to_json()).await;
    if ans.ok() {
        return see_other(&format!("{}?notice=saved", mapping_url(&account, &id)));
    }
    mapping_page(
        &state,
        &s,
        &account,
        &id,
        None,
        ans.status,
        Extra::EditError(ans.error(), typed),
    )
    .await
}

async fn toggle(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (s, _) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let m = match get_mapping(&state, &s, &account, &id).await {
        Ok(m) => m,
        Err(ans) => return refusal(&ans),
    };
    let enabled = m["enable"] != Value::Bool(false);
    let ans = update(&state, &s, &account, &id, &json!({"enable": !enabled})).await;
    if ans.ok() {
        return see_other(&format!("{}?notice=updated", mapping_url(&account, &id)));
    }
    mapping_page(
        &state,
        &s,
        &account,
        &id,
        None,
        ans.status,
        Extra::Error(ans.error()),
    )
    .await
}

async fn test(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (s, _) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ans = api(
        &state,
        &s,
        Op::TestMapping,
        Method::POST,
        &format!("{}/test", map_api(&account, &id)),
        &[("accountId", &account), ("mappingId", &id)],
        None,
        bytes::Bytes::new(),
    )
    .await;
    // A mapping that is gone is a missing page; any other answer is shown as the test's result.
    if ans.status == StatusCode::NOT_FOUND && ans.json["error"] == "mapping_not_found" {
        return refusal(&ans);
    }
    let status = if ans.ok() { StatusCode::OK } else { ans.status };
    mapping_page(&state, &s, &account, &id, None, status, Extra::Test(ans)).await
}

// ------------------------------------------------------------------ delete

async fn confirm_delete(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = match session_for(&state, &headers, &account) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    delete_page(&state, &s, &account, &id, StatusCode::OK, None).await
}

async fn delete_page(
    state: &AdminState,
    s: &Session,
    account: &str,
    id: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let m = match get_mapping(state, s, account, id).await {
        Ok(m) => m,
        Err(ans) => return refusal(&ans),
    };
    let name = text(&m, "name").to_string();
    let here = mapping_url(account, id);
    let content = html! {
        h1 { "Delete mapping " (name) }
        p id="delete-summary" {
            "Mapping " strong { (name) } " sends calls for service " strong { (text(&m, "serviceName")) }
            " to " span.mono { (text(&m, "url")) } " with certificate " (id_text(&m["certificationId"])) "."
        }
        p { "After it is deleted, the runtime no longer presents a certificate for these calls. The certificate itself is kept." }
        form id="delete-form" method="post" action={(here) "/delete"} {
            (csrf_field(s))
            @if let Some(e) = &error { (error_box(e)) }
            div.actions {
                button.danger type="submit" id="confirm-delete" { "Delete mapping " (name) }
                a href=(here) { "Cancel" }
            }
        }
    };
    page_with_status(
        state,
        s,
        Some(account),
        &format!("Delete mapping {name}"),
        None,
        status,
        content,
    )
}

async fn delete(
    State(state): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (s, _) = match form_post(&state, &account, req, FORM_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ans = api(
        &state,
        &s,
        Op::DeleteMapping,
        Method::DELETE,
        &map_api(&account, &id),
        &[("accountId", &account), ("mappingId", &id)],
        None,
        bytes::Bytes::new(),
    )
    .await;
    if ans.ok() {
        return see_other(&format!("{}?notice=deleted", list_url(&account)));
    }
    delete_page(&state, &s, &account, &id, ans.status, Some(ans.error())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_form_to_api_object() {
        let t = Typed {
            name: String::new(),
            service: "IDP".into(),
            url: "https://a.example/x".into(),
            certificate: "12".into(),
            enabled: false,
        };
        assert_eq!(
            t.to_json(),
            json!({"serviceName": "IDP", "url": "https://a.example/x", "certificationId": "12", "enable": false})
        );
    }

    #[test]
    fn checks_ask_about_the_prefix_of_a_star_url() {
        assert_eq!(
            check_url(&json!({"url": "https://a.example/p/*"})),
            "https://a.example/p/"
        );
        assert_eq!(
            check_url(&json!({"url": "https://a.example/p"})),
            "https://a.example/p"
        );
    }
}
