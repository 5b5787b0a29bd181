//! Optional shared state on Redis (one server or a Redis Cluster), for what must hold across
//! replicas: OAuth1 nonces ([`crate::auth::nonce`]), change notices (below) and the fleet-wide
//! rate limit ([`crate::ratelimit`]). Without a `redis:` section none of this exists and every
//! replica keeps its own state, as a single gateway always did.
//!
//! ## The client: [`Redis`]
//! - [`Redis::query`] / [`Redis::pipe`] run a command or pipeline on the single-node
//!   [`ConnectionManager`] or the cluster's [`ClusterConnection`] alike; every call is bounded by
//!   `redis.command_timeout_ms` (default 100 ms). Keys are named with [`Redis::key`]
//!   (`redis.key_prefix`, default `mtls-gateway:`).
//! - **Fallback.** A call that fails to reach Redis (I/O, connection, timeout, cluster down)
//!   puts the client in fallback for `redis.retry_secs` (default 5 s): every call then returns
//!   [`SharedError::Down`] at once, without waiting, and callers use their local state. After
//!   that time the next call (the health check below makes one every second) tries again. So a
//!   slow or dead Redis costs at most one `command_timeout` per caller in flight per
//!   `retry_secs` (one `connect_timeout` while no connection has been made yet). An error *answer* (a script error, a wrong type) is returned as
//!   [`SharedError::Command`] and does not put the client in fallback.
//! - Entering fallback logs one warning and recovering one info line; the gauge
//!   `mtls_gateway_shared_state_up` is 1 while Redis answers and 0 otherwise (also before the
//!   first connection), and `mtls_gateway_shared_state_errors_total{op}` counts failed calls.
//! - Start-up never waits for Redis: the connection is made by the first call (bounded by
//!   `redis.connect_timeout_ms`), which the background service makes at once.
//!
//! ## Change notices
//! Every admin write and every renewal made by the lifecycle engine publishes a small JSON
//! notice `{account, kind, id, replica}` on the channel `{prefix}changes` ([`Redis::announce`]).
//! Every replica subscribes (a dedicated pub/sub connection; in cluster mode on one seed node,
//! as `PUBLISH` is broadcast to the whole cluster) and, for a notice from another replica, wakes
//! its refresher ([`crate::refresh::Refresher::trigger`]): the refresh reads the store's
//! inventory and reads and decodes only the entries whose version changed, so the changed
//! entries are what it loads. A burst of notices coalesces into at most one refresh running and
//! one queued. The subscriber reconnects with back-off (100 ms doubling to `retry_secs`) and
//! after a reconnection triggers one refresh, since notices sent while it was away are lost; the
//! periodic refresh (`refresh.interval_secs`) stays as the safety net for missed notices and for
//! writes made in Vault by hand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use log::{debug, info, warn};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, IntoConnectionInfo};

use crate::config::RedisConfig;
use crate::metrics;
use crate::refresh::Refresher;

/// Why a shared-state call did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SharedError {
    /// Redis is unreachable or slow: the client is in fallback (use local state).
    #[error("shared state (redis) is unavailable; using per-replica state")]
    Down,
    /// Redis answered with an error (a script error, a wrong type...): a bug or a misuse, not
    /// an outage.
    #[error("redis refused the command: {0}")]
    Command(String),
}

