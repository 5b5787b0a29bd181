//! mtls-gateway: plain HTTP in, mutual TLS out, with client certificates kept in a store
//! (HashiCorp Vault or an embedded file store).
//!
//! Data flow, one module per step:
//! [`store`] (bytes) -> [`p12`] (decode + checks) -> [`snapshot`] (immutable index + ready keys,
//! published through arc-swap by [`refresh`]) -> [`proxy`] (per-request mapping match and peer).
//! Around it: [`config`], [`ratelimit`], [`metrics`], [`ops`] (health + metrics listener),
//! [`admin`] + [`auth`] (the LivePerson-compatible admin API), [`demo`].

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod config;
pub mod console;
pub mod dev;
mod file_stamp;
pub mod gateway;
pub mod http1;
pub mod lifecycle;
pub mod metrics;
pub mod ops;
pub mod p12;
pub mod proxy;
pub mod ratelimit;
pub mod refresh;
pub mod shared;
pub mod snapshot;
pub mod store;
pub mod upstream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::config::{Config, StoreConfig};
use crate::gateway::{Gateway, InFlight};
use crate::refresh::{RefreshService, Refresher};
use crate::store::file::FileStore;
use crate::store::{
    Inventory, MappingDocument, Store, StoreError, StoreResult, StoredCertificate, Versioned,
};
use crate::upstream::{Resolver, TlsClient};

/// A header value made from error text (TLS stacks and targets may put anything in it): visible
/// ASCII and spaces only, at most 512 characters.
pub fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(512)
        .collect()
}

/// A store opened on first use, inside the runtime that first needs it (Vault clients keep
/// connections tied to a runtime, and Pingora gives each service its own).
pub struct LazyVault {
    cfg: store::vault::VaultConfig,
    cell: tokio::sync::OnceCell<store::vault::VaultStore>,
}

impl LazyVault {
    async fn get(&self) -> StoreResult<&store::vault::VaultStore> {
        self.cell
            .get_or_try_init(|| store::vault::VaultStore::connect(&self.cfg))
            .await
    }
}

#[async_trait]
impl Store for LazyVault {
    fn describe(&self) -> String {
        match self.cell.get() {
            Some(s) => s.describe(),
            None => format!("vault (not connected yet): {}", self.cfg.describe()),
        }
    }
    async fn inventory(&self) -> StoreResult<Inventory> {
        self.get().await?.inventory().await
    }
    async fn get_certificate(
        &self,
        account: &str,
        id: u64,
    ) -> StoreResult<Option<Versioned<StoredCertificate>>> {
        self.get().await?.get_certificate(account, id).await
    }
    async fn put_certificate(&self, cert: &StoredCertificate) -> StoreResult<String> {
        self.get().await?.put_certificate(cert).await
    }
    async fn put_certificate_if(
        &self,
        cert: &StoredCertificate,
        expected: &str,
    ) -> StoreResult<String> {
        self.get().await?.put_certificate_if(cert, expected).await
    }
    async fn pki_write(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> StoreResult<serde_json::Value> {
        self.get().await?.pki_write(path, body).await
    }
    async fn delete_certificate(&self, account: &str, id: u64) -> StoreResult<bool> {
        self.get().await?.delete_certificate(account, id).await
    }
    async fn get_mappings(&self, account: &str) -> StoreResult<Versioned<MappingDocument>> {
        self.get().await?.get_mappings(account).await
    }
    async fn put_mappings(
        &self,
        account: &str,
        doc: &MappingDocument,
        expected_version: Option<&str>,
    ) -> StoreResult<String> {
        self.get()
            .await?
            .put_mappings(account, doc, expected_version)
            .await
    }
}

/// Open the configured store (the file store at once; Vault on first use).
pub fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, StoreError> {
    match &cfg.store {
        StoreConfig::File { path } => Ok(Arc::new(FileStore::open(path.clone())?)),
        StoreConfig::Vault(v) => Ok(Arc::new(LazyVault {
            cfg: (**v).clone(),
            cell: tokio::sync::OnceCell::new(),
        })),
    }
}

/// Well-known locations of the system trust bundle.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// One PEM file with the system roots (when enabled) plus `upstream.ca_files`, given to the
/// upstream connector once. (Setting per-peer CAs instead would rebuild an X509 store on every
/// new connection, and the trust bundle is not part of Pingora's pool key.)
/// The connectors read the file when they are built; `assemble` removes it right after, so no
/// file is left behind however the process ends (SIGKILL, OOM kill, a crash).
fn trust_bundle(cfg: &Config) -> std::io::Result<Option<tempfile::TempPath>> {
    if cfg.upstream.ca_files.is_empty() {
        return Ok(None); // Pingora loads the system default paths itself.
    }
    let mut pem = Vec::new();
    if cfg.upstream.use_system_roots {
        match SYSTEM_BUNDLES.iter().find(|p| std::path::Path::new(p).is_file()) {
            Some(p) => pem.extend(std::fs::read(p)?),
            None => warn!("upstream.use_system_roots: no system CA bundle found; only upstream.ca_files are trusted"),
        }
        pem.push(b'\n');
    }
    for f in &cfg.upstream.ca_files {
        let bytes = std::fs::read(f)?;
        if boring::x509::X509::stack_from_pem(&bytes)
            .map(|s| s.is_empty())
            .unwrap_or(true)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "upstream.ca_files: {} holds no PEM certificate",
                    f.display()
                ),
            ));
        }
        pem.extend(bytes);
        pem.push(b'\n');
    }
    let tmp = std::env::temp_dir();
    let named = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!(
                "upstream.ca_files: cannot write the trust bundle to the temporary directory {} ({e}); \
                 give the gateway a writable one (set TMPDIR, or mount an emptyDir on /tmp when the \
                 root filesystem is read-only)",
                tmp.display()
            ),
        )
    };
    let mut file = tempfile::Builder::new()
        .prefix("mtls-gateway-trust-")
        .suffix(".pem")
        .tempfile_in(&tmp)
        .map_err(named)?;
    std::io::Write::write_all(&mut file, &pem).map_err(named)?;
    Ok(Some(file.into_temp_path()))
}

