//! Client streams that a careless or hostile client abuses: appends larger than allowed sent
//! in pieces, unfinished batches piling up, and undecodable bytes in the middle of a stream.
//! The server must refuse as the bytes arrive, say why, and never hold what it refused.

use std::time::{Duration, Instant};

use prost::Message;
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks};
use strata_proto::v1;
use strata_tests::{rt, Server};
use uuid::Uuid;

/// Bytes sent as they are: lets a test put an undecodable request in a client stream.
#[derive(Clone, Debug, Default, PartialEq)]
struct Raw(Vec<u8>);

impl Message for Raw {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        _tag: u32,
        _wire_type: prost::encoding::WireType,
        _buf: &mut impl bytes::Buf,
        _ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        unreachable!("only ever sent")
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Field 1 as a length-delimited value whose content is not a UUID message.
fn garbage() -> Raw {
    Raw(vec![0x0a, 0x04, 0xff, 0xff, 0xff, 0xff])
}

async fn raw_call<Resp: Message + Default + 'static>(
    url: &str,
    path: &'static str,
    requests: Vec<Raw>,
) -> Result<Vec<Resp>, (Vec<Resp>, tonic::Status)> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Raw, Resp>::default();
    let response = grpc
        .streaming(
            tonic::Request::new(futures::stream::iter(requests)),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await;
    let mut stream = match response {
        Ok(r) => r.into_inner(),
        Err(s) => return Err((Vec::new(), s)),
    };
    let mut got = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return Ok(got),
            Err(s) => return Err((got, s)),
        }
    }
}

async fn exists(server: &Server, stream: &str) -> bool {
    use futures::TryStreamExt;
    let c = server.client().await;
    match c
        .read_stream(stream, strata_client::ReadOptions::default())
        .await
    {
        Ok(s) => s.try_collect::<Vec<_>>().await.is_ok_and(|v| !v.is_empty()),
        Err(_) => false,
    }
}

fn uuid() -> kc::Uuid {
    kc::Uuid {
        value: Some(kc::uuid::Value::String(Uuid::new_v4().to_string())),
    }
}

/// The metadata KurrentDB clients send with a binary event of type `E`.
fn binary_event_metadata() -> std::collections::HashMap<String, String> {
    [
        ("type".to_owned(), "E".to_owned()),
        (
            "content-type".to_owned(),
            "application/octet-stream".to_owned(),
        ),
    ]
    .into()
}

fn batch(stream: &str, correlation: &kc::Uuid, data: usize, is_final: bool) -> ks::BatchAppendReq {
    ks::BatchAppendReq {
        correlation_id: Some(correlation.clone()),
        options: Some(ks::batch_append_req::Options {
            stream_identifier: Some(kc::StreamIdentifier {
                stream_name: stream.as_bytes().to_vec().into(),
            }),
            expected_stream_position: Some(
                ks::batch_append_req::options::ExpectedStreamPosition::Any(()),
            ),
            deadline_option: None,
        }),
        proposed_messages: vec![ks::batch_append_req::ProposedMessage {
            id: Some(uuid()),
            metadata: binary_event_metadata(),
            custom_metadata: Default::default(),
            data: vec![7u8; data].into(),
        }],
        is_final,
    }
}

fn raw(m: &impl Message) -> Raw {
    Raw(m.encode_to_vec())
}

const BATCH_APPEND: &str = "/event_store.client.streams.Streams/BatchAppend";

#[test]
fn garbage_in_the_middle_of_batch_append_ends_the_call_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let requests = vec![
            raw(&batch("before", &uuid(), 10, true)),
            garbage(),
            raw(&batch("after", &uuid(), 10, true)),
        ];
        let (answered, status) =
            raw_call::<ks::BatchAppendResp>(&server.url(), BATCH_APPEND, requests)
                .await
                .expect_err("the call must fail");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("could not be decoded"),
            "{status:?}"
        );
        assert_eq!(
            answered.len(),
            1,
            "the batch before the garbage is answered"
        );
        assert!(!exists(&server, "after").await);
    });
    assert!(server.logs().contains("could not be decoded"));
}

