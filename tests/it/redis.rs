//! Redis for the tests: `redis-server` on loopback with an ephemeral port, nothing persisted,
//! killed on drop; and a three-master Redis Cluster made with `redis-cli --cluster create`.
//! Every wait is bounded and polls (no fixed sleeps).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::free_port;

/// Polls `f` every 20 ms until it is true or `timeout` passes.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// A server on 127.0.0.1 (ephemeral port), `--save '' --appendonly no`, ready (PING).
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with more `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut r = RedisServer {
            port: 0,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // A port found free can be taken before redis binds it: retry on new ports.
        for _ in 0..4 {
            r.port = free_port();
            if r.spawn_and_wait() {
                return r;
            }
        }
        panic!("redis-server did not start:\n{}", r.log());
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process on `self.port`; true once it answers PING (false if it exited).
    fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server redis-tools)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // PONG, or NOAUTH from a server that wants a password: either way it answers.
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && cli(self.port, &["ping"]).is_some_and(|o| o == "PONG" || o.contains("NOAUTH"))
            {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL and wait for the exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (after [`RedisServer::kill`]); panics if it cannot.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The port can linger briefly after the kill.
        while !self.spawn_and_wait() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on {}:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// SIGSTOP: the server keeps its connections but answers nothing (a slow Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    /// `redis-cli` against this server; `None` when it fails.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A Redis Cluster of `n` masters and no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                // The cluster bus port is given explicitly: port + 10000 may be past 65535.
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for s in &nodes {
            wait_until("cluster_state:ok", Duration::from_secs(20), || {
                s.cli(&["cluster", "info"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            });
        }
        RedisCluster { nodes }
    }

    /// The nodes' URLs (the seeds of `redis.urls`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

#[test]
fn redis_fixture_starts_kills_and_restarts_on_the_same_port() {
    let mut r = RedisServer::start();
    assert_eq!(r.cli(&["set", "k", "v"]).as_deref(), Some("OK"));
    let port = r.port;
    r.kill();
    assert!(r.cli(&["ping"]).is_none());
    r.restart();
    assert_eq!(r.port, port);
    assert_eq!(r.cli(&["ping"]).as_deref(), Some("PONG"));
    // Nothing persisted.
    assert_eq!(r.cli(&["get", "k"]).as_deref(), Some(""));
}
