//! The node: ties the hub, the bus and the connection registry together, and owns the
//! rules that span them (first/last subscriber ↔ bus subscription, readiness, drain).
//! Knows nothing of sockets or wire formats.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::bus::envelope::Envelope;
use crate::bus::memory::MemoryBus;
use crate::bus::redis::RedisBus;
use crate::bus::{Bus, BusError};
use crate::channel::ChannelName;
use crate::conn::{Conn, ConnId};
use crate::hub::{Delivery, Hub};
use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::settings::{BusKind, Settings};

const CHANNEL_LOCKS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Bus(#[from] BusError),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid value for `redis_url`: {0}")]
    RedisUrl(#[source] redis::RedisError),
}

pub struct Node {
    pub id: String,
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    bus: Arc<dyn Bus>,
    conns: Mutex<HashMap<ConnId, Arc<Conn>>>,
    /// Serialises a channel's first-subscriber/last-subscriber transitions with the bus
    /// call they cause, so a subscribe can never overtake the unsubscribe before it.
    /// Striped: two channels may share a lock, which is harmless.
    channel_locks: Box<[tokio::sync::Mutex<()>]>,
    lock_hasher: std::collections::hash_map::RandomState,
    draining: AtomicBool,
    /// Cancelled when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Stops the bus, last, once no client needs it any more.
    bus_stop: CancellationToken,
    /// Every connection task and the bus supervisor; shutdown waits on it.
    pub tasks: TaskTracker,
}

impl Node {
    pub fn new(settings: Settings) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(Arc::clone(&metrics)));
        let id = settings.node_id_or_generated();
        let tasks = TaskTracker::new();
        let bus_stop = CancellationToken::new();
        let bus: Arc<dyn Bus> = match settings.bus {
            BusKind::Memory => {
                metrics.bus_connected.set(1);
                Arc::new(MemoryBus::new(Arc::clone(&hub), Arc::clone(&metrics)))
            }
            BusKind::Redis => Arc::new(
                RedisBus::start(
                    &settings.redis_url,
                    settings.redis.clone(),
                    &id,
                    Arc::clone(&hub),
                    Arc::clone(&metrics),
                    &tasks,
                    bus_stop.clone(),
                )
                .map_err(StartError::RedisUrl)?,
            ),
        };
        Ok(Arc::new(Self {
            id,
            settings: Arc::new(settings),
            hub,
            metrics,
            bus,
            conns: Mutex::new(HashMap::new()),
            channel_locks: (0..CHANNEL_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            lock_hasher: Default::default(),
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            bus_stop,
            tasks,
        }))
    }

    /// Registers a connection, unless the node is full or draining.
    pub fn register(&self, conn: &Arc<Conn>) -> bool {
        let mut conns = self.conns.lock();
        if conns.len() >= self.settings.limits.max_connections || self.is_draining() {
            return false;
        }
        conns.insert(conn.id, Arc::clone(conn));
        self.metrics.connections.inc();
        self.metrics.connections_total.inc();
        true
    }

    pub fn deregister(&self, id: ConnId) {
        if self.conns.lock().remove(&id).is_some() {
            self.metrics.connections.dec();
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
    pub async fn subscribe(
        &self,
        channel: &ChannelName,
        conn: &Arc<Conn>,
    ) -> Result<(), NodeError> {
        let _guard = self.channel_lock(channel).lock().await;
        if self.hub.add(channel, conn) {
            if let Err(error) = self.bus.subscribe(channel).await {
                self.hub.remove(channel, conn.id);
                return Err(error.into());
            }
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
            tracing::warn!(%error, %channel, "bus unsubscribe failed");
        }
        self.metrics.subscriptions.dec();
    }

    /// Publishes cluster-wide (this node included) through the bus.
    pub async fn publish(&self, channel: ChannelName, data: Bytes) -> Result<(), NodeError> {
        let span =
            tracing::info_span!("roomcast.publish", %channel, node = %self.id, bytes = data.len());
        let envelope = Envelope {
            data,
            ts: Some(unix_millis()),
            node: Some(self.id.clone()),
            traceparent: crate::telemetry::traceparent(&span),
            ..Envelope::default()
        };
        self.bus
            .publish(Delivery { channel, envelope })
            .instrument(span)
            .await?;
        self.metrics.messages_published.inc();
        Ok(())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ready to take connections: not draining and the bus is up.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.bus.is_ready()
    }

    /// First step of shutdown: not ready, no new client connections.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Closes every connection with 1001, spread evenly over the drain window so that
    /// clients do not all reconnect elsewhere at the same instant.
    pub async fn close_clients(&self) {
        let conns: Vec<Arc<Conn>> = self.conns.lock().values().cloned().collect();
        let window = Duration::from_millis(self.settings.shutdown.drain_window_ms);
        tracing::info!(connections = conns.len(), ?window, "draining");
        let step = window.checked_div(conns.len() as u32).unwrap_or_default();
        let start = tokio::time::Instant::now();
        for (i, conn) in conns.iter().enumerate() {
            tokio::time::sleep_until(start + step * i as u32).await;
            conn.close(CloseCode::GoingAway);
        }
        tokio::time::sleep_until(start + window).await;
    }

    /// Waits for every connection task to end, at most `shutdown.grace_ms`, then drops
    /// whatever is left.
    pub async fn finish(&self) {
        let grace = Duration::from_millis(self.settings.shutdown.grace_ms);
        self.tasks.close();
        let clients_gone = async {
            while self.connection_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(grace, clients_gone).await.is_err() {
            let left: Vec<Arc<Conn>> = self.conns.lock().values().cloned().collect();
            tracing::warn!(
                connections = left.len(),
                "grace period over, dropping the rest"
            );
            for conn in left {
                conn.abort(CloseCode::GoingAway);
            }
        }
        // The bus goes last: clients being drained still receive until they are closed.
        self.bus_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(2), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not finish in time");
        }
    }
}

fn unix_millis() -> u64 {
    unix_micros() / 1000
}

pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
