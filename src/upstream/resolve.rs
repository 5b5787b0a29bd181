//! Async DNS for targets, with a small TTL cache.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

/// Async DNS with a small TTL cache; lookups run on the blocking pool via tokio, never on the
/// request's thread. IPv4 addresses are preferred when a name has both.
pub struct Resolver {
    ttl: Duration,
    /// `host:port` -> (resolved at, address).
    cache: RwLock<HashMap<String, (Instant, SocketAddr)>>,
}

const DNS_CACHE_MAX: usize = 10_000;

impl Resolver {
    pub fn new(ttl: Duration) -> Resolver {
        Resolver {
            ttl,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Resolve `host` (`key` is `host:port`, used for the cache without allocating on a hit).
    pub async fn resolve(&self, key: &str, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        if let Some((at, addr)) = self.cache.read().get(key) {
            if at.elapsed() < self.ttl {
                return Ok(*addr);
            }
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                )
            })?;
        let mut cache = self.cache.write();
        if cache.len() >= DNS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key.to_string(), (Instant::now(), addr));
        Ok(addr)
    }
}
