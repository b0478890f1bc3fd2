//! The streaming append (AppendSession): many appends in flight on one stream, results matched
//! by correlation ID, failures isolated, backpressure, and the raw protocol.

use std::collections::HashMap;

use futures::TryStreamExt;
use strata_client::{Client, Error, EventData, ExpectedRevision as Exp, ReadOptions};
use strata_proto::v1::{self, append_session_response::Result as R, streams_client::StreamsClient};
use strata_tests::{rt, Server};

#[test]
fn thousands_of_concurrent_appends_on_one_client_each_get_their_own_result() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let c = server.client().await;
        // More appends in flight than the server's window (1024): backpressure, not failure.
        let mut tasks = Vec::new();
        for i in 0..3000u64 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("s-{}", i % 10);
                let e = EventData::json("N", &i).unwrap();
                let id = e.id;
                let r = c.append(&stream, Exp::Any, vec![e]).await.unwrap();
                (stream, r.revision, id)
            }));
        }
        let mut by_stream: HashMap<String, Vec<(u64, uuid::Uuid)>> = HashMap::new();
        for t in tasks {
            let (s, rev, id) = t.await.unwrap();
            by_stream.entry(s).or_default().push((rev, id));
        }
        for (stream, results) in by_stream {
            let events: Vec<_> = c
                .read_stream(&stream, ReadOptions::default())
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(events.len(), 300);
            for (rev, id) in results {
                assert_eq!(
                    events[rev as usize].id, id,
                    "the result of {stream}@{rev} belongs to another append"
                );
            }
        }
    });
}

#[test]
fn a_failed_append_does_not_affect_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let c = server.client().await;
        c.append(
            "fixed",
            Exp::NoStream,
            vec![EventData::json("A", &0).unwrap()],
        )
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    // Always wrong: "fixed" is at revision 0.
                    c.append(
                        "fixed",
                        Exp::Exact(7),
                        vec![EventData::json("Bad", &i).unwrap()],
                    )
                    .await
                    .map(|_| ())
                } else {
                    c.append(
                        &format!("good-{i}"),
                        Exp::NoStream,
                        vec![EventData::json("Good", &i).unwrap()],
                    )
                    .await
                    .map(|_| ())
                }
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap();
            if i % 2 == 0 {
                assert!(
                    matches!(
                        r,
                        Err(Error::WrongExpectedRevision {
                            actual: Some(0),
                            ..
                        })
                    ),
                    "{r:?}"
                );
            } else {
                r.unwrap();
            }
        }
    });
}

/// Sends `requests` on one raw append session and collects every response until the server ends
/// the session.
async fn run_session(
    raw: &mut StreamsClient<tonic::transport::Channel>,
    requests: impl IntoIterator<Item = v1::AppendSessionRequest>,
) -> Vec<v1::AppendSessionResponse> {
    let requests: Vec<_> = requests.into_iter().collect();
    raw.append_session(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap()
}

#[test]
fn raw_protocol_echoes_correlation_ids_and_reports_errors_in_band() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let mut raw = StreamsClient::connect(server.url()).await.unwrap();
        let append = |stream: &str, n: u8| v1::AppendRequest {
            stream: stream.into(),
            expected: None,
            events: vec![v1::EventData {
                event_id: String::new(),
                event_type: "T".into(),
                data: vec![b'0' + n].into(),
                metadata: Default::default(),
                content_type: 0,
            }],
        };
        let requests = vec![
            v1::AppendSessionRequest {
                correlation_id: 42,
                append: Some(append("x", 1)),
            },
            v1::AppendSessionRequest {
                correlation_id: 7,
                append: None,
            },
            v1::AppendSessionRequest {
                correlation_id: 9,
                append: Some(append("$reserved", 2)),
            },
            v1::AppendSessionRequest {
                correlation_id: 1000,
                append: Some(append("x", 3)),
            },
        ];
        let responses = run_session(&mut raw, requests).await;
        let by_id: HashMap<u64, R> = responses
            .into_iter()
            .map(|r| (r.correlation_id, r.result.unwrap()))
            .collect();
        assert_eq!(by_id.len(), 4);
        assert!(matches!(by_id[&42], R::Success(_)));
        assert!(matches!(by_id[&1000], R::Success(_)));
        match &by_id[&7] {
            R::Error(e) => assert_eq!(e.code, tonic::Code::InvalidArgument as i32),
            other => panic!("{other:?}"),
        }
        match &by_id[&9] {
            R::Error(e) => {
                assert!(e.message.contains("reserved"), "{}", e.message);
                assert!(matches!(
                    e.detail.as_ref().and_then(|d| d.kind.as_ref()),
                    Some(v1::error_detail::Kind::InvalidArgument(_))
                ));
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn unary_appends_remain_available() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let c = Client::builder(server.url())
            .append_sessions(false)
            .connect()
            .await
            .unwrap();
        let r = c
            .append("u", Exp::NoStream, vec![EventData::json("U", &1).unwrap()])
            .await
            .unwrap();
        assert_eq!(r.revision, 0);
        let err = c
            .append("u", Exp::NoStream, vec![EventData::json("U", &2).unwrap()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WrongExpectedRevision { .. }));
    });
}

