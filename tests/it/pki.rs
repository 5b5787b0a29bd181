//! Vault PKI as a certificate source (`mtls_gateway::lifecycle::pki`) against a live OpenBao dev
//! server (`tests/it/bao.rs`): a PKI engine with an internal root CA is enabled with the `bao` CLI
//! ([`Bao::enable_pki`], [`Bao::pki_role`]), the store talks to it as the gateway would
//! (`VaultStore` with a token file), and what comes back is checked with BoringSSL: the chain
//! verifies, the SANs are the ones asked for, the key is the CSR's (sign) or the one returned
//! (issue), the TTL is the one asked for. Faults: a deleted role, a role that refuses the name, a
//! missing mount, a token without the policy, a file store, a stopped and a frozen server.
//!
//! Run: `cargo nextest run --test it -E 'test(/pki/)'`.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::stack::Stack;
use boring::x509::extension::SubjectAlternativeName;
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509NameBuilder, X509ReqBuilder, X509StoreContext, X509};
use mtls_gateway::lifecycle::pki::{self, Issued, PkiError};
use mtls_gateway::store::file::FileStore;
use mtls_gateway::store::vault::{VaultConfig, VaultSettings, VaultStore};
use mtls_gateway::store::{PkiSource, Store, StoreError, SubjectSpec};
use serde_json::json;

use crate::bao::Bao;

// ---- helpers ------------------------------------------------------------------------------------

/// A KV v2 store at `secret/` (unused here) whose token is read from a file; PKI requests go to
/// the same server.
fn config(addr: &str, token_file: &Path, timeout_ms: u64) -> VaultConfig {
    let yaml = format!(
        "address: {addr}\nkv_version: 2\nmount: secret\nprefix: mtls-gateway\n\
         request_timeout_ms: {timeout_ms}\nauth:\n  method: token\n  token_file: {}\n",
        token_file.display()
    );
    let s: VaultSettings = serde_yaml::from_str(&yaml).expect("test config parses");
    s.validate("store.vault").expect("test config validates")
}

/// A store on `bao` using `token`.
async fn store_as(bao: &Bao, dir: &Path, token: &str, timeout_ms: u64) -> VaultStore {
    let f = dir.join(format!("token-{}", &token[token.len().saturating_sub(8)..]));
    std::fs::write(&f, format!("{token}\n")).expect("write token file");
    VaultStore::connect(&config(&bao.addr, &f, timeout_ms))
        .await
        .expect("connect")
}

/// Roles of the tests: `client` signs any CSR key for any name (client certificates, at most
/// 1h), `ec-issue` issues EC P-256 keys, `example-only` allows names under example.com only.
const CLIENT_ROLE: &[&str] = &[
    "allow_any_name=true",
    "enforce_hostnames=false",
    "allowed_uri_sans=spiffe://test/*",
    "client_flag=true",
    "server_flag=false",
    "max_ttl=1h",
    "key_type=any",
];

/// A dev server with a PKI engine at `pki` (root CA, max TTL 24h) and the `client` role; the
/// root CA's PEM; a temp dir; a store using the root token.
async fn setup() -> (Bao, String, tempfile::TempDir, VaultStore) {
    let bao = Bao::dev().await;
    let ca = bao.enable_pki("pki", "24h");
    bao.pki_role("pki", "client", CLIENT_ROLE);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_as(&bao, dir.path(), &bao.root_token.clone(), 3000).await;
    (bao, ca, dir, store)
}

fn source(role: &str, mode: &str, ttl: Option<&str>) -> PkiSource {
    PkiSource {
        mount: "pki".into(),
        role: role.into(),
        mode: mode.into(),
        ttl: ttl.map(Into::into),
    }
}

fn subject() -> SubjectSpec {
    SubjectSpec {
        common_name: "svc.test".into(),
        organization: Some("Test Org".into()),
        dns_names: vec!["svc.test".into(), "alt.test".into()],
        ip_addresses: vec!["10.1.2.3".into()],
        emails: vec!["ops@svc.test".into()],
        uris: vec!["spiffe://test/svc".into()],
        ..SubjectSpec::default()
    }
}

