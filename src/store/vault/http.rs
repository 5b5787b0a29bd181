//! HTTP to Vault, and how its answers become [`StoreError`]s.
//!
//! `vaultrs` builds the HTTP client (address, TLS roots from `ca_file`, timeout, namespace),
//! performs the auth logins, and runs the KV requests (its `kv1`/`kv2` modules) through
//! [`Scoped`], a view of the shared client that carries the token of one request: vaultrs'
//! `VaultClient` holds one token, but requests run concurrently while the token is renewed or
//! replaced. Its errors become [`Fail`]s here ([`Fail::from`]), keeping the HTTP status and the
//! text of bodies that are not Vault's `{"errors": [..]}` (a proxy's HTML page, a soft-deleted KV
//! v2 version's 404).
//!
//! Hand-written, because vaultrs 0.8 has no call for them: `sys/internal/ui/mounts/{mount}` (the
//! KV-version check), and `lookup-self`/`renew-self` read leniently (vaultrs' typed token
//! responses require every field of Vault's answer; a token whose lookup fails only loses renewal,
//! it must not fail the store).
//!
//! HA: one vaultrs client per configured address (`store.vault.addresses`), and
//! [`Http::failover`] sends each request to the current one and, after a failure worth it
//! ([`Attempt`]) and allowed by the request's [`Retry`], to the next, once per address within the
//! request timeout. The current address is the last one that answered. docs/vault.md ("HA
//! cluster") has the behaviour and what OpenBao's standbys answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{Client, VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::config::VaultConfig;
use crate::store::StoreError;

/// A request that did not produce a usable answer.
#[derive(Debug)]
pub(crate) enum Fail {
    /// No HTTP answer: refused, reset, DNS, TLS, or timeout. `connect`: the connection was
    /// never established (refused, DNS, TLS handshake), so the request certainly did not reach
    /// the server.
    Transport {
        timeout: bool,
        connect: bool,
        detail: String,
    },
    /// Vault answered with a non-2xx status. `messages` are from `errors`/`error` in the body.
    Status { code: u16, messages: Vec<String> },
    /// A 2xx answer whose body is not what the API documents.
    Parse(String),
    /// Could not get a token (file missing, login refused, ...): already a store error.
    Auth(StoreError),
}

impl From<ClientError> for Fail {
    /// A vaultrs error as a [`Fail`]: Vault's error answers keep their status and messages; other
    /// non-2xx answers keep their status and what their body says; no answer is `Transport`.
    fn from(e: ClientError) -> Fail {
        use rustify::errors::ClientError as R;
        match e {
            ClientError::APIError { code, errors } => Fail::Status {
                code,
                messages: errors.iter().map(|m| shorten(m)).collect(),
            },
            ClientError::RestClientError { source } => match source {
                R::ServerResponseError { code, content } => Fail::Status {
                    code,
                    messages: error_messages(content.as_deref().unwrap_or("").as_bytes()),
                },
                e @ (R::RequestError { .. } | R::ResponseError { .. }) => {
                    let detail = error_chain(&e);
                    Fail::Transport {
                        timeout: detail.contains("timed out"),
                        connect: rustify_connect_error(&e),
                        detail,
                    }
                }
                e => Fail::Parse(error_chain(&e)),
            },
            e => Fail::Parse(error_chain(&e)),
        }
    }
}

/// A short reason for the failover log line (the full story is in the store error).
impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Transport { timeout: true, .. } => f.write_str("no answer in time"),
            // The innermost cause: "Connection refused (os error 111)", "connection closed...".
            Fail::Transport { detail, .. } => {
                f.write_str(detail.rsplit(": ").next().unwrap_or(detail))
            }
            Fail::Status { code, messages } if messages.is_empty() => write!(f, "{code}"),
            Fail::Status { code, messages } => write!(f, "{code}: {}", messages.join("; ")),
            Fail::Parse(r) => f.write_str(r),
            Fail::Auth(e) => write!(f, "{e}"),
        }
    }
}

impl Fail {
    pub(crate) fn is_not_found(&self) -> bool {
        // A 404 with error messages is a routing error (missing mount), not a missing secret.
        matches!(self, Fail::Status { code: 404, messages } if messages.is_empty())
    }
    pub(crate) fn is_denied(&self) -> bool {
        matches!(self, Fail::Status { code: 403, .. })
    }

