//! One incarnation of the Redis link, as the supervisor drives it: connect, resubscribe
//! every wanted channel, then carry messages, subscription changes and probes until the
//! link is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::mpsc;

use super::{Ctl, LinkHandle, Shared};
use crate::bus::BusError;
use crate::bus::envelope::Incoming;
use crate::bus::probe::Probe;
use crate::bus::supervisor::{Link, Lost};
use crate::channel::ChannelName;
use crate::metrics::DropReason;

pub(super) struct RedisLink(pub(super) Arc<Shared>);

pub(super) struct Live {
    sink: PubSubSink,
    stream: PubSubStream,
    publisher: MultiplexedConnection,
    /// Subscription changes queued by the node, once the link is published.
    ctl: Option<mpsc::UnboundedReceiver<Ctl>>,
}

impl Link for RedisLink {
    type Live = Live;

    async fn connect(&self) -> Result<Live, BusError> {
        let shared = &self.0;
        let timeout = Duration::from_millis(shared.settings.connect_timeout_ms);
        let timed_out = || {
            BusError::from(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))
        };
        // Asked each time: behind Sentinel, the primary may have changed since.
        let client = tokio::time::timeout(timeout, shared.source.client())
            .await
            .map_err(|_| timed_out())??;
        let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())??;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(Duration::from_millis(
                shared.settings.response_timeout_ms,
            )));
        let mut publisher = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        if shared.load_library {
            // Every time: a Redis restarted without persistence has forgotten it.
            super::history::load_library(&mut publisher).await?;
        }
        let (mut sink, stream) = pubsub.split();
        tokio::time::timeout(timeout, sink.subscribe(&shared.probe_channel))
            .await
            .map_err(|_| timed_out())??;
        tokio::time::timeout(timeout, sink.subscribe(shared.control_channel()))
            .await
            .map_err(|_| timed_out())??;
        Ok(Live {
            sink,
            stream,
            publisher,
            ctl: None,
        })
    }

    async fn resubscribe(&self, live: &mut Live) -> Result<Vec<ChannelName>, Lost> {
        let shared = &self.0;
        let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
        // Publish the link, then queue a subscribe for every wanted channel under the same
        // lock: later subscribes and unsubscribes queue behind these, in order.
        let channels: Vec<ChannelName> = {
            let mut state = shared.state.lock();
            state.link = Some(LinkHandle {
                ctl: ctl_tx.clone(),
                publisher: super::commands::Commands::Single(live.publisher.clone()),
            });
            for channel in &state.wanted {
                let _ = ctl_tx.send(Ctl::subscribe(shared.redis_name(channel)));
            }
            state.wanted.iter().cloned().collect()
        };
        apply(&live.sink, drain(&mut ctl_rx), shared.response_timeout()).await?;
        live.ctl = Some(ctl_rx);
        Ok(channels)
    }

    async fn serve(&self, live: Live) -> Lost {
        let shared = &self.0;
        let Live {
            sink,
            mut stream,
            mut publisher,
            ctl,
        } = live;
        let Some(mut ctl) = ctl else {
            return Lost::Closed;
        };
        let mut probe = Probe::new(
            Duration::from_millis(shared.settings.probe_interval_ms),
            Duration::from_millis(shared.settings.probe_timeout_ms),
        );
        loop {
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => return Lost::Stopped,
                msg = stream.next() => {
                    let Some(msg) = msg else { return Lost::Closed };
                    let name = msg.get_channel_name();
                    if name == shared.probe_channel {
                        probe.heard();
                    } else if name == shared.control_channel() {
                        control(shared, &msg);
                    } else {
                        receive(shared, &msg);
                    }
                }
                Some(first) = ctl.recv() => {
                    let mut batch = vec![first];
                    batch.extend(drain(&mut ctl));
                    // Bounded: the probe cannot run while this waits, so a Redis that
                    // stopped answering must not hold the loop past the response timeout.
                    if let Err(lost) = apply(&sink, batch, shared.response_timeout()).await {
                        return lost;
                    }
                }
                due = probe.due() => {
                    if let Err(deaf) = due {
                        shared.metrics.bus_probe_failures.inc();
                        return Lost::Deaf(deaf);
                    }
                    send_probe(shared, &mut publisher).await;
                }
            }
        }
    }

    fn down(&self) {
        self.0.state.lock().link = None;
    }
}

