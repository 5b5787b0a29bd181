//! RustyVault (`rvault`, crate `rusty_vault` 0.2.1) as a real Vault-API server for tests.
//!
//! Each [`RVault`] is its own server: a temp dir with an HCL config and file storage, a port the
//! OS picked, `PUT /v1/sys/init` (1 share) and unseal. `secret/` is premounted as KV v1. It is
//! killed on drop. Readiness is polled with a deadline; there are no fixed sleeps.
//!
//! The binary is found through `$RVAULT_BIN`, `PATH`, or `~/.cargo/bin/rvault`. When it is
//! missing the test fails and says how to install it, unless `MTLS_SKIP_VAULT_TESTS=1` (then
//! [`RVault::start`] returns `None` and the test returns early, saying so on stderr).
//!
//! RustyVault speaks Vault's HTTP API for token auth and KV v1; it has no KV v2 paths, no working
//! AppRole, no renew-self, and answers errors as `{"error": ".."}` rather than Vault's
//! `{"errors": [..]}`.

#![allow(dead_code)] // not every test module uses every helper

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const START_DEADLINE: Duration = Duration::from_secs(30);

pub struct RVault {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    pub root_token: String,
    unseal_key: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    http: reqwest::Client,
}

/// Where `rvault` is, if installed.
pub fn find_rvault() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RVAULT_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("rvault");
            if c.is_file() {
                return Some(c);
            }
        }
    }
    let home = std::env::var_os("HOME")?;
    let c = Path::new(&home).join(".cargo/bin/rvault");
    c.is_file().then_some(c)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl RVault {
    /// Starts, initializes and unseals a fresh server.
    pub async fn start() -> Option<RVault> {
        let Some(bin) = find_rvault() else {
            if std::env::var("MTLS_SKIP_VAULT_TESTS").as_deref() == Ok("1") {
                eprintln!("SKIPPED: rvault not installed and MTLS_SKIP_VAULT_TESTS=1");
                return None;
            }
            panic!(
                "rvault (RustyVault) is not installed: the Vault tests need it. Install it with \
                 `cargo install rusty_vault --version 0.2.1 --locked` (about 8 minutes), point \
                 $RVAULT_BIN at the binary, or set MTLS_SKIP_VAULT_TESTS=1 to skip these tests"
            );
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let mut v = RVault {
            addr: String::new(),
            root_token: String::new(),
            unseal_key: String::new(),
            child: None,
            dir,
            port: 0,
            bin,
            http,
        };
        // A port picked by the OS can be taken by someone else before rvault binds it: retry.
        let mut last_err = String::new();
        for _ in 0..3 {
            v.port = free_port();
            v.addr = format!("http://127.0.0.1:{}", v.port);
            match v.spawn_and_wait().await {
                Ok(()) => {
                    v.init_and_unseal().await;
                    return Some(v);
                }
                Err(e) => last_err = e,
            }
        }
        panic!("rvault did not start: {last_err}");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn write_config(&self) -> PathBuf {
        let cfg = self.dir.path().join("rvault.hcl");
        // RustyVault's HCL parser wants one attribute per line.
        let text = format!(
            "storage \"file\" {{\n  path = \"{}\"\n}}\n\nlistener \"tcp\" {{\n  address = \
             \"127.0.0.1:{}\"\n  tls_disable = true\n}}\n\napi_addr = \"{}\"\nlog_level = \
             \"warn\"\n",
            self.data_dir().display(),
            self.port,
            self.addr
        );
        std::fs::write(&cfg, text).expect("write rvault config");
        cfg
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("rvault.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts the process and waits until it answers HTTP (sealed or not).
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let cfg = self.write_config();
        let log = std::fs::File::create(self.dir.path().join("rvault.log")).expect("log file");
        let log2 = log.try_clone().expect("log file clone");
        let child = Command::new(&self.bin)
            .arg("server")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("rvault exited with {status}:\n{}", self.log_tail()));
                }
            }
            let answered = self
                .http
                .get(format!("{}/v1/sys/seal-status", self.addr))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok();
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "rvault did not answer on {} within {START_DEADLINE:?}:\n{}",
                    self.addr,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn init_and_unseal(&mut self) {
        let r: Value = self
            .http
            .put(format!("{}/v1/sys/init", self.addr))
            .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await
            .expect("sys/init")
            .json()
            .await
            .expect("sys/init json");
        self.unseal_key = r["keys"][0].as_str().expect("init keys[0]").to_owned();
        self.root_token = r["root_token"]
            .as_str()
            .expect("init root_token")
            .to_owned();
        self.unseal().await;
    }

    /// Unseals with the key from init and waits until the server says it is unsealed.
    pub async fn unseal(&self) {
        let r: Value = self
            .http
            .put(format!("{}/v1/sys/unseal", self.addr))
            .json(&json!({"key": self.unseal_key}))
            .send()
            .await
            .expect("sys/unseal")
            .json()
            .await
            .expect("sys/unseal json");
        assert_eq!(r["sealed"], json!(false), "unseal answered {r}");
    }

    pub async fn seal(&self) {
        let s = self
            .http
            .put(format!("{}/v1/sys/seal", self.addr))
            .header("X-Vault-Token", &self.root_token)
            .send()
            .await
            .expect("sys/seal")
            .status();
        assert!(s.is_success(), "sys/seal answered {s}");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server (like a crash or an outage); storage stays.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same port and storage, and unseals it.
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        // The port is ours, but the kernel may need a moment to release it.
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => panic!("rvault restart failed: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.unseal().await;
    }

    /// Raw API call with the root token, as an operator would with `vault` / curl.
    pub async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root_token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("rvault request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("rvault body");
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    /// `vault kv put secret/...` (KV v1): `path` is after `/v1/`, e.g. `secret/a/b`.
    pub async fn kv_put(&self, path: &str, data: &Value) {
        let (s, v) = self.api("POST", path, Some(data)).await;
        assert!((200..300).contains(&s), "write {path}: {s} {v}");
    }

    /// `vault kv get` (KV v1): the data, or `None` on 404.
    pub async fn kv_get(&self, path: &str) -> Option<Value> {
        let (s, v) = self.api("GET", path, None).await;
        match s {
            404 => None,
            200 => Some(v["data"].clone()),
            _ => panic!("read {path}: {s} {v}"),
        }
    }

    pub async fn kv_delete(&self, path: &str) {
        let (s, v) = self.api("DELETE", path, None).await;
        assert!((200..300).contains(&s), "delete {path}: {s} {v}");
    }

    /// Mounts a KV v1 engine at `name/`.
    pub async fn mount_kv(&self, name: &str) {
        let (s, v) = self
            .api(
                "POST",
                &format!("sys/mounts/{name}"),
                Some(&json!({"type": "kv"})),
            )
            .await;
        assert!((200..300).contains(&s), "mount {name}: {s} {v}");
    }

    /// A child token of the root token (RustyVault does not enforce policies).
    pub async fn create_token(&self) -> String {
        let (s, v) = self
            .api(
                "POST",
                "auth/token/create",
                Some(&json!({"policies": ["default"], "ttl": "1h"})),
            )
            .await;
        assert_eq!(s, 200, "token create: {v}");
        v["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned()
    }
}

impl Drop for RVault {
    fn drop(&mut self) {
        self.kill();
    }
}
