//! The Vault token: where it comes from, when it is renewed, and what happens on a 403.
//!
//! - `token` / `token_env`: fixed for the life of the process; renewed if renewable.
//! - `token_file`: re-read whenever the file changes (`FileStamp`: inode, size,
//!   mtime or ctime; checked at most once per
//!   `token_file_check_interval` on the request path), and on a 403.
//! - `approle` / `kubernetes` / `aws`: login through vaultrs (`aws`: a SigV4-signed
//!   `sts:GetCallerIdentity`, see `aws.rs`); renewed at 2/3 of the lease, and a new login
//!   when renewal is refused, a renewal grants less than the token's full TTL (its max TTL is
//!   near), or a request gets a 403.
//!
//! Renewal happens in a background task started by `VaultStore::connect` and, as a safety net,
//! on the request path when a renewal is overdue (so a stalled task cannot let the token expire).
//! All slow work (file reads, logins, renewals) is single-flight behind one async mutex; the fast
//! path is a read lock and an `Instant` comparison.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use super::config::{header_safe, Secret, TokenSource, VaultAuth};
use super::http::{attempt_of_client_error, error_chain, shorten, Fail, Http, Retry};
use crate::file_stamp::FileStamp;
use crate::store::StoreError;

/// A forced re-login after a 403 happens at most this often; a policy that really denies a path
/// must not turn every request into a login.
const RELOGIN_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// When a renewal cannot reach Vault, try again this soon (bounded by the remaining TTL).
const RENEW_RETRY: Duration = Duration::from_secs(10);
/// The background task wakes at least this often.
pub(crate) const MAINTAIN_MAX_SLEEP: Duration = Duration::from_secs(60);

/// A token and what we know about its lease. `Debug` never shows the secret.
#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) secret: Secret,
    pub(crate) generation: u64,
    /// When to renew (or log in again); `None` for tokens that do not expire.
    renew_at: Option<Instant>,
    expires_at: Option<Instant>,
    renewable: bool,
    /// Token file auth: the stamp of the file this token was read from.
    file_stamp: Option<FileStamp>,
    /// The TTL the token had when it was obtained (login, file, lookup). A renewal that grants
    /// less has reached the max TTL.
    full_ttl: Duration,
}

struct Slow {
    generation: u64,
    /// The last login forced by a 403 (rate limit for [`RELOGIN_MIN_INTERVAL`]).
    last_forced_login: Option<Instant>,
    warned_unrenewable: bool,
}

pub(crate) struct Auth {
    method: VaultAuth,
    current: parking_lot::RwLock<Option<Arc<Token>>>,
    slow: tokio::sync::Mutex<Slow>,
    last_file_check: parking_lot::Mutex<Option<Instant>>,
    file_check_interval: Duration,
}

/// TTL facts from a login, lookup-self or renew-self answer.
struct Lease {
    ttl: Duration,
    renewable: bool,
}

fn schedule(lease: &Lease, now: Instant) -> (Option<Instant>, Option<Instant>) {
    if lease.ttl.is_zero() {
        (None, None)
    } else {
        (Some(now + lease.ttl * 2 / 3), Some(now + lease.ttl))
    }
}

impl Auth {
    pub(crate) fn new(method: VaultAuth, file_check_interval: Duration) -> Auth {
        Auth {
            method,
            current: parking_lot::RwLock::new(None),
            slow: tokio::sync::Mutex::new(Slow {
                generation: 0,
                last_forced_login: None,
                warned_unrenewable: false,
            }),
            last_file_check: parking_lot::Mutex::new(None),
            file_check_interval,
        }
    }

    pub(crate) fn describe(&self) -> String {
        self.method.describe()
    }

    /// The current token, if any, without any refresh.
    pub(crate) fn peek(&self) -> Option<Arc<Token>> {
        self.current.read().clone()
    }

    fn is_login(&self) -> bool {
        matches!(
            self.method,
            VaultAuth::AppRole { .. } | VaultAuth::Kubernetes { .. } | VaultAuth::Aws { .. }
        )
    }

    fn token_file(&self) -> Option<&std::path::Path> {
        match &self.method {
            VaultAuth::Token(TokenSource::File(p)) => Some(p),
            _ => None,
        }
    }

