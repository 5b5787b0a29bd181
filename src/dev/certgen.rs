//! Certificates made at run time, for tests, benches and the `demo` command.
//!
//! Everything is generated with BoringSSL through `boring`: a CA ([`new_ca`]), leaves issued by
//! it ([`issue`], described by a [`Leaf`]), and PKCS#12 files written by BoringSSL's own builder
//! ([`to_p12`]). BoringSSL only writes the modern flavour (PBES2 with AES-256-CBC), so
//! [`openssl_p12`] shells out to the `openssl` CLI for the other flavours (legacy RC2/3DES,
//! unencrypted, any `-keypbe`/`-certpbe` pair) and for the odd files the tester must reject
//! (certificate only, key only, key without its certificate).
//!
//! The odd certificates are deliberate: weak keys, SHA-1 or MD5 signatures, expired or not yet
//! valid, no clientAuth usage, and a chosen serial number (two different certificates that share
//! a serial are how the connection-pool identity trap in `reference/pingora-notes.md` is tested).

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use boring::asn1::{Asn1Integer, Asn1Time};
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkcs12::Pkcs12;
use boring::pkey::{Id, PKey, Private};
use boring::rsa::Rsa;
use boring::stack::Stack;
use boring::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use boring::x509::{X509Builder, X509Name, X509};

const DAY: i64 = 86_400;

/// The kind of key a certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    /// Too weak for the default [`crate::p12::KeyPolicy`]; exists to test that verdict.
    Rsa1024,
    Rsa4096,
    EcP256,
    EcP384,
    /// A leaf key only: a CA signing with Ed25519 would need "no digest", which the safe
    /// `boring` API cannot express.
    Ed25519,
}

impl KeyKind {
    /// Generates a fresh private key of this kind.
    pub fn generate(self) -> Result<PKey<Private>, ErrorStack> {
        match self {
            KeyKind::Rsa1024 => PKey::from_rsa(Rsa::generate(1024)?),
            KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?),
            KeyKind::Rsa4096 => PKey::from_rsa(Rsa::generate(4096)?),
            KeyKind::EcP256 => ec_key(Nid::X9_62_PRIME256V1),
            KeyKind::EcP384 => ec_key(Nid::SECP384R1),
            KeyKind::Ed25519 => PKey::generate(Id::ED25519),
        }
    }
}

fn ec_key(curve: Nid) -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(curve)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

/// The digest a CA signs a leaf with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Sha384,
    /// Weak; exists to test the tester's signature check. (There is no `Md5`: BoringSSL refuses
    /// to sign with MD5, `DIGEST_AND_KEY_TYPE_NOT_SUPPORTED`, even with an RSA key.)
    Sha1,
}

impl Digest {
    fn message_digest(self) -> MessageDigest {
        match self {
            Digest::Sha256 => MessageDigest::sha256(),
            Digest::Sha384 => MessageDigest::sha384(),
            Digest::Sha1 => MessageDigest::sha1(),
        }
    }
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// The key of a CA made by [`new_ca_with_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKey {
    EcP256,
    Rsa2048,
}

/// A self-signed CA with an EC P-256 key, valid from yesterday for 10 years.
pub fn new_ca(cn: &str) -> Result<Issued, ErrorStack> {
    new_ca_with_key(cn, CaKey::EcP256)
}