    /// What this failure says about trying the next address.
    pub(crate) fn attempt(&self) -> Attempt {
        match self {
            Fail::Transport { connect: true, .. } => Attempt::NotSent,
            Fail::Transport { .. } => Attempt::Unsure,
            Fail::Status { code, .. } => attempt_of_status(*code),
            Fail::Parse(_) | Fail::Auth(_) => Attempt::Final,
        }
    }
}

/// True when a rustify request error is a failed connect (refused, DNS, TCP connect timeout):
/// the request certainly did not reach the server. rustify's reqwest is not ours (another
/// major version), so the error chain is read instead of downcasting to its error type.
fn rustify_connect_error(e: &rustify::errors::ClientError) -> bool {
    match e {
        rustify::errors::ClientError::RequestError { source, .. } => source.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
                || {
                    let t = c.to_string();
                    t.contains("tcp connect error") || t.contains("dns error")
                }
        }),
        _ => false,
    }
}

/// 5xx (unavailable, sealed, a standby without a leader), 429 and 412 (a standby that has not
/// caught up, rate limits) and an unfollowed redirect (307/308: a standby pointing at the active
/// node) are worth the next address; every other answer stands.
fn attempt_of_status(code: u16) -> Attempt {
    match code {
        500..=599 | 429 | 412 | 307 | 308 => Attempt::Unsure,
        _ => Attempt::Final,
    }
}

/// [`Fail::attempt`] for an error of a vaultrs call (the auth-method logins).
pub(crate) fn attempt_of_client_error(e: &ClientError) -> Attempt {
    use rustify::errors::ClientError as R;
    match e {
        ClientError::APIError { code, .. } => attempt_of_status(*code),
        ClientError::RestClientError { source } => match source {
            R::ServerResponseError { code, .. } => attempt_of_status(*code),
            e @ R::RequestError { .. } if rustify_connect_error(e) => Attempt::NotSent,
            R::RequestError { .. } | R::ResponseError { .. } => Attempt::Unsure,
            _ => Attempt::Final,
        },
        _ => Attempt::Final,
    }
}

/// How a failed attempt bears on sending the request to the next address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// An answer that stands (2xx, most 4xx, an unparsable body): no other address is asked.
    Final,
    /// The request certainly did not reach the server (connection refused, DNS, TLS handshake).
    NotSent,
    /// The server may have acted on it: timeout, reset, 5xx, 429/412, a redirect not followed.
    Unsure,
}

/// Which failed attempts a request may be sent again after, to the next address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and writes whose repetition is harmless or resolved by the caller (KV writes:
    /// plain ones are idempotent in content, check-and-set ones are checked by
    /// `Inner::kv_write`): after [`Attempt::NotSent`] and [`Attempt::Unsure`].
    Any,
    /// Writes that must not run twice (a PKI `issue`/`sign` creates a certificate each time):
    /// only after [`Attempt::NotSent`].
    NotSentOnly,
}

/// The result of a request sent with failover.
pub(crate) struct Sent<'a, T, E> {
    pub(crate) result: Result<T, E>,
    /// An earlier attempt of this request failed in a way that may have reached a server
    /// ([`Attempt::Unsure`]) before the attempt whose result this is.
    pub(crate) unsure_before: bool,
    /// The address of the attempt whose result this is (for error messages).
    pub(crate) address: &'a str,
}

/// At most one `warn` line per address and this interval for switches away from it.
const SWITCH_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// One configured Vault address and its client.
struct Node {
    base: String,
    client: VaultClient,
    /// When a switch away from this node was last logged at `warn`: further switches away from
    /// it within [`SWITCH_LOG_INTERVAL`] go to `debug` (a leader election or a long outage must
    /// not log every retried request).
    switch_logged: parking_lot::Mutex<Option<std::time::Instant>>,
}

pub(crate) struct Http {
    nodes: Vec<Node>,
    /// Index into `nodes` of the address requests go to first: the last one that answered.
    current: AtomicUsize,
    namespace: Option<String>,
    /// No further address is tried once a request has taken this long (the request timeout).
    deadline: Duration,
}

