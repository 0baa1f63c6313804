//! Connection and channel auth end to end: tokens in the handshake and in `connect`, each
//! refusal's code, expiry with its push and close, `refresh`, namespace policy, grants,
//! private channels, token presence info and key rotation.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use roomcast::settings::{NamespacePolicy, Settings};
use serde_json::{Value, json};

use crate::support::{Client, Closed, TestNode};

pub const SECRET: &str = "integration-test-secret-32-bytes-long";

fn now() -> u64 {
    roomcast::clock::unix_millis() / 1000
}

pub fn token(claims: Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn user(name: &str) -> Value {
    json!({"sub": name, "exp": now() + 600})
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

/// Auth on; `chat` for authenticated users only, `public` open to anonymous readers,
/// `news` read-only, `secret` private with history and presence.
fn secured(s: &mut Settings) {
    s.auth.hmac_secret = Some(SECRET.into());
    s.auth.connect_timeout_ms = 60_000;
    let public = NamespacePolicy {
        anonymous: true,
        ..NamespacePolicy::default()
    };
    let secret = NamespacePolicy {
        private: true,
        ..NamespacePolicy::chat()
    };
    s.namespaces.insert("public".into(), public);
    s.namespaces
        .insert("news".into(), NamespacePolicy::default());
    s.namespaces.insert("secret".into(), secret);
}

async fn bearer(node: &TestNode, token: &str) -> (Client, Value) {
    let protocols = format!("roomcast.v1.json, roomcast.bearer.{token}");
    Client::open(&node.url("/ws"), Some(&protocols), &[])
        .await
        .unwrap()
}

#[tokio::test]
async fn a_handshake_token_authenticates_the_connection() {
    let node = TestNode::start_with(secured).await;
    let (mut alice, welcome) = bearer(&node, &token(user("alice"))).await;
    assert_eq!(welcome["op"], "welcome");
    assert_eq!(welcome["user"], "alice");
    assert!(welcome["expires"].as_u64().unwrap() > now());
    alice.subscribe("chat:lobby").await;
    // The Authorization header works too, for clients that can set one.
    let auth = format!("Bearer {}", token(user("bob")));
    let (_, welcome) = Client::open(&node.url("/ws"), None, &[("Authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(welcome["user"], "bob");
    node.stop().await;
}

#[tokio::test]
async fn each_refused_handshake_token_gets_its_code_then_close_4002() {
    let node = TestNode::start_with(|s| {
        secured(s);
        s.auth.audience = Some("roomcast".into());
        s.auth.issuer = Some("https://backend.example".into());
    })
    .await;
    let good = json!({"sub": "a", "exp": now() + 600, "aud": "roomcast", "iss": "https://backend.example"});
    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let none = {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&good))
    };
    let wrong_key = {
        let key = EncodingKey::from_secret(b"some-other-secret-some-other-secret!!");
        encode(&Header::new(Algorithm::HS256), &good, &key).unwrap()
    };
    let cases = [
        (none, "token_algorithm"),
        (wrong_key, "token_signature"),
        (token(with("aud", json!("elsewhere"))), "token_audience"),
        (
            token(with("iss", json!("https://evil.example"))),
            "token_issuer",
        ),
        (token(with("exp", json!(now() - 120))), "token_expired"),
        (
            token(with("nbf", json!(now() + 600))),
            "token_not_yet_valid",
        ),
        ("garbage".to_string(), "token_malformed"),
    ];
    for (token, code) in cases {
        let (mut client, first) = bearer(&node, &token).await;
        assert_eq!(first["op"], "error", "{code}: {first}");
        assert_eq!(first["code"], code, "{first}");
        assert_eq!(client.closed().await, Closed::Code(4002), "{code}");
    }
    let (mut ok, welcome) = bearer(&node, &token(good.clone())).await;
    assert_eq!(welcome["user"], "a");
    ok.subscribe("chat:x").await;
    let (_, metrics) = node.get("/metrics").await;
    assert!(metrics.contains("code=\"token_signature\"} 1"), "{metrics}");
    node.stop().await;
}

#[tokio::test]
async fn anonymous_clients_get_what_the_namespace_admits_and_connect_upgrades_them() {
    let node = TestNode::start_with(secured).await;
    let mut c = node.json().await;
    let reply = c
        .request(json!({"op": "subscribe", "channel": "chat:lobby"}))
        .await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    c.subscribe("public:feed").await;
    let reply = c.publish("public:feed", json!(1)).await;
    assert_eq!(
        reply["code"], "forbidden",
        "new namespaces deny client publish: {reply}"
    );
    let reply = c
        .request(json!({"op": "connect", "token": token(user("carol"))}))
        .await;
    assert_eq!(reply["op"], "ok", "{reply}");
    assert_eq!(reply["user"], "carol");
    c.subscribe("chat:lobby").await;
    let again = c
        .request(json!({"op": "connect", "token": token(user("dave"))}))
        .await;
    assert_eq!(again["code"], "bad_request", "{again}");
    let bad = node
        .json()
        .await
        .request(json!({"op": "connect", "token": "x.y.z"}))
        .await;
    assert_eq!(bad["code"], "token_malformed", "{bad}");
    node.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_authenticates_is_closed_4002() {
    let node = TestNode::start_with(|s| {
        s.auth.hmac_secret = Some(SECRET.into());
        s.auth.connect_timeout_ms = 300;
    })
    .await;
    let mut c = node.json().await;
    assert_eq!(c.closed().await, Closed::Code(4002));
    // One that authenticates in time stays.
    let mut d = node.json().await;
    let reply = d
        .request(json!({"op": "connect", "token": token(user("d"))}))
        .await;
    assert_eq!(reply["op"], "ok");
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.subscribe("chat:x").await;
    node.stop().await;
}

#[tokio::test]
async fn an_expiring_token_is_announced_then_closes_4003_unless_refreshed() {
    let node = TestNode::start_with(|s| {
        secured(s);
        s.auth.expiry_warning_s = 2;
        s.auth.leeway_s = 0;
    })
    .await;
    let short = |name: &str| token(json!({"sub": name, "exp": now() + 3}));
    let (mut lapsing, _) = bearer(&node, &short("erin")).await;
    let (mut refreshing, _) = bearer(&node, &short("frank")).await;
    let push = refreshing.recv().await;
    assert_eq!(push["op"], "expiring", "{push}");
    let other = refreshing
        .request(json!({"op": "refresh", "token": token(user("mallory"))}))
        .await;
    assert_eq!(other["code"], "token_mismatch", "{other}");
    let fresh = refreshing
        .request(json!({"op": "refresh", "token": token(user("frank"))}))
        .await;
    assert_eq!(fresh["op"], "ok", "{fresh}");
    assert_eq!(lapsing.recv().await["op"], "expiring");
    assert_eq!(lapsing.closed().await, Closed::Code(4003));
    refreshing.subscribe("chat:still-here").await;
    node.stop().await;
}

#[tokio::test]
async fn token_grants_widen_the_namespace_policy() {
    let node = TestNode::start_with(secured).await;
    let editor = json!({"sub": "ed", "exp": now() + 600, "channels": {"publish": ["news:*"]}});
    let (mut ed, _) = bearer(&node, &token(editor)).await;
    let (mut reader, _) = bearer(&node, &token(user("rita"))).await;
    reader.subscribe("news:today").await;
    let reply = reader.publish("news:today", json!("nope")).await;
    assert_eq!(reply["code"], "forbidden");
    assert_eq!(
        ed.publish("news:today", json!("headline")).await["op"],
        "ok"
    );
    assert_eq!(reader.next_message().await["data"], "headline");
    node.stop().await;
}

#[tokio::test]
async fn namespace_toggles_deny_each_client_op() {
    let node = TestNode::start_with(|s| {
        let closed = NamespacePolicy {
            subscribe: false,
            read_history: false,
            read_presence: false,
            ..NamespacePolicy::chat()
        };
        s.namespaces.insert("backend".into(), closed);
    })
    .await;
    let mut c = node.json().await;
    for op in ["subscribe", "history", "presence", "presence_count"] {
        let reply = c.request(json!({"op": op, "channel": "backend:x"})).await;
        assert_eq!(reply["code"], "forbidden", "{op}: {reply}");
    }
    assert_eq!(c.publish("backend:x", json!(1)).await["op"], "ok");
    node.stop().await;
}

#[tokio::test]
async fn private_channels_need_a_channel_token_for_this_user_and_channel() {
    let node = TestNode::start_with(secured).await;
    let (mut alice, _) = bearer(&node, &token(user("alice"))).await;
    let sub = |token: Option<String>| json!({"op": "subscribe", "channel": "secret:plans", "token": token});
    assert_eq!(alice.request(sub(None)).await["code"], "unauthorized");
    let for_bob = token(json!({"sub": "bob", "channel": "secret:plans", "exp": now() + 60}));
    assert_eq!(
        alice.request(sub(Some(for_bob))).await["code"],
        "token_mismatch"
    );
    let other_room = token(json!({"sub": "alice", "channel": "secret:other", "exp": now() + 60}));
    assert_eq!(
        alice.request(sub(Some(other_room))).await["code"],
        "token_mismatch"
    );
    let history = json!({"op": "history", "channel": "secret:plans"});
    assert_eq!(alice.request(history.clone()).await["code"], "unauthorized");
    let right = token(json!({"sub": "alice", "channel": "secret:plans", "exp": now() + 60}));
    assert_eq!(alice.request(sub(Some(right))).await["op"], "ok");
    assert_eq!(alice.request(history).await["op"], "ok");
    node.stop().await;
}

#[tokio::test]
async fn presence_shows_the_tokens_info_not_the_clients_claim() {
    let node = TestNode::start_with(secured).await;
    let claims = json!({"sub": "gail", "exp": now() + 600, "info": {"name": "Gail"}});
    let (mut gail, _) = bearer(&node, &token(claims)).await;
    let reply = gail
        .request(json!({"op": "subscribe", "channel": "chat:room", "info": {"name": "Admin"}}))
        .await;
    assert_eq!(reply["op"], "ok");
    let members = gail
        .request(json!({"op": "presence", "channel": "chat:room"}))
        .await;
    assert_eq!(
        members["clients"][0]["info"],
        json!({"name": "Gail"}),
        "{members}"
    );
    node.stop().await;
}

#[tokio::test]
async fn query_tokens_only_when_enabled_and_a_lone_bearer_protocol_is_refused() {
    let node = TestNode::start_with(secured).await;
    let url = format!("{}?token={}", node.url("/ws"), token(user("q")));
    let (_, welcome) = Client::open(&url, None, &[]).await.unwrap();
    assert!(
        welcome.get("user").is_none(),
        "query tokens are off by default: {welcome}"
    );
    node.stop().await;
    let node = TestNode::start_with(|s| {
        secured(s);
        s.auth.query_param = true;
    })
    .await;
    let url = format!("{}?token={}", node.url("/ws"), token(user("q")));
    let (_, welcome) = Client::open(&url, None, &[]).await.unwrap();
    assert_eq!(welcome["user"], "q");
    let lone = format!("roomcast.bearer.{}", token(user("q")));
    let refused = Client::open(&node.url("/ws"), Some(&lone), &[]).await.err();
    match refused {
        Some(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected 400, got {other:?}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn a_rotated_jwks_file_is_picked_up_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("roomcast-jwks-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
    let node = TestNode::start_with(|s| s.auth.jwks_file = Some(jwks.clone())).await;
    let pem = std::fs::read(fixture("rsa2-private.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-2".into());
    let rotated = encode(
        &header,
        &user("rot"),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    let (_, first) = bearer(&node, &rotated).await;
    assert_eq!(first["code"], "token_signature", "{first}");
    std::fs::copy(fixture("jwks-rotated.json"), &jwks).unwrap();
    // SIGHUP does what the file watcher does, at once.
    node.node.reload.send_modify(|n| *n += 1);
    let mut accepted = false;
    for _ in 0..50 {
        let (_, first) = bearer(&node, &rotated).await;
        if first["user"] == "rot" {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the rotated key was never accepted");
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
