//! One client's protocol state: its subscriptions and publish budget. Turns decoded
//! commands into node calls and replies. Owns no socket; the transport feeds it messages.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use crate::channel::ChannelName;
use crate::conn::{Conn, PushError};
use crate::node::{Node, NodeError};
use crate::protocol::{CloseCode, Command, ErrorCode, Rejection, ServerMsg};

pub struct Session {
    node: Arc<Node>,
    conn: Arc<Conn>,
    subscriptions: HashSet<ChannelName>,
    publish_budget: TokenBucket,
}

impl Session {
    pub fn new(node: Arc<Node>, conn: Arc<Conn>) -> Self {
        let limits = &node.settings.limits;
        let publish_budget = TokenBucket::new(limits.publish_rate, limits.publish_burst);
        Self {
            node,
            conn,
            subscriptions: HashSet::new(),
            publish_budget,
        }
    }

    /// Sends `welcome`, the first thing every client receives.
    pub fn welcome(&self) {
        let client = format!("{}-{}", self.node.id, self.conn.id);
        self.send(&ServerMsg::Welcome {
            client: &client,
            node: &self.node.id,
            version: 1,
            heartbeat: self.node.settings.heartbeat.interval_ms.div_ceil(1000),
        });
    }

    /// Handles one complete client message and queues its reply.
    pub async fn handle(&mut self, payload: &[u8]) {
        let result = match self.conn.codec.decode(payload) {
            Ok(cmd) => {
                let id = cmd.id();
                self.execute(cmd).await.map(|()| id)
            }
            Err(rejection) => Err(rejection),
        };
        match result {
            Ok(id) => self.send(&ServerMsg::Ok { id }),
            Err(rejection) => self.reject(&rejection),
        }
    }

    /// Answers with an `error` reply; the connection stays open.
    pub fn reject(&self, rejection: &Rejection) {
        self.node.metrics.error(rejection.code);
        tracing::debug!(code = rejection.code.as_str(), id = ?rejection.id, message = %rejection.message, "request rejected");
        self.send(&ServerMsg::from(rejection));
    }

    async fn execute(&mut self, cmd: Command) -> Result<(), Rejection> {
        match cmd {
            Command::Subscribe { id, channel } => self.subscribe(id, channel).await,
            Command::Unsubscribe { channel, .. } => {
                if self.subscriptions.remove(&channel) {
                    self.node.unsubscribe(&channel, self.conn.id).await;
                }
                Ok(())
            }
            Command::Publish { id, channel, data } => {
                let policy = self.policy(id, &channel)?;
                if !policy.publish {
                    return Err(Rejection::new(
                        Some(id),
                        ErrorCode::Forbidden,
                        format!(
                            "clients may not publish to namespace {:?}",
                            channel.namespace()
                        ),
                    ));
                }
                if data.len() > self.node.settings.limits.max_message_size {
                    return Err(Rejection::new(
                        Some(id),
                        ErrorCode::TooLarge,
                        "data is too large",
                    ));
                }
                if !self.publish_budget.take(Instant::now()) {
                    return Err(Rejection::new(
                        Some(id),
                        ErrorCode::RateLimited,
                        "publish rate limit reached; slow down",
                    ));
                }
                self.node
                    .publish(channel, data)
                    .await
                    .map_err(|e| node_rejection(id, e))
            }
            Command::Ping { .. } => Ok(()),
        }
    }

    async fn subscribe(&mut self, id: u64, channel: ChannelName) -> Result<(), Rejection> {
        self.policy(id, &channel)?;
        if self.subscriptions.contains(&channel) {
            return Ok(());
        }
        if self.subscriptions.len() >= self.node.settings.limits.max_subscriptions {
            return Err(Rejection::new(
                Some(id),
                ErrorCode::LimitExceeded,
                format!(
                    "at most {} subscriptions per connection",
                    self.node.settings.limits.max_subscriptions
                ),
            ));
        }
        self.node
            .subscribe(&channel, &self.conn)
            .await
            .map_err(|e| node_rejection(id, e))?;
        self.subscriptions.insert(channel);
        Ok(())
    }

    fn policy(
        &self,
        id: u64,
        channel: &ChannelName,
    ) -> Result<&crate::settings::NamespacePolicy, Rejection> {
        self.node
            .settings
            .namespace(channel.namespace())
            .ok_or_else(|| {
                Rejection::new(
                    Some(id),
                    ErrorCode::BadChannel,
                    format!("unknown namespace {:?}", channel.namespace()),
                )
            })
    }

    fn send(&self, msg: &ServerMsg<'_>) {
        if let Err(PushError::Full) = self.conn.push(self.conn.codec.encode(msg)) {
            // The client sends requests but does not read the replies.
            self.node.metrics.slow_consumers.inc();
            self.conn.abort(CloseCode::SlowConsumer);
        }
    }

    /// Leaves every channel; called once when the connection ends, however it ends.
    pub async fn end(mut self) {
        for channel in std::mem::take(&mut self.subscriptions) {
            self.node.unsubscribe(&channel, self.conn.id).await;
        }
    }
}

fn node_rejection(id: u64, error: NodeError) -> Rejection {
    match error {
        NodeError::Bus(e) => Rejection::new(Some(id), ErrorCode::Unavailable, e.to_string()),
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0);
        b.last = start;
        assert!((0..3).all(|_| b.take(start)));
        assert!(!b.take(start));
        assert!(b.take(start + Duration::from_millis(100)));
        assert!(!b.take(start + Duration::from_millis(100)));
    }
}
