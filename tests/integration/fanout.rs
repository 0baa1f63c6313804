//! Fan-out at scale within one test: many subscribers, every message, in order.

use serde_json::json;

use crate::support::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_subscribers_get_every_message_in_order() {
    const SUBSCRIBERS: usize = 1000;
    const MESSAGES: u64 = 100;
    let node = TestNode::start_with(|s| {
        s.limits.publish_rate = 1e6;
        s.limits.publish_burst = 1e6;
        // Every client comes from 127.0.0.1.
        s.limits.max_connections_per_ip = 0;
    })
    .await;
    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let mut c = node.json().await;
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            c.subscribe("chat:big").await;
            ready.send(()).await.unwrap();
            let mut next = 0;
            while next < MESSAGES {
                let msg = c.recv().await;
                assert_eq!(msg["op"], "message");
                assert_eq!(msg["data"]["seq"], next, "in order, none missing");
                next += 1;
            }
        }));
    }
    for _ in 0..SUBSCRIBERS {
        ready_rx.recv().await.unwrap();
    }
    let mut publisher = node.json().await;
    for seq in 0..MESSAGES {
        let reply = publisher.publish("chat:big", json!({"seq": seq})).await;
        assert_eq!(reply["op"], "ok");
    }
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(
        node.node.metrics.messages_delivered.get(),
        SUBSCRIBERS as u64 * MESSAGES
    );
    node.stop().await;
}
