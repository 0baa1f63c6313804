//! The Redis bus: one pub/sub connection per node, subscribed only to the channels this
//! node hosts, plus a multiplexed connection for publishing. The supervisor
//! (`bus::supervisor`) keeps the link alive; `link` is what it drives. Nothing else in
//! the node touches Redis.

mod cluster_link;
mod commands;
mod directory;
mod history;
mod link;
mod presence;
mod shard_link;
pub mod source;
mod topology;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::envelope::Envelope;
use super::history::HistoryPolicy;
use super::supervisor::{Backoff, Supervisor};
use super::{Bus, BusError, BusEvents, Published};
use crate::channel::ChannelName;
use crate::metrics::Metrics;
use crate::settings::RedisSettings;

pub struct RedisBus {
    shared: Arc<Shared>,
    ready: Readiness,
}

enum Readiness {
    /// One link's supervisor says.
    Link(Arc<AtomicBool>),
    /// The cluster connection and every shard link say.
    Cluster(Arc<cluster_link::ClusterReady>),
}

struct Shared {
    /// Where to connect: a fixed server, Sentinel's current primary, or a cluster.
    source: source::Source,
    /// A Redis Cluster: sharded pub/sub (`SSUBSCRIBE`, `SPUBLISH`).
    sharded: bool,
    settings: RedisSettings,
    /// `<prefix>:` prepended to every channel name on Redis.
    prefix: String,
    node_id: String,
    probe_channel: String,
    /// Whether some namespace keeps history, so the node needs its Redis Functions.
    load_library: bool,
    /// The node; weak because the node owns the bus.
    events: Weak<dyn BusEvents>,
    metrics: Arc<Metrics>,
    /// Channels the node wants and the current link. One lock, so that the order in which
    /// commands enter a link's queue is the order in which the node asked for them.
    state: Mutex<State>,
    stop: CancellationToken,
    /// Last second an invalid envelope was logged, so a misbehaving backend cannot flood logs.
    last_invalid_log: AtomicU64,
}

#[derive(Default)]
struct State {
    wanted: HashSet<ChannelName>,
    link: Option<LinkHandle>,
}

/// How to reach the live link, while Redis is reachable.
#[derive(Clone)]
struct LinkHandle {
    ctl: mpsc::UnboundedSender<Ctl>,
    publisher: commands::Commands,
}

/// A subscription change for the link to send, in order, on its pub/sub connection.
struct Ctl {
    subscribe: bool,
    channel: String,
    done: Option<oneshot::Sender<Result<(), BusError>>>,
    /// Tell the node the channel is back (recover or `gap`) once it is subscribed: it was
    /// subscribed before and taken away (a Redis Cluster slot that moved).
    back: bool,
    /// How many times a Redis Cluster shard sent it back to the router (`MOVED`).
    rerouted: u8,
}

impl Ctl {
    fn new(
        subscribe: bool,
        channel: String,
        done: Option<oneshot::Sender<Result<(), BusError>>>,
    ) -> Self {
        Self {
            subscribe,
            channel,
            done,
            back: false,
            rerouted: 0,
        }
    }

    /// A resubscription nobody waits on.
    fn subscribe(channel: String) -> Self {
        Self::new(true, channel, None)
    }
}

impl RedisBus {
    /// Starts the supervisor; it connects in the background, so a node starts (not ready)
    /// even while Redis is down. The client was made from a validated URL.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        source: source::Source,
        settings: RedisSettings,
        load_library: bool,
        node_id: &str,
        events: Weak<dyn BusEvents>,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let prefix = format!("{}:", settings.prefix);
        let ready = Arc::new(AtomicBool::new(false));
        let supervisor = Supervisor {
            backoff: Backoff {
                min_ms: settings.reconnect_min_ms,
                max_ms: settings.reconnect_max_ms,
            },
            events: events.clone(),
            metrics: Arc::clone(&metrics),
            ready: Arc::clone(&ready),
            stop: stop.clone(),
        };
        let sharded = matches!(source, source::Source::Cluster(_));
        let shared = Arc::new(Shared {
            sharded,
            source,
            node_id: node_id.to_string(),
            probe_channel: format!("{prefix}$probe:{node_id}"),
            load_library,
            prefix,
            settings,
            events,
            metrics,
            state: Mutex::new(State::default()),
            stop,
            last_invalid_log: AtomicU64::new(0),
        });
        if shared.sharded {
            let ready = Arc::new(cluster_link::ClusterReady::default());
            tasks.spawn(cluster_link::run(
                Arc::clone(&shared),
                Arc::clone(&ready),
                tasks.clone(),
                supervisor.backoff,
            ));
            return Self {
                shared,
                ready: Readiness::Cluster(ready),
            };
        }
        tasks.spawn(supervisor.run(Arc::new(link::RedisLink(Arc::clone(&shared)))));
        Self {
            shared,
            ready: Readiness::Link(ready),
        }
    }
}

