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
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
        /// FCALL roomcast_publish (kept in history) rather than PUBLISH.
        history: bool,
    },
    Ws {
        write: tokio::net::tcp::OwnedWriteHalf,
        errors: Arc<AtomicU64>,
    },
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
                conn: redis::Client::open(redis_url)?
                    .get_multiplexed_async_connection()
                    .await?,
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
                    let mut pipe = redis::pipe();
                    for (ch, data) in &batch {
                        let cmd = if *history {
                            pipe.cmd("FCALL").arg("roomcast_publish").arg(1)
                        } else {
                            pipe.cmd("PUBLISH")
                        };
                        cmd.arg(format!("{prefix}:{ch}"))
                            .arg(format!(r#"{{"data":{data}}}"#))
                            .ignore();
                    }
                    if pipe.query_async::<()>(conn).await.is_err() {
                        errors += batch.len() as u64;
                    }
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
