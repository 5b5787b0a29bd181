//! Everything that talks to a target, for every engine and caller: the resolver (async, cached),
//! the TLS connector (one trust bundle, TLS 1.2 to 1.3, the mapping's certificate per
//! connection, SNI and verification always on) and the pool (keyed by address, leaf SHA-256 and
//! SNI). Every path that talks to a target uses them: the lean loop, which serves HTTP/1 requests
//! and HTTP/2 streams alike (`crate::proxy`), and the admin's calls (activate validation, the
//! P12 tester) through [`call`], with the same connector and resolver instances (built once in
//! `lib.rs`).

pub mod call;
pub mod pool;
pub mod resolve;
pub mod tls;

pub use resolve::Resolver;
pub use tls::{TlsClient, UpConn};
