//! Every RPC and error code of the strata.v1 API, through the client crate, against the real
//! `strata` binary.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use strata_client::{
    Error, EventData, ExpectedRevision as Exp, Filter, ReadFrom, ReadOptions, StreamMetadata,
};
use strata_tests::{rt, Server};

fn ev(t: &str, n: u64) -> EventData {
    EventData::json(t, &serde_json::json!({ "n": n })).unwrap()
}

#[test]
fn append_read_and_every_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-append-size", "4KiB"]);
    rt().block_on(async {
        let c = server.client().await;
        let r = c
            .append(
                "acct-1",
                Exp::NoStream,
                vec![ev("Opened", 0), ev("Deposited", 1)],
            )
            .await
            .unwrap();
        assert_eq!(r.revision, 1);
        let r2 = c
            .append("acct-1", Exp::Exact(1), vec![ev("Deposited", 2)])
            .await
            .unwrap();
        assert!(r2.position > r.position);

        // Reads: forwards, backwards, from a revision, limited.
        let all: Vec<_> = c
            .read_stream("acct-1", ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(all[1].json::<serde_json::Value>().unwrap()["n"], 1);
        let back: Vec<_> = c
            .read_stream("acct-1", ReadOptions::default().backwards().max_count(2))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            back.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![2, 1]
        );
        let from1: Vec<_> = c
            .read_stream("acct-1", ReadOptions::default().from(ReadFrom::Revision(1)))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(from1.len(), 2);

        // Wrong expected revision carries the actual revision.
        let err = c
            .append("acct-1", Exp::Exact(0), vec![ev("X", 9)])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::WrongExpectedRevision {
                stream: "acct-1".into(),
                expected: Exp::Exact(0),
                actual: Some(2)
            }
        );
        let err = c
            .append("new-one", Exp::StreamExists, vec![ev("X", 9)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::WrongExpectedRevision { actual: None, .. }),
            "{err:?}"
        );

        // Not found is an error of the call, not an empty success.
        let err = c
            .read_stream("missing", ReadOptions::default())
            .await
            .err()
            .unwrap();
        assert_eq!(
            err,
            Error::StreamNotFound {
                stream: "missing".into()
            }
        );

        // Invalid arguments name the field.
        let err = c
            .append("$system", Exp::Any, vec![ev("X", 1)])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "stream"),
            "{err:?}"
        );
        let err = c
            .append("s", Exp::Any, vec![EventData::json_bytes("", "{}")])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "event type"),
            "{err:?}"
        );
        let err = c.append("", Exp::Any, vec![ev("X", 1)]).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "stream name"),
            "{err:?}"
        );
        let err = c
            .read_stream("acct-1", ReadOptions::default().from(ReadFrom::Position(0)))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "from"),
            "{err:?}"
        );
        let err = c
            .read_all(ReadOptions::default().filter(Filter::stream_regex("(unclosed")))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "filter"),
            "{err:?}"
        );

        // Too large: resource exhausted, nothing written.
        let big = EventData::binary("Big", vec![0u8; 5000]);
        let err = c.append("big", Exp::Any, vec![big]).await.unwrap_err();
        assert!(
            matches!(err, Error::AppendTooLarge { max_size: 4096, .. }),
            "{err:?}"
        );
        assert!(matches!(
            c.read_stream("big", ReadOptions::default()).await.err(),
            Some(Error::StreamNotFound { .. })
        ));

        // Idempotent retry and partial overlap.
        let e1 = ev("A", 1);
        let e2 = ev("B", 2);
        let first = c
            .append("idem", Exp::NoStream, vec![e1.clone(), e2.clone()])
            .await
            .unwrap();
        let again = c
            .append("idem", Exp::NoStream, vec![e1.clone(), e2.clone()])
            .await
            .unwrap();
        assert!(again.idempotent_replay && again.position == first.position);
        let err = c
            .append("idem", Exp::Any, vec![e2.clone(), ev("C", 3)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err:?}");

        // Metadata.
        let meta = StreamMetadata {
            max_count: Some(2),
            custom: serde_json::json!({"owner": "billing"}),
            ..Default::default()
        };
        assert_eq!(
            c.set_stream_metadata("acct-1", Exp::NoStream, meta)
                .await
                .unwrap(),
            0
        );
        let (rev, got) = c.get_stream_metadata("acct-1").await.unwrap();
        assert_eq!((rev, got.max_count), (Some(0), Some(2)));
        assert_eq!(got.custom["owner"], "billing");
        let visible: Vec<_> = c
            .read_stream("acct-1", ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            visible.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let err = c
            .set_stream_metadata("acct-1", Exp::NoStream, StreamMetadata::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::WrongExpectedRevision { .. }),
            "{err:?}"
        );

        // Soft delete, recreate; tombstone.
        c.delete_stream("acct-1", Exp::Exact(2)).await.unwrap();
        assert!(matches!(
            c.read_stream("acct-1", ReadOptions::default()).await.err(),
            Some(Error::StreamNotFound { .. })
        ));
        let r = c
            .append("acct-1", Exp::NoStream, vec![ev("Reopened", 3)])
            .await
            .unwrap();
        assert_eq!(r.revision, 3);
        c.tombstone_stream("acct-1", Exp::Any).await.unwrap();
        let err = c
            .append("acct-1", Exp::Any, vec![ev("X", 1)])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::StreamDeleted {
                stream: "acct-1".into()
            }
        );
        assert!(matches!(
            c.read_stream("acct-1", ReadOptions::default()).await.err(),
            Some(Error::StreamDeleted { .. })
        ));
        assert!(matches!(
            c.delete_stream("acct-1", Exp::Any).await,
            Err(Error::StreamDeleted { .. })
        ));

        // $all with filters, forwards and backwards.
        let all: Vec<_> = c
            .read_all(ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(all.windows(2).all(|w| w[0].position < w[1].position));
        let user: Vec<_> = c
            .read_all(ReadOptions::default().filter(Filter::event_type_regex(r"^(?!\$)")))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(user.iter().all(|e| !e.event_type.starts_with('$')));
        assert!(user.len() < all.len());
        let idem: Vec<_> = c
            .read_all(
                ReadOptions::default()
                    .filter(Filter::stream_prefix(["idem"]))
                    .backwards(),
            )
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            idem.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![1, 0]
        );
        let from_pos: Vec<_> = c
            .read_all(
                ReadOptions::default()
                    .from(ReadFrom::Position(all[2].position))
                    .max_count(1),
            )
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(from_pos[0].id, all[2].id);

        // Listing and info.
        let streams = c.list_streams("", false).await.unwrap();
        let names: HashSet<_> = streams.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains("idem")
                && names.contains("acct-1")
                && !names.iter().any(|n| n.starts_with('$'))
        );
        assert!(
            streams
                .iter()
                .find(|s| s.name == "acct-1")
                .unwrap()
                .tombstoned
        );
        assert!(c
            .list_streams("", true)
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == "$$acct-1"));
        let info = c.server_info().await.unwrap();
        assert_eq!(info.durability, "fsync");
        assert!(info.log_end_position > 0 && info.data_bytes > 0 && info.stream_count >= 3);
        c.ping().await.unwrap();
        assert_eq!(c.flood(1000, 16).await.unwrap(), 1000);
    });
}

