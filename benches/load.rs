//! End-to-end load harness: mtls-gateway against nginx as the equivalent mTLS-originating proxy.
//!
//! Run: `cargo bench --bench load` (builds the release binary and this harness, then runs every
//! scenario and the memory measurement; about 10 minutes on 2 cores). Everything runs on
//! 127.0.0.1 on ephemeral ports, in a temp dir that is removed at the end:
//!
//! - an mTLS upstream: nginx, 1 worker, `ssl_verify_client on`, echoing the client certificate it
//!   saw (`benches/load/upstream.conf`);
//! - the gateway (`target/release/mtls-gateway run`) with a seeded file store, rate limit and
//!   metrics on, transparent mode (`Host: localhost:{upstream}` picks the target);
//! - the peer: nginx with `proxy_ssl_certificate` and an upstream `keepalive` pool, as many
//!   workers as the gateway has threads (`benches/load/peer.conf`); or, with
//!   `LOAD_PEER_BIN=/path/to/mtls-gateway`, a second gateway process running that binary (an
//!   older build, say) with the same generated configuration and store on ports of its own: an
//!   A/B run of two builds, where every ratio and CPU figure is this build against that one;
//! - `wrk` drives both with the same settings, alternating gateway and peer round by round.
//!
//! Environment: `LOAD_THREADS` (2; gateway threads = nginx workers), `LOAD_SECS` (8 per run),
//! `LOAD_WARMUP_SECS` (3 per side; 4x that in the certs1000 scenarios), `LOAD_ROUNDS` (3),
//! `LOAD_CONNECTIONS` (32), `LOAD_SCENARIOS` (comma list of keepalive,64k,close,certs1000,
//! certs1000-pools,ratelimit,upload,http10; default all), `LOAD_SKIP_MEMORY=1`, `LOAD_MEM_CERTS` (10000),
//! `LOAD_MEM_MAPPINGS` (100000), `LOAD_IP_POOL` (10000), `LOAD_NGINX_BURST` (9),
//! `LOAD_GW_POOL_SIZE` (gateway `upstream.keepalive_pool_size`; default: the gateway's default),
//! `LOAD_KEEP_DIR=1` (keep the temp dir), `LOAD_PEER_BIN` (the peer is that mtls-gateway binary,
//! not nginx; the report names it with its `--version`), `LOAD_SCHED` (`separate`: every process in a session,
//! so a scheduling group, of its own, as separate containers would be; `shared`: all in the
//! harness's session; see [`program`]).
//!
//! Output: a markdown table on stdout, also written to `target/load-report.md`, with where the
//! machine's CPU went per request (proxy user and system time, upstream, wrk, idle, steal) and
//! what each scenario's throughput target asks of the gateway's own CPU; the logs of every
//! gateway and nginx process are copied to `target/load-logs/` (both under `$CARGO_TARGET_DIR`
//! when it is set). Method: docs/performance.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use boring::hash::MessageDigest;
use boring::x509::X509;
use mtls_gateway::dev::certgen::{self, Issued, Leaf};
use mtls_gateway::store::file::FileStore;
use mtls_gateway::store::{
    CertificateMeta, CertificateSecret, Mapping, MappingDocument, Store, StoredCertificate,
};

const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_mtls-gateway");
const UPSTREAM_CONF: &str = include_str!("load/upstream.conf");
const PEER_CONF: &str = include_str!("load/peer.conf");
const SPREAD_LUA: &str = include_str!("load/spread.lua");
const XFF_LUA: &str = include_str!("load/xff.lua");
const UPLOAD_LUA: &str = include_str!("load/upload.lua");
const HTTP10_LUA: &str = include_str!("load/http10.lua");
/// Body size of the upload scenario: twice the gateway's read-whole limit.
const UPLOAD_BYTES: usize = 128 * 1024;

const ACCOUNT: &str = "bench";
const SERVICE: &str = "TEST_SERVICE";
/// Distinct certificates (and mappings) of the certs1000 scenarios.
const SPREAD: usize = 1000;
const P12_PASSWORD: &str = "bench";

// ------------------------------------------------------------------------------------ settings

struct Settings {
    threads: usize,
    secs: u64,
    warmup_secs: u64,
    rounds: usize,
    connections: usize,
    scenarios: Vec<String>,
    skip_memory: bool,
    mem_certs: usize,
    mem_mappings: usize,
    ip_pool: usize,
    /// nginx `limit_req ... burst=N nodelay`. 9 matches the gateway's "10 per second" (10 at
    /// once, then 10/s); 0 (no burst) lets one request through per 100 ms per address, which
    /// refuses far more than the gateway does at the same load.
    nginx_burst: u32,
    /// `upstream.keepalive_pool_size` of the gateway (None: its default).
    gw_pool_size: Option<usize>,
    keep_dir: bool,
    /// `LOAD_PEER_BIN`: another mtls-gateway binary to run as the peer instead of nginx.
    peer_bin: Option<PathBuf>,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref().map(str::trim),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

const ALL_SCENARIOS: [&str; 8] = [
    "keepalive",
    "64k",
    "close",
    "certs1000",
    "certs1000-pools",
    "ratelimit",
    "upload",
    "http10",
];

/// Whether every process of a run (upstream, both proxies, wrk) starts in a session of its own
/// (`LOAD_SCHED=separate`, the default) or shares the harness's (`LOAD_SCHED=shared`).
static SEPARATE_SESSIONS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn separate_sessions() -> bool {
    *SEPARATE_SESSIONS.get().unwrap_or(&true)
}

/// A command for `name`, started through `setsid` when processes run in sessions of their own.
///
/// Why it matters: with the kernel's autogroup scheduling (`/proc/sys/kernel/sched_autogroup_enabled`,
/// on by default in Debian), CPU is shared fairly between sessions first, then between the
/// threads of a session. Started from one shell, wrk, the upstream and the proxy under test
/// share one group; a daemonised nginx (`daemon on`, the default) gets a group of its own. The
/// split of two cores between load tool, proxy and upstream, and so the ratio, depends on it
/// (docs/performance.md, "Scheduling groups"). In production each is a container of its own
/// (a cgroup each), which `separate` models. `setsid` does not fork here: a spawned child is
/// not a process-group leader, so the pid stays the program's.
fn program(name: impl AsRef<std::ffi::OsStr>) -> Command {
    if separate_sessions() {
        let mut c = Command::new("setsid");
        c.arg(name);
        c
    } else {
        Command::new(name)
    }
}

impl Settings {
    /// What the report calls the side the gateway is compared with.
    fn peer_name(&self) -> &'static str {
        if self.peer_bin.is_some() {
            "peer"
        } else {
            "nginx"
        }
    }

    fn from_env() -> Result<Settings> {
        let separate = match std::env::var("LOAD_SCHED").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("separate") => true,
            Ok("shared") => false,
            Ok(v) => bail!("LOAD_SCHED: {v:?} is not a mode; use separate or shared"),
        };
        let _ = SEPARATE_SESSIONS.set(separate);
        let scenarios = match std::env::var("LOAD_SCENARIOS") {
            // Only the memory measurement.
            Ok(s) if s.trim() == "none" => Vec::new(),
            Ok(s) if !s.trim().is_empty() => {
                let list: Vec<String> = s
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect();
                for x in &list {
                    if !ALL_SCENARIOS.contains(&x.as_str()) {
                        bail!(
                            "LOAD_SCENARIOS: {x:?} is not a scenario; use {}",
                            ALL_SCENARIOS.join(",")
                        );
                    }
                }
                list
            }
            _ => ALL_SCENARIOS.iter().map(|s| s.to_string()).collect(),
        };
        let s = Settings {
            threads: env_num("LOAD_THREADS", 2)?,
            secs: env_num("LOAD_SECS", 8)?,
            warmup_secs: env_num("LOAD_WARMUP_SECS", 3)?,
            rounds: env_num("LOAD_ROUNDS", 3)?,
            connections: env_num("LOAD_CONNECTIONS", 32)?,
            scenarios,
            skip_memory: env_flag("LOAD_SKIP_MEMORY"),
            mem_certs: env_num("LOAD_MEM_CERTS", 10_000)?,
            mem_mappings: env_num("LOAD_MEM_MAPPINGS", 100_000)?,
            ip_pool: env_num("LOAD_IP_POOL", 10_000)?,
            nginx_burst: env_num("LOAD_NGINX_BURST", 9)?,
            gw_pool_size: match std::env::var("LOAD_GW_POOL_SIZE") {
                Ok(v) if !v.trim().is_empty() => Some(
                    v.trim()
                        .parse()
                        .map_err(|_| anyhow!("LOAD_GW_POOL_SIZE={v:?} is not a number"))?,
                ),
                _ => None,
            },
            keep_dir: env_flag("LOAD_KEEP_DIR"),
            peer_bin: match std::env::var("LOAD_PEER_BIN") {
                Ok(v) if !v.trim().is_empty() => Some(
                    std::fs::canonicalize(v.trim())
                        .with_context(|| format!("LOAD_PEER_BIN={v:?}"))?,
                ),
                _ => None,
            },
        };
        if s.threads == 0 || s.threads > 64 {
            bail!("LOAD_THREADS must be 1..=64");
        }
        if s.secs == 0 || s.rounds == 0 || s.connections == 0 {
            bail!("LOAD_SECS, LOAD_ROUNDS and LOAD_CONNECTIONS must be at least 1");
        }
        if s.mem_certs == 0 || s.ip_pool == 0 {
            bail!("LOAD_MEM_CERTS and LOAD_IP_POOL must be at least 1");
        }
        Ok(s)
    }
}