/// An EC P-256 key and a CSR for it with the subject's common name and SANs, as the gateway's
/// own CSRs carry them. (Vault's `sign` takes the CN and SANs from the CSR unless the role sets
/// `use_csr_common_name=false` / `use_csr_sans=false`; then it takes them from the request.)
fn ec_csr_for(subject: &SubjectSpec) -> (PKey<Private>, String) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("ec key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, &subject.common_name)
        .expect("cn");
    let name = name.build();
    let mut req = X509ReqBuilder::new().expect("req");
    req.set_subject_name(&name).expect("subject");
    req.set_pubkey(&key).expect("pubkey");
    let mut san = SubjectAlternativeName::new();
    let mut any = false;
    for d in &subject.dns_names {
        san.dns(d);
        any = true;
    }
    for i in &subject.ip_addresses {
        san.ip(i);
        any = true;
    }
    for e in &subject.emails {
        san.email(e);
        any = true;
    }
    for u in &subject.uris {
        san.uri(u);
        any = true;
    }
    if any {
        let ext = san.build(&req.x509v3_context(None)).expect("san");
        let mut exts = Stack::new().expect("stack");
        exts.push(ext).expect("push");
        req.add_extensions(&exts).expect("extensions");
    }
    req.sign(&key, MessageDigest::sha256()).expect("sign");
    let pem = req.build().to_pem().expect("csr pem");
    (key, String::from_utf8(pem).expect("utf8"))
}

/// A CSR with only a common name.
fn ec_csr(cn: &str) -> (PKey<Private>, String) {
    ec_csr_for(&SubjectSpec {
        common_name: cn.into(),
        ..SubjectSpec::default()
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Unix seconds of an ASN.1 time.
fn unix(t: &boring::asn1::Asn1TimeRef) -> i64 {
    let d = boring::asn1::Asn1Time::from_unix(0)
        .expect("epoch")
        .diff(t)
        .expect("diff");
    i64::from(d.days) * 86_400 + i64::from(d.secs)
}

/// Does `leaf` verify up to `root` through `chain`?
fn verifies(leaf: &X509, chain: &[String], root: &str) -> bool {
    let mut store = X509StoreBuilder::new().expect("store");
    store
        .add_cert(X509::from_pem(root.as_bytes()).expect("root pem"))
        .expect("add root");
    let store = store.build();
    let mut untrusted = Stack::new().expect("stack");
    for c in chain {
        untrusted
            .push(X509::from_pem(c.as_bytes()).expect("chain pem"))
            .expect("push");
    }
    let mut ctx = X509StoreContext::new().expect("ctx");
    ctx.init(&store, leaf, &untrusted, |c| c.verify_cert())
        .expect("verify runs")
}

/// (dns, ip, email, uri) SANs of a certificate.
type Sans = (Vec<String>, Vec<IpAddr>, Vec<String>, Vec<String>);

fn sans(cert: &X509) -> Sans {
    let mut out: Sans = Default::default();
    for n in cert.subject_alt_names().into_iter().flatten() {
        if let Some(d) = n.dnsname() {
            out.0.push(d.to_owned());
        } else if let Some(ip) = n.ipaddress() {
            let ip = match ip.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(ip).expect("v4")),
                _ => IpAddr::from(<[u8; 16]>::try_from(ip).expect("v6")),
            };
            out.1.push(ip);
        } else if let Some(e) = n.email() {
            out.2.push(e.to_owned());
        } else if let Some(u) = n.uri() {
            out.3.push(u.to_owned());
        }
    }
    out.0.sort();
    out
}

fn leaf(i: &Issued) -> X509 {
    X509::from_pem(i.certificate_pem.as_bytes()).expect("leaf pem")
}

// ---- sign and issue -----------------------------------------------------------------------------

#[tokio::test]
async fn sign_returns_a_certificate_for_the_csr_key_with_the_sans_and_ttl_asked_for() {
    let (_bao, ca, _dir, store) = setup().await;
    let (key, csr) = ec_csr_for(&subject());
    let asked = now();
    let got = pki::sign(
        &store,
        &source("client", "sign", Some("2m")),
        &subject(),
        &csr,
    )
    .await
    .expect("sign");

    let cert = leaf(&got);
    assert!(got.private_key_pem.is_none());
    // The chain is the root once (issuing_ca and ca_chain both hold it), never the leaf.
    assert_eq!(got.chain_pem.len(), 1, "{:?}", got.chain_pem);
    assert_eq!(
        X509::from_pem(got.chain_pem[0].as_bytes())
            .expect("ca")
            .to_der()
            .expect("der"),
        X509::from_pem(ca.as_bytes())
            .expect("root")
            .to_der()
            .expect("der")
    );
    assert!(
        verifies(&cert, &got.chain_pem, &ca),
        "leaf verifies up to the root"
    );
    // The key is the CSR's.
    assert!(cert.public_key().expect("leaf key").public_eq(&key));
    let cn = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .expect("cn")
        .data()
        .as_utf8()
        .expect("utf8")
        .to_string();
    assert_eq!(cn, "svc.test");
    let (dns, ips, emails, uris) = sans(&cert);
    assert_eq!(dns, vec!["alt.test", "svc.test"]);
    assert_eq!(ips, vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]);
    assert_eq!(emails, vec!["ops@svc.test"]);
    assert_eq!(uris, vec!["spiffe://test/svc"]);
    // TTL 2m: expiration is Vault's, equal to the leaf's not-after, about now + 120 s.
    let exp = got.expiration.expect("expiration");
    assert_eq!(exp, unix(cert.not_after()));
    assert!(
        (asked + 120 - 5..=now() + 120 + 5).contains(&exp),
        "expiration {exp} is not about now+2m (asked at {asked})"
    );
    // Serial as the gateway writes serials elsewhere: upper-case hex, no separators.
    let serial = cert
        .serial_number()
        .to_bn()
        .expect("bn")
        .to_hex_str()
        .expect("hex")
        .to_uppercase();
    assert_eq!(got.serial, serial);
}

