//! Certificate lifecycle end to end: the gateway binary on a real OpenBao server (KV v2 store and
//! the PKI engine issuing certificates that live seconds), the admin API, and mTLS echo targets
//! that report the client certificate they saw.
//!
//! - PKI-sourced entries renew again and again under steady traffic: no request fails, the
//!   target sees every new serial, and Vault signs exactly once per version;
//! - two gateways on one Vault: still one signing call per version, and each threshold's
//!   notification delivered once;
//! - the role removed: renewal fails, the old version keeps serving, a notification is sent;
//! - a CSR made by the gateway (`openssl req -verify` passes), signed by a test CA, completed,
//!   presented; a target that trusts only the old CA refuses the next version and the cut-over
//!   is withheld.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boring::x509::X509;
use mtls_gateway::dev::echo::{EchoConfig, EchoServer};
use serde_json::{json, Value};

use crate::bao::Bao;
use crate::common::*;

const JWT_SECRET: &str = "lifecycle-test-jwt-secret-0123456789";
const SERIAL: &str = "x-client-cert-serial";

fn bearer(account: &str) -> String {
    let exp = mtls_gateway::admin::unix_now() + 3600;
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "ops", "iss": "test", "aud": "mtls", "exp": exp, "accountId": account}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("jwt");
    format!("Bearer {t}")
}

/// OpenBao's PKI engine at `pki`: a root CA and a client role issuing short certificates.
fn enable_pki(bao: &Bao) -> X509 {
    bao.cli(&["secrets", "enable", "pki"]);
    bao.cli(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
    let root = bao.cli_json(&[
        "write",
        "-format=json",
        "pki/root/generate/internal",
        "common_name=Lifecycle Test Root",
        "ttl=87600h",
    ]);
    let pem = root["data"]["certificate"].as_str().expect("root pem");
    client_role(bao);
    X509::from_pem(pem.as_bytes()).expect("root")
}

fn client_role(bao: &Bao) {
    bao.cli(&[
        "write",
        "pki/roles/client",
        "allow_any_name=true",
        "enforce_hostnames=false",
        "client_flag=true",
        "server_flag=false",
        "key_type=any",
        "max_ttl=1h",
        // Vault back-dates not_before by 30 s unless told: the lifetime would be ttl + 30 s.
        "not_before_duration=1s",
    ]);
}

fn echo_trusting(pki: &Pki, cas: Vec<X509>) -> EchoServer {
    mtls_gateway::dev::echo::spawn_on_thread(EchoConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
        chain: vec![],
        client_ca: cas,
        require_client_cert: true,
    })
    .expect("echo")
}

/// The gateway's YAML: Vault store with the root token from a file, quick refresh and
/// lifecycle ticks, JWT admin auth, and `extra`.
fn yaml(bao: &Bao, dir: &Path, extra: &str) -> String {
    std::fs::write(dir.join("token"), &bao.root_token).expect("token file");
    format!(
        "store:\n  kind: vault\n  vault:\n    address: \"{}\"\n    kv_version: 2\n    mount: secret\n    prefix: mtls-gateway\n    request_timeout_ms: 5000\n    auth:\n      method: token\n      token_file: \"{}\"\nrefresh:\n  interval_secs: 1\nrate_limit:\n  enabled: false\nauth:\n  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: test\n    audience: mtls\n{extra}",
        bao.addr,
        dir.join("token").display(),
    )
}

const QUICK: &str = "lifecycle:\n  check_interval_secs: 1\n  renew_at: 0.5\n  jitter: 0\n  lease_secs: 20\n  retry_min_secs: 1\n  retry_max_secs: 2\n";

struct Admin {
    base: String,
    http: reqwest::Client,
    auth: String,
}

