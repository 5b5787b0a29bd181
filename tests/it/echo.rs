//! The mTLS echo target: real TLS handshakes with generated certificates, a hand-written HTTP/1.1
//! client (so framing, keep-alive and chunking are visible), no sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boring::asn1::{Asn1Integer, Asn1Time};
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::ssl::{SslConnector, SslMethod};
use boring::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use boring::x509::{X509Name, X509};
use mtls_gateway::dev::echo::{self, EchoConfig, EchoServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// ---- certificates made at test time ------------------------------------------------------------

struct Issued {
    cert: X509,
    key: PKey<Private>,
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 is built in");
    PKey::from_ec_key(EcKey::generate(&group).expect("EC keygen")).expect("EC key to PKey")
}

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().expect("name builder");
    n.append_entry_by_text("O", "Echo Tests").expect("O");
    n.append_entry_by_text("CN", cn).expect("CN");
    n.build()
}

enum Kind {
    Ca,
    Server,
    Client,
}

fn make_cert(cn: &str, serial: u32, kind: Kind, issuer: Option<&Issued>) -> Issued {
    let key = ec_key();
    let mut b = X509::builder().expect("x509 builder");
    b.set_version(2).expect("version");
    let serial: Asn1Integer = BigNum::from_u32(serial)
        .and_then(|bn| bn.to_asn1_integer())
        .expect("serial");
    b.set_serial_number(&serial).expect("set serial");
    let subject = name(cn);
    b.set_subject_name(&subject).expect("subject");
    match issuer {
        Some(i) => b.set_issuer_name(i.cert.subject_name()).expect("issuer"),
        None => b.set_issuer_name(&subject).expect("issuer"),
    }
    b.set_pubkey(&key).expect("pubkey");
    let not_before = Asn1Time::days_from_now(0).expect("now");
    let not_after = Asn1Time::days_from_now(30).expect("later");
    b.set_not_before(&not_before).expect("not before");
    b.set_not_after(&not_after).expect("not after");
    match kind {
        Kind::Ca => {
            let bc = BasicConstraints::new().critical().ca().build().expect("bc");
            b.append_extension(&bc).expect("bc");
            let ku = KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku");
            b.append_extension(&ku).expect("ku");
        }
        Kind::Server => {
            let eku = ExtendedKeyUsage::new().server_auth().build().expect("eku");
            b.append_extension(&eku).expect("eku");
            let san = SubjectAlternativeName::new()
                .dns("localhost")
                .ip("127.0.0.1")
                .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
                .expect("san");
            b.append_extension(&san).expect("san");
        }
        Kind::Client => {
            let eku = ExtendedKeyUsage::new().client_auth().build().expect("eku");
            b.append_extension(&eku).expect("eku");
        }
    }
    let signer = issuer.map(|i| &i.key).unwrap_or(&key);
    b.sign(signer, MessageDigest::sha256()).expect("sign");
    Issued {
        cert: b.build(),
        key,
    }
}

struct Pki {
    ca: Issued,
    server: Issued,
    client: Issued,
}

fn pki() -> Pki {
    let ca = make_cert("Echo Test CA", 1, Kind::Ca, None);
    let server = make_cert("localhost", 2, Kind::Server, Some(&ca));
    let client = make_cert("test-client", 0xC0FFEE, Kind::Client, Some(&ca));
    Pki { ca, server, client }
}

fn config(pki: &Pki, client_ca: bool, require: bool) -> EchoConfig {
    EchoConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
        chain: vec![],
        client_ca: if client_ca {
            vec![pki.ca.cert.clone()]
        } else {
            vec![]
        },
        require_client_cert: require,
    }
}

// ---- a minimal HTTP/1.1 client over tokio-boring -----------------------------------------------

