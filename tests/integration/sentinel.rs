//! The Redis bus behind Sentinel: a real primary, its replica and a `redis-server
//! --sentinel`, on free ports. The primary is killed; Sentinel promotes the replica; the
//! node finds it through Sentinel and carries on, and a channel with history loses
//! nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::node_on;
use crate::redis_support::{free_port, redis};
use crate::support::eventually;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn replica_of(primary: u16) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args([
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &primary.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    (Proc(child), port)
}

fn sentinel_for(primary: u16, dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {primary} 1\n\
             sentinel down-after-milliseconds mymaster 500\n\
             sentinel failover-timeout mymaster 2000\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server --sentinel starts");
    (Proc(child), port)
}

async fn connection(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    for _ in 0..200 {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing answers on port {port}");
}

/// Where Sentinel says the primary is.
async fn primary_port(sentinel: &mut redis::aio::MultiplexedConnection) -> Option<u16> {
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg("mymaster")
        .query_async(sentinel)
        .await
        .ok()?;
    addr.and_then(|(_, port)| port.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_follows_a_sentinel_failover_and_history_loses_nothing() {
    let Some(mut primary) = redis().await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("roomcast-sentinel-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_replica, replica_port) = replica_of(primary.port);
    let (_sentinel, sentinel_port) = sentinel_for(primary.port, &dir);
    let to_sentinel = connection(sentinel_port).await;
    let mut to_primary = connection(primary.port).await;
    // The replica has synced once it acknowledges a write.
    eventually_async(|| {
        let mut c = to_primary.clone();
        async move {
            let acked: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(100)
                .query_async(&mut c)
                .await
                .unwrap_or(0);
            acked == 1
        }
    })
    .await;
    let url = format!("redis+sentinel://127.0.0.1:{sentinel_port}/mymaster");
    let node = node_on(&url, "sentinel").await;
    crate::cluster::ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("chat:fo").await;
    let mut publisher = node.json().await;
    for n in 0..5 {
        assert_eq!(publisher.publish("chat:fo", json!(n)).await["op"], "ok");
    }
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query_async(&mut to_primary)
        .await
        .unwrap();

    // Sentinel learns of replicas from the primary's INFO: until it has, a failover has
    // nobody to promote.
    eventually_async(|| {
        let mut c = to_sentinel.clone();
        async move {
            let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                .arg("replicas")
                .arg("mymaster")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            !replicas.is_empty()
        }
    })
    .await;
    let killed = Instant::now();
    primary.stop();
    eventually_async(|| {
        let mut c = to_sentinel.clone();
        async move { primary_port(&mut c).await == Some(replica_port) }
    })
    .await;
    let promoted = killed.elapsed();
    // Published on the new primary by a backend, perhaps before the node is back on it:
    // recovered from history or delivered live, once either way.
    let mut to_new = connection(replica_port).await;
    for n in 5..10 {
        let envelope = json!({"data": n}).to_string();
        let _: (u64, String) = redis::cmd("FCALL")
            .arg("roomcast_publish")
            .arg(1)
            .arg("rc:chat:fo")
            .arg(envelope)
            .arg(2000)
            .arg(300)
            .query_async(&mut to_new)
            .await
            .unwrap();
    }
    crate::cluster::ready(&node).await;
    let followed = killed.elapsed();
    for n in 10..12 {
        assert_eq!(publisher.publish("chat:fo", json!(n)).await["op"], "ok");
    }
    let mut seen = Vec::new();
    while seen.len() < 12 {
        let msg = sub.recv().await;
        assert_ne!(msg["op"], "gap", "history covered the failover: {msg}");
        if msg["op"] == "message" {
            seen.push(msg["data"].as_u64().unwrap());
        }
    }
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
    eprintln!(
        "failover: promoted after {promoted:?}, node ready on the new primary after {followed:?}"
    );
    let n = std::sync::Arc::clone(&node.node);
    eventually(move || n.is_ready()).await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn eventually_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 20 s");
}
