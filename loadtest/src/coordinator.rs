//! The coordinator: starts worker processes, waits until every connection is subscribed,
//! publishes on a fixed schedule, stops the workers and merges what they saw.

use std::collections::BTreeMap;
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
    pub workers: usize,
    pub sources: Vec<IpAddr>,
    pub quiet: bool,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

pub async fn run(plan: Plan) -> anyhow::Result<Outcome> {
    let sc = &plan.scenario;
    let rooms = sc.rooms();
    let exe = std::env::current_exe()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Report)>();
    let mut workers = Vec::new();
    let per = sc.connections.div_ceil(plan.workers);
    let usage_before = sample_nodes(&plan).await;
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
            rooms,
            sources: plan.sources.clone(),
            churn_per_s: sc.churn_per_s,
            connect_concurrency: 512,
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
    drop(tx);
    let n = workers.len();

    // Connect and subscribe.
    let bar = progress_bar(plan.quiet, sc.connections as u64, "connecting");
    let mut progress = vec![(0u64, 0u64, 0u64, 0u64); n];
    let mut ready: Vec<Option<Report>> = (0..n).map(|_| None).collect();
    let connect_started = Instant::now();
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
                let c: u64 = progress.iter().map(|p| p.0).sum();
                let s: u64 = progress.iter().map(|p| p.1).sum();
                let f: u64 = progress.iter().map(|p| p.2).sum();
                bar.set_position(c);
                bar.set_message(format!("subscribed {s}, failed {f}"));
            }
            r @ Report::Ready { .. } => ready[w] = Some(r),
            Report::Result(_) => bail!("worker {w} reported a result before it was asked"),
        }
    }
    bar.finish_and_clear();
    let wall_connect = connect_started.elapsed().as_secs_f64();
    let mut outcome = Outcome::new(sc, &plan.targets, n);
    let mut errors = BTreeMap::new();
    let mut connect_secs: f64 = 0.0;
    for r in ready.into_iter().flatten() {
        if let Report::Ready {
            connected,
            failed,
            connect_secs: cs,
            subscribe_secs,
            errors: e,
        } = r
        {
            outcome.connected += connected;
            outcome.connect_failures += failed;
            connect_secs = connect_secs.max(cs);
            outcome.subscribe_secs = outcome.subscribe_secs.max(subscribe_secs);
            for (k, v) in e {
                *errors.entry(k).or_insert(0) += v;
            }
        }
    }
    outcome.connect_errors = errors;
    outcome.connect_secs = connect_secs;
    outcome.connect_rate = outcome.connected as f64 / connect_secs.max(1e-9);
    outcome.setup_secs = wall_connect;
    // Settle, then read node memory with everybody connected and idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let usage_idle = sample_nodes(&plan).await;

    // Publish on schedule.
    let start_ns = stats::now_ns() + 200_000_000;
    for w in &mut workers {
        w.stdin
            .write_all(format!("go {start_ns}\n").as_bytes())
            .await?;
    }
    let total = (sc.rate * sc.duration_s as f64).round() as u64;
    let mut published = 0;
    let mut publish_errors = 0;
    let mut lag_max_ms: f64 = 0.0;
    if total > 0 {
        let mut publisher =
            Publisher::connect(sc, &plan.redis_url, &plan.redis_prefix, &plan.targets).await?;
        let bar = progress_bar(plan.quiet, total, "publishing");
        let started = Instant::now();
        let publish = publisher.run(start_ns, sc.rate, total, rooms, &bar);
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
        published = stats.published;
        publish_errors = stats.errors;
        lag_max_ms = stats.max_lag_ms;
        outcome.publish_secs = started.elapsed().as_secs_f64();
        // Let what is in flight arrive.
        let expected_total = expected_per_room(published, rooms);
        let deadline = Instant::now() + Duration::from_secs(5);
        let want: u64 = sc.connections as u64 * expected_total.iter().sum::<u64>() / rooms as u64;
        while Instant::now() < deadline {
            let next = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
            if let Ok(Some((w, Report::Progress { received, .. }))) = next {
                progress[w].3 = received;
                if progress.iter().map(|p| p.3).sum::<u64>() >= want {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    break;
                }
            }
        }
    }
    let usage_after = sample_nodes(&plan).await;

    // Stop and collect.
    for w in &mut workers {
        w.stdin.write_all(b"stop\n").await?;
    }
    let mut results: Vec<WorkerResult> = Vec::new();
    while results.len() < n {
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

    outcome.published = published;
    outcome.publish_errors = publish_errors;
    outcome.publisher_max_lag_ms = lag_max_ms;
    let per_room = expected_per_room(published, rooms);
    let mut latency = stats::new_hist();
    let mut series = Vec::new();
    for r in &results {
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
    outcome.delivered_per_s = outcome.received_total as f64 / sc.duration_s.max(1) as f64;
    outcome.set_latency(&latency, &series);
    let sampled = usage_before.len();
    outcome.nodes = (0..sampled)
        .map(|i| {
            let pid = plan.node_pids.get(i).copied().unwrap_or(0);
            NodeUsage::from_samples(
                pid,
                usage_before[i],
                usage_idle[i],
                usage_after[i],
                sc.connections,
                sampled,
            )
        })
        .collect();
    outcome.finish_memory();
    Ok(outcome)
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