struct Client {
    io: BufReader<tokio_boring::SslStream<TcpStream>>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn connect(addr: SocketAddr, ca: &X509, identity: Option<&Issued>) -> AnyResult<Client> {
    let mut b = SslConnector::builder(SslMethod::tls())?;
    b.cert_store_mut().add_cert(ca.clone())?;
    if let Some(id) = identity {
        b.set_certificate(&id.cert)?;
        b.set_private_key(&id.key)?;
    }
    let connector = b.build();
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_boring::connect(connector.configure()?, "localhost", tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(Client {
        io: BufReader::new(tls),
    })
}

impl Client {
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> AnyResult<Resp> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        self.io.write_all(head.as_bytes()).await?;
        self.io.write_all(body).await?;
        self.io.flush().await?;

        let mut line = String::new();
        if self.io.read_line(&mut line).await? == 0 {
            return Err("connection closed before a response".into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .ok_or("no status code")?
            .parse()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.io.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').ok_or("bad header line")?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
            chunked: false,
        };
        if method == "HEAD" || status == 204 || status == 304 {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            resp.chunked = true;
            loop {
                line.clear();
                self.io.read_line(&mut line).await?;
                let size =
                    usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)?;
                if size == 0 {
                    // Trailers, then the blank line.
                    loop {
                        line.clear();
                        self.io.read_line(&mut line).await?;
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let start = resp.body.len();
                resp.body.resize(start + size, 0);
                self.io.read_exact(&mut resp.body[start..]).await?;
                let mut crlf = [0u8; 2];
                self.io.read_exact(&mut crlf).await?;
            }
        } else {
            let len: usize = resp.header("content-length").ok_or("no framing")?.parse()?;
            resp.body.resize(len, 0);
            self.io.read_exact(&mut resp.body).await?;
        }
        Ok(resp)
    }

    async fn get(&mut self, path: &str) -> AnyResult<Resp> {
        self.request("GET", path, &[], &[]).await
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn sha256_hex(cert: &X509) -> String {
    hex::encode(cert.digest(MessageDigest::sha256()).expect("digest"))
}

// ---- tests -------------------------------------------------------------------------------------

#[tokio::test]
async fn echo_reports_the_client_certificate_it_verified() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    let mut c = connect(server.addr, &pki.ca.cert, Some(&pki.client))
        .await
        .expect("connect");
    let r = c.get("/bytes/10").await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-client-cert-sha256"),
        Some(sha256_hex(&pki.client.cert).as_str())
    );
    assert_eq!(
        r.header("x-client-cert-subject"),
        Some("O=Echo Tests, CN=test-client")
    );
    assert_eq!(r.header("x-client-cert-serial"), Some("c0ffee"));
    assert_eq!(r.header("x-connection-id"), Some("1"));
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn echo_refuses_a_client_without_certificate_when_required() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    // With TLS 1.3 the client may finish its side of the handshake before the server rejects it;
    // the refusal then shows on the first read.
    let outcome = match connect(server.addr, &pki.ca.cert, None).await {
        Err(_) => None,
        Ok(mut c) => c.get("/bytes/1").await.ok(),
    };
    assert!(
        outcome.is_none(),
        "request without client cert answered: {outcome:?}"
    );
    eventually("the handshake failure to be counted", || {
        server.handshake_failures() == 1
    })
    .await;
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn echo_refuses_a_client_certificate_from_another_ca() {
    let pki = pki();
    let other = self::pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    let outcome = match connect(server.addr, &pki.ca.cert, Some(&other.client)).await {
        Err(_) => None,
        Ok(mut c) => c.get("/bytes/1").await.ok(),
    };
    assert!(
        outcome.is_none(),
        "untrusted client cert answered: {outcome:?}"
    );
    eventually("the handshake failure to be counted", || {
        server.handshake_failures() == 1
    })
    .await;
}

#[tokio::test]
async fn echo_without_client_ca_reports_none() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, false, false))
        .await
        .expect("start");
    let mut c = connect(server.addr, &pki.ca.cert, None)
        .await
        .expect("connect");
    let r = c.get("/status/201").await.expect("request");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-client-cert-sha256"), Some("none"));
    assert_eq!(r.header("x-client-cert-subject"), Some("none"));
    assert_eq!(r.header("x-client-cert-serial"), Some("none"));
}

#[tokio::test]
async fn echo_requires_client_ca_when_client_cert_is_required() {
    let pki = pki();
    let err = EchoServer::start(config(&pki, false, true))
        .await
        .err()
        .expect("must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn bytes_route_returns_the_pattern_with_content_length() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    let mut c = connect(server.addr, &pki.ca.cert, Some(&pki.client))
        .await
        .expect("connect");
    for n in [0usize, 1, 250, 251, 252, 65_536, 200_003] {
        let r = c.get(&format!("/bytes/{n}")).await.expect("request");
        assert_eq!(r.status, 200);
        assert!(!r.chunked);
        assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
        assert!(r.body == echo::pattern(n), "/bytes/{n} body differs");
    }
}

#[tokio::test]
async fn chunked_route_streams_the_pattern_without_content_length() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    let mut c = connect(server.addr, &pki.ca.cert, Some(&pki.client))
        .await
        .expect("connect");
    let r = c.get("/chunked/200003").await.expect("request");
    assert_eq!(r.status, 200);
    assert!(
        r.chunked,
        "expected transfer-encoding: chunked, got {:?}",
        r.headers
    );
    assert_eq!(r.header("content-length"), None);
    assert!(r.body == echo::pattern(200_003));
}

#[tokio::test]
async fn other_paths_echo_the_body_and_report_what_they_saw() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    let mut c = connect(server.addr, &pki.ca.cert, Some(&pki.client))
        .await
        .expect("connect");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = c
        .request(
            "POST",
            "/any/where?x=1&y=%20",
            &[("content-type", "application/x-test")],
            &body,
        )
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echoed body differs");
    assert_eq!(r.header("content-type"), Some("application/x-test"));
    assert_eq!(r.header("x-seen-method"), Some("POST"));
    assert_eq!(r.header("x-seen-path"), Some("/any/where?x=1&y=%20"));
    assert_eq!(r.header("x-seen-host"), Some("localhost"));
}

