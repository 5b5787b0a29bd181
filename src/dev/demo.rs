//! `mtls-gateway demo`: the whole job on one machine, no Vault.
//!
//! Makes a demo CA, a server certificate for `localhost` and a client certificate; starts a local
//! mTLS echo target that demands a client certificate from that CA; seeds the file store with the
//! client certificate (PKCS#12 + password) and a mapping `demo / TEST_SERVICE /
//! https://localhost:PORT/*`; writes a config; runs the gateway; sends one request through it and
//! prints which client certificate the target saw.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Config;
use crate::dev::certgen::{self, Leaf};
use crate::dev::echo::EchoConfig;
use crate::store::file::FileStore;
use crate::store::{
    CertificateMeta, CertificateSecret, Mapping, MappingDocument, Store, StoredCertificate,
};

/// Status, lower-cased headers and body of a response.
pub type RawResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// A minimal HTTP/1.1 request through a proxy (absolute-form), `Connection: close`.
/// Returns (status, headers lower-cased, body).
pub fn get_via_proxy(
    proxy: SocketAddr,
    url: &str,
    extra_headers: &[(&str, &str)],
) -> std::io::Result<RawResponse> {
    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let host = url
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or(r))
        .unwrap_or("");
    let mut req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&buf)
}

/// Parse a whole HTTP/1.1 response read to EOF: status, lower-cased headers, body (de-chunked
/// when `Transfer-Encoding: chunked`). Shared by the demo, the integration tests and the load
/// harness.
pub fn parse_response(buf: &[u8]) -> std::io::Result<RawResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the HTTP response header"))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad HTTP status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = &buf[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, headers, body))
}

/// The data of a chunked body (stops at the last chunk or at the first malformed one).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || eol + 2 + size > b.len() {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The demo's token issuer and audience (its `auth.jwt`).
const DEMO_ISSUER: &str = "mtls-gateway-demo";
const DEMO_AUDIENCE: &str = "mtls-gateway";

/// A token for account `demo`, valid 8 hours, signed with the demo's HS256 secret.
fn demo_token(secret: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        "sub": "demo-user",
        "iss": DEMO_ISSUER,
        "aud": DEMO_AUDIENCE,
        "iat": now,
        "exp": now + 8 * 3600,
        "accountId": "demo",
    });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Writes a file only its owner may read (0600).
fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

