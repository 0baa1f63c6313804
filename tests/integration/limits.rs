//! Limits and hostile input: each gets its documented error or close code, and the node
//! keeps serving everybody else.

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, Closed, RawClient, TestNode};

#[tokio::test]
async fn oversize_message_closes_1009() {
    let node = TestNode::start_with(|s| s.limits.max_message_size = 1024).await;
    let mut c = node.json().await;
    let big = json!({"id": 1, "op": "publish", "channel": "chat:x", "data": "x".repeat(1100)});
    c.send_raw(Message::Text(big.to_string().into())).await;
    assert_eq!(c.closed().await, Closed::Code(1009));

    // Fragments are counted together.
    let mut raw = RawClient::connect(node.addr).await;
    raw.send_frame(0x01, &[b' '; 600]).await;
    raw.send_frame(0x80, &[b' '; 600]).await;
    assert_eq!(raw.close_code().await, Some(1009));
    node.stop().await;
}

#[tokio::test]
async fn fragmented_message_is_reassembled() {
    let node = TestNode::start().await;
    let mut raw = RawClient::connect(node.addr).await;
    raw.send_frame(0x01, br#"{"id":7,"op""#).await;
    raw.send_frame(0x89, b"mid-message ping").await;
    raw.send_frame(0x80, br#":"ping"}"#).await;
    let (op, pong) = raw.read_frame().await.unwrap();
    assert_eq!((op, pong.as_slice()), (0xA, &b"mid-message ping"[..]));
    let (op, reply) = raw.read_frame().await.unwrap();
    assert_eq!(op, 1);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply).unwrap(),
        json!({"op": "ok", "id": 7})
    );
    node.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let node = TestNode::start().await;
    let mut raw = RawClient::connect(node.addr).await;
    raw.send_frame(0x81, &[b'"', 0xff, 0xfe, b'"']).await;
    assert_eq!(raw.close_code().await, Some(1007));

    let mut raw = RawClient::connect(node.addr).await;
    raw.send_frame(0x01, b"{\"a\":\"").await;
    raw.send_frame(0x80, &[0xc3, 0x28, b'"', b'}']).await;
    assert_eq!(raw.close_code().await, Some(1007));
    node.stop().await;
}

#[tokio::test]
async fn broken_framing_closes_1002() {
    let node = TestNode::start().await;
    for (first, payload) in [
        (0xC1u8, &b"{}"[..]), // reserved bit set
        (0x80, b"{}"),        // continuation with nothing to continue
        (0x83, b"{}"),        // reserved opcode
        (0x09, b""),          // fragmented control frame
    ] {
        let mut raw = RawClient::connect(node.addr).await;
        raw.send_frame(first, payload).await;
        assert_eq!(raw.close_code().await, Some(1002), "first byte {first:#x}");
    }
    // A close frame with a code no peer may send, or a reason that is not UTF-8.
    let mut raw = RawClient::connect(node.addr).await;
    raw.send_frame(0x88, &1005u16.to_be_bytes()).await;
    assert_eq!(raw.close_code().await, Some(1002), "close code 1005");
    let mut raw = RawClient::connect(node.addr).await;
    raw.send_frame(0x88, &[0x03, 0xE8, 0xff]).await;
    assert_eq!(raw.close_code().await, Some(1007), "close reason not UTF-8");
    // Clients must mask their frames (RFC 6455 §5.1).
    let mut raw = RawClient::connect(node.addr).await;
    raw.stream
        .write_all(&[0x81, 0x02, b'{', b'}'])
        .await
        .unwrap();
    assert_eq!(raw.close_code().await, Some(1002), "unmasked frame");
    assert_eq!(
        node.json().await.request(json!({"op": "ping"})).await["op"],
        "ok"
    );
    node.stop().await;
}

