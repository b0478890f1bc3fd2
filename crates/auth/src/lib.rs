//! Users, credentials and stream access control for Strata. Like everything else the server
//! keeps, users live in the log, in system streams, so backups and (later) replication carry
//! them:
//!
//! - `$users`: one `$UserCreated` / `$UserDeleted` event per account created or deleted;
//! - `$user-<login>`: the account's current record (`$user` events, the newest wins; a
//!   `$userDeleted` event ends it). Passwords are stored only as argon2id hashes.
//! - `$settings`: the default access lists (`update-default-acl` events, KurrentDB's format).
//!
//! Access control follows KurrentDB: a stream's metadata may carry `$acl` with `$r`, `$w`,
//! `$d`, `$mr` and `$mw`, each a user or group name or a list of them (`$all` is everyone);
//! what a stream does not say comes from `$settings` (`$userStreamAcl` for user streams,
//! `$systemStreamAcl` for `$`-streams), and what that does not say from the built-in defaults
//! (user streams: everyone; system streams: `$admins`). Members of `$admins` may do anything.
//!
//! Module map: [`acl`] (access lists and the decision), [`users`] (accounts in the log),
//! [`authenticate`] (checking credentials: cache, brute-force limits, KDF concurrency),
//! [`password`] (hashing); `follow` keeps a cluster node's accounts in step with the log.

pub mod acl;
pub mod authenticate;
mod error;
mod follow;
pub mod password;
pub mod users;

pub use acl::{Access, Authorizer, DefaultAcls, Operation, Principal};
pub use authenticate::{AuthFailure, Authenticator};
pub use error::{Error, Result};
pub use users::{UserRecord, Users};

/// The group whose members may do anything.
pub const ADMINS: &str = "$admins";
/// The group of operators: consumer groups and other operations, no user management.
pub const OPS: &str = "$ops";
/// In an access list: everyone.
pub const EVERYONE: &str = "$all";
