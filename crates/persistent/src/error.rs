//! Errors of the persistent-subscription layer. Messages name the group and what was wrong.

/// Errors returned by [`crate::Groups`] operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No group with this name exists on this stream (or `$all`).
    #[error("persistent subscription group '{group}' on '{target}' does not exist")]
    GroupNotFound { target: String, group: String },

    /// `create` of a group that already exists.
    #[error("persistent subscription group '{group}' on '{target}' already exists")]
    GroupExists { target: String, group: String },

    /// The group was deleted while a consumer was connected.
    #[error("persistent subscription group '{group}' on '{target}' was deleted")]
    GroupDeleted { target: String, group: String },

    /// The group has `max_consumers` consumers already. The wording matches KurrentDB's,
    /// which its clients look for.
    #[error("Maximum subscriptions reached: group '{group}' on '{target}' allows {max} consumers")]
    MaxConsumers {
        target: String,
        group: String,
        max: u32,
    },

    /// `create` when the server already has its maximum number of groups.
    #[error("the server already has its maximum of {max} persistent subscription groups (--max-groups); delete unused groups or raise the limit")]
    TooManyGroups { max: usize },

    /// A setting or argument is invalid; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    /// A group on a derived stream (`$ce-…`, `$et-…`) of a store that does not keep them.
    #[error("'{stream}' is a derived stream, and this store does not keep derived streams (turn them on to create groups on it)")]
    DerivedStreamsOff { stream: String },

    /// An operator restarted the persistent subscriptions (KurrentDB's `RestartSubsystem`):
    /// every consumer is disconnected and may reconnect at once.
    #[error("the persistent subscriptions were restarted by an operator; reconnect to continue")]
    Restarted,

    /// This cluster node stopped leading, and consumer groups run on the leader: reconnect
    /// to the new leader.
    #[error("this node is no longer the cluster's leader, and consumer groups run on the leader: reconnect to the new leader")]
    LeaderChanged,

    /// The server is shutting down; reconnect later.
    #[error("persistent subscriptions are shutting down")]
    ShuttingDown,

    /// The storage engine failed.
    #[error(transparent)]
    Engine(#[from] strata_engine::Error),

    /// A system stream of a group holds an event this version cannot read.
    #[error("persistent subscription state in stream '{stream}' is unreadable: {reason}")]
    BadState { stream: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}
