//! The runtime end to end: the real binary, a real mTLS target that reports the client
//! certificate it saw, certificates made at test time, the file store.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::*;

const SHA: &str = "x-client-cert-sha256";

fn hdr(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn transparent_mode_presents_the_certificate_of_the_matching_mapping() {
    let pki = Pki::new();
    let echo = pki.echo();
    let (a, b) = (pki.client("client-a"), pki.client("client-b"));
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &a);
    seed.cert("acc", 2, &b);
    let port = echo.addr.port();
    seed.mappings(
        "acc",
        &[
            (
                10,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/a/*"),
                1,
            ),
            (
                11,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/b/*"),
                2,
            ),
            (12, "IDP", &format!("https://localhost:{port}/a/*"), 2),
        ],
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, "");
    let c = proxied_client(&gw);

    let r = c
        .get(format!("http://localhost:{port}/a/x"))
        .send()
        .await
        .expect("a");
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, SHA), sha256_hex(&a.cert));
    assert_eq!(hdr(&r, "x-seen-host"), format!("localhost:{port}"));
    assert_eq!(hdr(&r, "x-seen-path"), "/a/x");

    let r = c
        .get(format!("http://localhost:{port}/b/y?q=1"))
        .send()
        .await
        .expect("b");
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, SHA), sha256_hex(&b.cert));
    assert_eq!(hdr(&r, "x-seen-path"), "/b/y?q=1");

    // The service header picks another mapping for the same URL, and is not forwarded.
    let r = c
        .get(format!("http://localhost:{port}/headers"))
        .header("x-mtls-service", "IDP")
        .send()
        .await
        .expect("idp");
    assert_eq!(r.status(), 403, "no IDP mapping for /headers");
    let r = c
        .get(format!("http://localhost:{port}/a/headers"))
        .header("x-mtls-service", "IDP")
        .send()
        .await
        .expect("idp");
    assert_eq!(hdr(&r, SHA), sha256_hex(&b.cert));
    // Origin-form with Host works too.
    let req = format!("GET /a/z HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    let (status, headers, _) = raw_request(gw.proxy, &req).expect("origin-form");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, SHA), Some(sha256_hex(&a.cert).as_str()));
}

#[tokio::test]
async fn forward_mode_presents_the_mapped_certificate_and_rewrites_headers() {
    let pki = Pki::new();
    let echo = pki.echo();
    let a = pki.client("client-a");
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("123", 1, &a);
    let port = echo.addr.port();
    let url = format!("https://localhost:{port}/headers");
    let echo_url = format!("https://localhost:{port}/echo");
    seed.mappings("123", &[(10, "IDP", &url, 1), (11, "IDP", &echo_url, 1)]);
    let gw = Gw::start(dir.path(), &pki.ca_path, "");
    let c = client();

    // The method and body go through unchanged.
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let r = c
            .request(
                method.clone(),
                format!("http://{}/mtls/account/123", gw.proxy),
            )
            .header("LP-forward-url", &echo_url)
            .header("LP-service-name", "IDP")
            .body("payload")
            .send()
            .await
            .expect("forward");
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(hdr(&r, "x-seen-method"), method.as_str());
        assert_eq!(hdr(&r, SHA), sha256_hex(&a.cert));
        assert_eq!(r.text().await.expect("body"), "payload");
    }

    let r = c
        .get(format!("http://{}/mtls/account/123", gw.proxy))
        .header("LP-forward-url", &url)
        .header("LP-service-name", "IDP")
        .header("Authorization", "Bearer caller-secret")
        .header("LP-authorization-override", "Basic dGFyZ2V0")
        .header("X-Request-Id", "req-1")
        .send()
        .await
        .expect("forward");
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, SHA), sha256_hex(&a.cert));
    assert_eq!(hdr(&r, "x-seen-method"), "GET");
    let seen: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        seen["authorization"], "Basic dGFyZ2V0",
        "override becomes Authorization"
    );
    assert_eq!(seen["x-request-id"], "req-1", "other caller headers pass");
    assert_eq!(seen["host"], format!("localhost:{port}"));
    let names: Vec<String> = seen
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert!(
        names.iter().all(|n| !n.starts_with("lp-")),
        "LP-* headers must be stripped: {names:?}"
    );

    // Without the override, the caller's Authorization is never forwarded.
    let r = c
        .get(format!("http://{}/mtls/account/123", gw.proxy))
        .header("LP-forward-url", &url)
        .header("LP-service-name", "IDP")
        .header("Authorization", "Bearer caller-secret")
        .send()
        .await
        .expect("forward");
    let seen: serde_json::Value = r.json().await.expect("json");
    assert!(seen.get("authorization").is_none(), "{seen}");

    // A missing LP-forward-url is a 400 naming the header.
    let r = c
        .get(format!("http://{}/mtls/account/123", gw.proxy))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("LP-forward-url"));
}

#[tokio::test]
async fn certificates_sharing_a_serial_number_never_share_an_upstream_connection() {
    let pki = Pki::new();
    let echo = pki.echo();
    let a = pki.client_with_serial("same-serial-a", 4242);
    let b = pki.client_with_serial("same-serial-b", 4242);
    assert_eq!(
        a.cert.serial_number().to_bn().expect("bn").to_vec(),
        b.cert.serial_number().to_bn().expect("bn").to_vec()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &a);
    seed.cert("acc", 2, &b);
    let port = echo.addr.port();
    seed.mappings(
        "acc",
        &[
            (
                10,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/a"),
                1,
            ),
            (
                11,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/b"),
                2,
            ),
        ],
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, "rate_limit:\n  enabled: false\n");
    let c = proxied_client(&gw);
    let (mut conns_a, mut conns_b) = (HashSet::new(), HashSet::new());
    for i in 0..20 {
        let (path, want, set) = if i % 2 == 0 {
            ("a", sha256_hex(&a.cert), &mut conns_a)
        } else {
            ("b", sha256_hex(&b.cert), &mut conns_b)
        };
        let r = c
            .get(format!("http://localhost:{port}/{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(
            hdr(&r, SHA),
            want,
            "request {i} presented the wrong certificate"
        );
        set.insert(hdr(&r, "x-connection-id"));
    }
    assert!(conns_a.is_disjoint(&conns_b), "{conns_a:?} vs {conns_b:?}");
    // And the pool is used at all: fewer connections than requests.
    assert!(
        conns_a.len() + conns_b.len() < 20,
        "no reuse: {conns_a:?} {conns_b:?}"
    );
}

#[tokio::test]
async fn exact_beats_wildcard_and_unmapped_requests_are_refused_with_the_triplet() {
    let pki = Pki::new();
    let echo = pki.echo();
    let (a, b) = (pki.client("wild"), pki.client("exact"));
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &a);
    seed.cert("acc", 2, &b);
    let port = echo.addr.port();
    seed.mappings(
        "acc",
        &[
            (
                10,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/api/*"),
                1,
            ),
            (
                11,
                "TEST_SERVICE",
                &format!("https://LOCALHOST:{port}/api/pay?x=1"),
                2,
            ),
        ],
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, "");
    let c = proxied_client(&gw);
    let get = |p: &str| c.get(format!("http://localhost:{port}{p}")).send();

    let r = get("/api/pay?x=1").await.expect("exact");
    assert_eq!(hdr(&r, SHA), sha256_hex(&b.cert));
    let r = get("/api/pay?x=2").await.expect("wild");
    assert_eq!(hdr(&r, SHA), sha256_hex(&a.cert));
    let r = get("/other").await.expect("none");
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "no_mapping");
    assert_eq!(body["accountId"], "acc");
    assert_eq!(body["serviceName"], "TEST_SERVICE");
    assert_eq!(body["url"], format!("https://localhost:{port}/other"));

    // Forward mode with the stop flag: LivePerson's 500 with the reason.
    let r = client()
        .get(format!("http://{}/mtls/account/acc", gw.proxy))
        .header("LP-forward-url", format!("https://localhost:{port}/other"))
        .header("LP-service-name", "TEST_SERVICE")
        .header("LP-stop-if-certificate-not-found", "true")
        .send()
        .await
        .expect("stop");
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap_or_default().contains("no_mapping"));
    assert_eq!(
        echo.requests(),
        2,
        "refused requests never reach the target"
    );
}

#[tokio::test]
async fn plain_tls_fallback_reaches_only_listed_hosts_and_honours_the_stop_flag() {
    let pki = Pki::new();
    let plain = pki.echo_plain();
    let dir = tempfile::tempdir().expect("tmp");
    let _seed = Seed::new(dir.path());
    let gw = Gw::start(
        dir.path(),
        &pki.ca_path,
        "unmapped:\n  policy: plain_tls\n  plain_tls_hosts: [localhost]\n",
    );
    let port = plain.addr.port();
    let c = client();
    let r = c
        .get(format!("http://{}/mtls/account/acc", gw.proxy))
        .header("LP-forward-url", format!("https://localhost:{port}/x"))
        .header("LP-service-name", "IDP")
        .send()
        .await
        .expect("fallback");
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, SHA), "none");
    let r = c
        .get(format!("http://{}/mtls/account/acc", gw.proxy))
        .header("LP-forward-url", format!("https://localhost:{port}/x"))
        .header("LP-service-name", "IDP")
        .header("LP-stop-if-certificate-not-found", "true")
        .send()
        .await
        .expect("stop");
    assert_eq!(r.status(), 500);
    let r = c
        .get(format!("http://{}/mtls/account/acc", gw.proxy))
        .header("LP-forward-url", format!("https://127.0.0.1:{port}/x"))
        .header("LP-service-name", "IDP")
        .send()
        .await
        .expect("unlisted");
    assert_eq!(r.status(), 403, "a host not listed is refused");
}

#[tokio::test]
async fn dead_target_and_unverifiable_target_give_424_with_transport_headers() {
    let pki = Pki::new();
    let other = Pki::new(); // a target whose certificate the gateway does not trust
    let untrusted = other.echo();
    let a = pki.client("a");
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &a);
    let dead = free_port();
    seed.mappings(
        "acc",
        &[
            (10, "IDP", &format!("https://localhost:{dead}/*"), 1),
            (
                11,
                "IDP",
                &format!("https://localhost:{}/*", untrusted.addr.port()),
                1,
            ),
        ],
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, "");
    for port in [dead, untrusted.addr.port()] {
        let url = format!("https://localhost:{port}/x");
        let r = client()
            .get(format!("http://{}/mtls/account/acc", gw.proxy))
            .header("LP-forward-url", &url)
            .header("LP-service-name", "IDP")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 424, "port {port}");
        assert_eq!(hdr(&r, "lp-message-from-transport"), url);
        assert!(!hdr(&r, "lp-error-from-transport").is_empty());
    }
    assert_eq!(untrusted.requests(), 0);
    assert!(gw.metric("mtls_gateway_upstream_tls_failures_total") >= 1.0);
}

#[tokio::test]
async fn bodies_pass_through_byte_for_byte_both_ways() {
    let OneMapping {
        pki,
        echo: _echo,
        cert: _,
        dir,
        seed: _,
        port,
    } = OneMapping::new("a");
    let gw = Gw::start(dir.path(), &pki.ca_path, "rate_limit:\n  enabled: false\n");
    let c = proxied_client(&gw);
    let ten_mib = 10 * 1024 * 1024;

    // Request bodies: empty, 10 MiB with a length, 10 MiB chunked (streamed).
    let big: Vec<u8> = (0..ten_mib).map(|i| (i * 7 % 256) as u8).collect();
    let r = c
        .post(format!("http://localhost:{port}/echo"))
        .body(Vec::<u8>::new())
        .send()
        .await
        .expect("0");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").len(), 0);
    let r = c
        .post(format!("http://localhost:{port}/echo"))
        .body(big.clone())
        .send()
        .await
        .expect("10MiB");
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.expect("body")[..] == big[..],
        "10 MiB echo differs"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .put(format!("http://localhost:{port}/echo"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("chunked");
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.expect("body")[..] == big[..],
        "chunked echo differs"
    );

    // Response bodies: 0 bytes, 10 MiB with a length, 10 MiB chunked.
    let want = mtls_gateway::dev::echo::pattern(ten_mib);
    for path in [format!("/bytes/{ten_mib}"), format!("/chunked/{ten_mib}")] {
        let r = c
            .get(format!("http://localhost:{port}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert!(
            r.bytes().await.expect("body")[..] == want[..],
            "{path} differs"
        );
    }
    let r = c
        .get(format!("http://localhost:{port}/bytes/0"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.bytes().await.expect("body").len(), 0);
}

/// A target that answers while it still reads (the echo sends the body back as it arrives):
/// a proxy that reads the answer only once it has sent the whole body stalls as soon as the
/// socket buffers on both sides are full. 48 MiB each way is far beyond loopback's buffers.
#[tokio::test]
async fn a_large_body_to_a_target_that_answers_while_it_reads_does_not_stall() {
    let m = OneMapping::new("a");
    let port = m.port;
    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        "rate_limit:\n  enabled: false\n",
    );
    let c = proxied_client(&gw);
    let big = mtls_gateway::dev::echo::pattern(48 * 1024 * 1024);
    for chunked in [false, true] {
        let body = if chunked {
            let parts: Vec<Result<Vec<u8>, std::io::Error>> =
                big.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
            reqwest::Body::wrap_stream(futures::stream::iter(parts))
        } else {
            reqwest::Body::from(big.clone())
        };
        let r = c
            .post(format!("http://localhost:{port}/echo"))
            .body(body)
            .send()
            .await
            .expect("48 MiB sent");
        assert_eq!(r.status(), 200);
        let got = r.bytes().await.expect("48 MiB echoed without a stall");
        assert!(got[..] == big[..], "echo differs (chunked: {chunked})");
    }
}

#[tokio::test]
async fn past_the_rate_limit_a_client_gets_429_and_recovers_while_others_are_unaffected() {
    let OneMapping {
        pki,
        echo: _echo,
        cert: _,
        dir,
        seed: _,
        port,
    } = OneMapping::new("a");
    let gw = Gw::start(
        dir.path(),
        &pki.ca_path,
        "rate_limit:\n  requests_per_second: 10\n  trusted_proxies: [\"127.0.0.1\"]\n",
    );
    let c = proxied_client(&gw);
    let send = |ip: &'static str| {
        c.get(format!("http://localhost:{port}/x"))
            .header("x-forwarded-for", ip)
            .send()
    };
    let mut limited = None;
    for _ in 0..40 {
        let r = send("203.0.113.1").await.expect("send");
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("a flood of 40 requests must meet a 429");
    assert_eq!(hdr(&r, "retry-after"), "1");
    let body: serde_json::Value = r.json().await.expect("json body");
    assert_eq!(body["error"], "rate_limited");
    // Another client is not affected.
    assert_eq!(send("203.0.113.2").await.expect("other").status(), 200);
    // The flooding client recovers in the next window.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(send("203.0.113.1").await.expect("again").status(), 200);
    assert!(gw.metric("mtls_gateway_rate_limited_total") >= 1.0);
}

#[tokio::test]
async fn a_certificate_replaced_in_the_store_is_used_after_the_next_refresh_while_in_flight_requests_complete(
) {
    let pki = Pki::new();
    let echo = pki.echo();
    let (old, new) = (pki.client("old"), pki.client("new"));
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &old);
    let port = echo.addr.port();
    seed.mappings(
        "acc",
        &[(
            10,
            "TEST_SERVICE",
            &format!("https://localhost:{port}/*"),
            1,
        )],
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, "rate_limit:\n  enabled: false\n");
    let c = proxied_client(&gw);
    let r = c
        .get(format!("http://localhost:{port}/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(hdr(&r, SHA), sha256_hex(&old.cert));

    let slow = tokio::spawn(c.get(format!("http://localhost:{port}/slow/1500")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    seed.cert("acc", 1, &new);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .get(format!("http://localhost:{port}/x"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        if hdr(&r, SHA) == sha256_hex(&new.cert) {
            break;
        }
        assert_eq!(hdr(&r, SHA), sha256_hex(&old.cert));
        assert!(Instant::now() < deadline, "rotation not seen within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = slow.await.expect("join").expect("slow request");
    assert_eq!(r.status(), 200, "the in-flight request completes");
    assert_eq!(hdr(&r, SHA), sha256_hex(&old.cert));
}

#[tokio::test]
async fn a_corrupt_store_entry_leaves_every_other_mapping_working() {
    let pki = Pki::new();
    let echo = pki.echo();
    let (a, b) = (pki.client("a"), pki.client("b"));
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &a);
    seed.cert("acc", 2, &b);
    seed.raw_cert("acc", 3, b"this is not pkcs12".to_vec(), "pw");
    let port = echo.addr.port();
    seed.mappings(
        "acc",
        &[
            (
                10,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/a"),
                1,
            ),
            (
                11,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/b"),
                2,
            ),
            (
                12,
                "TEST_SERVICE",
                &format!("https://localhost:{port}/c"),
                3,
            ),
        ],
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, "");
    let c = proxied_client(&gw);
    let r = c
        .get(format!("http://localhost:{port}/a"))
        .send()
        .await
        .expect("a");
    assert_eq!(hdr(&r, SHA), sha256_hex(&a.cert));
    let r = c
        .get(format!("http://localhost:{port}/c"))
        .send()
        .await
        .expect("c");
    assert_eq!(r.status(), 503);
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("certificate_unavailable"));

    // Now corrupt a good entry on disk: its last good version keeps serving.
    let path = seed.dir.join("accounts/acc/certificates/2.json");
    std::fs::write(&path, b"{ not json").expect("corrupt");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = c
        .get(format!("http://localhost:{port}/b"))
        .send()
        .await
        .expect("b");
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, SHA), sha256_hex(&b.cert));
    let r = c
        .get(format!("http://localhost:{port}/a"))
        .send()
        .await
        .expect("a");
    assert_eq!(hdr(&r, SHA), sha256_hex(&a.cert));
    assert!(gw.metric("mtls_gateway_refresh_failures_total{scope=\"certificate\"}") >= 1.0);
    let logs = gw.logs();
    assert!(
        logs.contains("certificate acc/2"),
        "the failing entry is named in the log"
    );
    assert_eq!(
        logs.matches("certificate acc/2:").count(),
        1,
        "logged once, not every refresh:\n{logs}"
    );
}

#[tokio::test]
async fn with_proxy_auth_required_the_forward_resource_takes_bearer_or_oauth1_scoped_to_the_account(
) {
    const SECRET: &str = "proxy-auth-test-hs256-secret-0123456789";
    let m = OneMapping::new("a");
    let port = m.port;
    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        &format!(
            "proxy:\n  listen: [\"127.0.0.1:{{proxy}}\"]\n  auth: required\n  default_service: TEST_SERVICE\nauth:\n  jwt:\n    algorithm: HS256\n    secret: \"{SECRET}\"\n    issuer: https://idp.test\n    audience: mtls-gateway\n"
        ),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let token = |account: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "app", "iss": "https://idp.test", "aud": "mtls-gateway",
                                "exp": now + 600, "accountId": account}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("jwt")
    };
    let url = format!("https://localhost:{port}/headers");
    let send = |auth: Option<String>, ctype: Option<&'static str>| {
        let mut r = client()
            .get(format!("http://{}/mtls/account/acc", gw.proxy))
            .header("LP-forward-url", &url);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        if let Some(c) = ctype {
            r = r.header("Content-Type", c);
        }
        r.send()
    };
    let r = send(None, None).await.expect("no creds");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = send(Some(format!("Bearer {}", token("other"))), None)
        .await
        .expect("other account");
    assert_eq!(r.status(), 403, "a token for another account");
    let r = send(Some(format!("Bearer {}", token("acc"))), None)
        .await
        .expect("right account");
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.expect("json");
    assert!(
        seen.get("authorization").is_none(),
        "the gateway credential is not forwarded"
    );
    let r = send(
        Some("OAuth oauth_consumer_key=\"k\", oauth_signature=\"x\"".into()),
        Some("application/x-www-form-urlencoded"),
    )
    .await
    .expect("oauth1 form");
    assert_eq!(r.status(), 401, "no OAuth1 key is configured here");
    assert!(r.headers().contains_key("www-authenticate"));
    // OAuth1 over form bodies, verified and refused: auth.rs
    // `the_forward_resource_verifies_oauth1_over_the_body_and_forwards_it_unchanged`.
    // Transparent mode on the same listener authenticates with Proxy-Authorization (stripped),
    // and the app's own Authorization goes to the target.
    let r = proxied_client(&gw)
        .get(format!("http://localhost:{port}/x"))
        .header("x-mtls-account", "acc")
        .send()
        .await
        .expect("transparent");
    assert_eq!(r.status(), 401);
    let r = proxied_client(&gw)
        .get(format!("http://localhost:{port}/headers"))
        .header("x-mtls-account", "acc")
        .header("Proxy-Authorization", format!("Bearer {}", token("acc")))
        .header("Authorization", "Basic Zm9yLXRoZS10YXJnZXQ=")
        .send()
        .await
        .expect("transparent with credentials");
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.expect("json");
    assert_eq!(seen["authorization"], "Basic Zm9yLXRoZS10YXJnZXQ=");
    assert!(seen.get("proxy-authorization").is_none());
}

/// Loopback over IPv6: the proxy listener on `[::1]` serves an application that connects over
/// IPv6, with the mapping's certificate, and the rate limit counts that client's address.
#[test]
fn a_proxy_listener_on_ipv6_loopback_serves_and_rate_limits_ipv6_clients() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: this machine has no IPv6 loopback (::1)");
        return;
    }
    let m = OneMapping::new("v6-client");
    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        "proxy:\n  listen: [\"[::1]:{proxy}\"]\n  default_account: acc\n  default_service: TEST_SERVICE\nrate_limit:\n  requests_per_second: 2\n",
    );
    assert!(gw.proxy.is_ipv6(), "{}", gw.proxy);
    let addr = gw.proxy;
    let host = format!("localhost:{}", m.port);
    let mut statuses = Vec::new();
    // Six requests well within two of the limiter's one-second windows: at most four pass.
    for _ in 0..6 {
        let (status, headers, _) = raw_request(
            addr,
            &format!(
                "GET http://{host}/headers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ),
        )
        .expect("over IPv6");
        if status == 200 {
            assert_eq!(
                header(&headers, "x-client-cert-sha256"),
                Some(sha256_hex(&m.cert.cert).as_str())
            );
        }
        statuses.push(status);
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 2,
        "the limit counts the IPv6 client: {statuses:?}"
    );
}

/// `proxy.access_log: true`: one line per request on both request paths (the lean loop and
/// Pingora's), refusals included, naming the mapping and certificate that served it, and
/// never a query string. Off by default.
#[tokio::test]
async fn the_access_log_has_one_line_per_request_without_query_strings_and_is_off_by_default() {
    let m = OneMapping::new("a");
    let port = m.port;
    let access_lines = |gw: &Gw| -> Vec<String> {
        gw.logs()
            .lines()
            .filter(|l| l.contains("mtls_gateway::access"))
            .map(String::from)
            .collect()
    };
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, "");
    let c = proxied_client(&gw);
    let r = c
        .get(format!("http://localhost:{port}/default?token=s3cret"))
        .send()
        .await
        .expect("proxied");
    assert_eq!(r.status(), 200);
    assert!(
        access_lines(&gw).is_empty(),
        "access log is off by default: {}",
        gw.logs()
    );
    drop(gw);

    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        &format!("rate_limit:\n  enabled: false\n{PROXY_DEFAULTS}  access_log: true\n"),
    );
    let c = proxied_client(&gw);
    // The lean loop.
    let r = c
        .get(format!("http://localhost:{port}/lean?token=s3cret"))
        .send()
        .await
        .expect("proxied");
    assert_eq!(r.status(), 200);
    // Pingora's path (a Connection option the lean loop hands over).
    let r = raw_request(
        gw.proxy,
        &format!(
            "GET http://localhost:{port}/pingora?token=s3cret HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close, x-option\r\n\r\n"
        ),
    )
    .expect("raw request");
    assert_eq!(r.0, 200);
    // The forward resource (sent to the gateway, not through it).
    let r = client()
        .post(format!("http://{}/mtls/account/acc", gw.proxy))
        .header(
            "LP-forward-url",
            format!("https://localhost:{port}/fw?token=s3cret"),
        )
        .header("LP-service-name", "TEST_SERVICE")
        .send()
        .await
        .expect("forwarded");
    assert_eq!(r.status(), 200);
    // Refused: no mapping for this host.
    let r = c
        .get(format!("http://127.0.0.1:{port}/unmapped?token=s3cret"))
        .send()
        .await
        .expect("refused");
    assert_eq!(r.status(), 403);

    let lines = wait_for("4 access lines", Duration::from_secs(5), || {
        let l = access_lines(&gw);
        (l.len() >= 4).then_some(l)
    });
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let expect = [
        format!("client=127.0.0.1 method=GET path=/lean mode=transparent account=acc service=TEST_SERVICE mapping=10 certificate=1 target=https://localhost:{port}/lean status=200 outcome=proxied ms="),
        format!("client=127.0.0.1 method=GET path=/pingora mode=transparent account=acc service=TEST_SERVICE mapping=10 certificate=1 target=https://localhost:{port}/pingora status=200 outcome=proxied ms="),
        format!("client=127.0.0.1 method=POST path=/mtls/account/acc mode=forward account=acc service=TEST_SERVICE mapping=10 certificate=1 target=https://localhost:{port}/fw status=200 outcome=proxied ms="),
        format!("client=127.0.0.1 method=GET path=/unmapped mode=transparent account=- service=- mapping=- certificate=- target=https://127.0.0.1:{port}/unmapped status=403 outcome=no_mapping ms="),
    ];
    for (line, want) in lines.iter().zip(&expect) {
        assert!(line.contains(want.as_str()), "{line}\nwanted: {want}");
    }
    let all = gw.logs();
    assert!(
        !all.contains("s3cret"),
        "a query string reached the log:\n{all}"
    );
}
