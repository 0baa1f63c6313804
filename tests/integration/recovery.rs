//! Nothing lost on reconnect: channel history, recovery by offset and epoch on another
//! node, out-of-window and lost-history answers, and a node recovering its own clients
//! after its Redis link was cut.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{node_on, ready};
use crate::redis_support::{DeafProxy, RedisServer, redis};
use crate::support::{Client, TestNode};

/// Publishes `{"seq": n}` with history, as a backend does: one FCALL. Returns the offset.
async fn fcall(conn: &mut redis::aio::MultiplexedConnection, channel: &str, seq: u64) -> u64 {
    let envelope = json!({"data": {"seq": seq}}).to_string();
    let (offset, _epoch): (u64, String) = redis::cmd("FCALL")
        .arg("roomcast_publish")
        .arg(1)
        .arg(format!("rc:{channel}"))
        .arg(envelope)
        .query_async(conn)
        .await
        .unwrap();
    offset
}

/// The next `message`: (seq, offset, epoch).
async fn next_seq(c: &mut Client) -> (u64, u64, String) {
    let m = c.next_message().await;
    let seq = m["data"]["seq"].as_u64().unwrap_or_else(|| panic!("{m}"));
    let offset = m["offset"].as_u64().unwrap_or_else(|| panic!("{m}"));
    (seq, offset, m["epoch"].as_str().unwrap().to_string())
}

async fn subscribe_recovering(c: &mut Client, channel: &str, offset: u64, epoch: &str) -> Value {
    c.request(json!({"op": "subscribe", "channel": channel, "recover": {"offset": offset, "epoch": epoch}}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_messages_are_recovered_on_another_node_while_publishing_goes_on() {
    let Some(redis) = redis().await else { return };
    let (a, b) = (
        node_on(&redis.url(), "a").await,
        node_on(&redis.url(), "b").await,
    );
    ready(&a).await;
    ready(&b).await;
    let mut backend = redis.client().await.unwrap();
    let mut sub = a.json().await;
    sub.subscribe("chat:resume").await;
    for seq in 0..10 {
        fcall(&mut backend, "chat:resume", seq).await;
    }
    let mut last = (0, 0, String::new());
    for _ in 0..10 {
        last = next_seq(&mut sub).await;
    }
    drop(sub);
    // Away: 1,000 messages; then publishing goes on while the client comes back.
    for seq in 10..1010 {
        fcall(&mut backend, "chat:resume", seq).await;
    }
    let url = redis.url();
    let publishing = tokio::spawn(async move {
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for seq in 1010..1510 {
            fcall(&mut conn, "chat:resume", seq).await;
            if seq % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut back = b.json().await;
    let started = tokio::time::Instant::now();
    let reply = subscribe_recovering(&mut back, "chat:resume", last.1, &last.2).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let mut expected = last.0 + 1;
    while expected < 1510 {
        let (seq, offset, epoch) = next_seq(&mut back).await;
        assert_eq!(seq, expected, "in order, no gap, no duplicate");
        assert_eq!(offset, seq + 1);
        assert_eq!(epoch, last.2);
        if seq == 1009 {
            eprintln!("recovered 1,000 missed messages in {:?}", started.elapsed());
        }
        expected += 1;
    }
    publishing.await.unwrap();
    assert_eq!(
        back.request(json!({"op": "ping"})).await["op"],
        "ok",
        "nothing more"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn out_of_the_window_or_another_epoch_is_not_recovered() {
    let node = TestNode::start_with(|s| {
        s.limits.publish_rate = 1e6;
        s.limits.publish_burst = 1e6;
        s.namespaces.get_mut("chat").unwrap().history_size = 5;
    })
    .await;
    let mut publisher = node.json().await;
    let first = publisher.publish("chat:w", json!({"seq": 0})).await;
    let epoch = first["epoch"].as_str().unwrap().to_string();
    for seq in 1..10 {
        publisher.publish("chat:w", json!({"seq": seq})).await;
    }
    // Offset 1 was trimmed: five messages are kept, the client missed nine.
    let mut late = node.json().await;
    let reply = subscribe_recovering(&mut late, "chat:w", 1, &epoch).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["offset"], 10);
    // Within the window it works, on the very same node.
    let mut close = node.json().await;
    let reply = subscribe_recovering(&mut close, "chat:w", 7, &epoch).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    for seq in 7..10 {
        assert_eq!(next_seq(&mut close).await.0, seq);
    }
    let mut other = node.json().await;
    let reply = subscribe_recovering(&mut other, "chat:w", 7, "another-epoch").await;
    assert_eq!(reply["recovered"], false, "{reply}");
    node.stop().await;
}

/// Restarts Redis; with persistence the history and its epoch survive.
async fn restart_and_recover(redis: &mut RedisServer, recovered: bool) {
    let node = node_on(&redis.url(), "r").await;
    ready(&node).await;
    let mut backend = redis.client().await.unwrap();
    let mut sub = node.json().await;
    sub.subscribe("chat:persist").await;
    fcall(&mut backend, "chat:persist", 0).await;
    let (_, offset, epoch) = next_seq(&mut sub).await;
    drop(sub);
    fcall(&mut backend, "chat:persist", 1).await;
    redis.stop();
    redis.start().await;
    ready(&node).await;
    let mut back = node.json().await;
    let reply = subscribe_recovering(&mut back, "chat:persist", offset, &epoch).await;
    assert_eq!(reply["recovered"], recovered, "{reply}");
    if recovered {
        assert_eq!(next_seq(&mut back).await.0, 1);
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_the_epoch_with_persistence_and_not_without() {
    let Some(mut persistent) = RedisServer::persistent().await else {
        return;
    };
    restart_and_recover(&mut persistent, true).await;
    let Some(mut volatile) = redis().await else {
        return;
    };
    restart_and_recover(&mut volatile, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_redis_link_loses_nothing_for_clients_that_stay() {
    let Some(redis) = redis().await else { return };
    let proxy = DeafProxy::start(redis.port).await;
    let node = node_on(&proxy.url(), "cut").await;
    ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("chat:cut").await;
    let mut backend = redis.client().await.unwrap();
    const N: u64 = 600;
    let burst = tokio::spawn(async move {
        for seq in 0..N {
            fcall(&mut backend, "chat:cut", seq).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut_for(Duration::from_secs(2));
    for expected in 0..N {
        let msg = sub.recv().await;
        assert_eq!(msg["op"], "message", "no gap, no reconnect: {msg}");
        assert_eq!(msg["data"]["seq"], expected, "in order, once");
    }
    burst.await.unwrap();
    assert!(
        node.node.metrics.bus_probe_failures.get() >= 1,
        "the link was cut"
    );
    assert!(
        node.node.metrics.bus_reconnects.get() >= 2,
        "reconnects were refused while it was cut"
    );
    assert!(
        node.node.metrics.recovered_messages.get() >= 1,
        "and recovered"
    );
    node.stop().await;
}
