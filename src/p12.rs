//! PKCS#12 decoding and checks.
//!
//! Two users, one code path:
//! - the runtime snapshot calls [`decode_valid_at`] (or [`decode`]) on the bytes a store returned
//!   and turns the result into a Pingora [`CertKey`] with [`cert_key`];
//! - the admin API's P12 tester calls [`test_report`], which opens the file the same way and then
//!   runs every check, reporting each one as passed or failed with a reason a human can act on.
//!
//! BoringSSL (through `boring`) does the cryptography: MAC check, decryption, key and certificate
//! parsing, and the choice of the leaf (the certificate whose public key matches the private
//! key). It reads both flavours `openssl` 3 writes: the default (PBES2 with PBKDF2-HMAC-SHA256
//! and AES-256-CBC, SHA-256 MAC) and `-legacy` (RC2-40 for certificates, 3DES for the key, SHA-1
//! MAC). It does not expose which algorithms protected a file, so [`test_report`] reads that
//! from the unencrypted outer ASN.1 layers with the small BER reader at the end of this module.
//!
//! Errors never include the password. When BoringSSL fails, its reason codes (`PKCS8_R_*`, seen
//! as their names, e.g. `INCORRECT_PASSWORD`) decide the [`P12Error`] variant; when they say
//! "bad data", the outer BER walk decides between "not PKCS#12 at all" and "PKCS#12 but damaged".

use std::fmt::Write as _;

use boring::error::ErrorStack;
use boring::nid::Nid;
use boring::pkcs12::Pkcs12;
use boring::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use boring::x509::{X509NameRef, X509Ref, X509};
use pingora::utils::tls::CertKey;
use sha2::{Digest as _, Sha256};

/// A PKCS#12 file opened with its password: the client certificate, its key and the rest.
#[derive(Clone)]
pub struct Decoded {
    /// The certificate whose public key matches `key`.
    pub leaf: X509,
    pub key: PKey<Private>,
    /// The other certificates in the file. Those that form the issuing path of the leaf come
    /// first, leaf -> root; any others follow in file order.
    pub chain: Vec<X509>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the leaf DER: an identity for the certificate that, unlike the serial number,
    /// two different certificates cannot share.
    pub leaf_sha256: [u8; 32],
    /// One-line subject DN in RFC 4514 order, e.g. `CN=client-a,O=Test`.
    pub subject: String,
    /// Serial number, upper-case hex without leading zeros.
    pub serial_hex: String,
}

impl std::fmt::Debug for Decoded {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded")
            .field("subject", &self.subject)
            .field("serial_hex", &self.serial_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("leaf_sha256", &hex::encode(self.leaf_sha256))
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Why a PKCS#12 file cannot be used. Messages are for humans and never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum P12Error {
    #[error("the file is not PKCS#12 (DER) data")]
    NotPkcs12,
    #[error(
        "the PKCS#12 file is truncated: its header announces {declared} bytes but the file has \
         {actual}"
    )]
    Truncated { declared: usize, actual: usize },
    /// The MAC does not verify with this password. A file whose bytes were altered looks the
    /// same: the MAC cannot tell the two apart.
    #[error("the password does not open this PKCS#12 file")]
    WrongPassword,
    #[error("the PKCS#12 file holds no private key (only certificates)")]
    NoPrivateKey,
    #[error("the PKCS#12 file holds a private key but no certificate")]
    NoCertificate,
    #[error("the PKCS#12 file holds more than one private key; keep only the client key")]
    MultipleKeys,
    #[error("the private key in the PKCS#12 file matches none of its certificates")]
    KeyMismatch,
    #[error("the certificate expired at {}", iso8601(*.not_after))]
    Expired { not_after: i64 },
    #[error("the certificate is not valid before {}", iso8601(*.not_before))]
    NotYetValid { not_before: i64 },
    /// A well-formed file using a feature BoringSSL does not read (an algorithm, no MAC,
    /// public-key integrity mode).
    #[error("the PKCS#12 file uses something this gateway cannot read: {0}")]
    Unsupported(String),
    /// A PBKDF2, PKCS#12-PBE or MAC iteration count over [`Decoder`]'s cap, read from the
    /// file's outer layers before any key derivation runs.
    #[error(
        "{what} iteration count {count} exceeds the cap p12.max_iterations = {cap}; re-export \
         the file with fewer iterations (openssl pkcs12 -export uses 2048 by default)"
    )]
    TooManyIterations {
        what: &'static str,
        count: u64,
        cap: u64,
    },
    #[error("{0}")]
    Other(String),
}

/// Parses `der`, opens it with `password`, finds the leaf (the certificate matching the private
/// key) and checks that the key matches it. No date checks.
pub fn decode(der: &[u8], password: &str) -> Result<Decoded, P12Error> {
    let opened = open(der, password)?;
    let Some(key) = opened.key else {
        return Err(P12Error::NoPrivateKey);
    };
    let Some(leaf) = opened.leaf else {
        return Err(if opened.others.is_empty() {
            P12Error::NoCertificate
        } else {
            P12Error::KeyMismatch
        });
    };
    // BoringSSL picked `leaf` because it matches the key; check it again here so this function's
    // promise does not rest on a library detail.
    let leaf_key = leaf.public_key().map_err(boring_err)?;
    if !leaf_key.public_eq(&key) {
        return Err(P12Error::KeyMismatch);
    }
    let info = CertInfo::of(&leaf)?;
    Ok(Decoded {
        chain: order_chain(&leaf, opened.others),
        leaf,
        key,
        not_before: info.not_before,
        not_after: info.not_after,
        leaf_sha256: info.sha256,
        subject: info.subject,
        serial_hex: info.serial_hex,
    })
}

/// [`decode`], then checks that the leaf is valid at `now` (unix seconds; both ends inclusive).
pub fn decode_valid_at(der: &[u8], password: &str, now: i64) -> Result<Decoded, P12Error> {
    let d = decode(der, password)?;
    if now < d.not_before {
        return Err(P12Error::NotYetValid {
            not_before: d.not_before,
        });
    }
    if now > d.not_after {
        return Err(P12Error::Expired {
            not_after: d.not_after,
        });
    }
    Ok(d)
}

/// The Pingora client certificate for a decoded file: leaf first, then the chain.
pub fn cert_key(d: &Decoded) -> CertKey {
    let mut certs = Vec::with_capacity(1 + d.chain.len());
    certs.push(d.leaf.clone());
    certs.extend(d.chain.iter().cloned());
    CertKey::new(certs, d.key.clone())
}

/// Bounds on the work of opening PKCS#12 files, shared by everything that decodes them (the
/// refresher and the admin API): an iteration cap and a bound on concurrent decodes.
///
/// A PKCS#12 file names its own cost: each PBKDF2 (or PKCS#12 PBE) and the MAC run as many
/// HMAC iterations as the file says, and 10,000,000 of them cost 15-35 s of CPU per decode here.
/// [`Decoder::check`] reads every iteration count from the unencrypted outer layers (MacData,
/// the PBES2/PBKDF2 or PBE parameters of the key bags in plain safes and of each EncryptedData
/// safe) and refuses a file with one over the cap before any key derivation runs. Bags inside an
/// encrypted safe are only visible after decrypting it, so their counts are not checked (no
/// common tool writes a key bag there; openssl and Java put the key in a plain safe). A file
/// whose outer layers do not read as PKCS#12 is left to BoringSSL, which refuses it as such.
///
/// [`Decoder::run`] runs the decode on tokio's blocking pool, at most `concurrency` at a time
/// (a permit is held until the blocking work ends, even if the caller went away).
#[derive(Debug)]
pub struct Decoder {
    max_iterations: u64,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(
            Decoder::DEFAULT_MAX_ITERATIONS,
            Decoder::DEFAULT_CONCURRENCY,
        )
    }
}