/// The one upstream TLS connector, from the trust bundle `trust_bundle` wrote (`None`: the
/// system default paths). `build` makes one and gives it to the lean loop and the admin.
fn upstream_tls(cfg: &Config, bundle: Option<&std::path::Path>) -> anyhow::Result<Arc<TlsClient>> {
    let tls = TlsClient::new(
        bundle,
        cfg.upstream.connect_timeout,
        cfg.upstream.tls_timeout,
    )
    .map_err(|e| anyhow::anyhow!("upstream TLS set-up: {e}"))?;
    Ok(Arc::new(tls))
}

/// The upstream parts for an admin API served without a proxy (tests): a connector with the
/// same trust and version set-up `build` gives the proxy (system roots unless
/// `upstream.use_system_roots: false`, plus `upstream.ca_files`), and a resolver with its cache.
/// `build` shares the proxy's own instead.
pub fn upstream_parts(cfg: &Config) -> anyhow::Result<(Arc<TlsClient>, Arc<Resolver>)> {
    let bundle = trust_bundle(cfg)?;
    let tls = upstream_tls(cfg, bundle.as_deref())?;
    if let Some(b) = bundle {
        let _ = b.close();
    }
    Ok((tls, Arc::new(Resolver::new(cfg.upstream.dns_cache))))
}

/// On SIGTERM: report not-ready, wait until no request is in flight (or the grace period ends),
/// then let Pingora stop its listeners and exit. Pingora's own grace sleep is set to zero, so an
/// idle gateway exits at once. SIGINT stops at once.
struct DrainOnTerm {
    inflight: Arc<InFlight>,
    draining: Arc<AtomicBool>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {
                self.draining.store(true, Ordering::Release);
                let deadline = Instant::now() + self.grace;
                let n = self.inflight.get();
                info!("SIGTERM: draining {n} request(s) in flight (grace {:?})", self.grace);
                while self.inflight.get() > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if self.inflight.get() > 0 {
                    warn!("grace period over with {} request(s) still in flight", self.inflight.get());
                }
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

/// The admin API as a background service with its own listener.
struct AdminService {
    state: admin::AdminState,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let addr = self.state.cfg.admin.listen;
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                error!("admin.listen {addr}: cannot bind ({e}); the admin API is not served");
                return;
            }
        };
        info!("admin API listening on {addr}");
        admin::serve(listener, self.state.clone(), async move {
            let _ = shutdown.changed().await;
        })
        .await;
    }
}

