//! The node, the core: policy that spans sessions, the hub and the bus. It holds the
//! connection registry, turns a channel's first/last local subscriber into a bus
//! (un)subscription, publishes through the bus, and hears back from the bus through
//! [`BusEvents`] (`events`). Knows nothing of sockets or wire formats.

mod dedupe;
mod directory;
mod drain;
mod events;
mod presence;
mod recovery;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::Auth;
use crate::bus::directory::Directory;
use crate::bus::envelope::Envelope;
use crate::bus::history::{History, HistoryPolicy, Page, Query};
use crate::bus::memory::MemoryBus;
use crate::bus::presence::{MemoryPresence, Presence};
use crate::bus::redis::RedisBus;
use crate::bus::{Bus, BusError, BusEvents, Published};
use crate::channel::ChannelName;
use crate::conn::{Conn, ConnId};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::settings::{BusKind, Settings};
use crate::wire::WireFormat;

const CHANNEL_LOCKS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Bus(#[from] BusError),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid value for `redis_url`")]
    RedisUrl(#[source] redis::RedisError),
    #[error("cannot load the auth keys")]
    Auth(#[from] crate::auth::KeyError),
    #[error("cannot load the TLS certificate")]
    Tls(#[from] crate::tls::TlsError),
}

pub struct Node {
    pub id: String,
    /// Tells this run of the node from the ones before it (the node id may be fixed and
    /// connection counters restart at 1): part of every client id, so a client of this run
    /// never takes the presence entry of one before a restart.
    pub boot: String,
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Checks tokens; `None` when no key is configured and every client is anonymous.
    pub auth: Option<Arc<Auth>>,
    /// Native TLS on the main port; `None` when off (or terminated by a load balancer).
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Connections held, in all and per source address: checked before an upgrade.
    pub addresses: Arc<crate::transport::admission::Addresses>,
    /// Publish budgets of `POST /rpc` clients, by address.
    pub http_budgets: crate::transport::rpc::Budgets,
    /// Bumped on SIGHUP: whatever serves from files (keys, certificates) reads them again.
    pub reload: tokio::sync::watch::Sender<u64>,
    bus: Arc<dyn Bus>,
    /// The same bus, as the keeper of channel history.
    history: Arc<dyn History>,
    /// Who is in which channel, cluster-wide.
    presence: Arc<dyn Presence>,
    /// Channel counts cluster-wide, and orders for every node.
    directory: Arc<dyn Directory>,
    /// This node's own clients in channels with presence: channel → client id → info.
    members: Mutex<HashMap<ChannelName, HashMap<String, Bytes>>>,
    /// This node, for tasks it spawns on its own behalf (recovery after an outage).
    me: Weak<Node>,
    conns: Mutex<HashMap<ConnId, Arc<Conn>>>,
    /// Serialises a channel's first-subscriber/last-subscriber transitions with the bus
    /// call they cause, so a subscribe can never overtake the unsubscribe before it.
    /// Striped: two channels may share a lock, which is harmless.
    channel_locks: Box<[tokio::sync::Mutex<()>]>,
    lock_hasher: std::collections::hash_map::RandomState,
    /// Ids of recent messages that carried one, to drop a backend's retried publish.
    recent_ids: dedupe::RecentIds,
    /// Channels whose missed messages the node is reading back after a bus outage, with
    /// the live messages that arrived meanwhile; `recovering_count` lets the hot path skip
    /// the lock while there are none.
    recovering: Mutex<HashMap<ChannelName, Vec<Envelope>>>,
    recovering_count: AtomicUsize,
    draining: AtomicBool,
    /// Cancelled when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Stops the bus, last, once no client needs it any more.
    bus_stop: CancellationToken,
    /// Every connection task and the bus supervisor; shutdown waits on it.
    pub tasks: TaskTracker,
}

/// The bus to build, decided (and its settings checked) before the node exists.
enum BusPlan {
    Memory,
    Redis(Box<crate::bus::redis::source::Source>),
}

impl Node {
    pub fn new(settings: Settings) -> Result<Arc<Self>, StartError> {
        let plan = match settings.bus {
            BusKind::Memory => BusPlan::Memory,
            BusKind::RedisCluster => {
                BusPlan::Redis(Box::new(crate::bus::redis::source::Source::Cluster(
                    settings
                        .redis_url
                        .split(',')
                        .map(|seed| seed.trim().to_string())
                        .collect(),
                )))
            }
            BusKind::Redis => BusPlan::Redis(Box::new(
                crate::bus::redis::source::Source::parse(settings.redis_url.as_str())
                    .map_err(StartError::RedisUrl)?,
            )),
        };
        let auth = Auth::new(&settings.auth)?.map(Arc::new);
        let tls = crate::tls::Tls::new(&settings.tls)?.map(Arc::new);
        let http_budgets = crate::transport::rpc::Budgets::new(
            settings.limits.publish_rate,
            settings.limits.publish_burst,
        );
        let addresses = crate::transport::admission::Addresses::new(
            settings.limits.max_connections,
            settings.limits.max_connections_per_ip,
        );
        // The bus reports to the node it belongs to: it gets a weak handle to it.
        let node = Arc::new_cyclic(|me: &Weak<Node>| {
            let metrics = Arc::new(Metrics::default());
            let id = settings.node_id_or_generated();
            let tasks = TaskTracker::new();
            let bus_stop = CancellationToken::new();
            let events: Weak<dyn BusEvents> = me.clone();
            type Ports = (
                Arc<dyn Bus>,
                Arc<dyn History>,
                Arc<dyn Presence>,
                Arc<dyn Directory>,
            );
            let (bus, history, presence, directory): Ports = match plan {
                BusPlan::Memory => {
                    let presence = Arc::new(MemoryPresence::new(events.clone()));
                    let bus = Arc::new(MemoryBus::new(events, Arc::clone(&metrics)));
                    (bus.clone(), bus.clone(), presence, bus)
                }
                BusPlan::Redis(source) => {
                    let bus = Arc::new(RedisBus::start(
                        *source,
                        settings.redis.clone(),
                        settings.keeps_history(),
                        &id,
                        events,
                        Arc::clone(&metrics),
                        &tasks,
                        bus_stop.clone(),
                    ));
                    (bus.clone(), bus.clone(), bus.clone(), bus)
                }
            };
            Self {
                id,
                boot: format!("{:06x}", fastrand::u32(..0x0100_0000)),
                hub: Arc::new(Hub::new(Arc::clone(&metrics))),
                settings: Arc::new(settings),
                metrics,
                auth,
                tls,
                addresses,
                http_budgets,
                reload: tokio::sync::watch::Sender::new(0),
                bus,
                history,
                presence,
                directory,
                members: Mutex::new(HashMap::new()),
                me: me.clone(),
                conns: Mutex::new(HashMap::new()),
                channel_locks: (0..CHANNEL_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                lock_hasher: Default::default(),
                recent_ids: dedupe::RecentIds::default(),
                recovering: Mutex::new(HashMap::new()),
                recovering_count: AtomicUsize::new(0),
                draining: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
                bus_stop,
                tasks,
            }
        });
        let every = node.settings.presence_ttl() / 3;
        let stop = node.bus_stop.clone();
        node.tasks
            .spawn(presence::refresh_loop(Arc::downgrade(&node), every, stop));
        let stop = node.bus_stop.clone();
        node.tasks
            .spawn(directory::report_loop(Arc::downgrade(&node), stop));
        node.watch_keys();
        node.watch_certificate();
        Ok(node)
    }

    /// Reads the TLS certificate and key again when they change or on SIGHUP.
    fn watch_certificate(&self) {
        let Some(tls) = self.tls.clone() else {
            return;
        };
        self.tasks.spawn(crate::reload::watch_files(
            "tls certificate",
            tls.files(),
            self.reload.subscribe(),
            self.bus_stop.clone(),
            move || tls.reload().map_err(Into::into),
        ));
    }

    /// Reads the JWKS and public key files again when they change or on SIGHUP.
    fn watch_keys(&self) {
        let Some(auth) = self.auth.clone() else {
            return;
        };
        let a = &self.settings.auth;
        let files: Vec<_> = [&a.jwks_file, &a.public_key_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if files.is_empty() {
            return;
        }
        self.tasks.spawn(crate::reload::watch_files(
            "auth keys",
            files,
            self.reload.subscribe(),
            self.bus_stop.clone(),
            move || auth.reload().map_err(Into::into),
        ));
    }

    /// A new client connection speaking `wire`, with the outbox bounds of the settings.
    pub fn new_conn(&self, wire: WireFormat) -> Arc<Conn> {
        let limits = &self.settings.limits;
        Arc::new(Conn::new(
            wire,
            limits.outbox_max_bytes,
            limits.outbox_max_frames,
            Arc::clone(&self.metrics),
        ))
    }

    /// Registers a connection, unless the node is full or draining.
    pub fn register(&self, conn: &Arc<Conn>) -> bool {
        let mut conns = self.conns.lock();
        if conns.len() >= self.settings.limits.max_connections || self.is_draining() {
            return false;
        }
        conns.insert(conn.id, Arc::clone(conn));
        self.metrics.connections[conn.wire.framing.index()].inc();
        self.metrics.connections_total.inc();
        true
    }

    pub fn deregister(&self, id: ConnId) {
        if let Some(conn) = self.conns.lock().remove(&id) {
            self.metrics.connections[conn.wire.framing.index()].dec();
        }
    }

    pub fn connection_count(&self) -> usize {
        self.conns.lock().len()
    }

    fn channel_lock(&self, channel: &ChannelName) -> &tokio::sync::Mutex<()> {
        &self.channel_locks[self.lock_hasher.hash_one(channel) as usize % CHANNEL_LOCKS]
    }

    /// Adds a local subscriber; the channel's first one subscribes the node on the bus,
    /// and if the bus refuses, the subscriber is removed again.
    async fn add_subscriber(
        &self,
        channel: &ChannelName,
        conn: &Arc<Conn>,
    ) -> Result<(), NodeError> {
        let _guard = self.channel_lock(channel).lock().await;
        if self.hub.add(channel, conn)
            && let Err(error) = self.bus.subscribe(channel).await
        {
            self.hub.remove(channel, conn.id);
            return Err(error.into());
        }
        self.metrics.subscriptions.inc();
        Ok(())
    }

    /// Removes a local subscriber; the channel's last one unsubscribes the node on the bus.
    pub async fn unsubscribe(&self, channel: &ChannelName, conn: ConnId) {
        let _guard = self.channel_lock(channel).lock().await;
        if self.hub.remove(channel, conn)
            && let Err(error) = self.bus.unsubscribe(channel).await
        {
            // The bus drops its own subscriptions when its connection goes away, and a
            // stale one only costs traffic the hub discards, so this is not fatal.
            let error = &error as &dyn std::error::Error;
            tracing::warn!(error, %channel, "bus unsubscribe failed");
        }
        self.metrics.subscriptions.dec();
    }

    /// The history policy of a channel's namespace, when it keeps history.
    pub fn history_policy(&self, channel: &ChannelName) -> Option<HistoryPolicy> {
        self.settings
            .namespace(channel.namespace())
            .and_then(|policy| policy.history())
    }

    /// Reads a channel's history.
    pub async fn history(
        &self,
        channel: &ChannelName,
        policy: &HistoryPolicy,
        query: Query,
        limit: usize,
    ) -> Result<Page, NodeError> {
        Ok(self.history.read(channel, policy, query, limit).await?)
    }

    /// Publishes cluster-wide (this node included) through the bus, into the channel's
    /// history where it keeps one.
    pub async fn publish(
        &self,
        channel: &ChannelName,
        data: Bytes,
    ) -> Result<Published, NodeError> {
        let span =
            tracing::info_span!("roomcast.publish", %channel, node = %self.id, bytes = data.len());
        let envelope = Envelope {
            data,
            ts: Some(crate::clock::unix_millis()),
            node: Some(self.id.clone()),
            traceparent: crate::telemetry::traceparent(&span),
            ..Envelope::default()
        };
        let history = self.history_policy(channel);
        let published = self
            .bus
            .publish(channel, envelope, history.as_ref())
            .instrument(span)
            .await?;
        self.metrics.messages_published.inc();
        Ok(published)
    }

    /// Ready to take connections: not draining and the bus is up.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.bus.is_ready()
    }
}
