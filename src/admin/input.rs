//! Request input: JSON read field by field (so every error names its field and never echoes a
//! secret), PKCS#12 bytes in LivePerson's two spellings, multipart forms.
//!
//! Input types stay separate from stored types: handlers turn these into `store` values only
//! after the whole request has been validated.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::request::Parts;
use axum::http::Request;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Parses a JSON body; malformed JSON is a 400 that says where it broke.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(
            "malformed_json",
            "body",
            "the request body is empty; send a JSON document",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            "malformed_json",
            "body",
            format!(
                "the request body is not valid JSON (line {}, column {}); check the syntax",
                e.line(),
                e.column()
            ),
        )
    })
}

/// The objects of a JSON array body (a single object is taken as a one-element array when
/// `allow_single`), at most `max_items`.
pub fn items(
    value: &Value,
    max_items: usize,
    allow_single: bool,
) -> Result<Vec<Obj<'_>>, ApiError> {
    let list: Vec<(String, &Value)> = match value {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("[{i}]"), v))
            .collect(),
        Value::Object(_) if allow_single => vec![(String::new(), value)],
        _ => {
            return Err(ApiError::invalid_type(
                "body",
                if allow_single {
                    "a JSON array of objects (or one object)"
                } else {
                    "a JSON array of objects"
                },
            ))
        }
    };
    if list.is_empty() {
        return Err(ApiError::bad(
            "empty_array",
            "body",
            "the array is empty; send at least one item",
        ));
    }
    if list.len() > max_items {
        return Err(ApiError::bad(
            "too_many_items",
            "body",
            format!(
                "{} items in one request; send at most {max_items} (admin.max_items) per request",
                list.len()
            ),
        ));
    }
    list.into_iter()
        .map(|(path, v)| match v {
            Value::Object(map) => Ok(Obj { map, path }),
            _ => Err(ApiError::invalid_type(
                if path.is_empty() { "body" } else { &path },
                "a JSON object",
            )),
        })
        .collect()
}

/// One JSON object and its place in the request (`[2]`, or empty for the body itself).
pub struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Obj<'a> {
    pub fn new(value: &'a Value, path: &str) -> Result<Obj<'a>, ApiError> {
        match value {
            Value::Object(map) => Ok(Obj {
                map,
                path: path.to_string(),
            }),
            _ => Err(ApiError::invalid_type(
                if path.is_empty() { "body" } else { path },
                "a JSON object",
            )),
        }
    }

    /// The field's name as errors show it: `[0].name` or `name`.
    pub fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Present and not null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid_type(&self.name(key), "a string")),
        }
    }

    pub fn str_req(&self, key: &str, hint: &str) -> Result<&'a str, ApiError> {
        self.str_opt(key)?
            .ok_or_else(|| ApiError::missing(&self.name(key), hint))
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid_type(
                &self.name(key),
                "a boolean (true or false)",
            )),
        }
    }

    /// An id: a non-negative integer, as a JSON number or a numeric string (LivePerson sends
    /// both).
    pub fn id_opt(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_id(v).map(Some).ok_or_else(|| {
                ApiError::invalid_type(
                    &self.name(key),
                    "a non-negative integer id (number or numeric string)",
                )
            }),
        }
    }
}

fn parse_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                s.parse().ok()
            }
        }
        _ => None,
    }
}

/// A path or body id (`certificateId`, `mappingId`).
pub fn id_param(value: &str, field: &str) -> Result<u64, ApiError> {
    parse_id(&Value::String(value.to_string())).ok_or_else(|| {
        ApiError::bad(
            "invalid_id",
            field,
            format!("{field} must be a numeric id, as returned when the object was created"),
        )
    })
}

/// PKCS#12 bytes as LivePerson's clients send them: a JSON array of byte values (Java's signed
/// -128..127, or 0..255), or a base64 string (standard or URL-safe alphabet, padding optional).
/// Never echoes the content.
pub fn p12_bytes(v: &Value, field: &str, max: usize) -> Result<Vec<u8>, ApiError> {
    let bytes = match v {
        Value::Array(a) => {
            if a.len() > max {
                return Err(ApiError::too_large(field, max));
            }
            let mut out = Vec::with_capacity(a.len());
            for (i, b) in a.iter().enumerate() {
                match b.as_i64() {
                    Some(n) if (-128..=255).contains(&n) => out.push((n & 0xff) as u8),
                    _ => {
                        return Err(ApiError::invalid_type(
                            &format!("{field}[{i}]"),
                            "a byte value (an integer from -128 to 255)",
                        ))
                    }
                }
            }
            out
        }
        Value::String(s) => {
            if s.len() / 4 * 3 > max + 3 {
                return Err(ApiError::too_large(field, max));
            }
            let cleaned: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let trimmed = cleaned.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
                .map_err(|_| {
                    ApiError::invalid_type(
                        field,
                        "the PKCS#12 file as a byte array or a base64 string (this string is not base64)",
                    )
                })?
        }
        _ => {
            return Err(ApiError::invalid_type(
                field,
                "the PKCS#12 file as a byte array or a base64 string",
            ))
        }
    };
    if bytes.is_empty() {
        return Err(ApiError::bad(
            "invalid_p12",
            field,
            format!("{field} is empty; send the PKCS#12 (.p12/.pfx) file"),
        ));
    }
    if bytes.len() > max {
        return Err(ApiError::too_large(field, max));
    }
    Ok(bytes)
}

/// A parsed `multipart/form-data` body: parts by name (the first of each name wins).
#[derive(Default)]
pub struct Form {
    parts: Vec<(String, Bytes)>,
}

impl Form {
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.parts.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }

    /// A text part; not UTF-8 is a 400 naming the part.
    pub fn text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| ApiError::invalid_type(name, "UTF-8 text")),
        }
    }
}

/// Reads a multipart body that was already read (and size-capped) into `body`.
pub async fn multipart(parts: &Parts, body: Bytes) -> Result<Form, ApiError> {
    let is_multipart = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    if !is_multipart {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "this resource takes multipart/form-data (parts: see the API description)",
        ));
    }
    let mut req = Request::new(Body::from(body));
    *req.headers_mut() = parts.headers.clone();
    let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::bad(
            "invalid_multipart",
            "body",
            format!("the multipart body cannot be read: {}", e.body_text()),
        )
    })?;
    let mut form = Form::default();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::bad(
                    "invalid_multipart",
                    "body",
                    format!("the multipart body cannot be read: {}", e.body_text()),
                ))
            }
        };
        let name = field.name().unwrap_or("").to_string();
        let data = field.bytes().await.map_err(|e| {
            ApiError::bad(
                "invalid_multipart",
                &name,
                format!("part {name:?} cannot be read: {}", e.body_text()),
            )
        })?;
        if !form.parts.iter().any(|(n, _)| *n == name) {
            form.parts.push((name, data));
        }
    }
    Ok(form)
}
