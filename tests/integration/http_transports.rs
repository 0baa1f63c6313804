//! The HTTP doors into the same rooms: SSE (with `Last-Event-ID` resume across channels),
//! long-polling with a cursor, `POST /rpc`, and the backend API.

use serde_json::{Value, json};

use crate::http_support::{Sse, post_json, request};
use crate::support::TestNode;

fn generous(s: &mut roomcast::settings::Settings) {
    s.limits.publish_rate = 1e6;
    s.limits.publish_burst = 1e6;
    s.api.key = Some("test-api-key-0123456789".into());
    if let Some(chat) = s.namespaces.get_mut("chat") {
        chat.history_size = 5_000;
    }
}

const KEY: (&str, &str) = ("Authorization", "Bearer test-api-key-0123456789");

#[tokio::test]
async fn sse_receives_what_websocket_and_rpc_publish() {
    let node = TestNode::start_with(generous).await;
    let mut sse = Sse::open(node.addr, "/sse?channel=chat:sse", &[]).await;
    assert_eq!(sse.status, 200);
    let welcome = sse.next().await;
    assert_eq!(welcome.event, "welcome");
    let (_, metrics) = node.get("/metrics").await;
    assert!(
        metrics.contains("roomcast_connections{transport=\"sse\"} 1"),
        "{metrics}"
    );
    let mut ws = node.json().await;
    assert_eq!(
        ws.publish("chat:sse", json!({"from": "ws"})).await["op"],
        "ok"
    );
    let event = sse.next_message().await;
    assert_eq!(event.data["data"], json!({"from": "ws"}));
    assert!(
        event.id.as_deref().unwrap().starts_with("chat:sse~1~"),
        "{event:?}"
    );
    let (status, reply) = post_json(
        node.addr,
        "/rpc",
        &[],
        &json!({"id": 5, "op": "publish", "channel": "chat:sse", "data": "from rpc"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["op"], "ok");
    assert_eq!(reply["offset"], 2);
    assert_eq!(sse.next_message().await.data["data"], "from rpc");
    node.stop().await;
}

#[tokio::test]
async fn sse_resumes_every_channel_from_last_event_id() {
    let node = TestNode::start_with(generous).await;
    let mut ws = node.json().await;
    let path = "/sse?channel=chat:a&channel=chat:b";
    let mut sse = Sse::open(node.addr, path, &[]).await;
    ws.publish("chat:a", json!("a1")).await;
    ws.publish("chat:b", json!("b1")).await;
    sse.next_message().await;
    let last = sse.next_message().await;
    assert_eq!(last.data["data"], "b1");
    let id = last.id.unwrap();
    drop(sse);
    for m in ["a2", "a3"] {
        ws.publish("chat:a", json!(m)).await;
    }
    ws.publish("chat:b", json!("b2")).await;
    let mut again = Sse::open(node.addr, path, &[("Last-Event-ID", &id)]).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(again.next_message().await.data["data"].clone());
    }
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, [json!("a2"), json!("a3"), json!("b2")]);
    ws.publish("chat:a", json!("a4")).await;
    assert_eq!(
        again.next_message().await.data["data"],
        "a4",
        "nothing repeated"
    );
    node.stop().await;
}

#[tokio::test]
async fn sse_refusals_are_http_errors_with_protocol_codes() {
    let node = TestNode::start_with(generous).await;
    // A stream without channels is allowed: it carries `welcome` and waits.
    let mut sse = Sse::open(node.addr, "/sse", &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.next().await.event, "welcome");
    let sse = Sse::open(node.addr, "/sse?channel=chat:a&info=%7Bnot", &[]).await;
    assert_eq!(sse.status, 400);
    let sse = Sse::open(node.addr, "/sse?channel=nope:x", &[]).await;
    assert_eq!(sse.status, 404, "an unknown namespace");
    let sse = Sse::open(node.addr, "/sse?channel=bad%20name", &[]).await;
    assert_eq!(sse.status, 400);
    node.stop().await;
}

