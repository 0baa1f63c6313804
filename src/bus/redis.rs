//! The Redis bus: one pub/sub connection per node, subscribed only to the channels this
//! node hosts, plus a multiplexed connection for publishing. A supervisor task owns both:
//! it reconnects with backoff, resubscribes, proves the link alive end to end with a
//! probe, and tells clients about gaps. Nothing else here touches Redis.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::envelope::Envelope;
use super::{Bus, BusError};
use crate::channel::ChannelName;
use crate::hub::{Delivery, Hub};
use crate::metrics::Metrics;
use crate::settings::RedisSettings;

pub struct RedisBus {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    settings: RedisSettings,
    /// `<prefix>:` prepended to every channel name on Redis.
    prefix: String,
    probe_channel: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Channels the node wants and the current link. One lock, so that the order in which
    /// commands enter a link's queue is the order in which the node asked for them.
    state: Mutex<State>,
    ready: AtomicBool,
    stop: CancellationToken,
    /// Last time an invalid envelope was logged, so a misbehaving backend cannot flood logs.
    last_invalid_log: AtomicU64,
}

#[derive(Default)]
struct State {
    wanted: HashSet<ChannelName>,
    link: Option<Link>,
}

/// The live connections, while Redis is reachable.
#[derive(Clone)]
struct Link {
    ctl: mpsc::UnboundedSender<Ctl>,
    publisher: MultiplexedConnection,
}

/// A subscription change for the supervisor to send, in order, on its pub/sub connection.
struct Ctl {
    subscribe: bool,
    channel: String,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("the node is stopping")]
    Stopped,
    #[error("the connection closed")]
    Closed,
    #[error("no probe came back for {0:?}")]
    Deaf(Duration),
    #[error("{0}")]
    Command(String),
}

impl RedisBus {
    /// Validates the URL and starts the supervisor; it connects in the background, so a
    /// node starts (not ready) even while Redis is down.
    pub fn start(
        url: &str,
        settings: RedisSettings,
        node_id: &str,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let prefix = format!("{}:", settings.prefix);
        let shared = Arc::new(Shared {
            client,
            probe_channel: format!("{prefix}$probe:{node_id}"),
            prefix,
            settings,
            hub,
            metrics,
            state: Mutex::new(State::default()),
            ready: AtomicBool::new(false),
            stop,
            last_invalid_log: AtomicU64::new(0),
        });
        tasks.spawn(supervise(Arc::clone(&shared)));
        Ok(Self { shared })
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, delivery: Delivery) -> Result<(), BusError> {
        let link = self.shared.state.lock().link.clone();
        let (Some(mut link), true) = (link, self.is_ready()) else {
            return Err(BusError::Unavailable("redis is not connected".into()));
        };
        let channel = format!("{}{}", self.shared.prefix, delivery.channel);
        let payload = delivery.envelope.encode();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async::<i64>(&mut link.publisher)
            .await
            .map(drop)
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BusError> {
        self.shared.metrics.bus_subscribes.inc();
        let rx = {
            let mut state = self.shared.state.lock();
            state.wanted.insert(channel.clone());
            // While Redis is down the channel is only remembered; the supervisor subscribes
            // it on reconnect and then sends the client a `gap`.
            let Some(link) = &state.link else {
                return Ok(());
            };
            let (tx, rx) = oneshot::channel();
            let ctl = Ctl {
                subscribe: true,
                channel: format!("{}{channel}", self.shared.prefix),
                done: Some(tx),
            };
            if link.ctl.send(ctl).is_err() {
                return Ok(());
            }
            rx
        };
        match rx.await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(error)) => {
                self.shared.state.lock().wanted.remove(channel);
                Err(BusError::Unavailable(error))
            }
        }
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BusError> {
        self.shared.metrics.bus_unsubscribes.inc();
        let mut state = self.shared.state.lock();
        state.wanted.remove(channel);
        if let Some(link) = &state.link {
            let _ = link.ctl.send(Ctl {
                subscribe: false,
                channel: format!("{}{channel}", self.shared.prefix),
                done: None,
            });
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }
}

async fn supervise(shared: Arc<Shared>) {
    let mut attempt: u32 = 0;
    let mut connected_before = false;
    loop {
        let lost = match connect(&shared).await {
            Ok((sink, stream, publisher)) => {
                attempt = 0;
                let lost = run_link(&shared, sink, stream, publisher, connected_before).await;
                connected_before = true;
                lost
            }
            Err(error) => {
                tracing::warn!(%error, attempt, "cannot connect to redis");
                Lost::Command(error.to_string())
            }
        };
        shared.ready.store(false, Ordering::Relaxed);
        shared.state.lock().link = None;
        shared.metrics.bus_connected.set(0);
        if matches!(lost, Lost::Stopped) || shared.stop.is_cancelled() {
            return;
        }
        if attempt == 0 && connected_before {
            tracing::warn!(reason = %lost, "redis link lost; reconnecting");
        }
        let delay = backoff(&shared.settings, attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        shared.metrics.bus_reconnects.inc();
    }
}

/// Capped exponential backoff with jitter: somewhere in the upper half of the cap, so
/// nodes that lost Redis together do not return together.
fn backoff(settings: &RedisSettings, attempt: u32) -> Duration {
    let cap = settings
        .reconnect_min_ms
        .saturating_mul(1u64 << attempt.min(16))
        .min(settings.reconnect_max_ms);
    Duration::from_millis(cap / 2 + fastrand::u64(0..=cap / 2))
}

async fn connect(
    shared: &Shared,
) -> redis::RedisResult<(PubSubSink, PubSubStream, MultiplexedConnection)> {
    let timeout = Duration::from_millis(shared.settings.connect_timeout_ms);
    let timed_out = || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let pubsub = tokio::time::timeout(timeout, shared.client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(Duration::from_millis(
            shared.settings.response_timeout_ms,
        )));
    let publisher = shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let (mut sink, stream) = pubsub.split();
    tokio::time::timeout(timeout, sink.subscribe(&shared.probe_channel))
        .await
        .map_err(|_| timed_out())??;
    Ok((sink, stream, publisher))
}

async fn run_link(
    shared: &Shared,
    sink: PubSubSink,
    mut stream: PubSubStream,
    publisher: MultiplexedConnection,
    reconnected: bool,
) -> Lost {
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    // Publish the link, then queue a subscribe for every wanted channel under the same
    // lock: later subscribes and unsubscribes queue behind these, in order.
    let resubscribed: Vec<ChannelName> = {
        let mut state = shared.state.lock();
        state.link = Some(Link {
            ctl: ctl_tx.clone(),
            publisher: publisher.clone(),
        });
        for channel in &state.wanted {
            let _ = ctl_tx.send(Ctl {
                subscribe: true,
                channel: format!("{}{channel}", shared.prefix),
                done: None,
            });
        }
        state.wanted.iter().cloned().collect()
    };
    if let Err(lost) = apply(&sink, drain_ctl(&mut ctl_rx)).await {
        return lost;
    }
    shared.ready.store(true, Ordering::Relaxed);
    shared.metrics.bus_connected.set(1);
    tracing::info!(channels = resubscribed.len(), reconnected, "redis link up");
    if reconnected {
        // Whatever was published while the link was down is lost to these channels.
        for channel in &resubscribed {
            shared.hub.gap(channel);
            shared.metrics.bus_gap_notices.inc();
        }
    }
    let interval = Duration::from_millis(shared.settings.probe_interval_ms);
    let deaf_after = Duration::from_millis(shared.settings.probe_timeout_ms);
    let mut probe = tokio::time::interval(interval);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut publisher = publisher;
    loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return Lost::Stopped,
            msg = stream.next() => {
                let Some(msg) = msg else { return Lost::Closed };
                if msg.get_channel_name() == shared.probe_channel {
                    last_heard = Instant::now();
                } else {
                    receive(shared, &msg);
                }
            }
            Some(first) = ctl_rx.recv() => {
                let mut batch = vec![first];
                batch.extend(drain_ctl(&mut ctl_rx));
                if let Err(lost) = apply(&sink, batch).await {
                    return lost;
                }
            }
            _ = probe.tick() => {
                if last_heard.elapsed() > deaf_after {
                    shared.metrics.bus_probe_failures.inc();
                    return Lost::Deaf(last_heard.elapsed());
                }
                // The answer arrives on the pub/sub stream; a failure here shows up there.
                let sent = redis::cmd("PUBLISH")
                    .arg(&shared.probe_channel)
                    .arg(b"probe".as_slice())
                    .query_async::<i64>(&mut publisher)
                    .await;
                if let Err(error) = sent {
                    tracing::debug!(%error, "probe publish failed");
                }
            }
        }
    }
}

