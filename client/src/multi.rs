//! Multi-stream atomic appends.

use strata_proto::v1;

use crate::types::{expected_to_proto, EventData, ExpectedRevision};
use crate::{Client, Error, Result};

/// Events for several streams, appended all or nothing, with an expected revision per stream
/// and optional checks on the state of other streams.
///
/// ```no_run
/// # async fn demo(client: strata_client::Client) -> Result<(), strata_client::Error> {
/// use strata_client::{EventData, ExpectedRevision, MultiAppend};
/// let placed = EventData::json("OrderPlaced", &serde_json::json!({"sku": "A1"})).unwrap();
/// let reserved = EventData::json("StockReserved", &serde_json::json!({"sku": "A1"})).unwrap();
/// client
///     .append_multi(
///         MultiAppend::new()
///             .write("order-7", ExpectedRevision::NoStream, vec![placed])
///             .write("stock-A1", ExpectedRevision::Exact(41), vec![reserved])
///             .check("customer-3", ExpectedRevision::StreamExists),
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MultiAppend {
    appends: Vec<v1::AppendRequest>,
    checks: Vec<v1::StreamCheck>,
}

impl MultiAppend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stream to write (each stream once) and its events.
    pub fn write(
        mut self,
        stream: impl Into<String>,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Self {
        self.appends.push(v1::AppendRequest {
            stream: stream.into(),
            expected: Some(expected_to_proto(expected)),
            events: events.into_iter().map(EventData::into_proto).collect(),
        });
        self
    }

    /// Requires a stream's state (written or not); all failed checks come back together in
    /// [`Error::ChecksFailed`].
    pub fn check(mut self, stream: impl Into<String>, expected: ExpectedRevision) -> Self {
        self.checks.push(v1::StreamCheck {
            stream: stream.into(),
            expected: Some(expected_to_proto(expected)),
        });
        self
    }
}

/// What a multi-stream append did to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppended {
    pub stream: String,
    /// The stream's revision after the append.
    pub revision: u64,
    /// Log position of the stream's last event in the append.
    pub position: u64,
}

/// The outcome of a multi-stream append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiAppendResult {
    /// One per stream written, in the order they were added.
    pub streams: Vec<StreamAppended>,
    /// Log position of the last event written.
    pub position: u64,
    /// The server recognised this as a retry of an append already written.
    pub idempotent_replay: bool,
}

impl Client {
    /// Appends to several streams as one atomic unit. Transient failures are retried as for
    /// [`Client::append`]; retries are safe because the events keep their IDs.
    pub async fn append_multi(&self, append: MultiAppend) -> Result<MultiAppendResult> {
        let request = v1::AppendMultiRequest {
            appends: append.appends,
            checks: append.checks,
        };
        let r = self
            .retrying(|| async {
                self.streams()
                    .append_multi(self.unary(request.clone()))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(Error::from)
            })
            .await?;
        Ok(MultiAppendResult {
            streams: r
                .streams
                .into_iter()
                .map(|s| StreamAppended {
                    stream: s.stream,
                    revision: s.revision,
                    position: s.position,
                })
                .collect(),
            position: r.position,
            idempotent_replay: r.idempotent_replay,
        })
    }
}
