//! The fleet-wide rate limit over a real `redis-server` (started here on a free loopback port):
//! three limiter instances (three replicas) taking one client's requests in turn hold the limit
//! within the stated bound; with Redis killed they fall back to the local limit within the
//! budget (gauge and mode); with Redis back they recover by themselves.

use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mtls_gateway::config::{RateLimitConfig, RateLimitFleetConfig};
use mtls_gateway::ratelimit::fleet::RedisCounter;
use mtls_gateway::ratelimit::RateLimiter;

/// A `redis-server` on 127.0.0.1:`port`, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start(port: Option<u16>) -> RedisServer {
        let port = port.unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port")
        });
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install -y redis-server)");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(5), "redis-server not up");
            std::thread::sleep(Duration::from_millis(10));
        }
        RedisServer {
            port,
            child: Some(child),
        }
    }

    /// SIGSTOP (`false`) or SIGCONT (`true`): a hung server, then a live one again.
    fn run(&self, on: bool) {
        if let Some(c) = &self.child {
            let sig = if on { "-CONT" } else { "-STOP" };
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "kill {sig}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cfg() -> RateLimitConfig {
    RateLimitConfig {
        enabled: true,
        requests_per_second: 10,
        trusted_proxies: vec![],
        forwarded_header: "x-forwarded-for".into(),
        expected_clients: 1024,
        fleet: RateLimitFleetConfig {
            retry: Duration::from_millis(200),
            ..RateLimitFleetConfig::defaults(10, 3)
        },
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sleeps until 5 ms into the next whole second.
async fn next_window() {
    let ms = now_ms() % 1000;
    tokio::time::sleep(Duration::from_millis(1005 - ms)).await;
}

/// 30 requests of `client` in one window (3 x the limit), round-robin over `replicas`: admitted.
async fn round_robin_window(replicas: &[RateLimiter], client: &IpAddr) -> usize {
    next_window().await;
    let w = now_ms() / 1000;
    let mut admitted = 0;
    for i in 0..30 {
        if now_ms() / 1000 != w {
            break;
        }
        if replicas[i % replicas.len()].allow(client) {
            admitted += 1;
        }
        tokio::time::sleep(Duration::from_millis(32)).await;
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_round_robin_over_redis_hold_the_limit_fall_back_and_recover() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut redis = RedisServer::start(None);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port)).expect("url");
    let manager_cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)))
        .set_max_delay(Duration::from_millis(100));
    let cfg = cfg();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let conn = client
            .get_connection_manager_with_config(manager_cfg.clone())
            .await
            .expect("redis connection");
        replicas.push(RateLimiter::with_fleet(
            &cfg,
            Arc::new(RedisCounter::new(conn, "it-fleet:")),
        ));
    }
    let ip: IpAddr = [192, 0, 2, 10].into();

    // 1. The bound: at most 10 % over the limit per window (stated: at most the limit).
    for window in 0..2 {
        let admitted = round_robin_window(&replicas, &ip).await;
        eprintln!("fleet window {window}: {admitted} admitted of 30");
        assert!(admitted <= 11, "window {window}: {admitted} admitted");
        assert!(admitted >= 7, "window {window}: {admitted} admitted");
    }

    // 2. Redis killed: every replica falls back to its local limit, within the budget once a
    //    claim fails (a request of the hot client every 10 ms keeps claiming).
    next_window().await;
    redis.kill();
    let killed = Instant::now();
    let mut i = 0usize;
    while replicas.iter().any(|r| r.fleet_mode() == Some(true)) {
        assert!(killed.elapsed() < Duration::from_secs(3), "no fallback");
        replicas[i % 3].allow(&ip);
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fallback = killed.elapsed();
    eprintln!("fallback after {fallback:?}");
    assert!(fallback < Duration::from_millis(1500));
    assert_eq!(mtls_gateway::metrics::RATE_LIMIT_FLEET_MODE.get(), 0);
    let local = round_robin_window(&replicas, &ip).await;
    eprintln!("local fallback window: {local} admitted of 30");
    assert!(local > 11, "local limits apply per replica: {local}");

    // 3. Redis back on the same port: recovery by itself, then the fleet bound again.
    let redis = RedisServer::start(Some(redis.port));
    let restarted = Instant::now();
    while replicas.iter().any(|r| r.fleet_mode() != Some(true)) {
        assert!(restarted.elapsed() < Duration::from_secs(5), "no recovery");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("fleet mode again after {:?}", restarted.elapsed());
    assert_eq!(mtls_gateway::metrics::RATE_LIMIT_FLEET_MODE.get(), 1);
    let admitted = round_robin_window(&replicas, &ip).await;
    eprintln!("fleet window after recovery: {admitted} admitted of 30");
    assert!(admitted <= 11, "after recovery: {admitted} admitted");

    // 4. Redis hung (SIGSTOP): no answer within the 50 ms budget is a failure too; requests
    //    never wait; SIGCONT: recovery.
    redis.run(false);
    let stopped = Instant::now();
    let mut slowest = Duration::ZERO;
    while replicas.iter().any(|r| r.fleet_mode() == Some(true)) {
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "no fallback from a hung Redis"
        );
        let t = Instant::now();
        replicas[i % 3].allow(&ip);
        slowest = slowest.max(t.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "hung Redis: fallback after {:?}, slowest allow() {slowest:?}",
        stopped.elapsed()
    );
    assert!(
        slowest < Duration::from_millis(20),
        "allow() waited {slowest:?}"
    );
    redis.run(true);
    let resumed = Instant::now();
    while replicas.iter().any(|r| r.fleet_mode() != Some(true)) {
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "no recovery after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("fleet mode again {:?} after SIGCONT", resumed.elapsed());
}
