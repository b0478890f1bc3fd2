//! `strata.v1.Streams/AppendMulti`: several streams, one atomic append.

use strata_engine::{Engine, MultiAppend, MultiAppendResult, StreamCheck, StreamWrite};
use strata_proto::v1;
use tonic::Status;

use crate::auth;
use crate::budget::WAIT as BUDGET_WAIT;
use crate::convert::{events_from_proto, expected_from_proto};
use crate::status::from_engine;
use strata_auth::{Access, Operation};

pub async fn append_multi(
    engine: &Engine,
    who: &Access,
    r: v1::AppendMultiRequest,
) -> Result<v1::AppendMultiResponse, Status> {
    for a in &r.appends {
        auth::check_access(who, Operation::Write, &a.stream)?;
    }
    // A check reveals a stream's state, as a read does.
    for c in &r.checks {
        auth::check_access(who, Operation::Read, &c.stream)?;
    }
    let budget = crate::budget::get();
    let _held = budget
        .reserve(prost::Message::encoded_len(&r), Some(BUDGET_WAIT))
        .await
        .ok_or_else(|| budget.exhausted("append"))?;
    let mut m = MultiAppend::new();
    for (i, a) in r.appends.into_iter().enumerate() {
        m.streams.push(StreamWrite {
            stream: a.stream,
            expected: expected_from_proto(a.expected),
        });
        m.events
            .extend(events_from_proto(a.events)?.into_iter().map(|e| (i, e)));
    }
    m.checks = r
        .checks
        .into_iter()
        .map(|c| StreamCheck {
            stream: c.stream,
            expected: expected_from_proto(c.expected),
        })
        .collect();
    engine
        .append_multi(m)
        .await
        .map(multi_response)
        .map_err(from_engine)
}

fn multi_response(r: MultiAppendResult) -> v1::AppendMultiResponse {
    v1::AppendMultiResponse {
        streams: r
            .streams
            .into_iter()
            .map(|s| v1::StreamAppended {
                stream: s.stream,
                revision: s.revision,
                position: s.position,
            })
            .collect(),
        position: r.position,
        idempotent_replay: r.idempotent_replay,
    }
}
