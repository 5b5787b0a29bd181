//! `store.vault` in the config file: the serde mirror ([`VaultSettings`]) and the validated,
//! typed form ([`VaultConfig`]) that [`super::VaultStore::connect`] takes.
//!
//! Validation is pure (no network, no token files read): a `check` run in CI must not need Vault
//! or the Vault Agent sink. Files that only exist at run time (token, AppRole ids, the Kubernetes
//! service-account token) are read when the store logs in; the CA file is read here because a
//! wrong path there is always a configuration mistake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The `store.vault` section as written in the file. Unknown keys are rejected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// `https://vault.example:8200` (no path needed; `/v1/...` is appended): one Vault, or one
    /// load-balanced address in front of a cluster. Exactly one of `address` and `addresses`.
    #[serde(default)]
    pub address: Option<String>,
    /// The nodes of one Vault HA cluster, tried in order: requests go to the last address that
    /// answered, and move to the next one when it is unreachable, times out, answers 5xx/429,
    /// is sealed or is a standby that cannot serve (see docs/vault.md, "HA cluster").
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    /// 1 or 2: the version of the KV secrets engine at `mount`.
    #[serde(default = "default_kv_version")]
    pub kv_version: u8,
    /// Where the KV engine is mounted, without slashes (`secret`).
    #[serde(default = "default_mount")]
    pub mount: String,
    /// Path inside the mount under which `accounts/` lives; may be empty.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Vault Enterprise / HCP namespace, sent as `X-Vault-Namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// PEM file with the CA that signed Vault's server certificate (added to the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    pub auth: VaultAuthSettings,
    /// Per-request timeout, default 10000.
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// How many reads run at once during a refresh, default 16.
    #[serde(default)]
    pub read_concurrency: Option<usize>,
    /// KV v1 only: every this many seconds an inventory ignores the per-account index and reads
    /// every entry, catching entries edited by hand (default 900; 0 = always read everything).
    #[serde(default)]
    pub kv1_full_scan_secs: Option<u64>,
}

fn default_kv_version() -> u8 {
    2
}
fn default_mount() -> String {
    "secret".to_owned()
}
fn default_prefix() -> String {
    "mtls-gateway".to_owned()
}
fn default_approle_mount() -> String {
    "approle".to_owned()
}
fn default_kubernetes_mount() -> String {
    "kubernetes".to_owned()
}
fn default_aws_mount() -> String {
    "aws".to_owned()
}
fn default_aws_region() -> String {
    "us-east-1".to_owned()
}
fn default_sa_token_file() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
}

/// `store.vault.auth`, tagged by `method`.
#[derive(Clone, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum VaultAuthSettings {
    /// Exactly one of `token` (discouraged: a secret in the config file), `token_env`, or
    /// `token_file` (re-read when it changes, as a Vault Agent sink rewrites it).
    Token {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        token_env: Option<String>,
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    Approle {
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
        #[serde(default = "default_approle_mount")]
        mount: String,
    },
    Kubernetes {
        role: String,
        #[serde(default = "default_sa_token_file")]
        token_file: PathBuf,
        #[serde(default = "default_kubernetes_mount")]
        mount: String,
    },
    /// AWS IAM login: a signed `sts:GetCallerIdentity` request, with credentials loaded the
    /// usual AWS ways (environment, profile, IRSA web identity, instance metadata).
    Aws {
        role: String,
        #[serde(default = "default_aws_mount")]
        mount: String,
        #[serde(default)]
        iam_server_id_header_value: Option<String>,
        #[serde(default = "default_aws_region")]
        region: String,
        #[serde(default)]
        sts_endpoint: Option<String>,
    },
}

