//! The test kit, apart from the request path: a real mutual-TLS target that reports the client
//! certificate it saw ([`echo`]), a certificate generator for test PKIs ([`certgen`]), and the
//! `demo` command that shows the gateway working with no Vault ([`demo`]). The integration tests,
//! the benchmarks and the demo use them; nothing on the request path does.

pub mod certgen;
pub mod demo;
pub mod echo;
