//! The one mapping from engine errors to gRPC statuses. Every status carries a
//! `strata.v1.ErrorDetail` in its details so clients can react without parsing messages.

use prost::Message;
use strata_engine::{CurrentRevision, Error};
use strata_proto::v1::{self, error_detail::Kind};
use tonic::{Code, Status};

use crate::convert::expected_to_proto;

fn with_detail(code: Code, message: String, kind: Kind) -> Status {
    let detail = v1::ErrorDetail { kind: Some(kind) };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

/// An invalid request argument.
pub fn invalid(field: &str, reason: impl Into<String>) -> Status {
    let reason = reason.into();
    with_detail(
        Code::InvalidArgument,
        format!("invalid {field}: {reason}"),
        Kind::InvalidArgument(v1::InvalidArgument {
            field: field.into(),
            reason,
        }),
    )
}

/// The server is shutting down.
pub fn shutting_down() -> Status {
    let reason = "the server is shutting down".to_owned();
    with_detail(
        Code::Unavailable,
        reason.clone(),
        Kind::Unavailable(v1::Unavailable { reason }),
    )
}

/// The next request of a client stream. A request that cannot be read as one (it does not
/// decode, or is over the size limit) ends the call with INVALID_ARGUMENT (or
/// RESOURCE_EXHAUSTED) saying so, and is logged, instead of looking like the end of the
/// stream; a client that went away just ends it.
pub async fn next_message<T>(input: &mut tonic::Streaming<T>) -> Result<Option<T>, Status> {
    match input.message().await {
        Ok(m) => Ok(m),
        Err(status) => Err(unreadable_request(status)),
    }
}

/// What to answer when a client stream's request could not be read.
pub fn unreadable_request(status: Status) -> Status {
    use tonic::Code;
    match status.code() {
        Code::Internal | Code::InvalidArgument | Code::DataLoss => {
            tracing::warn!(%status, "a request in a client stream could not be decoded; ending the call");
            Status::invalid_argument(format!(
                "a request could not be decoded, so the call ends here: {}",
                status.message()
            ))
        }
        Code::OutOfRange | Code::ResourceExhausted => {
            tracing::warn!(%status, "a request in a client stream was over the size limit; ending the call");
            Status::resource_exhausted(status.message().to_owned())
        }
        _ => status,
    }
}

pub fn from_engine(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => with_detail(
            Code::FailedPrecondition,
            message,
            Kind::WrongExpectedRevision(v1::WrongExpectedRevision {
                stream,
                expected: Some(expected_to_proto(expected)),
                actual_revision: match actual {
                    CurrentRevision::NoStream => None,
                    CurrentRevision::Revision(r) => Some(r),
                },
            }),
        ),
        Error::StreamNotFound { stream } => with_detail(
            Code::NotFound,
            message,
            Kind::StreamNotFound(v1::StreamNotFound { stream }),
        ),
        Error::StreamDeleted { stream } => with_detail(
            Code::FailedPrecondition,
            message,
            Kind::StreamDeleted(v1::StreamDeleted { stream }),
        ),
        Error::InvalidArgument { field, reason } => with_detail(
            Code::InvalidArgument,
            message,
            Kind::InvalidArgument(v1::InvalidArgument {
                field: field.into(),
                reason,
            }),
        ),
        Error::DerivedStreamsOff { what } => derived_streams_off(Code::FailedPrecondition, &what),
        Error::ReservedStream { .. } => with_detail(
            Code::InvalidArgument,
            message.clone(),
            Kind::InvalidArgument(v1::InvalidArgument {
                field: "stream".into(),
                reason: message,
            }),
        ),
        Error::InvalidPosition { .. } => with_detail(
            Code::InvalidArgument,
            message.clone(),
            Kind::InvalidArgument(v1::InvalidArgument {
                field: "position".into(),
                reason: message,
            }),
        ),
        Error::AppendTooLarge { stream, size, max } => with_detail(
            Code::ResourceExhausted,
            message,
            Kind::AppendTooLarge(v1::AppendTooLarge {
                stream,
                size: size as u64,
                max_size: max as u64,
            }),
        ),
        Error::MultiAppendTooLarge { size, max } => with_detail(
            Code::ResourceExhausted,
            message,
            Kind::AppendTooLarge(v1::AppendTooLarge {
                stream: String::new(),
                size: size as u64,
                max_size: max as u64,
            }),
        ),
        Error::ChecksFailed { violations } => with_detail(
            Code::FailedPrecondition,
            message,
            Kind::ChecksFailed(v1::ChecksFailed {
                violations: violations
                    .into_iter()
                    .map(|v| v1::CheckViolation {
                        check: v.check as u32,
                        stream: v.stream,
                        expected: Some(expected_to_proto(v.expected)),
                        actual_revision: match v.actual {
                            CurrentRevision::NoStream => None,
                            CurrentRevision::Revision(r) => Some(r),
                        },
                    })
                    .collect(),
            }),
        ),
        Error::IdempotencyConflict {
            stream, event_id, ..
        } => with_detail(
            Code::AlreadyExists,
            message,
            Kind::IdempotencyConflict(v1::IdempotencyConflict {
                stream,
                event_id: event_id.to_string(),
            }),
        ),
        Error::ReadOnly { .. } | Error::NotAcknowledged { .. } | Error::Closed => with_detail(
            Code::Unavailable,
            message.clone(),
            Kind::Unavailable(v1::Unavailable { reason: message }),
        ),
        // Not transient for this node: the client should go to the leader (named in the text).
        Error::NotLeader { .. } => Status::failed_precondition(message),
        Error::Corruption { .. } | Error::DataLoss { .. } => with_detail(
            Code::DataLoss,
            message.clone(),
            Kind::Internal(v1::Internal { reason: message }),
        ),
        Error::Io { .. } | Error::Index { .. } | Error::Locked { .. } | Error::WrongMode { .. } => {
            with_detail(
                Code::Internal,
                message.clone(),
                Kind::Internal(v1::Internal { reason: message }),
            )
        }
    }
}

