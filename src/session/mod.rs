//! One client's protocol state: what its handshake showed ([`ConnInfo`]), its
//! subscriptions and its budgets. Decodes each message into a command, runs it (one file
//! per command) and queues the reply. Owns no socket: a transport feeds it payloads and
//! writes what its outbox holds.

mod access;
mod auth;
mod budget;
mod error;
mod history;
mod info;
mod ping;
mod presence;
mod publish;
mod subscribe;
mod subscriptions;
mod unsubscribe;

use std::sync::Arc;

use crate::auth::Identity;
use crate::channel::ChannelName;
use crate::conn::Conn;
use crate::node::Node;
use crate::protocol::{Command, ReplyData, ServerMsg};
use crate::settings::NamespacePolicy;
use subscriptions::Subscriptions;

pub use budget::TokenBucket;
pub use error::CommandError;
pub use info::ConnInfo;

/// What a command answers on success: `ok`, with data for ops that return some.
pub type Reply = Option<ReplyData>;

pub struct Session {
    node: Arc<Node>,
    conn: Arc<Conn>,
    /// What the handshake saw, until the connection is established (`start`): the place
    /// where auth reads credentials. Boxed and then released, because an idle connection
    /// should not pay for its handshake (measured: 120 bytes inline, kept three times
    /// over in the connection's future before it was boxed).
    handshake: Option<Box<ConnInfo>>,
    subscriptions: Subscriptions,
    publish_budget: budget::TokenBucket,
    /// Subscribes and unsubscribes share one budget: each costs the node a bus round trip
    /// when it is a channel's first or last subscriber here.
    subscribe_budget: budget::TokenBucket,
    /// Who the client is, once a token said so; boxed: most connections of a public
    /// deployment are anonymous, and an idle connection should not pay for it.
    identity: Option<Box<Identity>>,
    /// What is due next: the end of the window to authenticate in, or the token's expiry.
    deadline: Option<auth::Deadline>,
    /// A session that lives for one request (a long poll): it receives, but does not
    /// become a presence member, or each poll would announce a join and a leave.
    transient: bool,
}

impl Session {
    pub fn new(node: Arc<Node>, conn: Arc<Conn>, handshake: Box<ConnInfo>) -> Self {
        let limits = &node.settings.limits;
        let publish_budget = budget::TokenBucket::new(limits.publish_rate, limits.publish_burst);
        let subscribe_budget =
            budget::TokenBucket::new(limits.subscribe_rate, limits.subscribe_burst);
        Self {
            node,
            conn,
            handshake: Some(handshake),
            subscriptions: Subscriptions::default(),
            publish_budget,
            subscribe_budget,
            identity: None,
            deadline: None,
            transient: false,
        }
    }

    /// A session acting for a backend (the HTTP API): its identity may use every channel,
    /// as a token granting `*` for everything would.
    pub fn trusted(node: Arc<Node>, conn: Arc<Conn>, handshake: Box<ConnInfo>) -> Self {
        let mut session = Self::new(node, conn, handshake);
        let all = || vec![wildmatch::WildMatch::new("*")];
        session.identity = Some(Box::new(Identity {
            user: Box::from("api"),
            expires: u64::MAX,
            info: None,
            grants: crate::auth::Grants {
                subscribe: all(),
                publish: all(),
                history: all(),
                presence: all(),
            },
        }));
        session
    }

    /// What the handshake saw, while the connection is being established.
    pub fn handshake(&self) -> Option<&ConnInfo> {
        self.handshake.as_deref()
    }

    /// Makes this a session for one request (see `transient`).
    pub fn set_transient(&mut self) {
        self.transient = true;
    }

    /// This connection's queue, for transports that drain it themselves.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// This connection's id, as `welcome` and presence show it: unique across the node's
    /// restarts too.
    fn client_id(&self) -> String {
        format!("{}-{}-{}", self.node.id, self.node.boot, self.conn.id)
    }

    /// Establishes the connection: checks the handshake's token, sends `welcome`, the
    /// first thing every accepted client receives, and lets go of the handshake's details.
    /// A refused token gets an `error` and a close (4002) instead.
    pub fn start(&mut self) {
        if let Err(code) = self.authenticate_handshake() {
            self.handshake = None;
            return self.conn.close(code);
        }
        self.welcome();
    }