/// A self-signed CA with a chosen key, valid from yesterday for 10 years.
pub fn new_ca_with_key(cn: &str, key: CaKey) -> Result<Issued, ErrorStack> {
    let key = match key {
        CaKey::EcP256 => KeyKind::EcP256.generate()?,
        CaKey::Rsa2048 => KeyKind::Rsa2048.generate()?,
    };
    let name = name(cn)?;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let now = unix_now();
    set_validity(&mut b, now - DAY, now + 3650 * DAY)?;
    let basic = BasicConstraints::new().critical().ca().build()?;
    b.append_extension(&basic)?;
    let usage = KeyUsage::new()
        .critical()
        .key_cert_sign()
        .crl_sign()
        .build()?;
    b.append_extension(&usage)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(&ski)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// An intermediate CA (EC P-256, 5 years) issued by `parent`, for chain tests.
pub fn new_intermediate(parent: &Issued, cn: &str) -> Result<Issued, ErrorStack> {
    let key = KeyKind::EcP256.generate()?;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    let subject = name(cn)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(parent.cert.subject_name())?;
    b.set_pubkey(&key)?;
    let now = unix_now();
    set_validity(&mut b, now - DAY, now + 1825 * DAY)?;
    let basic = BasicConstraints::new().critical().ca().pathlen(0).build()?;
    b.append_extension(&basic)?;
    let usage = KeyUsage::new()
        .critical()
        .key_cert_sign()
        .crl_sign()
        .build()?;
    b.append_extension(&usage)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&parent.cert), None))?;
    b.append_extension(&ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&parent.cert), None))?;
    b.append_extension(&aki)?;
    b.sign(&parent.key, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// What a leaf certificate should look like. Start from [`Leaf::client`] or [`Leaf::server`] and
/// change fields.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Subject common name; the subject is `CN=<cn>` alone.
    pub cn: String,
    /// `None` draws a random positive 63-bit serial.
    pub serial: Option<u32>,
    pub key: KeyKind,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// clientAuth in the extended key usage. With both `client_auth` and `server_auth` false the
    /// certificate has no EKU extension at all (which means "any usage").
    pub client_auth: bool,
    /// serverAuth in the extended key usage.
    pub server_auth: bool,
    /// notBefore = now + this many days (negative: in the past).
    pub not_before_offset_days: i64,
    /// notAfter = notBefore + this many days.
    pub valid_days: i64,
    pub digest: Digest,
}

impl Leaf {
    /// A client certificate: EC P-256, clientAuth EKU, valid from yesterday for a year, SHA-256.
    pub fn client(cn: &str) -> Self {
        Leaf {
            cn: cn.to_owned(),
            serial: None,
            key: KeyKind::EcP256,
            dns: Vec::new(),
            ips: Vec::new(),
            client_auth: true,
            server_auth: false,
            not_before_offset_days: -1,
            valid_days: 365,
            digest: Digest::Sha256,
        }
    }

    /// A server certificate for the given names: like [`Leaf::client`] but with serverAuth EKU
    /// and subject alternative names.
    pub fn server(cn: &str, dns: &[&str], ips: &[IpAddr]) -> Self {
        Leaf {
            dns: dns.iter().map(|d| (*d).to_owned()).collect(),
            ips: ips.to_vec(),
            client_auth: false,
            server_auth: true,
            ..Leaf::client(cn)
        }
    }
}

/// Issues a leaf certificate described by `leaf`, signed by `ca`.
pub fn issue(ca: &Issued, leaf: &Leaf) -> Result<Issued, ErrorStack> {
    let key = leaf.key.generate()?;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = match leaf.serial {
        Some(n) => BigNum::from_u32(n)?.to_asn1_integer()?,
        None => random_serial()?,
    };
    b.set_serial_number(&serial)?;
    let subject = name(&leaf.cn)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(ca.cert.subject_name())?;
    b.set_pubkey(&key)?;
    let not_before = unix_now() + leaf.not_before_offset_days * DAY;
    set_validity(&mut b, not_before, not_before + leaf.valid_days * DAY)?;

    let basic = BasicConstraints::new().critical().build()?;
    b.append_extension(&basic)?;
    let mut usage = KeyUsage::new();
    usage.critical().digital_signature();
    if matches!(
        leaf.key,
        KeyKind::Rsa1024 | KeyKind::Rsa2048 | KeyKind::Rsa4096
    ) {
        usage.key_encipherment();
    }
    let usage = usage.build()?;
    b.append_extension(&usage)?;
    if leaf.client_auth || leaf.server_auth {
        let mut eku = ExtendedKeyUsage::new();
        if leaf.client_auth {
            eku.client_auth();
        }
        if leaf.server_auth {
            eku.server_auth();
        }
        let eku = eku.build()?;
        b.append_extension(&eku)?;
    }
    if !leaf.dns.is_empty() || !leaf.ips.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for d in &leaf.dns {
            san.dns(d);
        }
        for ip in &leaf.ips {
            san.ip(&ip.to_string());
        }
        let ext = san.build(&b.x509v3_context(Some(&ca.cert), None))?;
        b.append_extension(&ext)?;
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&ca.cert), None))?;
    b.append_extension(&ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&ca.cert), None))?;
    b.append_extension(&aki)?;

    b.sign(&ca.key, leaf.digest.message_digest())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// A PKCS#12 file written by BoringSSL's builder: key and certificates under PBES2
