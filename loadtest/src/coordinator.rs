//! The coordinator: starts worker processes, waits until every connection is subscribed,
//! publishes on a fixed schedule, stops the workers and merges what they saw.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::publisher::Publisher;
use crate::report::{NodeUsage, Outcome};
use crate::scenario::Scenario;
use crate::stats;
use crate::worker::{Report, WorkerConfig, WorkerResult};

/// Connections per worker process: well under the 20,000 open files one process may have.
pub const PER_WORKER: usize = 15_000;

pub struct Plan {
    pub scenario: Scenario,
    pub targets: Vec<String>,
    pub redis_url: String,
    pub redis_prefix: String,
    pub node_pids: Vec<u32>,
    pub redis_pids: Vec<u32>,
    pub workers: usize,
    pub sources: Vec<IpAddr>,
    pub quiet: bool,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

type Reports = mpsc::UnboundedReceiver<(usize, Report)>;

/// Per worker: (connected, subscribed, failed, received) from its latest progress report.
type Progress = Vec<(u64, u64, u64, u64)>;

pub async fn run(plan: Plan) -> anyhow::Result<Outcome> {
    let sc = &plan.scenario;
    let usage_before = sample_nodes(&plan).await;
    let files_before = node_files(&plan);
    let (mut workers, mut rx) = start_workers(&plan)?;
    let mut progress: Progress = vec![(0, 0, 0, 0); workers.len()];
    let mut outcome = Outcome::new(sc, &plan.targets, workers.len());
    connect_phase(&plan, &mut rx, &mut progress, &mut outcome).await?;
    // Settle, then read node memory with everybody connected and idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let usage_idle = sample_nodes(&plan).await;
    let redis_idle = sample_redis(&plan);
    publish_phase(&plan, &mut workers, &mut rx, &mut progress, &mut outcome).await?;
    let usage_after = sample_nodes(&plan).await;
    outcome.set_redis_usage(&plan.redis_pids, &redis_idle, &sample_redis(&plan));
    let results = stop_workers(workers, &mut rx).await?;
    merge(&mut outcome, sc.rooms(), &results)?;
    outcome.delivered_per_s = outcome.received_total as f64 / sc.duration_s.max(1) as f64;
    // The clients are gone with their workers: how much of their memory does a node keep?
    // Once the nodes have closed their sockets (19,000 leaving at once can keep a node busy
    // for two seconds), the lowest RSS within the next 5 s: the allocator hands freed
    // pages back only once they have been free for its purge delay (1 s).
    wait_until_released(&plan, &files_before).await;
    let usage_left = settled_usage(&plan).await;
    let sampled = usage_before.len();
    outcome.nodes = (0..sampled)
        .map(|i| {
            let pid = plan.node_pids.get(i).copied().unwrap_or(0);
            let samples = [
                usage_before[i],
                usage_idle[i],
                usage_after[i],
                usage_left[i],
            ];
            NodeUsage::from_samples(pid, samples, sc.connections, sampled)
        })
        .collect();
    outcome.finish_memory();
    Ok(outcome)
}

/// Starts one worker process per share of the connections; their reports arrive on the
/// returned channel, tagged with the worker's index.
fn start_workers(plan: &Plan) -> anyhow::Result<(Vec<Worker>, Reports)> {
    let sc = &plan.scenario;
    let exe = std::env::current_exe()?;
    let (tx, rx) = mpsc::unbounded_channel::<(usize, Report)>();
    let per = sc.connections.div_ceil(plan.workers);
    let mut workers = Vec::new();
    for w in 0..plan.workers {
        let first = w * per;
        let count = per.min(sc.connections.saturating_sub(first));
        if count == 0 {
            break;
        }
        let config = WorkerConfig {
            index: w,
            targets: plan.targets.clone(),
            first,
            count,
            rooms: sc.rooms(),
            sources: plan.sources.clone(),
            churn_per_s: sc.churn_per_s,
            resume: sc.resume,
            connect_concurrency: sc.connect_concurrency,
            transport: sc.transport,
        };
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg(serde_json::to_string(&config)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a worker process")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(report) = serde_json::from_str::<Report>(&line) {
                    let _ = tx.send((w, report));
                }
            }
        });
        workers.push(Worker { child, stdin });
    }
    Ok((workers, rx))
}

