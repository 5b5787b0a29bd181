//! Expiry and failure notifications: signed JSON webhooks, retried with backoff.
//!
//! The lifecycle scheduler decides *when* an event is due (and claims each expiry threshold once
//! per certificate version across replicas in the store); this module *delivers* it. Each
//! configured webhook (`notifications.webhooks`) receives
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! User-Agent: mtls-gateway/<version>
//! X-Mtls-Gateway-Event: certificate.expiring
//! X-Mtls-Gateway-Delivery: certificate.expiring:123456:42:0a1b...:14
//! X-Mtls-Gateway-Signature: t=1767225600,v1=5f2b...
//!
//! {"event":"certificate.expiring","id":"...","accountId":"123456","certificateId":42,...}
//! ```
//!
//! The body is an [`Event`]. Its `id` (also in `X-Mtls-Gateway-Delivery`) is the same on every
//! attempt and on every replica, so a receiver that stores the ids it has processed sees each
//! notification once even when it is delivered twice (a retry after a lost answer).
//!
//! # Verifying a delivery (receivers)
//!
//! `X-Mtls-Gateway-Signature` is `t={unix seconds},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`,
//! the body being the exact bytes received (before any JSON parsing). A receiver:
//! 1. splits the header on `,` into `t=` and one or more `v1=` parts;
//! 2. refuses it when `t` is more than a few minutes from its own clock (a replay);
//! 3. computes the HMAC of `t`, `.` and the raw body with the shared secret and compares it with
//!    each `v1` in constant time, accepting when one matches.
//!
//! [`verify`] does exactly this. Each webhook has its own secret; `t` is taken at each attempt,
//! so a retry after a long back-off still passes a tolerance of a few minutes.
//!
//! # Retries
//!
//! A connection error, a timeout (`notifications.timeout_ms` per attempt), 408, 429 or any 5xx
//! is retried after `retry_min_ms`, doubling up to `retry_max_secs` (each wait drawn between half
//! and all of that, so replicas do not retry in step; a `Retry-After` in seconds is honoured up to
//! `retry_max_secs`), until `max_attempts`. A 2xx is delivered. Any other status (4xx, 3xx:
//! redirects are not followed, as they would carry the signed body elsewhere) is given up at once.
//!
//! Logs name the webhook (its `name`, by default the URL's host), the event, the delivery id,
//! the attempt and the status; never the secret, the signature or the URL's path and query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use log::{error, info, warn};
use serde::Serialize;
use sha2::Sha256;

use crate::config::NotificationsConfig;

/// One notification, sent as the JSON body of each webhook delivery.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// One of [`EventKind`]'s names, e.g. `certificate.expiring`.
    pub event: String,
    /// Unique per notification and stable across retries and replicas (see [`delivery_id`]), so
    /// receivers can deduplicate.
    pub id: String,
    pub account_id: String,
    pub certificate_id: u64,
    pub certificate_name: String,
    /// Serial number (hex) of the certificate version concerned.
    pub serial: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    /// Whole days from `occurred_at` to `not_after` (negative once expired).
    pub days_left: Option<i64>,
    /// The expiry threshold that fired (`certificate.expiring`).
    pub threshold_days: Option<u32>,
    /// A sentence for humans (the renewal error, the refusing targets, ...).
    pub message: String,
    /// RFC 3339; filled with the time of delivery when left empty.
    pub occurred_at: String,
    /// The replica that sent it; filled with [`Notifier::gateway`] when left empty.
    pub gateway: String,
}