#[tokio::test]
async fn subscription_limit() {
    let node = TestNode::start_with(|s| s.limits.max_subscriptions = 2).await;
    let mut c = node.json().await;
    c.subscribe("chat:1").await;
    c.subscribe("chat:2").await;
    let reply = c
        .request(json!({"op": "subscribe", "channel": "chat:3"}))
        .await;
    assert_eq!(reply["code"], "limit_exceeded");
    c.request(json!({"op": "unsubscribe", "channel": "chat:1"}))
        .await;
    c.subscribe("chat:3").await;
    node.stop().await;
}

#[tokio::test]
async fn publish_rate_limit() {
    let node = TestNode::start_with(|s| {
        s.limits.publish_rate = 0.5;
        s.limits.publish_burst = 2.0;
    })
    .await;
    let mut c = node.json().await;
    assert_eq!(c.publish("chat:x", json!(1)).await["op"], "ok");
    assert_eq!(c.publish("chat:x", json!(2)).await["op"], "ok");
    let reply = c.publish("chat:x", json!(3)).await;
    assert_eq!(reply["code"], "rate_limited");
    assert_eq!(c.request(json!({"op": "ping"})).await["op"], "ok");
    node.stop().await;
}

#[tokio::test]
async fn silent_client_closes_4001_and_live_one_stays() {
    let node = TestNode::start_with(|s| {
        s.heartbeat.interval_ms = 100;
        s.heartbeat.idle_timeout_ms = 400;
    })
    .await;
    let mut live = node.json().await;
    let mut silent = RawClient::connect(node.addr).await;
    // The raw client sees pings, never answers, and is closed. The other one keeps
    // talking (tungstenite also answers pings while it reads) and outlives the timeout.
    let keep_talking = async {
        for _ in 0..10 {
            assert_eq!(live.request(json!({"op": "ping"})).await["op"], "ok");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let (code, ()) = tokio::join!(silent.close_code(), keep_talking);
    assert_eq!(code, Some(4001));
    node.stop().await;
}

#[tokio::test]
async fn origin_allowlist() {
    let node =
        TestNode::start_with(|s| s.allowed_origins = vec!["https://app.example".into()]).await;
    let url = node.url("/ws");
    let own = format!("http://{}", node.addr);
    assert!(
        Client::try_connect(&url, None, &[("Origin", &own)])
            .await
            .is_ok()
    );
    assert!(
        Client::try_connect(&url, None, &[("Origin", "https://app.example")])
            .await
            .is_ok()
    );
    let err = Client::try_connect(&url, None, &[("Origin", "https://evil.example")])
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("403"), "{err}");
    assert!(
        Client::try_connect(&url, None, &[]).await.is_ok(),
        "no Origin: not a browser"
    );
    node.stop().await;
}

#[tokio::test]
async fn slow_consumer_is_cut_off_and_others_keep_receiving() {
    let node = TestNode::start_with(|s| {
        s.limits.publish_rate = 1e6;
        s.limits.publish_burst = 1e6;
        s.limits.outbox_max_bytes = 256 * 1024;
    })
    .await;
    // Subscribes, then never reads again.
    let mut slow = RawClient::connect(node.addr).await;
    slow.send_frame(0x81, br#"{"id":1,"op":"subscribe","channel":"chat:flood"}"#)
        .await;
    let mut reader = node.json().await;
    reader.subscribe("chat:flood").await;
    let mut publisher = node.json().await;
    let payload = "x".repeat(32 * 1024);
    // ~26 MB: more than the kernel buffers plus the outbox hold. The publisher waits for
    // the reading subscriber each time, so only the one that never reads falls behind.
    for i in 0..800 {
        publisher
            .send(json!({"id": i, "op": "publish", "channel": "chat:flood", "data": payload}))
            .await;
        let msg = reader.recv().await;
        assert_eq!(msg["op"], "message");
    }
    assert_eq!(node.node.metrics.slow_consumers.get(), 1);
    let metrics = std::sync::Arc::clone(&node.node.metrics);
    crate::support::eventually(|| metrics.closes(roomcast::protocol::CloseCode::SlowConsumer) == 1)
        .await;
    node.stop().await;
}
