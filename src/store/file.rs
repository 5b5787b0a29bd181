//! File store.