impl Decoder {
    /// Default of `p12.max_iterations`. Real files use 1 (`-noiter`) to a few hundred thousand:
    /// openssl 2048, Windows 2000, Java 10,000 (older releases 50,000), OWASP's PBKDF2-SHA256
    /// advice 600,000. A million accepts all of them and costs about 1.5 s of CPU per decode
    /// here; 10,000,000 is refused.
    pub const DEFAULT_MAX_ITERATIONS: u64 = 1_000_000;
    /// Default of `p12.max_concurrent_decodes`.
    pub const DEFAULT_CONCURRENCY: usize = 2;

    pub fn new(max_iterations: u64, concurrency: usize) -> Decoder {
        Decoder {
            max_iterations,
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
        }
    }

    pub fn max_iterations(&self) -> u64 {
        self.max_iterations
    }

    /// Refuses a file with an iteration count over the cap (cheap: no key derivation).
    pub fn check(&self, der: &[u8]) -> Result<(), P12Error> {
        check_iterations(der, self.max_iterations)
    }

    /// Runs `f` (a decode) on the blocking pool once one of the permits is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, P12Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| P12Error::Other("the PKCS#12 decoder is shut down".into()))?;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| P12Error::Other(format!("the PKCS#12 decoder task failed: {e}")))
    }

    /// [`Decoder::check`], then [`decode`] through [`Decoder::run`].
    pub async fn decode(&self, der: Vec<u8>, password: String) -> Result<Decoded, P12Error> {
        self.check(&der)?;
        self.run(move || decode(&der, &password)).await?
    }
}

/// The highest iteration count in the file's outer layers, with what it protects (`PBKDF2`,
/// `PKCS#12 PBE` or `MAC`); `None` when the outer layers do not read as PKCS#12 or name none.
pub fn max_iterations(der: &[u8]) -> Option<(&'static str, u64)> {
    // The first of equal counts: the key's, then the certificates', then the MAC's.
    protection(der)
        .ok()?
        .iterations
        .into_iter()
        .fold(None, |best, (what, n)| match best {
            Some((_, b)) if b >= n => best,
            _ => Some((what, n)),
        })
}

/// Refuses a file whose outer layers name an iteration count over `cap`.
pub fn check_iterations(der: &[u8], cap: u64) -> Result<(), P12Error> {
    match max_iterations(der) {
        Some((what, count)) if count > cap => Err(P12Error::TooManyIterations { what, count, cap }),
        _ => Ok(()),
    }
}

/// What BoringSSL found in an opened file.
struct Opened {
    key: Option<PKey<Private>>,
    /// The last certificate matching `key`, as OpenSSL chooses it.
    leaf: Option<X509>,
    /// Every other certificate, in file order.
    others: Vec<X509>,
}

fn open(der: &[u8], password: &str) -> Result<Opened, P12Error> {
    if password.contains('\0') {
        return Err(P12Error::Other(
            "the password contains a NUL character, which a PKCS#12 password cannot hold".into(),
        ));
    }
    if let Some(declared) = ber::declared_len(der) {
        if declared > der.len() {
            return Err(P12Error::Truncated {
                declared,
                actual: der.len(),
            });
        }
    }
    // `from_der` only copies the bytes; BoringSSL parses everything in `parse2`.
    let p12 = Pkcs12::from_der(der).map_err(|_| P12Error::NotPkcs12)?;
    let parsed = p12
        .parse2(password)
        .map_err(|stack| classify(&stack, der))?;
    Ok(Opened {
        key: parsed.pkey,
        leaf: parsed.cert,
        others: parsed
            .ca
            .map(|s| s.iter().map(|c| c.to_owned()).collect())
            .unwrap_or_default(),
    })
}

/// Turns BoringSSL's error queue after a failed `PKCS12_parse` into a [`P12Error`].
fn classify(stack: &ErrorStack, der: &[u8]) -> P12Error {
    // BoringSSL's reason strings are the names of its `PKCS8_R_*` (and `CIPHER_R_*`, ...)
    // constants, e.g. "INCORRECT_PASSWORD". `boring` does not re-export the numeric constants.
    let reasons: Vec<&str> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    let has = |r: &str| reasons.iter().any(|x| x.eq_ignore_ascii_case(r));

    if has("INCORRECT_PASSWORD") || has("BAD_DECRYPT") {
        // BAD_DECRYPT: the MAC passed but the content did not decrypt, which happens when a
        // tool used different passwords for the MAC and the encryption.
        return P12Error::WrongPassword;
    }
    if has("MULTIPLE_PRIVATE_KEYS_IN_PKCS12") {
        return P12Error::MultipleKeys;
    }
    if has("MISSING_MAC") {
        return P12Error::Unsupported(
            "the file has no MAC (integrity check), which BoringSSL requires; export it again \
             without -nomac"
                .into(),
        );
    }
    if has("PKCS12_PUBLIC_KEY_INTEGRITY_NOT_SUPPORTED") {
        return P12Error::Unsupported(
            "public-key integrity mode (a signed file); export it in password mode".into(),
        );
    }
    const UNSUPPORTED: &[&str] = &[
        "UNKNOWN_ALGORITHM",
        "UNKNOWN_CIPHER",
        "UNKNOWN_CIPHER_ALGORITHM",
        "UNSUPPORTED_CIPHER",
        "UNSUPPORTED_PRF",
        "UNSUPPORTED_KEY_DERIVATION_FUNCTION",
        "UNSUPPORTED_KEYLENGTH",
        "UNSUPPORTED_SALT_TYPE",
        "UNKNOWN_HASH",
        "UNKNOWN_DIGEST",
        "METHOD_NOT_SUPPORTED",
        "UNSUPPORTED_PRIVATE_KEY_ALGORITHM",
        "UNSUPPORTED_ALGORITHM",
    ];
    if let Some(r) = reasons
        .iter()
        .find(|r| UNSUPPORTED.iter().any(|u| r.eq_ignore_ascii_case(u)))
    {
        let unreadable = protection(der)
            .map(|p| p.unreadable_by_boringssl())
            .unwrap_or_default();
        return P12Error::Unsupported(if unreadable.is_empty() {
            format!("BoringSSL reports {r}")
        } else {
            format!(
                "{}, which BoringSSL does not implement; export the file again with AES-256-CBC \
                 (the default of openssl 3)",
                unreadable.join(", ")
            )
        });
    }
    // Everything else is some flavour of "bad data". If the outer layers read as PKCS#12, the
    // damage is inside; otherwise this is not PKCS#12 at all (PEM text, a certificate, noise).
    match protection(der) {
        Err(_) => P12Error::NotPkcs12,
        Ok(_) => P12Error::Other(format!(
            "the file has a PKCS#12 structure but BoringSSL cannot read its contents ({})",
            if reasons.is_empty() {
                "no reason given".to_owned()
            } else {
                reasons.join(", ")
            }
        )),
    }
}

fn boring_err(e: ErrorStack) -> P12Error {
    P12Error::Other(format!("BoringSSL: {e}"))
}

