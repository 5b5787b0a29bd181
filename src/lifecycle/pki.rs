//! Vault PKI as the source of a certificate's versions: `{mount}/sign/{role}` signs a CSR for a
//! key the gateway keeps ([`sign`]), `{mount}/issue/{role}` has Vault make the key and return it
//! once ([`issue`]). Both go through [`Store::pki_write`], so they use the store's own Vault
//! connection, token and namespace; a store without Vault refuses.
//!
//! Requests ask for `format: pem` and read `certificate`, `issuing_ca` and `ca_chain`; the answer
//! is checked before it is returned: the certificate parses, it carries the CSR's key (`sign`) or
//! the key returned with it (`issue`), and the chain holds each CA once, never the leaf.
//!
//! Errors ([`PkiError`]) say what to do next: [`PkiError::Store`] with
//! [`StoreError::Unavailable`] is "retry later"; [`StoreError::Denied`] names the policy the token
//! lacks; [`PkiError::Refused`] means Vault (or the store) refused this request and retrying
//! without a change (role, policy, subject, configuration) will not help; [`PkiError::Malformed`]
//! is an answer that cannot be used.

use std::fmt;

use boring::pkey::{PKey, Private};
use boring::x509::{X509Req, X509};
use serde_json::{json, Map, Value};

use crate::store::{PkiSource, Store, StoreError, SubjectSpec};

/// A certificate Vault signed or issued.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The leaf, PEM.
    pub certificate_pem: String,
    /// `issuing_ca` then `ca_chain`, each certificate once, the leaf never; PEM each.
    pub chain_pem: Vec<String>,
    /// PKCS#8 PEM of the key Vault generated (`issue` only). Secret: `Debug` redacts it.
    pub private_key_pem: Option<String>,
    /// Serial of the leaf, upper-case hex without separators (as elsewhere in the gateway).
    pub serial: String,
    /// Not-after of the leaf, unix seconds (Vault's `expiration`, else read from the leaf).
    pub expiration: Option<i64>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("serial", &self.serial)
            .field("expiration", &self.expiration)
            .field("chain_len", &self.chain_pem.len())
            .field(
                "private_key_pem",
                &self.private_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The store could not ask: `Unavailable` (Vault down, sealed, timeout, 5xx) is "retry
    /// later"; `Denied` names the policy the token needs.
    #[error(transparent)]
    Store(StoreError),
    /// Vault refused the request (unknown role, a name or TTL the role does not allow, a bad
    /// CSR), or the store cannot make PKI requests at all: retrying will not help without a
    /// change. The message carries Vault's reason.
    #[error("vault PKI refused the request: {0}")]
    Refused(String),
    /// Vault answered, but not with a usable certificate.
    #[error("vault PKI answer unusable: {0}")]
    Malformed(String),
}

impl From<StoreError> for PkiError {
    fn from(e: StoreError) -> PkiError {
        match e {
            // 400/404 from Vault, an invalid path, a store without Vault.
            StoreError::Other(m) => PkiError::Refused(m),
            e => PkiError::Store(e),
        }
    }
}

/// The policy a token needs for `src` (`sign` or `issue` at `{mount}/{mode}/{role}`).
pub fn required_policy(src: &PkiSource) -> String {
    format!(
        "path \"{}\" {{ capabilities = [\"update\"] }}",
        api_path(src)
    )
}

fn api_path(src: &PkiSource) -> String {
    let mode = if src.mode == "issue" { "issue" } else { "sign" };
    format!("{}/{mode}/{}", src.mount, src.role)
}

/// `{mount}/sign/{role}` for `csr_pem` with the subject's common name and SANs (`alt_names`:
/// DNS names and emails; `ip_sans`; `uri_sans`) and the source's `ttl` if set. The key always
/// comes from the CSR. The names: with Vault's role defaults (`use_csr_common_name` and
/// `use_csr_sans` true) Vault takes them from the CSR and ignores those of the request, so the
/// CSR must be made from the same [`SubjectSpec`]; a role with both set to false takes them from
/// the request. Either way the role decides which names it allows.
pub async fn sign(
    store: &dyn Store,
    src: &PkiSource,
    subject: &SubjectSpec,
    csr_pem: &str,
) -> Result<Issued, PkiError> {
    check(src)?;
    let csr = X509Req::from_pem(csr_pem.as_bytes())
        .map_err(|e| PkiError::Refused(format!("the CSR is not a PEM certificate request: {e}")))?;
    let csr_key = csr
        .public_key()
        .map_err(|e| PkiError::Refused(format!("the CSR's public key cannot be read: {e}")))?;
    let mut body = request_body(src, subject);
    body.insert("csr".into(), Value::String(csr_pem.to_owned()));
    let path = format!("{}/sign/{}", src.mount, src.role);
    let data = store.pki_write(&path, Value::Object(body)).await?;
    let (issued, leaf) = parse_answer(&path, data, false)?;
    let same = leaf
        .public_key()
        .map(|k| k.public_eq(&csr_key))
        .unwrap_or(false);
    if !same {
        return Err(PkiError::Malformed(format!(
            "{path}: the certificate (serial {}) is not for the CSR's key",
            issued.serial
        )));
    }
    Ok(issued)
}

