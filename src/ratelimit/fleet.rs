//! The fleet-wide tier of the per-client-IP rate limit: one limit of `L` requests per window for
//! a client across every replica, over a shared counter (Redis), with the decision still taken
//! synchronously on the request path and no round trip for clients below a local allowance.
//!
//! ## The algorithm: a local allowance, then leases from the fleet counter
//! Notation: `L` = `rate_limit.requests_per_second`, `N` replicas, `f` =
//! `rate_limit.fleet.local_allowance`, `c` = `rate_limit.fleet.chunk` (both default to
//! `max(1, floor(L / (2 x fleet.replicas)))`, i.e. 1 for `L` = 10 and 3 replicas).
//!
//! - **Windows** are whole seconds of Unix time (`window = unix_ms / 1000`), the same on every
//!   replica (their clocks agree to NTP precision). The fleet counter of a client and window is
//!   the Redis key `rl:{<window>}:<ip>` (hash-tagged by window so a batch is one slot; it expires
//!   after 3 s).
//! - **Local count.** Each replica counts every request in a count-min sketch per window (as the
//!   local limit always did). A client with fewer than `f` requests on this replica in the window
//!   is admitted from that count alone: no lock, no map, no Redis (the cold path).
//! - **Lease.** At its `f`-th request on a replica a client becomes *hot* there: the replica keeps a
//!   small record (`used`, `granted`, `charged`) and a background task *claims* tokens for it: one
//!   `INCRBY key d` + `PEXPIRE` with `d` = the requests admitted here and not yet charged (the `f`
//!   free ones the first time) + `c` tokens ahead. Redis answers the new total `T`; the tokens of
//!   this claim that fit under the limit, `fit = min(d, max(0, L - (T - d)))`, are granted to the
//!   replica; `T >= L` marks the client saturated for the window. Claims of all hot clients that
//!   are due are sent in one pipeline (one round trip per batch, never more than one in flight).
//! - **Decision** (synchronous, in `allow`): a hot client is admitted iff
//!   `used < max(f, granted)`. When its granted tokens run out and it is not saturated, the next
//!   claim is queued at once (prefetch), so a client below the limit finds its next tokens there.
//!   A request beyond the grant while a claim is in flight is refused (never admitted on credit).
//!
//! ## Error bounds (per client and window, while the counter answers)
//! - **Grants never exceed `L`**: Redis serializes the `INCRBY`s, and each claim takes only what
//!   fits under `L` after all earlier ones, so the sum of grants over the fleet is at most `L`.
//! - **Over-admission** comes only from local allowances: a replica admits at most `max(f,
//!   granted)` requests of a client, and the first claim to reach Redis in a window always fits
//!   its free requests, so the fleet admits at most **`L + (N - 1) x f`** requests per window, in
//!   any order and at any request rate. That worst case needs a crafted order (the client
//!   exhausts the limit through one replica, then sends `f` requests to each other one). With
//!   the client's requests taken in turn by the replicas (round-robin), every replica's free
//!   requests are among the client's first `N x f` in the window, and when it claims, the others
//!   have charged at most `f + c` each, so its free requests still fit if `N x (f + c) <= L`
//!   (true with the defaults): **at most `L`**. (This assumes its claim reaches Redis before the
//!   others' next ones, i.e. requests further apart than a round trip; beyond that the general
//!   bound applies.) For `L` = 10, `N` = 3 and the
//!   defaults: at most 10 under round-robin (measured: `three_replicas_round_robin_*` in the unit
//!   and integration tests), 12 in the crafted worst case.
//! - **Clock skew** of `d` ms between replicas moves requests across the window edge: an outside
//!   observer counting by its own clock may see up to `R x d / 1000` more in one window (`R` =
//!   the client's rate) and as many fewer in the next; the fixed-window edge effect of the local
//!   limit (up to `2 x L` across an edge) is unchanged.
//! - **Under-admission** (a client refused below `L`): tokens claimed ahead by a replica that
//!   then stops seeing the client stay unused, at most `N x c` per window; and a replica that
//!   receives more than `f + c` requests of one client within one round trip refuses the excess
//!   until the next claim returns (a burst; raise `chunk` to soften it at the cost of more
//!   unused tokens).
//! - **Redis traffic**: none for a client below `f` requests per window on every replica; for a
//!   hot client about `1 + used / c` claims per replica and window, batched with the other hot
//!   clients into one round trip; plus a 1-per-second probe while idle.
//!
//! ## When the counter is slow or down: local fallback
//! Every round trip (a batch of claims or a probe) has a budget, `rate_limit.fleet.timeout_ms`
//! (default 50 ms). A failure or a timeout switches the replica to its **local limit** (`L` per
//! replica, as without Redis: the fleet admits at most `N x L` while it lasts), sets
//! `mtls_gateway_rate_limit_fleet_mode` to 0 and logs one line. The request path never waits:
//! until the switch, hot clients beyond their grant are refused (at most one budget long), cold
//! ones are admitted as before. While idle a probe runs every second, so a dead counter is noticed
//! within 1 s + the budget even without hot clients. In fallback the counter is probed every
//! `rate_limit.fleet.retry_ms` (default 1 s); on the first answer the gauge returns to 1, one line
//! is logged, and the fleet limit applies again from the **next window** (so no window mixes
//! uncharged local admissions with fleet accounting): recovery within `retry + timeout + 1 s`
//! of Redis answering again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_limits::estimator::Estimator;
use tokio::sync::Notify;

