//! Results: the merged outcome of a run, written as `summary.json`, `report.md` and
//! `latency.svg`, and printed as a table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::scenario::Scenario;
use crate::stats::Hist;

#[derive(Debug, Serialize, Default)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: u64,
}

#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct SeriesPoint {
    pub second: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub count: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct NodeUsage {
    pub pid: u32,
    pub rss_bytes_before: Option<u64>,
    pub rss_bytes_connected: Option<u64>,
    pub rss_bytes_after: Option<u64>,
    /// CPU seconds the node used while messages were published.
    pub cpu_seconds_publishing: Option<f64>,
    pub rss_bytes_per_connection: Option<f64>,
    /// RSS 2 s after every client left.
    pub rss_bytes_after_leave: Option<u64>,
    /// What the node kept of each connection's memory once the clients left.
    pub rss_bytes_retained_per_connection: Option<f64>,
}

/// (RSS bytes, CPU seconds) of a node: before the clients connect, connected and idle,
/// after publishing, and after the clients left.
pub type Samples = [Option<(u64, f64)>; 4];

impl NodeUsage {
    pub fn from_samples(pid: u32, samples: Samples, connections: usize, nodes: usize) -> Self {
        let [before, idle, after, left] = samples;
        let per_node = (connections as f64 / nodes.max(1) as f64).max(1.0);
        let growth = |from: Option<(u64, f64)>, to: Option<(u64, f64)>| {
            from.zip(to)
                .map(|(f, t)| (t.0 as f64 - f.0 as f64) / per_node)
        };
        Self {
            pid,
            rss_bytes_before: before.map(|b| b.0),
            rss_bytes_connected: idle.map(|i| i.0),
            rss_bytes_after: after.map(|a| a.0),
            cpu_seconds_publishing: idle.zip(after).map(|(i, a)| a.1 - i.1),
            rss_bytes_per_connection: growth(before, idle),
            rss_bytes_after_leave: left.map(|l| l.0),
            rss_bytes_retained_per_connection: growth(before, left),
        }
    }
}

#[derive(Debug, Serialize, Default)]
pub struct Outcome {
    pub scenario: String,
    pub description: String,
    pub targets: Vec<String>,
    pub workers: usize,
    pub connections: usize,
    pub rooms: usize,
    pub rate: f64,
    pub duration_s: u64,
    pub payload_bytes: usize,
    pub publish_via: String,
    /// The subscribers' door: ws, sse or poll.
    #[serde(default)]
    pub transport: String,
    pub machine: String,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_errors: BTreeMap<String, u64>,
    /// Slowest worker's time to open all its connections.
    pub connect_secs: f64,
    pub connect_rate: f64,
    pub subscribe_secs: f64,
    pub setup_secs: f64,
    pub published: u64,
    pub publish_errors: u64,
    pub publish_secs: f64,
    pub publisher_max_lag_ms: f64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub received_total: u64,
    pub delivered_per_s: f64,
    pub latency_ms: Latency,
    pub latency_over_time: Vec<SeriesPoint>,
    pub close_codes: BTreeMap<String, u64>,
    pub churn_reconnects: u64,
    pub churn_failures: u64,
    pub nodes: Vec<NodeUsage>,
    pub rss_bytes_per_connection: Option<f64>,
    /// Per node on average, what its RSS kept per connection after the clients left.
    pub rss_bytes_retained_per_connection: Option<f64>,
    pub node_cpu_seconds_publishing: Option<f64>,
    /// Node CPU (all nodes) per message delivered to a client, while publishing.
    pub node_cpu_us_per_delivery: Option<f64>,
    /// Each local redis-server (one per shard of a cluster): CPU seconds while publishing.
    pub redis: Vec<RedisUsage>,
    /// All of them together, per published message.
    pub redis_cpu_us_per_message: Option<f64>,
}

#[derive(Debug, Serialize, Default)]
pub struct RedisUsage {
    pub pid: u32,
    pub cpu_seconds_publishing: Option<f64>,
}

impl Outcome {
    pub fn new(sc: &Scenario, targets: &[String], workers: usize) -> Self {
        Self {
            scenario: sc.name.clone(),
            description: sc.description.clone(),
            targets: targets.to_vec(),
            workers,
            connections: sc.connections,
            rooms: sc.rooms(),
            rate: sc.rate,
            duration_s: sc.duration_s,
            payload_bytes: sc.payload_bytes,
            publish_via: format!("{:?}", sc.publish_via).to_lowercase(),
            transport: format!("{:?}", sc.transport).to_lowercase(),
            machine: machine(),
            ..Default::default()
        }
    }

