//! Who may do what on a channel: the namespace's policy for every client, widened by the
//! grants of the connection's token, narrowed for anonymous clients when auth is
//! configured, and for private channels to holders of a channel token.

use super::{CommandError, Session};
use crate::auth::Grants;
use crate::channel::ChannelName;
use crate::settings::NamespacePolicy;

/// A client operation on a channel that policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Subscribe,
    Publish,
    History,
    Presence,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Subscribe => "subscribe",
            Access::Publish => "publish",
            Access::History => "read the history",
            Access::Presence => "read the presence",
        }
    }
}

impl Session {
    /// Decides whether this connection may `access` the channel, and returns its
    /// namespace's policy. A private channel's subscribe also needs `channel_token`.
    pub(super) fn authorize(
        &self,
        access: Access,
        channel: &ChannelName,
        channel_token: Option<&str>,
    ) -> Result<&NamespacePolicy, CommandError> {
        let policy = self.policy(channel)?;
        if let Some(identity) = &self.identity {
            let grants = &identity.grants;
            let granted = match access {
                Access::Subscribe => &grants.subscribe,
                Access::Publish => &grants.publish,
                Access::History => &grants.history,
                Access::Presence => &grants.presence,
            };
            // The backend that signed the token may open any channel to its holder.
            if Grants::allows(granted, channel) {
                return Ok(policy);
            }
        }
        let allowed = match access {
            Access::Subscribe => policy.subscribe,
            Access::Publish => policy.publish,
            Access::History => policy.read_history,
            Access::Presence => policy.read_presence,
        };
        if !allowed {
            return Err(CommandError::Forbidden {
                access,
                namespace: channel.namespace().to_string(),
            });
        }
        let auth_on = self.node.auth.is_some();
        if auth_on && self.identity.is_none() && !policy.anonymous {
            return Err(CommandError::Unauthorized(
                "this namespace needs an authenticated connection",
            ));
        }
        if policy.private {
            self.authorize_private(access, channel, channel_token)?;
        }
        Ok(policy)
    }

    fn authorize_private(
        &self,
        access: Access,
        channel: &ChannelName,
        channel_token: Option<&str>,
    ) -> Result<(), CommandError> {
        if access != Access::Subscribe {
            return if self.subscriptions.contains(channel) {
                Ok(())
            } else {
                Err(CommandError::Unauthorized(
                    "a private channel's members only: subscribe with a channel token first",
                ))
            };
        }
        let (Some(auth), Some(identity)) = (&self.node.auth, &self.identity) else {
            return Err(CommandError::Unauthorized(
                "a private channel needs an authenticated connection",
            ));
        };
        let Some(token) = channel_token else {
            return Err(CommandError::Unauthorized(
                "a private channel needs a channel token (`token`)",
            ));
        };
        auth.verify_channel(token, &identity.user, channel)?;
        Ok(())
    }
}