/// The events the gateway sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// notAfter is within one of `notifications.expiry_days`.
    Expiring,
    /// An automatic renewal attempt failed.
    RenewalFailed,
    /// A new version was refused by its targets and not put into service.
    CutoverRefused,
    /// A new version was put into service.
    Renewed,
    /// The serving version has expired.
    Expired,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Expiring,
        EventKind::RenewalFailed,
        EventKind::CutoverRefused,
        EventKind::Renewed,
        EventKind::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Expiring => "certificate.expiring",
            EventKind::RenewalFailed => "certificate.renewal_failed",
            EventKind::CutoverRefused => "certificate.cutover_refused",
            EventKind::Renewed => "certificate.renewed",
            EventKind::Expired => "certificate.expired",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{event}:{account}:{certificateId}:{serial}:{threshold}`, `-` for a part that is absent.
/// Events that can happen more than once for one version (a renewal failing again) need a
/// distinguishing part of their own: put it in `threshold`'s place with [`Event::id_suffix`].
pub fn delivery_id(
    kind: EventKind,
    account_id: &str,
    certificate_id: u64,
    serial: Option<&str>,
    threshold_days: Option<u32>,
) -> String {
    format!(
        "{}:{account_id}:{certificate_id}:{}:{}",
        kind.as_str(),
        serial.unwrap_or("-"),
        threshold_days.map_or_else(|| "-".to_string(), |t| t.to_string())
    )
}

/// RFC 3339 (UTC) of a unix time; `None` outside the representable range.
pub fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Event {
    /// An event for one certificate version, occurring now, with its [`delivery_id`]
    /// (`threshold_days` is part of the id). `gateway` is left empty for [`Notifier`] to fill.
    pub fn new(
        kind: EventKind,
        account_id: &str,
        certificate_id: u64,
        certificate_name: &str,
        serial: Option<&str>,
        threshold_days: Option<u32>,
        message: impl Into<String>,
    ) -> Event {
        Event {
            event: kind.as_str().to_string(),
            id: delivery_id(kind, account_id, certificate_id, serial, threshold_days),
            account_id: account_id.to_string(),
            certificate_id,
            certificate_name: certificate_name.to_string(),
            serial: serial.map(str::to_string),
            not_after: None,
            days_left: None,
            threshold_days,
            message: message.into(),
            occurred_at: rfc3339(unix_now()).unwrap_or_default(),
            gateway: String::new(),
        }
    }

    /// Sets `notAfter` and `daysLeft` (whole days from `now`, rounded down; negative once
    /// expired), both unix seconds.
    pub fn with_not_after(mut self, not_after: i64, now: i64) -> Event {
        self.not_after = rfc3339(not_after);
        self.days_left = Some((not_after - now).div_euclid(86_400));
        self
    }

    /// Replaces the id's last part (the threshold, or `-`) with `suffix`, for an event that may
    /// recur for one version, e.g. the renewal failure count: `...:{serial}:failure-3`.
    pub fn id_suffix(mut self, suffix: &str) -> Event {
        if let Some(cut) = self.id.rfind(':') {
            self.id.truncate(cut + 1);
            self.id.push_str(suffix);
        }
        self
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], t: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-Mtls-Gateway-Signature` value for `body` at unix time `t`:
/// `t={t},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// Whether `header` (an `X-Mtls-Gateway-Signature` value) signs `body` with `secret`, with its
/// `t` within `tolerance_secs` of `now` (either way). Any one of several `v1=` parts may match
/// (a receiver rotating secrets); the comparison is constant-time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = v.parse::<i64>().ok(),
            Some(("t", _)) => return false,
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > tolerance_secs.max(0).unsigned_abs() {
        return false;
    }
    let expected = mac(secret, t, body);
    sigs.iter().any(|s| match hex::decode(s) {
        Ok(bytes) => expected.clone().verify_slice(&bytes).is_ok(),
        Err(_) => false,
    })
}

/// The outcome of one webhook for one event.
#[derive(Debug, Clone)]
pub struct WebhookOutcome {
    /// `notifications.webhooks[].name`.
    pub name: String,
    pub attempts: u32,
    pub delivered: bool,
    /// The status of the last answer, if one came.
    pub status: Option<u16>,
    /// Why the last attempt failed (no URL in it), when not delivered.
    pub last_error: Option<String>,
    /// From the first attempt to delivery or giving up.
    pub elapsed: Duration,
}

/// What [`Notifier::deliver`] did, one entry per webhook in config order.
#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    pub event: String,
    pub id: String,
    pub webhooks: Vec<WebhookOutcome>,
}

impl DeliveryReport {
    /// Whether every webhook took it (true when there is none).
    pub fn all_delivered(&self) -> bool {
        self.webhooks.iter().all(|w| w.delivered)
    }

