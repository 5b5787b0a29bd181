//! Every metric in one place, registered in the `prometheus` default registry that
//! `pingora-prometheus` serves. Labels are bounded: mode, outcome, status class, and the account,
//! service and certificate of a *configured* mapping. Never a client IP or a raw URL.

use std::sync::LazyLock;

use prometheus::{
    register_gauge, register_gauge_vec, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, Gauge, GaugeVec,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

// The registrations below run once at start-up with constant, valid names: a failure is a
// programming error, hence `expect`.

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_requests_total",
        "Requests handled by the proxy listener, by mode (forward|transparent), outcome and status class",
        &["mode", "outcome", "status_class"]
    )
    .expect("metric mtls_gateway_requests_total registers once")
});

pub static MAPPED_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_mapped_requests_total",
        "Requests that matched a configured mapping, by account, service and certificate id",
        &["account", "service", "certificate"]
    )
    .expect("metric mtls_gateway_mapped_requests_total registers once")
});

pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "mtls_gateway_request_duration_seconds",
        "Time from request header to the end of the response, by mode",
        &["mode"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric mtls_gateway_request_duration_seconds registers once")
});

pub static UPSTREAM_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_upstream_connections_total",
        "Upstream connections used per request: reused=\"true\" from the pool, \"false\" newly established",
        &["reused"]
    )
    .expect("metric mtls_gateway_upstream_connections_total registers once")
});

pub static UPSTREAM_TLS_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_upstream_tls_failures_total",
        "Upstream TLS handshakes that failed (verification, handshake or certificate errors)"
    )
    .expect("metric mtls_gateway_upstream_tls_failures_total registers once")
});

pub static UPSTREAM_CONNECT_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_upstream_connect_failures_total",
        "Upstream connections that could not be established (DNS, refused, timeout)"
    )
    .expect("metric mtls_gateway_upstream_connect_failures_total registers once")
});

pub static UPSTREAM_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_upstream_retries_total",
        "Idempotent requests sent again on a new connection after a pooled one failed before any byte of the answer (a non-idempotent request is never sent twice)"
    )
    .expect("metric mtls_gateway_upstream_retries_total registers once")
});

pub static VAULT_FAILOVERS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_vault_failovers_total",
        "Switches of the Vault store to the next of store.vault.addresses after a request to the current one failed (unreachable, timeout, 5xx, 429, sealed or standby)"
    )
    .expect("metric mtls_gateway_vault_failovers_total registers once")
});

pub static ACCESS_LOG_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_access_log_dropped_total",
        "Access log lines dropped because the writer fell 65,536 lines behind (stderr blocked)"
    )
    .expect("metric mtls_gateway_access_log_dropped_total registers once")
});

pub static RATE_LIMITED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_rate_limited_total",
        "Requests refused with 429 by the per-client-IP rate limit"
    )
    .expect("metric mtls_gateway_rate_limited_total registers once")
});

pub static RATE_LIMIT_FLEET_MODE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "mtls_gateway_rate_limit_fleet_mode",
        "1 when the per-client-IP rate limit is fleet-wide (shared counter reachable), 0 when each replica applies it alone (no fleet tier configured, or fallback)"
    )
    .expect("metric mtls_gateway_rate_limit_fleet_mode registers once")
});

pub static RATE_LIMIT_FLEET_SYNCS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_rate_limit_fleet_syncs_total",
        "Round trips of the rate limit's fleet tier to the shared counter (one batch of claims or a probe), by result (ok, error, timeout)",
        &["result"]
    )
    .expect("metric mtls_gateway_rate_limit_fleet_syncs_total registers once")
});

pub static RATE_LIMIT_FLEET_CLAIMS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_rate_limit_fleet_claims_total",
        "Per-client claims sent to the shared counter by the rate limit's fleet tier (clients below the local allowance send none)"
    )
    .expect("metric mtls_gateway_rate_limit_fleet_claims_total registers once")
});

