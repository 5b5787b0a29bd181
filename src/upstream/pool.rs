//! The upstream connection pool of the lean HTTP/1 loop: idle TLS connections keyed by target
//! address, client identity (the leaf certificate's SHA-256) and SNI, so that two identities
//! never share a connection whatever their serial numbers, last in first out per key, the least
//! recently used evicted when full, and idle ones dropped after `upstream.idle_timeout`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::warn;
use parking_lot::Mutex;

use super::tls::UpConn;

/// Pool key: the target address and the client identity (leaf certificate SHA-256; zeros for
/// plain TLS). The SNI is compared on checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) addr: SocketAddr,
    pub(crate) identity: [u8; 32],
}

struct Idle<S> {
    sni: Box<str>,
    since: Instant,
    /// Position in the pool's least-recently-used order.
    seq: u64,
    stream: S,
}

/// How many of the least recently used connections eviction looks at for a duplicate.
const EVICT_SCAN: usize = 64;

/// Idle upstream connections, most recently used first out; bounded in total
/// (`upstream.keepalive_pool_size`, the least recently used one is closed to make room) and in
/// age (`upstream.idle_timeout`).
pub(crate) struct Pool<S = UpConn> {
    inner: Mutex<PoolInner<S>>,
    max: usize,
    idle: Duration,
}

struct PoolInner<S> {
    map: HashMap<PoolKey, Vec<Idle<S>>>,
    /// `seq` -> key, oldest first.
    order: BTreeMap<u64, PoolKey>,
    seq: u64,
}

