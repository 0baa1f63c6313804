//! A worker process: holds its share of the connections (a process may open at most
//! ~20,000 files here), subscribes them, records what arrives, and reports to the
//! coordinator as JSON lines on stdout. Commands come as lines on stdin.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, Semaphore};

use crate::client::{self, Target, WsClient};
use crate::scenario::channel;
use crate::stats::{self, Hist};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub index: usize,
    pub targets: Vec<String>,
    /// Global connection indices this worker owns.
    pub first: usize,
    pub count: usize,
    pub rooms: usize,
    /// Loopback source addresses to spread sockets over (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    pub churn_per_s: f64,
    pub connect_concurrency: usize,
}

/// Lines a worker writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    Progress {
        connected: u64,
        subscribed: u64,
        failed: u64,
        received: u64,
    },
    Ready {
        connected: u64,
        failed: u64,
        connect_secs: f64,
        subscribe_secs: f64,
        errors: BTreeMap<String, u64>,
    },
    Result(Box<WorkerResult>),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Per room: (connections counted for loss, received, duplicates, out of order).
    pub rooms: Vec<[u64; 4]>,
    pub latency: String,
    /// Per second since the start of publishing: latency histograms, serialised.
    pub series: Vec<String>,
    pub close_codes: BTreeMap<String, u64>,
    pub churn_reconnects: u64,
    pub churn_failures: u64,
    pub received: u64,
}

/// Per-connection bookkeeping, updated by its reader task.
#[derive(Default, Clone, Copy)]
struct ConnStats {
    received: u64,
    dups: u64,
    ooo: u64,
    last: Option<u64>,
    /// Left the loss accounting (churned: it was away on purpose for a while).
    churned: bool,
}

struct Shared {
    /// Sharded to keep lock contention between reader tasks low.
    hists: Vec<Mutex<(Hist, Vec<Hist>)>>,
    received: AtomicU64,
    start_ns: AtomicU64,
    stopping: AtomicBool,
    close_codes: Mutex<BTreeMap<String, u64>>,
}

const SHARDS: usize = 16;

fn emit(report: &Report) {
    if let Ok(line) = serde_json::to_string(report) {
        println!("{line}");
    }
}

pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let targets: Vec<Target> = config
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared {
        hists: (0..SHARDS)
            .map(|_| Mutex::new((stats::new_hist(), Vec::new())))
            .collect(),
        received: AtomicU64::new(0),
        start_ns: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        close_codes: Mutex::new(BTreeMap::new()),
    });
    let connected = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));

    let progress = {
        let (connected, subscribed, failed, shared) = (
            connected.clone(),
            subscribed.clone(),
            failed.clone(),
            shared.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                emit(&Report::Progress {
                    connected: connected.load(Ordering::Relaxed),
                    subscribed: subscribed.load(Ordering::Relaxed),
                    failed: failed.load(Ordering::Relaxed),
                    received: shared.received.load(Ordering::Relaxed),
                });
            }
        })
    };

    // Phase 1: connect everybody, as fast as the nodes accept.
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let mut handles = Vec::with_capacity(config.count);
    for i in config.first..config.first + config.count {
        let target = targets[i % targets.len()].clone();
        let source = source_for(&config.sources, i);
        let (gate, connected, failed, errors) = (
            gate.clone(),
            connected.clone(),
            failed.clone(),
            errors.clone(),
        );
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            match client::connect(&target, source, Duration::from_secs(30)).await {
                Ok(c) => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    Some((i, c))
                }
                Err(error) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    *errors.lock().await.entry(format!("{error:#}")).or_default() += 1;
                    None
                }
            }
        }));
    }
    let mut conns = Vec::with_capacity(config.count);
    for h in handles {
        if let Ok(Some(c)) = h.await {
            conns.push(c);
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();

    // Phase 2: subscribe everybody, and wait for every `ok`.
    let t1 = Instant::now();
    let mut handles = Vec::with_capacity(conns.len());
    for (i, mut c) in conns {
        let room = i % config.rooms;
        let (gate, subscribed, failed, errors) = (
            gate.clone(),
            subscribed.clone(),
            failed.clone(),
            errors.clone(),
        );
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            match subscribe(&mut c, room).await {
                Ok(()) => {
                    subscribed.fetch_add(1, Ordering::Relaxed);
                    Some((i, c))
                }
                Err(error) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    *errors
                        .lock()
                        .await
                        .entry(format!("subscribe: {error:#}"))
                        .or_default() += 1;
                    None
                }
            }
        }));
    }
    let mut ready = Vec::new();
    for h in handles {
        if let Ok(Some(c)) = h.await {
            ready.push(c);
        }
    }
    let subscribe_secs = t1.elapsed().as_secs_f64();
    emit(&Report::Ready {
        connected: connected.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        connect_secs,
        subscribe_secs,
        errors: errors.lock().await.clone(),
    });

    // Phase 3: read until told to stop.
    let mut stats_slots: Vec<Arc<Mutex<ConnStats>>> = Vec::new();
    let mut room_of = Vec::new();
    let mut readers = Vec::new();
    for (i, c) in ready {
        let slot = Arc::new(Mutex::new(ConnStats::default()));
        stats_slots.push(slot.clone());
        room_of.push(i % config.rooms);
        readers.push(tokio::spawn(read_loop(c, slot, shared.clone(), i % SHARDS)));
    }
    let churn = (config.churn_per_s > 0.0).then(|| {
        tokio::spawn(churn_loop(
            config.clone(),
            targets.clone(),
            stats_slots.clone(),
            readers
                .iter()
                .map(tokio::task::JoinHandle::abort_handle)
                .collect(),
            shared.clone(),
        ))
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if let Some(ns) = line.strip_prefix("go ") {
            shared
                .start_ns
                .store(ns.parse().context("go <start_ns>")?, Ordering::Relaxed);
        } else if line == "stop" {
            break;
        }
    }
    shared.stopping.store(true, Ordering::Relaxed);
    let (churn_reconnects, churn_failures) = match churn {
        Some(h) => h.await.unwrap_or_default(),
        None => (0, 0),
    };
    for r in &readers {
        r.abort();
    }
    progress.abort();

    let mut result = WorkerResult {
        rooms: vec![[0; 4]; config.rooms],
        received: shared.received.load(Ordering::Relaxed),
        churn_reconnects,
        churn_failures,
        close_codes: shared.close_codes.lock().await.clone(),
        ..Default::default()
    };
    for (slot, room) in stats_slots.iter().zip(room_of) {
        let s = *slot.lock().await;
        if s.churned {
            continue;
        }
        let r = &mut result.rooms[room];
        r[0] += 1;
        r[1] += s.received;
        r[2] += s.dups;
        r[3] += s.ooo;
    }
    let mut latency = stats::new_hist();
    let mut series: Vec<Hist> = Vec::new();
    for shard in &shared.hists {
        let shard = shard.lock().await;
        latency.add(&shard.0).ok();
        stats::merge_series(&mut series, &shard.1);
    }
    result.latency = stats::encode(&latency);
    result.series = series.iter().map(stats::encode).collect();
    emit(&Report::Result(Box::new(result)));
    tokio::io::stdout().flush().await.ok();
    Ok(())
}

