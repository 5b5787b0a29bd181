//! The whole gateway on a live Vault-API server (RustyVault, KV v1, token auth from a file),
//! seeded through Vault's HTTP API the way an operator would with `vault kv put`.

use std::time::{Duration, Instant};

use base64::Engine;
use mtls_gateway::dev::certgen::{self, Issued};
use serde_json::{json, Value};

use crate::common::*;
use crate::rvault::RVault;

const SHA: &str = "x-client-cert-sha256";

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

fn vault_yaml(rv: &RVault, token_file: &std::path::Path) -> String {
    format!(
        "store:\n  kind: vault\n  vault:\n    address: \"{}\"\n    kv_version: 1\n    mount: secret\n    prefix: mtls-gateway\n    kv1_full_scan_secs: 0\n    request_timeout_ms: 1000\n    auth:\n      method: token\n      token_file: \"{}\"\nrefresh:\n  interval_secs: 1\n  retry_min_ms: 200\n  retry_max_secs: 1\nrate_limit:\n  enabled: false\n",
        rv.addr,
        token_file.display()
    )
}

struct Setup {
    rv: RVault,
    pki: Pki,
    echo: mtls_gateway::dev::echo::EchoServer,
    dir: tempfile::TempDir,
    a: Issued,
}

async fn setup() -> Option<Setup> {
    let rv = RVault::start().await?;
    let pki = Pki::new();
    let echo = pki.echo();
    let a = pki.client("vault-a");
    rv.kv_put(
        "secret/mtls-gateway/accounts/acc/certificates/1",
        &cert_doc("acc", 1, &a),
    )
    .await;
    let url = format!("https://localhost:{}/*", echo.addr.port());
    rv.kv_put(
        "secret/mtls-gateway/accounts/acc/mappings",
        &mappings_doc("acc", &url, 1),
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    Some(Setup {
        rv,
        pki,
        echo,
        dir,
        a,
    })
}

fn start_gateway(s: &Setup) -> Gw {
    let token_file = s.dir.path().join("vault-token");
    std::fs::write(&token_file, &s.rv.root_token).expect("token file");
    Gw::start(
        s.dir.path(),
        &s.pki.ca_path,
        &vault_yaml(&s.rv, &token_file),
    )
}

#[tokio::test]
async fn certificates_written_to_vault_are_served_and_a_rotation_is_presented_after_the_next_refresh(
) {
    let Some(s) = setup().await else { return };
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
    s.rv.kv_put(
        "secret/mtls-gateway/accounts/acc/certificates/1",
        &cert_doc("acc", 1, &b),
    )
    .await;
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
async fn vault_stopped_under_steady_traffic_fails_no_request_shows_staleness_and_recovers() {
    let Some(mut s) = setup().await else { return };
    let gw = start_gateway(&s);
    let port = s.echo.addr.port();
    let c = proxied_client(&gw);
    let mut sent = 0u32;
    let mut failed = Vec::new();
    let mut send = |r: Result<reqwest::Response, reqwest::Error>| {
        sent += 1;
        match r {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => failed.push(format!("status {}", r.status())),
            Err(e) => failed.push(e.to_string()),
        }
    };
    for _ in 0..20 {
        send(c.get(format!("http://localhost:{port}/x")).send().await);
    }
    s.rv.stop();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(4) {
        send(c.get(format!("http://localhost:{port}/x")).send().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gw.metric("mtls_gateway_snapshot_age_seconds") >= 2.0,
        "staleness must show while Vault is away"
    );
    assert!(gw.metric("mtls_gateway_refresh_failures_total{scope=\"store\"}") >= 1.0);
    let (ready, _, _) = blocking_get(&format!("http://{}/ready", gw.ops)).expect("ready");
    assert_eq!(ready, 200, "still ready: serving the last snapshot");
    let before = gw.metric("mtls_gateway_last_refresh_success_timestamp_seconds");

    s.rv.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.metric("mtls_gateway_last_refresh_success_timestamp_seconds") <= before {
        send(c.get(format!("http://localhost:{port}/x")).send().await);
        assert!(
            Instant::now() < deadline,
            "no successful refresh after Vault came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.metric("mtls_gateway_snapshot_age_seconds") < 2.0);
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {failed:?}",
        failed.len()
    );
    assert!(sent > 50, "steady traffic: {sent} requests");
    let logs = gw.logs();
    assert!(logs.contains("is back"), "recovery is logged:\n{logs}");
    let failures_logged = logs.matches("failed:").count();
    assert!(
        failures_logged <= 3,
        "an outage is logged once per change of state, not per retry ({failures_logged}):\n{logs}"
    );
}
