//! The link to a Redis Cluster, as the supervisor drives it: one cluster connection
//! (RESP3), which routes `SSUBSCRIBE` to the shard that owns each channel's slot,
//! `SPUBLISH` and `FCALL` by key, follows `MOVED`/`ASK`, and resubscribes sharded channels
//! by itself when a shard's connection is rebuilt or a slot moves. Those resubscriptions
//! arrive as `ssubscribe` pushes the node did not ask for: each one means "this channel's
//! shard link came back", and the node recovers the channel or tells its clients `gap`,
//! exactly as after a single Redis's outage, for that channel only.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Msg, ProtocolVersion, PushInfo, PushKind};
use tokio::sync::mpsc;

use super::commands::Commands;
use super::link::{control, drain, receive};
use super::{Ctl, LinkHandle, Shared};
use crate::bus::BusError;
use crate::bus::probe::Probe;
use crate::bus::supervisor::{Link, Lost};
use crate::channel::ChannelName;

pub(super) struct ClusterLink(pub(super) Arc<Shared>);

pub(super) struct Live {
    conn: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    ctl: Option<mpsc::UnboundedReceiver<Ctl>>,
    /// Channels this link asked to subscribe and whose confirmation has not come back:
    /// any other `ssubscribe` push is a resubscription after a loss.
    asked: HashSet<String>,
}

fn timed_out(what: &'static str) -> BusError {
    BusError::from(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        what,
    )))
}

impl Link for ClusterLink {
    type Live = Live;

    async fn connect(&self) -> Result<Live, BusError> {
        let shared = &self.0;
        let super::source::Source::Cluster(seeds) = &shared.source else {
            return Err(BusError::Malformed("a cluster link without cluster seeds"));
        };
        let (tx, pushes) = mpsc::unbounded_channel();
        let client = ClusterClientBuilder::new(seeds.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(Duration::from_millis(shared.settings.connect_timeout_ms))
            .response_timeout(shared.response_timeout())
            // Few, quick retries inside the client: a shard that is gone should fail the
            // command (the client hears `unavailable`) and let the supervisor rebuild the
            // link, not stall every command for seconds.
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()?;
        let timeout = Duration::from_millis(shared.settings.connect_timeout_ms);
        let mut conn = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| timed_out("connecting to the cluster"))??;
        if shared.load_library {
            // Routed to every primary: each shard runs the functions of its channels.
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(super::history::LIBRARY)
                .query_async::<redis::Value>(&mut conn)
                .await?;
        }
        let mut asked = HashSet::new();
        for channel in [shared.probe_channel.clone(), shared.control_channel()] {
            tokio::time::timeout(timeout, conn.ssubscribe(&channel))
                .await
                .map_err(|_| timed_out("subscribing"))??;
            asked.insert(channel);
        }
        Ok(Live {
            conn,
            pushes,
            ctl: None,
            asked,
        })
    }

    async fn resubscribe(&self, live: &mut Live) -> Result<Vec<ChannelName>, Lost> {
        let shared = &self.0;
        let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
        let channels: Vec<ChannelName> = {
            let mut state = shared.state.lock();
            state.link = Some(LinkHandle {
                ctl: ctl_tx.clone(),
                publisher: Commands::Cluster(live.conn.clone()),
            });
            for channel in &state.wanted {
                let _ = ctl_tx.send(Ctl {
                    subscribe: true,
                    channel: shared.redis_name(channel),
                    done: None,
                });
            }
            state.wanted.iter().cloned().collect()
        };
        apply(live, drain(&mut ctl_rx), shared.response_timeout()).await?;
        live.ctl = Some(ctl_rx);
        Ok(channels)
    }

    async fn serve(&self, mut live: Live) -> Lost {
        let shared = &self.0;
        let Some(mut ctl) = live.ctl.take() else {
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
                push = live.pushes.recv() => {
                    let Some(push) = push else { return Lost::Closed };
                    if push.kind == PushKind::Disconnection {
                        // A shard's connection dropped. The cluster connection would
                        // resubscribe its channels by itself, but not always (a primary
                        // that died before its replica took over), and never saying what
                        // was missed: the whole link is rebuilt instead, and every channel
                        // recovers or gets `gap`, never a silent loss.
                        return Lost::Closed;
                    }
                    on_push(shared, &mut live.asked, &mut probe, push);
                }
                Some(first) = ctl.recv() => {
                    let mut batch = vec![first];
                    batch.extend(drain(&mut ctl));
                    if let Err(lost) = apply(&mut live, batch, shared.response_timeout()).await {
                        return lost;
                    }
                }
                due = probe.due() => {
                    if let Err(deaf) = due {
                        shared.metrics.bus_probe_failures.inc();
                        return Lost::Deaf(deaf);
                    }
                    let sent = redis::cmd("SPUBLISH")
                        .arg(&shared.probe_channel)
                        .arg(b"probe".as_slice())
                        .query_async::<i64>(&mut live.conn)
                        .await;
                    if let Err(error) = sent {
                        tracing::debug!(%error, "probe publish failed");
                    }
                }
            }
        }
    }

    fn down(&self) {
        self.0.state.lock().link = None;
    }
}

/// A push from the cluster: a message, or a subscription confirmed or restored.
fn on_push(shared: &Shared, asked: &mut HashSet<String>, probe: &mut Probe, push: PushInfo) {
    match push.kind {
        PushKind::SSubscribe => {
            let Some(channel) = push
                .data
                .first()
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            else {
                return;
            };
            if asked.remove(&channel) {
                return;
            }
            // Not asked for: the cluster connection resubscribed it after losing its
            // shard (or the slot moved). What was published meanwhile did not arrive.
            let name = channel.strip_prefix(&shared.prefix).unwrap_or_default();
            if let (Ok(channel), Some(events)) = (ChannelName::parse(name), shared.events.upgrade())
            {
                shared.metrics.bus_reconnects.inc();
                events.link_back(&[channel]);
            }
        }
        PushKind::SMessage | PushKind::Message => {
            let Some(msg) = Msg::from_push_info(push) else {
                return;
            };
            let name = msg.get_channel_name();
            if name == shared.probe_channel {
                probe.heard();
            } else if name == shared.control_channel() {
                control(shared, &msg);
            } else {
                receive(shared, &msg);
            }
        }
        _ => {}
    }
}

/// Sends a batch of subscription changes, each routed to its channel's shard; replies not
/// back within `timeout` fail the batch and the link.
async fn apply(live: &mut Live, batch: Vec<Ctl>, timeout: Duration) -> Result<(), Lost> {
    let mut failure = None;
    for ctl in batch {
        if ctl.subscribe {
            live.asked.insert(ctl.channel.clone());
        }
        let call = async {
            if ctl.subscribe {
                live.conn.ssubscribe(&ctl.channel).await
            } else {
                live.conn.sunsubscribe(&ctl.channel).await
            }
        };
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(BusError::from),
            Err(_) => Err(timed_out("redis did not answer a (un)subscribe in time")),
        };
        if let Err(error) = &result {
            failure.get_or_insert_with(|| error.clone());
        }
        if let Some(done) = ctl.done {
            let _ = done.send(result);
        }
    }
    match failure {
        Some(error) => Err(Lost::Command(error)),
        None => Ok(()),
    }
}
