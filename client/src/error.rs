//! The client's error type, decoded from the server's `strata.v1.ErrorDetail`.

use prost::Message;
use strata_proto::v1::{self, error_detail::Kind};
use tonic::{Code, Status};

use crate::types::{expected_from_proto, ExpectedRevision};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The stream was not at the expected revision. `actual` is `None` when it has no events.
    #[error("wrong expected revision for stream '{stream}': expected {expected}, actual {}", actual.map_or("no stream".to_owned(), |r| r.to_string()))]
    WrongExpectedRevision {
        stream: String,
        expected: ExpectedRevision,
        actual: Option<u64>,
    },
    #[error("stream '{stream}' not found")]
    StreamNotFound { stream: String },
    #[error("stream '{stream}' is deleted (tombstoned)")]
    StreamDeleted { stream: String },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("append to '{stream}' is {size} bytes, over the server's maximum of {max_size}")]
    AppendTooLarge {
        stream: String,
        size: u64,
        max_size: u64,
    },
    #[error("append to '{stream}' partially overlaps events already written (event {event_id})")]
    IdempotencyConflict { stream: String, event_id: String },
    /// Checks of a multi-stream append failed; nothing was written.
    #[error("consistency checks failed: {}", violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))]
    ChecksFailed { violations: Vec<CheckViolation> },
    #[error("persistent subscription group '{group}' on '{stream}' does not exist")]
    GroupNotFound { stream: String, group: String },
    #[error("persistent subscription group '{group}' on '{stream}' already exists")]
    GroupExists { stream: String, group: String },
    /// The group was deleted while this consumer was connected.
    #[error("persistent subscription group '{group}' on '{stream}' was deleted")]
    GroupDeleted { stream: String, group: String },
    #[error("group '{group}' on '{stream}' already has its maximum of {max} consumers")]
    MaxConsumersReached {
        stream: String,
        group: String,
        max: u32,
    },
    /// The user may not do this (the stream's access list, or the operation needs `$ops` or
    /// `$admins`).
    #[error("access denied: {user} may not {operation}{}", if stream.is_empty() { String::new() } else { format!(" '{stream}'") })]
    AccessDenied {
        operation: String,
        stream: String,
        user: String,
    },
    #[error("user '{0}' does not exist")]
    UserNotFound(String),
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// No usable credentials: none given, wrong, or the account is disabled.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The server is shutting down, read-only, or unreachable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// Could not connect (bad URL, refused connection).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Any other server error.
    #[error("server error ({code:?}): {message}")]
    Server { code: Code, message: String },
}

impl Error {
    /// Worth retrying with the same request (idempotent for appends with event IDs).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// A cluster node refused a write because another node leads.
    pub fn is_not_leader(&self) -> bool {
        matches!(self, Error::Server { code: Code::FailedPrecondition, message } if message.contains("not the leader"))
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        if let Ok(detail) = v1::ErrorDetail::decode(s.details()) {
            match detail.kind {
                Some(Kind::WrongExpectedRevision(w)) => {
                    return Error::WrongExpectedRevision {
                        stream: w.stream,
                        expected: expected_from_proto(w.expected),
                        actual: w.actual_revision,
                    }
                }
                Some(Kind::StreamNotFound(n)) => return Error::StreamNotFound { stream: n.stream },
                Some(Kind::StreamDeleted(d)) => return Error::StreamDeleted { stream: d.stream },
                Some(Kind::InvalidArgument(a)) => {
                    return Error::InvalidArgument {
                        field: a.field,
                        reason: a.reason,
                    }
                }
                Some(Kind::AppendTooLarge(a)) => {
                    return Error::AppendTooLarge {
                        stream: a.stream,
                        size: a.size,
                        max_size: a.max_size,
                    }
                }
                Some(Kind::IdempotencyConflict(c)) => {
                    return Error::IdempotencyConflict {
                        stream: c.stream,
                        event_id: c.event_id,
                    }
                }
                Some(Kind::Unavailable(u)) => return Error::Unavailable(u.reason),
                Some(Kind::GroupNotFound(g)) => {
                    return Error::GroupNotFound {
                        stream: g.stream,
                        group: g.group,
                    }
                }
                Some(Kind::GroupExists(g)) => {
                    return Error::GroupExists {
                        stream: g.stream,
                        group: g.group,
                    }
                }
                Some(Kind::GroupDeleted(g)) => {
                    return Error::GroupDeleted {
                        stream: g.stream,
                        group: g.group,
                    }
                }
                Some(Kind::MaxConsumersReached(m)) => {
                    return Error::MaxConsumersReached {
                        stream: m.stream,
                        group: m.group,
                        max: m.max_consumers,
                    }
                }
                Some(Kind::AccessDenied(d)) => {
                    return Error::AccessDenied {
                        operation: d.operation,
                        stream: d.stream,
                        user: d.user,
                    }
                }
                Some(Kind::ChecksFailed(c)) => {
                    return Error::ChecksFailed {
                        violations: c
                            .violations
                            .into_iter()
                            .map(|v| CheckViolation {
                                check: v.check as usize,
                                stream: v.stream,
                                expected: expected_from_proto(v.expected),
                                actual: v.actual_revision,
                            })
                            .collect(),
                    }
                }
                Some(Kind::Unauthenticated(u)) => return Error::Unauthenticated(u.reason),
                Some(Kind::UserNotFound(u)) => return Error::UserNotFound(u.login),
                Some(Kind::UserExists(u)) => return Error::UserExists(u.login),
                Some(Kind::Internal(_)) | None => {}
            }
        }
        // No ErrorDetail: the status did not come from a Strata handler but from the
        // transport (connection refused, reset, or cancelled when it closed mid-call).
        match s.code() {
            Code::Unavailable | Code::Cancelled => Error::Unavailable(s.message().to_owned()),
            Code::DeadlineExceeded => Error::DeadlineExceeded,
            Code::Unauthenticated => Error::Unauthenticated(s.message().to_owned()),
            code => Error::Server {
                code,
                message: s.message().to_owned(),
            },
        }
    }
}

