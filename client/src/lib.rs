//! An async Rust client for the Strata event store.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_client::{Client, EventData, ExpectedRevision, ReadOptions};
//! use futures::TryStreamExt;
//!
//! let client = Client::connect("http://127.0.0.1:2113").await?;
//! let event = EventData::json("Deposited", &serde_json::json!({ "amount": 10 }))?;
//! client.append("account-1", ExpectedRevision::Any, vec![event]).await?;
//! let events: Vec<_> = client.read_stream("account-1", ReadOptions::default()).await?.try_collect().await?;
//! # Ok(()) }
//! ```
//!
//! The client depends only on the generated `strata.v1` API and its own types.

mod cluster;
mod error;
mod multi;
mod persistent;
mod session;
mod transport;
mod types;
mod users;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{self, BoxStream, Stream, StreamExt};
use strata_proto::v1::{
    self, read_request::From as ProtoReadFrom, server_client::ServerClient,
    streams_client::StreamsClient, subscribe_request::From as ProtoSubFrom,
    subscribe_response::Message, subscriptions_client::SubscriptionsClient,
};
use tonic::Request;
pub use transport::Transport;
use transport::Transport as Channel;

pub use cluster::{ClusterMember, ClusterStatus, Replication};
pub use error::{CheckViolation, Error, Result};
pub use multi::{MultiAppend, MultiAppendResult, StreamAppended};
pub use persistent::{
    ConsumerInfo, ConsumerStrategy, GroupConsumer, GroupEvent, GroupInfo, GroupMessage,
    GroupSettings, GroupStart, GroupStatus, NackAction,
};
pub use types::{
    AppendResult, Direction, EventData, ExpectedRevision, Filter, ListedIn, ReadFrom,
    RecordedEvent, ServerInfo, StreamInfo, StreamMetadata, SubscribeFrom, SubscriptionMessage,
};
pub use users::User;

/// Options of a stream or `$all` read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub direction: Direction,
    pub from: ReadFrom,
    /// 0: everything.
    pub max_count: u64,
    /// `$all` only.
    pub filter: Option<Filter>,
    /// On a cluster: read on the leader, after it confirms it still leads, so the read sees
    /// every append acknowledged before it was sent (a follower refuses it). Sends
    /// `requires-leader: true`, as KurrentDB clients do.
    pub require_leader: bool,
}

impl ReadOptions {
    pub fn backwards(mut self) -> Self {
        self.direction = Direction::Backwards;
        self
    }
    pub fn from(mut self, from: ReadFrom) -> Self {
        self.from = from;
        self
    }
    pub fn max_count(mut self, n: u64) -> Self {
        self.max_count = n;
        self
    }
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
    /// See [`ReadOptions::require_leader`].
    pub fn require_leader(mut self) -> Self {
        self.require_leader = true;
        self
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    append_retries: u32,
    sessions: bool,
    security: transport::Security,
}

impl ClientBuilder {
    /// Log in as `user` (Basic credentials, sent only over TLS). A URL may carry them too:
    /// `https://admin:changeit@host:2113`.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.security.user = Some((user.into(), password.into()));
        self
    }

