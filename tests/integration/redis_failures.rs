//! Redis going away, or going deaf: clients stay connected, publishes fail visibly, and
//! the node recovers by itself and tells its clients `gap`.

use std::time::Duration;

use serde_json::json;

use crate::cluster::{node_on, ready};
use crate::redis_support::{DeafProxy, redis};
use crate::support::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_visible_and_recovers_by_itself() {
    let Some(mut redis) = redis().await else {
        return;
    };
    let a = node_on(&redis.url(), "a").await;
    let b = node_on(&redis.url(), "b").await;
    ready(&a).await;
    ready(&b).await;
    let mut sub_a = a.json().await;
    sub_a.subscribe("chat:r").await;
    let mut sub_b = b.json().await;
    sub_b.subscribe("chat:r").await;
    let mut pub_a = a.json().await;
    assert_eq!(pub_a.publish("chat:r", json!("before")).await["op"], "ok");
    assert_eq!(sub_a.next_message().await["data"], "before");
    assert_eq!(sub_b.next_message().await["data"], "before");

    redis.stop();
    for n in [&a, &b] {
        let node = std::sync::Arc::clone(&n.node);
        eventually(move || !node.is_ready()).await;
        assert_eq!(n.get("/readyz").await.0, 503);
    }
    let reply = pub_a.publish("chat:r", json!("during")).await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    // Clients are still connected and served.
    assert_eq!(sub_a.request(json!({"op": "ping"})).await["op"], "ok");
    // A subscription made during the outage is kept and set up on reconnect.
    let mut late = b.json().await;
    late.subscribe("chat:late").await;

    redis.start().await;
    ready(&a).await;
    ready(&b).await;
    assert_eq!(a.get("/readyz").await.0, 200);
    for c in [&mut sub_a, &mut sub_b] {
        let gap = c.recv().await;
        assert_eq!(gap, json!({"op": "gap", "channel": "chat:r"}));
    }
    assert_eq!(
        late.recv().await,
        json!({"op": "gap", "channel": "chat:late"})
    );
    assert_eq!(pub_a.publish("chat:r", json!("after")).await["op"], "ok");
    assert_eq!(sub_a.next_message().await["data"], "after");
    assert_eq!(sub_b.next_message().await["data"], "after");
    redis.publish("rc:chat:late", br#"{"data":"late"}"#).await;
    assert_eq!(late.next_message().await["data"], "late");
    assert!(a.node.metrics.bus_reconnects.get() >= 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn deaf_pubsub_link_is_detected_by_the_probe() {
    let Some(redis) = redis().await else { return };
    let proxy = DeafProxy::start(redis.port).await;
    let node = node_on(&proxy.url(), "deaf").await;
    ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("live:d").await;
    proxy.freeze();
    let started = tokio::time::Instant::now();
    let n = std::sync::Arc::clone(&node.node);
    eventually(move || n.metrics.bus_probe_failures.get() >= 1).await;
    // probe_timeout_ms (500) + probe_interval_ms (100), plus scheduling slack.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    ready(&node).await;
    assert_eq!(sub.recv().await, json!({"op": "gap", "channel": "live:d"}));
    redis
        .publish("rc:live:d", br#"{"data":"heard again"}"#)
        .await;
    assert_eq!(sub.next_message().await["data"], "heard again");
    node.stop().await;
}

#[tokio::test]
async fn killed_pubsub_connection_is_rebuilt() {
    let Some(redis) = redis().await else { return };
    let node = node_on(&redis.url(), "kill").await;
    ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("live:k").await;
    let mut conn = redis.client().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    assert_eq!(sub.recv().await, json!({"op": "gap", "channel": "live:k"}));
    redis.publish("rc:live:k", br#"{"data":1}"#).await;
    assert_eq!(sub.next_message().await["data"], 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_turns_the_node_unready_within_the_probe_timeout() {
    let Some(redis) = redis().await else { return };
    let node = node_on(&redis.url(), "frozen").await;
    ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("live:f").await;
    redis.signal("STOP");
    let frozen = tokio::time::Instant::now();
    // A subscribe in flight while Redis hangs gets an answer, and the probe keeps running.
    let mut other = node.json().await;
    let reply = other
        .request(json!({"op": "subscribe", "channel": "live:other"}))
        .await;
    assert!(
        reply["op"] == "ok" || reply["code"] == "unavailable",
        "{reply}"
    );
    let n = std::sync::Arc::clone(&node.node);
    eventually(move || !n.is_ready()).await;
    let unready_after = frozen.elapsed();
    // probe_timeout_ms (500) + probe_interval_ms (100), plus scheduling slack.
    assert!(
        unready_after < Duration::from_millis(1500),
        "{unready_after:?}"
    );
    assert_eq!(node.get("/readyz").await.0, 503);
    // The node itself stays responsive, and its clients connected.
    assert_eq!(sub.request(json!({"op": "ping"})).await["op"], "ok");
    let reply = sub.publish("live:f", json!("frozen")).await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    redis.signal("CONT");
    ready(&node).await;
    assert_eq!(sub.recv().await, json!({"op": "gap", "channel": "live:f"}));
    assert_eq!(sub.publish("live:f", json!("thawed")).await["op"], "ok");
    assert_eq!(sub.next_message().await["data"], "thawed");
    other.subscribe("live:other").await;
    assert_eq!(other.publish("live:other", json!(2)).await["op"], "ok");
    assert_eq!(other.next_message().await["data"], 2);
    node.stop().await;
}