/// `{mount}/issue/{role}`: Vault generates the key (its type is the role's `key_type`) and
/// returns it once, here as PKCS#8 PEM in [`Issued::private_key_pem`].
pub async fn issue(
    store: &dyn Store,
    src: &PkiSource,
    subject: &SubjectSpec,
    key_type: crate::store::KeyType,
) -> Result<Issued, PkiError> {
    check(src)?;
    let mut body = request_body(src, subject);
    body.insert("private_key_format".into(), json!("pkcs8"));
    // The entry's key type: a role with `key_type=any` needs it, a role with a fixed type
    // refuses a different one (Vault's message then says so).
    let (kt, bits) = match key_type {
        crate::store::KeyType::EcP256 => ("ec", 256),
        crate::store::KeyType::Rsa2048 => ("rsa", 2048),
        crate::store::KeyType::Rsa3072 => ("rsa", 3072),
    };
    body.insert("key_type".into(), json!(kt));
    body.insert("key_bits".into(), json!(bits));
    let path = format!("{}/issue/{}", src.mount, src.role);
    let data = store.pki_write(&path, Value::Object(body)).await?;
    let (issued, _) = parse_answer(&path, data, true)?;
    Ok(issued)
}

fn check(src: &PkiSource) -> Result<(), PkiError> {
    validate_source(src).map_err(|(field, msg)| PkiError::Refused(format!("pki.{field}: {msg}")))
}

/// The fields `sign` and `issue` share.
fn request_body(src: &PkiSource, subject: &SubjectSpec) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("common_name".into(), json!(subject.common_name));
    let alt: Vec<&str> = subject
        .dns_names
        .iter()
        .chain(&subject.emails)
        .map(String::as_str)
        .filter(|n| *n != subject.common_name)
        .collect();
    if !alt.is_empty() {
        body.insert("alt_names".into(), json!(alt.join(",")));
    }
    if !subject.ip_addresses.is_empty() {
        body.insert("ip_sans".into(), json!(subject.ip_addresses.join(",")));
    }
    if !subject.uris.is_empty() {
        body.insert("uri_sans".into(), json!(subject.uris.join(",")));
    }
    if let Some(ttl) = &src.ttl {
        body.insert("ttl".into(), json!(ttl));
    }
    body.insert("format".into(), json!("pem"));
    body
}

