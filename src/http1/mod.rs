//! The proxy listener's HTTP/1.1 engine: the connection loop ([`conn`]) and the framing rules it
//! holds every request and response to ([`codec`]).

pub mod codec;
pub mod conn;

pub use conn::ProxyApp;
