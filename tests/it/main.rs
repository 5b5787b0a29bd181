//! One integration-test binary (each file under tests/ would link Pingora and BoringSSL again).
//! Every module starts real servers on 127.0.0.1 with ephemeral ports.

mod admin;
mod auth;
mod aws_login;
mod bao;
mod bounds;
mod common;
mod console;
mod console_a11y;
mod console_oidc;
mod csr;
mod echo;
mod fast;
mod file_store;
mod fleet;
mod fleet_limit;
mod framing;
mod lifecycle;
mod mapping_test;
mod notify;
mod ops;
mod p12;
mod parity;
mod pki;
mod proxy;
mod redis;
mod request_path;
mod shared_state;
mod strict_target;
mod vault;
mod vault_gateway;
mod vault_ha;
mod vault_live;
