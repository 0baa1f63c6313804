//! The other doors on the same port: pages, health, metrics, echo, and shutdown.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use tokio::io::AsyncWriteExt;

use crate::support::{Closed, RawClient, TestNode, http_get};

#[tokio::test]
async fn pages_health_and_metrics() {
    let node = TestNode::start().await;
    let (status, body) = node.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("roomcast.js"));
    let (status, body) = node.get("/roomcast.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("class RoomcastClient"));
    assert_eq!(node.get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(node.get("/readyz").await, (200, "ready\n".into()));
    assert_eq!(node.get("/nope").await.0, 404);
    assert_eq!(
        node.get("/ws").await.0,
        400,
        "plain GET on the WebSocket path"
    );

    let mut c = node.json().await;
    c.subscribe("chat:m").await;
    c.publish("chat:m", json!(1)).await;
    c.recv().await;
    let (status, metrics) = node.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "roomcast_connections{transport=\"ws\"} 1",
        "roomcast_channels 1",
        "roomcast_subscriptions 1",
        "roomcast_messages_published_total 1",
        "roomcast_messages_delivered_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    node.stop().await;
}

#[tokio::test]
async fn echo_endpoint_echoes_and_can_be_turned_off() {
    let node = TestNode::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(node.url("/echo"))
        .await
        .unwrap();
    ws.send(Message::Text("hello".into())).await.unwrap();
    ws.send(Message::Binary(vec![0, 1, 2].into()))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("hello".into())
    );
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(vec![0, 1, 2].into())
    );
    node.stop().await;

    let node = TestNode::start_with(|s| s.echo = false).await;
    assert_eq!(node.get("/echo").await.0, 404);
    node.stop().await;
}

/// `/echo` reads through the same message reader as `/ws`: same limits, same close codes.
#[tokio::test]
async fn echo_enforces_the_same_limits_as_ws() {
    let node = TestNode::start_with(|s| s.limits.max_message_size = 1024).await;
    let mut raw = RawClient::connect_echo(node.addr).await;
    raw.send_frame(0x01, b"he").await;
    raw.send_frame(0x89, b"p").await;
    raw.send_frame(0x80, b"llo").await;
    assert_eq!(raw.read_frame().await, Some((0xA, b"p".to_vec())));
    assert_eq!(raw.read_frame().await, Some((0x1, b"hello".to_vec())));
    // Fragments are counted together against limits.max_message_size.
    raw.send_frame(0x02, &[0u8; 600]).await;
    raw.send_frame(0x80, &[0u8; 600]).await;
    assert_eq!(raw.close_code().await, Some(1009));

    let mut raw = RawClient::connect_echo(node.addr).await;
    raw.send_frame(0x81, &[0xff, 0xfe]).await;
    assert_eq!(raw.close_code().await, Some(1007));

    let mut raw = RawClient::connect_echo(node.addr).await;
    raw.stream.write_all(&[0x81, 0x01, b'x']).await.unwrap();
    assert_eq!(raw.close_code().await, Some(1002), "unmasked frame");
    node.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_turns_not_ready() {
    let node = TestNode::start_with(|s| {
        s.shutdown.drain_window_ms = 500;
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = node.json().await;
        c.subscribe("chat:bye").await;
        clients.push(c);
    }
    let addr = node.addr;
    node.node.shutdown.cancel();
    // Draining: not ready, and no new WebSocket clients.
    let (status, _) = http_get(addr, "/readyz", &[]).await;
    assert_eq!(status, 503, "readyz during drain");
    let refused = crate::support::Client::try_connect(&format!("ws://{addr}/ws"), None, &[]).await;
    assert!(refused.err().unwrap().to_string().contains("503"));
    for c in &mut clients {
        assert_eq!(c.closed().await, Closed::Code(1001));
    }
    tokio::time::timeout(crate::support::TIMEOUT, node.server)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn metrics_token_and_admin_port() {
    let node = TestNode::start_with(|s| s.metrics.token = Some("t0ken".into())).await;
    assert_eq!(node.get("/metrics").await.0, 401);
    let (status, body) =
        http_get(node.addr, "/metrics", &[("Authorization", "Bearer t0ken")]).await;
    assert_eq!(status, 200);
    assert!(body.contains("roomcast_connections"));
    node.stop().await;

    let admin_port = crate::redis_support::free_port();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let node = TestNode::start_with(|s| {
        s.metrics.listen = Some(admin);
        s.metrics.public = false;
    })
    .await;
    let listener = tokio::net::TcpListener::bind(admin).await.unwrap();
    tokio::spawn(roomcast::server::serve_admin(
        listener,
        std::sync::Arc::clone(&node.node),
    ));
    assert_eq!(node.get("/metrics").await.0, 404, "not on the public port");
    let (status, body) = http_get(admin, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("roomcast_publish_to_write_seconds_count"));
    assert_eq!(http_get(admin, "/readyz", &[]).await.0, 200);
    node.stop().await;
}
