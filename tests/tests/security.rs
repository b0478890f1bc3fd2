//! The security model against the real binary, with certificates made by `strata certs dev`:
//! the start-up rule, TLS, authentication (passwords and client certificates), access control
//! per role and operation on both APIs, user management, and brute-force limits.

use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use strata_client::{
    Client, Error, EventData, ExpectedRevision as Exp, GroupSettings, ReadOptions, StreamMetadata,
    SubscribeFrom,
};
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks, users as ku};
use strata_tests::{dev_certs, rt, tls_flags, Server};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

fn secure(dir: &Path, certs: &Path, extra: &[&str]) -> Server {
    let mut args: Vec<String> = tls_flags(certs);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&dir.join("data"), &args)
}

async fn kurrent_channel(server: &Server, certs: &Path) -> Channel {
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    Endpoint::from_shared(server.https_url())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A request with Basic credentials, as KurrentDB clients send them.
fn as_user<T>(msg: T, user: Option<(&str, &str)>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some((u, p)) = user {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        r.metadata_mut()
            .insert("authorization", format!("Basic {token}").parse().unwrap());
    }
    r
}

const ADMIN: (&str, &str) = ("admin", "changeit");

async fn create_user(ch: &Channel, login: &str, password: &str, groups: &[&str]) {
    ku::users_client::UsersClient::new(ch.clone())
        .create(as_user(
            ku::CreateReq {
                options: Some(ku::create_req::Options {
                    login_name: login.into(),
                    password: password.into(),
                    full_name: format!("{login} tester"),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();
}

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

fn ev() -> Vec<EventData> {
    vec![EventData::json("Tested", &serde_json::json!({"x": 1})).unwrap()]
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

/// Users: created, listed, disabled and enabled, passwords changed and reset, deleted; every
/// change applies to the next call, and only admins manage them. Their streams cannot be
/// written directly.
#[test]
fn users_are_managed_by_admins_and_changes_apply_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["alice"]);
    let mut server = secure(dir.path(), &certs, &["--durability", "no-sync"]);
    rt().block_on(async {
        let ch = kurrent_channel(&server, &certs).await;
        let mut users = ku::users_client::UsersClient::new(ch.clone());
        create_user(&ch, "alice", "a1", &["readers"]).await;
        let dup = users
            .create(as_user(
                ku::CreateReq {
                    options: Some(ku::create_req::Options {
                        login_name: "alice".into(),
                        password: "x".into(),
                        ..Default::default()
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .expect_err("exists");
        assert_eq!(dup.code(), tonic::Code::AlreadyExists);
        // Alice may not create users, but may read her own details.
        let refused = users
            .create(as_user(
                ku::CreateReq {
                    options: Some(ku::create_req::Options {
                        login_name: "mallory".into(),
                        password: "x".into(),
                        ..Default::default()
                    }),
                },
                Some(("alice", "a1")),
            ))
            .await
            .expect_err("not an admin");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let details = |login: &str, who: (&'static str, &'static str)| {
            let mut users = users.clone();
            let login = login.to_owned();
            async move {
                let mut s = users
                    .details(as_user(
                        ku::DetailsReq {
                            options: Some(ku::details_req::Options { login_name: login }),
                        },
                        Some(who),
                    ))
                    .await?
                    .into_inner();
                let mut all = Vec::new();
                while let Some(d) = s.message().await? {
                    all.push(d.user_details.unwrap());
                }
                Ok::<_, tonic::Status>(all)
            }
        };
        let mine = details("alice", ("alice", "a1")).await.unwrap();
        assert_eq!(mine[0].groups, ["readers"]);
        assert!(details("", ("alice", "a1")).await.is_err());
        let all: Vec<_> = details("", ADMIN)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.login_name)
            .collect();
        assert_eq!(all, ["admin", "alice", "ops"]);

        // A change of password applies to the very next call, cached credentials or not
        // (a call already open, such as an append session, keeps the access it opened with).
        let unary = |password: &'static str| {
            strata_client::Client::builder(server.https_url())
                .tls_ca_file(certs.join("ca.pem"))
                .unwrap()
                .credentials("alice", password)
                .append_sessions(false)
                .connect()
        };
        let alice = unary("a1").await.unwrap();
        alice.append("a-stream", Exp::Any, ev()).await.unwrap();
        users
            .change_password(as_user(
                ku::ChangePasswordReq {
                    options: Some(ku::change_password_req::Options {
                        login_name: "alice".into(),
                        current_password: "a1".into(),
                        new_password: "a2".into(),
                    }),
                },
                Some(("alice", "a1")),
            ))
            .await
            .unwrap();
        assert!(matches!(
            alice.append("a-stream", Exp::Any, ev()).await,
            Err(Error::Unauthenticated(_))
        ));
        let alice = unary("a2").await.unwrap();
        alice.append("a-stream", Exp::Any, ev()).await.unwrap();

        // Her client certificate logs her in too; disabled, neither does.
        let cert_login = strata_client::Client::builder(server.https_url())
            .tls_ca_file(certs.join("ca.pem"))
            .unwrap()
            .tls_identity_pem(
                std::fs::read(certs.join("alice.pem")).unwrap(),
                std::fs::read(certs.join("alice.key")).unwrap(),
            )
            .append_sessions(false)
            .connect()
            .await
            .unwrap();
        cert_login.append("a-stream", Exp::Any, ev()).await.unwrap();
        users
            .disable(as_user(
                ku::DisableReq {
                    options: Some(ku::disable_req::Options {
                        login_name: "alice".into(),
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
        for c in [&alice, &cert_login] {
            assert!(matches!(
                c.append("a-stream", Exp::Any, ev()).await,
                Err(Error::Unauthenticated(_))
            ));
        }
        users
            .enable(as_user(
                ku::EnableReq {
                    options: Some(ku::enable_req::Options {
                        login_name: "alice".into(),
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
        alice.append("a-stream", Exp::Any, ev()).await.unwrap();

        // Accounts are not written directly, not even by an admin.
        let mut streams = ks::streams_client::StreamsClient::new(ch.clone());
        let forged = ks::BatchAppendReq {
            correlation_id: Some(kc::Uuid {
                value: Some(kc::uuid::Value::String(uuid::Uuid::new_v4().to_string())),
            }),
            options: Some(ks::batch_append_req::Options {
                stream_identifier: Some(kc::StreamIdentifier {
                    stream_name: b"$user-alice".to_vec().into(),
                }),
                expected_stream_position: Some(
                    ks::batch_append_req::options::ExpectedStreamPosition::Any(()),
                ),
                deadline_option: None,
            }),
            proposed_messages: vec![ks::batch_append_req::ProposedMessage {
                id: None,
                metadata: [
                    ("type".to_owned(), "$user".to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ]
                .into(),
                custom_metadata: Default::default(),
                data: br#"{}"#.to_vec().into(),
            }],
            is_final: true,
        };
        let answer = streams
            .batch_append(as_user(futures::stream::iter(vec![forged]), Some(ADMIN)))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(answer.result, Some(ks::batch_append_resp::Result::Error(_))),
            "{answer:?}"
        );

        users
            .reset_password(as_user(
                ku::ResetPasswordReq {
                    options: Some(ku::reset_password_req::Options {
                        login_name: "alice".into(),
                        new_password: "a3".into(),
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
    });
    // Accounts live in the log: after a restart, the last password is the one that works.
    assert!(server.terminate().success());
    server.restart();
    rt().block_on(async {
        let alice = strata_client::Client::builder(server.https_url())
            .tls_ca_file(certs.join("ca.pem"))
            .unwrap()
            .credentials("alice", "a3")
            .append_sessions(false)
            .connect()
            .await
            .unwrap();
        alice.append("a-stream", Exp::Any, ev()).await.unwrap();
        let ch = kurrent_channel(&server, &certs).await;
        ku::users_client::UsersClient::new(ch)
            .delete(as_user(
                ku::DeleteReq {
                    options: Some(ku::delete_req::Options {
                        login_name: "alice".into(),
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
        assert!(matches!(
            alice.append("a-stream", Exp::Any, ev()).await,
            Err(Error::Unauthenticated(_))
        ));
    });
}

/// Beyond loopback: the server refuses to start without TLS unless told `--insecure` (and then
/// warns); a secure server refuses the default password until another is set.
#[test]
fn exposure_beyond_loopback_takes_tls_or_an_explicit_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = Server::refused(&dir.path().join("a"), &["--metrics-listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("--tls-cert") && log.contains("--insecure"),
        "{log}"
    );

    let mut open = Server::start_on(&dir.path().join("b"), "0.0.0.0:0", &["--insecure"]);
    assert!(
        open.logs().contains("INSECURE MODE beyond loopback"),
        "{}",
        open.logs()
    );
    assert!(open.terminate().success());

    let certs = dev_certs(dir.path(), &[]);
    let mut args = tls_flags(&certs);
    let flags: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_on(&dir.path().join("c"), "0.0.0.0:0", &flags);
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    rt().block_on(async {
        let connect = |user: (&'static str, &'static str)| {
            let url = url.clone();
            let ca = certs.join("ca.pem");
            async move {
                strata_client::Client::builder(url)
                    .tls_ca_file(ca)
                    .unwrap()
                    .credentials(user.0, user.1)
                    .connect()
                    .await
                    .unwrap()
            }
        };
        let admin = connect(ADMIN).await;
        match admin.append("s", Exp::Any, ev()).await {
            Err(Error::Unauthenticated(m)) => assert!(m.contains("default password"), "{m}"),
            other => panic!("the default password was accepted beyond loopback: {other:?}"),
        }
    });
    drop(server);
    // Given an initial password, admin logs in with it (and never had the default).
    args.extend([
        "--initial-admin-password".to_owned(),
        "s3cret-admin".to_owned(),
    ]);
    let flags: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_on(&dir.path().join("d"), "0.0.0.0:0", &flags);
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    rt().block_on(async {
        let c = strata_client::Client::builder(url)
            .tls_ca_file(certs.join("ca.pem"))
            .unwrap()
            .credentials("admin", "s3cret-admin")
            .connect()
            .await
            .unwrap();
        c.append("s", Exp::Any, ev()).await.unwrap();
    });
}

/// Repeated bad passwords from one address are refused without a check after five, logged
/// with the user and address but never the password.
#[test]
fn brute_force_is_slowed_and_logged_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--durability", "no-sync"]);
    rt().block_on(async {
        for i in 0..8 {
            let guess = format!("guess-number-{i}");
            let c = server
                .client_as(&certs, Some(("admin", guess.as_str())))
                .await
                .unwrap();
            let err = c
                .read_all(ReadOptions::default())
                .await
                .map(|_| ())
                .unwrap_err();
            let Error::Unauthenticated(m) = err else {
                panic!("{err:?}")
            };
            if i >= 5 {
                assert!(m.contains("too many failed logins"), "attempt {i}: {m}");
            }
        }
        // The right password is refused too while the address is locked out.
        let c = server.client_as(&certs, Some(ADMIN)).await.unwrap();
        assert!(matches!(
            c.read_all(ReadOptions::default()).await.map(|_| ()),
            Err(Error::Unauthenticated(_))
        ));
    });
    std::thread::sleep(Duration::from_millis(200));
    let logs = server.logs();
    assert!(logs.contains("failed login"), "{logs}");
    assert!(!logs.contains("guess-number"), "a password reached the log");
}

/// The official KurrentDB Python client over TLS with credentials: everything an admin does,
/// and its AccessDeniedError / UnauthenticatedError for what others may not do.
#[test]
fn the_python_client_works_over_tls_and_maps_denials() {
    let py = strata_tests::python_venv(
        "kurrentdb-venv",
        "kurrentdbclient==1.3.5",
        "kurrentdbclient",
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--durability", "no-sync"]);
    rt().block_on(async {
        let ch = kurrent_channel(&server, &certs).await;
        create_user(&ch, "alice", "alice-pw", &[]).await;
        let admin = server.client_as(&certs, Some(ADMIN)).await.unwrap();
        admin.append("private", Exp::Any, ev()).await.unwrap();
        let meta = StreamMetadata {
            custom: serde_json::json!({"$acl": {"$r": "bob", "$w": "bob"}}),
            ..Default::default()
        };
        admin
            .set_stream_metadata("private", Exp::Any, meta)
            .await
            .unwrap();
    });
    let url = |user: &str, password: &str| {
        format!(
            "kurrentdb://{user}:{password}@127.0.0.1:{}?tls=true&tlsCaFile={}",
            server.addr.port(),
            certs.join("ca.pem").display()
        )
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/kurrentdb_secure.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(url("admin", "changeit"))
        .arg(url("alice", "alice-pw"))
        .arg(url("alice", "wrong"))
        .arg("private")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("compat secure: 6 passed, 0 failed"),
        "stdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
}

async fn kurrent_append(
    ch: &Channel,
    stream: &str,
    event_type: &str,
    data: &[u8],
    user: (&str, &str),
) -> ks::BatchAppendResp {
    let batch = ks::BatchAppendReq {
        correlation_id: Some(kc::Uuid {
            value: Some(kc::uuid::Value::String(uuid::Uuid::new_v4().to_string())),
        }),
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
            id: Some(kc::Uuid {
                value: Some(kc::uuid::Value::String(uuid::Uuid::new_v4().to_string())),
            }),
            metadata: [
                ("type".to_owned(), event_type.to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
            .into(),
            custom_metadata: Default::default(),
            data: data.to_vec().into(),
        }],
        is_final: true,
    };
    ks::streams_client::StreamsClient::new(ch.clone())
        .batch_append(as_user(futures::stream::iter(vec![batch]), Some(user)))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
}

/// Defaults in `$settings` apply at once; a user allowed to read `$all` (here through the
/// system-stream default) still never sees events of streams they may not read, nor accounts.
#[test]
fn settings_defaults_apply_and_all_reads_leave_out_unreadable_streams() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--durability", "no-sync"]);
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

/// A client that connects to the TLS port and never finishes its handshake (silent, or a few
/// bytes of one) is closed after the handshake timeout and holds nothing afterwards.
#[test]
fn stalled_tls_handshakes_are_closed_after_the_handshake_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--handshake-timeout", "1s"]);
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    let mut partial = std::net::TcpStream::connect(server.addr).unwrap();
    // The first bytes of a TLS ClientHello record, then nothing.
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the server answered a stalled handshake");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a stalled handshake was kept {:?}",
            started.elapsed()
        );
    }
    // The server still serves.
    rt().block_on(async {
        let c = server.client_as(&certs, Some(ADMIN)).await.unwrap();
        c.append("after", Exp::Any, ev()).await.unwrap();
    });
}

/// Strata's own `Users` service and the client's methods, with typed errors.
#[test]
fn strata_api_manages_users_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--durability", "no-sync"]);
    rt().block_on(async {
        let admin = server.client_as(&certs, Some(ADMIN)).await.unwrap();
        admin
            .create_user("dave", "d1", "Dave", &["readers"])
            .await
            .unwrap();
        assert!(matches!(
            admin.create_user("dave", "d1", "", &[]).await,
            Err(Error::UserExists(l)) if l == "dave"
        ));
        assert!(matches!(
            admin.get_user("nobody").await,
            Err(Error::UserNotFound(_))
        ));
        assert!(matches!(
            admin.create_user("bad:name", "x", "", &[]).await,
            Err(Error::InvalidArgument { .. })
        ));
        let logins: Vec<_> = admin
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.login)
            .collect();
        assert_eq!(logins, ["admin", "dave", "ops"]);
        admin
            .update_user("dave", "David", &["readers", "writers"], None)
            .await
            .unwrap();
        let dave = server
            .client_as(&certs, Some(("dave", "d1")))
            .await
            .unwrap();
        let me = dave.get_user("dave").await.unwrap();
        assert_eq!((me.full_name.as_str(), me.groups.len()), ("David", 2));
        assert!(matches!(
            dave.get_user("admin").await,
            Err(Error::AccessDenied { .. })
        ));
        assert!(matches!(
            dave.list_users().await,
            Err(Error::AccessDenied { .. })
        ));
        assert!(matches!(
            dave.change_password("dave", "wrong", "d2").await,
            Err(Error::AccessDenied { .. })
        ));
        dave.change_password("dave", "d1", "d2").await.unwrap();
        admin.set_user_enabled("dave", false).await.unwrap();
        assert!(admin.get_user("dave").await.unwrap().disabled);
        admin.reset_password("dave", "d3").await.unwrap();
        admin.set_user_enabled("dave", true).await.unwrap();
        let dave = server
            .client_as(&certs, Some(("dave", "d3")))
            .await
            .unwrap();
        assert_eq!(dave.get_user("dave").await.unwrap().login, "dave");
        admin.delete_user("dave").await.unwrap();
        assert!(matches!(
            admin.delete_user("dave").await,
            Err(Error::UserNotFound(_))
        ));
    });
}
