//! Every op and every error code, over both codecs.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestNode};

async fn every_op(mut a: Client, mut b: Client) {
    a.subscribe("chat:room").await;
    b.subscribe("chat:room").await;
    let reply = b
        .publish("chat:room", json!({"text": "hi", "n": [1, 2.5, null]}))
        .await;
    // `chat` keeps history: the publish lands at offset 1 of the channel's epoch.
    let epoch = reply["epoch"].clone();
    assert!(epoch.is_string(), "{reply}");
    assert_eq!(
        reply,
        json!({"op": "ok", "id": 2, "offset": 1, "epoch": epoch})
    );
    for c in [&mut a, &mut b] {
        let msg = c.recv().await;
        assert_eq!(
            msg,
            json!({"op": "message", "channel": "chat:room", "data": {"text": "hi", "n": [1, 2.5, null]}, "offset": 1, "epoch": epoch})
        );
    }
    let history = a
        .request(json!({"op": "history", "channel": "chat:room"}))
        .await;
    assert_eq!(
        history,
        json!({"op": "ok", "id": 2, "offset": 1, "epoch": epoch, "messages": [{"offset": 1, "data": {"text": "hi", "n": [1, 2.5, null]}}]})
    );
    assert_eq!(
        a.request(json!({"op": "ping"})).await,
        json!({"op": "ok", "id": 3})
    );
    let reply = a
        .request(json!({"op": "unsubscribe", "channel": "chat:room"}))
        .await;
    assert_eq!(reply["op"], "ok");
    b.publish("chat:room", json!("second")).await;
    assert_eq!(b.recv().await["data"], "second");
    // `a` left the room: the next thing it sees is the reply to this ping, not a message.
    assert_eq!(a.request(json!({"op": "ping"})).await["op"], "ok");
}

#[tokio::test]
async fn every_op_json() {
    let node = TestNode::start().await;
    every_op(node.json().await, node.json().await).await;
    node.stop().await;
}

#[tokio::test]
async fn every_op_msgpack() {
    let node = TestNode::start().await;
    every_op(node.msgpack().await, node.msgpack().await).await;
    node.stop().await;
}

#[tokio::test]
async fn codecs_interoperate() {
    let node = TestNode::start().await;
    let mut j = node.json().await;
    let mut m = node.msgpack().await;
    j.subscribe("chat:x").await;
    m.subscribe("chat:x").await;
    m.publish(
        "chat:x",
        json!({"from": "msgpack", "big": 9007199254740991u64}),
    )
    .await;
    j.publish("chat:x", json!({"from": "json"})).await;
    for c in [&mut j, &mut m] {
        assert_eq!(c.recv().await["data"]["from"], "msgpack");
        assert_eq!(c.recv().await["data"]["from"], "json");
    }
    node.stop().await;
}

#[tokio::test]
async fn welcome_names_node_and_heartbeat() {
    let node = TestNode::start().await;
    let mut ws = tokio_tungstenite::connect_async(node.url("/ws"))
        .await
        .unwrap()
        .0;
    use futures_util::StreamExt;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    let welcome: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(welcome["op"], "welcome");
    assert_eq!(welcome["node"], "test");
    assert_eq!(welcome["version"], 1);
    assert_eq!(welcome["heartbeat"], 25);
    assert!(welcome["client"].as_str().unwrap().starts_with("test-"));
    node.stop().await;
}

async fn error_codes(mut c: Client) {
    let mut expect = async |req: serde_json::Value, id: serde_json::Value, code: &str| {
        c.send(req.clone()).await;
        let reply = c.recv().await;
        assert_eq!(reply["op"], "error", "{req} → {reply}");
        assert_eq!(reply["code"], code, "{req} → {reply}");
        assert_eq!(
            reply.get("id").cloned().unwrap_or_default(),
            id,
            "{req} → {reply}"
        );
        assert!(reply["message"].is_string());
    };
    expect(json!({"op": "ping"}), json!(null), "bad_request").await;
    expect(
        json!({"id": "seven", "op": "ping"}),
        json!(null),
        "bad_request",
    )
    .await;
    expect(json!({"id": 1}), json!(1), "bad_request").await;
    expect(json!({"id": 2, "op": 5}), json!(2), "bad_request").await;
    expect(json!({"id": 3, "op": "subscribe"}), json!(3), "bad_request").await;
    expect(
        json!({"id": 4, "op": "subscribe", "channel": ["x"]}),
        json!(4),
        "bad_request",
    )
    .await;
    expect(
        json!({"id": 5, "op": "publish", "channel": "chat:x"}),
        json!(5),
        "bad_request",
    )
    .await;
    expect(json!({"id": 6, "op": "dance"}), json!(6), "unknown_op").await;
    expect(
        json!({"id": 7, "op": "subscribe", "channel": "no spaces"}),
        json!(7),
        "bad_channel",
    )
    .await;
    expect(
        json!({"id": 8, "op": "subscribe", "channel": "x".repeat(129)}),
        json!(8),
        "bad_channel",
    )
    .await;
    expect(
        json!({"id": 9, "op": "subscribe", "channel": "nosuchns:x"}),
        json!(9),
        "bad_channel",
    )
    .await;
    expect(
        json!({"id": 10, "op": "publish", "channel": "news", "data": 1}),
        json!(10),
        "forbidden",
    )
    .await;
    // The connection survived all of that.
    assert_eq!(c.request(json!({"op": "ping"})).await["op"], "ok");
}

#[tokio::test]
async fn error_codes_json() {
    let node = TestNode::start().await;
    let mut c = node.json().await;
    c.send_raw(Message::Text("{not json".into())).await;
    let reply = c.recv().await;
    assert_eq!(
        (reply["op"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    c.send_raw(Message::Text("[1, \"ping\"]".into())).await;
    assert_eq!(c.recv().await["code"], "bad_request");
    c.send_raw(Message::Binary(vec![0x80].into())).await;
    assert_eq!(
        c.recv().await["code"],
        "bad_request",
        "binary frame on a JSON connection"
    );
    error_codes(c).await;
    node.stop().await;
}

#[tokio::test]
async fn error_codes_msgpack() {
    let node = TestNode::start().await;
    let mut c = node.msgpack().await;
    c.send_raw(Message::Binary(vec![0xc1].into())).await;
    assert_eq!(c.recv().await["code"], "bad_request");
    c.send_raw(Message::Text("{}".into())).await;
    assert_eq!(
        c.recv().await["code"],
        "bad_request",
        "text frame on a msgpack connection"
    );
    error_codes(c).await;
    node.stop().await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_are_idempotent() {
    let node = TestNode::start().await;
    let mut c = node.json().await;
    c.subscribe("chat:a").await;
    c.subscribe("chat:a").await;
    assert_eq!(
        c.request(json!({"op": "unsubscribe", "channel": "chat:a"}))
            .await["op"],
        "ok"
    );
    assert_eq!(
        c.request(json!({"op": "unsubscribe", "channel": "chat:a"}))
            .await["op"],
        "ok"
    );
    assert_eq!(node.node.hub.channels().len(), 0);
    node.stop().await;
}

#[tokio::test]
async fn unsupported_subprotocol_is_refused() {
    let node = TestNode::start().await;
    let err = Client::try_connect(&node.url("/ws"), Some("mqtt"), &[])
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("400"), "{err}");
    node.stop().await;
}