impl Http {
    pub(crate) fn new(cfg: &VaultConfig) -> Result<Http, StoreError> {
        let nodes = cfg
            .all_addresses()
            .iter()
            .map(|a| {
                Ok(Node {
                    base: a.trim_end_matches('/').to_owned(),
                    client: client_for(cfg, a)?,
                    switch_logged: parking_lot::Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Http {
            nodes,
            current: AtomicUsize::new(0),
            namespace: cfg.namespace.clone(),
            deadline: cfg.request_timeout,
        })
    }

    /// The address requests go to first now.
    pub(crate) fn current_address(&self) -> &str {
        &self.nodes[self.current.load(Ordering::Relaxed) % self.nodes.len()].base
    }

    /// Runs `f` against the current address and, after a failure that `classify` says is worth
    /// it and `retry` allows, against the next ones in order: at most once per address, and no
    /// new attempt once `request_timeout` has passed since the first. Every failure worth
    /// another address moves the current address on (one log line when a node goes away, and
    /// `mtls_gateway_vault_failovers_total`), so the next request starts where this one
    /// succeeded. With one address this is one plain attempt.
    pub(crate) async fn failover<'s, T, E, F, Fut>(
        &'s self,
        retry: Retry,
        classify: impl Fn(&E) -> Attempt,
        what: &str,
        mut f: F,
    ) -> Sent<'s, T, E>
    where
        E: std::fmt::Display,
        F: FnMut(&'s VaultClient, &'s str) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let n = self.nodes.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let began = std::time::Instant::now();
        let mut unsure_before = false;
        let mut k = 0;
        loop {
            let i = (start + k) % n;
            let node = &self.nodes[i];
            let result = f(&node.client, &node.base).await;
            let class = match &result {
                Ok(_) => {
                    if k > 0 {
                        self.current.store(i, Ordering::Relaxed);
                    }
                    Attempt::Final
                }
                Err(e) => classify(e),
            };
            if class == Attempt::Final || n == 1 {
                return Sent {
                    result,
                    unsure_before,
                    address: &node.base,
                };
            }
            let next = (i + 1) % n;
            if self
                .current
                .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                crate::metrics::VAULT_FAILOVERS.inc();
                let reason = match &result {
                    Err(e) => shorten(&e.to_string()),
                    Ok(_) => String::new(),
                };
                let log_now = {
                    let mut last = node.switch_logged.lock();
                    let now = std::time::Instant::now();
                    let due = last.is_none_or(|l| now.duration_since(l) >= SWITCH_LOG_INTERVAL);
                    if due {
                        *last = Some(now);
                    }
                    due
                };
                if log_now {
                    log::warn!(
                        "vault: {} did not serve {what} ({reason}); switching to {}",
                        node.base,
                        self.nodes[next].base
                    );
                } else {
                    log::debug!(
                        "vault: {} did not serve {what} ({reason}); switching to {}",
                        node.base,
                        self.nodes[next].base
                    );
                }
            }
            k += 1;
            let allowed = retry == Retry::Any || class == Attempt::NotSent;
            if k >= n || !allowed || began.elapsed() >= self.deadline {
                return Sent {
                    result,
                    unsure_before,
                    address: &node.base,
                };
            }
            unsure_before |= class == Attempt::Unsure;
        }
    }

    /// A vaultrs client view of `client` with `token` for one request (the shared clients have
    /// none).
    pub(crate) fn scoped<'a>(client: &'a VaultClient, token: &str) -> Scoped<'a> {
        let mut middle = client.middle.clone();
        middle.token = token.to_owned();
        Scoped {
            base: client,
            middle,
        }
    }

    /// One request to `/v1/{path}` (with failover as `retry` allows). A 2xx answer is `Ok`
    /// with its body.
    pub(crate) async fn send(
        &self,
        retry: Retry,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Sent<'_, Bytes, Fail> {
        let what = format!("{method} {path}");
        self.failover(retry, Fail::attempt, &what, |client, base| {
            self.send_to(client, base, method.clone(), path, token, body)
        })
        .await
    }

    async fn send_to(
        &self,
        client: &VaultClient,
        base: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Bytes, Fail> {
        let url = format!("{base}/v1/{path}");
        let mut req = client
            .http
            .http
            .request(method, url.as_str())
            .header("X-Vault-Request", "true");
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns.as_str());
        }
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b)
                .map_err(|e| Fail::Parse(format!("cannot encode request body: {e}")))?;
            req = req.header("Content-Type", "application/json").body(bytes);
        }
        let resp = req.send().await.map_err(|e| Fail::Transport {
            timeout: e.is_timeout(),
            connect: e.is_connect(),
            detail: error_chain(&e.without_url()),
        })?;
        let code = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| Fail::Transport {
            timeout: e.is_timeout(),
            connect: false,
            detail: error_chain(&e.without_url()),
        })?;
        if (200..300).contains(&code) {
            Ok(bytes)
        } else {
            Err(Fail::Status {
                code,
                messages: error_messages(&bytes),
            })
        }
    }
}

