//! Console pages: certificates (to be written).

use crate::admin::AdminState;

pub fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
}

// TEMPORARY (console-h2): a stand-in until the certificates helper's `display_state` is merged.
// On merge, take the other helper's version and drop this one.
/// The status shown for a certificate entity (TEMPORARY stand-in: the entity's `state`).
pub(crate) fn display_state(entity: &serde_json::Value, _now: i64) -> &'static str {
    match entity["state"].as_str() {
        Some("available") => "available",
        Some("expired") => "expired",
        Some("awaiting_signature") => "awaiting_signature",
        Some("not_yet_valid") => "not_yet_valid",
        Some("unusable") => "unusable",
        Some("load_failed") => "load_failed",
        _ => "unknown",
    }
}
