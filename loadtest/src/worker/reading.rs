//! Phase 3 of a worker: read every connection until told to stop, recording per
//! connection what arrived (loss, duplicates, order) and per shard the latency; and the
//! churn scenario's reconnects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::setup::subscribe;
use super::{WorkerConfig, source_for};
use crate::client::{self, Target, WsClient};
use crate::stats::{self, Hist};

/// Per-connection bookkeeping, updated by its reader task.
#[derive(Default, Clone)]
pub(super) struct ConnStats {
    pub received: u64,
    pub dups: u64,
    pub ooo: u64,
    last: Option<u64>,
    /// Where the channel got to (offset, epoch), on channels with history: what a
    /// resuming connection recovers from.
    pub position: Option<(u64, String)>,
    /// Left the loss accounting (churned: it was away on purpose for a while).
    pub churned: bool,
    /// Which reader records into this slot: a resumed connection's new reader bumps it,
    /// so the old one (aborted, but maybe still draining its buffer) records nothing more.
    generation: u64,
}

pub(super) struct Shared {
    /// Sharded to keep lock contention between reader tasks low.
    pub hists: Vec<Mutex<(Hist, Vec<Hist>)>>,
    pub received: AtomicU64,
    pub start_ns: AtomicU64,
    pub stopping: AtomicBool,
    pub close_codes: Mutex<BTreeMap<String, u64>>,
}

pub(super) const SHARDS: usize = 16;

impl Shared {
    pub fn new() -> Self {
        Self {
            hists: (0..SHARDS)
                .map(|_| Mutex::new((stats::new_hist(), Vec::new())))
                .collect(),
            received: AtomicU64::new(0),
            start_ns: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            close_codes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts how a connection ended, unless the worker is stopping anyway.
    async fn ended(&self, how: String) {
        if !self.stopping.load(Ordering::Relaxed) {
            *self.close_codes.lock().await.entry(how).or_default() += 1;
        }
    }
}

pub(super) fn close_code(payload: &[u8]) -> String {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]]).to_string()
    } else {
        "none".into()
    }
}

/// What a loadtest message carries in `data`.
#[derive(Deserialize)]
struct Data {
    /// Sequence number, global over rooms, from the single publisher.
    s: u64,
    /// Scheduled send time, nanoseconds since the Unix epoch.
    t: u64,
}

#[derive(Deserialize)]
struct Pushed<'a> {
    op: &'a str,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow)]
    epoch: Option<&'a str>,
}

pub(super) async fn read_loop(
    mut c: WsClient,
    slot: Arc<Mutex<ConnStats>>,
    shared: Arc<Shared>,
    shard: usize,
) {
    let generation = slot.lock().await.generation;
    loop {
        let (op, payload) = match c.next().await {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return shared.ended("eof".into()).await,
        };
        match op {
            1 => record(&payload, &slot, &shared, shard, generation).await,
            9 if c
                .write
                .write_all(&client::pong_frame(&payload))
                .await
                .is_err() =>
            {
                return;
            }
            8 => return shared.ended(close_code(&payload)).await,
            _ => {}
        }
    }
}

/// Accounts one text frame: a `message` push is checked against the connection's last
/// sequence number and its latency recorded against its scheduled send time.
async fn record(
    payload: &[u8],
    slot: &Mutex<ConnStats>,
    shared: &Shared,
    shard: usize,
    generation: u64,
) {
    let Ok(msg) = serde_json::from_slice::<Pushed>(payload) else {
        return;
    };
    let Some(data) = msg.data.filter(|_| msg.op == "message") else {
        return;
    };
    let now = stats::now_ns();
    {
        let mut s = slot.lock().await;
        if s.generation != generation {
            return;
        }
        shared.received.fetch_add(1, Ordering::Relaxed);
        s.received += 1;
        if let (Some(offset), Some(epoch)) = (msg.offset, msg.epoch) {
            match &mut s.position {
                Some((at, known)) if known == epoch => *at = offset,
                _ => s.position = Some((offset, epoch.to_string())),
            }
        }
        match s.last {
            Some(last) if data.s == last => s.dups += 1,
            Some(last) if data.s < last => s.ooo += 1,
            _ => s.last = Some(data.s),
        }
    }
    let latency_us = now.saturating_sub(data.t) / 1000;
    let start = shared.start_ns.load(Ordering::Relaxed);
    let second = ((data.t.saturating_sub(start) / 1_000_000_000) as usize).min(3600);
    let mut h = shared.hists[shard].lock().await;
    stats::record(&mut h.0, latency_us);
    while h.1.len() <= second {
        h.1.push(stats::new_series_hist());
    }
    stats::record(&mut h.1[second], latency_us);
}

