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
    #[error("too many failed password checks from this address; retry in {retry_after_secs} s")]
    TooManyFailures { retry_after_secs: u64 },
    #[error("every password check is busy (many logins at once); retry shortly")]
    Busy,
    #[error(transparent)]
    Engine(#[from] strata_engine::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
