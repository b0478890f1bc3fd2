//! Prometheus metrics, served as text at `/metrics` on their own HTTP listener
//! (`--metrics-listen`). Counters and histograms are updated as requests run; gauges (log
//! size, lags, consumer groups) are computed when scraped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use strata_engine::{AllFrom, CommitObserver, Direction, Engine, StreamFrom};
use strata_persistent::Groups;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    stream: String,
    group: String,
}

/// A label value as the text exposition format needs it: `\\`, `\"` and `\n` escaped. The
/// encoder writes label values as they are given, and stream and group names come from
/// clients: unescaped, one name could make the whole scrape unparseable.
fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Records examined, at most, to count one `$all` subscription's lag at a scrape.
const LAG_SCAN_LIMIT: usize = 10_000;

pub struct Metrics {
    registry: Mutex<Registry>,
    append_requests: Counter,
    append_events: Counter,
    append_bytes: Counter,
    commit_batches: Counter,
    append_duration: Histogram,
    fsync_duration: Histogram,
    batch_events: Histogram,
    reads: Family<KindLabel, Counter>,
    read_events: Counter,
    subscriptions_active: Gauge,
    subscription_lag_max: Gauge,
    persistent_in_flight: Family<GroupLabel, Gauge>,
    persistent_parked: Family<GroupLabel, Gauge>,
    persistent_lag: Family<GroupLabel, Gauge>,
    log_bytes: Gauge,
    log_segments: Gauge,
    memory_budget_held: Gauge,
    group_buffer_held: Gauge,
    streams: Gauge,
    index_reindexed: Gauge,
    errors: Family<CodeLabel, Counter>,
    subscriptions: Mutex<HashMap<u64, SubscriptionEntry>>,
    next_subscription: AtomicU64,
}

