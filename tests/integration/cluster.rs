//! Several nodes over a real Redis: rooms span nodes, backends publish with PUBLISH, and
//! Redis failures are visible, never silent.

use std::time::Duration;

use roomcast::metrics::DropReason;
use serde_json::json;

use crate::redis_support::{redis, redis_with_password};
use crate::support::{TestNode, eventually};

/// A node on the Redis bus, with limits out of the way of bulk tests and a fast probe.
pub async fn node_on(url: &str, id: &str) -> TestNode {
    let (url, id) = (url.to_string(), id.to_string());
    TestNode::start_with(move |s| {
        s.bus = roomcast::settings::BusKind::Redis;
        s.redis_url = url;
        s.node_id = id;
        s.redis.prefix = "rc".into();
        s.redis.probe_interval_ms = 100;
        s.redis.probe_timeout_ms = 500;
        s.redis.reconnect_min_ms = 20;
        s.redis.reconnect_max_ms = 200;
        s.redis.response_timeout_ms = 500;
        s.limits.publish_rate = 1e6;
        s.limits.publish_burst = 1e6;
        s.limits.outbox_max_frames = 100_000;
        s.limits.outbox_max_bytes = 64 << 20;
        // Room for the recovery tests' 1,000 missed messages.
        if let Some(chat) = s.namespaces.get_mut("chat") {
            chat.history_size = 2_000;
        }
        // A namespace without history: what happens where nothing can be recovered.
        s.namespaces.insert(
            "live".into(),
            roomcast::settings::NamespacePolicy {
                publish: true,
                ..Default::default()
            },
        );
    })
    .await
}

/// Three nodes on one Redis, ready.
pub async fn three_nodes(url: &str) -> [TestNode; 3] {
    let nodes = [
        node_on(url, "a").await,
        node_on(url, "b").await,
        node_on(url, "c").await,
    ];
    for n in &nodes {
        ready(n).await;
    }
    nodes
}