fn drain_ctl(rx: &mut mpsc::UnboundedReceiver<Ctl>) -> Vec<Ctl> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Sends a batch of subscription changes as one pipeline: one command per channel (so
/// every reply pairs with its request), all written before any reply is awaited.
async fn apply(sink: &PubSubSink, batch: Vec<Ctl>) -> Result<(), Lost> {
    if batch.is_empty() {
        return Ok(());
    }
    let calls = batch.iter().map(|ctl| {
        let mut sink = sink.clone();
        let channel = ctl.channel.clone();
        let subscribe = ctl.subscribe;
        async move {
            if subscribe {
                sink.subscribe(channel).await
            } else {
                sink.unsubscribe(channel).await
            }
        }
    });
    // join_all polls in order on its first pass, so commands are queued in batch order.
    let results = futures_util::future::join_all(calls).await;
    let mut failure = None;
    for (ctl, result) in batch.into_iter().zip(results) {
        let result = result.map_err(|e| e.to_string());
        if let Err(error) = &result {
            failure.get_or_insert_with(|| error.clone());
        }
        if let Some(done) = ctl.done {
            let _ = done.send(result);
        }
    }
    match failure {
        // A refused command on a pub/sub connection means the connection is unusable.
        Some(error) => Err(Lost::Command(error)),
        None => Ok(()),
    }
}

fn receive(shared: &Shared, msg: &redis::Msg) {
    shared.metrics.messages_received.inc();
    let name = msg.get_channel_name();
    let parsed = name
        .strip_prefix(&shared.prefix)
        .ok_or_else(|| "channel outside the prefix".to_string())
        .and_then(|raw| ChannelName::parse(raw).map_err(|e| e.to_string()))
        .and_then(|channel| {
            Envelope::decode(msg.get_payload_bytes())
                .map(|envelope| Delivery { channel, envelope })
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok(delivery) => {
            shared.hub.dispatch(&delivery);
        }
        Err(error) => {
            shared
                .metrics
                .dropped(crate::metrics::DropReason::InvalidEnvelope, 1);
            let now = crate::node::unix_micros() / 1_000_000;
            if shared.last_invalid_log.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(channel = name, %error, "dropped an invalid message from redis");
            }
        }
    }
}