/// A failed check of a multi-stream append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckViolation {
    /// Index of the check, in the order the checks were added.
    pub check: usize,
    pub stream: String,
    pub expected: ExpectedRevision,
    /// `None`: the stream has no events.
    pub actual: Option<u64>,
}

impl std::fmt::Display for CheckViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check {} on '{}' expected {}, actual {}",
            self.check,
            self.stream,
            self.expected,
            self.actual
                .map_or("no stream".to_owned(), |r| r.to_string())
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, kind: Kind) -> Status {
        let detail = v1::ErrorDetail { kind: Some(kind) };
        Status::with_details(code, "server text", detail.encode_to_vec().into())
    }

    #[test]
    fn details_become_typed_errors() {
        let e = Error::from(status(
            Code::FailedPrecondition,
            Kind::WrongExpectedRevision(v1::WrongExpectedRevision {
                stream: "acct-1".into(),
                expected: Some(v1::ExpectedRevision {
                    kind: Some(v1::expected_revision::Kind::Exact(2)),
                }),
                actual_revision: Some(5),
            }),
        ));
        assert_eq!(
            e,
            Error::WrongExpectedRevision {
                stream: "acct-1".into(),
                expected: ExpectedRevision::Exact(2),
                actual: Some(5),
            }
        );
        assert!(e.to_string().contains("actual 5"), "{e}");
        let e = Error::from(status(
            Code::NotFound,
            Kind::GroupNotFound(v1::GroupNotFound {
                stream: "$all".into(),
                group: "g".into(),
            }),
        ));
        assert!(matches!(e, Error::GroupNotFound { ref group, .. } if group == "g"));
        let e = Error::from(status(
            Code::Unavailable,
            Kind::Unavailable(v1::Unavailable {
                reason: "the store is read-only: disk full".into(),
            }),
        ));
        assert_eq!(
            e,
            Error::Unavailable("the store is read-only: disk full".into())
        );
        assert!(e.is_transient());
    }

    #[test]
    fn a_followers_refusal_is_recognised() {
        let e = Error::from(Status::failed_precondition(
            "this node cannot take writes: it is not the leader; node 3 is",
        ));
        assert!(e.is_not_leader() && !e.is_transient());
        assert!(!Error::from(Status::failed_precondition("group exists")).is_not_leader());
    }

    #[test]
    fn transport_statuses_without_detail() {
        assert_eq!(
            Error::from(Status::unavailable("connection refused")),
            Error::Unavailable("connection refused".into())
        );
        assert!(Error::from(Status::cancelled("closed")).is_transient());
        assert_eq!(
            Error::from(Status::deadline_exceeded("late")),
            Error::DeadlineExceeded
        );
        let e = Error::from(Status::data_loss("corrupt log: x at byte offset 4"));
        assert!(!e.is_transient());
        assert_eq!(
            e,
            Error::Server {
                code: Code::DataLoss,
                message: "corrupt log: x at byte offset 4".into()
            }
        );
    }
}
