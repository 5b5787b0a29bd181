//! Operations: config errors, health endpoints, metrics page, shutdown, the demo command.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// `mtls-gateway SUB --config C` under `timeout 20`, with `yaml` as C in a fresh directory
/// (relative paths in it resolve there) and, if `missing_tmp`, `TMPDIR` pointed at a directory
/// that does not exist: the exit code and standard error.
fn with_config(sub: &str, yaml: &str, missing_tmp: bool) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).expect("write");
    let mut cmd = Command::new("timeout");
    cmd.args(["20", env!("CARGO_BIN_EXE_mtls-gateway"), sub, "--config"])
        .arg(&path);
    if missing_tmp {
        cmd.env("TMPDIR", dir.path().join("missing"));
    }
    let out = cmd.output().expect("run the gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(yaml: &str) -> (i32, String) {
    with_config("check", yaml, false)
}

#[test]
fn each_kind_of_bad_config_gives_a_one_line_error_naming_the_key_and_exit_64() {
    let cases = [
        ("proxy:\n  lisen: []\n", "lisen"),
        (
            "proxy:\n  listen: [\"0.0.0.0:8080\"]\n",
            "proxy.allow_remote",
        ),
        ("proxy:\n  listen: [\"nonsense\"]\n", "proxy.listen[0]"),
        ("admin:\n  listen: \"10.1.2.3:80\"\n", "admin.allow_remote"),
        ("ops:\n  listen: \"0.0.0.0:9100\"\n", "ops.allow_remote"),
        ("refresh:\n  interval_secs: 0\n", "refresh.interval_secs"),
        (
            "rate_limit:\n  requests_per_second: 0\n",
            "rate_limit.requests_per_second",
        ),
        (
            "rate_limit:\n  trusted_proxies: [\"not-an-ip\"]\n",
            "rate_limit.trusted_proxies[0]",
        ),
        ("store:\n  kind: s3\n", "store.kind"),
        ("store:\n  kind: vault\n", "store.vault"),
        (
            "upstream:\n  ca_files: [\"/nonexistent/ca.pem\"]\n",
            "upstream.ca_files[0]",
        ),
        (
            "upstream:\n  connect_timeout_ms: 0\n",
            "upstream.connect_timeout_ms",
        ),
        (
            "unmapped:\n  policy: plain_tls\n",
            "unmapped.plain_tls_hosts",
        ),
        ("unmapped:\n  policy: open\n", "unmapped.policy"),
        ("proxy:\n  default_service: NOPE\n", "proxy.default_service"),
        (
            "proxy:\n  listen: [\"0.0.0.0:8080\"]\n  allow_remote: true\n",
            "proxy.auth",
        ),
        (
            "shutdown:\n  grace_period_secs: 99999\n",
            "shutdown.grace_period_secs",
        ),
        (
            "proxy:\n  client_idle_timeout_secs: 0\n",
            "proxy.client_idle_timeout_secs",
        ),
        (
            "proxy:\n  client_timeout_secs: 4000\n",
            "proxy.client_timeout_secs",
        ),
        ("proxy: [1, 2\n", "line"),
        (
            "proxy:\n  access_log: \"yes\"\n",
            "proxy.access_log: invalid type: string \"yes\", expected a boolean at line 2 column 15; fix",
        ),
        (
            "proxy:\n  listen: [\"127.0.0.1:18080\"]\nops:\n  listen: \"127.0.0.1:18080\"\n",
            "ops.listen: 127.0.0.1:18080 overlaps proxy.listen[0]",
        ),
        (
            "proxy:\n  listen: [\"127.0.0.1:18080\"]\nadmin:\n  listen: \"0.0.0.0:18080\"\n  allow_remote: true\n",
            "admin.listen: 0.0.0.0:18080 overlaps proxy.listen[0]",
        ),
    ];
    for (yaml, needle) in cases {
        let (code, err) = check(yaml);
        assert_eq!(code, 64, "{yaml:?} should be refused, got {code}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one line for {yaml:?}: {err}"
        );
        assert!(
            err.contains(needle),
            "{yaml:?}: error {err:?} should name {needle:?}"
        );
    }
    let (code, err) = check("proxy:\n  default_account: \"42\"\n");
    assert_eq!(code, 0, "{err}");
}