    /// Sends `welcome` and lets go of the handshake's details: the connection is
    /// established (after [`Self::authenticate`], for transports that answer a refused
    /// token over HTTP instead).
    pub fn welcome(&mut self) {
        self.handshake = None;
        let client = self.client_id();
        let identity = self.identity.as_deref();
        self.send(&ServerMsg::Welcome {
            client: &client,
            node: &self.node.id,
            version: 1,
            heartbeat: self.node.settings.heartbeat.interval_ms.div_ceil(1000),
            user: identity.map(|i| &*i.user),
            expires: identity.map(|i| i.expires),
        });
    }

    /// Handles one complete client message and queues its reply.
    pub async fn handle(&mut self, payload: &[u8]) {
        let cmd = match self.conn.wire.codec.decode(payload) {
            Ok(cmd) => cmd,
            Err(rejection) => {
                let id = rejection.id;
                return self.reject(id, &CommandError::Decode(rejection));
            }
        };
        let id = cmd.id();
        match self.execute(cmd).await {
            Ok(data) => self.send(&ServerMsg::Ok { id, data }),
            Err(error) => self.reject(Some(id), &error),
        }
    }

    /// Runs one command and returns its reply instead of queueing it: for transports
    /// that answer over HTTP (`/rpc`) or act for the client (SSE subscribing to the
    /// channels in its URL).
    pub async fn run(&mut self, cmd: Command) -> Result<Reply, CommandError> {
        self.execute(cmd).await
    }

    async fn execute(&mut self, cmd: Command) -> Result<Reply, CommandError> {
        match cmd {
            Command::Subscribe {
                channel,
                recover,
                info,
                join_leave,
                token,
                ..
            } => {
                let options = subscribe::Options {
                    recover,
                    info,
                    join_leave,
                    token,
                };
                self.subscribe(channel, options).await
            }
            Command::Unsubscribe { channel, .. } => self.unsubscribe(channel).await,
            Command::Publish { channel, data, .. } => self.publish(channel, data).await,
            Command::History {
                channel,
                since,
                before,
                limit,
                ..
            } => self.history(channel, since, before, limit).await,
            Command::Presence {
                channel,
                cursor,
                limit,
                ..
            } => self.presence(channel, cursor, limit).await,
            Command::PresenceCount { channel, .. } => self.presence_count(channel).await,
            Command::Ping { .. } => self.ping(),
            Command::Connect { token, .. } => self.connect(&token),
            Command::Refresh { token, .. } => self.refresh(&token),
        }
    }

    /// Answers with an `error` reply; the connection stays open.
    pub fn reject(&self, id: Option<u64>, error: &CommandError) {
        let code = error.code();
        self.node.metrics.error(code);
        error.log(id);
        let message = error.to_string();
        self.send(&ServerMsg::Error {
            id,
            code,
            message: &message,
        });
    }

    /// The policy of the channel's namespace; unknown namespaces are refused.
    fn policy(&self, channel: &ChannelName) -> Result<&NamespacePolicy, CommandError> {
        self.node
            .settings
            .namespace(channel.namespace())
            .ok_or_else(|| CommandError::UnknownNamespace(channel.namespace().to_string()))
    }

    /// Queues a reply. A full outbox has already cut the connection off as a slow
    /// consumer, and a closing one needs no reply: nothing is left to do either way.
    fn send(&self, msg: &ServerMsg<'_>) {
        let _ = self.conn.push(self.conn.wire.message(msg));
    }

    /// Leaves every channel; called once when the connection ends, however it ends.
    pub async fn end(&mut self) {
        for channel in self.subscriptions.take() {
            self.leave(&channel).await;
        }
    }

    /// Unsubscribes from a channel this session is subscribed to.
    async fn leave(&self, channel: &ChannelName) {
        self.node.unsubscribe(channel, self.conn.id).await;
        if self.node.has_presence(channel) && !self.transient {
            self.node.presence_leave(channel, &self.client_id()).await;
        }
    }
}
