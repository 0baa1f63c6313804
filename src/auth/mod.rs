//! Who a client is: JWTs checked against the configured keys (`keys`), the identity and
//! channel grants a connection token carries, and channel tokens for private channels.
//! Pure checks, no I/O besides reading key files: the session decides what a failure
//! does to the connection.

mod keys;

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::value::RawValue;
use wildmatch::WildMatch;

pub use keys::KeyError;
use keys::Keys;

use crate::channel::ChannelName;
use crate::protocol::ErrorCode;
use crate::settings::AuthSettings;

/// Why a token was refused. Each has its own protocol error code, so that a client (and
/// whoever debugs it) can tell a clock problem from a key problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("token signature does not match any configured key")]
    Signature,
    #[error("token audience is not the one configured")]
    Audience,
    #[error("token issuer is not the one configured")]
    Issuer,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("{0}")]
    Mismatch(&'static str),
}

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Malformed(_) => ErrorCode::TokenMalformed,
            TokenError::Algorithm(_) => ErrorCode::TokenAlgorithm,
            TokenError::Signature => ErrorCode::TokenSignature,
            TokenError::Audience => ErrorCode::TokenAudience,
            TokenError::Issuer => ErrorCode::TokenIssuer,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::NotYetValid => ErrorCode::TokenNotYetValid,
            TokenError::Mismatch(_) => ErrorCode::TokenMismatch,
        }
    }
}

/// What a connection token says about its holder.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `sub`: the user; one user may hold many connections.
    pub user: Box<str>,
    /// `exp`, in seconds since the Unix epoch.
    pub expires: u64,
    /// `info`: JSON shown in presence instead of anything the client sends.
    pub info: Option<Bytes>,
    pub grants: Grants,
}

/// Channel patterns (`*` and `?` wildcards) a token lets its holder use beyond what the
/// namespace allows every client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    pub subscribe: Vec<WildMatch>,
    pub publish: Vec<WildMatch>,
    pub history: Vec<WildMatch>,
    pub presence: Vec<WildMatch>,
}

impl Grants {
    pub fn allows(patterns: &[WildMatch], channel: &ChannelName) -> bool {
        patterns.iter().any(|p| p.matches(channel.as_str()))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    channels: GrantClaims,
    /// Only channel tokens carry it.
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GrantClaims {
    subscribe: Vec<String>,
    publish: Vec<String>,
    history: Vec<String>,
    presence: Vec<String>,
}

/// The node's token checker.
pub struct Auth {
    settings: AuthSettings,
    keys: RwLock<Arc<Keys>>,
}

impl Auth {
    /// `None` when no key is configured: every client is anonymous.
    pub fn new(settings: &AuthSettings) -> Result<Option<Self>, KeyError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let keys = Keys::load(settings)?;
        Ok(Some(Self {
            settings: settings.clone(),
            keys: RwLock::new(Arc::new(keys)),
        }))
    }

    /// Reads the key files again; on failure the keys in use stay.
    pub fn reload(&self) -> Result<(), KeyError> {
        let keys = Keys::load(&self.settings)?;
        *self.keys.write() = Arc::new(keys);
        Ok(())
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Checks a connection token.
    pub fn verify(&self, token: &str, max_info_bytes: usize) -> Result<Identity, TokenError> {
        let claims = self.claims(token)?;
        if claims.channel.is_some() {
            return Err(TokenError::Mismatch(
                "a channel token cannot authenticate a connection",
            ));
        }
        let info = match claims.info {
            Some(raw) if raw.get().len() > max_info_bytes => {
                return Err(TokenError::Malformed(format!(
                    "`info` is larger than {max_info_bytes} bytes"
                )));
            }
            Some(raw) if !crate::protocol::deliverable(raw.get().as_bytes()) => {
                return Err(TokenError::Malformed("`info` cannot be delivered".into()));
            }
            Some(raw) => Some(Bytes::copy_from_slice(raw.get().as_bytes())),
            None => None,
        };
        let patterns = |list: Vec<String>| list.iter().map(|p| WildMatch::new(p)).collect();
        Ok(Identity {
            user: claims.sub.into_boxed_str(),
            expires: claims.exp,
            info,
            grants: Grants {
                subscribe: patterns(claims.channels.subscribe),
                publish: patterns(claims.channels.publish),
                history: patterns(claims.channels.history),
                presence: patterns(claims.channels.presence),
            },
        })
    }

    /// Checks a private channel's token: signed like connection tokens, for this user
    /// (`sub`) and this channel (`channel`).
    pub fn verify_channel(
        &self,
        token: &str,
        user: &str,
        channel: &ChannelName,
    ) -> Result<(), TokenError> {
        let claims = self.claims(token)?;
        if claims.sub != user {
            return Err(TokenError::Mismatch(
                "the channel token is for another user",
            ));
        }
        if claims.channel.as_deref() != Some(channel.as_str()) {
            return Err(TokenError::Mismatch(
                "the channel token is for another channel",
            ));
        }
        Ok(())
    }

    /// Checks signature and time and reads the claims.
    fn claims(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| header_error(token, &e))?;
        let keys = Arc::clone(&self.keys.read());
        if !keys.algorithms().contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let Some(key) = keys.find(header.alg, header.kid.as_deref()) else {
            return Err(TokenError::Signature);
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.settings.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| claims_error(&e))
    }
}

/// A header that did not parse: `alg: none` (or another algorithm the library does not
/// know) gets its own code, since it is the classic forgery attempt.
fn header_error(token: &str, error: &jsonwebtoken::errors::Error) -> TokenError {
    let alg = token.split('.').next().and_then(|part| {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()?;
        let header: serde_json::Value = serde_json::from_slice(&json).ok()?;
        header.get("alg")?.as_str().map(str::to_owned)
    });
    match alg {
        Some(alg) => TokenError::Algorithm(format!("{alg:?}")),
        None => TokenError::Malformed(error.to_string()),
    }
}

fn claims_error(error: &jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => TokenError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenError::Algorithm("for this key".into())
        }
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::Audience,
        _ => TokenError::Malformed(error.to_string()),
    }
}

#[cfg(test)]
mod tests;
