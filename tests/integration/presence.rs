//! Presence across nodes: who is in a room, cluster-wide; join and leave reach each
//! watching subscriber once; listings paginate and counts stay cheap at 10,000 members.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{node_on, ready, three_nodes};
use crate::redis_support::redis;
use crate::support::{Client, TestNode};

async fn join(c: &mut Client, channel: &str, user: &str, watch: bool) -> Value {
    c.request(
        json!({"op": "subscribe", "channel": channel, "info": {"user": user}, "join_leave": watch}),
    )
    .await
}

/// Every `join`/`leave` push a client got until a ping's reply: (op, user or client).
async fn presence_pushes(c: &mut Client) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    c.send(json!({"id": 999, "op": "ping"})).await;
    loop {
        let m = c.recv().await;
        match m["op"].as_str() {
            Some("ok") if m["id"] == 999 => return seen,
            Some("join") => seen.push(("join".into(), m["info"]["user"].as_str().unwrap().into())),
            Some("leave") => seen.push(("leave".into(), m["client"].as_str().unwrap().into())),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_reach_each_watcher_once_across_three_nodes() {
    let Some(redis) = redis().await else { return };
    let nodes = three_nodes(&redis.url()).await;
    let mut watchers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut w = n.json().await;
        assert_eq!(
            join(&mut w, "chat:p", &format!("w{i}"), true).await["op"],
            "ok"
        );
        watchers.push(w);
    }
    // Each watcher hears its own join and those of the watchers after it, through Redis.
    for (i, w) in watchers.iter_mut().enumerate() {
        let mut seen = Vec::new();
        while seen.len() < 3 - i {
            seen.extend(presence_pushes(w).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let expected: Vec<(String, String)> =
            (i..3).map(|j| ("join".into(), format!("w{j}"))).collect();
        assert_eq!(seen, expected);
    }
    // A client that does not watch joins through node A, and then goes away.
    let mut x = nodes[0].json().await;
    join(&mut x, "chat:p", "x", false).await;
    let id = x
        .request(json!({"op": "presence", "channel": "chat:p"}))
        .await;
    let clients: Vec<Value> = id["clients"].as_array().unwrap().clone();
    assert_eq!(clients.len(), 4, "{id}");
    let x_client = clients
        .iter()
        .find(|c| c["info"]["user"] == "x")
        .map(|c| c["client"].as_str().unwrap().to_string())
        .unwrap();
    for w in &mut watchers {
        assert_eq!(
            presence_pushes(w).await,
            [("join".to_string(), "x".to_string())]
        );
    }
    assert_eq!(
        x.request(json!({"op": "presence_count", "channel": "chat:p"}))
            .await["count"],
        4
    );
    drop(x);
    for w in &mut watchers {
        let mut seen = presence_pushes(w).await;
        while seen.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen = presence_pushes(w).await;
        }
        assert_eq!(
            seen,
            [("leave".to_string(), x_client.clone())],
            "once per watcher"
        );
    }
    let count = watchers[1]
        .request(json!({"op": "presence_count", "channel": "chat:p"}))
        .await;
    assert_eq!(count["count"], 3, "{count}");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_members_count_cheaply_and_list_in_pages() {
    let Some(redis) = redis().await else { return };
    let node = node_on(&redis.url(), "big").await;
    ready(&node).await;
    let mut conn = redis.client().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("FCALL")
            .arg("roomcast_presence_join")
            .arg(1)
            .arg("rc:chat:big")
            .arg(600_000)
            .arg(format!("client-{i}"))
            .arg(format!(r#"{{"user":"u{i}"}}"#))
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let mut c = node.json().await;
    let started = Instant::now();
    for _ in 0..100 {
        let reply = c
            .request(json!({"op": "presence_count", "channel": "chat:big"}))
            .await;
        assert_eq!(reply["count"], 10_000);
    }
    eprintln!(
        "presence_count of 10,000 members: {:?} per request, round trip included",
        started.elapsed() / 100
    );
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = json!({"op": "presence", "channel": "chat:big", "limit": 1000});
        if let Some(cur) = &cursor {
            req["cursor"] = json!(cur);
        }
        let reply = c.request(req).await;
        for member in reply["clients"].as_array().unwrap() {
            seen.insert(member["client"].as_str().unwrap().to_string());
        }
        pages += 1;
        match reply["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10_000);
    assert!(pages >= 10, "{pages} pages of at most 1,000");
    node.stop().await;
}

#[tokio::test]
async fn presence_on_a_single_node_and_where_it_is_off() {
    let node = TestNode::start().await;
    let mut a = node.json().await;
    join(&mut a, "chat:solo", "ann", true).await;
    let mut b = node.msgpack().await;
    join(&mut b, "chat:solo", "bob", false).await;
    let pushes = presence_pushes(&mut a).await;
    assert_eq!(
        pushes,
        [("join".into(), "ann".into()), ("join".into(), "bob".into())]
    );
    let page = b
        .request(json!({"op": "presence", "channel": "chat:solo"}))
        .await;
    let users: HashSet<&str> = page["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["info"]["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, HashSet::from(["ann", "bob"]));
    assert!(page.get("cursor").is_none(), "one page: {page}");
    b.request(json!({"op": "unsubscribe", "channel": "chat:solo"}))
        .await;
    assert_eq!(presence_pushes(&mut a).await.len(), 1, "bob left");
    let off = a
        .request(json!({"op": "presence", "channel": "announcements"}))
        .await;
    assert_eq!(off["code"], "forbidden");
    let big = json!({"op": "subscribe", "channel": "chat:x", "info": "x".repeat(2000)});
    assert_eq!(a.request(big).await["code"], "too_large");
    node.stop().await;
}
