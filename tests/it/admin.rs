//! The admin API as LivePerson's clients call it: the router served on 127.0.0.1:0 in the test
//! (a real file store in a temp dir, a real refresher), requests signed with the auth module's
//! OAuth1 helpers or carrying HS256 tokens minted with `jsonwebtoken`, certificates made at test
//! time, a real mTLS echo target for the calls that validate. One test runs the real binary.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use mtls_gateway::admin::{router, AdminState, ROUTES};
use mtls_gateway::auth::oauth1::{self, SignatureMethod};
use mtls_gateway::auth::RequestParts;
use mtls_gateway::config::Config;
use mtls_gateway::dev::certgen::{self, Issued, KeyKind, Leaf, P12Flavour};
use mtls_gateway::refresh::Refresher;
use mtls_gateway::snapshot::normalize_url;
use mtls_gateway::store::file::FileStore;
use serde_json::{json, Value};

use crate::common::*;

const JWT_SECRET: &str = "admin-tests-hs256-secret-0123456789abcdef";
const ISS: &str = "https://idp.test";
const AUD: &str = "mtls-gateway";
/// Distinctive, so a leak is easy to find.
const PW: &str = "Pa55-w0rd-never-echoed-7731";
const A: &str = "acc-a";
const B: &str = "acc-b";

/// (app key, secret, accounts or internal)
const KEYS: &[(&str, &str, Option<&str>)] = &[
    ("key-a", "secret-a", Some(A)),
    ("key-b", "secret-b", Some(B)),
    ("key-internal", "secret-internal", None),
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn auth_yaml() -> String {
    let mut y = String::from("auth:\n  oauth1:\n    keys:\n");
    for (k, s, acc) in KEYS {
        y.push_str(&format!("      - key: {k}\n        secret: {s}\n"));
        match acc {
            Some(a) => y.push_str(&format!("        accounts: [\"{a}\"]\n")),
            None => y.push_str("        internal: true\n"),
        }
    }
    y.push_str(&format!(
        "  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: {ISS}\n    audience: {AUD}\n"
    ));
    y
}

// ------------------------------------------------------------------ log capture

struct Capture;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CAPTURING: OnceLock<bool> = OnceLock::new();
static CAPTURE: Capture = Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        if let Ok(mut l) = LINES.lock() {
            l.push(format!("{} {} {}", r.level(), r.target(), r.args()));
        }
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per process); false when another logger was first.
pub(crate) fn capture_logs() -> bool {
    *CAPTURING.get_or_init(|| {
        let ok = log::set_logger(&CAPTURE).is_ok();
        if ok {
            log::set_max_level(log::LevelFilter::Debug);
        }
        ok
    })
}

pub(crate) fn log_lines() -> Vec<String> {
    LINES.lock().map(|l| l.clone()).unwrap_or_default()
}

// ------------------------------------------------------------------ credentials

static NONCE: AtomicU64 = AtomicU64::new(0);

/// `Authorization: OAuth ...` for a request, signed with the auth module's own helpers. `host`
/// is the Host header; as `https://host` it is a client that used https (in front of a TLS
/// terminator), otherwise http.
pub(crate) fn oauth_header(
    host: &str,
    key: &str,
    secret: &str,
    method: &str,
    path_query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> String {
    let (scheme, host) = host.split_once("://").unwrap_or(("http", host));
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let nonce = format!(
        "n{}x{}",
        NONCE.fetch_add(1, Ordering::Relaxed),
        mtls_gateway::store::new_id()
    );
    let params: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), key.into()),
        ("oauth_nonce".into(), nonce),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), now().to_string()),
        ("oauth_version".into(), "1.0".into()),
    ];
    let rp = RequestParts {
        method,
        scheme,
        host,
        path,
        query,
        authorization: None,
        content_type,
        body,
        forwarded_proto: None,
    };
    let base = oauth1::signature_base_string(&rp, &params).expect("base string");
    let sig = oauth1::sign(SignatureMethod::HmacSha1, secret.as_bytes(), b"", &base);
    let mut all = params;
    all.push(("oauth_signature".into(), sig));
    format!(
        "OAuth {}",
        all.iter()
            .map(|(k, v)| format!("{k}=\"{}\"", oauth1::encode(v.as_bytes())))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("jwt")
}

fn bearer_for(account: &str) -> String {
    format!(
        "Bearer {}",
        jwt(
            json!({"sub": format!("user-of-{account}"), "iss": ISS, "aud": AUD,
                   "exp": now() + 600, "accountId": account})
        )
    )
}

fn bearer_admin() -> String {
    format!(
        "Bearer {}",
        jwt(
            json!({"sub": "lpa-admin", "iss": ISS, "aud": AUD, "exp": now() + 600, "roles": ["admin"]})
        )
    )
}