/// Facts about one certificate, computed once.
struct CertInfo {
    not_before: i64,
    not_after: i64,
    sha256: [u8; 32],
    subject: String,
    serial_hex: String,
}

impl CertInfo {
    fn of(cert: &X509Ref) -> Result<Self, P12Error> {
        let der = cert.to_der().map_err(boring_err)?;
        Ok(CertInfo {
            not_before: unix_time(cert.not_before())?,
            not_after: unix_time(cert.not_after())?,
            sha256: Sha256::digest(&der).into(),
            subject: one_line_name(cert.subject_name()),
            serial_hex: cert
                .serial_number()
                .to_bn()
                .and_then(|bn| bn.to_hex_str().map(|s| s.to_uppercase()))
                .map_err(boring_err)?,
        })
    }
}

fn unix_time(t: &boring::asn1::Asn1TimeRef) -> Result<i64, P12Error> {
    let epoch = boring::asn1::Asn1Time::from_unix(0).map_err(boring_err)?;
    // `a.diff(b)` is b - a.
    let d = epoch.diff(t).map_err(boring_err)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// RFC 4514 one-line form: last RDN first, `,` between attributes, special characters escaped.
pub(crate) fn one_line_name(name: &X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let obj = e.object();
            let key = match obj.nid().short_name() {
                Ok(sn) if obj.nid() != Nid::UNDEF => sn.to_owned(),
                _ => obj.to_string(),
            };
            let value = match e.data().as_utf8() {
                Ok(s) => escape_dn_value(&s),
                Err(_) => format!("#{}", hex::encode(e.data().as_slice())),
            };
            format!("{key}={value}")
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 3339 (UTC) of a unix time, or `unix time N` outside the representable range.
pub(crate) fn iso8601(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {t}"))
}

/// Did `issuer` issue `subject`? Names (and key identifiers, when present) must match and the
/// signature must verify with the issuer's key.
fn issued_by(subject: &X509Ref, issuer: &X509Ref) -> bool {
    issuer.issued(subject).is_ok()
        && issuer
            .public_key()
            .and_then(|k| subject.verify(&k))
            .unwrap_or(false)
}

fn self_issued(cert: &X509Ref) -> bool {
    cert.issued(cert).is_ok()
}

/// Orders `others` as the leaf's issuing path (leaf -> root) as far as it goes; certificates
/// not on the path follow in their original order.
fn order_chain(leaf: &X509Ref, mut others: Vec<X509>) -> Vec<X509> {
    let mut ordered = Vec::with_capacity(others.len());
    let mut current = leaf.to_owned();
    while !self_issued(&current) {
        let Some(i) = others.iter().position(|c| issued_by(&current, c)) else {
            break;
        };
        let next = others.remove(i);
        ordered.push(next.clone());
        current = next;
    }
    ordered.extend(others);
    ordered
}

// ---------------------------------------------------------------------------------------------
// The tester report.

/// Names of the tester's checks, in the order they are reported.
pub mod check {
    pub const OPENS: &str = "opens_with_password";
    pub const PRIVATE_KEY: &str = "one_private_key_matching_leaf";
    pub const CHAIN_ORDER: &str = "chain_order";
    pub const KEY_STRENGTH: &str = "key_algorithm_and_strength";
    pub const SIGNATURE: &str = "signature_algorithm";
    pub const VALIDITY: &str = "validity_window";
    pub const CLIENT_AUTH: &str = "client_auth_usage";
    pub const JAVA_READABLE: &str = "readable_by_java_pkcs12";
    /// All of them, in report order.
    pub const ALL: [&str; 8] = [
        OPENS,
        PRIVATE_KEY,
        CHAIN_ORDER,
        KEY_STRENGTH,
        SIGNATURE,
        VALIDITY,
        CLIENT_AUTH,
        JAVA_READABLE,
    ];
}

/// One check of the tester: a stable name (see [`check`]), a verdict and a reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// The tester's answer for one file. `usable` is true when every check passed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub usable: bool,
    pub checks: Vec<Check>,
    /// The summary fields describe the leaf; they are `None` when the file did not open (or held
    /// no certificate). Without a matching key the leaf is the file's end-entity certificate
    /// (one that issued no other certificate in the file).
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    /// RFC 3339 / ISO 8601, UTC.
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// "RSA", "EC P-256", "Ed25519", ...
    pub key_algorithm: Option<String>,
    pub key_bits: Option<u32>,
    pub signature_algorithm: Option<String>,
    /// SHA-256 of the leaf DER, lower-case hex.
    pub sha256: Option<String>,
    /// Certificates in the file besides the leaf.
    pub chain_length: Option<usize>,
    /// How the file is protected, read from its outer layers, e.g.
    /// "key: PBES2 (PBKDF2 with hmacWithSHA256, AES-256-CBC); ...; MAC: SHA-256".
    pub protection: Option<String>,
}

/// What the tester accepts as a client key.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub rsa_min_bits: u32,
    /// NIST names: "P-256", "P-384", "P-521".
    pub ec_curves: Vec<String>,
    /// The iteration cap (`p12.max_iterations`): a file over it fails `opens_with_password`
    /// without being opened.
    pub max_iterations: u64,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            rsa_min_bits: 2048,
            ec_curves: vec!["P-256".to_owned(), "P-384".to_owned()],
            max_iterations: Decoder::DEFAULT_MAX_ITERATIONS,
        }
    }
}