#[tokio::test]
async fn headers_route_returns_request_headers_as_json() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    let mut c = connect(server.addr, &pki.ca.cert, Some(&pki.client))
        .await
        .expect("connect");
    let r = c
        .request("GET", "/headers", &[("x-test", "a"), ("x-test", "b")], &[])
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(json["host"], "localhost");
    assert_eq!(json["x-test"], "a, b");
}

#[tokio::test]
async fn keep_alive_connections_keep_their_connection_id() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    let mut a = connect(server.addr, &pki.ca.cert, Some(&pki.client))
        .await
        .expect("connect");
    let first = a.get("/slow/1").await.expect("request");
    let second = a.get("/status/404").await.expect("request");
    assert_eq!(first.body, b"ok");
    assert_eq!(second.status, 404);
    assert_eq!(
        first.header("x-connection-id"),
        second.header("x-connection-id")
    );
    let mut b = connect(server.addr, &pki.ca.cert, Some(&pki.client))
        .await
        .expect("connect");
    let third = b.get("/bytes/1").await.expect("request");
    assert_ne!(
        first.header("x-connection-id"),
        third.header("x-connection-id")
    );
    assert_eq!(server.connections(), 2);
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_and_closes_the_listener() {
    let pki = pki();
    let server = EchoServer::start(config(&pki, true, true))
        .await
        .expect("start");
    let addr = server.addr;
    let mut c = connect(addr, &pki.ca.cert, Some(&pki.client))
        .await
        .expect("connect");
    let slow = tokio::spawn(async move { c.get("/slow/300").await.map(|r| (r.status, r.body)) });
    eventually("the slow request to arrive", || server.requests() == 1).await;
    server.shutdown();
    let (status, body) = slow.await.expect("join").expect("in-flight request");
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    tokio::time::timeout(Duration::from_secs(10), server.stopped())
        .await
        .expect("stopped in time");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

#[test]
fn spawn_on_thread_serves_without_a_caller_runtime() {
    let pki = pki();
    let server = echo::spawn_on_thread(config(&pki, true, true)).expect("spawn");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let mut c = connect(server.addr, &pki.ca.cert, Some(&pki.client))
            .await
            .expect("connect");
        let r = c.get("/bytes/3").await.expect("request");
        assert_eq!(r.body, vec![0, 1, 2]);
        drop(c);
        server.shutdown();
        tokio::time::timeout(Duration::from_secs(10), server.stopped())
            .await
            .expect("stopped in time");
    });
}
