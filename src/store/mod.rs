//! Where certificates and mappings live: bytes in, bytes out, nothing about TLS.
//!
//! Two backends implement [`Store`]: [`file::FileStore`] (the embedded default, one directory of
//! 0600 JSON files) and [`vault::VaultStore`] (HashiCorp Vault KV v1/v2). The refresher asks for an
//! [`Inventory`] (what exists, with a version per entry) and reads only entries whose version
//! changed; the admin API writes through the same trait.
//!
//! Layout shared by both backends (a "document" is one Vault secret at that path, or one JSON
//! file at that path plus `.json` in the file store: `certificates/{certificateId}.json`,
//! `mappings.json`):
//! - `accounts/{accountId}/certificates/{certificateId}`: [`StoredCertificate`] (metadata, PKCS#12
//!   bytes as base64 and the password in one document, so a write is all or nothing);
//! - `accounts/{accountId}/mappings`: [`MappingDocument`] (all mappings of the account).

pub mod file;
pub mod vault;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Errors at the store boundary. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store denied access: {0}")]
    Denied(String),
    #[error("store entry {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("store entry {0} changed since it was read (concurrent write); retry")]
    Conflict(String),
    #[error("store I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Certificate metadata as the admin API and the snapshot see it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateMeta {
    pub id: u64,
    pub account_id: String,
    pub name: String,
    pub display_name: String,
    #[serde(default)]
    pub deleted: bool,
    /// Leaf not-after, unix seconds, filled in when the PKCS#12 was decoded at write time.
    #[serde(default)]
    pub not_after: Option<i64>,
    /// Unix seconds of the last write.
    #[serde(default)]
    pub updated_at: i64,
}

/// PKCS#12 bytes and password. `Debug` never prints them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSecret {
    /// PKCS#12 (DER), base64 in the stored document.
    #[serde(with = "b64")]
    pub p12: Vec<u8>,
    pub password: String,
}

impl fmt::Debug for CertificateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertificateSecret {{ p12: <{} bytes>, password: <redacted> }}",
            self.p12.len()
        )
    }
}

/// One stored certificate document: metadata and secret written together.
///
/// An entry "awaiting signature" (a CSR was made, no certificate came back yet) has an empty
/// `p12` and a [`Lifecycle::pending`] version; it serves nothing until completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCertificate {
    #[serde(flatten)]
    pub meta: CertificateMeta,
    #[serde(flatten)]
    pub secret: CertificateSecret,
    /// Where new versions come from and the bookkeeping of renewal, cut-over and
    /// notifications. Absent on plain uploaded certificates written before any of it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

impl StoredCertificate {
    /// No certificate serves yet: a CSR is waiting for its signed certificate.
    pub fn awaiting_signature(&self) -> bool {
        self.secret.p12.is_empty()
    }
}

/// Key algorithm of a key the gateway generates (CSR, renewal, Vault PKI `sign`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    #[default]
    #[serde(rename = "EC-P256")]
    EcP256,
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    #[serde(rename = "RSA-3072")]
    Rsa3072,
}

impl KeyType {
    pub fn parse(s: &str) -> Option<KeyType> {
        match s.to_ascii_uppercase().replace('_', "-").as_str() {
            "EC-P256" | "EC" | "P-256" | "P256" | "ECDSA-P256" => Some(KeyType::EcP256),
            "RSA-2048" | "RSA" => Some(KeyType::Rsa2048),
            "RSA-3072" => Some(KeyType::Rsa3072),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "EC-P256",
            KeyType::Rsa2048 => "RSA-2048",
            KeyType::Rsa3072 => "RSA-3072",
        }
    }
}

/// Subject and SANs asked for in a CSR (and kept for renewals).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectSpec {
    pub common_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizational_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
}

/// A Vault PKI secrets engine as the source of a certificate's versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PkiSource {
    /// Mount path of the PKI engine, e.g. `pki`.
    pub mount: String,
    /// Role to sign or issue with.
    pub role: String,
    /// `sign` (default: the gateway generates the key and sends a CSR to `{mount}/sign/{role}`)
    /// or `issue` (`{mount}/issue/{role}`: Vault generates the key and returns it once).
    #[serde(default = "sign_mode")]
    pub mode: String,
    /// Requested TTL (`ttl` of the Vault call), e.g. `720h`; the role's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

fn sign_mode() -> String {
    "sign".into()
}

/// The next version of a certificate being prepared: its key (secret: never returned, never
/// logged) and the CSR made for it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingVersion {
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
    pub csr_pem: String,
    pub key_type: KeyType,
    /// Unix seconds.
    pub created_at: i64,
    /// `csr` (first version) or `renew` (manual renewal).
    pub reason: String,
}

impl fmt::Debug for PendingVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingVersion")
            .field("key_pem", &"<redacted>")
            .field("key_type", &self.key_type)
            .field("created_at", &self.created_at)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Renewal bookkeeping shared by every replica through the store (compare-and-set writes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewalState {
    /// Replica holding the renewal lease, and until when (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    #[serde(default)]
    pub lease_until: i64,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub failures: u32,
    /// No attempt before this time (backoff after a failure), unix seconds.
    #[serde(default)]
    pub next_attempt_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_renewed_at: i64,
}

/// A new version the targets refused: it was not put into service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CutoverRefusal {
    /// Serial (hex) of the refused certificate.
    pub serial: String,
    pub at: i64,
    /// Mapping ids whose target refused it, and why (the first reason).
    pub mapping_ids: Vec<u64>,
    pub reason: String,
}

