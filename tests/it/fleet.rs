//! The whole fleet on loopback: three gateway processes, one Redis, and a three-node OpenBao
//! Raft cluster as the store (every node in `store.vault.addresses`), the periodic refresh at
//! 300 s so only change notices make writes visible quickly.
//!
//! In order, on one fleet:
//! 1. a mapping written through replica 1 is served by replicas 2 and 3 within a second;
//! 2. an OAuth1-signed admin request replayed on another replica is refused;
//! 3. one client's requests spread over the three replicas: the per-IP limit holds fleet-wide
//!    (at most 10 % over in any whole window);
//! 4. Redis killed and restarted under steady mapped traffic: no failed request, fallback and
//!    recovery visible in every replica's metrics;
//! 5. the Vault leader killed under steady mapped traffic: no failed request, and an admin write
//!    succeeds again after the re-election.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mtls_gateway::dev::certgen;
use serde_json::json;

use crate::bao::BaoCluster;
use crate::common::*;
use crate::redis::RedisServer;
use crate::shared_state::{
    add_mapping, sign, signed_get, wait_shared_up, write_to_served, JWT_SECRET,
};

/// Requests through the three replicas in turn, one every `every`, until `stop`: the statuses
/// that were not 200 (each with the replica's index).
async fn steady(
    gws: Vec<std::net::SocketAddr>,
    url: String,
    every: Duration,
    stop: Arc<AtomicBool>,
    failed: Arc<Mutex<Vec<String>>>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
) {
    let clients: Vec<reqwest::Client> = gws
        .iter()
        .map(|p| {
            reqwest::Client::builder()
                .proxy(reqwest::Proxy::http(format!("http://{p}")).expect("proxy"))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client")
        })
        .collect();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let r = clients[i % clients.len()].get(&url).send().await;
        sent.fetch_add(1, Ordering::Relaxed);
        let bad = match r {
            Ok(r) if r.status() == 200 => None,
            Ok(r) => Some(format!(
                "replica {}: status {}",
                i % clients.len() + 1,
                r.status()
            )),
            Err(e) => Some(format!("replica {}: {e}", i % clients.len() + 1)),
        };
        if let Some(b) = bad {
            failed.lock().expect("lock").push(b);
        }
        i += 1;
        tokio::time::sleep(every).await;
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<Mutex<Vec<String>>>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// About 5 requests a second in all: below the per-IP limit of 10 (every request comes
    /// from 127.0.0.1), so any refusal is a failure.
    fn start(gws: &[Gw], url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(steady(
            gws.iter().map(|g| g.proxy).collect(),
            url,
            Duration::from_millis(200),
            stop.clone(),
            failed.clone(),
            sent.clone(),
        ));
        Load {
            stop,
            failed,
            sent,
            task,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task");
        let failed = std::mem::take(&mut *self.failed.lock().expect("lock"));
        (self.sent.load(Ordering::Relaxed), failed)
    }
}

fn gateway_yaml(
    cluster: &BaoCluster,
    dir: &std::path::Path,
    redis_url: &str,
    extra: &str,
) -> String {
    std::fs::write(dir.join("token"), &cluster.root_token).expect("token file");
    let addresses = cluster
        .addrs()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "store:\n  kind: vault\n  vault:\n    addresses: [{addresses}]\n    kv_version: 2\n    mount: secret\n    prefix: mtls-gateway\n    request_timeout_ms: 2000\n    auth:\n      method: token\n      token_file: \"{}\"\nrefresh:\n  interval_secs: 300\n  retry_min_ms: 200\n  retry_max_secs: 1\nauth:\n  oauth1:\n    keys:\n      - key: key-a\n        secret: secret-a\n        accounts: [\"acc\"]\n  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: test\n    audience: mtls\nredis:\n  url: \"{redis_url}\"\n  key_prefix: \"fleet{}:\"\n  retry_secs: 1\n{extra}",
        dir.join("token").display(),
        std::process::id(),
    )
}

