//! Checking credentials. Password checks are deliberately slow (argon2id), so:
//!
//! - a credential verified recently (1 minute) is recognised from a keyed digest, without the
//!   KDF, until the account changes (any change replaces the record, which the cache compares
//!   by identity);
//! - one login's checks run one at a time: many connections opening at once with the same
//!   credentials cost one check, and guesses at one account cannot run in parallel;
//! - at most [`KDF_SLOTS`] password checks run at once, whatever the number of clients, and a
//!   check waits at most [`KDF_WAIT`] for a slot;
//! - every attempt from a client address (IPv6: its /64) counts as a failure until it
//!   succeeds, so concurrent guesses count too; with [`MAX_FAILURES`] within
//!   [`FAILURE_WINDOW`], the address's further attempts are refused without a check until the
//!   window ends, except credentials that address itself verified before (so a brute-force
//!   attempt from a shared address does not lock out the applications behind it). Failures
//!   are logged with the login name and address, never the password.

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
/// How long a login waits for a password-check slot before it is refused as unavailable.
pub const KDF_WAIT: Duration = Duration::from_secs(5);
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
    /// Password checks are all busy (many logins at once); retry.
    Busy,
    /// The node holds no accounts at all yet (a cluster node before the leader's initial
    /// accounts reached it): not counted as a failed login; retry.
    NoAccounts,
}

struct Cached {
    record: Arc<UserRecord>,
    digest: u64,
    at: Instant,
    principal: Arc<Principal>,
    /// Addresses that verified this credential (a few), which a lock-out does not stop.
    verified_from: Vec<IpAddr>,
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
    /// One check at a time per login name.
    checking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    default_passwords: bool,
}