    /// The CA certificate(s), PEM, that signed the server's certificate: needed for
    /// `https://` URLs.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.security.ca_pem = Some(pem.into());
        self
    }

    /// Reads [`ClientBuilder::tls_ca_pem`] from a file.
    pub fn tls_ca_file(self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            Error::Connect(format!("cannot read the CA file {}: {e}", path.display()))
        })?;
        Ok(self.tls_ca_pem(pem))
    }

    /// A client certificate and its key (PEM), for servers that log clients in by certificate.
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.security.identity = Some((cert.into(), key.into()));
        self
    }

    /// The name the server's certificate must carry, when it is not the URL's host.
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.security.domain = Some(name.into());
        self
    }

    /// Send appends over one long-lived append session (the default: many appends in flight
    /// on one HTTP/2 stream, far cheaper per append) or as one unary call each.
    pub fn append_sessions(mut self, on: bool) -> Self {
        self.sessions = on;
        self
    }

    /// Deadline of each unary call (appends, deletes, metadata, info). Reads and
    /// subscriptions have none. Default 30 s.
    pub fn timeout(mut self, t: Option<Duration>) -> Self {
        self.timeout = t;
        self
    }
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }
    /// How often an append that failed with a transient error (server unavailable, connection
    /// lost) is re-sent, after 100, 200, 400… ms. Safe: the events keep their IDs, so the server
    /// never writes them twice. Default 5. A client given several cluster nodes instead retries
    /// every 100 ms for up to 10 s while it follows a leader change; 0 turns retries off.
    pub fn append_retries(mut self, n: u32) -> Self {
        self.append_retries = n;
        self
    }

    /// Connects. `url` may name several nodes of a cluster, comma-separated
    /// (`http://10.0.0.1:2113,http://10.0.0.2:2113,http://10.0.0.3:2113`): the client then talks
    /// to the node that leads, and when an append is refused by a node that no longer leads,
    /// or its node is lost, it finds the leader again and sends the append there (safe: the
    /// events keep their IDs). Reads and subscriptions go to the node in use when they start.
    pub async fn connect(self) -> Result<Client> {
        let urls: Vec<String> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        let nodes = (urls.len() > 1).then(|| {
            std::sync::Arc::new(cluster::Nodes {
                urls,
                security: self.security.clone(),
                connect_timeout: self.connect_timeout,
            })
        });
        let channel = match &nodes {
            Some(nodes) => nodes.leader().await?,
            None => Channel::connect(&self.url, &self.security, self.connect_timeout).await?,
        };
        let session = self
            .sessions
            .then(|| session::AppendSession::start(channel.clone()));
        Ok(Client {
            channel,
            timeout: self.timeout,
            append_retries: self.append_retries,
            session,
            nodes,
        })
    }
}

/// How long a client given several cluster nodes keeps retrying an append (every 100 ms,
/// finding the leader again each time) after its node stopped leading or was lost.
const FOLLOW_LEADER_FOR: Duration = Duration::from_secs(10);

/// A connection to a Strata server. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    timeout: Option<Duration>,
    append_retries: u32,
    /// Shared by clones: their appends travel on one stream.
    session: Option<session::AppendSession>,
    /// Set when the client was given several nodes of a cluster.
    nodes: Option<std::sync::Arc<cluster::Nodes>>,
}

/// A running catch-up subscription: a stream of [`SubscriptionMessage`]s.
pub struct Subscription {
    id: String,
    inner: BoxStream<'static, Result<SubscriptionMessage>>,
}