fn source_for(sources: &[IpAddr], i: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[i % sources.len()])
}

async fn subscribe(c: &mut WsClient, room: usize) -> anyhow::Result<()> {
    let req = format!(
        r#"{{"id":1,"op":"subscribe","channel":"{}"}}"#,
        channel(room)
    );
    c.write
        .write_all(&client::text_frame(req.as_bytes()))
        .await?;
    loop {
        let (op, payload) = tokio::time::timeout(Duration::from_secs(30), c.read.next())
            .await
            .context("no reply to subscribe")??
            .context("closed while subscribing")?;
        match op {
            1 if payload.starts_with(br#"{"op":"ok""#) => return Ok(()),
            1 if payload.starts_with(br#"{"op":"error""#) => {
                anyhow::bail!("{}", String::from_utf8_lossy(&payload))
            }
            8 => anyhow::bail!("closed: {}", close_code(&payload)),
            _ => {}
        }
    }
}

fn close_code(payload: &[u8]) -> String {
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
struct Pushed {
    op: String,
    #[serde(default)]
    data: Option<Data>,
}

async fn read_loop(
    mut c: WsClient,
    slot: Arc<Mutex<ConnStats>>,
    shared: Arc<Shared>,
    shard: usize,
) {
    loop {
        let frame = match c.read.next().await {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => {
                if !shared.stopping.load(Ordering::Relaxed) {
                    *shared
                        .close_codes
                        .lock()
                        .await
                        .entry("eof".into())
                        .or_default() += 1;
                }
                return;
            }
        };
        match frame.0 {
            1 => {
                let Ok(msg) = serde_json::from_slice::<Pushed>(&frame.1) else {
                    continue;
                };
                let Some(data) = msg.data.filter(|_| msg.op == "message") else {
                    continue;
                };
                let now = stats::now_ns();
                shared.received.fetch_add(1, Ordering::Relaxed);
                {
                    let mut s = slot.lock().await;
                    s.received += 1;
                    match s.last {
                        Some(last) if data.s == last => s.dups += 1,
                        Some(last) if data.s < last => s.ooo += 1,
                        _ => s.last = Some(data.s),
                    }
                }
                let latency_us = now.saturating_sub(data.t) / 1000;
                let start = shared.start_ns.load(Ordering::Relaxed);
                let second = (data.t.saturating_sub(start) / 1_000_000_000) as usize;
                let mut h = shared.hists[shard].lock().await;
                stats::record(&mut h.0, latency_us);
                while h.1.len() <= second.min(3600) {
                    h.1.push(stats::new_series_hist());
                }
                stats::record(&mut h.1[second.min(3600)], latency_us);
            }
            9 => {
                let pong = client::pong_frame(&frame.1);
                let sent = c.write.write_all(&pong).await;
                if sent.is_err() {
                    return;
                }
            }
            8 => {
                if !shared.stopping.load(Ordering::Relaxed) {
                    let code = close_code(&frame.1);
                    *shared.close_codes.lock().await.entry(code).or_default() += 1;
                }
                return;
            }
            _ => {}
        }
    }
}

/// Every second, closes a share of the (not yet churned) connections and opens new ones in
/// their place, subscribed to the same room. Returns (reconnects, failures).
async fn churn_loop(
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
            if next >= slots.len() || shared.stopping.load(Ordering::Relaxed) {
                break;
            }
            let i = config.first + next;
            slots[next].lock().await.churned = true;
            aborts[next].abort();
            next += 1;
            let target = &targets[i % targets.len()];
            let source = source_for(&config.sources, i);
            let reconnected = async {
                let mut c = client::connect(target, source, Duration::from_secs(10)).await?;
                subscribe(&mut c, i % config.rooms).await?;
                anyhow::Ok(c)
            }
            .await;
            match reconnected {
                Ok(c) => {
                    ok += 1;
                    let slot = Arc::new(Mutex::new(ConnStats {
                        churned: true,
                        ..Default::default()
                    }));
                    tokio::spawn(read_loop(c, slot, shared.clone(), i % SHARDS));
                }
                Err(_) => failed += 1,
            }
        }
    }
    (ok, failed)
}