pub fn run(dir: Option<PathBuf>, port: u16, once: bool) -> anyhow::Result<()> {
    // Without `--dir` the files (a client key among them) go to a temporary directory that is
    // removed when the demo stops, by Ctrl-C or after `--once`.
    let (dir, temp) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("mtls-gateway-demo-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let remove_at_exit = temp.as_ref().map(|t| t.path().to_path_buf());

    // Certificates.
    let ca = certgen::new_ca("mtls-gateway demo CA")?;
    let server = certgen::issue(
        &ca,
        &Leaf::server("localhost", &["localhost"], &[[127, 0, 0, 1].into()]),
    )?;
    let client = certgen::issue(&ca, &Leaf::client("demo-client"))?;
    let password = "demo-password";
    let p12 = certgen::to_p12(&client.cert, &client.key, &[], password)?;
    let client_sha = hex::encode(client.cert.digest(boring::hash::MessageDigest::sha256())?);
    let ca_path = dir.join("demo-ca.pem");
    std::fs::write(&ca_path, certgen::to_pem(&ca.cert))?;

    // The mTLS target.
    let echo = crate::dev::echo::spawn_on_thread(EchoConfig {
        listen: "127.0.0.1:0".parse()?,
        cert: server.cert.clone(),
        key: server.key.clone(),
        chain: vec![],
        client_ca: vec![ca.cert.clone()],
        require_client_cert: true,
    })?;
    let target = format!("https://localhost:{}", echo.addr.port());

    // Seed the store.
    let store_dir = dir.join("store");
    let store = FileStore::open(store_dir.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cert_id = 1001;
    rt.block_on(async {
        store
            .put_certificate(&StoredCertificate {
                meta: CertificateMeta {
                    id: cert_id,
                    account_id: "demo".into(),
                    name: "demo-client".into(),
                    display_name: "demo-client".into(),
                    deleted: false,
                    not_after: None,
                    updated_at: 0,
                },
                secret: CertificateSecret {
                    p12,
                    password: password.into(),
                },
                lifecycle: None,
            })
            .await?;
        store
            .put_mappings(
                "demo",
                &MappingDocument {
                    mappings: vec![Mapping {
                        id: 2001,
                        account_id: "demo".into(),
                        name: "demo-target".into(),
                        service_name: "TEST_SERVICE".into(),
                        url: format!("{target}/*"),
                        certificate_id: cert_id,
                        enabled: true,
                        deleted: false,
                        cutover_check: None,
                    }],
                },
                None,
            )
            .await?;
        Ok::<_, crate::store::StoreError>(())
    })?;

    // The console: a random HS256 secret (0600) the admin API and the console accept, and one
    // token for the demo account, written to a 0600 file (never printed).
    let mut secret = [0u8; 32];
    boring::rand::rand_bytes(&mut secret)?;
    let secret_path = dir.join("console-jwt-secret");
    write_private(&secret_path, hex::encode(secret).as_bytes())?;
    let token = demo_token(&hex::encode(secret))?;
    let token_path = dir.join("console-token.txt");
    write_private(&token_path, format!("{token}\n").as_bytes())?;

    // Config.
    let port = if port == 0 { free_port()? } else { port };
    let (ops, admin) = (free_port()?, free_port()?);
    let config_path = dir.join("config.yaml");
    std::fs::write(
        &config_path,
        format!(
            "# Written by `mtls-gateway demo`.\n\
             proxy:\n  listen: [\"127.0.0.1:{port}\"]\n  default_account: demo\n  default_service: TEST_SERVICE\n\
             admin:\n  listen: \"127.0.0.1:{admin}\"\n  console:\n    enabled: true\n\
             auth:\n  jwt:\n    algorithm: HS256\n    secret_file: console-jwt-secret\n    issuer: {DEMO_ISSUER}\n    audience: {DEMO_AUDIENCE}\n\
             ops:\n  listen: \"127.0.0.1:{ops}\"\n\
             store:\n  kind: file\n  path: store\n\
             upstream:\n  ca_files: [demo-ca.pem]\n\
             shutdown:\n  grace_period_secs: 2\n"
        ),
    )?;
    let cfg = Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        bail!("port {port} is busy; pass --port 0 (any free port) or another number");
    }
    let gateway = crate::build(cfg)?;

    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    let url = format!("{target}/headers");
    // What the app (or curl) sends: plain http; the gateway adds the TLS. (An https:// URL would
    // make curl open a CONNECT tunnel, which the gateway refuses.)
    let plain_url = url.replacen("https://", "http://", 1);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let result = loop {
            match get_via_proxy(proxy, &plain_url, &[]) {
                Ok(r) => break Ok(r),
                Err(e) if Instant::now() > deadline => break Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let ok = match result {
            Ok((status, headers, _)) => {
                let get = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("-")
                };
                println!();
                println!("== mtls-gateway demo ==");
                match &remove_at_exit {
                    Some(_) => println!(
                        "files:            {} (removed when the demo stops; --dir DIR keeps them)",
                        dir.display()
                    ),
                    None => println!("files:            {}", dir.display()),
                }
                println!("request:          curl -x http://127.0.0.1:{port} {plain_url}");
                println!("status:           {status}");
                println!("target saw cert:  {}", get("x-client-cert-subject"));
                println!("cert sha256:      {}", get("x-client-cert-sha256"));
                let matched = get("x-client-cert-sha256") == client_sha;
                if matched {
                    println!(
                        "OK: the target received the demo client certificate over mutual TLS."
                    );
                } else {
                    println!("FAILED: expected client certificate sha256 {client_sha}");
                }
                println!("metrics:          curl http://127.0.0.1:{ops}/metrics");
                println!(
                    "console:          http://127.0.0.1:{admin}/console/ (sign in with the token in {})",
                    token_path.display()
                );
                println!(
                    "admin API:        curl -H \"Authorization: Bearer $(cat {})\" http://127.0.0.1:{admin}/mtls/account/demo/certificates",
                    token_path.display()
                );
                status == 200 && matched
            }
            Err(e) => {
                println!("FAILED: no answer through the gateway: {e}");
                false
            }
        };
        if once {
            // `exit` runs no destructors: remove the temporary directory here.
            if let Some(d) = &remove_at_exit {
                let _ = std::fs::remove_dir_all(d);
            }
            std::process::exit(if ok { 0 } else { 1 });
        }
        println!("serving until Ctrl-C");
    });
    gateway.run();
    // The echo target lives as long as the gateway serves.
    drop(echo);
    drop(temp);
    Ok(())
}
