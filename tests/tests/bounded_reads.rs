//! Reads and subscriptions are cut by bytes, not only by event count: a default gRPC client
//! (4 MiB message limit) reads a stream of large events, and readers that stop reading make
//! the server hold a few pages, not the stream.

use std::time::Duration;

use strata_client::{EventData, ExpectedRevision as Exp};
use strata_proto::v1::{self, streams_client::StreamsClient};
use strata_tests::{rt, Server};

const EVENTS: usize = 200;
const EVENT_BYTES: usize = 1_000_000;

fn big_store() -> (tempfile::TempDir, Server) {
    big_store_with(&[])
}

fn big_store_with(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--durability", "no-sync", "--max-append-size", "2MiB"];
    args.extend_from_slice(extra);
    let server = Server::start(dir.path(), &args);
    rt().block_on(async {
        let c = server.client().await;
        for _ in 0..EVENTS {
            c.append(
                "big",
                Exp::Any,
                vec![EventData::binary("Blob", vec![7u8; EVENT_BYTES])],
            )
            .await
            .unwrap();
        }
    });
    (dir, server)
}

fn read_request(stream: &str) -> v1::ReadRequest {
    v1::ReadRequest {
        stream: stream.into(),
        ..Default::default()
    }
}

#[test]
fn large_events_reach_a_client_with_default_message_limits_and_stalled_readers_hold_little() {
    let (_dir, server) = big_store();
    let url = server.url();
    rt().block_on(async {
        // A plain generated client: tonic's default 4 MiB decoding limit.
        let mut client = StreamsClient::connect(url.clone()).await.unwrap();
        let mut stream = client.read(read_request("big")).await.unwrap().into_inner();
        let mut total = 0;
        while let Some(page) = stream.message().await.unwrap() {
            total += page.events.len();
        }
        assert_eq!(total, EVENTS);

        let rss_before = server.rss_kib();
        // Five readers that take one message and stop reading.
        let mut stalled = Vec::new();
        for _ in 0..5 {
            let mut client = StreamsClient::connect(url.clone()).await.unwrap();
            let mut s = client.read(read_request("big")).await.unwrap().into_inner();
            s.message().await.unwrap().unwrap();
            stalled.push((client, s));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let grown_mib = server.rss_kib().saturating_sub(rss_before) / 1024;
        // Each holds at most a few 2 MiB pages (plus transport buffers), not the 200 MB stream.
        assert!(
            grown_mib < 120,
            "RSS grew by {grown_mib} MiB for 5 stalled reads"
        );
        drop(stalled);
    });
}

#[test]
fn a_subscriber_that_stops_reading_holds_a_bounded_buffer() {
    let (_dir, server) = big_store();
    rt().block_on(async {
        use strata_proto::v1::subscriptions_client::SubscriptionsClient;
        let rss_before = server.rss_kib();
        let mut stalled = Vec::new();
        for _ in 0..5 {
            let mut client = SubscriptionsClient::connect(server.url()).await.unwrap();
            let mut s = client
                .subscribe(v1::SubscribeRequest {
                    stream: "big".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            s.message().await.unwrap().unwrap();
            stalled.push((client, s));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let grown_mib = server.rss_kib().saturating_sub(rss_before) / 1024;
        assert!(
            grown_mib < 120,
            "RSS grew by {grown_mib} MiB for 5 stalled subscribers"
        );
    });
}

#[test]
fn all_clients_together_stay_within_the_memory_budget() {
    let (_dir, server) = big_store_with(&["--memory-budget", "16MiB"]);
    let url = server.url();
    rt().block_on(async {
        let rss_before = server.rss_kib();
        // Twenty readers that take one message and stop: alone, each could hold five 2 MiB
        // pages; together they may hold 16 MiB of queued pages.
        // Readers that take one message and stop: their pages wait in the server, holding
        // the budget. Started together, some may find it used up by the others already and
        // be refused after waiting for it: both are the budget at work.
        let starts = (0..20).map(|_| {
            let url = url.clone();
            async move {
                let mut client = StreamsClient::connect(url).await.unwrap();
                let first = async {
                    let mut s = client.read(read_request("big")).await?.into_inner();
                    s.message().await?;
                    Ok::<_, tonic::Status>(s)
                }
                .await;
                (client, first)
            }
        });
        let mut stalled = Vec::new();
        let mut refusals = Vec::new();
        for (client, first) in futures::future::join_all(starts).await {
            match first {
                Ok(s) => stalled.push((client, s)),
                Err(status) => refusals.push(status),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let grown_mib = server.peak_rss_kib().saturating_sub(rss_before) / 1024;
        // 16 MiB of pages waiting in the server, plus what the transport holds: about one
        // message per stream. Without the budget: several 2 MiB pages each.
        assert!(grown_mib < 100, "peak RSS grew by {grown_mib} MiB");
        // While they hold it, a new read waits for the budget, then is told why it cannot go
        // on (unless the budget was released meanwhile, which only refusals above can do).
        let mut client = StreamsClient::connect(url.clone()).await.unwrap();
        let outcome = async {
            let mut s = client.read(read_request("big")).await?.into_inner();
            while s.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        }
        .await;
        if let Err(status) = outcome {
            refusals.push(status);
        }
        assert!(
            !refusals.is_empty(),
            "nothing was refused: the budget did not bind"
        );
        for status in &refusals {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains("--memory-budget"), "{status:?}");
        }
        // Once they are gone, reads go through again.
        drop(stalled);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let read = async {
                let mut total = 0;
                let mut s = client.read(read_request("big")).await?.into_inner();
                while let Some(page) = s.message().await? {
                    total += page.events.len();
                }
                Ok::<usize, tonic::Status>(total)
            }
            .await;
            match read {
                Ok(total) => {
                    assert_eq!(total, EVENTS);
                    break;
                }
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the budget was never returned"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(s) => panic!("{s:?}"),
            }
        }
    });
}