/// The lifecycle engine's loop as a background service.
struct LifecycleService(Arc<lifecycle::engine::Engine>);

#[async_trait]
impl BackgroundService for LifecycleService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.clone().run(shutdown).await;
    }
}

/// A fully assembled gateway, ready to run.
pub struct Assembled {
    pub server: Server,
    run_args: RunArgs,
    /// The shared-state client when `redis:` is configured (the fleet-wide rate limit and any
    /// other service that shares state take it from here).
    pub shared: Option<Arc<shared::Redis>>,
}

impl Assembled {
    /// Run until SIGTERM/SIGINT. Returns when the server has stopped.
    pub fn run(self) {
        self.server.run(self.run_args);
        access_log::flush(std::time::Duration::from_secs(2));
    }
}

/// Every proxied client connection holds two descriptors (the client's and the target's) and the
/// pool keeps idle ones, so a soft open-file limit of 1024 (a common default) would make
/// `accept()` fail with EMFILE near 500 concurrent clients, and Pingora then stops accepting for
/// a second at a time. Lift the soft limit to the hard one, as Go's runtime does at start; the
/// hard limit stays the operator's choice.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    // Linux refuses an unlimited soft limit for descriptors (it is capped by fs.nr_open,
    // 1,048,576 by default).
    const CAP: u64 = 1 << 20;
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            warn!("could not read the open-file limit: {e}");
            return;
        }
    };
    let want = if hard == RLIM_INFINITY { CAP } else { hard };
    if soft >= want {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
        Ok(()) => info!("open-file limit raised from {soft} to {want}"),
        Err(e) => warn!(
            "open-file limit is {soft} and could not be raised to {want} ({e}): \
             at most about {} concurrent client connections",
            soft / 2
        ),
    }
}

/// Fail at start, naming the key, when a listener's address is taken by another process.
/// Otherwise Pingora retries a taken port for 30 s, then that service's thread panics and the
/// process runs on without it (a gateway with no proxy listener that a supervisor sees running).
/// The probe is released before Pingora binds; Pingora's own retries cover that short window.
fn ports_free(cfg: &Config) -> anyhow::Result<()> {
    for (key, addr) in cfg.listeners() {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            anyhow::bail!(
                "{key}: cannot listen on {addr} ({e}); stop what holds the port or choose another"
            );
        }
    }
    Ok(())
}

