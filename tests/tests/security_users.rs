//! Users of a secure server: their lifecycle through KurrentDB's and Strata's `Users`
//! services, client-certificate logins, and the limits on guessing passwords.

use std::time::Duration;

use strata_client::{Error, ExpectedRevision as Exp, ReadOptions};
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks, users as ku};
use strata_tests::secure::{as_user, create_user, ev, kurrent_channel, secure, ADMIN};
use strata_tests::{dev_certs, rt};

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