    pub fn set_latency(&mut self, h: &Hist, series: &[Hist]) {
        let ms = |us: u64| us as f64 / 1000.0;
        self.latency_ms = Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
            samples: h.len(),
        };
        self.latency_over_time = series
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(second, s)| SeriesPoint {
                second,
                p50_ms: ms(s.value_at_quantile(0.5)),
                p99_ms: ms(s.value_at_quantile(0.99)),
                max_ms: ms(s.max()),
                count: s.len(),
            })
            .collect();
    }

    pub fn set_redis_usage(&mut self, pids: &[u32], idle: &[Option<f64>], after: &[Option<f64>]) {
        self.redis = pids
            .iter()
            .zip(idle.iter().zip(after))
            .map(|(pid, (i, a))| RedisUsage {
                pid: *pid,
                cpu_seconds_publishing: i.zip(*a).map(|(i, a)| a - i),
            })
            .collect();
        let total: Option<f64> = self.redis.iter().map(|r| r.cpu_seconds_publishing).sum();
        if self.published > 0 && !self.redis.is_empty() {
            self.redis_cpu_us_per_message = total.map(|t| t * 1e6 / self.published as f64);
        }
    }

    pub fn finish_memory(&mut self) {
        let per: Vec<f64> = self
            .nodes
            .iter()
            .filter_map(|n| n.rss_bytes_per_connection)
            .collect();
        if !per.is_empty() {
            self.rss_bytes_per_connection = Some(per.iter().sum::<f64>() / per.len() as f64);
        }
        let cpu: Vec<f64> = self
            .nodes
            .iter()
            .filter_map(|n| n.cpu_seconds_publishing)
            .collect();
        if !cpu.is_empty() {
            let total: f64 = cpu.iter().sum();
            self.node_cpu_seconds_publishing = Some(total);
            if self.received_total > 0 {
                self.node_cpu_us_per_delivery = Some(total * 1e6 / self.received_total as f64);
            }
        }
        let kept: Vec<f64> = self
            .nodes
            .iter()
            .filter_map(|n| n.rss_bytes_retained_per_connection)
            .collect();
        if !kept.is_empty() {
            self.rss_bytes_retained_per_connection =
                Some(kept.iter().sum::<f64>() / kept.len() as f64);
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        if let Err(error) = crate::chart::latency_svg(self, &dir.join("latency.svg")) {
            eprintln!("chart not drawn: {error:#}");
        }
        Ok(())
    }

    pub fn table(&self) -> String {
        let l = &self.latency_ms;
        let mut rows = vec![
            (
                "scenario",
                format!(
                    "{} ({} {} connections, {} rooms, {} msg/s for {} s via {})",
                    self.scenario,
                    self.connections,
                    self.transport,
                    self.rooms,
                    self.rate,
                    self.duration_s,
                    self.publish_via
                ),
            ),
            (
                "connected",
                format!(
                    "{} / {} ({} failed) at {:.0}/s",
                    self.connected, self.connections, self.connect_failures, self.connect_rate
                ),
            ),
            (
                "published",
                format!(
                    "{} ({} errors), publisher max lag {:.1} ms",
                    self.published, self.publish_errors, self.publisher_max_lag_ms
                ),
            ),
            (
                "delivered",
                format!(
                    "{} of {} expected: lost {}, duplicates {}, out of order {}",
                    self.delivered, self.expected, self.lost, self.duplicates, self.out_of_order
                ),
            ),
            (
                "throughput",
                format!("{:.0} delivered messages/s", self.delivered_per_s),
            ),
            (
                "latency ms",
                format!(
                    "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                ),
            ),
        ];
        if let Some(b) = self.rss_bytes_per_connection {
            rows.push(("node memory", format!("{:.0} bytes RSS per connection", b)));
        }
        if let Some(b) = self.rss_bytes_retained_per_connection {
            rows.push((
                "node kept",
                format!("{b:.0} bytes RSS per connection after they left"),
            ));
        }
        if let Some(c) = self.node_cpu_seconds_publishing {
            let per = self.node_cpu_us_per_delivery.map_or(String::new(), |us| {
                format!(", {us:.2} µs per delivered message")
            });
            rows.push(("node cpu", format!("{c:.2} s while publishing{per}")));
        }
        if let Some(us) = self.redis_cpu_us_per_message {
            let each: Vec<String> = self
                .redis
                .iter()
                .map(|r| {
                    r.cpu_seconds_publishing
                        .map_or("?".into(), |c| format!("{c:.2}"))
                })
                .collect();
            rows.push((
                "redis cpu",
                format!(
                    "{us:.2} µs per published message (s per redis: {})",
                    each.join(", ")
                ),
            ));
        }
        if !self.close_codes.is_empty() {
            rows.push(("closes seen", format!("{:?}", self.close_codes)));
        }
        if self.churn_reconnects + self.churn_failures > 0 {
            rows.push((
                "churn",
                format!(
                    "{} reconnects, {} failed",
                    self.churn_reconnects, self.churn_failures
                ),
            ));
        }
        rows.iter()
            .map(|(k, v)| format!("{k:>12}  {v}\n"))
            .collect()
    }

    fn markdown(&self) -> String {
        let l = &self.latency_ms;
        let mut md = format!(
            "# roomcast load test: {}\n\n{}\n\nMachine: {}. Targets: {}. Workers: {}.\n\n",
            self.scenario,
            self.description,
            self.machine,
            self.targets.join(", "),
            self.workers
        );
        md.push_str("| figure | value |\n|---|---|\n");
        for (k, v) in [
            (
                "connections (connected / asked)",
                format!("{} / {}", self.connected, self.connections),
            ),
            ("connect failures", self.connect_failures.to_string()),
            ("connect rate", format!("{:.0}/s", self.connect_rate)),
            ("subscribers' transport", self.transport.clone()),
            ("rooms", self.rooms.to_string()),
            (
                "publish rate (scheduled)",
                format!("{} msg/s via {}", self.rate, self.publish_via),
            ),
            ("published", self.published.to_string()),
            ("expected deliveries", self.expected.to_string()),
            ("delivered", self.delivered.to_string()),
            ("lost", self.lost.to_string()),
            ("duplicates", self.duplicates.to_string()),
            ("out of order", self.out_of_order.to_string()),
            (
                "delivered messages/s",
                format!("{:.0}", self.delivered_per_s),
            ),
            (
                "latency p50 / p90 / p99 / p99.9 / max (ms)",
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} / {:.2}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                ),
            ),
            (
                "publisher max lag behind schedule (ms)",
                format!("{:.1}", self.publisher_max_lag_ms),
            ),
            (
                "node RSS per connection (bytes)",
                self.rss_bytes_per_connection
                    .map_or("n/a".into(), |b| format!("{b:.0}")),
            ),
            (
                "node RSS kept per connection after the clients left (bytes)",
                self.rss_bytes_retained_per_connection
                    .map_or("n/a".into(), |b| format!("{b:.0}")),
            ),
            (
                "node CPU while publishing (s)",
                self.node_cpu_seconds_publishing
                    .map_or("n/a".into(), |c| format!("{c:.2}")),
            ),
            (
                "node CPU per delivered message (µs)",
                self.node_cpu_us_per_delivery
                    .map_or("n/a".into(), |us| format!("{us:.2}")),
            ),
            ("close codes seen", format!("{:?}", self.close_codes)),
        ] {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        for (i, r) in self.redis.iter().enumerate() {
            let cpu = r
                .cpu_seconds_publishing
                .map_or("n/a".into(), |c| format!("{c:.2}"));
            md.push_str(&format!(
                "| redis cpu while publishing, server {} (pid {}) (s) | {cpu} |\n",
                i + 1,
                r.pid
            ));
        }
        if let Some(us) = self.redis_cpu_us_per_message {
            md.push_str(&format!(
                "| redis cpu per published message (µs) | {us:.2} |\n"
            ));
        }
        md.push_str("\nLatency is receive time minus the message's *scheduled* send time, on one clock.\n\n![latency](latency.svg)\n");
        if !self.connect_errors.is_empty() {
            md.push_str("\n## Connect errors\n\n");
            for (e, n) in &self.connect_errors {
                md.push_str(&format!("- {n} × {e}\n"));
            }
        }
        md
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores, {mem_gib:.0} GiB; load generator, nodes and Redis on the same machine")
}
