//! The Vault store on a Vault HA cluster: a three-node OpenBao Raft cluster on loopback
//! ([`BaoCluster`]), the gateway configured with every node in `store.vault.addresses`.
//!
//! - The active node SIGKILLed under steady mapped traffic: no mapped request fails (the runtime
//!   snapshot serves while the refresh fails over), and admin writes succeed again after the
//!   re-election; the time from the kill to the first successful write is measured and printed.
//! - A first address that is a closed port: requests go to the next one, the switch is logged
//!   once and counted in `mtls_gateway_vault_failovers_total`.
//! - `address` and `addresses` together, an empty list, a bad URL: refused with the key named.
//! - What an OpenBao 2.x standby does with reads and writes (the behaviour the failover design
//!   and docs/vault.md rest on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use mtls_gateway::dev::certgen::{self, Issued};
use mtls_gateway::store::vault::{VaultSettings, VaultStore};
use mtls_gateway::store::Store;
use serde_json::{json, Value};

use crate::bao::{Bao, BaoCluster};
use crate::common::*;

const JWT_SECRET: &str = "vault-ha-test-jwt-secret-0123456789";

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

/// The certificate document as docs/vault.md tells an operator to write it.
fn cert_doc(account: &str, id: u64, issued: &Issued) -> Value {
    let p12 = certgen::to_p12(&issued.cert, &issued.key, &[], "s3cret").expect("p12");
    json!({
        "id": id, "accountId": account, "name": format!("cert-{id}"),
        "displayName": format!("cert-{id}"), "deleted": false,
        "p12": base64::engine::general_purpose::STANDARD.encode(p12), "password": "s3cret",
    })
}

fn mappings_doc(account: &str, url: &str, cert: u64) -> Value {
    json!({"mappings": [{
        "id": 77, "accountId": account, "name": "partner", "serviceName": "TEST_SERVICE",
        "url": url, "certificateId": cert, "enabled": true, "deleted": false
    }]})
}

/// The gateway's YAML: the Vault store on `addresses` with the root token from a file, a quick
/// refresh, JWT admin auth.
fn yaml(addresses: &[String], token_file: &std::path::Path) -> String {
    let list = addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "store:\n  kind: vault\n  vault:\n    addresses: [{list}]\n    kv_version: 2\n    mount: secret\n    prefix: mtls-gateway\n    request_timeout_ms: 1000\n    auth:\n      method: token\n      token_file: \"{}\"\nrefresh:\n  interval_secs: 1\n  retry_min_ms: 200\n  retry_max_secs: 1\nrate_limit:\n  enabled: false\nauth:\n  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: test\n    audience: mtls\n",
        token_file.display()
    )
}

/// Requests sent through the gateway and the ones that did not get a 200.
#[derive(Default)]
struct Traffic {
    sent: u32,
    failed: Vec<String>,
}

