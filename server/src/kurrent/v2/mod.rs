//! The KurrentDB client protocol v2 streams service: `AppendSession` (one request per stream,
//! all or nothing) and `AppendRecords` (records interleaved across streams, plus state checks),
//! both mapped onto the engine's atomic multi-stream append.
//!
//! Records are stored as v1 readers expect to find them: the event type is the schema name, the
//! content type JSON when the schema format is JSON (binary otherwise), and the custom metadata
//! the record's properties as a JSON object plus `$schema.name` and `$schema.format`.

mod errors;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use strata_engine::{
    ContentType, Engine, EventData, ExpectedRevision, MultiAppend, MultiAppendResult, StreamCheck,
    StreamWrite,
};
use strata_kurrentdb_proto::kurrentdb::protocol::v2::streams as v2;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::status::access_denied;
use super::to_commit;
use crate::auth;
use crate::budget::Held;
use crate::status::next_message;
use errors::{expected_from_number, from_append_error};
use strata_auth::{Access, Operation};

/// What each request of a session counts against the append's size besides its records, so
/// that requests cannot pile up for free.
const REQUEST_OVERHEAD: usize = 64;

pub struct KurrentStreamsV2 {
    engine: Arc<Engine>,
}

impl KurrentStreamsV2 {
    pub fn new(engine: Arc<Engine>) -> Self {
        KurrentStreamsV2 { engine }
    }
}

/// The pieces of a multi-stream append as they arrive, with their size bounded as they do.
struct Collector<'a> {
    who: &'a Access,
    max: usize,
    size: usize,
    held: Held,
    append: MultiAppend,
    streams: HashMap<String, usize>,
}

impl<'a> Collector<'a> {
    fn new(who: &'a Access, max: usize) -> Self {
        Collector {
            who,
            max,
            size: 0,
            held: Held::default(),
            append: MultiAppend::new(),
            streams: HashMap::new(),
        }
    }

    async fn count(&mut self, n: usize) -> Result<(), Status> {
        self.held.add(n, "append").await?;
        self.size += n;
        if self.size > self.max {
            return Err(errors::transaction_too_large(self.size, self.max));
        }
        Ok(())
    }

    /// The index of `stream`, adding it (after the write-permission check) on first sight.
    fn stream(&mut self, stream: &str, expected: ExpectedRevision) -> Result<usize, Status> {
        if let Some(i) = self.streams.get(stream) {
            return Ok(*i);
        }
        if stream.is_empty() {
            return Err(Status::invalid_argument("a record has no stream name"));
        }
        if !auth::may(self.who, Operation::Write, stream) {
            return Err(access_denied());
        }
        let i = self.append.streams.len();
        self.append.streams.push(StreamWrite {
            stream: stream.into(),
            expected,
        });
        self.streams.insert(stream.into(), i);
        Ok(i)
    }

    async fn record(&mut self, i: usize, r: v2::AppendRecord) -> Result<(), Status> {
        let stream = self.append.streams[i].stream.clone();
        let e = record_event(r)?;
        let size = strata_engine::format::event_size(
            &stream,
            &e.event_type,
            e.data.len(),
            e.metadata.len(),
        );
        if size > self.max {
            let id = e.event_id.map(|u| u.to_string()).unwrap_or_default();
            return Err(errors::record_too_large(&stream, &id, size, self.max));
        }
        self.count(size).await?;
        self.append.events.push((i, e));
        Ok(())
    }
}

/// A v2 record as an engine event.
fn record_event(r: v2::AppendRecord) -> Result<EventData, Status> {
    let event_id = match r.record_id.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Uuid::parse_str(s).map_err(|e| {
            Status::invalid_argument(format!("record_id {s:?} is not a UUID: {e}"))
        })?),
    };
    let schema = r.schema.unwrap_or_default();
    let format = v2::SchemaFormat::try_from(schema.format).unwrap_or_default();
    let (content_type, format_name) = match format {
        v2::SchemaFormat::Json => (ContentType::Json, "Json"),
        v2::SchemaFormat::Protobuf => (ContentType::Binary, "Protobuf"),
        v2::SchemaFormat::Avro => (ContentType::Binary, "Avro"),
        v2::SchemaFormat::Bytes => (ContentType::Binary, "Bytes"),
        v2::SchemaFormat::Unspecified => {
            return Err(Status::invalid_argument(
                "a record's schema format is unspecified: set JSON, PROTOBUF, AVRO or BYTES",
            ))
        }
    };
    let mut metadata: serde_json::Map<String, serde_json::Value> = r
        .properties
        .into_iter()
        .map(|(k, v)| (k, json_of(v)))
        .collect();
    metadata.insert("$schema.name".into(), schema.name.clone().into());
    metadata.insert("$schema.format".into(), format_name.into());
    Ok(EventData {
        event_id,
        event_type: schema.name,
        data: r.data,
        metadata: serde_json::to_vec(&metadata)
            .expect("a JSON map serialises")
            .into(),
        content_type,
    })
}