/// Build the Pingora server from a validated config: refresher (background, the proxy depends on
/// it), proxy listener(s), ops listener, admin listener.
pub fn build(cfg: Config) -> anyhow::Result<Assembled> {
    raise_open_file_limit();
    ports_free(&cfg)?;
    let cfg = Arc::new(cfg);
    metrics::init();
    if cfg.proxy.access_log {
        access_log::enable().map_err(|e| {
            anyhow::anyhow!("proxy.access_log: cannot start its writer thread: {e}")
        })?;
    }
    let store = open_store(&cfg).map_err(|e| anyhow::anyhow!("store: {e}"))?;
    let decoder = Arc::new(p12::Decoder::new(
        cfg.p12.max_iterations,
        cfg.p12.max_concurrent_decodes,
    ));
    let refresher = Refresher::with_decoder(store, cfg.refresh.clone(), decoder);
    // Shared state (`redis:`): made here without I/O; the background service below connects.
    let shared = match &cfg.redis {
        Some(r) => {
            metrics::init_shared();
            let replica = format!("{}-{}", cfg.lifecycle.replica_id, store::new_id());
            let redis = shared::Redis::new(r, replica).map_err(|e| anyhow::anyhow!(e))?;
            cfg.auth.oauth1.share_nonces(redis.clone());
            shared::install(redis.clone());
            Some(redis)
        }
        None => None,
    };

    let mut conf = ServerConf {
        threads: cfg.proxy.threads,
        work_stealing: cfg.proxy.work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: cfg.upstream.keepalive_pool_size,
        ..ServerConf::default()
    };
    let bundle = trust_bundle(&cfg)?;
    if let Some(b) = &bundle {
        conf.ca_file = Some(b.to_string_lossy().into_owned());
    }
    let mut server = Server::new_with_opt_and_conf(None, conf);

    let refresh_handle = server.add_service(background_service(
        "snapshot refresher",
        RefreshService(refresher.clone()),
    ));

    if let Some(redis) = &shared {
        server.add_service(background_service(
            "shared state (redis)",
            shared::SharedService {
                redis: redis.clone(),
                refresher: refresher.clone(),
            },
        ));
    }

    let inflight = Arc::new(InFlight::default());
    let draining = Arc::new(AtomicBool::new(false));
    let mut gateway = Gateway::new(cfg.clone(), refresher.snapshot().clone(), inflight.clone());
    // With Redis, the per-IP limit holds across the fleet (`rate_limit.fleet`, on by default).
    if let Some(redis) = &shared {
        if cfg.rate_limit.enabled && cfg.rate_limit.fleet.active(true) {
            gateway.limiter = Some(Arc::new(ratelimit::RateLimiter::with_fleet(
                &cfg.rate_limit,
                Arc::new(ratelimit::fleet::SharedCounter(redis.clone())),
            )));
        }
    }
    // One upstream connector and one resolver for the lean loop and the admin's calls
    // (activation, the P12 tester): the same trust, versions and DNS cache as production traffic.
    let tls = upstream_tls(&cfg, bundle.as_deref())?;
    let resolver = gateway.resolver.clone();
    // The listener's app: a lean HTTP/1.1 loop for ordinary requests, Pingora's proxy for the
    // rest (see src/http1/conn.rs).
    let app = http1::ProxyApp::new(gateway, &server.configuration, tls.clone())?;
    // Both upstream connectors (the lean loop's and Pingora's) have loaded the trust bundle;
    // nothing reads it again, so it goes now rather than at exit (which a SIGKILL never reaches).
    if let Some(b) = bundle {
        let path = b.to_path_buf();
        if let Err(e) = b.close() {
            warn!(
                "cannot remove the temporary trust bundle {}: {e}",
                path.display()
            );
        }
    }
    let mut proxy = Service::new("mtls proxy".to_string(), app);
    for addr in &cfg.proxy.listen {
        // No L4 read buffer: the request loop reads into its own buffer (a 64 KiB zeroed
        // buffer per accepted connection was the largest single cost of a short connection).
        proxy.add_listener(
            pingora::listeners::ListenerConfig::tcp(addr.to_string())
                .l4_buffer(pingora::listeners::L4BufferSettings::default().read(0)),
        );
    }
    let proxy_handle = server.add_service(proxy);
    proxy_handle.add_dependency(&refresh_handle);

    let mut ops = Service::new(
        "ops (metrics, health)".to_string(),
        pingora::apps::http_app::HttpServer::new_app(ops::OpsApp {
            refresher: refresher.clone(),
            draining: draining.clone(),
        }),
    );
    ops.add_tcp(&cfg.ops_listen.to_string());
    server.add_service(ops);

    // Renewal, cut-over proofs and notifications: one engine per process, shared with the admin.
    let engine = lifecycle::engine::Engine::new(
        refresher.clone(),
        tls.clone(),
        resolver.clone(),
        lifecycle::notify::Notifier::with_gateway(
            &cfg.notifications,
            cfg.lifecycle.replica_id.clone(),
        )
        .map_err(|e| anyhow::anyhow!(e))?,
        cfg.lifecycle.clone(),
        cfg.admin.validate_timeout,
    );
    server.add_service(background_service(
        "certificate lifecycle",
        LifecycleService(engine.clone()),
    ));

    if cfg.admin.enabled {
        server.add_service(background_service(
            "admin api",
            AdminService {
                state: admin::AdminState::new(cfg.clone(), refresher.clone(), tls, resolver)
                    .with_engine(engine)
                    .with_shared(shared.clone()),
            },
        ));
    }

    info!(
        "mtls-gateway: proxy on {:?}, ops on {}, admin on {}, store {}",
        cfg.proxy.listen,
        cfg.ops_listen,
        if cfg.admin.enabled {
            cfg.admin.listen.to_string()
        } else {
            "(disabled)".into()
        },
        refresher.store().describe()
    );
    let run_args = RunArgs {
        shutdown_signal: Box::new(DrainOnTerm {
            inflight,
            draining,
            grace: cfg.grace_period,
        }),
    };
    Ok(Assembled {
        server,
        run_args,
        shared,
    })
}
