//! Shared state on Redis (`redis:`, src/shared): two gateway binaries on one OpenBao store with
//! `refresh.interval_secs: 300`, so that only a change notice can make a write visible on the
//! other replica quickly.
//!
//! - a mapping written through replica 1 is served by replica 2 within a second (median of
//!   several writes, printed), on one Redis server and on a three-master Redis Cluster;
//! - an OAuth1-signed admin request replayed on the other replica is refused (`nonce_used`);
//! - Redis killed: the admin API still works (nonces fall back to the local cache, so a replay
//!   on the other replica is accepted then), `mtls_gateway_shared_state_up` goes to 0 with one
//!   log line; Redis restarted: the gauge is back to 1 within `retry_secs` and a bit, and
//!   notices resume.

use std::time::{Duration, Instant};

use base64::Engine as _;
use mtls_gateway::dev::certgen;
use serde_json::{json, Value};

use crate::admin::oauth_header;
use crate::bao::Bao;
use crate::common::*;
use crate::redis::{RedisCluster, RedisServer};

pub(crate) const JWT_SECRET: &str = "shared-state-test-jwt-secret-0123456789";

pub(crate) fn bearer() -> String {
    let exp = mtls_gateway::admin::unix_now() + 3600;
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "ops", "iss": "test", "aud": "mtls", "exp": exp, "accountId": "acc"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("jwt");
    format!("Bearer {t}")
}

struct Fleet {
    _bao: Bao,
    _pki: Pki,
    echo: mtls_gateway::dev::echo::EchoServer,
    gws: Vec<Gw>,
    _dirs: Vec<tempfile::TempDir>,
}

/// OpenBao with certificate 1 of account `acc`, and `n` gateways on it sharing `redis_yaml`.
async fn fleet(n: usize, redis_yaml: &str) -> Fleet {
    let bao = Bao::dev().await;
    let pki = Pki::new();
    let echo = pki.echo();
    let issued = pki.client("shared-a");
    let p12 = certgen::to_p12(&issued.cert, &issued.key, &[], "s3cret").expect("p12");
    let doc = json!({
        "id": 1, "accountId": "acc", "name": "cert-1", "displayName": "cert-1", "deleted": false,
        "p12": base64::engine::general_purpose::STANDARD.encode(p12), "password": "s3cret",
    });
    let (s, v) = bao
        .api(
            "POST",
            "secret/data/mtls-gateway/accounts/acc/certificates/1",
            Some(&json!({ "data": doc })),
        )
        .await;
    assert!((200..300).contains(&s), "seed: {s} {v}");
    let mut gws = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("token"), &bao.root_token).expect("token file");
        let yaml = format!(
            "store:\n  kind: vault\n  vault:\n    address: \"{}\"\n    kv_version: 2\n    mount: secret\n    prefix: mtls-gateway\n    request_timeout_ms: 5000\n    auth:\n      method: token\n      token_file: \"{}\"\nrefresh:\n  interval_secs: 300\nrate_limit:\n  enabled: false\nauth:\n  oauth1:\n    keys:\n      - key: key-a\n        secret: secret-a\n        accounts: [\"acc\"]\n  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: test\n    audience: mtls\n{redis_yaml}",
            bao.addr,
            dir.path().join("token").display(),
        );
        gws.push(Gw::start(dir.path(), &pki.ca_path, &yaml));
        dirs.push(dir);
    }
    Fleet {
        _bao: bao,
        _pki: pki,
        echo,
        gws,
        _dirs: dirs,
    }
}

fn redis_yaml(urls: &[String], cluster: bool) -> String {
    let list = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "redis:\n  urls: [{list}]\n  cluster: {cluster}\n  key_prefix: \"t{}:\"\n  retry_secs: 1\n",
        std::process::id()
    )
}

/// Waits until every gateway reports Redis up and listens for notices.
pub(crate) fn wait_shared_up(gws: &[Gw]) {
    for gw in gws {
        wait_for("shared state up", Duration::from_secs(10), || {
            (gw.metric("mtls_gateway_shared_state_up") == 1.0
                && gw.logs().contains("listening for change notices"))
            .then_some(())
        });
    }
}