    /// Token file auth: true when the file's stamp differs from the one `t` was read at. The
    /// `stat` runs at most once per `file_check_interval`.
    fn file_changed(&self, t: &Token) -> bool {
        let Some(path) = self.token_file() else {
            return false;
        };
        {
            let mut last = self.last_file_check.lock();
            let now = Instant::now();
            if last.is_some_and(|l| now.duration_since(l) < self.file_check_interval) {
                return false;
            }
            *last = Some(now);
        }
        // A vanished file keeps the current token: sinks replace files by rename.
        FileStamp::of(path).is_some_and(|m| Some(m) != t.file_stamp)
    }

    /// The token to use now: cached, or (re)obtained/renewed when due.
    pub(crate) async fn token(&self, http: &Http) -> Result<Arc<Token>, StoreError> {
        let cur = self.current.read().clone();
        if let Some(t) = cur {
            let renew_due = t.renew_at.is_some_and(|at| Instant::now() >= at);
            if !renew_due && !self.file_changed(&t) {
                return Ok(t);
            }
        }
        self.refresh(http).await
    }

    /// Slow path: obtain a first token, re-read a changed token file, or renew a due lease.
    async fn refresh(&self, http: &Http) -> Result<Arc<Token>, StoreError> {
        let mut slow = self.slow.lock().await;
        let cur = self.current.read().clone();
        let Some(t) = cur else {
            return self.obtain(http, &mut slow).await;
        };
        if let Some(path) = self.token_file() {
            let m = FileStamp::of(path);
            if m.is_some() && m != t.file_stamp {
                log::info!(
                    "vault: token file {} changed; re-reading it",
                    path.display()
                );
                return self.obtain(http, &mut slow).await;
            }
        }
        if t.renew_at.is_some_and(|at| Instant::now() >= at) {
            return self.renew(http, &mut slow, t).await;
        }
        Ok(t)
    }

    /// After a 403 with `used`: a different token to retry with, or `None` when no fresher
    /// credential can be had (then the 403 stands).
    pub(crate) async fn after_denied(
        &self,
        http: &Http,
        used: &Token,
    ) -> Result<Option<Arc<Token>>, StoreError> {
        let mut slow = self.slow.lock().await;
        let cur = self.current.read().clone();
        if let Some(c) = cur {
            if c.generation != used.generation {
                // Someone else already re-read or logged in while we waited.
                return Ok(Some(c));
            }
        }
        match &self.method {
            VaultAuth::Token(TokenSource::Literal(_) | TokenSource::Env(_)) => Ok(None),
            VaultAuth::Token(TokenSource::File(path)) => {
                let fresh = read_token_file(path).await?;
                if fresh.0 == used.secret {
                    return Ok(None);
                }
                log::info!(
                    "vault: got 403; token file {} holds a different token, retrying with it",
                    path.display()
                );
                self.obtain(http, &mut slow).await.map(Some)
            }
            VaultAuth::AppRole { .. } | VaultAuth::Kubernetes { .. } | VaultAuth::Aws { .. } => {
                if slow
                    .last_forced_login
                    .is_some_and(|l| l.elapsed() < RELOGIN_MIN_INTERVAL)
                {
                    return Ok(None);
                }
                slow.last_forced_login = Some(Instant::now());
                log::warn!(
                    "vault: got 403 with the current token (revoked or expired?); logging in \
                     again ({})",
                    self.method.describe()
                );
                self.obtain(http, &mut slow).await.map(Some)
            }
        }
    }

    /// Background maintenance: renews when due. Returns when to run again.
    pub(crate) async fn maintain(&self, http: &Http) -> Instant {
        let now = Instant::now();
        let cur = self.current.read().clone();
        if let Some(t) = cur {
            if t.renew_at.is_some_and(|at| now >= at) {
                if let Err(e) = self.refresh(http).await {
                    log::warn!("vault: token maintenance failed: {e}");
                }
            }
        }
        let next = self
            .current
            .read()
            .as_ref()
            .and_then(|t| t.renew_at)
            .unwrap_or(now + MAINTAIN_MAX_SLEEP);
        next.clamp(now + Duration::from_millis(100), now + MAINTAIN_MAX_SLEEP)
    }

