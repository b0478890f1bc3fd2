//! Errors as KurrentDB clients expect them: the gRPC codes and English texts they match on,
//! the `exception` trailers some of them read, and no `grpc-status-details-bin` (clients that
//! find one expect their own detail types and report a generic error instead).

use prost::Message;
use strata_engine::ExpectedRevision;
use strata_proto::v1::{self, error_detail::Kind};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use super::expected_number;
use crate::convert::expected_from_proto;

fn with_exception(code: Code, message: String, exception: &'static str) -> Status {
    let mut s = Status::new(code, message);
    s.metadata_mut()
        .insert("exception", MetadataValue::from_static(exception));
    s
}

/// KurrentDB's wrong-expected-version text for deletes and tombstones (it says "Delete" for
/// both), which clients parse for the two versions.
pub fn delete_wrong_version(
    stream: &str,
    expected: ExpectedRevision,
    actual: Option<u64>,
) -> Status {
    let actual = actual.map_or(-1, |a| a as i64);
    let mut s = with_exception(
        Code::FailedPrecondition,
        format!(
            "Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {}, Actual version: {actual}",
            expected_number(expected)
        ),
        "wrong-expected-version",
    );
    if let Ok(v) = stream.parse() {
        s.metadata_mut().insert("stream-name", v);
    }
    s
}

pub fn stream_deleted(stream: &str) -> Status {
    let mut s = with_exception(
        Code::FailedPrecondition,
        format!("Event stream '{stream}' is deleted."),
        "stream-deleted",
    );
    if let Ok(v) = stream.parse() {
        s.metadata_mut().insert("stream-name", v);
    }
    s
}

pub fn group_not_found(stream: &str, group: &str) -> Status {
    with_exception(
        Code::NotFound,
        format!("Subscription group '{group}' on stream '{stream}' does not exist."),
        "persistent-subscription-does-not-exist",
    )
}

/// Rewrites a status made by Strata's own mapping (with a `strata.v1.ErrorDetail`) into the
/// KurrentDB form.
pub fn from_strata(s: Status) -> Status {
    let Ok(detail) = v1::ErrorDetail::decode(s.details()) else {
        return Status::new(s.code(), s.message());
    };
    match detail.kind {
        Some(Kind::WrongExpectedRevision(w)) => {
            let expected = expected_from_proto(w.expected);
            delete_wrong_version(&w.stream, expected, w.actual_revision)
        }
        Some(Kind::StreamDeleted(d)) => stream_deleted(&d.stream),
        Some(Kind::AppendTooLarge(a)) => with_exception(
            Code::InvalidArgument,
            format!("Maximum Append Size of {} Exceeded.", a.max_size),
            "maximum-append-size-exceeded",
        ),
        Some(Kind::GroupNotFound(g)) => group_not_found(&g.stream, &g.group),
        Some(Kind::GroupExists(g)) => with_exception(
            Code::AlreadyExists,
            format!(
                "Subscription group '{}' on stream '{}' exists.",
                g.group, g.stream
            ),
            "persistent-subscription-exists",
        ),
        Some(Kind::MaxConsumersReached(m)) => with_exception(
            Code::FailedPrecondition,
            format!(
                "Maximum subscriptions reached for subscription group '{}' on stream '{}'.",
                m.group, m.stream
            ),
            "maximum-subscribers-reached",
        ),
        Some(Kind::GroupDeleted(g)) => with_exception(
            Code::Cancelled,
            format!(
                "Subscription group '{}' on stream '{}' was dropped: it was deleted.",
                g.group, g.stream
            ),
            "persistent-subscription-dropped",
        ),
        Some(Kind::AccessDenied(_)) => access_denied(),
        _ => Status::new(s.code(), s.message()),
    }
}

/// KurrentDB's refusal: PERMISSION_DENIED "Access Denied" with the `access-denied` exception
/// trailer that its clients turn into their access-denied error.
pub fn access_denied() -> Status {
    with_exception(
        Code::PermissionDenied,
        "Access Denied".into(),
        "access-denied",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exception(s: &Status) -> &str {
        s.metadata()
            .get("exception")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    // Clients match these texts and trailers; they must not drift.
    #[test]
    fn delete_conflicts_use_kurrentdbs_wording() {
        let s = delete_wrong_version("orders", ExpectedRevision::Exact(4), Some(6));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "Delete failed due to WrongExpectedVersion. Stream: orders, Expected version: 4, Actual version: 6"
        );
        assert_eq!(exception(&s), "wrong-expected-version");
        let s = delete_wrong_version("orders", ExpectedRevision::NoStream, None);
        assert!(
            s.message().ends_with("Actual version: -1"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn deleted_stream_and_missing_group_wording() {
        let s = stream_deleted("orders");
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "Event stream 'orders' is deleted.");
        assert_eq!(exception(&s), "stream-deleted");
        let s = group_not_found("$all", "billing");
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(
            s.message(),
            "Subscription group 'billing' on stream '$all' does not exist."
        );
        assert_eq!(exception(&s), "persistent-subscription-does-not-exist");
    }

    #[test]
    fn strata_statuses_are_rewritten_without_strata_details() {
        let strata = crate::status::from_engine(strata_engine::Error::StreamDeleted {
            stream: "gone".into(),
        });
        let s = from_strata(strata);
        assert_eq!(s.message(), "Event stream 'gone' is deleted.");
        assert!(
            s.details().is_empty(),
            "KurrentDB clients get no Strata detail"
        );
        let s = from_strata(crate::status::from_engine(
            strata_engine::Error::AppendTooLarge {
                stream: "a".into(),
                size: 2_000_000,
                max: 1_048_576,
            },
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "Maximum Append Size of 1048576 Exceeded.");
        assert_eq!(exception(&s), "maximum-append-size-exceeded");
    }
}