use crate::config::RateLimitFleetConfig;
use crate::metrics;

/// The shared counter under the fleet tier.
#[async_trait]
pub trait FleetCounter: Send + Sync + 'static {
    /// Adds each `n` to the counter `key` (created at 0; expiring `ttl_ms` after this call) and
    /// returns the new totals across the fleet, in order. One round trip for the whole slice.
    async fn add(&self, adds: &[(String, u64)], ttl_ms: u64) -> Result<Vec<u64>, String>;
}

/// An in-process counter: unit tests and benches (several limiters sharing one `Arc`), with
/// switches to fail or to answer late.
#[derive(Default)]
pub struct MemoryCounter {
    map: Mutex<HashMap<String, u64>>,
    failing: AtomicBool,
    delay_ms: AtomicU64,
    calls: AtomicU64,
}

impl MemoryCounter {
    pub fn new() -> MemoryCounter {
        MemoryCounter::default()
    }
    /// While `true`, every `add` fails.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
    /// Every `add` answers after `d`.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
    /// Round trips answered so far (claims and probes).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    /// The sum of the counters whose key contains `part` (e.g. a client's address).
    pub fn total(&self, part: &str) -> u64 {
        self.map
            .lock()
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(_, v)| *v)
            .sum()
    }
}

#[async_trait]
impl FleetCounter for MemoryCounter {
    async fn add(&self, adds: &[(String, u64)], _ttl_ms: u64) -> Result<Vec<u64>, String> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err("memory counter: failing on purpose".into());
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock();
        Ok(adds
            .iter()
            .map(|(k, n)| {
                let v = map.entry(k.clone()).or_insert(0);
                *v += n;
                *v
            })
            .collect())
    }
}

/// The counter on Redis: one pipeline of `INCRBY` + `PEXPIRE` per key, over any async connection
/// (`redis::aio::ConnectionManager`, a cluster connection). Keys are `prefix` + the limiter's key.
pub struct RedisCounter<C> {
    conn: C,
    prefix: String,
}

impl<C> RedisCounter<C> {
    pub fn new(conn: C, prefix: impl Into<String>) -> RedisCounter<C> {
        RedisCounter {
            conn,
            prefix: prefix.into(),
        }
    }
}