/// Adds mapping `m-{tag}` (`https://localhost:PORT/{tag}/*` to certificate 1) through `gw`.
pub(crate) async fn add_mapping(gw: &Gw, port: u16, tag: &str) {
    let body = json!([{
        "certificationId": "1", "serviceName": "TEST_SERVICE",
        "url": format!("https://localhost:{port}/{tag}/*"), "name": format!("m-{tag}"),
    }]);
    let r = client()
        .post(format!(
            "http://{}/api/account/acc/configuration/ac-common/mtls",
            gw.admin
        ))
        .header("authorization", bearer())
        .json(&body)
        .send()
        .await
        .expect("admin call");
    let s = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(s == 200 || s == 201, "mapping: {s} {v}\n{}", gw.logs());
}

/// Time from the write's request (to `from`) until `to` serves the new mapping (200 through its
/// proxy), polled every 5 ms for at most `limit`.
pub(crate) async fn write_to_served(
    from: &Gw,
    to: &Gw,
    port: u16,
    tag: &str,
    limit: Duration,
) -> Duration {
    let c = proxied_client(to);
    let url = format!("http://localhost:{port}/{tag}/x");
    let r = c.get(&url).send().await.expect("send");
    assert_ne!(r.status(), 200, "{tag} is served before it is written");
    let t0 = Instant::now();
    add_mapping(from, port, tag).await;
    loop {
        let r = c.get(&url).send().await.expect("send");
        if r.status() == 200 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{tag}: not served by the other replica within {limit:?} (last {}); its log:\n{}",
            r.status(),
            to.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Several writes through replica 1, each timed until replica 2 serves it; prints the figures
/// and returns the median.
async fn measure(f: &Fleet, label: &str, rounds: usize) -> Duration {
    let port = f.echo.addr.port();
    let mut times = Vec::new();
    for i in 0..rounds {
        let tag = format!("{label}{i}");
        times
            .push(write_to_served(&f.gws[0], &f.gws[1], port, &tag, Duration::from_secs(10)).await);
    }
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "{label}: write-to-served on the other replica over {rounds} writes: median {median:?}, min {:?}, max {:?}",
        times[0],
        times[times.len() - 1]
    );
    median
}

/// An OAuth1-signed GET of account `acc`'s certificates, signed for `signed_for`'s Host and
/// sent to `to` (with that Host): (status, WWW-Authenticate).
pub(crate) fn signed_get(auth: &str, signed_for: &Gw, to: &Gw) -> (u16, String) {
    let path = "/mtls/account/acc/certificates";
    let r = raw_request(
        to.admin,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n",
            signed_for.admin
        ),
    )
    .expect("admin request");
    (
        r.0,
        header(&r.1, "www-authenticate").unwrap_or("").to_string(),
    )
}

pub(crate) fn sign(gw: &Gw) -> String {
    oauth_header(
        &gw.admin.to_string(),
        "key-a",
        "secret-a",
        "GET",
        "/mtls/account/acc/certificates",
        None,
        b"",
    )
}