    /// Makes a token current. `full_ttl` is `None` for a fresh token (its lease is the full TTL)
    /// and the fresh token's full TTL for a renewal.
    fn publish(
        &self,
        slow: &mut Slow,
        secret: Secret,
        lease: Lease,
        stamp: Option<FileStamp>,
        full_ttl: Option<Duration>,
    ) -> Arc<Token> {
        slow.generation += 1;
        let (renew_at, expires_at) = schedule(&lease, Instant::now());
        let t = Arc::new(Token {
            secret,
            generation: slow.generation,
            renew_at,
            expires_at,
            renewable: lease.renewable,
            file_stamp: stamp,
            full_ttl: full_ttl.unwrap_or(lease.ttl),
        });
        *self.current.write() = Some(t.clone());
        t
    }

    /// Gets a token from the configured source (file/env/literal, or a login).
    async fn obtain(&self, http: &Http, slow: &mut Slow) -> Result<Arc<Token>, StoreError> {
        match &self.method {
            VaultAuth::Token(src) => {
                let (secret, stamp) = match src {
                    TokenSource::Literal(s) => (s.clone(), None),
                    TokenSource::Env(var) => (read_token_env(var)?, None),
                    TokenSource::File(p) => read_token_file(p).await?,
                };
                let lease = lookup_self(http, &secret).await;
                slow.warned_unrenewable = false;
                Ok(self.publish(slow, secret, lease, stamp, None))
            }
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                let role_id =
                    read_secret_file(role_id_file, "store.vault.auth.role_id_file").await?;
                let secret_id =
                    read_secret_file(secret_id_file, "store.vault.auth.secret_id_file").await?;
                let info = http
                    .failover(Retry::Any, attempt_of_client_error, "login", |c, _| {
                        vaultrs::auth::approle::login(
                            c,
                            mount,
                            role_id.expose(),
                            secret_id.expose(),
                        )
                    })
                    .await
                    .result
                    .map_err(|e| {
                        login_error(
                            e,
                            &self.method.describe(),
                            &format!(
                            "check store.vault.auth.role_id_file ({}) and secret_id_file ({}), \
                             and that the secret id has not expired",
                            role_id_file.display(),
                            secret_id_file.display()
                        ),
                        )
                    })?;
                self.after_login(slow, info)
            }
            VaultAuth::Kubernetes {
                role,
                token_file,
                mount,
            } => {
                let jwt = read_secret_file(token_file, "store.vault.auth.token_file").await?;
                let info = http
                    .failover(Retry::Any, attempt_of_client_error, "login", |c, _| {
                        vaultrs::auth::kubernetes::login(c, mount, role, jwt.expose())
                    })
                    .await
                    .result
                    .map_err(|e| {
                        login_error(
                            e,
                            &self.method.describe(),
                            &format!(
                                "check that role {role} exists at auth/{mount} and is bound to \
                                 this service account ({})",
                                token_file.display()
                            ),
                        )
                    })?;
                self.after_login(slow, info)
            }
            VaultAuth::Aws {
                role,
                mount,
                server_id,
                region,
                sts_endpoint,
            } => {
                let what = self.method.describe();
                // A loader per login: the environment and the profile files are read again, so
                // rotated credentials are what the next login signs with (logins are rare: at
                // 2/3 of the Vault token's lease at most).
                let loader = super::aws::Loader::new(region)
                    .map_err(|e| StoreError::Other(format!("vault {what}: {e}")))?;
                let creds = loader
                    .load()
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("vault {what}: {e}")))?;
                let signed = super::aws::sign_get_caller_identity(
                    &creds,
                    region,
                    sts_endpoint,
                    server_id.as_deref(),
                )
                .map_err(|e| StoreError::Other(format!("vault {what}: {e}")))?;
                // vaultrs' iam_login takes the four fields already encoded, so it fits as is.
                let (url, headers, body) =
                    (signed.url_b64(), signed.headers_b64(), signed.body_b64());
                let info = http
                    .failover(Retry::Any, attempt_of_client_error, "login", |c, _| {
                        vaultrs::auth::aws::iam_login(
                            c,
                            mount,
                            &signed.method,
                            &url,
                            &headers,
                            &body,
                            Some(role),
                        )
                    })
                    .await
                    .result
                    .map_err(|e| {
                    login_error(
                        e,
                        &what,
                        &format!(
                            "check that role {role} exists at auth/{mount}/role/{role} and is \
                             bound to the IAM principal of access key {} (bound_iam_principal_arn), \
                             that store.vault.auth.iam_server_id_header_value matches Vault's \
                             auth/{mount}/config/client, and that store.vault.auth.sts_endpoint \
                             ({sts_endpoint}) and region match its sts_endpoint/sts_region",
                            creds.access_key_id
                        ),
                    )
                })?;
                self.after_login(slow, info)
            }
        }
    }

    fn after_login(
        &self,
        slow: &mut Slow,
        info: vaultrs::api::AuthInfo,
    ) -> Result<Arc<Token>, StoreError> {
        if !header_safe(&info.client_token) {
            return Err(StoreError::Other(format!(
                "{}: vault returned a token that cannot be sent in a header",
                self.method.describe()
            )));
        }
        let lease = Lease {
            ttl: Duration::from_secs(info.lease_duration),
            renewable: info.renewable,
        };
        log::info!(
            "vault: {} succeeded (token ttl {}s, {})",
            self.method.describe(),
            info.lease_duration,
            if info.renewable {
                "renewable"
            } else {
                "not renewable"
            }
        );
        Ok(self.publish(slow, Secret::new(info.client_token), lease, None, None))
    }

    /// Renews `t` (renew-self); logs in again / re-reads the file when renewal is not possible.
    async fn renew(
        &self,
        http: &Http,
        slow: &mut Slow,
        t: Arc<Token>,
    ) -> Result<Arc<Token>, StoreError> {
        if t.renewable {
            match renew_self(http, &t.secret).await {
                Ok(lease) => {
                    let remaining_before = t
                        .expires_at
                        .map(|e| e.saturating_duration_since(Instant::now()))
                        .unwrap_or_default();
                    // A lease that stopped growing, or grew less than the token's full TTL, is
                    // capped by its max TTL: log in again now, while the token still works. (Only
                    // comparing with the remaining time misses the cap when the server rounds the
                    // capped TTL up, and the token then expires between two renewals.)
                    let capped = !lease.ttl.is_zero()
                        && (lease.ttl <= remaining_before || lease.ttl < t.full_ttl);
                    if !(capped && self.is_login()) {
                        log::debug!("vault: token renewed (ttl {}s)", lease.ttl.as_secs());
                        let stamp = t.file_stamp;
                        return Ok(self.publish(
                            slow,
                            t.secret.clone(),
                            lease,
                            stamp,
                            Some(t.full_ttl),
                        ));
                    }
                }
                Err(Fail::Transport { .. })
                | Err(Fail::Status {
                    code: 500..=599, ..
                }) => {
                    // Vault away: keep the token and try again soon, before it expires.
                    let retry = t
                        .expires_at
                        .map(|e| e.saturating_duration_since(Instant::now()) / 3)
                        .unwrap_or(RENEW_RETRY)
                        .clamp(Duration::from_secs(1), RENEW_RETRY);
                    let t2 = Arc::new(Token {
                        secret: t.secret.clone(),
                        generation: t.generation,
                        renew_at: Some(Instant::now() + retry),
                        expires_at: t.expires_at,
                        renewable: t.renewable,
                        file_stamp: t.file_stamp,
                        full_ttl: t.full_ttl,
                    });
                    *self.current.write() = Some(t2.clone());
                    log::warn!(
                        "vault: cannot renew the token now (vault unreachable); retrying in {}s",
                        retry.as_secs()
                    );
                    return Ok(t2);
                }
                Err(f) => {
                    log::warn!("vault: token renewal refused: {f:?}");
                }
            }
        }
        match &self.method {
            VaultAuth::AppRole { .. } | VaultAuth::Kubernetes { .. } | VaultAuth::Aws { .. } => {
                self.obtain(http, slow).await
            }
            VaultAuth::Token(TokenSource::File(_)) => self.obtain(http, slow).await,
            VaultAuth::Token(_) => {
                if !slow.warned_unrenewable {
                    slow.warned_unrenewable = true;
                    log::warn!(
                        "vault: the {} is not renewable and expires in {}s; give the gateway a \
                         renewable token, a token_file kept fresh by Vault Agent, or approle",
                        self.method.describe(),
                        t.expires_at
                            .map(|e| e.saturating_duration_since(Instant::now()).as_secs())
                            .unwrap_or(0)
                    );
                }
                let t2 = Arc::new(Token {
                    secret: t.secret.clone(),
                    generation: t.generation,
                    renew_at: None,
                    expires_at: t.expires_at,
                    renewable: false,
                    file_stamp: t.file_stamp,
                    full_ttl: t.full_ttl,
                });
                *self.current.write() = Some(t2.clone());
                Ok(t2)
            }
        }
    }
}