/// A `google.protobuf.Value` as JSON (whole numbers without a fraction, as they were likely
/// written).
fn json_of(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                (n as i64).into()
            } else {
                serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, Into::into)
            }
        }
        Some(Kind::StructValue(s)) => {
            serde_json::Value::Object(s.fields.into_iter().map(|(k, v)| (k, json_of(v))).collect())
        }
        Some(Kind::ListValue(l)) => l.values.into_iter().map(json_of).collect(),
    }
}

fn commit_of(position: u64) -> i64 {
    to_commit(position) as i64
}

async fn run(engine: &Engine, append: MultiAppend) -> Result<MultiAppendResult, Status> {
    engine.append_multi(append).await.map_err(from_append_error)
}

#[tonic::async_trait]
impl v2::streams_service_server::StreamsService for KurrentStreamsV2 {
    async fn append_session(
        &self,
        request: Request<Streaming<v2::AppendRequest>>,
    ) -> Result<Response<v2::AppendSessionResponse>, Status> {
        let who = auth::access(&request);
        let mut input = request.into_inner();
        let mut c = Collector::new(&who, self.engine.config().max_append_size);
        let mut seen = HashSet::new();
        while let Some(req) = next_message(&mut input).await? {
            if !seen.insert(req.stream.clone()) {
                return Err(errors::stream_twice(&req.stream));
            }
            if req.records.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "the append request for stream '{}' has no records",
                    req.stream
                )));
            }
            c.count(REQUEST_OVERHEAD + req.stream.len()).await?;
            let expected = expected_from_number(req.expected_revision, "expected_revision")?;
            let i = c.stream(&req.stream, expected)?;
            for r in req.records {
                c.record(i, r).await?;
            }
        }
        if c.append.streams.is_empty() {
            return Err(errors::no_requests());
        }
        let r = run(&self.engine, c.append).await?;
        Ok(Response::new(v2::AppendSessionResponse {
            output: r
                .streams
                .into_iter()
                .map(|s| v2::AppendResponse {
                    stream: s.stream,
                    stream_revision: s.revision as i64,
                    position: Some(commit_of(s.position)),
                })
                .collect(),
            position: commit_of(r.position),
        }))
    }

    async fn append_records(
        &self,
        request: Request<v2::AppendRecordsRequest>,
    ) -> Result<Response<v2::AppendRecordsResponse>, Status> {
        let who = auth::access(&request);
        let req = request.into_inner();
        let mut c = Collector::new(&who, self.engine.config().max_append_size);
        for r in req.records {
            let i = c.stream(&r.stream, ExpectedRevision::Any)?;
            c.record(i, r).await?;
        }
        for (k, check) in req.checks.into_iter().enumerate() {
            let Some(v2::consistency_check::Type::StreamState(s)) = check.r#type else {
                return Err(Status::invalid_argument(format!(
                    "check {k} has no type: only stream_state checks exist"
                )));
            };
            // A check reveals a stream's state, as a read does.
            if !auth::may(&who, Operation::Read, &s.stream) {
                return Err(access_denied());
            }
            c.append.checks.push(StreamCheck {
                expected: expected_from_number(Some(s.expected_state), "expected_state")?,
                stream: s.stream,
            });
        }
        if c.append.streams.is_empty() {
            return Err(Status::invalid_argument(
                "AppendRecords needs at least one record",
            ));
        }
        let r = run(&self.engine, c.append).await?;
        Ok(Response::new(v2::AppendRecordsResponse {
            revisions: r
                .streams
                .into_iter()
                .map(|s| v2::StreamRevision {
                    stream: s.stream,
                    revision: s.revision as i64,
                })
                .collect(),
            position: commit_of(r.position),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_properties_and_schema_for_v1_readers() {
        let mut properties = HashMap::new();
        properties.insert(
            "tenant".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("acme".into())),
            },
        );
        properties.insert(
            "count".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(42.0)),
            },
        );
        let e = record_event(v2::AppendRecord {
            record_id: Some("5f0c8ab4-8a7e-4a53-9c55-0e5d4b6f6a11".into()),
            properties,
            schema: Some(v2::SchemaInfo {
                format: v2::SchemaFormat::Json as i32,
                name: "OrderPlaced".into(),
                id: None,
            }),
            data: bytes::Bytes::from_static(b"{}"),
            stream: "orders-1".into(),
        })
        .unwrap();
        assert_eq!(e.event_type, "OrderPlaced");
        assert_eq!(e.content_type, ContentType::Json);
        let meta: serde_json::Value = serde_json::from_slice(&e.metadata).unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"tenant": "acme", "count": 42, "$schema.name": "OrderPlaced", "$schema.format": "Json"})
        );
    }

    #[test]
    fn bad_records_are_refused_with_the_reason() {
        let bad_id = record_event(v2::AppendRecord {
            record_id: Some("not-a-uuid".into()),
            schema: Some(v2::SchemaInfo {
                format: v2::SchemaFormat::Bytes as i32,
                name: "T".into(),
                id: None,
            }),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            bad_id.message().contains("not a UUID"),
            "{}",
            bad_id.message()
        );
        let no_format = record_event(v2::AppendRecord::default()).unwrap_err();
        assert!(no_format.message().contains("unspecified"));
    }
}
