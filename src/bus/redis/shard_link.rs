//! One shard's sharded pub/sub link, as the supervisor drives it: a RESP3 connection to
//! the primary that serves the shard, `SSUBSCRIBE`d to the channels of this node that hash
//! to the shard, and to a probe channel of its own. Each shard has its own supervisor, so
//! a shard failing over is lost, reconnected, recovered (or told `gap`) alone, and the
//! other shards' channels never notice.
//!
//! A shard is named by its *anchor*, one slot it serves: on every (re)connect the link asks
//! the cluster which primary serves the anchor now, so after a failover it finds the
//! promoted replica. A channel whose slot has moved elsewhere (`MOVED` on `SSUBSCRIBE`, or
//! a `sunsubscribe` the link did not ask for, which Redis sends when a slot migrates) is
//! handed back to the router (`cluster_link`) to be subscribed where it lives now.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{Msg, PushInfo, PushKind};
use tokio::sync::mpsc;

use super::link::{control, drain, receive};
use super::topology::{self, Topology};
use super::{Ctl, Shared};
use crate::bus::BusError;
use crate::bus::probe::Probe;
use crate::bus::supervisor::{Link, Lost};
use crate::channel::ChannelName;

pub(super) struct ShardLink {
    shared: Arc<Shared>,
    /// Asked for the slot map on every connect.
    cluster: ClusterConnection,
    /// The router: channels this shard does not serve (any more) go back there.
    router: mpsc::UnboundedSender<Ctl>,
    pub(super) anchor: u16,
    probe_channel: String,
    /// The primary the last incarnation reached.
    primary: Mutex<Option<topology::Addr>>,
    state: Mutex<ShardState>,
}

#[derive(Default)]
struct ShardState {
    /// Redis names of the channels routed to this shard.
    channels: HashSet<String>,
    /// Channels taken from another shard while this link was down: the node hears they
    /// are back once this link has subscribed them.
    back: HashSet<String>,
    /// Subscribes waiting for the link's first connection: the node hears `Ok` only once
    /// the channel is subscribed, or an error if that connection fails (a link that was
    /// up before answers at once and reports the channel back when it returns instead).
    waiting: Vec<Ctl>,
    /// Whether the link has ever been up.
    connected: bool,
    /// The live incarnation's queue, while there is one.
    ctl: Option<mpsc::UnboundedSender<Ctl>>,
}

pub(super) struct Live {
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    ctl: Option<mpsc::UnboundedReceiver<Ctl>>,
    /// `SUNSUBSCRIBE`s this link sent: any other `sunsubscribe` is a slot moving away.
    dropping: HashSet<String>,
}

fn timed_out(what: &'static str) -> BusError {
    BusError::from(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        what,
    )))
}

impl ShardLink {
    pub(super) fn new(
        shared: Arc<Shared>,
        cluster: ClusterConnection,
        router: mpsc::UnboundedSender<Ctl>,
        anchor: u16,
        node_id: &str,
    ) -> Self {
        let probe_channel = format!(
            "{}$probe:{node_id}:{}",
            shared.prefix,
            topology::tag_for(anchor)
        );
        Self {
            shared,
            cluster,
            router,
            anchor,
            probe_channel,
            primary: Mutex::new(None),
            state: Mutex::new(ShardState::default()),
        }
    }

    /// Routes a subscription change to this shard. While the link is down the change is
    /// only remembered: the next incarnation subscribes what is wanted then.
    pub(super) fn submit(&self, ctl: Ctl) {
        let mut state = self.state.lock();
        if ctl.subscribe {
            state.channels.insert(ctl.channel.clone());
        } else {
            state.channels.remove(&ctl.channel);
            state.back.remove(&ctl.channel);
        }
        match &state.ctl {
            Some(tx) => {
                let _ = tx.send(ctl);
            }
            None if ctl.back => {
                state.back.insert(ctl.channel);
            }
            None if ctl.subscribe && ctl.done.is_some() && !state.connected => {
                state.waiting.push(ctl);
            }
            None => {}
        }
    }

