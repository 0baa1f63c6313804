//! Why a command failed, and the one place that maps each reason to its protocol error
//! code and log level. None of them closes the connection: closes are the transport's
//! (framing) and the outbox's (slow consumer).

use crate::node::NodeError;
use crate::protocol::{ErrorCode, Rejection};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The message did not decode into a command.
    #[error("{}", .0.message)]
    Decode(Rejection),
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    #[error("clients may not {} in namespace {namespace:?}", access.as_str())]
    Forbidden {
        access: super::access::Access,
        namespace: String,
    },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error(transparent)]
    Token(#[from] crate::auth::TokenError),
    #[error("this node has no auth configured")]
    NoAuth,
    #[error("already authenticated; use `refresh` for a new token")]
    AlreadyAuthenticated,
    #[error("subscribe/unsubscribe rate limit reached; slow down")]
    SubscribeRateLimited,
    #[error("namespace {0:?} keeps no history")]
    NoHistory(String),
    #[error("namespace {0:?} keeps no presence")]
    NoPresence(String),
    #[error("presence info is larger than {0} bytes")]
    InfoTooLarge(usize),
    #[error("data is too large")]
    TooLarge,
    #[error("publish rate limit reached; slow down")]
    RateLimited,
    #[error("at most {0} subscriptions per connection")]
    TooManySubscriptions(usize),
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl CommandError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Decode(rejection) => rejection.code,
            CommandError::UnknownNamespace(_) => ErrorCode::BadChannel,
            CommandError::Forbidden { .. }
            | CommandError::NoHistory(_)
            | CommandError::NoPresence(_) => ErrorCode::Forbidden,
            CommandError::TooLarge | CommandError::InfoTooLarge(_) => ErrorCode::TooLarge,
            CommandError::RateLimited | CommandError::SubscribeRateLimited => {
                ErrorCode::RateLimited
            }
            CommandError::Unauthorized(_) => ErrorCode::Unauthorized,
            CommandError::Token(error) => error.code(),
            CommandError::NoAuth | CommandError::AlreadyAuthenticated => ErrorCode::BadRequest,
            CommandError::TooManySubscriptions(_) => ErrorCode::LimitExceeded,
            CommandError::Node(NodeError::Bus(_)) => ErrorCode::Unavailable,
        }
    }

    /// Always at debug: client mistakes can be made at will, and a bus outage is logged
    /// once by the bus's supervisor, not once per refused request.
    pub fn log(&self, id: Option<u64>) {
        let code = self.code().as_str();
        let error = self as &dyn std::error::Error;
        tracing::debug!(code, id, error, "request rejected");
    }
}
