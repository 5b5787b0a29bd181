//! The self-service web console (`/console/` on the admin listener, issue 23), through the real
//! binary: HTTP-level checks with reqwest (sign-in cookie, security headers, CSRF, account
//! isolation, no secret in a page or the log), and the page flows in real headless Chromium
//! (`tests/console_browser.py`, selenium), run by [`console_in_chromium_every_page_flow`].
//!
//! Forms are read from the pages themselves (a small tag scanner below: the console's HTML is
//! maud's, double-quoted attributes), so the tests post exactly what a browser would: the form's
//! `action`, its field names, its hidden CSRF field.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mtls_gateway::dev::certgen::{self, Issued};
use mtls_gateway::dev::echo::EchoServer;
use mtls_gateway::store::{CertificateMeta, CertificateSecret, Store, StoredCertificate};
use serde_json::{json, Value};

use crate::common::*;

const JWT_SECRET: &str = "console-tests-hs256-secret-0123456789abcdef";
const ISS: &str = "https://idp.test";
const AUD: &str = "mtls-gateway";
/// The PKCS#12 password of the uploads: distinctive, so a leak is easy to find.
const PW: &str = "Console-P12-pass-never-shown-4417";
/// The name of the other account's certificate: must never appear on a page of `acc`.
const OTHER_CERT: &str = "other-account-private-cert-5521";
/// The other account's mapping name.
const OTHER_MAP: &str = "other-account-private-map-5522";
/// acc's seeded certificate (id 1) and mapping (id 10).
const ACC_CERT: &str = "acc-seeded-cert";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn jwt_with(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("jwt")
}

/// A token for `account`, valid for `ttl` seconds.
fn token_for(account: &str, ttl: i64) -> String {
    jwt_with(
        json!({"sub": format!("user-of-{account}"), "iss": ISS, "aud": AUD,
               "exp": now() + ttl, "accountId": account}),
        JWT_SECRET,
    )
}

fn jwt_yaml() -> String {
    format!(
        "auth:\n  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: {ISS}\n    audience: {AUD}\n"
    )
}

/// A gateway config with the console on (the admin listener on the harness's port).
fn console_yaml() -> String {
    format!(
        "admin:\n  listen: \"127.0.0.1:{{admin}}\"\n  console:\n    enabled: true\n{}",
        jwt_yaml()
    )
}

/// A certificate with a chosen name, stored the way the admin API stores one.
fn seed_named(seed: &Seed, account: &str, id: u64, name: &str, issued: &Issued) {
    let p12 = certgen::to_p12(&issued.cert, &issued.key, &[], "pw").expect("p12");
    block(seed.store.put_certificate(&StoredCertificate {
        meta: CertificateMeta {
            id,
            account_id: account.into(),
            name: name.into(),
            display_name: name.into(),
            deleted: false,
            not_after: None,
            updated_at: 0,
        },
        secret: CertificateSecret {
            p12,
            password: "pw".into(),
        },
        lifecycle: None,
    }))
    .expect("put certificate");
}

/// Seeds the other account's mapping with a distinctive name.
fn seed_other_mapping(seed: &Seed, url: &str) {
    use mtls_gateway::store::{Mapping, MappingDocument};
    let doc = MappingDocument {
        mappings: vec![Mapping {
            id: 20,
            account_id: "other".into(),
            name: OTHER_MAP.into(),
            service_name: "IDP".into(),
            url: url.into(),
            certificate_id: 2,
            enabled: true,
            deleted: false,
            cutover_check: None,
        }],
    };
    block(seed.store.put_mappings("other", &doc, None)).expect("put mappings");
}

// ------------------------------------------------------------------ a small HTML scanner

/// One start tag: its name, attributes (values unescaped), and where it starts and ends.
#[derive(Debug, Clone)]
struct Tag {
    name: String,
    attrs: Vec<(String, Option<String>)>,
    start: usize,
    end: usize,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    fn has(&self, name: &str) -> bool {
        self.attrs.iter().any(|(k, _)| k == name)
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Every start tag of `html` (comments and end tags skipped).
fn tags(html: &str) -> Vec<Tag> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let start = i + off;
        i = start + 1;
        if html[i..].starts_with("!--") {
            i = html[i..].find("-->").map(|e| i + e + 3).unwrap_or(b.len());
            continue;
        }
        if i >= b.len() || !b[i].is_ascii_alphabetic() {
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'-') {
            j += 1;
        }
        let name = html[i..j].to_ascii_lowercase();
        let mut attrs = Vec::new();
        loop {
            while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b'/') {
                j += 1;
            }
            if j >= b.len() || b[j] == b'>' {
                break;
            }
            let k0 = j;
            while j < b.len() && !b[j].is_ascii_whitespace() && !b"=>/".contains(&b[j]) {
                j += 1;
            }
            let key = html[k0..j].to_ascii_lowercase();
            if j < b.len() && b[j] == b'=' {
                j += 1;
                let (v0, v1, next) = match b.get(j) {
                    Some(&q) if q == b'"' || q == b'\'' => {
                        let close = html[j + 1..]
                            .find(q as char)
                            .map(|e| j + 1 + e)
                            .unwrap_or(b.len());
                        (j + 1, close, close + 1)
                    }
                    _ => {
                        let mut e = j;
                        while e < b.len() && !b[e].is_ascii_whitespace() && b[e] != b'>' {
                            e += 1;
                        }
                        (j, e, e)
                    }
                };
                attrs.push((key, Some(unescape(&html[v0..v1.min(b.len())]))));
                j = next;
            } else {
                attrs.push((key, None));
            }
        }
        let end = (j + 1).min(b.len());
        out.push(Tag {
            name,
            attrs,
            start,
            end,
        });
        i = end;
    }
    out
}

fn by_id(html: &str, id: &str) -> Option<Tag> {
    tags(html).into_iter().find(|t| t.attr("id") == Some(id))
}

/// A form as a browser would send it.
#[derive(Debug, Clone)]
struct Form {
    action: String,
    multipart: bool,
    /// (name, value) in document order: what the form sends as it stands.
    fields: Vec<(String, String)>,
    /// element id -> field name, for [`Form::set`].
    ids: Vec<(String, String)>,
    /// (name, file path) for file inputs.
    files: Vec<(String, PathBuf)>,
    /// button id -> (name, value).
    buttons: Vec<(String, Option<(String, String)>)>,
}

