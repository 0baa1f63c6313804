//! The publisher: message i is due at `start + i / rate`, whatever happened before it, and
//! carries that scheduled time; a publisher that falls behind sends what is due at once,
//! and the delay shows up as latency (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::io::AsyncWriteExt;

use crate::client::{self, Target};
use crate::scenario::{PublishVia, Scenario, channel};
use crate::stats::now_ns;

pub struct PublishStats {
    pub published: u64,
    pub errors: u64,
    /// How far behind schedule the publisher got at worst.
    pub max_lag_ms: f64,
}

enum Sink {
    Redis {
        conn: RedisConn,
        prefix: String,
        /// FCALL roomcast_publish (kept in history) rather than PUBLISH.
        history: bool,
    },
    Ws {
        write: tokio::net::tcp::OwnedWriteHalf,
        errors: Arc<AtomicU64>,
    },
}

/// One Redis, or a Redis Cluster (when `--redis-url` lists several seeds): there a
/// message goes with SPUBLISH (or FCALL) to its channel's shard.
enum RedisConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        /// The slot map at the start (slots do not move during a load test): each
        /// primary gets one pipeline per batch, as a careful backend would send.
        slots: Vec<(u16, u16, String, u16)>,
    },
}

/// A key's slot (no hash tags in load-test channel names).
fn slot(key: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(key.as_bytes()) % 16_384
}

