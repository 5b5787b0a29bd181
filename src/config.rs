//! Configuration in two layers: [`FileConfig`] mirrors the YAML file (serde, unknown keys
//! rejected), [`Config`] is the validated, typed form the rest of the program sees.
//!
//! Every validation error names the key and the fix, e.g.
//! `proxy.listen: "0.0.0.0:8080" is not loopback; set proxy.allow_remote: true to expose it`.
//! `mtls-gateway check --config FILE` prints that one line and exits 64 (EX_USAGE).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::{AuthConfig, AuthSettings};
use crate::store::vault::{VaultConfig, VaultSettings};

/// A configuration problem: which key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// Wrap an error string that already starts with its key (`store.vault.kv_version: ...`).
fn named(fallback_key: &str, msg: String) -> ConfigError {
    match msg.split_once(": ") {
        Some((k, m)) if k.starts_with(fallback_key) => err(k, m),
        _ => err(fallback_key, msg),
    }
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- file layer (serde mirror)

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub proxy: ProxyFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub ops: ListenerFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub refresh: RefreshFile,
    #[serde(default)]
    pub lifecycle: crate::lifecycle::config::LifecycleFile,
    #[serde(default)]
    pub rate_limit: RateLimitFile,
    #[serde(default)]
    pub upstream: UpstreamFile,
    #[serde(default)]
    pub unmapped: UnmappedFile,
    #[serde(default)]
    pub services: ServicesFile,
    #[serde(default)]
    pub shutdown: ShutdownFile,
    #[serde(default)]
    pub p12: P12File,
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    #[serde(default)]
    pub notifications: NotificationsFile,
    /// Optional shared state (see [`crate::shared`]); absent, every replica keeps its own.
    #[serde(default)]
    pub redis: Option<RedisFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub listen: Option<Vec<String>>,
    #[serde(default)]
    pub allow_remote: bool,
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    pub client_idle_timeout_secs: Option<u64>,
    pub client_timeout_secs: Option<u64>,
    pub default_account: Option<String>,
    pub default_service: Option<String>,
    pub account_header: Option<String>,
    pub service_header: Option<String>,
    pub auth: Option<String>,
    #[serde(default)]
    pub access_log: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub listen: Option<String>,
    #[serde(default)]
    pub allow_remote: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    #[serde(default)]
    pub allow_remote: bool,
    pub max_upload_bytes: Option<usize>,
    pub max_items: Option<usize>,
    pub rsa_min_bits: Option<u32>,
    pub ec_curves: Option<Vec<String>>,
    pub validate_timeout_ms: Option<u64>,
    pub max_json_bytes: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub max_concurrent_bodies: Option<usize>,
    #[serde(default)]
    pub console: ConsoleFile,
}

/// `admin.console`: the self-service web console (see [`crate::console`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleFile {
    pub enabled: Option<bool>,
    /// `auto` (Secure when the request came over https: `X-Forwarded-Proto: https`), `always`,
    /// `never`.
    pub cookie_secure: Option<String>,
    /// The longest a session lasts, whatever the token's `exp` (default 8 hours).
    pub session_max_secs: Option<u64>,
    /// Sign-in through an OpenID Connect provider (authorization code with PKCE).
    pub oidc: Option<OidcFile>,
}

/// `admin.console.oidc`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// The provider's issuer URL; its discovery document is `{issuer}/.well-known/openid-configuration`.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    /// This console's callback as registered at the provider: `https://<host>/console/oidc/callback`.
    pub redirect_url: Option<String>,
    /// Default `[openid]`.
    pub scopes: Option<Vec<String>>,
    /// Which token becomes the session: `id_token` (default) or `access_token` (a JWT).
    pub token: Option<String>,
    /// Extra CA certificates (PEM) for https to the provider.
    pub ca_file: Option<PathBuf>,
    /// The sign-in button's words (default "Sign in with single sign-on").
    pub label: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P12File {
    pub max_iterations: Option<u64>,
    pub max_concurrent_decodes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub kind: Option<String>,
    pub path: Option<PathBuf>,
    pub vault: Option<VaultSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshFile {
    pub interval_secs: Option<u64>,
    pub retry_min_ms: Option<u64>,
    pub retry_max_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub enabled: Option<bool>,
    pub requests_per_second: Option<u32>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub forwarded_header: Option<String>,
    pub expected_clients: Option<usize>,
    #[serde(default)]
    pub fleet: RateLimitFleetFile,
}

/// `rate_limit.fleet`: the fleet-wide tier over the shared counter (see `crate::ratelimit::fleet`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFleetFile {
    /// Default: on when shared state (Redis) is configured.
    pub enabled: Option<bool>,
    /// Replicas expected behind one Service: only sizes the defaults below.
    pub replicas: Option<u32>,
    /// Requests per client and window a replica admits before consulting the fleet.
    pub local_allowance: Option<u32>,
    /// Tokens a replica claims ahead from the fleet counter at once.
    pub chunk: Option<u32>,
    /// Budget of one counter round trip; past it the replica falls back to its local limit.
    pub timeout_ms: Option<u64>,
    /// While in fallback, how often the counter is probed.
    pub retry_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    pub use_system_roots: Option<bool>,
    pub connect_timeout_ms: Option<u64>,
    pub tls_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub dns_cache_secs: Option<u64>,
    pub keepalive_pool_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmappedFile {
    pub policy: Option<String>,
    #[serde(default)]
    pub plain_tls_hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesFile {
    #[serde(default)]
    pub extra: BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    pub grace_period_secs: Option<u64>,
}

/// `notifications:` (certificate expiry and failure webhooks, see [`crate::lifecycle::notify`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsFile {
    #[serde(default)]
    pub webhooks: Vec<WebhookFile>,
    /// Signed so that a negative number gets a message naming the key.
    pub expiry_days: Option<Vec<i64>>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub retry_min_ms: Option<u64>,
    pub retry_max_secs: Option<u64>,
}

/// One entry of `notifications.webhooks`. The secret comes from a file or the environment only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub url: Option<String>,
    pub name: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_insecure: bool,
}

// ---------------------------------------------------------------- typed layer

/// Whether the proxy listener authenticates callers of the forward resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyAuth {
    /// No authentication; accepted only on loopback listeners (the sidecar case).
    None,
    /// OAuth1 or Bearer (see [`crate::auth`]) on the forward resource.
    Required,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub work_stealing: bool,
    /// Idle time allowed on a client connection between requests.
    pub client_idle_timeout: Duration,
    /// Time allowed to receive the rest of a request, or to hand a response to the client.
    pub client_timeout: Duration,
    pub default_account: Option<String>,
    pub default_service: Option<String>,
    pub account_header: String,
    pub service_header: String,
    pub auth: ProxyAuth,
    /// One access log line per request on stderr, written by [`crate::access_log`].
    pub access_log: bool,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_upload_bytes: usize,
    pub max_items: usize,
    pub rsa_min_bits: u32,
    pub ec_curves: Vec<String>,
    pub validate_timeout: Duration,
    /// Body limit of the routes that carry no certificate (mappings, checks, activate).
    pub max_json_bytes: usize,
    /// Deadline for a whole request head, from its first byte (or from the end of the previous
    /// response on a kept-alive connection), like nginx's `client_header_timeout`.
    pub header_timeout: Duration,
    /// Deadline for a whole request body, counted once the credentials are checked. A total,
    /// not per read: the largest body is a few MiB, so a caller sending slower than the limit
    /// over this time is cut off however it spaces its bytes.
    pub body_timeout: Duration,
    /// Request bodies read at once; one more is refused with 503 and `Retry-After`.
    pub max_concurrent_bodies: usize,
    /// The web console on this listener (`admin.console`).
    pub console: ConsoleConfig,
}

