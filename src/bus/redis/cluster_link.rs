//! The Redis Cluster bus's router. One cluster connection (redis-rs cluster-async) carries
//! every command (`SPUBLISH`, `FCALL`, history, presence, the directory), routed by key and
//! following `MOVED`/`ASK` by itself. Sharded pub/sub goes over one link per shard primary
//! this node needs (`shard_link`), each under its own supervisor: the router sends each
//! channel's (un)subscribe to the link of the shard that serves its slot, makes the link
//! the first time a shard is needed, and re-routes channels whose slot moved.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::commands::Commands;
use super::shard_link::ShardLink;
use super::topology::{self, Topology};
use super::{Ctl, LinkHandle, Shared};
use crate::bus::BusError;
use crate::bus::supervisor::{Backoff, Supervisor};

/// Ready while the cluster connection is up and every shard link this node made is up
/// and subscribed: a shard failing over makes the node not ready, as a single Redis would.
#[derive(Default)]
pub(super) struct ClusterReady {
    connected: AtomicBool,
    shards: Mutex<Vec<Arc<AtomicBool>>>,
}

impl ClusterReady {
    pub(super) fn is_ready(&self) -> bool {
        let shards = self.shards.lock();
        self.connected.load(Ordering::Relaxed)
            && !shards.is_empty()
            && shards.iter().all(|s| s.load(Ordering::Relaxed))
    }

    pub(super) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// The slot map is read again at most this often, however many channels bounce.
const REFRESH_MIN: Duration = Duration::from_millis(100);

struct Router {
    shared: Arc<Shared>,
    conn: ClusterConnection,
    topology: Topology,
    refreshed: Option<Instant>,
    links: Vec<Arc<ShardLink>>,
    /// Which link each subscribed channel went to, for its unsubscribe.
    assigned: HashMap<String, usize>,
    tx: mpsc::UnboundedSender<Ctl>,
    tasks: TaskTracker,
    ready: Arc<ClusterReady>,
    backoff: Backoff,
}

/// Connects to the cluster (retrying with backoff until it answers or the node stops),
/// then routes subscription changes until the node stops.
pub(super) async fn run(
    shared: Arc<Shared>,
    ready: Arc<ClusterReady>,
    tasks: TaskTracker,
    backoff: Backoff,
) {
    let mut attempt = 0;
    let conn = loop {
        match connect(&shared).await {
            Ok(conn) => break conn,
            Err(error) => {
                let error = &error as &dyn std::error::Error;
                tracing::warn!(error, attempt, "cannot connect to the redis cluster");
            }
        }
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep(backoff.delay(attempt)) => {}
        }
        attempt = attempt.saturating_add(1);
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut state = shared.state.lock();
        state.link = Some(LinkHandle {
            ctl: tx.clone(),
            publisher: Commands::Cluster(conn.clone()),
        });
        let _ = tx.send(Ctl::subscribe(shared.control_channel()));
        for channel in &state.wanted {
            let _ = tx.send(Ctl::subscribe(shared.redis_name(channel)));
        }
    }
    ready.connected.store(true, Ordering::Relaxed);
    let mut router = Router {
        shared: Arc::clone(&shared),
        conn,
        topology: Topology::default(),
        refreshed: None,
        links: Vec::new(),
        assigned: HashMap::new(),
        tx,
        tasks,
        ready,
        backoff,
    };
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            Some(ctl) = rx.recv() => router.route(ctl).await,
        }
    }
}