async fn poll(node: &TestNode, cursor: &str, timeout: u64) -> (Value, String) {
    let path = format!(
        "/poll?channel=chat:p&timeout={timeout}&cursor={}",
        urlencode(cursor)
    );
    let (status, body) = request(node.addr, "GET", &path, &[], b"").await;
    assert_eq!(status, 200, "{body}");
    let cursor = body["cursor"].as_str().unwrap().to_string();
    (body["events"].clone(), cursor)
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_loses_and_repeats_nothing_across_a_thousand_polls() {
    let node = TestNode::start_with(generous).await;
    let (events, mut cursor) = poll(&node, "", 0).await;
    assert_eq!(events, json!([]));
    let mut publisher = node.json().await;
    let stop = tokio_util::sync::CancellationToken::new();
    // Steady publishing, in the background, until the 1,000th poll.
    let mut publishing = Some(tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                publisher.publish("chat:p", json!(n)).await;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            n
        }
    }));
    let mut seen = Vec::new();
    let mut polls = 0;
    let mut total = None;
    while total.is_none_or(|t| seen.len() < t as usize) {
        let (events, next) = poll(&node, &cursor, 5).await;
        cursor = next;
        polls += 1;
        for e in events.as_array().unwrap() {
            assert_eq!(e["op"], "message", "{e}");
            seen.push(e["data"].as_u64().unwrap());
        }
        if polls == 1_000 {
            stop.cancel();
            total = Some(publishing.take().unwrap().await.unwrap());
        }
        assert!(polls < 20_000, "stuck at {}", seen.len());
    }
    let total = total.unwrap();
    assert!(total > 100, "{total} published");
    assert_eq!(seen, (1..=total).collect::<Vec<_>>(), "in order, once each");
    node.stop().await;
}

