//! Vault store: certificates and mappings in a HashiCorp Vault KV engine (version 1 or 2).
//!
//! Layout inside `{mount}` (see `docs/vault.md` for `vault kv put` examples):
//! ```text
//! {prefix}/accounts/{account}/certificates/{id}   StoredCertificate fields (+ p12 base64, password)
//! {prefix}/accounts/{account}/mappings            {"mappings": [Mapping, ...]}
//! {prefix}/accounts/{account}/index               KV v1 only, written by this store:
//!                                                 {"certificates": {id: version}, "mappings": version}
//! ```
//! One secret per certificate, so a write is all or nothing.
//!
//! Versions and what a refresh costs ([`Store::inventory`]):
//! - KV v2: the entry's `current_version` (a number). Inventory = LIST accounts, LIST each
//!   account's certificates, one metadata read per entry; no data is read.
//! - KV v1 has no versions: a version is the SHA-256 of the entry's canonical JSON
//!   (`doc.rs`). Inventory = LIST accounts + per account one LIST of its certificates and one
//!   read of its index. Entries missing from the index (written by hand, or a lost index update
//!   from a concurrent writer) and accounts without a readable index are read and digested. Every
//!   `kv1_full_scan_secs` (default 15 min) the index is ignored and all entries are digested,
//!   which bounds how long an entry edited in place outside the gateway can keep a stale version.
//!   The LIST makes presence exact: an entry never vanishes from the inventory because an index
//!   update was lost.
//!
//! Reads during inventory run with bounded concurrency (`read_concurrency`). Errors follow
//! `http::to_store_error`: unreachable/timeout/5xx/sealed -> `Unavailable`, 403 -> `Denied`
//! (after one fresh login or token-file re-read and a retry), a missing mount -> `Other` naming
//! `store.vault.mount`. Token handling is in `auth.rs`.
//!
//! With several addresses (`store.vault.addresses`, a Vault HA cluster) every request fails over
//! from node to node (`http::Http::failover`). A KV v2 check-and-set write whose first attempt
//! may have reached Vault and whose retry on the next node meets a cas conflict is settled by
//! reading the version that followed (`Inner::after_unsure_cas_write`): its own data there is a
//! success, anything else a `Conflict`, a failed check `Unavailable`; never a second write.
//!
//! [`Store::pki_write`] sends a PKI request (`{mount}/sign/{role}`, `{mount}/issue/{role}`) over the
//! same client and token; its 403 names the policy needed and its 400/404 carry Vault's reasons.

mod auth;
pub mod aws;
mod config;
mod doc;
mod http;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

pub use self::config::{
    KvVersion, Secret, TokenSource, VaultAuth, VaultAuthSettings, VaultConfig, VaultSettings,
};
use self::doc::Index;
use self::http::{to_store_error, Ctx, Fail, Http, Retry, Scoped, Sent};
use super::{
    check_account, check_mapping_document, valid_account_id, Inventory, MappingDocument, Store,
    StoreError, StoreResult, StoredCertificate, Versioned,
};
use ::http::Method;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};

/// [`Store`] over Vault. Create with [`VaultStore::connect`]; share behind an `Arc`.
pub struct VaultStore {
    inner: Arc<Inner>,
    maintainer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultStore")
            .field("config", &self.inner.cfg)
            .finish()
    }
}

impl Drop for VaultStore {
    fn drop(&mut self) {
        self.maintainer.abort();
    }
}

struct Inner {
    cfg: VaultConfig,
    http: Http,
    auth: auth::Auth,
    /// KV v1: serializes this process's writes, so entry + index updates do not interleave.
    v1_write: tokio::sync::Mutex<()>,
    /// KV v1: when inventory last ignored the index.
    last_full_scan: parking_lot::Mutex<Instant>,
    /// Set once the mount's KV version was confirmed (or could not be asked).
    mount_checked: tokio::sync::OnceCell<()>,
    /// Keys already warned about (bad names, unreadable indexes): warn once, not every refresh.
    warned: parking_lot::Mutex<HashSet<String>>,
}

/// Which API path family a KV request uses.
#[derive(Clone, Copy)]
enum Family {
    /// v1: `{mount}/{rel}`; v2: `{mount}/data/{rel}`
    Data,
    /// v1: `{mount}/{rel}`; v2: `{mount}/metadata/{rel}`
    Metadata,
}

/// An entry whose version the inventory has to read.
enum Job {
    Cert(String, u64),
    Mappings(String),
}

impl VaultStore {
    /// Writes a certificate document; with `expected`, only over that version (`""`: only when
    /// absent): KV v2's check-and-set, or on KV v1 a compare under this process's write lock.
    async fn write_certificate(
        &self,
        cert: &StoredCertificate,
        expected: Option<&str>,
    ) -> StoreResult<String> {
        let account = cert.meta.account_id.as_str();
        check_account(account)?;
        let inner = &self.inner;
        let id = cert.meta.id;
        let rel = inner.cert_rel(account, id);
        let data = serde_json::to_value(cert)
            .map_err(|e| StoreError::Other(format!("cannot encode certificate {id}: {e}")))?;
        match inner.cfg.kv {
            KvVersion::V2 => {
                // KV v2's check-and-set: Vault itself refuses a write that did not follow the
                // version read, so two replicas cannot both win.
                let cas = inner.cas_for(&rel, expected).await?;
                let v = inner.kv_write(&rel, data, cas).await?;
                Ok(v.map(|n| n.to_string()).unwrap_or_default())
            }
            KvVersion::V1 => {
                // KV v1 has no server-side CAS: atomic for this process only.
                let digest = doc::certificate_digest(cert).map_err(StoreError::Other)?;
                let _w = inner.v1_write.lock().await;
                if let Some(expected) = expected {
                    let current = match inner.kv_read(&rel).await? {
                        None => String::new(),
                        Some((d, _)) => match doc::decode_certificate(d.clone(), account, id) {
                            Ok(c) => doc::certificate_digest(&c).map_err(StoreError::Other)?,
                            Err(_) => doc::corrupt_digest(&d),
                        },
                    };
                    if current != expected {
                        return Err(StoreError::Conflict(inner.key(&rel)));
                    }
                }
                inner.kv_write(&rel, data, None).await?;
                let d = digest.clone();
                inner
                    .update_index(account, move |i| {
                        i.certificates.insert(id, d);
                    })
                    .await
                    .map_err(|e| {
                        with_context(
                            e,
                            &format!(
                                "certificate {id} was written but the index of account \
                                 {account} was not updated (other replicas may see the change \
                                 late); retry the write"
                            ),
                        )
                    })?;
                Ok(digest)
            }
        }
    }