/// When the console's session cookie carries `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSecure {
    /// When the request came over https (`X-Forwarded-Proto: https` from the TLS terminator).
    Auto,
    Always,
    Never,
}

/// `admin.console`, validated.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Off by default; needs `auth.jwt` (sessions are Bearer tokens).
    pub enabled: bool,
    pub cookie_secure: CookieSecure,
    pub session_max: Duration,
    /// Sign-in through an OpenID Connect provider, when configured.
    pub oidc: Option<OidcConfig>,
}

/// Which token of the provider's answer becomes the console session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcToken {
    IdToken,
    AccessToken,
}

/// `admin.console.oidc`, validated (the secret read).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: url::Url,
    pub client_id: String,
    pub client_secret: Option<crate::auth::Secret>,
    pub redirect_url: url::Url,
    pub scopes: Vec<String>,
    pub token: OidcToken,
    pub ca_file: Option<PathBuf>,
    pub label: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: false,
            cookie_secure: CookieSecure::Auto,
            session_max: Duration::from_secs(8 * 3600),
            oidc: None,
        }
    }
}

/// Bounds on PKCS#12 decoding (see [`crate::p12::Decoder`]).
#[derive(Debug, Clone)]
pub struct P12Config {
    /// The highest PBKDF2, PKCS#12-PBE or MAC iteration count accepted.
    pub max_iterations: u64,
    /// Decodes run at once on the blocking pool.
    pub max_concurrent_decodes: usize,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    File { path: PathBuf },
    Vault(Box<VaultConfig>),
}

#[derive(Debug, Clone)]
pub struct RefreshConfig {
    pub interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub requests_per_second: u32,
    pub trusted_proxies: Vec<IpNet>,
    pub forwarded_header: String,
    pub expected_clients: usize,
    pub fleet: RateLimitFleetConfig,
}

/// The fleet tier's settings, resolved (defaults from `requests_per_second` and `replicas`).
#[derive(Debug, Clone)]
pub struct RateLimitFleetConfig {
    /// `None`: not set in the file, on when shared state is configured ([`Self::active`]).
    pub enabled: Option<bool>,
    pub local_allowance: u32,
    pub chunk: u32,
    pub timeout: Duration,
    pub retry: Duration,
}

impl RateLimitFleetConfig {
    /// The defaults for a limit of `rps` with `replicas` replicas: a local allowance of
    /// `max(1, floor(rps / (2 x replicas)))` and a chunk of the same size, a 50 ms budget, a 1 s
    /// probe interval.
    pub fn defaults(rps: u32, replicas: u32) -> RateLimitFleetConfig {
        let share = (rps / (2 * replicas.max(1))).max(1);
        RateLimitFleetConfig {
            enabled: None,
            local_allowance: share,
            chunk: share,
            timeout: Duration::from_millis(50),
            retry: Duration::from_secs(1),
        }
    }

    /// Whether the fleet tier runs, given whether shared state (Redis) is configured.
    pub fn active(&self, shared_state_configured: bool) -> bool {
        self.enabled.unwrap_or(true) && shared_state_configured
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub ca_files: Vec<PathBuf>,
    pub use_system_roots: bool,
    pub connect_timeout: Duration,
    pub tls_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub dns_cache: Duration,
    pub keepalive_pool_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnmappedPolicy {
    /// Refuse requests without a mapping (the mapping table is the allowlist).
    Refuse,
    /// Forward over plain TLS (no client certificate) to these hosts only.
    PlainTls { hosts: Vec<String> },
}

/// Certificate expiry and failure notifications (webhooks). No webhook: notifications off.
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    pub webhooks: Vec<WebhookConfig>,
    /// Days before notAfter at which `certificate.expiring` fires, distinct, sorted descending.
    pub expiry_days: Vec<u32>,
    /// Per attempt: connect, TLS, request and response head.
    pub timeout: Duration,
    /// Attempts per webhook and event, the first included.
    pub max_attempts: u32,
    /// Back-off between attempts: starts here, doubles up to `retry_max` (with jitter).
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl NotificationsConfig {
    pub const DEFAULT_EXPIRY_DAYS: [u32; 4] = [30, 14, 7, 1];

    /// Whether any webhook is configured.
    pub fn enabled(&self) -> bool {
        !self.webhooks.is_empty()
    }
}

impl Default for NotificationsConfig {
    /// Off (no webhook), every other setting at its default.
    fn default() -> Self {
        NotificationsConfig {
            webhooks: Vec::new(),
            expiry_days: Self::DEFAULT_EXPIRY_DAYS.to_vec(),
            timeout: Duration::from_millis(5_000),
            max_attempts: 8,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// One webhook. `Debug` shows neither the secret nor the URL's path and query (a Slack-style
/// webhook URL is itself a credential): only [`WebhookConfig::redacted_url`].
#[derive(Clone)]
pub struct WebhookConfig {
    /// For logs; defaults to the URL's host (and port).
    pub name: String,
    pub url: url::Url,
    /// The HMAC-SHA256 key, at least 16 bytes.
    pub secret: crate::auth::Secret,
    /// Extra CA (PEM) trusted for this webhook's server, besides the system roots.
    pub ca_file: Option<PathBuf>,
}

impl WebhookConfig {
    /// `scheme://host[:port]/...`: what logs and errors may show of the URL.
    pub fn redacted_url(&self) -> String {
        redacted_url(&self.url)
    }
}

/// `scheme://host[:port]`, plus `/...` when the URL has a path, query or user info.
pub fn redacted_url(u: &url::Url) -> String {
    let host = u.host_str().unwrap_or("");
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let more = (u.path() != "/" && !u.path().is_empty())
        || u.query().is_some()
        || !u.username().is_empty()
        || u.password().is_some();
    format!(
        "{}://{host}{port}{}",
        u.scheme(),
        if more { "/..." } else { "" }
    )
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.redacted_url())
            .field("secret", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Clone)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub ops_listen: SocketAddr,
    pub store: StoreConfig,
    pub refresh: RefreshConfig,
    pub lifecycle: crate::lifecycle::config::LifecycleConfig,
    pub rate_limit: RateLimitConfig,
    pub upstream: UpstreamConfig,
    pub unmapped: UnmappedPolicy,
    /// Service name -> numeric id (TEST_SERVICE=0, IDP=1, WEBHOOKS=2, plus extras).
    pub services: BTreeMap<String, u32>,
    pub grace_period: Duration,
    pub p12: P12Config,
    pub auth: std::sync::Arc<AuthConfig>,
    pub notifications: NotificationsConfig,
    /// `redis:`: shared state across replicas (OAuth1 nonces, change notices, the fleet-wide
    /// rate limit). `None`: everything per replica.
    pub redis: Option<RedisConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("proxy", &self.proxy)
            .field("admin", &self.admin)
            .field("ops_listen", &self.ops_listen)
            .field("store", &self.store)
            .field("refresh", &self.refresh)
            .field("lifecycle", &self.lifecycle)
            .field("rate_limit", &self.rate_limit)
            .field("upstream", &self.upstream)
            .field("unmapped", &self.unmapped)
            .field("services", &self.services)
            .field("grace_period", &self.grace_period)
            .field("p12", &self.p12)
            .field("notifications", &self.notifications)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Read, parse and validate a config file. Relative paths inside are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(
                &path.display().to_string(),
                format!("cannot read the config file ({e}); check the path"),
            )
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_yaml(&text, &base)
    }

    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                // serde_yaml's message usually says "at line L column C" itself; the location
                // is added only where it does not.
                let msg = e.to_string();
                let loc = match e.location() {
                    Some(l) if !msg.contains(" at line ") => {
                        format!(" (line {}, column {})", l.line(), l.column())
                    }
                    _ => String::new(),
                };
                // serde_yaml names the path of the failing key in its message.
                err("config", format!("{msg}{loc}; fix or remove that key"))
            })?
        };
        file.validate(base_dir)
    }
}

