//! Who may do what to a stream: access lists in stream metadata (`$acl`), defaults in
//! `$settings`, and the decision.

use std::sync::{Arc, RwLock, Weak};

use serde_json::Value;
use strata_engine::{Direction, Engine, StreamFrom};

use crate::{ADMINS, EVERYONE, OPS};

/// The stream holding the default access lists.
pub const SETTINGS_STREAM: &str = "$settings";
/// Event type of a `$settings` event, as KurrentDB names it.
pub const SETTINGS_EVENT_TYPE: &str = "update-default-acl";

/// An authenticated user, as access checks see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == ADMINS)
    }

    /// Members of `$ops` or `$admins`.
    pub fn is_operator(&self) -> bool {
        self.is_admin() || self.groups.iter().any(|g| g == OPS)
    }

    fn holds(&self, role: &str) -> bool {
        role == EVERYONE || role == self.name || self.groups.iter().any(|g| g == role)
    }
}

/// Who makes a request.
#[derive(Debug, Clone)]
pub enum Access {
    /// No authentication on this server (`--insecure`): everything is allowed.
    Unrestricted,
    User(Arc<Principal>),
    /// No credentials on a server that checks them.
    Anonymous,
}

impl Access {
    pub fn is_admin(&self) -> bool {
        match self {
            Access::Unrestricted => true,
            Access::User(p) => p.is_admin(),
            Access::Anonymous => false,
        }
    }

    pub fn is_operator(&self) -> bool {
        match self {
            Access::Unrestricted => true,
            Access::User(p) => p.is_operator(),
            Access::Anonymous => false,
        }
    }

    /// The user's name, for messages and logs.
    pub fn name(&self) -> &str {
        match self {
            Access::Unrestricted => "(insecure mode)",
            Access::User(p) => &p.name,
            Access::Anonymous => "(anonymous)",
        }
    }
}

/// What a request does to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
    Delete,
    MetadataRead,
    MetadataWrite,
}

impl Operation {
    const ALL: [Operation; 5] = [
        Operation::Read,
        Operation::Write,
        Operation::Delete,
        Operation::MetadataRead,
        Operation::MetadataWrite,
    ];

    /// The key in an access list.
    pub fn key(self) -> &'static str {
        match self {
            Operation::Read => "$r",
            Operation::Write => "$w",
            Operation::Delete => "$d",
            Operation::MetadataRead => "$mr",
            Operation::MetadataWrite => "$mw",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// An access list: for each operation, the users and groups it allows, or nothing said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    roles: [Option<Vec<String>>; 5],
}

impl Acl {
    /// The same roles for every operation.
    pub fn uniform(role: &str) -> Acl {
        Acl {
            roles: std::array::from_fn(|_| Some(vec![role.to_owned()])),
        }
    }

    /// Parses KurrentDB's form: an object whose keys `$r`, `$w`, `$d`, `$mr`, `$mw` each hold
    /// a name or an array of names. Other keys are ignored, as KurrentDB does.
    pub fn from_value(v: &Value) -> Result<Acl, String> {
        let Value::Object(map) = v else {
            return Err(format!("$acl must be a JSON object, got {v}"));
        };
        let mut acl = Acl::default();
        for op in Operation::ALL {
            let roles = match map.get(op.key()) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(format!(
                            "$acl {} must list user or group names, got {other}",
                            op.key()
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(format!(
                        "$acl {} must be a name or an array of names, got {other}",
                        op.key()
                    ))
                }
            };
            acl.roles[op.slot()] = Some(roles);
        }
        Ok(acl)
    }

    /// The roles allowed `op`, if the list says.
    pub fn roles(&self, op: Operation) -> Option<&[String]> {
        self.roles[op.slot()].as_deref()
    }
}

/// Checks the `$acl` key of stream metadata, for writes of metadata: a list that would not
/// parse is refused rather than stored.
pub fn validate_metadata_acl(custom: &serde_json::Map<String, Value>) -> Result<(), String> {
    match custom.get("$acl") {
        None | Some(Value::Null) => Ok(()),
        Some(v) => Acl::from_value(v).map(|_| ()),
    }
}

/// The default access lists, from `$settings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultAcls {
    pub user: Acl,
    pub system: Acl,
}

impl Default for DefaultAcls {
    fn default() -> Self {
        DefaultAcls {
            user: Acl::uniform(EVERYONE),
            system: Acl::uniform(ADMINS),
        }
    }
}

impl DefaultAcls {
    /// Parses a `$settings` event: `{"$userStreamAcl": {…}, "$systemStreamAcl": {…}}`. A list
    /// that is absent, or says nothing for an operation, keeps the built-in default for it.
    pub fn from_settings(data: &[u8]) -> Result<DefaultAcls, String> {
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| format!("$settings is not valid JSON: {e}"))?;
        let Value::Object(map) = v else {
            return Err("$settings must be a JSON object".into());
        };
        let mut d = DefaultAcls::default();
        for (key, slot) in [
            ("$userStreamAcl", &mut d.user),
            ("$systemStreamAcl", &mut d.system),
        ] {
            if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                let given = Acl::from_value(v).map_err(|e| format!("{key}: {e}"))?;
                for op in Operation::ALL {
                    if let Some(r) = given.roles(op) {
                        slot.roles[op.slot()] = Some(r.to_vec());
                    }
                }
            }
        }
        Ok(d)
    }
}

