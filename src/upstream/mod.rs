//! Everything that talks to a target, for every engine and caller: the resolver (async, cached),
//! the TLS connector (one trust bundle, TLS 1.2 to 1.3, the mapping's certificate per
//! connection, SNI and verification always on) and the pool (keyed by address, leaf SHA-256 and
//! SNI). The lean HTTP/1 loop and the admin's test calls use these directly; Pingora's path (h2c)
//! uses Pingora's connector under the same rules (`crate::proxy`: verification, SNI, the leaf
//! digest as pool group, the TLS 1.2 floor checked in `connected_to_upstream`).

pub mod call;
pub mod pool;
pub mod resolve;
pub mod tls;

pub use resolve::Resolver;
pub use tls::{TlsClient, UpConn};
