//! Only tests live here (`tests/rust_client.rs`): the official KurrentDB Rust client against
//! the real `strata` binary, kept in its own crate so its dependency tree (tonic 0.13,
//! rustls) stays out of Strata's own crates.