async fn connect(shared: &Shared) -> Result<ClusterConnection, BusError> {
    let super::source::Source::Cluster(seeds) = &shared.source else {
        return Err(BusError::Malformed("a cluster link without cluster seeds"));
    };
    let timeout = Duration::from_millis(shared.settings.connect_timeout_ms);
    let client = ClusterClientBuilder::new(seeds.clone())
        .connection_timeout(timeout)
        .response_timeout(shared.response_timeout())
        // Few, quick retries inside the client: a shard that is gone should fail the
        // command (the client hears `unavailable`), not stall it for seconds.
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()?;
    let mut conn = tokio::time::timeout(timeout, client.get_async_connection())
        .await
        .map_err(|_| BusError::NotConnected)??;
    if shared.load_library {
        // Routed to every primary, so that a publish with history works on any shard,
        // whether or not this node holds a link to it.
        super::history::load_library(&mut conn).await?;
    }
    Ok(conn)
}

impl Router {
    async fn route(&mut self, ctl: Ctl) {
        if ctl.rerouted > 0 {
            // The slot map changed under a link: read it again, and give a channel that
            // keeps bouncing (a migration in progress) a moment before it tries again.
            if !self.shared.still_wanted(&ctl.channel) {
                return;
            }
            self.assigned.remove(&ctl.channel);
            if ctl.rerouted > 1 {
                let wait = 50 * u64::from(ctl.rerouted.min(20));
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            self.refresh().await;
        }
        if !ctl.subscribe {
            if let Some(i) = self.assigned.remove(&ctl.channel) {
                self.links[i].submit(ctl);
            }
            return;
        }
        match self.link_for(&ctl.channel).await {
            Some(i) => {
                self.assigned.insert(ctl.channel.clone(), i);
                self.links[i].submit(ctl);
            }
            None => {
                // The cluster serves no such slot right now (it is failing over or being
                // resharded). A client waiting on it hears `unavailable`; a channel that
                // was already subscribed tries again shortly.
                let mut ctl = ctl;
                if let Some(done) = ctl.done.take() {
                    let _ = done.send(Err(BusError::NotConnected));
                    return;
                }
                ctl.rerouted = ctl.rerouted.saturating_add(1);
                let _ = self.tx.send(ctl);
            }
        }
    }

    /// The link for the shard serving `channel`'s slot; made when there is none yet.
    async fn link_for(&mut self, channel: &str) -> Option<usize> {
        let slot = topology::slot(channel.as_bytes());
        if self.topology.owner(slot).is_none() {
            self.refresh().await;
        }
        let owner = self.topology.owner(slot)?.clone();
        let existing = self
            .links
            .iter()
            .position(|link| self.topology.owner(link.anchor) == Some(&owner));
        if existing.is_some() {
            return existing;
        }
        let anchor = self.topology.anchor_of(&owner)?;
        Some(self.spawn_link(anchor))
    }

    fn spawn_link(&mut self, anchor: u16) -> usize {
        let link = Arc::new(ShardLink::new(
            Arc::clone(&self.shared),
            self.conn.clone(),
            self.tx.clone(),
            anchor,
            &self.shared.node_id,
        ));
        let ready = Arc::new(AtomicBool::new(false));
        self.ready.shards.lock().push(Arc::clone(&ready));
        let supervisor = Supervisor {
            backoff: self.backoff,
            events: self.shared.events.clone(),
            metrics: Arc::clone(&self.shared.metrics),
            ready,
            stop: self.shared.stop.clone(),
        };
        tracing::info!(anchor, shards = self.links.len() + 1, "new shard link");
        self.tasks.spawn(supervisor.run(Arc::clone(&link)));
        self.links.push(link);
        self.links.len() - 1
    }

    async fn refresh(&mut self) {
        if self.refreshed.is_some_and(|at| at.elapsed() < REFRESH_MIN) {
            return;
        }
        self.refreshed = Some(Instant::now());
        let fetched = tokio::time::timeout(
            self.shared.response_timeout(),
            Topology::fetch(&mut self.conn),
        )
        .await;
        match fetched {
            Ok(Ok(topology)) => self.topology = topology,
            Ok(Err(error)) => {
                let error = &error as &dyn std::error::Error;
                tracing::debug!(error, "cannot read the slot map");
            }
            Err(_) => tracing::debug!("the slot map did not come in time"),
        }
    }
}