/// Runs every check on a PKCS#12 file. Never fails: a file that does not open gets a report
/// whose first failed check says why, and whose later checks say "not run".
pub fn test_report(der: &[u8], password: &str, now: i64, policy: &KeyPolicy) -> Report {
    let mut r = Reporter::default();
    if let Err(e) = check_iterations(der, policy.max_iterations) {
        r.fail(check::OPENS, e.to_string());
        return r.finish_not_run("the file was not opened");
    }
    let opened = match open(der, password) {
        Ok(o) => o,
        Err(P12Error::MultipleKeys) => {
            r.pass(
                check::OPENS,
                "the password opens the file and its MAC verifies".into(),
            );
            r.fail(check::PRIVATE_KEY, P12Error::MultipleKeys.to_string());
            return r.finish_not_run("the file holds more than one private key");
        }
        Err(e) => {
            let mut detail = e.to_string();
            if matches!(e, P12Error::NotPkcs12) {
                if let Some(hint) = not_pkcs12_hint(der) {
                    detail.push_str(": ");
                    detail.push_str(hint);
                }
            }
            r.fail(check::OPENS, detail);
            return r.finish_not_run("the file did not open");
        }
    };
    let n_certs = opened.others.len() + usize::from(opened.leaf.is_some());
    r.pass(
        check::OPENS,
        format!(
            "the password opens the file and its MAC verifies; it holds {} and {n_certs} \
             certificate(s)",
            if opened.key.is_some() {
                "a private key"
            } else {
                "no private key"
            }
        ),
    );

    // The leaf: BoringSSL's choice when the key matches; otherwise the end-entity certificate,
    // so the certificate checks can still say something useful.
    let Opened {
        key,
        leaf,
        mut others,
    } = opened;
    let leaf = match (&key, leaf) {
        (None, Some(cert)) => {
            // Not expected (BoringSSL names a leaf only when it matches a key); treat it as one
            // more certificate.
            others.insert(0, cert);
            None
        }
        (_, leaf) => leaf,
    };
    let (leaf, others) = match (&key, leaf) {
        (Some(key), Some(leaf)) => {
            r.pass(
                check::PRIVATE_KEY,
                format!(
                    "one private key ({}), matching the certificate {}",
                    describe_key(key).0,
                    one_line_name(leaf.subject_name())
                ),
            );
            (leaf, others)
        }
        (key, _) => {
            let Some(i) = end_entity_index(&others) else {
                let detail = if key.is_some() {
                    P12Error::NoCertificate.to_string()
                } else {
                    "the PKCS#12 file holds neither a private key nor a certificate".to_owned()
                };
                r.fail(check::PRIVATE_KEY, detail);
                return r.finish_not_run("the file holds no certificate");
            };
            let leaf = others.remove(i);
            let detail = if key.is_some() {
                format!(
                    "{} ({} certificate(s), e.g. {})",
                    P12Error::KeyMismatch,
                    others.len() + 1,
                    one_line_name(leaf.subject_name())
                )
            } else {
                P12Error::NoPrivateKey.to_string()
            };
            r.fail(check::PRIVATE_KEY, detail);
            (leaf, others)
        }
    };

    // Chain order, as stored in the file.
    let path: Vec<&X509Ref> = std::iter::once(&*leaf)
        .chain(others.iter().map(|c| &**c))
        .collect();
    match path.windows(2).position(|w| !issued_by(w[0], w[1])) {
        _ if others.is_empty() => r.pass(
            check::CHAIN_ORDER,
            "no chain in the file (the upstream must know the leaf's issuer)".into(),
        ),
        None => r.pass(
            check::CHAIN_ORDER,
            format!("{} certificate(s), each issued by the next", path.len()),
        ),
        Some(i) => r.fail(
            check::CHAIN_ORDER,
            format!(
                "certificate {} ({}) was not issued by certificate {} ({}); store the chain \
                 leaf first, each certificate followed by its issuer",
                i + 1,
                one_line_name(path[i].subject_name()),
                i + 2,
                one_line_name(path[i + 1].subject_name()),
            ),
        ),
    }

    // Key algorithm and strength, from the leaf's public key (works without the private key).
    let (key_algorithm, key_bits) = match leaf.public_key() {
        Ok(public) => {
            let (name, bits) = describe_key(&public);
            match key_verdict(&public, &name, bits, policy) {
                Ok(detail) => r.pass(check::KEY_STRENGTH, detail),
                Err(detail) => r.fail(check::KEY_STRENGTH, detail),
            }
            (Some(name), Some(bits))
        }
        Err(_) => {
            r.fail(
                check::KEY_STRENGTH,
                "BoringSSL cannot read the certificate's public key".into(),
            );
            (None, None)
        }
    };

    // Signature algorithm of the leaf.
    let sig_nid = leaf.signature_algorithm().object().nid();
    let sig_name = match sig_nid.long_name() {
        Ok(n) if sig_nid != Nid::UNDEF => n.to_owned(),
        _ => leaf.signature_algorithm().object().to_string(),
    };
    let digest = sig_nid.signature_algorithms().map(|a| a.digest);
    match digest {
        Some(d) if [Nid::MD2, Nid::MD4, Nid::MD5, Nid::MD5_SHA1, Nid::SHA1].contains(&d) => r.fail(
            check::SIGNATURE,
            format!(
                "the certificate is signed with {sig_name}; MD5 and SHA-1 signatures are \
                 rejected by current TLS servers; have it reissued with SHA-256 or better"
            ),
        ),
        Some(_) => r.pass(check::SIGNATURE, format!("signed with {sig_name}")),
        None => r.pass(
            check::SIGNATURE,
            format!("signed with {sig_name} (not a known MD5 or SHA-1 algorithm)"),
        ),
    }

    // Validity window at `now`.
    let info = CertInfo::of(&leaf).ok();
    match &info {
        Some(i) if now < i.not_before => r.fail(
            check::VALIDITY,
            format!(
                "not valid before {} (in {})",
                iso8601(i.not_before),
                span(i.not_before - now)
            ),
        ),
        Some(i) if now > i.not_after => r.fail(
            check::VALIDITY,
            format!(
                "expired at {} ({} ago)",
                iso8601(i.not_after),
                span(now - i.not_after)
            ),
        ),
        Some(i) => r.pass(
            check::VALIDITY,
            format!(
                "valid from {} until {} ({} left)",
                iso8601(i.not_before),
                iso8601(i.not_after),
                span(i.not_after - now)
            ),
        ),
        None => r.fail(
            check::VALIDITY,
            "BoringSSL cannot read the certificate's validity dates".into(),
        ),
    }

    // clientAuth extended key usage.
    match leaf.to_der().ok().map(|d| ber::extended_key_usage(&d)) {
        Some(Ok(None)) => r.pass(
            check::CLIENT_AUTH,
            "no extended key usage extension, so any usage is allowed".into(),
        ),
        Some(Ok(Some(oids))) if oids.iter().any(|o| o == OID_CLIENT_AUTH) => r.pass(
            check::CLIENT_AUTH,
            "the extended key usage includes clientAuth".into(),
        ),
        Some(Ok(Some(oids))) if oids.iter().any(|o| o == OID_ANY_EKU) => r.pass(
            check::CLIENT_AUTH,
            "the extended key usage includes anyExtendedKeyUsage".into(),
        ),
        Some(Ok(Some(oids))) => r.fail(
            check::CLIENT_AUTH,
            format!(
                "the extended key usage ({}) lacks clientAuth, so servers will refuse it as a \
                 client certificate",
                oids.iter()
                    .map(|o| eku_name(o))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(Err(e)) => r.fail(
            check::CLIENT_AUTH,
            format!("cannot read the certificate's extensions: {e}"),
        ),
        None => r.fail(
            check::CLIENT_AUTH,
            "BoringSSL cannot encode the certificate".into(),
        ),
    }

    // Readable by Java.
    let protection = protection(der);
    match &protection {
        Ok(p) => match p.java_verdict() {
            Ok(()) => r.pass(
                check::JAVA_READABLE,
                format!("{} (inferred from the algorithms)", p.describe()),
            ),
            Err(why) => r.fail(check::JAVA_READABLE, format!("{why} (inferred)")),
        },
        Err(e) => r.fail(
            check::JAVA_READABLE,
            format!("cannot read the file's outer structure to tell: {e}"),
        ),
    }

    let mut report = r.finish_not_run("");
    report.subject = Some(one_line_name(leaf.subject_name()));
    report.issuer = Some(one_line_name(leaf.issuer_name()));
    if let Some(i) = info {
        report.serial = Some(i.serial_hex);
        report.not_before = Some(iso8601(i.not_before));
        report.not_after = Some(iso8601(i.not_after));
        report.sha256 = Some(hex::encode(i.sha256));
    }
    report.key_algorithm = key_algorithm;
    report.key_bits = key_bits;
    report.signature_algorithm = Some(sig_name);
    report.chain_length = Some(others.len());
    report.protection = protection.ok().map(|p| p.describe());
    report
}

#[derive(Default)]
struct Reporter {
    checks: Vec<Check>,
}

impl Reporter {
    fn pass(&mut self, name: &'static str, detail: String) {
        self.checks.push(Check {
            name,
            passed: true,
            detail,
        });
    }

    fn fail(&mut self, name: &'static str, detail: String) {
        self.checks.push(Check {
            name,
            passed: false,
            detail,
        });
    }

    /// Adds "not run" entries for the checks not reported yet, and builds the report.
    fn finish_not_run(mut self, why: &str) -> Report {
        for name in check::ALL {
            if !self.checks.iter().any(|c| c.name == name) {
                self.fail(name, format!("not run: {why}"));
            }
        }
        Report {
            usable: self.checks.iter().all(|c| c.passed),
            checks: self.checks,
            subject: None,
            issuer: None,
            serial: None,
            not_before: None,
            not_after: None,
            key_algorithm: None,
            key_bits: None,
            signature_algorithm: None,
            sha256: None,
            chain_length: None,
            protection: None,
        }
    }
}

fn not_pkcs12_hint(der: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(der).ok()?.trim();
    if text.starts_with("-----BEGIN") {
        Some("it is PEM text; a PKCS#12 file is binary (make one with `openssl pkcs12 -export`)")
    } else if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r'))
    {
        Some("it looks like base64 text; decode it to binary first")
    } else {
        None
    }
}

/// Index of a certificate that issued no other certificate in `certs` (the end of the chain).
fn end_entity_index(certs: &[X509]) -> Option<usize> {
    if certs.is_empty() {
        return None;
    }
    let issues_another = |i: usize| {
        certs
            .iter()
            .enumerate()
            .any(|(j, c)| i != j && issued_by(c, &certs[i]))
    };
    Some((0..certs.len()).find(|&i| !issues_another(i)).unwrap_or(0))
}

/// ("RSA" | "EC P-256" | "Ed25519" | ..., bits).
pub(crate) fn describe_key<T: HasPublic>(key: &PKeyRef<T>) -> (String, u32) {
    let bits = key.bits();
    let name = match key.id() {
        Id::RSA => "RSA".to_owned(),
        Id::EC => match key.ec_key().ok().and_then(|k| k.group().curve_name()) {
            Some(nid) => format!("EC {}", curve_name(nid)),
            None => "EC (unnamed curve)".to_owned(),
        },
        Id::ED25519 => "Ed25519".to_owned(),
        other => format!("key type {}", other.as_raw()),
    };
    (name, bits)
}

fn curve_name(nid: Nid) -> String {
    match nid {
        Nid::X9_62_PRIME256V1 => "P-256".to_owned(),
        Nid::SECP384R1 => "P-384".to_owned(),
        Nid::SECP521R1 => "P-521".to_owned(),
        Nid::SECP224R1 => "P-224".to_owned(),
        other => other.short_name().unwrap_or("unknown curve").to_owned(),
    }
}

fn key_verdict<T: HasPublic>(
    key: &PKeyRef<T>,
    name: &str,
    bits: u32,
    policy: &KeyPolicy,
) -> Result<String, String> {
    match key.id() {
        Id::RSA if bits >= policy.rsa_min_bits => Ok(format!("RSA {bits} bits")),
        Id::RSA => Err(format!(
            "RSA {bits} bits is below the minimum of {} bits; issue a new key",
            policy.rsa_min_bits
        )),
        Id::EC => {
            let curve = name.trim_start_matches("EC ");
            if policy.ec_curves.iter().any(|c| c == curve) {
                Ok(format!("{name} ({bits} bits)"))
            } else {
                Err(format!(
                    "{name} is not an allowed curve (allowed: {})",
                    policy.ec_curves.join(", ")
                ))
            }
        }
        Id::ED25519 => Err(
            "Ed25519: Java's PKCS12 keystore (before Java 15) and most TLS stacks in front of \
             partner APIs do not accept Ed25519 client keys; use EC P-256/P-384 or RSA with at \
             least 2048 bits"
                .to_owned(),
        ),
        _ => Err(format!(
            "{name} is not a client key type TLS servers commonly accept; use EC P-256/P-384 \
             or RSA"
        )),
    }
}

/// "3 days", "5 hours", "12 minutes".
fn span(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 86_400 {
        format!("{} days", secs / 86_400)
    } else if secs >= 3_600 {
        format!("{} hours", secs / 3_600)
    } else {
        format!("{} minutes", secs / 60)
    }
}

const OID_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
const OID_ANY_EKU: &str = "2.5.29.37.0";

fn eku_name(oid: &str) -> String {
    match oid {
        "1.3.6.1.5.5.7.3.1" => "serverAuth".to_owned(),
        OID_CLIENT_AUTH => "clientAuth".to_owned(),
        "1.3.6.1.5.5.7.3.3" => "codeSigning".to_owned(),
        "1.3.6.1.5.5.7.3.4" => "emailProtection".to_owned(),
        "1.3.6.1.5.5.7.3.8" => "timeStamping".to_owned(),
        "1.3.6.1.5.5.7.3.9" => "OCSPSigning".to_owned(),
        other => other.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// How a file is protected, read from its outer layers without the password.

/// A password-based encryption scheme as named in a PKCS#12 file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pbe {
    /// PKCS#12's own PBE schemes (RFC 7292 appendix C): one OID names the KDF and the cipher.
    Pkcs12(&'static str),
    /// PBES2 (RFC 8018): PBKDF2 with a PRF, then a cipher.
    Pbes2 { prf: String, cipher: String },
    /// Anything else, by OID.
    Other(String),
}

impl std::fmt::Display for Pbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pbe::Pkcs12(name) => f.write_str(name),
            Pbe::Pbes2 { prf, cipher } => write!(f, "PBES2 (PBKDF2 with {prf}, {cipher})"),
            Pbe::Other(oid) => write!(f, "algorithm {oid}"),
        }
    }
}

/// One piece of a PKCS#12 file and its protection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// pkcs8ShroudedKeyBag: an encrypted private key.
    ShroudedKey(Pbe),
    /// keyBag: a private key in the clear.
    PlainKey,
    /// certBag in an unencrypted safe.
    PlainCertificates,
    /// encryptedData safe: normally the certificates (its bags are only visible after
    /// decryption).
    EncryptedSafe(Pbe),
    /// Any other content type (envelopedData: public-key privacy mode), by OID.
    OtherSafe(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Protection {
    /// The MAC's digest; `None` when the file has no MAC.
    mac: Option<String>,
    parts: Vec<Part>,
    /// Every iteration count in the outer layers: (`PBKDF2` | `PKCS#12 PBE` | `MAC`, count).
    iterations: Vec<(&'static str, u64)>,
}

impl Protection {
    fn describe(&self) -> String {
        let mut out = String::new();
        let mut seen: Vec<String> = Vec::new();
        for p in &self.parts {
            let s = match p {
                Part::ShroudedKey(pbe) => format!("key: {pbe}"),
                Part::PlainKey => "key: not encrypted".to_owned(),
                Part::PlainCertificates => "certificates: not encrypted".to_owned(),
                Part::EncryptedSafe(pbe) => format!("certificates: {pbe}"),
                Part::OtherSafe(oid) => format!("safe of content type {oid}"),
            };
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        for s in seen {
            let _ = write!(out, "{s}; ");
        }
        match &self.mac {
            Some(m) => {
                let _ = write!(out, "MAC: {m}");
            }
            None => out.push_str("no MAC"),
        }
        out
    }

    /// The parts BoringSSL cannot decrypt, described ("certificates: pbeWithSHAAnd40BitRC4").
    /// BoringSSL implements PKCS#12 PBE with SHA-1 and RC2-40, RC4-128 or 3-key 3DES, and
    /// PBES2 with PBKDF2 (HMAC-SHA-1 or HMAC-SHA-256) and AES-128/192/256-CBC, DES-EDE3-CBC or
    /// RC2-CBC (`crypto/pkcs8/pkcs8.cc`, `p5_pbev2.cc`).
    fn unreadable_by_boringssl(&self) -> Vec<String> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::ShroudedKey(pbe) if !boringssl_reads(pbe) => Some(format!("key: {pbe}")),
                Part::EncryptedSafe(pbe) if !boringssl_reads(pbe) => {
                    Some(format!("certificates: {pbe}"))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether Java 17's PKCS12 keystore can read this file. A heuristic from the algorithm
    /// names alone, checked against `keytool -importkeystore` (Java 17) on files made by
    /// openssl 3:
    /// - encryption: PBES2 with PBKDF2 (any HMAC-SHA-1/SHA-2 PRF) and AES-128-CBC or AES-256-CBC,
    ///   or PKCS#12 PBE with SHA-1 and 3-key 3DES, RC2 (40 or 128 bits) or RC4 (40 or 128 bits)
    ///   are readable; PBES2 with AES-192 or DES-EDE3, and 2-key 3DES, are not;
    /// - a private key in the clear (keyBag) is skipped by Java, which then sees no key entry;
    ///   certificates in the clear are fine;
    /// - MAC digests SHA-1, SHA-224, SHA-256, SHA-384 and SHA-512 are readable.
    ///
    /// It cannot see inside the encrypted safes, so the verdict is inferred, not proven.
    fn java_verdict(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for p in &self.parts {
            match p {
                Part::ShroudedKey(pbe) | Part::EncryptedSafe(pbe) if !java_reads(pbe) => {
                    problems.push(format!("Java 17 cannot decrypt {pbe}"))
                }
                Part::PlainKey => problems.push(
                    "the private key is not encrypted (keyBag), and Java skips such keys".into(),
                ),
                Part::OtherSafe(oid) => {
                    problems.push(format!("Java cannot read a safe of content type {oid}"))
                }
                _ => {}
            }
        }
        match self.mac.as_deref() {
            Some("SHA-1" | "SHA-224" | "SHA-256" | "SHA-384" | "SHA-512") => {}
            Some(other) => problems.push(format!("Java 17 cannot check a {other} MAC")),
            None => problems.push("the file has no MAC".into()),
        }
        let mut unique: Vec<String> = Vec::new();
        for p in problems {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        if unique.is_empty() {
            Ok(())
        } else {
            Err(unique.join("; "))
        }
    }
}

fn boringssl_reads(pbe: &Pbe) -> bool {
    match pbe {
        Pbe::Pkcs12(name) => [
            "pbeWithSHAAnd40BitRC2-CBC",
            "pbeWithSHAAnd128BitRC4",
            "pbeWithSHAAnd3-KeyTripleDES-CBC",
        ]
        .contains(name),
        Pbe::Pbes2 { prf, cipher } => {
            (prf == "hmacWithSHA1" || prf == "hmacWithSHA256")
                && [
                    "AES-128-CBC",
                    "AES-192-CBC",
                    "AES-256-CBC",
                    "DES-EDE3-CBC",
                    "RC2-CBC",
                ]
                .contains(&cipher.as_str())
        }
        Pbe::Other(_) => false,
    }
}

fn java_reads(pbe: &Pbe) -> bool {
    match pbe {
        Pbe::Pkcs12(name) => !name.contains("2-KeyTripleDES"),
        Pbe::Pbes2 { prf, cipher } => {
            prf.starts_with("hmacWithSHA") && (cipher == "AES-128-CBC" || cipher == "AES-256-CBC")
        }
        Pbe::Other(_) => false,
    }
}

fn pkcs12_pbe_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.2.840.113549.1.12.1.1" => "pbeWithSHAAnd128BitRC4",
        "1.2.840.113549.1.12.1.2" => "pbeWithSHAAnd40BitRC4",
        "1.2.840.113549.1.12.1.3" => "pbeWithSHAAnd3-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.4" => "pbeWithSHAAnd2-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.5" => "pbeWithSHAAnd128BitRC2-CBC",
        "1.2.840.113549.1.12.1.6" => "pbeWithSHAAnd40BitRC2-CBC",
        _ => return None,
    })
}

fn algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.2.7" => "hmacWithSHA1",
        "1.2.840.113549.2.8" => "hmacWithSHA224",
        "1.2.840.113549.2.9" => "hmacWithSHA256",
        "1.2.840.113549.2.10" => "hmacWithSHA384",
        "1.2.840.113549.2.11" => "hmacWithSHA512",
        "2.16.840.1.101.3.4.1.2" => "AES-128-CBC",
        "2.16.840.1.101.3.4.1.22" => "AES-192-CBC",
        "2.16.840.1.101.3.4.1.42" => "AES-256-CBC",
        "1.2.840.113549.3.7" => "DES-EDE3-CBC",
        "1.2.840.113549.3.2" => "RC2-CBC",
        "1.3.14.3.2.7" => "DES-CBC",
        "1.3.14.3.2.26" => "SHA-1",
        "2.16.840.1.101.3.4.2.1" => "SHA-256",
        "2.16.840.1.101.3.4.2.2" => "SHA-384",
        "2.16.840.1.101.3.4.2.3" => "SHA-512",
        "2.16.840.1.101.3.4.2.4" => "SHA-224",
        "1.2.840.113549.2.5" => "MD5",
        other => return other.to_owned(),
    }
    .to_owned()
}

const OID_DATA: &str = "1.2.840.113549.1.7.1";
const OID_ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const OID_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.1";
const OID_SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const OID_CERT_BAG: &str = "1.2.840.113549.1.12.10.1.3";
const OID_PBES2: &str = "1.2.840.113549.1.5.13";
const OID_PBKDF2: &str = "1.2.840.113549.1.5.12";
const OID_EKU: &str = "2.5.29.37";

/// Walks PFX -> authSafe (data) -> AuthenticatedSafe -> each ContentInfo -> SafeBags of the
/// unencrypted safes, noting every algorithm identifier on the way (RFC 7292 section 4).
fn protection(der: &[u8]) -> Result<Protection, ber::Error> {
    use ber::{read_all, Error, OCTET_STRING, OCTET_STRING_C, SEQUENCE};
    let pfx = read_all(der)?.expect_tag(SEQUENCE)?;
    let fields = pfx.children()?;
    let [version, auth_safe, rest @ ..] = fields.as_slice() else {
        return Err(Error::Malformed("PFX needs a version and an authSafe"));
    };
    version.expect_tag(ber::INTEGER)?;
    let (content_type, content) = content_info(auth_safe)?;
    if content_type != OID_DATA {
        return Err(Error::Malformed("authSafe is not of type data"));
    }
    if ![OCTET_STRING, OCTET_STRING_C].contains(&content.tag) {
        return Err(Error::Malformed("authSafe content is not an OCTET STRING"));
    }
    let safes_octets = content.octets()?;
    let safes_der = read_all(&safes_octets)?.expect_tag(SEQUENCE)?.children()?;
    let mut parts = Vec::new();
    let mut iterations = Vec::new();
    for ci in &safes_der {
        let (ct, content) = content_info(ci)?;
        match ct.as_str() {
            OID_DATA => {
                let octets = content.octets()?;
                let bags = read_all(&octets)?.expect_tag(SEQUENCE)?.children()?;
                for bag in &bags {
                    let fields = bag.expect_tag(SEQUENCE)?.children()?;
                    let [id, value, ..] = fields.as_slice() else {
                        return Err(Error::Malformed("SafeBag needs an id and a value"));
                    };
                    match id.oid()?.as_str() {
                        OID_KEY_BAG => parts.push(Part::PlainKey),
                        OID_CERT_BAG => parts.push(Part::PlainCertificates),
                        OID_SHROUDED_KEY_BAG => {
                            let epki = value.explicit()?.expect_tag(SEQUENCE)?.children()?;
                            let alg = epki
                                .first()
                                .ok_or(Error::Malformed("empty EncryptedPrivateKeyInfo"))?;
                            parts.push(Part::ShroudedKey(pbe(alg)?));
                            iterations.extend(pbe_iterations(alg)?);
                        }
                        _ => {}
                    }
                }
            }
            OID_ENCRYPTED_DATA => {
                // EncryptedData ::= SEQUENCE { version, EncryptedContentInfo ::= SEQUENCE {
                //   contentType, contentEncryptionAlgorithm, [0] encryptedContent } }
                let ed = content.expect_tag(SEQUENCE)?.children()?;
                let eci = ed
                    .get(1)
                    .ok_or(Error::Malformed("EncryptedData without content info"))?
                    .expect_tag(SEQUENCE)?
                    .children()?;
                let alg = eci
                    .get(1)
                    .ok_or(Error::Malformed("EncryptedContentInfo without algorithm"))?;
                parts.push(Part::EncryptedSafe(pbe(alg)?));
                iterations.extend(pbe_iterations(alg)?);
            }
            other => parts.push(Part::OtherSafe(other.to_owned())),
        }
    }
    // MacData ::= SEQUENCE { mac DigestInfo ::= SEQUENCE { AlgorithmIdentifier, digest }, .. }
    let mac = match rest.first() {
        None => None,
        Some(mac_data) => {
            let md = mac_data.expect_tag(SEQUENCE)?.children()?;
            let digest_info = md
                .first()
                .ok_or(Error::Malformed("empty MacData"))?
                .expect_tag(SEQUENCE)?
                .children()?;
            let alg = digest_info
                .first()
                .ok_or(Error::Malformed("empty DigestInfo"))?
                .expect_tag(SEQUENCE)?
                .children()?;
            let oid = alg
                .first()
                .ok_or(Error::Malformed("empty AlgorithmIdentifier"))?
                .oid()?;
            // MacData ::= SEQUENCE { mac, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }
            if let Some(n) = md.get(2) {
                iterations.push(("MAC", n.uint()?));
            }
            Some(algorithm_name(&oid))
        }
    };
    Ok(Protection {
        mac,
        parts,
        iterations,
    })
}

/// ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY } -> (type, content).
fn content_info<'a>(tlv: &ber::Tlv<'a>) -> Result<(String, ber::Tlv<'a>), ber::Error> {
    let fields = tlv.expect_tag(ber::SEQUENCE)?.children()?;
    let [ct, content, ..] = fields.as_slice() else {
        return Err(ber::Error::Malformed(
            "ContentInfo needs a type and content",
        ));
    };
    Ok((ct.oid()?, content.explicit()?))
}