#[test]
fn large_reads_arrive_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        for i in 0..30 {
            let events = (0..500).map(|j| ev("Bulk", i * 500 + j)).collect();
            c.append("bulk", Exp::Any, events).await.unwrap();
        }
        let events: Vec<_> = c
            .read_stream("bulk", ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(events.len(), 15_000);
        assert!(events
            .iter()
            .enumerate()
            .all(|(i, e)| e.revision == i as u64));
        let all: Vec<_> = c
            .read_all(ReadOptions::default().max_count(12_345))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 12_345);
    });
}

#[test]
fn concurrent_appenders_to_one_stream_exactly_one_wins_each_revision() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.url();
    let winners = rt().block_on(async move {
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let c = strata_client::Client::connect(url).await.unwrap();
                let mut won = Vec::new();
                for rev in 0..40u64 {
                    let expected = if rev == 0 {
                        Exp::NoStream
                    } else {
                        Exp::Exact(rev - 1)
                    };
                    let e = ev("Claim", w);
                    let id = e.id;
                    match c.append("contended", expected, vec![e]).await {
                        Ok(r) => {
                            assert_eq!(r.revision, rev);
                            won.push((rev, id));
                        }
                        Err(Error::WrongExpectedRevision { .. }) => {}
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                won
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    rt().block_on(async {
        let c = server.client().await;
        let events: Vec<_> = c
            .read_stream("contended", ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        // Each stored revision was won by exactly one appender, and every win is stored.
        assert_eq!(events.len(), winners.len());
        let mut revs: Vec<u64> = winners.iter().map(|w| w.0).collect();
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(
            revs.len(),
            winners.len(),
            "two appenders won the same revision"
        );
        for (rev, id) in &winners {
            assert_eq!(events[*rev as usize].id, *id);
        }
    });
}

#[test]
fn client_retries_appends_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let c = strata_client::Client::builder(server.url())
            .append_retries(20)
            .connect()
            .await
            .unwrap();
        c.append("retry", Exp::NoStream, vec![ev("First", 0)])
            .await
            .unwrap();
        server.kill();
        let event = ev("Second", 1);
        let id = event.id;
        let pending = tokio::spawn({
            let c = c.clone();
            async move { c.append("retry", Exp::Exact(0), vec![event]).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restart();
        let r = pending
            .await
            .unwrap()
            .expect("the append is retried until the server is back");
        assert_eq!(r.revision, 1);
        let events: Vec<_> = c
            .read_stream("retry", ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].id, id);
    });
}