/// `data` of a sign/issue answer as [`Issued`], and the parsed leaf.
fn parse_answer(path: &str, data: Value, with_key: bool) -> Result<(Issued, X509), PkiError> {
    let bad = |m: String| PkiError::Malformed(format!("{path}: {m}"));
    let Value::Object(data) = data else {
        return Err(bad("the answer has no data".into()));
    };
    let cert_pem = data
        .get("certificate")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the answer has no certificate".into()))?;
    let leaf = X509::from_pem(cert_pem.as_bytes())
        .map_err(|e| bad(format!("the certificate is not PEM: {e}")))?;
    let leaf_der = leaf
        .to_der()
        .map_err(|e| bad(format!("the certificate cannot be encoded: {e}")))?;
    let serial = leaf
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_uppercase()))
        .map_err(|e| bad(format!("the certificate's serial cannot be read: {e}")))?;

    // issuing_ca first, then ca_chain; each PEM string may hold one or more certificates.
    let mut pems: Vec<&str> = Vec::new();
    if let Some(s) = data.get("issuing_ca").and_then(Value::as_str) {
        pems.push(s);
    }
    match data.get("ca_chain") {
        Some(Value::Array(a)) => pems.extend(a.iter().filter_map(Value::as_str)),
        Some(Value::String(s)) => pems.push(s),
        _ => {}
    }
    let mut seen: Vec<Vec<u8>> = vec![leaf_der];
    let mut chain_pem = Vec::new();
    for pem in pems.into_iter().filter(|p| !p.trim().is_empty()) {
        let certs = X509::stack_from_pem(pem.as_bytes())
            .map_err(|e| bad(format!("a CA certificate is not PEM: {e}")))?;
        for c in certs {
            let der = c
                .to_der()
                .map_err(|e| bad(format!("a CA certificate cannot be encoded: {e}")))?;
            if seen.contains(&der) {
                continue;
            }
            seen.push(der);
            let pem = c
                .to_pem()
                .map_err(|e| bad(format!("a CA certificate cannot be encoded: {e}")))?;
            chain_pem.push(String::from_utf8_lossy(&pem).into_owned());
        }
    }

    let expiration = match data.get("expiration").and_then(Value::as_i64) {
        Some(t) => Some(t),
        None => unix_time(leaf.not_after()),
    };

    let private_key_pem = if with_key {
        let key_pem = data
            .get("private_key")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the answer has no private_key".into()))?;
        // Never put the key or its parse error details (which may quote it) in a message.
        let key: PKey<Private> = PKey::private_key_from_pem(key_pem.as_bytes())
            .map_err(|_| bad("the private_key is not a PEM private key".into()))?;
        let matches = leaf
            .public_key()
            .map(|k| k.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(bad(format!(
                "the private_key does not match the certificate (serial {serial})"
            )));
        }
        let pkcs8 = key
            .private_key_to_pem_pkcs8()
            .map_err(|_| bad("the private_key cannot be encoded as PKCS#8".into()))?;
        Some(
            String::from_utf8(pkcs8)
                .map_err(|_| bad("the private_key cannot be encoded as PKCS#8".into()))?,
        )
    } else {
        None
    };

    let pem = leaf
        .to_pem()
        .map_err(|e| bad(format!("the certificate cannot be encoded: {e}")))?;
    Ok((
        Issued {
            certificate_pem: String::from_utf8_lossy(&pem).into_owned(),
            chain_pem,
            private_key_pem,
            serial,
            expiration,
        },
        leaf,
    ))
}