/// (PBKDF2-HMAC-SHA256, AES-256-CBC), SHA-1 MAC, friendly name "client".
pub fn to_p12(
    cert: &X509,
    key: &PKey<Private>,
    chain: &[X509],
    password: &str,
) -> Result<Vec<u8>, ErrorStack> {
    let mut builder = Pkcs12::builder();
    if !chain.is_empty() {
        let mut stack = Stack::new()?;
        for c in chain {
            stack.push(c.clone())?;
        }
        builder.ca(stack);
    }
    builder.build(password, "client", key, cert)?.to_der()
}

/// The certificate as PEM.
pub fn to_pem(cert: &X509) -> Vec<u8> {
    cert.to_pem()
        .expect("encoding a certificate BoringSSL built or parsed as PEM only fails on allocation")
}

/// The private key as unencrypted PKCS#8 PEM.
pub fn key_to_pem(key: &PKey<Private>) -> Vec<u8> {
    key.private_key_to_pem_pkcs8()
        .expect("encoding a generated or parsed private key as PKCS#8 PEM only fails on allocation")
}

/// How [`openssl_p12`] protects the file. Every flavour has a MAC keyed by the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum P12Flavour {
    /// openssl 3's defaults, spelled out: key and certificates under PBES2 (PBKDF2-HMAC-SHA256,
    /// AES-256-CBC), SHA-256 MAC.
    Modern,
    /// `openssl pkcs12 -legacy` (the OpenSSL 1.1 defaults): certificates under
    /// pbeWithSHA1And40BitRC2-CBC, key under pbeWithSHA1And3-KeyTripleDES-CBC, SHA-1 MAC.
    Legacy,
    /// `-keypbe NONE -certpbe NONE`: a plain key bag and plain certificate bags.
    Unencrypted,
    /// Explicit `-keypbe` / `-certpbe` names as openssl spells them ("AES-192-CBC",
    /// "PBE-SHA1-2DES", "PBE-SHA1-RC4-128", ...). RC2/RC4 names load openssl's legacy provider.
    Custom { key_pbe: String, cert_pbe: String },
}

/// Writes a PKCS#12 file with the `openssl` CLI (openssl 3 for [`P12Flavour::Legacy`]) in a
/// temporary directory and returns its bytes. `chain` certificates are added after the leaf.
/// Errors if `openssl` is missing or refuses the input.
pub fn openssl_p12(
    cert: &X509,
    key: &PKey<Private>,
    chain: &[X509],
    password: &str,
    flavour: P12Flavour,
) -> std::io::Result<Vec<u8>> {
    openssl_p12_parts(Some(cert), Some(key), chain, password, flavour)
}

