//! User accounts, kept in the log (`$users`, `$user-<login>`) and in memory.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, Weak};

use serde::{Deserialize, Serialize};
use strata_engine::{Direction, Engine, EventData, ExpectedRevision, StreamFrom};

use crate::error::{Error, Result};
use crate::password;
use crate::{ADMINS, OPS};

/// The list of accounts: `$UserCreated` / `$UserDeleted` events.
pub const USERS_STREAM: &str = "$users";
/// Prefix of each account's stream.
pub const USER_STREAM_PREFIX: &str = "$user-";
const CREATED: &str = "$UserCreated";
const DELETED: &str = "$UserDeleted";
pub(crate) const RECORD: &str = "$user";
pub(crate) const RECORD_DELETED: &str = "$userDeleted";
/// KurrentDB's default password for the initial users.
pub const DEFAULT_PASSWORD: &str = "changeit";
const MAX_LOGIN: usize = 128;
const MAX_PASSWORD: usize = 1024;

/// Whether clients must be kept from writing `stream` directly: the accounts change only
/// through the user-management calls, which check what they write.
pub fn is_user_stream(stream: &str) -> bool {
    stream == USERS_STREAM || stream.starts_with(USER_STREAM_PREFIX)
}

/// One account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub login_name: String,
    pub full_name: String,
    pub groups: Vec<String>,
    /// argon2id, PHC string.
    pub password_hash: String,
    pub disabled: bool,
    /// The account still has the default password it was created with.
    #[serde(default)]
    pub default_password: bool,
    /// Nanoseconds since the Unix epoch.
    pub last_updated_ns: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListEntry {
    login_name: String,
}

/// The accounts in memory, with the revision of each account's stream they reflect (so an
/// older event never replaces a newer record, whichever path brings it).
#[derive(Default)]
pub(crate) struct Accounts {
    pub(crate) records: HashMap<String, Arc<UserRecord>>,
    pub(crate) revisions: HashMap<String, u64>,
}

/// Every account of one store.
pub struct Users {
    /// Not kept alive by the accounts: the store closes when its owner lets go of it.
    pub(crate) engine: Weak<Engine>,
    /// Password hashing and checking, shared with the [`crate::Authenticator`]: at most
    /// [`crate::authenticate::KDF_SLOTS`] at once.
    kdf: Arc<tokio::sync::Semaphore>,
    pub(crate) accounts: RwLock<Accounts>,
    /// The log end when the accounts were loaded: [`Users::follow`] reads on from there.
    pub(crate) loaded_end: u64,
    /// Changes are made one at a time.
    writes: tokio::sync::Mutex<()>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Checks a login name: it becomes part of a stream name and of Basic credentials.
pub fn validate_login(login: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidArgument {
            field: "login name",
            reason: format!("{login:?} {reason}"),
        })
    };
    if login.is_empty() {
        return bad("is empty");
    }
    if login.len() > MAX_LOGIN {
        return bad(&format!("is longer than {MAX_LOGIN} bytes"));
    }
    if login.chars().any(|c| c.is_control() || c == ':') {
        return bad("holds a control character or ':' (which Basic credentials cannot carry)");
    }
    if login.trim() != login {
        return bad("starts or ends with white space");
    }
    if login.starts_with('$') {
        return bad("starts with '$', which is kept for groups such as $admins");
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::InvalidArgument {
            field: "password",
            reason: "is empty".into(),
        });
    }
    if password.len() > MAX_PASSWORD {
        return Err(Error::InvalidArgument {
            field: "password",
            reason: format!("is longer than {MAX_PASSWORD} bytes"),
        });
    }
    Ok(())
}

fn validate_groups(groups: &[String]) -> Result<()> {
    if groups.len() > 64 {
        return Err(Error::InvalidArgument {
            field: "groups",
            reason: format!("{} groups; at most 64", groups.len()),
        });
    }
    for g in groups {
        if g.is_empty() || g.len() > MAX_LOGIN || g.chars().any(char::is_control) {
            return Err(Error::InvalidArgument {
                field: "groups",
                reason: format!(
                    "{g:?} is not a group name (1 to {MAX_LOGIN} bytes, no control characters)"
                ),
            });
        }
    }
    Ok(())
}

async fn hash(kdf: &Arc<tokio::sync::Semaphore>, password: String) -> String {
    let slot = kdf.clone().acquire_owned().await.expect("never closed");
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        password::hash(&password)
    })
    .await
    .expect("hashing does not panic")
}

