//! OAuth1 nonce replay cache with a fixed memory bound.
//!
//! RFC 5849 section 3.3: a server rejects a (consumer key, nonce, timestamp) it has seen before.
//! Requests are accepted only when `|now - oauth_timestamp| <= window`, so an entry is needed
//! only while its timestamp is inside the window; older ones are dropped on every insert.
//!
//! **Bound.** At most `capacity` entries are held (default 100 000). An entry is one
//! `(timestamp, Arc<str> key, Box<str> nonce)` in a `BTreeSet`: about 40 bytes plus the nonce
//! (at most [`MAX_NONCE_LEN`] bytes, typically 30-40) plus B-tree and allocator overhead,
//! so roughly 100-250 bytes each: about 10-25 MB at the default capacity. The per-key
//! `floor` map below has at most one entry per configured app key.
//!
//! **When full** (more than `capacity` signed requests within the window), the entry with the
//! oldest timestamp is evicted, and replay protection is kept exact by raising that key's
//! *floor* to the evicted timestamp: from then on a request from that key whose timestamp is at
//! or below the floor is refused as a possible replay (the cache can no longer prove it fresh).
//! So overload never lets a replay through; it makes the effective window shorter for clients
//! whose clocks lag, and [`NonceCache::stats`] counts both evictions and such refusals. Size the
//! capacity above `2 * window * peak signed requests per second` to avoid it.
//!
//! Only requests whose signature has already verified reach the cache, so unauthenticated
//! traffic cannot fill it.
//!
//! **Across replicas.** This cache is per process: without Redis, a nonce used on one replica
//! can be replayed once on each *other* replica within the window (each refuses its own
//! repeats). With `redis:` configured, the admin API also records every (key, timestamp, nonce)
//! in Redis ([`check_shared`]: `SET {prefix}nonce:{key}:{timestamp}:{nonce} 1 NX PX ...`,
//! expiring when the timestamp leaves the window), so a nonce seen by any replica is refused by
//! all. The local cache stays as the cheap first check. While Redis is down
//! ([`crate::shared`]'s fallback, logged once and shown by `mtls_gateway_shared_state_up`), the
//! local cache alone decides, as without Redis.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

/// Longest `oauth_nonce` accepted (bytes); longer ones are refused as malformed before they
/// reach the cache.
pub const MAX_NONCE_LEN: usize = 128;

/// Default number of entries.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A bounded set of recently seen (key, nonce, timestamp) triples.
#[derive(Debug)]
pub struct NonceCache {
    capacity: usize,
    window: i64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Ordered by timestamp first, so the oldest entry is `first()`.
    seen: BTreeSet<(i64, Arc<str>, Box<str>)>,
    /// Per key: the highest timestamp evicted while still inside the window.
    floor: HashMap<Arc<str>, i64>,
    evicted_live: u64,
    refused_below_floor: u64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceStats {
    pub entries: usize,
    pub capacity: usize,
    /// Entries evicted while still inside the window (the cache was full).
    pub evicted_live: u64,
    /// Requests refused because their timestamp was at or below an eviction floor.
    pub refused_below_floor: u64,
}

impl NonceCache {
    /// `capacity` is clamped to at least 1; `window_secs` must match the verifier's timestamp
    /// window.
    pub fn new(capacity: usize, window_secs: u64) -> Self {
        NonceCache {
            capacity: capacity.max(1),
            window: i64::try_from(window_secs).unwrap_or(i64::MAX),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records the triple and returns true when it is fresh; false for a replay (seen before, or
    /// at or below this key's eviction floor).
    pub fn check_and_insert(&self, key: &Arc<str>, nonce: &str, timestamp: i64, now: i64) -> bool {
        let mut inner = self.inner.lock();
        let oldest_needed = now.saturating_sub(self.window);
        while inner
            .seen
            .first()
            .is_some_and(|(ts, _, _)| *ts < oldest_needed)
        {
            inner.seen.pop_first();
        }
        inner.floor.retain(|_, ts| *ts >= oldest_needed);

        if inner
            .floor
            .get(key)
            .is_some_and(|floor| timestamp <= *floor)
        {
            inner.refused_below_floor += 1;
            return false;
        }
        let entry = (timestamp, key.clone(), Box::<str>::from(nonce));
        if !inner.seen.insert(entry) {
            return false;
        }
        if inner.seen.len() > self.capacity {
            if let Some((ts, k, _)) = inner.seen.pop_first() {
                let floor = inner.floor.entry(k).or_insert(ts);
                *floor = (*floor).max(ts);
                inner.evicted_live += 1;
            }
        }
        true
    }

    pub fn stats(&self) -> NonceStats {
        let inner = self.inner.lock();
        NonceStats {
            entries: inner.seen.len(),
            capacity: self.capacity,
            evicted_live: inner.evicted_live,
            refused_below_floor: inner.refused_below_floor,
        }
    }
}

/// Records `(key, timestamp, nonce)` in Redis: `Ok(true)` when it was not there (fresh),
/// `Ok(false)` for a replay seen by any replica, `Err` when Redis cannot say (fall back to the
/// local cache). The key expires when the timestamp leaves the window (`timestamp + window`,
/// at least one second from now). The timestamp is part of the key, as in the local cache.
pub async fn check_shared(
    redis: &crate::shared::Redis,
    key: &str,
    nonce: &str,
    timestamp: i64,
    now: i64,
    window_secs: i64,
) -> Result<bool, crate::shared::SharedError> {
    let ttl_ms = timestamp
        .saturating_add(window_secs)
        .saturating_sub(now)
        .saturating_add(1)
        .clamp(1, i64::MAX / 1000)
        * 1000;
    let mut cmd = redis::cmd("SET");
    cmd.arg(redis.key(&format!("nonce:{key}:{timestamp}:{nonce}")))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms);
    let set: Option<String> = redis.query(&cmd).await?;
    Ok(set.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn same_triple_twice_is_a_replay() {
        let c = NonceCache::new(10, 300);
        assert!(c.check_and_insert(&key("a"), "n1", 1000, 1000));
        assert!(!c.check_and_insert(&key("a"), "n1", 1000, 1001));
    }

    #[test]
    fn same_nonce_with_other_key_or_timestamp_is_fresh() {
        let c = NonceCache::new(10, 300);
        assert!(c.check_and_insert(&key("a"), "n1", 1000, 1000));
        assert!(c.check_and_insert(&key("b"), "n1", 1000, 1000));
        assert!(c.check_and_insert(&key("a"), "n1", 1001, 1001));
    }

    #[test]
    fn entries_older_than_the_window_are_dropped() {
        let c = NonceCache::new(10, 300);
        for i in 0..5 {
            assert!(c.check_and_insert(&key("a"), &format!("n{i}"), 1000, 1000));
        }
        assert!(c.check_and_insert(&key("a"), "later", 1400, 1400));
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn memory_stays_at_capacity_and_evicted_timestamps_stay_refused() {
        let c = NonceCache::new(3, 300);
        for i in 0..10 {
            assert!(c.check_and_insert(&key("a"), &format!("n{i}"), 1000 + i, 1010));
        }
        let s = c.stats();
        assert_eq!(s.entries, 3);
        assert_eq!(s.evicted_live, 7);
        // n0 (ts 1000) was evicted: replaying it must still fail.
        assert!(!c.check_and_insert(&key("a"), "n0", 1000, 1010));
        // A fresh request with a current timestamp passes.
        assert!(c.check_and_insert(&key("a"), "fresh", 1010, 1010));
        // Another key is not affected by a's floor.
        assert!(c.check_and_insert(&key("b"), "x", 1000, 1010));
    }
}