/// Like [`openssl_p12`], with the leaf and the key each optional, to make the files a decoder
/// must reject:
/// - `cert` without `key`: a certificate-only file (`-nokeys`);
/// - `key` without `cert`: a key-only file (`-nocerts`); with `extra` certificates this is the
///   way to store a key next to a certificate it does not belong to, which `openssl` otherwise
///   refuses to write;
/// - `extra` certificates are always written after the leaf, in the order given.
///
/// The password reaches `openssl` through an environment variable, not the command line.
pub fn openssl_p12_parts(
    cert: Option<&X509>,
    key: Option<&PKey<Private>>,
    extra: &[X509],
    password: &str,
    flavour: P12Flavour,
) -> std::io::Result<Vec<u8>> {
    const PASS_VAR: &str = "MTLS_GATEWAY_CERTGEN_P12_PASS";
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let mut cmd = Command::new("openssl");
    cmd.args(["pkcs12", "-export", "-passout"])
        .arg(format!("env:{PASS_VAR}"))
        .env(PASS_VAR, password)
        .arg("-out")
        .arg(path("out.p12"));

    match (cert, key) {
        (Some(cert), Some(key)) => {
            write(&path("cert.pem"), &to_pem(cert))?;
            write(&path("key.pem"), &key_to_pem(key))?;
            cmd.arg("-in")
                .arg(path("cert.pem"))
                .arg("-inkey")
                .arg(path("key.pem"));
        }
        (Some(cert), None) => {
            write(&path("cert.pem"), &to_pem(cert))?;
            cmd.arg("-nokeys").arg("-in").arg(path("cert.pem"));
        }
        (None, Some(key)) => {
            write(&path("key.pem"), &key_to_pem(key))?;
            cmd.arg("-nocerts").arg("-inkey").arg(path("key.pem"));
        }
        (None, None) => {
            if extra.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "openssl_p12_parts needs a certificate, a key or extra certificates",
                ));
            }
            // `-nokeys -in` with the extra certificates as the only input.
            let pem: Vec<u8> = extra.iter().flat_map(to_pem).collect();
            write(&path("cert.pem"), &pem)?;
            cmd.arg("-nokeys").arg("-in").arg(path("cert.pem"));
        }
    }
    if !extra.is_empty() && (cert.is_some() || key.is_some()) {
        let pem: Vec<u8> = extra.iter().flat_map(to_pem).collect();
        write(&path("extra.pem"), &pem)?;
        cmd.arg("-certfile").arg(path("extra.pem"));
    }

    match &flavour {
        P12Flavour::Modern => {
            cmd.args([
                "-keypbe",
                "AES-256-CBC",
                "-certpbe",
                "AES-256-CBC",
                "-macalg",
                "sha256",
            ]);
        }
        P12Flavour::Legacy => {
            cmd.arg("-legacy");
        }
        P12Flavour::Unencrypted => {
            cmd.args(["-keypbe", "NONE", "-certpbe", "NONE"]);
        }
        P12Flavour::Custom { key_pbe, cert_pbe } => {
            let needs_legacy = [key_pbe, cert_pbe]
                .iter()
                .any(|n| n.contains("RC2") || n.contains("RC4"));
            if needs_legacy {
                cmd.arg("-legacy");
            }
            cmd.arg("-keypbe")
                .arg(key_pbe)
                .arg("-certpbe")
                .arg(cert_pbe);
        }
    }

    let out = cmd.output().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot run `openssl` (is the openssl CLI installed?): {e}"),
        )
    })?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "`openssl pkcs12 -export` ({flavour:?}) failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::read(path("out.p12"))
}

fn set_validity(b: &mut X509Builder, not_before: i64, not_after: i64) -> Result<(), ErrorStack> {
    let not_before = Asn1Time::from_unix(not_before)?;
    let not_after = Asn1Time::from_unix(not_after)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

fn name(cn: &str) -> Result<X509Name, ErrorStack> {
    let mut n = X509Name::builder()?;
    n.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(n.build())
}

/// A random positive serial of 63 bits with the top bit set (8 DER bytes, never zero).
fn random_serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(63, MsbOption::ONE, false)?;
    bn.to_asn1_integer()
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the system clock is set after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds since 1970 fit in i64")
}
