//! The ops listener: `/metrics` (Prometheus text format, through `pingora-prometheus`), `/live`
//! (the process answers) and `/ready` (a snapshot is loaded and the process is not draining).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora_prometheus::PrometheusHttpApp;

use crate::refresh::Refresher;

pub struct OpsApp {
    pub refresher: Arc<Refresher>,
    pub draining: Arc<AtomicBool>,
}

fn text(status: u16, body: String, ctype: &str) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ctype)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/metrics" => {
                self.refresher.update_age_metric();
                PrometheusHttpApp.response(session).await
            }
            "/live" | "/livez" | "/healthz" => text(200, "ok\n".into(), "text/plain"),
            "/ready" | "/readyz" => {
                let snap = self.refresher.snapshot().load();
                let draining = self.draining.load(Ordering::Acquire);
                let ready = snap.is_loaded() && !draining;
                let reason = if draining {
                    Some("shutting down".to_string())
                } else if !snap.is_loaded() {
                    Some(match self.refresher.last_error() {
                        Some(e) => format!("no snapshot loaded yet: {e}"),
                        None => "no snapshot loaded yet".to_string(),
                    })
                } else {
                    None
                };
                let body = serde_json::json!({
                    "ready": ready,
                    "reason": reason,
                    "generation": snap.generation,
                    "mappings": snap.index.len(),
                    "certificates": snap.certs.len(),
                    "store": self.refresher.store().describe(),
                    "lastRefreshError": self.refresher.last_error(),
                });
                text(
                    if ready { 200 } else { 503 },
                    body.to_string(),
                    "application/json",
                )
            }
            _ => text(
                404,
                "not found: use /metrics, /live or /ready\n".into(),
                "text/plain",
            ),
        }
    }
}
