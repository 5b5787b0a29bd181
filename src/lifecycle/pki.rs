//! STUB (replaced by the PKI helper's module at merge).
#![allow(dead_code, unused_variables)]
use crate::store::{PkiSource, Store, StoreError, SubjectSpec};
pub struct Issued {
    pub certificate_pem: String,
    pub chain_pem: Vec<String>,
    pub private_key_pem: Option<String>,
    pub serial: String,
    pub expiration: Option<i64>,
}
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    Store(StoreError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Malformed(String),
}
pub async fn sign(
    store: &dyn Store,
    src: &PkiSource,
    subject: &SubjectSpec,
    csr_pem: &str,
) -> Result<Issued, PkiError> {
    Err(PkiError::Malformed("stub".into()))
}
pub async fn issue(
    store: &dyn Store,
    src: &PkiSource,
    subject: &SubjectSpec,
) -> Result<Issued, PkiError> {
    Err(PkiError::Malformed("stub".into()))
}
pub fn validate_source(src: &PkiSource) -> Result<(), (String, String)> {
    Ok(())
}