/// The connection, made on first use.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How to reach the server(s).
#[allow(clippy::large_enum_variant)] // one per process
enum Clients {
    Single(redis::Client),
    /// The cluster client, and one plain client per seed for the pub/sub subscription.
    Cluster(redis::cluster::ClusterClient, Vec<redis::Client>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// No call has been answered or failed yet.
    Unknown,
    Up,
    Down,
}

/// The shared-state client. One per process; cheap to share (`Arc`).
pub struct Redis {
    cfg: RedisConfig,
    replica: String,
    clients: Clients,
    conn: tokio::sync::OnceCell<Conn>,
    /// Milliseconds since `epoch` until which calls return `Down` at once (0: not in fallback).
    down_until_ms: AtomicU64,
    epoch: Instant,
    health: Mutex<Health>,
    /// `health == Up`, readable without the lock (the fast path of every successful call).
    up: AtomicBool,
    subscribed: AtomicBool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("servers", &self.cfg.describe())
            .field("replica", &self.replica)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// A change notice as published on `{prefix}changes`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notice {
    pub account: String,
    /// `certificate` or `mapping`.
    pub kind: String,
    pub id: Option<u64>,
    /// The publishing replica (its own notices are ignored).
    pub replica: String,
}

fn connection_info(
    url: &str,
    cfg: &RedisConfig,
) -> Result<redis::ConnectionInfo, redis::RedisError> {
    let info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(u) = &cfg.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &cfg.password {
        settings = settings.set_password(&p.0);
    }
    Ok(info.set_redis_settings(settings))
}

fn plain_client(url: &str, cfg: &RedisConfig) -> Result<redis::Client, redis::RedisError> {
    let info = connection_info(url, cfg)?;
    match &cfg.tls_ca {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
}

/// Whether an error means Redis is unreachable or unhealthy (fallback), rather than an error
/// answer to a well-delivered command.
fn is_outage(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::Server(k) => matches!(
            k,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        ),
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse | ErrorKind::Client => false,
        _ => true,
    }
}

/// The metric label of a command: its name when it is one the gateway uses, else `other`.
fn op_label(cmd: &redis::Cmd) -> &'static str {
    const KNOWN: [&str; 14] = [
        "SET", "GET", "DEL", "PUBLISH", "PING", "INCR", "INCRBY", "DECRBY", "PEXPIRE", "PTTL",
        "EVAL", "EVALSHA", "MGET", "EXPIRE",
    ];
    let Some(redis::Arg::Simple(name)) = cmd.args_iter().next() else {
        return "other";
    };
    KNOWN
        .iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("other")
}

/// The labels of `mtls_gateway_shared_state_errors_total`, for `metrics::init`.
pub const OPS: [&str; 8] = [
    "connect",
    "subscribe",
    "pipeline",
    "SET",
    "PUBLISH",
    "PING",
    "EVAL",
    "other",
];

impl Redis {
    /// A client for `cfg` (no I/O: the connection is made by the first call). `replica` names
    /// this process in change notices. Fails only on a client set-up error (bad URL or TLS
    /// material), which config validation already rules out.
    pub fn new(cfg: &RedisConfig, replica: impl Into<String>) -> Result<Arc<Redis>, String> {
        let fail = |e: redis::RedisError| format!("redis: cannot set up the client: {e}");
        if cfg.tls() {
            // redis' rustls connector uses the process-wide provider, which rustls cannot choose
            // itself when both ring and aws-lc-rs are compiled in (this tree has both); an error
            // means one is installed already, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let clients = if cfg.cluster {
            let infos = cfg
                .urls
                .iter()
                .map(|u| connection_info(u, cfg))
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?;
            let mut b = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.command_timeout)
                .retries(1);
            if cfg.tls() {
                b = b.tls(redis::TlsMode::Secure);
            }
            if let Some(pem) = &cfg.tls_ca {
                b = b.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
            let seeds = cfg
                .urls
                .iter()
                .map(|u| plain_client(u, cfg))
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?;
            Clients::Cluster(b.build().map_err(fail)?, seeds)
        } else {
            let url = cfg.urls.first().ok_or("redis: no URL")?;
            Clients::Single(plain_client(url, cfg).map_err(fail)?)
        };
        metrics::SHARED_STATE_UP.set(0);
        Ok(Arc::new(Redis {
            cfg: cfg.clone(),
            replica: replica.into(),
            clients,
            conn: tokio::sync::OnceCell::new(),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            health: Mutex::new(Health::Unknown),
            up: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
        }))
    }