impl Form {
    /// The form that contains the element `id` on `html`.
    fn containing(html: &str, id: &str) -> Form {
        let all = tags(html);
        let target = all
            .iter()
            .find(|t| t.attr("id") == Some(id))
            .unwrap_or_else(|| panic!("no element #{id} on the page:\n{html}"));
        // The element itself, or the last <form> that starts before it and ends after it.
        let form = all
            .iter()
            .filter(|t| t.name == "form" && t.start <= target.start)
            .rfind(|t| {
                html[t.end..]
                    .find("</form>")
                    .is_some_and(|e| t.end + e > target.start || t.start == target.start)
            })
            .unwrap_or_else(|| panic!("#{id} is in no form:\n{html}"));
        let close = form.end + html[form.end..].find("</form>").unwrap_or(0);
        let mut f = Form {
            action: form.attr("action").unwrap_or("").to_string(),
            multipart: form
                .attr("enctype")
                .is_some_and(|e| e.eq_ignore_ascii_case("multipart/form-data")),
            fields: Vec::new(),
            ids: Vec::new(),
            files: Vec::new(),
            buttons: Vec::new(),
        };
        let inner: Vec<&Tag> = all
            .iter()
            .filter(|t| t.start > form.start && t.start < close)
            .collect();
        let mut select: Option<(String, Option<String>, bool)> = None;
        let finish_select = |f: &mut Form, s: Option<(String, Option<String>, bool)>| {
            if let Some((name, Some(v), _)) = s {
                f.fields.push((name, v));
            }
        };
        for t in &inner {
            if t.name != "option" && select.is_some() {
                finish_select(&mut f, select.take());
            }
            let name = t.attr("name").map(str::to_string);
            if let (Some(id), Some(n)) = (t.attr("id"), &name) {
                f.ids.push((id.to_string(), n.clone()));
            }
            match t.name.as_str() {
                "input" => {
                    let Some(n) = name else { continue };
                    let ty = t.attr("type").unwrap_or("text").to_ascii_lowercase();
                    match ty.as_str() {
                        "file" => {}
                        "submit" | "button" | "image" | "reset" => {}
                        "checkbox" | "radio" => {
                            if t.has("checked") {
                                f.fields
                                    .push((n, t.attr("value").unwrap_or("on").to_string()));
                            }
                        }
                        _ => f
                            .fields
                            .push((n, t.attr("value").unwrap_or("").to_string())),
                    }
                }
                "textarea" => {
                    let Some(n) = name else { continue };
                    let text_end = html[t.end..].find("</textarea>").unwrap_or(0);
                    f.fields.push((n, unescape(&html[t.end..t.end + text_end])));
                }
                "select" => {
                    if let Some(n) = name {
                        select = Some((n, None, false));
                    }
                }
                "option" => {
                    if let Some((_, value, chosen)) = select.as_mut() {
                        let v = t.attr("value").map(str::to_string).unwrap_or_else(|| {
                            let e = html[t.end..].find('<').unwrap_or(0);
                            unescape(html[t.end..t.end + e].trim())
                        });
                        if t.has("selected") && !*chosen {
                            *value = Some(v);
                            *chosen = true;
                        } else if value.is_none() {
                            *value = Some(v);
                        }
                    }
                }
                "button" => {
                    if let Some(id) = t.attr("id") {
                        let nv = name.map(|n| (n, t.attr("value").unwrap_or("").to_string()));
                        f.buttons.push((id.to_string(), nv));
                    }
                }
                _ => {}
            }
        }
        finish_select(&mut f, select.take());
        f
    }

    fn name_of(&self, id: &str) -> String {
        self.ids
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| panic!("no named field #{id} in the form {self:?}"))
    }

    /// Sets the field of element `id` (replacing what it had).
    fn set(&mut self, id: &str, value: &str) -> &mut Self {
        let name = self.name_of(id);
        self.fields.retain(|(n, _)| *n != name);
        self.fields.push((name, value.to_string()));
        self
    }

    fn tick(&mut self, id: &str) -> &mut Self {
        let name = self.name_of(id);
        self.fields.push((name, "on".into()));
        self
    }

    fn file(&mut self, id: &str, path: &Path) -> &mut Self {
        let name = self.name_of(id);
        self.files.push((name, path.to_path_buf()));
        self
    }

    /// The form as the button `id` submits it (its name=value added when it has a name).
    fn press(&self, id: &str) -> Form {
        let mut f = self.clone();
        let (_, nv) = self
            .buttons
            .iter()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| panic!("no button #{id} in the form {self:?}"));
        if let Some((n, v)) = nv {
            f.fields.push((n.clone(), v.clone()));
        }
        f
    }

    fn without(&self, name: &str) -> Form {
        let mut f = self.clone();
        f.fields.retain(|(n, _)| n != name);
        f
    }

    fn with(&self, name: &str, value: &str) -> Form {
        let mut f = self.without(name);
        f.fields.push((name.into(), value.into()));
        f
    }
}

// ------------------------------------------------------------------ the console under test

