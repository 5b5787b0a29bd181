//! Certificate lifecycle: keys and CSRs the gateway makes itself ([`keys`]), Vault PKI as a
//! source of versions ([`pki`]), renewal before expiry with one replica renewing at a time,
//! cut-over proven by a handshake, and expiry and failure notifications ([`notify`]).

pub mod config;
pub mod engine;
pub mod keys;
pub mod metrics;
pub mod notify;
pub mod pki;