// Hand-written so a literal token never reaches a log line through `{:?}`.
impl fmt::Debug for VaultAuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultAuthSettings::Token {
                token,
                token_env,
                token_file,
            } => f
                .debug_struct("Token")
                .field("token", &token.as_ref().map(|_| "<redacted>"))
                .field("token_env", token_env)
                .field("token_file", token_file)
                .finish(),
            VaultAuthSettings::Approle {
                role_id_file,
                secret_id_file,
                mount,
            } => f
                .debug_struct("Approle")
                .field("role_id_file", role_id_file)
                .field("secret_id_file", secret_id_file)
                .field("mount", mount)
                .finish(),
            VaultAuthSettings::Kubernetes {
                role,
                token_file,
                mount,
            } => f
                .debug_struct("Kubernetes")
                .field("role", role)
                .field("token_file", token_file)
                .field("mount", mount)
                .finish(),
            VaultAuthSettings::Aws {
                role,
                mount,
                iam_server_id_header_value,
                region,
                sts_endpoint,
            } => f
                .debug_struct("Aws")
                .field("role", role)
                .field("mount", mount)
                .field("iam_server_id_header_value", iam_server_id_header_value)
                .field("region", region)
                .field("sts_endpoint", sts_endpoint)
                .finish(),
        }
    }
}

/// KV secrets engine version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvVersion {
    V1,
    V2,
}

impl KvVersion {
    pub fn number(self) -> u8 {
        match self {
            KvVersion::V1 => 1,
            KvVersion::V2 => 2,
        }
    }
}

/// A string that is a credential: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Written in the config file (a warning is logged at validation).
    Literal(Secret),
    /// Name of an environment variable read at connect.
    Env(String),
    /// A file re-read whenever its modification time changes (Vault Agent sink).
    File(PathBuf),
}

/// How the store gets a Vault token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    Token(TokenSource),
    AppRole {
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
        mount: String,
    },
    Kubernetes {
        role: String,
        token_file: PathBuf,
        mount: String,
    },
    Aws {
        role: String,
        mount: String,
        /// Sent (and signed) as `X-Vault-AWS-IAM-Server-ID`.
        server_id: Option<String>,
        region: String,
        /// The STS URL the signed request names (`https://sts.amazonaws.com/` for us-east-1,
        /// `https://sts.{region}.amazonaws.com/` otherwise, unless configured).
        sts_endpoint: String,
    },
}

impl VaultAuth {
    /// Short description for logs and errors (never the secret).
    pub fn describe(&self) -> String {
        match self {
            VaultAuth::Token(TokenSource::Literal(_)) => "token from the config file".to_owned(),
            VaultAuth::Token(TokenSource::Env(v)) => format!("token from ${v}"),
            VaultAuth::Token(TokenSource::File(p)) => format!("token file {}", p.display()),
            VaultAuth::AppRole { mount, .. } => format!("approle login at auth/{mount}"),
            VaultAuth::Kubernetes { role, mount, .. } => {
                format!("kubernetes login at auth/{mount} as role {role}")
            }
            VaultAuth::Aws {
                role,
                mount,
                region,
                ..
            } => format!("aws iam login at auth/{mount} as role {role} (region {region})"),
        }
    }
}

/// Validated `store.vault`. Construct it with [`VaultSettings::validate`]; the tuning fields
/// that are not part of the file format may be adjusted afterwards.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// Base URL without a trailing slash: `store.vault.address`, or the first of
    /// `store.vault.addresses`.
    pub address: String,
    /// The other nodes of `store.vault.addresses`, in order (empty for `address:`). Requests
    /// fail over from one to the next ([`VaultConfig::all_addresses`]).
    pub other_addresses: Vec<String>,
    pub kv: KvVersion,
    /// Mount without slashes, e.g. `secret`.
    pub mount: String,
    /// Prefix inside the mount without leading/trailing slashes; may be empty.
    pub prefix: String,
    pub namespace: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub auth: VaultAuth,
    pub request_timeout: Duration,
    pub read_concurrency: usize,
    /// KV v1 only: how often `inventory()` ignores the per-account index and digests every entry,
    /// which catches entries edited outside the gateway (`kv1_full_scan_secs`, default 15 min).
    pub kv1_full_scan_interval: Duration,
    /// Token file auth: how often the file is checked for a change on the request path (default 1 s).
    pub token_file_check_interval: Duration,
}