impl Shared {
    fn redis_name(&self, channel: &ChannelName) -> String {
        format!("{}{channel}", self.prefix)
    }

    /// `SPUBLISH` on a Redis Cluster (sharded pub/sub: a message reaches only its
    /// channel's shard), `PUBLISH` elsewhere.
    fn publish_command(&self) -> &'static str {
        if self.sharded { "SPUBLISH" } else { "PUBLISH" }
    }

    /// The channel a Redis channel name carries, if it is one of the node's channels.
    fn channel_of(&self, redis_name: &str) -> Option<ChannelName> {
        ChannelName::parse(redis_name.strip_prefix(&self.prefix)?).ok()
    }

    /// Whether the node still wants the Redis channel `redis_name` subscribed.
    fn still_wanted(&self, redis_name: &str) -> bool {
        redis_name == self.control_channel()
            || self
                .channel_of(redis_name)
                .is_some_and(|c| self.state.lock().wanted.contains(&c))
    }

    /// Tells the node that `redis_name` is subscribed again after it was taken away.
    fn report_back(&self, redis_name: &str) {
        if let (Some(channel), Some(events)) = (self.channel_of(redis_name), self.events.upgrade())
        {
            self.metrics.bus_reconnects.inc();
            events.link_back(&[channel]);
        }
    }

    /// How long any Redis command may take before it counts as failed.
    fn response_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.settings.response_timeout_ms)
    }
}

impl RedisBus {
    /// The publishing connection, while the link is up and subscribed. On a cluster,
    /// while the cluster connection is up: a shard that is down fails its own commands,
    /// and the other shards' channels carry on.
    fn publisher(&self) -> Result<commands::Commands, BusError> {
        let link = self.shared.state.lock().link.clone();
        let usable = match &self.ready {
            Readiness::Link(ready) => ready.load(Ordering::Relaxed),
            Readiness::Cluster(ready) => ready.is_connected(),
        };
        match link {
            Some(link) if usable => Ok(link.publisher),
            _ => Err(BusError::NotConnected),
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(
        &self,
        channel: &ChannelName,
        envelope: Envelope,
        history: Option<&HistoryPolicy>,
    ) -> Result<Published, BusError> {
        let mut publisher = self.publisher()?;
        let name = self.shared.redis_name(channel);
        let Some(policy) = history else {
            redis::cmd(self.shared.publish_command())
                .arg(name)
                .arg(envelope.encode())
                .query_async::<i64>(&mut publisher)
                .await?;
            return Ok(Published::default());
        };
        let (offset, epoch): (u64, String) = redis::cmd("FCALL")
            .arg("roomcast_publish")
            .arg(1)
            .arg(name)
            .arg(envelope.encode())
            .arg(policy.size)
            .arg(policy.ttl.as_secs().max(1))
            .query_async(&mut publisher)
            .await?;
        Ok(Published {
            position: Some(super::StreamPosition {
                offset,
                epoch: epoch.into(),
            }),
        })
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BusError> {
        self.shared.metrics.bus_subscribes.inc();
        let rx = {
            let mut state = self.shared.state.lock();
            state.wanted.insert(channel.clone());
            // While Redis is down the channel is only remembered: the link subscribes it
            // when it is back, and the node hears of it then.
            let Some(link) = &state.link else {
                return Ok(());
            };
            let (tx, rx) = oneshot::channel();
            let ctl = Ctl::new(true, self.shared.redis_name(channel), Some(tx));
            if link.ctl.send(ctl).is_err() {
                return Ok(());
            }
            rx
        };
        match rx.await {
            // A link lost before answering resubscribes the channel when it is back.
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(error)) => {
                self.shared.state.lock().wanted.remove(channel);
                Err(error)
            }
        }
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BusError> {
        self.shared.metrics.bus_unsubscribes.inc();
        let mut state = self.shared.state.lock();
        state.wanted.remove(channel);
        if let Some(link) = &state.link {
            let _ = link
                .ctl
                .send(Ctl::new(false, self.shared.redis_name(channel), None));
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        match &self.ready {
            Readiness::Link(ready) => ready.load(Ordering::Relaxed),
            Readiness::Cluster(ready) => ready.is_ready(),
        }
    }
}
