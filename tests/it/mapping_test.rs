//! `POST /api/account/{accountId}/configuration/ac-common/mtls/{mappingId}/test`: the real
//! binary, a real mTLS echo target that reports the client certificate it saw, a target that
//! does not trust the client's CA, a closed port; calls signed with HS256 Bearer tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use mtls_gateway::dev::echo::{EchoConfig, EchoServer};
use mtls_gateway::store::{Mapping, MappingDocument, Store};
use serde_json::{json, Value};

use crate::common::*;

const SECRET: &str = "mapping-test-hs256-secret-0123456789abcdef";
const ISS: &str = "https://idp.test";
const AUD: &str = "mtls-gateway";

fn bearer(account: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": format!("user-of-{account}"), "iss": ISS, "aud": AUD,
                "exp": now + 600, "accountId": account}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("jwt");
    format!("Bearer {token}")
}

fn mapping(account: &str, id: u64, url: String, cert: u64, enabled: bool) -> Mapping {
    Mapping {
        id,
        account_id: account.into(),
        name: format!("m{id}"),
        service_name: "TEST_SERVICE".into(),
        url,
        certificate_id: cert,
        enabled,
        deleted: false,
        cutover_check: None,
    }
}

/// A target with a server certificate the gateway trusts that demands a client certificate
/// from another CA.
fn untrusting_target(pki: &Pki) -> EchoServer {
    let other = Pki::new();
    mtls_gateway::dev::echo::spawn_on_thread(EchoConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
        chain: vec![],
        client_ca: vec![other.ca.cert.clone()],
        require_client_cert: true,
    })
    .expect("untrusting echo")
}

async fn test_call(gw: &Gw, account: &str, id: u64, auth: &str) -> (u16, Value) {
    let r = client()
        .post(format!(
            "http://{}/api/account/{account}/configuration/ac-common/mtls/{id}/test",
            gw.admin
        ))
        .header("authorization", auth)
        .send()
        .await
        .expect("test request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_mapping_test_makes_the_real_handshake_and_reports_its_outcome() {
    let pki = Pki::new();
    let echo = pki.echo();
    let refusing = untrusting_target(&pki);
    let cert = pki.client_with_serial("mapping-test-client", 0x5a1f03);
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &cert);
    seed.cert("other", 2, &cert);
    let closed = free_port();
    let doc = MappingDocument {
        mappings: vec![
            mapping(
                "acc",
                10,
                format!("https://localhost:{}/ok/*", echo.addr.port()),
                1,
                true,
            ),
            mapping(
                "acc",
                11,
                format!("https://localhost:{}/refused", refusing.addr.port()),
                1,
                true,
            ),
            mapping(
                "acc",
                12,
                format!("https://localhost:{closed}/closed"),
                1,
                true,
            ),
            mapping(
                "acc",
                13,
                format!("https://localhost:{}/disabled", echo.addr.port()),
                1,
                false,
            ),
        ],
    };
    block(seed.store.put_mappings("acc", &doc, None)).expect("put mappings");
    let other = MappingDocument {
        mappings: vec![mapping(
            "other",
            20,
            format!("https://localhost:{}/x", echo.addr.port()),
            2,
            true,
        )],
    };
    block(seed.store.put_mappings("other", &other, None)).expect("put mappings");
    let gw = Gw::start(
        dir.path(),
        &pki.ca_path,
        &format!(
            "auth:\n  jwt:\n    algorithm: HS256\n    secret: \"{SECRET}\"\n    issuer: {ISS}\n    audience: {AUD}\n"
        ),
    );
    let auth = bearer("acc");

    // OK against the echo target: the prefix of the `*` URL is called, any status counts.
    let (before_conns, before_failures) = (echo.connections(), echo.handshake_failures());
    let (status, v) = test_call(&gw, "acc", 10, &auth).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outcome"], "ok", "{v}");
    assert_eq!(v["mappingId"], "10", "{v}");
    assert_eq!(v["certificateId"], "1", "{v}");
    assert_eq!(
        v["url"],
        format!("https://localhost:{}/ok/", echo.addr.port()),
        "{v}"
    );
    assert!(v["status"].as_u64().is_some(), "{v}");
    assert!(v["error"].is_null(), "{v}");
    assert!(v["elapsedMs"].as_u64().is_some(), "{v}");
    let serial = v["serial"].as_str().expect("serial").to_ascii_lowercase();
    assert_eq!(serial.trim_start_matches('0'), "5a1f03", "{v}");
    assert_eq!(echo.connections(), before_conns + 1);
    assert_eq!(echo.handshake_failures(), before_failures);

    // The target saw that serial: the proxy, for the same mapping, presents the same certificate
    // and the echo target reports the serial it received.
    let r = proxied_client(&gw)
        .get(format!("http://localhost:{}/ok/seen", echo.addr.port()))
        .send()
        .await
        .expect("proxied request");
    assert_eq!(r.status(), 200);
    let seen = r
        .headers()
        .get("x-client-cert-serial")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    assert_eq!(seen.trim_start_matches('0'), serial.trim_start_matches('0'));

    // A disabled mapping may be tested.
    let (status, v) = test_call(&gw, "acc", 13, &auth).await;
    assert_eq!((status, v["outcome"].as_str()), (200, Some("ok")), "{v}");

    // A target that does not trust the client's CA refuses the handshake: failed, still 200.
    let (status, v) = test_call(&gw, "acc", 11, &auth).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outcome"], "failed", "{v}");
    assert!(v["status"].is_null(), "{v}");
    assert!(!v["error"].as_str().unwrap_or("").is_empty(), "{v}");
    assert_eq!(
        v["serial"].as_str().map(str::to_ascii_lowercase),
        Some(serial.clone())
    );

    // A closed port: failed, with the connection error.
    let (status, v) = test_call(&gw, "acc", 12, &auth).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outcome"], "failed", "{v}");
    assert!(v["status"].is_null(), "{v}");
    assert!(!v["error"].as_str().unwrap_or("").is_empty(), "{v}");

    // An unknown mapping: 404.
    let (status, v) = test_call(&gw, "acc", 99, &auth).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"], "mapping_not_found", "{v}");

    // Another account's mapping: 403 through its path, 404 through ours.
    let (status, v) = test_call(&gw, "other", 20, &auth).await;
    assert_eq!(status, 403, "{v}");
    let (status, _) = test_call(&gw, "acc", 20, &auth).await;
    assert_eq!(status, 404);

    // Without credentials: 401.
    let r = client()
        .post(format!(
            "http://{}/api/account/acc/configuration/ac-common/mtls/10/test",
            gw.admin
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);

    // One audit line per test.
    let logs = gw.logs();
    assert!(
        logs.contains("\"action\":\"test\"") && logs.contains("\"outcome\":\"failed\""),
        "{logs}"
    );
}