#[derive(Clone)]
enum Auth {
    None,
    /// An app key from [`KEYS`].
    AppKey(&'static str),
    /// A token scoped to this account.
    Bearer(&'static str),
    Admin,
    Raw(String),
}

enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>, &'static str),
    Form(reqwest::multipart::Form),
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
    fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

/// An HTTP client for an admin API at `host` (`127.0.0.1:port`), remembering every response
/// (for the no-secret checks).
struct Api {
    host: String,
    http: reqwest::Client,
    seen: Mutex<Vec<String>>,
}

impl Api {
    fn new(host: String) -> Api {
        Api {
            host,
            http: client(),
            seen: Mutex::new(Vec::new()),
        }
    }

    async fn call(&self, method: &str, path_query: &str, auth: Auth, body: Body) -> Resp {
        let url = format!("http://{}{path_query}", self.host);
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(m, &url);
        let (ct, raw): (Option<&str>, Vec<u8>) = match &body {
            Body::Raw(b, ct) => (Some(ct), b.clone()),
            _ => (None, Vec::new()),
        };
        let authz = match auth {
            Auth::None => None,
            Auth::AppKey(key) => {
                let secret = KEYS
                    .iter()
                    .find(|(k, _, _)| *k == key)
                    .map(|(_, s, _)| *s)
                    .expect("known key");
                Some(oauth_header(
                    &self.host, key, secret, method, path_query, ct, &raw,
                ))
            }
            Auth::Bearer(acc) => Some(bearer_for(acc)),
            Auth::Admin => Some(bearer_admin()),
            Auth::Raw(s) => Some(s),
        };
        if let Some(a) = authz {
            rb = rb.header("authorization", a);
        }
        rb = match body {
            Body::None => rb,
            Body::Json(v) => rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&v).expect("json")),
            Body::Raw(b, ct) => rb.header("content-type", ct).body(b),
            Body::Form(f) => rb.multipart(f),
        };
        let r = rb.send().await.expect("admin request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        if let Ok(mut s) = self.seen.lock() {
            s.push(format!("{headers:?} {text}"));
        }
        Resp {
            status,
            headers,
            text,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

// ------------------------------------------------------------------ the app under test

struct App {
    pki: Pki,
    state: AdminState,
    api: Api,
    _dir: tempfile::TempDir,
}

impl App {
    async fn new() -> App {
        App::with_auth(auth_yaml()).await
    }

    /// The app with this `auth:` section.
    async fn with_auth(auth_yaml: String) -> App {
        App::with_trust(auth_yaml, true).await
    }

    /// The app with this `auth:` section; the test CA in `upstream.ca_files` or not (then only
    /// the system roots are trusted).
    async fn with_trust(auth_yaml: String, test_ca: bool) -> App {
        capture_logs();
        let pki = Pki::new();
        let dir = tempfile::tempdir().expect("tmp");
        let upstream = if test_ca {
            format!("upstream:\n  ca_files: [\"{}\"]\n", pki.ca_path.display())
        } else {
            "upstream:\n  use_system_roots: true\n".to_string()
        };
        let yaml = format!(
            "store:\n  kind: file\n  path: store\nadmin:\n  max_upload_bytes: 65536\n  max_json_bytes: 65536\n  max_items: 5\n  validate_timeout_ms: 3000\n{upstream}{}",
            auth_yaml
        );
        let cfg = Config::from_yaml(&yaml, dir.path()).expect("config");
        let store = FileStore::open(dir.path().join("store")).expect("file store");
        let refresher = Refresher::new(Arc::new(store), cfg.refresh.clone());
        refresher.refresh().await.expect("first refresh");
        // The upstream connector and resolver built as the gateway builds them for the proxy.
        let (tls, resolver) = mtls_gateway::upstream_parts(&cfg).expect("upstream parts");
        let state = AdminState::new(Arc::new(cfg), refresher, tls, resolver);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = router(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        App {
            pki,
            state,
            api: Api::new(addr.to_string()),
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, path: &str, auth: Auth, body: Body) -> Resp {
        self.api.call(method, path, auth, body).await
    }

    fn client_cert(&self, cn: &str) -> Issued {
        self.pki.client(cn)
    }

    /// Creates a certificate over JSON (base64 p12) and returns its id.
    async fn create_cert(&self, account: &'static str, name: &str, issued: &Issued) -> u64 {
        let r = self
            .call(
                "POST",
                &format!("/mtls/account/{account}/certificates"),
                Auth::Bearer(account),
                Body::Json(json!([{"name": name, "password": PW, "p12": b64(&p12_of(issued))}])),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        r.json()["successfulySavedCertificates"][0]["id"]
            .as_u64()
            .expect("id")
    }

    async fn create_mapping(
        &self,
        account: &'static str,
        cert: u64,
        service: &str,
        url: &str,
        name: &str,
    ) -> Resp {
        self.call(
            "POST",
            &format!("/api/account/{account}/configuration/ac-common/mtls?v=3.0"),
            Auth::AppKey(if account == A { "key-a" } else { "key-b" }),
            Body::Json(json!([{"certificationId": cert.to_string(), "serviceName": service,
                              "url": url, "enable": true, "siteId": account, "name": name, "deleted": false}])),
        )
        .await
    }

    fn lookup(&self, account: &str, service: &str, url: &str) -> Option<u64> {
        let snap = self.state.refresher.snapshot().load();
        let u = normalize_url(url)?;
        snap.lookup(account, service, &u)
            .map(|(t, _)| t.certificate_id)
    }

    async fn store_cert_count(&self) -> usize {
        self.state
            .refresher
            .store()
            .inventory()
            .await
            .expect("inventory")
            .certificates
            .len()
    }
}

fn p12_of(issued: &Issued) -> Vec<u8> {
    certgen::to_p12(&issued.cert, &issued.key, &[], PW).expect("p12")
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn signed_bytes(b: &[u8]) -> Value {
    Value::Array(b.iter().map(|x| json!(*x as i8)).collect())
}

fn file_form(file: Vec<u8>, certificate: Value) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name("client.p12"),
        )
        .text("certificate", certificate.to_string())
}

fn tester_form(file: Vec<u8>, password: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name("client.p12"),
        )
        .text("password", password.to_string())
}

fn certs_path(account: &str) -> String {
    format!("/mtls/account/{account}/certificates")
}

fn maps_path(account: &str) -> String {
    format!("/api/account/{account}/configuration/ac-common/mtls")
}

// ------------------------------------------------------------------ certificates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_certificate_lifecycle_over_json_create_list_get_update_delete() {
    let app = App::new().await;
    let c = app.client_cert("client-a");
    let r = app
        .call(
            "POST",
            &certs_path(A),
            Auth::AppKey("key-a"),
            Body::Json(
                json!([{"name": "first", "password": PW, "p12": signed_bytes(&p12_of(&c))}]),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let saved = r.json();
    assert_eq!(saved["failedSaveToVaultCertificates"], json!([]));
    let e = &saved["successfulySavedCertificates"][0];
    let id = e["id"].as_u64().expect("id");
    assert_eq!(e["name"], "first");
    assert_eq!(e["displayName"], "first");
    assert_eq!(e["siteId"], A);
    assert_eq!(e["deleted"], false);
    assert_eq!(e["status"], "Available");
    let exp = e["expirationDate"].as_str().expect("expirationDate");
    assert!(
        exp.ends_with('Z') && exp.len() == 20 && exp.as_bytes()[10] == b'T',
        "ISO 8601 UTC: {exp}"
    );
    let mut keys: Vec<_> = e.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "certificate",
            "deleted",
            "displayName",
            "expirationDate",
            "id",
            "name",
            "siteId",
            "state",
            "status"
        ]
    );
    assert_eq!(e["state"], "available");
    // The loaded leaf's public facts.
    let leaf = &e["certificate"];
    assert!(
        leaf["subject"]
            .as_str()
            .is_some_and(|s| s.contains("CN=client-a")),
        "{leaf}"
    );
    assert!(
        leaf["issuer"].as_str().is_some_and(|s| s.contains("CN=")),
        "{leaf}"
    );
    assert!(
        leaf["serial"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())),
        "{leaf}"
    );
    assert!(
        leaf["keyType"]
            .as_str()
            .is_some_and(|k| k.starts_with("EC ") || k.starts_with("RSA ")),
        "{leaf}"
    );
    assert_eq!(leaf["notAfter"].as_str(), Some(exp), "{leaf}");
    assert!(
        leaf["notBefore"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{leaf}"
    );
    assert_eq!(leaf["sha256"].as_str().map(str::len), Some(64), "{leaf}");

    let r = app
        .call("GET", &certs_path(A), Auth::Bearer(A), Body::None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    assert_eq!(r.json()[0]["id"], id);

    let r = app
        .call(
            "GET",
            &format!("{}/{id}", certs_path(A)),
            Auth::AppKey("key-a"),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["name"], "first");

    // Update: rename, and a new file with its password.
    let c2 = app.client_cert("client-a2");
    let r = app
        .call(
            "PUT",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(
                json!([{"id": id, "name": "renamed", "p12": b64(&p12_of(&c2)), "password": PW}]),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["successfulySavedCertificates"][0]["name"],
        "renamed"
    );
    assert_eq!(
        r.json()["successfulySavedCertificates"][0]["displayName"],
        "renamed"
    );
    let snap = app.state.refresher.snapshot().load();
    let loaded = snap
        .certs
        .get(&(A.to_string(), id))
        .and_then(|e| e.cert().cloned())
        .expect("loaded at once");
    assert_eq!(hex::encode(loaded.leaf_sha256), sha256_hex(&c2.cert));

    // Legacy single-object update by path id.
    let r = app
        .call(
            "PUT",
            &format!("{}/{id}", certs_path(A)),
            Auth::AppKey("key-a"),
            Body::Json(json!({"displayName": "Shown name"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["successfulySavedCertificates"][0]["displayName"],
        "Shown name"
    );

    let r = app
        .call(
            "DELETE",
            &format!("{}/{id}", certs_path(A)),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["deleted"], true);
    let r = app
        .call(
            "GET",
            &format!("{}/{id}", certs_path(A)),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.code(), "certificate_not_found");
    assert_eq!(app.store_cert_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_p12_is_accepted_as_signed_bytes_unsigned_bytes_and_base64() {
    let app = App::new().await;
    let c = app.client_cert("client");
    let der = p12_of(&c);
    let unsigned = Value::Array(der.iter().map(|b| json!(*b)).collect());
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der);
    let r = app
        .call(
            "POST",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([
                {"name": "signed", "password": PW, "p12": signed_bytes(&der)},
                {"name": "unsigned", "password": PW, "p12": unsigned},
                {"name": "base64", "password": PW, "p12": b64(&der)},
                {"name": "base64url", "password": PW, "p12": url_safe},
            ])),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let saved = r.json()["successfulySavedCertificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(saved.len(), 4);
    assert!(saved.iter().all(|e| e["status"] == "Available"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_certificate_by_file_creates_and_updates_with_bearer_on_both_spellings() {
    let app = App::new().await;
    let c = app.client_cert("by-file");
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                p12_of(&c),
                json!({"name": "from-file", "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["successfulySavedCertificates"][0]["id"]
        .as_u64()
        .expect("id");

    let c2 = app.client_cert("by-file-2");
    let r = app
        .call(
            "PUT",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                p12_of(&c2),
                json!({"id": id, "name": "from-file-v2", "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["successfulySavedCertificates"][0]["name"],
        "from-file-v2"
    );
    let snap = app.state.refresher.snapshot().load();
    let sha = snap
        .certs
        .get(&(A.to_string(), id))
        .and_then(|e| e.cert().cloned())
        .map(|c| hex::encode(c.leaf_sha256));
    assert_eq!(sha, Some(sha256_hex(&c2.cert)));

    // Legacy camel-case path.
    let c3 = app.client_cert("by-file-3");
    let r = app
        .call(
            "POST",
            &format!("{}/byFile", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                p12_of(&c3),
                json!({"name": "legacy", "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    let r = app
        .call(
            "PUT",
            &format!("{}/byFile", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(reqwest::multipart::Form::new().text(
                "certificate",
                json!({"id": id, "name": "renamed-only"}).to_string(),
            )),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["successfulySavedCertificates"][0]["name"],
        "renamed-only"
    );

    // A file that does not open with the password names the part.
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                p12_of(&c3),
                json!({"name": "bad-pw", "password": "nope"}),
            )),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.code(), "wrong_password");
    assert_eq!(r.json()["field"], "certificate.password");
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                b"not a p12".to_vec(),
                json!({"name": "noise", "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.code(), "invalid_p12");
    assert_eq!(r.json()["field"], "file");
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(reqwest::multipart::Form::new().text("certificate", "{\"name\":\"x\"}")),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["field"], "file");
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.status, 415, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_expired_certificate_is_stored_with_status_expired() {
    let app = App::new().await;
    let mut leaf = Leaf::client("expired");
    leaf.not_before_offset_days = -30;
    leaf.valid_days = 10;
    let c = certgen::issue(&app.pki.ca, &leaf).expect("leaf");
    let id = app.create_cert(A, "old", &c).await;
    let r = app
        .call(
            "GET",
            &format!("{}/{id}", certs_path(A)),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!(r.json()["status"], "Expired", "{r:?}");
    assert!(r.json()["expirationDate"].is_string());
}

/// The entity's keys, sorted.
fn keys_of(e: &Value) -> Vec<String> {
    let mut k: Vec<String> = e
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

fn warnings_of(e: &Value) -> Vec<String> {
    e["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The lifecycle warnings of certificate `id` of account A in the store.
async fn stored_warnings(app: &App, id: u64) -> Option<Vec<String>> {
    app.state
        .refresher
        .store()
        .get_certificate(A, id)
        .await
        .expect("store")
        .expect("stored")
        .value
        .lifecycle
        .map(|l| l.warnings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_files_the_tester_calls_unusable_are_saved_with_warnings_state_and_reason() {
    let app = App::new().await;
    let leaf = |cn: &str, key: KeyKind| {
        let mut l = Leaf::client(cn);
        l.key = key;
        certgen::issue(&app.pki.ca, &l).expect("leaf")
    };
    let rsa1024 = p12_of(&leaf("rsa1024", KeyKind::Rsa1024));
    let ed25519 = p12_of(&leaf("ed25519", KeyKind::Ed25519));
    let mut exp = Leaf::client("expired");
    exp.not_before_offset_days = -30;
    exp.valid_days = 10;
    let expired = p12_of(&certgen::issue(&app.pki.ca, &exp).expect("expired"));
    let mut later = Leaf::client("later");
    later.not_before_offset_days = 3;
    let not_yet = p12_of(&certgen::issue(&app.pki.ca, &later).expect("later"));
    let plain = app.client_cert("plain-key");
    let unencrypted =
        certgen::openssl_p12(&plain.cert, &plain.key, &[], PW, P12Flavour::Unencrypted)
            .expect("openssl -keypbe NONE");
    let good = p12_of(&app.client_cert("good"));

    let r = app
        .call(
            "POST",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([
                {"name": "rsa1024", "password": PW, "p12": b64(&rsa1024)},
                {"name": "ed25519", "password": PW, "p12": b64(&ed25519)},
                {"name": "expired", "password": PW, "p12": b64(&expired)},
                {"name": "unencrypted", "password": PW, "p12": signed_bytes(&unencrypted)},
                {"name": "good", "password": PW, "p12": b64(&good)},
            ])),
        )
        .await;
    assert_eq!(r.status, 201, "accepted as LivePerson does: {r:?}");
    let saved = r.json()["successfulySavedCertificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(saved.len(), 5, "{r:?}");
    let by_name = |n: &str| {
        saved
            .iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} saved: {r:?}"))
    };
    // (name, status, state, a word every warning list must carry)
    let expect = [
        ("rsa1024", "Available", "unusable", "RSA 1024 bits"),
        ("ed25519", "Available", "unusable", "Ed25519"),
        ("expired", "Expired", "expired", "expired at"),
        ("unencrypted", "Available", "unusable", "not encrypted"),
    ];
    let mut ids = std::collections::HashMap::new();
    for (name, status, state, word) in expect {
        let e = by_name(name);
        ids.insert(name, e["id"].as_u64().expect("id"));
        assert_eq!(e["status"], status, "{name}: {e}");
        assert_eq!(e["state"], state, "{name}: {e}");
        let w = warnings_of(&e);
        assert!(w.iter().any(|w| w.contains(word)), "{name}: {e}");
        assert!(
            w.iter().all(|w| w.contains(": ") && !w.is_empty()),
            "{name}: each warning names the problem and the fix: {e}"
        );
        let reason = e["stateReason"].as_str().unwrap_or("");
        assert!(reason.contains(word), "{name}: {e}");
    }
    assert!(
        warnings_of(&by_name("rsa1024"))[0].contains("at least 2048"),
        "{saved:?}"
    );
    // A good file: LivePerson's entity plus `state`, no reason, no warnings.
    let g = by_name("good");
    assert_eq!(g["state"], "available");
    assert_eq!(
        keys_of(&g),
        [
            "certificate",
            "deleted",
            "displayName",
            "expirationDate",
            "id",
            "name",
            "siteId",
            "state",
            "status"
        ]
    );
    let good_id = g["id"].as_u64().expect("id");

    // Kept in the store: the tester's warnings (the dates are worked out on every read).
    let w = stored_warnings(&app, ids["rsa1024"])
        .await
        .expect("lifecycle");
    assert!(w.iter().any(|w| w.contains("RSA 1024")), "{w:?}");
    assert_eq!(stored_warnings(&app, ids["expired"]).await, None);
    assert_eq!(stored_warnings(&app, good_id).await, None);

    // By file, too: a certificate not valid yet.
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                not_yet.clone(),
                json!({"name": "not-yet", "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let e = &r.json()["successfulySavedCertificates"][0];
    assert_eq!(
        (&e["status"], &e["state"]),
        (&json!("Available"), &json!("not_yet_valid")),
        "{e}"
    );
    assert!(warnings_of(e)[0].contains("not valid before"), "{e}");
    let not_yet_id = e["id"].as_u64().expect("id");

    // The listing and the single GET say the same.
    let r = app
        .call("GET", &certs_path(A), Auth::AppKey("key-a"), Body::None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let list = r.json().as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 6, "{r:?}");
    for e in &list {
        let name = e["name"].as_str().unwrap_or("");
        match name {
            "good" => {
                assert_eq!(e["state"], "available", "{e}");
                assert!(
                    e.get("stateReason").is_none() && e.get("warnings").is_none(),
                    "{e}"
                );
            }
            _ => {
                assert_ne!(e["state"], "available", "{e}");
                assert!(e["stateReason"].is_string(), "{e}");
                assert!(!warnings_of(e).is_empty(), "{e}");
            }
        }
    }
    let r = app
        .call(
            "GET",
            &format!("{}/{}", certs_path(A), ids["ed25519"]),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!(r.json()["state"], "unusable", "{r:?}");
    assert!(warnings_of(&r.json())[0].contains("Ed25519"), "{r:?}");

    // A later update with a good file clears them: over JSON and by file.
    let fixed = p12_of(&app.client_cert("fixed"));
    let r = app
        .call(
            "PUT",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([{"id": ids["rsa1024"], "p12": b64(&fixed), "password": PW}])),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let e = &r.json()["successfulySavedCertificates"][0];
    assert_eq!(e["state"], "available", "{e}");
    assert!(
        e.get("warnings").is_none() && e.get("stateReason").is_none(),
        "{e}"
    );
    assert_eq!(
        stored_warnings(&app, ids["rsa1024"]).await,
        None,
        "cleared in the store"
    );
    let r = app
        .call(
            "PUT",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                fixed.clone(),
                json!({"id": ids["unencrypted"], "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["successfulySavedCertificates"][0]["state"],
        "available",
        "{r:?}"
    );
    // ... and an update with a bad file sets them (by file).
    let r = app
        .call(
            "PUT",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                ed25519.clone(),
                json!({"id": good_id, "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let e = &r.json()["successfulySavedCertificates"][0];
    assert_eq!(e["state"], "unusable", "{e}");
    assert!(warnings_of(e)[0].contains("Ed25519"), "{e}");
    let w = stored_warnings(&app, good_id).await.expect("lifecycle");
    assert!(w[0].contains("Ed25519"), "{w:?}");
    // A rename alone keeps them (the file did not change).
    let r = app
        .call(
            "PUT",
            &format!("{}/{good_id}", certs_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"displayName": "renamed"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["successfulySavedCertificates"][0]["state"],
        "unusable",
        "{r:?}"
    );

    // Mapping checks: a triplet leading to such a certificate says so (object answers only).
    for (n, id) in [
        ("m-ed", good_id),
        ("m-exp", ids["expired"]),
        ("m-ok", ids["rsa1024"]),
        ("m-later", not_yet_id),
    ] {
        let r = app
            .create_mapping(A, id, "IDP", &format!("https://partner.test/{n}"), n)
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let triplets: Vec<Value> = ["m-ed", "m-exp", "m-ok", "m-later", "none"]
        .iter()
        .map(|n| json!({"serviceName": "IDP", "accountId": A, "url": format!("https://partner.test/{n}")}))
        .collect();
    let r = app
        .call(
            "POST",
            "/mtls/mapping?v=2",
            Auth::AppKey("key-a"),
            Body::Json(Value::Array(triplets.clone())),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v[0]["doExist"], true);
    assert_eq!(v[0]["certificate"]["id"], good_id.to_string(), "{v}");
    assert_eq!(v[0]["certificate"]["state"], "unusable", "{v}");
    assert!(
        warnings_of(&v[0]["certificate"])[0].contains("Ed25519"),
        "{v}"
    );
    assert!(v[0]["certificate"]["stateReason"].is_string(), "{v}");
    assert_eq!(v[1]["certificate"]["state"], "expired", "{v}");
    assert_eq!(v[3]["certificate"]["state"], "not_yet_valid", "{v}");
    // A good certificate and a missing triplet: LivePerson's shape exactly.
    assert_eq!(
        v[2],
        json!({"serviceName": "IDP", "accountId": A, "url": "https://partner.test/m-ok", "doExist": true})
    );
    assert_eq!(
        v[4],
        json!({"serviceName": "IDP", "accountId": A, "url": "https://partner.test/none", "doExist": false})
    );
    let r = app
        .call(
            "POST",
            &format!("/api/account/{A}/checks/serviceUrlMappings"),
            Auth::AppKey("key-a"),
            Body::Json(json!([
                {"serviceName": "IDP", "url": "https://partner.test/m-exp"},
                {"serviceName": "IDP", "url": "https://partner.test/m-ok"},
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v[0]["exist"], true);
    assert_eq!(v[0]["certificate"]["state"], "expired", "{v}");
    assert!(
        warnings_of(&v[0]["certificate"])[0].contains("expired at"),
        "{v}"
    );
    assert_eq!(
        v[1],
        json!({"serviceName": "IDP", "url": "https://partner.test/m-ok", "exist": true})
    );
    // v1 stays a map of booleans.
    let r = app
        .call(
            "POST",
            "/mtls/mapping",
            Auth::AppKey("key-a"),
            Body::Json(Value::Array(triplets)),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.json()
            .as_object()
            .is_some_and(|o| o.len() == 5 && o.values().all(Value::is_boolean)),
        "{r:?}"
    );

    // Neither the password nor the file in any answer or log line.
    let b64_der = b64(&rsa1024);
    for text in app.api.seen() {
        assert!(
            !text.contains(PW),
            "a response carries the password: {text}"
        );
        assert!(
            !text.contains(&b64_der[..40]),
            "a response carries the file: {text}"
        );
    }
    if capture_logs() {
        for l in log_lines() {
            assert!(!l.contains(PW), "a log line carries the password: {l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_entries_awaiting_signature_or_failing_to_load_say_so_and_stay_unavailable() {
    use mtls_gateway::store::{CertificateMeta, CertificateSecret, StoredCertificate};
    let app = App::new().await;
    let doc = |id: u64, name: &str, p12: Vec<u8>| StoredCertificate {
        meta: CertificateMeta {
            id,
            account_id: A.into(),
            name: name.into(),
            display_name: name.into(),
            deleted: false,
            not_after: None,
            updated_at: now(),
        },
        secret: CertificateSecret {
            p12,
            password: PW.into(),
        },
        lifecycle: None,
    };
    let store = app.state.refresher.store().clone();
    store
        .put_certificate(&doc(11, "csr", Vec::new()))
        .await
        .expect("put");
    store
        .put_certificate(&doc(12, "broken", b"not a pkcs12 file".to_vec()))
        .await
        .expect("put");
    let _ = app.state.refresher.refresh().await;
    let r = app
        .call("GET", &certs_path(A), Auth::Bearer(A), Body::None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(
        (&v[0]["status"], &v[0]["state"]),
        (&json!("UnAvailable"), &json!("awaiting_signature")),
        "{v}"
    );
    assert!(
        v[0]["stateReason"].as_str().unwrap_or("").contains("CSR"),
        "{v}"
    );
    assert_eq!(
        (&v[1]["status"], &v[1]["state"]),
        (&json!("UnAvailable"), &json!("load_failed")),
        "{v}"
    );
    assert!(
        v[1]["stateReason"]
            .as_str()
            .unwrap_or("")
            .contains("not PKCS#12"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_duplicate_certificate_name_is_409_naming_the_clash() {
    let app = App::new().await;
    let c = app.client_cert("dup");
    let id = app.create_cert(A, "taken", &c).await;
    let r = app
        .call(
            "POST",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([{"name": "taken", "password": PW, "p12": b64(&p12_of(&c))}])),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.code(), "duplicate_name");
    assert_eq!(r.json()["field"], "[0].name");
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains(&id.to_string()));
    let r = app
        .call(
            "POST",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([
                {"name": "twin", "password": PW, "p12": b64(&p12_of(&c))},
                {"name": "twin", "password": PW, "p12": b64(&p12_of(&c))},
            ])),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.json()["field"], "[1].name");
    // Renaming onto a taken name is refused too; the same name in another account is fine.
    let other = app.create_cert(A, "other", &c).await;
    let r = app
        .call(
            "PUT",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([{"id": other, "name": "taken"}])),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    app.create_cert(B, "taken", &c).await;
    assert_eq!(app.store_cert_count().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bad_certificate_input_is_a_4xx_json_error_naming_the_field_and_writes_nothing() {
    let app = App::new().await;
    let c = app.client_cert("ok");
    let good = json!({"name": "good", "password": PW, "p12": b64(&p12_of(&c))});
    let cases: Vec<(Body, u16, &str, &str)> = vec![
        (Body::Raw(b"[{\"name\": ".to_vec(), "application/json"), 400, "malformed_json", "body"),
        (Body::Raw(Vec::new(), "application/json"), 400, "malformed_json", "body"),
        (Body::Json(json!("a string")), 400, "invalid_type", "body"),
        (Body::Json(json!([])), 400, "empty_array", "body"),
        (Body::Json(json!([good.clone(), 7])), 400, "invalid_type", "[1]"),
        (
            Body::Json(json!([good.clone(), {"name": 12, "password": PW, "p12": "AAAA"}])),
            400,
            "invalid_type",
            "[1].name",
        ),
        (
            Body::Json(json!([good.clone(), {"name": "x", "p12": b64(&p12_of(&c))}])),
            400,
            "missing_field",
            "[1].password",
        ),
        (
            Body::Json(json!([good.clone(), {"name": "x", "password": PW}])),
            400,
            "missing_field",
            "[1].p12",
        ),
        (
            Body::Json(json!([good.clone(), {"name": "x", "password": PW, "p12": [1, 2, 300]}])),
            400,
            "invalid_type",
            "[1].p12[2]",
        ),
        (
            Body::Json(json!([good.clone(), {"name": "x", "password": PW, "p12": "%%%not base64"}])),
            400,
            "invalid_type",
            "[1].p12",
        ),
        (
            Body::Json(json!([good.clone(), {"name": "x", "password": PW, "p12": b64(b"random bytes, not pkcs12")}])),
            400,
            "invalid_p12",
            "[1].p12",
        ),
        (
            Body::Json(json!([good.clone(), {"name": "x", "password": "wrong", "p12": b64(&p12_of(&c))}])),
            400,
            "wrong_password",
            "[1].password",
        ),
        (
            Body::Json(json!([{"name": "  ", "password": PW, "p12": b64(&p12_of(&c))}])),
            400,
            "invalid_value",
            "[0].name",
        ),
        (
            Body::Json(Value::Array(
                (0..6)
                    .map(|i| json!({"name": format!("n{i}"), "password": PW, "p12": b64(&p12_of(&c))}))
                    .collect(),
            )),
            400,
            "too_many_items",
            "body",
        ),
    ];
    for (body, status, code, field) in cases {
        let r = app
            .call("POST", &certs_path(A), Auth::Bearer(A), body)
            .await;
        assert_eq!(r.status, status, "{code}: {r:?}");
        assert_eq!(r.code(), code, "{r:?}");
        assert_eq!(r.json()["field"], field, "{r:?}");
        assert!(
            r.json()["message"].as_str().is_some_and(|m| m.len() > 10),
            "{r:?}"
        );
        assert_eq!(
            r.header("content-type"),
            "application/json",
            "errors are JSON"
        );
    }
    assert_eq!(app.store_cert_count().await, 0, "nothing half-written");

    // Updates: unknown id, wrong type, malformed.
    let r = app
        .call(
            "PUT",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([{"id": 123, "name": "x"}])),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "certificate_not_found"),
        "{r:?}"
    );
    assert_eq!(r.json()["field"], "[0].id");
    let r = app
        .call(
            "PUT",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([{"id": "abc"}])),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_type"),
        "{r:?}"
    );
    let r = app
        .call(
            "GET",
            &format!("{}/not-a-number", certs_path(A)),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_id"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_uploads_over_the_cap_are_413() {
    let app = App::new().await; // admin.max_upload_bytes: 65536
    let big = vec![0x30u8; 70_000];
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                big.clone(),
                json!({"name": "big", "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.code(), "payload_too_large");
    let r = app
        .call(
            "POST",
            &format!("{}/p12-test/multipart", "/mtls/account/acc-a"),
            Auth::Bearer(A),
            Body::Form(tester_form(vec![0u8; 200_000], PW)),
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    let r = app
        .call(
            "POST",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([{"name": "big", "password": PW, "p12": b64(&big)}])),
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["field"], "[0].p12");
    let r = app
        .call(
            "POST",
            &maps_path(A),
            Auth::Bearer(A),
            Body::Raw(vec![b' '; 70_000], "application/json"),
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(app.store_cert_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_delete_of_a_certificate_in_use_is_409_unless_cascade() {
    let app = App::new().await;
    let c = app.client_cert("used");
    let id = app.create_cert(A, "used", &c).await;
    let r = app
        .create_mapping(A, id, "IDP", "https://bank.test/api/*", "m1")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let mid = r.json()[0]["id"].as_u64().expect("mapping id");
    let r = app
        .call(
            "DELETE",
            &format!("{}/{id}", certs_path(A)),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.code(), "certificate_in_use");
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains(&mid.to_string()));
    assert!(app.lookup(A, "IDP", "https://bank.test/api/x").is_some());

    let r = app
        .call(
            "DELETE",
            &format!("{}/{id}?cascade=true", certs_path(A)),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.lookup(A, "IDP", "https://bank.test/api/x"), None);
    let r = app
        .call("GET", &maps_path(A), Auth::Bearer(A), Body::None)
        .await;
    assert_eq!(r.json(), json!([]));
    assert_eq!(app.store_cert_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_a_corrupt_certificate_document_neither_blocks_the_account_nor_resists_deletion() {
    let app = App::new().await;
    let c = app.client_cert("fine");
    let good = app.create_cert(A, "fine", &c).await;
    let dir = app._dir.path().join("store/accounts/acc-a/certificates");
    std::fs::write(dir.join("77.json"), b"{ not json").expect("corrupt entry");
    let r = app
        .call("GET", &certs_path(A), Auth::Bearer(A), Body::None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    assert_eq!(r.json()[0]["id"], good);
    app.create_cert(A, "another", &c).await;
    let r = app
        .call(
            "DELETE",
            &format!("{}/77", certs_path(A)),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!dir.join("77.json").exists());
}

// ------------------------------------------------------------------ mappings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mapping_crud_is_visible_in_the_runtime_snapshot_at_once() {
    let app = App::new().await;
    let c1 = app.client_cert("m-1");
    let c2 = app.client_cert("m-2");
    let id1 = app.create_cert(A, "one", &c1).await;
    let id2 = app.create_cert(A, "two", &c2).await;

    // LivePerson's ac-common shape: serviceId as a numeric string.
    let r = app
        .call(
            "POST",
            &format!("{}?v=3.0", maps_path(A)),
            Auth::Bearer(A),
            Body::Json(json!([{"certificationId": id1.to_string(), "serviceId": "1", "enable": true,
                               "url": "https://Bank.Test:443/pay?x=1", "siteId": A, "name": "pay", "deleted": false}])),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let m = r.json()[0].clone();
    let mid = m["id"].as_u64().expect("id");
    assert_eq!(m["serviceName"], "IDP");
    assert_eq!(m["serviceId"], "1");
    assert_eq!(m["certificationId"], id1.to_string());
    assert_eq!(m["enable"], true);
    assert_eq!(m["siteId"], A);
    assert_eq!(app.lookup(A, "IDP", "https://bank.test/pay?x=1"), Some(id1));

    let r = app
        .call("GET", &maps_path(A), Auth::AppKey("key-a"), Body::None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    let r = app
        .call(
            "GET",
            &format!("{}/{mid}", maps_path(A)),
            Auth::AppKey("key-a"),
            Body::None,
        )
        .await;
    assert_eq!(r.json()["name"], "pay", "{r:?}");

    // Re-point and move the URL.
    let r = app
        .call(
            "PUT",
            &format!("{}/{mid}", maps_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"certificationId": id2, "url": "https://bank.test/v2/*"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.lookup(A, "IDP", "https://bank.test/pay?x=1"), None);
    assert_eq!(
        app.lookup(A, "IDP", "https://bank.test/v2/anything"),
        Some(id2)
    );

    // Disable: still stored, not served.
    let r = app
        .call(
            "PUT",
            &format!("{}/{mid}", maps_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"enable": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.lookup(A, "IDP", "https://bank.test/v2/anything"), None);

    let r = app
        .call(
            "DELETE",
            &format!("{}/{mid}", maps_path(A)),
            Auth::AppKey("key-a"),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app
        .call(
            "GET",
            &format!("{}/{mid}", maps_path(A)),
            Auth::AppKey("key-a"),
            Body::None,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "mapping_not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_duplicate_mapping_name_or_triplet_is_409_naming_the_clash() {
    let app = App::new().await;
    let c = app.client_cert("dup-map");
    let id = app.create_cert(A, "c", &c).await;
    let r = app
        .create_mapping(A, id, "WEBHOOKS", "https://hooks.test/in", "hook")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let first = r.json()[0]["id"].as_u64().expect("id");

    // Same triplet, spelled differently (case, default port): 409 naming the existing one.
    let r = app
        .create_mapping(A, id, "webhooks", "HTTPS://HOOKS.test:443/in", "other-name")
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.code(), "duplicate_mapping");
    assert_eq!(r.json()["field"], "[0].url");
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains(&first.to_string()));

    let r = app
        .create_mapping(A, id, "IDP", "https://hooks.test/other", "hook")
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.code(), "duplicate_name");

    // Same URL for another service, or in another account: fine.
    let r = app
        .create_mapping(A, id, "IDP", "https://hooks.test/in", "hook-idp")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let idb = app.create_cert(B, "c", &c).await;
    let r = app
        .create_mapping(B, idb, "WEBHOOKS", "https://hooks.test/in", "hook")
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    // Within one request.
    let r = app
        .call(
            "POST",
            &maps_path(A),
            Auth::Bearer(A),
            Body::Json(json!([
                {"certificationId": id, "serviceName": "TEST_SERVICE", "url": "https://t.test/a", "name": "t1"},
                {"certificationId": id, "serviceName": "TEST_SERVICE", "url": "https://t.test/a", "name": "t2"},
            ])),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.json()["field"], "[1].url");
    assert_eq!(
        app.lookup(A, "TEST_SERVICE", "https://t.test/a"),
        None,
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bad_mapping_input_is_400_naming_the_field() {
    let app = App::new().await;
    let c = app.client_cert("bad-map");
    let id = app.create_cert(A, "c", &c).await;
    let idb = app.create_cert(B, "c", &c).await;
    let base = json!({"certificationId": id, "serviceName": "IDP", "url": "https://ok.test/", "name": "n"});
    let with = |k: &str, v: Value| {
        let mut o = base.clone();
        o[k] = v;
        Body::Json(json!([o]))
    };
    let cases: Vec<(Body, &str, &str)> = vec![
        (
            with("certificationId", json!(999)),
            "unknown_certificate",
            "[0].certificationId",
        ),
        // Another account's certificate is unknown here.
        (
            with("certificationId", json!(idb)),
            "unknown_certificate",
            "[0].certificationId",
        ),
        (
            with("certificationId", json!("x1")),
            "invalid_type",
            "[0].certificationId",
        ),
        (
            with("serviceName", json!("NOPE")),
            "unknown_service",
            "[0].serviceName",
        ),
        (
            with("serviceId", json!("77")),
            "unknown_service",
            "[0].serviceId",
        ),
        (
            with("serviceId", json!(2)),
            "service_mismatch",
            "[0].serviceId",
        ),
        (with("url", json!("not a url")), "invalid_url", "[0].url"),
        (
            with("url", json!("https://user@evil.test/")),
            "invalid_url",
            "[0].url",
        ),
        (with("url", json!(5)), "invalid_type", "[0].url"),
        (with("enable", json!("yes")), "invalid_type", "[0].enable"),
        (
            with("siteId", json!("acc-b")),
            "site_mismatch",
            "[0].siteId",
        ),
        (
            Body::Json(json!([{"serviceName": "IDP", "url": "https://ok.test/"}])),
            "missing_field",
            "[0].certificationId",
        ),
        (
            Body::Raw(b"{oops".to_vec(), "application/json"),
            "malformed_json",
            "body",
        ),
    ];
    for (body, code, field) in cases {
        let r = app.call("POST", &maps_path(A), Auth::Bearer(A), body).await;
        assert_eq!(r.status, 400, "{code}: {r:?}");
        assert_eq!(r.code(), code, "{r:?}");
        assert_eq!(r.json()["field"], field, "{r:?}");
    }
    let r = app
        .call("GET", &maps_path(A), Auth::Bearer(A), Body::None)
        .await;
    assert_eq!(r.json(), json!([]), "nothing written");
    // Extra services from LivePerson's clients are accepted when configured; FAAS is not here.
    let r = app
        .call(
            "POST",
            &maps_path(A),
            Auth::Bearer(A),
            with("serviceName", json!("FAAS")),
        )
        .await;
    assert_eq!(r.code(), "unknown_service");
}

// ------------------------------------------------------------------ activate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_activate_without_validation_creates_then_repoints_the_mapping() {
    let app = App::new().await;
    let c1 = app.client_cert("act-1");
    let c2 = app.client_cert("act-2");
    let id1 = app.create_cert(A, "one", &c1).await;
    let id2 = app.create_cert(A, "two", &c2).await;
    let path = |id: u64| format!("{}/activate/{id}", certs_path(A));
    let body = json!({"serviceName": "IDP", "url": "https://idp.test/token"});
    let r = app
        .call(
            "POST",
            &path(id1),
            Auth::Bearer(A),
            Body::Json(body.clone()),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let mid = r.json()["id"].as_u64().expect("id");
    assert_eq!(r.json()["certificationId"], id1.to_string());
    assert_eq!(r.json()["serviceId"], "1");
    assert_eq!(app.lookup(A, "IDP", "https://idp.test/token"), Some(id1));

    let r = app
        .call(
            "POST",
            &format!("{}?isValidateUrlEnabled=false", path(id2)),
            Auth::AppKey("key-a"),
            Body::Json(body),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.json()["id"],
        mid,
        "the same triplet is re-pointed, not duplicated"
    );
    assert_eq!(app.lookup(A, "IDP", "https://idp.test/token"), Some(id2));

    let r = app
        .call(
            "POST",
            &path(42),
            Auth::Bearer(A),
            Body::Json(json!({"serviceName": "IDP", "url": "https://idp.test/x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "certificate_not_found"),
        "{r:?}"
    );
    let r = app
        .call(
            "POST",
            &path(id1),
            Auth::Bearer(A),
            Body::Json(json!({"serviceName": "NOPE", "url": "https://idp.test/x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "unknown_service"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_activate_with_validation_against_a_live_mtls_target_saves_the_mapping() {
    let app = App::new().await;
    let echo = app.pki.echo();
    let c = app.client_cert("validated");
    let id = app.create_cert(A, "v", &c).await;
    let url = format!("https://localhost:{}/status/204", echo.addr.port());
    let r = app
        .call(
            "POST",
            &format!("{}/activate/{id}?isValidateUrlEnabled=true", certs_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"serviceName": "TEST_SERVICE", "url": url})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(echo.connections(), 1, "one real mTLS connection");
    assert_eq!(app.lookup(A, "TEST_SERVICE", &url), Some(id));

    // In the body instead of the query, against a prefix mapping.
    let url2 = format!("https://localhost:{}/bytes/*", echo.addr.port());
    let r = app
        .call(
            "POST",
            &format!("{}/activate/{id}", certs_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"serviceName": "IDP", "url": url2, "isValidateUrlEnabled": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(echo.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_activate_with_validation_against_a_dead_port_is_424_and_saves_nothing() {
    let app = App::new().await;
    let c = app.client_cert("dead");
    let id = app.create_cert(A, "d", &c).await;
    let url = format!("https://localhost:{}/x", free_port());
    let r = app
        .call(
            "POST",
            &format!("{}/activate/{id}?isValidateUrlEnabled=true", certs_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"serviceName": "IDP", "url": url})),
        )
        .await;
    assert_eq!(r.status, 424, "{r:?}");
    assert_eq!(r.code(), "upstream_failed");
    assert_eq!(r.header("lp-message-from-transport"), url);
    assert!(!r.header("lp-error-from-transport").is_empty());
    assert_eq!(app.lookup(A, "IDP", &url), None);
    let r = app
        .call("GET", &maps_path(A), Auth::Bearer(A), Body::None)
        .await;
    assert_eq!(r.json(), json!([]));

    // A target that refuses our certificate (an echo trusting another CA) is a 424 too.
    let other = Pki::new();
    let echo = mtls_gateway::dev::echo::spawn_on_thread(mtls_gateway::dev::echo::EchoConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert: app.pki.server.cert.clone(),
        key: app.pki.server.key.clone(),
        chain: vec![],
        client_ca: vec![other.ca.cert.clone()],
        require_client_cert: true,
    })
    .expect("echo");
    let url = format!("https://localhost:{}/x", echo.addr.port());
    let r = app
        .call(
            "POST",
            &format!("{}/activate/{id}?isValidateUrlEnabled=true", certs_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"serviceName": "IDP", "url": url})),
        )
        .await;
    assert_eq!(r.status, 424, "{r:?}");
    assert_eq!(app.lookup(A, "IDP", &url), None);
}

// ------------------------------------------------------------------ mapping checks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mapping_checks_answer_from_the_snapshot_in_v1_v2_and_account_shapes() {
    let app = App::new().await;
    let c = app.client_cert("chk");
    let id = app.create_cert(A, "c", &c).await;
    assert_eq!(
        app.create_mapping(A, id, "TEST_SERVICE", "https://api.test/check?q=1", "chk")
            .await
            .status,
        201
    );
    let body = json!([
        {"serviceName": "TEST_SERVICE", "accountId": A, "url": "https://api.test/check?q=1"},
        {"serviceName": "TEST_SERVICE", "accountId": A, "url": "https://api.test/check?q=2"},
    ]);

    let r = app
        .call(
            "POST",
            "/mtls/mapping",
            Auth::AppKey("key-internal"),
            Body::Json(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({
            "CertificateMappingParamters{serviceName='TEST_SERVICE', accountId='acc-a', url='https://api.test/check?q=1'}": true,
            "CertificateMappingParamters{serviceName='TEST_SERVICE', accountId='acc-a', url='https://api.test/check?q=2'}": false,
        })
    );
    let r = app
        .call(
            "POST",
            "/mtls/mapping?v=2",
            Auth::AppKey("key-a"),
            Body::Json(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!([
            {"serviceName": "TEST_SERVICE", "accountId": A, "url": "https://api.test/check?q=1", "doExist": true},
            {"serviceName": "TEST_SERVICE", "accountId": A, "url": "https://api.test/check?q=2", "doExist": false},
        ])
    );
    let r = app
        .call(
            "POST",
            "/mtls/mapping?v=3",
            Auth::AppKey("key-a"),
            Body::Json(body),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");

    let r = app
        .call(
            "POST",
            &format!("/api/account/{A}/checks/serviceUrlMappings"),
            Auth::AppKey("key-a"),
            Body::Json(json!([
                {"serviceName": "TEST_SERVICE", "url": "https://api.test/check?q=1"},
                {"serviceName": "IDP", "url": "https://api.test/check?q=1"},
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!([
            {"serviceName": "TEST_SERVICE", "url": "https://api.test/check?q=1", "exist": true},
            {"serviceName": "IDP", "url": "https://api.test/check?q=1", "exist": false},
        ])
    );

    // Legacy forms.
    let r = app
        .api
        .http
        .get(format!("http://{}/mtls/mapping/account/{A}", app.api.host))
        .header(
            "authorization",
            oauth_header(
                &app.api.host,
                "key-a",
                "secret-a",
                "GET",
                &format!("/mtls/mapping/account/{A}"),
                None,
                b"",
            ),
        )
        .header("lp-service-name", "TEST_SERVICE")
        .header("lp-forward-url", "https://api.test/check?q=1")
        .send()
        .await
        .expect("legacy get");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v.as_object().map(|o| o.values().all(|b| *b == true)),
        Some(true),
        "{v}"
    );
    let r = app
        .call(
            "POST",
            &format!("/mtls/mapping/account/{A}"),
            Auth::AppKey("key-a"),
            Body::Json(
                json!([{"serviceName": "TEST_SERVICE", "url": "https://api.test/check?q=1"}]),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().as_object().map(|o| o.len()), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_global_mapping_check_needs_an_internal_key_or_one_scoped_to_every_account() {
    let app = App::new().await;
    let both = json!([
        {"serviceName": "IDP", "accountId": A, "url": "https://x.test/"},
        {"serviceName": "IDP", "accountId": B, "url": "https://x.test/"},
    ]);
    let r = app
        .call(
            "POST",
            "/mtls/mapping",
            Auth::AppKey("key-a"),
            Body::Json(both.clone()),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.code(), "forbidden");
    let r = app
        .call(
            "POST",
            "/mtls/mapping",
            Auth::AppKey("key-internal"),
            Body::Json(both.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // OAuth1 only, even for an admin token.
    let r = app
        .call("POST", "/mtls/mapping", Auth::Admin, Body::Json(both))
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").starts_with("OAuth"), "{r:?}");
}

// ------------------------------------------------------------------ P12 tester

/// (label, file, password, failed check or None for usable)
fn tester_matrix(pki: &Pki) -> Vec<(&'static str, Vec<u8>, String, Option<&'static str>)> {
    let leaf = |key: KeyKind| {
        let mut l = Leaf::client("tester");
        l.key = key;
        certgen::issue(&pki.ca, &l).expect("leaf")
    };
    let p12 = |c: &Issued| certgen::to_p12(&c.cert, &c.key, &[], PW).expect("p12");
    let modern = pki.client("modern");
    let legacy = certgen::openssl_p12(&modern.cert, &modern.key, &[], PW, P12Flavour::Legacy)
        .expect("openssl -legacy");
    let mut exp = Leaf::client("expired");
    exp.not_before_offset_days = -30;
    exp.valid_days = 10;
    let expired = certgen::issue(&pki.ca, &exp).expect("expired");
    let cert_only =
        certgen::openssl_p12_parts(Some(&modern.cert), None, &[], PW, P12Flavour::Modern)
            .expect("cert only");
    let key_only = certgen::openssl_p12_parts(None, Some(&modern.key), &[], PW, P12Flavour::Modern)
        .expect("key only");
    let good = p12(&modern);
    let truncated = good[..good.len() / 2].to_vec();
    let mut random = vec![0u8; 1500];
    boring::rand::rand_bytes(&mut random).expect("rand");
    vec![
        ("modern AES", good.clone(), PW.into(), None),
        ("legacy RC2/3DES", legacy, PW.into(), None),
        (
            "RSA-1024",
            p12(&leaf(KeyKind::Rsa1024)),
            PW.into(),
            Some("key_algorithm_and_strength"),
        ),
        ("RSA-4096", p12(&leaf(KeyKind::Rsa4096)), PW.into(), None),
        ("EC P-256", p12(&leaf(KeyKind::EcP256)), PW.into(), None),
        (
            "Ed25519",
            p12(&leaf(KeyKind::Ed25519)),
            PW.into(),
            Some("key_algorithm_and_strength"),
        ),
        ("expired", p12(&expired), PW.into(), Some("validity_window")),
        (
            "certificate only",
            cert_only,
            PW.into(),
            Some("one_private_key_matching_leaf"),
        ),
        (
            "key only",
            key_only,
            PW.into(),
            Some("one_private_key_matching_leaf"),
        ),
        (
            "wrong password",
            good,
            "not-the-password".into(),
            Some("opens_with_password"),
        ),
        (
            "random bytes",
            random,
            PW.into(),
            Some("opens_with_password"),
        ),
        (
            "truncated",
            truncated,
            PW.into(),
            Some("opens_with_password"),
        ),
    ]
}

/// Whether Java's own PKCS12 keystore lists a private key entry (None without a JDK).
fn keytool_reads(file: &[u8], password: &str) -> Option<bool> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("f.p12");
    std::fs::write(&path, file).ok()?;
    let out = std::process::Command::new("keytool")
        .args(["-list", "-storetype", "PKCS12", "-keystore"])
        .arg(&path)
        .args(["-storepass", password])
        .output()
        .ok()?;
    Some(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("PrivateKeyEntry"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_p12_tester_matrix_gives_the_expected_verdict_for_each_file() {
    let app = App::new().await;
    let path = format!("/mtls/account/{A}/p12-test/multipart");
    for (label, file, password, failed) in tester_matrix(&app.pki) {
        let r = app
            .call(
                "POST",
                &path,
                Auth::Bearer(A),
                Body::Form(tester_form(file.clone(), &password)),
            )
            .await;
        let v = r.json();
        let checks = v["checks"].as_array().cloned().unwrap_or_default();
        assert_eq!(checks.len(), 8, "{label}: every check reported: {r:?}");
        assert!(
            checks.iter().all(|c| c["name"].is_string()
                && c["passed"].is_boolean()
                && c["detail"].as_str().is_some_and(|d| !d.is_empty())),
            "{label}: {r:?}"
        );
        match failed {
            None => {
                assert_eq!(r.status, 200, "{label}: {r:?}");
                assert_eq!(v["usable"], true, "{label}");
            }
            Some(name) => {
                assert_eq!(r.status, 422, "{label}: {r:?}");
                assert_eq!(r.code(), "p12_unusable", "{label}");
                assert_eq!(v["usable"], false, "{label}");
                let first_failed = checks
                    .iter()
                    .find(|c| c["passed"] == false)
                    .map(|c| c["name"].clone());
                assert_eq!(first_failed, Some(json!(name)), "{label}: {r:?}");
            }
        }
        // Java's keystore agrees on the files we call usable and on those that do not open.
        if let Some(java) = keytool_reads(&file, &password) {
            if failed.is_none() {
                assert!(
                    java,
                    "{label}: keytool cannot read a file the tester calls usable"
                );
            }
            if failed == Some("opens_with_password") {
                assert!(
                    !java,
                    "{label}: keytool reads a file the tester says does not open"
                );
            }
        }
    }
    assert_eq!(app.store_cert_count().await, 0, "the tester stores nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_p12_tester_test_call_reaches_the_target_with_the_uploaded_certificate() {
    let app = App::new().await;
    let echo = app.pki.echo();
    let c = app.client_cert("tester-call");
    let url = format!("https://localhost:{}/echo/path?q=1", echo.addr.port());
    let form = tester_form(p12_of(&c), PW).text("body", "hello target");
    let r = app
        .api
        .http
        .post(format!(
            "http://{}/mtls/account/{A}/p12-test/multipart",
            app.api.host
        ))
        .header("authorization", bearer_for(A))
        .header("lp-forward-url", &url)
        .header("lp-method-override", "PUT")
        .header("lp-content-type-override", "text/x-test")
        .header("lp-authorization-override", "Basic dGFyZ2V0OmNyZWQ=")
        .multipart(form)
        .send()
        .await
        .expect("tester");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["usable"], true);
    let call = &v["call"];
    assert_eq!(call["status"], 200, "{v}");
    assert_eq!(call["method"], "PUT");
    assert_eq!(call["body"], "hello target");
    let hdr = |name: &str| {
        call["headers"]
            .as_array()
            .and_then(|h| h.iter().find(|p| p[0] == name))
            .map(|p| p[1].clone())
    };
    assert_eq!(
        hdr("x-client-cert-sha256"),
        Some(json!(sha256_hex(&c.cert)))
    );
    assert_eq!(hdr("x-seen-method"), Some(json!("PUT")));
    assert_eq!(hdr("x-seen-path"), Some(json!("/echo/path?q=1")));
    assert_eq!(hdr("content-type"), Some(json!("text/x-test")));

    // Dead target: 424 with the transport headers, the report still included.
    let dead = format!("https://localhost:{}/", free_port());
    let r = app
        .api
        .http
        .post(format!(
            "http://{}/mtls/account/{A}/p12-test/multipart",
            app.api.host
        ))
        .header("authorization", bearer_for(A))
        .header("lp-forward-url", &dead)
        .multipart(tester_form(p12_of(&c), PW))
        .send()
        .await
        .expect("tester");
    assert_eq!(r.status(), 424);
    assert_eq!(
        r.headers()
            .get("lp-message-from-transport")
            .and_then(|v| v.to_str().ok()),
        Some(dead.as_str())
    );
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["usable"], true);
    assert!(v["call"]["error"].is_string(), "{v}");
    assert_eq!(app.store_cert_count().await, 0);
}

/// The tester's test call to `url` with a fresh client certificate: (HTTP status, JSON answer).
async fn tester_call(app: &App, url: &str) -> (u16, Value) {
    let c = app.client_cert("shared-setup");
    let r = app
        .api
        .http
        .post(format!(
            "http://{}/mtls/account/{A}/p12-test/multipart",
            app.api.host
        ))
        .header("authorization", bearer_for(A))
        .header("lp-forward-url", url)
        .multipart(tester_form(p12_of(&c), PW))
        .send()
        .await
        .expect("tester");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

/// A TLS target for `localhost` that speaks TLS 1.0 and 1.1 only; it answers any request it
/// reads with 200.
async fn tls11_target(pki: &Pki) -> std::net::SocketAddr {
    use boring::ssl::{SslAcceptor, SslMethod, SslVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut b = SslAcceptor::mozilla_intermediate(SslMethod::tls()).expect("acceptor");
    b.set_min_proto_version(Some(SslVersion::TLS1))
        .expect("min");
    b.set_max_proto_version(Some(SslVersion::TLS1_1))
        .expect("max");
    b.set_cipher_list("ALL").expect("ciphers");
    b.set_certificate(&pki.server.cert).expect("cert");
    b.set_private_key(&pki.server.key).expect("key");
    let acceptor = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(mut s) = tokio_boring::accept(&acceptor, tcp).await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        }
    });
    addr
}

/// The admin's calls go through the proxy's upstream set-up (`upstream_parts`, as `build`
/// shares it): the target is trusted through `upstream.ca_files` alone, its name is verified,
/// and TLS below 1.2 is refused, with messages that say which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_test_calls_use_the_proxys_trust_names_and_tls_floor() {
    let app = App::new().await;
    let echo = app.pki.echo();

    // Trusted through upstream.ca_files (the test CA is in no system store).
    let url = format!("https://localhost:{}/status/204", echo.addr.port());
    let (status, v) = tester_call(&app, &url).await;
    assert_eq!((status, &v["call"]["status"]), (200, &json!(204)), "{v}");

    // Without upstream.ca_files the same target is not trusted.
    let system_only = App::with_trust(auth_yaml(), false).await;
    let echo2 = system_only.pki.echo();
    let url = format!("https://localhost:{}/status/204", echo2.addr.port());
    let (status, v) = tester_call(&system_only, &url).await;
    assert_eq!(status, 424, "{v}");
    let err = v["call"]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("InvalidCert") && err.contains("localhost"),
        "{err}"
    );

    // A certificate from the trusted CA, for another name: refused by the name check.
    let other = certgen::issue(
        &app.pki.ca,
        &Leaf::server("other.test", &["other.test"], &[]),
    )
    .expect("server cert");
    let wrong_name =
        mtls_gateway::dev::echo::spawn_on_thread(mtls_gateway::dev::echo::EchoConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert: other.cert,
            key: other.key,
            chain: vec![],
            client_ca: vec![app.pki.ca.cert.clone()],
            require_client_cert: true,
        })
        .expect("echo");
    let url = format!("https://localhost:{}/", wrong_name.addr.port());
    let (status, v) = tester_call(&app, &url).await;
    assert_eq!(status, 424, "{v}");
    let err = v["call"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("InvalidCert"), "{err}");
    assert_eq!(wrong_name.requests(), 0);

    // TLS 1.1 only: below the connector's TLS 1.2 floor, as for proxied traffic.
    let addr = tls11_target(&app.pki).await;
    let url = format!("https://localhost:{}/", addr.port());
    let (status, v) = tester_call(&app, &url).await;
    assert_eq!(status, 424, "{v}");
    let err = v["call"]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("TLSHandshakeFailure") && err.to_ascii_uppercase().contains("PROTOCOL"),
        "{err}"
    );
}

// ------------------------------------------------------------------ auth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_auth_rules_per_resource_hold_both_ways() {
    let app = App::new().await;
    let c = app.client_cert("auth");
    let id = app.create_cert(A, "c", &c).await;
    let file = || {
        file_form(
            p12_of(&c),
            json!({"name": format!("f{}", mtls_gateway::store::new_id()), "password": PW}),
        )
    };
    let check_body = || Body::Json(json!([{"serviceName": "IDP", "url": "https://x.test/"}]));
    let checks_path = format!("/api/account/{A}/checks/serviceUrlMappings");
    let tester = format!("/mtls/account/{A}/p12-test/multipart");

    // Either scheme: JSON certificates, mappings, activate.
    for auth in [Auth::AppKey("key-a"), Auth::Bearer(A)] {
        let r = app
            .call("GET", &certs_path(A), auth.clone(), Body::None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = app
            .call("GET", &maps_path(A), auth.clone(), Body::None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = app
            .call(
                "POST",
                &format!("{}/activate/{id}", certs_path(A)),
                auth.clone(),
                Body::Json(json!({"serviceName": "IDP", "url": format!("https://x.test/{}", mtls_gateway::store::new_id())})),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    // No credentials: 401 with both challenges.
    let r = app
        .call("GET", &certs_path(A), Auth::None, Body::None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.code(), "unauthorized");
    let ch = r.header("www-authenticate");
    assert!(
        ch.contains("OAuth realm") && ch.contains("Bearer realm"),
        "{ch}"
    );

    // Bearer only: by-file and the tester.
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::AppKey("key-a"),
            Body::Form(file()),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer realm=\"mtls-gateway\""
    );
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file()),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = app
        .call(
            "POST",
            &tester,
            Auth::AppKey("key-a"),
            Body::Form(tester_form(p12_of(&c), PW)),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = app
        .call(
            "POST",
            &tester,
            Auth::Bearer(A),
            Body::Form(tester_form(p12_of(&c), PW)),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    // OAuth1 only: the checks.
    let r = app
        .call("POST", &checks_path, Auth::Bearer(A), check_body())
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), "OAuth realm=\"mtls-gateway\"");
    let r = app
        .call("POST", &checks_path, Auth::AppKey("key-a"), check_body())
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    // Bad credentials: a bad signature, an expired token, a token for another audience.
    let forged = oauth_header(
        &app.api.host,
        "key-a",
        "not-the-secret",
        "GET",
        &certs_path(A),
        None,
        b"",
    );
    let r = app
        .call("GET", &certs_path(A), Auth::Raw(forged), Body::None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate").contains("signature_invalid"),
        "{r:?}"
    );
    let expired = format!(
        "Bearer {}",
        jwt(json!({"sub": "u", "iss": ISS, "aud": AUD, "exp": now() - 3600, "accountId": A}))
    );
    let r = app
        .call("GET", &certs_path(A), Auth::Raw(expired), Body::None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate").contains("invalid_token"),
        "{r:?}"
    );
    let wrong_aud = format!(
        "Bearer {}",
        jwt(json!({"sub": "u", "iss": ISS, "aud": "other", "exp": now() + 60, "accountId": A}))
    );
    let r = app
        .call("GET", &certs_path(A), Auth::Raw(wrong_aud), Body::None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // A replayed OAuth1 request is refused.
    let signed = oauth_header(
        &app.api.host,
        "key-a",
        "secret-a",
        "GET",
        &certs_path(A),
        None,
        b"",
    );
    let r = app
        .call("GET", &certs_path(A), Auth::Raw(signed.clone()), Body::None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app
        .call("GET", &certs_path(A), Auth::Raw(signed), Body::None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // An admin token reaches every account.
    let r = app
        .call("GET", &certs_path(B), Auth::Admin, Body::None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Behind a TLS terminator the client signs the `https://` URL it used; the admin listener sees
/// plain http and the terminator's `X-Forwarded-Proto: https`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_oauth1_behind_a_tls_terminator_needs_trust_forwarded_proto_and_says_so() {
    async fn get(app: &App, forwarded_proto: Option<&str>) -> (u16, String) {
        let path = certs_path(A);
        let authz = oauth_header(
            &format!("https://{}", app.api.host),
            "key-a",
            "secret-a",
            "GET",
            &path,
            None,
            b"",
        );
        let mut rb = app
            .api
            .http
            .get(format!("http://{}{path}", app.api.host))
            .header("authorization", authz);
        if let Some(p) = forwarded_proto {
            rb = rb.header("x-forwarded-proto", p);
        }
        let r = rb.send().await.expect("admin request");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    let app = App::new().await;
    let (status, text) = get(&app, Some("https")).await;
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("X-Forwarded-Proto: https was ignored")
            && text.contains("auth.oauth1.trust_forwarded_proto: true"),
        "{text}"
    );

    let app = App::with_auth(auth_yaml().replace(
        "  oauth1:\n",
        "  oauth1:\n    trust_forwarded_proto: true\n",
    ))
    .await;
    let (status, text) = get(&app, Some("https")).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = get(&app, None).await;
    assert_eq!(status, 401, "{text}");
    let (status, text) = get(&app, Some("gopher")).await;
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("X-Forwarded-Proto must be http or https"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_credentials_for_account_a_cannot_touch_account_b() {
    let app = App::new().await;
    let c = app.client_cert("iso");
    let idb = app.create_cert(B, "b-cert", &c).await;
    let r = app
        .create_mapping(B, idb, "IDP", "https://b.test/", "b-map")
        .await;
    let mb = r.json()[0]["id"].as_u64().expect("mapping");
    let tester = format!("/mtls/account/{B}/p12-test/multipart");
    for auth in [Auth::AppKey("key-a"), Auth::Bearer(A)] {
        let attempts: Vec<(&str, String, Body)> = vec![
            ("GET", certs_path(B), Body::None),
            ("GET", format!("{}/{idb}", certs_path(B)), Body::None),
            (
                "POST",
                certs_path(B),
                Body::Json(json!([{"name": "x", "password": PW, "p12": b64(&p12_of(&c))}])),
            ),
            (
                "PUT",
                certs_path(B),
                Body::Json(json!([{"id": idb, "name": "stolen"}])),
            ),
            (
                "DELETE",
                format!("{}/{idb}?cascade=true", certs_path(B)),
                Body::None,
            ),
            (
                "POST",
                format!("{}/activate/{idb}", certs_path(B)),
                Body::Json(json!({"serviceName": "IDP", "url": "https://evil.test/"})),
            ),
            ("GET", maps_path(B), Body::None),
            ("GET", format!("{}/{mb}", maps_path(B)), Body::None),
            (
                "POST",
                maps_path(B),
                Body::Json(
                    json!([{"certificationId": idb, "serviceName": "IDP", "url": "https://evil.test/", "name": "e"}]),
                ),
            ),
            (
                "PUT",
                format!("{}/{mb}", maps_path(B)),
                Body::Json(json!({"url": "https://evil.test/"})),
            ),
            ("DELETE", format!("{}/{mb}", maps_path(B)), Body::None),
        ];
        for (method, path, body) in attempts {
            let r = app.call(method, &path, auth.clone(), body).await;
            assert_eq!(r.status, 403, "{method} {path}: {r:?}");
            assert_eq!(r.code(), "forbidden");
        }
    }
    // Bearer-only and OAuth1-only resources of B.
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(B)),
            Auth::Bearer(A),
            Body::Form(file_form(p12_of(&c), json!({"name": "x", "password": PW}))),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = app
        .call(
            "POST",
            &tester,
            Auth::Bearer(A),
            Body::Form(tester_form(p12_of(&c), PW)),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = app
        .call(
            "POST",
            &format!("/api/account/{B}/checks/serviceUrlMappings"),
            Auth::AppKey("key-a"),
            Body::Json(json!([{"serviceName": "IDP", "url": "https://b.test/"}])),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    // A's own routes cannot reach B's objects by id either.
    let r = app
        .call(
            "GET",
            &format!("{}/{idb}", certs_path(A)),
            Auth::Bearer(A),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = app
        .call(
            "POST",
            &format!("{}/activate/{idb}", certs_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"serviceName": "IDP", "url": "https://a.test/"})),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    // B is untouched.
    let r = app
        .call("GET", &certs_path(B), Auth::Bearer(B), Body::None)
        .await;
    assert_eq!(r.json()[0]["name"], "b-cert");
    assert_eq!(app.lookup(B, "IDP", "https://b.test/"), Some(idb));
}

// ------------------------------------------------------------------ secrets, audit, spec

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_no_password_or_p12_appears_in_any_response_or_log_line() {
    let app = App::new().await;
    let c = app.client_cert("secret");
    let der = p12_of(&c);
    let id = app.create_cert(A, "s", &c).await;
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                der.clone(),
                json!({"name": "s2", "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 201);
    // Error paths that handle the secret: wrong password, wrong type, duplicate.
    app.call(
        "POST",
        &certs_path(A),
        Auth::Bearer(A),
        Body::Json(json!([{"name": "w", "password": format!("{PW}-wrong"), "p12": b64(&der)}])),
    )
    .await;
    app.call(
        "POST",
        &certs_path(A),
        Auth::Bearer(A),
        Body::Json(json!([{"name": "w", "password": 12345, "p12": b64(&der)}])),
    )
    .await;
    app.call(
        "POST",
        &certs_path(A),
        Auth::Bearer(A),
        Body::Json(json!([{"name": "s", "password": PW, "p12": b64(&der)}])),
    )
    .await;
    app.call(
        "PUT",
        &certs_path(A),
        Auth::Bearer(A),
        Body::Json(json!([{"id": id, "password": format!("{PW}-x")}])),
    )
    .await;
    app.call("GET", &certs_path(A), Auth::Bearer(A), Body::None)
        .await;
    app.call(
        "GET",
        &format!("{}/{id}", certs_path(A)),
        Auth::Bearer(A),
        Body::None,
    )
    .await;
    app.call(
        "POST",
        &format!("/mtls/account/{A}/p12-test/multipart"),
        Auth::Bearer(A),
        Body::Form(tester_form(der.clone(), PW)),
    )
    .await;
    app.call(
        "POST",
        &format!("/mtls/account/{A}/p12-test/multipart"),
        Auth::Bearer(A),
        Body::Form(tester_form(der.clone(), &format!("{PW}-wrong"))),
    )
    .await;
    app.call(
        "DELETE",
        &format!("{}/{id}", certs_path(A)),
        Auth::Bearer(A),
        Body::None,
    )
    .await;

    let b64_der = b64(&der);
    let needles = [
        PW.to_string(),
        b64_der[..40].to_string(),
        b64_der[b64_der.len() - 40..].to_string(),
    ];
    for text in app.api.seen() {
        for n in &needles {
            assert!(
                !text.contains(n.as_str()),
                "a response carries a secret: {text}"
            );
        }
    }
    if capture_logs() {
        let lines = log_lines();
        assert!(
            lines.iter().any(|l| l.contains(" audit ")),
            "audit lines are captured"
        );
        for l in lines {
            for n in &needles {
                assert!(!l.contains(n.as_str()), "a log line carries a secret: {l}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_each_change_logs_one_audit_line_naming_who_what_and_which_account() {
    if !capture_logs() {
        // Another logger owns this process (a single-process `cargo test` run); nextest runs
        // each test in its own process, where the capture must work.
        assert!(
            std::env::var_os("NEXTEST_RUN_ID").is_none(),
            "log capture failed under nextest"
        );
        return;
    }
    let app = App::new().await;
    let c = app.client_cert("audit");
    let id = app.create_cert(A, "audited", &c).await;
    let r = app
        .create_mapping(A, id, "IDP", "https://audit.test/", "audit-map")
        .await;
    let mid = r.json()[0]["id"].as_u64().expect("id");
    app.call(
        "DELETE",
        &format!("{}/{id}?cascade=true", certs_path(A)),
        Auth::AppKey("key-a"),
        Body::None,
    )
    .await;
    let audit: Vec<Value> = log_lines()
        .iter()
        .filter_map(|l| l.strip_prefix("INFO audit "))
        .filter_map(|j| serde_json::from_str(j).ok())
        .filter(|v: &Value| v["id"] == id || v["id"] == mid)
        .collect();
    let summary: Vec<(String, String, String, String)> = audit
        .iter()
        .map(|v| {
            (
                v["action"].as_str().unwrap_or("").to_string(),
                v["object"].as_str().unwrap_or("").to_string(),
                v["subject"].as_str().unwrap_or("").to_string(),
                v["account"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "create".into(),
                "certificate".into(),
                format!("user-of-{A}"),
                A.into()
            ),
            ("create".into(), "mapping".into(), "key-a".into(), A.into()),
            ("delete".into(), "mapping".into(), "key-a".into(), A.into()),
            (
                "delete".into(),
                "certificate".into(),
                "key-a".into(),
                A.into()
            ),
        ],
        "{audit:#?}"
    );
}

#[test]
fn admin_openapi_lists_exactly_the_routes_of_the_router() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("openapi.yaml parses");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0")),
        "OpenAPI 3.0"
    );
    let mut spec = BTreeSet::new();
    for (p, item) in doc["paths"].as_mapping().expect("paths") {
        let p = p.as_str().expect("path string");
        for (m, _) in item.as_mapping().expect("path item") {
            let m = m.as_str().unwrap_or("");
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&m) {
                spec.insert((m.to_ascii_uppercase(), p.to_string()));
            }
        }
    }
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = routes.difference(&spec).collect();
    let extra: Vec<_> = spec.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "docs/openapi.yaml lists routes the router lacks: {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_unknown_routes_and_methods_are_json_errors() {
    let app = App::new().await;
    let r = app.call("GET", "/nope", Auth::Bearer(A), Body::None).await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{r:?}");
    let r = app
        .call("PATCH", &certs_path(A), Auth::Bearer(A), Body::None)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (405, "method_not_allowed"),
        "{r:?}"
    );
    let r = app
        .call(
            "GET",
            "/mtls/account/bad%20id/certificates",
            Auth::Admin,
            Body::None,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_account_id"),
        "{r:?}"
    );
}

// ------------------------------------------------------------------ the real binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_through_the_real_binary_a_certificate_by_file_and_a_mapping_drive_the_proxy() {
    let pki = Pki::new();
    let echo = pki.echo();
    let dir = tempfile::tempdir().expect("tmp");
    let extra = format!(
        "auth:\n  oauth1:\n    keys:\n      - key: gw-key\n        secret: gw-secret\n        accounts: [\"acc\"]\n  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: {ISS}\n    audience: {AUD}\n"
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, &extra);
    let api = Api::new(gw.admin.to_string());
    let c = pki.client("via-admin");
    let der = p12_of(&c);

    let r = api
        .call(
            "POST",
            "/mtls/account/acc/certificates/by-file",
            Auth::Raw(bearer_for("acc")),
            Body::Form(file_form(
                der.clone(),
                json!({"name": "partner", "password": PW}),
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}\n{}", gw.logs());
    let id = r.json()["successfulySavedCertificates"][0]["id"]
        .as_u64()
        .expect("id");
    assert_eq!(
        r.json()["successfulySavedCertificates"][0]["status"],
        "Available"
    );

    let port = echo.addr.port();
    let path = "/api/account/acc/configuration/ac-common/mtls?v=3.0";
    let auth = oauth_header(&api.host, "gw-key", "gw-secret", "POST", path, None, b"");
    let r = api
        .call(
            "POST",
            path,
            Auth::Raw(auth),
            Body::Json(json!([{"certificationId": id.to_string(), "serviceId": "0", "enable": true,
                               "url": format!("https://localhost:{port}/partner/*"), "siteId": "acc",
                               "name": "partner-api", "deleted": false}])),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}\n{}", gw.logs());

    // Visible to the proxy at once (no wait for the refresh interval).
    let r = proxied_client(&gw)
        .get(format!("http://localhost:{port}/partner/x"))
        .send()
        .await
        .expect("proxied");
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert_eq!(
        r.headers()
            .get("x-client-cert-sha256")
            .and_then(|v| v.to_str().ok()),
        Some(sha256_hex(&c.cert).as_str())
    );

    let logs = gw.logs();
    assert!(logs.contains("audit"), "{logs}");
    assert!(!logs.contains(PW), "the password reached the log");
    assert!(!logs.contains(&b64(&der)[..40]), "the file reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_jwt_secret_file_takes_effect_in_the_running_gateway_without_a_restart() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    let secret_file = dir.path().join("jwt-key");
    std::fs::write(&secret_file, format!("{JWT_SECRET}\n")).expect("write the secret");
    let extra = format!(
        "auth:\n  jwt:\n    algorithm: HS256\n    secret_file: {}\n    issuer: {ISS}\n    audience: {AUD}\n",
        secret_file.display()
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, &extra);
    let api = Api::new(gw.admin.to_string());
    let list = |auth: String| {
        let api = &api;
        async move {
            api.call("GET", &certs_path("acc"), Auth::Raw(auth), Body::None)
                .await
                .status
        }
    };
    assert_eq!(list(bearer_for("acc")).await, 200, "{}", gw.logs());

    // Rotated as a Secret update does (a new file renamed over the old one).
    const NEW_SECRET: &str = "rotated-hs256-secret-fedcba9876543210-xyz";
    let tmp = dir.path().join("jwt-key.new");
    std::fs::write(&tmp, NEW_SECRET).expect("write the new secret");
    std::fs::rename(&tmp, &secret_file).expect("rename over");
    let new_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "user-of-acc", "iss": ISS, "aud": AUD, "exp": now() + 600, "accountId": "acc"}),
        &jsonwebtoken::EncodingKey::from_secret(NEW_SECRET.as_bytes()),
    )
    .expect("jwt");
    assert_eq!(
        list(format!("Bearer {new_token}")).await,
        200,
        "{}",
        gw.logs()
    );
    assert_eq!(
        list(bearer_for("acc")).await,
        401,
        "the old secret no longer signs"
    );

    let logs = gw.logs();
    assert!(
        logs.contains("auth.jwt.secret_file") && logs.contains("changed; read again"),
        "the re-read is logged with the field: {logs}"
    );
    assert!(
        !logs.contains(JWT_SECRET) && !logs.contains(NEW_SECRET),
        "a secret reached the log"
    );
}

// ------------------------------------------------------------------ PKCS#12 work bounds

/// The fixture: 10,000,000 PBKDF2 and MAC iterations (tests/fixtures/README.md).
const ITER_10M: &[u8] = include_bytes!("../fixtures/p12-iter-10000000.p12");
const ITER_10M_REFUSAL: &str = "PBKDF2 iteration count 10000000 exceeds the cap p12.max_iterations = 1000000; re-export the file with fewer iterations";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_p12_over_the_iteration_cap_is_refused_fast_by_the_tester_create_and_update() {
    let app = App::new().await;
    // Opening the fixture costs 12 s or more of CPU here; every refusal must come long before.
    let fast = std::time::Duration::from_secs(2);

    let started = std::time::Instant::now();
    let r = app
        .call(
            "POST",
            "/mtls/account/acc-a/p12-test/multipart",
            Auth::Bearer(A),
            Body::Form(tester_form(ITER_10M.to_vec(), "pw")),
        )
        .await;
    assert!(
        started.elapsed() < fast,
        "tester took {:?}",
        started.elapsed()
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "p12_unusable"),
        "{r:?}"
    );
    let opens = &r.json()["checks"][0];
    assert_eq!(opens["name"], "opens_with_password", "{r:?}");
    assert_eq!(opens["passed"], false, "{r:?}");
    assert!(
        opens["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with(ITER_10M_REFUSAL)),
        "{r:?}"
    );

    let started = std::time::Instant::now();
    let r = app
        .call(
            "POST",
            &certs_path(A),
            Auth::Bearer(A),
            Body::Json(json!([{"name": "slow", "password": "pw", "p12": b64(ITER_10M)}])),
        )
        .await;
    assert!(
        started.elapsed() < fast,
        "create took {:?}",
        started.elapsed()
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_p12"), "{r:?}");
    assert_eq!(r.json()["field"], "[0].p12");
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains(ITER_10M_REFUSAL)));

    let id = app
        .create_cert(A, "usable", &app.client_cert("usable"))
        .await;
    let started = std::time::Instant::now();
    let r = app
        .call(
            "POST",
            &format!("{}/by-file", certs_path(A)),
            Auth::Bearer(A),
            Body::Form(file_form(
                ITER_10M.to_vec(),
                json!({"name": "slow-file", "password": "pw"}),
            )),
        )
        .await;
    assert!(
        started.elapsed() < fast,
        "by-file took {:?}",
        started.elapsed()
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_p12"), "{r:?}");
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains(ITER_10M_REFUSAL)));
    let r = app
        .call(
            "PUT",
            &format!("{}/{id}", certs_path(A)),
            Auth::Bearer(A),
            Body::Json(json!({"p12": b64(ITER_10M), "password": "pw"})),
        )
        .await;
    assert!(
        started.elapsed() < fast,
        "update took {:?}",
        started.elapsed()
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_p12"), "{r:?}");
    assert_eq!(
        app.store_cert_count().await,
        1,
        "nothing but the usable file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mapping_writes_are_not_delayed_by_a_certificate_update_being_decoded() {
    let app = Arc::new(App::new().await);
    let c = app.client_cert("slow-update");
    let id = app.create_cert(A, "to-update", &c).await;
    // At the default cap (1,000,000): accepted, and about 1.5 s of CPU to open here.
    let heavy = crate::bounds::p12_with_iterations(&c, PW, 1_000_000);
    assert_eq!(
        mtls_gateway::p12::max_iterations(&heavy).map(|(_, n)| n),
        Some(1_000_000)
    );

    let update = {
        let app = app.clone();
        tokio::spawn(async move {
            let r = app
                .call(
                    "PUT",
                    &format!("{}/{id}", certs_path(A)),
                    Auth::Bearer(A),
                    Body::Json(json!({"p12": b64(&heavy), "password": PW})),
                )
                .await;
            (r, std::time::Instant::now())
        })
    };
    // The update is decoding by now (reading the store takes milliseconds; the decode takes
    // about a second even on fast hardware: three times a million HMAC-SHA256 iterations).
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let r = app
        .create_mapping(
            A,
            id,
            "TEST_SERVICE",
            "https://partner.example/during-update/*",
            "during-update",
        )
        .await;
    let (took, written_at) = (started.elapsed(), std::time::Instant::now());
    assert_eq!(r.status, 201, "{r:?}");
    let (r, updated_at) = update.await.expect("update task");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        written_at < updated_at,
        "the mapping write ended after the update: the decode did not run while it waited ({took:?})"
    );
    assert!(
        took < std::time::Duration::from_millis(900),
        "a mapping write took {took:?} while a certificate update was decoding"
    );
}

/// `Authorization: OAuth ...` over a body covered by `oauth_body_hash` (SHA-1, as oauthlib
/// sends it for a JSON body it signs).
fn oauth_header_with_body_hash(host: &str, path: &str, body: &[u8]) -> String {
    use sha1::Digest as _;
    let params: Vec<(String, String)> = vec![
        ("oauth_body_hash".into(), b64(&sha1::Sha1::digest(body)[..])),
        ("oauth_consumer_key".into(), "key-a".into()),
        (
            "oauth_nonce".into(),
            format!("h{}", mtls_gateway::store::new_id()),
        ),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), now().to_string()),
        ("oauth_version".into(), "1.0".into()),
    ];
    let rp = RequestParts {
        method: "POST",
        scheme: "http",
        host,
        path,
        query: None,
        authorization: None,
        content_type: Some("application/json"),
        body,
        forwarded_proto: None,
    };
    let base = oauth1::signature_base_string(&rp, &params).expect("base string");
    let sig = oauth1::sign(SignatureMethod::HmacSha1, b"secret-a", b"", &base);
    let mut all = params;
    all.push(("oauth_signature".into(), sig));
    format!(
        "OAuth {}",
        all.iter()
            .map(|(k, v)| format!("{k}=\"{}\"", oauth1::encode(v.as_bytes())))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_oauth1_body_hash_is_checked_once_the_body_is_in_and_signed_forms_are_bounded() {
    let app = App::new().await;
    let path = maps_path(A);
    let body = br#"[{"certificationId": "1", "serviceName": "TEST_SERVICE"}]"#.to_vec();
    let signed = oauth_header_with_body_hash(&app.api.host, &path, &body);
    // The caller is verified from the head; the body matches its hash, so it is parsed
    // (and found wanting: no such certificate).
    let r = app
        .call(
            "POST",
            &path,
            Auth::Raw(signed.clone()),
            Body::Raw(body.clone(), "application/json"),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    // Another body under the same signature: refused once read.
    let signed = oauth_header_with_body_hash(&app.api.host, &path, &body);
    let mut tampered = body.clone();
    tampered[3] = b'C';
    let r = app
        .call(
            "POST",
            &path,
            Auth::Raw(signed),
            Body::Raw(tampered, "application/json"),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate").contains("signature_invalid"),
        "{r:?}"
    );

    // A signed form is part of the signature: read first, so bounded to 64 KiB.
    let certs = certs_path(A);
    let form = format!("x={}", "a".repeat(70_000)).into_bytes();
    let r = app
        .call(
            "POST",
            &certs,
            Auth::AppKey("key-a"),
            Body::Raw(form, "application/x-www-form-urlencoded"),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "payload_too_large"),
        "{r:?}"
    );
    assert_eq!(r.json()["limit"], 65536, "{r:?}");
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("OAuth1-signed form")));
    // A small one verifies (and is then no JSON).
    let r = app
        .call(
            "POST",
            &certs,
            Auth::AppKey("key-a"),
            Body::Raw(b"x=1".to_vec(), "application/x-www-form-urlencoded"),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
}