/// The vaultrs client for one address. Every field is set explicitly: vaultrs otherwise fills
/// defaults from VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, VAULT_SKIP_VERIFY..., and the config file
/// must be the only source of truth.
fn client_for(cfg: &VaultConfig, address: &str) -> Result<VaultClient, StoreError> {
    let mut b = VaultClientSettingsBuilder::default();
    // `address` panics on an invalid URL; VaultSettings::validate has parsed it already, and
    // we parse again so a hand-built VaultConfig cannot panic here.
    url::Url::parse(address)
        .map_err(|e| StoreError::Other(format!("vault address {address:?} is not a URL: {e}")))?;
    b.address(address)
        .ca_certs(
            cfg.ca_file
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        )
        .identity(None)
        .timeout(Some(cfg.request_timeout))
        .token("")
        .verify(true)
        .wrapping(false)
        .namespace(cfg.namespace.clone());
    let settings = b
        .build()
        .map_err(|e| StoreError::Other(format!("vault client settings: {e}")))?;
    VaultClient::new(settings).map_err(|e| {
        StoreError::Other(format!(
            "cannot build the vault client: {}{}",
            error_chain(&e),
            cfg.ca_file
                .as_ref()
                .map(|p| format!(" (check store.vault.ca_file {})", p.display()))
                .unwrap_or_default()
        ))
    })
}

/// The shared vaultrs client (connection pool, settings, namespace) with the token of one request.
pub(crate) struct Scoped<'a> {
    base: &'a VaultClient,
    middle: EndpointMiddleware,
}

#[async_trait::async_trait]
impl Client for Scoped<'_> {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.base.http
    }
    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }
    fn settings(&self) -> &VaultClientSettings {
        &self.base.settings
    }
    fn set_token(&mut self, token: &str) {
        self.middle.token = token.to_owned();
    }
}

/// `a: b: c` from an error and its sources, without repeats.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if parts.last().is_none_or(|l| !l.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Error messages from a Vault error body: `{"errors": [..]}` (Vault, OpenBao) or `{"error": ".."}`
/// (some proxies and other Vault-API servers). A non-JSON body (a proxy's HTML page) gives one shortened line.
pub(crate) fn error_messages(body: &[u8]) -> Vec<String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Vec::new();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let mut out = Vec::new();
            if let Some(errs) = v.get("errors").and_then(Value::as_array) {
                out.extend(errs.iter().filter_map(Value::as_str).map(shorten));
            }
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                out.push(shorten(e));
            }
            out
        }
        Err(_) => vec![format!(
            "non-JSON body: {}",
            shorten(&String::from_utf8_lossy(body))
        )],
    }
}

/// At most 200 characters on one line.
pub(crate) fn shorten(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    if one_line.chars().count() > 200 {
        let cut: String = one_line.chars().take(200).collect();
        format!("{cut}...")
    } else {
        one_line.to_owned()
    }
}

/// What a failed request was trying to do, for error messages.
pub(crate) struct Ctx<'a> {
    /// `read`, `write`, `list`, `delete`, `read metadata of`...
    pub op: &'a str,
    /// The API path after `/v1/`.
    pub path: &'a str,
    pub mount: &'a str,
    pub address: &'a str,
    pub auth: &'a str,
    pub timeout: Duration,
}

