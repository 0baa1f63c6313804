//! Stable error and close codes: the catalogue `proto/PROTOCOL.md` documents. Renaming or
//! renumbering one is a protocol break.

use serde::Serialize;

use crate::channel::ChannelError;

/// Stable machine-readable error codes carried by `error` replies. They never close the
/// connection. Renaming one is a protocol break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a valid message: bad JSON/MessagePack, not an object, a field missing or of the wrong type.
    BadRequest,
    /// `op` is a string this protocol version does not know.
    UnknownOp,
    /// The channel name breaks the charset/length rules or names an unknown namespace.
    BadChannel,
    /// The namespace's policy does not allow this (e.g. client publish).
    Forbidden,
    /// `data` is larger than `limits.max_message_size` once in JSON form.
    TooLarge,
    /// The connection's publish rate limit was hit; retry later.
    RateLimited,
    /// A per-connection limit was reached (e.g. `limits.max_subscriptions`).
    LimitExceeded,
    /// The bus cannot take the request right now (e.g. Redis is down); nothing was published.
    Unavailable,
    /// A bug or unexpected failure on the node.
    Internal,
    /// The op needs an authenticated connection (auth is configured and the namespace
    /// does not admit anonymous clients), or a private channel's token is missing.
    Unauthorized,
    /// The token is not a JWT, lacks `sub` or `exp`, or carries a bad `info`.
    TokenMalformed,
    /// The token's `alg` is `none` or one no configured key checks.
    TokenAlgorithm,
    /// The signature does not match the configured key (or no key has its `kid`).
    TokenSignature,
    /// `aud` is missing or not `auth.audience`.
    TokenAudience,
    /// `iss` is missing or not `auth.issuer`.
    TokenIssuer,
    /// `exp` has passed.
    TokenExpired,
    /// `nbf` is still in the future.
    TokenNotYetValid,
    /// A valid token used for something it is not for: a channel token for another user
    /// or channel, a channel token as a connection token, a `refresh` for another user.
    TokenMismatch,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadChannel => "bad_channel",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenMalformed => "token_malformed",
            ErrorCode::TokenAlgorithm => "token_algorithm",
            ErrorCode::TokenSignature => "token_signature",
            ErrorCode::TokenAudience => "token_audience",
            ErrorCode::TokenIssuer => "token_issuer",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::TokenMismatch => "token_mismatch",
        }
    }
}

impl From<ChannelError> for ErrorCode {
    fn from(_: ChannelError) -> Self {
        ErrorCode::BadChannel
    }
}

/// WebSocket close codes roomcast sends: RFC 6455 ones, plus 4000–4999 for its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the client closed, and the node echoes the close.
    Normal,
    /// 1001: the node is draining (shutdown); reconnect, preferably elsewhere.
    GoingAway,
    /// 1002: broken WebSocket framing (bad opcode, reserved bits, fragmentation).
    ProtocolError,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidPayload,
    /// 1009: a message larger than `limits.max_message_size`.
    MessageTooBig,
    /// 1011: an unexpected failure on the node.
    InternalError,
    /// 1013: the node is full (`limits.max_connections`); retry with backoff.
    TryAgainLater,
    /// 4000: the client did not read fast enough and its outbound queue overflowed.
    SlowConsumer,
    /// 4001: nothing was heard from the client within `heartbeat.idle_timeout_ms`.
    IdleTimeout,
    /// 4002: the handshake's token was refused (the `error` before it says why), or the
    /// connection did not authenticate within `auth.connect_timeout_ms`.
    Unauthorized,
    /// 4003: the connection's token expired and no `refresh` came in time.
    TokenExpired,
    /// 4004: a backend disconnected the connection's user (`POST /api/disconnect`).
    Disconnected,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TryAgainLater => 1013,
            CloseCode::SlowConsumer => 4000,
            CloseCode::IdleTimeout => 4001,
            CloseCode::Unauthorized => 4002,
            CloseCode::TokenExpired => 4003,
            CloseCode::Disconnected => 4004,
        }
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "node draining",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "invalid utf-8",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::TryAgainLater => "node full",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::IdleTimeout => "idle timeout",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::TokenExpired => "token expired",
            CloseCode::Disconnected => "disconnected by the server",
        }
    }

    /// Label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InternalError => "internal_error",
            CloseCode::TryAgainLater => "try_again_later",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::IdleTimeout => "idle_timeout",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::Disconnected => "disconnected",
        }
    }
}