pub async fn ready(node: &TestNode) {
    let n = std::sync::Arc::clone(&node.node);
    eventually(move || n.is_ready()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_every_message_once_and_in_order() {
    let Some(redis) = redis().await else { return };
    let nodes = three_nodes(&redis.url()).await;
    const N: u64 = 10_000;
    let mut readers = Vec::new();
    for n in &nodes {
        let mut c = n.json().await;
        c.subscribe("chat:span").await;
        readers.push(tokio::spawn(async move {
            let (mut from_client, mut from_backend) = (0, 0);
            while from_client < N || from_backend < N {
                let msg = c.next_message().await;
                let seq = msg["data"]["seq"].as_u64().unwrap();
                match msg["data"]["src"].as_str().unwrap() {
                    "client" => {
                        assert_eq!(seq, from_client, "client messages in order, once");
                        from_client += 1;
                    }
                    "backend" => {
                        assert_eq!(seq, from_backend, "backend messages in order, once");
                        from_backend += 1;
                    }
                    other => panic!("unexpected source {other}"),
                }
            }
            c
        }));
    }
    // A client of node A and a plain Redis client publish concurrently.
    let mut publisher = nodes[0].json().await;
    let client_side = tokio::spawn(async move {
        for seq in 0..N {
            publisher
                .send(json!({"id": seq, "op": "publish", "channel": "chat:span", "data": {"src": "client", "seq": seq}}))
                .await;
        }
        let mut oks = 0;
        while oks < N {
            let reply = publisher.recv().await;
            assert_eq!(reply["op"], "ok", "{reply}");
            oks += 1;
        }
    });
    let mut backend = redis.client().await.unwrap();
    for seq in 0..N {
        let envelope = json!({"data": {"src": "backend", "seq": seq}}).to_string();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("rc:chat:span")
            .arg(envelope)
            .query_async(&mut backend)
            .await
            .unwrap();
    }
    client_side.await.unwrap();
    for r in readers {
        let mut c = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .unwrap()
            .unwrap();
        // Nothing more: exactly once.
        assert_eq!(c.request(json!({"op": "ping"})).await["op"], "ok");
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn nodes_subscribe_only_to_channels_they_host() {
    let Some(redis) = redis().await else { return };
    let a = node_on(&redis.url(), "a").await;
    let b = node_on(&redis.url(), "b").await;
    ready(&a).await;
    ready(&b).await;
    assert_eq!(redis.numsub("rc:chat:only-a").await, 0);
    let mut ca = a.json().await;
    ca.subscribe("chat:only-a").await;
    let mut ca2 = a.json().await;
    ca2.subscribe("chat:only-a").await;
    assert_eq!(
        redis.numsub("rc:chat:only-a").await,
        1,
        "one Redis subscription per node, not per client"
    );
    let mut cb = b.json().await;
    cb.subscribe("chat:only-a").await;
    assert_eq!(redis.numsub("rc:chat:only-a").await, 2);
    cb.request(json!({"op": "unsubscribe", "channel": "chat:only-a"}))
        .await;
    drop(ca2);
    eventually(|| b.node.hub.channels().is_empty()).await;
    let numsub = async || redis.numsub("rc:chat:only-a").await;
    for _ in 0..100 {
        if numsub().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        numsub().await,
        1,
        "node B unsubscribed after its last client left"
    );
    ca.request(json!({"op": "unsubscribe", "channel": "chat:only-a"}))
        .await;
    for _ in 0..100 {
        if numsub().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut conn = redis.client().await.unwrap();
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("rc:chat:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(channels.is_empty(), "{channels:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn invalid_envelopes_are_counted_and_skipped() {
    let Some(redis) = redis().await else { return };
    let node = node_on(&redis.url(), "inv").await;
    ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("chat:inv").await;
    for bad in [
        &b"plain text"[..],
        b"{\"text\":\"no data\"}",
        b"{\"data\":",
        b"\x81\xa1v\x02",
        b"{\"v\":9,\"data\":1}",
    ] {
        assert_eq!(redis.publish("rc:chat:inv", bad).await, 1);
    }
    redis.publish("rc:chat:inv", br#"{"data":"fine"}"#).await;
    assert_eq!(sub.next_message().await["data"], "fine");
    assert_eq!(node.node.metrics.drops(DropReason::InvalidEnvelope), 5);
    let (_, metrics) = node.get("/metrics").await;
    assert!(
        metrics.contains("roomcast_bus_invalid_envelopes_total 5"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn repeated_message_ids_are_delivered_once() {
    let Some(redis) = redis().await else { return };
    let node = node_on(&redis.url(), "dup").await;
    ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("chat:dup").await;
    for payload in [
        &br#"{"data":1,"id":"order-7"}"#[..],
        br#"{"data":1,"id":"order-7"}"#,
        br#"{"data":2,"id":"order-8"}"#,
    ] {
        redis.publish("rc:chat:dup", payload).await;
    }
    assert_eq!(sub.next_message().await["data"], 1);
    assert_eq!(sub.next_message().await["data"], 2);
    assert_eq!(node.node.metrics.drops(DropReason::Duplicate), 1);
    node.stop().await;
}

/// `proto/fixtures/envelopes/*.json`: what a backend publishes, and the frame browsers get.
#[tokio::test]
async fn envelope_conformance_fixtures() {
    let Some(redis) = redis().await else { return };
    let node = node_on(&redis.url(), "fixtures").await;
    ready(&node).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/fixtures/envelopes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 9);
    let mut invalid = 0;
    for file in files {
        let fixture: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let channel = fixture["channel"].as_str().unwrap();
        let mut sub = node.json().await;
        sub.subscribe(channel).await;
        let payload = fixture["publish"].as_str().unwrap();
        if fixture["command"] == "fcall" {
            let mut conn = redis.client().await.unwrap();
            let _: (u64, String) = redis::cmd("FCALL")
                .arg("roomcast_publish")
                .arg(1)
                .arg(format!("rc:{channel}"))
                .arg(payload)
                .query_async(&mut conn)
                .await
                .unwrap();
        } else {
            redis
                .publish(&format!("rc:{channel}"), payload.as_bytes())
                .await;
        }
        // A marker after it: whatever arrives before the marker came from the fixture.
        redis
            .publish(&format!("rc:{channel}"), br#"{"data":"$marker"}"#)
            .await;
        let mut first = sub.next_message().await;
        // An epoch is made by Redis: any string will do where the fixture says "$any".
        if fixture["receive"]["epoch"] == "$any" {
            assert!(first["epoch"].is_string(), "{first}");
            first["epoch"] = "$any".into();
        }
        if fixture["receive"].is_null() {
            invalid += 1;
            assert_eq!(
                first["data"],
                "$marker",
                "{}: must not be delivered",
                file.display()
            );
        } else {
            assert_eq!(first, fixture["receive"], "{}", file.display());
            assert_eq!(sub.next_message().await["data"], "$marker");
        }
    }
    assert_eq!(
        node.node.metrics.drops(DropReason::InvalidEnvelope),
        invalid
    );
    node.stop().await;
}

#[tokio::test]
async fn redis_url_with_password_and_database() {
    let Some(redis) = redis_with_password(Some("s3cret")).await else {
        return;
    };
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", redis.port);
    let node = node_on(&url, "auth").await;
    ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("chat:auth").await;
    let mut publisher = node.json().await;
    assert_eq!(
        publisher.publish("chat:auth", json!("authed")).await["op"],
        "ok"
    );
    assert_eq!(sub.next_message().await["data"], "authed");
    node.stop().await;

    let wrong = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let node = node_on(&wrong, "noauth").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !node.node.is_ready(),
        "a refused password keeps the node not ready"
    );
    assert_eq!(node.get("/readyz").await.0, 503);
    node.stop().await;
}

/// Reads one sample from Prometheus text: the line `name value`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{metrics}"))
}

#[tokio::test]
async fn metrics_count_traffic_through_two_nodes() {
    let Some(redis) = redis().await else { return };
    let a = node_on(&redis.url(), "ma").await;
    let b = node_on(&redis.url(), "mb").await;
    ready(&a).await;
    ready(&b).await;
    let mut subs = Vec::new();
    for n in [&a, &a, &b] {
        let mut c = n.json().await;
        c.subscribe("chat:metrics").await;
        subs.push(c);
    }
    let mut publisher = a.json().await;
    for i in 0..20 {
        assert_eq!(
            publisher.publish("chat:metrics", json!(i)).await["op"],
            "ok"
        );
    }
    for c in &mut subs {
        for i in 0..20 {
            assert_eq!(c.next_message().await["data"], i);
        }
    }
    let (_, ma) = a.get("/metrics").await;
    let (_, mb) = b.get("/metrics").await;
    assert_eq!(sample(&ma, "roomcast_messages_published_total"), 20.0);
    assert_eq!(sample(&mb, "roomcast_messages_published_total"), 0.0);
    assert_eq!(sample(&ma, "roomcast_messages_delivered_total"), 40.0);
    assert_eq!(sample(&mb, "roomcast_messages_delivered_total"), 20.0);
    assert_eq!(sample(&ma, "roomcast_messages_received_total"), 20.0);
    assert_eq!(sample(&ma, r#"roomcast_connections{transport="ws"}"#), 3.0);
    assert_eq!(sample(&ma, "roomcast_channels"), 1.0);
    assert_eq!(sample(&ma, "roomcast_bus_connected"), 1.0);
    // Every delivered frame carried its publish time: one latency observation each.
    assert_eq!(sample(&ma, "roomcast_publish_to_write_seconds_count"), 40.0);
    assert_eq!(sample(&mb, "roomcast_publish_to_write_seconds_count"), 20.0);
    assert_eq!(
        sample(
            &mb,
            r#"roomcast_publish_to_write_seconds_bucket{le="+Inf"}"#
        ),
        20.0
    );
    assert!(sample(&ma, "roomcast_bytes_sent_total") > 0.0);
    assert!(sample(&ma, "roomcast_bytes_received_total") > 0.0);
    assert_eq!(
        sample(
            &ma,
            r#"roomcast_messages_dropped_total{reason="slow_consumer"}"#
        ),
        0.0
    );
    assert!(sample(&ma, "process_resident_memory_bytes") > 0.0);
    a.stop().await;
    b.stop().await;
}

/// A backend message larger than `redis.max_envelope_bytes` would overflow every
/// subscriber's queue: it is dropped and counted, and nobody is disconnected. (Past 32 MB,
/// Redis's own pub/sub output limit cuts the node's link first: the node reconnects, and
/// recovers from history or sends `gap`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_backend_messages_never_disconnect_subscribers() {
    let Some(redis) = redis().await else { return };
    let node = node_on(&redis.url(), "big").await;
    ready(&node).await;
    let mut subs = Vec::new();
    for _ in 0..2 {
        let mut c = node.json().await;
        c.subscribe("live:big").await;
        subs.push(c);
    }
    for size in [2 << 20, 20 << 20] {
        let envelope = format!(r#"{{"data":"{}"}}"#, "x".repeat(size));
        assert_eq!(redis.publish("rc:live:big", envelope.as_bytes()).await, 1);
    }
    redis.publish("rc:live:big", br#"{"data":"after"}"#).await;
    for c in &mut subs {
        assert_eq!(c.next_message().await["data"], "after", "still connected");
    }
    assert_eq!(node.node.metrics.drops(DropReason::Oversize), 2);
    assert_eq!(node.node.metrics.slow_consumers.get(), 0);
    let (_, metrics) = node.get("/metrics").await;
    assert!(
        metrics.contains(r#"roomcast_messages_dropped_total{reason="oversize"} 2"#),
        "{metrics}"
    );
    node.stop().await;
}
