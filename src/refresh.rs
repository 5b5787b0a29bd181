//! Background refresh: read the store, decode what changed, build a new [`Snapshot`], publish it.
//!
//! - Validate, then publish: a refresh that cannot list the store publishes nothing and the last
//!   snapshot keeps serving. One entry that fails (unreadable, bad PKCS#12) keeps its last good
//!   version; an entry that never loaded is marked failed and mappings to it are refused.
//! - Cost follows change: the store's [`Inventory`] carries a version per entry; entries whose
//!   version equals the one in the current snapshot are reused as they are (no read, no decode).
//! - Failures are counted in metrics and logged once per entry and reason; the refresher logs
//!   once per change of state (working -> failing -> recovered).
//! - Decoding is bounded: every decode goes through the shared [`crate::p12::Decoder`] (blocking
//!   pool, `p12.max_concurrent_decodes` at once), and a stored file whose iteration counts are
//!   over `p12.max_iterations` is skipped without being decoded (one log line naming the entry
//!   and its count, `mtls_gateway_certificates_skipped_total{reason="iterations"}`), so one
//!   expensive file neither delays the first snapshot nor the other entries.
//! - Writes through the admin API call [`Refresher::refresh`] directly, so they are visible on
//!   this replica at once; other replicas see them at once when `redis:` carries change
//!   notices (they call [`Refresher::trigger`]), else on their next interval.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use log::{info, warn};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::RefreshConfig;
use crate::metrics;
use crate::snapshot::{CertEntry, LoadedCert, MappingIndex, Snapshot};
use crate::store::{MappingDocument, Store, StoreError, StoredCertificate};

/// How many entries are read and decoded at once.
const READ_CONCURRENCY: usize = 16;

/// Shared handle to the published snapshot.
pub type SnapshotHandle = Arc<ArcSwap<Snapshot>>;

/// What one refresh did.
#[derive(Debug, Default, Clone)]
pub struct RefreshReport {
    pub certificates: usize,
    pub certificates_read: usize,
    pub certificates_failed: usize,
    pub mapping_documents_read: usize,
    pub mapping_documents_failed: usize,
    pub mappings: usize,
    pub published: bool,
    pub duration: Duration,
}

#[derive(Debug, Default)]
struct State {
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    /// entry key -> reason, to log each failure once.
    logged: HashMap<String, String>,
}

pub struct Refresher {
    store: Arc<dyn Store>,
    snapshot: SnapshotHandle,
    cfg: RefreshConfig,
    run_lock: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    trigger: tokio::sync::Notify,
    decoder: Arc<crate::p12::Decoder>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The reason recorded for an entry whose CSR waits for its signed certificate.
pub const AWAITING_SIGNATURE: &str =
    "awaiting signature: a CSR was made and no certificate was uploaded for it yet";

/// Decode one stored certificate into a ready [`LoadedCert`] (CPU work: call off the runtime).
pub fn load_certificate(stored: &StoredCertificate, version: &str) -> Result<LoadedCert, String> {
    let decoded = crate::p12::decode(&stored.secret.p12, &stored.secret.password)
        .map_err(|e| e.to_string())?;
    let cert_key = crate::p12::cert_key(&decoded);
    Ok(LoadedCert {
        account: stored.meta.account_id.clone(),
        id: stored.meta.id,
        name: stored.meta.name.clone(),
        version: version.to_string(),
        cert_key: Arc::new(cert_key),
        leaf_sha256: decoded.leaf_sha256,
        subject: decoded.subject.clone(),
        serial_hex: decoded.serial_hex.clone(),
        not_before: decoded.not_before,
        not_after: decoded.not_after,
        lifecycle: stored.lifecycle.clone().map(Arc::new),
    })
}

enum CertResult {
    Loaded(Arc<LoadedCert>),
    Gone,
    Failed(String),
    /// Not decoded: over the iteration cap.
    Skipped(String),
    /// A CSR waits for its certificate: nothing to serve, nothing wrong.
    Awaiting,
}

impl Refresher {
    /// A refresher with the default PKCS#12 bounds ([`crate::p12::Decoder::default`]).
    pub fn new(store: Arc<dyn Store>, cfg: RefreshConfig) -> Arc<Refresher> {
        Refresher::with_decoder(store, cfg, Arc::new(crate::p12::Decoder::default()))
    }