impl VaultConfig {
    /// `vault:kv2:secret/mtls-gateway (https://vault:8200)`.
    pub fn describe(&self) -> String {
        let mut s = format!("vault:kv{}:{}", self.kv.number(), self.mount);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.prefix);
        }
        if let Some(ns) = &self.namespace {
            s.push_str(&format!(" namespace {ns}"));
        }
        s.push_str(&format!(" ({})", self.all_addresses().join(", ")));
        s
    }

    /// Every address the store sends requests to: `address`, then `other_addresses`.
    pub fn all_addresses(&self) -> Vec<String> {
        let mut all = vec![self.address.clone()];
        all.extend(self.other_addresses.iter().cloned());
        all
    }
}

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const MAX_TIMEOUT_MS: u64 = 600_000;
const DEFAULT_READ_CONCURRENCY: usize = 16;
const MAX_READ_CONCURRENCY: usize = 256;
const DEFAULT_KV1_FULL_SCAN_SECS: u64 = 900;

/// A path segment we are willing to put into a Vault URL without escaping.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Trims slashes and checks every segment; `allow_empty` for the prefix.
fn clean_path(key: &str, value: &str, allow_empty: bool, example: &str) -> Result<String, String> {
    let trimmed = value.trim().trim_matches('/');
    if trimmed.is_empty() {
        return if allow_empty {
            Ok(String::new())
        } else {
            Err(format!("{key}: is empty; set it, e.g. {example}"))
        };
    }
    if let Some(bad) = trimmed.split('/').find(|s| !valid_segment(s)) {
        return Err(format!(
            "{key}: segment {bad:?} of {value:?} is not allowed; use letters, digits, '-', '_' \
             and '.' separated by '/', e.g. {example}"
        ));
    }
    Ok(trimmed.to_owned())
}

/// Tokens and namespaces go into HTTP headers: visible ASCII only.
pub(crate) fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