/// One answer of the console.
#[derive(Debug)]
struct Page {
    path: String,
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn location(&self) -> &str {
        self.header("location").unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

/// The headers and page rules every console answer must follow.
fn assert_console_rules(p: &Page) {
    let csp = p
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{} {}: no CSP header", p.status, p.path));
    assert!(csp.contains("default-src 'none'"), "{}: CSP {csp}", p.path);
    assert!(!csp.contains("unsafe-inline"), "{}: CSP {csp}", p.path);
    assert!(!csp.contains("unsafe-eval"), "{}: CSP {csp}", p.path);
    assert_eq!(p.header("x-frame-options"), Some("DENY"), "{}", p.path);
    // Under `no-referrer` a browser sends `Origin: null` with the console's own form POSTs,
    // which the origin check refuses (the sign-in failed in Chromium so).
    let rp = p.header("referrer-policy").unwrap_or("");
    assert!(
        rp == "same-origin" || rp == "strict-origin" || rp == "strict-origin-when-cross-origin",
        "{}: Referrer-Policy {rp:?}",
        p.path
    );
    assert!(
        p.header("cache-control")
            .is_some_and(|c| c.contains("no-store")),
        "{}: cache-control {:?}",
        p.path,
        p.header("cache-control")
    );
    let ct = p.header("content-type").unwrap_or("");
    if ct.starts_with("text/html") {
        for t in tags(&p.body) {
            if t.name == "script" {
                assert!(
                    t.attr("src")
                        .is_some_and(|s| s.starts_with("/console/assets/")),
                    "{}: a script without an embedded src: {t:?}",
                    p.path
                );
            }
            assert!(!t.has("style"), "{}: a style= attribute on {t:?}", p.path);
            assert!(
                !t.attrs.iter().any(|(k, _)| k.starts_with("on")),
                "{}: an inline event handler on {t:?}",
                p.path
            );
            assert!(t.name != "style", "{}: an inline <style> element", p.path);
            // Every text input has a label (the issue: every input has a <label for>).
            if matches!(t.name.as_str(), "input" | "select" | "textarea")
                && !matches!(t.attr("type"), Some("hidden" | "submit" | "button"))
            {
                let id = t
                    .attr("id")
                    .unwrap_or_else(|| panic!("{}: an input without id: {t:?}", p.path));
                assert!(
                    p.body.contains(&format!("for=\"{id}\"")) || t.has("aria-label"),
                    "{}: no <label for={id}>",
                    p.path
                );
            }
            if t.name == "th" {
                assert!(t.has("scope"), "{}: a <th> without scope: {t:?}", p.path);
            }
        }
    }
}

struct Console {
    pki: Pki,
    echo: EchoServer,
    dir: tempfile::TempDir,
    gw: Gw,
    /// acc's token, signed in by cookie on every request of [`Console::get`] / [`Console::post`].
    token: String,
    client: reqwest::Client,
    /// Every page seen, for the checks that hold across all of them.
    seen: Mutex<Vec<(String, String)>>,
}

impl Console {
    /// A gateway with the console on; account `acc` with certificate 1 and mapping 10, account
    /// `other` with certificate 2 ([`OTHER_CERT`]) and mapping 20 ([`OTHER_MAP`]).
    fn start() -> Console {
        let pki = Pki::new();
        let echo = pki.echo();
        let dir = tempfile::tempdir().expect("tmp");
        let seed = Seed::new(dir.path());
        let port = echo.addr.port();
        seed_named(&seed, "acc", 1, ACC_CERT, &pki.client("acc-client"));
        seed.mappings(
            "acc",
            &[(10, "IDP", &format!("https://localhost:{port}/acc/token"), 1)],
        );
        seed_named(&seed, "other", 2, OTHER_CERT, &pki.client("other-client"));
        seed_other_mapping(&seed, &format!("https://localhost:{port}/other/token"));
        let gw = Gw::start(dir.path(), &pki.ca_path, &console_yaml());
        Console {
            pki,
            echo,
            dir,
            gw,
            token: token_for("acc", 1800),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.admin)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.gw.admin)
    }

    async fn read(&self, path: &str, r: reqwest::Response) -> Page {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.expect("body");
        let p = Page {
            path: path.to_string(),
            status,
            headers,
            body,
        };
        assert_console_rules(&p);
        if let Ok(mut s) = self.seen.lock() {
            s.push((path.to_string(), p.body.clone()));
        }
        p
    }

    /// GET with `cookie` (None: no cookie).
    async fn get_as(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut rq = self.client.get(self.url(path));
        if let Some(t) = cookie {
            rq = rq.header("cookie", format!("mtls_console={t}"));
        }
        let r = rq.send().await.expect("GET");
        self.read(path, r).await
    }

    /// GET as acc.
    async fn get(&self, path: &str) -> Page {
        self.get_as(path, Some(&self.token.clone())).await
    }

    /// GET as acc, expecting 200.
    async fn page(&self, path: &str) -> Page {
        let p = self.get(path).await;
        assert_eq!(p.status, 200, "GET {path}: {}\n{}", p.status, p.body);
        p
    }

    /// Submits `form` as acc's browser would (same Origin), or with `origin` instead.
    async fn submit_with(&self, form: &Form, origin: Option<&str>) -> Page {
        let mut rq = self
            .client
            .post(self.url(&form.action))
            .header("cookie", format!("mtls_console={}", self.token))
            .header(
                "origin",
                origin.map(str::to_string).unwrap_or(self.origin()),
            );
        if form.multipart || !form.files.is_empty() {
            let mut mp = reqwest::multipart::Form::new();
            for (n, v) in &form.fields {
                mp = mp.text(n.clone(), v.clone());
            }
            for (n, path) in &form.files {
                let bytes = std::fs::read(path).expect("read upload");
                let part = reqwest::multipart::Part::bytes(bytes)
                    .file_name(
                        path.file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    )
                    .mime_str("application/x-pkcs12")
                    .expect("mime");
                mp = mp.part(n.clone(), part);
            }
            rq = rq.multipart(mp);
        } else {
            rq = rq.form(&form.fields);
        }
        let r = rq.send().await.expect("POST");
        self.read(&form.action, r).await
    }

    async fn submit(&self, form: &Form) -> Page {
        self.submit_with(form, None).await
    }

    /// An admin API call with acc's (or `token`'s) Bearer token: the store's view, not the
    /// console's.
    async fn api(&self, token: &str, path: &str) -> Value {
        let r = self
            .client
            .get(self.url(path))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("api");
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("json")
    }

    async fn mappings(&self, account: &str) -> Vec<Value> {
        let v = self
            .api(
                &token_for(account, 60),
                &format!("/api/account/{account}/configuration/ac-common/mtls"),
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    async fn certificates(&self, account: &str) -> Vec<Value> {
        let v = self
            .api(
                &token_for(account, 60),
                &format!("/mtls/account/{account}/certificates"),
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Follows every same-console link from `start` (GET only), at most `max` pages, and
    /// returns the POST forms' actions seen on them.
    async fn crawl(&self, start: &str, max: usize) -> Vec<String> {
        let mut todo = vec![start.to_string()];
        let mut done: Vec<String> = Vec::new();
        let mut actions = Vec::new();
        while let Some(path) = todo.pop() {
            if done.contains(&path) || done.len() >= max {
                continue;
            }
            done.push(path.clone());
            let p = self.get(&path).await;
            assert!(
                p.status == 200 || p.status == 303,
                "GET {path} (linked from a console page): {}\n{}",
                p.status,
                p.body
            );
            if !p
                .header("content-type")
                .unwrap_or("")
                .starts_with("text/html")
            {
                continue;
            }
            for t in tags(&p.body) {
                if t.name == "a" {
                    if let Some(h) = t.attr("href") {
                        let h = h.split('#').next().unwrap_or("");
                        if h.starts_with("/console/") && !done.iter().any(|d| d == h) {
                            todo.push(h.to_string());
                        }
                    }
                }
                if t.name == "form"
                    && t.attr("method")
                        .is_some_and(|m| m.eq_ignore_ascii_case("post"))
                {
                    if let Some(a) = t.attr("action") {
                        if !actions.iter().any(|x| x == a) {
                            actions.push(a.to_string());
                        }
                    }
                }
            }
        }
        assert!(done.len() > 3, "the crawl found only {done:?}");
        eprintln!(
            "crawled {} pages from {start}; {} POST forms",
            done.len(),
            actions.len()
        );
        actions
    }

    /// Asserts that no page seen so far contains `needle`.
    fn assert_never_shown(&self, needle: &str, what: &str) {
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        for (path, body) in &seen {
            assert!(!body.contains(needle), "{what} appears on {path}:\n{body}");
        }
    }
}

/// The CSRF token of acc's pages (the hidden field of the sign-out form every page has).
fn csrf_of(page: &Page) -> String {
    tags(&page.body)
        .into_iter()
        .find(|t| t.name == "input" && t.attr("name") == Some("csrf"))
        .and_then(|t| t.attr("value").map(str::to_string))
        .unwrap_or_else(|| panic!("no csrf field on {}:\n{}", page.path, page.body))
}

// ------------------------------------------------------------------ configuration

#[test]
fn console_is_off_by_default_and_needs_auth_jwt() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gw::start(dir.path(), &pki.ca_path, &jwt_yaml());
    for path in ["/console/login", "/console/", "/console/assets/console.js"] {
        let r = blocking_get(&format!("http://{}{path}", gw.admin)).expect("GET");
        assert_eq!(r.0, 404, "{path} without admin.console");
    }
    drop(gw);

    let check = |yaml: &str| {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("c.yaml");
        std::fs::write(&path, yaml).expect("write");
        let out = Command::new("timeout")
            .args([
                "20",
                env!("CARGO_BIN_EXE_mtls-gateway"),
                "check",
                "--config",
            ])
            .arg(&path)
            .output()
            .expect("run check");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check("admin:\n  console:\n    enabled: true\n");
    assert_ne!(code, 0, "console without auth.jwt accepted: {err}");
    assert!(err.contains("admin.console.enabled"), "{err}");
    assert!(err.contains("auth.jwt"), "{err}");
    let (code, err) = check(&format!(
        "admin:\n  console:\n    enabled: true\n{}",
        jwt_yaml()
    ));
    assert_eq!(code, 0, "console with auth.jwt refused: {err}");
}

// ------------------------------------------------------------------ sign-in

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_sets_a_strict_http_only_cookie_that_ends_with_the_token() {
    let c = Console::start();
    let login = |token: String, https: bool| {
        let mut rq = c
            .client
            .post(c.url("/console/login"))
            .form(&[("token", token)]);
        if https {
            rq = rq.header("x-forwarded-proto", "https");
        }
        rq
    };

    // The sign-in page: a labelled textarea, no cookie needed.
    let p = c.get_as("/console/login", None).await;
    assert_eq!(p.status, 200);
    assert!(by_id(&p.body, "token").is_some_and(|t| t.name == "textarea"));
    assert!(by_id(&p.body, "sign-in").is_some());
    // Signed out, the console sends you to the sign-in page.
    let p = c.get_as("/console/", None).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(
        p.location().starts_with("/console/login"),
        "{}",
        p.location()
    );

    let ttl = 600;
    let token = token_for("acc", ttl);
    let r = login(token.clone(), false).send().await.expect("login");
    let p = c.read("/console/login", r).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location(), "/console/");
    let cookies = p.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let ck = &cookies[0];
    assert!(ck.starts_with(&format!("mtls_console={token};")), "{ck}");
    let attrs: Vec<String> = ck
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for want in ["path=/console", "httponly", "samesite=strict"] {
        assert!(attrs.iter().any(|a| a == want), "{want} missing: {ck}");
    }
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "Secure over plain http: {ck}"
    );
    let max_age: i64 = attrs
        .iter()
        .find_map(|a| a.strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Max-Age: {ck}"));
    assert!(
        max_age > 0 && max_age <= ttl,
        "Max-Age {max_age} beyond the token's {ttl} s: {ck}"
    );

    // The cookie opens the console: /console/ goes to acc's overview.
    let p = c.get_as("/console/", Some(&token)).await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location(), "/console/a/acc/");

    // Behind a TLS terminator: Secure.
    let r = login(token.clone(), true).send().await.expect("login");
    let p = c.read("/console/login", r).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let ck = p.set_cookies().join("\n");
    assert!(
        ck.split(';')
            .any(|a| a.trim().eq_ignore_ascii_case("secure")),
        "no Secure with X-Forwarded-Proto: https: {ck}"
    );

    // Refused tokens: a page saying why, 401, and no cookie.
    let refused = [
        (
            "expired",
            jwt_with(
                json!({"sub": "u", "iss": ISS, "aud": AUD, "exp": now() - 3600, "accountId": "acc"}),
                JWT_SECRET,
            ),
        ),
        (
            "forged",
            jwt_with(
                json!({"sub": "u", "iss": ISS, "aud": AUD, "exp": now() + 600, "accountId": "acc"}),
                "not-the-gateways-secret-0123456789abcdef",
            ),
        ),
        (
            "wrong audience",
            jwt_with(
                json!({"sub": "u", "iss": ISS, "aud": "another-service", "exp": now() + 600, "accountId": "acc"}),
                JWT_SECRET,
            ),
        ),
    ];
    for (what, t) in &refused {
        let r = login(t.clone(), false).send().await.expect("login");
        let p = c.read("/console/login", r).await;
        assert_eq!(p.status, 401, "{what} token: {}", p.body);
        assert!(p.set_cookies().is_empty(), "{what} token got a cookie");
        assert!(!p.body.contains(t.as_str()), "{what} token shown back");
        assert!(by_id(&p.body, "token").is_some(), "{what}: the form again");
        // ... and as a cookie it opens nothing.
        let p = c.get_as("/console/", Some(t)).await;
        assert_eq!(p.status, 303, "{what} token as a cookie");
        assert_eq!(p.location(), "/console/login?why=expired", "{what}");
        assert!(
            p.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
            "{what}: the cookie is dropped"
        );
    }
    // Sign-in itself from another site (login CSRF: planting the attacker's session): refused.
    let r = login(token.clone(), false)
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("login");
    let p = c.read("/console/login", r).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(
        p.set_cookies().is_empty(),
        "a cross-site sign-in set the cookie"
    );
    // Not a token at all.
    let r = login("Bearer x".into(), false).send().await.expect("login");
    assert_eq!(r.status(), 400);

    let logs = c.gw.logs();
    assert!(
        logs.contains("console_sign_in"),
        "the sign-in is audited:\n{logs}"
    );
    assert!(!logs.contains(&token), "the token reached the log");
    for (what, t) in &refused {
        assert!(
            !logs.contains(t.as_str()),
            "the {what} token reached the log"
        );
    }
}

// ------------------------------------------------------------------ headers and page rules

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_every_answer_has_the_security_headers_and_no_inline_script_or_style() {
    let c = Console::start();
    // Pages without a session, assets, redirects, refusals: assert_console_rules runs on each.
    for path in [
        "/console/login",
        "/console/login?why=expired",
        "/console/assets/console.css",
        "/console/assets/console.js",
    ] {
        let p = c.get_as(path, None).await;
        assert_eq!(p.status, 200, "{path}");
    }
    let p = c.get_as("/console/a/acc/", None).await;
    assert_eq!(p.status, 303);
    let p = c.get("/console/a/other/").await;
    assert_eq!(p.status, 403);
    // Every page a signed-in user can reach by following links.
    c.crawl("/console/a/acc/", 60).await;
    for path in [
        "/console/a/acc/",
        "/console/a/acc/certificates",
        "/console/a/acc/certificates/new",
        "/console/a/acc/certificates/1",
        "/console/a/acc/mappings",
        "/console/a/acc/mappings/10",
    ] {
        let p = c.page(path).await;
        assert!(p.body.contains("<h1"), "{path}: no h1");
        assert!(p.body.starts_with("<!DOCTYPE html>"), "{path}");
    }
    // The assets are served with their own types (nosniff).
    let p = c.get_as("/console/assets/console.js", None).await;
    assert!(p
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/javascript"));
    assert_eq!(p.header("x-content-type-options"), Some("nosniff"));
}

// ------------------------------------------------------------------ CSRF

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_state_changes_need_the_csrf_token_and_this_origin() {
    let c = Console::start();
    let evil = "http://evil.example";

    // Sign-out: the smallest state change.
    let p = c.page("/console/a/acc/").await;
    let csrf = csrf_of(&p);
    let logout = Form::containing(&p.body, "sign-out").press("sign-out");
    assert_eq!(logout.action, "/console/logout");
    let forged = [
        ("no csrf field", logout.without("csrf"), None),
        (
            "a wrong csrf",
            logout.with("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
        ),
        ("an empty csrf", logout.with("csrf", ""), None),
        ("another origin", logout.clone(), Some(evil)),
        ("Origin: null", logout.clone(), Some("null")),
    ];
    for (what, form, origin) in &forged {
        let p = c.submit_with(form, *origin).await;
        assert_eq!(p.status, 403, "logout with {what}: {}", p.body);
        assert!(
            p.set_cookies().is_empty(),
            "logout with {what} touched the cookie"
        );
    }
    // A cross-site fetch (the browser's own header) is refused even with the token.
    let r = c
        .client
        .post(c.url("/console/logout"))
        .header("cookie", format!("mtls_console={}", c.token))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);
    // Still signed in.
    c.page("/console/a/acc/").await;

    // Creating a mapping.
    let port = c.echo.addr.port();
    let p = c.page("/console/a/acc/mappings").await;
    let mut create = Form::containing(&p.body, "mapping-create");
    create
        .set("mapping-name", "csrf-probe")
        .set(
            "mapping-url",
            &format!("https://localhost:{port}/csrf/probe"),
        )
        .set("mapping-certificate", "1");
    let create = create.press("create-mapping");
    for (what, form, origin) in [
        ("no csrf field", create.without("csrf"), None),
        ("a wrong csrf", create.with("csrf", &csrf[1..]), None),
        ("another origin", create.clone(), Some(evil)),
    ] {
        let p = c.submit_with(&form, origin).await;
        assert_eq!(p.status, 403, "mapping with {what}: {}", p.body);
        let names: Vec<Value> = c
            .mappings("acc")
            .await
            .iter()
            .map(|m| m["name"].clone())
            .collect();
        assert!(
            !names.contains(&json!("csrf-probe")),
            "{what}: created anyway {names:?}"
        );
    }
    let p = c.submit(&create).await;
    assert!(
        p.status == 303 || p.status == 200,
        "with the token: {}\n{}",
        p.status,
        p.body
    );
    let made = c.mappings("acc").await;
    let probe = made
        .iter()
        .find(|m| m["name"] == "csrf-probe")
        .unwrap_or_else(|| panic!("not created with the right token: {made:?}"));
    let probe_id = probe["id"]
        .as_u64()
        .map(|i| i.to_string())
        .unwrap_or_default();

    // Enabling/disabling it.
    let p = c.page(&format!("/console/a/acc/mappings/{probe_id}")).await;
    let toggle = Form::containing(&p.body, "toggle-enabled").press("toggle-enabled");
    for (what, form, origin) in [
        ("no csrf field", toggle.without("csrf"), None),
        ("another origin", toggle.clone(), Some(evil)),
    ] {
        let p = c.submit_with(&form, origin).await;
        assert_eq!(p.status, 403, "toggle with {what}: {}", p.body);
    }
    let after = c.mappings("acc").await;
    let m = after
        .iter()
        .find(|m| m["name"] == "csrf-probe")
        .expect("probe");
    assert_eq!(m["enable"], true, "a refused toggle changed the mapping");
    let p = c.submit(&toggle).await;
    assert!(p.status == 303 || p.status == 200, "{}", p.body);
    let after = c.mappings("acc").await;
    let m = after
        .iter()
        .find(|m| m["name"] == "csrf-probe")
        .expect("probe");
    assert_eq!(m["enable"], false, "the toggle with the token did nothing");

    // Starting a CSR.
    let p = c.page("/console/a/acc/certificates/new").await;
    let mut csr = Form::containing(&p.body, "start-csr");
    csr.set("csr-name", "csrf-csr")
        .set("csr-cn", "csrf-csr.example")
        .set("csr-dns", "csrf-csr.example");
    let csr = csr.press("start-csr");
    for (what, form, origin) in [
        ("no csrf field", csr.without("csrf"), None),
        ("a wrong csrf", csr.with("csrf", "x"), None),
        ("another origin", csr.clone(), Some(evil)),
    ] {
        let p = c.submit_with(&form, origin).await;
        assert_eq!(p.status, 403, "CSR with {what}: {}", p.body);
        let certs = c.certificates("acc").await;
        assert!(
            !certs.iter().any(|x| x["name"] == "csrf-csr"),
            "{what}: a CSR entry was made"
        );
    }
    let p = c.submit(&csr).await;
    assert!(
        p.status == 303 || p.status == 200,
        "{}\n{}",
        p.status,
        p.body
    );
    let certs = c.certificates("acc").await;
    assert!(certs.iter().any(|x| x["name"] == "csrf-csr"), "{certs:?}");

    // The token that was refused above still signs out properly.
    let p = c.submit(&logout).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(
        p.location().starts_with("/console/login"),
        "{}",
        p.location()
    );
    let ck = p.set_cookies().join("\n");
    assert!(
        ck.contains("mtls_console=;") && ck.contains("Max-Age=0"),
        "{ck}"
    );
}

// ------------------------------------------------------------------ accounts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_a_token_sees_and_changes_only_its_own_account() {
    let c = Console::start();
    let before_maps = c.mappings("other").await;
    let before_certs = c.certificates("other").await;
    assert!(before_certs.iter().any(|x| x["name"] == OTHER_CERT));

    // Every page of acc, and the POST forms on them.
    let actions = c.crawl("/console/a/acc/", 60).await;
    eprintln!("replayed against other: {actions:?}");
    assert!(
        actions.iter().any(|a| a.starts_with("/console/a/acc/")),
        "no account form found: {actions:?}"
    );
    let csrf = csrf_of(&c.page("/console/a/acc/").await);

    // The switcher offers acc only.
    let p = c.page("/console/a/acc/").await;
    let switch = by_id(&p.body, "account-switch").expect("#account-switch");
    assert_eq!(
        switch.name, "select",
        "a scoped token gets a list, not a free field"
    );
    let options: Vec<String> = tags(&p.body)
        .into_iter()
        .filter(|t| t.name == "option")
        .filter_map(|t| t.attr("value").map(str::to_string))
        .collect();
    assert_eq!(options, vec!["acc".to_string()]);
    let p = c.get("/console/switch?account=other").await;
    assert_eq!(p.status, 403, "{}", p.body);

    // Other's pages: 403, nothing of it shown.
    for path in [
        "/console/a/other/",
        "/console/a/other/certificates",
        "/console/a/other/certificates/new",
        "/console/a/other/certificates/2",
        "/console/a/other/mappings",
        "/console/a/other/mappings/20",
    ] {
        let p = c.get(path).await;
        assert_eq!(p.status, 403, "GET {path}: {}", p.body);
        assert!(
            !p.body.contains(OTHER_CERT) && !p.body.contains(OTHER_MAP),
            "{path}"
        );
    }
    // acc's pages for other's objects by id: not found, nothing shown.
    for path in [
        "/console/a/acc/certificates/2",
        "/console/a/acc/mappings/20",
    ] {
        let p = c.get(path).await;
        assert!(
            p.status == 404 || p.status == 403,
            "GET {path}: {}",
            p.status
        );
    }

    // Every form of acc replayed against other (with acc's right CSRF token): 403.
    let mut replayed = 0;
    for a in actions.iter().filter(|a| a.starts_with("/console/a/acc/")) {
        let to = a
            .replacen("/console/a/acc/", "/console/a/other/", 1)
            .replace("/certificates/1", "/certificates/2")
            .replace("/mappings/10", "/mappings/20");
        let form = Form {
            action: to.clone(),
            multipart: false,
            fields: vec![
                ("csrf".into(), csrf.clone()),
                ("name".into(), "cross-account-probe".into()),
                ("cascade".into(), "on".into()),
            ],
            ids: vec![],
            files: vec![],
            buttons: vec![],
        };
        let p = c.submit(&form).await;
        assert_eq!(p.status, 403, "POST {to}: {}", p.body);
        replayed += 1;
    }
    assert!(replayed > 0);
    assert_eq!(
        c.mappings("other").await,
        before_maps,
        "other's mappings changed"
    );
    assert_eq!(
        c.certificates("other").await,
        before_certs,
        "other's certificates changed"
    );

    c.assert_never_shown(OTHER_CERT, "the other account's certificate name");
    c.assert_never_shown(OTHER_MAP, "the other account's mapping name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_an_admin_role_token_may_pick_any_account_a_scoped_one_only_its_own() {
    let c = Console::start();
    // The admin role (auth.jwt.admin_role, the API's rule): every account.
    let admin = jwt_with(
        json!({"sub": "ops-admin", "iss": ISS, "aud": AUD, "exp": now() + 600,
               "roles": ["admin"]}),
        JWT_SECRET,
    );
    let home = c.get_as("/console/", Some(&admin)).await;
    assert_eq!(home.status, 303, "{}", home.body);
    let p = c.get_as("/console/a/acc/", Some(&admin)).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let switch = by_id(&p.body, "account-switch").expect("#account-switch");
    assert_eq!(switch.name, "input", "an admin types or picks any account");
    let offered: Vec<String> = tags(&p.body)
        .into_iter()
        .filter(|t| t.name == "option")
        .filter_map(|t| t.attr("value").map(str::to_string))
        .collect();
    assert!(
        offered.contains(&"acc".to_string()) && offered.contains(&"other".to_string()),
        "the store's accounts are offered: {offered:?}"
    );
    for path in ["/console/a/other/certificates", "/console/a/other/mappings"] {
        let p = c.get_as(path, Some(&admin)).await;
        assert_eq!(p.status, 200, "GET {path} as admin: {}", p.body);
        assert!(
            p.body.contains(OTHER_CERT),
            "{path} as admin shows other's certificate"
        );
    }
    // A token with neither the role nor an account claim gets nothing.
    let nobody = jwt_with(
        json!({"sub": "nobody", "iss": ISS, "aud": AUD, "exp": now() + 600, "roles": ["viewer"]}),
        JWT_SECRET,
    );
    let p = c.get_as("/console/a/acc/", Some(&nobody)).await;
    assert!(
        p.status == 403 || p.status == 303,
        "a token without account or role: {} {}",
        p.status,
        p.body
    );
    assert!(!p.body.contains(ACC_CERT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_replace_edit_delete_a_mapping_and_download_a_csr_do_what_they_say() {
    let c = Console::start();
    let serial_of = |e: &Value| {
        e["certificate"]["serial"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let before = c
        .certificates("acc")
        .await
        .into_iter()
        .find(|x| x["name"] == ACC_CERT)
        .expect("acc's certificate");

    // Replace certificate 1 with another PKCS#12: the entity presents the new serial.
    let next = c.pki.client("acc-replacement");
    let p12 = c.dir.path().join("replacement.p12");
    std::fs::write(
        &p12,
        certgen::to_p12(&next.cert, &next.key, &[], "replacement-pw").expect("p12"),
    )
    .expect("write p12");
    let p = c.page("/console/a/acc/certificates/1").await;
    let mut f = Form::containing(&p.body, "replace-file");
    f.set("replace-password", "replace-pw-wrong-on-purpose")
        .file("replace-file", &p12);
    let p = c.submit(&f.press("replace")).await;
    assert!(p.status >= 400, "a wrong password is refused: {}", p.status);
    assert!(by_id(&p.body, "form-error").is_some() || p.body.contains("password"));
    f.set("replace-password", "replacement-pw");
    let p = c.submit(&f.press("replace")).await;
    assert_eq!(p.status, 303, "replace: {}", p.body);
    assert!(p.location().contains("notice=updated"), "{}", p.location());
    let after = c
        .certificates("acc")
        .await
        .into_iter()
        .find(|x| x["name"] == ACC_CERT)
        .expect("acc's certificate");
    assert_ne!(serial_of(&after), serial_of(&before), "{after}");
    assert!(!serial_of(&after).is_empty(), "{after}");

    // Edit mapping 10: a new name and URL, stored.
    let port = c.echo.addr.port();
    let p = c.page("/console/a/acc/mappings/10").await;
    let mut f = Form::containing(&p.body, "edit-name");
    f.set("edit-name", "acc-renamed-map")
        .set("edit-url", &format!("https://localhost:{port}/acc/renamed"));
    let p = c.submit(&f.press("save-mapping")).await;
    assert_eq!(p.status, 303, "edit: {}", p.body);
    let m = c
        .mappings("acc")
        .await
        .into_iter()
        .find(|m| m["id"] == json!(10))
        .expect("mapping 10");
    assert_eq!(m["name"], "acc-renamed-map", "{m}");
    assert!(
        m["url"].as_str().unwrap_or("").ends_with("/acc/renamed"),
        "{m}"
    );

    // Delete it after the confirmation page.
    let p = c.page("/console/a/acc/mappings/10/delete").await;
    assert!(
        p.body.contains("acc-renamed-map"),
        "the page names the mapping"
    );
    let p = c
        .submit(&Form::containing(&p.body, "confirm-delete").press("confirm-delete"))
        .await;
    assert_eq!(p.status, 303, "delete: {}", p.body);
    assert!(
        !c.mappings("acc")
            .await
            .iter()
            .any(|m| m["id"] == json!(10) && m["deleted"] != json!(true)),
        "mapping 10 still live"
    );

    // Start a CSR and download it: a PKCS#10 attachment that openssl verifies.
    let p = c.page("/console/a/acc/certificates/new").await;
    let mut f = Form::containing(&p.body, "csr-name");
    f.set("csr-name", "download-probe")
        .set("csr-cn", "download.example")
        .set("csr-dns", "download.example");
    let p = c.submit(&f.press("start-csr")).await;
    assert_eq!(p.status, 303, "csr: {}", p.body);
    let page = p.location().split('?').next().unwrap_or("").to_string();
    let p = c.page(&page).await;
    let href = by_id(&p.body, "download-csr")
        .and_then(|a| a.attr("href").map(str::to_string))
        .expect("a#download-csr");
    let d = c.get(&href).await;
    assert_eq!(d.status, 200);
    assert!(
        d.header("content-type")
            .is_some_and(|t| t.starts_with("application/pkcs10")),
        "{:?}",
        d.header("content-type")
    );
    assert!(
        d.header("content-disposition")
            .is_some_and(|v| v.starts_with("attachment") && v.contains(".csr")),
        "{:?}",
        d.header("content-disposition")
    );
    let csr = c.dir.path().join("download.csr");
    std::fs::write(&csr, &d.body).expect("write csr");
    let out = Command::new("openssl")
        .args(["req", "-in"])
        .arg(&csr)
        .args(["-verify", "-noout", "-subject"])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl req -verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("download.example"));
}

// ------------------------------------------------------------------ secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_never_shows_or_logs_the_token_or_an_upload_password() {
    let c = Console::start();
    let good = c.pki.client("console-upload");
    let p12 = c.dir.path().join("upload.p12");
    std::fs::write(
        &p12,
        certgen::to_p12(&good.cert, &good.key, &[], PW).expect("p12"),
    )
    .expect("write p12");

    // The tester (the whole-page fallback: no JavaScript), then save.
    let p = c.page("/console/a/acc/certificates/new").await;
    let mut up = Form::containing(&p.body, "upload-file");
    up.set("upload-name", "uploaded-secret-probe")
        .set("upload-password", PW)
        .file("upload-file", &p12);
    let p = c.submit(&up.press("test-file")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let verdict = by_id(&p.body, "tester-verdict").expect("section#tester-verdict");
    assert_eq!(verdict.attr("data-verdict"), Some("pass"), "{}", p.body);
    // The form comes back without the password.
    if let Some(pw) = by_id(&p.body, "upload-password") {
        assert!(
            pw.attr("value").unwrap_or("").is_empty(),
            "the password is refilled"
        );
    }
    // The same with the fragment header (the page's script).
    let r = c
        .client
        .post(c.url(&up.action))
        .header("cookie", format!("mtls_console={}", c.token))
        .header("origin", c.origin())
        .header("x-console-fragment", "1")
        .multipart({
            let f = up.press("test-file");
            let mut mp = reqwest::multipart::Form::new();
            for (n, v) in &f.fields {
                mp = mp.text(n.clone(), v.clone());
            }
            mp.part(
                f.files[0].0.clone(),
                reqwest::multipart::Part::bytes(std::fs::read(&p12).expect("p12"))
                    .file_name("upload.p12"),
            )
        })
        .send()
        .await
        .expect("fragment");
    let p = c.read(&up.action, r).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(by_id(&p.body, "tester-verdict").is_some(), "{}", p.body);
    assert!(!p.body.contains("<html"), "a fragment, not a page");

    let p = c.submit(&up.press("save-file")).await;
    assert_eq!(p.status, 303, "save: {}", p.body);
    let p = c.page(p.location()).await;
    assert!(by_id(&p.body, "notice").is_some_and(|n| n.attr("data-notice") == Some("created")));
    assert!(c
        .certificates("acc")
        .await
        .iter()
        .any(|x| x["name"] == "uploaded-secret-probe"));

    // A wrong password: the form again with the error, not the password.
    let mut bad = Form::containing(
        &c.page("/console/a/acc/certificates/new").await.body,
        "upload-file",
    );
    bad.set("upload-name", "bad-password-probe")
        .set("upload-password", "Wrong-pass-never-shown-8812")
        .file("upload-file", &p12);
    let p = c.submit(&bad.press("save-file")).await;
    assert!((400..500).contains(&p.status), "{}: {}", p.status, p.body);
    assert!(by_id(&p.body, "form-error").is_some(), "{}", p.body);
    assert!(
        p.body.contains("bad-password-probe"),
        "the name typed is kept"
    );

    c.crawl("/console/a/acc/", 60).await;
    c.assert_never_shown(&c.token, "the session token");
    c.assert_never_shown(PW, "the PKCS#12 password");
    c.assert_never_shown("Wrong-pass-never-shown-8812", "a wrong PKCS#12 password");
    let logs = c.gw.logs();
    assert!(!logs.contains(&c.token), "the token reached the log");
    assert!(!logs.contains(PW), "the password reached the log");
    assert!(
        !logs.contains("Wrong-pass-never-shown-8812"),
        "the wrong password reached the log"
    );
}

// ------------------------------------------------------------------ real Chromium

/// What the browser test needs on this machine; a missing piece fails the test (never a skip).
fn browser_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(bin).exists() {
            missing.push(bin.to_string());
        }
    }
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !selenium {
        missing.push("python3 module selenium".into());
    }
    if Command::new("openssl").arg("version").output().is_err() {
        missing.push("openssl".into());
    }
    missing
}

/// Where the screenshots go: `target/console-screenshots/` (stable, next to the test tmp dir).
pub fn screenshot_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("console-screenshots")
}

const SCREENSHOTS: &[&str] = &[
    "signin",
    "overview",
    "certificate-new-tester",
    "certificate",
    "certificates",
    "certificates-all",
    "mappings",
    "mapping-test",
    "csr",
];

#[test]
fn console_in_chromium_every_page_flow() {
    let missing = browser_prerequisites();
    assert!(
        missing.is_empty(),
        "the browser test needs {missing:?}: run .ci/setup (apt chromium chromium-driver, pip selenium)"
    );
    let pki = Pki::new();
    let echo = pki.echo();
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    let port = echo.addr.port();
    seed_named(&seed, "other", 2, OTHER_CERT, &pki.client("other-client"));
    seed_other_mapping(&seed, &format!("https://localhost:{port}/other/token"));
    let gw = Gw::start(dir.path(), &pki.ca_path, &console_yaml());

    let files = dir.path().join("browser");
    std::fs::create_dir_all(&files).expect("mkdir");
    let good = pki.client("browser-partner");
    let good_p12 = files.join("good.p12");
    std::fs::write(
        &good_p12,
        certgen::to_p12(&good.cert, &good.key, &[], PW).expect("p12"),
    )
    .expect("write");
    // A real PKCS#12 under another password: the tester's first check fails.
    let bad_p12 = files.join("bad.p12");
    std::fs::write(
        &bad_p12,
        certgen::to_p12(&good.cert, &good.key, &[], "another-password").expect("p12"),
    )
    .expect("write");
    let serial = good
        .cert
        .serial_number()
        .to_bn()
        .and_then(|b| b.to_hex_str().map(|h| h.to_string()))
        .expect("serial");
    let ca_cert = files.join("ca.pem");
    let ca_key = files.join("ca-key.pem");
    std::fs::write(&ca_cert, certgen::to_pem(&pki.ca.cert)).expect("write");
    std::fs::write(&ca_key, certgen::key_to_pem(&pki.ca.key)).expect("write");

    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    // Only this test's files: the directory is shared with the single sign-on test.
    let ours = std::fs::read_dir(&shots)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for path in ours {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if SCREENSHOTS.contains(&name.as_str())
            || name.starts_with("failure-")
            || name == "certificate-new-tester-fail"
        {
            let _ = std::fs::remove_file(&path);
        }
    }
    eprintln!("console screenshots: {}", shots.display());

    // axe-core, the accessibility checker run on every page screenshotted.
    let axe =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/node_modules/axe-core/axe.min.js");
    assert!(
        axe.exists(),
        "{} is missing: run .ci/setup (npm ci in tests/node)",
        axe.display()
    );
    let token = token_for("acc", 3600);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.py");
    let out = Command::new("timeout")
        .arg("600")
        .arg("python3")
        .arg(&script)
        .env("CONSOLE_URL", format!("http://{}", gw.admin))
        .env("CONSOLE_TOKEN", &token)
        .env("CONSOLE_ACCOUNT", "acc")
        .env("CONSOLE_OTHER_ACCOUNT", "other")
        .env("CONSOLE_OTHER_CERT", OTHER_CERT)
        .env("CONSOLE_GOOD_P12", &good_p12)
        .env("CONSOLE_GOOD_SERIAL", &serial)
        .env("CONSOLE_BAD_P12", &bad_p12)
        .env("CONSOLE_P12_PASSWORD", PW)
        .env("CONSOLE_CA_CERT", &ca_cert)
        .env("CONSOLE_CA_KEY", &ca_key)
        .env(
            "CONSOLE_TARGET_URL",
            format!("https://localhost:{port}/partner/token"),
        )
        .env("CONSOLE_WORKDIR", &files)
        .env("CONSOLE_SCREENSHOTS", &shots)
        .env("CONSOLE_AXE_JS", &axe)
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/console_browser.py failed ({:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- gateway log\n{}",
        out.status.code(),
        gw.logs()
    );
    eprintln!("{stdout}");
    for name in SCREENSHOTS {
        let png = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", png.display());
    }
    let logs = gw.logs();
    assert!(!logs.contains(&token), "the token reached the log");
    assert!(!logs.contains(PW), "the PKCS#12 password reached the log");
    drop(echo);
}

// ------------------------------------------------------------------ the scanner itself

#[test]
fn console_test_html_scanner_reads_forms_as_a_browser_would() {
    let html = r#"<!DOCTYPE html><form method="post" action="/console/a/acc/x?y=1&amp;z=2" enctype="multipart/form-data">
<input type="hidden" name="csrf" value="tok">
<label for="n">Name</label><input id="n" name="name" value="a &quot;b&quot;" required>
<select id="s" name="service"><option value="0">TEST</option><option value="1" selected>IDP</option></select>
<input type="checkbox" id="c" name="cascade">
<textarea id="t" name="pem">x &lt; y</textarea>
<button type="submit" id="go" name="action" value="save">Save</button>
</form><p id="after">x</p>"#;
    let f = Form::containing(html, "go");
    assert_eq!(f.action, "/console/a/acc/x?y=1&z=2");
    assert!(f.multipart);
    assert_eq!(
        f.fields,
        vec![
            ("csrf".to_string(), "tok".to_string()),
            ("name".into(), "a \"b\"".into()),
            ("service".into(), "1".into()),
            ("pem".into(), "x < y".into()),
        ]
    );
    let mut f = f.press("go");
    f.tick("c");
    assert!(f.fields.contains(&("action".into(), "save".into())));
    assert!(f.fields.contains(&("cascade".into(), "on".into())));
    assert!(by_id(html, "after").is_some());
    assert!(std::panic::catch_unwind(|| Form::containing(html, "after")).is_err());
}
