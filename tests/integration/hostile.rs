//! Hostile clients and backends, each next to a well-behaved subscriber that must keep
//! receiving: floods, huge and lying frames, deep nesting, many connections from one
//! address, and backend messages Redis itself refuses to carry. (Slow readers, slowloris,
//! huge headers, garbage and oversize envelopes on Redis and a frozen Redis have their
//! own tests in `limits`, `admission`, `cluster` and `redis_failures`.)

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{node_on, ready};
use crate::redis_support::redis;
use crate::support::{Client, Closed, RawClient, TestNode};

/// A subscriber that only reads, and the proof that it still does.
struct Bystander {
    sub: Client,
    publisher: Client,
    sent: u64,
}

impl Bystander {
    async fn join(node: &TestNode) -> Self {
        let mut sub = node.json().await;
        sub.subscribe("chat:bystander").await;
        Self {
            sub,
            publisher: node.json().await,
            sent: 0,
        }
    }

    async fn still_receives(&mut self) {
        self.sent += 1;
        let n = self.sent;
        let reply = self.publisher.publish("chat:bystander", json!(n)).await;
        assert_eq!(reply["op"], "ok", "{reply}");
        assert_eq!(self.sub.next_message().await["data"], n);
    }
}

#[tokio::test]
async fn a_publish_flood_is_rate_limited_without_closing_anyone() {
    let node = TestNode::start().await;
    let mut bystander = Bystander::join(&node).await;
    let mut flooder = node.json().await;
    for id in 0..2_000 {
        let msg = json!({"id": id, "op": "publish", "channel": "chat:flood", "data": id});
        flooder.send(msg).await;
    }
    let mut refused = 0;
    for _ in 0..2_000 {
        let reply = flooder.recv().await;
        if reply["code"] == "rate_limited" {
            refused += 1;
        }
    }
    // The burst (40) and what the rate refilled meanwhile got through; the rest did not.
    assert!(refused >= 1_900, "{refused} refused");
    bystander.still_receives().await;
    assert_eq!(flooder.request(json!({"op": "ping"})).await["op"], "ok");
    node.stop().await;
}