impl VaultSettings {
    /// Checks every key and returns the typed form. Errors start with the full key name
    /// (`{key_prefix}.kv_version: ...`) and say how to fix it.
    pub fn validate(self, key_prefix: &str) -> Result<VaultConfig, String> {
        let k = |name: &str| format!("{key_prefix}.{name}");

        let addresses = match (self.address, self.addresses) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{}: set either {} (one Vault, or a load balancer in front of a cluster) or \
                     {} (the nodes of a cluster), not both",
                    k("address"),
                    k("address"),
                    k("addresses")
                ))
            }
            (None, None) => {
                return Err(format!(
                    "{}: missing; set it, e.g. https://vault.example.com:8200 (or {} with the \
                     nodes of a cluster)",
                    k("address"),
                    k("addresses")
                ))
            }
            (Some(a), None) => vec![validate_address(&k("address"), &a)?],
            (None, Some(list)) => {
                if list.is_empty() {
                    return Err(format!(
                        "{}: is empty; list the node addresses of the cluster, e.g. \
                         [https://vault-0:8200, https://vault-1:8200, https://vault-2:8200], or \
                         use {}",
                        k("addresses"),
                        k("address")
                    ));
                }
                let mut out: Vec<String> = Vec::with_capacity(list.len());
                for (i, a) in list.iter().enumerate() {
                    let v = validate_address(&format!("{}[{i}]", k("addresses")), a)?;
                    if out.contains(&v) {
                        return Err(format!(
                            "{}[{i}]: {v} is listed twice; list each node once",
                            k("addresses")
                        ));
                    }
                    out.push(v);
                }
                out
            }
        };
        let address = addresses[0].clone();
        let other_addresses = addresses[1..].to_vec();
        let kv = match self.kv_version {
            1 => KvVersion::V1,
            2 => KvVersion::V2,
            n => {
                return Err(format!(
                    "{}: {n} is not 1 or 2; set 1 or 2 (the version of the KV engine at {})",
                    k("kv_version"),
                    k("mount")
                ))
            }
        };
        let mount = clean_path(&k("mount"), &self.mount, false, "secret")?;
        let prefix = clean_path(&k("prefix"), &self.prefix, true, "mtls-gateway")?;
        let namespace = match self.namespace {
            None => None,
            Some(ns) => {
                let ns = clean_path(&k("namespace"), &ns, false, "admin/team-a")?;
                Some(ns)
            }
        };
        let ca_file = match self.ca_file {
            None => None,
            Some(p) => {
                if let Some(plain) = addresses.iter().find(|a| a.starts_with("http://")) {
                    return Err(format!(
                        "{}: is set but {plain} is plain http://; use https:// addresses or \
                         remove {}",
                        k("ca_file"),
                        k("ca_file")
                    ));
                }
                check_ca_file(&k("ca_file"), &p)?;
                Some(p)
            }
        };
        let auth = validate_auth(&format!("{key_prefix}.auth"), self.auth)?;
        let request_timeout = match self.request_timeout_ms {
            None => Duration::from_millis(DEFAULT_TIMEOUT_MS),
            Some(0) => {
                return Err(format!(
                    "{}: 0 disables nothing and fails everything; set a positive number of \
                     milliseconds (default {DEFAULT_TIMEOUT_MS})",
                    k("request_timeout_ms")
                ))
            }
            Some(ms) if ms > MAX_TIMEOUT_MS => {
                return Err(format!(
                    "{}: {ms} is more than {MAX_TIMEOUT_MS}; a refresh would hang that long on a \
                     dead Vault, set at most {MAX_TIMEOUT_MS}",
                    k("request_timeout_ms")
                ))
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let read_concurrency = match self.read_concurrency {
            None => DEFAULT_READ_CONCURRENCY,
            Some(n) if (1..=MAX_READ_CONCURRENCY).contains(&n) => n,
            Some(n) => {
                return Err(format!(
                    "{}: {n} is outside 1..={MAX_READ_CONCURRENCY}; set e.g. \
                     {DEFAULT_READ_CONCURRENCY}",
                    k("read_concurrency")
                ))
            }
        };
        let kv1_full_scan_interval = Duration::from_secs(
            self.kv1_full_scan_secs
                .unwrap_or(DEFAULT_KV1_FULL_SCAN_SECS),
        );
        if self.kv1_full_scan_secs.is_some() && kv == KvVersion::V2 {
            return Err(format!(
                "{}: applies to kv_version 1 only (KV v2 has versions); remove it",
                k("kv1_full_scan_secs")
            ));
        }
        for a in &addresses {
            if a.starts_with("http://") && !is_loopback_url(a) {
                log::warn!(
                    "{}: {a} is plain http to a non-loopback host: the Vault token and the \
                     certificates travel unencrypted; use https://",
                    k("address")
                );
            }
        }
        Ok(VaultConfig {
            address,
            other_addresses,
            kv,
            mount,
            prefix,
            namespace,
            ca_file,
            auth,
            request_timeout,
            read_concurrency,
            kv1_full_scan_interval,
            token_file_check_interval: Duration::from_secs(1),
        })
    }
}

fn validate_address(key: &str, raw: &str) -> Result<String, String> {
    let example = "https://vault.example.com:8200";
    let url = url::Url::parse(raw.trim())
        .map_err(|e| format!("{key}: {raw:?} is not a URL ({e}); set e.g. {example}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{key}: scheme {:?} is not http or https; set e.g. {example}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{key}: {raw:?} has no host; set e.g. {example}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{key}: credentials in the URL are not allowed (they would be logged); put them in \
             the auth section"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{key}: {raw:?} has a query or fragment; set only scheme, host, port (and a path if \
             Vault sits behind a path-routing proxy)"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_loopback_url(address: &str) -> bool {
    match url::Url::parse(address)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn check_ca_file(key: &str, path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "{key}: cannot read {} ({e}); point it at the PEM file of the CA that signed \
             Vault's certificate",
            path.display()
        )
    })?;
    if !bytes
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(format!(
            "{key}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----); convert it with \
             `openssl x509 -inform der -in FILE -out FILE.pem`",
            path.display()
        ));
    }
    Ok(())
}

