//! `roomcast-loadtest`: opens many thousands of WebSocket connections to roomcast nodes,
//! publishes on a schedule, and reports broadcast latency, loss, throughput and memory.

mod chart;
mod client;
mod coordinator;
mod http_client;
mod procstat;
mod publisher;
mod report;
mod scenario;
mod stats;
mod worker;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "roomcast-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run a scenario against running nodes.
    Run(RunArgs),
    /// Internal: one worker process, started by `run`.
    #[command(hide = true)]
    Worker { config: String },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario file, e.g. loadtest/scenarios/fanout.toml
    #[arg(long)]
    scenario: PathBuf,
    /// Node WebSocket URLs, comma-separated (one, several, or a load balancer)
    #[arg(long, value_delimiter = ',', required = true)]
    targets: Vec<String>,
    /// Override the scenario's connection count
    #[arg(long)]
    connections: Option<usize>,
    /// Override the scenario's publish duration, seconds
    #[arg(long)]
    duration: Option<u64>,
    /// Override the scenario's publish rate, messages/s
    #[arg(long)]
    rate: Option<f64>,
    /// Override the scenario's publish path: redis (PUBLISH), history (FCALL
    /// roomcast_publish, kept in the channel's history) or ws (a client of the first node)
    #[arg(long, value_name = "redis|history|ws")]
    via: Option<String>,
    /// Redis the publisher uses (backend path); several comma-separated URLs are the seed
    /// nodes of a Redis Cluster, published to with SPUBLISH (or FCALL), routed by slot
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The nodes' `redis.prefix`
    #[arg(long, default_value = "roomcast")]
    redis_prefix: String,
    /// Pids of local node processes, comma-separated, for RSS and CPU from /proc
    #[arg(long, value_delimiter = ',')]
    node_pids: Vec<u32>,
    /// Pids of local redis-server processes (one per shard), for their CPU from /proc
    #[arg(long, value_delimiter = ',')]
    redis_pids: Vec<u32>,
    /// Worker processes (default: one per 15,000 connections)
    #[arg(long)]
    workers: Option<usize>,
    /// Loopback source addresses to spread client sockets over (127.0.0.2 ... 127.0.0.K+1)
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// Results folder: summary.json, report.md, latency.svg
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bars
    #[arg(long)]
    quiet: bool,
    /// Override the scenario's door: ws, sse (EventSource-like streams) or poll (long-polling)
    #[arg(long, value_name = "ws|sse|poll")]
    transport: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Worker { config } => rt.block_on(worker::run(serde_json::from_str(&config)?)),
        Cmd::Run(args) => rt.block_on(run(args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("cannot read {}", args.scenario.display()))?;
    let mut scenario: scenario::Scenario = toml::from_str(&text).context("invalid scenario")?;
    if let Some(n) = args.connections {
        scenario.connections = n;
    }
    if let Some(d) = args.duration {
        scenario.duration_s = d;
    }
    if let Some(r) = args.rate {
        scenario.rate = r;
    }
    if let Some(via) = &args.via {
        scenario.publish_via = toml::Value::String(via.clone())
            .try_into()
            .with_context(|| format!("--via {via}: expected redis, history or ws"))?;
    }
    if let Some(t) = &args.transport {
        scenario.transport = toml::Value::String(t.clone())
            .try_into()
            .with_context(|| format!("--transport {t}: expected ws, sse or poll"))?;
    }
    scenario.validate()?;
    for t in &args.targets {
        let target = client::Target::parse(t)?;
        anyhow::ensure!(
            target.addr.ip().is_loopback() || is_private_container(&target.addr.ip()),
            "target {t}: only loopback or the compose cluster's own network may be load-tested"
        );
    }
    let loopback = args
        .targets
        .iter()
        .all(|t| client::Target::parse(t).is_ok_and(|t| t.addr.ip().is_loopback()));
    let sources: Vec<IpAddr> = if loopback {
        (0..args.sources.max(1))
            .map(|k| IpAddr::from([127, 0, 0, 2 + k as u8]))
            .collect()
    } else {
        Vec::new()
    };
    let workers = args
        .workers
        .unwrap_or_else(|| scenario.connections.div_ceil(coordinator::PER_WORKER))
        .max(1);
    let plan = coordinator::Plan {
        scenario,
        targets: args.targets,
        redis_url: args.redis_url,
        redis_prefix: args.redis_prefix,
        node_pids: args.node_pids,
        redis_pids: args.redis_pids,
        workers,
        sources,
        quiet: args.quiet,
    };
    let outcome = coordinator::run(plan).await?;
    print!("{}", outcome.table());
    if let Some(dir) = args.out {
        outcome.write(&dir)?;
        println!("{:>12}  {}", "report", dir.join("report.md").display());
    }
    Ok(())
}

/// Docker's default bridge networks, where the compose cluster's containers live.
fn is_private_container(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 172 && (16..32).contains(&v4.octets()[1]))
}