#[test]
fn deadline_fires_on_a_frozen_server_and_the_retry_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let c = Client::builder(server.url())
            // Long enough that a loaded machine's fsync never trips it; the frozen call
            // waits it out because the server stays stopped until SIGCONT.
            .timeout(Some(std::time::Duration::from_secs(3)))
            .connect()
            .await
            .unwrap();
        c.append("d", Exp::NoStream, vec![EventData::json("A", &0).unwrap()])
            .await
            .unwrap();
        server.signal(libc::SIGSTOP);
        let e = EventData::json("B", &1).unwrap();
        let err = c
            .append("d", Exp::Exact(0), vec![e.clone()])
            .await
            .unwrap_err();
        assert_eq!(err, Error::DeadlineExceeded);
        server.signal(libc::SIGCONT);
        // The timed-out append may or may not have been written; re-sending it is safe.
        let r = c.append("d", Exp::Exact(0), vec![e.clone()]).await.unwrap();
        assert_eq!(r.revision, 1);
        let events: Vec<_> = c
            .read_stream("d", ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(events.len(), 2, "written exactly once");
        assert_eq!(events[1].id, e.id);
    });
}

#[test]
fn a_cancelled_append_leaves_the_session_usable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let c = server.client().await;
        for i in 0..50u64 {
            // Start an append and abandon it at once.
            let pending = c.append("c", Exp::Any, vec![EventData::json("Maybe", &i).unwrap()]);
            tokio::select! {
                biased;
                _ = std::future::ready(()) => {}
                _ = pending => {}
            }
        }
        let r = c
            .append(
                "after",
                Exp::NoStream,
                vec![EventData::json("Sure", &1).unwrap()],
            )
            .await
            .unwrap();
        assert_eq!(r.revision, 0);
    });
}

#[test]
fn more_requests_than_the_session_window_are_all_answered_in_order_per_stream() {
    // The server reads at most 1024 requests of a session ahead of the responses it has sent;
    // 3000 requests sent at once must all be answered as the window frees up.
    const N: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let mut raw = StreamsClient::connect(server.url()).await.unwrap();
        let requests = (0..N).map(|i| v1::AppendSessionRequest {
            correlation_id: i,
            append: Some(v1::AppendRequest {
                stream: format!("w-{}", i % 3),
                expected: None,
                events: vec![v1::EventData {
                    event_id: String::new(),
                    event_type: "T".into(),
                    data: i.to_string().into_bytes().into(),
                    metadata: Default::default(),
                    content_type: 0,
                }],
            }),
        });
        let responses = run_session(&mut raw, requests).await;
        assert_eq!(responses.len() as u64, N);
        let mut revisions: HashMap<u64, u64> = HashMap::new();
        for r in responses {
            match r.result.unwrap() {
                R::Success(ok) => {
                    assert!(revisions.insert(r.correlation_id, ok.revision).is_none());
                }
                R::Error(e) => panic!("append {} failed: {}", r.correlation_id, e.message),
            }
        }
        // Requests of one session are queued in the order they were sent, so each stream's
        // revisions follow the correlation IDs.
        for i in 0..N {
            assert_eq!(revisions[&i], i / 3, "correlation ID {i}");
        }
        let c = server.client().await;
        for s in 0..3 {
            let events: Vec<_> = c
                .read_stream(&format!("w-{s}"), ReadOptions::default())
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(events.len() as u64, N / 3);
            for (k, e) in events.iter().enumerate() {
                assert_eq!(e.data.as_ref(), (k as u64 * 3 + s).to_string().as_bytes());
            }
        }
    });
}
