//! Phases 1 and 2 of a worker: connect every connection it owns, as fast as the nodes
//! accept (bounded by a semaphore), then subscribe each and wait for its `ok`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, Semaphore};

use super::{WorkerConfig, source_for};
use crate::client::{self, Target, WsClient};
use crate::scenario::channel;

/// Setup progress, shared by the connecting tasks and the progress reporter.
#[derive(Default)]
pub(super) struct Counters {
    pub connected: AtomicU64,
    pub subscribed: AtomicU64,
    pub failed: AtomicU64,
    /// Failure messages and how often each happened.
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    async fn failed(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.errors.lock().await.entry(error).or_default() += 1;
    }
}

/// Opens every connection; returns the ones that connected, with their global index.
pub(super) async fn connect_all(
    config: &WorkerConfig,
    targets: &[Target],
    counters: &Arc<Counters>,
) -> Vec<(usize, WsClient)> {
    let gate = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let mut handles = Vec::with_capacity(config.count);
    for i in config.first..config.first + config.count {
        let target = targets[i % targets.len()].clone();
        let source = source_for(&config.sources, i);
        let (gate, counters) = (gate.clone(), counters.clone());
        let (rooms, transport) = (config.rooms, config.transport);
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let channel = crate::scenario::channel(i % rooms);
            let timeout = Duration::from_secs(30);
            match client::connect_as(&target, source, timeout, transport, &channel).await {
                Ok(c) => {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                    Some((i, c))
                }
                Err(error) => {
                    counters.failed(format!("{error:#}")).await;
                    None
                }
            }
        }));
    }
    joined(handles).await
}

/// Subscribes every connection to its room; returns the ones that got their `ok`.
pub(super) async fn subscribe_all(
    config: &WorkerConfig,
    conns: Vec<(usize, WsClient)>,
    counters: &Arc<Counters>,
) -> Vec<(usize, WsClient)> {
    let gate = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let mut handles = Vec::with_capacity(conns.len());
    for (i, mut c) in conns {
        let room = i % config.rooms;
        let (gate, counters) = (gate.clone(), counters.clone());
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            match subscribe(&mut c, room).await {
                Ok(()) => {
                    counters.subscribed.fetch_add(1, Ordering::Relaxed);
                    Some((i, c))
                }
                Err(error) => {
                    counters.failed(format!("subscribe: {error:#}")).await;
                    None
                }
            }
        }));
    }
    joined(handles).await
}

async fn joined<T>(handles: Vec<tokio::task::JoinHandle<Option<T>>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(Some(v)) = h.await {
            out.push(v);
        }
    }
    out
}

/// Subscribes to a room and waits for the reply; SSE and long-polling clients were
/// subscribed by their URL.
pub(super) async fn subscribe(c: &mut WsClient, room: usize) -> anyhow::Result<()> {
    if !matches!(c.read, client::Reader::Ws(_)) {
        return Ok(());
    }
    let req = format!(
        r#"{{"id":1,"op":"subscribe","channel":"{}"}}"#,
        channel(room)
    );
    c.write
        .write_all(&client::text_frame(req.as_bytes()))
        .await?;
    loop {
        let (op, payload) = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .context("no reply to subscribe")??
            .context("closed while subscribing")?;
        match op {
            1 if payload.starts_with(br#"{"op":"ok""#) => return Ok(()),
            1 if payload.starts_with(br#"{"op":"error""#) => {
                anyhow::bail!("{}", String::from_utf8_lossy(&payload))
            }
            8 => anyhow::bail!("closed: {}", super::reading::close_code(&payload)),
            _ => {}
        }
    }
}
