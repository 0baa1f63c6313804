//! Native TLS: `wss://` end to end with a real rustls client, and a certificate swapped on
//! disk and reloaded while connections stay up.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use roomcast::settings::Settings;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::TestNode;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn connector() -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A `wss://` client past its `welcome`, and the certificate the node showed it.
async fn wss(node: &TestNode) -> (Wss, Vec<u8>) {
    let tcp = TcpStream::connect(node.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector().connect(name, tcp).await.expect("TLS handshake");
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let url = format!("wss://localhost:{}/ws", node.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(next(&mut ws).await["op"], "welcome");
    (ws, cert)
}

async fn next(ws: &mut Wss) -> Value {
    loop {
        let msg = tokio::time::timeout(crate::support::TIMEOUT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn send(ws: &mut Wss, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

fn pem_der(name: &str) -> Vec<u8> {
    CertificateDer::from_pem_file(fixture(name))
        .unwrap()
        .to_vec()
}

fn with_tls(dir: &std::path::Path) -> impl FnOnce(&mut Settings) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    move |s| {
        s.tls.cert_file = Some(cert);
        s.tls.key_file = Some(key);
    }
}

#[tokio::test]
async fn wss_works_and_a_new_certificate_is_served_without_dropping_anyone() {
    let dir = std::env::temp_dir().join(format!("roomcast-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("server-a.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(fixture("server-a-key.pem"), dir.join("key.pem")).unwrap();
    let node = TestNode::start_with(with_tls(&dir)).await;

    let (mut first, cert) = wss(&node).await;
    assert_eq!(cert, pem_der("server-a.pem"));
    send(
        &mut first,
        json!({"id": 1, "op": "subscribe", "channel": "chat:tls"}),
    )
    .await;
    assert_eq!(next(&mut first).await["op"], "ok");

    // A broken pair on disk is refused and the served certificate stays.
    std::fs::copy(fixture("server-b.pem"), dir.join("cert.pem")).unwrap();
    node.node.reload.send_modify(|n| *n += 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        wss(&node).await.1,
        pem_der("server-a.pem"),
        "mismatched key kept a"
    );

    std::fs::copy(fixture("server-b-key.pem"), dir.join("key.pem")).unwrap();
    node.node.reload.send_modify(|n| *n += 1);
    let mut second = None;
    for _ in 0..50 {
        let (ws, cert) = wss(&node).await;
        if cert == pem_der("server-b.pem") {
            second = Some(ws);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut second = second.expect("the new certificate is served");
    // The connection made before the reload is still up and hears the new one.
    send(
        &mut second,
        json!({"id": 1, "op": "publish", "channel": "chat:tls", "data": "hi"}),
    )
    .await;
    let got = loop {
        let m = next(&mut first).await;
        if m["op"] == "message" {
            break m;
        }
    };
    assert_eq!(got["data"], "hi");
    assert_eq!(node.node.connection_count(), 2);
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn plain_http_to_a_tls_port_is_turned_away_and_the_node_serves_on() {
    let dir = std::env::temp_dir().join(format!("roomcast-tls-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("server-a.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(fixture("server-a-key.pem"), dir.join("key.pem")).unwrap();
    let node = TestNode::start_with(with_tls(&dir)).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = TcpStream::connect(node.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(crate::support::TIMEOUT, plain.read_to_end(&mut reply)).await;
    assert!(!reply.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");
    assert_eq!(node.node.metrics.tls_failures.get(), 1);
    let (mut ws, _) = wss(&node).await;
    send(&mut ws, json!({"id": 7, "op": "ping"})).await;
    assert_eq!(next(&mut ws).await["id"], 7);
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
