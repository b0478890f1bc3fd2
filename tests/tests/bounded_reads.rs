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
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--max-append-size", "2MiB"],
    );
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
