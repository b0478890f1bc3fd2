//! Access control against a secure server (certificates from `strata certs dev`): every role
//! × operation on Strata's API, KurrentDB's forms of refusal, `$settings` defaults and what a
//! non-admin's `$all` read leaves out.

use futures::TryStreamExt;
use strata_client::{
    Client, Error, ExpectedRevision as Exp, GroupSettings, ReadOptions, StreamMetadata,
    SubscribeFrom,
};
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks, users as ku};
use strata_tests::secure::{
    as_user, create_user, ev, kurrent_append, kurrent_channel, secure, ADMIN,
};
use strata_tests::{dev_certs, rt};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Allowed,
    Denied,
    Unauthenticated,
}

fn outcome<T>(r: Result<T, Error>) -> Result<Outcome, Error> {
    match r {
        Ok(_) => Ok(Outcome::Allowed),
        Err(Error::AccessDenied { .. }) => Ok(Outcome::Denied),
        Err(Error::Unauthenticated(_)) => Ok(Outcome::Unauthenticated),
        Err(e) => Err(e),
    }
}

/// Runs one operation as one role; streams are per role where the operation changes them.
async fn run(op: &str, c: &Client, role: &str) -> Result<Outcome, Error> {
    let first = |s: Result<futures::stream::BoxStream<'static, Result<_, Error>>, Error>| async {
        match s {
            Ok(mut s) => s.try_next().await.map(|_| ()),
            Err(e) => Err(e),
        }
    };
    match op {
        "append open" => outcome(c.append("open", Exp::Any, ev()).await),
        "append private" => outcome(c.append("private", Exp::Any, ev()).await),
        "read open" => outcome(first(c.read_stream("open", ReadOptions::default()).await).await),
        "read private" => {
            outcome(first(c.read_stream("private", ReadOptions::default()).await).await)
        }
        "read $all" => outcome(first(c.read_all(ReadOptions::default()).await).await),
        "subscribe $all" => outcome(c.subscribe("$all", SubscribeFrom::Start, None).await),
        "subscribe private" => outcome(c.subscribe("private", SubscribeFrom::Start, None).await),
        "metadata read private" => outcome(c.get_stream_metadata("private").await),
        "metadata write private" => {
            let meta = StreamMetadata {
                custom: serde_json::json!({"$acl": {"$r": "bob", "$w": "bob", "$d": "bob", "$mr": "bob", "$mw": "bob"}, "by": role}),
                ..Default::default()
            };
            outcome(c.set_stream_metadata("private", Exp::Any, meta).await)
        }
        "delete private-n" => outcome(c.delete_stream(&format!("private-{role}"), Exp::Any).await),
        "tombstone private-n" => outcome(
            c.tombstone_stream(&format!("private-{role}"), Exp::Any)
                .await,
        ),
        "delete open-n" => outcome(c.delete_stream(&format!("open-{role}"), Exp::Any).await),
        "create group" => outcome(
            c.create_group("open", &format!("g-{role}"), GroupSettings::default())
                .await,
        ),
        "list groups" => outcome(c.list_groups(None).await),
        "consume group" => outcome(c.consume_group("open", "shared", 1).await),
        other => panic!("no operation {other}"),
    }
}