    /// Whether at least one webhook took it.
    pub fn any_delivered(&self) -> bool {
        self.webhooks.iter().any(|w| w.delivered)
    }
}

struct Hook {
    name: String,
    url: url::Url,
    /// `scheme://host[:port]/...` for logs.
    shown: String,
    secret: crate::auth::Secret,
    client: reqwest::Client,
}

/// Sends [`Event`]s to the configured webhooks. Cheap to share (`Arc`); one HTTP client (with
/// its connection pool and trust roots) per webhook.
pub struct Notifier {
    hooks: Vec<Hook>,
    expiry_days: Vec<u32>,
    max_attempts: u32,
    retry_min: Duration,
    retry_max: Duration,
    gateway: String,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "webhooks",
                &self
                    .hooks
                    .iter()
                    .map(|h| format!("{} ({})", h.name, h.shown))
                    .collect::<Vec<_>>(),
            )
            .field("expiry_days", &self.expiry_days)
            .field("max_attempts", &self.max_attempts)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// This replica's name for [`Event::gateway`]: `$HOSTNAME` (a pod's name in Kubernetes), else the
/// kernel's host name, else `mtls-gateway`.
pub fn default_gateway_id() -> String {
    if let Ok(h) = std::env::var("HOSTNAME") {
        if !h.trim().is_empty() {
            return h.trim().to_string();
        }
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        if !h.trim().is_empty() {
            return h.trim().to_string();
        }
    }
    "mtls-gateway".to_string()
}

const USER_AGENT: &str = concat!("mtls-gateway/", env!("CARGO_PKG_VERSION"));

/// What one attempt came to.
enum Attempt {
    Delivered(u16),
    /// Worth another attempt; with the answer's status (if any) and `Retry-After` (seconds).
    Retry(Option<u16>, String, Option<Duration>),
    GiveUp(Option<u16>, String),
}

impl Notifier {
    /// A notifier for `cfg` (with no webhook: one that does nothing). Fails, naming the key, only
    /// when an HTTP client cannot be built (an unreadable `ca_file`).
    pub fn new(cfg: &NotificationsConfig) -> Result<Arc<Notifier>, String> {
        Self::with_gateway(cfg, default_gateway_id())
    }

