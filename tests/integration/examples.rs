//! Replays `proto/examples.json`, the protocol's example exchanges, over both codecs, each
//! against a node of its own.

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestNode};

fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == "$any" => true,
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| matches(e, a))
        }
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        _ => expected == actual,
    }
}

#[tokio::test]
async fn replay_protocol_examples() {
    let file: Value = serde_json::from_str(include_str!("../../proto/examples.json"))
        .expect("examples.json parses");
    let examples = file["examples"].as_array().unwrap();
    assert!(examples.len() >= 10);
    for example in examples {
        let name = example["name"].as_str().unwrap();
        let codecs: Vec<&str> = match example.get("codecs") {
            Some(list) => list
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect(),
            None => vec!["json", "msgpack"],
        };
        for codec in codecs {
            // A node of its own per example and codec: offsets start at 1 in each.
            let node = TestNode::start().await;
            let protocol = format!("roomcast.v1.{codec}");
            let count = example.get("clients").and_then(Value::as_u64).unwrap_or(1);
            let mut clients = Vec::new();
            for _ in 0..count {
                clients.push(Client::connect(&node.url("/ws"), Some(&protocol)).await);
            }
            for step in example["steps"].as_array().unwrap() {
                let c =
                    &mut clients[step.get("client").and_then(Value::as_u64).unwrap_or(0) as usize];
                if let Some(msg) = step.get("send") {
                    c.send(msg.clone()).await;
                } else if let Some(text) = step.get("send_text") {
                    c.send_raw(Message::Text(text.as_str().unwrap().into()))
                        .await;
                } else if let Some(expected) = step.get("expect") {
                    let actual = c.recv().await;
                    assert!(
                        matches(expected, &actual),
                        "{name} ({codec}): expected {expected}, got {actual}"
                    );
                } else if let Some(expected) = step.get("expect_any_order") {
                    let mut left: Vec<Value> = expected.as_array().unwrap().clone();
                    while !left.is_empty() {
                        let actual = c.recv().await;
                        let at = left.iter().position(|e| matches(e, &actual));
                        let at = at.unwrap_or_else(|| {
                            panic!(
                                "{name} ({codec}): unexpected {actual}, expected one of {left:?}"
                            )
                        });
                        left.remove(at);
                    }
                } else {
                    panic!("{name}: unknown step {step}");
                }
            }
            node.stop().await;
        }
    }
}