#[tokio::test]
async fn a_role_that_ignores_the_csr_names_takes_them_from_the_request() {
    let (bao, ca, _dir, store) = setup().await;
    let mut role = CLIENT_ROLE.to_vec();
    role.extend_from_slice(&["use_csr_common_name=false", "use_csr_sans=false"]);
    bao.pki_role("pki", "request-names", &role);
    let (key, csr) = ec_csr("ignored.test");
    let got = pki::sign(
        &store,
        &source("request-names", "sign", Some("2m")),
        &subject(),
        &csr,
    )
    .await
    .expect("sign");
    let cert = leaf(&got);
    assert!(verifies(&cert, &got.chain_pem, &ca));
    assert!(cert.public_key().expect("leaf key").public_eq(&key));
    let cn = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .expect("cn")
        .data()
        .as_utf8()
        .expect("utf8")
        .to_string();
    assert_eq!(cn, "svc.test");
    let (dns, ips, emails, uris) = sans(&cert);
    assert_eq!(dns, vec!["alt.test", "svc.test"]);
    assert_eq!(ips, vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]);
    assert_eq!(emails, vec!["ops@svc.test"]);
    assert_eq!(uris, vec!["spiffe://test/svc"]);
}

#[tokio::test]
async fn sign_with_a_token_limited_to_the_sign_path_works() {
    let (bao, ca, dir, _root_store) = setup().await;
    let token = bao.token_with_policy("pki-sign", &Bao::pki_sign_policy("pki", "client"));
    let store = store_as(&bao, dir.path(), &token, 3000).await;
    let (_key, csr) = ec_csr("x");
    let got = pki::sign(&store, &source("client", "sign", None), &subject(), &csr)
        .await
        .expect("sign with the minimal policy");
    assert!(verifies(&leaf(&got), &got.chain_pem, &ca));
    // Without ttl, the role's max_ttl (1h) applies.
    let left = got.expiration.expect("expiration") - now();
    assert!((3600 - 10..=3600 + 5).contains(&left), "{left}");
}