// ----------------------------------------------------------------------- child processes

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

/// Direct children of `pid` (all its threads), with their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path().join("children");
        if let Ok(s) = std::fs::read_to_string(p) {
            for c in s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()) {
                if let Some(cl) = cmdline(c) {
                    out.push((c, cl));
                }
            }
        }
    }
    out
}

/// A child process that is stopped (SIGTERM, then SIGKILL after 5 s) when dropped, also on panic.
/// Its own children (nginx workers) are killed too if they outlive it. A watchdog shell stops it
/// as well if this harness dies without unwinding (SIGKILL, or SIGTERM from `timeout`).
struct Proc {
    name: String,
    child: Child,
    watchdog: Option<Child>,
    log: PathBuf,
    stopped: bool,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        let (me, pid) = (std::process::id(), child.id());
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {me} 2>/dev/null; do kill -0 {pid} 2>/dev/null || exit 0; sleep 1; done; \
                 kill -TERM {pid} 2>/dev/null; sleep 5; kill -KILL {pid} 2>/dev/null; exit 0"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Ok(Proc {
            name: name.to_string(),
            child,
            watchdog,
            log: log.to_path_buf(),
            stopped: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let kids = children(self.pid());
        if self.exited().is_none() {
            signal(self.pid(), "TERM");
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                eprintln!("load: {} did not stop on SIGTERM; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // Children that outlived their parent (same pid, same command line: not a reused pid).
        let deadline = Instant::now() + Duration::from_secs(3);
        for (pid, cl) in kids {
            while cmdline(pid).as_deref() == Some(cl.as_str()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if cmdline(pid).as_deref() == Some(cl.as_str()) {
                signal(pid, "KILL");
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// User and system CPU time of the process and its direct children, in clock ticks.
    fn cpu_ticks(&self) -> Ticks {
        let mut pids = vec![self.pid()];
        pids.extend(children(self.pid()).into_iter().map(|(p, _)| p));
        pids.iter()
            .filter_map(|p| proc_stat(*p))
            .fold(Ticks::default(), |acc, (_, t)| Ticks {
                user: acc.user + t.user,
                sys: acc.sys + t.sys,
            })
    }

    /// Like [`Proc::wait_exit`], and also the process's own CPU time, read while it is a zombie
    /// (its `/proc/<pid>/stat` keeps the times until it is reaped).
    fn wait_exit_cpu(&mut self, timeout: Duration) -> Option<(ExitStatus, Ticks)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(('Z', t)) = proc_stat(self.pid()) {
                return self.wait_exit(Duration::from_secs(5)).map(|s| (s, t));
            }
            if let Some(s) = self.exited() {
                // Reaped elsewhere before its times could be read.
                return Some((s, Ticks::default()));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// User and system CPU time, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
struct Ticks {
    user: u64,
    sys: u64,
}

impl Ticks {
    fn total(self) -> u64 {
        self.user + self.sys
    }
    fn since(self, before: Ticks) -> Ticks {
        Ticks {
            user: self.user.saturating_sub(before.user),
            sys: self.sys.saturating_sub(before.sys),
        }
    }
}

/// The whole machine's CPU time from the first line of `/proc/stat`, in clock ticks: `busy`
/// (user, nice, system, irq, softirq), `idle` (idle, iowait) and `steal` (time the hypervisor
/// gave this VM's CPUs to others: capacity this machine did not have).
#[derive(Clone, Copy, Debug, Default)]
struct MachineTicks {
    busy: u64,
    idle: u64,
    steal: u64,
}

fn machine_ticks() -> MachineTicks {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return MachineTicks::default();
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return MachineTicks::default();
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    MachineTicks {
        busy: get(0) + get(1) + get(2) + get(5) + get(6),
        idle: get(3) + get(4),
        steal: get(7),
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The state letter (R, S, Z, ...) and the CPU time of `/proc/<pid>/stat`; None once the
/// process is gone.
fn proc_stat(pid: u32) -> Option<(char, Ticks)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime field 15.
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let state = f.first()?.chars().next()?;
    Some((
        state,
        Ticks {
            user: get(11),
            sys: get(12),
        },
    ))
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ok()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

// ------------------------------------------------------------------------------ tiny HTTP

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One GET on a fresh connection (`Connection: close`), read to EOF.
fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        let _ = write!(req, "Host: {addr}\r\n");
    }
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let (status, headers, body) = mtls_gateway::dev::demo::parse_response(&buf)
        .map_err(|e| anyhow!("{e} from 127.0.0.1:{port}{path}"))?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

// ------------------------------------------------------------------------------ PKI + store

fn sha1_hex(cert: &X509) -> Result<String> {
    Ok(hex::encode(cert.digest(MessageDigest::sha1())?))
}

struct Pki {
    ca: Issued,
    client: Issued,
    spread: Vec<Issued>,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

fn make_pki(dir: &Path) -> Result<Pki> {
    let pki = dir.join("pki");
    let ca = certgen::new_ca("bench CA")?;
    let server = certgen::issue(
        &ca,
        &Leaf::server("localhost", &["localhost"], &[[127, 0, 0, 1].into()]),
    )?;
    let client = certgen::issue(&ca, &Leaf::client("bench-client"))?;
    write_file(&pki.join("ca.pem"), &certgen::to_pem(&ca.cert))?;
    write_file(&pki.join("server.pem"), &certgen::to_pem(&server.cert))?;
    write_file(&pki.join("server.key"), &certgen::key_to_pem(&server.key))?;
    write_file(&pki.join("client.pem"), &certgen::to_pem(&client.cert))?;
    write_file(&pki.join("client.key"), &certgen::key_to_pem(&client.key))?;
    let mut spread = Vec::with_capacity(SPREAD);
    for i in 0..SPREAD {
        let c = certgen::issue(&ca, &Leaf::client(&format!("bench-c-{i}")))?;
        write_file(&pki.join(format!("c/{i}.pem")), &certgen::to_pem(&c.cert))?;
        write_file(
            &pki.join(format!("c/{i}.key")),
            &certgen::key_to_pem(&c.key),
        )?;
        spread.push(c);
    }
    Ok(Pki { ca, client, spread })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn stored(account: &str, id: u64, p12: Vec<u8>) -> StoredCertificate {
    StoredCertificate {
        meta: CertificateMeta {
            id,
            account_id: account.to_string(),
            name: format!("cert-{id}"),
            display_name: format!("cert {id}"),
            deleted: false,
            not_after: None,
            updated_at: 0,
        },
        secret: CertificateSecret {
            p12,
            password: P12_PASSWORD.to_string(),
        },
        lifecycle: None,
    }
}

fn mapping(account: &str, id: u64, url: String, certificate_id: u64) -> Mapping {
    Mapping {
        id,
        account_id: account.to_string(),
        name: format!("m{id}"),
        service_name: SERVICE.to_string(),
        url,
        certificate_id,
        enabled: true,
        deleted: false,
        cutover_check: None,
    }
}

/// Certificate ids in the load store: 1 for `/small`, `/64k` and `/upload`, 1000 + i for `/c/{i}`.
fn spread_cert_id(i: usize) -> u64 {
    1000 + i as u64
}

fn seed_load_store(store_dir: &Path, pki: &Pki, upstream: u16) -> Result<()> {
    let store = FileStore::open(store_dir)?;
    let rt = runtime()?;
    rt.block_on(async {
        let p12 = certgen::to_p12(&pki.client.cert, &pki.client.key, &[], P12_PASSWORD)?;
        store.put_certificate(&stored(ACCOUNT, 1, p12)).await?;
        for (i, c) in pki.spread.iter().enumerate() {
            let p12 = certgen::to_p12(&c.cert, &c.key, &[], P12_PASSWORD)?;
            store
                .put_certificate(&stored(ACCOUNT, spread_cert_id(i), p12))
                .await?;
        }
        let base = format!("https://localhost:{upstream}");
        let mut maps = vec![
            mapping(ACCOUNT, 1, format!("{base}/small"), 1),
            mapping(ACCOUNT, 2, format!("{base}/64k"), 1),
            mapping(ACCOUNT, 3, format!("{base}/upload"), 1),
        ];
        for i in 0..SPREAD {
            maps.push(mapping(
                ACCOUNT,
                10 + i as u64,
                format!("{base}/c/{i}"),
                spread_cert_id(i),
            ));
        }
        store
            .put_mappings(ACCOUNT, &MappingDocument { mappings: maps }, None)
            .await?;
        anyhow::Ok(())
    })
}

// ------------------------------------------------------------------------------ processes

fn fill(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(at) = s.find("{{") {
        let end = s[at..].find("}}").map(|e| at + e + 2).unwrap_or(s.len());
        bail!("template placeholder {} was not filled in", &s[at..end]);
    }
    Ok(s)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn nginx_user() -> String {
    // Workers of a root master run as `nobody` unless told otherwise, and could not read the
    // per-request certificates (`proxy_ssl_certificate $var`) in the 0700 temp dir.
    if running_as_root() {
        "user root;".to_string()
    } else {
        String::new()
    }
}

struct Nginx {
    proc: Proc,
    port: u16,
    error_log: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, name: &str, conf_text: &str, port: u16) -> Result<Nginx> {
        let conf = dir.join(format!("{name}.conf"));
        write_file(&conf, conf_text.as_bytes())?;
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        let t = Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .output()
            .context("run `nginx -t` (is nginx installed? .ci/setup installs it)")?;
        if !t.status.success() {
            bail!(
                "nginx -t rejected {}:\n{}",
                conf.display(),
                String::from_utf8_lossy(&t.stderr)
            );
        }
        let mut cmd = program("nginx");
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"]);
        let mut proc = Proc::spawn(
            &format!("nginx {name}"),
            cmd,
            &dir.join(format!("{name}.out")),
        )?;
        let error_log = dir.join(format!("{name}-error.log"));
        let started = wait_until(
            &format!("nginx {name} on port {port}"),
            Duration::from_secs(20),
            || {
                if let Some(s) = proc.exited() {
                    bail!("nginx {name} exited with {s}: {}", proc.log_text());
                }
                Ok(port_open(port))
            },
        );
        if let Err(e) = started {
            let log = std::fs::read_to_string(&error_log).unwrap_or_default();
            bail!("{e}\n{log}");
        }
        Ok(Nginx {
            proc,
            port,
            error_log,
        })
    }
}

struct Gateway {
    proc: Proc,
    port: u16,
    ops: u16,
}

struct GatewayOpts<'a> {
    /// The mtls-gateway binary: [`GATEWAY_BIN`], or `LOAD_PEER_BIN` for the peer.
    bin: &'a Path,
    store: &'a Path,
    ca: &'a Path,
    threads: usize,
    requests_per_second: u32,
    trusted_proxies: bool,
    pool_size: Option<usize>,
    ready_timeout: Duration,
}

impl Gateway {
    fn start(dir: &Path, name: &str, o: &GatewayOpts) -> Result<Gateway> {
        let (port, ops, admin) = (free_port()?, free_port()?, free_port()?);
        let trusted = if o.trusted_proxies {
            "[\"127.0.0.1\"]"
        } else {
            "[]"
        };
        let yaml = format!(
            r#"# generated by benches/load.rs
proxy:
  listen: ["127.0.0.1:{port}"]
  threads: {threads}
  default_account: {ACCOUNT}
  default_service: {SERVICE}
admin:
  enabled: true
  listen: "127.0.0.1:{admin}"
ops:
  listen: "127.0.0.1:{ops}"
store:
  kind: file
  path: "{store}"
refresh:
  interval_secs: 300
rate_limit:
  enabled: true
  requests_per_second: {rps}
  trusted_proxies: {trusted}
upstream:
  ca_files: ["{ca}"]
  use_system_roots: false
{pool}shutdown:
  grace_period_secs: 1
"#,
            threads = o.threads,
            store = o.store.display(),
            rps = o.requests_per_second,
            ca = o.ca.display(),
            pool = o
                .pool_size
                .map(|n| format!("  keepalive_pool_size: {n}\n"))
                .unwrap_or_default(),
        );
        let conf = dir.join(format!("{name}.yaml"));
        write_file(&conf, yaml.as_bytes())?;
        let mut cmd = program(o.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info");
        let mut proc = Proc::spawn(
            &format!("gateway {name}"),
            cmd,
            &dir.join(format!("{name}.log")),
        )?;
        let ready = wait_until(&format!("gateway {name} /ready"), o.ready_timeout, || {
            if let Some(s) = proc.exited() {
                bail!("gateway {name} exited with {s}");
            }
            Ok(http_get(ops, "/ready", &[])
                .map(|r| r.status == 200)
                .unwrap_or(false)
                && port_open(port))
        });
        if let Err(e) = ready {
            bail!("{e}; log:\n{}", tail(&proc.log_text(), 40));
        }
        Ok(Gateway { proc, port, ops })
    }

    fn metrics(&self) -> Result<String> {
        let r = http_get(self.ops, "/metrics", &[])?;
        if r.status != 200 {
            bail!("/metrics answered {}", r.status);
        }
        Ok(String::from_utf8_lossy(&r.body).to_string())
    }
}

/// The side the gateway is compared with: nginx (`benches/load/peer.conf`), or with
/// `LOAD_PEER_BIN` another mtls-gateway binary started exactly as the gateway is.
enum Peer {
    Nginx(Nginx),
    Gateway(Gateway),
}

impl Peer {
    fn port(&self) -> u16 {
        match self {
            Peer::Nginx(n) => n.port,
            Peer::Gateway(g) => g.port,
        }
    }

    fn proc(&self) -> &Proc {
        match self {
            Peer::Nginx(n) => &n.proc,
            Peer::Gateway(g) => &g.proc,
        }
    }

    fn proc_mut(&mut self) -> &mut Proc {
        match self {
            Peer::Nginx(n) => &mut n.proc,
            Peer::Gateway(g) => &mut g.proc,
        }
    }

    fn pid(&self) -> u32 {
        self.proc().pid()
    }

    /// A gateway peer's `/metrics`; None for nginx.
    fn metrics(&self) -> Option<Result<String>> {
        match self {
            Peer::Nginx(_) => None,
            Peer::Gateway(g) => Some(g.metrics()),
        }
    }

    fn is_gateway(&self) -> bool {
        matches!(self, Peer::Gateway(_))
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sum of the samples of `name` whose labels include every `(key, value)` of `filter`.
fn metric(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let ok = filter
            .iter()
            .all(|(k, v)| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if ok {
            sum += value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    sum
}

/// `outcome/status_class -> count` of `mtls_gateway_requests_total`.
fn outcomes(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("mtls_gateway_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let get = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry(format!("{}/{}", get("outcome"), get("status_class")))
            .or_insert(0.0) += v;
    }
    out
}

// ------------------------------------------------------------------------------ wrk

#[derive(Clone, Default)]
struct WrkRun {
    requests: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    non2xx: u64,
    socket_errors: u64,
    /// Proxy CPU (process and children), microseconds per request.
    cpu_us_per_req: f64,
    /// The user-space part of `cpu_us_per_req`.
    cpu_user_us_per_req: f64,
    /// Upstream nginx CPU, microseconds per request.
    upstream_cpu_us_per_req: f64,
    /// wrk's own CPU, microseconds per request.
    wrk_cpu_us_per_req: f64,
    /// The whole machine's busy CPU time (every process, interrupts), microseconds per request.
    machine_us_per_req: f64,
    /// Share of the machine's CPU time that was idle during the run (0..1).
    idle_share: f64,
    /// Share of the machine's CPU time the hypervisor gave to others (steal, 0..1).
    steal_share: f64,
    /// Gateway runs: new upstream connections and upstream connections used (new + reused).
    new_conns: f64,
    upstream_uses: f64,
}

fn parse_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "us" => 1.0,
        "ms" => 1_000.0,
        "s" => 1_000_000.0,
        "m" => 60_000_000.0,
        "h" => 3_600_000_000.0,
        _ => return None,
    };
    Some(n * mult)
}

fn parse_wrk(out: &str) -> Result<WrkRun> {
    let mut r = WrkRun::default();
    let mut saw_rps = false;
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some((pct, val)) = t.split_once('%') {
                match pct.trim() {
                    "50" => r.p50_us = parse_duration_us(val).unwrap_or(0.0),
                    "99" => r.p99_us = parse_duration_us(val).unwrap_or(0.0),
                    _ => {}
                }
                continue;
            }
            in_dist = false;
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().context("Requests/sec")?;
            saw_rps = true;
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
        } else if t.contains(" requests in ") {
            r.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    if !saw_rps {
        bail!("no Requests/sec in wrk output:\n{out}");
    }
    Ok(r)
}

struct Load<'a> {
    path: &'a str,
    close: bool,
    script: Option<(PathBuf, String)>,
}

struct Bench<'a> {
    s: &'a Settings,
    dir: PathBuf,
    upstream: &'a Nginx,
    ticks: f64,
}

impl Bench<'_> {
    /// One wrk run against `port`; `cpu_of` is the proxy whose CPU time is accounted.
    fn wrk(&self, port: u16, load: &Load, secs: u64, cpu_of: &Proc, tag: &str) -> Result<WrkRun> {
        let host = format!("Host: localhost:{}", self.upstream.port);
        let mut cmd = program("wrk");
        cmd.arg("-t1")
            .arg(format!("-c{}", self.s.connections))
            .arg(format!("-d{secs}s"))
            .arg("--latency")
            .args(["--timeout", "5s"])
            .args(["-H", &host]);
        if load.close {
            cmd.args(["-H", "Connection: close"]);
        }
        if let Some((script, _)) = &load.script {
            cmd.arg("-s").arg(script);
        }
        cmd.arg(format!("http://127.0.0.1:{port}{}", load.path));
        if let Some((_, args)) = &load.script {
            cmd.arg("--").arg(args);
        }
        let out = self.dir.join(format!("wrk-{tag}.out"));
        let cpu0 = cpu_of.cpu_ticks();
        let up0 = self.upstream.proc.cpu_ticks();
        let m0 = machine_ticks();
        let mut p = Proc::spawn(&format!("wrk {tag}"), cmd, &out)?;
        let status = p.wait_exit_cpu(Duration::from_secs(secs + 30));
        let m1 = machine_ticks();
        let cpu = cpu_of.cpu_ticks().since(cpu0);
        let up = self.upstream.proc.cpu_ticks().since(up0);
        let text = p.log_text();
        let wrk_cpu = match status {
            None => bail!("wrk {tag} did not finish within {} s", secs + 30),
            Some((s, _)) if !s.success() => bail!("wrk {tag} failed with {s}:\n{text}"),
            Some((_, t)) => t,
        };
        let mut r = parse_wrk(&text)?;
        if r.requests > 0 {
            let per = |d: u64| d as f64 / self.ticks * 1e6 / r.requests as f64;
            r.cpu_us_per_req = per(cpu.total());
            r.cpu_user_us_per_req = per(cpu.user);
            r.upstream_cpu_us_per_req = per(up.total());
            r.wrk_cpu_us_per_req = per(wrk_cpu.total());
            let busy = m1.busy.saturating_sub(m0.busy);
            let idle = m1.idle.saturating_sub(m0.idle);
            let steal = m1.steal.saturating_sub(m0.steal);
            r.machine_us_per_req = per(busy);
            let all = (busy + idle + steal).max(1) as f64;
            r.idle_share = idle as f64 / all;
            r.steal_share = steal as f64 / all;
        }
        Ok(r)
    }
}

// ------------------------------------------------------------------------------ scenarios

#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    /// One static client certificate.
    Static,
    /// `proxy_ssl_certificate $bench_cert` chosen by a `map $uri` (one shared keepalive pool).
    MapCert,
    /// One `location` + `upstream` (own keepalive pool) + static certificate per path.
    PerLocation,
    /// Static certificate + `limit_req` by the client address from X-Forwarded-For.
    RateLimit,
}

struct Scenario {
    name: &'static str,
    what: &'static str,
    path: &'static str,
    close: bool,
    /// (lua source, file name, argument)
    script: Option<(&'static str, &'static str, String)>,
    peer: PeerKind,
    rate_limited: bool,
}

fn scenario(name: &str, s: &Settings) -> Result<Scenario> {
    let sc = match name {
        "keepalive" => Scenario {
            name: "keepalive",
            what: "keep-alive, 100-byte responses",
            path: "/small",
            close: false,
            script: None,
            peer: PeerKind::Static,
            rate_limited: false,
        },
        "64k" => Scenario {
            name: "64k",
            what: "keep-alive, 64 KiB responses",
            path: "/64k",
            close: false,
            script: None,
            peer: PeerKind::Static,
            rate_limited: false,
        },
        "close" => Scenario {
            name: "close",
            what: "new downstream connection per request (Connection: close)",
            path: "/small",
            close: true,
            script: None,
            peer: PeerKind::Static,
            rate_limited: false,
        },
        "certs1000" => Scenario {
            name: "certs1000",
            what: "1,000 mappings / distinct certificates, one upstream host; nginx: map $uri -> proxy_ssl_certificate $var, one keepalive pool",
            path: "/",
            close: false,
            script: Some((SPREAD_LUA, "spread.lua", SPREAD.to_string())),
            peer: PeerKind::MapCert,
            rate_limited: false,
        },
        "certs1000-pools" => Scenario {
            name: "certs1000-pools",
            what: "1,000 mappings / distinct certificates; nginx: one location + upstream keepalive pool + static certificate per path (identity-correct)",
            path: "/",
            close: false,
            script: Some((SPREAD_LUA, "spread.lua", SPREAD.to_string())),
            peer: PeerKind::PerLocation,
            rate_limited: false,
        },
        "ratelimit" => Scenario {
            name: "ratelimit",
            what: "rate limit 10/s per client IP, client IPs from a trusted X-Forwarded-For",
            path: "/small",
            close: false,
            script: Some((XFF_LUA, "xff.lua", s.ip_pool.to_string())),
            peer: PeerKind::RateLimit,
            rate_limited: true,
        },
        "upload" => Scenario {
            name: "upload",
            what: "keep-alive, 128 KiB POST bodies, 100-byte responses",
            path: "/upload",
            close: false,
            script: Some((UPLOAD_LUA, "upload.lua", UPLOAD_BYTES.to_string())),
            peer: PeerKind::Static,
            rate_limited: false,
        },
        "http10" => Scenario {
            name: "http10",
            what: "HTTP/1.0 requests without keep-alive (as `ab` sends them), 100-byte responses",
            path: "/small",
            close: false,
            script: Some((HTTP10_LUA, "http10.lua", String::new())),
            peer: PeerKind::Static,
            rate_limited: false,
        },
        other => bail!("unknown scenario {other}"),
    };
    Ok(sc)
}

fn peer_conf(sc: &Scenario, dir: &Path, s: &Settings, port: u16, upstream: u16) -> Result<String> {
    let d = dir.display().to_string();
    let mut http_extra = String::new();
    let mut server_extra = String::new();
    let mut locations = String::new();
    let mut cert = format!("{d}/pki/client.pem");
    let mut key = format!("{d}/pki/client.key");
    match sc.peer {
        PeerKind::Static => {}
        PeerKind::MapCert => {
            // nginx >= 1.21 loads a certificate named by a variable on every handshake; its
            // keepalive pool is NOT keyed by the certificate, so a pooled connection made with
            // one certificate serves requests that should use another.
            let mut c = String::from("    map $uri $bench_cert {\n");
            let mut k = String::from("    map $uri $bench_key {\n");
            let _ = writeln!(c, "        default {d}/pki/client.pem;");
            let _ = writeln!(k, "        default {d}/pki/client.key;");
            for i in 0..SPREAD {
                let _ = writeln!(c, "        /c/{i} {d}/pki/c/{i}.pem;");
                let _ = writeln!(k, "        /c/{i} {d}/pki/c/{i}.key;");
            }
            c.push_str("    }\n");
            k.push_str("    }\n");
            http_extra = c + &k;
            cert = "$bench_cert".into();
            key = "$bench_key".into();
        }
        PeerKind::PerLocation => {
            for i in 0..SPREAD {
                let _ = writeln!(
                    http_extra,
                    "    upstream c{i} {{ server 127.0.0.1:{upstream}; keepalive 4; keepalive_requests 100000; keepalive_timeout 300s; }}"
                );
                let _ = writeln!(
                    locations,
                    "        location = /c/{i} {{ proxy_pass https://c{i}; proxy_ssl_certificate {d}/pki/c/{i}.pem; proxy_ssl_certificate_key {d}/pki/c/{i}.key; }}"
                );
            }
        }
        PeerKind::RateLimit => {
            http_extra = "    limit_req_zone $binary_remote_addr zone=rl:10m rate=10r/s;\n".into();
            server_extra = format!(
                "        set_real_ip_from 127.0.0.1;\n        real_ip_header X-Forwarded-For;\n        limit_req zone=rl{} nodelay;\n        limit_req_status 429;\n        # the gateway does not log refusals either\n        limit_req_log_level info;\n",
                // nginx refuses `burst=0`; leaving it out means 0.
                if s.nginx_burst == 0 {
                    String::new()
                } else {
                    format!(" burst={}", s.nginx_burst)
                }
            );
        }
    }
    fill(
        PEER_CONF,
        &[
            ("USER", nginx_user()),
            ("WORKERS", s.threads.to_string()),
            ("KEEPALIVE", s.connections.max(64).to_string()),
            ("DIR", d.clone()),
            ("NAME", format!("peer-{}", sc.name)),
            ("UPSTREAM_PORT", upstream.to_string()),
            ("PORT", port.to_string()),
            ("HTTP_EXTRA", http_extra),
            ("SERVER_EXTRA", server_extra),
            ("LOCATIONS", locations),
            ("CERT", cert),
            ("KEY", key),
        ],
    )
}

#[derive(Default)]
struct Outcome {
    name: String,
    what: String,
    gw: Vec<WrkRun>,
    /// The peer's runs (nginx, or the `LOAD_PEER_BIN` gateway).
    peer: Vec<WrkRun>,
    /// (reused, new) upstream connections over the measured rounds, from `/metrics`.
    reuse: Option<(f64, f64)>,
    peer_reuse: Option<(f64, f64)>,
    gw_rss_kib: Option<(u64, u64)>,
    peer_rss_kib: Option<(u64, u64)>,
    notes: Vec<String>,
    failed: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Outcome {
    fn med(runs: &[WrkRun], f: impl Fn(&WrkRun) -> f64) -> f64 {
        median(runs.iter().map(f).collect())
    }
    fn ratio(&self) -> f64 {
        Self::med(&self.gw, |r| r.rps) / Self::med(&self.peer, |r| r.rps)
    }
    fn paired_ratios(&self) -> Vec<f64> {
        self.gw
            .iter()
            .zip(&self.peer)
            .map(|(g, n)| g.rps / n.rps)
            .collect()
    }
}

/// A request through a proxy must reach the upstream with the expected client certificate.
/// Returns (ok, description).
fn identity_probe(port: u16, upstream: u16, path: &str, expect: &X509) -> Result<(bool, String)> {
    let host = format!("localhost:{upstream}");
    let r = http_get(port, path, &[("Host", &host)])?;
    let want = sha1_hex(expect)?;
    let got = r.header("x-client-fingerprint").unwrap_or("-").to_string();
    let proto = r.header("x-tls-protocol").unwrap_or("-").to_string();
    let ok = r.status == 200 && got == want;
    Ok((
        ok,
        format!(
            "{path}: {} {}, upstream saw {} ({proto})",
            r.status,
            if ok { "right certificate" } else { "WRONG" },
            r.header("x-client-subject").unwrap_or("-"),
        ),
    ))
}

fn run_scenario(b: &Bench, pki: &Pki, store: &Path, sc: &Scenario) -> Result<Outcome> {
    let s = b.s;
    let mut o = Outcome {
        name: sc.name.to_string(),
        what: sc.what.to_string(),
        ..Outcome::default()
    };
    let up = b.upstream.port;
    let ca = b.dir.join("pki/ca.pem");
    let gw_opts = GatewayOpts {
        bin: Path::new(GATEWAY_BIN),
        store,
        ca: &ca,
        threads: s.threads,
        requests_per_second: if sc.rate_limited { 10 } else { 1_000_000 },
        trusted_proxies: sc.rate_limited,
        pool_size: s.gw_pool_size,
        ready_timeout: Duration::from_secs(120),
    };
    let mut gw = Gateway::start(&b.dir, &format!("gateway-{}", sc.name), &gw_opts)?;
    let peer_name = s.peer_name();
    let mut peer = match &s.peer_bin {
        // Same configuration shape and store (neither binary writes it), ports of its own.
        Some(bin) => Peer::Gateway(Gateway::start(
            &b.dir,
            &format!("peer-{}", sc.name),
            &GatewayOpts { bin, ..gw_opts },
        )?),
        None => {
            let port = free_port()?;
            Peer::Nginx(Nginx::start(
                &b.dir,
                &format!("peer-{}", sc.name),
                &peer_conf(sc, &b.dir, s, port, up)?,
                port,
            )?)
        }
    };

    // Sanity: the requests arrive at the upstream with the expected client certificate.
    let probes: Vec<(String, &X509)> = match sc.peer {
        PeerKind::MapCert | PeerKind::PerLocation => [0usize, 1, 2, 500, 999, 0]
            .iter()
            .map(|i| (format!("/c/{i}"), &pki.spread[*i].cert))
            .collect(),
        _ => vec![(sc.path.to_string(), &pki.client.cert)],
    };
    // A gateway that sends a wrong identity aborts the scenario; nginx in certs1000 does so by
    // design (one pool for all certificates), which the report shows.
    let sides = [
        ("gateway", gw.port, true),
        (peer_name, peer.port(), peer.is_gateway()),
    ];
    for (who, port, must_be_right) in sides {
        let mut good = 0;
        let mut lines = Vec::new();
        for (path, cert) in &probes {
            let (ok, line) = identity_probe(port, up, path, cert)?;
            good += ok as usize;
            lines.push(line);
        }
        let msg = format!(
            "{who}: {good}/{} sequential probe requests reached the upstream with the right client certificate",
            probes.len()
        );
        println!("  {msg}");
        for l in &lines {
            println!("    {l}");
        }
        if must_be_right && good != probes.len() {
            bail!("{msg}:\n{}", lines.join("\n"));
        }
        o.notes.push(msg);
    }
    if sc.rate_limited {
        for (who, port, _) in sides {
            let host = format!("localhost:{up}");
            let mut limited = 0;
            for _ in 0..25 {
                let r = http_get(
                    port,
                    "/small",
                    &[("Host", &host), ("X-Forwarded-For", "203.0.113.7")],
                )?;
                limited += (r.status == 429) as usize;
            }
            let msg = format!(
                "{who}: 25 quick requests from one forwarded client IP: {limited} refused with 429"
            );
            println!("  {msg}");
            if limited == 0 {
                bail!("{msg}: the rate limit is not working");
            }
            o.notes.push(msg);
        }
    }

    let script = match &sc.script {
        Some((src, file, arg)) => {
            let p = b.dir.join(file);
            write_file(&p, src.as_bytes())?;
            Some((p, arg.clone()))
        }
        None => None,
    };
    let load = Load {
        path: sc.path,
        close: sc.close,
        script,
    };

    let alive = |p: &mut Proc, phase: &str| -> Result<()> {
        if let Some(st) = p.exited() {
            bail!(
                "{} exited ({st}) during {} {phase}; log tail:\n{}",
                p.name,
                sc.name,
                tail(&p.log_text(), 60)
            );
        }
        Ok(())
    };
    // With 1,000 identities each needs its own upstream connections (about 1,050 handshakes in
    // all at -c32) before the pool is in steady state: warm those scenarios up 4x longer.
    let warmup = match sc.peer {
        PeerKind::MapCert | PeerKind::PerLocation => s.warmup_secs * 4,
        _ => s.warmup_secs,
    };
    if warmup > 0 {
        b.wrk(
            gw.port,
            &load,
            warmup,
            &gw.proc,
            &format!("{}-warm-gw", sc.name),
        )?;
        alive(&mut gw.proc, "warm-up")?;
        b.wrk(
            peer.port(),
            &load,
            warmup,
            peer.proc(),
            &format!("{}-warm-peer", sc.name),
        )?;
        alive(peer.proc_mut(), "warm-up")?;
    }
    let m0 = gw.metrics()?;
    let pm0 = peer.metrics().transpose()?;
    for round in 0..s.rounds {
        // ABBA order: drift on a shared machine affects both sides alike.
        let gw_first = round % 2 == 0;
        for side in if gw_first { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let before = gw.metrics()?;
                let mut r = b.wrk(
                    gw.port,
                    &load,
                    s.secs,
                    &gw.proc,
                    &format!("{}-{round}-gw", sc.name),
                )?;
                alive(&mut gw.proc, &format!("round {round}"))?;
                (r.new_conns, r.upstream_uses) = upstream_conns(&before, &gw.metrics()?);
                println!(
                    "  round {round} gateway: {:>9.0} req/s  p50 {:>8}  p99 {:>8}  non-2xx {}  socket errors {}  cpu {:.0} us/req  new upstream conns {} of {}",
                    r.rps, fmt_us(r.p50_us), fmt_us(r.p99_us), r.non2xx, r.socket_errors, r.cpu_us_per_req, r.new_conns, r.upstream_uses
                );
                o.gw.push(r);
            } else {
                let before = peer.metrics().transpose()?;
                let mut r = b.wrk(
                    peer.port(),
                    &load,
                    s.secs,
                    peer.proc(),
                    &format!("{}-{round}-peer", sc.name),
                )?;
                alive(peer.proc_mut(), &format!("round {round}"))?;
                let mut conns = String::new();
                if let (Some(before), Some(after)) = (before, peer.metrics().transpose()?) {
                    (r.new_conns, r.upstream_uses) = upstream_conns(&before, &after);
                    conns = format!(
                        "  new upstream conns {} of {}",
                        r.new_conns, r.upstream_uses
                    );
                }
                println!(
                    "  round {round} {peer_name}:{:pad$} {:>9.0} req/s  p50 {:>8}  p99 {:>8}  non-2xx {}  socket errors {}  cpu {:.0} us/req{conns}",
                    "", r.rps, fmt_us(r.p50_us), fmt_us(r.p99_us), r.non2xx, r.socket_errors, r.cpu_us_per_req,
                    pad = "gateway".len() - peer_name.len(),
                );
                o.peer.push(r);
            }
        }
    }
    o.reuse = Some(gateway_notes(
        "gateway",
        &gw.proc,
        &m0,
        &gw.metrics()?,
        &o.gw,
        sc.rate_limited,
        &mut o.notes,
    ));
    o.gw_rss_kib = rss_kib(gw.proc.pid());
    match (&peer, pm0) {
        (Peer::Gateway(p), Some(pm0)) => {
            o.peer_reuse = Some(gateway_notes(
                peer_name,
                &p.proc,
                &pm0,
                &p.metrics()?,
                &o.peer,
                sc.rate_limited,
                &mut o.notes,
            ));
            o.peer_rss_kib = rss_kib(peer.pid());
        }
        (Peer::Nginx(ng), _) => {
            // Peer error log: anything nginx complained about.
            let ng_log = std::fs::read_to_string(&ng.error_log).unwrap_or_default();
            let ng_lines = ng_log.lines().filter(|l| !l.contains("[notice]")).count();
            if ng_lines > 0 {
                o.notes.push(format!(
                    "nginx peer error log: {ng_lines} lines, e.g. {}",
                    ng_log
                        .lines()
                        .find(|l| !l.contains("[notice]"))
                        .unwrap_or("")
                ));
            }
        }
        (Peer::Gateway(_), None) => {}
    }
    drop(peer);
    drop(gw);
    Ok(o)
}

/// New upstream connections and all upstream connections used (new + reused) between two
/// `/metrics` texts of a gateway.
fn upstream_conns(before: &str, after: &str) -> (f64, f64) {
    let uc = "mtls_gateway_upstream_connections_total";
    (
        metric(after, uc, &[("reused", "false")]) - metric(before, uc, &[("reused", "false")]),
        metric(after, uc, &[]) - metric(before, uc, &[]),
    )
}

/// Notes on a gateway's measured rounds (`m0` before, `m1` after): upstream failures, requests
/// by outcome, and the last warnings of its log if any request failed. Returns its upstream
/// connections (reused, new) over the rounds.
fn gateway_notes(
    who: &str,
    proc: &Proc,
    m0: &str,
    m1: &str,
    runs: &[WrkRun],
    rate_limited: bool,
    notes: &mut Vec<String>,
) -> (f64, f64) {
    let d = |name: &str, f: &[(&str, &str)]| metric(m1, name, f) - metric(m0, name, f);
    let uc = "mtls_gateway_upstream_connections_total";
    let reuse = (d(uc, &[("reused", "true")]), d(uc, &[("reused", "false")]));
    let tls_fail = d("mtls_gateway_upstream_tls_failures_total", &[]);
    let conn_fail = d("mtls_gateway_upstream_connect_failures_total", &[]);
    if tls_fail + conn_fail > 0.0 {
        notes.push(format!(
            "{who}: {tls_fail} upstream TLS failures, {conn_fail} upstream connect failures"
        ));
    }
    let (o0, o1) = (outcomes(m0), outcomes(m1));
    let mut by_outcome = Vec::new();
    for (k, v) in &o1 {
        let dv = v - o0.get(k).copied().unwrap_or(0.0);
        if dv > 0.0 {
            by_outcome.push(format!("{k}: {dv}"));
        }
    }
    notes.push(format!(
        "{who} requests by outcome (measured rounds): {}",
        by_outcome.join(", ")
    ));
    let bad: u64 = runs.iter().map(|r| r.non2xx + r.socket_errors).sum();
    if bad > 0 && !rate_limited {
        let log = proc.log_text();
        let warn: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        notes.push(format!(
            "{who} errors: {bad}; last warnings in its log:\n{}",
            warn[warn.len().saturating_sub(15)..].join("\n")
        ));
    }
    reuse
}

fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "-".into()
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}us")
    }
}

/// The throughput target of a scenario as a ratio gateway / nginx (issue 5), or None where the
/// two proxies do not do the same work (certs1000: nginx sends the wrong identity).
fn target_ratio(name: &str) -> Option<f64> {
    match name {
        "keepalive" => Some(1.25),
        "certs1000" => None,
        _ => Some(1.0),
    }
}

/// Where the machine's CPU goes per request, and what the throughput target asks of the
/// gateway's own CPU. On a saturated machine a proxy's rate is the machine's capacity divided by
/// everything the machine spends per request (load tool, proxy, upstream, interrupts), so the
/// ratio of throughputs follows the ratio of those totals; only the proxy's share differs
/// between the two sides.
fn cpu_budget(r: &mut String, s: &Settings, outcomes: &[Outcome]) {
    let _ = writeln!(
        r,
        "## Where the machine's CPU goes (medians of the rounds)\n"
    );
    let _ = writeln!(
        r,
        "| scenario | side | req/s | machine busy us/req | proxy us/req (user + system) | upstream us/req | wrk us/req | rest us/req | idle | steal |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes.iter().filter(|o| o.failed.is_none()) {
        for (side, runs) in [("gateway", &o.gw), (s.peer_name(), &o.peer)] {
            let m = |f: fn(&WrkRun) -> f64| Outcome::med(runs, f);
            let (machine, proxy, user) = (
                m(|x| x.machine_us_per_req),
                m(|x| x.cpu_us_per_req),
                m(|x| x.cpu_user_us_per_req),
            );
            let (up, wrk) = (
                m(|x| x.upstream_cpu_us_per_req),
                m(|x| x.wrk_cpu_us_per_req),
            );
            let _ = writeln!(
                r,
                "| {} | {side} | {:.0} | {machine:.1} | {proxy:.1} ({user:.1} + {:.1}) | {up:.1} | {wrk:.1} | {:.1} | {:.1}% | {:.1}% |",
                o.name,
                m(|x| x.rps),
                proxy - user,
                machine - proxy - up - wrk,
                m(|x| x.idle_share) * 100.0,
                m(|x| x.steal_share) * 100.0,
            );
        }
    }
    let _ = writeln!(
        r,
        "\nmachine busy: user, nice, system, irq and softirq time of all CPUs from `/proc/stat`; rest: what is not the proxy, the upstream or wrk (interrupts, softirq work charged to no process, the harness); every reading is within one clock tick, so a rest of a few us below 0 is rounding. idle and steal: shares of all CPU time during the run (steal: given by the hypervisor to other machines).\n"
    );
    if s.peer_bin.is_some() {
        ab_cpu(r, outcomes);
        return;
    }
    let _ = writeln!(r, "### What the throughput target asks of the gateway\n");
    let _ = writeln!(
        r,
        "| scenario | target gw/nginx | throughput ratio | machine CPU ratio nginx/gw | gateway proxy us/req now | proxy us/req the target needs | ratio if the gateway's user time were zero |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|");
    for o in outcomes.iter().filter(|o| o.failed.is_none()) {
        let Some(want) = target_ratio(&o.name) else {
            continue;
        };
        let tg = Outcome::med(&o.gw, |x| x.machine_us_per_req);
        let tn = Outcome::med(&o.peer, |x| x.machine_us_per_req);
        let pg = Outcome::med(&o.gw, |x| x.cpu_us_per_req);
        let ug = Outcome::med(&o.gw, |x| x.cpu_user_us_per_req);
        // Everything else unchanged, the gateway's runs would cost tn / want per request.
        let need = pg - (tg - tn / want);
        let _ = writeln!(
            r,
            "| {} | {want:.2} | {:.2} | {:.2} | {pg:.1} | {} | {:.2} |",
            o.name,
            o.ratio(),
            tn / tg,
            if need > 0.0 {
                format!("{need:.1} ({:+.0}%)", (need / pg - 1.0) * 100.0)
            } else {
                format!("none: {need:.1}")
            },
            tn / (tg - ug),
        );
    }
    let _ = writeln!(
        r,
        "\nproxy us/req the target needs: the gateway's CPU per request at which its runs would cost the machine nginx's runs' total divided by the target, with wrk, the upstream and the rest unchanged. The last column keeps the gateway's system time (its socket calls, and the loopback TCP work and wake-ups they carry) and drops all its user-space work: a bound for any proxy that makes the same system calls.\n"
    );
}

/// With `LOAD_PEER_BIN`: the proxy CPU per request of this build against the peer binary's.
fn ab_cpu(r: &mut String, outcomes: &[Outcome]) {
    let _ = writeln!(
        r,
        "### This build against the peer binary: proxy CPU per request\n"
    );
    let _ = writeln!(
        r,
        "| scenario | gateway us/req (user + system) | peer us/req (user + system) | change gw/peer | per round | gateway at most +5% |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|");
    for o in outcomes.iter().filter(|o| o.failed.is_none()) {
        let cpu = |runs: &[WrkRun]| {
            let (all, user) = (
                Outcome::med(runs, |x| x.cpu_us_per_req),
                Outcome::med(runs, |x| x.cpu_user_us_per_req),
            );
            (all, format!("{all:.1} ({user:.1} + {:.1})", all - user))
        };
        let ((g, gs), (p, ps)) = (cpu(&o.gw), cpu(&o.peer));
        let change = g / p - 1.0;
        let rounds: Vec<String> =
            o.gw.iter()
                .zip(&o.peer)
                .map(|(g, p)| {
                    format!(
                        "{:+.1}%",
                        (g.cpu_us_per_req / p.cpu_us_per_req - 1.0) * 100.0
                    )
                })
                .collect();
        let _ = writeln!(
            r,
            "| {} | {gs} | {ps} | **{:+.1}%** | {} | {} |",
            o.name,
            change * 100.0,
            rounds.join(", "),
            if change <= 0.05 { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(
        r,
        "\nchange: median of the gateway's rounds over the median of the peer's, minus 1; per round: the rounds paired as run (ABBA order). Both sides are mtls-gateway processes with the same generated configuration and store.\n"
    );
}

// ------------------------------------------------------------------------------ memory

struct Memory {
    certs: usize,
    mappings: usize,
    seed_secs: f64,
    ready_secs: f64,
    loaded_certs: f64,
    loaded_mappings: f64,
    at_ready: (u64, u64),
    after: (u64, u64),
}

fn memory(s: &Settings, base: &Path, pki: &Pki) -> Result<Memory> {
    let dir = base.join("mem");
    let store_dir = dir.join("store");
    let accounts = s.mem_certs.div_ceil(100);
    println!(
        "memory: seeding {} certificates and {} mappings over {accounts} accounts ...",
        s.mem_certs, s.mem_mappings
    );
    let t = Instant::now();
    // Distinct key pairs and certificates; the PKCS#12 encryption (PBKDF2) dominates, so the
    // files are built on two threads and written by one (the file store serialises writes).
    let items: Vec<(String, u64)> = (0..s.mem_certs)
        .map(|i| (format!("mem{:03}", i % accounts), i as u64 + 1))
        .collect();
    type Built = Vec<(String, u64, Vec<u8>)>;
    let built: Vec<Result<Built>> = std::thread::scope(|scope| {
        let hs: Vec<_> = items
            .chunks(items.len().div_ceil(2))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(acc, id)| {
                            let c = certgen::issue(&pki.ca, &Leaf::client(&format!("mem-{id}")))?;
                            let p12 = certgen::to_p12(&c.cert, &c.key, &[], P12_PASSWORD)?;
                            Ok((acc.clone(), *id, p12))
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("seeding thread panicked"))?)
            .collect()
    });
    let store = FileStore::open(&store_dir)?;
    let rt = runtime()?;
    let mut cert_ids: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    rt.block_on(async {
        for part in built {
            for (acc, id, p12) in part? {
                store.put_certificate(&stored(&acc, id, p12)).await?;
                cert_ids.entry(acc).or_default().push(id);
            }
        }
        let mut docs: BTreeMap<String, Vec<Mapping>> = BTreeMap::new();
        let accs: Vec<&String> = cert_ids.keys().collect();
        for m in 0..s.mem_mappings {
            let acc = accs[m % accs.len()];
            let ids = &cert_ids[acc];
            let cert = ids[(m / accs.len()) % ids.len()];
            let k = m / accs.len();
            // Three in four exact URLs, one in four a wildcard prefix.
            let url = if m % 4 == 3 {
                format!("https://partner-{}.example.com/api/v2/{k}/*", k % 50)
            } else {
                format!("https://partner-{}.example.com/api/v1/{k}", k % 50)
            };
            docs.entry(acc.clone())
                .or_default()
                .push(mapping(acc, m as u64 + 1, url, cert));
        }
        for (acc, maps) in docs {
            store
                .put_mappings(&acc, &MappingDocument { mappings: maps }, None)
                .await?;
        }
        anyhow::Ok(())
    })?;
    let seed_secs = t.elapsed().as_secs_f64();
    println!("memory: seeded in {seed_secs:.1} s; starting the gateway ...");
    let t = Instant::now();
    let gw = Gateway::start(
        &dir,
        "gateway-memory",
        &GatewayOpts {
            bin: Path::new(GATEWAY_BIN),
            store: &store_dir,
            ca: &base.join("pki/ca.pem"),
            threads: s.threads,
            requests_per_second: 10,
            trusted_proxies: false,
            pool_size: s.gw_pool_size,
            ready_timeout: Duration::from_secs(900),
        },
    )?;
    let ready_secs = t.elapsed().as_secs_f64();
    let at_ready = rss_kib(gw.proc.pid()).ok_or_else(|| anyhow!("no /proc status"))?;
    let m = gw.metrics()?;
    let loaded_certs = metric(&m, "mtls_gateway_certificates", &[("status", "available")]);
    let loaded_mappings = metric(&m, "mtls_gateway_mappings", &[]);
    // A few requests (refused: no mapping points at a live host) and a few seconds of idling.
    let _ = http_get(gw.port, "/", &[("Host", "partner-1.example.com")]);
    std::thread::sleep(Duration::from_secs(5));
    let after = rss_kib(gw.proc.pid()).ok_or_else(|| anyhow!("no /proc status"))?;
    let _ = std::fs::copy(&gw.proc.log, logs_dir().join("gateway-memory.log"));
    Ok(Memory {
        certs: s.mem_certs,
        mappings: s.mem_mappings,
        seed_secs,
        ready_secs,
        loaded_certs,
        loaded_mappings,
        at_ready,
        after,
    })
}

// ------------------------------------------------------------------------------ report

fn target_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // target/release/deps/load-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

fn logs_dir() -> PathBuf {
    target_dir().join("load-logs")
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {kernel}; wrk, both proxies and the upstream share them")
}

fn tool_version(cmd: impl AsRef<std::ffi::OsStr>, arg: &str) -> String {
    let cmd = cmd.as_ref();
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let t = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            t.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|_| format!("{}: not found", cmd.to_string_lossy()))
}

/// The commit the gateway was built from, and whether `src/` or `Cargo.toml` had uncommitted
/// changes when the report was written.
fn source_version() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--", "src", "Cargo.toml"])
                .map(|s| !s.is_empty())
                .unwrap_or(false);
            format!(
                "git {head}{}",
                if dirty {
                    " with uncommitted changes in src/ or Cargo.toml"
                } else {
                    ""
                }
            )
        }
        None => "unknown (not a git checkout)".into(),
    }
}

/// The peer, for the report: nginx, or the `LOAD_PEER_BIN` binary with its `--version`.
fn peer_description(s: &Settings) -> String {
    match &s.peer_bin {
        None => "nginx with proxy_ssl_certificate and an upstream keepalive pool (benches/load/peer.conf)".into(),
        Some(bin) => format!(
            "{} ({}), the gateway's generated configuration on ports of its own, same store (LOAD_PEER_BIN)",
            bin.display(),
            tool_version(bin, "--version")
        ),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn report(
    s: &Settings,
    outcomes: &[Outcome],
    mem: Option<&Result<Memory>>,
    started: &str,
) -> String {
    let mut r = String::new();
    let p = s.peer_name();
    let _ = writeln!(r, "# mtls-gateway load report\n");
    let _ = writeln!(r, "- started: {started}");
    let _ = writeln!(r, "- machine: {}", machine());
    let _ = writeln!(
        r,
        "- gateway: this build, {GATEWAY_BIN}, {}",
        source_version()
    );
    let _ = writeln!(r, "- peer: {}", peer_description(s));
    let _ = writeln!(
        r,
        "- {}; {}",
        tool_version("nginx", "-v"),
        tool_version("wrk", "--version")
    );
    let _ = writeln!(
        r,
        "- wrk -t1 -c{} -d{}s --latency (warm-up {} s per side, 4x in certs1000*), {} alternating rounds per scenario; gateway proxy.threads = {p} {} = {}",
        s.connections,
        s.secs,
        s.warmup_secs,
        s.rounds,
        if s.peer_bin.is_some() {
            "proxy.threads"
        } else {
            "worker_processes"
        },
        s.threads
    );
    let _ = writeln!(
        r,
        "- scheduling: {} (LOAD_SCHED); kernel autogroup {}",
        if separate_sessions() {
            "separate, every process in a session of its own"
        } else {
            "shared, every process in the harness's session"
        },
        std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
            .map(|v| if v.trim() == "1" { "on" } else { "off" })
            .unwrap_or("unknown")
    );
    let _ = writeln!(
        r,
        "- gateway{}: rate limit on (10/s in ratelimit, 1,000,000/s elsewhere), metrics on, admin API on, file store, upstream.keepalive_pool_size {}; {}load average at the end: {}\n",
        if s.peer_bin.is_some() { " and peer" } else { "" },
        s.gw_pool_size
            .map(|n| n.to_string())
            .unwrap_or_else(|| "default".into()),
        if s.peer_bin.is_some() {
            String::new()
        } else {
            format!("nginx limit_req burst {}; ", s.nginx_burst)
        },
        loadavg()
    );
    let _ = writeln!(
        r,
        "| scenario | gateway req/s | {p} req/s | ratio gw/{p} (paired rounds) | gateway p50 / p99 | {p} p50 / p99 | gateway non-2xx / socket err | {p} non-2xx / socket err | {} | proxy CPU us/req gw / {p} |",
        if s.peer_bin.is_some() {
            "upstream reuse gw / peer"
        } else {
            "gateway upstream reuse"
        }
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        if let Some(f) = &o.failed {
            let _ = writeln!(
                r,
                "| {} | FAILED: {} | | | | | | | | |",
                o.name,
                f.lines().next().unwrap_or("")
            );
            continue;
        }
        let sum = |v: &[WrkRun], f: fn(&WrkRun) -> u64| v.iter().map(f).sum::<u64>();
        let reqs = |v: &[WrkRun]| v.iter().map(|x| x.requests).sum::<u64>().max(1) as f64;
        let pr: Vec<String> = o
            .paired_ratios()
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect();
        let reuse = |x: Option<(f64, f64)>| match x {
            Some((re, fr)) if re + fr > 0.0 => {
                format!("{:.3}% ({} new of {})", re / (re + fr) * 100.0, fr, re + fr)
            }
            _ => "-".into(),
        };
        let reuse = if s.peer_bin.is_some() {
            format!("{} / {}", reuse(o.reuse), reuse(o.peer_reuse))
        } else {
            reuse(o.reuse)
        };
        let share = |v: &[WrkRun]| {
            format!(
                "{} ({:.1}%) / {}",
                sum(v, |x| x.non2xx),
                sum(v, |x| x.non2xx) as f64 / reqs(v) * 100.0,
                sum(v, |x| x.socket_errors)
            )
        };
        let _ = writeln!(
            r,
            "| {} | {:.0} | {:.0} | **{:.2}** ({}) | {} / {} | {} / {} | {} | {} | {} | {:.0} / {:.0} |",
            o.name,
            Outcome::med(&o.gw, |x| x.rps),
            Outcome::med(&o.peer, |x| x.rps),
            o.ratio(),
            pr.join(", "),
            fmt_us(Outcome::med(&o.gw, |x| x.p50_us)),
            fmt_us(Outcome::med(&o.gw, |x| x.p99_us)),
            fmt_us(Outcome::med(&o.peer, |x| x.p50_us)),
            fmt_us(Outcome::med(&o.peer, |x| x.p99_us)),
            share(&o.gw),
            share(&o.peer),
            reuse,
            Outcome::med(&o.gw, |x| x.cpu_us_per_req),
            Outcome::med(&o.peer, |x| x.cpu_us_per_req),
        );
    }
    let _ = writeln!(
        r,
        "\nreq/s and latencies: median of the rounds; non-2xx and socket errors: sum over the measured rounds (share of all requests); reuse: `mtls_gateway_upstream_connections_total` delta over the measured rounds; CPU: user+system time of the proxy (nginx: master and workers) per request.\n"
    );
    cpu_budget(&mut r, s, outcomes);
    let _ = writeln!(r, "## Scenarios\n");
    for o in outcomes {
        let _ = writeln!(r, "### {}\n\n{}\n", o.name, o.what);
        if let Some(f) = &o.failed {
            let _ = writeln!(r, "FAILED:\n```\n{f}\n```\n");
            continue;
        }
        let side = |x: &WrkRun, conns: bool| {
            format!(
                "{:.0} req/s (p99 {}, cpu {:.0} us/req, upstream cpu {:.0} us/req{})",
                x.rps,
                fmt_us(x.p99_us),
                x.cpu_us_per_req,
                x.upstream_cpu_us_per_req,
                if conns {
                    format!(
                        ", {} new upstream connections for {} requests",
                        x.new_conns, x.upstream_uses
                    )
                } else {
                    String::new()
                }
            )
        };
        for (i, (g, n)) in o.gw.iter().zip(&o.peer).enumerate() {
            let _ = writeln!(
                r,
                "- round {i}: gateway {}, {p} {}",
                side(g, true),
                side(n, s.peer_bin.is_some())
            );
        }
        let ok_rate = |v: &[WrkRun]| {
            Outcome::med(v, |x| {
                x.rps * (1.0 - x.non2xx as f64 / (x.requests.max(1)) as f64)
            })
        };
        let _ = writeln!(
            r,
            "- 2xx responses/s (median of rounds): gateway {:.0}, {p} {:.0}",
            ok_rate(&o.gw),
            ok_rate(&o.peer)
        );
        for (who, kib) in [("gateway", o.gw_rss_kib), (p, o.peer_rss_kib)] {
            if let Some((rss, hwm)) = kib {
                let _ = writeln!(
                    r,
                    "- {who} RSS after the rounds: {:.1} MiB (peak {:.1} MiB)",
                    rss as f64 / 1024.0,
                    hwm as f64 / 1024.0
                );
            }
        }
        for n in &o.notes {
            let _ = writeln!(r, "- {}", n.replace('\n', "\n  "));
        }
        let _ = writeln!(r);
    }
    let _ = writeln!(r, "## Memory\n");
    match mem {
        None => {
            let _ = writeln!(r, "skipped (LOAD_SKIP_MEMORY=1)");
        }
        Some(Err(e)) => {
            let _ = writeln!(r, "FAILED: {e:#}");
        }
        Some(Ok(m)) => {
            let mib = |k: u64| k as f64 / 1024.0;
            let _ = writeln!(
                r,
                "{} certificates (distinct keys, PKCS#12 PBES2/AES-256) and {} mappings in the file store (seeded in {:.0} s); the gateway was ready {:.1} s after start with {} certificates available and {} mappings.\n",
                m.certs, m.mappings, m.seed_secs, m.ready_secs, m.loaded_certs, m.loaded_mappings
            );
            let _ = writeln!(r, "| when | VmRSS | VmHWM (peak) | target |");
            let _ = writeln!(r, "|---|---|---|---|");
            let verdict = |k: u64| {
                if mib(k) <= 200.0 {
                    "<= 200 MiB: met"
                } else {
                    "> 200 MiB: MISSED"
                }
            };
            let _ = writeln!(
                r,
                "| at /ready | {:.1} MiB | {:.1} MiB | {} |",
                mib(m.at_ready.0),
                mib(m.at_ready.1),
                verdict(m.at_ready.0.max(m.at_ready.1))
            );
            let _ = writeln!(
                r,
                "| 5 s later | {:.1} MiB | {:.1} MiB | {} |",
                mib(m.after.0),
                mib(m.after.1),
                verdict(m.after.0.max(m.after.1))
            );
        }
    }
    r
}

// ------------------------------------------------------------------------------ main

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load harness: run it with `cargo bench --bench load` (skipped in test mode)");
        return;
    }
    if let Err(e) = run() {
        eprintln!("load harness failed: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let s = Settings::from_env()?;
    for tool in ["nginx", "wrk"] {
        if Command::new("which")
            .arg(tool)
            .stdout(Stdio::null())
            .status()
            .map(|st| !st.success())
            .unwrap_or(true)
        {
            bail!("`{tool}` is not installed; run .ci/setup (apt-get install nginx wrk)");
        }
    }
    let started = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let started = format!("{started} (UTC); load average at start {}", loadavg());
    let tmp = tempfile::Builder::new().prefix("mtls-load-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir_all(logs_dir())?;
    println!(
        "load: dir {}, gateway {GATEWAY_BIN}, peer {}, threads {}, {} x {} s rounds, scenarios {}",
        dir.display(),
        peer_description(&s),
        s.threads,
        s.rounds,
        s.secs,
        s.scenarios.join(",")
    );

    let t = Instant::now();
    let pki = make_pki(&dir)?;
    let www = dir.join("www");
    write_file(&www.join("64k"), &vec![b'x'; 64 * 1024])?;
    let body = "x".repeat(100);
    let up_port = free_port()?;
    let upstream = Nginx::start(
        &dir,
        "upstream",
        &fill(
            UPSTREAM_CONF,
            &[
                ("USER", nginx_user()),
                ("DIR", dir.display().to_string()),
                ("PORT", up_port.to_string()),
                ("BODY", body),
            ],
        )?,
        up_port,
    )?;
    let store = dir.join("store");
    seed_load_store(&store, &pki, up_port)?;
    println!(
        "load: PKI ({} client certificates) and store seeded in {:.1} s; upstream nginx on {up_port}",
        SPREAD + 1,
        t.elapsed().as_secs_f64()
    );

    let b = Bench {
        s: &s,
        dir: dir.clone(),
        upstream: &upstream,
        ticks: clock_ticks_per_sec(),
    };
    let mut results = Vec::new();
    for name in &s.scenarios {
        let sc = scenario(name, &s)?;
        println!("scenario {}: {}", sc.name, sc.what);
        let o = match run_scenario(&b, &pki, &store, &sc) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("scenario {} FAILED: {e:#}", sc.name);
                Outcome {
                    name: sc.name.to_string(),
                    what: sc.what.to_string(),
                    failed: Some(format!("{e:#}")),
                    ..Outcome::default()
                }
            }
        };
        for f in [
            format!("gateway-{}.log", sc.name),
            format!("peer-{}-error.log", sc.name),
            format!("peer-{}.log", sc.name),
        ] {
            let _ = std::fs::copy(dir.join(&f), logs_dir().join(&f));
        }
        if o.failed.is_none() {
            println!(
                "  => gateway {:.0} req/s, {} {:.0} req/s, ratio {:.2}",
                Outcome::med(&o.gw, |x| x.rps),
                s.peer_name(),
                Outcome::med(&o.peer, |x| x.rps),
                o.ratio()
            );
        }
        results.push(o);
    }
    let _ = std::fs::copy(
        dir.join("upstream-error.log"),
        logs_dir().join("upstream-error.log"),
    );
    drop(b);
    drop(upstream);

    let mem = if s.skip_memory {
        None
    } else {
        let m = memory(&s, &dir, &pki);
        if let Err(e) = &m {
            eprintln!("memory measurement FAILED: {e:#}");
        }
        Some(m)
    };

    let text = report(&s, &results, mem.as_ref(), &started);
    println!("\n{text}");
    let path = target_dir().join("load-report.md");
    std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
    println!("report written to {}", path.display());
    if s.keep_dir {
        let kept = tmp.keep();
        println!("temp dir kept: {}", kept.display());
    }
    if results.iter().any(|o| o.failed.is_some()) || matches!(mem, Some(Err(_))) {
        bail!("some scenarios failed; see the report");
    }
    Ok(())
}
