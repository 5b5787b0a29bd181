//! Everything that talks to a target, for every engine and caller: the resolver (async, cached),
//! the TLS connector (one trust bundle, TLS 1.2 to 1.3, the mapping's certificate per
//! connection, SNI and verification always on) and the pool (keyed by address, leaf SHA-256 and
//! SNI). The lean HTTP/1 loop uses these directly, and the admin's calls (activate validation,
//! the P12 tester) through [`call`], with the same connector and resolver instances (built once
//! in `lib.rs`). Pingora's path (h2c) uses Pingora's connector under the same rules
//! (`crate::proxy`: the same trust bundle, verification, SNI, the leaf digest as pool group, the
//! TLS 1.2 floor checked in `connected_to_upstream`).

pub mod call;
pub mod pool;
pub mod resolve;
pub mod tls;

pub use resolve::Resolver;
pub use tls::{TlsClient, UpConn};