#[tokio::test]
async fn issue_returns_a_pkcs8_key_that_matches_the_certificate() {
    let (bao, ca, _dir, store) = setup().await;
    let mut role = CLIENT_ROLE.to_vec();
    role.retain(|a| !a.starts_with("key_type"));
    role.extend_from_slice(&["key_type=ec", "key_bits=256"]);
    bao.pki_role("pki", "ec-issue", &role);

    let got = pki::issue(
        &store,
        &source("ec-issue", "issue", Some("5m")),
        &subject(),
        mtls_gateway::store::KeyType::EcP256,
    )
    .await
    .expect("issue");
    let key_pem = got.private_key_pem.clone().expect("issue returns the key");
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 PEM: {}",
        key_pem.lines().next().unwrap_or("")
    );
    let key = PKey::private_key_from_pem(key_pem.as_bytes()).expect("key parses");
    let cert = leaf(&got);
    assert!(cert.public_key().expect("leaf key").public_eq(&key));
    assert_eq!(
        key.ec_key().expect("EC key").group().curve_name(),
        Some(Nid::X9_62_PRIME256V1)
    );
    assert!(verifies(&cert, &got.chain_pem, &ca));
    let (dns, ..) = sans(&cert);
    assert_eq!(dns, vec!["alt.test", "svc.test"]);
    // Debug never shows the key.
    let shown = format!("{got:?}");
    assert!(
        !shown.contains("PRIVATE KEY") && shown.contains("<redacted>"),
        "{shown}"
    );
}