#[tokio::test]
async fn shared_redis_notices_nonces_and_fallback() {
    let mut redis = RedisServer::start();
    let f = fleet(2, &redis_yaml(&[redis.url()], false)).await;
    let (g1, g2) = (&f.gws[0], &f.gws[1]);
    wait_shared_up(&f.gws);

    // Changes reach the other replica within a second (its periodic refresh is 5 minutes).
    let median = measure(&f, "single", 5).await;
    assert!(median < Duration::from_secs(1), "median {median:?}");

    // A nonce used on replica 1 is refused on replica 2.
    let auth = sign(g1);
    assert_eq!(signed_get(&auth, g1, g1).0, 200);
    let (s, www) = signed_get(&auth, g1, g2);
    assert_eq!(s, 401, "replayed on the other replica: {www}");
    assert!(www.contains("nonce_used"), "{www}");

    // Redis killed: the admin API still works, on local nonces; the gauge says so, once.
    redis.kill();
    for gw in &f.gws {
        wait_for("shared state down", Duration::from_secs(10), || {
            (gw.metric("mtls_gateway_shared_state_up") == 0.0).then_some(())
        });
    }
    let auth = sign(g1);
    assert_eq!(signed_get(&auth, g1, g1).0, 200, "{}", g1.logs());
    assert_eq!(
        signed_get(&auth, g1, g1).0,
        401,
        "the local cache still refuses"
    );
    // The other replica cannot know it: per replica, as without Redis.
    assert_eq!(signed_get(&auth, g1, g2).0, 200);
    // A write still works on this replica (its notice is lost; the periodic refresh covers it).
    add_mapping(g1, f.echo.addr.port(), "during-outage").await;
    // Without notices, the other replica does not see it (its periodic refresh is 5 minutes).
    let c = proxied_client(g2);
    let url = format!("http://localhost:{}/during-outage/x", f.echo.addr.port());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c.get(&url).send().await.expect("send");
    assert_ne!(r.status(), 200, "served without a notice?");
    for gw in &f.gws {
        let lines = gw
            .logs()
            .matches("falling back to per-replica state")
            .count();
        assert_eq!(lines, 1, "one log line per outage:\n{}", gw.logs());
        assert!(gw.metric("mtls_gateway_shared_state_errors_total{op=\"PING\"}") >= 1.0);
    }

    // Restarted: back within retry_secs (1) and a bit, notices resume.
    let restarted = Instant::now();
    redis.restart();
    for gw in &f.gws {
        wait_for("shared state back up", Duration::from_secs(5), || {
            (gw.metric("mtls_gateway_shared_state_up") == 1.0
                && gw.logs().contains("change notices resumed"))
            .then_some(())
        });
        assert!(gw.logs().contains("answers again"), "{}", gw.logs());
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    // The resubscription refreshed once: the write made during the outage is served.
    wait_for_async(Duration::from_secs(5), || async {
        c.get(&url)
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    let median = measure(&f, "after-restart", 3).await;
    assert!(median < Duration::from_secs(1), "median {median:?}");
    let auth = sign(g2);
    assert_eq!(signed_get(&auth, g2, g2).0, 200);
    assert_eq!(signed_get(&auth, g2, g1).0, 401, "shared nonces again");
}

async fn wait_for_async<F, Fut>(limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < limit, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shared_redis_cluster_notices_and_nonces() {
    let cluster = RedisCluster::start(3);
    let f = fleet(2, &redis_yaml(&cluster.urls(), true)).await;
    wait_shared_up(&f.gws);
    let median = measure(&f, "cluster", 5).await;
    assert!(median < Duration::from_secs(1), "median {median:?}");
    let (g1, g2) = (&f.gws[0], &f.gws[1]);
    let auth = sign(g1);
    assert_eq!(signed_get(&auth, g1, g1).0, 200);
    assert_eq!(signed_get(&auth, g1, g2).0, 401, "replay across replicas");
}

/// The client alone against a paused (slow) Redis and an address that never answers: each call
/// is bounded by the timeouts, then calls fail at once until `retry_secs` has passed, and the
/// client recovers by itself.
#[tokio::test]
async fn shared_redis_client_falls_back_within_bounds_and_recovers() {
    use mtls_gateway::shared::{Redis, SharedError};
    let redis = RedisServer::start();
    let cfg = |url: &str| {
        mtls_gateway::config::Config::from_yaml(
            &format!("redis:\n  url: {url}\n  connect_timeout_ms: 200\n  command_timeout_ms: 100\n  retry_secs: 1\n"),
            std::path::Path::new("."),
        )
        .expect("config")
        .redis
        .expect("redis")
    };
    let r = Redis::connect(&cfg(&redis.url()), "t")
        .await
        .expect("client");
    assert!(r.is_up());
    let key = r.key("probe");
    assert!(key.starts_with("mtls-gateway:"));
    let mut set = ::redis::cmd("SET");
    set.arg(&key).arg(7).arg("PX").arg(10_000);
    r.query::<()>(&set).await.expect("SET");
    let mut p = ::redis::pipe();
    p.cmd("INCRBY").arg(&key).arg(2).cmd("PTTL").arg(&key);
    let (n, ttl): (i64, i64) = r.pipe(&p).await.expect("pipeline");
    assert_eq!(n, 9);
    assert!(ttl > 0);
    // An error answer is not an outage.
    let mut bad = ::redis::cmd("EVAL");
    bad.arg("return redis.call('NOSUCHCOMMAND')").arg(0);
    assert!(matches!(
        r.query::<()>(&bad).await,
        Err(SharedError::Command(_))
    ));
    assert!(r.is_up());

    // Slow: the call gives up after command_timeout, then fallback answers at once.
    redis.pause();
    let t0 = Instant::now();
    assert!(matches!(r.ping().await, Err(SharedError::Down)));
    let first = t0.elapsed();
    assert!(first < Duration::from_millis(300), "{first:?}");
    assert!(!r.is_up());
    let t0 = Instant::now();
    for _ in 0..100 {
        assert!(matches!(r.ping().await, Err(SharedError::Down)));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(50),
        "{:?}",
        t0.elapsed()
    );
    eprintln!(
        "slow redis: first call gave up after {first:?}, the next 100 returned in {:?}",
        t0.elapsed()
    );
    redis.resume();
    // Recovers by itself once retry_secs (1 s) has passed.
    let t0 = Instant::now();
    while r.ping().await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(3), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(r.is_up());

    // A server that accepts connections and never answers: bounded by connect_timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}", silent.local_addr().expect("addr"));
    let t0 = Instant::now();
    let r = Redis::connect(&cfg(&url), "t").await.expect("client");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert!(!r.is_up());
    let t0 = Instant::now();
    assert!(matches!(r.ping().await, Err(SharedError::Down)));
    assert!(t0.elapsed() < Duration::from_millis(20));
}

/// `username` and `password_file` reach Redis (ACL user); a wrong password is an outage, not an
/// answer: fallback, and the password appears in no error.
#[tokio::test]
async fn shared_redis_client_authenticates_with_an_acl_user() {
    use mtls_gateway::shared::{Redis, SharedError};
    let redis = RedisServer::start_with(&["--user", "gw", "on", ">s3cret-pw", "~*", "&*", "+@all"]);
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = |pw: &str| {
        std::fs::write(dir.path().join("pw"), format!("{pw}\n")).expect("pw file");
        mtls_gateway::config::Config::from_yaml(
            &format!(
                "redis:\n  url: {}\n  username: gw\n  password_file: pw\n  retry_secs: 1\n",
                redis.url()
            ),
            dir.path(),
        )
        .expect("config")
        .redis
        .expect("redis")
    };
    let good = cfg("s3cret-pw");
    assert!(!format!("{good:?}").contains("s3cret-pw"));
    let r = Redis::connect(&good, "t").await.expect("client");
    assert!(r.is_up());
    let who: String = r
        .query(&::redis::cmd("ACL").arg("WHOAMI").clone())
        .await
        .expect("whoami");
    assert_eq!(who, "gw");
    let r = Redis::connect(&cfg("wrong-pw"), "t").await.expect("client");
    assert!(!r.is_up());
    assert!(matches!(r.ping().await, Err(SharedError::Down)));
    assert!(!format!("{r:?}").contains("wrong-pw"));
}

/// `rediss://` with `tls_ca_file`: the server's certificate is verified against that CA (and a
/// server whose CA is not given is refused: fallback).
#[tokio::test]
async fn shared_redis_client_over_tls_with_a_private_ca() {
    use mtls_gateway::shared::Redis;
    let pki = Pki::new();
    let other = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert, certgen::to_pem(&pki.server.cert)).expect("cert");
    std::fs::write(&key, certgen::key_to_pem(&pki.server.key)).expect("key");
    let tls_port = free_port();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert.display().to_string(),
        "--tls-key-file",
        &key.display().to_string(),
        "--tls-ca-cert-file",
        &pki.ca_path.display().to_string(),
        "--tls-auth-clients",
        "no",
    ]);
    let cfg = |ca: &std::path::Path| {
        mtls_gateway::config::Config::from_yaml(
            &format!(
                "redis:\n  url: rediss://localhost:{tls_port}\n  tls_ca_file: \"{}\"\n  connect_timeout_ms: 2000\n  command_timeout_ms: 1000\n",
                ca.display()
            ),
            dir.path(),
        )
        .expect("config")
        .redis
        .expect("redis")
    };
    let r = Redis::connect(&cfg(&pki.ca_path), "t")
        .await
        .expect("client");
    assert!(r.is_up(), "TLS with the private CA ({})", redis.log());
    r.ping().await.expect("ping over TLS");
    let r = Redis::connect(&cfg(&other.ca_path), "t")
        .await
        .expect("client");
    assert!(!r.is_up(), "a server signed by another CA must be refused");
}