fn parse_listen(key: &str, value: &str, allow_remote: bool) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = value.parse().map_err(|_| {
        err(
            key,
            format!("{value:?} is not an IP:port address; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
        )
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        let section = key.split('.').next().unwrap_or(key);
        return Err(err(
            key,
            format!(
                "{value:?} is not loopback; set {section}.allow_remote: true to expose it beyond this host"
            ),
        ));
    }
    Ok(addr)
}

fn ms(key: &str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if v == 0 {
        return Err(err(key, "must be greater than 0"));
    }
    Ok(Duration::from_millis(v))
}

/// Whole seconds, 1 to 3600.
fn secs(key: &str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match v.unwrap_or(default) {
        n @ 1..=3600 => Ok(Duration::from_secs(n)),
        n => Err(err(
            key,
            format!("{n} is out of range; use 1 to 3600 seconds (default {default})"),
        )),
    }
}

fn header_name(key: &str, v: Option<String>, default: &str) -> Result<String, ConfigError> {
    let v = v
        .unwrap_or_else(|| default.to_string())
        .to_ascii_lowercase();
    if http::HeaderName::from_bytes(v.as_bytes()).is_err() || v.is_empty() {
        return Err(err(key, format!("{v:?} is not a valid HTTP header name")));
    }
    Ok(v)
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// The services LivePerson documents, by name and numeric id.
pub const BUILTIN_SERVICES: [(&str, u32); 3] = [("TEST_SERVICE", 0), ("IDP", 1), ("WEBHOOKS", 2)];

impl FileConfig {
    pub fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        // proxy
        let p = self.proxy;
        let listen_strs = p
            .listen
            .unwrap_or_else(|| vec!["127.0.0.1:8080".to_string()]);
        if listen_strs.is_empty() {
            return Err(err(
                "proxy.listen",
                "needs at least one address, e.g. [\"127.0.0.1:8080\"]",
            ));
        }
        let mut listen = Vec::new();
        for (i, s) in listen_strs.iter().enumerate() {
            listen.push(parse_listen(
                &format!("proxy.listen[{i}]"),
                s,
                p.allow_remote,
            )?);
        }
        let threads = p.threads.unwrap_or(2);
        if threads == 0 || threads > 256 {
            return Err(err(
                "proxy.threads",
                format!("{threads} is out of range; use 1 to 256"),
            ));
        }
        let auth = match p.auth.as_deref().unwrap_or("none") {
            "none" => {
                if listen.iter().any(|a| !a.ip().is_loopback()) {
                    return Err(err(
                        "proxy.auth",
                        "\"none\" is accepted only when every proxy.listen address is loopback; set proxy.auth: required (and configure auth:) to expose the proxy",
                    ));
                }
                ProxyAuth::None
            }
            "required" => ProxyAuth::Required,
            other => {
                return Err(err(
                    "proxy.auth",
                    format!("{other:?} is not known; use none (loopback only) or required"),
                ))
            }
        };
        let mut services: BTreeMap<String, u32> = BUILTIN_SERVICES
            .iter()
            .map(|(n, i)| (n.to_string(), *i))
            .collect();
        for (name, id) in self.services.extra {
            let upper = name.to_ascii_uppercase();
            if upper.is_empty()
                || !upper
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(err(
                    &format!("services.extra.{name}"),
                    "service names use letters, digits and _ only",
                ));
            }
            if let Some((clash, _)) = services.iter().find(|(n, i)| **i == id && **n != upper) {
                return Err(err(
                    &format!("services.extra.{name}"),
                    format!("id {id} is already used by {clash}; pick another number"),
                ));
            }
            services.insert(upper, id);
        }
        let service_ok = |key: &str, s: &Option<String>| -> Result<Option<String>, ConfigError> {
            match s {
                None => Ok(None),
                Some(s) => {
                    let u = s.to_ascii_uppercase();
                    if services.contains_key(&u) {
                        Ok(Some(u))
                    } else {
                        Err(err(
                            key,
                            format!(
                                "{s:?} is not a known service; use one of {} or add it under services.extra",
                                services.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ))
                    }
                }
            }
        };
        let default_service = service_ok("proxy.default_service", &p.default_service)?;
        if let Some(a) = &p.default_account {
            if !crate::store::valid_account_id(a) {
                return Err(err(
                    "proxy.default_account",
                    format!(
                        "{a:?} is not a valid account id (letters, digits, - and _, at most 64)"
                    ),
                ));
            }
        }
        let client_idle_timeout = secs(
            "proxy.client_idle_timeout_secs",
            p.client_idle_timeout_secs,
            60,
        )?;
        let client_timeout = secs("proxy.client_timeout_secs", p.client_timeout_secs, 60)?;
        let proxy = ProxyConfig {
            listen,
            threads,
            work_stealing: p.work_stealing.unwrap_or(true),
            client_idle_timeout,
            client_timeout,
            default_account: p.default_account,
            default_service,
            account_header: header_name(
                "proxy.account_header",
                p.account_header,
                "x-mtls-account",
            )?,
            service_header: header_name(
                "proxy.service_header",
                p.service_header,
                "x-mtls-service",
            )?,
            auth,
            access_log: p.access_log,
        };

        // admin
        let mut a = self.admin;
        let oidc_file = a.console.oidc.take();
        let admin = AdminConfig {
            enabled: a.enabled.unwrap_or(true),
            listen: parse_listen(
                "admin.listen",
                a.listen.as_deref().unwrap_or("127.0.0.1:8081"),
                a.allow_remote,
            )?,
            max_upload_bytes: match a.max_upload_bytes.unwrap_or(1024 * 1024) {
                0 => return Err(err("admin.max_upload_bytes", "must be greater than 0")),
                n => n,
            },
            max_items: match a.max_items.unwrap_or(100) {
                0 => return Err(err("admin.max_items", "must be greater than 0")),
                n => n,
            },
            rsa_min_bits: match a.rsa_min_bits.unwrap_or(2048) {
                n if n < 1024 => {
                    return Err(err(
                        "admin.rsa_min_bits",
                        format!("{n} is too weak; use 2048 or more"),
                    ))
                }
                n => n,
            },
            ec_curves: {
                let curves = a
                    .ec_curves
                    .unwrap_or_else(|| vec!["P-256".to_string(), "P-384".to_string()]);
                for c in &curves {
                    if !matches!(c.as_str(), "P-256" | "P-384" | "P-521") {
                        return Err(err(
                            "admin.ec_curves",
                            format!("{c:?} is not supported; use P-256, P-384 or P-521"),
                        ));
                    }
                }
                curves
            },
            validate_timeout: ms("admin.validate_timeout_ms", a.validate_timeout_ms, 10_000)?,
            max_json_bytes: match a.max_json_bytes.unwrap_or(256 * 1024) {
                n @ 1024..=16_777_216 => n,
                n => {
                    return Err(err(
                        "admin.max_json_bytes",
                        format!("{n} is out of range; use 1024 to 16777216 bytes (default 262144)"),
                    ))
                }
            },
            header_timeout: secs("admin.header_timeout_secs", a.header_timeout_secs, 60)?,
            body_timeout: secs("admin.body_timeout_secs", a.body_timeout_secs, 60)?,
            max_concurrent_bodies: match a.max_concurrent_bodies.unwrap_or(16) {
                n @ 1..=4096 => n,
                n => {
                    return Err(err(
                        "admin.max_concurrent_bodies",
                        format!("{n} is out of range; use 1 to 4096 (default 16)"),
                    ))
                }
            },
            console: ConsoleConfig {
                enabled: a.console.enabled.unwrap_or(false),
                cookie_secure: match a.console.cookie_secure.as_deref().unwrap_or("auto") {
                    "auto" => CookieSecure::Auto,
                    "always" => CookieSecure::Always,
                    "never" => CookieSecure::Never,
                    other => {
                        return Err(err(
                            "admin.console.cookie_secure",
                            format!("{other:?} is not one of auto, always, never (default auto: Secure when the request came over https)"),
                        ))
                    }
                },
                session_max: match a.console.session_max_secs.unwrap_or(8 * 3600) {
                    n @ 60..=604_800 => Duration::from_secs(n),
                    n => {
                        return Err(err(
                            "admin.console.session_max_secs",
                            format!("{n} is out of range; use 60 to 604800 seconds (default 28800, 8 hours)"),
                        ))
                    }
                },
                oidc: None,
            },
        };

        let ops_listen = parse_listen(
            "ops.listen",
            self.ops.listen.as_deref().unwrap_or("127.0.0.1:9100"),
            self.ops.allow_remote,
        )?;
        distinct_listeners(&named_listeners(&proxy.listen, &admin, ops_listen))?;

        // store
        let s = self.store;
        let store = match s.kind.as_deref().unwrap_or("file") {
            "file" => {
                if s.vault.is_some() {
                    return Err(err(
                        "store.vault",
                        "is set but store.kind is file; set store.kind: vault or remove store.vault",
                    ));
                }
                StoreConfig::File {
                    path: resolve(base, s.path.unwrap_or_else(|| PathBuf::from("data"))),
                }
            }
            "vault" => {
                if s.path.is_some() {
                    return Err(err(
                        "store.path",
                        "belongs to store.kind: file; remove it when using vault",
                    ));
                }
                let v = s.vault.ok_or_else(|| {
                    err(
                        "store.vault",
                        "is required when store.kind is vault (address, auth, ...)",
                    )
                })?;
                StoreConfig::Vault(Box::new(
                    v.validate("store.vault")
                        .map_err(|m| named("store.vault", m))?,
                ))
            }
            other => {
                return Err(err(
                    "store.kind",
                    format!("{other:?} is not known; use file or vault"),
                ))
            }
        };

        let r = self.refresh;
        let interval = r.interval_secs.unwrap_or(300);
        if !(1..=86_400).contains(&interval) {
            return Err(err(
                "refresh.interval_secs",
                format!("{interval} is out of range; use 1 to 86400 (default 300)"),
            ));
        }
        let refresh = RefreshConfig {
            interval: Duration::from_secs(interval),
            retry_min: ms("refresh.retry_min_ms", r.retry_min_ms, 500)?,
            retry_max: Duration::from_secs(r.retry_max_secs.unwrap_or(60).max(1)),
        };

        let lifecycle = self.lifecycle.resolve().map_err(|(k, m)| err(&k, m))?;

        let rl = self.rate_limit;
        let rps = rl.requests_per_second.unwrap_or(10);
        if rps == 0 {
            return Err(err(
                "rate_limit.requests_per_second",
                "must be at least 1; set rate_limit.enabled: false to switch limiting off",
            ));
        }
        let mut trusted = Vec::new();
        for (i, t) in rl.trusted_proxies.iter().enumerate() {
            let net = t
                .parse::<IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    err(
                        &format!("rate_limit.trusted_proxies[{i}]"),
                        format!("{t:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                    )
                })?;
            trusted.push(net);
        }
        let rate_limit = RateLimitConfig {
            enabled: rl.enabled.unwrap_or(true),
            requests_per_second: rps,
            trusted_proxies: trusted,
            forwarded_header: header_name(
                "rate_limit.forwarded_header",
                rl.forwarded_header,
                "x-forwarded-for",
            )?,
            expected_clients: rl.expected_clients.unwrap_or(100_000).max(16),
            fleet: {
                let f = rl.fleet;
                let d = RateLimitFleetConfig::defaults(rps, f.replicas.unwrap_or(3));
                let positive = |key: &str, v: Option<u32>, default: u32| match v {
                    Some(0) => Err(err(key, "must be at least 1")),
                    v => Ok(v.unwrap_or(default)),
                };
                RateLimitFleetConfig {
                    enabled: f.enabled,
                    local_allowance: positive(
                        "rate_limit.fleet.local_allowance",
                        f.local_allowance,
                        d.local_allowance,
                    )?,
                    chunk: positive("rate_limit.fleet.chunk", f.chunk, d.chunk)?,
                    timeout: ms("rate_limit.fleet.timeout_ms", f.timeout_ms, 50)?,
                    retry: ms("rate_limit.fleet.retry_ms", f.retry_ms, 1000)?,
                }
            },
        };

        let u = self.upstream;
        let mut ca_files = Vec::new();
        for (i, f) in u.ca_files.into_iter().enumerate() {
            let f = resolve(base, f);
            if !f.is_file() {
                return Err(err(
                    &format!("upstream.ca_files[{i}]"),
                    format!("{} does not exist or is not a file", f.display()),
                ));
            }
            ca_files.push(f);
        }
        let upstream = UpstreamConfig {
            ca_files,
            use_system_roots: u.use_system_roots.unwrap_or(true),
            connect_timeout: ms("upstream.connect_timeout_ms", u.connect_timeout_ms, 2_000)?,
            tls_timeout: ms("upstream.tls_timeout_ms", u.tls_timeout_ms, 5_000)?,
            read_timeout: ms("upstream.read_timeout_ms", u.read_timeout_ms, 30_000)?,
            write_timeout: ms("upstream.write_timeout_ms", u.write_timeout_ms, 30_000)?,
            idle_timeout: Duration::from_secs(u.idle_timeout_secs.unwrap_or(60)),
            dns_cache: Duration::from_secs(u.dns_cache_secs.unwrap_or(30)),
            keepalive_pool_size: u.keepalive_pool_size.unwrap_or(2048).max(1),
        };
        if !upstream.use_system_roots && upstream.ca_files.is_empty() {
            return Err(err(
                "upstream.use_system_roots",
                "is false and upstream.ca_files is empty, so no target could be verified; add a CA file",
            ));
        }

        let unmapped = match self.unmapped.policy.as_deref().unwrap_or("refuse") {
            "refuse" => {
                if !self.unmapped.plain_tls_hosts.is_empty() {
                    return Err(err(
                        "unmapped.plain_tls_hosts",
                        "is only used with unmapped.policy: plain_tls",
                    ));
                }
                UnmappedPolicy::Refuse
            }
            "plain_tls" => {
                if self.unmapped.plain_tls_hosts.is_empty() {
                    return Err(err(
                        "unmapped.plain_tls_hosts",
                        "must list the hosts that may be reached without a client certificate (the gateway is never an open relay)",
                    ));
                }
                UnmappedPolicy::PlainTls {
                    hosts: self
                        .unmapped
                        .plain_tls_hosts
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                }
            }
            other => {
                return Err(err(
                    "unmapped.policy",
                    format!("{other:?} is not known; use refuse or plain_tls"),
                ))
            }
        };

        let grace = self.shutdown.grace_period_secs.unwrap_or(30);
        if grace > 3600 {
            return Err(err("shutdown.grace_period_secs", "use at most 3600"));
        }

        let p12 = P12Config {
            max_iterations: match self.p12.max_iterations {
                None => crate::p12::Decoder::DEFAULT_MAX_ITERATIONS,
                Some(0) => {
                    return Err(err(
                        "p12.max_iterations",
                        "must be at least 1 (default 1000000; openssl writes 2048, Java 10000)",
                    ))
                }
                Some(n) => n,
            },
            max_concurrent_decodes: match self
                .p12
                .max_concurrent_decodes
                .unwrap_or(crate::p12::Decoder::DEFAULT_CONCURRENCY)
            {
                n @ 1..=64 => n,
                n => {
                    return Err(err(
                        "p12.max_concurrent_decodes",
                        format!("{n} is out of range; use 1 to 64 (default 2)"),
                    ))
                }
            },
        };

        let auth = match self.auth {
            Some(a) => a
                .validate_in("auth", Some(base))
                .map_err(|m| named("auth", m))?,
            None => AuthConfig::default(),
        };
        let mut admin = admin;
        admin.console.oidc = match oidc_file {
            Some(o) => Some(console_oidc(o, base)?),
            None => None,
        };
        if admin.console.enabled && auth.jwt.is_none() {
            return Err(err(
                "admin.console.enabled",
                "the console signs in with a Bearer JWT the admin API accepts: configure auth.jwt, or set admin.console.enabled: false",
            ));
        }

        let notifications = notifications(self.notifications, base)?;
        let redis = match self.redis {
            Some(r) => Some(redis_config(r, base)?),
            None => None,
        };

        Ok(Config {
            proxy,
            admin,
            ops_listen,
            store,
            refresh,
            lifecycle,
            rate_limit,
            upstream,
            unmapped,
            services,
            grace_period: Duration::from_secs(grace),
            p12,
            auth: std::sync::Arc::new(auth),
            notifications,
            redis,
        })
    }
}

/// Whether `url`'s host is loopback (`localhost`, 127.0.0.0/8, ::1).
fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(h)) => h.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// `admin.console.oidc`: URLs checked (https, or http to loopback only), the client secret read.
fn console_oidc(o: OidcFile, base: &Path) -> Result<OidcConfig, ConfigError> {
    const AT: &str = "admin.console.oidc";
    let url_of = |key: &str, v: Option<String>, example: &str| -> Result<url::Url, ConfigError> {
        let at = format!("{AT}.{key}");
        let raw = v.ok_or_else(|| err(&at, format!("is required, e.g. {example}")))?;
        let u = url::Url::parse(raw.trim()).map_err(|e| {
            err(
                &at,
                format!("is not a valid URL ({e}); write e.g. {example}"),
            )
        })?;
        match u.scheme() {
            "https" => Ok(u),
            "http" if is_loopback_url(&u) => Ok(u),
            _ => Err(err(
                &at,
                format!(
                    "must be https:// (http:// only to a loopback address); write e.g. {example}"
                ),
            )),
        }
    };
    let issuer = url_of("issuer", o.issuer, "https://login.example.com/realms/staff")?;
    let redirect_url = url_of(
        "redirect_url",
        o.redirect_url,
        "https://mtls-gateway.example.com/console/oidc/callback",
    )?;
    if redirect_url.path() != "/console/oidc/callback" {
        return Err(err(
            &format!("{AT}.redirect_url"),
            "must end in /console/oidc/callback (the console's callback; register the same URL at the provider)",
        ));
    }
    let client_id = o
        .client_id
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            err(
                &format!("{AT}.client_id"),
                "is required: the client id registered at the provider",
            )
        })?;
    let client_secret = match (&o.client_secret_file, &o.client_secret_env) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(err(
                AT,
                "both client_secret_file and client_secret_env are set; keep only one",
            ))
        }
        (file, env) => Some(
            crate::auth::load_secret(AT, None, env.as_deref(), file.as_deref(), Some(base))
                .map_err(|m| named(AT, m))?,
        ),
    };
    let scopes = o.scopes.unwrap_or_else(|| vec!["openid".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(err(
            &format!("{AT}.scopes"),
            "must include openid (e.g. [openid, profile])",
        ));
    }
    if let Some(bad) = scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        return Err(err(
            &format!("{AT}.scopes"),
            format!("{bad:?} is not a valid scope (printable ASCII, no spaces)"),
        ));
    }
    let token = match o.token.as_deref().unwrap_or("id_token") {
        "id_token" => OidcToken::IdToken,
        "access_token" => OidcToken::AccessToken,
        other => {
            return Err(err(
                &format!("{AT}.token"),
                format!("{other:?} is not id_token or access_token (default id_token)"),
            ))
        }
    };
    let ca_file = o
        .ca_file
        .map(|p| if p.is_relative() { base.join(p) } else { p });
    if let Some(p) = &ca_file {
        let pem = std::fs::read(p).map_err(|e| {
            err(
                &format!("{AT}.ca_file"),
                format!("cannot read {} ({e})", p.display()),
            )
        })?;
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            err(
                &format!("{AT}.ca_file"),
                format!("{} holds no usable PEM certificate ({e})", p.display()),
            )
        })?;
    }
    Ok(OidcConfig {
        issuer,
        client_id,
        client_secret,
        redirect_url,
        scopes,
        token,
        ca_file,
        label: o
            .label
            .unwrap_or_else(|| "Sign in with single sign-on".into()),
    })
}

