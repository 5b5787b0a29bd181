//! mTLS echo target.
