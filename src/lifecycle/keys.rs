//! STUB (replaced by the keys helper's module at merge).
#![allow(dead_code, unused_variables)]
use crate::store::{KeyType, SubjectSpec};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
}
pub fn validate_subject(s: &SubjectSpec) -> Result<(), (String, String)> {
    Ok(())
}
pub struct NewKey {
    pub key_pem: String,
    pub csr_pem: String,
}
pub fn generate(key_type: KeyType, subject: &SubjectSpec) -> Result<NewKey, KeyError> {
    Err(KeyError::Invalid("stub".into()))
}
pub fn csr_for(key_pem: &str, subject: &SubjectSpec) -> Result<String, KeyError> {
    Err(KeyError::Invalid("stub".into()))
}
pub struct Completed {
    pub p12: Vec<u8>,
    pub password: String,
    pub serial_hex: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    pub leaf_sha256: [u8; 32],
    pub chain_len: usize,
    pub warnings: Vec<String>,
}
pub fn complete(
    key_pem: &str,
    certs_pem: &str,
    chain_pem: Option<&str>,
) -> Result<Completed, KeyError> {
    Err(KeyError::Invalid("stub".into()))
}
pub fn normalize_key_pem(key_pem: &str) -> Result<String, KeyError> {
    Err(KeyError::Invalid("stub".into()))
}