/// Every second, closes a share of the (not yet churned) connections and opens new ones in
/// their place, subscribed to the same room. Plain churn takes them out of the loss
/// accounting; resume brings them back on another node, recovering from where they got
/// to, and keeps counting them. Returns (reconnects, failures).
pub(super) async fn churn_loop(
    config: WorkerConfig,
    targets: Vec<Target>,
    slots: Vec<Arc<Mutex<ConnStats>>>,
    aborts: Vec<tokio::task::AbortHandle>,
    shared: Arc<Shared>,
) -> (u64, u64) {
    let per_tick = ((slots.len() as f64) * config.churn_per_s).ceil() as usize;
    let mut next = 0;
    let (mut ok, mut failed) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while !shared.stopping.load(Ordering::Relaxed) {
        tick.tick().await;
        for _ in 0..per_tick {
            if shared.stopping.load(Ordering::Relaxed) {
                break;
            }
            if next >= slots.len() {
                if !config.resume {
                    break;
                }
                next = 0;
            }
            let i = config.first + next;
            aborts[next].abort();
            let slot = if config.resume {
                slots[next].clone()
            } else {
                slots[next].lock().await.churned = true;
                Arc::new(Mutex::new(ConnStats {
                    churned: true,
                    ..Default::default()
                }))
            };
            next += 1;
            match reconnect(&config, &targets, i, &slot, &shared).await {
                Ok(c) => {
                    ok += 1;
                    // Resumed readers are not aborted again: each connection resumes once
                    // per pass over the slots, and a pass takes longer than a run.
                    tokio::spawn(read_loop(c, slot, shared.clone(), i % SHARDS));
                }
                Err(_) => failed += 1,
            }
        }
    }
    (ok, failed)
}

/// A new connection for global index `i`: to another node when resuming, recovering from
/// the slot's position.
async fn reconnect(
    config: &WorkerConfig,
    targets: &[Target],
    i: usize,
    slot: &Mutex<ConnStats>,
    shared: &Shared,
) -> anyhow::Result<WsClient> {
    let hop = usize::from(config.resume);
    let target = &targets[(i + hop) % targets.len()];
    let source = source_for(&config.sources, i);
    let mut c = client::connect(target, source, Duration::from_secs(10)).await?;
    if !config.resume {
        subscribe(&mut c, i % config.rooms).await?;
        return Ok(c);
    }
    // Retire the old reader and take the position it got to, in one step.
    let (from, generation) = {
        let mut s = slot.lock().await;
        s.generation += 1;
        (s.position.clone(), s.generation)
    };
    let recover = match &from {
        Some((offset, epoch)) => format!(r#","recover":{{"offset":{offset},"epoch":"{epoch}"}}"#),
        None => String::new(),
    };
    let req = format!(
        r#"{{"id":1,"op":"subscribe","channel":"{}"{recover}}}"#,
        crate::scenario::channel(i % config.rooms)
    );
    c.write
        .write_all(&client::text_frame(req.as_bytes()))
        .await?;
    // The recovered messages come before the reply: they count like any other.
    loop {
        let (op, payload) = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await??
            .ok_or_else(|| anyhow::anyhow!("closed while resuming"))?;
        if op == 8 {
            anyhow::bail!("closed: {}", close_code(&payload));
        }
        if op != 1 {
            continue;
        }
        if payload.starts_with(br#"{"op":"ok""#) {
            let reply = String::from_utf8_lossy(&payload);
            anyhow::ensure!(
                from.is_none() || reply.contains(r#""recovered":true"#),
                "not recovered: {reply}"
            );
            return Ok(c);
        }
        anyhow::ensure!(!payload.starts_with(br#"{"op":"error""#), "refused");
        record(&payload, slot, shared, i % SHARDS, generation).await;
    }
}