struct SubscriptionEntry {
    /// `None` for `$all`.
    stream: Option<String>,
    /// Next revision (streams) or position (`$all`).
    position: Arc<AtomicU64>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn get() -> &'static Metrics {
    &METRICS
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 50 µs .. ~1.6 s
    exponential_buckets(0.000_05, 2.0, 16)
}

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            append_requests: Counter::default(),
            append_events: Counter::default(),
            append_bytes: Counter::default(),
            commit_batches: Counter::default(),
            append_duration: Histogram::new(seconds_buckets()),
            fsync_duration: Histogram::new(seconds_buckets()),
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            reads: Family::default(),
            read_events: Counter::default(),
            subscriptions_active: Gauge::default(),
            subscription_lag_max: Gauge::default(),
            persistent_in_flight: Family::default(),
            persistent_parked: Family::default(),
            persistent_lag: Family::default(),
            log_bytes: Gauge::default(),
            log_segments: Gauge::default(),
            memory_budget_held: Gauge::default(),
            group_buffer_held: Gauge::default(),
            streams: Gauge::default(),
            index_reindexed: Gauge::default(),
            errors: Family::default(),
            subscriptions: Mutex::new(HashMap::new()),
            next_subscription: AtomicU64::new(1),
        };
        {
            let mut r = m.registry.lock().expect("registry");
            r.register(
                "strata_append_requests",
                "Write requests (appends, deletes, metadata) made durable",
                m.append_requests.clone(),
            );
            r.register(
                "strata_append_events",
                "Events made durable",
                m.append_events.clone(),
            );
            r.register(
                "strata_append_bytes",
                "Bytes written to the log by group commits",
                m.append_bytes.clone(),
            );
            r.register(
                "strata_commit_batches",
                "Group commits (one write and one fdatasync each in durable mode)",
                m.commit_batches.clone(),
            );
            r.register(
                "strata_append_duration_seconds",
                "Time from an append's submission to its durable result",
                m.append_duration.clone(),
            );
            r.register(
                "strata_fsync_duration_seconds",
                "Time of one group commit's write (plus fdatasync in durable mode)",
                m.fsync_duration.clone(),
            );
            r.register(
                "strata_commit_batch_events",
                "Events per group commit",
                m.batch_events.clone(),
            );
            r.register(
                "strata_reads",
                "Read requests, by kind (stream or all)",
                m.reads.clone(),
            );
            r.register(
                "strata_read_events",
                "Events returned by reads",
                m.read_events.clone(),
            );
            r.register(
                "strata_subscriptions_active",
                "Catch-up subscriptions currently running",
                m.subscriptions_active.clone(),
            );
            r.register(
                "strata_subscription_lag_events",
                "Largest number of events a catch-up subscription is behind the log end ($all: counted up to 10000)",
                m.subscription_lag_max.clone(),
            );
            r.register(
                "strata_persistent_in_flight",
                "Messages delivered to a consumer group and not yet acked",
                m.persistent_in_flight.clone(),
            );
            r.register(
                "strata_persistent_parked",
                "Parked messages of a consumer group",
                m.persistent_parked.clone(),
            );
            r.register(
                "strata_persistent_lag_events",
                "Events between a consumer group's settled position and the log end",
                m.persistent_lag.clone(),
            );
            r.register(
                "strata_log_bytes",
                "Size of the log's segment files",
                m.log_bytes.clone(),
            );
            r.register(
                "strata_log_segments",
                "Segment files in the log",
                m.log_segments.clone(),
            );
            r.register(
                "strata_memory_budget_held_bytes",
                "Bytes of the memory budget (--memory-budget) held by data waiting on clients",
                m.memory_budget_held.clone(),
            );
            r.register(
                "strata_group_buffer_held_bytes",
                "Bytes held by the buffers of all consumer groups (bounded by --group-buffer-memory)",
                m.group_buffer_held.clone(),
            );
            r.register(
                "strata_streams",
                "Streams with a state in the index (including metadata and system streams)",
                m.streams.clone(),
            );
            r.register(
                "strata_index_reindexed_events",
                "Events re-indexed from the log at the last start-up (how far the index lagged)",
                m.index_reindexed.clone(),
            );
            r.register(
                "strata_errors",
                "Error responses, by gRPC code",
                m.errors.clone(),
            );
        }
        m
    }

    pub fn error(&self, code: tonic::Code) {
        let code = format!("{code:?}");
        self.errors.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn read(&self, all: bool) {
        let kind = if all { "all" } else { "stream" };
        self.reads.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn read_events(&self, n: usize) {
        self.read_events.inc_by(n as u64);
    }

    /// Registers a running catch-up subscription; it is removed when the guard drops.
    pub fn subscription(&self, stream: Option<String>) -> SubscriptionGuard {
        let id = self.next_subscription.fetch_add(1, Ordering::Relaxed);
        let position = Arc::new(AtomicU64::new(0));
        self.subscriptions.lock().expect("subscriptions").insert(
            id,
            SubscriptionEntry {
                stream,
                position: position.clone(),
            },
        );
        self.subscriptions_active.inc();
        SubscriptionGuard { id, position }
    }

    fn set_static(&self, engine: &Engine) {
        let stats = engine.stats();
        self.log_bytes.set(stats.log_bytes as i64);
        self.log_segments.set(stats.segment_count as i64);
        let budget = crate::budget::get();
        self.memory_budget_held
            .set((budget.total() - budget.available()) as i64);
        self.streams.set(stats.stream_count as i64);
        self.index_reindexed
            .set(engine.recovery_report().reindexed_events as i64);
    }

    /// The largest lag over running catch-up subscriptions, in events.
    fn subscription_lag(&self, engine: &Engine) -> u64 {
        let subs: Vec<(Option<String>, u64)> = self
            .subscriptions
            .lock()
            .expect("subscriptions")
            .values()
            .map(|s| (s.stream.clone(), s.position.load(Ordering::Relaxed)))
            .collect();
        let mut max = 0;
        // For `$all` the subscriber furthest behind has the largest lag: one scan, from it.
        let mut oldest_all: Option<u64> = None;
        for (stream, pos) in subs {
            match stream {
                Some(s) => {
                    let lag = engine
                        .read_stream(&s, StreamFrom::End, Direction::Backwards, 1)
                        .map(|slice| (slice.last_revision + 1).saturating_sub(pos))
                        .unwrap_or(0);
                    max = max.max(lag);
                }
                None => oldest_all = Some(oldest_all.map_or(pos, |o| o.min(pos))),
            }
        }
        if let Some(pos) = oldest_all {
            let lag = engine
                .read_all_scan(
                    AllFrom::Position(pos),
                    Direction::Forwards,
                    LAG_SCAN_LIMIT,
                    None,
                    LAG_SCAN_LIMIT,
                )
                .map(|slice| slice.records_scanned as u64)
                .unwrap_or(0);
            max = max.max(lag);
        }
        max
    }

    /// Adds metrics kept elsewhere (the cluster's) to what `/metrics` serves.
    pub fn register_with(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().expect("registry"));
    }

    /// Brings the computed gauges up to date and encodes everything.
    pub async fn render(&self, engine: &Arc<Engine>, groups: &Groups) -> String {
        let e = engine.clone();
        let lag = tokio::task::spawn_blocking(move || {
            let m = get();
            m.set_static(&e);
            m.subscription_lag(&e)
        })
        .await
        .unwrap_or(0);
        self.subscription_lag_max.set(lag as i64);
        self.group_buffer_held
            .set(groups.buffer_memory_held() as i64);
        self.persistent_in_flight.clear();
        self.persistent_parked.clear();
        self.persistent_lag.clear();
        if let Ok(list) = groups.list(None).await {
            for g in list {
                let label = GroupLabel {
                    stream: escape_label_value(&g.target.to_string()),
                    group: escape_label_value(&g.group),
                };
                self.persistent_in_flight
                    .get_or_create(&label)
                    .set(g.in_flight as i64);
                self.persistent_parked
                    .get_or_create(&label)
                    .set(g.parked as i64);
                self.persistent_lag.get_or_create(&label).set(g.lag as i64);
            }
        }
        let mut out = String::new();
        let registry = self.registry.lock().expect("registry");
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// A registered catch-up subscription; update its position as it advances.
pub struct SubscriptionGuard {
    id: u64,
    position: Arc<AtomicU64>,
}

impl SubscriptionGuard {
    pub fn set_position(&self, p: u64) {
        self.position.store(p, Ordering::Relaxed);
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let m = get();
        m.subscriptions
            .lock()
            .expect("subscriptions")
            .remove(&self.id);
        m.subscriptions_active.dec();
    }
}

/// Feeds the engine's write-path measurements into the metrics.
pub struct Observer;

impl CommitObserver for Observer {
    fn batch_committed(&self, events: u64, requests: u64, bytes: u64, write: Duration) {
        let m = get();
        m.append_requests.inc_by(requests);
        m.append_events.inc_by(events);
        m.append_bytes.inc_by(bytes);
        m.commit_batches.inc();
        m.fsync_duration.observe(write.as_secs_f64());
        m.batch_events.observe(events as f64);
    }

    fn append_finished(&self, elapsed: Duration, _ok: bool) {
        get().append_duration.observe(elapsed.as_secs_f64());
    }
}

/// How the metrics endpoint is protected: nothing (insecure mode), or TLS plus Basic
/// credentials of a member of `$ops` or `$admins` (secure mode).
pub enum MetricsSecurity {
    Open,
    Secure {
        acceptor: tokio_rustls::TlsAcceptor,
        authenticator: Arc<strata_auth::Authenticator>,
    },
}

async fn render_response(engine: Arc<Engine>, groups: Arc<Groups>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = get().render(&engine, &groups).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Checks a scrape's Basic credentials: 401 asks for them, 403 refuses a user who is not an
/// operator.
async fn scrape_allowed(
    auth: &strata_auth::Authenticator,
    headers: &axum::http::HeaderMap,
    client: SocketAddr,
) -> Result<(), axum::response::Response> {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use base64::Engine as _;
    let ask = |why: String| {
        (
            StatusCode::UNAUTHORIZED,
            [(
                axum::http::header::WWW_AUTHENTICATE,
                "Basic realm=\"strata metrics\"",
            )],
            why,
        )
            .into_response()
    };
    let creds = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return Err(ask(
            "metrics need Basic credentials of a user in $ops or $admins\n".into(),
        ));
    };
    match auth.authenticate(Some(client.ip()), user, password).await {
        Ok(p) if p.is_operator() => Ok(()),
        Ok(_) => Err((
            StatusCode::FORBIDDEN,
            "metrics are for members of $ops or $admins\n",
        )
            .into_response()),
        Err(_) => Err(ask(
            "wrong user name or password, or too many failed logins\n".into(),
        )),
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    groups: Arc<Groups>,
    security: MetricsSecurity,
    mut shutdown: watch::Receiver<bool>,
) {
    use axum::routing::get as route_get;
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let result = match security {
        MetricsSecurity::Open => {
            let app = axum::Router::new().route(
                "/metrics",
                route_get(move || render_response(engine.clone(), groups.clone())),
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        MetricsSecurity::Secure {
            acceptor,
            authenticator,
        } => {
            use crate::net::tls::{MetricsPeer, TlsListener};
            let app = axum::Router::new().route(
                "/metrics",
                route_get(
                    move |headers: axum::http::HeaderMap,
                          axum::extract::ConnectInfo(MetricsPeer(client)): axum::extract::ConnectInfo<MetricsPeer>| {
                        let (engine, groups, auth) =
                            (engine.clone(), groups.clone(), authenticator.clone());
                        async move {
                            match scrape_allowed(&auth, &headers, client).await {
                                Ok(()) => render_response(engine, groups).await,
                                Err(refused) => refused,
                            }
                        }
                    },
                ),
            );
            let listener = match TlsListener::new(listener, acceptor, Duration::from_secs(10)) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "metrics listener failed");
                    return;
                }
            };
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<MetricsPeer>(),
            )
            .with_graceful_shutdown(stop)
            .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

/// `--metrics-listen`: an address, or `None` for `off`.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddr(pub Option<SocketAddr>);

/// Parses `--metrics-listen`: an address, or `off`.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    if s.eq_ignore_ascii_case("off") || s.is_empty() {
        return Ok(ListenAddr(None));
    }
    s.parse()
        .map(|a| ListenAddr(Some(a)))
        .map_err(|e| format!("{s:?} is not an address like 127.0.0.1:2114 (or off): {e}"))
}