    /// [`Notifier::new`] with this replica's name given.
    pub fn with_gateway(
        cfg: &NotificationsConfig,
        gateway: impl Into<String>,
    ) -> Result<Arc<Notifier>, String> {
        let mut hooks = Vec::with_capacity(cfg.webhooks.len());
        for (i, w) in cfg.webhooks.iter().enumerate() {
            let at = format!("notifications.webhooks[{i}]");
            let mut b = reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout)
                .redirect(reqwest::redirect::Policy::none())
                // A few deliveries a day: no idle connections kept (nor tied to the runtime of
                // an earlier delivery).
                .pool_max_idle_per_host(0);
            if let Some(p) = &w.ca_file {
                let pem = std::fs::read(p)
                    .map_err(|e| format!("{at}.ca_file: cannot read {} ({e})", p.display()))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    format!(
                        "{at}.ca_file: {} holds no usable PEM certificate ({e})",
                        p.display()
                    )
                })?;
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            let client = b
                .build()
                .map_err(|e| format!("{at}: cannot build the HTTP client: {e}"))?;
            hooks.push(Hook {
                name: w.name.clone(),
                url: w.url.clone(),
                shown: w.redacted_url(),
                secret: w.secret.clone(),
                client,
            });
        }
        Ok(Arc::new(Notifier {
            hooks,
            expiry_days: cfg.expiry_days.clone(),
            max_attempts: cfg.max_attempts.max(1),
            retry_min: cfg.retry_min,
            retry_max: cfg.retry_max.max(cfg.retry_min),
            gateway: gateway.into(),
        }))
    }

    /// Whether any webhook is configured (otherwise [`Notifier::deliver`] does nothing).
    pub fn enabled(&self) -> bool {
        !self.hooks.is_empty()
    }

    /// `notifications.expiry_days`, descending.
    pub fn expiry_days(&self) -> &[u32] {
        &self.expiry_days
    }

    /// This replica's name, put in [`Event::gateway`] when the caller left it empty.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Sends `ev` to every webhook at once, each retried on its own (see the module docs), and
    /// returns when each has delivered or given up: at most `max_attempts` x `timeout_ms` plus
    /// the back-offs between them (each at most `retry_max_secs`).
    pub async fn deliver(&self, ev: &Event) -> DeliveryReport {
        let mut report = DeliveryReport {
            event: ev.event.clone(),
            id: ev.id.clone(),
            webhooks: Vec::with_capacity(self.hooks.len()),
        };
        if self.hooks.is_empty() {
            return report;
        }
        let body = match self.body(ev) {
            Ok(b) => b,
            Err(e) => {
                error!(
                    "notification {} ({}): cannot encode it: {e}",
                    ev.id, ev.event
                );
                return report;
            }
        };
        let label = event_label(&ev.event);
        report.webhooks = futures::future::join_all(
            self.hooks
                .iter()
                .map(|h| self.deliver_one(h, &ev.event, &ev.id, label, &body)),
        )
        .await;
        report
    }

    /// [`Notifier::deliver`] on a task of the current Tokio runtime (or, outside one, on a thread
    /// of its own), for callers that must not wait. The outcome is logged and counted.
    pub fn spawn(self: &Arc<Self>, ev: Event) {
        if !self.enabled() {
            return;
        }
        let me = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    me.deliver(&ev).await;
                });
            }
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("notify".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => {
                                rt.block_on(me.deliver(&ev));
                            }
                            Err(e) => error!(
                                "notification {} ({}): no runtime to send it on: {e}",
                                ev.id, ev.event
                            ),
                        }
                    });
                if let Err(e) = spawned {
                    error!("notification: cannot start a thread to send it: {e}");
                }
            }
        }
    }

    /// The JSON body, with `gateway` and `occurredAt` filled when empty.
    fn body(&self, ev: &Event) -> serde_json::Result<Vec<u8>> {
        if ev.gateway.is_empty() || ev.occurred_at.is_empty() {
            let mut ev = ev.clone();
            if ev.gateway.is_empty() {
                ev.gateway = self.gateway.clone();
            }
            if ev.occurred_at.is_empty() {
                ev.occurred_at = rfc3339(unix_now()).unwrap_or_default();
            }
            serde_json::to_vec(&ev)
        } else {
            serde_json::to_vec(ev)
        }
    }

    async fn deliver_one(
        &self,
        hook: &Hook,
        event: &str,
        id: &str,
        label: &'static str,
        body: &[u8],
    ) -> WebhookOutcome {
        let start = Instant::now();
        let mut outcome = WebhookOutcome {
            name: hook.name.clone(),
            attempts: 0,
            delivered: false,
            status: None,
            last_error: None,
            elapsed: Duration::ZERO,
        };
        let who = format!("webhook {} ({})", hook.name, hook.shown);
        loop {
            outcome.attempts += 1;
            let n = outcome.attempts;
            match self.attempt(hook, event, id, body).await {
                Attempt::Delivered(status) => {
                    outcome.delivered = true;
                    outcome.status = Some(status);
                    outcome.last_error = None;
                    info!("{who}: delivered {event} {id} (attempt {n}, status {status})");
                    break;
                }
                Attempt::GiveUp(status, why) => {
                    outcome.status = status;
                    error!("{who}: {event} {id} not delivered, giving up after attempt {n}: {why}");
                    outcome.last_error = Some(why);
                    break;
                }
                Attempt::Retry(status, why, retry_after) => {
                    outcome.status = status;
                    if n >= self.max_attempts {
                        error!("{who}: {event} {id} not delivered after {n} attempts; last: {why}");
                        outcome.last_error = Some(why);
                        break;
                    }
                    let wait = self.backoff(n, retry_after);
                    warn!(
                        "{who}: {event} {id} attempt {n} of {} failed ({why}); next in {} ms",
                        self.max_attempts,
                        wait.as_millis()
                    );
                    outcome.last_error = Some(why);
                    crate::metrics::NOTIFICATIONS
                        .with_label_values(&[label, "retried"])
                        .inc();
                    tokio::time::sleep(wait).await;
                }
            }
        }
        outcome.elapsed = start.elapsed();
        let result = if outcome.delivered {
            "delivered"
        } else {
            "failed"
        };
        crate::metrics::NOTIFICATIONS
            .with_label_values(&[label, result])
            .inc();
        crate::metrics::NOTIFICATION_DELIVERY
            .with_label_values(&[result])
            .observe(outcome.elapsed.as_secs_f64());
        outcome
    }

    async fn attempt(&self, hook: &Hook, event: &str, id: &str, body: &[u8]) -> Attempt {
        let sig = signature(hook.secret.expose(), unix_now(), body);
        let sent = hook
            .client
            .post(hook.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("X-Mtls-Gateway-Signature", sig)
            .header("X-Mtls-Gateway-Event", header_value(event))
            .header("X-Mtls-Gateway-Delivery", header_value(id))
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match status {
                    200..=299 => Attempt::Delivered(status),
                    408 | 429 | 500..=599 => {
                        Attempt::Retry(Some(status), format!("status {status}"), retry_after)
                    }
                    _ => Attempt::GiveUp(
                        Some(status),
                        format!("status {status} (not retried: only 408, 429 and 5xx are)"),
                    ),
                }
            }
            Err(e) if e.is_builder() => Attempt::GiveUp(None, error_text(e)),
            Err(e) => Attempt::Retry(None, error_text(e), None),
        }
    }

    /// The wait after failed attempt `n` (1-based): `retry_min` x 2^(n-1) capped at `retry_max`,
    /// drawn between half and all of it; at least a `Retry-After` (itself capped at `retry_max`).
    fn backoff(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let base = self
            .retry_min
            .saturating_mul(1u32 << (n - 1).min(30))
            .min(self.retry_max);
        let half = base / 2;
        let jittered = half + half.mul_f64(random_fraction());
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.retry_max)),
            None => jittered,
        }
    }
}