/// Decides requests against the store's access lists.
pub struct Authorizer {
    /// Not kept alive by the checks: the store closes when its owner lets go of it.
    engine: Weak<Engine>,
    /// The defaults, and the `$settings` revision they were read from.
    defaults: RwLock<(Option<u64>, Arc<DefaultAcls>)>,
}

impl Authorizer {
    pub fn new(engine: Arc<Engine>) -> Authorizer {
        Authorizer {
            engine: Arc::downgrade(&engine),
            defaults: RwLock::new((None, Arc::new(DefaultAcls::default()))),
        }
    }

    /// Whether `who` may do `op` to `stream`. A metadata stream `$$<s>` is checked as the
    /// metadata operations of `<s>`.
    pub fn may(&self, who: &Access, op: Operation, stream: &str) -> bool {
        let principal = match who {
            Access::Unrestricted => return true,
            Access::Anonymous => return false,
            Access::User(p) if p.is_admin() => return true,
            Access::User(p) => p,
        };
        // Accounts (password hashes among them) are for admins, whatever the lists say; so is
        // changing the defaults, which would change every list.
        let target = stream.trim_start_matches("$$");
        if crate::users::is_user_stream(target)
            || (target == SETTINGS_STREAM
                && matches!(
                    op,
                    Operation::Write | Operation::Delete | Operation::MetadataWrite
                ))
        {
            return false;
        }
        let (stream, op) = match stream.strip_prefix("$$") {
            Some(target) => (
                target,
                match op {
                    Operation::Read | Operation::MetadataRead => Operation::MetadataRead,
                    _ => Operation::MetadataWrite,
                },
            ),
            None => (stream, op),
        };
        let Some(engine) = self.engine.upgrade() else {
            return false;
        };
        let explicit = engine.stream_metadata_shared(stream).and_then(|m| {
            m.custom.get("$acl").map(|v| match Acl::from_value(v) {
                Ok(acl) => acl.roles(op).map(<[String]>::to_vec),
                // Stored before it was checked, or damaged: nobody but admins.
                Err(_) => Some(Vec::new()),
            })
        });
        let roles = match explicit.flatten() {
            Some(roles) => roles,
            None => {
                let defaults = self.defaults(&engine);
                let list = if stream.starts_with('$') {
                    &defaults.system
                } else {
                    &defaults.user
                };
                list.roles(op).map(<[String]>::to_vec).unwrap_or_default()
            }
        };
        roles.iter().any(|r| principal.holds(r))
    }

    /// The current defaults, re-read when `$settings` has a new event.
    fn defaults(&self, engine: &Engine) -> Arc<DefaultAcls> {
        let revision = engine
            .stream_info(SETTINGS_STREAM)
            .and_then(|i| i.last_revision);
        {
            let cached = self.defaults.read().expect("defaults lock");
            if cached.0 == revision {
                return cached.1.clone();
            }
        }
        let read =
            engine.read_stream_raw(SETTINGS_STREAM, StreamFrom::End, Direction::Backwards, 1);
        let parsed = match read.map(|s| s.events.into_iter().next()) {
            Ok(Some(e)) => DefaultAcls::from_settings(&e.data).unwrap_or_else(|reason| {
                tracing::error!(%reason, revision = e.revision,
                    "the newest $settings event cannot be used; the built-in default access lists apply until a valid one is written");
                DefaultAcls::default()
            }),
            _ => DefaultAcls::default(),
        };
        let parsed = Arc::new(parsed);
        *self.defaults.write().expect("defaults lock") = (revision, parsed.clone());
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> Principal {
        Principal {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn access_lists_parse_names_and_lists() {
        let acl = Acl::from_value(&json!({"$r": "alice", "$w": ["bob", "$ops"], "$x": 1})).unwrap();
        assert_eq!(acl.roles(Operation::Read), Some(&["alice".to_owned()][..]));
        assert_eq!(acl.roles(Operation::Write).unwrap().len(), 2);
        assert_eq!(acl.roles(Operation::Delete), None);
        assert!(Acl::from_value(&json!({"$r": 5})).is_err());
        assert!(Acl::from_value(&json!({"$r": [5]})).is_err());
        assert!(Acl::from_value(&json!("alice")).is_err());
        // An empty list grants nobody (but admins).
        let acl = Acl::from_value(&json!({"$r": []})).unwrap();
        assert_eq!(acl.roles(Operation::Read), Some(&[][..]));
    }

    #[test]
    fn settings_keep_builtin_defaults_for_what_they_do_not_say() {
        let d =
            DefaultAcls::from_settings(br#"{"$userStreamAcl": {"$r": "$all", "$w": "writers"}}"#)
                .unwrap();
        assert_eq!(
            d.user.roles(Operation::Write),
            Some(&["writers".to_owned()][..])
        );
        assert_eq!(
            d.user.roles(Operation::Delete),
            Some(&["$all".to_owned()][..])
        );
        assert_eq!(d.system, DefaultAcls::default().system);
        assert!(DefaultAcls::from_settings(b"[]").is_err());
        assert!(DefaultAcls::from_settings(br#"{"$systemStreamAcl": {"$r": 1}}"#).is_err());
    }

    #[test]
    fn roles_match_name_group_or_everyone() {
        let p = user("alice", &["readers"]);
        assert!(p.holds("alice") && p.holds("readers") && p.holds("$all"));
        assert!(!p.holds("bob") && !p.holds("$admins"));
        assert!(user("root", &["$admins"]).is_operator());
        assert!(user("op", &["$ops"]).is_operator());
        assert!(!p.is_operator());
    }
}
