//! Lifecycle metrics (registered in the default registry with the others). Labels are bounded:
//! a result or an event name, never an account, a URL or a secret.

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};

pub static RENEWALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_certificate_renewals_total",
        "Automatic renewals of PKI-sourced certificates by result (renewed|failed|refused: a target refused the new version, the old one kept serving)",
        &["result"]
    )
    .expect("metric mtls_gateway_certificate_renewals_total registers once")
});

pub static CUTOVER_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "mtls_gateway_certificate_cutover_refused_total",
        "New certificate versions withheld because a mapped target refused them in the cut-over handshake"
    )
    .expect("metric mtls_gateway_certificate_cutover_refused_total registers once")
});

pub static NOTICES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "mtls_gateway_certificate_events_total",
        "Lifecycle events raised by this replica (each once per certificate version across replicas for thresholds), by event",
        &["event"]
    )
    .expect("metric mtls_gateway_certificate_events_total registers once")
});