/// `notifications:`: webhooks (URL, secret read now, optional CA), thresholds, retry bounds.
fn notifications(n: NotificationsFile, base: &Path) -> Result<NotificationsConfig, ConfigError> {
    const MIN_SECRET: usize = 16;
    let d = NotificationsConfig::default();
    let mut webhooks = Vec::new();
    for (i, w) in n.webhooks.into_iter().enumerate() {
        let at = format!("notifications.webhooks[{i}]");
        let raw = w.url.ok_or_else(|| {
            err(
                &format!("{at}.url"),
                "is required, e.g. https://hooks.example.com/mtls-gateway",
            )
        })?;
        // Never echo the URL itself: its path or query may be a credential.
        let url = url::Url::parse(raw.trim()).map_err(|e| {
            err(
                &format!("{at}.url"),
                format!(
                    "is not a valid URL ({e}); write e.g. https://hooks.example.com/mtls-gateway"
                ),
            )
        })?;
        let loopback = match url.host() {
            Some(url::Host::Domain(h)) => h.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => {
                return Err(err(
                    &format!("{at}.url"),
                    "has no host; write e.g. https://hooks.example.com/mtls-gateway",
                ))
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback || w.allow_insecure => {}
            "http" => {
                return Err(err(
                    &format!("{at}.url"),
                    format!(
                        "{} is plain http to a host that is not loopback (the events would cross the network unencrypted); use https://, or set {at}.allow_insecure: true to accept that",
                        redacted_url(&url)
                    ),
                ))
            }
            other => {
                return Err(err(
                    &format!("{at}.url"),
                    format!("scheme {other:?} is not supported; use https:// (or http:// to loopback)"),
                ))
            }
        }
        let secret = match (&w.secret_file, &w.secret_env) {
            (None, None) => {
                return Err(err(
                    &format!("{at}.secret_file"),
                    format!("no secret; set {at}.secret_file or {at}.secret_env (the HMAC key that signs each delivery, at least {MIN_SECRET} bytes)"),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    &at,
                    "both secret_file and secret_env are set; keep only one",
                ))
            }
            (file, env) => crate::auth::load_secret(
                &at,
                None,
                env.as_deref(),
                file.as_deref(),
                Some(base),
            )
            .map_err(|m| named(&at, m))?,
        };
        if secret.expose().len() < MIN_SECRET {
            let key = if w.secret_file.is_some() {
                format!("{at}.secret_file")
            } else {
                format!("{at}.secret_env")
            };
            return Err(err(
                &key,
                format!(
                    "the secret has {} bytes; use at least {MIN_SECRET} (e.g. `openssl rand -hex 32`)",
                    secret.expose().len()
                ),
            ));
        }
        let ca_file = match w.ca_file {
            None => None,
            Some(p) => {
                let key = format!("{at}.ca_file");
                if url.scheme() != "https" {
                    return Err(err(
                        &key,
                        format!("is set but {at}.url is plain http://; use an https:// URL or remove {key}"),
                    ));
                }
                let p = resolve(base, p);
                let bytes = std::fs::read(&p).map_err(|e| {
                    err(
                        &key,
                        format!("cannot read {} ({e}); point it at the PEM file of the CA that signed the webhook server's certificate", p.display()),
                    )
                })?;
                if boring::x509::X509::stack_from_pem(&bytes)
                    .map(|s| s.is_empty())
                    .unwrap_or(true)
                {
                    return Err(err(
                        &key,
                        format!(
                            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                            p.display()
                        ),
                    ));
                }
                Some(p)
            }
        };
        let name = match w.name {
            Some(n) if n.trim().is_empty() => {
                return Err(err(
                    &format!("{at}.name"),
                    "is empty; give a name or remove the key",
                ))
            }
            Some(n) => n,
            None => format!(
                "{}{}",
                url.host_str().unwrap_or(""),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
        };
        webhooks.push(WebhookConfig {
            name,
            url,
            secret,
            ca_file,
        });
    }

    let expiry_days = match n.expiry_days {
        None => d.expiry_days,
        Some(list) => {
            let mut days = Vec::with_capacity(list.len());
            for (i, v) in list.into_iter().enumerate() {
                match v {
                    1..=3650 => days.push(v as u32),
                    v => {
                        return Err(err(
                            &format!("notifications.expiry_days[{i}]"),
                            format!("{v} is out of range; use whole days from 1 to 3650 (default [30, 14, 7, 1])"),
                        ))
                    }
                }
            }
            days.sort_unstable_by(|a, b| b.cmp(a));
            days.dedup();
            days
        }
    };

    let timeout = match n.timeout_ms.unwrap_or(5_000) {
        v @ 1..=120_000 => Duration::from_millis(v),
        v => {
            return Err(err(
                "notifications.timeout_ms",
                format!("{v} is out of range; use 1 to 120000 milliseconds (default 5000)"),
            ))
        }
    };
    let max_attempts = match n.max_attempts.unwrap_or(8) {
        v @ 1..=100 => v,
        v => {
            return Err(err(
                "notifications.max_attempts",
                format!("{v} is out of range; use 1 to 100 (default 8; 1 means no retry)"),
            ))
        }
    };
    let retry_min = match n.retry_min_ms.unwrap_or(500) {
        v @ 1..=600_000 => Duration::from_millis(v),
        v => {
            return Err(err(
                "notifications.retry_min_ms",
                format!("{v} is out of range; use 1 to 600000 milliseconds (default 500)"),
            ))
        }
    };
    let retry_max = match n.retry_max_secs.unwrap_or(300) {
        v @ 1..=86_400 => Duration::from_secs(v),
        v => {
            return Err(err(
                "notifications.retry_max_secs",
                format!("{v} is out of range; use 1 to 86400 seconds (default 300)"),
            ))
        }
    };
    // A retry_min above retry_max is clamped: every wait is retry_max.
    Ok(NotificationsConfig {
        webhooks,
        expiry_days,
        timeout,
        max_attempts,
        retry_min: retry_min.min(retry_max),
        retry_max,
    })
}

// ---------------------------------------------------------------- redis (shared state)

/// `redis:` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    pub url: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub cluster: bool,
    pub username: Option<String>,
    /// Refused with a message naming the right keys (never inline).
    pub password: Option<serde_yaml::Value>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub key_prefix: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub command_timeout_ms: Option<u64>,
    pub retry_secs: Option<u64>,
}

/// A Redis password, read from a file or the environment at start; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(pub String);

impl std::fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Validated `redis:` section (see [`crate::shared`]).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URLs without credentials: one server, or the cluster's seeds.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub username: Option<String>,
    pub password: Option<RedisPassword>,
    /// PEM bytes of `tls_ca_file` (only with `rediss://`); `None`: the system/webpki roots.
    pub tls_ca: Option<Vec<u8>>,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// How long the client stays in fallback after a failure before trying Redis again.
    pub retry: Duration,
}