#[test]
fn garbage_in_the_middle_of_an_append_session_ends_it_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    let append = |correlation_id, stream: &str| v1::AppendSessionRequest {
        correlation_id,
        append: Some(v1::AppendRequest {
            stream: stream.into(),
            expected: None,
            events: vec![v1::EventData {
                event_type: "E".into(),
                data: b"{}".to_vec().into(),
                ..Default::default()
            }],
        }),
    };
    rt().block_on(async {
        let requests = vec![
            raw(&append(1, "before")),
            Raw(vec![0x12, 0x03, 0xff, 0xff, 0xff]),
            raw(&append(2, "after")),
        ];
        let (answered, status) = raw_call::<v1::AppendSessionResponse>(
            &server.url(),
            "/strata.v1.Streams/AppendSession",
            requests,
        )
        .await
        .expect_err("the call must fail");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(answered.len(), 1, "{answered:?}");
        assert!(!exists(&server, "after").await);
    });
}

#[test]
fn batch_append_chunks_are_bounded_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--max-append-size", "1MiB"],
    );
    let rss_before = server.rss_kib();
    rt().block_on(async {
        // One batch sent as 200 non-final chunks of 64 KiB (12.5 MiB): refused once past
        // 1 MiB, the rest dropped as it arrives; then a small batch on the same call works.
        let big = uuid();
        let mut requests: Vec<Raw> = (0..200)
            .map(|_| raw(&batch("big", &big, 64 * 1024, false)))
            .collect();
        requests.push(raw(&batch("big", &big, 10, true)));
        requests.push(raw(&batch("small", &uuid(), 10, true)));
        let answers = raw_call::<ks::BatchAppendResp>(&server.url(), BATCH_APPEND, requests)
            .await
            .unwrap_or_else(|(_, s)| panic!("{s:?}"));
        assert_eq!(answers.len(), 2, "{answers:?}");
        let refused = &answers[0];
        let Some(ks::batch_append_resp::Result::Error(e)) = &refused.result else {
            panic!("{refused:?}")
        };
        assert!(
            e.details
                .as_ref()
                .is_some_and(|d| d.type_url.ends_with("MaximumAppendSizeExceeded")),
            "{e:?}"
        );
        assert!(matches!(
            answers[1].result,
            Some(ks::batch_append_resp::Result::Success(_))
        ));

        // Many unfinished batches together: the call ends once they hold 4 x the limit.
        let requests: Vec<Raw> = (0..10)
            .map(|_| raw(&batch("many", &uuid(), 900 * 1024, false)))
            .collect();
        let (_, status) = raw_call::<ks::BatchAppendResp>(&server.url(), BATCH_APPEND, requests)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

        // Unfinished batches with no events are not free: each counts its bookkeeping.
        let requests: Vec<Raw> = (0..10_000)
            .map(|_| {
                let mut b = batch("empty", &uuid(), 0, false);
                b.proposed_messages.clear();
                raw(&b)
            })
            .collect();
        let (_, status) = raw_call::<ks::BatchAppendResp>(&server.url(), BATCH_APPEND, requests)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    });
    let grown_mib = server.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB");
}

#[test]
fn a_streaming_kurrentdb_append_is_refused_as_soon_as_it_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--max-append-size", "1MiB"],
    );
    rt().block_on(async {
        let mut requests = vec![raw(&ks::AppendReq {
            content: Some(ks::append_req::Content::Options(ks::append_req::Options {
                stream_identifier: Some(kc::StreamIdentifier {
                    stream_name: b"too-big".to_vec().into(),
                }),
                expected_stream_revision: Some(
                    ks::append_req::options::ExpectedStreamRevision::Any(kc::Empty {}),
                ),
            })),
        })];
        // 100 MiB in 64 KiB events: the server must refuse after the first MiB, not buffer it all.
        for _ in 0..1600 {
            requests.push(raw(&ks::AppendReq {
                content: Some(ks::append_req::Content::ProposedMessage(
                    ks::append_req::ProposedMessage {
                        id: Some(uuid()),
                        metadata: binary_event_metadata(),
                        custom_metadata: Default::default(),
                        data: vec![1u8; 64 * 1024].into(),
                    },
                )),
            }));
        }
        let rss_before = server.rss_kib();
        let started = Instant::now();
        let (_, status) = raw_call::<ks::AppendResp>(
            &server.url(),
            "/event_store.client.streams.Streams/Append",
            requests,
        )
        .await
        .expect_err("refused");
        assert!(
            status.message().contains("Maximum Append Size"),
            "{status:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        let grown_mib = server.peak_rss_kib().saturating_sub(rss_before) / 1024;
        assert!(grown_mib < 50, "peak RSS grew by {grown_mib} MiB");
    });
}

