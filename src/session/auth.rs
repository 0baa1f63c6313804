//! Authentication of a connection: the token its handshake carried (a
//! `roomcast.bearer.<jwt>` subprotocol entry, `Authorization: Bearer`, or `?token=` when
//! enabled), the `connect` and `refresh` ops, and the deadlines a token sets: the
//! `expiring` push, then the close when it lapses.

use std::time::Duration;

use tokio::time::Instant;

use super::{CommandError, Reply, Session};
use crate::auth::{Identity, TokenError};
use crate::protocol::{BEARER_PREFIX, CloseCode, ReplyData, ServerMsg};

/// What happens next at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    /// The connection must have authenticated by then.
    Authenticate(Instant),
    /// The `expiring` push is due.
    Warn(Instant),
    /// The token lapses.
    Expire(Instant),
}

impl Session {
    /// The token the handshake carried, if auth looks for one there.
    fn handshake_token(&self) -> Option<&str> {
        let info = self.handshake.as_deref()?;
        let from_protocol = info
            .subprotocols
            .iter()
            .find_map(|p| p.strip_prefix(BEARER_PREFIX));
        let from_header = || {
            info.authorization
                .as_deref()
                .and_then(|h| h.strip_prefix("Bearer "))
        };
        // EventSource and plain HTTP requests from a browser cannot set headers: the query
        // is their only way.
        let query_allowed = info.transport != "ws"
            || self
                .node
                .auth
                .as_ref()
                .is_some_and(|a| a.settings().query_param);
        let from_query = || {
            info.query
                .as_deref()?
                .split('&')
                .find_map(|pair| pair.strip_prefix("token="))
                .filter(|_| query_allowed)
        };
        from_protocol.or_else(from_header).or_else(from_query)
    }

    /// Checks the token the request carried, if any: the client is then that user. No
    /// token leaves it anonymous (with a deadline to `connect` by, on a node that admits
    /// no anonymous clients); a refused one is an error whose code says why.
    pub fn authenticate(&mut self) -> Result<(), CommandError> {
        let Some(auth) = self.node.auth.as_ref() else {
            return Ok(());
        };
        let Some(token) = self.handshake_token() else {
            if !self.node.settings.admits_anonymous() {
                let wait = Duration::from_millis(auth.settings().connect_timeout_ms);
                self.deadline = Some(Deadline::Authenticate(Instant::now() + wait));
            }
            return Ok(());
        };
        let identity = auth.verify(token, self.node.settings.presence.max_info_bytes)?;
        self.set_identity(identity);
        Ok(())
    }

    /// [`Self::authenticate`] for a WebSocket, before `welcome`: a refused token is
    /// answered with an `error` and the close code to end the connection with.
    pub(super) fn authenticate_handshake(&mut self) -> Result<(), CloseCode> {
        self.authenticate().map_err(|error| {
            self.reject(None, &error);
            CloseCode::Unauthorized
        })
    }

    /// `connect`: authenticates an anonymous connection.
    pub(super) fn connect(&mut self, token: &str) -> Result<Reply, CommandError> {
        let Some(auth) = self.node.auth.as_ref() else {
            return Err(CommandError::NoAuth);
        };
        if self.identity.is_some() {
            return Err(CommandError::AlreadyAuthenticated);
        }
        let identity = auth.verify(token, self.node.settings.presence.max_info_bytes)?;
        Ok(Some(self.set_identity(identity)))
    }

    /// `refresh`: a new token for the same user moves the expiry.
    pub(super) fn refresh(&mut self, token: &str) -> Result<Reply, CommandError> {
        let Some(auth) = self.node.auth.as_ref() else {
            return Err(CommandError::NoAuth);
        };
        let Some(current) = self.identity.as_deref() else {
            return Err(CommandError::Unauthorized(
                "`connect` first, then `refresh`",
            ));
        };
        let identity = auth.verify(token, self.node.settings.presence.max_info_bytes)?;
        if identity.user != current.user {
            return Err(TokenError::Mismatch("the new token is for another user").into());
        }
        Ok(Some(self.set_identity(identity)))
    }

    fn set_identity(&mut self, identity: Identity) -> ReplyData {
        let expires = identity.expires;
        let reply = ReplyData::Auth {
            user: identity.user.to_string(),
            expires,
        };
        self.conn.set_user(&identity.user);
        self.identity = Some(Box::new(identity));
        let warning = self
            .node
            .auth
            .as_ref()
            .map_or(0, |a| a.settings().expiry_warning_s);
        let leeway = self.node.auth.as_ref().map_or(0, |a| a.settings().leeway_s);
        let now_s = crate::clock::unix_millis() / 1000;
        let until = |at: u64| Instant::now() + Duration::from_secs(at.saturating_sub(now_s));
        let lapse = expires.saturating_add(leeway);
        self.deadline = Some(if expires.saturating_sub(warning) > now_s {
            Deadline::Warn(until(expires.saturating_sub(warning)))
        } else {
            Deadline::Expire(until(lapse))
        });
        reply
    }

    /// When the session next needs [`Session::on_deadline`], if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline? {
            Deadline::Authenticate(at) | Deadline::Warn(at) | Deadline::Expire(at) => Some(at),
        }
    }

    /// Completes when [`Self::deadline`] (as it is now) comes; never without one.
    pub fn due(&self) -> impl std::future::Future<Output = ()> + use<> {
        let deadline = self.deadline();
        async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        }
    }

    /// Runs what was due: the `expiring` push, or the close of a connection whose token
    /// lapsed or that never authenticated.
    pub fn on_deadline(&mut self) {
        match self.deadline.take() {
            Some(Deadline::Authenticate(_)) => self.conn.close(CloseCode::Unauthorized),
            Some(Deadline::Warn(_)) => {
                let Some(identity) = self.identity.as_deref() else {
                    return;
                };
                let expires = identity.expires;
                self.send(&ServerMsg::Expiring { expires });
                let leeway = self.node.auth.as_ref().map_or(0, |a| a.settings().leeway_s);
                let now_s = crate::clock::unix_millis() / 1000;
                let left = expires.saturating_add(leeway).saturating_sub(now_s);
                self.deadline = Some(Deadline::Expire(Instant::now() + Duration::from_secs(left)));
            }
            Some(Deadline::Expire(_)) => self.conn.close(CloseCode::TokenExpired),
            None => {}
        }
    }
}
