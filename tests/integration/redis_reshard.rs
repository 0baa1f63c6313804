//! A Redis Cluster slot migrated (`redis-cli --cluster reshard`) while a node's clients
//! are subscribed to channels in it and messages keep coming: Redis takes the sharded
//! subscription away (`sunsubscribe`), the node subscribes the channel on its new shard,
//! and recovers what it missed from history (or says `gap` without history).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::redis_cluster::{RedisCluster, client, node_on_cluster};

/// Redis names (`rc:<channel>`) whose slot is below `below`, `count` of them.
async fn channels_in_low_slots(port: u16, prefix: &str, below: i64, count: usize) -> Vec<String> {
    let mut c = client(port).await;
    let mut found = Vec::new();
    for i in 0..20_000 {
        let channel = format!("{prefix}{i}");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("rc:{channel}"))
            .query_async(&mut c)
            .await
            .unwrap();
        if slot < below {
            found.push(channel);
            if found.len() == count {
                break;
            }
        }
    }
    found
}

async fn node_id(port: u16) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut client(port).await)
        .await
        .unwrap()
}

async fn shard_subscribers(port: u16, key: &str) -> i64 {
    let counts: BTreeMap<String, i64> = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(key)
        .query_async(&mut client(port).await)
        .await
        .unwrap();
    counts.get(key).copied().unwrap_or(0)
}

/// Waits until every node agrees on the slot map: `reshard` refuses to start before.
async fn agreed(addr: &str) {
    for _ in 0..200 {
        let checked = Command::new("redis-cli")
            .args(["--cluster", "check", addr])
            .output()
            .expect("redis-cli runs");
        if checked.status.success() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cluster's nodes never agreed on its configuration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_subscribers_keeps_delivering() {
    let Some(cluster) = RedisCluster::start(3).await else {
        return;
    };
    let node = node_on_cluster(&cluster, "mig").await;
    // `reshard` moves the source's lowest slots first: 100 of them, from slot 0 up.
    let kept = channels_in_low_slots(cluster.ports[0], "chat:m", 100, 1).await;
    let live = channels_in_low_slots(cluster.ports[0], "live:m", 100, 1).await;
    let (kept, live) = (kept[0].clone(), live[0].clone());
    let source = cluster.owner(&format!("rc:{kept}")).await;
    let target = *cluster.ports.iter().find(|p| **p != source).unwrap();
    assert_eq!(cluster.owner(&format!("rc:{live}")).await, source);
    let (from, to) = (node_id(source).await, node_id(target).await);

    let mut sub = node.json().await;
    sub.subscribe(&kept).await;
    sub.subscribe(&live).await;
    let mut publisher = node.json().await;
    let channels = (kept.clone(), live.clone());
    let publishing = tokio::spawn(async move {
        for n in 0..100u64 {
            for ch in [&channels.0, &channels.1] {
                // Refused while a key is half-migrated (`TRYAGAIN`): published again.
                loop {
                    let reply = publisher.publish(ch, json!(n)).await;
                    if reply["op"] == "ok" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let addr = format!("127.0.0.1:{source}");
    agreed(&addr).await;
    let resharded = tokio::task::spawn_blocking(move || {
        Command::new("redis-cli")
            .args(["--cluster", "reshard", &addr])
            .args(["--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", "100", "--cluster-yes"])
            .output()
            .expect("redis-cli runs")
    })
    .await
    .unwrap();
    assert!(
        resharded.status.success(),
        "{}",
        String::from_utf8_lossy(&resharded.stdout)
    );
    assert_eq!(cluster.owner(&format!("rc:{kept}")).await, target);
    publishing.await.unwrap();

    let (mut kept_seen, mut live_seen, mut live_gap) = (Vec::new(), 0, false);
    while kept_seen.len() < 100 || (live_seen < 100 && !live_gap) {
        let Ok(m) = tokio::time::timeout(Duration::from_secs(4), sub.recv()).await else {
            panic!("stuck: {kept} {kept_seen:?}, {live} {live_seen} (gap: {live_gap})");
        };
        match (m["op"].as_str(), m["channel"].as_str()) {
            (Some("message"), Some(ch)) if ch == kept => {
                kept_seen.push(m["data"].as_u64().unwrap())
            }
            (Some("message"), Some(ch)) if ch == live => live_seen += 1,
            (Some("gap"), Some(ch)) if ch == live => live_gap = true,
            (Some("gap"), Some(ch)) => panic!("history should have covered {ch}: {m}"),
            _ => {}
        }
    }
    assert_eq!(
        kept_seen,
        (0..100).collect::<Vec<_>>(),
        "in order, once each"
    );
    // Subscribed where the slot lives now, and nowhere else.
    for ch in [&kept, &live] {
        let key = format!("rc:{ch}");
        assert_eq!(
            shard_subscribers(target, &key).await,
            1,
            "{key} on the new shard"
        );
        assert_eq!(
            shard_subscribers(source, &key).await,
            0,
            "{key} on the old shard"
        );
    }
    eprintln!("reshard: {live_seen} of 100 live messages arrived, gap said: {live_gap}");
    node.stop().await;
}
