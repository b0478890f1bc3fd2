use thiserror::Error;

/// What went wrong managing users. Messages say what to change.
#[derive(Debug, Error)]
pub enum Error {
    #[error("user {login:?} does not exist")]
    UserNotFound { login: String },
    #[error("user {login:?} already exists")]
    UserExists { login: String },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("the current password given for {login:?} is wrong")]
    WrongPassword { login: String },
    #[error("the user record in {stream} at revision {revision} cannot be read: {reason}")]
    Corrupt {
        stream: String,
        revision: u64,
        reason: String,
    },
    #[error(transparent)]
    Engine(#[from] strata_engine::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