#[async_trait]
impl<C> FleetCounter for RedisCounter<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn add(&self, adds: &[(String, u64)], ttl_ms: u64) -> Result<Vec<u64>, String> {
        let mut pipe = redis::pipe();
        for (key, n) in adds {
            let key = format!("{}{key}", self.prefix);
            pipe.cmd("INCRBY").arg(&key).arg(*n);
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<Vec<u64>>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A fleet counter key expires this long after its last claim (the window is 1 s; the rest is
/// margin for clock skew).
const KEY_TTL_MS: u64 = 3000;
const SHARDS: usize = 16;
const HASHES: usize = 4;

/// Where the time comes from: the system clock, or a hand-moved one (tests).
pub(crate) enum Clock {
    System,
    #[cfg_attr(not(test), allow(dead_code))]
    Manual(Arc<AtomicU64>),
}

impl Clock {
    fn now_ms(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            Clock::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }
}

/// One hot client on this replica, in one window.
#[derive(Debug, Clone, Copy)]
struct Lease {
    window: u64,
    /// Requests admitted here in the window.
    used: u64,
    /// Tokens of the fleet budget granted to this replica (the free requests that fit included).
    granted: u64,
    /// Tokens added to the fleet counter by this replica.
    charged: u64,
    /// The fleet counter reached the limit.
    saturated: bool,
    /// A claim is queued or in flight.
    pending: bool,
}

impl Lease {
    fn new(window: u64, used: u64) -> Lease {
        Lease {
            window,
            used,
            granted: 0,
            charged: 0,
            saturated: false,
            pending: false,
        }
    }
}

struct Slot {
    sketch: Estimator,
    /// The window this sketch counts (`u64::MAX`: none yet).
    window: AtomicU64,
}

struct Inner {
    limit: u64,
    allowance: u64,
    chunk: u64,
    timeout: Duration,
    retry: Duration,
    clock: Clock,
    slots: [Slot; 2],
    leases: Vec<Mutex<HashMap<IpAddr, Lease>>>,
    shard_cap: usize,
    queue: Mutex<Vec<IpAddr>>,
    wake: Arc<Notify>,
    counter: Arc<dyn FleetCounter>,
    /// The counter answers (fleet mode).
    up: AtomicBool,
    /// The first window decided by the fleet after the last recovery.
    fleet_from: AtomicU64,
    /// Round trips in flight (0 or 1), for tests.
    busy: AtomicUsize,
}

/// The fleet tier: see the module docs.
pub struct FleetLimiter {
    inner: Arc<Inner>,
}

impl FleetLimiter {
    /// Starts the tier (its background task runs on a thread of its own) in fleet mode.
    pub fn new(
        limit: u32,
        expected_clients: usize,
        cfg: &RateLimitFleetConfig,
        counter: Arc<dyn FleetCounter>,
    ) -> FleetLimiter {
        FleetLimiter::with_clock(limit, expected_clients, cfg, counter, Clock::System)
    }

    pub(crate) fn with_clock(
        limit: u32,
        expected_clients: usize,
        cfg: &RateLimitFleetConfig,
        counter: Arc<dyn FleetCounter>,
        clock: Clock,
    ) -> FleetLimiter {
        let slots = (expected_clients * 2).next_power_of_two();
        let slot = || Slot {
            sketch: Estimator::new(HASHES, slots),
            window: AtomicU64::new(u64::MAX),
        };
        let inner = Arc::new(Inner {
            limit: u64::from(limit),
            allowance: u64::from(cfg.local_allowance.max(1)),
            chunk: u64::from(cfg.chunk.max(1)),
            timeout: cfg.timeout,
            retry: cfg.retry,
            clock,
            slots: [slot(), slot()],
            leases: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_cap: expected_clients / SHARDS + 1,
            queue: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
            counter,
            up: AtomicBool::new(true),
            fleet_from: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        });
        metrics::RATE_LIMIT_FLEET_MODE.set(1);
        let weak = Arc::downgrade(&inner);
        let wake = inner.wake.clone();
        let spawned = std::thread::Builder::new()
            .name("rate-limit-fleet".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(weak, wake)),
                    Err(e) => log::error!("rate limit: fleet tier not started: {e}"),
                }
            });
        if let Err(e) = spawned {
            log::error!("rate limit: fleet tier not started: {e}");
        }
        FleetLimiter { inner }
    }

