//! The `lifecycle:` section: when and how PKI-sourced certificates renew, how replicas share
//! the work, and the default of the cut-over handshake.

use std::time::Duration;

use serde::Deserialize;

/// The YAML mirror (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleFile {
    pub enabled: Option<bool>,
    /// Share of a certificate's lifetime after which it renews (default 2/3).
    pub renew_at: Option<f64>,
    /// Random spread around `renew_at`, as a share of the lifetime (default 0.05).
    pub jitter: Option<f64>,
    pub check_interval_secs: Option<u64>,
    pub lease_secs: Option<u64>,
    pub retry_min_secs: Option<u64>,
    pub retry_max_secs: Option<u64>,
    /// Default of the per-mapping cut-over handshake for automatic renewals (default true).
    pub cutover_check: Option<bool>,
    /// Name of this replica in leases and notifications (default: host name and process id).
    pub replica_id: Option<String>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub enabled: bool,
    pub renew_at: f64,
    pub jitter: f64,
    pub check_interval: Duration,
    pub lease: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub cutover_check: bool,
    pub replica_id: String,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleFile::default()
            .resolve()
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

/// The default replica name: host name, then the process id.
pub fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "gateway".into());
    format!("{host}-{}", std::process::id())
}

impl LifecycleFile {
    /// Resolves defaults; an error is (key, message naming the range and the default).
    pub fn resolve(self) -> Result<LifecycleConfig, (String, String)> {
        let bad = |k: &str, m: String| (format!("lifecycle.{k}"), m);
        let renew_at = self.renew_at.unwrap_or(2.0 / 3.0);
        if !(0.1..=0.95).contains(&renew_at) {
            return Err(bad(
                "renew_at",
                format!("{renew_at} is out of range; use a share of the lifetime from 0.1 to 0.95 (default 0.667)"),
            ));
        }
        let jitter = self.jitter.unwrap_or(0.05);
        if !(0.0..=0.2).contains(&jitter) {
            return Err(bad(
                "jitter",
                format!("{jitter} is out of range; use 0 to 0.2 of the lifetime (default 0.05)"),
            ));
        }
        let secs =
            |k: &str, v: Option<u64>, d: u64, max: u64| -> Result<Duration, (String, String)> {
                let v = v.unwrap_or(d);
                if v == 0 || v > max {
                    return Err(bad(
                        k,
                        format!("{v} is out of range; use 1 to {max} (default {d})"),
                    ));
                }
                Ok(Duration::from_secs(v))
            };
        let check_interval = secs("check_interval_secs", self.check_interval_secs, 30, 3600)?;
        let lease = secs("lease_secs", self.lease_secs, 300, 86_400)?;
        let retry_min = secs("retry_min_secs", self.retry_min_secs, 30, 86_400)?;
        let retry_max = secs("retry_max_secs", self.retry_max_secs, 3600, 7 * 86_400)?;
        if retry_max < retry_min {
            return Err(bad(
                "retry_max_secs",
                "is below lifecycle.retry_min_secs; raise it".to_string(),
            ));
        }
        let replica_id = match self.replica_id {
            Some(r) if r.trim().is_empty() || r.len() > 128 => {
                return Err(bad(
                    "replica_id",
                    "must be 1 to 128 characters (default: host name and process id)".into(),
                ))
            }
            Some(r) => r.trim().to_string(),
            None => default_replica_id(),
        };
        Ok(LifecycleConfig {
            enabled: self.enabled.unwrap_or(true),
            renew_at,
            jitter,
            check_interval,
            lease,
            retry_min,
            retry_max,
            cutover_check: self.cutover_check.unwrap_or(true),
            replica_id,
        })
    }
}
