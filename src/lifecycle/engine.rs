//! The lifecycle engine: renews PKI-sourced certificates before they expire, proves a new
//! version with a handshake before it serves, and sends expiry and failure notifications.
//!
//! Every replica runs it; the store arbitrates. Each decision that must happen once (take the
//! renewal of an entry, send a threshold's notification) is a compare-and-set write of the
//! certificate's own document ([`Store::put_certificate_if`]): on Vault KV v2 the server refuses
//! the second writer, so two replicas never both sign a renewal or both send a threshold.
//!
//! Renewal of one entry:
//! 1. due: `not_before + renew_at x lifetime` (± a jitter fixed by the serial, so replicas agree),
//!    not in a failure back-off, no live lease of another replica;
//! 2. lease: the entry's document is written with `renewal.leaseOwner` = this replica and
//!    `leaseUntil` (compare-and-set on the version just read; the loser stops here);
//! 3. new version: a fresh key and a CSR signed by `{mount}/sign/{role}` (or `issue`), checked
//!    and packed as PKCS#12 ([`keys::complete`]);
//! 4. cut-over: an mTLS call with the new version to every mapped target whose mapping asks for
//!    it (default on); one refusal and the old version keeps serving;
//! 5. the new version is written (compare-and-set again, only while the lease is still ours),
//!    this replica's snapshot refreshed at once. A failure records the error and a back-off
//!    (`retry_min` doubling to `retry_max`) and releases the lease.

use std::sync::Arc;
use std::time::Duration;

use pingora::server::ShutdownWatch;

use super::config::LifecycleConfig;
use super::keys::{self, Completed};
use super::notify::{Event, Notifier};
use super::pki;
use crate::refresh::Refresher;
use crate::snapshot::{CertEntry, LoadedCert};
use crate::store::{
    CertificateSecret, CutoverRefusal, Lifecycle, Mapping, StoreError, StoredCertificate,
    SubjectSpec,
};
use crate::upstream::call::{self as upstream_call, CallSpec};
use crate::upstream::{Resolver, TlsClient};

/// What one renewal attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (not due, backing off, or the entry changed meanwhile).
    NotDue,
    /// Another replica holds the lease, or won the compare-and-set.
    Busy,
    Renewed {
        serial: String,
    },
    Failed {
        error: String,
    },
    /// A target refused the new version; the old one keeps serving.
    Refused {
        reason: String,
    },
}

/// A target refused a new version (mapping ids and the first reason).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Serial (hex) of the refused version.
    pub serial: String,
    pub mapping_ids: Vec<u64>,
    pub reason: String,
}

pub struct Engine {
    refresher: Arc<Refresher>,
    tls: Arc<TlsClient>,
    resolver: Arc<Resolver>,
    notifier: Arc<Notifier>,
    cfg: LifecycleConfig,
    /// Deadline of one cut-over call (the admin's `validate_timeout`).
    call_timeout: Duration,
}

pub fn unix_now() -> i64 {
    crate::admin::unix_now()
}

/// When a certificate renews: `not_before + share x lifetime`, moved by up to `jitter x
/// lifetime` either way by a value fixed by the serial (every replica computes the same time).
pub fn renew_at(not_before: i64, not_after: i64, share: f64, jitter: f64, serial: &str) -> i64 {
    let life = (not_after - not_before).max(1) as f64;
    let h = serial.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    // -1.0 ..= 1.0
    let spread = (h % 2001) as f64 / 1000.0 - 1.0;
    let at = not_before as f64 + life * (share + jitter * spread);
    (at as i64).clamp(not_before, not_after.saturating_sub(1).max(not_before))
}

/// The subject of an entry's next version: the stored one, else CN = the entry's name.
pub fn subject_of(doc: &StoredCertificate) -> SubjectSpec {
    doc.lifecycle
        .as_ref()
        .and_then(|l| l.subject.clone())
        .unwrap_or_else(|| SubjectSpec {
            common_name: doc.meta.name.clone(),
            ..SubjectSpec::default()
        })
}