    /// Builds the client and starts the token maintenance task on the current runtime. Does not
    /// fail because Vault is down or a token file is not there yet: the first request reports
    /// that. Fails for a client that cannot be built (bad CA file) or a missing `token_env`.
    pub async fn connect(cfg: &VaultConfig) -> StoreResult<VaultStore> {
        let http = Http::new(cfg)?;
        if let VaultAuth::Token(TokenSource::Env(var)) = &cfg.auth {
            if std::env::var_os(var).is_none() {
                return Err(StoreError::Other(format!(
                    "store.vault.auth.token_env: environment variable {var} is not set; export \
                     it or use token_file"
                )));
            }
        }
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            http,
            auth: auth::Auth::new(cfg.auth.clone(), cfg.token_file_check_interval),
            v1_write: tokio::sync::Mutex::new(()),
            last_full_scan: parking_lot::Mutex::new(Instant::now()),
            mount_checked: tokio::sync::OnceCell::new(),
            warned: parking_lot::Mutex::new(HashSet::new()),
        });
        if let Err(e) = inner.auth.token(&inner.http).await {
            log::warn!("vault: no token yet ({}): {e}", inner.auth.describe());
        }
        let weak = Arc::downgrade(&inner);
        let maintainer = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let next = inner.auth.maintain(&inner.http).await;
                drop(inner);
                tokio::time::sleep_until(next.into()).await;
            }
        });
        Ok(VaultStore { inner, maintainer })
    }

    /// Checks that Vault answers, the token works and the mount exists (LIST of the accounts
    /// directory). For readiness checks and `check --connect` style tooling.
    pub async fn probe(&self) -> StoreResult<()> {
        self.inner.check_mount_version().await?;
        let rel = self.inner.rel(&["accounts"]);
        self.inner.kv_list(&rel).await.map(|_| ())
    }

    /// KV v1: rebuilds the index of every account from its entries, so refreshes of accounts
    /// seeded or edited by hand become cheap again (until the next edit by hand). Returns the
    /// number of accounts indexed; KV v2 keeps no index and returns 0. Blocks writes through this
    /// store while it runs.
    pub async fn reindex(&self) -> StoreResult<usize> {
        let inner = &self.inner;
        if inner.cfg.kv == KvVersion::V2 {
            return Ok(0);
        }
        let _w = inner.v1_write.lock().await;
        let accounts = inner.list_accounts().await?;
        for a in &accounts {
            let index = inner.build_index(a).await?;
            let data = serde_json::to_value(&index)
                .map_err(|e| StoreError::Other(format!("cannot encode index: {e}")))?;
            inner.kv_write(&inner.index_rel(a), data, None).await?;
        }
        Ok(accounts.len())
    }

    /// The validated configuration this store runs with.
    pub fn config(&self) -> &VaultConfig {
        &self.inner.cfg
    }
}