/// `CLUSTER SLOTS` as (first, last, primary host, primary port).
async fn slot_map(
    conn: &mut redis::cluster_async::ClusterConnection,
) -> anyhow::Result<Vec<(u16, u16, String, u16)>> {
    let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Vec<redis::Value>>(conn)
        .await?
        .into_iter()
        .map(|range| {
            let redis::Value::Array(items) = range else {
                anyhow::bail!("CLUSTER SLOTS: a range is an array");
            };
            let [start, end, primary, ..] = items.as_slice() else {
                anyhow::bail!("CLUSTER SLOTS: a range has a primary");
            };
            let redis::Value::Array(primary) = primary else {
                anyhow::bail!("CLUSTER SLOTS: a primary is an array");
            };
            let (host, port) = match primary.as_slice() {
                [host, port, ..] => (
                    redis::from_redis_value(host.clone())?,
                    redis::from_redis_value(port.clone())?,
                ),
                _ => anyhow::bail!("CLUSTER SLOTS: a primary has a host and a port"),
            };
            Ok((
                redis::from_redis_value(start.clone())?,
                redis::from_redis_value(end.clone())?,
                (host, port),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(ranges
        .into_iter()
        .map(|(s, e, (h, p))| (s, e, h, p))
        .collect())
}

impl RedisConn {
    async fn open(url: &str) -> anyhow::Result<Self> {
        if !url.contains(',') {
            let client = redis::Client::open(url)?;
            return Ok(Self::Single(
                client.get_multiplexed_async_connection().await?,
            ));
        }
        let seeds: Vec<&str> = url.split(',').collect();
        let client = redis::cluster::ClusterClient::new(seeds)?;
        let mut conn = client.get_async_connection().await?;
        let slots = slot_map(&mut conn).await?;
        Ok(Self::Cluster { conn, slots })
    }

    /// Sends a batch; returns how many of its messages failed. One pipeline on one Redis;
    /// on a cluster, every command at once, each routed to its shard.
    async fn send(&mut self, batch: &[(String, String)], history: bool) -> u64 {
        let command = |channel: &str, body: &str, sharded: bool| {
            let mut cmd = if history {
                let mut c = redis::cmd("FCALL");
                c.arg("roomcast_publish").arg(1);
                c
            } else {
                redis::cmd(if sharded { "SPUBLISH" } else { "PUBLISH" })
            };
            cmd.arg(channel).arg(body);
            cmd
        };
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for (ch, body) in batch {
                    pipe.add_command(command(ch, body, false)).ignore();
                }
                match pipe.query_async::<()>(conn).await {
                    Ok(()) => 0,
                    Err(_) => batch.len() as u64,
                }
            }
            Self::Cluster { conn, slots } => {
                // One pipeline per primary, in batch order: a channel's messages stay in
                // order, and the shards work in parallel.
                let mut by_primary: Vec<(usize, redis::Pipeline)> = Vec::new();
                for (ch, body) in batch {
                    let s = slot(ch);
                    let owner = slots
                        .iter()
                        .position(|(first, last, ..)| (*first..=*last).contains(&s))
                        .unwrap_or(0);
                    let at = match by_primary.iter().position(|(o, _)| *o == owner) {
                        Some(at) => at,
                        None => {
                            by_primary.push((owner, redis::pipe()));
                            by_primary.len() - 1
                        }
                    };
                    by_primary[at].1.add_command(command(ch, body, true));
                }
                let sends = by_primary.into_iter().map(|(owner, pipe)| {
                    let mut conn = conn.clone();
                    let route = slots.get(owner).map(|(_, _, host, port)| {
                        redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        }
                    });
                    async move {
                        let n = pipe.len();
                        let Some(route) = route else { return n as u64 };
                        match conn.route_pipeline(pipe, 0, n, route).await {
                            Ok(replies) => replies
                                .iter()
                                .filter(|r| matches!(r, redis::Value::ServerError(_)))
                                .count() as u64,
                            Err(_) => n as u64,
                        }
                    }
                });
                let sent = futures_util::future::join_all(sends).await;
                sent.into_iter().sum()
            }
        }
    }
}

pub struct Publisher {
    sink: Sink,
    pad: String,
}

/// Most messages sent in one pipeline or one write.
const BATCH: u64 = 2_000;

impl Publisher {
    pub async fn connect(
        sc: &Scenario,
        redis_url: &str,
        prefix: &str,
        targets: &[String],
    ) -> anyhow::Result<Self> {
        // `{"s":…,"t":…,"p":"…"}` with s and t at their widths comes to about 50 bytes.
        let pad = "x".repeat(sc.payload_bytes.saturating_sub(50));
        let sink = match sc.publish_via {
            PublishVia::Redis | PublishVia::History => Sink::Redis {
                conn: RedisConn::open(redis_url).await?,
                prefix: prefix.to_string(),
                history: sc.publish_via == PublishVia::History,
            },
            PublishVia::Ws => {
                let target = Target::parse(&targets[0])?;
                let c = client::connect(&target, None, Duration::from_secs(10)).await?;
                let errors = Arc::new(AtomicU64::new(0));
                let client::Reader::Ws(mut read) = c.read else {
                    anyhow::bail!("the publisher speaks WebSocket");
                };
                let errs = errors.clone();
                // Replies must be read, or the node would cut the publisher off as slow.
                tokio::spawn(async move {
                    while let Ok(Some((op, payload))) = read.next().await {
                        if op == 1 && payload.starts_with(br#"{"op":"error""#) {
                            errs.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                Sink::Ws {
                    write: c.write,
                    errors,
                }
            }
        };
        Ok(Self { sink, pad })
    }

    pub async fn run(
        &mut self,
        start_ns: u64,
        rate: f64,
        total: u64,
        rooms: usize,
        bar: &ProgressBar,
    ) -> anyhow::Result<PublishStats> {
        let interval_ns = 1e9 / rate;
        let due = |i: u64| start_ns + (i as f64 * interval_ns) as u64;
        let mut next = 0u64;
        let (mut errors, mut max_lag_ms) = (0u64, 0f64);
        while next < total {
            let now = now_ns();
            if now < due(next) {
                tokio::time::sleep(Duration::from_nanos(due(next) - now)).await;
                continue;
            }
            max_lag_ms = max_lag_ms.max((now - due(next)) as f64 / 1e6);
            let ready = (((now - start_ns) as f64 / interval_ns) as u64 + 1).min(total);
            let end = ready.min(next + BATCH).max(next + 1);
            let batch: Vec<(String, String)> = (next..end)
                .map(|i| {
                    let data = format!(r#"{{"s":{i},"t":{},"p":"{}"}}"#, due(i), self.pad);
                    (channel(i as usize % rooms), data)
                })
                .collect();
            match &mut self.sink {
                Sink::Redis {
                    conn,
                    prefix,
                    history,
                } => {
                    let bodies: Vec<(String, String)> = batch
                        .iter()
                        .map(|(ch, data)| {
                            (format!("{prefix}:{ch}"), format!(r#"{{"data":{data}}}"#))
                        })
                        .collect();
                    errors += conn.send(&bodies, *history).await;
                }
                Sink::Ws { write, .. } => {
                    let mut out = Vec::new();
                    for (k, (ch, data)) in batch.iter().enumerate() {
                        let id = next + k as u64;
                        let req = format!(
                            r#"{{"id":{id},"op":"publish","channel":"{ch}","data":{data}}}"#
                        );
                        out.extend_from_slice(&client::text_frame(req.as_bytes()));
                    }
                    if write.write_all(&out).await.is_err() {
                        errors += batch.len() as u64;
                    }
                }
            }
            bar.set_position(end);
            next = end;
        }
        if let Sink::Ws { errors: e, .. } = &self.sink {
            tokio::time::sleep(Duration::from_millis(500)).await;
            errors += e.load(Ordering::Relaxed);
        }
        Ok(PublishStats {
            published: total - errors.min(total),
            errors,
            max_lag_ms,
        })
    }
}