/// Puts a completed version into service in the document (the caller writes it).
pub fn install(doc: &mut StoredCertificate, c: &Completed, now: i64) {
    doc.secret = CertificateSecret {
        p12: c.p12.clone(),
        password: c.password.clone(),
    };
    doc.meta.not_after = Some(c.not_after);
    doc.meta.updated_at = now;
    let lc = doc.lifecycle.get_or_insert_with(Lifecycle::default);
    lc.generation += 1;
    lc.pending = None;
    lc.notified.clear();
    lc.cutover_refused = None;
    lc.warnings = c.warnings.clone();
    lc.renewal.failures = 0;
    lc.renewal.last_error = None;
    lc.renewal.next_attempt_at = 0;
    lc.renewal.lease_owner = None;
    lc.renewal.lease_until = 0;
    lc.renewal.last_renewed_at = now;
}

pub use super::notify::rfc3339;

impl Engine {
    pub fn new(
        refresher: Arc<Refresher>,
        tls: Arc<TlsClient>,
        resolver: Arc<Resolver>,
        notifier: Arc<Notifier>,
        cfg: LifecycleConfig,
        call_timeout: Duration,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            refresher,
            tls,
            resolver,
            notifier,
            cfg,
            call_timeout,
        })
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.cfg
    }

    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    fn me(&self) -> &str {
        &self.cfg.replica_id
    }

    /// When the serving version of `cert` renews.
    pub fn due_at(&self, cert: &LoadedCert) -> i64 {
        renew_at(
            cert.not_before,
            cert.not_after,
            self.cfg.renew_at,
            self.cfg.jitter,
            &cert.serial_hex,
        )
    }

    /// One compare-and-set update of a certificate document: `f` returns `None` for "nothing
    /// to write". A conflict re-reads and asks `f` again (at most three times), so `f` must
    /// decide from the document it is given.
    async fn update<T>(
        &self,
        account: &str,
        id: u64,
        mut f: impl FnMut(&mut StoredCertificate) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let store = self.refresher.store();
        for _ in 0..3 {
            let Some(v) = store.get_certificate(account, id).await? else {
                return Ok(None);
            };
            if v.value.meta.deleted {
                return Ok(None);
            }
            let mut doc = v.value;
            let Some(t) = f(&mut doc) else {
                return Ok(None);
            };
            match store.put_certificate_if(&doc, &v.version).await {
                Ok(_) => return Ok(Some(t)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// One pass: renewals that are due, then notifications. Returns what each renewal did.
    pub async fn tick(&self) -> Vec<((String, u64), Outcome)> {
        let snap = self.refresher.snapshot().load_full();
        let now = unix_now();
        let mut out = Vec::new();
        let mut certs: Vec<Arc<LoadedCert>> = snap
            .certs
            .values()
            .filter_map(|e| match e {
                CertEntry::Ready { cert, .. } => Some(cert.clone()),
                CertEntry::Failed { .. } => None,
            })
            .collect();
        certs.sort_by_key(|c| (c.account.clone(), c.id));
        for cert in &certs {
            let Some(lc) = cert.lifecycle.as_deref() else {
                continue;
            };
            if lc.pki.is_none() || !self.cfg.enabled {
                continue;
            }
            let r = &lc.renewal;
            let leased = r.lease_until > now && r.lease_owner.as_deref() != Some(self.me());
            if now >= self.due_at(cert) && now >= r.next_attempt_at && !leased {
                let o = self.renew(&cert.account, cert.id, false).await;
                if o != Outcome::NotDue {
                    out.push(((cert.account.clone(), cert.id), o));
                }
            }
        }
        if self.notifier.enabled() {
            for cert in &certs {
                if let Err(e) = self.expiry_notice(cert, now).await {
                    log::warn!(
                        "lifecycle: expiry notice of certificate {}/{}: {e}",
                        cert.account,
                        cert.id
                    );
                }
            }
        }
        out
    }

    /// The background loop: a tick every `check_interval` until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: ShutdownWatch) {
        // `enabled: false` stops renewals; expiry notifications still run when webhooks exist.
        if !self.cfg.enabled && !self.notifier.enabled() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.cfg.check_interval) => {}
            }
            if !self.refresher.is_ready() {
                continue;
            }
            for ((account, id), o) in self.tick().await {
                log::debug!("lifecycle: certificate {account}/{id}: {o:?}");
            }
        }
    }

    /// Sends the expiry notice of the smallest threshold crossed, once per version across
    /// replicas (the claim is a compare-and-set of `notified`).
    async fn expiry_notice(&self, cert: &LoadedCert, now: i64) -> Result<(), StoreError> {
        let serial = &cert.serial_hex;
        let (keys, threshold): (Vec<String>, Option<u32>) = if now >= cert.not_after {
            (vec![format!("expired@{serial}")], None)
        } else {
            let crossed: Vec<u32> = self
                .notifier
                .expiry_days()
                .iter()
                .copied()
                .filter(|d| now >= cert.not_after - i64::from(*d) * 86_400)
                .collect();
            let Some(smallest) = crossed.iter().copied().min() else {
                return Ok(());
            };
            (
                crossed
                    .iter()
                    .map(|d| format!("expiring-{d}d@{serial}"))
                    .collect(),
                Some(smallest),
            )
        };
        let sent = cert
            .lifecycle
            .as_deref()
            .map(|l| keys.iter().all(|k| l.notified.contains(k)))
            .unwrap_or(false);
        if sent {
            return Ok(());
        }
        let not_after = cert.not_after;
        let claimed = self
            .update(&cert.account, cert.id, |doc| {
                // Another version serves now (a document seeded by hand may lack notAfter).
                if doc.meta.not_after.is_some_and(|t| t != not_after) {
                    return None;
                }
                let lc = doc.lifecycle.get_or_insert_with(Lifecycle::default);
                let fresh: Vec<String> = keys
                    .iter()
                    .filter(|k| !lc.notified.contains(k))
                    .cloned()
                    .collect();
                if fresh.is_empty() {
                    return None;
                }
                lc.notified.extend(fresh);
                Some(())
            })
            .await?;
        if claimed.is_none() {
            return Ok(());
        }
        self.refresher.trigger();
        let days_left = (cert.not_after - now).div_euclid(86_400);
        let (event, message) = match threshold {
            None => (
                "certificate.expired",
                format!(
                    "certificate {} ({}) expired; targets refuse it: renew or upload a new version",
                    cert.id, cert.name
                ),
            ),
            Some(d) => (
                "certificate.expiring",
                format!(
                    "certificate {} ({}) expires in {days_left} day(s) (threshold {d} days): renew it",
                    cert.id, cert.name
                ),
            ),
        };
        let id = match threshold {
            Some(d) => format!("{event}:{}:{}:{serial}:{d}", cert.account, cert.id),
            None => format!("{event}:{}:{}:{serial}", cert.account, cert.id),
        };
        self.notify(Event {
            event: event.into(),
            id,
            account_id: cert.account.clone(),
            certificate_id: cert.id,
            certificate_name: cert.name.clone(),
            serial: Some(serial.clone()),
            not_after: rfc3339(cert.not_after),
            days_left: Some(days_left),
            threshold_days: threshold,
            message,
            occurred_at: rfc3339(now).unwrap_or_default(),
            gateway: self.me().to_string(),
        });
        Ok(())
    }

    /// Counts the event and hands it to the notifier (delivered in the background).
    pub fn notify(&self, ev: Event) {
        super::metrics::NOTICES
            .with_label_values(&[ev.event.as_str()])
            .inc();
        if self.notifier.enabled() {
            self.notifier.spawn(ev);
        }
    }

    /// Renews one PKI-sourced entry (see the module documentation). `force` ignores the due
    /// time and the back-off (an admin's "renew now"), never another replica's lease.
    pub async fn renew(&self, account: &str, id: u64, force: bool) -> Outcome {
        let now = unix_now();
        let me = self.me().to_string();
        let lease_until = now + self.cfg.lease.as_secs() as i64;
        let snap = self.refresher.snapshot().load_full();
        let serving = snap
            .certs
            .get(&(account.to_string(), id))
            .and_then(CertEntry::cert)
            .cloned();
        let due = serving.as_ref().map(|c| self.due_at(c));
        // 1-2: due, then the lease (compare-and-set on the version just read).
        let taken = self
            .update(account, id, |doc| {
                let lc = doc.lifecycle.as_mut()?;
                lc.pki.as_ref()?;
                if !force {
                    // The document must still hold the version the snapshot judged due.
                    let c = serving.as_ref()?;
                    if doc.meta.not_after != Some(c.not_after) || now < due? {
                        return None;
                    }
                    if now < lc.renewal.next_attempt_at {
                        return None;
                    }
                }
                if lc.renewal.lease_until > now && lc.renewal.lease_owner.as_deref() != Some(&me) {
                    return None;
                }
                lc.renewal.lease_owner = Some(me.clone());
                lc.renewal.lease_until = lease_until;
                Some(doc.clone())
            })
            .await;
        let doc = match taken {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                return if force {
                    Outcome::Busy
                } else {
                    Outcome::NotDue
                };
            }
            Err(StoreError::Conflict(_)) => return Outcome::Busy,
            Err(e) => {
                log::warn!("lifecycle: renewal of {account}/{id}: cannot take the lease: {e}");
                return Outcome::Failed {
                    error: e.to_string(),
                };
            }
        };
        log::info!("lifecycle: renewing certificate {account}/{id} (lease taken by {me})");
        // 3-4 under the lease's deadline.
        let budget = self
            .cfg
            .lease
            .saturating_sub(Duration::from_secs(5))
            .max(Duration::from_secs(1));
        let work = async {
            let c = self.new_version(&doc).await.map_err(|e| (e, None))?;
            self.prove(account, id, &c, true)
                .await
                .map_err(|r| (format!("cut-over refused: {}", r.reason), Some(r)))?;
            Ok::<_, (String, Option<Refusal>)>(c)
        };
        let result = match tokio::time::timeout(budget, work).await {
            Ok(r) => r,
            Err(_) => Err((
                format!(
                    "the renewal did not finish within the lease ({} s; lifecycle.lease_secs)",
                    self.cfg.lease.as_secs()
                ),
                None,
            )),
        };
        match result {
            Ok(c) => self.finish_ok(account, id, &doc, c).await,
            Err((error, refusal)) => self.finish_failed(account, id, &doc, error, refusal).await,
        }
    }

    async fn finish_ok(
        &self,
        account: &str,
        id: u64,
        doc: &StoredCertificate,
        c: Completed,
    ) -> Outcome {
        let me = self.me().to_string();
        let now = unix_now();
        let written = self
            .update(account, id, |d| {
                let lc = d.lifecycle.as_ref()?;
                if lc.renewal.lease_owner.as_deref() != Some(&me) {
                    return None; // the lease expired and another replica took over
                }
                install(d, &c, now);
                Some(())
            })
            .await;
        match written {
            Ok(Some(())) => {
                super::metrics::RENEWALS
                    .with_label_values(&["renewed"])
                    .inc();
                log::info!(
                    "lifecycle: certificate {account}/{id} renewed: serial {} valid until {}",
                    c.serial_hex,
                    rfc3339(c.not_after).unwrap_or_default()
                );
                // This replica serves it at once; the others when the notice reaches them (with
                // `redis:`), else at their next refresh.
                crate::shared::announce(account, "certificate", Some(id));
                let _ = self.refresher.refresh().await;
                self.notify(Event {
                    event: "certificate.renewed".into(),
                    id: format!("certificate.renewed:{account}:{id}:{}", c.serial_hex),
                    account_id: account.to_string(),
                    certificate_id: id,
                    certificate_name: doc.meta.name.clone(),
                    serial: Some(c.serial_hex.clone()),
                    not_after: rfc3339(c.not_after),
                    days_left: Some((c.not_after - now).div_euclid(86_400)),
                    threshold_days: None,
                    message: format!(
                        "certificate {id} ({}) renewed; the new version serves",
                        doc.meta.name
                    ),
                    occurred_at: rfc3339(now).unwrap_or_default(),
                    gateway: me,
                });
                Outcome::Renewed {
                    serial: c.serial_hex,
                }
            }
            Ok(None) => {
                log::warn!(
                    "lifecycle: certificate {account}/{id}: the renewed version was not written: the lease was lost (lifecycle.lease_secs too short?)"
                );
                Outcome::Busy
            }
            Err(e) => {
                log::warn!(
                    "lifecycle: certificate {account}/{id}: writing the renewed version failed: {e}; the lease expires and a later attempt renews again"
                );
                Outcome::Failed {
                    error: e.to_string(),
                }
            }
        }
    }

    async fn finish_failed(
        &self,
        account: &str,
        id: u64,
        doc: &StoredCertificate,
        error: String,
        refusal: Option<Refusal>,
    ) -> Outcome {
        let refused = refusal.is_some();
        let me = self.me().to_string();
        let now = unix_now();
        let failures = doc
            .lifecycle
            .as_ref()
            .map(|l| l.renewal.failures)
            .unwrap_or(0)
            .saturating_add(1);
        let min = self.cfg.retry_min.as_secs().max(1);
        let backoff = min
            .saturating_mul(1u64 << (failures - 1).min(20))
            .min(self.cfg.retry_max.as_secs());
        let next = now + backoff as i64;
        let err = error.clone();
        let written = self
            .update(account, id, |d| {
                let lc = d.lifecycle.as_mut()?;
                if lc.renewal.lease_owner.as_deref() != Some(&me) {
                    return None;
                }
                lc.renewal.failures = failures;
                lc.renewal.next_attempt_at = next;
                lc.renewal.last_error = Some(err.clone());
                lc.renewal.lease_owner = None;
                lc.renewal.lease_until = 0;
                if let Some(r) = &refusal {
                    lc.cutover_refused = Some(CutoverRefusal {
                        serial: r.serial.clone(),
                        at: now,
                        mapping_ids: r.mapping_ids.clone(),
                        reason: r.reason.clone(),
                    });
                }
                Some(())
            })
            .await;
        if let Err(e) = written {
            log::warn!("lifecycle: certificate {account}/{id}: recording the failure: {e}");
        }
        let _ = self.refresher.refresh().await;
        let kind = if refused { "refused" } else { "failed" };
        super::metrics::RENEWALS.with_label_values(&[kind]).inc();
        log::warn!(
            "lifecycle: renewal of certificate {account}/{id} {kind} (attempt {failures}): {error}; the current version keeps serving; next attempt in {backoff} s"
        );
        let event = if refused {
            "certificate.cutover_refused"
        } else {
            "certificate.renewal_failed"
        };
        self.notify(Event {
            event: event.into(),
            id: format!("{event}:{account}:{id}:{failures}:{now}"),
            account_id: account.to_string(),
            certificate_id: id,
            certificate_name: doc.meta.name.clone(),
            serial: None,
            not_after: doc.meta.not_after.and_then(rfc3339),
            days_left: doc.meta.not_after.map(|t| (t - now).div_euclid(86_400)),
            threshold_days: None,
            message: format!(
                "renewal of certificate {id} ({}) {kind}: {error}; the current version keeps serving; next attempt in {backoff} s",
                doc.meta.name
            ),
            occurred_at: rfc3339(now).unwrap_or_default(),
            gateway: me,
        });
        if refused {
            Outcome::Refused { reason: error }
        } else {
            Outcome::Failed { error }
        }
    }

    /// A new version from the entry's PKI source: a fresh key and a signed CSR (`sign`), or a
    /// key and certificate Vault made (`issue`).
    pub async fn new_version(&self, doc: &StoredCertificate) -> Result<Completed, String> {
        let lc = doc
            .lifecycle
            .as_ref()
            .ok_or_else(|| "the entry has no PKI source".to_string())?;
        let src = lc
            .pki
            .as_ref()
            .ok_or_else(|| "the entry has no PKI source".to_string())?;
        let subject = subject_of(doc);
        let store = self.refresher.store().as_ref();
        let (key_pem, issued) = if src.mode == "issue" {
            let issued = pki::issue(store, src, &subject, lc.key_type)
                .await
                .map_err(|e| e.to_string())?;
            let key = issued
                .private_key_pem
                .as_deref()
                .ok_or_else(|| "Vault's issue answer carries no private key".to_string())?;
            (
                keys::normalize_key_pem(key).map_err(|e| e.to_string())?,
                issued,
            )
        } else {
            let (kt, subj) = (lc.key_type, subject.clone());
            let nk = tokio::task::spawn_blocking(move || keys::generate(kt, &subj))
                .await
                .map_err(|e| format!("key generation stopped: {e}"))?
                .map_err(|e| e.to_string())?;
            let issued = pki::sign(store, src, &subject, &nk.csr_pem)
                .await
                .map_err(|e| e.to_string())?;
            (nk.key_pem, issued)
        };
        let chain = issued.chain_pem.join("\n");
        keys::complete(
            &key_pem,
            &issued.certificate_pem,
            (!chain.is_empty()).then_some(chain.as_str()),
        )
        .map_err(|e| format!("Vault's certificate is not usable: {e}"))
    }

    /// The mappings of `account` that point at certificate `id` and ask for a cut-over proof
    /// (`automatic`: the default of an automatic renewal, else of a manual upload).
    pub async fn proving_mappings(
        &self,
        account: &str,
        id: u64,
        automatic: bool,
    ) -> Result<Vec<Mapping>, StoreError> {
        let default = automatic && self.cfg.cutover_check;
        let doc = self.refresher.store().get_mappings(account).await?;
        Ok(doc
            .value
            .mappings
            .into_iter()
            .filter(|m| {
                !m.deleted
                    && m.enabled
                    && m.certificate_id == id
                    && m.cutover_check.unwrap_or(default)
            })
            .collect())
    }

    /// Proves a new version: an mTLS call presenting it to every mapped target that asks for
    /// it. Any HTTP answer is an accepted handshake; a refused or broken one is a refusal.
    pub async fn prove(
        &self,
        account: &str,
        id: u64,
        c: &Completed,
        automatic: bool,
    ) -> Result<usize, Refusal> {
        let maps = self
            .proving_mappings(account, id, automatic)
            .await
            .map_err(|e| Refusal {
                serial: c.serial_hex.clone(),
                mapping_ids: Vec::new(),
                reason: format!("the mappings could not be read: {e}"),
            })?;
        if maps.is_empty() {
            return Ok(0);
        }
        let decoded = crate::p12::decode(&c.p12, &c.password).map_err(|e| Refusal {
            serial: c.serial_hex.clone(),
            mapping_ids: Vec::new(),
            reason: format!("the new version does not open: {e}"),
        })?;
        let ck = crate::p12::cert_key(&decoded);
        let mut refused = Vec::new();
        let mut first = None;
        for m in &maps {
            let url = m.url.strip_suffix('*').unwrap_or(&m.url).to_string();
            let spec = CallSpec {
                method: "GET".into(),
                url: url.clone(),
                headers: Vec::new(),
                body: Vec::new(),
                head_only: true,
            };
            match upstream_call::call(&self.tls, &self.resolver, &ck, &spec, self.call_timeout)
                .await
            {
                Ok(r) => log::info!(
                    "lifecycle: cut-over check of certificate {account}/{id} (serial {}) against {url} (mapping {}): HTTP {}",
                    c.serial_hex,
                    m.id,
                    r.status
                ),
                Err(e) => {
                    log::warn!(
                        "lifecycle: cut-over check of certificate {account}/{id} (serial {}) against {url} (mapping {}) failed: {e}",
                        c.serial_hex,
                        m.id
                    );
                    refused.push(m.id);
                    first.get_or_insert_with(|| format!("mapping {} ({url}): {e}", m.id));
                }
            }
        }
        if refused.is_empty() {
            Ok(maps.len())
        } else {
            super::metrics::CUTOVER_REFUSED.inc();
            Err(Refusal {
                serial: c.serial_hex.clone(),
                mapping_ids: refused,
                reason: first.unwrap_or_default(),
            })
        }
    }
}