/// Persistent-subscription errors; engine errors inside them map as above.
/// A derived stream (`$ce-…`, `$et-…`, or an `$idx-` filter) asked of a server that does not
/// keep them.
pub fn derived_streams_off(code: Code, what: &str) -> Status {
    Status::new(
        code,
        format!(
            "{what} needs the derived streams, and this server does not keep them: start it \
             with --derived-streams"
        ),
    )
}

pub fn from_persistent(e: strata_persistent::Error) -> Status {
    use strata_persistent::Error as P;
    let message = e.to_string();
    match e {
        P::Engine(e) => from_engine(e),
        P::GroupNotFound { target, group } => with_detail(
            Code::NotFound,
            message,
            Kind::GroupNotFound(v1::GroupNotFound {
                stream: target,
                group,
            }),
        ),
        P::GroupExists { target, group } => with_detail(
            Code::AlreadyExists,
            message,
            Kind::GroupExists(v1::GroupExists {
                stream: target,
                group,
            }),
        ),
        P::GroupDeleted { target, group } => with_detail(
            Code::Aborted,
            message,
            Kind::GroupDeleted(v1::GroupDeleted {
                stream: target,
                group,
            }),
        ),
        P::MaxConsumers { target, group, max } => with_detail(
            Code::FailedPrecondition,
            message,
            Kind::MaxConsumersReached(v1::MaxConsumersReached {
                stream: target,
                group,
                max_consumers: max,
            }),
        ),
        P::InvalidArgument { field, reason } => invalid(field, reason),
        P::DerivedStreamsOff { stream } => derived_streams_off(Code::FailedPrecondition, &stream),
        P::TooManyGroups { .. } => with_detail(
            Code::ResourceExhausted,
            message.clone(),
            Kind::Internal(v1::Internal { reason: message }),
        ),
        P::ShuttingDown => shutting_down(),
        P::Restarted | P::LeaderChanged => with_detail(
            Code::Unavailable,
            message.clone(),
            Kind::Unavailable(v1::Unavailable { reason: message }),
        ),
        P::BadState { .. } => with_detail(
            Code::Internal,
            message.clone(),
            Kind::Internal(v1::Internal { reason: message }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::ExpectedRevision;

    fn detail(s: &Status) -> Kind {
        v1::ErrorDetail::decode(s.details())
            .expect("every status carries an ErrorDetail")
            .kind
            .expect("with a kind")
    }

    #[test]
    fn wrong_expected_revision_names_stream_expected_and_actual() {
        let s = from_engine(Error::WrongExpectedRevision {
            stream: "orders-1".into(),
            expected: ExpectedRevision::Exact(3),
            actual: CurrentRevision::Revision(7),
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("orders-1"), "{}", s.message());
        match detail(&s) {
            Kind::WrongExpectedRevision(w) => {
                assert_eq!(w.stream, "orders-1");
                assert_eq!(w.actual_revision, Some(7));
                assert!(w.expected.is_some());
            }
            other => panic!("{other:?}"),
        }
        let s = from_engine(Error::WrongExpectedRevision {
            stream: "new".into(),
            expected: ExpectedRevision::StreamExists,
            actual: CurrentRevision::NoStream,
        });
        match detail(&s) {
            Kind::WrongExpectedRevision(w) => assert_eq!(w.actual_revision, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_engine_error_has_its_code_and_detail() {
        let id = uuid::Uuid::nil();
        let cases: Vec<(Error, Code, &str)> = vec![
            (
                Error::StreamNotFound { stream: "a".into() },
                Code::NotFound,
                "StreamNotFound",
            ),
            (
                Error::StreamDeleted { stream: "a".into() },
                Code::FailedPrecondition,
                "StreamDeleted",
            ),
            (
                Error::InvalidArgument {
                    field: "event_type",
                    reason: "must not be empty".into(),
                },
                Code::InvalidArgument,
                "InvalidArgument",
            ),
            (
                Error::ReservedStream {
                    stream: "$x".into(),
                },
                Code::InvalidArgument,
                "InvalidArgument",
            ),
            (
                Error::InvalidPosition { position: 9 },
                Code::InvalidArgument,
                "InvalidArgument",
            ),
            (
                Error::AppendTooLarge {
                    stream: "a".into(),
                    size: 2,
                    max: 1,
                },
                Code::ResourceExhausted,
                "AppendTooLarge",
            ),
            (
                Error::IdempotencyConflict {
                    stream: "a".into(),
                    event_id: id,
                    detail: "is at revision 3".into(),
                },
                Code::AlreadyExists,
                "IdempotencyConflict",
            ),
            (
                Error::ReadOnly {
                    reason: "disk full".into(),
                },
                Code::Unavailable,
                "Unavailable",
            ),
            (Error::Closed, Code::Unavailable, "Unavailable"),
            (
                Error::Corruption {
                    file: "log/0.seg".into(),
                    offset: 40,
                    reason: "CRC mismatch".into(),
                },
                Code::DataLoss,
                "Internal",
            ),
        ];
        for (e, code, kind) in cases {
            let text = e.to_string();
            let s = from_engine(e);
            assert_eq!(s.code(), code, "{text}");
            assert_eq!(s.message(), text, "the message is the engine's own");
            let got = format!("{:?}", detail(&s));
            assert!(got.starts_with(kind), "{text}: {got}");
        }
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let s = invalid("max_count", "must be positive");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "invalid max_count: must be positive");
        match detail(&s) {
            Kind::InvalidArgument(a) => assert_eq!(a.field, "max_count"),
            other => panic!("{other:?}"),
        }
    }
}