pub static SNAPSHOT_AGE: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "mtls_gateway_snapshot_age_seconds",
        "Seconds since the last successful refresh of the runtime snapshot (staleness)"
    )
    .expect("metric mtls_gateway_snapshot_age_seconds registers once")
});

pub static LAST_REFRESH_SUCCESS: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "mtls_gateway_last_refresh_success_timestamp_seconds",
        "Unix time of the last successful refresh"
    )
    .expect("metric mtls_gateway_last_refresh_success_timestamp_seconds registers once")
});

pub static REFRESH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_refresh_failures_total",
        "Refresh failures: scope=\"store\" (the whole refresh), \"certificate\" or \"mappings\" (one entry kept at its last good version)",
        &["scope"]
    )
    .expect("metric mtls_gateway_refresh_failures_total registers once")
});

pub static REFRESH_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "mtls_gateway_refresh_duration_seconds",
        "Duration of refreshes, by result",
        &["result"],
        vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0]
    )
    .expect("metric mtls_gateway_refresh_duration_seconds registers once")
});

pub static CERTIFICATES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "mtls_gateway_certificates",
        "Certificates in the snapshot by status (available, expired, not_yet_valid, failed, stale)",
        &["status"]
    )
    .expect("metric mtls_gateway_certificates registers once")
});

pub static CERTIFICATES_SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_certificates_skipped_total",
        "Stored certificates the refresher did not decode, by reason (iterations: a PBKDF2, PBE or MAC iteration count over p12.max_iterations); counted once per stored version",
        &["reason"]
    )
    .expect("metric mtls_gateway_certificates_skipped_total registers once")
});

pub static CERT_NOT_AFTER: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "mtls_gateway_certificate_not_after_timestamp_seconds",
        "Unix time at which each loaded certificate expires",
        &["account", "certificate"]
    )
    .expect("metric mtls_gateway_certificate_not_after_timestamp_seconds registers once")
});

pub static MAPPINGS: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "mtls_gateway_mappings",
        "Enabled mappings in the runtime snapshot"
    )
    .expect("metric mtls_gateway_mappings registers once")
});

pub static NOTIFICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_notifications_total",
        "Certificate notifications per webhook, by event (certificate.expiring, ...) and result: delivered (2xx), failed (given up: a status other than 408, 429 or 5xx, or notifications.max_attempts reached), retried (one more attempt after a connection error, a timeout, 408, 429 or 5xx)",
        &["event", "result"]
    )
    .expect("metric mtls_gateway_notifications_total registers once")
});

pub static NOTIFICATION_DELIVERY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "mtls_gateway_notification_delivery_seconds",
        "Time from the first attempt of a notification to one webhook until it was delivered or given up (retries and back-off included), by result (delivered|failed)",
        &["result"],
        vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]
    )
    .expect("metric mtls_gateway_notification_delivery_seconds registers once")
});

/// Pre-resolved series for the common path of each mode (index: `Mode as usize`, forward = 0,
/// transparent = 1), so a proxied request does no label hashing.
pub struct Hot {
    pub proxied_2xx: IntCounter,
    pub latency: prometheus::Histogram,
}

pub static HOT: LazyLock<[Hot; 2]> = LazyLock::new(|| {
    ["forward", "transparent"].map(|mode| Hot {
        proxied_2xx: REQUESTS.with_label_values(&[mode, "proxied", "2xx"]),
        latency: LATENCY.with_label_values(&[mode]),
    })
});

/// `mtls_gateway_upstream_connections_total{reused}`, pre-resolved: index 0 new, 1 reused.
pub static UPSTREAM_REUSE: LazyLock<[IntCounter; 2]> =
    LazyLock::new(|| ["false", "true"].map(|r| UPSTREAM_CONNECTIONS.with_label_values(&[r])));

/// Count one upstream connection used by a request.
pub fn upstream_connection(reused: bool) {
    UPSTREAM_REUSE[reused as usize].inc();
}

