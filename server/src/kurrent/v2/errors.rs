//! KurrentDB v2's rich errors: a `google.rpc.Status` in `grpc-status-details-bin` whose details
//! hold a `google.rpc.ErrorInfo` (reason = the `StreamsError` name without its prefix, domain
//! `streams`) and the typed detail message. The .NET client switches on the reason, the Python
//! client on the detail's type; both are sent.
//!
//! Errors v2 has no typed form for (access denied, bad arguments, an unavailable store) go out
//! as the v1 mapping sends them, without rich details, so that clients fall back to their
//! status-code handling and raise the same exceptions as for v1 calls.

use std::collections::HashMap;

use prost::Message;
use strata_engine::{CurrentRevision, Error, ExpectedRevision};
use strata_kurrentdb_proto::kurrentdb::protocol::v2::streams::errors as ke;
use tonic::{Code, Status};

use crate::kurrent::status::from_strata;
use crate::status::from_engine;

/// `google.rpc.Status` as the rich error model defines it (repeated details; the v1 protocol's
/// `google.rpc.Status` in `proto/kurrentdb/status.proto` has a single one).
#[derive(Clone, PartialEq, Message)]
struct RichStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.ErrorInfo`.
#[derive(Clone, PartialEq, Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: HashMap<String, String>,
}

const DETAILS_PACKAGE: &str = "kurrentdb.protocol.v2.streams.errors";

fn any<M: Message>(type_name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: m.encode_to_vec(),
    }
}

/// A stream error: `reason` as in `StreamsError` without the prefix, and the typed detail.
fn rich<M: Message>(
    code: Code,
    message: String,
    reason: &str,
    detail: Option<(&str, M)>,
) -> Status {
    let mut details = vec![any(
        "google.rpc.ErrorInfo",
        &ErrorInfo {
            reason: reason.into(),
            domain: "streams".into(),
            metadata: HashMap::new(),
        },
    )];
    if let Some((name, m)) = detail {
        details.push(any(&format!("{DETAILS_PACKAGE}.{name}"), &m));
    }
    let status = RichStatus {
        code: code as i32,
        message: message.clone(),
        details,
    };
    Status::with_details(code, message, status.encode_to_vec().into())
}

/// v2's number for an expected revision.
pub fn expected_number(e: ExpectedRevision) -> i64 {
    match e {
        ExpectedRevision::Any => -2,
        ExpectedRevision::NoStream => -1,
        ExpectedRevision::StreamExists => -4,
        ExpectedRevision::Exact(n) => n as i64,
    }
}

/// An expected revision or state as v2 numbers it (absent: any).
pub fn expected_from_number(n: Option<i64>, field: &str) -> Result<ExpectedRevision, Status> {
    match n {
        None | Some(-2) => Ok(ExpectedRevision::Any),
        Some(-1) => Ok(ExpectedRevision::NoStream),
        Some(-4) => Ok(ExpectedRevision::StreamExists),
        Some(n) if n >= 0 => Ok(ExpectedRevision::Exact(n as u64)),
        Some(n) => Err(Status::invalid_argument(format!(
            "{field} {n} is not a revision (0 or more) nor one of -1 (no stream), -2 (any), -4 (exists)"
        ))),
    }
}

fn actual_number(a: CurrentRevision) -> i64 {
    match a {
        CurrentRevision::NoStream => -1,
        CurrentRevision::Revision(r) => r as i64,
    }
}

fn clamp(n: usize) -> i32 {
    n.min(i32::MAX as usize) as i32
}

/// STREAM_ALREADY_IN_APPEND_SESSION.
pub fn stream_twice(stream: &str) -> Status {
    rich(
        Code::Aborted,
        format!("Stream '{stream}' appears more than once in the append session; send all of its records in one request."),
        "STREAM_ALREADY_IN_APPEND_SESSION",
        Some((
            "StreamAlreadyInAppendSessionErrorDetails",
            ke::StreamAlreadyInAppendSessionErrorDetails {
                stream: stream.into(),
            },
        )),
    )
}

/// APPEND_SESSION_NO_REQUESTS.
pub fn no_requests() -> Status {
    rich::<ke::StreamNotFoundErrorDetails>(
        Code::FailedPrecondition,
        "The append session ended without any append requests.".into(),
        "APPEND_SESSION_NO_REQUESTS",
        None,
    )
}

/// APPEND_RECORD_SIZE_EXCEEDED.
pub fn record_too_large(stream: &str, record_id: &str, size: usize, max: usize) -> Status {
    rich(
        Code::InvalidArgument,
        format!("Record {record_id} for stream '{stream}' is {size} bytes, over the maximum of {max} bytes."),
        "APPEND_RECORD_SIZE_EXCEEDED",
        Some((
            "AppendRecordSizeExceededErrorDetails",
            ke::AppendRecordSizeExceededErrorDetails {
                stream: stream.into(),
                record_id: record_id.into(),
                size: clamp(size),
                max_size: clamp(max),
            },
        )),
    )
}

/// APPEND_TRANSACTION_SIZE_EXCEEDED.
pub fn transaction_too_large(size: usize, max: usize) -> Status {
    rich(
        Code::Aborted,
        format!("The append is {size} bytes, over the maximum of {max} bytes (--max-append-size); split it into smaller appends."),
        "APPEND_TRANSACTION_SIZE_EXCEEDED",
        Some((
            "AppendTransactionSizeExceededErrorDetails",
            ke::AppendTransactionSizeExceededErrorDetails {
                size: clamp(size),
                max_size: clamp(max),
            },
        )),
    )
}

/// An engine error of a multi-stream append, in v2's form where it has one.
pub fn from_append_error(e: Error) -> Status {
    match e {
        Error::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => {
            let (expected, actual) = (expected_number(expected), actual_number(actual));
            rich(
                Code::FailedPrecondition,
                format!("Append failed due to a revision conflict on stream '{stream}'. Expected revision: {expected}. Actual revision: {actual}."),
                "STREAM_REVISION_CONFLICT",
                Some((
                    "StreamRevisionConflictErrorDetails",
                    ke::StreamRevisionConflictErrorDetails {
                        stream,
                        expected_revision: expected,
                        actual_revision: actual,
                    },
                )),
            )
        }
        Error::StreamDeleted { stream } => rich(
            Code::FailedPrecondition,
            format!("Stream '{stream}' has been tombstoned: it can no longer be written."),
            "STREAM_TOMBSTONED",
            Some((
                "StreamTombstonedErrorDetails",
                ke::StreamTombstonedErrorDetails { stream },
            )),
        ),
        Error::AppendTooLarge { size, max, .. } | Error::MultiAppendTooLarge { size, max } => {
            transaction_too_large(size, max)
        }
        Error::ChecksFailed { violations } => {
            let message = format!(
                "Append failed: {} consistency check(s) failed: {}.",
                violations.len(),
                violations
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let detail = ke::AppendConsistencyViolationErrorDetails {
                violations: violations
                    .into_iter()
                    .map(|v| ke::ConsistencyViolation {
                        check_index: clamp(v.check),
                        r#type: Some(ke::consistency_violation::Type::StreamState(
                            ke::consistency_violation::StreamStateViolation {
                                stream: v.stream,
                                expected_state: expected_number(v.expected),
                                actual_state: actual_number(v.actual),
                            },
                        )),
                    })
                    .collect(),
            };
            rich(
                Code::FailedPrecondition,
                message,
                "APPEND_CONSISTENCY_VIOLATION",
                Some(("AppendConsistencyViolationErrorDetails", detail)),
            )
        }
        other => from_strata(from_engine(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &Status) -> RichStatus {
        RichStatus::decode(s.details()).unwrap()
    }

    #[test]
    fn a_revision_conflict_carries_error_info_and_the_typed_detail() {
        let s = from_append_error(Error::WrongExpectedRevision {
            stream: "orders-1".into(),
            expected: ExpectedRevision::NoStream,
            actual: CurrentRevision::Revision(4),
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        let rich = decode(&s);
        assert_eq!(rich.code, Code::FailedPrecondition as i32);
        assert_eq!(
            rich.details[0].type_url,
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        let info = ErrorInfo::decode(&*rich.details[0].value).unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("STREAM_REVISION_CONFLICT", "streams")
        );
        assert_eq!(
            rich.details[1].type_url,
            "type.googleapis.com/kurrentdb.protocol.v2.streams.errors.StreamRevisionConflictErrorDetails"
        );
        let d = ke::StreamRevisionConflictErrorDetails::decode(&*rich.details[1].value).unwrap();
        assert_eq!(
            (d.stream.as_str(), d.expected_revision, d.actual_revision),
            ("orders-1", -1, 4)
        );
        assert!(
            s.message()
                .contains("Expected revision: -1. Actual revision: 4."),
            "{}",
            s.message()
        );
    }

    #[test]
    fn failed_checks_list_every_violation() {
        let s = from_append_error(Error::ChecksFailed {
            violations: vec![strata_engine::CheckViolation {
                check: 1,
                stream: "b".into(),
                expected: ExpectedRevision::Exact(3),
                actual: CurrentRevision::NoStream,
            }],
        });
        let rich = decode(&s);
        let d =
            ke::AppendConsistencyViolationErrorDetails::decode(&*rich.details[1].value).unwrap();
        assert_eq!(d.violations.len(), 1);
        assert_eq!(d.violations[0].check_index, 1);
    }

    #[test]
    fn errors_without_a_v2_form_carry_no_rich_details() {
        let s = from_append_error(Error::InvalidArgument {
            field: "event type",
            reason: "empty".into(),
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(RichStatus::decode(s.details()).map_or(true, |r| r.details.is_empty()));
        assert_eq!(
            expected_from_number(Some(-3), "x").unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            expected_from_number(None, "x").unwrap(),
            ExpectedRevision::Any
        );
    }
}