fn check_file_key(key: &str, p: &Path) -> Result<(), String> {
    if p.as_os_str().is_empty() {
        Err(format!("{key}: is empty; set the path of the file"))
    } else {
        Ok(())
    }
}

fn validate_auth(key: &str, auth: VaultAuthSettings) -> Result<VaultAuth, String> {
    match auth {
        VaultAuthSettings::Token {
            token,
            token_env,
            token_file,
        } => {
            let given = [token.is_some(), token_env.is_some(), token_file.is_some()]
                .iter()
                .filter(|b| **b)
                .count();
            if given != 1 {
                return Err(format!(
                    "{key}: method token needs exactly one of token_file, token_env or token \
                     ({given} given); prefer token_file (a Vault Agent sink) or token_env"
                ));
            }
            if let Some(t) = token {
                let t = t.trim();
                if !header_safe(t) {
                    return Err(format!(
                        "{key}.token: is empty or contains characters not allowed in an HTTP \
                         header; paste the token exactly"
                    ));
                }
                log::warn!(
                    "{key}.token: a literal token in the config file is readable by anyone who \
                     can read the file; prefer {key}.token_file (Vault Agent sink) or \
                     {key}.token_env"
                );
                return Ok(VaultAuth::Token(TokenSource::Literal(Secret::new(t))));
            }
            if let Some(v) = token_env {
                if v.is_empty() || v.contains('=') || v.contains('\0') {
                    return Err(format!(
                        "{key}.token_env: {v:?} is not an environment variable name; set e.g. \
                         VAULT_TOKEN"
                    ));
                }
                return Ok(VaultAuth::Token(TokenSource::Env(v)));
            }
            match token_file {
                Some(p) => {
                    check_file_key(&format!("{key}.token_file"), &p)?;
                    Ok(VaultAuth::Token(TokenSource::File(p)))
                }
                // Unreachable: exactly one of the three is set (counted above).
                None => Err(format!("{key}: no token source given")),
            }
        }
        VaultAuthSettings::Approle {
            role_id_file,
            secret_id_file,
            mount,
        } => {
            check_file_key(&format!("{key}.role_id_file"), &role_id_file)?;
            check_file_key(&format!("{key}.secret_id_file"), &secret_id_file)?;
            let mount = clean_path(&format!("{key}.mount"), &mount, false, "approle")?;
            Ok(VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            })
        }
        VaultAuthSettings::Kubernetes {
            role,
            token_file,
            mount,
        } => {
            if role.trim().is_empty() {
                return Err(format!(
                    "{key}.role: is empty; set the Vault role bound to this service account"
                ));
            }
            check_file_key(&format!("{key}.token_file"), &token_file)?;
            let mount = clean_path(&format!("{key}.mount"), &mount, false, "kubernetes")?;
            Ok(VaultAuth::Kubernetes {
                role: role.trim().to_owned(),
                token_file,
                mount,
            })
        }
        VaultAuthSettings::Aws {
            role,
            mount,
            iam_server_id_header_value,
            region,
            sts_endpoint,
        } => {
            if role.trim().is_empty() {
                return Err(format!(
                    "{key}.role: is empty; set the Vault role bound to this IAM principal \
                     (auth/<mount>/role/<role>)"
                ));
            }
            let mount = clean_path(&format!("{key}.mount"), &mount, false, "aws")?;
            let region = region.trim().to_owned();
            if region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(format!(
                    "{key}.region: {region:?} is not an AWS region name; set e.g. us-east-1"
                ));
            }
            let server_id = match iam_server_id_header_value {
                Some(v) => {
                    let v = v.trim().to_owned();
                    if !header_safe(&v) {
                        return Err(format!(
                            "{key}.iam_server_id_header_value: is empty or contains characters \
                             not allowed in an HTTP header; set it to the value configured as \
                             iam_server_id_header_value in Vault's auth/<mount>/config/client, \
                             or leave it out"
                        ));
                    }
                    Some(v)
                }
                None => None,
            };
            let sts_endpoint = match sts_endpoint {
                Some(e) => {
                    let e = e.trim();
                    let u = url::Url::parse(e).map_err(|err| {
                        format!(
                            "{key}.sts_endpoint: {e:?} is not a URL ({err}); set e.g. \
                             https://sts.{region}.amazonaws.com/"
                        )
                    })?;
                    if u.scheme() != "https" || u.host_str().is_none() {
                        return Err(format!(
                            "{key}.sts_endpoint: {e:?} needs an https:// URL with a host; set \
                             e.g. https://sts.{region}.amazonaws.com/"
                        ));
                    }
                    if u.query().is_some() || u.fragment().is_some() {
                        return Err(format!(
                            "{key}.sts_endpoint: {e:?} has a query or fragment; give only \
                             scheme, host and path"
                        ));
                    }
                    u.to_string()
                }
                None => default_sts_endpoint(&region),
            };
            Ok(VaultAuth::Aws {
                role: role.trim().to_owned(),
                mount,
                server_id,
                region,
                sts_endpoint,
            })
        }
    }
}