/// AlgorithmIdentifier -> [`Pbe`].
fn pbe(alg: &ber::Tlv<'_>) -> Result<Pbe, ber::Error> {
    use ber::{Error, SEQUENCE};
    let fields = alg.expect_tag(SEQUENCE)?.children()?;
    let oid = fields
        .first()
        .ok_or(Error::Malformed("empty AlgorithmIdentifier"))?
        .oid()?;
    if let Some(name) = pkcs12_pbe_name(&oid) {
        return Ok(Pbe::Pkcs12(name));
    }
    if oid != OID_PBES2 {
        return Ok(Pbe::Other(oid));
    }
    // PBES2-params ::= SEQUENCE { keyDerivationFunc AlgorithmIdentifier,
    //                             encryptionScheme AlgorithmIdentifier }
    let params = fields
        .get(1)
        .ok_or(Error::Malformed("PBES2 without parameters"))?
        .expect_tag(SEQUENCE)?
        .children()?;
    let [kdf, enc, ..] = params.as_slice() else {
        return Err(Error::Malformed("PBES2 parameters incomplete"));
    };
    let kdf = kdf.expect_tag(SEQUENCE)?.children()?;
    let kdf_oid = kdf
        .first()
        .ok_or(Error::Malformed("empty key derivation function"))?
        .oid()?;
    let prf = if kdf_oid == OID_PBKDF2 {
        // PBKDF2-params ::= SEQUENCE { salt, iterationCount, keyLength OPTIONAL,
        //                              prf AlgorithmIdentifier DEFAULT hmacWithSHA1 }
        let p = kdf
            .get(1)
            .ok_or(Error::Malformed("PBKDF2 without parameters"))?
            .expect_tag(SEQUENCE)?
            .children()?;
        match p.iter().skip(2).find(|t| t.tag == SEQUENCE) {
            Some(prf) => algorithm_name(
                &prf.children()?
                    .first()
                    .ok_or(Error::Malformed("empty PRF"))?
                    .oid()?,
            ),
            None => "hmacWithSHA1".to_owned(),
        }
    } else {
        format!("key derivation {kdf_oid}")
    };
    let enc = enc.expect_tag(SEQUENCE)?.children()?;
    let cipher = algorithm_name(
        &enc.first()
            .ok_or(Error::Malformed("empty encryption scheme"))?
            .oid()?,
    );
    Ok(Pbe::Pbes2 { prf, cipher })
}