/// Waits until every worker has connected and subscribed its share; records the figures.
async fn connect_phase(
    plan: &Plan,
    rx: &mut Reports,
    progress: &mut Progress,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let bar = progress_bar(plan.quiet, plan.scenario.connections as u64, "connecting");
    let mut ready: Vec<Option<Report>> = (0..progress.len()).map(|_| None).collect();
    let started = Instant::now();
    while ready.iter().any(Option::is_none) {
        let Some((w, report)) = rx.recv().await else {
            bail!("a worker exited early")
        };
        match report {
            Report::Progress {
                connected,
                subscribed,
                failed,
                received,
            } => {
                progress[w] = (connected, subscribed, failed, received);
                let sum = |f: fn(&(u64, u64, u64, u64)) -> u64| progress.iter().map(f).sum::<u64>();
                bar.set_position(sum(|p| p.0));
                bar.set_message(format!(
                    "subscribed {}, failed {}",
                    sum(|p| p.1),
                    sum(|p| p.2)
                ));
            }
            r @ Report::Ready { .. } => ready[w] = Some(r),
            Report::Result(_) => bail!("worker {w} reported a result before it was asked"),
        }
    }
    bar.finish_and_clear();
    outcome.setup_secs = started.elapsed().as_secs_f64();
    for r in ready.into_iter().flatten() {
        if let Report::Ready {
            connected,
            failed,
            connect_secs,
            subscribe_secs,
            errors,
        } = r
        {
            outcome.connected += connected;
            outcome.connect_failures += failed;
            outcome.connect_secs = outcome.connect_secs.max(connect_secs);
            outcome.subscribe_secs = outcome.subscribe_secs.max(subscribe_secs);
            for (k, v) in errors {
                *outcome.connect_errors.entry(k).or_insert(0) += v;
            }
        }
    }
    outcome.connect_rate = outcome.connected as f64 / outcome.connect_secs.max(1e-9);
    Ok(())
}

/// Starts the workers' clocks, publishes on schedule, and lets what is in flight arrive.
async fn publish_phase(
    plan: &Plan,
    workers: &mut [Worker],
    rx: &mut Reports,
    progress: &mut Progress,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let sc = &plan.scenario;
    let start_ns = stats::now_ns() + 200_000_000;
    for w in workers.iter_mut() {
        w.stdin
            .write_all(format!("go {start_ns}\n").as_bytes())
            .await?;
    }
    let total = (sc.rate * sc.duration_s as f64).round() as u64;
    if total == 0 {
        return Ok(());
    }
    let mut publisher =
        Publisher::connect(sc, &plan.redis_url, &plan.redis_prefix, &plan.targets).await?;
    let bar = progress_bar(plan.quiet, total, "publishing");
    let started = Instant::now();
    let publish = publisher.run(start_ns, sc.rate, total, sc.rooms(), &bar);
    tokio::pin!(publish);
    let stats = loop {
        tokio::select! {
            r = &mut publish => break r?,
            Some((w, report)) = rx.recv() => {
                if let Report::Progress { received, .. } = report {
                    progress[w].3 = received;
                    let got: u64 = progress.iter().map(|p| p.3).sum();
                    bar.set_message(format!("delivered {got}"));
                }
            }
        }
    };
    bar.finish_and_clear();
    outcome.published = stats.published;
    outcome.publish_errors = stats.errors;
    outcome.publisher_max_lag_ms = stats.max_lag_ms;
    outcome.publish_secs = started.elapsed().as_secs_f64();
    let expected: u64 = expected_per_room(stats.published, sc.rooms()).iter().sum();
    let want = sc.connections as u64 * expected / sc.rooms() as u64;
    drain_in_flight(rx, progress, want).await;
    Ok(())
}

/// Waits up to 5 s for the workers to report `want` deliveries in all.
async fn drain_in_flight(rx: &mut Reports, progress: &mut Progress, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let next = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        if let Ok(Some((w, Report::Progress { received, .. }))) = next {
            progress[w].3 = received;
            if progress.iter().map(|p| p.3).sum::<u64>() >= want {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
        }
    }
}