fn unix_time(t: &boring::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = boring::asn1::Asn1Time::from_unix(0).ok()?;
    // `a.diff(b)` is b - a.
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Validates a [`PkiSource`] from the admin API. On error: the field (`mount`, `role`, `mode`,
/// `ttl`, as named in the JSON) and what is wrong with it.
///
/// - `mount`: segments of `A-Z a-z 0-9 _ . -` separated by `/` (nested mounts such as
///   `pki/intermediate`), no leading or trailing slash, no `.`/`..`, at most 128 characters;
/// - `role`: one such segment, at most 128 characters;
/// - `mode`: `sign` or `issue`;
/// - `ttl`: a Go duration of whole seconds, minutes and hours (`90s`, `15m`, `720h`, `1h30m`),
///   more than zero and at most 100 years.
pub fn validate_source(src: &PkiSource) -> Result<(), (String, String)> {
    let err = |f: &str, m: String| Err((f.to_owned(), m));
    let segment = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    if src.mount.is_empty() || src.mount.len() > 128 || !src.mount.split('/').all(segment) {
        return err(
            "mount",
            format!(
                "{:?} is not a mount path: use 1-128 characters from A-Z, a-z, 0-9, '_', '.', \
                 '-' with '/' between segments, without a leading or trailing slash",
                short(&src.mount)
            ),
        );
    }
    if src.role.len() > 128 || !segment(&src.role) {
        return err(
            "role",
            format!(
                "{:?} is not a role name: use 1-128 characters from A-Z, a-z, 0-9, '_', '.', '-'",
                short(&src.role)
            ),
        );
    }
    if src.mode != "sign" && src.mode != "issue" {
        return err(
            "mode",
            format!(
                "{:?}: use sign (the gateway keeps the key and sends a CSR) or issue (Vault \
                 generates the key)",
                short(&src.mode)
            ),
        );
    }
    if let Some(ttl) = &src.ttl {
        match ttl_seconds(ttl) {
            Some(s) if s > 0 && s <= MAX_TTL_SECS => {}
            Some(_) => {
                return err(
                    "ttl",
                    format!("{:?}: must be more than 0s and at most 876000h", short(ttl)),
                )
            }
            None => {
                return err(
                    "ttl",
                    format!(
                        "{:?} is not a duration: use whole numbers with s, m or h, e.g. 90s, \
                         15m, 720h, 1h30m",
                        short(ttl)
                    ),
                )
            }
        }
    }
    Ok(())
}

/// 100 years.
const MAX_TTL_SECS: u64 = 876_000 * 3600;

/// Seconds in a Go-style duration made of whole `s`, `m` and `h` parts (`90s`, `1h30m`), or
/// `None` when it is not one.
pub fn ttl_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest.as_bytes().get(digits)? {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    Some(total)
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(mount: &str, role: &str, mode: &str, ttl: Option<&str>) -> PkiSource {
        PkiSource {
            mount: mount.into(),
            role: role.into(),
            mode: mode.into(),
            ttl: ttl.map(Into::into),
        }
    }

    #[test]
    fn durations_are_whole_seconds_minutes_and_hours() {
        assert_eq!(ttl_seconds("90s"), Some(90));
        assert_eq!(ttl_seconds("15m"), Some(900));
        assert_eq!(ttl_seconds("720h"), Some(2_592_000));
        assert_eq!(ttl_seconds("1h30m5s"), Some(5405));
        for bad in [
            "", "90", "1.5h", "-1h", "1d", "h", "1hm", "1h ", " 1h", "ms",
        ] {
            assert_eq!(ttl_seconds(bad), None, "{bad:?}");
        }
        assert_eq!(ttl_seconds("99999999999999999999h"), None);
    }

    #[test]
    fn sources_are_validated_field_by_field() {
        assert!(validate_source(&src("pki", "web", "sign", Some("720h"))).is_ok());
        assert!(validate_source(&src("pki/int-2", "web.client_1", "issue", None)).is_ok());
        let field = |s: PkiSource| validate_source(&s).expect_err("invalid").0;
        assert_eq!(field(src("", "r", "sign", None)), "mount");
        assert_eq!(field(src("/pki", "r", "sign", None)), "mount");
        assert_eq!(field(src("pki/", "r", "sign", None)), "mount");
        assert_eq!(field(src("pki/../sys", "r", "sign", None)), "mount");
        assert_eq!(field(src("pki", "a/b", "sign", None)), "role");
        assert_eq!(field(src("pki", "..", "sign", None)), "role");
        assert_eq!(field(src("pki", "", "sign", None)), "role");
        assert_eq!(field(src("pki", "r", "generate", None)), "mode");
        assert_eq!(field(src("pki", "r", "sign", Some("30d"))), "ttl");
        assert_eq!(field(src("pki", "r", "sign", Some("0s"))), "ttl");
        assert_eq!(field(src("pki", "r", "sign", Some("876001h"))), "ttl");
    }

    #[test]
    fn the_request_names_sans_and_ttl_but_no_duplicate_common_name() {
        let subject = SubjectSpec {
            common_name: "svc.example".into(),
            dns_names: vec!["svc.example".into(), "alt.example".into()],
            emails: vec!["ops@example.com".into()],
            ip_addresses: vec!["10.0.0.1".into(), "::1".into()],
            uris: vec!["spiffe://example/svc".into()],
            ..SubjectSpec::default()
        };
        let b = request_body(&src("pki", "r", "sign", Some("2m")), &subject);
        assert_eq!(b["common_name"], "svc.example");
        assert_eq!(b["alt_names"], "alt.example,ops@example.com");
        assert_eq!(b["ip_sans"], "10.0.0.1,::1");
        assert_eq!(b["uri_sans"], "spiffe://example/svc");
        assert_eq!(b["ttl"], "2m");
        assert_eq!(b["format"], "pem");
        let b = request_body(&src("pki", "r", "sign", None), &SubjectSpec::default());
        assert!(!b.contains_key("ttl") && !b.contains_key("alt_names"));
    }

    #[test]
    fn store_errors_keep_their_kind_and_refusals_become_refused() {
        let e: PkiError = StoreError::Unavailable("down".into()).into();
        assert!(matches!(e, PkiError::Store(StoreError::Unavailable(_))));
        let e: PkiError = StoreError::Denied("no".into()).into();
        assert!(matches!(e, PkiError::Store(StoreError::Denied(_))));
        let e: PkiError = StoreError::Other("unknown role: r".into()).into();
        assert!(matches!(&e, PkiError::Refused(m) if m.contains("unknown role")));
        assert_eq!(
            required_policy(&src("pki", "web", "sign", None)),
            r#"path "pki/sign/web" { capabilities = ["update"] }"#
        );
    }

    #[test]
    fn debug_redacts_the_private_key() {
        let i = Issued {
            certificate_pem: String::new(),
            chain_pem: vec![],
            private_key_pem: Some("-----BEGIN PRIVATE KEY-----SECRET".into()),
            serial: "01".into(),
            expiration: None,
        };
        let d = format!("{i:?}");
        assert!(!d.contains("SECRET") && d.contains("redacted"), "{d}");
    }
}
