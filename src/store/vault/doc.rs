//! Stored documents as Vault secret data, and the content versions of KV v1 entries.
//!
//! Reading is lenient in the ways `vault kv put key=value ...` forces on an operator: every value
//! may arrive as a string (`id=1001`, `deleted=false`), `p12=@cert.b64` keeps the newlines of
//! `base64` output, `mappings=@m.json` stores the array as a JSON string, and `id`/`accountId`
//! may be left out (the path says them). Everything else is strict, and a mismatch between the
//! path and the document is corruption. Error messages name fields, never values (documents
//! hold passwords).
//!
//! A KV v1 version is the SHA-256 of the canonical JSON (keys sorted, no whitespace) of the
//! *typed* document, so the same content gives the same version however the server or an
//! operator formatted it, and `get_*`, the index and the fallback scan all agree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::store::{MappingDocument, StoredCertificate};

/// Per-account index of a KV v1 layout: `{prefix}/accounts/{account}/index`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Index {
    /// certificate id -> version (digest)
    #[serde(default)]
    pub(crate) certificates: BTreeMap<u64, String>,
    /// Version of the mapping document; `""` when the account has none; absent = unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mappings: Option<String>,
}

/// Canonical JSON: object keys sorted, no insignificant whitespace.
pub(crate) fn canonical(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    if let Some(x) = m.get(*k) {
                        write(x, out);
                    }
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Version of a certificate document in KV v1.
pub(crate) fn certificate_digest(c: &StoredCertificate) -> Result<String, String> {
    let v = serde_json::to_value(c).map_err(|e| format!("cannot encode certificate: {e}"))?;
    Ok(sha256_hex(&canonical(&v)))
}

/// Version of a mapping document in KV v1.
pub(crate) fn mappings_digest(d: &MappingDocument) -> Result<String, String> {
    let v = serde_json::to_value(d).map_err(|e| format!("cannot encode mappings: {e}"))?;
    Ok(sha256_hex(&canonical(&v)))
}

/// Version given to an entry that cannot be decoded, so the refresher still asks for it (and
/// reports the error for that entry). Changes when the bytes change.
pub(crate) fn corrupt_digest(raw: &Value) -> String {
    format!("corrupt-{}", sha256_hex(&canonical(raw)))
}

/// `"123"` -> `123` for an integer field given as a string.
fn int_from_string(m: &mut Map<String, Value>, key: &str) -> Result<(), String> {
    if let Some(Value::String(s)) = m.get(key) {
        let t = s.trim();
        let n: Value = if let Ok(u) = t.parse::<u64>() {
            u.into()
        } else if let Ok(i) = t.parse::<i64>() {
            i.into()
        } else if t.is_empty() || t == "null" {
            Value::Null
        } else {
            return Err(format!("field {key}: expected an integer"));
        };
        m.insert(key.to_owned(), n);
    }
    Ok(())
}

/// `"true"` -> `true` for a boolean field given as a string.
fn bool_from_string(m: &mut Map<String, Value>, key: &str) -> Result<(), String> {
    if let Some(Value::String(s)) = m.get(key) {
        let b = match s.trim() {
            "true" => true,
            "false" => false,
            _ => return Err(format!("field {key}: expected true or false")),
        };
        m.insert(key.to_owned(), Value::Bool(b));
    }
    Ok(())
}

fn expect_kind(
    m: &Map<String, Value>,
    key: &str,
    want: &str,
    required: bool,
) -> Result<(), String> {
    let ok = match m.get(key) {
        None => !required,
        Some(Value::Null) => !required && want != "string",
        Some(v) => match want {
            "string" => v.is_string(),
            "u64" => v.is_u64(),
            "i64" => v.is_i64() || v.is_u64(),
            "bool" => v.is_boolean(),
            _ => false,
        },
    };
    if ok {
        Ok(())
    } else if m.get(key).is_none() {
        Err(format!("field {key} is missing"))
    } else {
        Err(format!(
            "field {key}: expected {}",
            match want {
                "u64" => "a non-negative integer",
                "i64" => "an integer",
                "bool" => "true or false",
                _ => "a string",
            }
        ))
    }
}

/// Decodes the data of `accounts/{account}/certificates/{id}`.
pub(crate) fn decode_certificate(
    data: Value,
    account: &str,
    id: u64,
) -> Result<StoredCertificate, String> {
    let Value::Object(mut m) = data else {
        return Err("secret data is not a JSON object".into());
    };
    int_from_string(&mut m, "id")?;
    int_from_string(&mut m, "notAfter")?;
    int_from_string(&mut m, "updatedAt")?;
    bool_from_string(&mut m, "deleted")?;
    m.entry("id").or_insert_with(|| id.into());
    m.entry("accountId")
        .or_insert_with(|| Value::String(account.to_owned()));
    if !m.contains_key("displayName") {
        if let Some(n) = m.get("name").cloned() {
            m.insert("displayName".into(), n);
        }
    }
    let pending = m
        .get("lifecycle")
        .is_some_and(|l| l.get("pending").is_some_and(|p| !p.is_null()));
    if let Some(Value::String(p12)) = m.get_mut("p12") {
        p12.retain(|c| !c.is_ascii_whitespace());
        // Empty only while awaiting a signature (a CSR was made; nothing serves yet).
        if p12.is_empty() && !pending {
            return Err("field p12 is empty".into());
        }
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD
            .decode(p12.as_bytes())
            .is_err()
        {
            return Err("field p12: not valid base64 (standard alphabet, with padding)".into());
        }
    }
    for (key, kind, required) in [
        ("id", "u64", true),
        ("accountId", "string", true),
        ("name", "string", true),
        ("displayName", "string", true),
        ("p12", "string", true),
        ("password", "string", true),
        ("deleted", "bool", false),
        ("notAfter", "i64", false),
        ("updatedAt", "i64", false),
    ] {
        expect_kind(&m, key, kind, required)?;
    }
    // Every field was checked above; serde's own message could quote a value, so it is not shown.
    let doc: StoredCertificate = serde_json::from_value(Value::Object(m))
        .map_err(|_| "document does not match the certificate layout".to_owned())?;
    if doc.meta.id != id || doc.meta.account_id != account {
        return Err(format!(
            "document says account {:?} id {}, but is stored as account {account:?} id {id}",
            doc.meta.account_id, doc.meta.id
        ));
    }
    Ok(doc)
}

/// Decodes the data of `accounts/{account}/mappings`: `{"mappings": [...]}` with the array
/// inline or as a JSON string.
pub(crate) fn decode_mappings(data: Value, account: &str) -> Result<MappingDocument, String> {
    let Value::Object(mut m) = data else {
        return Err("secret data is not a JSON object".into());
    };
    let list = match m.remove("mappings") {
        None => return Err("field mappings is missing".into()),
        Some(Value::Array(a)) => a,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Array(a)) => a,
            _ => return Err("field mappings: the string is not a JSON array".into()),
        },
        Some(_) => return Err("field mappings: expected an array".into()),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let Value::Object(mut o) = item else {
            return Err(format!("mappings[{i}] is not an object"));
        };
        let at = |e: String| format!("mappings[{i}].{}", e.trim_start_matches("field "));
        int_from_string(&mut o, "id").map_err(at)?;
        int_from_string(&mut o, "certificateId").map_err(at)?;
        bool_from_string(&mut o, "enabled").map_err(at)?;
        bool_from_string(&mut o, "deleted").map_err(at)?;
        o.entry("accountId")
            .or_insert_with(|| Value::String(account.to_owned()));
        for (key, kind, required) in [
            ("id", "u64", true),
            ("accountId", "string", true),
            ("name", "string", true),
            ("serviceName", "string", true),
            ("url", "string", true),
            ("certificateId", "u64", true),
            ("enabled", "bool", false),
            ("deleted", "bool", false),
        ] {
            expect_kind(&o, key, kind, required).map_err(at)?;
        }
        let mapping: crate::store::Mapping =
            serde_json::from_value(Value::Object(o)).map_err(|e| format!("mappings[{i}]: {e}"))?;
        if mapping.account_id != account {
            return Err(format!(
                "mappings[{i}] (id {}) says account {:?} but is stored under account {account:?}",
                mapping.id, mapping.account_id
            ));
        }
        out.push(mapping);
    }
    Ok(MappingDocument { mappings: out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
    }

    #[test]
    fn certificate_written_by_the_vault_cli_with_string_values_decodes() {
        // What `vault kv put .../certificates/1001 name=partner p12=@cert.b64 password=pw
        // deleted=false updatedAt=1700000000` stores: only strings, base64 with newlines.
        let data = json!({
            "name": "partner", "p12": "AAEC\nAwQF\n", "password": "pw",
            "deleted": "false", "updatedAt": "1700000000", "notAfter": ""
        });
        let c = decode_certificate(data, "acme", 1001).expect("decodes");
        assert_eq!(c.meta.id, 1001);
        assert_eq!(c.meta.account_id, "acme");
        assert_eq!(c.meta.display_name, "partner");
        assert_eq!(c.secret.p12, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(c.meta.not_after, None);
        // Same content, typed: same version.
        let typed = serde_json::to_value(&c).expect("encode");
        let again = decode_certificate(typed, "acme", 1001).expect("decodes");
        assert_eq!(
            certificate_digest(&c).expect("digest"),
            certificate_digest(&again).expect("digest")
        );
    }

    #[test]
    fn path_and_document_must_agree() {
        let data = json!({"id": 5, "accountId": "acme", "name": "n", "displayName": "n",
                          "p12": "AAEC", "password": "pw"});
        let e = decode_certificate(data.clone(), "acme", 6).expect_err("id mismatch");
        assert!(e.contains("stored as account \"acme\" id 6"), "{e}");
        let e = decode_certificate(data, "other", 5).expect_err("account mismatch");
        assert!(e.contains("other"), "{e}");
    }

    #[test]
    fn decode_errors_name_the_field_not_the_value() {
        let data = json!({"name": "n", "p12": "AAEC", "password": 123456789});
        let e = decode_certificate(data, "a", 1).expect_err("bad password type");
        assert_eq!(e, "field password: expected a string");
        let data = json!({"name": "n", "p12": "not base64 !!", "password": "hunter2"});
        let e = decode_certificate(data, "a", 1).expect_err("bad p12");
        assert!(!e.contains("hunter2") && e.contains("p12"), "{e}");
    }

    #[test]
    fn mappings_as_array_or_as_json_string() {
        let m = json!([{"id": 1, "name": "m", "serviceName": "IDP", "url": "https://p/*",
                        "certificateId": "1001"}]);
        let a = decode_mappings(json!({"mappings": m.clone()}), "acme").expect("array");
        let b = decode_mappings(json!({"mappings": m.to_string()}), "acme").expect("string");
        assert_eq!(a, b);
        assert_eq!(a.mappings[0].certificate_id, 1001);
        assert!(a.mappings[0].enabled);
        let e = decode_mappings(json!({"mappings": [{"id": 1}]}), "acme").expect_err("incomplete");
        assert_eq!(e, "mappings[0].name is missing");
    }

    #[test]
    fn index_round_trips_with_numeric_keys() {
        let mut i = Index::default();
        i.certificates.insert(17, "abc".into());
        i.mappings = Some(String::new());
        let v = serde_json::to_value(&i).expect("encode");
        assert_eq!(v, json!({"certificates": {"17": "abc"}, "mappings": ""}));
        assert_eq!(serde_json::from_value::<Index>(v).expect("decode"), i);
    }
}