#[tokio::test]
async fn a_held_poll_answers_when_a_message_arrives() {
    let node = TestNode::start_with(generous).await;
    let (_, cursor) = poll(&node, "", 0).await;
    let addr = node.addr;
    let held = tokio::spawn(async move {
        let path = format!(
            "/poll?channel=chat:p&timeout=30&cursor={}",
            urlencode(&cursor)
        );
        request(addr, "GET", &path, &[], b"").await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    node.json().await.publish("chat:p", json!("wake")).await;
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["events"][0]["data"], "wake");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let n = std::sync::Arc::clone(&node.node);
    crate::support::eventually(move || n.connection_count() == 0).await;
    assert_eq!(
        node.node.addresses.count("127.0.0.1".parse().unwrap()),
        0,
        "slot given back"
    );
    node.stop().await;
}

#[tokio::test]
async fn rpc_refuses_what_it_cannot_do() {
    let node = TestNode::start().await;
    let (status, body) = request(node.addr, "POST", "/rpc", &[], b"{not json").await;
    assert_eq!((status, body["code"].clone()), (400, json!("bad_request")));
    let sub = json!({"id": 1, "op": "subscribe", "channel": "chat:x"});
    assert_eq!(post_json(node.addr, "/rpc", &[], &sub).await.0, 400);
    let mut codes = Vec::new();
    for id in 0..60 {
        let msg = json!({"id": id, "op": "publish", "channel": "chat:r", "data": id});
        codes.push(post_json(node.addr, "/rpc", &[], &msg).await.0);
    }
    assert!(
        codes.contains(&429),
        "per-address publish budget: {codes:?}"
    );
    let (status, _) = request(node.addr, "GET", "/rpc", &[], b"").await;
    assert_eq!(status, 405);
    node.stop().await;
}

#[tokio::test]
async fn the_api_publishes_broadcasts_and_reads_with_its_key() {
    let node = TestNode::start_with(generous).await;
    let mut ws = node.json().await;
    ws.subscribe("chat:api").await;
    let body = json!({"channel": "chat:api", "data": {"n": 1}});
    let (status, reply) = post_json(node.addr, "/api/publish", &[KEY], &body).await;
    assert_eq!(
        (status, reply["offset"].clone()),
        (200, json!(1)),
        "{reply}"
    );
    assert_eq!(ws.next_message().await["data"], json!({"n": 1}));
    let body = json!({"channels": ["chat:api", "chat:other", "live"], "data": 2});
    let (status, reply) = post_json(node.addr, "/api/broadcast", &[KEY], &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"].as_array().unwrap().len(), 3);
    let (status, history) = request(
        node.addr,
        "GET",
        "/api/history/chat:api?limit=10",
        &[KEY],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);
    let (status, presence) = request(node.addr, "GET", "/api/presence/chat:api", &[KEY], b"").await;
    assert_eq!(status, 200, "{presence}");
    node.stop().await;
}

#[tokio::test]
async fn the_api_refuses_bad_requests_with_codes() {
    let node = TestNode::start_with(generous).await;
    let ok = json!({"channel": "chat:x", "data": 1});
    assert_eq!(post_json(node.addr, "/api/publish", &[], &ok).await.0, 401);
    let wrong = ("Authorization", "Bearer not-the-key-at-all");
    assert_eq!(
        post_json(node.addr, "/api/publish", &[wrong], &ok).await.0,
        401
    );
    let (status, body) = request(node.addr, "POST", "/api/publish", &[KEY], b"{").await;
    assert_eq!((status, body["code"].clone()), (400, json!("bad_request")));
    let bad = json!({"channel": "no such:x", "data": 1});
    let (status, body) = post_json(node.addr, "/api/publish", &[KEY], &bad).await;
    assert_eq!((status, body["code"].clone()), (400, json!("bad_channel")));
    let unknown = json!({"channel": "nosuch:x", "data": 1});
    let (status, body) = post_json(node.addr, "/api/publish", &[KEY], &unknown).await;
    assert_eq!((status, body["code"].clone()), (404, json!("bad_channel")));
    let big = json!({"channel": "chat:x", "data": "x".repeat(200_000)});
    assert_eq!(
        post_json(node.addr, "/api/publish", &[KEY], &big).await.0,
        413
    );
    let (status, _) = request(node.addr, "GET", "/api/publish", &[KEY], b"").await;
    assert_eq!(status, 405);
    node.stop().await;
    let off = TestNode::start().await;
    assert_eq!(
        post_json(off.addr, "/api/publish", &[KEY], &ok).await.0,
        404
    );
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_counted_and_users_disconnected_cluster_wide() {
    let Some(redis) = crate::redis_support::redis().await else {
        return;
    };
    let with_auth = |id: &'static str| {
        let url = redis.url();
        move |s: &mut roomcast::settings::Settings| {
            generous(s);
            s.bus = roomcast::settings::BusKind::Redis;
            s.redis_url = url;
            s.node_id = id.into();
            s.auth.hmac_secret = Some(crate::auth::SECRET.into());
            s.namespaces.get_mut("chat").unwrap().anonymous = true;
        }
    };
    let a = TestNode::start_with(with_auth("dir-a")).await;
    let b = TestNode::start_with(with_auth("dir-b")).await;
    crate::cluster::ready(&a).await;
    crate::cluster::ready(&b).await;
    let token = crate::auth::token(json!({"sub": "alice", "exp": 4_000_000_000u64}));
    let bearer = format!("roomcast.v1.json, roomcast.bearer.{token}");
    let (mut alice_ws, _) = crate::support::Client::open(&a.url("/ws"), Some(&bearer), &[])
        .await
        .unwrap();
    alice_ws.subscribe("chat:x").await;
    let path = format!("/sse?channel=chat:x&channel=chat:y&token={token}");
    let mut alice_sse = Sse::open(b.addr, &path, &[]).await;
    assert_eq!(alice_sse.next().await.event, "welcome");
    let mut bob = b.json().await;
    bob.subscribe("chat:y").await;
    let expected = json!({"channels": [
        {"channel": "chat:x", "subscribers": 2},
        {"channel": "chat:y", "subscribers": 2},
    ]});
    let mut listed = json!(null);
    for _ in 0..50 {
        listed = request(a.addr, "GET", "/api/channels", &[KEY], b"").await.1;
        if listed == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(listed, expected);
    let (status, _) = post_json(b.addr, "/api/disconnect", &[KEY], &json!({"user": "alice"})).await;
    assert_eq!(status, 200);
    assert_eq!(alice_ws.closed().await, crate::support::Closed::Code(4004));
    let last = alice_sse.next().await;
    assert_eq!(
        (last.event.as_str(), last.data["code"].clone()),
        ("close", json!(4004))
    );
    assert_eq!(
        bob.request(json!({"op": "ping"})).await["op"],
        "ok",
        "others stay"
    );
    a.stop().await;
    b.stop().await;
}