fn read_token_env(var: &str) -> Result<Secret, StoreError> {
    let v = std::env::var(var).map_err(|_| {
        StoreError::Other(format!(
            "store.vault.auth.token_env: environment variable {var} is not set; export it or use \
             token_file"
        ))
    })?;
    let v = v.trim();
    if !header_safe(v) {
        return Err(StoreError::Denied(format!(
            "store.vault.auth.token_env: ${var} is empty or holds characters not allowed in a token"
        )));
    }
    Ok(Secret::new(v))
}

async fn read_token_file(
    path: &std::path::Path,
) -> Result<(Secret, Option<FileStamp>), StoreError> {
    let stamp = FileStamp::of(path);
    let s = read_secret_file(path, "store.vault.auth.token_file").await?;
    Ok((s, stamp))
}

/// Reads a credential file (trimmed). Missing → Unavailable (a sink may not have written it
/// yet); other I/O errors → Io; empty or unprintable → Denied.
async fn read_secret_file(path: &std::path::Path, key: &str) -> Result<Secret, StoreError> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Unavailable(format!(
                "{key}: {} does not exist (yet); is the Vault Agent sink / secret mount in place?",
                path.display()
            )))
        }
        Err(e) => {
            return Err(StoreError::Io {
                path: path.display().to_string(),
                source: e,
            })
        }
    };
    let t = text.trim();
    if !header_safe(t) {
        return Err(StoreError::Denied(format!(
            "{key}: {} is empty or holds characters not allowed in a credential",
            path.display()
        )));
    }
    Ok(Secret::new(t))
}

