//! The Prometheus endpoint of the real server: counters move with traffic, errors are counted
//! by code, consumer groups and catch-up subscriptions show up.

use std::io::Write;
use std::time::Duration;

use strata_client::{Error, EventData, ExpectedRevision as Exp, GroupSettings, GroupStart};
use strata_client::{ReadOptions, SubscribeFrom};
use strata_tests::metrics::{metrics_addr, scrape, value};
use strata_tests::{rt, Server};

#[test]
fn metrics_endpoint_reports_appends_reads_errors_groups_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);
    rt().block_on(async {
        let c = server.client().await;
        for i in 0..20 {
            c.append("m", Exp::Any, vec![EventData::json("E", &i).unwrap()])
                .await
                .unwrap();
        }
        let _ = futures::TryStreamExt::try_collect::<Vec<_>>(
            c.read_stream("m", ReadOptions::default()).await.unwrap(),
        )
        .await
        .unwrap();
        assert!(matches!(
            c.read_stream("missing", ReadOptions::default()).await,
            Err(Error::StreamNotFound { .. })
        ));
        let settings = GroupSettings {
            start_from: Some(GroupStart::Start),
            ..Default::default()
        };
        c.create_group("m", "g", settings).await.unwrap();
        let mut consumer = c.consume_group("m", "g", 5).await.unwrap();
        for _ in 0..5 {
            consumer.next().await.unwrap().unwrap();
        }
        let _sub = c.subscribe("m", SubscribeFrom::Start, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;

        let (head, body) = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || scrape(&addr, "/metrics")
        })
        .await
        .unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("text/plain"), "{head}");
        assert!(value(&body, "strata_append_events_total") >= 20.0);
        assert!(value(&body, "strata_append_requests_total") >= 20.0);
        assert!(value(&body, "strata_commit_batches_total") >= 1.0);
        assert!(value(&body, "strata_append_bytes_total") > 0.0);
        assert!(value(&body, "strata_append_duration_seconds_count") >= 20.0);
        assert!(value(&body, "strata_fsync_duration_seconds_count") >= 1.0);
        assert!(value(&body, "strata_commit_batch_events_bucket") >= 0.0);
        assert!(value(&body, "strata_reads_total{kind=\"stream\"}") >= 2.0);
        assert!(value(&body, "strata_read_events_total") >= 20.0);
        assert_eq!(value(&body, "strata_errors_total{code=\"NotFound\"}"), 1.0);
        assert_eq!(value(&body, "strata_subscriptions_active"), 1.0);
        assert_eq!(
            value(
                &body,
                "strata_persistent_in_flight{stream=\"m\",group=\"g\"}"
            ),
            5.0
        );
        assert_eq!(
            value(
                &body,
                "strata_persistent_lag_events{stream=\"m\",group=\"g\"}"
            ),
            20.0
        );
        assert_eq!(
            value(&body, "strata_persistent_parked{stream=\"m\",group=\"g\"}"),
            0.0
        );
        assert!(value(&body, "strata_log_bytes") > 0.0);
        assert_eq!(value(&body, "strata_log_segments"), 1.0);
        assert_eq!(value(&body, "strata_index_reindexed_events"), 0.0);
        let (head, _) = tokio::task::spawn_blocking(move || scrape(&addr, "/nope"))
            .await
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    });
}

#[test]
fn metrics_are_off_by_default_and_a_bad_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!server.logs().contains("metrics on"), "{}", server.logs());
    let out = std::process::Command::new(strata_tests::strata_bin())
        .args(["serve", "--metrics-listen", "nonsense", "--data-dir"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics-listen") && err.contains("nonsense"),
        "{err}"
    );
}

/// Errors are counted by code whichever service makes them (Strata's API, the KurrentDB
/// protocol) and however they travel (a unary answer, or the trailers that end a stream).
#[test]
fn errors_are_counted_for_every_service_and_at_the_end_of_streams() {
    use futures::StreamExt;
    use strata_kurrentdb_proto::event_store::client::{
        self as kc, streams as ks, streams::streams_client::StreamsClient,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);
    rt().block_on(async {
        let c = server.client().await;
        // Strata API, in a stream's trailers: a subscription ended by a tombstone.
        c.append("t", Exp::NoStream, vec![EventData::json("E", &1).unwrap()])
            .await
            .unwrap();
        let mut sub = c.subscribe("t", SubscribeFrom::Start, None).await.unwrap();
        c.tombstone_stream("t", Exp::Any).await.unwrap();
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
                Ok(Some(Err(e))) => break e,
                Ok(Some(Ok(_))) => continue,
                other => panic!("the subscription did not end with an error: {other:?}"),
            }
        };
        assert!(matches!(ended, Error::StreamDeleted { .. }), "{ended:?}");
        // KurrentDB protocol, unary: a delete with a wrong expected revision, and a method
        // that is not implemented.
        let mut streams = StreamsClient::connect(server.url()).await.unwrap();
        let err = streams
            .delete(ks::DeleteReq {
                options: Some(ks::delete_req::Options {
                    stream_identifier: Some(kc::StreamIdentifier {
                        stream_name: "missing".into(),
                    }),
                    expected_stream_revision: Some(
                        ks::delete_req::options::ExpectedStreamRevision::Revision(5),
                    ),
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        // A KurrentDB service Strata does not serve (projections).
        let channel = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let err = grpc
            .unary::<kc::Empty, kc::Empty, _>(
                tonic::Request::new(kc::Empty {}),
                "/event_store.client.projections.Projections/RestartSubsystem"
                    .parse()
                    .unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    });
    let (_, body) = scrape(&addr, "/metrics");
    assert_eq!(
        value(&body, "strata_errors_total{code=\"FailedPrecondition\"}"),
        2.0,
        "{body}"
    );
    assert_eq!(
        value(&body, "strata_errors_total{code=\"Unimplemented\"}"),
        1.0
    );
}

#[test]
fn hostile_stream_and_group_names_keep_the_exposition_parseable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);
    let (stream, group) = ("a\"b\\c", "x\"} evil 1 #");
    rt().block_on(async {
        let c = server.client().await;
        c.append(stream, Exp::Any, vec![EventData::json("E", &1).unwrap()])
            .await
            .unwrap();
        let settings = GroupSettings {
            start_from: Some(GroupStart::Start),
            ..Default::default()
        };
        c.create_group(stream, group, settings).await.unwrap();
    });
    let (_, body) = scrape(&addr, "/metrics");
    // The reference parser (Prometheus' own Python client) must read every family, and give
    // back the names exactly.
    let py = strata_tests::python_venv(
        "prometheus-venv",
        "prometheus-client==0.21.1",
        "prometheus_client",
    );
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        if s.name == "strata_persistent_lag_events":
            out.append([s.labels["stream"], s.labels["group"]])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(py)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser rejected the scrape: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(labels, [(stream.to_owned(), group.to_owned())]);
}