#[tokio::test]
async fn a_10_mb_message_and_lying_lengths_close_without_allocating() {
    let node = TestNode::start().await;
    let mut bystander = Bystander::join(&node).await;
    let mut big = node.json().await;
    let payload = format!(
        r#"{{"id":1,"op":"publish","channel":"chat:x","data":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    big.send_raw(Message::Text(payload.into())).await;
    assert_eq!(big.closed().await, Closed::Code(1009));
    // A header claiming 2^63 - 1 bytes: refused from the header alone.
    let mut liar = RawClient::connect(node.addr).await;
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    tokio::io::AsyncWriteExt::write_all(&mut liar.stream, &head)
        .await
        .unwrap();
    assert_eq!(liar.close_code().await, Some(1009));
    // A length with the top bit set is not a length at all (RFC 6455 §5.2).
    let mut broken = RawClient::connect(node.addr).await;
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&u64::MAX.to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    tokio::io::AsyncWriteExt::write_all(&mut broken.stream, &head)
        .await
        .unwrap();
    assert!(matches!(broken.close_code().await, Some(1002 | 1009)));
    bystander.still_receives().await;
    node.stop().await;
}

#[tokio::test]
async fn nesting_deeper_than_any_codec_carries_is_refused_and_the_connection_stays() {
    let node = TestNode::start().await;
    let mut bystander = Bystander::join(&node).await;
    let mut c = node.json().await;
    // 30,000 levels: 60 KB, just under the message size limit.
    for depth in [200, 30_000] {
        let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let msg = format!(r#"{{"id":{depth},"op":"publish","channel":"chat:x","data":{data}}}"#);
        c.send_raw(Message::Text(msg.into())).await;
        let reply = c.recv().await;
        assert_eq!(reply["code"], "bad_request", "{depth}: {reply}");
    }
    assert_eq!(c.request(json!({"op": "ping"})).await["op"], "ok");
    bystander.still_receives().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_from_one_address_stop_at_the_default_limit() {
    let node = TestNode::start().await;
    let limit = node.node.settings.limits.max_connections_per_ip;
    assert_eq!(limit, 1_000, "the default");
    let mut held = Vec::with_capacity(limit);
    for _ in 0..limit {
        held.push(RawClient::connect(node.addr).await);
    }
    let refused = Client::try_connect(&node.url("/ws"), None, &[]).await.err();
    match refused {
        Some(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // Another address is served meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let (mut other, _) = tokio_tungstenite::client_async(node.url("/ws"), stream)
        .await
        .expect("another address is admitted");
    use futures_util::StreamExt;
    assert!(
        other
            .next()
            .await
            .unwrap()
            .unwrap()
            .to_text()
            .unwrap()
            .contains("welcome")
    );
    drop(held);
    crate::support::eventually(|| node.node.connection_count() <= 1).await;
    let mut bystander = Bystander::join(&node).await;
    bystander.still_receives().await;
    node.stop().await;
}

/// Redis cuts a pub/sub client whose output buffer passes 32 MB (its default
/// `client-output-buffer-limit pubsub`): a 50 MB message costs the node its link, which it
/// rebuilds; its subscribers stay connected and are told `gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_backend_message_costs_a_reconnect_never_a_subscriber() {
    let Some(redis) = redis().await else { return };
    let node = node_on(&redis.url(), "huge").await;
    ready(&node).await;
    let mut sub = node.json().await;
    sub.subscribe("live:huge").await;
    let envelope = format!(r#"{{"data":"{}"}}"#, "x".repeat(50 << 20));
    redis.publish("rc:live:huge", envelope.as_bytes()).await;
    assert_eq!(
        sub.recv().await,
        json!({"op": "gap", "channel": "live:huge"})
    );
    ready(&node).await;
    redis.publish("rc:live:huge", br#"{"data":"after"}"#).await;
    assert_eq!(sub.next_message().await["data"], "after");
    assert!(node.node.metrics.bus_reconnects.get() >= 1);
    assert_eq!(node.node.metrics.slow_consumers.get(), 0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_does_not_read_is_cut_off_like_any_slow_consumer() {
    let node = TestNode::start_with(|s| {
        s.limits.publish_rate = 1e6;
        s.limits.publish_burst = 1e6;
        s.limits.outbox_max_bytes = 256 * 1024;
    })
    .await;
    let mut bystander = Bystander::join(&node).await;
    // Opens the stream, then never reads another byte.
    let mut stalled = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "GET /sse?channel=chat:flood HTTP/1.1\r\nHost: {}\r\n\r\n",
        node.addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes())
        .await
        .unwrap();
    let n = std::sync::Arc::clone(&node.node);
    let flood = roomcast::channel::ChannelName::parse("chat:flood").unwrap();
    crate::support::eventually(move || n.hub.subscriber_count(&flood) == 1).await;
    let mut publisher = node.json().await;
    let payload = "x".repeat(32 * 1024);
    for _ in 0..800 {
        publisher.publish("chat:flood", json!(payload)).await;
        if node.node.metrics.slow_consumers.get() == 1 {
            break;
        }
    }
    assert_eq!(node.node.metrics.slow_consumers.get(), 1);
    bystander.still_receives().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_polls_from_one_address_stop_at_the_limit() {
    let node = TestNode::start().await;
    let limit = node.node.settings.limits.max_connections_per_ip;
    let mut held = Vec::with_capacity(limit);
    for _ in 0..limit {
        let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        let head = format!(
            "GET /poll?channel=chat:held&timeout=30 HTTP/1.1\r\nHost: {}\r\n\r\n",
            node.addr
        );
        tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
            .await
            .unwrap();
        held.push(s);
    }
    let n = std::sync::Arc::clone(&node.node);
    let ip = "127.0.0.1".parse().unwrap();
    crate::support::eventually(move || n.addresses.count(ip) as usize == limit).await;
    let (status, body) = crate::http_support::request(
        node.addr,
        "GET",
        "/poll?channel=chat:held&timeout=1",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 429, "{body}");
    drop(held);
    let n = std::sync::Arc::clone(&node.node);
    crate::support::eventually(move || n.addresses.count(ip) == 0).await;
    let mut bystander = Bystander::join(&node).await;
    bystander.still_receives().await;
    node.stop().await;
}
