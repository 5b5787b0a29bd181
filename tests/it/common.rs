//! Shared harness: a PKI made at test time, a real mTLS echo target, the real gateway binary
//! started as a child process with a generated config on ephemeral loopback ports, and a file
//! store seeded the way the admin API would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boring::hash::MessageDigest;
use mtls_gateway::dev::certgen::{self, Issued, Leaf};
use mtls_gateway::dev::echo::{EchoConfig, EchoServer};
use mtls_gateway::store::file::FileStore;
use mtls_gateway::store::{
    CertificateMeta, CertificateSecret, Mapping, MappingDocument, Store, StoredCertificate,
};

/// A loopback port that was free just now, never the same twice in this process (two
/// `bind(0)` calls in a row can return the same port, which once gave a gateway one port for
/// its proxy and ops listeners).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Poll `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sha256_hex(cert: &boring::x509::X509) -> String {
    hex::encode(cert.digest(MessageDigest::sha256()).expect("digest"))
}

/// A CA, a server certificate for `localhost`, and helpers to issue client certificates.
pub struct Pki {
    pub ca: Issued,
    pub server: Issued,
    pub dir: tempfile::TempDir,
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = certgen::new_ca("test CA").expect("ca");
        let server = certgen::issue(
            &ca,
            &Leaf::server("localhost", &["localhost"], &[[127, 0, 0, 1].into()]),
        )
        .expect("server cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, certgen::to_pem(&ca.cert)).expect("write ca");
        Pki {
            ca,
            server,
            dir,
            ca_path,
        }
    }

    pub fn client(&self, cn: &str) -> Issued {
        certgen::issue(&self.ca, &Leaf::client(cn)).expect("client cert")
    }

    pub fn client_with_serial(&self, cn: &str, serial: u32) -> Issued {
        let mut leaf = Leaf::client(cn);
        leaf.serial = Some(serial);
        certgen::issue(&self.ca, &leaf).expect("client cert")
    }

    /// An mTLS echo target that demands a client certificate from this CA.
    pub fn echo(&self) -> EchoServer {
        mtls_gateway::dev::echo::spawn_on_thread(EchoConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert: self.server.cert.clone(),
            key: self.server.key.clone(),
            chain: vec![],
            client_ca: vec![self.ca.cert.clone()],
            require_client_cert: true,
        })
        .expect("echo server")
    }

    /// A TLS target that does not ask for a client certificate.
    pub fn echo_plain(&self) -> EchoServer {
        mtls_gateway::dev::echo::spawn_on_thread(EchoConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert: self.server.cert.clone(),
            key: self.server.key.clone(),
            chain: vec![],
            client_ca: vec![],
            require_client_cert: false,
        })
        .expect("echo server")
    }
}

/// Run a future to completion on a fresh runtime in its own thread (callable from sync tests and
/// from inside `#[tokio::test]` alike).
pub fn block<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f)
        })
        .join()
        .expect("seed thread")
    })
}

/// A file store in a temp dir, seeded directly (what the admin API does).
pub struct Seed {
    pub dir: PathBuf,
    pub store: FileStore,
}

impl Seed {
    pub fn new(dir: &Path) -> Seed {
        let dir = dir.join("store");
        Seed {
            store: FileStore::open(dir.clone()).expect("file store"),
            dir,
        }
    }

    pub fn cert(&self, account: &str, id: u64, issued: &Issued) {
        let p12 = certgen::to_p12(&issued.cert, &issued.key, &[], "pw").expect("p12");
        self.raw_cert(account, id, p12, "pw");
    }

    pub fn raw_cert(&self, account: &str, id: u64, p12: Vec<u8>, password: &str) {
        block(self.store.put_certificate(&StoredCertificate {
            meta: CertificateMeta {
                id,
                account_id: account.into(),
                name: format!("cert-{id}"),
                display_name: format!("cert-{id}"),
                deleted: false,
                not_after: None,
                updated_at: 0,
            },
            secret: CertificateSecret {
                p12,
                password: password.into(),
            },
            lifecycle: None,
        }))
        .expect("put certificate");
    }

    /// Replace the account's mappings: (id, service, url, certificate id).
    pub fn mappings(&self, account: &str, maps: &[(u64, &str, &str, u64)]) {
        let doc = MappingDocument {
            mappings: maps
                .iter()
                .map(|(id, service, url, cert)| Mapping {
                    id: *id,
                    account_id: account.into(),
                    name: format!("m{id}"),
                    service_name: service.to_string(),
                    url: url.to_string(),
                    certificate_id: *cert,
                    enabled: true,
                    deleted: false,
                    cutover_check: None,
                })
                .collect(),
        };
        block(self.store.put_mappings(account, &doc, None)).expect("put mappings");
    }
}