/// Maps a failure to the store's error type. Messages never contain the token: Vault does not
/// echo it, and `redact` removes it anyway should a server ever do so.
pub(crate) fn to_store_error(f: Fail, ctx: &Ctx<'_>, redact: Option<&str>) -> StoreError {
    let clean = |s: String| match redact {
        Some(t) if t.len() >= 8 => s.replace(t, "<redacted>"),
        _ => s,
    };
    let Ctx {
        op,
        path,
        mount,
        address,
        auth,
        timeout,
    } = ctx;
    match f {
        Fail::Auth(e) => e,
        Fail::Transport { timeout: true, .. } => StoreError::Unavailable(format!(
            "vault at {address} did not answer {op} {path} within {} ms",
            timeout.as_millis()
        )),
        Fail::Transport { detail, .. } => StoreError::Unavailable(clean(format!(
            "cannot reach vault at {address} ({op} {path}): {detail}"
        ))),
        Fail::Parse(reason) => StoreError::Other(clean(format!(
            "vault at {address} answered {op} {path} with an unexpected body: {reason}"
        ))),
        Fail::Status { code, messages } => {
            let msg = clean(messages.join("; "));
            let said = if msg.is_empty() {
                String::new()
            } else {
                format!(": {msg}")
            };
            let lower = msg.to_ascii_lowercase();
            match code {
                503 if lower.contains("sealed") => {
                    StoreError::Unavailable("vault is sealed".to_owned())
                }
                403 => StoreError::Denied(format!(
                    "vault denied {op} {path} (403{said}) using the {auth}: the token is invalid, \
                     expired or lacks a policy for this path; check store.vault.auth, the \
                     token's policies, and store.vault.mount (Vault answers 403, not 404, for a \
                     missing mount unless the token is root)"
                )),
                404 => StoreError::Other(format!(
                    "mount {mount} not found at {address} ({op} {path}: 404{said}): check \
                     store.vault.mount (and store.vault.namespace)"
                )),
                400 if lower.contains("check-and-set") => StoreError::Conflict(path.to_string()),
                400 if lower.contains("token is missing")
                    || lower.contains("missing client token") =>
                {
                    StoreError::Denied(format!(
                        "vault refused {op} {path} without a token (400{said}); check \
                         store.vault.auth"
                    ))
                }
                429 | 412 => StoreError::Unavailable(format!(
                    "vault at {address} asked to retry {op} {path} ({code}{said})"
                )),
                500..=599 => StoreError::Unavailable(format!(
                    "vault at {address} failed {op} {path} ({code}{said})"
                )),
                _ => StoreError::Other(format!(
                    "vault at {address} rejected {op} {path} ({code}{said})"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            op: "read",
            path: "secret/x",
            mount: "secret",
            address: "http://127.0.0.1:1",
            auth: "token from $T",
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn both_error_body_formats_are_understood() {
        assert_eq!(error_messages(br#"{"errors":["a","b"]}"#), vec!["a", "b"]);
        assert_eq!(
            error_messages(br#"{"error":"the server is sealed."}"#),
            vec!["the server is sealed."]
        );
        assert!(error_messages(b"").is_empty());
        assert!(error_messages(br#"{"errors":[]}"#).is_empty());
        assert_eq!(
            error_messages(b"<html>bad gateway</html>"),
            vec!["non-JSON body: <html>bad gateway</html>"]
        );
    }

    #[test]
    fn statuses_map_to_store_errors() {
        let f = |code, m: &[&str]| Fail::Status {
            code,
            messages: m.iter().map(|s| s.to_string()).collect(),
        };
        let e = to_store_error(f(503, &["Vault is sealed"]), &ctx(), None);
        assert!(
            matches!(&e, StoreError::Unavailable(m) if m == "vault is sealed"),
            "{e}"
        );
        let e = to_store_error(f(403, &["permission denied"]), &ctx(), None);
        assert!(
            matches!(&e, StoreError::Denied(m) if m.contains("permission denied")),
            "{e}"
        );
        let e = to_store_error(f(404, &["no handler for route \"nope/x\""]), &ctx(), None);
        assert!(e.to_string().contains("mount secret not found"), "{e}");
        let e = to_store_error(
            f(
                400,
                &["check-and-set parameter did not match the current version"],
            ),
            &ctx(),
            None,
        );
        assert!(matches!(e, StoreError::Conflict(_)));
        let e = to_store_error(f(502, &[]), &ctx(), None);
        assert!(matches!(e, StoreError::Unavailable(_)));
        let e = to_store_error(
            Fail::Transport {
                timeout: true,
                connect: false,
                detail: String::new(),
            },
            &ctx(),
            None,
        );
        assert!(e.to_string().contains("within 500 ms"), "{e}");
    }

    #[test]
    fn a_token_echoed_by_a_server_is_redacted() {
        let f = Fail::Status {
            code: 500,
            messages: vec!["bad token hvs.0123456789abcdef".into()],
        };
        let e = to_store_error(f, &ctx(), Some("hvs.0123456789abcdef"));
        assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
    }
}
