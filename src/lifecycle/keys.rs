//! Keys, CSRs and the completion of a pending version: the pure cryptography of the certificate
//! lifecycle, with BoringSSL (through `boring`) doing the work.
//!
//! - [`validate_subject`] checks a [`SubjectSpec`] before anything is generated;
//! - [`generate`] makes a key ([`KeyType`]: EC P-256, RSA 2048 or RSA 3072) and a CSR signed
//!   with SHA-256 carrying the subject and every SAN; [`csr_for`] makes another CSR for a key
//!   kept in the store;
//! - [`complete`] takes the signed certificate (and its chain) back, checks it belongs to the
//!   key and chains up, and builds the PKCS#12 the gateway serves from, with a fresh password;
//! - [`normalize_key_pem`] turns a key Vault returned (PKCS#1, SEC1 or PKCS#8) into PKCS#8.
//!
//! The PKCS#12 is written by BoringSSL's `PKCS12_create` with its defaults: key and
//! certificates under PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC, 2048 iterations) and an
//! HMAC-SHA-1 MAC (2048 iterations). `openssl` 3 reads it without `-legacy`, Java's `keytool`
//! (8u301 and later, 11.0.12 and later, 17) reads it, and [`crate::p12::decode`] opens it.
//!
//! Errors and `Debug` output never contain key material or passwords: messages name the field or
//! the input and say what to do.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkcs12::Pkcs12;
use boring::pkey::{Id, PKey, PKeyRef, Private};
use boring::rsa::Rsa;
use boring::stack::Stack;
use boring::x509::extension::SubjectAlternativeName;
use boring::x509::{X509NameBuilder, X509NameRef, X509Ref, X509Req, X509};
use sha2::{Digest as _, Sha256};

use crate::store::{KeyType, SubjectSpec};

/// Largest key PEM accepted (an RSA 8192 PKCS#8 PEM is about 6.5 KiB).
pub const MAX_KEY_PEM: usize = 16 * 1024;
/// Largest certificate PEM accepted, for each of the certificates and the chain.
pub const MAX_CERTS_PEM: usize = 64 * 1024;
/// Most certificates accepted in one completion (leaf and chain together).
pub const MAX_CERTIFICATES: usize = 10;
/// Most subject alternative names in one CSR.
pub const MAX_SANS: usize = 100;
/// Length of the PKCS#12 passwords [`complete`] draws.
pub const PASSWORD_LEN: usize = 32;
/// Friendly name (Java keystore alias) of the key and leaf in the PKCS#12.
pub const FRIENDLY_NAME: &str = "client";

const DAY: i64 = 86_400;
const CLIENT_AUTH_CHECK: &str = crate::p12::check::CLIENT_AUTH;

/// Why a key, CSR or completion failed. Messages name the field or input and the fix, and never
/// contain key material or passwords.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A subject field is invalid (`field` as in the API, e.g. `subject.dnsNames[2]`).
    #[error("{field}: {message}")]
    Subject { field: String, message: String },
    #[error("{what} is {size} bytes, more than the {max} accepted; {hint}")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
        hint: &'static str,
    },
    #[error(
        "the private key PEM is encrypted; store it unencrypted (e.g. `openssl pkey -in key.pem \
         -out plain.pem`)"
    )]
    EncryptedKey,
    #[error(
        "the private key is not a readable PEM private key ({0}); give an unencrypted PKCS#8 \
         (BEGIN PRIVATE KEY), PKCS#1 (BEGIN RSA PRIVATE KEY) or SEC1 (BEGIN EC PRIVATE KEY) PEM"
    )]
    InvalidKey(String),
    #[error("the private key is {0}; use an EC P-256/P-384/P-521 key or an RSA key of 2048 to 8192 bits")]
    UnsupportedKey(String),
    #[error(
        "no certificate found: upload the signed certificate as PEM (-----BEGIN CERTIFICATE-----), \
         leaf first, then its chain"
    )]
    NoCertificate,
    #[error(
        "{count} certificates uploaded, more than the {max} accepted; upload the leaf and only \
         the certificates of its issuing chain"
    )]
    TooManyCertificates { count: usize, max: usize },
    #[error(
        "the certificate upload contains a private key block; upload only certificates (the key \
         stays in the store)"
    )]
    KeyInCertificates,
    #[error("{what} is not valid PEM certificate data ({reason}); upload PEM certificates only")]
    BadCertificate { what: &'static str, reason: String },
    #[error(
        "the certificate was not issued for this CSR's key: none of the uploaded certificates \
         has the pending key's public key; upload the certificate signed from this entry's \
         current CSR (or make a new CSR)"
    )]
    KeyMismatch,
    #[error(
        "certificate {subject} names issuer {issuer}, and the uploaded certificate {candidate} \
         has that name but its signature does not verify with that certificate's key; upload \
         the issuing CA certificate that signed it"
    )]
    ChainSignature {
        subject: String,
        issuer: String,
        candidate: String,
    },
    #[error(
        "certificate {0} is not part of the leaf's issuing chain; upload only the leaf and the \
         CA certificates above it"
    )]
    NotInChain(String),
    #[error(
        "the certificate expired at {not_after}; ask the CA to sign this entry's CSR again (or \
         make a new CSR)"
    )]
    Expired { not_after: String },
    /// A BoringSSL failure not caused by the input (allocation, random source).
    #[error("{what} failed in BoringSSL: {reason}")]
    Crypto { what: &'static str, reason: String },
}

