//! One integration-test binary (each file under tests/ would link Pingora and BoringSSL again).
//! Every module starts real servers on 127.0.0.1 with ephemeral ports.

mod echo;
mod file_store;
mod common;
mod ops;
mod proxy;
mod p12;