/// The iteration count in an encryption AlgorithmIdentifier: PBES2 with PBKDF2
/// (`PBKDF2-params ::= SEQUENCE { salt, iterationCount, .. }`) or a PKCS#12 PBE
/// (`pkcs-12PbeParams ::= SEQUENCE { salt, iterations }`); `None` for other schemes.
fn pbe_iterations(alg: &ber::Tlv<'_>) -> Result<Option<(&'static str, u64)>, ber::Error> {
    use ber::{Error, SEQUENCE};
    let fields = alg.expect_tag(SEQUENCE)?.children()?;
    let oid = fields
        .first()
        .ok_or(Error::Malformed("empty AlgorithmIdentifier"))?
        .oid()?;
    let params = || -> Result<Vec<ber::Tlv<'_>>, Error> {
        fields
            .get(1)
            .ok_or(Error::Malformed("algorithm without parameters"))?
            .expect_tag(SEQUENCE)?
            .children()
    };
    if pkcs12_pbe_name(&oid).is_some() {
        let p = params()?;
        let n = p.get(1).ok_or(Error::Malformed("PBE without iterations"))?;
        return Ok(Some(("PKCS#12 PBE", n.uint()?)));
    }
    if oid != OID_PBES2 {
        return Ok(None);
    }
    let p = params()?;
    let kdf = p
        .first()
        .ok_or(Error::Malformed("PBES2 parameters incomplete"))?
        .expect_tag(SEQUENCE)?
        .children()?;
    if kdf.first().map(|o| o.oid()).transpose()?.as_deref() != Some(OID_PBKDF2) {
        return Ok(None);
    }
    let kp = kdf
        .get(1)
        .ok_or(Error::Malformed("PBKDF2 without parameters"))?
        .expect_tag(SEQUENCE)?
        .children()?;
    let n = kp
        .get(1)
        .ok_or(Error::Malformed("PBKDF2 without an iteration count"))?;
    Ok(Some(("PBKDF2", n.uint()?)))
}

