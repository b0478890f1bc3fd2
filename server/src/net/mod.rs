//! The network edge of the server: accepting connections within bounds, and answering while
//! the store is still being opened.
//!
//! - `listener`: the accept loop (connection cap, handshake deadline, back-off when out of
//!   file descriptors) and raising the file-descriptor limit at start.
//! - `tls`: the rustls configuration from PEM files (node certificate, key, client CAs).
//! - `gate`: until the store is open, health answers and every other call is told the store
//!   is recovering (UNAVAILABLE), on the same connections that serve afterwards.

pub mod gate;
pub mod listener;
pub mod tls;