/// Port 0 means "any free port" for each listener on its own, so two listeners on port 0 are
/// not a clash (the overlap check once refused them).
#[test]
fn listeners_on_port_0_do_not_count_as_overlapping() {
    let (code, err) = check(
        "proxy:\n  listen: [\"127.0.0.1:0\"]\nops:\n  listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n",
    );
    assert_eq!(code, 0, "{err}");
}

/// `mtls-gateway run` on a file-store config with the proxy on `listen` and `extra` YAML
/// appended (see [`with_config`]).
fn run_failing_start(listen: &str, extra: &str, missing_tmp: bool) -> (i32, String) {
    with_config(
        "run",
        &format!(
            "proxy:\n  listen: [\"{listen}\"]\nops:\n  listen: \"127.0.0.1:0\"\nadmin:\n  enabled: false\nstore:\n  kind: file\n  path: store\n{extra}"
        ),
        missing_tmp,
    )
}

/// A proxy port another process holds: the gateway exits at once with the key and the address,
/// where Pingora alone retried for 30 s and then ran on without a proxy listener.
#[test]
fn a_proxy_port_held_by_another_process_stops_the_start_with_the_key_named() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let port = holder.local_addr().expect("addr").port();
    let start = Instant::now();
    let (code, err) = run_failing_start(&format!("127.0.0.1:{port}"), "", false);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "proxy.listen[0]: cannot listen on 127.0.0.1:{port}"
        )),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    drop(holder);
}

#[test]
fn every_config_in_conf_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("conf/") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("yaml") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_mtls-gateway"))
            .args(["check", "--config"])
            .arg(&p)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(
        n >= 2,
        "conf/ should hold the example and the minimal config"
    );
}