impl Admin {
    fn new(gw: &Gw) -> Admin {
        Admin {
            base: format!("http://{}/mtls/account/acc", gw.admin),
            http: reqwest::Client::new(),
            auth: bearer("acc"),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = if path.starts_with("/api/") {
            format!("{}{path}", self.base.replace("/mtls/account/acc", ""))
        } else {
            format!("{}{path}", self.base)
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .http
            .request(m, url)
            .header("authorization", &self.auth);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("admin call");
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    async fn mapping(&self, url: &str, cert: u64, cutover_check: Option<bool>) {
        let mut m = json!({"certificationId": cert.to_string(), "serviceName": "TEST_SERVICE", "url": url, "name": format!("m-{cert}")});
        if let Some(c) = cutover_check {
            m["cutoverCheck"] = json!(c);
        }
        let (s, v) = self
            .call(
                "POST",
                "/api/account/acc/configuration/ac-common/mtls",
                Some(json!([m])),
            )
            .await;
        assert!(s == 200 || s == 201, "mapping: {s} {v}");
    }
}

/// Serials the target saw, and requests that did not get a 200.
#[derive(Default)]
struct Seen {
    serials: Vec<String>,
    failed: Vec<String>,
}

/// Steady traffic through the gateway until `stop` is set: one request every 50 ms.
async fn traffic(
    gw_proxy: std::net::SocketAddr,
    url: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{gw_proxy}")).expect("proxy"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let outcome = match c.get(&url).send().await {
            Ok(r) if r.status() == 200 => Ok(r
                .headers()
                .get(SERIAL)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()),
            Ok(r) => Err(format!("status {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        {
            let mut s = seen.lock().expect("lock");
            match outcome {
                Ok(serial) => {
                    if s.serials.last() != Some(&serial) {
                        s.serials.push(serial);
                    }
                }
                Err(e) => s.failed.push(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The store document of certificate `id` (KV v2 data), read with the root token.
async fn stored(bao: &Bao, id: u64) -> Value {
    let (s, v) = bao
        .api(
            "GET",
            &format!("secret/data/mtls-gateway/accounts/acc/certificates/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["data"]["data"].clone()
}

fn id_of(v: &Value) -> u64 {
    v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
}

#[tokio::test]
async fn lifecycle_pki_certificates_renew_under_load_without_a_failed_request_and_one_signing_per_version(
) {
    let bao = Bao::dev().await;
    let root = enable_pki(&bao);
    let pki = Pki::new();
    let echo = echo_trusting(&pki, vec![root]);
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gw::start(dir.path(), &pki.ca_path, &yaml(&bao, dir.path(), QUICK));
    let admin = Admin::new(&gw);
    let (s, v) = admin
        .call(
            "POST",
            "/certificates/csr",
            Some(json!({
                "name": "bank-client",
                "subject": {"commonName": "bank-client.example", "organization": "Acme"},
                "pki": {"mount": "pki", "role": "client", "ttl": "16s"},
            })),
        )
        .await;
    assert_eq!(s, 201, "{v}\n{}", gw.logs());
    let id = id_of(&v);
    assert_eq!(v["status"], "Available", "{v}");
    assert_eq!(v["lifecycle"]["source"], "vault-pki", "{v}");
    assert!(
        v.get("csr").is_none(),
        "a PKI entry has no CSR to sign: {v}"
    );
    let url = format!("https://localhost:{}/*", echo.addr.port());
    admin.mapping(&url, id, None).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = tokio::spawn(traffic(
        gw.proxy,
        format!("http://localhost:{}/steady", echo.addr.port()),
        seen.clone(),
        stop.clone(),
    ));
    // 16 s certificates renewing at half their life: a new version about every 8 s.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = seen.lock().expect("lock").serials.len();
        if n >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 3 renewals seen by the target in 40 s: {:?}\n{}",
            seen.lock().expect("lock").serials,
            gw.logs()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    t.await.expect("traffic");
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    assert!(seen.failed.is_empty(), "failed requests: {:?}", seen.failed);
    assert!(
        !seen.serials.iter().any(String::is_empty),
        "a request without a client certificate: {:?}",
        seen.serials
    );
    let mut distinct = seen.serials.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        seen.serials.len(),
        "an old serial came back after a newer one: {:?}",
        seen.serials
    );

    // One signing call per version: the versions written equal Vault's sign requests.
    let doc = stored(&bao, id).await;
    let generation = doc["lifecycle"]["generation"].as_u64().expect("generation");
    let signs = bao.audit_count("pki/sign/client");
    assert!(generation >= 4, "{doc}");
    assert!(
        signs == generation as usize || signs == generation as usize + 1,
        "Vault signed {signs} times for {generation} versions (one more may be in flight)"
    );
    let logs = gw.logs();
    assert!(!logs.contains("PRIVATE KEY"), "a key reached the log");
    assert!(gw.metric("mtls_gateway_certificate_renewals_total{result=\"renewed\"}") >= 3.0);
}

#[tokio::test]
async fn lifecycle_a_failed_renewal_keeps_the_old_version_serving_and_retries() {
    let bao = Bao::dev().await;
    let root = enable_pki(&bao);
    let pki = Pki::new();
    let echo = echo_trusting(&pki, vec![root]);
    let hooks = Hooks::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gw::start(
        dir.path(),
        &pki.ca_path,
        &yaml(
            &bao,
            dir.path(),
            &format!("{QUICK}{}", hooks.yaml(dir.path())),
        ),
    );
    let admin = Admin::new(&gw);
    let (s, v) = admin
        .call(
            "POST",
            "/certificates/csr",
            Some(json!({"name": "c", "subject": {"commonName": "c.example"},
                        "pki": {"mount": "pki", "role": "client", "ttl": "30s"}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = id_of(&v);
    admin
        .mapping(
            &format!("https://localhost:{}/*", echo.addr.port()),
            id,
            None,
        )
        .await;
    let c = proxied_client(&gw);
    let target = format!("http://localhost:{}/x", echo.addr.port());
    let first = c.get(&target).send().await.expect("send");
    assert_eq!(first.status(), 200, "{}", gw.logs());
    let serial = first.headers()[SERIAL]
        .to_str()
        .expect("serial")
        .to_string();

    // The role goes away: every renewal fails until it is back.
    bao.cli(&["delete", "pki/roles/client"]);
    // (On a loaded machine an attempt can also fail on a slow Vault answer: the test waits for
    // two failures whose recorded cause is the missing role.)
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let doc = stored(&bao, id).await;
        let failures = doc["lifecycle"]["renewal"]["failures"]
            .as_u64()
            .unwrap_or(0);
        let err = doc["lifecycle"]["renewal"]["lastError"]
            .as_str()
            .unwrap_or("");
        if failures >= 2 && err.contains("unknown role") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed renewal naming the role recorded: {doc}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = c.get(&target).send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[SERIAL].to_str().expect("serial"),
        serial,
        "the old version keeps serving"
    );
    let (_, e) = admin
        .call("GET", &format!("/certificates/{id}"), None)
        .await;
    assert!(
        e["lifecycle"]["renewal"]["failures"].as_u64().unwrap_or(0) >= 2,
        "{e}"
    );
    assert!(gw.metric("mtls_gateway_certificate_renewals_total{result=\"failed\"}") >= 2.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooks.events("certificate.renewal_failed").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no renewal_failed notification\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ev = &hooks.events("certificate.renewal_failed")[0];
    assert_eq!(ev["certificateId"], json!(id), "{ev}");
    assert!(
        ev["message"]
            .as_str()
            .unwrap_or("")
            .contains("keeps serving"),
        "{ev}"
    );

    // Back: the next attempt renews.
    client_role(&bao);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get(&target).send().await.expect("send");
        assert_eq!(r.status(), 200);
        if r.headers()[SERIAL].to_str().expect("serial") != serial {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed after the role came back\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn openssl(args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (apt-get install -y openssl)");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Signs `csr_pem` with the CA of `pki` using the openssl CLI, as a customer's CA would.
fn sign_with(pki: &Pki, dir: &Path, tag: &str, csr_pem: &str) -> String {
    let csr = dir.join(format!("{tag}.csr"));
    let crt = dir.join(format!("{tag}.crt"));
    let ca_key = dir.join(format!("{tag}-ca.key"));
    let ext = dir.join(format!("{tag}.ext"));
    std::fs::write(&csr, csr_pem).expect("csr");
    std::fs::write(
        &ca_key,
        pki.ca.key.private_key_to_pem_pkcs8().expect("ca key"),
    )
    .expect("ca key");
    std::fs::write(
        &ext,
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:client.example\n",
    )
    .expect("ext");
    let (ok, out) = openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap_or(""),
        "-CA",
        pki.ca_path.to_str().unwrap_or(""),
        "-CAkey",
        ca_key.to_str().unwrap_or(""),
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        ext.to_str().unwrap_or(""),
        "-out",
        crt.to_str().unwrap_or(""),
    ]);
    assert!(ok, "openssl x509 -req: {out}");
    std::fs::read_to_string(&crt).expect("crt")
}

#[tokio::test]
async fn lifecycle_a_csr_is_verified_signed_elsewhere_completed_presented_and_a_refused_cutover_is_withheld(
) {
    let bao = Bao::dev().await;
    let old_ca = Pki::new();
    let new_ca = Pki::new();
    // The target trusts only the old CA.
    let echo = echo_trusting(&old_ca, vec![old_ca.ca.cert.clone()]);
    let hooks = Hooks::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gw::start(
        dir.path(),
        &old_ca.ca_path,
        &yaml(
            &bao,
            dir.path(),
            &format!("{QUICK}{}", hooks.yaml(dir.path())),
        ),
    );
    let admin = Admin::new(&gw);

    let (s, v) = admin
        .call(
            "POST",
            "/certificates/csr",
            Some(json!({"name": "partner", "keyType": "RSA-2048",
                        "subject": {"commonName": "client.example", "organization": "Acme", "dnsNames": ["client.example"]}})),
        )
        .await;
    assert_eq!(s, 201, "{v}\n{}", gw.logs());
    let id = id_of(&v);
    assert_eq!(v["status"], "UnAvailable", "{v}");
    let csr = v["csr"].as_str().expect("csr").to_string();
    let csr_file = dir.path().join("req.pem");
    std::fs::write(&csr_file, &csr).expect("csr file");
    let (ok, out) = openssl(&[
        "req",
        "-verify",
        "-noout",
        "-in",
        csr_file.to_str().unwrap_or(""),
    ]);
    assert!(ok, "openssl req -verify: {out}");
    let (_, text) = openssl(&[
        "req",
        "-noout",
        "-text",
        "-in",
        csr_file.to_str().unwrap_or(""),
    ]);
    assert!(
        text.contains("DNS:client.example") && text.contains("2048 bit"),
        "{text}"
    );
    // The key is in the store only: never in an answer.
    let doc = stored(&bao, id).await;
    assert!(doc["lifecycle"]["pending"]["keyPem"]
        .as_str()
        .unwrap_or("")
        .contains("PRIVATE KEY"));
    assert!(!v.to_string().contains("PRIVATE KEY"));
    let (s, g) = admin
        .call("GET", &format!("/certificates/{id}/csr"), None)
        .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["csr"].as_str(), Some(csr.as_str()));
    assert!(!g.to_string().contains("PRIVATE KEY"));

    // Signed by the old CA, uploaded with its chain: serves.
    let leaf = sign_with(&old_ca, dir.path(), "v1", &csr);
    let chain = std::fs::read_to_string(&old_ca.ca_path).expect("ca");
    let (s, v) = admin
        .call(
            "POST",
            &format!("/certificates/{id}/signed"),
            Some(json!({"certificate": leaf, "chain": chain})),
        )
        .await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    assert_eq!(v["status"], "Available", "{v}");
    // The PKCS#12 the gateway built passes every check of the P12 tester.
    assert!(v.get("warnings").is_none(), "{v}");
    assert_eq!(v["state"], "available", "{v}");
    admin
        .mapping(
            &format!("https://localhost:{}/*", echo.addr.port()),
            id,
            Some(true),
        )
        .await;
    let c = proxied_client(&gw);
    let target = format!("http://localhost:{}/x", echo.addr.port());
    let r = c.get(&target).send().await.expect("send");
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let v1_serial = r.headers()[SERIAL].to_str().expect("serial").to_string();
    let leaf_x509 = X509::from_pem(leaf.as_bytes()).expect("leaf");
    assert_eq!(
        hex::encode(leaf_x509.serial_number().to_bn().expect("bn").to_vec()),
        v1_serial
            .to_ascii_lowercase()
            .trim_start_matches('0')
            .to_string()
            .pipe_pad(),
        "the target saw the uploaded certificate"
    );

    // A certificate for another key is refused, naming the problem.
    let other = old_ca.client("other");
    let (s, e) = admin
        .call(
            "POST",
            &format!("/certificates/{id}/signed"),
            Some(
                json!({"certificate": String::from_utf8_lossy(&other.cert.to_pem().expect("pem"))}),
            ),
        )
        .await;
    assert!(s == 409 || s == 400, "{s} {e}");

    // Renew: a new key and CSR while v1 serves; signed by the new CA, which the target does not
    // trust: the cut-over is refused and v1 keeps serving.
    let (s, r) = admin
        .call(
            "POST",
            &format!("/certificates/{id}/renew"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let csr2 = r["csr"].as_str().expect("csr2").to_string();
    assert_ne!(csr2, csr, "a renewal makes a new key");
    let leaf2 = sign_with(&new_ca, dir.path(), "v2", &csr2);
    let chain2 = std::fs::read_to_string(&new_ca.ca_path).expect("ca");
    let (s, e) = admin
        .call(
            "POST",
            &format!("/certificates/{id}/signed"),
            Some(json!({"certificate": leaf2, "chain": chain2})),
        )
        .await;
    assert_eq!(s, 409, "{e}\n{}", gw.logs());
    assert_eq!(e["error"], "cutover_refused", "{e}");
    let r = c.get(&target).send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[SERIAL].to_str().expect("serial"),
        v1_serial,
        "v1 keeps serving"
    );
    let (_, g) = admin
        .call("GET", &format!("/certificates/{id}"), None)
        .await;
    assert!(
        g["lifecycle"]["cutoverRefused"]["reason"].is_string(),
        "{g}"
    );
    assert!(
        g["lifecycle"]["pending"].is_object(),
        "the pending version is kept: {g}"
    );
    assert!(gw.metric("mtls_gateway_certificate_cutover_refused_total") >= 1.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooks.events("certificate.cutover_refused").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no cutover_refused notification\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ev = &hooks.events("certificate.cutover_refused")[0];
    assert_eq!(ev["certificateId"], json!(id), "{ev}");

    // Signed by the CA the target trusts: accepted, served.
    let leaf3 = sign_with(&old_ca, dir.path(), "v3", &csr2);
    let (s, v) = admin
        .call(
            "POST",
            &format!("/certificates/{id}/signed"),
            Some(json!({"certificate": leaf3, "chain": chain})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["lifecycle"].get("cutoverRefused").is_none(), "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(&target).send().await.expect("send");
        assert_eq!(r.status(), 200);
        if r.headers()[SERIAL].to_str().expect("serial") != v1_serial {
            break;
        }
        assert!(Instant::now() < deadline, "v3 not presented");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!gw.logs().contains("PRIVATE KEY"));
}

trait PipePad {
    fn pipe_pad(self) -> String;
}

impl PipePad for String {
    /// Serial hex as `hex::encode` of the big-endian bytes writes it (even length).
    fn pipe_pad(self) -> String {
        if self.len() % 2 == 1 {
            format!("0{self}")
        } else {
            self
        }
    }
}

const HOOK_SECRET: &str = "webhook-secret-for-the-lifecycle-tests";

/// A webhook receiver on 127.0.0.1: keeps every delivery whose signature verifies, counts the
/// ones that do not.
struct Hooks {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    bad: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hooks {
    async fn start() -> Hooks {
        let got = Arc::new(Mutex::new(Vec::new()));
        let bad = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (g, b) = (got.clone(), bad.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (g, b) = (g.clone(), b.clone());
                    async move {
                        let sig = headers
                            .get("x-mtls-gateway-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        let now = mtls_gateway::admin::unix_now();
                        if mtls_gateway::lifecycle::notify::verify(
                            HOOK_SECRET.as_bytes(),
                            sig,
                            &body,
                            now,
                            300,
                        ) {
                            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                g.lock().expect("lock").push(v);
                            }
                            axum::http::StatusCode::OK
                        } else {
                            b.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            axum::http::StatusCode::UNAUTHORIZED
                        }
                    }
                },
            ),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Hooks {
            url: format!("http://127.0.0.1:{}/hook", addr.port()),
            got,
            bad,
        }
    }

    /// The `notifications:` section pointing at this receiver (secret in a 0600 file).
    fn yaml(&self, dir: &Path) -> String {
        let f = dir.join("hook-secret");
        std::fs::write(&f, HOOK_SECRET).expect("secret");
        format!(
            "notifications:\n  webhooks:\n    - url: \"{}\"\n      secret_file: \"{}\"\n  retry_min_ms: 50\n  retry_max_secs: 1\n  timeout_ms: 2000\n",
            self.url,
            f.display()
        )
    }

    fn events(&self, event: &str) -> Vec<Value> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|v| v["event"] == event)
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn lifecycle_two_replicas_sign_once_per_version_and_send_each_threshold_once() {
    let bao = Bao::dev().await;
    let root = enable_pki(&bao);
    let pki = Pki::new();
    let echo = echo_trusting(&pki, vec![root]);
    let hooks = Hooks::start().await;
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let gw1 = Gw::start(
        d1.path(),
        &pki.ca_path,
        &yaml(
            &bao,
            d1.path(),
            &format!("{QUICK}  replica_id: gw-a\n{}", hooks.yaml(d1.path())),
        ),
    );
    let gw2 = Gw::start(
        d2.path(),
        &pki.ca_path,
        &yaml(
            &bao,
            d2.path(),
            &format!("{QUICK}  replica_id: gw-b\n{}", hooks.yaml(d2.path())),
        ),
    );
    let admin = Admin::new(&gw1);
    let (s, v) = admin
        .call(
            "POST",
            "/certificates/csr",
            Some(
                json!({"name": "shared", "subject": {"commonName": "shared.example"},
                        "pki": {"mount": "pki", "role": "client", "ttl": "16s"}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = id_of(&v);
    admin
        .mapping(
            &format!("https://localhost:{}/*", echo.addr.port()),
            id,
            None,
        )
        .await;
    // gw-b sees the new entry and mapping at its next refresh (1 s here): traffic starts then.
    let c2 = proxied_client(&gw2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c2
        .get(format!("http://localhost:{}/ready", echo.addr.port()))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "gw-b never served the mapping\n{}",
            gw2.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s1, s2) = (
        Arc::new(Mutex::new(Seen::default())),
        Arc::new(Mutex::new(Seen::default())),
    );
    let url = format!("http://localhost:{}/both", echo.addr.port());
    let t1 = tokio::spawn(traffic(gw1.proxy, url.clone(), s1.clone(), stop.clone()));
    let t2 = tokio::spawn(traffic(gw2.proxy, url, s2.clone(), stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let g = stored(&bao, id).await["lifecycle"]["generation"]
            .as_u64()
            .unwrap_or(0);
        if g >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 renewals not done in 45 s (generation {g})\n{}\n{}",
            gw1.logs(),
            gw2.logs()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    t1.await.expect("t1");
    t2.await.expect("t2");
    // Let in-flight deliveries land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, s) in [("gw-a", &s1), ("gw-b", &s2)] {
        let s = s.lock().expect("lock");
        assert!(
            s.failed.is_empty(),
            "{name}: failed requests {:?}",
            s.failed
        );
        assert!(
            s.serials.len() >= 2,
            "{name} presented the renewals: {:?}",
            s.serials
        );
    }
    let doc = stored(&bao, id).await;
    let generation = doc["lifecycle"]["generation"].as_u64().unwrap_or(0) as usize;
    let signs = bao.audit_count("pki/sign/client");
    assert!(
        signs == generation || signs == generation + 1,
        "two replicas: Vault signed {signs} times for {generation} versions"
    );
    // Each version's 1-day threshold (every threshold is crossed by a 16 s certificate: the
    // smallest is sent, the others recorded with it) once across both replicas.
    let expiring = hooks.events("certificate.expiring");
    let mut serials: Vec<String> = expiring
        .iter()
        .map(|e| e["serial"].as_str().unwrap_or("").to_string())
        .collect();
    let n = serials.len();
    serials.sort();
    serials.dedup();
    assert_eq!(
        serials.len(),
        n,
        "a threshold was delivered twice: {expiring:?}"
    );
    assert!(
        n >= generation - 1,
        "{n} expiry notices for {generation} versions: {expiring:?}"
    );
    assert!(
        expiring.iter().all(|e| e["thresholdDays"] == 1),
        "{expiring:?}"
    );
    let renewed = hooks.events("certificate.renewed");
    let mut ids: Vec<String> = renewed
        .iter()
        .map(|e| e["id"].as_str().unwrap_or("").to_string())
        .collect();
    let m = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), m, "a renewal was announced twice: {renewed:?}");
    assert!(
        m + 1 >= generation - 1,
        "{m} renewal notices for {generation} versions"
    );
    let gateways: std::collections::BTreeSet<String> = renewed
        .iter()
        .map(|e| e["gateway"].as_str().unwrap_or("").to_string())
        .collect();
    eprintln!("renewals done by {gateways:?}");
    assert_eq!(
        hooks.bad.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "unsigned deliveries"
    );
}

#[tokio::test]
async fn lifecycle_an_automatic_renewal_a_target_refuses_is_withheld_and_reported() {
    let bao = Bao::dev().await;
    let root = enable_pki(&bao);
    let pki = Pki::new();
    // The target trusts only the first root.
    let echo = echo_trusting(&pki, vec![root]);
    let hooks = Hooks::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gw::start(
        dir.path(),
        &pki.ca_path,
        &yaml(
            &bao,
            dir.path(),
            &format!("{QUICK}{}", hooks.yaml(dir.path())),
        ),
    );
    let admin = Admin::new(&gw);
    // `issue`: Vault makes the key and returns it once; the gateway keeps it in the store.
    let (s, v) = admin
        .call(
            "POST",
            "/certificates/csr",
            Some(
                json!({"name": "issued", "subject": {"commonName": "issued.example"},
                        "pki": {"mount": "pki", "role": "client", "mode": "issue", "ttl": "20s"}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}\n{}", gw.logs());
    let id = id_of(&v);
    admin
        .mapping(
            &format!("https://localhost:{}/*", echo.addr.port()),
            id,
            None,
        )
        .await;
    let c = proxied_client(&gw);
    let target = format!("http://localhost:{}/x", echo.addr.port());
    let r = c.get(&target).send().await.expect("send");
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let serial = r.headers()[SERIAL].to_str().expect("serial").to_string();
    assert_eq!(bao.audit_count("pki/issue/client"), 1);

    // Vault's default issuer changes to a new root the target does not trust.
    bao.cli(&[
        "write",
        "pki/root/generate/internal",
        "common_name=Second Root",
        "issuer_name=second",
        "ttl=87600h",
    ]);
    bao.cli(&["write", "pki/config/issuers", "default=second"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    while hooks.events("certificate.cutover_refused").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no refused cut-over reported\n{}",
            gw.logs()
        );
        let r = c.get(&target).send().await.expect("send");
        assert_eq!(r.status(), 200, "traffic keeps flowing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.get(&target).send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[SERIAL].to_str().expect("serial"),
        serial,
        "the old version keeps serving"
    );
    assert!(gw.metric("mtls_gateway_certificate_cutover_refused_total") >= 1.0);
    assert!(gw.metric("mtls_gateway_certificate_renewals_total{result=\"refused\"}") >= 1.0);
    assert!(
        gw.logs().contains("cut-over check of certificate"),
        "the log says so"
    );
    let (_, e) = admin
        .call("GET", &format!("/certificates/{id}"), None)
        .await;
    let refused = &e["lifecycle"]["cutoverRefused"];
    assert!(
        refused["mappingIds"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{e}"
    );
    assert!(
        refused["serial"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s != serial),
        "{e}"
    );
    let doc = stored(&bao, id).await;
    assert!(
        doc["lifecycle"]["pending"].is_null(),
        "issue mode keeps no pending key: {doc}"
    );
    assert!(!gw.logs().contains("PRIVATE KEY"));
}
