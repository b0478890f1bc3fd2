//! Checking credentials. Password checks are deliberately slow (argon2id), so:
//!
//! - a credential that was verified recently (1 minute) is recognised from a keyed digest,
//!   without the KDF, until the account changes (any change replaces the record, which the
//!   cache compares by identity);
//! - at most [`KDF_SLOTS`] password checks run at once, whatever the number of clients;
//! - a client address with [`MAX_FAILURES`] failed logins within [`FAILURE_WINDOW`] has its
//!   further attempts refused without a check until the window ends (credentials it already
//!   proved stay usable, so a brute-force attempt from a shared address does not lock out the
//!   applications behind it). Failures are logged with the login name and address, never the
//!   password.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::acl::Principal;
use crate::password;
use crate::users::{UserRecord, Users};

/// How long a verified credential is recognised without the KDF.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Failed logins per client address within [`FAILURE_WINDOW`] before attempts are refused.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Password checks running at once.
pub const KDF_SLOTS: usize = 2;
/// Entries kept in the credential cache and the failure table at most.
const MAX_ENTRIES: usize = 100_000;

/// Why credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// Unknown user, wrong password, or a disabled account (not told apart, so that accounts
    /// cannot be discovered).
    BadCredentials,
    /// Too many failed logins from this address lately.
    TooManyFailures { retry_after: Duration },
    /// The account still has the default password, which this server does not accept (it
    /// listens beyond loopback).
    DefaultPassword { login: String },
}

struct Cached {
    record: Arc<UserRecord>,
    digest: u64,
    at: Instant,
    principal: Arc<Principal>,
}

struct Failures {
    count: u32,
    since: Instant,
}

/// Checks credentials against the store's accounts.
pub struct Authenticator {
    users: Arc<Users>,
    keys: std::collections::hash_map::RandomState,
    cache: Mutex<HashMap<String, Cached>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    kdf: Arc<Semaphore>,
    default_passwords: bool,
}

/// A hash to verify against when the user does not exist, so that unknown users cost the
/// same time as wrong passwords.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| password::hash("not a password anyone has"))
}

fn principal_of(r: &UserRecord) -> Arc<Principal> {
    Arc::new(Principal {
        name: r.login_name.clone(),
        groups: r.groups.clone(),
    })
}

impl Authenticator {
    /// `default_passwords`: whether accounts that still have the default password may log in.
    pub fn new(users: Arc<Users>, default_passwords: bool) -> Authenticator {
        Authenticator {
            users,
            keys: Default::default(),
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            kdf: Arc::new(Semaphore::new(KDF_SLOTS)),
            default_passwords,
        }
    }

    pub fn users(&self) -> &Arc<Users> {
        &self.users
    }

    fn digest(&self, login: &str, password: &str) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write(login.as_bytes());
        h.write_u8(0xff);
        h.write(password.as_bytes());
        h.finish()
    }

    fn cached(&self, login: &str, record: &Arc<UserRecord>, digest: u64) -> Option<Arc<Principal>> {
        let cache = self.cache.lock().expect("cache lock");
        let c = cache.get(login)?;
        (Arc::ptr_eq(&c.record, record) && c.digest == digest && c.at.elapsed() < CACHE_TTL)
            .then(|| c.principal.clone())
    }

    fn locked_out(&self, client: Option<IpAddr>) -> Option<Duration> {
        let client = client?;
        let failures = self.failures.lock().expect("failures lock");
        let f = failures.get(&client)?;
        let elapsed = f.since.elapsed();
        (f.count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    fn failed(&self, client: Option<IpAddr>, login: &str) {
        let count = match client {
            Some(ip) => {
                let mut failures = self.failures.lock().expect("failures lock");
                if failures.len() >= MAX_ENTRIES {
                    failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
                }
                let f = failures.entry(ip).or_insert(Failures {
                    count: 0,
                    since: Instant::now(),
                });
                if f.since.elapsed() >= FAILURE_WINDOW {
                    *f = Failures {
                        count: 0,
                        since: Instant::now(),
                    };
                }
                f.count += 1;
                f.count
            }
            None => 1,
        };
        let client = client
            .map(|c| c.to_string())
            .unwrap_or_else(|| "unknown".into());
        tracing::warn!(user = %login, %client, failures = count, "failed login");
    }

    /// Checks `login` / `password` from a client at `client`.
    pub async fn authenticate(
        &self,
        client: Option<IpAddr>,
        login: &str,
        password: &str,
    ) -> Result<Arc<Principal>, AuthFailure> {
        let record = self.users.get(login);
        let digest = self.digest(login, password);
        if let Some(r) = &record {
            if let Some(p) = self.cached(login, r, digest) {
                return Ok(p);
            }
        }
        if let Some(retry_after) = self.locked_out(client) {
            return Err(AuthFailure::TooManyFailures { retry_after });
        }
        let phc = match &record {
            Some(r) => r.password_hash.clone(),
            None => decoy().to_owned(),
        };
        let slot = self
            .kdf
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let given = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            password::verify(&given, &phc)
        })
        .await
        .unwrap_or(false);
        let record = match record {
            Some(r) if matches && !r.disabled => r,
            _ => {
                self.failed(client, login);
                return Err(AuthFailure::BadCredentials);
            }
        };
        if record.default_password && !self.default_passwords {
            tracing::warn!(user = %login,
                "refused a login with the default password: this server listens beyond loopback; set one (--initial-admin-password at start, or `strata user reset-password` as an admin)");
            return Err(AuthFailure::DefaultPassword {
                login: login.into(),
            });
        }
        let principal = principal_of(&record);
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(
            login.to_owned(),
            Cached {
                record,
                digest,
                at: Instant::now(),
                principal: principal.clone(),
            },
        );
        Ok(principal)
    }

    /// The user a verified client certificate names (its common name), if that account exists
    /// and is enabled.
    pub fn certificate_user(&self, login: &str) -> Option<Arc<Principal>> {
        self.users
            .get(login)
            .filter(|r| !r.disabled)
            .map(|r| principal_of(&r))
    }
}