/// One mapped request every 20 ms until `stop`.
async fn steady(gw_proxy: String, url: String, t: Arc<Mutex<Traffic>>, stop: Arc<AtomicBool>) {
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(gw_proxy).expect("proxy"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    while !stop.load(Ordering::Relaxed) {
        let outcome = match c.get(&url).send().await {
            Ok(r) if r.status() == 200 => None,
            Ok(r) => Some(format!("status {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        {
            let mut t = t.lock().expect("traffic");
            t.sent += 1;
            t.failed.extend(outcome);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One admin write: a new mapping `m-{n}` of certificate 1 (read, append, write with
/// check-and-set, in the store).
async fn admin_write(gw: &Gw, port: u16, n: u32) -> (u16, String) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let m = json!([{"certificationId": "1", "serviceName": "TEST_SERVICE",
        "url": format!("https://localhost:{port}/ha-{n}/*"), "name": format!("m-{n}")}]);
    match c
        .post(format!(
            "http://{}/api/account/acc/configuration/ac-common/mtls",
            gw.admin
        ))
        .header("authorization", bearer("acc"))
        .json(&m)
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test]
async fn vault_ha_leader_killed_under_load_fails_no_mapped_request_and_admin_writes_resume() {
    let mut cluster = BaoCluster::start(3).await;
    println!(
        "three-node OpenBao Raft cluster formed in {} ms (spawn to 3 voters and a writable KV)",
        cluster.formed_in.as_millis()
    );
    let leader = cluster.wait_leader().await;
    let pki = Pki::new();
    let echo = pki.echo();
    let a = pki.client("ha-a");
    let port = echo.addr.port();
    for (rel, doc) in [
        ("accounts/acc/certificates/1", cert_doc("acc", 1, &a)),
        (
            "accounts/acc/mappings",
            mappings_doc("acc", &format!("https://localhost:{port}/*"), 1),
        ),
    ] {
        let (s, v) = cluster
            .req(
                leader,
                "POST",
                &format!("secret/data/mtls-gateway/{rel}"),
                Some(&json!({ "data": doc })),
            )
            .await;
        assert_eq!(s, 200, "seed {rel}: {v}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let token = dir.path().join("token");
    std::fs::write(&token, &cluster.root_token).expect("token file");
    // The active node first: killing it makes the gateway fail over.
    let mut addrs = cluster.addrs();
    addrs.rotate_left(leader);
    let gw = Gw::start(dir.path(), &pki.ca_path, &yaml(&addrs, &token));
    let url = format!("http://localhost:{port}/x");
    let c = proxied_client(&gw);
    let r = c.get(&url).send().await.expect("send");
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let (s, body) = admin_write(&gw, port, 0).await;
    assert!(
        s == 200 || s == 201,
        "admin write before the kill: {s} {body}"
    );

    let t = Arc::new(Mutex::new(Traffic::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady(
        format!("http://{}", gw.proxy),
        url.clone(),
        t.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.kill(leader);
    let killed = Instant::now();
    let killed_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let mut n = 1;
    let mut refusals = Vec::new();
    let write_after = loop {
        let (s, body) = admin_write(&gw, port, n).await;
        n += 1;
        if s == 200 || s == 201 {
            break killed.elapsed();
        }
        refusals.push(format!(
            "{s}: {}",
            body.chars().take(160).collect::<String>()
        ));
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no admin write succeeded within 30 s of the leader kill; refusals: {refusals:?}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let new_leader = cluster.wait_leader().await;
    let elected_after = killed.elapsed();
    println!(
        "leader node {} SIGKILLed: first successful admin write after {} ms ({} writes refused \
         before: {:?}); node {} leads (seen {} ms after the kill)",
        leader + 1,
        write_after.as_millis(),
        refusals.len(),
        refusals.iter().take(3).collect::<Vec<_>>(),
        new_leader + 1,
        elected_after.as_millis()
    );
    assert_ne!(new_leader, leader);

    // The refresh fails over too: a successful refresh after the kill.
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.metric("mtls_gateway_last_refresh_success_timestamp_seconds") < killed_unix {
        assert!(
            Instant::now() < deadline,
            "no successful refresh after the leader kill:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("traffic task");
    let t = std::mem::take(&mut *t.lock().expect("traffic"));
    assert!(
        t.failed.is_empty(),
        "{} of {} mapped requests failed: {:?}",
        t.failed.len(),
        t.sent,
        t.failed
    );
    assert!(t.sent > 40, "steady traffic: {} requests", t.sent);
    println!(
        "{} mapped requests through the gateway during the failover, none failed",
        t.sent
    );
    assert!(gw.metric("mtls_gateway_vault_failovers_total") >= 1.0);
    let logs = gw.logs();
    for l in logs.lines().filter(|l| l.contains("vault")) {
        println!("gateway log: {l}");
    }
    let dead = &addrs[0];
    assert!(
        logs.lines()
            .any(|l| l.contains(&format!("vault: {dead} did not serve"))
                && l.contains("switching to")),
        "the switch is logged:\n{logs}"
    );
    // The write made after the failover is in Vault, read from a surviving node.
    let (s, v) = cluster
        .req(
            new_leader,
            "GET",
            "secret/data/mtls-gateway/accounts/acc/mappings",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["data"]["data"]["mappings"]
        .as_array()
        .expect("mappings")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&format!("m-{}", n - 1).as_str()),
        "{names:?}"
    );
}

#[tokio::test]
async fn vault_addresses_with_a_dead_first_node_go_to_the_next_log_the_switch_and_count_it() {
    let bao = Bao::dev().await;
    let pki = Pki::new();
    let echo = pki.echo();
    let a = pki.client("ha-dead");
    let port = echo.addr.port();
    for (rel, doc) in [
        ("accounts/acc/certificates/1", cert_doc("acc", 1, &a)),
        (
            "accounts/acc/mappings",
            mappings_doc("acc", &format!("https://localhost:{port}/*"), 1),
        ),
    ] {
        let (s, v) = bao
            .api(
                "POST",
                &format!("secret/data/mtls-gateway/{rel}"),
                Some(&json!({ "data": doc })),
            )
            .await;
        assert_eq!(s, 200, "seed {rel}: {v}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let token = dir.path().join("token");
    std::fs::write(&token, &bao.root_token).expect("token file");
    // A closed port: connection refused.
    let dead = format!("http://127.0.0.1:{}", free_port());

    // The store itself: every call works, and the dead address is left once.
    let cfg: VaultSettings = serde_yaml::from_str(&format!(
        "addresses: [\"{dead}\", \"{}\"]\nauth: {{method: token, token_file: \"{}\"}}\n",
        bao.addr,
        token.display()
    ))
    .expect("yaml");
    let cfg = cfg.validate("store.vault").expect("valid");
    let before = mtls_gateway::metrics::VAULT_FAILOVERS.get();
    // (connect already asks Vault: lookup-self of the token)
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let inv = store
        .inventory()
        .await
        .expect("inventory through the second address");
    assert_eq!(inv.certificates.len(), 1);
    let m = store.get_mappings("acc").await.expect("read");
    store
        .put_mappings("acc", &m.value, Some(&m.version))
        .await
        .expect("check-and-set write");
    assert_eq!(
        mtls_gateway::metrics::VAULT_FAILOVERS.get() - before,
        1,
        "one switch: the good address is remembered"
    );
    drop(store);

    // The gateway: serves, logs the switch once, counts it.
    let gw = Gw::start(
        dir.path(),
        &pki.ca_path,
        &yaml(&[dead.clone(), bao.addr.clone()], &token),
    );
    let c = proxied_client(&gw);
    for _ in 0..5 {
        let r = c
            .get(format!("http://localhost:{port}/x"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{}", gw.logs());
    }
    let (s, body) = admin_write(&gw, port, 1).await;
    assert!(s == 200 || s == 201, "admin write: {s} {body}");
    // Several refreshes later: still one switch.
    let refreshed = gw.metric("mtls_gateway_last_refresh_success_timestamp_seconds");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("mtls_gateway_last_refresh_success_timestamp_seconds") < refreshed + 2.0 {
        assert!(Instant::now() < deadline, "no refreshes:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        gw.metric("mtls_gateway_vault_failovers_total"),
        1.0,
        "{}",
        gw.logs()
    );
    let logs = gw.logs();
    let switches: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("switching to"))
        .collect();
    assert_eq!(switches.len(), 1, "{logs}");
    assert!(
        switches[0].contains(&dead) && switches[0].contains(&bao.addr),
        "{}",
        switches[0]
    );
}

#[test]
fn vault_addresses_config_errors_name_the_key() {
    let parse = |yaml: &str| -> Result<(), String> {
        let s: VaultSettings = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        s.validate("store.vault").map(|_| ())
    };
    let auth = "auth: {method: token, token_env: T}\n";
    let e = parse(&format!(
        "address: https://v:8200\naddresses: [https://w:8200]\n{auth}"
    ))
    .expect_err("both");
    assert!(
        e.starts_with("store.vault.address: set either store.vault.address"),
        "{e}"
    );
    let e = parse(&format!("addresses: []\n{auth}")).expect_err("empty list");
    assert!(e.starts_with("store.vault.addresses: is empty"), "{e}");
    let e = parse(&format!("addresses: [https://v:8200, 'ftp://w']\n{auth}")).expect_err("scheme");
    assert!(
        e.starts_with("store.vault.addresses[1]: scheme \"ftp\""),
        "{e}"
    );
    let e = parse(&format!("addresses: ['not a url']\n{auth}")).expect_err("bad url");
    assert!(e.starts_with("store.vault.addresses[0]:"), "{e}");
    parse(&format!(
        "addresses: [https://v-0:8200, https://v-1:8200]\n{auth}"
    ))
    .expect("valid");
    parse(&format!("address: https://vault.example:8200\n{auth}")).expect("one address");
}

/// What the failover is built on, checked on OpenBao 2.x: a standby serves reads itself
/// (eventually consistent) and forwards writes to the active node; `sys/health` answers 429 on
/// a standby; without an active node, a standby's write fails (5xx) until the re-election.
#[tokio::test]
async fn vault_openbao_standby_serves_reads_forwards_writes_and_fails_without_a_leader() {
    let mut cluster = BaoCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let standby = (leader + 1) % 3;
    let (s, _) = cluster.req(standby, "GET", "sys/health", None).await;
    assert_eq!(s, 429, "a standby's sys/health");
    let (s, v) = cluster.req(standby, "GET", "sys/leader", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["is_self"], json!(false));
    assert_eq!(v["leader_address"], json!(cluster.nodes[leader].addr));
    // A write on the standby is forwarded: it lands, with the new version.
    let (s, v) = cluster
        .req(
            standby,
            "POST",
            "secret/data/probe",
            Some(&json!({"data": {"n": 1}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["version"], json!(1));
    // A check-and-set conflict through the standby is the usual 400.
    let (s, v) = cluster
        .req(
            standby,
            "POST",
            "secret/data/probe",
            Some(&json!({"options": {"cas": 0}, "data": {"n": 2}})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("check-and-set"), "{v}");
    // Reads are served by the standby itself, eventually consistent: the write shows up there.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, _) = cluster.req(standby, "GET", "secret/data/probe", None).await;
        if s == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never served the write: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Without an active node: what a standby answers to a write until the re-election.
    cluster.kill(leader);
    let killed = Instant::now();
    let mut seen = Vec::new();
    loop {
        let (s, v) = cluster
            .req(
                standby,
                "POST",
                "secret/data/probe",
                Some(&json!({"data": {"n": 3}})),
            )
            .await;
        if s == 200 {
            break;
        }
        let e = format!(
            "{s} {}",
            v.to_string().chars().take(120).collect::<String>()
        );
        if !seen.contains(&e) {
            seen.push(e);
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "{seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "OpenBao standby answers to a write without a leader: {seen:?}; write accepted again {} ms \
         after the kill",
        killed.elapsed().as_millis()
    );
    assert!(
        seen.iter()
            .all(|e| e.starts_with('5') || e.starts_with('4') || e.starts_with('0')),
        "{seen:?}"
    );
}

/// What [`lossy_front`] does with a KV v2 data write (`POST /v1/secret/data/...`).
const PASS: u8 = 0;
/// Passes it on to Vault, then answers 502: a write that landed, its answer lost.
const LAND_THEN_502: u8 = 1;
/// Answers 502 without passing it on: a write that did not land, as far as the client knows
/// just as uncertain as [`LAND_THEN_502`].
const DROP_502: u8 = 2;

/// An HTTP front for `backend` (a "node" in `store.vault.addresses`) that passes every request
/// on, except KV v2 data writes while `mode` says otherwise.
async fn lossy_front(backend: String, mode: Arc<std::sync::atomic::AtomicU8>) -> String {
    use axum::http::StatusCode;
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (http, backend, mode) = (http.clone(), backend.clone(), mode.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let write = parts.method == axum::http::Method::POST
                && parts.uri.path().starts_with("/v1/secret/data/");
            let mode = if write {
                mode.load(Ordering::SeqCst)
            } else {
                PASS
            };
            if mode == DROP_502 {
                return (StatusCode::BAD_GATEWAY, Vec::new());
            }
            let url = format!(
                "{backend}{}",
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            let method =
                reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).expect("method");
            let mut r = http.request(method, url);
            for (k, v) in parts.headers.iter() {
                if k != axum::http::header::HOST {
                    r = r.header(k.as_str(), v.as_bytes());
                }
            }
            let Ok(resp) = r.body(bytes.to_vec()).send().await else {
                return (StatusCode::BAD_GATEWAY, Vec::new());
            };
            let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
            let body = resp.bytes().await.unwrap_or_default().to_vec();
            if mode == LAND_THEN_502 {
                return (StatusCode::BAD_GATEWAY, Vec::new());
            }
            (status, body)
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

/// A check-and-set write whose first attempt may have reached Vault (here: an answer of 502 from
/// the first address) is sent to the next address; the cas conflict it gets there is resolved
/// by reading the version that followed: our own data means the first attempt landed (success,
/// written once), anything else is a real conflict.
#[tokio::test]
async fn vault_a_cas_write_retried_after_an_unsure_failure_is_neither_duplicated_nor_a_false_success(
) {
    use mtls_gateway::store::{MappingDocument, StoreError};
    let bao = Bao::dev().await;
    let dir = tempfile::tempdir().expect("tmp");
    let token = dir.path().join("token");
    std::fs::write(&token, &bao.root_token).expect("token file");
    let mode = Arc::new(std::sync::atomic::AtomicU8::new(PASS));
    let front = lossy_front(bao.addr.clone(), mode.clone()).await;
    let cfg: VaultSettings = serde_yaml::from_str(&format!(
        "addresses: [\"{front}\", \"{}\"]\nauth: {{method: token, token_file: \"{}\"}}\n",
        bao.addr,
        token.display()
    ))
    .expect("yaml");
    let cfg = cfg.validate("store.vault").expect("valid");
    let meta = "secret/metadata/mtls-gateway/accounts/acme/mappings";
    let current_version = || async {
        let (s, v) = bao.api("GET", meta, None).await;
        assert_eq!(s, 200, "{v}");
        v["data"]["current_version"]
            .as_u64()
            .expect("current_version")
    };

    // 1. The first attempt lands, its answer is lost: success at version 1, written once.
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let doc1 = MappingDocument {
        mappings: vec![crate::vault::mapping("acme", 1, 1)],
    };
    mode.store(LAND_THEN_502, Ordering::SeqCst);
    let v = store
        .put_mappings("acme", &doc1, Some(""))
        .await
        .expect("the write landed: a success, not a conflict");
    assert_eq!(v, "1");
    assert_eq!(current_version().await, 1, "written once, not twice");
    drop(store);

    // 2. The first attempt did not land and someone else wrote meanwhile: a conflict.
    let (s, v) = bao
        .api(
            "POST",
            "secret/data/mtls-gateway/accounts/acme/mappings",
            Some(&json!({"data": {"mappings": []}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let store = VaultStore::connect(&cfg).await.expect("connect");
    mode.store(DROP_502, Ordering::SeqCst);
    let doc2 = MappingDocument {
        mappings: vec![crate::vault::mapping("acme", 2, 1)],
    };
    let e = store
        .put_mappings("acme", &doc2, Some("1"))
        .await
        .expect_err("someone else wrote version 2");
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    assert_eq!(current_version().await, 2);
    assert!(mtls_gateway::metrics::VAULT_FAILOVERS.get() >= 2);
}