#[tokio::test]
async fn fleet_three_replicas_redis_and_a_vault_cluster_share_limits_nonces_changes_and_ride_failures(
) {
    let mut cluster = BaoCluster::start(3).await;
    let mut redis = RedisServer::start();
    let pki = Pki::new();
    let echo = pki.echo();
    let port = echo.addr.port();

    // Certificate 1 of account `acc`, written in Vault as an operator would.
    let issued = pki.client("fleet-a");
    let p12 = certgen::to_p12(&issued.cert, &issued.key, &[], "s3cret").expect("p12");
    let doc = json!({
        "id": 1, "accountId": "acc", "name": "cert-1", "displayName": "cert-1", "deleted": false,
        "p12": base64::engine::general_purpose::STANDARD.encode(p12), "password": "s3cret",
    });
    let leader = cluster.wait_leader().await;
    let (s, v) = cluster
        .req(
            leader,
            "POST",
            "secret/data/mtls-gateway/accounts/acc/certificates/1",
            Some(&json!({ "data": doc })),
        )
        .await;
    assert!((200..300).contains(&s), "seed: {s} {v}");

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let gws: Vec<Gw> = dirs
        .iter()
        .map(|d| {
            Gw::start(
                d.path(),
                &pki.ca_path,
                &gateway_yaml(&cluster, d.path(), &redis.url(), ""),
            )
        })
        .collect();
    wait_shared_up(&gws);

    // 1. Changes reach every replica within a second.
    let mut times = Vec::new();
    for (i, to) in [&gws[1], &gws[2], &gws[1], &gws[2]].into_iter().enumerate() {
        times.push(
            write_to_served(&gws[0], to, port, &format!("w{i}"), Duration::from_secs(10)).await,
        );
    }
    times.sort();
    eprintln!("fleet: write-to-served on replicas 2 and 3: {times:?}");
    assert!(times[times.len() - 1] < Duration::from_secs(1), "{times:?}");

    // 2. A nonce seen by one replica is refused by the others.
    let auth = sign(&gws[0]);
    let (first, _) = signed_get(&auth, &gws[0], &gws[0]);
    assert_eq!(first, 200);
    for other in [&gws[1], &gws[2]] {
        let (again, www) = signed_get(&auth, &gws[0], other);
        assert_eq!(
            again, 401,
            "a replayed nonce is refused on another replica ({www})"
        );
    }

    // A mapping for the traffic of the fault phases.
    add_mapping(&gws[0], port, "load").await;
    let url = format!("http://localhost:{port}/load/x");
    for gw in &gws {
        let c = proxied_client(gw);
        wait_for("mapping served", Duration::from_secs(5), || {
            block(c.get(&url).send())
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        });
    }

    // 3. One client (127.0.0.1) at about 30 requests a second, spread over the three
    //    replicas in turn: admitted per one-second window, fleet-wide.
    let clients: Vec<reqwest::Client> = gws.iter().map(proxied_client).collect();
    let mut admitted: std::collections::BTreeMap<i64, u32> = Default::default();
    let mut refused = 0u32;
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < Duration::from_secs(4) {
        let window = mtls_gateway::admin::unix_now();
        let r = clients[i % 3].get(&url).send().await.expect("send");
        match r.status().as_u16() {
            200 => *admitted.entry(window).or_default() += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    // The first and last windows are partial.
    let full: Vec<u32> = admitted
        .values()
        .copied()
        .skip(1)
        .take(admitted.len().saturating_sub(2))
        .collect();
    eprintln!("fleet: admitted per window {admitted:?}, refused {refused}");
    assert!(!full.is_empty() && refused > 0, "{admitted:?}");
    assert!(
        full.iter().all(|n| *n <= 11),
        "more than 10 % over the limit of 10 in a window: {admitted:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // 4. Redis killed and restarted under load.
    let load = Load::start(&gws, url.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    for gw in &gws {
        wait_for("fallback visible", Duration::from_secs(10), || {
            (gw.metric("mtls_gateway_shared_state_up") == 0.0).then_some(())
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    for gw in &gws {
        wait_for("recovery visible", Duration::from_secs(15), || {
            (gw.metric("mtls_gateway_shared_state_up") == 1.0).then_some(())
        });
    }
    let (sent, failed) = load.finish().await;
    eprintln!("fleet: {sent} mapped requests through the Redis outage");
    assert!(
        failed.is_empty(),
        "failed mapped requests during the Redis outage: {failed:?}"
    );
    assert!(sent >= 10, "the load ran ({sent})");

    // 5. The Vault leader killed under load; an admin write succeeds again after re-election.
    let load = Load::start(&gws, url.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = cluster.wait_leader().await;
    let killed = Instant::now();
    cluster.kill(leader);
    let mut i = 0;
    let write_ok = loop {
        let body = json!([{
            "certificationId": "1", "serviceName": "TEST_SERVICE",
            "url": format!("https://localhost:{port}/after{i}/*"), "name": format!("m-after{i}"),
        }]);
        let r = client()
            .post(format!(
                "http://{}/api/account/acc/configuration/ac-common/mtls",
                gws[0].admin
            ))
            .header("authorization", crate::shared_state::bearer())
            .json(&body)
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no admin write succeeded within 30 s of the leader's death"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sent, failed) = load.finish().await;
    eprintln!("fleet: leader killed; first admin write after {write_ok:?}; {sent} mapped requests");
    assert!(
        failed.is_empty(),
        "failed mapped requests during the leader change: {failed:?}"
    );
}

/// The same sharing on a three-master Redis Cluster (OpenBao single node as the store): changes
/// served by the other replicas within a second, a replayed nonce refused, and the fleet-wide
/// limit (its counters hash-tagged by window, so each claim's keys share one slot).
#[tokio::test]
async fn fleet_three_replicas_on_a_redis_cluster_share_changes_nonces_and_the_limit() {
    let bao = crate::bao::Bao::dev().await;
    let redis = crate::redis::RedisCluster::start(3);
    let pki = Pki::new();
    let echo = pki.echo();
    let port = echo.addr.port();
    let issued = pki.client("fleet-c");
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
    let urls = redis
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let gws: Vec<Gw> = dirs
        .iter()
        .map(|d| {
            std::fs::write(d.path().join("token"), &bao.root_token).expect("token");
            let yaml = format!(
                "store:\n  kind: vault\n  vault:\n    address: \"{}\"\n    kv_version: 2\n    mount: secret\n    prefix: mtls-gateway\n    request_timeout_ms: 5000\n    auth:\n      method: token\n      token_file: \"{}\"\nrefresh:\n  interval_secs: 300\nauth:\n  oauth1:\n    keys:\n      - key: key-a\n        secret: secret-a\n        accounts: [\"acc\"]\n  jwt:\n    algorithm: HS256\n    secret: \"{JWT_SECRET}\"\n    issuer: test\n    audience: mtls\nredis:\n  urls: [{urls}]\n  cluster: true\n  key_prefix: \"fleetc{}:\"\n  retry_secs: 1\n",
                bao.addr,
                d.path().join("token").display(),
                std::process::id()
            );
            Gw::start(d.path(), &pki.ca_path, &yaml)
        })
        .collect();
    wait_shared_up(&gws);
    let mut times = Vec::new();
    for (i, to) in [&gws[1], &gws[2]].into_iter().enumerate() {
        times.push(
            write_to_served(&gws[0], to, port, &format!("c{i}"), Duration::from_secs(10)).await,
        );
    }
    eprintln!("fleet (cluster): write-to-served on replicas 2 and 3: {times:?}");
    assert!(
        times.iter().all(|t| *t < Duration::from_secs(1)),
        "{times:?}"
    );
    let auth = sign(&gws[0]);
    assert_eq!(signed_get(&auth, &gws[0], &gws[0]).0, 200);
    assert_eq!(signed_get(&auth, &gws[0], &gws[2]).0, 401, "replay refused");

    let url = format!("http://localhost:{port}/c0/x");
    let clients: Vec<reqwest::Client> = gws.iter().map(proxied_client).collect();
    let mut admitted: std::collections::BTreeMap<i64, u32> = Default::default();
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < Duration::from_secs(4) {
        let window = mtls_gateway::admin::unix_now();
        let r = clients[i % 3].get(&url).send().await.expect("send");
        match r.status().as_u16() {
            200 => *admitted.entry(window).or_default() += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    eprintln!("fleet (cluster): admitted per window {admitted:?}");
    let full: Vec<u32> = admitted
        .values()
        .copied()
        .skip(1)
        .take(admitted.len().saturating_sub(2))
        .collect();
    assert!(!full.is_empty(), "{admitted:?}");
    assert!(full.iter().all(|n| *n <= 11), "{admitted:?}");
    for gw in &gws {
        assert_eq!(
            gw.metric("mtls_gateway_rate_limit_fleet_mode"),
            1.0,
            "{}",
            gw.logs()
        );
    }
}
