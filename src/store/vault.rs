//! Vault store.