    /// A refresher decoding through `decoder` (shared with the admin API).
    pub fn with_decoder(
        store: Arc<dyn Store>,
        cfg: RefreshConfig,
        decoder: Arc<crate::p12::Decoder>,
    ) -> Arc<Refresher> {
        Arc::new(Refresher {
            store,
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::empty())),
            cfg,
            run_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::default()),
            trigger: tokio::sync::Notify::new(),
            decoder,
        })
    }

    /// The PKCS#12 decoder every decode of this process goes through.
    pub fn decoder(&self) -> &Arc<crate::p12::Decoder> {
        &self.decoder
    }

    pub fn snapshot(&self) -> &SnapshotHandle {
        &self.snapshot
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Ask the background loop to refresh soon (without waiting for it).
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    /// Ready = a snapshot has been published at least once.
    pub fn is_ready(&self) -> bool {
        self.snapshot.load().is_loaded()
    }

    /// Why the last refresh failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().last_error.clone()
    }

    pub fn last_success(&self) -> Option<SystemTime> {
        self.state.lock().last_success
    }

    /// Update the staleness gauge (called when metrics are scraped).
    pub fn update_age_metric(&self) {
        if let Some(t) = self.last_success() {
            let age = SystemTime::now()
                .duration_since(t)
                .unwrap_or_default()
                .as_secs_f64();
            metrics::SNAPSHOT_AGE.set(age);
        } else {
            metrics::SNAPSHOT_AGE.set(f64::NAN);
        }
    }

    fn log_entry_failure(&self, key: &str, reason: &str) {
        let mut st = self.state.lock();
        if st.logged.get(key).map(String::as_str) != Some(reason) {
            warn!("refresh: {key}: {reason} (keeping its last good version, if any)");
            st.logged.insert(key.to_string(), reason.to_string());
        }
    }

    fn clear_entry_failure(&self, key: &str) {
        let mut st = self.state.lock();
        if st.logged.remove(key).is_some() {
            info!("refresh: {key} loads again");
        }
    }

    /// Run one refresh now. Serialised: concurrent callers wait for each other, and each sees
    /// the store as it was when its own refresh started.
    pub async fn refresh(&self) -> Result<RefreshReport, StoreError> {
        let _guard = self.run_lock.lock().await;
        let started = Instant::now();
        let result = self.refresh_inner().await;
        let elapsed = started.elapsed();
        match &result {
            Ok(r) => {
                metrics::REFRESH_DURATION
                    .with_label_values(&["ok"])
                    .observe(elapsed.as_secs_f64());
                let mut st = self.state.lock();
                if let Some(e) = st.last_error.take() {
                    info!(
                        "refresh: store {} is back ({e} is over)",
                        self.store.describe()
                    );
                }
                let now = SystemTime::now();
                st.last_success = Some(now);
                metrics::LAST_REFRESH_SUCCESS.set(
                    now.duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0),
                );
                metrics::SNAPSHOT_AGE.set(0.0);
                log::debug!("refresh: {r:?}");
            }
            Err(e) => {
                metrics::REFRESH_DURATION
                    .with_label_values(&["error"])
                    .observe(elapsed.as_secs_f64());
                metrics::REFRESH_FAILURES
                    .with_label_values(&["store"])
                    .inc();
                let msg = e.to_string();
                let mut st = self.state.lock();
                if st.last_error.as_deref() != Some(msg.as_str()) {
                    warn!(
                        "refresh: store {} failed: {msg}; serving the last snapshot",
                        self.store.describe()
                    );
                }
                st.last_error = Some(msg);
            }
        }
        result.map(|mut r| {
            r.duration = elapsed;
            r
        })
    }

    async fn refresh_inner(&self) -> Result<RefreshReport, StoreError> {
        let inv = self.store.inventory().await?;
        let prev = self.snapshot.load_full();
        let mut report = RefreshReport::default();
        let mut changed = !prev.is_loaded();

        // Certificates: reuse unchanged entries, read and decode the rest.
        let mut certs: HashMap<(String, u64), CertEntry> =
            HashMap::with_capacity(inv.certificates.len());
        let mut to_read = Vec::new();
        for (account, id, version) in &inv.certificates {
            let key = (account.clone(), *id);
            match prev.certs.get(&key) {
                Some(entry) if entry.seen_version() == version => {
                    certs.insert(key, entry.clone());
                }
                _ => to_read.push((account.clone(), *id, version.clone())),
            }
        }
        if certs.len() != prev.certs.len() || !to_read.is_empty() {
            changed = true;
        }
        let store = self.store.clone();
        let results: Vec<((String, u64), String, CertResult)> = stream::iter(to_read)
            .map(|(account, id, version)| {
                let store = store.clone();
                let decoder = self.decoder.clone();
                async move {
                    let res = match store.get_certificate(&account, id).await {
                        Ok(None) => CertResult::Gone,
                        Ok(Some(v)) if v.value.meta.deleted => CertResult::Gone,
                        Ok(Some(v)) if v.value.awaiting_signature() => CertResult::Awaiting,
                        Ok(Some(v)) => {
                            let version = v.version.clone();
                            if let Err(e) = decoder.check(&v.value.secret.p12) {
                                CertResult::Skipped(format!("not decoded: {e}"))
                            } else {
                                match decoder
                                    .run(move || load_certificate(&v.value, &version))
                                    .await
                                {
                                    Ok(Ok(c)) => CertResult::Loaded(Arc::new(c)),
                                    Ok(Err(e)) => CertResult::Failed(e),
                                    Err(e) => CertResult::Failed(e.to_string()),
                                }
                            }
                        }
                        Err(e) => CertResult::Failed(e.to_string()),
                    };
                    ((account, id), version, res)
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        for (key, version, res) in results {
            let label = format!("certificate {}/{}", key.0, key.1);
            let reason = match res {
                CertResult::Loaded(c) => {
                    report.certificates_read += 1;
                    self.clear_entry_failure(&label);
                    certs.insert(
                        key,
                        CertEntry::Ready {
                            cert: c,
                            stale: None,
                        },
                    );
                    continue;
                }
                CertResult::Gone => continue,
                CertResult::Awaiting => {
                    certs.insert(
                        key,
                        CertEntry::Failed {
                            version,
                            reason: AWAITING_SIGNATURE.to_string(),
                        },
                    );
                    continue;
                }
                CertResult::Skipped(reason) => {
                    metrics::CERTIFICATES_SKIPPED
                        .with_label_values(&["iterations"])
                        .inc();
                    reason
                }
                CertResult::Failed(reason) => {
                    metrics::REFRESH_FAILURES
                        .with_label_values(&["certificate"])
                        .inc();
                    reason
                }
            };
            report.certificates_failed += 1;
            self.log_entry_failure(&label, &reason);
            let entry = match prev.certs.get(&key).and_then(|e| e.cert().cloned()) {
                Some(good) => CertEntry::Ready {
                    cert: good,
                    stale: Some((version, reason)),
                },
                None => CertEntry::Failed { version, reason },
            };
            certs.insert(key, entry);
        }
        report.certificates = certs.len();

        // Mapping documents, one per account.
        let mut mappings: HashMap<String, (String, Arc<MappingDocument>)> = HashMap::new();
        let mut to_read = Vec::new();
        for (account, version) in &inv.mappings {
            match prev.mappings.get(account) {
                Some((v, doc)) if v == version => {
                    mappings.insert(account.clone(), (v.clone(), doc.clone()));
                }
                _ => to_read.push(account.clone()),
            }
        }
        if mappings.len() != prev.mappings.len() || !to_read.is_empty() {
            changed = true;
        }
        let results: Vec<_> = stream::iter(to_read)
            .map(|account| {
                let store = store.clone();
                async move {
                    let r = store.get_mappings(&account).await;
                    (account, r)
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        for (account, r) in results {
            let label = format!("mappings of account {account}");
            match r {
                Ok(v) => {
                    report.mapping_documents_read += 1;
                    self.clear_entry_failure(&label);
                    mappings.insert(account, (v.version, Arc::new(v.value)));
                }
                Err(e) => {
                    report.mapping_documents_failed += 1;
                    metrics::REFRESH_FAILURES
                        .with_label_values(&["mappings"])
                        .inc();
                    self.log_entry_failure(&label, &e.to_string());
                    if let Some(old) = prev.mappings.get(&account) {
                        mappings.insert(account, old.clone());
                    }
                }
            }
        }

        if !changed {
            // Nothing moved: keep the published snapshot (its index and keys stay shared).
            report.mappings = prev.index.len();
            return Ok(report);
        }

        let all = mappings.values().flat_map(|(_, d)| d.mappings.iter());
        let (index, errors) = MappingIndex::build(all, &certs);
        for (id, reason) in errors {
            self.log_entry_failure(&format!("mapping {id}"), &reason);
        }
        report.mappings = index.len();
        publish_cert_metrics(&certs);
        metrics::MAPPINGS.set(index.len() as i64);

        // Forget log-once entries for things that no longer exist.
        {
            let live: HashSet<String> = certs
                .keys()
                .map(|(a, i)| format!("certificate {a}/{i}"))
                .chain(mappings.keys().map(|a| format!("mappings of account {a}")))
                .collect();
            self.state
                .lock()
                .logged
                .retain(|k, _| live.contains(k) || k.starts_with("mapping "));
        }

        self.snapshot.store(Arc::new(Snapshot {
            generation: prev.generation + 1,
            built_at: Some(SystemTime::now()),
            certs,
            mappings,
            index,
        }));
        report.published = true;
        Ok(report)
    }

    /// The loop run by the background service: first load with back-off (the proxy waits for
    /// it), then every interval; after a failure, retries with exponential back-off, and wakes
    /// early when [`Refresher::trigger`] is called.
    pub async fn run(
        &self,
        mut shutdown: ShutdownWatch,
        mut on_first: Option<Box<dyn FnOnce() + Send>>,
    ) {
        let mut backoff = self.cfg.retry_min;
        loop {
            let ok = self.refresh().await.is_ok();
            if ok {
                backoff = self.cfg.retry_min;
                if let Some(f) = on_first.take() {
                    info!(
                        "first snapshot loaded from {}: {} mappings",
                        self.store.describe(),
                        self.snapshot.load().index.len()
                    );
                    f();
                }
            }
            let wait = if ok {
                self.cfg.interval
            } else {
                let w = backoff;
                backoff = (backoff * 2).min(self.cfg.retry_max);
                w
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.trigger.notified() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

fn publish_cert_metrics(certs: &HashMap<(String, u64), CertEntry>) {
    let now = now_unix();
    let (mut available, mut expired, mut not_yet, mut failed, mut stale) = (0, 0, 0, 0, 0);
    metrics::CERT_NOT_AFTER.reset();
    for ((account, id), entry) in certs {
        match entry {
            CertEntry::Ready { cert, stale: s } => {
                if s.is_some() {
                    stale += 1;
                }
                if cert.not_after < now {
                    expired += 1;
                } else if cert.not_before > now {
                    not_yet += 1;
                } else {
                    available += 1;
                }
                metrics::CERT_NOT_AFTER
                    .with_label_values(&[account.as_str(), &id.to_string()])
                    .set(cert.not_after as f64);
            }
            CertEntry::Failed { .. } => failed += 1,
        }
    }
    metrics::CERTIFICATES
        .with_label_values(&["available"])
        .set(available);
    metrics::CERTIFICATES
        .with_label_values(&["expired"])
        .set(expired);
    metrics::CERTIFICATES
        .with_label_values(&["not_yet_valid"])
        .set(not_yet);
    metrics::CERTIFICATES
        .with_label_values(&["failed"])
        .set(failed);
    metrics::CERTIFICATES
        .with_label_values(&["stale"])
        .set(stale);
}

/// The refresher as a Pingora background service. Readiness (which the proxy service depends
/// on) is signalled after the first successful refresh.
pub struct RefreshService(pub Arc<Refresher>);

#[async_trait]
impl BackgroundService for RefreshService {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: pingora::services::ServiceReadyNotifier,
    ) {
        let notify: Box<dyn FnOnce() + Send> = Box::new(move || ready.notify_ready());
        self.0.run(shutdown, Some(notify)).await;
    }
}