/// Eight append sessions each send 100 appends of 300 KiB and never read a response, then
/// go away. What the server buffered for them (requests, responses, the writer's batches)
/// must be given back: the resident set returns to near where it started.
#[test]
fn memory_held_for_append_sessions_is_given_back_when_they_end() {
    use strata_proto::v1::streams_client::StreamsClient;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let rt = rt();
    rt.block_on(async {
        // Warm up what every server holds once it has served anything.
        let client = server.client().await;
        client
            .append(
                "warm",
                strata_client::ExpectedRevision::Any,
                vec![strata_client::EventData::json("e", &[0u8; 16]).unwrap()],
            )
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));
    let start = server.rss_kib();
    rt.block_on(async {
        let mut sessions = Vec::new();
        for s in 0..8 {
            let url = server.url();
            sessions.push(tokio::spawn(async move {
                let mut grpc = StreamsClient::connect(url).await.unwrap();
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let call = tokio::spawn(async move {
                    grpc.append_session(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await
                });
                for i in 0..100u64 {
                    let request = v1::AppendSessionRequest {
                        correlation_id: i,
                        append: Some(v1::AppendRequest {
                            stream: format!("mem-{s}"),
                            expected: None,
                            events: vec![v1::EventData {
                                event_id: Uuid::new_v4().to_string(),
                                event_type: "big".into(),
                                data: vec![7u8; 300 * 1024].into(),
                                ..Default::default()
                            }],
                        }),
                    };
                    if tx.send(request).await.is_err() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(tx);
                call.abort();
            }));
        }
        for s in sessions {
            s.await.unwrap();
        }
    });
    let peak = server.rss_kib();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = server.rss_kib();
    while now > start + 64 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now = server.rss_kib();
    }
    eprintln!("rss: start {start} KiB, after the sessions {peak} KiB, settled {now} KiB");
    assert!(
        now <= start + 64 * 1024,
        "the server kept {} KiB after the sessions ended (start {start} KiB, peak {peak} KiB)",
        now - start
    );
}

/// Unfinished KurrentDB batches of many calls together: each call stays under its own bound,
/// but together they hold the server's memory budget, and the calls that come after it is used
/// up wait, then end with RESOURCE_EXHAUSTED naming the budget, instead of growing the server.
#[test]
fn unfinished_batches_of_many_calls_together_hold_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--durability",
            "no-sync",
            "--max-append-size",
            "1MiB",
            "--memory-budget",
            "4MiB",
        ],
    );
    rt().block_on(async {
        let mut calls = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..8 {
            let mut client = ks::streams_client::StreamsClient::connect(server.url())
                .await
                .unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(batch("held", &uuid(), 900 * 1024, false))
                .await
                .unwrap();
            senders.push(tx);
            calls.push(tokio::spawn(async move {
                let mut answers = client
                    .batch_append(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                while answers.message().await?.is_some() {}
                Ok::<_, tonic::Status>(())
            }));
        }
        // A call waits up to 10 s for the budget.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let (mut exhausted, mut open) = (0, 0);
        for call in calls {
            if !call.is_finished() {
                // Calls holding the budget stay open while their batch is unfinished.
                open += 1;
                continue;
            }
            match call.await.unwrap() {
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                    assert!(status.message().contains("--memory-budget"), "{status:?}");
                    exhausted += 1;
                }
                Ok(()) => panic!("a call ended without an error"),
            }
        }
        assert!(
            exhausted >= 3 && open >= 3,
            "{exhausted} calls refused, {open} open"
        );
        drop(senders);
        // Once the calls are gone, their budget is free again.
        let c = server.client().await;
        c.append(
            "after",
            strata_client::ExpectedRevision::Any,
            vec![strata_client::EventData::binary("e", vec![1u8; 512 * 1024])],
        )
        .await
        .unwrap();
    });
}
