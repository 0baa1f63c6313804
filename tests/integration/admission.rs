//! Limits checked before or around the handshake: connections per node and per address
//! (refused before any upgrade work), the handshake timeout, the request-head size, the
//! subscribe rate, and metrics kept off the public port.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

use crate::support::{Client, RawClient, TestNode, eventually};

fn status(error: tungstenite::Error) -> u16 {
    match error {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_node_refuses_upgrades_with_503_before_any_websocket_work() {
    let node = TestNode::start_with(|s| s.limits.max_connections = 2).await;
    let a = node.json().await;
    let _b = node.json().await;
    let refused = Client::try_connect(&node.url("/ws"), None, &[]).await.err();
    assert_eq!(status(refused.expect("refused")), 503);
    // The echo endpoint counts toward the same limit.
    let echo = tokio_tungstenite::connect_async(node.url("/echo"))
        .await
        .err();
    assert_eq!(status(echo.expect("refused")), 503);
    drop(a);
    eventually(|| node.node.connection_count() < 2).await;
    eventually(|| node.node.addresses.count("127.0.0.1".parse().unwrap()) < 2).await;
    node.json().await;
    let (_, metrics) = node.get("/metrics").await;
    assert!(
        metrics.contains("roomcast_rejected_node_full_total 2"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_limited_and_given_back() {
    let node = TestNode::start_with(|s| s.limits.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(node.json().await);
    }
    let refused = Client::try_connect(&node.url("/ws"), None, &[]).await.err();
    assert_eq!(status(refused.expect("refused")), 429);
    // Another address (127.0.0.2 is loopback too) is not affected.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let (mut from_other, _) = tokio_tungstenite::client_async(node.url("/ws"), stream)
        .await
        .expect("another address is admitted");
    use futures_util::StreamExt;
    let welcome = from_other.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("welcome"));
    held.pop();
    eventually(|| node.node.addresses.count("127.0.0.1".parse().unwrap()) < 3).await;
    node.json().await;
    let (_, metrics) = node.get("/metrics").await;
    assert!(
        metrics.contains("roomcast_rejected_per_ip_total 1"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_counts() {
    let node = TestNode::start_with(|s| {
        s.limits.max_connections_per_ip = 1;
        s.limits.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let url = node.url("/ws");
    let forwarded = |ip: &'static str| [("X-Forwarded-For", ip)];
    let _a = Client::try_connect(&url, None, &forwarded("203.0.113.1"))
        .await
        .unwrap();
    let _b = Client::try_connect(&url, None, &forwarded("203.0.113.2"))
        .await
        .unwrap();
    let again = Client::try_connect(&url, None, &forwarded("203.0.113.1"))
        .await
        .err();
    assert_eq!(status(again.expect("refused")), 429);
    node.stop().await;
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_at_the_handshake_timeout() {
    let node = TestNode::start_with(|s| s.limits.handshake_timeout_ms = 300).await;
    let mut slow = TcpStream::connect(node.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            // The node answers 408 or just closes: either way the socket ends.
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a slowloris connection was kept open");
    // A connection that sends nothing at all is cut off too.
    let mut silent = TcpStream::connect(node.addr).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await;
    assert!(
        matches!(ended, Ok(Ok(0) | Err(_))),
        "an idle socket was kept: {ended:?}"
    );
    let metrics = std::sync::Arc::clone(&node.node.metrics);
    eventually(move || metrics.handshake_timeouts.get() == 2).await;
    node.json().await;
    node.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_431() {
    let node = TestNode::start().await;
    let mut s = TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    let metrics = std::sync::Arc::clone(&node.node.metrics);
    eventually(move || metrics.oversized_heads.get() == 1).await;
    node.json().await;
    node.stop().await;
}

/// The node answers a connection's first request itself when it is an upgrade; an upgrade
/// after other requests on a kept-alive connection goes through hyper. Both serve frames
/// the client sent with the handshake, before any answer.
#[tokio::test]
async fn upgrades_first_or_after_other_requests_both_serve_frames_sent_with_them() {
    let node = TestNode::start().await;
    let subscribe = |id: u32| {
        let cmd = json!({"id": id, "op": "subscribe", "channel": format!("c{id}")});
        RawClient::frame(0x81, cmd.to_string().as_bytes())
    };
    let first = TcpStream::connect(node.addr).await.unwrap();
    let mut kept = TcpStream::connect(node.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"ok\n") {
        let mut b = [0u8; 1];
        kept.read_exact(&mut b).await.unwrap();
        answer.push(b[0]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    for (id, stream) in [(1, first), (2, kept)] {
        let mut raw = RawClient::upgrade(stream, "/ws", &subscribe(id)).await;
        let (_, welcome) = raw.read_frame().await.expect("welcome");
        assert!(String::from_utf8_lossy(&welcome).contains("welcome"));
        let (_, reply) = raw.read_frame().await.expect("reply");
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply["id"], id, "{reply}");
        assert!(reply.get("error").is_none(), "{reply}");
    }
    node.stop().await;
}

#[tokio::test]
async fn subscribes_and_unsubscribes_share_a_rate_budget() {
    let node = TestNode::start_with(|s| {
        s.limits.subscribe_rate = 0.5;
        s.limits.subscribe_burst = 3.0;
    })
    .await;
    let mut c = node.json().await;
    c.subscribe("chat:1").await;
    c.subscribe("chat:2").await;
    let reply = c
        .request(json!({"op": "unsubscribe", "channel": "chat:1"}))
        .await;
    assert_eq!(reply["op"], "ok");
    let reply = c
        .request(json!({"op": "subscribe", "channel": "chat:3"}))
        .await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    // Repeating a subscription costs nothing: it does no work.
    let reply = c
        .request(json!({"op": "subscribe", "channel": "chat:2"}))
        .await;
    assert_eq!(reply["op"], "ok", "{reply}");
    node.stop().await;
}

#[tokio::test]
async fn metrics_stay_off_the_public_port_unless_configured() {
    let node = TestNode::start_with(|s| s.metrics.public = false).await;
    assert_eq!(node.get("/metrics").await.0, 404);
    node.stop().await;
}
