//! Certificate generation for tests and the demo.