/// The answer arrives on the pub/sub stream; a failure here shows up there, as silence.
async fn send_probe(shared: &Shared, publisher: &mut MultiplexedConnection) {
    let sent = redis::cmd("PUBLISH")
        .arg(&shared.probe_channel)
        .arg(b"probe".as_slice())
        .query_async::<i64>(publisher)
        .await;
    if let Err(error) = sent {
        tracing::debug!(%error, "probe publish failed");
    }
}

/// An order for every node: handed to the node, or logged when it does not parse.
pub(super) fn control(shared: &Shared, msg: &redis::Msg) {
    match serde_json::from_slice::<crate::bus::directory::Control>(msg.get_payload_bytes()) {
        Ok(control) => {
            if let Some(events) = shared.events.upgrade() {
                events.control(control);
            }
        }
        Err(error) => tracing::warn!(%error, "ignored an invalid control message"),
    }
}

pub(super) fn drain(rx: &mut mpsc::UnboundedReceiver<Ctl>) -> Vec<Ctl> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Sends a batch of subscription changes as one pipeline: one command per channel (so
/// every reply pairs with its request), all written before any reply is awaited. Replies
/// not back within `timeout` fail the batch and the link: its connection is unusable.
async fn apply(sink: &PubSubSink, batch: Vec<Ctl>, timeout: Duration) -> Result<(), Lost> {
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
    let results = match tokio::time::timeout(timeout, futures_util::future::join_all(calls)).await {
        Ok(results) => results,
        Err(_) => {
            let error = BusError::from(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "redis did not answer a (un)subscribe in time",
            )));
            for ctl in batch {
                if let Some(done) = ctl.done {
                    let _ = done.send(Err(error.clone()));
                }
            }
            return Err(Lost::Command(error));
        }
    };
    let mut failure = None;
    for (ctl, result) in batch.into_iter().zip(results) {
        let result = result.map_err(BusError::from);
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

/// Why a message on a roomcast channel could not be taken.
#[derive(Debug, thiserror::Error)]
enum Invalid {
    #[error("channel outside the prefix")]
    Prefix,
    #[error("invalid channel name")]
    Channel(#[from] crate::channel::ChannelError),
    #[error("invalid envelope")]
    Envelope(#[from] crate::bus::envelope::EnvelopeError),
}

pub(super) fn receive(shared: &Shared, msg: &redis::Msg) {
    let name = msg.get_channel_name();
    let size = msg.get_payload_bytes().len();
    if size > shared.settings.max_envelope_bytes {
        shared.metrics.messages_received.inc();
        shared.metrics.dropped(DropReason::Oversize, 1);
        let now = crate::clock::unix_micros() / 1_000_000;
        if shared.last_invalid_log.swap(now, Ordering::Relaxed) != now {
            let max = shared.settings.max_envelope_bytes;
            tracing::warn!(
                channel = name,
                size,
                max,
                "dropped a message from redis larger than redis.max_envelope_bytes"
            );
        }
        return;
    }
    let parsed = name
        .strip_prefix(&shared.prefix)
        .ok_or(Invalid::Prefix)
        .and_then(|raw| Ok(ChannelName::parse(raw)?))
        .and_then(|channel| Ok((channel, Incoming::decode(msg.get_payload_bytes())?)));
    match parsed {
        Ok((channel, incoming)) => {
            if let Some(events) = shared.events.upgrade() {
                match incoming {
                    Incoming::Message(envelope) => {
                        shared.metrics.messages_received.inc();
                        events.message(channel, envelope);
                    }
                    Incoming::Presence(event) => {
                        shared.metrics.presence_events.inc();
                        events.presence(channel, event);
                    }
                }
            }
        }
        Err(error) => {
            shared.metrics.messages_received.inc();
            shared.metrics.dropped(DropReason::InvalidEnvelope, 1);
            let now = crate::clock::unix_micros() / 1_000_000;
            if shared.last_invalid_log.swap(now, Ordering::Relaxed) != now {
                let error = &error as &dyn std::error::Error;
                tracing::warn!(
                    channel = name,
                    error,
                    "dropped an invalid message from redis"
                );
            }
        }
    }
}