/// The STS endpoint for `region` when none is configured: the global endpoint for `us-east-1`
/// (what Vault's `aws` method expects by default, `sts_endpoint` unset in its client config),
/// the regional one otherwise (then Vault's client config needs that `sts_endpoint` and
/// `sts_region` too).
pub(crate) fn default_sts_endpoint(region: &str) -> String {
    if region == "us-east-1" {
        "https://sts.amazonaws.com/".to_owned()
    } else {
        format!("https://sts.{region}.amazonaws.com/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<VaultConfig, String> {
        let s: VaultSettings = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        s.validate("store.vault")
    }

    #[test]
    fn defaults_are_kv2_secret_mtls_gateway() {
        let c = parse("address: https://vault:8200\nauth: {method: token, token_file: /run/t}\n")
            .expect("valid");
        assert_eq!(c.kv, KvVersion::V2);
        assert_eq!(c.mount, "secret");
        assert_eq!(c.prefix, "mtls-gateway");
        assert_eq!(c.read_concurrency, 16);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(
            c.auth,
            VaultAuth::Token(TokenSource::File(PathBuf::from("/run/t")))
        );
        assert_eq!(
            c.describe(),
            "vault:kv2:secret/mtls-gateway (https://vault:8200)"
        );
    }

    #[test]
    fn kv_version_3_names_the_key_and_the_fix() {
        let e = parse("address: https://v\nkv_version: 3\nauth: {method: token, token_env: T}\n")
            .expect_err("kv 3");
        assert!(
            e.starts_with("store.vault.kv_version: 3 is not 1 or 2; set 1 or 2"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = parse("address: https://v\nmonut: x\nauth: {method: token, token_env: T}\n")
            .expect_err("typo");
        assert!(e.contains("monut"), "{e}");
        let e = parse("address: https://v\nauth: {method: token, token_env: T, extra: 1}\n")
            .expect_err("typo in auth");
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn token_method_needs_exactly_one_source() {
        let e = parse("address: https://v\nauth: {method: token}\n").expect_err("none");
        assert!(
            e.starts_with("store.vault.auth: method token needs exactly one"),
            "{e}"
        );
        let e = parse("address: https://v\nauth: {method: token, token_env: A, token_file: /f}\n")
            .expect_err("two");
        assert!(e.contains("(2 given)"), "{e}");
    }

    #[test]
    fn literal_token_never_shows_in_debug() {
        let yaml = "address: https://v\nauth: {method: token, token: hvs.SUPERSECRET}\n";
        let s: VaultSettings = serde_yaml::from_str(yaml).expect("yaml");
        assert!(!format!("{s:?}").contains("SUPERSECRET"));
        let c = s.validate("store.vault").expect("valid");
        assert!(!format!("{c:?}").contains("SUPERSECRET"));
        assert!(!c.describe().contains("SUPERSECRET"));
        assert!(!c.auth.describe().contains("SUPERSECRET"));
    }

    #[test]
    fn paths_are_normalized_and_checked() {
        let c = parse(
            "address: http://127.0.0.1:8200/\nkv_version: 1\nmount: /kv/\nprefix: /a/b/\n\
             namespace: team\nauth: {method: approle, role_id_file: /r, secret_id_file: /s}\n",
        )
        .expect("valid");
        assert_eq!(c.address, "http://127.0.0.1:8200");
        assert_eq!((c.mount.as_str(), c.prefix.as_str()), ("kv", "a/b"));
        assert_eq!(c.namespace.as_deref(), Some("team"));
        let e = parse("address: https://v\nmount: '../x'\nauth: {method: token, token_env: T}\n")
            .expect_err("dotdot");
        assert!(e.starts_with("store.vault.mount: segment \"..\""), "{e}");
        let e = parse("address: https://v\nmount: ''\nauth: {method: token, token_env: T}\n")
            .expect_err("empty");
        assert!(e.starts_with("store.vault.mount: is empty"), "{e}");
        let c = parse("address: https://v\nprefix: ''\nauth: {method: token, token_env: T}\n")
            .expect("empty prefix is the mount root");
        assert_eq!(c.prefix, "");
    }

    #[test]
    fn address_and_limits_are_checked() {
        let e = parse("address: vault:8200\nauth: {method: token, token_env: T}\n")
            .expect_err("no scheme");
        assert!(e.starts_with("store.vault.address:"), "{e}");
        let e = parse("address: https://u:p@v\nauth: {method: token, token_env: T}\n")
            .expect_err("creds");
        assert!(e.contains("credentials in the URL"), "{e}");
        let e =
            parse("address: https://v\nread_concurrency: 0\nauth: {method: token, token_env: T}\n")
                .expect_err("zero");
        assert!(e.starts_with("store.vault.read_concurrency: 0"), "{e}");
        let e = parse(
            "address: https://v\nrequest_timeout_ms: 0\nauth: {method: token, token_env: T}\n",
        )
        .expect_err("zero timeout");
        assert!(e.starts_with("store.vault.request_timeout_ms:"), "{e}");
        let e = parse("address: http://v\nca_file: /x\nauth: {method: token, token_env: T}\n")
            .expect_err("ca with http");
        assert!(e.starts_with("store.vault.ca_file: is set but"), "{e}");
        let e = parse("address: https://v\nca_file: /nonexistent/ca.pem\nauth: {method: token, token_env: T}\n")
            .expect_err("missing ca");
        assert!(
            e.starts_with("store.vault.ca_file: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn addresses_list_the_nodes_of_a_cluster() {
        let c = parse(
            "addresses: [http://127.0.0.1:8200/, 'https://vault-1:8200', https://vault-2:8200]\n\
             auth: {method: token, token_env: T}\n",
        )
        .expect("valid");
        assert_eq!(
            c.all_addresses(),
            vec![
                "http://127.0.0.1:8200",
                "https://vault-1:8200",
                "https://vault-2:8200"
            ]
        );
        assert_eq!(c.address, "http://127.0.0.1:8200");
        assert!(c
            .describe()
            .ends_with("(http://127.0.0.1:8200, https://vault-1:8200, https://vault-2:8200)"));
        let c = parse("address: https://v:8200\nauth: {method: token, token_env: T}\n")
            .expect("one address");
        assert!(c.other_addresses.is_empty());
        assert_eq!(c.all_addresses(), vec!["https://v:8200"]);

        let e = parse(
            "address: https://v\naddresses: [https://w]\nauth: {method: token, token_env: T}\n",
        )
        .expect_err("both");
        assert!(e.starts_with("store.vault.address: set either"), "{e}");
        let e = parse("addresses: []\nauth: {method: token, token_env: T}\n").expect_err("empty");
        assert!(e.starts_with("store.vault.addresses: is empty"), "{e}");
        let e = parse("auth: {method: token, token_env: T}\n").expect_err("none");
        assert!(e.starts_with("store.vault.address: missing"), "{e}");
        let e =
            parse("addresses: [https://v, 'vault:8200']\nauth: {method: token, token_env: T}\n")
                .expect_err("bad url");
        assert!(e.starts_with("store.vault.addresses[1]:"), "{e}");
        let e =
            parse("addresses: [https://v, 'https://v/']\nauth: {method: token, token_env: T}\n")
                .expect_err("twice");
        assert!(e.contains("listed twice"), "{e}");
        let e = parse(
            "addresses: [https://v, http://w]\nca_file: /x\nauth: {method: token, token_env: T}\n",
        )
        .expect_err("ca with http");
        assert!(
            e.starts_with("store.vault.ca_file: is set but http://w"),
            "{e}"
        );
    }

    #[test]
    fn kv1_full_scan_is_a_kv1_setting() {
        let c = parse(
            "address: https://v\nkv_version: 1\nkv1_full_scan_secs: 60\n\
             auth: {method: token, token_env: T}\n",
        )
        .expect("valid");
        assert_eq!(c.kv1_full_scan_interval, Duration::from_secs(60));
        let e = parse(
            "address: https://v\nkv1_full_scan_secs: 60\nauth: {method: token, token_env: T}\n",
        )
        .expect_err("v2");
        assert!(
            e.starts_with("store.vault.kv1_full_scan_secs: applies to kv_version 1"),
            "{e}"
        );
    }

    #[test]
    fn kubernetes_defaults() {
        let c = parse("address: https://v\nauth: {method: kubernetes, role: gw}\n").expect("valid");
        assert_eq!(
            c.auth,
            VaultAuth::Kubernetes {
                role: "gw".into(),
                token_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
                mount: "kubernetes".into(),
            }
        );
        let e = parse("address: https://v\nauth: {method: kubernetes, role: ' '}\n")
            .expect_err("empty role");
        assert!(e.starts_with("store.vault.auth.role: is empty"), "{e}");
    }

    #[test]
    fn aws_defaults_and_errors_name_the_key() {
        let c = parse("address: https://v\nauth: {method: aws, role: gw}\n").expect("valid");
        assert_eq!(
            c.auth,
            VaultAuth::Aws {
                role: "gw".into(),
                mount: "aws".into(),
                server_id: None,
                region: "us-east-1".into(),
                sts_endpoint: "https://sts.amazonaws.com/".into(),
            }
        );
        let c = parse(
            "address: https://v\nauth: {method: aws, role: gw, region: eu-west-1, mount: /aws-eu/, \
             iam_server_id_header_value: vault.example.com}\n",
        )
        .expect("valid");
        assert_eq!(
            c.auth,
            VaultAuth::Aws {
                role: "gw".into(),
                mount: "aws-eu".into(),
                server_id: Some("vault.example.com".into()),
                region: "eu-west-1".into(),
                sts_endpoint: "https://sts.eu-west-1.amazonaws.com/".into(),
            }
        );
        let e = parse("address: https://v\nauth: {method: aws, role: gw, rolee: x}\n")
            .expect_err("unknown key");
        assert!(e.contains("rolee"), "{e}");
        let e = parse("address: https://v\nauth: {method: aws}\n").expect_err("no role");
        assert!(e.contains("role"), "{e}");
        let e = parse("address: https://v\nauth: {method: aws, role: gw, region: 'EU WEST'}\n")
            .expect_err("bad region");
        assert!(e.starts_with("store.vault.auth.region:"), "{e}");
        let e = parse("address: https://v\nauth: {method: aws, role: gw, sts_endpoint: 'sts'}\n")
            .expect_err("bad endpoint");
        assert!(e.starts_with("store.vault.auth.sts_endpoint:"), "{e}");
        let e = parse(
            "address: https://v\nauth: {method: aws, role: gw, sts_endpoint: 'http://sts.x/'}\n",
        )
        .expect_err("plain http endpoint");
        assert!(e.contains("needs an https:// URL"), "{e}");
        let e = parse(
            "address: https://v\nauth: {method: aws, role: gw, iam_server_id_header_value: ''}\n",
        )
        .expect_err("empty server id");
        assert!(
            e.starts_with("store.vault.auth.iam_server_id_header_value:"),
            "{e}"
        );
    }
}