/// The key failures are counted under: the address, or for IPv6 its /64 (one host's share).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
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
            users: users.clone(),
            keys: Default::default(),
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            kdf: users.kdf_slots(),
            checking: Mutex::new(HashMap::new()),
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

    /// The principal of a credential verified recently, with the addresses that verified it.
    fn cached(
        &self,
        login: &str,
        record: &Arc<UserRecord>,
        digest: u64,
    ) -> Option<(Arc<Principal>, Vec<IpAddr>)> {
        let cache = self.cache.lock().expect("cache lock");
        let c = cache.get(login)?;
        (Arc::ptr_eq(&c.record, record) && c.digest == digest && c.at.elapsed() < CACHE_TTL)
            .then(|| (c.principal.clone(), c.verified_from.clone()))
    }

    fn locked_out(&self, client: Option<IpAddr>) -> Option<Duration> {
        let key = network(client?);
        let failures = self.failures.lock().expect("failures lock");
        let f = failures.get(&key)?;
        let elapsed = f.since.elapsed();
        (f.count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    /// Counts an attempt from `client` as a failure (until [`Authenticator::succeeded`]
    /// takes it back); returns the count.
    fn attempt(&self, client: Option<IpAddr>) -> u32 {
        let Some(ip) = client else { return 1 };
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
        }
        let f = failures.entry(network(ip)).or_insert(Failures {
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

    fn succeeded(&self, client: Option<IpAddr>) {
        let Some(ip) = client else { return };
        if let Some(f) = self
            .failures
            .lock()
            .expect("failures lock")
            .get_mut(&network(ip))
        {
            f.count = f.count.saturating_sub(1);
        }
    }

    fn log_failure(client: Option<IpAddr>, login: &str, count: u32) {
        let client = client
            .map(|c| c.to_string())
            .unwrap_or_else(|| "unknown".into());
        // Debug form: a login name from a request cannot forge log lines.
        tracing::warn!(user = ?login, %client, failures = count, "failed login");
    }

    /// The lock serialising checks of one login.
    fn login_lock(&self, login: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut checking = self.checking.lock().expect("checking lock");
        if checking.len() >= MAX_ENTRIES {
            checking.retain(|_, m| Arc::strong_count(m) > 1);
        }
        checking.entry(login.to_owned()).or_default().clone()
    }

    /// Verifies `password` against `phc` in a password-check slot.
    async fn verify(&self, password: &str, phc: String) -> Result<bool, AuthFailure> {
        let slot = tokio::time::timeout(KDF_WAIT, self.kdf.clone().acquire_owned())
            .await
            .map_err(|_| AuthFailure::Busy)?
            .expect("never closed");
        let given = password.to_owned();
        Ok(tokio::task::spawn_blocking(move || {
            let _slot = slot;
            password::verify(&given, &phc)
        })
        .await
        .unwrap_or(false))
    }

    /// Checks `login`'s current password for a change of password, under the same limits as
    /// a login (slots, lock-out per address).
    pub async fn check_password(
        &self,
        client: Option<IpAddr>,
        login: &str,
        password: &str,
    ) -> Result<(), AuthFailure> {
        if let Some(retry_after) = self.locked_out(client) {
            return Err(AuthFailure::TooManyFailures { retry_after });
        }
        let count = self.attempt(client);
        let phc = match self.users.get(login) {
            Some(r) => r.password_hash.clone(),
            None => decoy().to_owned(),
        };
        if self.verify(password, phc).await? {
            self.succeeded(client);
            Ok(())
        } else {
            Self::log_failure(client, login, count);
            Err(AuthFailure::BadCredentials)
        }
    }

    /// Checks `login` / `password` from a client at `client`.
    pub async fn authenticate(
        &self,
        client: Option<IpAddr>,
        login: &str,
        password: &str,
    ) -> Result<Arc<Principal>, AuthFailure> {
        if self.users.is_empty() {
            return Err(AuthFailure::NoAccounts);
        }
        let digest = self.digest(login, password);
        let locked = self.locked_out(client);
        if let Some(r) = self.users.get(login) {
            if let Some((p, from)) = self.cached(login, &r, digest) {
                if locked.is_none() || client.is_some_and(|c| from.contains(&c)) {
                    return Ok(p);
                }
            }
        }
        if let Some(retry_after) = locked {
            return Err(AuthFailure::TooManyFailures { retry_after });
        }
        // One check per login at a time; whoever waited may find the answer cached.
        let lock = self.login_lock(login);
        // Waiters for one login are bounded in time like the password-check slots.
        let _one = tokio::time::timeout(KDF_WAIT, lock.lock())
            .await
            .map_err(|_| AuthFailure::Busy)?;
        let record = self.users.get(login);
        if let Some(r) = &record {
            if let Some((p, _)) = self.cached(login, r, digest) {
                self.remember(login, r.clone(), digest, p.clone(), client, false);
                return Ok(p);
            }
        }
        if let Some(retry_after) = self.locked_out(client) {
            return Err(AuthFailure::TooManyFailures { retry_after });
        }
        let count = self.attempt(client);
        let phc = match &record {
            Some(r) => r.password_hash.clone(),
            None => decoy().to_owned(),
        };
        let matches = self.verify(password, phc).await?;
        let record = match record {
            Some(r) if matches && !r.disabled => r,
            _ => {
                Self::log_failure(client, login, count);
                return Err(AuthFailure::BadCredentials);
            }
        };
        self.succeeded(client);
        if record.default_password && !self.default_passwords {
            tracing::warn!(user = ?login,
                "refused a login with the default password: this server listens beyond loopback; set one (--initial-admin-password at start, or `strata user reset-password` as an admin)");
            return Err(AuthFailure::DefaultPassword {
                login: login.into(),
            });
        }
        let principal = principal_of(&record);
        self.remember(login, record, digest, principal.clone(), client, true);
        Ok(principal)
    }

    fn remember(
        &self,
        login: &str,
        record: Arc<UserRecord>,
        digest: u64,
        principal: Arc<Principal>,
        client: Option<IpAddr>,
        fresh: bool,
    ) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        let entry = cache.entry(login.to_owned()).or_insert_with(|| Cached {
            record: record.clone(),
            digest,
            at: Instant::now(),
            principal: principal.clone(),
            verified_from: Vec::new(),
        });
        if fresh || !Arc::ptr_eq(&entry.record, &record) || entry.digest != digest {
            *entry = Cached {
                record,
                digest,
                at: Instant::now(),
                principal,
                verified_from: Vec::new(),
            };
        }
        if let Some(c) = client {
            if !entry.verified_from.contains(&c) {
                if entry.verified_from.len() >= 8 {
                    entry.verified_from.remove(0);
                }
                entry.verified_from.push(c);
            }
        }
    }

    /// Changes `login`'s password given the current one, which is checked under the same
    /// limits as a login.
    pub async fn change_password(
        &self,
        client: Option<IpAddr>,
        login: &str,
        current: &str,
        new_password: &str,
    ) -> Result<(), crate::Error> {
        match self.check_password(client, login, current).await {
            Ok(()) => self.users.reset_password(login, new_password).await,
            Err(AuthFailure::TooManyFailures { retry_after }) => {
                Err(crate::Error::TooManyFailures {
                    retry_after_secs: retry_after.as_secs().max(1),
                })
            }
            Err(AuthFailure::Busy) => Err(crate::Error::Busy),
            Err(_) => Err(crate::Error::WrongPassword {
                login: login.into(),
            }),
        }
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