    /// Gives `ctl`'s channel back to the router, which subscribes it where its slot lives.
    /// A resubscription (nobody waits on it) was subscribed before: once subscribed again
    /// the node hears it is back, and recovers it or says `gap`.
    fn reroute(&self, mut ctl: Ctl) {
        self.state.lock().channels.remove(&ctl.channel);
        ctl.back |= ctl.done.is_none();
        ctl.rerouted = ctl.rerouted.saturating_add(1);
        let _ = self.router.send(ctl);
    }
}

impl Link for ShardLink {
    type Live = Live;

    async fn connect(&self) -> Result<Live, BusError> {
        let shared = &self.shared;
        let timeout = Duration::from_millis(shared.settings.connect_timeout_ms);
        let topology = tokio::time::timeout(timeout, Topology::fetch(&mut self.cluster.clone()))
            .await
            .map_err(|_| timed_out("asking for the slot map"))??;
        let (host, port) = topology.owner(self.anchor).ok_or(BusError::NotConnected)?;
        let client = shared.source.shard_client(host, *port)?;
        let (tx, pushes) = mpsc::unbounded_channel();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(shared.response_timeout()))
            .set_push_sender(tx);
        let mut conn = tokio::time::timeout(
            timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| timed_out("connecting to a shard"))??;
        if shared.load_library {
            // Every time: a primary promoted or restarted may not have it.
            super::history::load_library(&mut conn).await?;
        }
        // The anchor's owner serves the probe channel; `MOVED` here means the slot map
        // changed since it was read, and the supervisor tries again.
        redis::cmd("SSUBSCRIBE")
            .arg(&self.probe_channel)
            .exec_async(&mut conn)
            .await?;
        tracing::info!(anchor = self.anchor, host, port, "shard link connected");
        let primary = Some((host.clone(), *port));
        let before = std::mem::replace(&mut *self.primary.lock(), primary.clone());
        if before.is_some() && before != primary {
            self.nudge(&topology).await;
        }
        Ok(Live {
            conn,
            pushes,
            ctl: None,
            dropping: HashSet::new(),
        })
    }

    async fn resubscribe(&self, live: &mut Live) -> Result<Vec<ChannelName>, Lost> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let channels: Vec<String> = {
            let mut state = self.state.lock();
            state.ctl = Some(tx.clone());
            state.connected = true;
            let back = std::mem::take(&mut state.back);
            let mut waiting: HashMap<String, Ctl> = std::mem::take(&mut state.waiting)
                .into_iter()
                .map(|ctl| (ctl.channel.clone(), ctl))
                .collect();
            for channel in &state.channels {
                let ctl = waiting.remove(channel).unwrap_or_else(|| {
                    let mut ctl = Ctl::subscribe(channel.clone());
                    ctl.back = back.contains(channel);
                    ctl
                });
                let _ = tx.send(ctl);
            }
            state
                .channels
                .iter()
                .filter(|c| !back.contains(*c))
                .cloned()
                .collect()
        };
        self.apply(live, drain(&mut rx)).await?;
        live.ctl = Some(rx);
        // What the supervisor reports back: the channels still here (those that moved went
        // back to the router) and not already reported as they were subscribed.
        let state = self.state.lock();
        Ok(channels
            .iter()
            .filter(|c| state.channels.contains(*c))
            .filter_map(|c| self.shared.channel_of(c))
            .collect())
    }

    async fn serve(&self, mut live: Live) -> Lost {
        let shared = &self.shared;
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
                        return Lost::Closed;
                    }
                    if let Some(lost) = self.on_push(&mut live.dropping, &mut probe, push) {
                        return lost;
                    }
                }
                Some(first) = ctl.recv() => {
                    let mut batch = vec![first];
                    batch.extend(drain(&mut ctl));
                    if let Err(lost) = self.apply(&mut live, batch).await {
                        return lost;
                    }
                }
                due = probe.due() => {
                    if let Err(deaf) = due {
                        shared.metrics.bus_probe_failures.inc();
                        return Lost::Deaf(deaf);
                    }
                    let sent = redis::cmd("SPUBLISH")
                        .arg(&self.probe_channel)
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
        let mut state = self.state.lock();
        state.ctl = None;
        for ctl in std::mem::take(&mut state.waiting) {
            state.channels.remove(&ctl.channel);
            if let Some(done) = ctl.done {
                let _ = done.send(Err(BusError::NotConnected));
            }
        }
    }
}