/// lookup-self, best effort: a server without it (or a policy denying it) means "no renewal".
async fn lookup_self(http: &Http, token: &Secret) -> Lease {
    let none = Lease {
        ttl: Duration::ZERO,
        renewable: false,
    };
    match http
        .send(
            Retry::Any,
            Method::GET,
            "auth/token/lookup-self",
            Some(token.expose()),
            None,
        )
        .await
        .result
    {
        Ok(body) => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let data = &v["data"];
            Lease {
                ttl: Duration::from_secs(data["ttl"].as_u64().unwrap_or(0)),
                renewable: data["renewable"].as_bool().unwrap_or(false),
            }
        }
        Err(f) => {
            log::debug!("vault: token lookup-self failed ({f:?}); not scheduling renewal");
            none
        }
    }
}

async fn renew_self(http: &Http, token: &Secret) -> Result<Lease, Fail> {
    let body = http
        .send(
            Retry::Any,
            Method::POST,
            "auth/token/renew-self",
            Some(token.expose()),
            Some(&serde_json::json!({})),
        )
        .await
        .result?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| Fail::Parse(e.to_string()))?;
    let auth = &v["auth"];
    let ttl = auth["lease_duration"]
        .as_u64()
        .ok_or_else(|| Fail::Parse("renew-self answer has no auth.lease_duration".into()))?;
    Ok(Lease {
        ttl: Duration::from_secs(ttl),
        renewable: auth["renewable"].as_bool().unwrap_or(false),
    })
}

fn login_error(e: vaultrs::error::ClientError, what: &str, hint: &str) -> StoreError {
    use vaultrs::error::ClientError as C;
    match e {
        C::APIError { code, errors } => {
            let said = if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", shorten(&errors.join("; ")))
            };
            match code {
                400 | 401 | 403 => {
                    StoreError::Denied(format!("vault {what} refused ({code}{said}): {hint}"))
                }
                404 => StoreError::Other(format!(
                    "vault {what} failed (404{said}): the auth method is not enabled at that \
                     mount; check store.vault.auth.mount"
                )),
                503 if said.to_ascii_lowercase().contains("sealed") => {
                    StoreError::Unavailable("vault is sealed".to_owned())
                }
                500..=599 | 429 | 412 => {
                    StoreError::Unavailable(format!("vault {what} failed ({code}{said})"))
                }
                _ => StoreError::Other(format!("vault {what} failed ({code}{said})")),
            }
        }
        other => StoreError::Unavailable(format!("vault {what} failed: {}", error_chain(&other))),
    }
}
