//! Per-client-IP rate limit (LivePerson's rule: 10 requests per second per incoming IP).
//!
//! ## The approximation, stated where it lives
//! - Counting uses `pingora_limits::rate::Rate`: a **fixed one-second window** over a
//!   **count-min sketch** (4 hash rows). Memory is fixed at start-up (`2 windows x 4 rows x slots x
//!   8 bytes`, with `slots = 2 x rate_limit.expected_clients`), however many distinct IPs arrive.
//! - A count-min sketch **never under-counts**: a client is never let through above the limit
//!   because of the sketch. It may **over-count** when more distinct IPs than `expected_clients` are
//!   active in the same second and their hashes collide in every row: such a client can be limited
//!   slightly early. Raise `expected_clients` if that matters (memory grows linearly).
//! - Because the window is fixed, a client can get up to `2 x limit` requests through across a
//!   window edge (the end of one second and the start of the next). Over any whole window it gets
//!   at most `limit`.
//! - `Retry-After` is 1 second: the window length, the longest a refused client has to wait.
//!
//! ## Fleet-wide (several replicas)
//! With `rate_limit.fleet` active (shared state configured), the limit holds across the replicas
//! over a shared counter: [`fleet`] documents the algorithm (a local allowance, then leases from
//! the counter), its error bounds and the local fallback when the counter fails. Windows are then
//! whole seconds of Unix time, the same on every replica.
//!
//! ## Which IP
//! The TCP peer address, unless that peer is in `rate_limit.trusted_proxies`: then the
//! `forwarded_header` (default `X-Forwarded-For`) is read from right to left and the first address
//! that is not itself a trusted proxy is the client. A header from an untrusted peer is ignored,
//! so a client cannot pick its own key.

pub mod fleet;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use pingora_limits::rate::Rate;

use crate::config::RateLimitConfig;
use fleet::{FleetCounter, FleetLimiter};

const HASHES: usize = 4;

pub struct RateLimiter {
    counting: Counting,
    limit: isize,
    trusted: Vec<IpNet>,
    header: String,
}

enum Counting {
    /// This replica alone.
    Local(Rate),
    /// Across the fleet, with the local limit as fallback.
    Fleet(FleetLimiter),
}

impl RateLimiter {
    /// The limit of this replica alone.
    pub fn new(cfg: &RateLimitConfig) -> RateLimiter {
        let slots = (cfg.expected_clients * 2).next_power_of_two();
        crate::metrics::RATE_LIMIT_FLEET_MODE.set(0);
        RateLimiter::with_counting(
            cfg,
            Counting::Local(Rate::new_with_estimator_config(
                Duration::from_secs(1),
                HASHES,
                slots,
            )),
        )
    }

    /// The fleet-wide limit over `counter` (the shared counter, see [`fleet`]), falling back to
    /// the local limit while the counter fails. Starts a background thread.
    pub fn with_fleet(cfg: &RateLimitConfig, counter: Arc<dyn FleetCounter>) -> RateLimiter {
        let fleet = FleetLimiter::new(
            cfg.requests_per_second,
            cfg.expected_clients,
            &cfg.fleet,
            counter,
        );
        RateLimiter::with_counting(cfg, Counting::Fleet(fleet))
    }

    fn with_counting(cfg: &RateLimitConfig, counting: Counting) -> RateLimiter {
        RateLimiter {
            counting,
            limit: cfg.requests_per_second as isize,
            trusted: cfg.trusted_proxies.clone(),
            header: cfg.forwarded_header.clone(),
        }
    }

    pub fn forwarded_header(&self) -> &str {
        &self.header
    }

    /// Count one request for `client`; `true` when it is within the limit. Never waits.
    pub fn allow(&self, client: &IpAddr) -> bool {
        match &self.counting {
            Counting::Local(rate) => rate.observe(client, 1) <= self.limit,
            Counting::Fleet(fleet) => fleet.allow(client),
        }
    }

    /// `None` without a fleet tier; `Some(true)` while the limit is fleet-wide, `Some(false)` in
    /// local fallback.
    pub fn fleet_mode(&self) -> Option<bool> {
        match &self.counting {
            Counting::Local(_) => None,
            Counting::Fleet(fleet) => Some(fleet.is_fleet()),
        }
    }

    fn is_trusted(&self, ip: &IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    /// The rate-limit key for a request from `peer` carrying `forwarded` (the raw header values,
    /// in order of appearance).
    pub fn client_ip<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.is_trusted(&peer) {
            return peer;
        }
        let values: Vec<&str> = forwarded.collect();
        for v in values.iter().rev() {
            for part in v.rsplit(',') {
                let part = part.trim();
                let Some(ip) = parse_forwarded_ip(part) else {
                    // Unparseable hop: stop here, use the last trusted hop we know.
                    return peer;
                };
                if !self.is_trusted(&ip) {
                    return ip;
                }
            }
        }
        peer
    }
}

fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // "1.2.3.4:5678" or "[::1]:5678"
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(trusted: &[&str]) -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            requests_per_second: 3,
            trusted_proxies: trusted.iter().filter_map(|s| s.parse().ok()).collect(),
            forwarded_header: "x-forwarded-for".into(),
            expected_clients: 1024,
            fleet: crate::config::RateLimitFleetConfig::defaults(3, 3),
        }
    }

    #[test]
    fn limit_applies_per_ip_and_others_are_unaffected() {
        let rl = RateLimiter::new(&cfg(&[]));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let allowed = (0..10).filter(|_| rl.allow(&a)).count();
        // Within one window exactly `limit` pass (a window edge could split the loop: allow 2x).
        assert!((3..=6).contains(&allowed), "allowed {allowed}");
        assert!(rl.allow(&b));
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_configured_proxies() {
        let rl = RateLimiter::new(&cfg(&["127.0.0.0/8"]));
        let trusted: IpAddr = [127, 0, 0, 1].into();
        let untrusted: IpAddr = [192, 0, 2, 9].into();
        assert_eq!(
            rl.client_ip(trusted, ["203.0.113.7, 127.0.0.2"].into_iter()),
            "203.0.113.7".parse::<IpAddr>().unwrap_or(trusted)
        );
        assert_eq!(
            rl.client_ip(untrusted, ["203.0.113.7"].into_iter()),
            untrusted
        );
        assert_eq!(rl.client_ip(trusted, std::iter::empty()), trusted);
        assert_eq!(rl.client_ip(trusted, ["garbage"].into_iter()), trusted);
    }
}
