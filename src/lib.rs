//! mtls-gateway: plain HTTP in, mutual TLS out, with client certificates kept in a store
//! (HashiCorp Vault or an embedded file store).
//!
//! Data flow, one module per step:
//! store (bytes) -> [`p12`] (decode + checks) -> [`snapshot`] (immutable index + ready keys,
//! published through arc-swap by [`refresh`]) -> [`proxy`] (per-request mapping match and peer).

pub mod certgen;
pub mod echo;
pub mod p12;
pub mod store;