#[test]
fn ready_only_after_the_first_snapshot_and_metrics_pass_promtool() {
    let OneMapping {
        pki,
        echo: _echo,
        cert: _,
        dir,
        seed: _,
        port,
    } = OneMapping::new("a");
    let gw = Gw::start(dir.path(), &pki.ca_path, "");
    let (live, _, _) = blocking_get(&format!("http://{}/live", gw.ops)).expect("live");
    assert_eq!(live, 200);
    let (ready, _, body) = blocking_get(&format!("http://{}/ready", gw.ops)).expect("ready");
    assert_eq!(ready, 200, "{}", String::from_utf8_lossy(&body));
    let r = raw_request(
        gw.proxy,
        &format!("GET http://localhost:{port}/x HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
    )
    .expect("request");
    assert_eq!(r.0, 200);

    let page = gw.metrics();
    for series in [
        "mtls_gateway_requests_total{mode=\"transparent\",outcome=\"proxied\",status_class=\"2xx\"} 1",
        "mtls_gateway_upstream_connections_total{reused=\"false\"} 1",
        "mtls_gateway_certificates{status=\"available\"} 1",
        "mtls_gateway_mappings 1",
        "mtls_gateway_mapped_requests_total{account=\"acc\",certificate=\"1\",service=\"TEST_SERVICE\"} 1",
    ] {
        assert!(page.contains(series), "missing {series:?} in\n{page}");
    }
    assert!(page.contains(
        "mtls_gateway_certificate_not_after_timestamp_seconds{account=\"acc\",certificate=\"1\"}"
    ));
    assert!(page.contains("mtls_gateway_snapshot_age_seconds"));
    assert!(page.contains("mtls_gateway_last_refresh_success_timestamp_seconds"));
    assert!(!page.contains("127.0.0.1"), "no client IP in labels");
    assert!(!page.contains("localhost:"), "no raw URL in labels");

    let promtool = which("promtool").expect(
        "promtool is required for this test (Debian package `prometheus`; .ci/run installs it)",
    );
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

#[test]
fn not_ready_and_not_serving_while_the_store_cannot_be_read() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    // A store path that is a file, not a directory: the store cannot open.
    let gw = Gw::spawn(
        dir.path(),
        &pki.ca_path,
        "store:\n  kind: vault\n  vault:\n    address: \"http://127.0.0.1:1\"\n    auth:\n      method: token\n      token_env: MTLS_TEST_NO_SUCH_TOKEN\n",
    );
    let (status, body) = wait_for("ops listener", Duration::from_secs(20), || {
        blocking_get(&format!("http://{}/ready", gw.ops))
            .ok()
            .map(|(s, _, b)| (s, String::from_utf8_lossy(&b).to_string()))
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no snapshot loaded yet"), "{body}");
    assert!(
        std::net::TcpStream::connect(gw.proxy).is_err(),
        "proxy must not listen before the first snapshot"
    );
}

#[test]
fn sigterm_with_nothing_in_flight_exits_within_two_seconds() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tmp");
    let _seed = Seed::new(dir.path());
    let mut gw = Gw::start(dir.path(), &pki.ca_path, "");
    gw.signal("TERM");
    let took = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exit after SIGTERM");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let OneMapping {
        pki,
        echo: _echo,
        cert: _,
        dir,
        seed: _,
        port,
    } = OneMapping::new("a");
    let mut gw = Gw::start(dir.path(), &pki.ca_path, "");
    let proxy = gw.proxy;
    let t = std::thread::spawn(move || {
        raw_request(
            proxy,
            &format!("GET http://localhost:{port}/slow/1500 HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    gw.signal("TERM");
    let r = t.join().expect("join").expect("in-flight request");
    assert_eq!(r.0, 200, "the in-flight request finishes");
    let took = gw.wait_exit(Duration::from_secs(10)).expect("exit");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "exit soon after the drain: {took:?}"
    );
}

#[test]
fn the_demo_command_shows_the_target_saw_the_client_certificate() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_mtls-gateway"))
        .args(["demo", "--once", "--port", "0", "--dir"])
        .arg(dir.path())
        .output()
        .expect("demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK: the target received the demo client certificate"),
        "{stdout}"
    );
    assert!(stdout.contains("CN=demo-client"), "{stdout}");
    // The secret is in the store with 0600, never in the output.
    assert!(!stdout.contains("demo-password"));
    use std::os::unix::fs::PermissionsExt;
    let f = dir
        .path()
        .join("store/accounts/demo/certificates/1001.json");
    let mode = std::fs::metadata(&f)
        .expect("stored cert")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

type DemoOut = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// `mtls-gateway demo --port 0` with `args`, serving until stopped (`TMPDIR` set to `tmpdir`
/// if given): the child, its output, and the rest of its first line starting with `prefix`.
fn serve_demo(
    args: &[&str],
    tmpdir: Option<&std::path::Path>,
    prefix: &str,
) -> (std::process::Child, DemoOut, String) {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtls-gateway"));
    cmd.args(["demo", "--port", "0"]).args(args);
    if let Some(t) = tmpdir {
        cmd.env("TMPDIR", t);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let rest = loop {
        let line = lines.next().expect("demo output").expect("line");
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.trim().to_string();
        }
    };
    (child, lines, rest)
}

/// Names in `dir` starting with `prefix`.
fn names_with_prefix(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn the_demo_keeps_serving_the_request_it_prints_until_stopped() {
    let dir = tempfile::tempdir().expect("tmp");
    let dir_arg = dir.path().display().to_string();
    let (mut child, _out, request) = serve_demo(&["--dir", &dir_arg], None, "request:");
    // "curl -x http://127.0.0.1:P http://localhost:T/headers"
    let words: Vec<&str> = request.split_whitespace().collect();
    let proxy: std::net::SocketAddr = words[2]
        .trim_start_matches("http://")
        .parse()
        .expect("proxy addr");
    let url = words[3];
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    std::thread::sleep(Duration::from_millis(500));
    let r = raw_request(
        proxy,
        &format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    let _ = child.kill();
    let _ = child.wait();
    let (status, headers, _) = r.expect("the printed request works after the demo's own");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "x-client-cert-subject"),
        Some("CN=demo-client")
    );
}

/// The trust bundle (system roots + `upstream.ca_files`) is a temporary file the connectors load
/// at start. Removed only at a clean exit, every SIGKILL, OOM kill or crash left one behind
/// (220 KiB each with the system roots); it must be gone once the gateway runs, and both
/// connectors must still verify targets without it.
#[test]
fn no_temporary_trust_bundle_is_left_once_the_gateway_runs() {
    let m = OneMapping::new("a");
    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        &format!(
            "upstream:\n  ca_files: [\"{}\"]\n  use_system_roots: true\n",
            m.pki.ca_path.display()
        ),
    );
    let left = || names_with_prefix(m.dir.path(), "mtls-gateway-trust-");
    assert_eq!(
        left(),
        Vec::<String>::new(),
        "removed once the gateway is ready"
    );
    let host = format!("localhost:{}", m.port);
    // Upstream connections after the removal, verified against the CA: over HTTP/1.1 and over
    // HTTP/2 with prior knowledge (Pingora's server, the same connector).
    let req = format!("GET /bytes/3 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = raw_request(gw.proxy, &req).expect("proxied");
    assert_eq!(
        (status, body.len()),
        (200, 3),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let proxy = gw.proxy;
    let (status, _, body) = block(async move {
        let tcp = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{host}/bytes/5"))
            .body(())
            .expect("request");
        crate::fast::h2_ask(&client, req, None).await
    });
    assert_eq!(
        (status, body.len()),
        (200, 5),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(m.echo.requests(), 2);
    // One connector for both engines: the HTTP/2 stream may reuse the first request's pooled
    // connection; at least one new connection was verified after the file went.
    assert!(gw.metric("mtls_gateway_upstream_connections_total{reused=\"false\"}") >= 1.0);
    drop(gw); // SIGKILL
    assert_eq!(left(), Vec::<String>::new(), "nothing left after a SIGKILL");
}

/// Without `--dir` the demo's files (config, CA, a client key in the store) live in a temporary
/// directory; it used to be kept after every run. Both ways of stopping must remove it.
#[test]
fn the_demo_removes_its_temporary_directory_when_it_stops() {
    let tmp = tempfile::tempdir().expect("tmp");
    let demo_dirs = || names_with_prefix(tmp.path(), "mtls-gateway-demo-");
    // 1. `--once`: exits after the demonstration request.
    let out = Command::new(env!("CARGO_BIN_EXE_mtls-gateway"))
        .args(["demo", "--once", "--port", "0"])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("removed when the demo stops"), "{stdout}");
    assert_eq!(demo_dirs(), Vec::<String>::new(), "after --once");

    // 2. Serving until Ctrl-C (SIGINT).
    let (mut child, _out, files) = serve_demo(&[], Some(tmp.path()), "files:");
    let files = files.split_whitespace().next().unwrap_or("").to_string();
    assert!(
        std::path::Path::new(&files).join("config.yaml").is_file(),
        "the files exist while the demo runs: {files}"
    );
    assert_eq!(demo_dirs().len(), 1);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.is_some(), "the demo stops on SIGINT");
    assert_eq!(demo_dirs(), Vec::<String>::new(), "after Ctrl-C");
}

/// With `upstream.ca_files` the gateway writes its trust bundle to the temporary directory at
/// start; a missing or read-only one (a read-only root filesystem without a /tmp mount) must stop
/// the start with the key and the fix named, not a bare "No such file or directory".
#[test]
fn an_unwritable_temporary_directory_stops_the_start_naming_ca_files_and_tmpdir() {
    let pki = Pki::new();
    let (code, err) = run_failing_start(
        "127.0.0.1:0",
        &format!("upstream:\n  ca_files: [\"{}\"]\n", pki.ca_path.display()),
        true,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("upstream.ca_files: cannot write the trust bundle") && err.contains("TMPDIR"),
        "{err}"
    );
}

/// The alert rules shipped with the chart (helm/mtls-gateway/files/prometheus-rules.yaml) are
/// valid, pass their unit tests (tests/prometheus-rules.test.yaml: each alert fires on the
/// series it is for, not before its `for:`, and not on healthy ones), and use only metrics a
/// running gateway exports.
#[test]
fn alert_rules_are_valid_pass_their_promtool_tests_and_name_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("helm/mtls-gateway/files/prometheus-rules.yaml");
    let promtool = which("promtool").expect(
        "promtool is required for this test (Debian package `prometheus`; .ci/run installs it)",
    );
    for args in [
        vec!["check", "rules", rules.to_str().expect("utf-8 path")],
        vec!["test", "rules", "prometheus-rules.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(root.join("tests"))
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every metric the rules name is on a running gateway's page (with one certificate and
    // one proxied request behind it).
    let text = std::fs::read_to_string(&rules).expect("rules file");
    let mut names: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("mtls_gateway_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(
        names.len() >= 6,
        "metric names found in the rules: {names:?}"
    );
    let m = OneMapping::new("a");
    let gw = Gw::start(m.dir.path(), &m.pki.ca_path, "");
    let r = raw_request(
        gw.proxy,
        &format!(
            "GET http://localhost:{0}/x HTTP/1.1\r\nHost: localhost:{0}\r\nConnection: close\r\n\r\n",
            m.port
        ),
    )
    .expect("proxied");
    assert_eq!(r.0, 200);
    let page = gw.metrics();
    for name in names {
        assert!(
            page.contains(&format!("# TYPE {name} ")),
            "the rules use {name}, which the gateway does not export"
        );
    }
}
