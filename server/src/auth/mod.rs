//! Security at the server's edge: which mode the server runs in, who each request comes from,
//! and the checks the services make before they act. The decisions themselves (accounts,
//! credentials, access lists) live in the `strata-auth` crate.
//!
//! - `mode`: secure (TLS and authentication) or insecure, and the start-up rule that keeps a
//!   server from being exposed without either by accident.
//! - `layer`: authenticates every request (Basic credentials, or a client certificate) and
//!   puts the caller's [`Access`] in its extensions.
//! - `certs`: `strata certs dev`, development certificates.
//! - `kurrent_users`, `users_service`: KurrentDB's `Users` service and Strata's.

pub mod certs;
pub mod kurrent_users;
pub mod layer;
pub mod mode;
pub mod users_service;

use std::sync::OnceLock;

use prost::Message;
pub use strata_auth::Access;
use strata_auth::{Authorizer, Operation};
use strata_proto::v1::{self, error_detail::Kind};
use tonic::{Code, Status};

static AUTHORIZER: OnceLock<Authorizer> = OnceLock::new();

/// Installs the store's access checks (once the store is open).
pub fn install(authorizer: Authorizer) {
    let _ = AUTHORIZER.set(authorizer);
}

/// The client's address, for limits on failed password checks.
pub fn client_ip<T>(request: &tonic::Request<T>) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<crate::net::listener::PeerInfo>()
        .and_then(|p| p.tcp.remote_addr())
        .map(|a| a.ip())
}

/// Who made the request. A request that did not pass the authentication layer (which never
/// happens on the server's port) is anonymous, so nothing is allowed by mistake.
pub fn access<T>(request: &tonic::Request<T>) -> Access {
    request
        .extensions()
        .get::<Access>()
        .cloned()
        .unwrap_or(Access::Anonymous)
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Read => "read",
        Operation::Write => "write",
        Operation::Delete => "delete",
        Operation::MetadataRead => "metadata read",
        Operation::MetadataWrite => "metadata write",
    }
}

/// PERMISSION_DENIED with Strata's typed detail (which the KurrentDB API turns into its own
/// "Access Denied").
pub fn denied(who: &Access, operation: &str, stream: &str) -> Status {
    let message = if stream.is_empty() {
        format!("access denied: {} may not {operation}", who.name())
    } else {
        format!(
            "access denied: {} may not {operation} {stream:?} (its $acl, or the defaults in $settings)",
            who.name()
        )
    };
    let detail = v1::ErrorDetail {
        kind: Some(Kind::AccessDenied(v1::AccessDenied {
            operation: operation.into(),
            stream: stream.into(),
            user: who.name().into(),
        })),
    };
    Status::with_details(
        Code::PermissionDenied,
        message,
        detail.encode_to_vec().into(),
    )
}

/// Whether `who` may do `op` to `stream`.
pub fn may(who: &Access, op: Operation, stream: &str) -> bool {
    match (who, AUTHORIZER.get()) {
        (Access::Unrestricted, _) => true,
        (_, Some(a)) => a.may(who, op, stream),
        (_, None) => false,
    }
}

/// Checks `op` on `stream` for `who`.
pub fn check_access(who: &Access, op: Operation, stream: &str) -> Result<(), Status> {
    if may(who, op, stream) {
        Ok(())
    } else {
        Err(denied(who, op_name(op), stream))
    }
}

/// Checks `op` on `stream` for the request's caller.
pub fn check<T>(
    request: &tonic::Request<T>,
    op: Operation,
    stream: &str,
) -> Result<Access, Status> {
    let who = access(request);
    check_access(&who, op, stream)?;
    Ok(who)
}

/// Consumer-group management: `$ops` or `$admins`.
pub fn require_operator<T>(request: &tonic::Request<T>, operation: &str) -> Result<Access, Status> {
    let who = access(request);
    if who.is_operator() {
        Ok(who)
    } else {
        Err(denied(&who, operation, ""))
    }
}

/// Any authenticated caller (or any caller in insecure mode).
pub fn require_user<T>(request: &tonic::Request<T>, operation: &str) -> Result<Access, Status> {
    let who = access(request);
    match who {
        Access::Anonymous => Err(denied(&who, operation, "")),
        _ => Ok(who),
    }
}
