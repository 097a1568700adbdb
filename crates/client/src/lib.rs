//! Shared client library.
