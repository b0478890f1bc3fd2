//! KurrentDB client compatibility against the real server: the official Python client
//! (kurrentdbclient, installed into a virtualenv under the target directory on first use) runs
//! tests/compat/kurrentdb_smoke.py; the generated v1 stubs check what that client does not
//! touch (structured UUIDs, ServerFeatures, Gossip, unimplemented calls, error texts). Also
//! the Python client against a three-node cluster through a leader kill.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_kurrentdb_proto::event_store::client::{
    self as kc, gossip::gossip_client::GossipClient,
    persistent_subscriptions::persistent_subscriptions_client::PersistentSubscriptionsClient,
    server_features::server_features_client::ServerFeaturesClient, streams as ks,
    streams::streams_client::StreamsClient,
};
use strata_tests::{rt, Server};

/// The pinned client version: its error handling changed within 1.x.
const CLIENT: &str = "kurrentdbclient==1.3.5";

/// A Python with the KurrentDB client installed (a virtualenv next to the build).
fn python() -> PathBuf {
    strata_tests::python_venv("kurrentdb-venv", CLIENT, "kurrentdbclient")
}

/// Runs one of tests/compat's scripts against a fresh server; it must succeed and print a
/// summary line starting with `summary` that reports no failure.
fn run_script(name: &str, summary: &str, extra: &[&str]) {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), extra);
    let url = format!("kurrentdb://{}?tls=false", server.addr);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("compat")
        .join(name);
    let out = Command::new(py).arg(script).arg(&url).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with(summary));
    assert!(
        out.status.success() && line.is_some_and(|l| l.ends_with(" 0 failed")),
        "stdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
}

#[test]
fn the_official_python_client_works_unchanged() {
    run_script("kurrentdb_smoke.py", "compat:", &[]);
}

#[test]
fn the_python_client_scenarios_pass() {
    run_script(
        "kurrentdb_scenarios.py",
        "compat scenarios:",
        &["--durability", "no-sync", "--derived-streams"],
    );
}

#[test]
fn the_python_client_appends_to_many_streams_atomically_through_v2() {
    run_script(
        "kurrentdb_multi_append.py",
        "multi-append scenarios:",
        &["--durability", "no-sync", "--max-append-size", "65536"],
    );
}

fn uuid_option(structured: bool) -> ks::read_req::options::UuidOption {
    use ks::read_req::options::uuid_option::Content;
    ks::read_req::options::UuidOption {
        content: Some(if structured {
            Content::Structured(kc::Empty {})
        } else {
            Content::String(kc::Empty {})
        }),
    }
}

#[test]
fn v1_stubs_see_features_gossip_structured_uuids_and_kurrentdb_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let url = server.url();
        let features = ServerFeaturesClient::connect(url.clone())
            .await
            .unwrap()
            .get_supported_methods(kc::Empty {})
            .await
            .unwrap()
            .into_inner();
        // The KurrentDB protocol level, numeric, as clients parse it (not Strata's version).
        let version: Vec<u32> = features
            .event_store_server_version
            .split('.')
            .map(|p| p.parse().expect("a numeric X.Y.Z version"))
            .collect();
        assert_eq!(version.len(), 3);
        assert!(version[0] >= 24, "{version:?}");
        // Every method listed is lower case, and every persistent-subscription management
        // method is there (clients fall back to HTTP otherwise).
        assert!(features
            .methods
            .iter()
            .all(|m| m.method_name == m.method_name.to_lowercase()
                && m.service_name == m.service_name.to_lowercase()));
        for method in ["getinfo", "replayparked", "list", "restartsubsystem"] {
            assert!(
                features.methods.iter().any(|m| m.method_name == method
                    && m.service_name
                        == "event_store.client.persistent_subscriptions.persistentsubscriptions"),
                "{method} is not listed"
            );
        }
        assert!(features
            .methods
            .iter()
            .any(|m| m.method_name == "batchappend"
                && m.service_name == "event_store.client.streams.streams"));
        assert!(features
            .methods
            .iter()
            .any(|m| m.method_name == "create" && m.features.contains(&"all".to_owned())));

        let gossip = GossipClient::connect(url.clone())
            .await
            .unwrap()
            .read(kc::Empty {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(gossip.members.len(), 1);
        let me = &gossip.members[0];
        assert_eq!(me.state, kc::gossip::member_info::VNodeState::Leader as i32);
        let ep = me.http_end_point.as_ref().unwrap();
        assert_eq!(
            (ep.address.as_str(), ep.port),
            ("127.0.0.1", u32::from(server.addr.port()))
        );

        // Append through the Strata API, read through v1 with structured UUIDs.
        let c = server.client().await;
        let e = strata_client::EventData::json("Made", &1).unwrap();
        let id = e.id;
        c.append("k-1", strata_client::ExpectedRevision::NoStream, vec![e])
            .await
            .unwrap();
        let mut streams = StreamsClient::connect(url.clone()).await.unwrap();
        let read = |structured| ks::ReadReq {
            options: Some(ks::read_req::Options {
                stream_option: Some(ks::read_req::options::StreamOption::Stream(
                    ks::read_req::options::StreamOptions {
                        stream_identifier: Some(kc::StreamIdentifier {
                            stream_name: "k-1".into(),
                        }),
                        revision_option: Some(
                            ks::read_req::options::stream_options::RevisionOption::Start(
                                kc::Empty {},
                            ),
                        ),
                    },
                )),
                read_direction: 0,
                resolve_links: false,
                count_option: Some(ks::read_req::options::CountOption::Count(10)),
                filter_option: None,
                uuid_option: Some(uuid_option(structured)),
                control_option: None,
            }),
        };
        let mut responses = streams.read(read(true)).await.unwrap().into_inner();
        let first = responses.message().await.unwrap().unwrap();
        let Some(ks::read_resp::Content::Event(ev)) = first.content else {
            panic!("{first:?}")
        };
        let recorded = ev.event.unwrap();
        let Some(kc::uuid::Value::Structured(s)) = recorded.id.and_then(|u| u.value) else {
            panic!("structured UUID expected")
        };
        let (hi, lo) = id.as_u64_pair();
        assert_eq!(
            (
                s.most_significant_bits as u64,
                s.least_significant_bits as u64
            ),
            (hi, lo)
        );
        assert_eq!(recorded.metadata["type"], "Made");
        assert_eq!(recorded.metadata["content-type"], "application/json");
        assert!(recorded.commit_position >= 1, "positions start at 1");
        assert_eq!(recorded.commit_position, recorded.prepare_position);

        // A tombstoned stream: the text KurrentDB clients match, and no rich details.
        c.tombstone_stream("k-1", strata_client::ExpectedRevision::Any)
            .await
            .unwrap();
        let status = match streams.read(read(false)).await {
            Err(s) => s,
            Ok(r) => r.into_inner().message().await.unwrap_err(),
        };
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "Event stream 'k-1' is deleted.");
        assert!(status.details().is_empty());
        assert_eq!(
            status.metadata().get("exception").unwrap(),
            "stream-deleted"
        );

        // With no groups, a restart has nothing to do and succeeds.
        PersistentSubscriptionsClient::connect(url)
            .await
            .unwrap()
            .restart_subsystem(kc::Empty {})
            .await
            .unwrap();
    });
}