/// Every role × operation, through Strata's API, against the expected decision.
#[test]
fn roles_and_operations_get_exactly_the_access_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--durability", "no-sync"]);
    use Outcome::{Allowed as A, Denied as D, Unauthenticated as U};
    // admin, ops, alice (ordinary), bob (named in the ACL), anonymous, wrong password, disabled
    let roles = [
        "admin",
        "ops",
        "alice",
        "bob",
        "anonymous",
        "wrong",
        "carol",
    ];
    let table: &[(&str, [Outcome; 7])] = &[
        ("append open", [A, A, A, A, U, U, U]),
        ("append private", [A, D, D, A, U, U, U]),
        ("read open", [A, A, A, A, U, U, U]),
        ("read private", [A, D, D, A, U, U, U]),
        ("read $all", [A, D, D, D, U, U, U]),
        ("subscribe $all", [A, D, D, D, U, U, U]),
        ("subscribe private", [A, D, D, A, U, U, U]),
        ("metadata read private", [A, D, D, A, U, U, U]),
        ("metadata write private", [A, D, D, A, U, U, U]),
        ("delete private-n", [A, D, D, A, U, U, U]),
        ("tombstone private-n", [A, D, D, A, U, U, U]),
        ("delete open-n", [A, A, A, A, U, U, U]),
        ("create group", [A, A, D, D, U, U, U]),
        ("list groups", [A, A, D, D, U, U, U]),
        ("consume group", [A, A, A, A, U, U, U]),
    ];
    rt().block_on(async {
        let ch = kurrent_channel(&server, &certs).await;
        create_user(&ch, "alice", "alice-pw", &[]).await;
        create_user(&ch, "bob", "bob-pw", &["auditors"]).await;
        create_user(&ch, "carol", "carol-pw", &[]).await;
        ku::users_client::UsersClient::new(ch.clone())
            .disable(as_user(
                ku::DisableReq {
                    options: Some(ku::disable_req::Options {
                        login_name: "carol".into(),
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
        let admin = server.client_as(&certs, Some(ADMIN)).await.unwrap();
        let bob_only = serde_json::json!({"$acl": {"$r": "bob", "$w": "bob", "$d": ["bob"], "$mr": "bob", "$mw": "bob"}});
        for s in ["private", "open"] {
            admin.append(s, Exp::Any, ev()).await.unwrap();
        }
        for role in roles {
            let private = format!("private-{role}");
            admin.append(&private, Exp::Any, ev()).await.unwrap();
            admin.append(&format!("open-{role}"), Exp::Any, ev()).await.unwrap();
            let meta = StreamMetadata {
                custom: bob_only.clone(),
                ..Default::default()
            };
            admin
                .set_stream_metadata(&private, Exp::Any, meta)
                .await
                .unwrap();
        }
        let meta = StreamMetadata {
            custom: bob_only.clone(),
            ..Default::default()
        };
        admin
            .set_stream_metadata("private", Exp::Any, meta)
            .await
            .unwrap();
        admin
            .create_group("open", "shared", GroupSettings::default())
            .await
            .unwrap();

        let mut wrong = Vec::new();
        for (i, role) in roles.iter().enumerate() {
            let creds = match *role {
                "admin" => Some(ADMIN),
                "ops" => Some(("ops", "changeit")),
                "alice" => Some(("alice", "alice-pw")),
                "bob" => Some(("bob", "bob-pw")),
                "anonymous" => None,
                "wrong" => Some(("alice", "not-her-password")),
                "carol" => Some(("carol", "carol-pw")),
                _ => unreachable!(),
            };
            let c = server.client_as(&certs, creds).await.unwrap();
            for (op, expected) in table {
                let got = run(op, &c, role).await.unwrap_or_else(|e| {
                    panic!("{role} / {op}: unexpected error {e:?}")
                });
                if got != expected[i] {
                    wrong.push(format!("{role} / {op}: expected {:?}, got {got:?}", expected[i]));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    });
}

/// KurrentDB's API answers in KurrentDB's forms: PERMISSION_DENIED "Access Denied" with the
/// `exception: access-denied` trailer, UNAUTHENTICATED without credentials, an in-band
/// AccessDenied detail inside BatchAppend; health, gossip and server features stay anonymous.
#[test]
fn the_kurrentdb_api_reports_denials_the_way_its_clients_expect() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--durability", "no-sync"]);
    rt().block_on(async {
        let ch = kurrent_channel(&server, &certs).await;
        create_user(&ch, "alice", "alice-pw", &[]).await;
        let read_all = || ks::ReadReq {
            options: Some(ks::read_req::Options {
                stream_option: Some(ks::read_req::options::StreamOption::All(
                    ks::read_req::options::AllOptions {
                        all_option: Some(ks::read_req::options::all_options::AllOption::Start(
                            kc::Empty {},
                        )),
                    },
                )),
                read_direction: 0,
                resolve_links: false,
                count_option: Some(ks::read_req::options::CountOption::Count(10)),
                filter_option: Some(ks::read_req::options::FilterOption::NoFilter(kc::Empty {})),
                uuid_option: Some(ks::read_req::options::UuidOption {
                    content: Some(ks::read_req::options::uuid_option::Content::String(
                        kc::Empty {},
                    )),
                }),
                control_option: None,
            }),
        };
        let mut streams = ks::streams_client::StreamsClient::new(ch.clone());
        let denied = streams
            .read(as_user(read_all(), Some(("alice", "alice-pw"))))
            .await
            .expect_err("alice may not read $all");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        assert_eq!(denied.message(), "Access Denied");
        assert_eq!(denied.metadata().get("exception").unwrap(), "access-denied");
        let anonymous = streams
            .read(as_user(read_all(), None))
            .await
            .expect_err("anonymous");
        assert_eq!(
            anonymous.code(),
            tonic::Code::Unauthenticated,
            "{anonymous:?}"
        );
        let bad = streams
            .read(as_user(read_all(), Some(("alice", "nope"))))
            .await
            .expect_err("bad password");
        assert_eq!(bad.code(), tonic::Code::Unauthenticated, "{bad:?}");
        assert!(streams.read(as_user(read_all(), Some(ADMIN))).await.is_ok());

        // Alice may not write $settings (a system stream): refused in-band in BatchAppend.
        let batch = ks::BatchAppendReq {
            correlation_id: Some(kc::Uuid {
                value: Some(kc::uuid::Value::String(uuid::Uuid::new_v4().to_string())),
            }),
            options: Some(ks::batch_append_req::Options {
                stream_identifier: Some(kc::StreamIdentifier {
                    stream_name: b"$settings".to_vec().into(),
                }),
                expected_stream_position: Some(
                    ks::batch_append_req::options::ExpectedStreamPosition::Any(()),
                ),
                deadline_option: None,
            }),
            proposed_messages: vec![ks::batch_append_req::ProposedMessage {
                id: Some(kc::Uuid {
                    value: Some(kc::uuid::Value::String(uuid::Uuid::new_v4().to_string())),
                }),
                metadata: [
                    ("type".to_owned(), "update-default-acl".to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ]
                .into(),
                custom_metadata: Default::default(),
                data: br#"{"$userStreamAcl": {"$r": "$all"}}"#.to_vec().into(),
            }],
            is_final: true,
        };
        let mut answers = streams
            .batch_append(as_user(
                futures::stream::iter(vec![batch.clone()]),
                Some(("alice", "alice-pw")),
            ))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(ks::batch_append_resp::Result::Error(e)) = answer.result else {
            panic!("{answer:?}")
        };
        assert_eq!(e.code, 7, "{e:?}");
        assert!(e
            .details
            .unwrap()
            .type_url
            .ends_with("event_store.client.AccessDenied"));
        // The admin may.
        let mut answers = streams
            .batch_append(as_user(futures::stream::iter(vec![batch]), Some(ADMIN)))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        assert!(
            matches!(
                answer.result,
                Some(ks::batch_append_resp::Result::Success(_))
            ),
            "{answer:?}"
        );

        // Probes and discovery need no credentials.
        use strata_kurrentdb_proto::event_store::client::{gossip, server_features};
        assert!(gossip::gossip_client::GossipClient::new(ch.clone())
            .read(as_user(kc::Empty {}, None))
            .await
            .is_ok());
        assert!(
            server_features::server_features_client::ServerFeaturesClient::new(ch.clone())
                .get_supported_methods(as_user(kc::Empty {}, None))
                .await
                .is_ok()
        );
    });
    let health = server.cli_secure(&certs, &["health"]);
    assert!(health.status.success(), "{health:?}");
}

/// Defaults in `$settings` apply at once; a user allowed to read `$all` (here through the
/// system-stream default) still never sees events of streams they may not read, nor accounts.
#[test]
fn settings_defaults_apply_and_all_reads_leave_out_unreadable_streams() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(
        dir.path(),
        &certs,
        &["--durability", "no-sync", "--derived-streams"],
    );
    rt().block_on(async {
        let ch = kurrent_channel(&server, &certs).await;
        create_user(&ch, "bob", "bob-pw", &["auditors"]).await;
        let admin = server.client_as(&certs, Some(ADMIN)).await.unwrap();
        admin.append("open-1", Exp::Any, ev()).await.unwrap();
        admin.append("secret-1", Exp::Any, ev()).await.unwrap();
        let meta = StreamMetadata {
            custom: serde_json::json!({"$acl": {"$r": "alice"}}),
            ..Default::default()
        };
        admin.set_stream_metadata("secret-1", Exp::Any, meta).await.unwrap();
        let bob = server.client_as(&certs, Some(("bob", "bob-pw"))).await.unwrap();
        assert!(matches!(
            bob.read_all(ReadOptions::default()).await.map(|_| ()),
            Err(Error::AccessDenied { .. })
        ));
        // A malformed default is refused.
        let bad = kurrent_append(&ch, "$settings", "update-default-acl", br#"{"$systemStreamAcl": {"$r": 5}}"#, ADMIN).await;
        assert!(matches!(bad.result, Some(ks::batch_append_resp::Result::Error(_))), "{bad:?}");
        let ok = kurrent_append(
            &ch,
            "$settings",
            "update-default-acl",
            br#"{"$systemStreamAcl": {"$r": ["$admins", "auditors"]}, "$userStreamAcl": {"$r": "$all", "$w": "$admins"}}"#,
            ADMIN,
        )
        .await;
        assert!(matches!(ok.result, Some(ks::batch_append_resp::Result::Success(_))), "{ok:?}");
        // User streams: now only admins write.
        assert!(matches!(
            bob.append("open-2", Exp::Any, ev()).await,
            Err(Error::AccessDenied { .. })
        ));
        let streams: std::collections::BTreeSet<String> = bob
            .read_all(ReadOptions::default())
            .await
            .unwrap()
            .map_ok(|e| e.stream)
            .try_collect()
            .await
            .unwrap();
        assert!(streams.contains("open-1"), "{streams:?}");
        assert!(!streams.contains("secret-1"), "{streams:?}");
        // Derived streams are system streams, which bob may now read; an entry of a stream he
        // may not read shows only where it is, and index filters leave such events out.
        let listed = |stream: &'static str| {
            let bob = bob.clone();
            async move {
                bob.read_stream(stream, ReadOptions::default())
                    .await
                    .unwrap()
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap()
            }
        };
        let secret = listed("$ce-secret").await;
        assert_eq!(secret.len(), 1);
        assert!(secret[0].listed_in.as_ref().unwrap().unresolved, "{secret:?}");
        assert!(secret[0].data.is_empty() && secret[0].event_type.is_empty());
        let open = listed("$ce-open").await;
        assert!(!open[0].listed_in.as_ref().unwrap().unresolved, "{open:?}");
        let by_index: Vec<_> = bob
            .read_all(ReadOptions::default().filter(strata_client::Filter::indexed(
                ["secret", "open"],
                Vec::<String>::new(),
            )))
            .await
            .unwrap()
            .map_ok(|e| e.stream)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(by_index, ["open-1"]);
        assert!(!streams.iter().any(|s| s.starts_with("$user")), "{streams:?}");
        let all: std::collections::BTreeSet<String> = admin
            .read_all(ReadOptions::default())
            .await
            .unwrap()
            .map_ok(|e| e.stream)
            .try_collect()
            .await
            .unwrap();
        assert!(all.contains("secret-1") && all.contains("$user-bob"), "{all:?}");
    });
}
