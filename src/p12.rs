//! PKCS#12 decoding and checks (owned by the p12 work).