    /// `true` while the limit is fleet-wide, `false` in local fallback.
    pub fn is_fleet(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// Count one request for `client`; `true` when it is within the limit. Never waits.
    pub fn allow(&self, client: &IpAddr) -> bool {
        let inner = &*self.inner;
        let w = inner.clock.now_ms() / 1000;
        let n = inner.observe(client, w);
        if !inner.up.load(Ordering::Relaxed) || w < inner.fleet_from.load(Ordering::Relaxed) {
            return n <= inner.limit;
        }
        if n < inner.allowance {
            return true;
        }
        inner.hot(client, w, n)
    }

    /// Waits until no claim is queued or in flight (tests: makes a simulated sequence
    /// deterministic). `false` after `max`.
    #[doc(hidden)]
    pub fn settle(&self, max: Duration) -> bool {
        let end = Instant::now() + max;
        while Instant::now() < end {
            if self.inner.queue.lock().is_empty() && self.inner.busy.load(Ordering::SeqCst) == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    }
}

impl Inner {
    /// Counts the request in window `w`'s sketch; the count so far, this request included.
    fn observe(&self, ip: &IpAddr, w: u64) -> u64 {
        let slot = &self.slots[(w & 1) as usize];
        let seen = slot.window.load(Ordering::Acquire);
        if seen != w
            && (seen == u64::MAX || seen < w)
            && slot
                .window
                .compare_exchange(seen, w, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // First request of the window on this slot (unless the background task cleared it
            // ahead): clear the counts of two windows ago. Requests racing this reset may see a
            // partly cleared sketch, as with `pingora_limits::rate::Rate`.
            slot.sketch.reset();
        }
        slot.sketch.incr(ip, 1).max(0) as u64
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, Lease>> {
        let h = match ip {
            IpAddr::V4(a) => u32::from(*a) as u64,
            IpAddr::V6(a) => {
                let v = u128::from(*a);
                (v as u64) ^ ((v >> 64) as u64)
            }
        };
        let h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        &self.leases[h as usize % SHARDS]
    }

    /// The hot path of a client at or past its local allowance in window `w` (`n`: its local count).
    fn hot(&self, ip: &IpAddr, w: u64, n: u64) -> bool {
        let mut shard = self.shard(ip).lock();
        if shard.len() >= self.shard_cap && !shard.contains_key(ip) {
            // More hot clients than `expected_clients`: decide this one locally.
            return n <= self.limit;
        }
        let lease = shard
            .entry(*ip)
            .or_insert_with(|| Lease::new(w, n.saturating_sub(1)));
        if lease.window != w {
            *lease = Lease::new(w, n.saturating_sub(1));
        }
        let admit = lease.used < self.allowance.max(lease.granted);
        if admit {
            lease.used += 1;
        }
        let claim = !lease.saturated && !lease.pending && lease.granted <= lease.used;
        if claim {
            lease.pending = true;
        }
        drop(shard);
        if claim {
            self.queue.lock().push(*ip);
            self.wake.notify_one();
        }
        admit
    }

    /// Builds the claims of the queued clients (charging them in their leases).
    fn take_claims(&self, w: u64) -> Vec<(IpAddr, u64, u64)> {
        let ips = std::mem::take(&mut *self.queue.lock());
        let mut claims = Vec::with_capacity(ips.len());
        for ip in ips {
            let mut shard = self.shard(&ip).lock();
            let Some(lease) = shard.get_mut(&ip) else {
                continue;
            };
            if !lease.pending {
                continue;
            }
            if lease.window != w || lease.saturated {
                lease.pending = false;
                continue;
            }
            let d = lease.used.saturating_sub(lease.charged) + self.chunk;
            lease.charged += d;
            claims.push((ip, lease.window, d));
        }
        claims
    }

    /// Applies the fleet totals answered for `claims`.
    fn apply(&self, claims: &[(IpAddr, u64, u64)], totals: &[u64]) {
        let mut again = Vec::new();
        for (&(ip, window, d), &total) in claims.iter().zip(totals) {
            let mut shard = self.shard(&ip).lock();
            let Some(lease) = shard.get_mut(&ip) else {
                continue;
            };
            if lease.window != window {
                continue;
            }
            let before = total.saturating_sub(d);
            let fit = self.limit.saturating_sub(before).min(d);
            lease.granted += fit;
            lease.saturated |= total >= self.limit;
            lease.pending = false;
            if !lease.saturated && lease.granted <= lease.used {
                // Used up while the claim was in flight: the next one at once.
                lease.pending = true;
                again.push(ip);
            }
        }
        if !again.is_empty() {
            self.queue.lock().extend(again);
            self.wake.notify_one();
        }
    }

    /// Forgets the claims of a failed round trip (their leases stop waiting).
    fn drop_claims(&self, claims: &[(IpAddr, u64, u64)]) {
        for (ip, _, _) in claims {
            if let Some(l) = self.shard(ip).lock().get_mut(ip) {
                l.pending = false;
            }
        }
        for ip in std::mem::take(&mut *self.queue.lock()) {
            if let Some(l) = self.shard(&ip).lock().get_mut(&ip) {
                l.pending = false;
            }
        }
    }

    /// Once per window: clears the sketch of the next window ahead of time and forgets leases of
    /// past windows.
    fn housekeeping(&self, w: u64) {
        let next = &self.slots[((w + 1) & 1) as usize];
        let seen = next.window.load(Ordering::Acquire);
        if (seen == u64::MAX || seen < w + 1)
            && next
                .window
                .compare_exchange(seen, w + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            next.sketch.reset();
        }
        for shard in &self.leases {
            shard.lock().retain(|_, l| l.window >= w);
        }
    }

    /// One round trip within the budget.
    async fn round_trip(&self, adds: &[(String, u64)]) -> Result<Vec<u64>, String> {
        match tokio::time::timeout(self.timeout, self.counter.add(adds, KEY_TTL_MS)).await {
            Ok(Ok(totals)) if totals.len() == adds.len() => {
                metrics::RATE_LIMIT_FLEET_SYNCS
                    .with_label_values(&["ok"])
                    .inc();
                Ok(totals)
            }
            Ok(Ok(totals)) => {
                metrics::RATE_LIMIT_FLEET_SYNCS
                    .with_label_values(&["error"])
                    .inc();
                Err(format!(
                    "{} totals answered for {} counters",
                    totals.len(),
                    adds.len()
                ))
            }
            Ok(Err(e)) => {
                metrics::RATE_LIMIT_FLEET_SYNCS
                    .with_label_values(&["error"])
                    .inc();
                Err(e)
            }
            Err(_) => {
                metrics::RATE_LIMIT_FLEET_SYNCS
                    .with_label_values(&["timeout"])
                    .inc();
                Err(format!("no answer within {} ms", self.timeout.as_millis()))
            }
        }
    }

    async fn probe(&self) -> Result<Vec<u64>, String> {
        self.round_trip(&[("rl:{probe}".to_string(), 0)]).await
    }

    fn go_down(&self, why: &str) {
        if self.up.swap(false, Ordering::SeqCst) {
            metrics::RATE_LIMIT_FLEET_MODE.set(0);
            log::warn!(
                "rate limit: the fleet counter failed ({why}); each replica now applies rate_limit.requests_per_second on its own until it answers again"
            );
        }
    }

    fn go_up(&self) {
        let w = self.clock.now_ms() / 1000;
        self.fleet_from.store(w + 1, Ordering::SeqCst);
        if !self.up.swap(true, Ordering::SeqCst) {
            metrics::RATE_LIMIT_FLEET_MODE.set(1);
            log::info!(
                "rate limit: the fleet counter answers again; the limit is fleet-wide again from the next second"
            );
        }
    }
}

fn key(window: u64, ip: &IpAddr) -> String {
    format!("rl:{{{window}}}:{ip}")
}

/// The background task: sends due claims (one batch per round trip), probes when idle or down,
/// keeps the windows tidy. Ends when the limiter is dropped.
async fn run(weak: Weak<Inner>, wake: Arc<Notify>) {
    let mut last_ok = Instant::now();
    let mut tidy_window = u64::MAX;
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let now = inner.clock.now_ms();
        let w = now / 1000;
        if tidy_window != w && now % 1000 >= 500 {
            inner.housekeeping(w);
            tidy_window = w;
        }
        if !inner.up.load(Ordering::SeqCst) {
            inner.drop_claims(&[]);
            let retry = inner.retry;
            drop(inner);
            tokio::time::sleep(retry).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.probe().await.is_ok() {
                last_ok = Instant::now();
                inner.go_up();
            }
            continue;
        }
        inner.busy.fetch_add(1, Ordering::SeqCst);
        let claims = inner.take_claims(w);
        if claims.is_empty() {
            inner.busy.fetch_sub(1, Ordering::SeqCst);
            if last_ok.elapsed() >= Duration::from_secs(1) {
                match inner.probe().await {
                    Ok(_) => last_ok = Instant::now(),
                    Err(e) => inner.go_down(&e),
                }
                continue;
            }
            // Sleep until woken by a claim, or until the middle of the window (housekeeping) or
            // the next probe, whichever comes first.
            let to_mid = if now % 1000 < 500 {
                500 - now % 1000
            } else {
                1500 - now % 1000
            };
            let wait = Duration::from_millis(to_mid.clamp(10, 500));
            drop(inner);
            let _ = tokio::time::timeout(wait, wake.notified()).await;
            continue;
        }
        let adds: Vec<(String, u64)> = claims.iter().map(|(ip, w, d)| (key(*w, ip), *d)).collect();
        metrics::RATE_LIMIT_FLEET_CLAIMS.inc_by(adds.len() as u64);
        match inner.round_trip(&adds).await {
            Ok(totals) => {
                last_ok = Instant::now();
                inner.apply(&claims, &totals);
            }
            Err(e) => {
                inner.drop_claims(&claims);
                inner.go_down(&e);
            }
        }
        inner.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fleet counter on the gateway's shared Redis client (`redis:`): its key prefix (which
/// config validation keeps free of braces, so the window's hash tag decides the Cluster slot),
/// its command timeout and its fallback state (while Redis is down every claim fails at once and
/// the limiter counts locally).
pub struct SharedCounter(pub Arc<crate::shared::Redis>);

#[async_trait]
impl FleetCounter for SharedCounter {
    async fn add(&self, adds: &[(String, u64)], ttl_ms: u64) -> Result<Vec<u64>, String> {
        let mut pipe = redis::pipe();
        for (key, n) in adds {
            let key = self.0.key(key);
            pipe.cmd("INCRBY").arg(&key).arg(*n);
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
        }
        self.0
            .pipe::<Vec<u64>>(&pipe)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RateLimitFleetConfig {
        RateLimitFleetConfig::defaults(10, 3)
    }

    struct Fleet {
        clock: Arc<AtomicU64>,
        counter: Arc<MemoryCounter>,
        replicas: Vec<FleetLimiter>,
    }

    impl Fleet {
        fn new(n: usize, cfg: &RateLimitFleetConfig) -> Fleet {
            // Start mid-window, well away from an edge.
            let clock = Arc::new(AtomicU64::new(1_700_000_000_100));
            let counter = Arc::new(MemoryCounter::new());
            let replicas = (0..n)
                .map(|_| {
                    FleetLimiter::with_clock(
                        10,
                        1024,
                        cfg,
                        counter.clone(),
                        Clock::Manual(clock.clone()),
                    )
                })
                .collect();
            Fleet {
                clock,
                counter,
                replicas,
            }
        }
        fn advance(&self, ms: u64) {
            self.clock.fetch_add(ms, Ordering::SeqCst);
        }
        fn settle(&self) {
            for r in &self.replicas {
                assert!(r.settle(Duration::from_secs(2)), "claims never settled");
            }
        }
        /// `per_window` requests of `ip` spread evenly over one window, round-robin over the
        /// replicas; admitted count.
        fn round_robin_window(&self, ip: &IpAddr, per_window: u64) -> usize {
            // From the start of the next window.
            let now = self.clock.load(Ordering::SeqCst);
            self.advance(1000 - now % 1000);
            let step = 1000 / per_window;
            let mut admitted = 0;
            for i in 0..per_window {
                if self.replicas[i as usize % self.replicas.len()].allow(ip) {
                    admitted += 1;
                }
                self.settle();
                self.advance(step);
            }
            admitted
        }
    }

    fn ip(last: u8) -> IpAddr {
        [10, 1, 2, last].into()
    }

    #[test]
    fn three_replicas_round_robin_at_three_times_the_limit_admit_at_most_the_limit() {
        let fleet = Fleet::new(3, &cfg());
        let client = ip(1);
        for window in 0..3 {
            let admitted = fleet.round_robin_window(&client, 30);
            eprintln!("window {window}: {admitted} of 30 admitted");
            // Stated bound: L under round-robin (L + (N-1) x f = 12 in the worst order).
            assert!(admitted <= 10, "window {window}: {admitted} admitted");
            // And not far below it: unused tokens are at most N x c = 3.
            assert!(admitted >= 7, "window {window}: {admitted} admitted");
        }
        // Another client is unaffected.
        assert!(fleet.replicas[1].allow(&ip(2)));
    }

    #[test]
    fn round_robin_at_other_rates_stays_within_the_bound() {
        for per_window in [11u64, 20, 60, 100] {
            let fleet = Fleet::new(3, &cfg());
            let admitted = fleet.round_robin_window(&ip(3), per_window);
            eprintln!("{per_window}/s round-robin: {admitted} admitted");
            assert!(admitted <= 10, "{per_window}/s: {admitted} admitted");
        }
    }

    #[test]
    fn the_crafted_worst_order_stays_within_l_plus_n_minus_1_times_f() {
        let fleet = Fleet::new(3, &cfg());
        let client = ip(4);
        let mut admitted = 0;
        // Everything through replica 0 first, then the others.
        for r in 0..3 {
            for _ in 0..15 {
                if fleet.replicas[r].allow(&client) {
                    admitted += 1;
                }
                fleet.settle();
            }
        }
        eprintln!("crafted order: {admitted} admitted");
        assert!(admitted <= 10 + 2, "{admitted} admitted");
    }

    #[test]
    fn a_client_far_below_the_limit_sends_nothing_to_the_counter() {
        let c = RateLimitFleetConfig {
            local_allowance: 3,
            ..cfg()
        };
        let fleet = Fleet::new(3, &c);
        let before = fleet.counter.calls();
        // 6 requests per window over 3 replicas: 2 per replica, below the allowance of 3.
        for _ in 0..2 {
            assert_eq!(fleet.round_robin_window(&ip(5), 6), 6);
        }
        assert_eq!(
            fleet.counter.calls(),
            before,
            "no round trip for a cold client"
        );
    }

    #[test]
    fn a_failing_counter_falls_back_to_the_local_limit_and_recovers() {
        let c = RateLimitFleetConfig {
            retry: Duration::from_millis(20),
            timeout: Duration::from_millis(30),
            ..cfg()
        };
        let fleet = Fleet::new(3, &c);
        let client = ip(6);
        fleet.counter.set_failing(true);
        // The first claim fails: every replica falls back within the budget.
        for r in &fleet.replicas {
            for _ in 0..2 {
                r.allow(&client);
            }
        }
        let t = Instant::now();
        while fleet.replicas.iter().any(|r| r.is_fleet()) {
            assert!(t.elapsed() < Duration::from_secs(1), "no fallback");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(metrics::RATE_LIMIT_FLEET_MODE.get(), 0);
        // Next window, local limits: each replica admits up to L on its own.
        fleet.advance(1000);
        let local = fleet.round_robin_window(&client, 30);
        assert!(local > 10 && local <= 30, "local fallback admitted {local}");
        // The counter answers again: back to fleet mode, the fleet limit from the next window.
        fleet.counter.set_failing(false);
        let t = Instant::now();
        while !fleet.replicas.iter().all(|r| r.is_fleet()) {
            assert!(t.elapsed() < Duration::from_secs(2), "no recovery");
            std::thread::sleep(Duration::from_millis(2));
        }
        fleet.advance(1000);
        let admitted = fleet.round_robin_window(&client, 30);
        assert!(admitted <= 10, "after recovery: {admitted} admitted");
    }

    #[test]
    fn a_slow_counter_is_a_failing_one_and_requests_never_wait() {
        let c = RateLimitFleetConfig {
            timeout: Duration::from_millis(20),
            retry: Duration::from_millis(20),
            ..cfg()
        };
        let fleet = Fleet::new(1, &c);
        fleet.counter.set_delay(Duration::from_millis(200));
        let t = Instant::now();
        for _ in 0..5 {
            fleet.replicas[0].allow(&ip(7));
        }
        assert!(t.elapsed() < Duration::from_millis(50), "allow waited");
        let t = Instant::now();
        while fleet.replicas[0].is_fleet() {
            assert!(t.elapsed() < Duration::from_millis(500), "no fallback");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