impl ShardLink {
    /// The shard failed over. The cluster connection that carries publishes learns a new
    /// slot map only from a `MOVED`, which a dead primary never sends: ask another primary
    /// about a key of this shard, so that its `MOVED` makes the connection read the map.
    async fn nudge(&self, topology: &Topology) {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let Some(owner) = topology.owner(self.anchor) else {
            return;
        };
        let Some((host, port)) = topology.primaries().find(|addr| *addr != owner) else {
            return;
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        let mut ask = redis::cmd("EXISTS");
        ask.arg(&self.probe_channel);
        let asked = tokio::time::timeout(
            self.shared.response_timeout(),
            self.cluster.clone().route_command(ask, routing),
        )
        .await;
        tracing::debug!(
            ok = matches!(asked, Ok(Ok(_))),
            "asked the cluster connection to re-read the slot map"
        );
    }

    /// A push from the shard: a message, or a subscription confirmed or taken away.
    fn on_push(
        &self,
        dropping: &mut HashSet<String>,
        probe: &mut Probe,
        push: PushInfo,
    ) -> Option<Lost> {
        match push.kind {
            PushKind::SUnsubscribe => {
                let channel = push
                    .data
                    .first()
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())?;
                if dropping.remove(&channel) {
                    return None;
                }
                if channel == self.probe_channel {
                    // The anchor slot itself moved: find out who serves it now.
                    return Some(Lost::Closed);
                }
                // Redis took the channel away: its slot moved to another shard. What is
                // published there until it is subscribed again is recovered or `gap`.
                if self.state.lock().channels.contains(&channel) {
                    tracing::info!(channel, "slot moved; subscribing where it lives now");
                    let mut ctl = Ctl::subscribe(channel);
                    ctl.back = true;
                    self.reroute(ctl);
                }
                None
            }
            PushKind::SMessage | PushKind::Message => {
                let msg = Msg::from_push_info(push)?;
                let name = msg.get_channel_name();
                if name == self.probe_channel {
                    probe.heard();
                } else if name == self.shared.control_channel() {
                    control(&self.shared, &msg);
                } else {
                    receive(&self.shared, &msg);
                }
                None
            }
            _ => None,
        }
    }

    /// Sends a batch of subscription changes, in order. A channel this shard does not
    /// serve goes back to the router; any other failure, or a reply not back within the
    /// response timeout, fails the batch and the link.
    async fn apply(&self, live: &mut Live, batch: Vec<Ctl>) -> Result<(), Lost> {
        let timeout = self.shared.response_timeout();
        let mut failure = None;
        for ctl in batch {
            let command = if ctl.subscribe {
                "SSUBSCRIBE"
            } else {
                live.dropping.insert(ctl.channel.clone());
                "SUNSUBSCRIBE"
            };
            let mut cmd = redis::cmd(command);
            cmd.arg(&ctl.channel);
            let call = cmd.exec_async(&mut live.conn);
            let result = match tokio::time::timeout(timeout, call).await {
                Ok(Err(error)) if error.redirect_node().is_some() && ctl.subscribe => {
                    self.reroute(ctl);
                    continue;
                }
                Ok(result) => result.map_err(BusError::from),
                Err(_) => Err(timed_out("redis did not answer a (un)subscribe in time")),
            };
            match &result {
                Err(error) => {
                    failure.get_or_insert_with(|| error.clone());
                }
                Ok(()) if ctl.back => self.shared.report_back(&ctl.channel),
                Ok(()) => {}
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
}