/// Touch every metric so that it appears on the page from the start (a scrape before the first
/// request still shows the series with zero values).
///
/// The standard `process_*` series (CPU seconds, resident and virtual memory, open and maximum
/// file descriptors, threads, start time) come from the default registry itself: with the
/// `prometheus` crate's `process` feature it registers a process collector when first used.
pub fn init() {
    for mode in ["forward", "transparent"] {
        LATENCY.with_label_values(&[mode]);
    }
    for r in ["true", "false"] {
        UPSTREAM_CONNECTIONS.with_label_values(&[r]);
    }
    for s in ["store", "certificate", "mappings"] {
        REFRESH_FAILURES.with_label_values(&[s]);
    }
    CERTIFICATES_SKIPPED.with_label_values(&["iterations"]);
    for s in ["available", "expired", "not_yet_valid", "failed", "stale"] {
        CERTIFICATES.with_label_values(&[s]);
    }
    for event in crate::lifecycle::notify::EventKind::ALL {
        for result in ["delivered", "failed", "retried"] {
            NOTIFICATIONS.with_label_values(&[event.as_str(), result]);
        }
    }
    for result in ["delivered", "failed"] {
        NOTIFICATION_DELIVERY.with_label_values(&[result]);
    }
    for result in ["renewed", "failed", "refused"] {
        crate::lifecycle::metrics::RENEWALS.with_label_values(&[result]);
    }
    LazyLock::force(&crate::lifecycle::metrics::CUTOVER_REFUSED);
    for event in crate::lifecycle::notify::EventKind::ALL {
        crate::lifecycle::metrics::NOTICES.with_label_values(&[event.as_str()]);
    }
    LazyLock::force(&REQUESTS);
    LazyLock::force(&HOT);
    LazyLock::force(&UPSTREAM_REUSE);
    LazyLock::force(&MAPPED_REQUESTS);
    LazyLock::force(&UPSTREAM_TLS_FAILURES);
    LazyLock::force(&UPSTREAM_CONNECT_FAILURES);
    LazyLock::force(&UPSTREAM_RETRIES);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&VAULT_FAILOVERS);
    LazyLock::force(&RATE_LIMIT_FLEET_MODE);
    LazyLock::force(&RATE_LIMIT_FLEET_CLAIMS);
    for r in ["ok", "error", "timeout"] {
        RATE_LIMIT_FLEET_SYNCS.with_label_values(&[r]);
    }
    LazyLock::force(&ACCESS_LOG_DROPPED);
    LazyLock::force(&SNAPSHOT_AGE);
    LazyLock::force(&LAST_REFRESH_SUCCESS);
    LazyLock::force(&REFRESH_DURATION);
    LazyLock::force(&CERT_NOT_AFTER);
    LazyLock::force(&MAPPINGS);
}

pub static SHARED_STATE_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "mtls_gateway_shared_state_up",
        "1 while the shared state (redis:) answers, 0 while this replica falls back to per-replica state (or before the first connection); absent without a redis section"
    )
    .expect("metric mtls_gateway_shared_state_up registers once")
});

pub static SHARED_STATE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_shared_state_errors_total",
        "Failed calls to the shared state (redis:), by operation (command name, pipeline, connect, subscribe)",
        &["op"]
    )
    .expect("metric mtls_gateway_shared_state_errors_total registers once")
});

pub static SHARED_NOTICES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_shared_state_notices_total",
        "Change notices received from other replicas (each wakes the refresher)"
    )
    .expect("metric mtls_gateway_shared_state_notices_total registers once")
});

/// Registers the shared-state metrics (only when `redis:` is configured: without it the gauge
/// would say "down" for a replica that never meant to share).
pub fn init_shared() {
    LazyLock::force(&SHARED_STATE_UP);
    for op in crate::shared::OPS {
        SHARED_STATE_ERRORS.with_label_values(&[op]);
    }
    LazyLock::force(&SHARED_NOTICES);
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}
