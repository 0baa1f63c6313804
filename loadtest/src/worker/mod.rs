//! A worker process: holds its share of the connections (a process may open at most
//! ~20,000 files here), subscribes them, records what arrives, and reports to the
//! coordinator as JSON lines on stdout. Commands come as lines on stdin.

mod reading;
mod setup;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use crate::client::{Target, WsClient};
use crate::stats::{self, Hist};
use reading::{ConnStats, SHARDS, Shared};
use setup::Counters;

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
    /// Churned connections come back on another node and recover (resume scenario).
    pub resume: bool,
    pub connect_concurrency: usize,
    pub transport: crate::client::Transport,
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
    let shared = Arc::new(Shared::new());
    let counters = Arc::new(Counters::default());
    let progress = tokio::spawn(report_progress(counters.clone(), shared.clone()));

    let t0 = Instant::now();
    let conns = setup::connect_all(&config, &targets, &counters).await;
    let connect_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let ready = setup::subscribe_all(&config, conns, &counters).await;
    emit(&Report::Ready {
        connected: counters.connected.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        connect_secs,
        subscribe_secs: t1.elapsed().as_secs_f64(),
        errors: counters.errors.lock().await.clone(),
    });

    let mut readers = Readers::start(&config, &targets, ready, &shared);
    wait_for_stop(&shared).await?;
    shared.stopping.store(true, Ordering::Relaxed);
    let churn = readers.stop().await;
    progress.abort();
    let result = collect(&config, &shared, &readers.slots, churn).await;
    emit(&Report::Result(Box::new(result)));
    tokio::io::stdout().flush().await.ok();
    Ok(())
}

async fn report_progress(counters: Arc<Counters>, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        emit(&Report::Progress {
            connected: counters.connected.load(Ordering::Relaxed),
            subscribed: counters.subscribed.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            received: shared.received.load(Ordering::Relaxed),
        });
    }
}

/// Reads the coordinator's commands: `go <start_ns>` starts the clock, `stop` ends.
async fn wait_for_stop(shared: &Shared) -> anyhow::Result<()> {
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
    Ok(())
}

/// The reading tasks of phase 3, with each connection's bookkeeping and room.
struct Readers {
    slots: Vec<(Arc<Mutex<ConnStats>>, usize)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    churn: Option<tokio::task::JoinHandle<(u64, u64)>>,
}

impl Readers {
    fn start(
        config: &WorkerConfig,
        targets: &[Target],
        ready: Vec<(usize, WsClient)>,
        shared: &Arc<Shared>,
    ) -> Self {
        let mut slots = Vec::with_capacity(ready.len());
        let mut tasks = Vec::with_capacity(ready.len());
        for (i, c) in ready {
            let slot = Arc::new(Mutex::new(ConnStats::default()));
            slots.push((slot.clone(), i % config.rooms));
            tasks.push(tokio::spawn(reading::read_loop(
                c,
                slot,
                shared.clone(),
                i % SHARDS,
            )));
        }
        let churn = (config.churn_per_s > 0.0).then(|| {
            tokio::spawn(reading::churn_loop(
                config.clone(),
                targets.to_vec(),
                slots.iter().map(|(s, _)| s.clone()).collect(),
                tasks
                    .iter()
                    .map(tokio::task::JoinHandle::abort_handle)
                    .collect(),
                shared.clone(),
            ))
        });
        Self {
            slots,
            tasks,
            churn,
        }
    }

    /// Stops every reader; returns the churn loop's (reconnects, failures). The churn
    /// loop ends by itself once `stopping` is set.
    async fn stop(&mut self) -> (u64, u64) {
        let churn = match self.churn.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => (0, 0),
        };
        for r in &self.tasks {
            r.abort();
        }
        churn
    }
}

/// Merges what every connection and shard recorded into the worker's result.
async fn collect(
    config: &WorkerConfig,
    shared: &Shared,
    slots: &[(Arc<Mutex<ConnStats>>, usize)],
    (churn_reconnects, churn_failures): (u64, u64),
) -> WorkerResult {
    let mut result = WorkerResult {
        rooms: vec![[0; 4]; config.rooms],
        received: shared.received.load(Ordering::Relaxed),
        churn_reconnects,
        churn_failures,
        close_codes: shared.close_codes.lock().await.clone(),
        ..Default::default()
    };
    for (slot, room) in slots {
        let s = slot.lock().await.clone();
        if s.churned {
            continue;
        }
        let r = &mut result.rooms[*room];
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
    result
}

fn source_for(sources: &[IpAddr], i: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[i % sources.len()])
}