/// The proxy section test gateways get when `extra` has none; a test that sets proxy keys of its
/// own starts from it (`{proxy}` is the gateway's proxy port).
pub const PROXY_DEFAULTS: &str = "proxy:\n  listen: [\"127.0.0.1:{proxy}\"]\n  default_account: acc\n  default_service: TEST_SERVICE\n";

/// The gateway binary running with a generated config.
pub struct Gw {
    pub child: Option<Child>,
    pub proxy: SocketAddr,
    pub ops: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Gw {
    /// Write a config (store in `dir/store`, the PKI's CA trusted) with `extra` YAML appended
    /// (sections given there replace the defaults below) and start the binary.
    ///
    /// `free_port` releases the port it found before the gateway binds it, so a test running
    /// at the same time can take it first; the gateway then fails to bind, and requests meant
    /// for it reach the other test's server. So once ready, every port of this config that is
    /// listening must be this process's (from `/proc`), else it starts again on new ports.
    pub fn start(dir: &Path, ca_path: &Path, extra: &str) -> Gw {
        Gw::start_with(dir, ca_path, extra, None)
    }

    /// [`Gw::start`], the binary started under a soft open-file limit of `soft_nofile` if given.
    pub fn start_with(dir: &Path, ca_path: &Path, extra: &str, soft_nofile: Option<u64>) -> Gw {
        for attempt in 1..=3 {
            let mut gw = Gw::spawn_with(dir, ca_path, extra, soft_nofile);
            if !gw.wait_ready_or_exit() {
                // Another test took one of the ports between free_port() and the bind.
                let logs = gw.logs();
                assert!(logs.contains("cannot listen on"), "gateway exited:\n{logs}");
                eprintln!("attempt {attempt}: a port was taken ({logs}); new ports");
                continue;
            }
            let yaml = std::fs::read_to_string(&gw.config).unwrap_or_default();
            let foreign: Vec<u16> = [gw.proxy.port(), gw.ops.port(), gw.admin.port()]
                .into_iter()
                .filter(|p| names_port(&yaml, *p) && !listened_by(gw.pid(), *p))
                .collect();
            if foreign.is_empty() {
                return gw;
            }
            eprintln!("attempt {attempt}: ports {foreign:?} are another process's; new ports");
        }
        panic!("the gateway could not get ports of its own in 3 attempts");
    }

    pub fn spawn(dir: &Path, ca_path: &Path, extra: &str) -> Gw {
        Gw::spawn_with(dir, ca_path, extra, None)
    }

    fn spawn_with(dir: &Path, ca_path: &Path, extra: &str, soft_nofile: Option<u64>) -> Gw {
        let (proxy, ops, admin) = (free_port(), free_port(), free_port());
        let has = |section: &str| extra.lines().any(|l| l.starts_with(&format!("{section}:")));
        let mut yaml = String::new();
        if !has("proxy") {
            yaml.push_str(&PROXY_DEFAULTS.replace("{proxy}", &proxy.to_string()));
        }
        if !has("admin") {
            yaml.push_str(&format!("admin:\n  listen: \"127.0.0.1:{admin}\"\n"));
        }
        if !has("ops") {
            yaml.push_str(&format!("ops:\n  listen: \"127.0.0.1:{ops}\"\n"));
        }
        if !has("store") {
            yaml.push_str("store:\n  kind: file\n  path: store\n");
        }
        if !has("upstream") {
            yaml.push_str(&format!(
                "upstream:\n  ca_files: [\"{}\"]\n  connect_timeout_ms: 1000\n",
                ca_path.display()
            ));
        }
        if !has("refresh") {
            yaml.push_str("refresh:\n  interval_secs: 1\n");
        }
        if !has("shutdown") {
            yaml.push_str("shutdown:\n  grace_period_secs: 10\n");
        }
        // A config that puts the proxy on IPv6 loopback is reached there.
        let proxy_ip: std::net::IpAddr = if extra.contains("[::1]:{proxy}") {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        let extra = extra
            .replace("{proxy}", &proxy.to_string())
            .replace("{ops}", &ops.to_string())
            .replace("{admin}", &admin.to_string());
        yaml.push_str(&extra);
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.join("gateway.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let bin = env!("CARGO_BIN_EXE_mtls-gateway");
        let mut cmd = match soft_nofile {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            // Temporary files of this gateway stay in the test's own directory.
            .env("TMPDIR", dir)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start gateway");
        Gw {
            child: Some(child),
            proxy: (proxy_ip, proxy).into(),
            ops: ([127, 0, 0, 1], ops).into(),
            admin: ([127, 0, 0, 1], admin).into(),
            config,
            log,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until ready; false if the process exited first.
    fn wait_ready_or_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return false;
                }
            }
            if let Ok(r) = blocking_get(&format!("http://{}/ready", self.ops)) {
                if r.0 == 200 && std::net::TcpStream::connect(self.proxy).is_ok() {
                    return true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 30 s; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn metrics(&self) -> String {
        blocking_get(&format!("http://{}/metrics", self.ops))
            .map(|r| String::from_utf8_lossy(&r.2).to_string())
            .unwrap_or_default()
    }

    /// Value of a metric line (exact series text before the value), or 0.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Wait for exit; returns how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Whether the config text has `:port` not followed by another digit.
fn names_port(yaml: &str, port: u16) -> bool {
    let pat = format!(":{port}");
    yaml.match_indices(&pat).any(|(i, _)| {
        !yaml[i + pat.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Whether `port` on loopback is not listening, or listening on a socket of process `pid`.
fn listened_by(pid: u32, port: u16) -> bool {
    let ours: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex, st 0A is LISTEN, inode is the tenth column.
            let port_hex = f.get(1).and_then(|a| a.rsplit(':').next());
            if f.get(3) == Some(&"0A")
                && port_hex.and_then(|h| u16::from_str_radix(h, 16).ok()) == Some(port)
            {
                if let Some(inode) = f.get(9) {
                    listening.push(inode.to_string());
                }
            }
        }
    }
    listening.is_empty() || listening.iter().any(|i| ours.contains(i))
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Status, lower-cased headers, body.
pub type Resp = mtls_gateway::dev::demo::RawResponse;

/// GET without a proxy: (status, headers, body).
pub fn blocking_get(url: &str) -> Result<Resp, String> {
    let rest = url.strip_prefix("http://").ok_or("http only")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority.parse().map_err(|e| format!("{e}"))?;
    raw_request(
        addr,
        &format!(
            "GET {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n",
            if path.is_empty() { "/" } else { path }
        ),
    )
}

/// Send raw bytes, read to EOF, parse (status, headers, body). Chunked bodies are de-chunked.
pub fn raw_request(addr: SocketAddr, req: &str) -> Result<Resp, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    mtls_gateway::dev::demo::parse_response(&buf).map_err(|e| e.to_string())
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An async HTTP client for the tests (plain HTTP to the gateway).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A client that uses the gateway as its HTTP proxy (transparent mode, absolute-form).
pub fn proxied_client(gw: &Gw) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", gw.proxy)).expect("proxy"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The common set-up: a PKI, an mTLS echo target, one client certificate (id 1) and one wildcard
/// mapping `acc / TEST_SERVICE / https://localhost:PORT/*` to it, in a file store in `dir`.
pub struct OneMapping {
    pub pki: Pki,
    pub echo: EchoServer,
    pub cert: Issued,
    pub dir: tempfile::TempDir,
    pub seed: Seed,
    pub port: u16,
}

impl OneMapping {
    pub fn new(cn: &str) -> OneMapping {
        let pki = Pki::new();
        let echo = pki.echo();
        let cert = pki.client(cn);
        let dir = tempfile::tempdir().expect("tmp");
        let seed = Seed::new(dir.path());
        seed.cert("acc", 1, &cert);
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
        OneMapping {
            pki,
            echo,
            cert,
            dir,
            seed,
            port,
        }
    }
}

#[test]
fn the_port_ownership_check_tells_this_process_from_another() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    assert!(listened_by(std::process::id(), port), "ours");
    // pid 1 (init) does not hold this test's listener.
    assert!(!listened_by(1, port), "not init's");
    drop(l);
    assert!(listened_by(1, port), "nobody listens any more");
    assert!(names_port("listen: \"127.0.0.1:8080\"\n", 8080));
    assert!(!names_port("listen: \"127.0.0.1:80801\"\n", 8080));
}

/// The open-file limits (soft, hard) in a `/proc/<pid>/limits` file.
pub fn nofile_limits(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(n.len() >= 2, "{line}");
    (n[0], n[1])
}