impl RedisConfig {
    /// Whether the URLs are `rediss://`.
    pub fn tls(&self) -> bool {
        self.urls.iter().any(|u| u.starts_with("rediss://"))
    }

    /// The server(s), for logs: host and port only, never credentials.
    pub fn describe(&self) -> String {
        let hosts: Vec<&str> = self
            .urls
            .iter()
            .map(|u| u.split_once("://").map_or(u.as_str(), |(_, r)| r))
            .collect();
        format!(
            "{}{}{}",
            if self.cluster { "cluster " } else { "" },
            if self.tls() { "rediss://" } else { "redis://" },
            hosts.join(",")
        )
    }
}

fn redis_config(r: RedisFile, base: &Path) -> Result<RedisConfig, ConfigError> {
    if r.password.is_some() {
        return Err(err(
            "redis.password",
            "is not accepted inline; put the password in a file named by redis.password_file or an environment variable named by redis.password_env",
        ));
    }
    let single = r.url.is_some();
    let urls = match (r.url, r.urls.is_empty()) {
        (Some(_), false) => {
            return Err(err(
                "redis.url",
                "and redis.urls are both set; use url for one server, urls (with cluster: true) for a cluster's seed nodes",
            ))
        }
        (None, true) => {
            return Err(err(
                "redis.url",
                "is required, e.g. redis://redis:6379 (or rediss:// for TLS); for a cluster set redis.urls and cluster: true; remove the redis section to keep state per replica",
            ))
        }
        (Some(u), true) => vec![u],
        (None, false) => r.urls,
    };
    if urls.len() > 1 && !r.cluster {
        return Err(err(
            "redis.urls",
            "lists several servers but redis.cluster is false; set cluster: true for a Redis Cluster, or use url for one server",
        ));
    }
    let key = if single { "redis.url" } else { "redis.urls" }.to_string();
    let mut tls = None;
    for (i, u) in urls.iter().enumerate() {
        let at = if key == "redis.url" {
            key.clone()
        } else {
            format!("{key}[{i}]")
        };
        let parsed = url::Url::parse(u).map_err(|e| {
            err(
                &at,
                format!("{u:?} is not a URL ({e}); use redis://host:6379 or rediss://host:6379"),
            )
        })?;
        let is_tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(err(
                    &at,
                    format!("scheme {other:?} is not supported; use redis:// or rediss:// (TLS)"),
                ))
            }
        };
        if *tls.get_or_insert(is_tls) != is_tls {
            return Err(err(
                &at,
                "mixes redis:// and rediss://; use one scheme for every node",
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(err(
                &at,
                "holds credentials; never write them in the URL: set redis.username and redis.password_file or redis.password_env",
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(err(&at, "has no host; use redis://host:6379"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(err(
                &at,
                "has a query or fragment; use the redis section's keys instead",
            ));
        }
        if r.cluster && !matches!(parsed.path(), "" | "/" | "/0") {
            return Err(err(
                &at,
                "names a database; a Redis Cluster only has database 0, remove the path",
            ));
        }
    }
    let tls = tls.unwrap_or(false);
    let username = match r.username {
        Some(u) if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            return Err(err(
                "redis.username",
                "must be a non-empty ACL user name without spaces",
            ))
        }
        u => u,
    };
    let password = match (r.password_file, r.password_env) {
        (Some(_), Some(_)) => {
            return Err(err(
                "redis.password_file",
                "and redis.password_env are both set; keep only one",
            ))
        }
        (Some(f), None) => {
            let f = resolve(base, f);
            let mut s = std::fs::read_to_string(&f).map_err(|e| {
                err(
                    "redis.password_file",
                    format!(
                        "cannot read {}: {e}; check the path and its permissions",
                        f.display()
                    ),
                )
            })?;
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            if s.is_empty() {
                return Err(err(
                    "redis.password_file",
                    format!("{} is empty; write the password into it", f.display()),
                ));
            }
            Some(RedisPassword(s))
        }
        (None, Some(var)) => match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Some(RedisPassword(v)),
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                return Err(err(
                    "redis.password_env",
                    format!("environment variable {var} is not set or empty; export it or use password_file"),
                ))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(err(
                    "redis.password_env",
                    format!("environment variable {var} is not valid UTF-8"),
                ))
            }
        },
        (None, None) => None,
    };
    if username.is_some() && password.is_none() {
        return Err(err(
            "redis.username",
            "is set without a password; set redis.password_file or redis.password_env",
        ));
    }
    let tls_ca = match r.tls_ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(err(
                "redis.tls_ca_file",
                "is only used with TLS; write the URL(s) as rediss://",
            ))
        }
        Some(f) => {
            let f = resolve(base, f);
            let pem = std::fs::read(&f).map_err(|e| {
                err(
                    "redis.tls_ca_file",
                    format!("cannot read {}: {e}; check the path", f.display()),
                )
            })?;
            if boring::x509::X509::stack_from_pem(&pem)
                .map(|s| s.is_empty())
                .unwrap_or(true)
            {
                return Err(err(
                    "redis.tls_ca_file",
                    format!("{} holds no PEM certificate", f.display()),
                ));
            }
            Some(pem)
        }
    };
    let key_prefix = r.key_prefix.unwrap_or_else(|| "mtls-gateway:".into());
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
    {
        return Err(err(
            "redis.key_prefix",
            "must be 1-64 characters without spaces or braces (default mtls-gateway:)",
        ));
    }
    let range = |key: &str, v: Option<u64>, default: u64, max: u64, unit: &str| match v
        .unwrap_or(default)
    {
        n @ 1.. if n <= max => Ok(n),
        n => Err(err(
            key,
            format!("{n} is out of range; use 1 to {max} {unit} (default {default})"),
        )),
    };
    let connect = range(
        "redis.connect_timeout_ms",
        r.connect_timeout_ms,
        500,
        60_000,
        "milliseconds",
    )?;
    let command = range(
        "redis.command_timeout_ms",
        r.command_timeout_ms,
        100,
        60_000,
        "milliseconds",
    )?;
    let retry = range("redis.retry_secs", r.retry_secs, 5, 3600, "seconds")?;
    Ok(RedisConfig {
        urls,
        cluster: r.cluster,
        username,
        password,
        tls_ca,
        key_prefix,
        connect_timeout: Duration::from_millis(connect),
        command_timeout: Duration::from_millis(command),
        retry: Duration::from_secs(retry),
    })
}