// ---- refusals -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_deleted_role_is_refused_with_vaults_reason() {
    let (bao, _ca, _dir, store) = setup().await;
    let (_key, csr) = ec_csr("x");
    pki::sign(&store, &source("client", "sign", None), &subject(), &csr)
        .await
        .expect("the role works before it is deleted");
    bao.delete_pki_role("pki", "client");
    let err = pki::sign(&store, &source("client", "sign", None), &subject(), &csr)
        .await
        .expect_err("deleted role");
    let PkiError::Refused(m) = &err else {
        panic!("expected Refused, got {err:?}");
    };
    assert!(m.contains("pki/sign/client"), "{m}");
    assert!(m.contains("unknown role: client"), "Vault's reason: {m}");
    // The request body (the CSR) is not echoed.
    assert!(!m.contains("CERTIFICATE REQUEST"), "{m}");

    let err = pki::issue(
        &store,
        &source("client", "issue", None),
        &subject(),
        mtls_gateway::store::KeyType::EcP256,
    )
    .await
    .expect_err("deleted role");
    assert!(
        matches!(&err, PkiError::Refused(m) if m.contains("unknown role")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_name_the_role_does_not_allow_is_refused_with_vaults_reason() {
    let (bao, _ca, _dir, store) = setup().await;
    bao.pki_role(
        "pki",
        "example-only",
        &[
            "allowed_domains=example.com",
            "allow_subdomains=true",
            "allow_any_name=false",
            "key_type=any",
            "max_ttl=1h",
        ],
    );
    let (_key, csr) = ec_csr("evil.test");
    let err = pki::sign(
        &store,
        &source("example-only", "sign", None),
        &SubjectSpec {
            common_name: "evil.test".into(),
            ..SubjectSpec::default()
        },
        &csr,
    )
    .await
    .expect_err("name not allowed");
    let PkiError::Refused(m) = &err else {
        panic!("expected Refused, got {err:?}");
    };
    assert!(m.contains("evil.test") && m.contains("not allowed"), "{m}");

    // Allowed names under the same role pass.
    let (_key, csr) = ec_csr("a.example.com");
    pki::sign(
        &store,
        &source("example-only", "sign", None),
        &SubjectSpec {
            common_name: "a.example.com".into(),
            ..SubjectSpec::default()
        },
        &csr,
    )
    .await
    .expect("allowed name");
}

#[tokio::test]
async fn a_missing_mount_is_refused_naming_the_mount() {
    let (_bao, _ca, _dir, store) = setup().await;
    let (_key, csr) = ec_csr("x");
    let mut src = source("client", "sign", None);
    src.mount = "pki-nope".into();
    let err = pki::sign(&store, &src, &subject(), &csr)
        .await
        .expect_err("no such mount");
    assert!(
        matches!(&err, PkiError::Refused(m) if m.contains("pki-nope") && m.contains("404")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_token_without_the_sign_policy_is_denied_naming_the_policy_needed() {
    let (bao, _ca, dir, _root_store) = setup().await;
    // Allowed to sign with another role only.
    let token = bao.token_with_policy("pki-other", &Bao::pki_sign_policy("pki", "other"));
    let store = store_as(&bao, dir.path(), &token, 3000).await;
    let (_key, csr) = ec_csr("x");
    let err = pki::sign(&store, &source("client", "sign", None), &subject(), &csr)
        .await
        .expect_err("denied");
    let PkiError::Store(StoreError::Denied(m)) = &err else {
        panic!("expected Store(Denied), got {err:?}");
    };
    assert!(
        m.contains(r#"path "pki/sign/client" { capabilities = ["update"] }"#),
        "{m}"
    );
    assert!(!m.contains(&token), "the token is not in the message: {m}");
    assert_eq!(
        pki::required_policy(&source("client", "sign", None)),
        r#"path "pki/sign/client" { capabilities = ["update"] }"#
    );
}

#[tokio::test]
async fn a_file_store_refuses_pki_naming_the_store_kind_needed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(tmp.path().join("store")).expect("open");
    let (_key, csr) = ec_csr("x");
    let err = pki::sign(&store, &source("client", "sign", None), &subject(), &csr)
        .await
        .expect_err("file store");
    assert!(
        matches!(&err, PkiError::Refused(m) if m.contains("store.kind: vault") && m.contains("pki/sign/client")),
        "{err:?}"
    );
    let err = pki::issue(
        &store,
        &source("client", "issue", None),
        &subject(),
        mtls_gateway::store::KeyType::EcP256,
    )
    .await
    .expect_err("file store");
    assert!(
        matches!(&err, PkiError::Refused(m) if m.contains("store.kind: vault")),
        "{err:?}"
    );
}

#[tokio::test]
async fn pki_write_refuses_paths_outside_plain_segments_without_asking_vault() {
    let (bao, _ca, _dir, store) = setup().await;
    for bad in [
        "../sys/seal",
        "/pki/sign/client",
        "pki/sign/client/../../x",
        "pki/sign/a b",
    ] {
        let err = store
            .pki_write(bad, json!({}))
            .await
            .expect_err("invalid path");
        assert!(
            matches!(&err, StoreError::Other(m) if m.contains("invalid Vault PKI path")),
            "{bad}: {err}"
        );
    }
    assert_eq!(bao.audit_count("sys/seal"), 0);
    // An invalid source never reaches the store either.
    let mut src = source("client", "sign", Some("30d"));
    let (_key, csr) = ec_csr("x");
    let err = pki::sign(&store, &src, &subject(), &csr)
        .await
        .expect_err("bad ttl");
    assert!(
        matches!(&err, PkiError::Refused(m) if m.contains("pki.ttl")),
        "{err:?}"
    );
    src.ttl = None;
    src.role = "../x".into();
    assert_eq!(pki::validate_source(&src).expect_err("bad role").0, "role");
}

// ---- outages ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_stopped_server_is_unavailable() {
    let (mut bao, _ca, _dir, store) = setup().await;
    let (_key, csr) = ec_csr("x");
    bao.stop();
    let started = Instant::now();
    let err = pki::sign(&store, &source("client", "sign", None), &subject(), &csr)
        .await
        .expect_err("stopped");
    assert!(
        matches!(&err, PkiError::Store(StoreError::Unavailable(m)) if m.contains("cannot reach vault")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused connections fail fast"
    );
}

#[tokio::test]
async fn a_server_that_stops_answering_times_out_as_unavailable_and_recovers() {
    let bao = Bao::dev().await;
    bao.enable_pki("pki", "24h");
    bao.pki_role("pki", "client", CLIENT_ROLE);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_as(&bao, dir.path(), &bao.root_token.clone(), 700).await;
    let (_key, csr) = ec_csr("x");
    let src = source("client", "sign", None);
    pki::sign(&store, &src, &subject(), &csr)
        .await
        .expect("sign before the freeze");

    bao.freeze();
    let started = Instant::now();
    let err = pki::sign(&store, &src, &subject(), &csr).await;
    let took = started.elapsed();
    bao.thaw();
    let err = err.expect_err("frozen");
    assert!(
        matches!(&err, PkiError::Store(StoreError::Unavailable(m)) if m.contains("within 700 ms")),
        "{err:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the request timeout applies: {took:?}"
    );
    pki::sign(&store, &src, &subject(), &csr)
        .await
        .expect("sign after the thaw");
}
