//! The admin edge's one error type: every refusal is a JSON body
//! `{"error": "<stable code>", "message": "<what is wrong and how to fix it>", "field": "<where>"}`
//! with the right status. Messages name fields, never their secret values.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::store::StoreError;

/// A refusal of the admin API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable (documented in `docs/admin-api.md`).
    pub code: &'static str,
    pub message: String,
    /// The offending field (`[0].p12`, `url`, `certificateId`, ...), when there is one.
    pub field: Option<String>,
    /// Rarely used parts, boxed to keep `Result<_, ApiError>` small.
    pub more: Option<Box<More>>,
}

/// Extra headers and body members of an [`ApiError`].
#[derive(Debug, Clone, Default)]
pub struct More {
    /// Extra response headers (`WWW-Authenticate`, `LP-*-from-transport`).
    pub headers: Vec<(HeaderName, String)>,
    /// Extra members merged into the JSON body (e.g. the tester report).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            more: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.more
            .get_or_insert_with(Default::default)
            .headers
            .push((HeaderName::from_static(name), value.into()));
        self
    }

    pub fn extra(mut self, extra: serde_json::Map<String, serde_json::Value>) -> Self {
        self.more.get_or_insert_with(Default::default).extra = extra;
        self
    }

    /// 400 with a field.
    pub fn bad(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message).field(field)
    }

    /// 400 `invalid_type`: `field` must be `what`. The value is never echoed.
    pub fn invalid_type(field: &str, what: &str) -> Self {
        ApiError::bad("invalid_type", field, format!("{field} must be {what}"))
    }

    /// 400 `missing_field`.
    pub fn missing(field: &str, hint: &str) -> Self {
        ApiError::bad(
            "missing_field",
            field,
            format!("{field} is required; {hint}"),
        )
    }

    pub fn not_found(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message).field(field)
    }

    pub fn conflict(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message).field(field)
    }

    pub fn too_large(field: &str, limit: usize) -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert("limit".into(), json!(limit));
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{field} is larger than the {limit}-byte limit (admin.max_upload_bytes); upload a \
                 smaller file or raise the limit"
            ),
        )
        .field(field)
        .extra(extra)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 401 with the challenge the auth module chose.
    pub fn unauthorized(e: &AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            .header("www-authenticate", e.www_authenticate())
    }

    /// A store failure: the detail goes to the log (it may name paths or addresses), the caller
    /// gets a stable code.
    pub fn store(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "concurrent_write",
                "the data changed while this request was writing it (another writer); retry",
            ),
            other => {
                log::warn!("admin: store error: {other}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the certificate store is unavailable or refused the operation; retry later (the gateway log has the detail)",
                )
            }
        }
    }

    pub fn internal(what: &str) -> Self {
        log::error!("admin: internal error: {what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the gateway log has the detail",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let more = self.more.map(|m| *m).unwrap_or_default();
        let mut body = more.extra;
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        if let Some(f) = self.field {
            body.insert("field".into(), json!(f));
        }
        let mut resp = (self.status, axum::Json(serde_json::Value::Object(body))).into_response();
        for (name, value) in more.headers {
            if let Ok(v) = HeaderValue::from_str(&header_safe(&value)) {
                resp.headers_mut().append(name, v);
            }
        }
        resp
    }
}

pub use crate::header_safe;
