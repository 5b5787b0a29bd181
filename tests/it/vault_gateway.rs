//! The whole gateway on a live OpenBao server (`tests/it/bao.rs`: a persistent server, so it can
//! be killed and restarted with its data): KV v2 at `secret/`, AppRole login with the role id and
//! secret id read from files, a read-only policy, everything seeded with the `bao` CLI the way an
//! operator would (`bao kv put -mount=secret ... @cert.json`).

use std::time::{Duration, Instant};

use base64::Engine;
use mtls_gateway::dev::certgen::{self, Issued};
use serde_json::{json, Value};

use crate::bao::Bao;
use crate::common::*;

const SHA: &str = "x-client-cert-sha256";

/// The read-only runtime policy of docs/vault.md.
pub const RUNTIME_POLICY: &str =
    "path \"secret/data/mtls-gateway/*\" { capabilities = [\"read\"] }\n\
path \"secret/metadata/mtls-gateway/*\" { capabilities = [\"read\", \"list\"] }\n";

/// The certificate document, as docs/vault.md tells an operator to write it.
fn cert_doc(account: &str, id: u64, issued: &Issued) -> Value {
    let p12 = certgen::to_p12(&issued.cert, &issued.key, &[], "s3cret").expect("p12");
    json!({
        "id": id,
        "accountId": account,
        "name": format!("cert-{id}"),
        "displayName": format!("cert-{id}"),
        "deleted": false,
        "p12": base64::engine::general_purpose::STANDARD.encode(p12),
        "password": "s3cret",
    })
}

fn mappings_doc(account: &str, url: &str, cert: u64) -> Value {
    json!({"mappings": [{
        "id": 77, "accountId": account, "name": "partner", "serviceName": "TEST_SERVICE",
        "url": url, "certificateId": cert, "enabled": true, "deleted": false
    }]})
}

fn vault_yaml(bao: &Bao, dir: &std::path::Path) -> String {
    format!(
        "store:\n  kind: vault\n  vault:\n    address: \"{}\"\n    kv_version: 2\n    mount: secret\n    prefix: mtls-gateway\n    request_timeout_ms: 1000\n    auth:\n      method: approle\n      role_id_file: \"{}\"\n      secret_id_file: \"{}\"\nrefresh:\n  interval_secs: 1\n  retry_min_ms: 200\n  retry_max_secs: 1\nrate_limit:\n  enabled: false\n",
        bao.addr,
        dir.join("role-id").display(),
        dir.join("secret-id").display(),
    )
}

/// `bao kv put -mount=secret mtls-gateway/REL @file.json`, as an operator seeds the store.
fn kv_put(bao: &Bao, dir: &std::path::Path, rel: &str, doc: &Value) {
    let file = dir.join("doc.json");
    std::fs::write(&file, doc.to_string()).expect("write doc");
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        &format!("mtls-gateway/{rel}"),
        &format!("@{}", file.display()),
    ]);
}

struct Setup {
    bao: Bao,
    pki: Pki,
    echo: mtls_gateway::dev::echo::EchoServer,
    dir: tempfile::TempDir,
    a: Issued,
}

async fn setup() -> Setup {
    setup_with(RUNTIME_POLICY).await
}

/// [`setup`] with the gateway's AppRole bound to `policy`.
async fn setup_with(policy: &str) -> Setup {
    let bao = Bao::persistent().await;
    let pki = Pki::new();
    let echo = pki.echo();
    let a = pki.client("vault-a");
    let dir = tempfile::tempdir().expect("tmp");
    kv_put(
        &bao,
        dir.path(),
        "accounts/acc/certificates/1",
        &cert_doc("acc", 1, &a),
    );
    let url = format!("https://localhost:{}/*", echo.addr.port());
    kv_put(
        &bao,
        dir.path(),
        "accounts/acc/mappings",
        &mappings_doc("acc", &url, 1),
    );
    let (role_id, secret_id) = bao.approle("gateway", "gateway-runtime", policy, &[]);
    std::fs::write(dir.path().join("role-id"), role_id).expect("role id file");
    std::fs::write(dir.path().join("secret-id"), secret_id).expect("secret id file");
    Setup {
        bao,
        pki,
        echo,
        dir,
        a,
    }
}

fn start_gateway(s: &Setup) -> Gw {
    Gw::start(
        s.dir.path(),
        &s.pki.ca_path,
        &vault_yaml(&s.bao, s.dir.path()),
    )
}

/// Requests sent through the gateway and the ones that did not get a 200.
#[derive(Default)]
struct Traffic {
    sent: u32,
    failed: Vec<String>,
}

impl Traffic {
    async fn send(&mut self, c: &reqwest::Client, url: &str) {
        self.sent += 1;
        match c.get(url).send().await {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => self.failed.push(format!("status {}", r.status())),
            Err(e) => self.failed.push(e.to_string()),
        }
    }
}