impl<S> Default for PoolInner<S> {
    fn default() -> Self {
        PoolInner {
            map: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<S> PoolInner<S> {
    /// Remove the connection `seq` of `key` (known to be pooled).
    fn remove(&mut self, key: &PoolKey, seq: u64) -> Option<Idle<S>> {
        self.order.remove(&seq);
        let list = self.map.get_mut(key)?;
        let pos = list.iter().position(|c| c.seq == seq)?;
        let c = list.remove(pos);
        if list.is_empty() {
            self.map.remove(key);
        }
        Some(c)
    }
}

impl<S> Pool<S> {
    pub(crate) fn new(max: usize, idle: Duration) -> Pool<S> {
        Pool {
            inner: Mutex::new(PoolInner::default()),
            max,
            idle,
        }
    }

    pub(crate) fn take(&self, key: &PoolKey, sni: &str) -> Option<S> {
        let mut expired = Vec::new();
        let found = {
            let mut g = self.inner.lock();
            loop {
                let seq = g
                    .map
                    .get(key)?
                    .iter()
                    .rev()
                    .find(|c| &*c.sni == sni)
                    .map(|c| c.seq)?;
                let Some(c) = g.remove(key, seq) else {
                    break None;
                };
                if c.since.elapsed() < self.idle {
                    break Some(c.stream);
                }
                expired.push(c);
            }
        };
        drop(expired); // closed outside the lock
        found
    }

    pub(crate) fn put(&self, key: PoolKey, sni: &str, stream: S) {
        if self.max == 0 {
            return;
        }
        let mut evicted = None;
        {
            let mut g = self.inner.lock();
            if g.order.len() >= self.max {
                // Close the least recently used connection of a target+identity that has
                // another one idle, so that every identity keeps one while it can (looking at
                // the oldest few only); else the least recently used of all.
                let victim = g
                    .order
                    .iter()
                    .take(EVICT_SCAN)
                    .find(|(_, k)| g.map.get(*k).is_some_and(|l| l.len() > 1))
                    .or_else(|| g.order.iter().next())
                    .map(|(seq, k)| (*seq, *k));
                if let Some((seq, k)) = victim {
                    evicted = g.remove(&k, seq);
                }
            }
            g.seq += 1;
            let seq = g.seq;
            g.order.insert(seq, key);
            g.map.entry(key).or_default().push(Idle {
                sni: sni.into(),
                since: Instant::now(),
                seq,
                stream,
            });
        }
        if evicted.is_some() {
            warn_pool_full();
        }
    }

    pub(crate) fn sweep(&self) {
        let mut expired = Vec::new();
        {
            let mut g = self.inner.lock();
            let old: Vec<(PoolKey, u64)> = g
                .map
                .iter()
                .flat_map(|(k, list)| {
                    list.iter()
                        .filter(|c| c.since.elapsed() >= self.idle)
                        .map(move |c| (*k, c.seq))
                })
                .collect();
            for (k, seq) in old {
                expired.extend(g.remove(&k, seq));
            }
        }
        drop(expired);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().order.len()
    }

    pub(crate) fn clear(&self) {
        let old = std::mem::take(&mut *self.inner.lock());
        drop(old);
    }
}

/// Logged at most once a minute: connections beyond the pool size are closed, not kept.
fn warn_pool_full() {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = LAST.lock();
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
        *last = Some(Instant::now());
        warn!("upstream keep-alive pool is full (upstream.keepalive_pool_size): closing the least recently used idle connections to make room; raise the size if this repeats");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, id: u8) -> PoolKey {
        PoolKey {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            identity: [id; 32],
        }
    }

    #[test]
    fn pool_keeps_identities_and_names_apart() {
        let pool: Pool<u32> = Pool::new(10, Duration::from_secs(60));
        pool.put(key(1, 1), "a.test", 11);
        pool.put(key(1, 2), "a.test", 12);
        pool.put(key(1, 1), "b.test", 13);
        assert_eq!(pool.take(&key(1, 3), "a.test"), None);
        assert_eq!(pool.take(&key(2, 1), "a.test"), None);
        assert_eq!(pool.take(&key(1, 1), "a.test"), Some(11));
        assert_eq!(pool.take(&key(1, 1), "a.test"), None);
        assert_eq!(pool.take(&key(1, 2), "a.test"), Some(12));
        assert_eq!(pool.take(&key(1, 1), "b.test"), Some(13));
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn pool_is_lifo_per_key_and_evicts_the_least_recently_used() {
        let pool: Pool<u32> = Pool::new(3, Duration::from_secs(60));
        pool.put(key(1, 1), "a", 1);
        pool.put(key(1, 2), "a", 2);
        pool.put(key(1, 1), "a", 3);
        pool.put(key(1, 3), "a", 4); // full: 1 (the oldest) goes
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.take(&key(1, 1), "a"), Some(3));
        assert_eq!(pool.take(&key(1, 1), "a"), None);
        assert_eq!(pool.take(&key(1, 2), "a"), Some(2));
        assert_eq!(pool.take(&key(1, 3), "a"), Some(4));
        // A target+identity with a second idle connection gives it up first.
        pool.put(key(1, 1), "a", 5);
        pool.put(key(1, 2), "a", 6);
        pool.put(key(1, 2), "a", 7);
        pool.put(key(1, 3), "a", 8); // full: 6 goes (1 keeps its only connection)
        assert_eq!(pool.take(&key(1, 1), "a"), Some(5));
        assert_eq!(pool.take(&key(1, 2), "a"), Some(7));
        assert_eq!(pool.take(&key(1, 2), "a"), None);
        let none: Pool<u32> = Pool::new(0, Duration::from_secs(60));
        none.put(key(1, 1), "a", 1);
        assert_eq!(none.take(&key(1, 1), "a"), None);
    }

    #[test]
    fn pool_drops_connections_idle_too_long() {
        let pool: Pool<u32> = Pool::new(10, Duration::from_millis(30));
        pool.put(key(1, 1), "a", 1);
        pool.put(key(1, 2), "a", 2);
        std::thread::sleep(Duration::from_millis(50));
        pool.put(key(1, 2), "a", 3);
        assert_eq!(pool.take(&key(1, 1), "a"), None);
        pool.sweep();
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.take(&key(1, 2), "a"), Some(3));
        assert_eq!(pool.take(&key(1, 2), "a"), None);
    }
}