impl Subscription {
    /// The server's ID for this subscription.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Stream for Subscription {
    type Item = Result<SubscriptionMessage>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Client {
    /// Connects with default settings, e.g. `Client::connect("http://127.0.0.1:2113")`.
    pub async fn connect(url: impl Into<String>) -> Result<Client> {
        Self::builder(url).connect().await
    }

    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(5),
            append_retries: 5,
            sessions: true,
            security: Default::default(),
        }
    }

    /// The connection itself (credentials included), for calls this client does not wrap,
    /// such as gRPC health checks.
    pub fn transport(&self) -> Transport {
        self.channel.clone()
    }

    fn unary<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = self.timeout {
            r.set_timeout(t);
        }
        r
    }

    fn streams(&self) -> StreamsClient<Channel> {
        StreamsClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }

    /// Appends events to a stream atomically if it is at `expected`. Concurrent calls on one
    /// client (and its clones) share one append session. Transient failures are retried (see
    /// [`ClientBuilder::append_retries`]); a call that hits its deadline or is cancelled may
    /// still have been written, and retrying it is safe because the events keep their IDs.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        let request = v1::AppendRequest {
            stream: stream.to_owned(),
            expected: Some(types::expected_to_proto(expected)),
            events: events.into_iter().map(EventData::into_proto).collect(),
        };
        let r = self
            .retrying(|| async {
                match &self.session {
                    Some(session) => session.append(request.clone(), self.timeout).await,
                    None => self
                        .streams()
                        .append(self.unary(request.clone()))
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(Error::from),
                }
            })
            .await?;
        Ok(AppendResult {
            revision: r.revision,
            position: r.position,
            idempotent_replay: r.idempotent_replay,
        })
    }

    /// Runs `call` until it succeeds, fails with an error that is not transient, or has been
    /// retried [`ClientBuilder::append_retries`] times (after 100, 200, 400… ms). Only for
    /// calls that are safe to repeat (appends whose events carry their IDs).
    pub(crate) async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            match call().await {
                Ok(r) => return Ok(r),
                Err(err) => {
                    let following = self.nodes.is_some() && self.append_retries > 0;
                    let retry = err.is_transient() || following && err.is_not_leader();
                    let within = if following {
                        // Following a leader change: retry closely for as long as an election
                        // may take, rather than back off as from an overloaded server.
                        started.elapsed() < FOLLOW_LEADER_FOR
                    } else {
                        attempt < self.append_retries
                    };
                    if !retry || !within {
                        return Err(err);
                    }
                    attempt += 1;
                    let pause = match &self.nodes {
                        Some(nodes) => {
                            if let Ok(leader) = nodes.leader().await {
                                self.channel.follow(&leader);
                            }
                            Duration::from_millis(100)
                        }
                        None => Duration::from_millis(50u64 << attempt.min(5)),
                    };
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn read(
        &self,
        stream: &str,
        opts: ReadOptions,
    ) -> Result<BoxStream<'static, Result<RecordedEvent>>> {
        let from = match opts.from {
            ReadFrom::Default => None,
            ReadFrom::Start => Some(ProtoReadFrom::Start(v1::Empty {})),
            ReadFrom::End => Some(ProtoReadFrom::End(v1::Empty {})),
            ReadFrom::Revision(r) => Some(ProtoReadFrom::Revision(r)),
            ReadFrom::Position(p) => Some(ProtoReadFrom::Position(p)),
        };
        let request = v1::ReadRequest {
            stream: stream.to_owned(),
            direction: match opts.direction {
                Direction::Forwards => v1::Direction::Forwards as i32,
                Direction::Backwards => v1::Direction::Backwards as i32,
            },
            from,
            max_count: opts.max_count,
            filter: opts.filter.map(Filter::into_proto),
            batch_size: 0,
        };
        let mut request = Request::new(request);
        if opts.require_leader {
            request
                .metadata_mut()
                .insert("requires-leader", "true".parse().expect("ASCII"));
        }
        let responses = self.streams().read(request).await?.into_inner();
        let events = responses
            .map(|r| match r {
                Ok(page) => stream::iter(
                    page.events
                        .into_iter()
                        .map(|e| Ok(RecordedEvent::from_proto(e))),
                )
                .left_stream(),
                Err(status) => stream::once(async move { Err(Error::from(status)) }).right_stream(),
            })
            .flatten();
        Ok(events.boxed())
    }

    /// Reads a stream. A missing stream is [`Error::StreamNotFound`], returned here rather than
    /// from the stream of events.
    pub async fn read_stream(
        &self,
        stream: &str,
        opts: ReadOptions,
    ) -> Result<BoxStream<'static, Result<RecordedEvent>>> {
        if opts.filter.is_some() {
            return Err(Error::InvalidArgument {
                field: "filter".into(),
                reason: "filters apply to $all reads only".into(),
            });
        }
        self.read(stream, opts).await
    }

    /// Reads the global log.
    pub async fn read_all(
        &self,
        opts: ReadOptions,
    ) -> Result<BoxStream<'static, Result<RecordedEvent>>> {
        self.read("$all", opts).await
    }

    /// Subscribes to a stream, or to `$all` (optionally filtered): history, then a
    /// [`SubscriptionMessage::CaughtUp`], then live events.
    pub async fn subscribe(
        &self,
        stream: &str,
        from: SubscribeFrom,
        filter: Option<Filter>,
    ) -> Result<Subscription> {
        let from = match from {
            SubscribeFrom::Start => ProtoSubFrom::Start(v1::Empty {}),
            SubscribeFrom::End => ProtoSubFrom::End(v1::Empty {}),
            SubscribeFrom::AfterRevision(r) => ProtoSubFrom::AfterRevision(r),
            SubscribeFrom::AfterPosition(p) => ProtoSubFrom::AfterPosition(p),
            SubscribeFrom::FromPosition(p) => ProtoSubFrom::FromPosition(p),
        };
        let request = v1::SubscribeRequest {
            stream: stream.to_owned(),
            from: Some(from),
            filter: filter.map(Filter::into_proto),
        };
        let mut responses = SubscriptionsClient::new(self.channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .subscribe(Request::new(request))
            .await?
            .into_inner();
        let id = match responses.message().await? {
            Some(v1::SubscribeResponse {
                message: Some(Message::Confirmation(c)),
            }) => c.subscription_id,
            other => {
                return Err(Error::Server {
                    code: tonic::Code::Internal,
                    message: format!("expected a subscription confirmation, got {other:?}"),
                })
            }
        };
        let inner = responses
            .filter_map(|r| async move {
                match r {
                    Err(status) => Some(Err(Error::from(status))),
                    Ok(v1::SubscribeResponse { message }) => match message? {
                        Message::Event(e) => {
                            Some(Ok(SubscriptionMessage::Event(RecordedEvent::from_proto(e))))
                        }
                        Message::CaughtUp(c) => Some(Ok(SubscriptionMessage::CaughtUp {
                            position: c.position,
                        })),
                        Message::Checkpoint(c) => Some(Ok(SubscriptionMessage::Checkpoint {
                            position: c.position,
                        })),
                        Message::Confirmation(_) => None,
                    },
                }
            })
            .boxed();
        Ok(Subscription { id, inner })
    }

    /// Soft-deletes a stream; a later append recreates it. Returns the delete's log position.
    pub async fn delete_stream(&self, stream: &str, expected: ExpectedRevision) -> Result<u64> {
        let r = self
            .streams()
            .delete(self.unary(v1::DeleteRequest {
                stream: stream.into(),
                expected: Some(types::expected_to_proto(expected)),
            }))
            .await?;
        Ok(r.into_inner().position)
    }

    /// Deletes a stream forever.
    pub async fn tombstone_stream(&self, stream: &str, expected: ExpectedRevision) -> Result<u64> {
        let r = self
            .streams()
            .tombstone(self.unary(v1::DeleteRequest {
                stream: stream.into(),
                expected: Some(types::expected_to_proto(expected)),
            }))
            .await?;
        Ok(r.into_inner().position)
    }

    /// The stream's metadata and the revision of its metadata stream (`None`: never set).
    pub async fn get_stream_metadata(&self, stream: &str) -> Result<(Option<u64>, StreamMetadata)> {
        let r = self
            .streams()
            .get_stream_metadata(self.unary(v1::GetStreamMetadataRequest {
                stream: stream.into(),
            }))
            .await?
            .into_inner();
        Ok((
            r.metadata_revision,
            StreamMetadata::from_proto(r.metadata.unwrap_or_default()),
        ))
    }

    /// Replaces the stream's metadata; `expected` is checked against its metadata stream.
    /// Returns the new metadata revision.
    pub async fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    ) -> Result<u64> {
        let r = self
            .streams()
            .set_stream_metadata(self.unary(v1::SetStreamMetadataRequest {
                stream: stream.into(),
                expected: Some(types::expected_to_proto(expected)),
                metadata: Some(metadata.into_proto()),
            }))
            .await?;
        Ok(r.into_inner().metadata_revision)
    }

    /// Streams whose names start with `prefix`, sorted by name.
    pub async fn list_streams(
        &self,
        prefix: &str,
        include_system: bool,
    ) -> Result<Vec<StreamInfo>> {
        let mut responses = self
            .streams()
            .list_streams(Request::new(v1::ListStreamsRequest {
                prefix: prefix.into(),
                include_system,
            }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(page) = responses.message().await? {
            out.extend(page.streams.into_iter().map(|s| StreamInfo {
                name: s.name,
                last_revision: s.last_revision,
                soft_deleted: s.soft_deleted,
                tombstoned: s.tombstoned,
            }));
        }
        Ok(out)
    }

    pub async fn server_info(&self) -> Result<ServerInfo> {
        let r = ServerClient::new(self.channel.clone())
            .info(self.unary(v1::InfoRequest {}))
            .await?
            .into_inner();
        Ok(ServerInfo {
            version: r.version,
            uptime: Duration::from_secs(r.uptime_seconds),
            log_end_position: r.log_end_position,
            stream_count: r.stream_count,
            data_bytes: r.data_bytes,
            segment_count: r.segment_count,
            durability: r.durability,
            read_only_reason: Some(r.read_only_reason).filter(|s| !s.is_empty()),
            data_dir: r.data_dir,
            cluster: r.cluster.map(cluster::status_from_proto),
        })
    }

    /// A call that does nothing on the server: a round trip.
    pub async fn ping(&self) -> Result<()> {
        ServerClient::new(self.channel.clone())
            .ping(self.unary(v1::PingRequest {}))
            .await?;
        Ok(())
    }

    /// Asks the server to stream `count` messages of `size` bytes; returns how many arrived.
    pub async fn flood(&self, count: u32, size: u32) -> Result<u64> {
        let mut s = ServerClient::new(self.channel.clone())
            .flood(Request::new(v1::FloodRequest { count, size }))
            .await?
            .into_inner();
        let mut n = 0;
        while s.message().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}