/// A minimal BER reader: enough to walk a PKCS#12 file's unencrypted outer layers and a
/// certificate's extensions. Low-number tags only; definite and indefinite lengths (Windows and
/// Java may write BER); constructed OCTET STRINGs are joined.
mod ber {
    use std::borrow::Cow;

    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    /// A constructed (BER, chunked) OCTET STRING.
    pub const OCTET_STRING_C: u8 = 0x24;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    /// `[0]` constructed, context-specific.
    pub const CONTEXT_0: u8 = 0xa0;
    const MAX_DEPTH: usize = 32;

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum Error {
        #[error("unexpected end of data")]
        End,
        #[error("malformed: {0}")]
        Malformed(&'static str),
    }

    #[derive(Debug, Clone, Copy)]
    pub struct Tlv<'a> {
        pub tag: u8,
        pub body: &'a [u8],
    }

    /// The length the first element of `input` announces (header included), when it is a
    /// definite-length SEQUENCE. Used to report truncated files.
    pub fn declared_len(input: &[u8]) -> Option<usize> {
        let (&tag, rest) = input.split_first()?;
        if tag != SEQUENCE {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        if first < 0x80 {
            return Some(2 + usize::from(first));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = rest
            .get(..n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        Some(2 + n + len)
    }

    /// One element that must span all of `input`.
    pub fn read_all(input: &[u8]) -> Result<Tlv<'_>, Error> {
        let (tlv, rest) = read(input)?;
        if rest.is_empty() {
            Ok(tlv)
        } else {
            Err(Error::Malformed("trailing data after the element"))
        }
    }

    /// One element and what follows it.
    pub fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), Error> {
        read_at(input, 0)
    }

    fn read_at(input: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8]), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::Malformed("nested too deeply"));
        }
        let (&tag, rest) = input.split_first().ok_or(Error::End)?;
        if tag & 0x1f == 0x1f {
            return Err(Error::Malformed("high tag numbers are not used in PKCS#12"));
        }
        let (&first, rest) = rest.split_first().ok_or(Error::End)?;
        if first == 0x80 {
            // Indefinite length: children up to an end-of-contents marker.
            if tag & 0x20 == 0 {
                return Err(Error::Malformed("indefinite length on a primitive element"));
            }
            let mut cur = rest;
            loop {
                if let [0, 0, after @ ..] = cur {
                    let body = &rest[..rest.len() - cur.len()];
                    return Ok((Tlv { tag, body }, after));
                }
                cur = read_at(cur, depth + 1)?.1;
            }
        }
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n > 4 {
                return Err(Error::Malformed("length too large"));
            }
            let bytes = rest.get(..n).ok_or(Error::End)?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if len > rest.len() {
            return Err(Error::End);
        }
        Ok((
            Tlv {
                tag,
                body: &rest[..len],
            },
            &rest[len..],
        ))
    }

    impl<'a> Tlv<'a> {
        pub fn expect_tag(&self, tag: u8) -> Result<Tlv<'a>, Error> {
            if self.tag == tag {
                Ok(*self)
            } else {
                Err(Error::Malformed("unexpected element type"))
            }
        }

        pub fn children(&self) -> Result<Vec<Tlv<'a>>, Error> {
            let mut out = Vec::new();
            let mut cur = self.body;
            while !cur.is_empty() {
                let (tlv, rest) = read(cur)?;
                out.push(tlv);
                cur = rest;
            }
            Ok(out)
        }

        /// The single element inside an `[0] EXPLICIT` wrapper.
        pub fn explicit(&self) -> Result<Tlv<'a>, Error> {
            if self.tag != CONTEXT_0 {
                return Err(Error::Malformed("expected an explicit [0] tag"));
            }
            read_all(self.body)
        }

        /// The contents of an OCTET STRING, joining the chunks of a constructed one.
        pub fn octets(&self) -> Result<Cow<'a, [u8]>, Error> {
            match self.tag {
                OCTET_STRING => Ok(Cow::Borrowed(self.body)),
                OCTET_STRING_C => {
                    let mut joined = Vec::new();
                    for chunk in self.children()? {
                        joined.extend_from_slice(&chunk.octets()?);
                    }
                    Ok(Cow::Owned(joined))
                }
                _ => Err(Error::Malformed("expected an OCTET STRING")),
            }
        }

        /// A non-negative INTEGER; values past `u64` saturate (they only ever exceed a cap).
        pub fn uint(&self) -> Result<u64, Error> {
            if self.tag != INTEGER {
                return Err(Error::Malformed("expected an INTEGER"));
            }
            match self.body {
                [] => Err(Error::Malformed("empty INTEGER")),
                [first, ..] if first & 0x80 != 0 => Err(Error::Malformed("negative INTEGER")),
                body => {
                    let digits: Vec<u8> = body.iter().copied().skip_while(|b| *b == 0).collect();
                    if digits.len() > 8 {
                        return Ok(u64::MAX);
                    }
                    Ok(digits
                        .iter()
                        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
                }
            }
        }

        /// An OBJECT IDENTIFIER in dotted form.
        pub fn oid(&self) -> Result<String, Error> {
            if self.tag != OID || self.body.is_empty() {
                return Err(Error::Malformed("expected an OBJECT IDENTIFIER"));
            }
            let mut arcs: Vec<u64> = Vec::new();
            let mut value: u64 = 0;
            for (i, &b) in self.body.iter().enumerate() {
                if value > (u64::MAX >> 7) {
                    return Err(Error::Malformed("OBJECT IDENTIFIER arc too large"));
                }
                value = (value << 7) | u64::from(b & 0x7f);
                if b & 0x80 == 0 {
                    if arcs.is_empty() {
                        let first = (value / 40).min(2);
                        arcs.push(first);
                        arcs.push(value - first * 40);
                    } else {
                        arcs.push(value);
                    }
                    value = 0;
                } else if i == self.body.len() - 1 {
                    return Err(Error::Malformed("OBJECT IDENTIFIER cut short"));
                }
            }
            Ok(arcs
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("."))
        }
    }

    /// The OIDs of a certificate's extended key usage extension, or `None` when it has none.
    pub fn extended_key_usage(cert_der: &[u8]) -> Result<Option<Vec<String>>, Error> {
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
        // TBSCertificate ::= SEQUENCE { [0] version, serial, signature, issuer, validity,
        //   subject, spki, [1] issuerUID, [2] subjectUID, [3] EXPLICIT extensions }
        let cert = read_all(cert_der)?.expect_tag(SEQUENCE)?.children()?;
        let tbs = cert
            .first()
            .ok_or(Error::Malformed("empty certificate"))?
            .expect_tag(SEQUENCE)?
            .children()?;
        let Some(exts) = tbs.iter().find(|t| t.tag == 0xa3) else {
            return Ok(None);
        };
        for ext in read_all(exts.body)?.expect_tag(SEQUENCE)?.children()? {
            // Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }
            let fields = ext.expect_tag(SEQUENCE)?.children()?;
            let (Some(id), Some(value)) = (fields.first(), fields.last()) else {
                return Err(Error::Malformed("empty extension"));
            };
            if id.oid()? != super::OID_EKU {
                continue;
            }
            let inner = value.octets()?;
            let oids = read_all(&inner)?
                .expect_tag(SEQUENCE)?
                .children()?
                .iter()
                .map(Tlv::oid)
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Some(oids));
        }
        Ok(None)
    }
}