/// Lifecycle of one certificate entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Vault PKI source (automatic issuance and renewal), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki: Option<PkiSource>,
    /// Key algorithm for keys the gateway generates for this entry.
    #[serde(default)]
    pub key_type: KeyType,
    /// Subject and SANs for CSRs and PKI requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectSpec>,
    /// The next version being prepared, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingVersion>,
    /// Number of the version serving now (0 while awaiting the first signature).
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub renewal: RenewalState,
    /// Notifications already sent for the serving version, as `{event}@{serial}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<String>,
    /// The last new version withheld because a target refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_refused: Option<CutoverRefusal>,
    /// The tester's warnings about the serving version, kept at write time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A mapping: (accountId, serviceName, url) -> certificateId.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mapping {
    pub id: u64,
    pub account_id: String,
    pub name: String,
    /// Service name (e.g. `TEST_SERVICE`, `IDP`, `WEBHOOKS`), stored by name.
    pub service_name: String,
    /// URL as given; a trailing `*` makes it a prefix (wildcard) mapping.
    pub url: String,
    pub certificate_id: u64,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub deleted: bool,
    /// Prove a new version of the certificate with a handshake to this mapping's target before
    /// it serves (`None`: the default, on for automatic renewals, off for manual uploads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_check: Option<bool>,
}

fn yes() -> bool {
    true
}

/// All mappings of one account, stored as one document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingDocument {
    pub mappings: Vec<Mapping>,
}

/// An entry and the version it was read at. A version is opaque: a KV v2 version number, or a
/// digest of the stored bytes; equal versions mean equal content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: String,
}

/// What exists in the store, with a version per entry, cheap enough to ask for every refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// (accountId, certificateId, version)
    pub certificates: Vec<(String, u64, String)>,
    /// (accountId, version) of each account's mapping document
    pub mappings: Vec<(String, String)>,
}

/// Storage backend for certificates and mappings.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Human-readable backend name for logs and `/ready` (e.g. `file:/var/lib/x`, `vault:kv2:secret/mtls`).
    fn describe(&self) -> String;

    /// Everything that exists, with versions. Errors mean "could not ask", not "empty".
    async fn inventory(&self) -> StoreResult<Inventory>;

    async fn get_certificate(
        &self,
        account: &str,
        id: u64,
    ) -> StoreResult<Option<Versioned<StoredCertificate>>>;

    /// Create or replace; returns the new version.
    async fn put_certificate(&self, cert: &StoredCertificate) -> StoreResult<String>;

    /// Replace only if the stored version is still `expected` (`""`: only if it does not
    /// exist); otherwise fails with [`StoreError::Conflict`] and writes nothing. The renewal
    /// lease and the once-per-threshold notifications rest on it across replicas.
    async fn put_certificate_if(
        &self,
        cert: &StoredCertificate,
        expected: &str,
    ) -> StoreResult<String>;

    /// A write to a Vault PKI engine over the store's own authenticated Vault connection:
    /// `path` is relative to the Vault API (`{mount}/sign/{role}`, `{mount}/issue/{role}`),
    /// the answer is the response's `data`. Stores without Vault refuse.
    async fn pki_write(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> StoreResult<serde_json::Value> {
        let _ = body;
        Err(StoreError::Other(format!(
            "{path}: a Vault PKI source needs store.kind: vault (this store is {})",
            self.describe()
        )))
    }

    /// Returns whether it existed.
    async fn delete_certificate(&self, account: &str, id: u64) -> StoreResult<bool>;

    /// The account's mappings; an account with none gives an empty document and version "".
    async fn get_mappings(&self, account: &str) -> StoreResult<Versioned<MappingDocument>>;

    /// Replace the account's mapping document. When `expected_version` is given and the stored
    /// version differs, fails with [`StoreError::Conflict`] and writes nothing.
    async fn put_mappings(
        &self,
        account: &str,
        doc: &MappingDocument,
        expected_version: Option<&str>,
    ) -> StoreResult<String>;
}

/// A fresh id for a certificate or mapping: milliseconds since the epoch times 1000 plus a
/// random part, so replicas writing at once do not collide and ids sort by creation time.
pub fn new_id() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut r = [0u8; 2];
    // boring's RNG never fails in practice; fall back to the clock's sub-ms noise if it does.
    let rnd = if boring::rand::rand_bytes(&mut r).is_ok() {
        u16::from_le_bytes(r) as u64 % 1000
    } else {
        (std::time::Instant::now().elapsed().as_nanos() % 1000) as u64
    };
    ms * 1000 + rnd
}

/// Account ids become path segments: only a conservative character set is accepted.
pub fn valid_account_id(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= 64
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An account id usable as a path segment, or an error saying which characters are allowed.
pub fn check_account(account: &str) -> StoreResult<()> {
    if valid_account_id(account) {
        Ok(())
    } else {
        let shown: String = account.chars().take(80).collect();
        Err(StoreError::Other(format!(
            "invalid account id {shown:?}: use 1-64 characters from A-Z, a-z, 0-9, '-' and '_'"
        )))
    }
}

/// Before writing an account's mapping document: the account id is valid and every mapping in
/// it belongs to that account.
pub fn check_mapping_document(account: &str, doc: &MappingDocument) -> StoreResult<()> {
    check_account(account)?;
    if let Some(m) = doc.mappings.iter().find(|m| m.account_id != account) {
        return Err(StoreError::Other(format!(
            "mapping {} belongs to account {:?}, not {account:?}",
            m.id, m.account_id
        )));
    }
    Ok(())
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