    /// [`Redis::new`] with the connection made now (bounded by `connect_timeout`); a failure
    /// leaves the client in fallback, so this never blocks longer and never fails on an outage.
    pub async fn connect(
        cfg: &RedisConfig,
        replica: impl Into<String>,
    ) -> Result<Arc<Redis>, String> {
        let r = Redis::new(cfg, replica)?;
        let _ = r.ping().await;
        Ok(r)
    }

    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }

    /// This process's name in change notices.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// `{key_prefix}{suffix}`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.cfg.key_prefix)
    }

    /// The change-notice channel.
    pub fn changes_channel(&self) -> String {
        self.key("changes")
    }

    /// Whether the last call reached Redis (false before the first one, and in fallback).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `Err(Down)` while in fallback.
    fn gate(&self) -> Result<(), SharedError> {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        if until != 0 && self.now_ms() < until {
            Err(SharedError::Down)
        } else {
            Ok(())
        }
    }

    fn succeeded(&self) {
        if self.up.load(Ordering::Acquire) {
            return;
        }
        let mut h = self.health.lock();
        self.down_until_ms.store(0, Ordering::Relaxed);
        if *h != Health::Up {
            match *h {
                Health::Down => info!(
                    "shared state: redis {} answers again; OAuth1 nonces, change notices and the rate limit are fleet-wide again",
                    self.cfg.describe()
                ),
                _ => info!("shared state: connected to redis {}", self.cfg.describe()),
            }
            *h = Health::Up;
            self.up.store(true, Ordering::Release);
            metrics::SHARED_STATE_UP.set(1);
        }
    }

    fn failed(&self, op: &str, what: &str) {
        metrics::SHARED_STATE_ERRORS.with_label_values(&[op]).inc();
        let retry_ms = u64::try_from(self.cfg.retry.as_millis()).unwrap_or(u64::MAX);
        let mut h = self.health.lock();
        self.up.store(false, Ordering::Release);
        self.down_until_ms.store(
            self.now_ms().saturating_add(retry_ms).max(1),
            Ordering::Relaxed,
        );
        if *h != Health::Down {
            warn!(
                "shared state: redis {} failed ({op}: {what}); falling back to per-replica state (OAuth1 nonces, rate limit; change notices paused) and trying again every {}s",
                self.cfg.describe(),
                self.cfg.retry.as_secs()
            );
            *h = Health::Down;
            metrics::SHARED_STATE_UP.set(0);
        } else {
            debug!("shared state: redis still failing ({op}: {what})");
        }
    }

    /// The connection, made now if it is not yet (bounded by `connect_timeout`).
    async fn conn(&self) -> Result<Conn, SharedError> {
        let made = self
            .conn
            .get_or_try_init(|| async {
                let t = self.cfg.connect_timeout;
                let r = match &self.clients {
                    Clients::Single(c) => {
                        let mc = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(t))
                            .set_response_timeout(Some(self.cfg.command_timeout))
                            .set_number_of_retries(1)
                            .set_min_delay(Duration::from_millis(50))
                            .set_max_delay(self.cfg.retry);
                        tokio::time::timeout(t, ConnectionManager::new_with_config(c.clone(), mc))
                            .await
                            .map(|r| r.map(Conn::Single))
                    }
                    Clients::Cluster(c, _) => tokio::time::timeout(t, c.get_async_connection())
                        .await
                        .map(|r| r.map(Conn::Cluster)),
                };
                match r {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no connection within {t:?}")),
                }
            })
            .await;
        match made {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                self.failed("connect", &e);
                Err(SharedError::Down)
            }
        }
    }

    /// The outcome of one bounded call: fallback on an outage, `Command` on an error answer.
    fn finish<T>(
        &self,
        op: &str,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, SharedError> {
        match r {
            Ok(Ok(v)) => {
                self.succeeded();
                Ok(v)
            }
            Ok(Err(e)) if !is_outage(&e) => {
                // Redis answered: it is up, the command was wrong.
                self.succeeded();
                metrics::SHARED_STATE_ERRORS.with_label_values(&[op]).inc();
                Err(SharedError::Command(e.to_string()))
            }
            Ok(Err(e)) => {
                self.failed(op, &e.to_string());
                Err(SharedError::Down)
            }
            Err(_) => {
                self.failed(
                    op,
                    &format!("no answer within {:?}", self.cfg.command_timeout),
                );
                Err(SharedError::Down)
            }
        }
    }

    /// Runs one command (bounded by `command_timeout`; `Err(Down)` at once in fallback).
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, SharedError> {
        self.gate()?;
        let conn = self.conn().await?;
        let r = tokio::time::timeout(self.cfg.command_timeout, async move {
            match conn {
                Conn::Single(mut m) => cmd.query_async(&mut m).await,
                Conn::Cluster(mut m) => cmd.query_async(&mut m).await,
            }
        })
        .await;
        self.finish(op_label(cmd), r)
    }

    /// Runs a pipeline (bounded by `command_timeout`; `Err(Down)` at once in fallback). In
    /// cluster mode the keys of one pipeline should share a hash slot (`{...}` tags) when it is
    /// atomic.
    pub async fn pipe<T: FromRedisValue>(&self, p: &redis::Pipeline) -> Result<T, SharedError> {
        self.gate()?;
        let conn = self.conn().await?;
        let r = tokio::time::timeout(self.cfg.command_timeout, async move {
            match conn {
                Conn::Single(mut m) => p.query_async(&mut m).await,
                Conn::Cluster(mut m) => p.query_async(&mut m).await,
            }
        })
        .await;
        self.finish("pipeline", r)
    }

    /// `PING`: the health check.
    pub async fn ping(&self) -> Result<(), SharedError> {
        self.query::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    /// Publishes a change notice on `{prefix}changes` (errors are counted and logged by the
    /// client; a missed notice is caught by the periodic refresh).
    pub async fn announce(&self, account: &str, kind: &str, id: Option<u64>) {
        let notice = Notice {
            account: account.to_string(),
            kind: kind.to_string(),
            id,
            replica: self.replica.clone(),
        };
        let body = serde_json::to_string(&notice).unwrap_or_default();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.changes_channel()).arg(body);
        if let Err(e) = self.query::<i64>(&cmd).await {
            debug!("shared state: change notice for {account}/{kind} not sent: {e}");
        }
    }

    /// Whether the change-notice subscription is live.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Opens a pub/sub connection (in cluster mode to the first seed that answers).
    async fn pubsub(&self) -> Result<redis::aio::PubSub, String> {
        let candidates: Vec<&redis::Client> = match &self.clients {
            Clients::Single(c) => vec![c],
            Clients::Cluster(_, seeds) => seeds.iter().collect(),
        };
        let mut last = String::from("no server");
        for c in candidates {
            match tokio::time::timeout(self.cfg.connect_timeout, c.get_async_pubsub()).await {
                Ok(Ok(mut ps)) => {
                    match tokio::time::timeout(
                        self.cfg.connect_timeout,
                        ps.subscribe(self.changes_channel()),
                    )
                    .await
                    {
                        Ok(Ok(())) => return Ok(ps),
                        Ok(Err(e)) => last = e.to_string(),
                        Err(_) => last = "SUBSCRIBE timed out".into(),
                    }
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no connection within {:?}", self.cfg.connect_timeout),
            }
        }
        Err(last)
    }

    /// Listens for change notices until `shutdown`, waking `refresher` for every notice from
    /// another replica; reconnects with back-off.
    pub async fn run_subscriber(&self, refresher: &Refresher, mut shutdown: ShutdownWatch) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        let mut logged_loss = false;
        loop {
            match self.pubsub().await {
                Ok(ps) => {
                    backoff = Duration::from_millis(100);
                    self.subscribed.store(true, Ordering::Relaxed);
                    if first {
                        info!(
                            "shared state: listening for change notices on {}",
                            self.changes_channel()
                        );
                    } else {
                        info!("shared state: change notices resumed; refreshing once for the ones missed");
                        refresher.trigger();
                    }
                    first = false;
                    let mut stream = ps.into_on_message();
                    loop {
                        tokio::select! {
                            m = stream.next() => match m {
                                Some(msg) => self.on_notice(refresher, msg.get_payload_bytes()),
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                    self.subscribed.store(false, Ordering::Relaxed);
                    metrics::SHARED_STATE_ERRORS
                        .with_label_values(&["subscribe"])
                        .inc();
                    info!("shared state: the change-notice subscription was lost; reconnecting (the periodic refresh covers the gap)");
                    logged_loss = true;
                }
                Err(e) => {
                    metrics::SHARED_STATE_ERRORS
                        .with_label_values(&["subscribe"])
                        .inc();
                    if !logged_loss {
                        info!("shared state: cannot subscribe to change notices ({e}); retrying with back-off");
                        logged_loss = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(self.cfg.retry);
        }
    }

    fn on_notice(&self, refresher: &Refresher, payload: &[u8]) {
        match serde_json::from_slice::<Notice>(payload) {
            Ok(n) if n.replica == self.replica => {}
            Ok(n) => {
                debug!(
                    "shared state: change notice from {}: {} {} {:?}; refreshing",
                    n.replica, n.account, n.kind, n.id
                );
                metrics::SHARED_NOTICES.inc();
                refresher.trigger();
            }
            Err(e) => debug!("shared state: ignoring a malformed change notice ({e})"),
        }
    }

    /// Pings every second until `shutdown`: keeps the gauge true when nothing else calls, and
    /// is the call that ends a fallback once `retry_secs` have passed.
    pub async fn run_health(&self, mut shutdown: ShutdownWatch) {
        loop {
            let _ = self.ping().await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

static INSTALLED: OnceLock<Arc<Redis>> = OnceLock::new();

/// Makes `redis` the process's client for [`announce`] (first call wins).
pub fn install(redis: Arc<Redis>) {
    let _ = INSTALLED.set(redis);
}

/// The process's client, when `redis:` is configured.
pub fn installed() -> Option<&'static Arc<Redis>> {
    INSTALLED.get()
}

/// Announces a change to the other replicas in the background (nothing without Redis, or
/// outside a Tokio runtime). For callers without a handle, e.g. the lifecycle engine.
pub fn announce(account: &str, kind: &'static str, id: Option<u64>) {
    let (Some(r), Ok(rt)) = (installed(), tokio::runtime::Handle::try_current()) else {
        return;
    };
    let (r, account) = (r.clone(), account.to_string());
    rt.spawn(async move { r.announce(&account, kind, id).await });
}

/// The background service: health check and change-notice subscriber.
pub struct SharedService {
    pub redis: Arc<Redis>,
    pub refresher: Arc<Refresher>,
}

#[async_trait]
impl BackgroundService for SharedService {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::join!(
            self.redis.run_health(shutdown.clone()),
            self.redis.run_subscriber(&self.refresher, shutdown)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_labels_are_bounded() {
        assert_eq!(op_label(redis::cmd("set").arg("k")), "SET");
        assert_eq!(op_label(&redis::cmd("EVAL")), "EVAL");
        assert_eq!(op_label(&redis::cmd("FLUSHALL")), "other");
    }

    #[test]
    fn notices_round_trip() {
        let n = Notice {
            account: "acc".into(),
            kind: "mapping".into(),
            id: None,
            replica: "r1".into(),
        };
        let s = serde_json::to_string(&n).expect("json");
        assert_eq!(serde_json::from_str::<Notice>(&s).expect("parse"), n);
    }
}