fn crypto(what: &'static str) -> impl FnOnce(ErrorStack) -> KeyError {
    move |e| KeyError::Crypto {
        what,
        reason: e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Subject validation.

/// Checks a subject spec before a key or CSR is made: `commonName` non-empty, at most 64
/// characters, no control characters (the other name attributes likewise, with the X.520
/// bounds: 64 for organization and unit, 128 for state and locality, exactly two letters for
/// country; an empty optional attribute counts as absent); `dnsNames` host names (a leftmost
/// `*` label allowed, as in `*.x.y`); `ipAddresses` IPv4 or IPv6; `emails` with one `@`;
/// `uris` absolute URIs; at most [`MAX_SANS`] SANs in all.
///
/// `Err((field, message))` names the first offending field the way the API spells it, e.g.
/// `subject.dnsNames[2]`.
pub fn validate_subject(s: &SubjectSpec) -> Result<(), (String, String)> {
    let err = |field: &str, message: String| Err((format!("subject.{field}"), message));

    if s.common_name.trim().is_empty() {
        return err(
            "commonName",
            "is required: give the name the certificate is for, e.g. the client's name".into(),
        );
    }
    if let Err(m) = name_attribute(&s.common_name, 64) {
        return err("commonName", m);
    }
    let optional = [
        ("organization", &s.organization, 64),
        ("organizationalUnit", &s.organizational_unit, 64),
        ("state", &s.state, 128),
        ("locality", &s.locality, 128),
    ];
    for (field, value, max) in optional {
        if let Some(v) = present(value) {
            if let Err(m) = name_attribute(v, max) {
                return err(field, m);
            }
        }
    }
    if let Some(c) = present(&s.country) {
        if c.chars().count() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
            return err(
                "country",
                "must be a two-letter ISO 3166 country code, e.g. DE or US".into(),
            );
        }
    }

    let count = s.dns_names.len() + s.ip_addresses.len() + s.emails.len() + s.uris.len();
    if count > MAX_SANS {
        return Err((
            "subject".into(),
            format!(
                "{count} subject alternative names (dnsNames, ipAddresses, emails and uris \
                 together), more than the {MAX_SANS} allowed; split them over several \
                 certificates"
            ),
        ));
    }
    for (i, d) in s.dns_names.iter().enumerate() {
        if let Err(m) = dns_name(d) {
            return err(&format!("dnsNames[{i}]"), m);
        }
    }
    for (i, ip) in s.ip_addresses.iter().enumerate() {
        if ip.trim().parse::<IpAddr>().is_err() {
            return err(
                &format!("ipAddresses[{i}]"),
                "is not an IPv4 or IPv6 address (e.g. 192.0.2.10 or 2001:db8::1); put host names \
                 in dnsNames"
                    .into(),
            );
        }
    }
    for (i, e) in s.emails.iter().enumerate() {
        if let Err(m) = email(e) {
            return err(&format!("emails[{i}]"), m);
        }
    }
    for (i, u) in s.uris.iter().enumerate() {
        if let Err(m) = uri(u) {
            return err(&format!("uris[{i}]"), m);
        }
    }
    Ok(())
}

/// An optional attribute with something in it.
fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|v| !v.trim().is_empty())
}

fn name_attribute(v: &str, max: usize) -> Result<(), String> {
    let n = v.chars().count();
    if n > max {
        return Err(format!("is {n} characters long; at most {max} are allowed"));
    }
    if v.chars().any(char::is_control) {
        return Err("contains a control character (newline, tab, ...); remove it".into());
    }
    Ok(())
}

fn dns_name(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("is empty; remove it or give a host name".into());
    }
    if d.len() > 253 {
        return Err(format!(
            "is {} characters long; a host name has at most 253",
            d.len()
        ));
    }
    if d.parse::<IpAddr>().is_ok() {
        return Err("is an IP address; put it in ipAddresses".into());
    }
    if d.ends_with('.') {
        return Err("ends with a dot; give the name without the trailing dot".into());
    }
    let labels: Vec<&str> = d.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" {
            if i != 0 {
                return Err(
                    "has `*` in a label other than the leftmost one; only `*.example.com` \
                            style wildcards are allowed"
                        .into(),
                );
            }
            if labels.len() < 3 {
                return Err(
                    "is a wildcard over a top-level domain; a wildcard needs at least two labels \
                     after it, as in `*.example.com`"
                        .into(),
                );
            }
            continue;
        }
        host_label(label)?;
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(
            "ends with an all-numeric label; give a host name (or put IP addresses in \
                    ipAddresses)"
                .into(),
        );
    }
    Ok(())
}

