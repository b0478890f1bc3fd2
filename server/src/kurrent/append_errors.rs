//! How a failed KurrentDB append is reported: the wrong-expected-version answer of `Append`,
//! and the in-band `google.rpc.Status` of a `BatchAppend` batch with the detail types
//! KurrentDB clients unpack.

use prost::Message;
use strata_engine::{CurrentRevision, Error, ExpectedRevision};
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks};
use strata_kurrentdb_proto::google::rpc as grpc_rpc;

use super::stream_id;

pub(super) fn append_wrong_version(
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> ks::append_resp::WrongExpectedVersion {
    use ks::append_resp::wrong_expected_version::{
        CurrentRevisionOption, CurrentRevisionOption2060, ExpectedRevisionOption,
        ExpectedRevisionOption2060,
    };
    let empty = kc::Empty {};
    let (current, current_old) = match actual {
        CurrentRevision::NoStream => (
            CurrentRevisionOption::CurrentNoStream(empty),
            CurrentRevisionOption2060::NoStream2060(empty),
        ),
        CurrentRevision::Revision(r) => (
            CurrentRevisionOption::CurrentRevision(r),
            CurrentRevisionOption2060::CurrentRevision2060(r),
        ),
    };
    let (exp, exp_old) = match expected {
        ExpectedRevision::Any => (
            ExpectedRevisionOption::ExpectedAny(empty),
            Some(ExpectedRevisionOption2060::Any2060(empty)),
        ),
        ExpectedRevision::StreamExists => (
            ExpectedRevisionOption::ExpectedStreamExists(empty),
            Some(ExpectedRevisionOption2060::StreamExists2060(empty)),
        ),
        ExpectedRevision::NoStream => (ExpectedRevisionOption::ExpectedNoStream(empty), None),
        ExpectedRevision::Exact(n) => (
            ExpectedRevisionOption::ExpectedRevision(n),
            Some(ExpectedRevisionOption2060::ExpectedRevision2060(n)),
        ),
    };
    ks::append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(current_old),
        expected_revision_option_20_6_0: exp_old,
        current_revision_option: Some(current),
        expected_revision_option: Some(exp),
    }
}

/// The in-band refusal of a batch the caller may not write.
pub(super) fn batch_denied() -> grpc_rpc::Status {
    grpc_rpc::Status {
        code: grpc_rpc::Code::PermissionDenied as i32,
        message: "Access Denied".into(),
        details: Some(prost_types::Any {
            type_url: "type.googleapis.com/event_store.client.AccessDenied".into(),
            value: kc::AccessDenied {}.encode_to_vec(),
        }),
    }
}

/// The `google.rpc.Status` of a failed batch append, with the detail KurrentDB clients unpack.
pub(super) fn batch_error(e: Error) -> grpc_rpc::Status {
    fn any<M: Message>(name: &str, m: &M) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/event_store.client.{name}"),
            value: m.encode_to_vec(),
        }
    }
    let message = e.to_string();
    let (code, details) = match &e {
        Error::WrongExpectedRevision {
            expected, actual, ..
        } => {
            use kc::wrong_expected_version::{
                CurrentStreamRevisionOption as C, ExpectedStreamPositionOption as X,
            };
            let w = kc::WrongExpectedVersion {
                current_stream_revision_option: Some(match actual {
                    CurrentRevision::NoStream => C::CurrentNoStream(()),
                    CurrentRevision::Revision(r) => C::CurrentStreamRevision(*r),
                }),
                expected_stream_position_option: Some(match expected {
                    ExpectedRevision::Any => X::ExpectedAny(()),
                    ExpectedRevision::NoStream => X::ExpectedNoStream(()),
                    ExpectedRevision::StreamExists => X::ExpectedStreamExists(()),
                    ExpectedRevision::Exact(n) => X::ExpectedStreamPosition(*n),
                }),
            };
            (
                grpc_rpc::Code::FailedPrecondition,
                Some(any("WrongExpectedVersion", &w)),
            )
        }
        Error::StreamDeleted { stream } => (
            grpc_rpc::Code::FailedPrecondition,
            Some(any(
                "StreamDeleted",
                &kc::StreamDeleted {
                    stream_identifier: Some(stream_id(stream)),
                },
            )),
        ),
        Error::AppendTooLarge { max, .. } => (
            grpc_rpc::Code::InvalidArgument,
            Some(any(
                "MaximumAppendSizeExceeded",
                &kc::MaximumAppendSizeExceeded {
                    max_append_size: *max as u32,
                },
            )),
        ),
        Error::InvalidArgument { .. }
        | Error::ReservedStream { .. }
        | Error::IdempotencyConflict { .. } => (
            grpc_rpc::Code::InvalidArgument,
            Some(any(
                "BadRequest",
                &kc::BadRequest {
                    message: message.clone(),
                },
            )),
        ),
        Error::NotLeader { .. } => (grpc_rpc::Code::FailedPrecondition, None),
        Error::ReadOnly { .. } | Error::NotAcknowledged { .. } | Error::Closed => {
            (grpc_rpc::Code::Unavailable, None)
        }
        _ => (
            grpc_rpc::Code::Internal,
            Some(any("Unknown", &kc::Unknown {})),
        ),
    };
    grpc_rpc::Status {
        code: code as i32,
        message,
        details,
    }
}