#[tokio::test]
async fn certificates_written_to_vault_are_served_and_a_rotation_is_presented_after_the_next_refresh(
) {
    let s = setup().await;
    let gw = start_gateway(&s);
    let port = s.echo.addr.port();
    let c = proxied_client(&gw);
    let r = c
        .get(format!("http://localhost:{port}/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert_eq!(
        r.headers()[SHA].to_str().unwrap_or(""),
        sha256_hex(&s.a.cert)
    );
    assert!(
        !gw.logs().contains("s3cret"),
        "the password never reaches the log"
    );

    // Rotate in Vault while a slow request is in flight.
    let b = s.pki.client("vault-b");
    let slow = tokio::spawn(c.get(format!("http://localhost:{port}/slow/1500")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // bao kv put -mount=secret mtls-gateway/accounts/acc/certificates/1 @cert.json
    kv_put(
        &s.bao,
        s.dir.path(),
        "accounts/acc/certificates/1",
        &cert_doc("acc", 1, &b),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = c
            .get(format!("http://localhost:{port}/x"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        if r.headers()[SHA].to_str().unwrap_or("") == sha256_hex(&b.cert) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation not presented within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = slow.await.expect("join").expect("slow");
    assert_eq!(r.status(), 200, "the in-flight request completes");
}

#[tokio::test]
async fn a_policy_denying_one_account_is_logged_with_its_path_and_the_other_accounts_are_still_served(
) {
    let s = setup_with(&format!(
        "{RUNTIME_POLICY}path \"secret/data/mtls-gateway/accounts/blocked/*\" {{ capabilities = [\"deny\"] }}\n"
    ))
    .await;
    let other = s.pki.client("blocked");
    kv_put(
        &s.bao,
        s.dir.path(),
        "accounts/blocked/certificates/2",
        &cert_doc("blocked", 2, &other),
    );
    let gw = start_gateway(&s);
    let c = proxied_client(&gw);
    let url = format!("http://localhost:{}/x", s.echo.addr.port());
    let denied = "secret/data/mtls-gateway/accounts/blocked/certificates/2";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.logs().contains(denied) {
        assert!(
            Instant::now() < deadline,
            "the denied path is not logged:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(denied))
        .unwrap_or_default();
    assert!(line.contains("403") && line.contains("polic"), "{line}");
    // Over several refreshes: account acc is served, the denial is logged once.
    let mut t = Traffic::default();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        t.send(&c, &url).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.failed.is_empty(), "{:?}", t.failed);
    let r = c.get(&url).send().await.expect("send");
    assert_eq!(
        r.headers()[SHA].to_str().unwrap_or(""),
        sha256_hex(&s.a.cert)
    );
    let (ready, _, _) = blocking_get(&format!("http://{}/ready", gw.ops)).expect("ready");
    assert_eq!(ready, 200);
    let logs = gw.logs();
    assert_eq!(
        logs.matches(denied).count(),
        1,
        "logged once, not at every refresh:\n{logs}"
    );
    // The client library's own per-request lines stay out of the log, and so do the AppRole ids.
    assert!(
        !logs.contains("vaultrs::") && !logs.contains("rustify::"),
        "{logs}"
    );
    for f in ["role-id", "secret-id"] {
        let id = std::fs::read_to_string(s.dir.path().join(f)).expect("id file");
        assert!(!logs.contains(id.trim()), "{f} in the log");
    }
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// The server process is killed (by its PID), then started again on the same storage.
    Killed,
    /// `bao operator seal`, then unsealed with the key.
    Sealed,
}

/// Steady traffic through the gateway while Vault goes away and comes back: no request may
/// fail, staleness shows in the metrics, the gateway stays ready, and the outage and the
/// recovery are logged once each.
async fn outage_under_steady_traffic(kind: Outage) {
    let mut s = setup().await;
    let gw = start_gateway(&s);
    let url = format!("http://localhost:{}/x", s.echo.addr.port());
    let c = proxied_client(&gw);
    let mut t = Traffic::default();
    for _ in 0..20 {
        t.send(&c, &url).await;
    }
    match kind {
        Outage::Killed => s.bao.stop(),
        Outage::Sealed => s.bao.seal(),
    }
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(4) {
        t.send(&c, &url).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gw.metric("mtls_gateway_snapshot_age_seconds") >= 2.0,
        "staleness must show while Vault is away ({kind:?})"
    );
    assert!(gw.metric("mtls_gateway_refresh_failures_total{scope=\"store\"}") >= 1.0);
    let (ready, _, _) = blocking_get(&format!("http://{}/ready", gw.ops)).expect("ready");
    assert_eq!(ready, 200, "still ready: serving the last snapshot");
    let before = gw.metric("mtls_gateway_last_refresh_success_timestamp_seconds");

    match kind {
        Outage::Killed => s.bao.restart().await,
        Outage::Sealed => s.bao.unseal().await,
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.metric("mtls_gateway_last_refresh_success_timestamp_seconds") <= before {
        t.send(&c, &url).await;
        assert!(
            Instant::now() < deadline,
            "no successful refresh after Vault came back ({kind:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.metric("mtls_gateway_snapshot_age_seconds") < 2.0);
    assert!(
        t.failed.is_empty(),
        "{} of {} requests failed: {:?}",
        t.failed.len(),
        t.sent,
        t.failed
    );
    assert!(t.sent > 50, "steady traffic: {} requests", t.sent);
    let logs = gw.logs();
    if let Outage::Sealed = kind {
        assert!(
            logs.contains("vault is sealed"),
            "the cause is logged:\n{logs}"
        );
    }
    assert_eq!(
        logs.matches("is back").count(),
        1,
        "recovery is logged once:\n{logs}"
    );
    let failures_logged = logs.matches("failed:").count();
    assert!(
        failures_logged <= 3,
        "an outage is logged once per change of state, not per retry ({failures_logged}):\n{logs}"
    );
}

#[tokio::test]
async fn vault_killed_under_steady_traffic_fails_no_request_shows_staleness_and_recovers() {
    outage_under_steady_traffic(Outage::Killed).await;
}

#[tokio::test]
async fn vault_sealed_under_steady_traffic_fails_no_request_shows_staleness_and_recovers() {
    outage_under_steady_traffic(Outage::Sealed).await;
}