fn host_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("has an empty label (two dots in a row, or a leading dot)".into());
    }
    if label.len() > 63 {
        return Err(format!(
            "has a label of {} characters; a label has at most 63",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(if c == '*' {
            "has a `*` inside a label; only a whole leftmost `*` label is allowed, as in \
             `*.example.com`"
                .into()
        } else {
            format!(
                "contains {c:?}; a host name has only letters, digits, `-` and dots (write \
                 internationalised names in their xn-- form)"
            )
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("has a label starting or ending with `-`".into());
    }
    Ok(())
}

fn email(e: &str) -> Result<(), String> {
    if e.len() > 254 {
        return Err(format!(
            "is {} characters long; an email address has at most 254",
            e.len()
        ));
    }
    if !e.is_ascii() || e.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err("must be ASCII without spaces or control characters".into());
    }
    let mut parts = e.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("must contain exactly one `@`, as in name@example.com".into());
    };
    if local.is_empty() || local.len() > 64 {
        return Err("needs 1 to 64 characters before the `@`".into());
    }
    if domain.starts_with('*') {
        return Err("has a wildcard domain; give a real mailbox".into());
    }
    dns_name(domain).map_err(|m| format!("has a domain that {m}"))
}

fn uri(u: &str) -> Result<(), String> {
    if u.len() > 2048 {
        return Err(format!("is {} characters long; at most 2048", u.len()));
    }
    if !u.is_ascii() || u.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(
            "must be ASCII without spaces or control characters (percent-encode the rest)".into(),
        );
    }
    match url::Url::parse(u) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "is not an absolute URI ({e}); give a scheme, as in spiffe://example.org/client or \
             urn:example:client"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and CSRs.

/// A key and its CSR. `Debug` shows the CSR and never the key.
#[derive(Clone)]
pub struct NewKey {
    /// Unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    pub csr_pem: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("key_pem", &"<redacted>")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// Generates a key of `key_type` and a CSR for it: SHA-256 signature, the subject of `subject`
/// and a subjectAltName extension with all its SANs (DNS, IP, email, URI; no extension when
/// there are none). The subject is validated first ([`validate_subject`]).
pub fn generate(key_type: KeyType, subject: &SubjectSpec) -> Result<NewKey, KeyError> {
    check_subject(subject)?;
    let key = match key_type {
        KeyType::EcP256 => {
            let group = boring::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                .map_err(crypto("EC P-256 group"))?;
            let ec = boring::ec::EcKey::generate(&group).map_err(crypto("EC key generation"))?;
            PKey::from_ec_key(ec).map_err(crypto("EC key generation"))?
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 => {
            let bits = if key_type == KeyType::Rsa2048 {
                2048
            } else {
                3072
            };
            let rsa = Rsa::generate(bits).map_err(crypto("RSA key generation"))?;
            PKey::from_rsa(rsa).map_err(crypto("RSA key generation"))?
        }
    };
    let csr_pem = make_csr(&key, subject)?;
    let key_pem = pkcs8_pem(&key)?;
    Ok(NewKey { key_pem, csr_pem })
}

/// A new CSR for an existing key (PKCS#8, PKCS#1 or SEC1 PEM), e.g. to ask the CA again or to
/// change the subject.
pub fn csr_for(key_pem: &str, subject: &SubjectSpec) -> Result<String, KeyError> {
    check_subject(subject)?;
    let key = load_key(key_pem)?;
    if key.id() == Id::ED25519 {
        return Err(KeyError::UnsupportedKey(
            "an Ed25519 key, which this gateway cannot sign CSRs with".into(),
        ));
    }
    make_csr(&key, subject)
}

/// The public key of a private key PEM as SubjectPublicKeyInfo DER: compares keys without
/// exposing them.
pub fn public_key_der(key_pem: &str) -> Result<Vec<u8>, KeyError> {
    load_key(key_pem)?
        .public_key_to_der()
        .map_err(crypto("public key encoding"))
}

/// Rewrites a private key PEM in PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#8
/// (`PRIVATE KEY`) as unencrypted PKCS#8 PEM, the form the store keeps (a key Vault's
/// `pki/issue` returned, for instance). The key type and size are checked as for any key.
pub fn normalize_key_pem(key_pem: &str) -> Result<String, KeyError> {
    let key = load_key(key_pem)?;
    pkcs8_pem(&key)
}

fn check_subject(subject: &SubjectSpec) -> Result<(), KeyError> {
    validate_subject(subject).map_err(|(field, message)| KeyError::Subject { field, message })
}

fn pkcs8_pem(key: &PKeyRef<Private>) -> Result<String, KeyError> {
    let pem = key
        .private_key_to_pem_pkcs8()
        .map_err(crypto("PKCS#8 encoding"))?;
    String::from_utf8(pem).map_err(|_| KeyError::Crypto {
        what: "PKCS#8 encoding",
        reason: "the PEM is not UTF-8".into(),
    })
}

/// Parses a private key PEM (PKCS#8, PKCS#1 or SEC1; not encrypted) and checks its type: EC on
/// P-256, P-384 or P-521, RSA of 2048 to 8192 bits, or Ed25519.
fn load_key(key_pem: &str) -> Result<PKey<Private>, KeyError> {
    if key_pem.len() > MAX_KEY_PEM {
        return Err(KeyError::TooLarge {
            what: "the private key PEM",
            size: key_pem.len(),
            max: MAX_KEY_PEM,
            hint: "give a single PEM private key",
        });
    }
    if key_pem.contains("ENCRYPTED PRIVATE KEY") || key_pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(KeyError::EncryptedKey);
    }
    if !key_pem.contains("PRIVATE KEY-----") {
        return Err(KeyError::InvalidKey("no PEM private key block".into()));
    }
    let key = PKey::private_key_from_pem(key_pem.as_bytes())
        .map_err(|e| KeyError::InvalidKey(reason_only(&e)))?;
    match key.id() {
        Id::RSA => {
            let bits = key.bits();
            if !(2048..=8192).contains(&bits) {
                return Err(KeyError::UnsupportedKey(format!(
                    "an RSA key of {bits} bits"
                )));
            }
        }
        Id::EC => {
            let curve = key
                .ec_key()
                .ok()
                .and_then(|ec| ec.group().curve_name())
                .unwrap_or(Nid::UNDEF);
            if ![Nid::X9_62_PRIME256V1, Nid::SECP384R1, Nid::SECP521R1].contains(&curve) {
                return Err(KeyError::UnsupportedKey(format!(
                    "an EC key on curve {}",
                    curve.short_name().unwrap_or("(unnamed)")
                )));
            }
        }
        Id::ED25519 => {}
        other => {
            return Err(KeyError::UnsupportedKey(format!(
                "of an unsupported type (id {})",
                other.as_raw()
            )))
        }
    }
    Ok(key)
}

/// The reasons of a BoringSSL error stack, without file names: short and free of input bytes.
fn reason_only(e: &ErrorStack) -> String {
    let reasons: Vec<String> = e
        .errors()
        .iter()
        .map(|e| e.reason().unwrap_or("unknown reason").to_owned())
        .collect();
    if reasons.is_empty() {
        "unreadable".into()
    } else {
        reasons.join(", ")
    }
}

fn make_csr(key: &PKeyRef<Private>, s: &SubjectSpec) -> Result<String, KeyError> {
    let e = crypto("CSR construction");
    let mut name = X509NameBuilder::new().map_err(crypto("CSR construction"))?;
    let mut entries: Vec<(Nid, &str)> = Vec::new();
    if let Some(c) = present(&s.country) {
        entries.push((Nid::COUNTRYNAME, c));
    }
    if let Some(v) = present(&s.state) {
        entries.push((Nid::STATEORPROVINCENAME, v));
    }
    if let Some(v) = present(&s.locality) {
        entries.push((Nid::LOCALITYNAME, v));
    }
    if let Some(v) = present(&s.organization) {
        entries.push((Nid::ORGANIZATIONNAME, v));
    }
    if let Some(v) = present(&s.organizational_unit) {
        entries.push((Nid::ORGANIZATIONALUNITNAME, v));
    }
    entries.push((Nid::COMMONNAME, s.common_name.as_str()));
    for (nid, value) in entries {
        let value = if nid == Nid::COUNTRYNAME {
            value.trim().to_ascii_uppercase()
        } else {
            value.to_owned()
        };
        name.append_entry_by_nid(nid, &value)
            .map_err(|err| KeyError::Subject {
                field: format!("subject.{}", api_field(nid)),
                message: format!(
                    "cannot be encoded in a certificate name ({})",
                    reason_only(&err)
                ),
            })?;
    }
    let name = name.build();

    let mut b = X509Req::builder().map_err(crypto("CSR construction"))?;
    b.set_version(0).map_err(crypto("CSR construction"))?;
    b.set_subject_name(&name)
        .map_err(crypto("CSR construction"))?;
    b.set_pubkey(key).map_err(crypto("CSR construction"))?;
    if !(s.dns_names.is_empty()
        && s.ip_addresses.is_empty()
        && s.emails.is_empty()
        && s.uris.is_empty())
    {
        let mut san = SubjectAlternativeName::new();
        for d in &s.dns_names {
            san.dns(d);
        }
        for ip in &s.ip_addresses {
            san.ip(ip.trim());
        }
        for m in &s.emails {
            san.email(m);
        }
        for u in &s.uris {
            san.uri(u);
        }
        let ext = san
            .build(&b.x509v3_context(None))
            .map_err(crypto("subjectAltName construction"))?;
        let mut exts = Stack::new().map_err(crypto("CSR construction"))?;
        exts.push(ext).map_err(crypto("CSR construction"))?;
        b.add_extensions(&exts)
            .map_err(crypto("CSR construction"))?;
    }
    b.sign(key, MessageDigest::sha256()).map_err(e)?;
    let pem = b.build().to_pem().map_err(crypto("CSR encoding"))?;
    String::from_utf8(pem).map_err(|_| KeyError::Crypto {
        what: "CSR encoding",
        reason: "the PEM is not UTF-8".into(),
    })
}

fn api_field(nid: Nid) -> &'static str {
    match nid {
        Nid::COUNTRYNAME => "country",
        Nid::STATEORPROVINCENAME => "state",
        Nid::LOCALITYNAME => "locality",
        Nid::ORGANIZATIONNAME => "organization",
        Nid::ORGANIZATIONALUNITNAME => "organizationalUnit",
        _ => "commonName",
    }
}

// ---------------------------------------------------------------------------------------------
// Completion.

/// A completed version: the PKCS#12 to store and what it holds. `Debug` never prints the
/// password (nor the PKCS#12 bytes).
#[derive(Clone)]
pub struct Completed {
    /// PKCS#12 DER: the key, the leaf and the chain (leaf -> root).
    pub p12: Vec<u8>,
    /// [`PASSWORD_LEN`] random characters from `[A-Za-z0-9]`.
    pub password: String,
    /// Leaf serial, upper-case hex without leading zeros (as [`crate::p12::Decoded`]).
    pub serial_hex: String,
    /// Leaf subject, RFC 4514 one-line form.
    pub subject: String,
    /// Leaf issuer, same form.
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the leaf DER.
    pub leaf_sha256: [u8; 32],
    /// Chain certificates in the PKCS#12 (the leaf not counted).
    pub chain_len: usize,
    /// Things worth telling that do not prevent use.
    pub warnings: Vec<String>,
}

impl fmt::Debug for Completed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completed")
            .field("p12", &format_args!("<{} bytes>", self.p12.len()))
            .field("password", &"<redacted>")
            .field("serial_hex", &self.serial_hex)
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("leaf_sha256", &hex::encode(self.leaf_sha256))
            .field("chain_len", &self.chain_len)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Completes a pending version with the certificate the CA signed.
///
/// `certs_pem` holds the signed leaf (normally first), optionally followed by its chain;
/// `chain_pem` optionally more chain certificates (e.g. Vault's `ca_chain`). The leaf is the
/// certificate whose public key is the key's. Duplicates are dropped, and the chain is put in
/// issuing order (leaf -> root) whatever the upload order: each next certificate is the one whose
/// subject is the current one's issuer and whose key verifies its signature. Errors: no
/// certificate, no certificate for this key, a certificate that is not on the leaf's issuing
/// path, an issuer-named certificate whose signature does not verify, an expired leaf.
///
/// Warnings: leaf not yet valid; less than a day of validity left; an extended key usage
/// without clientAuth; no chain uploaded.
///
/// The PKCS#12 is built with a fresh random password (see the module documentation for its
/// algorithms) and opened again with [`crate::p12::decode`] before it is returned.
pub fn complete(
    key_pem: &str,
    certs_pem: &str,
    chain_pem: Option<&str>,
) -> Result<Completed, KeyError> {
    complete_at(key_pem, certs_pem, chain_pem, unix_now())
}

fn complete_at(
    key_pem: &str,
    certs_pem: &str,
    chain_pem: Option<&str>,
    now: i64,
) -> Result<Completed, KeyError> {
    let key = load_key(key_pem)?;
    let mut certs = read_certs("the certificate upload", certs_pem)?;
    if let Some(chain) = chain_pem {
        if certs.len() + count_pem_blocks(chain) > MAX_CERTIFICATES {
            return Err(KeyError::TooManyCertificates {
                count: certs.len() + count_pem_blocks(chain),
                max: MAX_CERTIFICATES,
            });
        }
        certs.extend(read_certs("the chain upload", chain)?);
    }
    if certs.is_empty() {
        return Err(KeyError::NoCertificate);
    }

    // Duplicates out (by DER), order kept.
    let mut seen: Vec<[u8; 32]> = Vec::with_capacity(certs.len());
    let mut unique: Vec<X509> = Vec::with_capacity(certs.len());
    for c in certs {
        let digest = der_sha256(&c)?;
        if !seen.contains(&digest) {
            seen.push(digest);
            unique.push(c);
        }
    }

    let Some(leaf_at) = unique
        .iter()
        .position(|c| c.public_key().map(|pk| pk.public_eq(&key)).unwrap_or(false))
    else {
        return Err(KeyError::KeyMismatch);
    };
    let leaf = unique.remove(leaf_at);
    let chain = issuing_path(&leaf, unique)?;

    let not_before = unix_time(leaf.not_before())?;
    let not_after = unix_time(leaf.not_after())?;
    if not_after < now {
        return Err(KeyError::Expired {
            not_after: crate::p12::iso8601(not_after),
        });
    }
    let mut warnings = Vec::new();
    if not_before > now {
        warnings.push(format!(
            "the certificate is not valid before {}; targets refuse it until then",
            crate::p12::iso8601(not_before)
        ));
    }
    if not_after - now < DAY {
        warnings.push(format!(
            "the certificate expires at {}, less than a day from now; renew it soon",
            crate::p12::iso8601(not_after)
        ));
    }
    if chain.is_empty() {
        warnings.push(
            "no chain uploaded: targets that need the intermediate will refuse it".to_owned(),
        );
    }

    let password = random_password()?;
    let mut builder = Pkcs12::builder();
    if !chain.is_empty() {
        let mut stack = Stack::new().map_err(crypto("PKCS#12 construction"))?;
        for c in &chain {
            stack
                .push(c.clone())
                .map_err(crypto("PKCS#12 construction"))?;
        }
        builder.ca(stack);
    }
    let p12 = builder
        .build(&password, FRIENDLY_NAME, &key, &leaf)
        .and_then(|p| p.to_der())
        .map_err(crypto("PKCS#12 construction"))?;

    // Open it the way the gateway will, and cross-check what it holds.
    let decoded = crate::p12::decode(&p12, &password).map_err(|e| KeyError::Crypto {
        what: "reading back the PKCS#12",
        reason: e.to_string(),
    })?;
    let leaf_sha256 = der_sha256(&leaf)?;
    if decoded.leaf_sha256 != leaf_sha256 || decoded.chain.len() != chain.len() {
        return Err(KeyError::Crypto {
            what: "reading back the PKCS#12",
            reason: "the file does not hold the certificates it was built from".into(),
        });
    }
    // clientAuth: the P12 tester's check, on the file just built.
    let report = crate::p12::test_report(&p12, &password, now, &crate::p12::KeyPolicy::default());
    if let Some(c) = report
        .checks
        .iter()
        .find(|c| c.name == CLIENT_AUTH_CHECK && !c.passed)
    {
        warnings.push(c.detail.clone());
    }

    Ok(Completed {
        serial_hex: decoded.serial_hex,
        subject: decoded.subject,
        issuer: crate::p12::one_line_name(leaf.issuer_name()),
        not_before: decoded.not_before,
        not_after: decoded.not_after,
        leaf_sha256,
        chain_len: chain.len(),
        warnings,
        p12,
        password,
    })
}

/// Counts PEM blocks of any kind (`-----BEGIN `) to bound parsing work before it starts.
fn count_pem_blocks(pem: &str) -> usize {
    pem.matches("-----BEGIN ").count()
}

fn read_certs(what: &'static str, pem: &str) -> Result<Vec<X509>, KeyError> {
    if pem.len() > MAX_CERTS_PEM {
        return Err(KeyError::TooLarge {
            what,
            size: pem.len(),
            max: MAX_CERTS_PEM,
            hint: "upload the leaf and only the certificates of its issuing chain",
        });
    }
    let blocks = count_pem_blocks(pem);
    if blocks > MAX_CERTIFICATES {
        return Err(KeyError::TooManyCertificates {
            count: blocks,
            max: MAX_CERTIFICATES,
        });
    }
    if pem.contains("PRIVATE KEY-----") {
        return Err(KeyError::KeyInCertificates);
    }
    let certs = X509::stack_from_pem(pem.as_bytes()).map_err(|e| KeyError::BadCertificate {
        what,
        reason: reason_only(&e),
    })?;
    if certs.len() > MAX_CERTIFICATES {
        return Err(KeyError::TooManyCertificates {
            count: certs.len(),
            max: MAX_CERTIFICATES,
        });
    }
    Ok(certs)
}

/// Orders `others` as the issuing path of `leaf` (leaf excluded, up to the root or as far as the
/// uploaded certificates go). Every certificate must be on that path.
fn issuing_path(leaf: &X509, mut others: Vec<X509>) -> Result<Vec<X509>, KeyError> {
    let mut path: Vec<X509> = Vec::with_capacity(others.len());
    let mut current = leaf.clone();
    while !others.is_empty() && !self_signed(&current) {
        let named: Vec<usize> = others
            .iter()
            .enumerate()
            .filter(|(_, c)| names_equal(c.subject_name(), current.issuer_name()))
            .map(|(i, _)| i)
            .collect();
        let Some(&first) = named.first() else {
            break;
        };
        let signer = named.iter().copied().find(|&i| {
            others[i]
                .public_key()
                .and_then(|k| current.verify(&k))
                .unwrap_or(false)
        });
        let Some(i) = signer else {
            return Err(KeyError::ChainSignature {
                subject: crate::p12::one_line_name(current.subject_name()),
                issuer: crate::p12::one_line_name(current.issuer_name()),
                candidate: crate::p12::one_line_name(others[first].subject_name()),
            });
        };
        let next = others.remove(i);
        path.push(next.clone());
        current = next;
    }
    if let Some(stray) = others.first() {
        return Err(KeyError::NotInChain(crate::p12::one_line_name(
            stray.subject_name(),
        )));
    }
    Ok(path)
}

fn self_signed(cert: &X509Ref) -> bool {
    names_equal(cert.subject_name(), cert.issuer_name())
        && cert
            .public_key()
            .and_then(|k| cert.verify(&k))
            .unwrap_or(false)
}

fn names_equal(a: &X509NameRef, b: &X509NameRef) -> bool {
    matches!(a.try_cmp(b), Ok(Ordering::Equal))
}

fn der_sha256(cert: &X509Ref) -> Result<[u8; 32], KeyError> {
    let der = cert.to_der().map_err(crypto("certificate encoding"))?;
    Ok(Sha256::digest(&der).into())
}

/// [`PASSWORD_LEN`] characters from `[A-Za-z0-9]`, uniformly (rejection sampling over
/// BoringSSL's random bytes).
fn random_password() -> Result<String, KeyError> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(PASSWORD_LEN);
    let mut buf = [0u8; 64];
    while out.len() < PASSWORD_LEN {
        boring::rand::rand_bytes(&mut buf).map_err(crypto("random password"))?;
        for b in buf {
            // 248 = 4 * 62: bytes at or above it would favour the first characters.
            if b < 248 && out.len() < PASSWORD_LEN {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

fn unix_time(t: &boring::asn1::Asn1TimeRef) -> Result<i64, KeyError> {
    let epoch = boring::asn1::Asn1Time::from_unix(0).map_err(crypto("certificate dates"))?;
    // `a.diff(b)` is b - a.
    let d = epoch.diff(t).map_err(crypto("certificate dates"))?;
    Ok(i64::from(d.days) * DAY + i64::from(d.secs))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dev::certgen::{self, Issued};
    use boring::asn1::Asn1Time;
    use boring::bn::{BigNum, MsbOption};
    use boring::x509::extension::ExtendedKeyUsage;

    fn subject() -> SubjectSpec {
        SubjectSpec {
            common_name: "client-a".into(),
            organization: Some("Example Org".into()),
            organizational_unit: Some("Payments".into()),
            country: Some("DE".into()),
            state: Some("Berlin".into()),
            locality: Some("Berlin".into()),
            dns_names: vec!["client-a.example.com".into(), "*.svc.example.com".into()],
            ip_addresses: vec!["192.0.2.10".into(), "2001:db8::1".into()],
            emails: vec!["ops@example.com".into()],
            uris: vec!["spiffe://example.org/ns/a/sa/client".into()],
        }
    }

    /// What a CA does with a CSR: copies subject, key and requested extensions, adds EKU.
    fn sign_with(
        ca: &Issued,
        csr_pem: &str,
        not_before_offset: i64,
        lifetime: i64,
        eku: Option<bool>,
    ) -> X509 {
        let req = X509Req::from_pem(csr_pem.as_bytes()).unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let mut serial = BigNum::new().unwrap();
        serial.rand(63, MsbOption::ONE, false).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(req.subject_name()).unwrap();
        b.set_issuer_name(ca.cert.subject_name()).unwrap();
        b.set_pubkey(&req.public_key().unwrap()).unwrap();
        let nb = unix_now() + not_before_offset;
        b.set_not_before(&Asn1Time::from_unix(nb).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::from_unix(nb + lifetime).unwrap())
            .unwrap();
        if let Ok(exts) = req.extensions() {
            for ext in &exts {
                b.append_extension(ext).unwrap();
            }
        }
        match eku {
            Some(true) => {
                let e = ExtendedKeyUsage::new().client_auth().build().unwrap();
                b.append_extension(&e).unwrap();
            }
            Some(false) => {
                let e = ExtendedKeyUsage::new().server_auth().build().unwrap();
                b.append_extension(&e).unwrap();
            }
            None => {}
        }
        b.sign(&ca.key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn sign(ca: &Issued, csr_pem: &str) -> X509 {
        sign_with(ca, csr_pem, -60, 90 * DAY, Some(true))
    }

    fn pem(c: &X509) -> String {
        String::from_utf8(c.to_pem().unwrap()).unwrap()
    }

    fn pems(cs: &[&X509]) -> String {
        cs.iter().map(|c| pem(c)).collect()
    }

    #[test]
    fn key_types_have_the_right_algorithm_and_size() {
        for (kt, id, bits) in [
            (KeyType::EcP256, Id::EC, 256),
            (KeyType::Rsa2048, Id::RSA, 2048),
            (KeyType::Rsa3072, Id::RSA, 3072),
        ] {
            let k = generate(kt, &subject()).unwrap();
            assert!(
                k.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
                "{kt:?}"
            );
            let key = PKey::private_key_from_pem(k.key_pem.as_bytes()).unwrap();
            assert_eq!(key.id(), id, "{kt:?}");
            assert_eq!(key.bits(), bits, "{kt:?}");
            if id == Id::EC {
                assert_eq!(
                    key.ec_key().unwrap().group().curve_name(),
                    Some(Nid::X9_62_PRIME256V1)
                );
            }
            let req = X509Req::from_pem(k.csr_pem.as_bytes()).unwrap();
            assert!(req.public_key().unwrap().public_eq(&key), "{kt:?}");
            assert!(req.verify(&req.public_key().unwrap()).unwrap(), "{kt:?}");
            assert_eq!(
                public_key_der(&k.key_pem).unwrap(),
                req.public_key().unwrap().public_key_to_der().unwrap()
            );
        }
    }

    #[test]
    fn csr_carries_subject_and_every_san() {
        let k = generate(KeyType::EcP256, &subject()).unwrap();
        let req = X509Req::from_pem(k.csr_pem.as_bytes()).unwrap();
        assert_eq!(
            crate::p12::one_line_name(req.subject_name()),
            "CN=client-a,OU=Payments,O=Example Org,L=Berlin,ST=Berlin,C=DE"
        );
        let ca = certgen::new_ca("Unit CA").unwrap();
        let cert = sign(&ca, &k.csr_pem);
        let sans = cert.subject_alt_names().unwrap();
        let dns: Vec<&str> = sans.iter().filter_map(|g| g.dnsname()).collect();
        let ips: Vec<&[u8]> = sans.iter().filter_map(|g| g.ipaddress()).collect();
        let emails: Vec<&str> = sans.iter().filter_map(|g| g.email()).collect();
        let uris: Vec<&str> = sans.iter().filter_map(|g| g.uri()).collect();
        assert_eq!(dns, ["client-a.example.com", "*.svc.example.com"]);
        assert_eq!(ips.len(), 2);
        assert_eq!(ips[0], [192, 0, 2, 10]);
        assert_eq!(ips[1].len(), 16);
        assert_eq!(emails, ["ops@example.com"]);
        assert_eq!(uris, ["spiffe://example.org/ns/a/sa/client"]);
    }

    #[test]
    fn csr_without_sans_has_no_extension() {
        let s = SubjectSpec {
            common_name: "plain".into(),
            ..SubjectSpec::default()
        };
        let k = generate(KeyType::EcP256, &s).unwrap();
        let req = X509Req::from_pem(k.csr_pem.as_bytes()).unwrap();
        assert!(req.extensions().map(|e| e.len()).unwrap_or(0) == 0);
        assert_eq!(crate::p12::one_line_name(req.subject_name()), "CN=plain");
    }

    #[test]
    fn csr_for_reuses_the_key() {
        let k = generate(KeyType::Rsa2048, &subject()).unwrap();
        let renamed = SubjectSpec {
            common_name: "client-b".into(),
            ..subject()
        };
        let again = csr_for(&k.key_pem, &renamed).unwrap();
        assert_ne!(again, k.csr_pem);
        let a = X509Req::from_pem(again.as_bytes()).unwrap();
        let b = X509Req::from_pem(k.csr_pem.as_bytes()).unwrap();
        assert!(a.public_key().unwrap().public_eq(&b.public_key().unwrap()));
        assert!(a.verify(&a.public_key().unwrap()).unwrap());
        assert_eq!(
            crate::p12::one_line_name(a.subject_name())
                .split(',')
                .next(),
            Some("CN=client-b")
        );
    }

    #[test]
    fn normalize_turns_pkcs1_and_sec1_into_pkcs8() {
        let rsa = Rsa::generate(2048).unwrap();
        let pkcs1 = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let group = boring::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = boring::ec::EcKey::generate(&group).unwrap();
        let sec1 = String::from_utf8(ec.private_key_to_pem().unwrap()).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        for original in [pkcs1, sec1] {
            let n = normalize_key_pem(&original).unwrap();
            assert!(n.starts_with("-----BEGIN PRIVATE KEY-----"));
            assert_eq!(
                public_key_der(&n).unwrap(),
                public_key_der(&original).unwrap()
            );
            assert_eq!(normalize_key_pem(&n).unwrap(), n);
        }
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let weak = String::from_utf8(
            PKey::from_rsa(Rsa::generate(1024).unwrap())
                .unwrap()
                .private_key_to_pem_pkcs8()
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            normalize_key_pem(&weak),
            Err(KeyError::UnsupportedKey(_))
        ));
        let garbage = "-----BEGIN PRIVATE KEY-----\nAAAASECRETSECRET\n-----END PRIVATE KEY-----\n";
        let e = normalize_key_pem(garbage).unwrap_err();
        assert!(matches!(e, KeyError::InvalidKey(_)), "{e}");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(matches!(
            normalize_key_pem("no pem"),
            Err(KeyError::InvalidKey(_))
        ));
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let enc = String::from_utf8(
            key.private_key_to_pem_pkcs8_passphrase(boring::symm::Cipher::aes_128_cbc(), b"pw")
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            normalize_key_pem(&enc),
            Err(KeyError::EncryptedKey)
        ));
        let big = "x".repeat(MAX_KEY_PEM + 1);
        assert!(matches!(
            normalize_key_pem(&big),
            Err(KeyError::TooLarge { .. })
        ));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let k = generate(KeyType::EcP256, &subject()).unwrap();
        let d = format!("{k:?}");
        assert!(
            d.contains("<redacted>") && !d.contains("PRIVATE KEY"),
            "{d}"
        );
        let ca = certgen::new_ca("Unit CA").unwrap();
        let leaf = sign(&ca, &k.csr_pem);
        let done = complete(&k.key_pem, &pem(&leaf), Some(&pem(&ca.cert))).unwrap();
        let d = format!("{done:?}");
        assert!(!d.contains(&done.password), "{d}");
    }

    #[test]
    fn complete_builds_a_p12_the_decoder_opens() {
        let root = certgen::new_ca("Unit Root").unwrap();
        let inter = certgen::new_intermediate(&root, "Unit Intermediate").unwrap();
        let k = generate(KeyType::EcP256, &subject()).unwrap();
        let leaf = sign(&inter, &k.csr_pem);
        let done = complete(
            &k.key_pem,
            &pems(&[&leaf, &inter.cert]),
            Some(&pem(&root.cert)),
        )
        .unwrap();
        assert_eq!(done.password.len(), PASSWORD_LEN);
        assert!(done.password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(done.chain_len, 2);
        assert!(done.warnings.is_empty(), "{:?}", done.warnings);
        assert_eq!(done.issuer, "CN=Unit Intermediate");
        let d = crate::p12::decode(&done.p12, &done.password).unwrap();
        let serial = leaf
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_uppercase();
        assert_eq!(d.serial_hex, serial);
        assert_eq!(done.serial_hex, serial);
        assert_eq!(d.subject, done.subject);
        assert_eq!(d.leaf_sha256, done.leaf_sha256);
        assert_eq!(d.not_after, done.not_after);
        assert_eq!(d.chain.len(), 2);
        assert_eq!(d.chain[0].to_der().unwrap(), inter.cert.to_der().unwrap());
        assert_eq!(d.chain[1].to_der().unwrap(), root.cert.to_der().unwrap());
        // Two completions, two passwords.
        let again = complete(&k.key_pem, &pem(&leaf), Some(&pem(&inter.cert))).unwrap();
        assert_ne!(again.password, done.password);
    }

    #[test]
    fn complete_refuses_a_certificate_for_another_key() {
        let ca = certgen::new_ca("Unit CA").unwrap();
        let mine = generate(KeyType::EcP256, &subject()).unwrap();
        let other = generate(KeyType::EcP256, &subject()).unwrap();
        let leaf = sign(&ca, &other.csr_pem);
        let e = complete(&mine.key_pem, &pem(&leaf), Some(&pem(&ca.cert))).unwrap_err();
        assert!(matches!(e, KeyError::KeyMismatch), "{e}");
        assert!(
            e.to_string()
                .contains("the certificate was not issued for this CSR's key"),
            "{e}"
        );
    }

    #[test]
    fn complete_reorders_a_chain_given_out_of_order_and_drops_duplicates() {
        let root = certgen::new_ca("Unit Root").unwrap();
        let inter = certgen::new_intermediate(&root, "Unit Intermediate").unwrap();
        let k = generate(KeyType::EcP256, &subject()).unwrap();
        let leaf = sign(&inter, &k.csr_pem);
        // Root before intermediate, leaf in the middle, intermediate twice.
        let done = complete(
            &k.key_pem,
            &pems(&[&root.cert, &leaf, &inter.cert]),
            Some(&pems(&[&inter.cert, &root.cert])),
        )
        .unwrap();
        assert_eq!(done.chain_len, 2);
        let d = crate::p12::decode(&done.p12, &done.password).unwrap();
        assert_eq!(d.chain[0].to_der().unwrap(), inter.cert.to_der().unwrap());
    }

    #[test]
    fn complete_refuses_a_broken_chain() {
        let root = certgen::new_ca("Unit Root").unwrap();
        let inter = certgen::new_intermediate(&root, "Unit Intermediate").unwrap();
        let k = generate(KeyType::EcP256, &subject()).unwrap();
        let leaf = sign(&inter, &k.csr_pem);
        // An unrelated CA.
        let stranger = certgen::new_ca("Somebody Else").unwrap();
        let e = complete(
            &k.key_pem,
            &pems(&[&leaf, &inter.cert, &stranger.cert]),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, KeyError::NotInChain(s) if s == "CN=Somebody Else"),
            "{e}"
        );
        // A CA with the issuer's name but another key: the signature does not verify.
        let impostor = certgen::new_ca("Unit Intermediate").unwrap();
        let e = complete(&k.key_pem, &pems(&[&leaf, &impostor.cert]), None).unwrap_err();
        assert!(matches!(e, KeyError::ChainSignature { .. }), "{e}");
        // The impostor next to the real one: the real one is picked, the impostor is stray.
        let e = complete(
            &k.key_pem,
            &pems(&[&leaf, &impostor.cert, &inter.cert]),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, KeyError::NotInChain(_)), "{e}");
    }

    #[test]
    fn complete_refuses_an_expired_leaf_and_warns_about_the_rest() {
        let ca = certgen::new_ca("Unit CA").unwrap();
        let k = generate(KeyType::EcP256, &subject()).unwrap();
        let chain = pem(&ca.cert);

        let expired = sign_with(&ca, &k.csr_pem, -10 * DAY, DAY, Some(true));
        let e = complete(&k.key_pem, &pem(&expired), Some(&chain)).unwrap_err();
        assert!(matches!(e, KeyError::Expired { .. }), "{e}");

        let future = sign_with(&ca, &k.csr_pem, DAY, 30 * DAY, Some(true));
        let done = complete(&k.key_pem, &pem(&future), Some(&chain)).unwrap();
        assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
        assert!(done.warnings[0].contains("not valid before"));

        let short = sign_with(&ca, &k.csr_pem, -60, 3_600, Some(true));
        let done = complete(&k.key_pem, &pem(&short), Some(&chain)).unwrap();
        assert!(
            done.warnings.iter().any(|w| w.contains("less than a day")),
            "{:?}",
            done.warnings
        );

        let server_only = sign_with(&ca, &k.csr_pem, -60, 30 * DAY, Some(false));
        let done = complete(&k.key_pem, &pem(&server_only), Some(&chain)).unwrap();
        assert!(
            done.warnings.iter().any(|w| w.contains("clientAuth")),
            "{:?}",
            done.warnings
        );

        let no_eku = sign_with(&ca, &k.csr_pem, -60, 30 * DAY, None);
        let done = complete(&k.key_pem, &pem(&no_eku), Some(&chain)).unwrap();
        assert!(done.warnings.is_empty(), "{:?}", done.warnings);

        let done = complete(&k.key_pem, &pem(&no_eku), None).unwrap();
        assert_eq!(
            done.warnings,
            ["no chain uploaded: targets that need the intermediate will refuse it"]
        );
        assert_eq!(done.chain_len, 0);
    }

    #[test]
    fn complete_bounds_and_checks_its_input() {
        let ca = certgen::new_ca("Unit CA").unwrap();
        let k = generate(KeyType::EcP256, &subject()).unwrap();
        let leaf = sign(&ca, &k.csr_pem);
        assert!(matches!(
            complete(&k.key_pem, "", None),
            Err(KeyError::NoCertificate)
        ));
        assert!(matches!(
            complete(&k.key_pem, "not a certificate", None),
            Err(KeyError::NoCertificate)
        ));
        let eleven = pem(&ca.cert).repeat(11);
        assert!(matches!(
            complete(&k.key_pem, &eleven, None),
            Err(KeyError::TooManyCertificates { count: 11, .. })
        ));
        let ten = pem(&ca.cert).repeat(10);
        assert!(matches!(
            complete(&k.key_pem, &pem(&leaf), Some(&ten)),
            Err(KeyError::TooManyCertificates { count: 11, .. })
        ));
        let huge = format!("{}{}", pem(&leaf), " ".repeat(MAX_CERTS_PEM));
        assert!(matches!(
            complete(&k.key_pem, &huge, None),
            Err(KeyError::TooLarge { .. })
        ));
        let with_key = format!("{}{}", pem(&leaf), k.key_pem);
        let e = complete(&k.key_pem, &with_key, None).unwrap_err();
        assert!(matches!(e, KeyError::KeyInCertificates), "{e}");
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            complete(&k.key_pem, broken, None),
            Err(KeyError::BadCertificate { .. })
        ));
    }

    #[test]
    fn subject_validation_names_the_field() {
        let field = |s: SubjectSpec| validate_subject(&s).unwrap_err().0;
        assert!(validate_subject(&subject()).is_ok());
        let base = subject();
        assert_eq!(
            field(SubjectSpec {
                common_name: " ".into(),
                ..base.clone()
            }),
            "subject.commonName"
        );
        assert_eq!(
            field(SubjectSpec {
                common_name: "x".repeat(65),
                ..base.clone()
            }),
            "subject.commonName"
        );
        assert_eq!(
            field(SubjectSpec {
                common_name: "a\nb".into(),
                ..base.clone()
            }),
            "subject.commonName"
        );
        assert_eq!(
            field(SubjectSpec {
                country: Some("DEU".into()),
                ..base.clone()
            }),
            "subject.country"
        );
        assert_eq!(
            field(SubjectSpec {
                organization: Some("o\u{7}".into()),
                ..base.clone()
            }),
            "subject.organization"
        );
        for bad in [
            "", "a..b", "-a.b", "a_b.c", "*.com", "a.*.c", "f*.a.b", "1.2.3.4", "a.b.", "a.123",
            "ünï.de",
        ] {
            let mut s = base.clone();
            s.dns_names.push(bad.into());
            assert_eq!(field(s), "subject.dnsNames[2]", "{bad:?}");
        }
        for good in ["*.a.b", "localhost", "xn--n3h.example", "a-b.c"] {
            let mut s = base.clone();
            s.dns_names.push(good.into());
            assert!(validate_subject(&s).is_ok(), "{good:?}");
        }
        let mut s = base.clone();
        s.ip_addresses.push("300.1.1.1".into());
        assert_eq!(field(s), "subject.ipAddresses[2]");
        for bad in ["a", "a@b@c.d", "@b.c", "a b@c.d", "a@"] {
            let mut s = base.clone();
            s.emails.insert(0, bad.into());
            assert_eq!(field(s), "subject.emails[0]", "{bad:?}");
        }
        for bad in ["relative/path", "no scheme", ""] {
            let mut s = base.clone();
            s.uris.push(bad.into());
            assert_eq!(field(s), "subject.uris[1]", "{bad:?}");
        }
        let mut s = base.clone();
        s.dns_names = (0..101).map(|i| format!("h{i}.example.com")).collect();
        assert_eq!(field(s), "subject");
        // generate() refuses it too, with the field in the message.
        let mut s = base;
        s.dns_names.push("bad_name.example".into());
        let e = generate(KeyType::EcP256, &s).unwrap_err();
        assert!(e.to_string().starts_with("subject.dnsNames[2]: "), "{e}");
    }
}