/// Without --advertise-host, gossip advertises the host and port the client asked for (the
/// request's authority), as the Python client's own gossip test expects of a node reached as
/// `localhost`.
#[test]
fn gossip_advertises_the_name_the_client_used() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let url = format!("http://localhost:{}", server.addr.port());
        let gossip = GossipClient::connect(url)
            .await
            .unwrap()
            .read(kc::Empty {})
            .await
            .unwrap()
            .into_inner();
        let ep = gossip.members[0].http_end_point.as_ref().unwrap();
        assert_eq!(
            (ep.address.as_str(), ep.port),
            ("localhost", u32::from(server.addr.port()))
        );
    });
}

/// Gossip advertises the configured host name and port instead of the connection's address
/// (for clients behind a port mapping, or that check the certificate's name).
#[test]
fn gossip_advertises_the_configured_host_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--advertise-host", "db.example", "--advertise-port", "2113"],
    );
    rt().block_on(async {
        let gossip = GossipClient::connect(server.url())
            .await
            .unwrap()
            .read(kc::Empty {})
            .await
            .unwrap()
            .into_inner();
        let ep = gossip.members[0].http_end_point.as_ref().unwrap();
        assert_eq!((ep.address.as_str(), ep.port), ("db.example", 2113));
    });
}

/// The Python client with a three-host connection string against a three-node cluster
/// (127.0.0.111–113): it finds the leader by gossip and appends; the leader is killed midway;
/// the client reconnects to the new leader and goes on. Every acknowledged event is read back
/// exactly once, in the order acknowledged.
#[test]
fn the_python_client_follows_the_leader_of_a_cluster_through_a_leader_kill() {
    use std::io::BufRead;
    let py = python();
    rt().block_on(async {
        let mut cluster = strata_tests::cluster::start_cluster(110, |_| vec![]);
        let hosts: Vec<String> = cluster.nodes.values().map(|n| n.addr.to_string()).collect();
        let uri = format!("kurrentdb://{}?tls=false", hosts.join(","));
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("compat")
            .join("kurrentdb_cluster.py");
        let mut child = Command::new(py)
            .arg(script)
            .arg(&uri)
            .arg("120")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut result = None;
        let mut killed = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            if line == "acked 40" {
                // Kill whichever node leads now.
                let mut leader = None;
                for (id, n) in &cluster.nodes {
                    let c = strata_client::Client::connect(n.url()).await.unwrap();
                    let s = c.server_info().await.unwrap().cluster.unwrap();
                    if s.role == "leader" {
                        leader = Some(*id);
                    }
                }
                let id = leader.expect("a node leads");
                cluster.nodes.get_mut(&id).unwrap().kill();
                killed = Some(id);
            }
            if let Some(json) = line.strip_prefix("result: ") {
                result = Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
            }
        }
        let out = child.wait_with_output().unwrap();
        let result = result.unwrap_or_else(|| {
            panic!(
                "the script ended without a result ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(killed.is_some(), "the leader was never killed");
        let acked = result["acked"].as_array().unwrap();
        assert_eq!(acked.len(), 120);
        assert_eq!(
            result["read"], result["acked"],
            "the stream does not hold exactly the acknowledged events, in order; failures: {}",
            result["failures"]
        );
        eprintln!(
            "node {} (leader) killed after 40 appends; failed attempts the script retried: {}",
            killed.unwrap(),
            result["failures"]
        );
    });
}