/// Every listener of the gateway with the config key that names it (the admin API only when
/// enabled).
fn named_listeners(
    proxy: &[SocketAddr],
    admin: &AdminConfig,
    ops: SocketAddr,
) -> Vec<(String, SocketAddr)> {
    let mut all: Vec<(String, SocketAddr)> = proxy
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("proxy.listen[{i}]"), *a))
        .collect();
    if admin.enabled {
        all.push(("admin.listen".into(), admin.listen));
    }
    all.push(("ops.listen".into(), ops));
    all
}

impl Config {
    /// Every listener with the config key that names it.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        named_listeners(&self.proxy.listen, &self.admin, self.ops_listen)
    }
}

/// Two listeners on one port would not both bind: Pingora retries for 30 s, then that service
/// stops while the process runs on without it. Refuse the config instead, naming both keys.
/// Port 0 (any free port, chosen at bind) never clashes.
fn distinct_listeners(all: &[(String, SocketAddr)]) -> Result<(), ConfigError> {
    for (i, (ka, a)) in all.iter().enumerate() {
        for (kb, b) in &all[i + 1..] {
            let overlap = a.port() != 0
                && a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified());
            if overlap {
                return Err(err(
                    kb,
                    format!("{b} overlaps {ka} ({a}); give each listener a port of its own"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, Path::new("."))
    }

    fn redis_err(yaml: &str) -> ConfigError {
        match load(yaml) {
            Ok(c) => panic!("accepted: {:?}", c.redis),
            Err(e) => e,
        }
    }

    #[test]
    fn redis_section_defaults_and_errors() {
        assert!(load("").expect("empty").redis.is_none());
        let c = load("redis:\n  url: redis://r:6379\n").expect("one server");
        let r = c.redis.expect("redis");
        assert_eq!(r.urls, ["redis://r:6379"]);
        assert!(!r.cluster && !r.tls());
        assert_eq!(r.key_prefix, "mtls-gateway:");
        assert_eq!(r.connect_timeout, Duration::from_millis(500));
        assert_eq!(r.command_timeout, Duration::from_millis(100));
        assert_eq!(r.retry, Duration::from_secs(5));
        assert_eq!(r.describe(), "redis://r:6379");

        std::env::set_var("MTLS_TEST_REDIS_PW", "pw-123");
        let c = load(
            "redis:\n  urls: [\"rediss://a:6379\", \"rediss://b:6379\"]\n  cluster: true\n  username: gw\n  password_env: MTLS_TEST_REDIS_PW\n",
        )
        .expect("cluster");
        let r = c.redis.expect("redis");
        assert!(r.cluster && r.tls());
        assert_eq!(r.password, Some(RedisPassword("pw-123".into())));
        assert!(!format!("{r:?}").contains("pw-123"), "never printed");

        let cases = [
            ("redis: {}\n", "redis.url"),
            ("redis:\n  url: http://r\n", "redis.url"),
            ("redis:\n  url: redis://:pw@r:6379\n", "redis.url"),
            (
                "redis:\n  urls: [\"redis://a\", \"redis://b\"]\n",
                "redis.urls",
            ),
            (
                "redis:\n  url: redis://a\n  urls: [\"redis://b\"]\n",
                "redis.url",
            ),
            (
                "redis:\n  urls: [\"redis://a\", \"rediss://b\"]\n  cluster: true\n",
                "redis.urls[1]",
            ),
            (
                "redis:\n  url: redis://a\n  tls_ca_file: ca.pem\n",
                "redis.tls_ca_file",
            ),
            (
                "redis:\n  url: redis://a\n  username: u\n",
                "redis.username",
            ),
            (
                "redis:\n  url: redis://a\n  password_env: MTLS_TEST_REDIS_UNSET\n",
                "redis.password_env",
            ),
            (
                "redis:\n  url: redis://a\n  command_timeout_ms: 0\n",
                "redis.command_timeout_ms",
            ),
            (
                "redis:\n  url: redis://a\n  retry_secs: 99999\n",
                "redis.retry_secs",
            ),
            (
                "redis:\n  url: redis://a\n  key_prefix: \"a b\"\n",
                "redis.key_prefix",
            ),
            (
                "redis:\n  url: redis://a\n  password: x\n",
                "redis.password",
            ),
        ];
        for (yaml, key) in cases {
            let e = redis_err(yaml);
            assert!(e.key.starts_with(key), "{yaml}: {e:?}");
        }
    }

    #[test]
    fn admin_and_p12_bounds_have_defaults_and_name_the_key_when_out_of_range() {
        let c = load("").expect("defaults");
        assert_eq!(c.admin.header_timeout, Duration::from_secs(60));
        assert_eq!(c.admin.body_timeout, Duration::from_secs(60));
        assert_eq!(c.admin.max_concurrent_bodies, 16);
        assert_eq!(c.admin.max_json_bytes, 256 * 1024);
        assert_eq!(c.p12.max_iterations, 1_000_000);
        assert_eq!(c.p12.max_concurrent_decodes, 2);

        let c = load("admin:\n  header_timeout_secs: 2\n  body_timeout_secs: 5\n  max_concurrent_bodies: 1\n  max_json_bytes: 4096\np12:\n  max_iterations: 600000\n  max_concurrent_decodes: 4\n")
            .expect("set");
        assert_eq!(c.admin.header_timeout, Duration::from_secs(2));
        assert_eq!(c.admin.body_timeout, Duration::from_secs(5));
        assert_eq!(c.admin.max_concurrent_bodies, 1);
        assert_eq!(c.admin.max_json_bytes, 4096);
        assert_eq!(c.p12.max_iterations, 600_000);
        assert_eq!(c.p12.max_concurrent_decodes, 4);

        for (yaml, key) in [
            (
                "admin:\n  header_timeout_secs: 0\n",
                "admin.header_timeout_secs",
            ),
            (
                "admin:\n  body_timeout_secs: 7200\n",
                "admin.body_timeout_secs",
            ),
            (
                "admin:\n  max_concurrent_bodies: 0\n",
                "admin.max_concurrent_bodies",
            ),
            ("admin:\n  max_json_bytes: 10\n", "admin.max_json_bytes"),
            ("p12:\n  max_iterations: 0\n", "p12.max_iterations"),
            (
                "p12:\n  max_concurrent_decodes: 0\n",
                "p12.max_concurrent_decodes",
            ),
        ] {
            let e = load(yaml).expect_err(yaml);
            assert_eq!(e.key, key, "{e}");
        }
        let e = load("p12:\n  max_iteration: 5\n").expect_err("unknown key");
        assert!(e.to_string().contains("max_iteration"), "{e}");
    }
}
