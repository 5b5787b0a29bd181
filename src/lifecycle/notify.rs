//! STUB (replaced by the notifications helper's module at merge).
#![allow(dead_code, unused_variables)]
use std::sync::Arc;
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event: String,
    pub id: String,
    pub account_id: String,
    pub certificate_id: u64,
    pub certificate_name: String,
    pub serial: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub threshold_days: Option<u32>,
    pub message: String,
    pub occurred_at: String,
    pub gateway: String,
}
pub struct Notifier {
    days: Vec<u32>,
}
impl Notifier {
    pub fn stub() -> Arc<Notifier> {
        Arc::new(Notifier {
            days: vec![30, 14, 7, 1],
        })
    }
    pub fn enabled(&self) -> bool {
        false
    }
    pub fn expiry_days(&self) -> &[u32] {
        &self.days
    }
    pub fn spawn(self: &Arc<Self>, ev: Event) {}
}