/// Tells every worker to stop and collects their results.
async fn stop_workers(
    mut workers: Vec<Worker>,
    rx: &mut Reports,
) -> anyhow::Result<Vec<WorkerResult>> {
    for w in &mut workers {
        w.stdin.write_all(b"stop\n").await?;
    }
    let mut results: Vec<WorkerResult> = Vec::new();
    while results.len() < workers.len() {
        let Some((_, report)) = rx.recv().await else {
            bail!("a worker exited without a result")
        };
        if let Report::Result(r) = report {
            results.push(*r);
        }
    }
    for mut w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
    }
    Ok(results)
}

/// Adds the workers' results up: loss, duplicates and order per room, latency, closes.
fn merge(outcome: &mut Outcome, rooms: usize, results: &[WorkerResult]) -> anyhow::Result<()> {
    let per_room = expected_per_room(outcome.published, rooms);
    let mut latency = stats::new_hist();
    let mut series = Vec::new();
    for r in results {
        for (room, [conns, received, dups, ooo]) in r.rooms.iter().enumerate() {
            outcome.expected += conns * per_room[room];
            outcome.delivered += received - dups;
            outcome.duplicates += dups;
            outcome.out_of_order += ooo;
        }
        latency.add(stats::decode(&r.latency)?).ok();
        let s: Vec<_> = r
            .series
            .iter()
            .filter_map(|h| stats::decode(h).ok())
            .collect();
        stats::merge_series(&mut series, &s);
        for (k, v) in &r.close_codes {
            *outcome.close_codes.entry(k.clone()).or_insert(0) += v;
        }
        outcome.churn_reconnects += r.churn_reconnects;
        outcome.churn_failures += r.churn_failures;
        outcome.received_total += r.received;
    }
    outcome.lost = outcome.expected.saturating_sub(outcome.delivered);
    outcome.set_latency(&latency, &series);
    Ok(())
}

/// (RSS, CPU seconds) of each node: from /proc for local pids, else from each target's
/// `/metrics` (behind a load balancer that is whichever node answers).
async fn sample_nodes(plan: &Plan) -> Vec<Option<(u64, f64)>> {
    if !plan.node_pids.is_empty() {
        return plan
            .node_pids
            .iter()
            .map(|p| crate::procstat::read(*p))
            .collect();
    }
    let mut out = Vec::new();
    for t in &plan.targets {
        let host = crate::client::Target::parse(t)
            .map(|t| t.host)
            .unwrap_or_default();
        out.push(crate::procstat::read_metrics(&host).await);
    }
    out
}

/// Each node's lowest RSS (with its CPU then) over 5 s, sampled every half second.
async fn settled_usage(plan: &Plan) -> Vec<Option<(u64, f64)>> {
    let mut lowest = sample_nodes(plan).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (low, now) in lowest.iter_mut().zip(sample_nodes(plan).await) {
            if let Some(now) = now
                && low.is_none_or(|l| now.0 < l.0)
            {
                *low = Some(now);
            }
        }
    }
    lowest
}

/// Open files of each local node, before any client came.
fn node_files(plan: &Plan) -> Vec<Option<usize>> {
    plan.node_pids
        .iter()
        .map(|p| crate::procstat::open_files(*p))
        .collect()
}

/// Waits, for at most 10 s, until every local node is back to the files it had open
/// before the clients came (a few more allowed: its Redis links may have reconnected).
async fn wait_until_released(plan: &Plan, before: &[Option<usize>]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let released = |now: Vec<Option<usize>>| {
        now.iter()
            .zip(before)
            .all(|(now, before)| match (now, before) {
                (Some(now), Some(before)) => *now <= before + 8,
                _ => true,
            })
    };
    while tokio::time::Instant::now() < deadline && !released(node_files(plan)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU seconds of each local redis-server.
fn sample_redis(plan: &Plan) -> Vec<Option<f64>> {
    plan.redis_pids
        .iter()
        .map(|p| crate::procstat::read(*p).map(|(_, cpu)| cpu))
        .collect()
}

/// Messages per room when `published` messages went round-robin over `rooms`.
fn expected_per_room(published: u64, rooms: usize) -> Vec<u64> {
    let rooms = rooms as u64;
    (0..rooms)
        .map(|r| published / rooms + u64::from(r < published % rooms))
        .collect()
}

fn progress_bar(quiet: bool, len: u64, what: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>11} [{bar:40}] {pos}/{len} {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what);
    bar
}