impl Inner {
    /// KV v2's `cas` for a write expected over version `expected` of `rel`: `None` writes
    /// unconditionally; `""` means "only if absent" (0, or the latest version when only deleted
    /// versions exist); a version that is not a number cannot match.
    async fn cas_for(&self, rel: &str, expected: Option<&str>) -> StoreResult<Option<u64>> {
        match expected {
            None => Ok(None),
            Some("") => match self.kv2_meta(rel).await? {
                None => Ok(Some(0)),
                Some((n, false)) => Ok(Some(n)),
                Some((_, true)) => Err(StoreError::Conflict(self.key(rel))),
            },
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| StoreError::Conflict(self.key(rel))),
        }
    }

    /// `{prefix}/a/b/...` relative to the mount.
    fn rel(&self, parts: &[&str]) -> String {
        let mut s = self.cfg.prefix.clone();
        for p in parts {
            if !s.is_empty() {
                s.push('/');
            }
            s.push_str(p);
        }
        s
    }

    fn cert_rel(&self, account: &str, id: u64) -> String {
        self.rel(&["accounts", account, "certificates", &id.to_string()])
    }

    fn mappings_rel(&self, account: &str) -> String {
        self.rel(&["accounts", account, "mappings"])
    }

    fn index_rel(&self, account: &str) -> String {
        self.rel(&["accounts", account, "index"])
    }

    /// How an entry is named in errors: `{mount}/{rel}`.
    fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.cfg.mount)
    }

    fn api_path(&self, family: Family, rel: &str) -> String {
        match (self.cfg.kv, family) {
            (KvVersion::V1, _) => format!("{}/{rel}", self.cfg.mount),
            (KvVersion::V2, Family::Data) => format!("{}/data/{rel}", self.cfg.mount),
            (KvVersion::V2, Family::Metadata) => format!("{}/metadata/{rel}", self.cfg.mount),
        }
    }

    fn warn_once(&self, key: String, msg: impl FnOnce() -> String) {
        if self.warned.lock().insert(key) {
            log::warn!("{}", msg());
        }
    }

    /// One request with the current token (failover across the addresses as `retry` allows); on
    /// a 403, one retry with a fresh token if one can be had (new login, or a token file that
    /// changed).
    async fn call(
        &self,
        retry: Retry,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Sent<'_, Bytes, Fail> {
        let tok = match self.auth.token(&self.http).await {
            Ok(t) => t,
            Err(e) => return self.no_token(e),
        };
        let first = self
            .http
            .send(retry, method.clone(), path, Some(tok.secret.expose()), body)
            .await;
        match first.result {
            Err(f) if f.is_denied() => match self.auth.after_denied(&self.http, &tok).await {
                Ok(Some(fresh)) => {
                    let second = self
                        .http
                        .send(retry, method, path, Some(fresh.secret.expose()), body)
                        .await;
                    Sent {
                        unsure_before: first.unsure_before || second.unsure_before,
                        ..second
                    }
                }
                Ok(None) => Sent {
                    result: Err(f),
                    ..first
                },
                Err(e) => Sent {
                    result: Err(Fail::Auth(e)),
                    ..first
                },
            },
            result => Sent { result, ..first },
        }
    }

    /// A request that could not start because there is no token.
    fn no_token<T>(&self, e: StoreError) -> Sent<'_, T, Fail> {
        Sent {
            result: Err(Fail::Auth(e)),
            unsure_before: false,
            address: self.http.current_address(),
        }
    }

    /// A failed PKI write (`{mount}/sign/{role}`, `{mount}/issue/{role}`) as a store error: 403
    /// names the policy the token needs, 400/404 and other refusals carry Vault's `errors` (never
    /// the request body), and what cannot be answered now (unreachable, timeout, 5xx, sealed,
    /// 429) is `Unavailable` as for KV requests.
    fn pki_fail(&self, f: Fail, path: &str, address: &str) -> StoreError {
        let (code, messages) = match &f {
            Fail::Status { code, messages }
                if (400..500).contains(code)
                    && !matches!(code, 412 | 429)
                    && !messages.iter().any(|m| {
                        let m = m.to_ascii_lowercase();
                        m.contains("token is missing") || m.contains("missing client token")
                    }) =>
            {
                (*code, messages)
            }
            _ => return self.fail(f, "write", path, address),
        };
        let tok = self.auth.peek();
        let said = {
            let joined = messages.join("; ");
            let joined = match tok.as_ref().map(|t| t.secret.expose()) {
                Some(t) if t.len() >= 8 => joined.replace(t, "<redacted>"),
                _ => joined,
            };
            if joined.is_empty() {
                String::new()
            } else {
                format!(": {joined}")
            }
        };
        // `{mount}/sign/{role}`: the mount is what precedes the last two segments (it may nest).
        let mount = path.rsplitn(3, '/').nth(2).unwrap_or(path);
        match code {
            403 => StoreError::Denied(format!(
                "vault denied write {path} ({code}{said}) using the {}: the token needs a policy \
                 with path \"{path}\" {{ capabilities = [\"update\"] }} (Vault also answers 403 \
                 for a PKI mount that does not exist, unless the token is root)",
                self.auth.describe()
            )),
            404 => StoreError::Other(format!(
                "vault at {address} has no {path} ({code}{said}): check that a PKI secrets engine \
                 is mounted at {mount} and the role exists"
            )),
            _ => StoreError::Other(format!(
                "vault at {address} refused write {path} ({code}{said})"
            )),
        }
    }

    /// `address`: the one the failed attempt went to.
    fn fail(&self, f: Fail, op: &str, path: &str, address: &str) -> StoreError {
        let tok = self.auth.peek();
        let auth = self.auth.describe();
        to_store_error(
            f,
            &Ctx {
                op,
                path,
                mount: &self.cfg.mount,
                address,
                auth: &auth,
                timeout: self.cfg.request_timeout,
            },
            tok.as_ref().map(|t| t.secret.expose()),
        )
    }

    /// One KV request through vaultrs with the current token, with failover across the
    /// addresses ([`Retry::Any`]: KV reads and writes may be repeated, see
    /// [`Inner::kv_write`]); on a 403, one retry with a fresh token if one can be had (as
    /// [`Inner::call`]). `what` names the request in the failover log line.
    async fn call_kv<'s, T, F, Fut>(&'s self, what: &str, f: F) -> Sent<'s, T, Fail>
    where
        T: std::fmt::Debug,
        F: Fn(Scoped<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Fail>>,
    {
        let tok = match self.auth.token(&self.http).await {
            Ok(t) => t,
            Err(e) => return self.no_token(e),
        };
        let first = self
            .http
            .failover(Retry::Any, Fail::attempt, what, |c, _| {
                f(Http::scoped(c, tok.secret.expose()))
            })
            .await;
        match first.result {
            Err(fl) if fl.is_denied() => match self.auth.after_denied(&self.http, &tok).await {
                Ok(Some(fresh)) => {
                    let second = self
                        .http
                        .failover(Retry::Any, Fail::attempt, what, |c, _| {
                            f(Http::scoped(c, fresh.secret.expose()))
                        })
                        .await;
                    Sent {
                        unsure_before: first.unsure_before || second.unsure_before,
                        ..second
                    }
                }
                Ok(None) => Sent {
                    result: Err(fl),
                    ..first
                },
                Err(e) => Sent {
                    result: Err(Fail::Auth(e)),
                    ..first
                },
            },
            result => Sent { result, ..first },
        }
    }

    /// Reads an entry: its data and, for KV v2, its version. `None` when absent (or, in v2,
    /// when its latest version is deleted or destroyed).
    async fn kv_read(&self, rel: &str) -> StoreResult<Option<(Value, Option<u64>)>> {
        let path = self.api_path(Family::Data, rel);
        let mount = self.cfg.mount.as_str();
        let what = format!("read {path}");
        let (answer, at) = match self.cfg.kv {
            KvVersion::V1 => {
                let s = self
                    .call_kv(&what, |c| async move {
                        let r = vaultrs::kv1::get_raw(&c, mount, rel).await?;
                        Ok((r.data, None))
                    })
                    .await;
                (s.result.map(Some), s.address)
            }
            KvVersion::V2 => {
                let s = self
                    .call_kv(&what, |c| async move {
                        let ep = ReadSecretRequest::builder()
                            .mount(mount)
                            .path(rel)
                            .build()
                            .map_err(|e| Fail::Parse(format!("cannot build the request: {e}")))?;
                        let r = vaultrs::api::exec_with_result(&c, ep).await?;
                        let m = &r.metadata;
                        let live = m.deletion_time.is_empty() && !m.destroyed;
                        Ok(live.then_some((r.data, Some(m.version))))
                    })
                    .await;
                (s.result, s.address)
            }
        };
        match answer {
            Ok(Some((Value::Null, _))) | Ok(None) => Ok(None),
            Ok(Some(found)) => Ok(Some(found)),
            // KV v2 answers a soft-deleted or destroyed latest version with a 404 too.
            Err(f) if f.is_not_found() => Ok(None),
            Err(f) => Err(self.fail(f, "read", &path, at)),
        }
    }

    /// Writes an entry; returns the new KV v2 version (v1: `None`). `cas` is KV v2's
    /// check-and-set (0 = only if absent).
    async fn kv_write(&self, rel: &str, data: Value, cas: Option<u64>) -> StoreResult<Option<u64>> {
        let path = self.api_path(Family::Data, rel);
        let what = format!("write {path}");
        let mount = self.cfg.mount.as_str();
        let data = &data;
        let answer = match self.cfg.kv {
            KvVersion::V1 => {
                let Value::Object(fields) = data else {
                    return Err(StoreError::Other(format!(
                        "cannot write {}: not a JSON object",
                        self.key(rel)
                    )));
                };
                let fields: std::collections::HashMap<&str, &Value> =
                    fields.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let fields = &fields;
                self.call_kv(&what, |c| async move {
                    vaultrs::kv1::set(&c, mount, rel, fields).await?;
                    Ok(None)
                })
                .await
            }
            KvVersion::V2 => {
                let cas = match cas.map(u32::try_from) {
                    None => None,
                    Some(Ok(c)) => Some(c),
                    Some(Err(_)) => return Err(StoreError::Conflict(self.key(rel))),
                };
                self.call_kv(&what, |c| async move {
                    let meta = match cas {
                        Some(cas) => {
                            vaultrs::kv2::set_with_options(
                                &c,
                                mount,
                                rel,
                                data,
                                SetSecretRequestOptions { cas },
                            )
                            .await?
                        }
                        None => vaultrs::kv2::set(&c, mount, rel, data).await?,
                    };
                    Ok(Some(meta.version))
                })
                .await
            }
        };
        let Sent {
            result,
            unsure_before,
            address,
        } = answer;
        let f = match result {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        match self.fail(f, "write", &path, address) {
            // The first attempt failed after it may have reached Vault (timeout, reset, 5xx
            // from a node that was losing leadership), and the attempt on the next address
            // found the entry no longer at version `cas`: either that first attempt landed, or
            // someone else wrote. Which one is told by the version that followed `cas`.
            StoreError::Conflict(_) if unsure_before => match cas {
                Some(cas) if self.cfg.kv == KvVersion::V2 => {
                    self.after_unsure_cas_write(rel, data, cas).await
                }
                _ => Err(StoreError::Conflict(self.key(rel))),
            },
            StoreError::Conflict(_) => Err(StoreError::Conflict(self.key(rel))),
            e => Err(e),
        }
    }

    /// KV v2: a check-and-set write at `cas` was sent to two addresses, the first attempt's
    /// outcome unknown and the second refused with a cas conflict. Reads version `cas + 1`: if
    /// it holds exactly `data`, the first attempt landed and the write succeeded (at that
    /// version); any other content, or no such version, is a real conflict (someone else wrote,
    /// or the node read from has not applied the write yet: the caller re-reads either way, and
    /// never writes twice on the strength of this answer). When the check itself fails, the
    /// outcome is unknown and said so (`Unavailable`): never a plain success.
    async fn after_unsure_cas_write(
        &self,
        rel: &str,
        data: &Value,
        cas: u64,
    ) -> StoreResult<Option<u64>> {
        let key = self.key(rel);
        let mount = self.cfg.mount.as_str();
        let landed = cas + 1;
        let path = format!("{}?version={landed}", self.api_path(Family::Data, rel));
        let what = format!("read {path}");
        let sent = self
            .call_kv(&what, |c| async move {
                let ep = ReadSecretRequest::builder()
                    .mount(mount)
                    .path(rel)
                    .version(Some(landed))
                    .build()
                    .map_err(|e| Fail::Parse(format!("cannot build the request: {e}")))?;
                Ok(vaultrs::api::exec_with_result(&c, ep).await?.data)
            })
            .await;
        match sent.result {
            Ok(found) if found == *data => {
                log::info!(
                    "vault: write {key}: the attempt interrupted by the failover had landed \
                     (version {landed}); not writing again"
                );
                Ok(Some(landed))
            }
            Ok(_) => Err(StoreError::Conflict(key)),
            Err(f) if f.is_not_found() => Err(StoreError::Conflict(key)),
            Err(f) => Err(StoreError::Unavailable(format!(
                "write {key} with check-and-set {cas}: Vault failed over during the write and \
                 whether it was applied could not be checked ({}); re-read the entry before \
                 writing it again",
                self.fail(f, "read", &path, sent.address)
            ))),
        }
    }

    /// Keys under a directory (`name` for entries, `name/` for sub-directories). A directory
    /// that does not exist lists as empty.
    async fn kv_list(&self, rel_dir: &str) -> StoreResult<Vec<String>> {
        let path = format!("{}/", self.api_path(Family::Metadata, rel_dir));
        let what = format!("list {path}");
        let mount = self.cfg.mount.as_str();
        let answer = match self.cfg.kv {
            KvVersion::V1 => {
                self.call_kv(&what, |c| async move {
                    Ok(vaultrs::kv1::list(&c, mount, rel_dir).await?.data.keys)
                })
                .await
            }
            KvVersion::V2 => {
                self.call_kv(&what, |c| async move {
                    Ok(vaultrs::kv2::list(&c, mount, rel_dir).await?)
                })
                .await
            }
        };
        match answer.result {
            Ok(keys) => Ok(keys),
            Err(f) if f.is_not_found() => Ok(Vec::new()),
            Err(f) => Err(self.fail(f, "list", &path, answer.address)),
        }
    }

    /// Deletes an entry (KV v2: all versions and the metadata).
    async fn kv_delete(&self, rel: &str) -> StoreResult<()> {
        let path = self.api_path(Family::Metadata, rel);
        let what = format!("delete {path}");
        let mount = self.cfg.mount.as_str();
        let answer = match self.cfg.kv {
            KvVersion::V1 => {
                self.call_kv(&what, |c| async move {
                    Ok(vaultrs::kv1::delete(&c, mount, rel).await?)
                })
                .await
            }
            KvVersion::V2 => {
                self.call_kv(&what, |c| async move {
                    Ok(vaultrs::kv2::delete_metadata(&c, mount, rel).await?)
                })
                .await
            }
        };
        match answer.result {
            Ok(()) => Ok(()),
            Err(f) if f.is_not_found() => Ok(()),
            Err(f) => Err(self.fail(f, "delete", &path, answer.address)),
        }
    }

    /// KV v2: `(current_version, live)` from the metadata, `None` when there is none.
    async fn kv2_meta(&self, rel: &str) -> StoreResult<Option<(u64, bool)>> {
        let path = self.api_path(Family::Metadata, rel);
        let mount = self.cfg.mount.as_str();
        let what = format!("read {path}");
        let sent = self
            .call_kv(&what, |c| async move {
                Ok(vaultrs::kv2::read_metadata(&c, mount, rel).await?)
            })
            .await;
        let meta = match sent.result {
            Ok(m) => m,
            Err(f) if f.is_not_found() => return Ok(None),
            Err(f) => return Err(self.fail(f, "read metadata of", &path, sent.address)),
        };
        let current = meta.current_version;
        if current == 0 {
            return Ok(None);
        }
        let live = meta
            .versions
            .get(&current.to_string())
            .is_some_and(|v| v.deletion_time.is_empty() && !v.destroyed);
        Ok(Some((current, live)))
    }

    /// Compares `kv_version` with what Vault says the mount is (`sys/internal/ui/mounts`, which
    /// every token may read). Servers without that endpoint are not checked.
    async fn check_mount_version(&self) -> StoreResult<()> {
        self.mount_checked
            .get_or_try_init(|| async {
                let path = format!("sys/internal/ui/mounts/{}", self.cfg.mount);
                let sent = self.call(Retry::Any, Method::GET, &path, None).await;
                let at = sent.address;
                let body = match sent.result {
                    Ok(b) => b,
                    Err(f @ Fail::Transport { .. }) => return Err(self.fail(f, "read", &path, at)),
                    Err(Fail::Status {
                        code: 503,
                        messages,
                    }) => {
                        return Err(self.fail(
                            Fail::Status {
                                code: 503,
                                messages,
                            },
                            "read",
                            &path,
                            at,
                        ))
                    }
                    Err(f) => {
                        log::debug!(
                            "vault: cannot ask the version of mount {}: {f:?}",
                            self.cfg.mount
                        );
                        return Ok(());
                    }
                };
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let ty = v["data"]["type"].as_str().unwrap_or("");
                if ty != "kv" && ty != "generic" {
                    return Ok(());
                }
                let actual = match v["data"]["options"]["version"].as_str() {
                    Some("2") => 2,
                    _ => 1,
                };
                if actual != self.cfg.kv.number() {
                    return Err(StoreError::Other(format!(
                        "store.vault.kv_version is {} but mount {} at {} is KV version {actual}; \
                         set store.vault.kv_version: {actual}",
                        self.cfg.kv.number(),
                        self.cfg.mount,
                        at
                    )));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    async fn list_accounts(&self) -> StoreResult<Vec<String>> {
        let dir = self.rel(&["accounts"]);
        let mut out = Vec::new();
        for k in self.kv_list(&dir).await? {
            let Some(name) = k.strip_suffix('/') else {
                continue; // a secret directly under accounts/: not part of the layout
            };
            if valid_account_id(name) {
                out.push(name.to_owned());
            } else {
                self.warn_once(format!("account:{name}"), || {
                    format!(
                        "vault: ignoring {}/{name}/: not a valid account id",
                        self.key(&dir)
                    )
                });
            }
        }
        Ok(out)
    }

    async fn list_certificate_ids(&self, account: &str) -> StoreResult<Vec<u64>> {
        let dir = self.rel(&["accounts", account, "certificates"]);
        let mut out = Vec::new();
        for k in self.kv_list(&dir).await? {
            match k.parse::<u64>() {
                Ok(id) => out.push(id),
                Err(_) => self.warn_once(format!("cert:{account}/{k}"), || {
                    format!(
                        "vault: ignoring {}/{k}: certificate keys are numeric ids",
                        self.key(&dir)
                    )
                }),
            }
        }
        Ok(out)
    }

    /// KV v1: the account's index; `None` when missing or unreadable (then callers digest the
    /// entries themselves).
    async fn read_index(&self, account: &str) -> StoreResult<Option<Index>> {
        let rel = self.index_rel(account);
        let data = match self.kv_read(&rel).await {
            Ok(Some((d, _))) => d,
            Ok(None) => return Ok(None),
            Err(StoreError::Denied(m)) => {
                self.warn_once(format!("index-denied:{account}"), || {
                    format!(
                        "vault: cannot read {} ({m}); reading entries instead",
                        self.key(&rel)
                    )
                });
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match serde_json::from_value::<Index>(data) {
            Ok(i) => Ok(Some(i)),
            Err(e) => {
                self.warn_once(format!("index-corrupt:{account}"), || {
                    format!(
                        "vault: {} is not a valid index ({e}); reading entries instead. The next \
                         write through the gateway rewrites it",
                        self.key(&rel)
                    )
                });
                Ok(None)
            }
        }
    }

    /// The version of one entry, by reading it (KV v1: digest; v2: its version).
    async fn version_by_reading(&self, job: Job) -> StoreResult<Option<(Job, String)>> {
        let rel = match &job {
            Job::Cert(a, id) => self.cert_rel(a, *id),
            Job::Mappings(a) => self.mappings_rel(a),
        };
        let Some((data, v2)) = self.kv_read(&rel).await? else {
            return Ok(None);
        };
        if let Some(n) = v2 {
            return Ok(Some((job, n.to_string())));
        }
        let raw = data.clone();
        let digest = match &job {
            Job::Cert(a, id) => {
                doc::decode_certificate(data, a, *id).and_then(|c| doc::certificate_digest(&c))
            }
            Job::Mappings(a) => {
                doc::decode_mappings(data, a).and_then(|d| doc::mappings_digest(&d))
            }
        };
        // An undecodable entry still gets a version, so the refresher asks for it and reports
        // the error for that entry.
        Ok(Some((
            job,
            digest.unwrap_or_else(|_| doc::corrupt_digest(&raw)),
        )))
    }

    /// KV v2: the live version of one entry from its metadata.
    async fn version_from_metadata(&self, job: Job) -> StoreResult<Option<(Job, String)>> {
        let rel = match &job {
            Job::Cert(a, id) => self.cert_rel(a, *id),
            Job::Mappings(a) => self.mappings_rel(a),
        };
        Ok(match self.kv2_meta(&rel).await? {
            Some((n, true)) => Some((job, n.to_string())),
            _ => None,
        })
    }

    async fn run_jobs(&self, jobs: Vec<Job>, inv: &mut Inventory) -> StoreResult<()> {
        let n = self.cfg.read_concurrency;
        let results: Vec<Option<(Job, String)>> = futures::stream::iter(jobs)
            .map(|j| async move {
                match self.cfg.kv {
                    KvVersion::V1 => self.version_by_reading(j).await,
                    KvVersion::V2 => self.version_from_metadata(j).await,
                }
            })
            .buffer_unordered(n)
            .try_collect()
            .await?;
        for (job, v) in results.into_iter().flatten() {
            match job {
                Job::Cert(a, id) => inv.certificates.push((a, id, v)),
                Job::Mappings(a) => inv.mappings.push((a, v)),
            }
        }
        Ok(())
    }

    async fn inventory_v2(&self) -> StoreResult<Inventory> {
        let n = self.cfg.read_concurrency;
        let accounts = self.list_accounts().await?;
        let listed: Vec<(String, Vec<u64>)> = futures::stream::iter(accounts)
            .map(|a| async move {
                let ids = self.list_certificate_ids(&a).await?;
                Ok::<_, StoreError>((a, ids))
            })
            .buffer_unordered(n)
            .try_collect()
            .await?;
        let mut jobs = Vec::new();
        for (a, ids) in listed {
            jobs.extend(ids.into_iter().map(|id| Job::Cert(a.clone(), id)));
            jobs.push(Job::Mappings(a));
        }
        let mut inv = Inventory::default();
        self.run_jobs(jobs, &mut inv).await?;
        Ok(inv)
    }

    async fn inventory_v1(&self) -> StoreResult<Inventory> {
        let n = self.cfg.read_concurrency;
        let full = self.last_full_scan.lock().elapsed() >= self.cfg.kv1_full_scan_interval;
        let accounts = self.list_accounts().await?;
        let listed: Vec<(String, Vec<u64>, Option<Index>)> = futures::stream::iter(accounts)
            .map(|a| async move {
                let (ids, index) = tokio::join!(self.list_certificate_ids(&a), self.read_index(&a));
                Ok::<_, StoreError>((a, ids?, index?))
            })
            .buffer_unordered(n)
            .try_collect()
            .await?;
        let mut inv = Inventory::default();
        let mut jobs = Vec::new();
        let mut indexes = Vec::new();
        for (a, ids, index) in listed {
            let trusted = if full { None } else { index.as_ref() };
            for id in ids {
                match trusted.and_then(|i| i.certificates.get(&id)) {
                    Some(v) => inv.certificates.push((a.clone(), id, v.clone())),
                    None => jobs.push(Job::Cert(a.clone(), id)),
                }
            }
            match trusted.and_then(|i| i.mappings.as_ref()) {
                Some(v) if v.is_empty() => {}
                Some(v) => inv.mappings.push((a.clone(), v.clone())),
                None => jobs.push(Job::Mappings(a.clone())),
            }
            if full {
                if let Some(i) = index {
                    indexes.push((a, i));
                }
            }
        }
        self.run_jobs(jobs, &mut inv).await?;
        if full {
            *self.last_full_scan.lock() = Instant::now();
            self.report_stale_indexes(&indexes, &inv);
        }
        Ok(inv)
    }

    /// After a full KV v1 scan: say which indexes disagree with the entries (edited by hand?).
    fn report_stale_indexes(&self, indexes: &[(String, Index)], inv: &Inventory) {
        for (a, index) in indexes {
            let mut stale = 0usize;
            for (_, id, v) in inv.certificates.iter().filter(|(acc, _, _)| acc == a) {
                if index.certificates.get(id) != Some(v) {
                    stale += 1;
                }
            }
            let mv = inv
                .mappings
                .iter()
                .find(|(acc, _)| acc == a)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if index.mappings.as_ref().is_some_and(|m| *m != mv) {
                stale += 1;
            }
            if stale > 0 {
                log::warn!(
                    "vault: the index of account {a} disagrees with {stale} entr{} (edited \
                     outside the gateway?); until the gateway writes to this account again, \
                     changes made by hand there are noticed only by the periodic full scan. \
                     Delete {} to make every refresh read the account's entries",
                    if stale == 1 { "y" } else { "ies" },
                    self.key(&self.index_rel(a))
                );
            }
        }
    }

    /// KV v1: all entries of an account, digested, as a fresh index.
    async fn build_index(&self, account: &str) -> StoreResult<Index> {
        let ids = self.list_certificate_ids(account).await?;
        let mut jobs: Vec<Job> = ids
            .into_iter()
            .map(|id| Job::Cert(account.to_owned(), id))
            .collect();
        jobs.push(Job::Mappings(account.to_owned()));
        let mut inv = Inventory::default();
        self.run_jobs(jobs, &mut inv).await?;
        Ok(Index {
            certificates: inv
                .certificates
                .into_iter()
                .map(|(_, id, v)| (id, v))
                .collect(),
            mappings: Some(
                inv.mappings
                    .into_iter()
                    .map(|(_, v)| v)
                    .next()
                    .unwrap_or_default(),
            ),
        })
    }

    /// KV v1: read (or rebuild) the index, apply `change`, write it. Caller holds `v1_write`.
    async fn update_index(
        &self,
        account: &str,
        change: impl FnOnce(&mut Index),
    ) -> StoreResult<()> {
        let mut index = match self.read_index(account).await? {
            Some(i) => i,
            None => self.build_index(account).await?,
        };
        change(&mut index);
        let data = serde_json::to_value(&index)
            .map_err(|e| StoreError::Other(format!("cannot encode index: {e}")))?;
        self.kv_write(&self.index_rel(account), data, None).await?;
        Ok(())
    }
}

/// A path for [`Store::pki_write`]: segments of `A-Z a-z 0-9 _ . -`, none empty, `.` or `..`,
/// no leading or trailing slash, at most 512 characters. It becomes part of the request URL.
fn check_pki_path(path: &str) -> StoreResult<()> {
    let ok = !path.is_empty()
        && path.len() <= 512
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        let shown: String = path.chars().take(80).collect();
        Err(StoreError::Other(format!(
            "invalid Vault PKI path {shown:?}: use segments of A-Z, a-z, 0-9, '_', '.' and '-' \
             separated by '/', without a leading slash or '..'"
        )))
    }
}

/// Prefixes the message of a store error, keeping its kind.
fn with_context(e: StoreError, prefix: &str) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{prefix}: {m}")),
        StoreError::Denied(m) => StoreError::Denied(format!("{prefix}: {m}")),
        StoreError::Other(m) => StoreError::Other(format!("{prefix}: {m}")),
        StoreError::Corrupt { key, reason } => StoreError::Corrupt {
            key,
            reason: format!("{prefix}: {reason}"),
        },
        other => other,
    }
}

#[async_trait]
impl Store for VaultStore {
    fn describe(&self) -> String {
        self.inner.cfg.describe()
    }

    async fn inventory(&self) -> StoreResult<Inventory> {
        self.inner.check_mount_version().await?;
        let mut inv = match self.inner.cfg.kv {
            KvVersion::V1 => self.inner.inventory_v1().await?,
            KvVersion::V2 => self.inner.inventory_v2().await?,
        };
        inv.certificates.sort();
        inv.mappings.sort();
        Ok(inv)
    }

    async fn get_certificate(
        &self,
        account: &str,
        id: u64,
    ) -> StoreResult<Option<Versioned<StoredCertificate>>> {
        check_account(account)?;
        let inner = &self.inner;
        let rel = inner.cert_rel(account, id);
        let Some((data, v2)) = inner.kv_read(&rel).await? else {
            return Ok(None);
        };
        let value =
            doc::decode_certificate(data, account, id).map_err(|reason| StoreError::Corrupt {
                key: inner.key(&rel),
                reason,
            })?;
        let version = match v2 {
            Some(n) => n.to_string(),
            None => doc::certificate_digest(&value).map_err(StoreError::Other)?,
        };
        Ok(Some(Versioned { value, version }))
    }

    async fn put_certificate(&self, cert: &StoredCertificate) -> StoreResult<String> {
        self.write_certificate(cert, None).await
    }

    async fn put_certificate_if(
        &self,
        cert: &StoredCertificate,
        expected: &str,
    ) -> StoreResult<String> {
        self.write_certificate(cert, Some(expected)).await
    }

    /// `POST /v1/{path}` with the store's token and namespace over its own client (CA file,
    /// timeout), one retry with a fresh token after a 403 as for KV requests. Returns `data`
    /// (`Value::Null` when the answer has none); Vault's `warnings` (a TTL capped by the role,
    /// ...) are logged.
    async fn pki_write(&self, path: &str, body: Value) -> StoreResult<Value> {
        check_pki_path(path)?;
        let inner = &self.inner;
        let bytes = inner
            .call(Retry::NotSentOnly, Method::POST, path, Some(&body))
            .await;
        let at = bytes.address;
        let bytes = bytes.result.map_err(|f| inner.pki_fail(f, path, at))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // 204: nothing to return (not what sign/issue do, but not an error of the call).
            return Ok(Value::Null);
        }
        let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Other(format!(
                "vault at {} answered write {path} with a body that is not JSON: {e}",
                at
            ))
        })?;
        if let Some(ws) = v.get("warnings").and_then(Value::as_array) {
            for w in ws.iter().filter_map(Value::as_str) {
                log::warn!("vault: write {path}: {}", http::shorten(w));
            }
        }
        Ok(v.get_mut("data").map(Value::take).unwrap_or(Value::Null))
    }

    async fn delete_certificate(&self, account: &str, id: u64) -> StoreResult<bool> {
        check_account(account)?;
        let inner = &self.inner;
        let rel = inner.cert_rel(account, id);
        match inner.cfg.kv {
            KvVersion::V2 => {
                let existed = inner.kv2_meta(&rel).await?.is_some_and(|(_, live)| live);
                inner.kv_delete(&rel).await?;
                Ok(existed)
            }
            KvVersion::V1 => {
                let _w = inner.v1_write.lock().await;
                let existed = inner.kv_read(&rel).await?.is_some();
                if existed {
                    inner.kv_delete(&rel).await?;
                    // The LIST in inventory already hides the deleted entry; the index update
                    // only keeps the index tidy.
                    if let Err(e) = inner
                        .update_index(account, |i| {
                            i.certificates.remove(&id);
                        })
                        .await
                    {
                        log::warn!("vault: certificate {id} deleted, index not updated: {e}");
                    }
                }
                Ok(existed)
            }
        }
    }

    async fn get_mappings(&self, account: &str) -> StoreResult<Versioned<MappingDocument>> {
        check_account(account)?;
        let inner = &self.inner;
        let rel = inner.mappings_rel(account);
        let Some((data, v2)) = inner.kv_read(&rel).await? else {
            return Ok(Versioned {
                value: MappingDocument::default(),
                version: String::new(),
            });
        };
        let value = doc::decode_mappings(data, account).map_err(|reason| StoreError::Corrupt {
            key: inner.key(&rel),
            reason,
        })?;
        let version = match v2 {
            Some(n) => n.to_string(),
            None => doc::mappings_digest(&value).map_err(StoreError::Other)?,
        };
        Ok(Versioned { value, version })
    }

    async fn put_mappings(
        &self,
        account: &str,
        doc: &MappingDocument,
        expected_version: Option<&str>,
    ) -> StoreResult<String> {
        check_mapping_document(account, doc)?;
        let inner = &self.inner;
        let rel = inner.mappings_rel(account);
        let data = serde_json::to_value(doc)
            .map_err(|e| StoreError::Other(format!("cannot encode mappings: {e}")))?;
        match inner.cfg.kv {
            KvVersion::V2 => {
                let cas = inner.cas_for(&rel, expected_version).await?;
                let v = inner.kv_write(&rel, data, cas).await?;
                Ok(v.map(|n| n.to_string()).unwrap_or_default())
            }
            KvVersion::V1 => {
                let digest = doc::mappings_digest(doc).map_err(StoreError::Other)?;
                // Held across compare and write: the compare-and-set is atomic for this process.
                // KV v1 has no server-side CAS; two replicas writing at once can still race.
                let _w = inner.v1_write.lock().await;
                if let Some(expected) = expected_version {
                    let current = match inner.kv_read(&rel).await? {
                        None => String::new(),
                        Some((d, _)) => match doc::decode_mappings(d.clone(), account) {
                            Ok(m) => doc::mappings_digest(&m).map_err(StoreError::Other)?,
                            Err(_) => doc::corrupt_digest(&d),
                        },
                    };
                    if current != expected {
                        return Err(StoreError::Conflict(inner.key(&rel)));
                    }
                }
                inner.kv_write(&rel, data, None).await?;
                let d = digest.clone();
                inner
                    .update_index(account, move |i| i.mappings = Some(d))
                    .await
                    .map_err(|e| {
                        with_context(
                            e,
                            &format!(
                                "mappings of account {account} were written but its index was \
                                 not updated (other replicas may see the change late); retry \
                                 the write"
                            ),
                        )
                    })?;
                Ok(digest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_pki_path;

    #[test]
    fn pki_paths_are_plain_segments() {
        for ok in [
            "pki/sign/web",
            "pki_int/issue/client-2",
            "a.b/sign/r_1",
            "x",
        ] {
            assert!(check_pki_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/pki/sign/web",
            "pki/sign/web/",
            "pki//sign/web",
            "pki/../sys/seal",
            "pki/./sign/web",
            "pki/sign/web?x=1",
            "pki/sign/we b",
            "pki/sign/wéb",
            "pki\\sign",
        ] {
            assert!(check_pki_path(bad).is_err(), "{bad:?}");
        }
    }
}