fn json_event(event_type: &str, value: &impl Serialize) -> EventData {
    EventData::json(
        event_type,
        serde_json::to_vec(value).expect("records serialise"),
    )
}

impl Users {
    /// Loads every account from the log. A record that cannot be read is logged and skipped
    /// (that account cannot log in) rather than keeping the server from starting.
    pub fn load(engine: Arc<Engine>) -> Result<Users> {
        let loaded_end = engine.log_end();
        let mut logins = BTreeSet::new();
        let mut from = 0u64;
        loop {
            let slice = match engine.read_stream_raw(
                USERS_STREAM,
                StreamFrom::Revision(from),
                Direction::Forwards,
                1000,
            ) {
                Ok(s) => s,
                Err(strata_engine::Error::StreamNotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            for e in &slice.events {
                let Ok(entry) = serde_json::from_slice::<ListEntry>(&e.data) else {
                    tracing::error!(
                        revision = e.revision,
                        "an event of {USERS_STREAM} cannot be read; skipped"
                    );
                    continue;
                };
                match e.event_type.as_str() {
                    CREATED => logins.insert(entry.login_name),
                    DELETED => logins.remove(&entry.login_name),
                    _ => continue,
                };
            }
            match slice.next_revision {
                Some(n) if !slice.events.is_empty() => from = n,
                _ => break,
            }
        }
        let mut accounts = Accounts::default();
        for login in logins {
            let stream = format!("{USER_STREAM_PREFIX}{login}");
            let last =
                match engine.read_stream_raw(&stream, StreamFrom::End, Direction::Backwards, 1) {
                    Ok(s) => s.events.into_iter().next(),
                    Err(strata_engine::Error::StreamNotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
            let Some(e) = last else { continue };
            accounts.revisions.insert(login.clone(), e.revision);
            if e.event_type != RECORD {
                continue;
            }
            match serde_json::from_slice::<UserRecord>(&e.data) {
                Ok(r) if r.login_name == login => {
                    accounts.records.insert(login, Arc::new(r));
                }
                Ok(_) | Err(_) => tracing::error!(%stream, revision = e.revision,
                    "the account record cannot be read; this user cannot log in until it is updated"),
            }
        }
        Ok(Users {
            engine: Arc::downgrade(&engine),
            kdf: Arc::new(tokio::sync::Semaphore::new(crate::authenticate::KDF_SLOTS)),
            accounts: RwLock::new(accounts),
            loaded_end,
            writes: tokio::sync::Mutex::new(()),
        })
    }

    pub fn get(&self, login: &str) -> Option<Arc<UserRecord>> {
        self.accounts
            .read()
            .expect("accounts lock")
            .records
            .get(login)
            .cloned()
    }

    /// Whether there is no account at all.
    pub fn is_empty(&self) -> bool {
        self.accounts
            .read()
            .expect("accounts lock")
            .records
            .is_empty()
    }

    /// Every account, by login name.
    pub fn list(&self) -> Vec<Arc<UserRecord>> {
        let mut all: Vec<_> = self
            .accounts
            .read()
            .expect("accounts lock")
            .records
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.login_name.cmp(&b.login_name));
        all
    }

    /// The password-check slots (shared with the authenticator).
    pub fn kdf_slots(&self) -> Arc<tokio::sync::Semaphore> {
        self.kdf.clone()
    }

    fn engine(&self) -> Result<Arc<Engine>> {
        self.engine
            .upgrade()
            .ok_or(Error::Engine(strata_engine::Error::Closed))
    }

    /// Creates `admin` (`$admins`) and `ops` (`$ops`) the first time a store is served with
    /// authentication, with the passwords given or KurrentDB's default `changeit`: each is
    /// created if its account stream was never written (so a creation cut short, say by a
    /// cluster leader losing leadership midway, is completed by the next attempt, and an
    /// account an admin deleted stays deleted). Later, a password given here replaces a
    /// default one still in use (and is ignored otherwise).
    pub async fn ensure_initial(&self, admin: Option<String>, ops: Option<String>) -> Result<()> {
        let initial = [
            ("admin", "Strata administrator", ADMINS, admin),
            ("ops", "Strata operator", OPS, ops),
        ];
        let engine = self.engine()?;
        for (login, full, group, password) in initial {
            let never_written = engine
                .stream_info(&format!("{USER_STREAM_PREFIX}{login}"))
                .is_none();
            if never_written {
                let default = password.is_none();
                let pw = password.unwrap_or_else(|| DEFAULT_PASSWORD.to_owned());
                self.create_with(login, full, vec![group.to_owned()], &pw, default)
                    .await?;
            } else if let (Some(pw), Some(r)) = (password, self.get(login)) {
                if r.default_password {
                    self.reset_password(login, &pw).await?;
                    tracing::info!(
                        user = login,
                        "replaced the default password with the one configured"
                    );
                }
            }
        }
        Ok(())
    }

    async fn store(&self, record: UserRecord) -> Result<()> {
        let stream = format!("{USER_STREAM_PREFIX}{}", record.login_name);
        let written = self
            .engine()?
            .append_system(
                &stream,
                ExpectedRevision::Any,
                vec![json_event(RECORD, &record)],
            )
            .await?;
        let login = record.login_name.clone();
        self.note(&login, written.revision, Some(record));
        Ok(())
    }

    pub async fn create(
        &self,
        login: &str,
        full_name: &str,
        groups: Vec<String>,
        password: &str,
    ) -> Result<()> {
        self.create_with(login, full_name, groups, password, false)
            .await
    }

    async fn create_with(
        &self,
        login: &str,
        full_name: &str,
        groups: Vec<String>,
        password: &str,
        default_password: bool,
    ) -> Result<()> {
        validate_login(login)?;
        validate_password(password)?;
        validate_groups(&groups)?;
        let _w = self.writes.lock().await;
        if self.get(login).is_some() {
            return Err(Error::UserExists {
                login: login.into(),
            });
        }
        let record = UserRecord {
            login_name: login.into(),
            full_name: full_name.into(),
            groups,
            password_hash: hash(&self.kdf, password.to_owned()).await,
            disabled: false,
            default_password,
            last_updated_ns: now_ns(),
        };
        // The list entry first: if the record's write then fails, the login is listed without
        // a record (skipped at load, created again by a retry), never the other way round (a
        // record no load would find).
        self.engine()?
            .append_system(
                USERS_STREAM,
                ExpectedRevision::Any,
                vec![json_event(
                    CREATED,
                    &serde_json::json!({ "loginName": login }),
                )],
            )
            .await?;
        self.store(record).await
    }

    /// Applies `f` to the account's record and stores the result.
    async fn change(&self, login: &str, f: impl FnOnce(&mut UserRecord)) -> Result<()> {
        let _w = self.writes.lock().await;
        let mut record = (*self.get(login).ok_or_else(|| Error::UserNotFound {
            login: login.into(),
        })?)
        .clone();
        f(&mut record);
        record.last_updated_ns = now_ns();
        self.store(record).await
    }

    /// Replaces full name and groups, and the password when one is given.
    pub async fn update(
        &self,
        login: &str,
        full_name: &str,
        groups: Vec<String>,
        password: Option<&str>,
    ) -> Result<()> {
        validate_groups(&groups)?;
        let new_hash = match password.filter(|p| !p.is_empty()) {
            Some(p) => {
                validate_password(p)?;
                Some(hash(&self.kdf, p.to_owned()).await)
            }
            None => None,
        };
        self.change(login, |r| {
            r.full_name = full_name.into();
            r.groups = groups;
            if let Some(h) = new_hash {
                r.password_hash = h;
                r.default_password = false;
            }
        })
        .await
    }

    pub async fn set_disabled(&self, login: &str, disabled: bool) -> Result<()> {
        self.change(login, |r| r.disabled = disabled).await
    }

    pub async fn reset_password(&self, login: &str, new_password: &str) -> Result<()> {
        validate_password(new_password)?;
        let h = hash(&self.kdf, new_password.to_owned()).await;
        self.change(login, |r| {
            r.password_hash = h;
            r.default_password = false;
        })
        .await
    }

    pub async fn delete(&self, login: &str) -> Result<()> {
        let _w = self.writes.lock().await;
        if self.get(login).is_none() {
            return Err(Error::UserNotFound {
                login: login.into(),
            });
        }
        let stream = format!("{USER_STREAM_PREFIX}{login}");
        let gone = serde_json::json!({ "loginName": login });
        let written = self
            .engine()?
            .append_system(
                &stream,
                ExpectedRevision::Any,
                vec![json_event(RECORD_DELETED, &gone)],
            )
            .await?;
        self.note(login, written.revision, None);
        self.engine()?
            .append_system(
                USERS_STREAM,
                ExpectedRevision::Any,
                vec![json_event(DELETED, &gone)],
            )
            .await?;
        Ok(())
    }
}
