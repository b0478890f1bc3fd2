//! Keeping a node's accounts in step with the log. On a single node every change goes through
//! [`Users`] itself; on a cluster another node (the leader) may write them, and every node
//! learns them from its committed log: [`Users::follow`] reads the account streams' new
//! events as they commit and applies them, each only if it is newer (by the account stream's
//! revision) than what the node holds.

use std::sync::Arc;
use std::time::Duration;

use strata_engine::{AllFrom, Direction, EventFilter, FilterOn};

use crate::users::{UserRecord, Users, RECORD, RECORD_DELETED, USER_STREAM_PREFIX};

/// Records examined per read while following.
const FOLLOW_SCAN: usize = 100_000;

impl Users {
    /// Records `record` (or the account's deletion, `None`) as the state at `revision` of the
    /// account's stream, unless a later revision is already held. Returns whether it applied.
    pub(crate) fn note(&self, login: &str, revision: u64, record: Option<UserRecord>) -> bool {
        let mut accounts = self.accounts.write().expect("accounts lock");
        if accounts
            .revisions
            .get(login)
            .is_some_and(|r| *r >= revision)
        {
            return false;
        }
        accounts.revisions.insert(login.to_owned(), revision);
        match record {
            // An unchanged record keeps its identity, and so the credential cache's entries.
            Some(r) if accounts.records.get(login).is_some_and(|old| **old == r) => {}
            Some(r) => {
                accounts.records.insert(login.to_owned(), Arc::new(r));
            }
            None => {
                accounts.records.remove(login);
            }
        }
        true
    }

    /// Applies one committed event of an account stream (`$user-<login>`). An unreadable
    /// record is logged and leaves the account as it was.
    pub fn apply_event(&self, stream: &str, revision: u64, event_type: &str, data: &[u8]) {
        let Some(login) = stream.strip_prefix(USER_STREAM_PREFIX) else {
            return;
        };
        match event_type {
            RECORD => match serde_json::from_slice::<UserRecord>(data) {
                Ok(r) if r.login_name == login => {
                    self.note(login, revision, Some(r));
                }
                _ => tracing::error!(%stream, revision,
                    "an account record from the log cannot be read; the account stays as it was"),
            },
            RECORD_DELETED => {
                self.note(login, revision, None);
            }
            _ => {}
        }
    }

    /// Follows the committed log from where [`Users::load`] stopped, applying every account
    /// change, until the store closes. Needs a tokio runtime.
    pub fn follow(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let users = Arc::downgrade(self);
        let mut from = self.loaded_end;
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let filter = EventFilter::prefixes(FilterOn::StreamName, [USER_STREAM_PREFIX])
                .expect("a valid prefix");
            let Some(mut end) = engine.upgrade().map(|e| e.watch_log_end()) else {
                return;
            };
            loop {
                let (Some(engine), Some(users)) = (engine.upgrade(), users.upgrade()) else {
                    return;
                };
                let read = engine.read_all_scan(
                    AllFrom::Position(from),
                    Direction::Forwards,
                    1000,
                    Some(&filter),
                    FOLLOW_SCAN,
                );
                drop(engine);
                match read {
                    Ok(slice) => {
                        for e in &slice.events {
                            users.apply_event(&e.stream, e.revision, &e.event_type, &e.data);
                        }
                        from = slice.next_position;
                        if !slice.is_end {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "following account changes in the log; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
                drop(users);
                if end.wait_for(|e| *e > from).await.is_err() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::{Config, Engine};

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen within 5 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_learns_every_account_change_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(Config::new(dir.path())).unwrap());
        // The writer (a leader) and a node that only follows the log.
        let writer = Users::load(engine.clone()).unwrap();
        writer
            .create("early", "Early", vec![], "password-1")
            .await
            .unwrap();
        let follower = Arc::new(Users::load(engine.clone()).unwrap());
        assert!(follower.get("early").is_some(), "loaded from the log");
        let _task = follower.follow();

        writer
            .create("alice", "Alice", vec!["$ops".into()], "password-1")
            .await
            .unwrap();
        eventually("alice's creation", || follower.get("alice").is_some()).await;
        let before = follower.get("alice").unwrap();
        writer.reset_password("alice", "password-2").await.unwrap();
        eventually("alice's new password", || {
            follower.get("alice").unwrap().password_hash != before.password_hash
        })
        .await;
        writer.set_disabled("early", true).await.unwrap();
        eventually("early's disabling", || {
            follower.get("early").unwrap().disabled
        })
        .await;
        writer.delete("alice").await.unwrap();
        eventually("alice's deletion", || follower.get("alice").is_none()).await;

        // An older state never replaces a newer one, and an unchanged record keeps its
        // identity (the credential cache depends on it).
        let early = follower.get("early").unwrap();
        let mut old = (*early).clone();
        old.disabled = false;
        assert!(!follower.note("early", 0, Some(old)));
        assert!(follower.get("early").unwrap().disabled);
        let rev = *follower
            .accounts
            .read()
            .unwrap()
            .revisions
            .get("early")
            .unwrap();
        assert!(follower.note("early", rev + 1, Some((*early).clone())));
        assert!(Arc::ptr_eq(&follower.get("early").unwrap(), &early));
    }
}
