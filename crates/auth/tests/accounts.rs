//! Accounts stored in a real engine: created, checked, changed, reloaded from the log.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use strata_auth::{AuthFailure, Authenticator, Users};
use strata_engine::{Config, Engine};

fn open(dir: &std::path::Path) -> Arc<Engine> {
    Arc::new(Engine::open(Config::new(dir)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_live_in_the_log_and_credentials_follow_changes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let users = Arc::new(Users::load(engine.clone()).unwrap());
    users
        .ensure_initial(None, Some("opspw".into()))
        .await
        .unwrap();
    let admin = users.get("admin").unwrap();
    assert!(admin.default_password && admin.groups == ["$admins"]);
    assert!(!users.get("ops").unwrap().default_password);

    let client = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let open_auth = Authenticator::new(users.clone(), true);
    let p = open_auth
        .authenticate(client, "admin", "changeit")
        .await
        .unwrap();
    assert!(p.is_admin());
    // Beyond loopback the default password is refused, other passwords are not.
    let strict = Authenticator::new(users.clone(), false);
    assert_eq!(
        strict.authenticate(client, "admin", "changeit").await,
        Err(AuthFailure::DefaultPassword {
            login: "admin".into()
        })
    );
    assert!(strict
        .authenticate(client, "ops", "opspw")
        .await
        .unwrap()
        .is_operator());

    users
        .create("alice", "Alice", vec!["readers".into()], "s3cret")
        .await
        .unwrap();
    assert!(users.create("alice", "", vec![], "x").await.is_err());
    assert!(users.create("bad:name", "", vec![], "x").await.is_err());
    assert!(users.create("$admins", "", vec![], "x").await.is_err());
    assert!(open_auth
        .authenticate(client, "alice", "s3cret")
        .await
        .is_ok());
    // A change is seen at once, cached credential or not.
    users.set_disabled("alice", true).await.unwrap();
    assert_eq!(
        open_auth.authenticate(client, "alice", "s3cret").await,
        Err(AuthFailure::BadCredentials)
    );
    users.set_disabled("alice", false).await.unwrap();
    open_auth
        .change_password(client, "alice", "s3cret", "n3w")
        .await
        .unwrap();
    assert!(open_auth
        .change_password(client, "alice", "wrong", "x")
        .await
        .is_err());
    let other = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(
        open_auth.authenticate(other, "alice", "s3cret").await,
        Err(AuthFailure::BadCredentials)
    );
    assert!(open_auth.authenticate(other, "alice", "n3w").await.is_ok());

    // Brute force from one address: refused without a check after five failures, while
    // credentials already proved from there keep working.
    for _ in 0..4 {
        assert_eq!(
            open_auth.authenticate(other, "alice", "guess").await,
            Err(AuthFailure::BadCredentials)
        );
    }
    assert!(matches!(
        open_auth.authenticate(other, "alice", "guess").await,
        Err(AuthFailure::TooManyFailures { .. })
    ));
    assert!(open_auth.authenticate(other, "alice", "n3w").await.is_ok());
    // A credential proved only from another address is not let through the lock-out: the
    // locked address cannot test passwords against the cache.
    assert!(open_auth.authenticate(client, "ops", "opspw").await.is_ok());
    assert!(matches!(
        open_auth.authenticate(other, "ops", "opspw").await,
        Err(AuthFailure::TooManyFailures { .. })
    ));
    assert!(matches!(
        open_auth.authenticate(other, "nobody", "x").await,
        Err(AuthFailure::TooManyFailures { .. })
    ));

    users.delete("ops").await.unwrap();
    let listed: Vec<_> = users.list().iter().map(|r| r.login_name.clone()).collect();
    assert_eq!(listed, ["admin", "alice"]);

    // Everything came from the log.
    drop((open_auth, strict, users));
    let engine = Arc::try_unwrap(engine).ok().unwrap();
    engine.close().unwrap();
    let engine = open(dir.path());
    let users = Arc::new(Users::load(engine.clone()).unwrap());
    let listed: Vec<_> = users.list().iter().map(|r| r.login_name.clone()).collect();
    assert_eq!(listed, ["admin", "alice"]);
    // Initial users are not created again, and a configured password replaces a default one.
    users
        .ensure_initial(Some("adminpw".into()), None)
        .await
        .unwrap();
    assert!(users.get("ops").is_none());
    let strict = Authenticator::new(users.clone(), false);
    assert!(strict
        .authenticate(client, "admin", "adminpw")
        .await
        .unwrap()
        .is_admin());
}

/// A node with no accounts at all (a cluster node before the leader's initial accounts reach
/// it) asks callers to retry, and does not count that against their address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accounts_yet_is_retryable_and_not_a_failed_login() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let users = Arc::new(Users::load(engine.clone()).unwrap());
    let auth = Authenticator::new(users.clone(), true);
    let client = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    for _ in 0..50 {
        assert_eq!(
            auth.authenticate(client, "admin", "changeit").await,
            Err(AuthFailure::NoAccounts)
        );
    }
    users.ensure_initial(None, None).await.unwrap();
    assert!(auth.authenticate(client, "admin", "changeit").await.is_ok());
}

/// The initial accounts are created one by one, each if its stream was never written: a
/// creation cut short (the list entry written, the record not: a cluster leader deposed
/// midway) is completed by the next start, and a deleted initial account stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_accounts_complete_a_creation_cut_short_and_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    engine
        .append_system(
            "$users",
            strata_engine::ExpectedRevision::Any,
            vec![strata_engine::EventData::json(
                "$UserCreated",
                br#"{"loginName":"admin"}"#.to_vec(),
            )],
        )
        .await
        .unwrap();
    let users = Arc::new(Users::load(engine.clone()).unwrap());
    assert!(users.get("admin").is_none());
    users.ensure_initial(None, None).await.unwrap();
    assert!(users.get("admin").is_some() && users.get("ops").is_some());

    users.delete("ops").await.unwrap();
    let users = Arc::new(Users::load(engine.clone()).unwrap());
    users.ensure_initial(None, None).await.unwrap();
    assert!(
        users.get("ops").is_none(),
        "a deleted initial account came back"
    );
    assert!(users.get("admin").is_some());
}