/// A fraction in [0, 1) from BoringSSL's generator (0.5 should it fail).
fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    match boring::rand::rand_bytes(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

/// Events outside [`EventKind`] are counted as `other` (labels stay bounded).
fn event_label(event: &str) -> &'static str {
    EventKind::parse(event).map_or("other", EventKind::as_str)
}

/// A header value from caller-given text: visible ASCII only.
fn header_value(s: &str) -> String {
    crate::header_safe(s).replace(' ', "_")
}

/// An HTTP client error without the URL (its path or query may be a credential), with its causes.
fn error_text(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_rejects_changes() {
        let s = signature(b"0123456789abcdef", 1_700_000_000, b"{}");
        assert!(s.starts_with("t=1700000000,v1="), "{s}");
        assert!(verify(b"0123456789abcdef", &s, b"{}", 1_700_000_100, 300));
        assert!(!verify(b"0123456789abcdef", &s, b"{} ", 1_700_000_100, 300));
        assert!(!verify(b"0123456789abcdeX", &s, b"{}", 1_700_000_100, 300));
        assert!(!verify(b"0123456789abcdef", &s, b"{}", 1_700_001_000, 300));
        assert!(!verify(
            b"0123456789abcdef",
            "v1=00",
            b"{}",
            1_700_000_000,
            300
        ));
    }

    #[test]
    fn ids_and_days_left() {
        let ev = Event::new(
            EventKind::Expiring,
            "123",
            7,
            "c",
            Some("0a"),
            Some(14),
            "m",
        )
        .with_not_after(86_400 * 10 + 5, 0);
        assert_eq!(ev.id, "certificate.expiring:123:7:0a:14");
        assert_eq!(ev.days_left, Some(10));
        assert_eq!(ev.not_after.as_deref(), Some("1970-01-11T00:00:05Z"));
        let ev = Event::new(EventKind::RenewalFailed, "123", 7, "c", None, None, "m")
            .id_suffix("failure-3")
            .with_not_after(0, 10);
        assert_eq!(ev.id, "certificate.renewal_failed:123:7:-:failure-3");
        assert_eq!(ev.days_left, Some(-1));
    }
}
