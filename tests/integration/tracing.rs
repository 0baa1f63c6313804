//! OpenTelemetry: a message's trace follows it from the backend's envelope through every
//! node that fans it out. Nodes run as real processes exporting OTLP/HTTP to a receiver
//! started here, which decodes the protobuf export requests.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

use crate::redis_support::{free_port, redis};
use crate::support::{Client, http_get};

/// (trace id hex, span name, node id, attributes) of every span received.
type Spans = Arc<Mutex<Vec<(String, String, String, HashMap<String, String>)>>>;
/// Names of the metrics received.
type MetricNames = Arc<Mutex<Vec<String>>>;

async fn otlp_receiver() -> (u16, Spans, MetricNames) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let spans: Spans = Arc::default();
    let metric_names: MetricNames = Arc::default();
    let (store, names) = (Arc::clone(&spans), Arc::clone(&metric_names));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (store, names) = (Arc::clone(&store), Arc::clone(&names));
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (store, names) = (Arc::clone(&store), Arc::clone(&names));
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            if path == "/v1/metrics" {
                                if let Ok(export) = ExportMetricsServiceRequest::decode(body) {
                                    let mut names = names.lock().unwrap();
                                    for rm in export.resource_metrics {
                                        for sm in rm.scope_metrics {
                                            names.extend(sm.metrics.into_iter().map(|m| m.name));
                                        }
                                    }
                                }
                            } else if let Ok(export) = ExportTraceServiceRequest::decode(body) {
                                record(&store, export);
                            }
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, spans, metric_names)
}

fn record(store: &Spans, export: ExportTraceServiceRequest) {
    let value = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    };
    let mut out = store.lock().unwrap();
    for rs in export.resource_spans {
        let node = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.instance.id")
            .map(|a| value(&a.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                let attrs = span
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), value(&a.value)))
                    .collect();
                out.push((trace, span.name.clone(), node.clone(), attrs));
            }
        }
    }
}

struct NodeProcess {
    child: Child,
    port: u16,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_node(id: &str, redis_url: &str, otlp_port: u16) -> NodeProcess {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-id",
            id,
            "--bus",
            "redis",
        ])
        .args(["--redis-url", redis_url, "--set", "otel.sample_ratio=1"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("roomcast starts");
    // Owned by the returned NodeProcess, whose Drop kills and waits for it.
    let node = NodeProcess { child, port };
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && http_get(addr, "/readyz", &[]).await.0 == 200
        {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node {id} did not become ready");
}

async fn spans_of(
    spans: &Spans,
    trace: &str,
    name: &str,
    want: usize,
) -> Vec<(String, HashMap<String, String>)> {
    for _ in 0..200 {
        let found: Vec<_> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, n, _, _)| t == trace && n == name)
            .map(|(_, _, node, attrs)| (node.clone(), attrs.clone()))
            .collect();
        if found.len() >= want {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {want} {name} spans of trace {trace}: {:?}",
        spans.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_trace_continues_through_every_node() {
    let Some(redis) = redis().await else { return };
    let (otlp, spans, metric_names) = otlp_receiver().await;
    let a = start_node("otel-a", &redis.url(), otlp).await;
    let b = start_node("otel-b", &redis.url(), otlp).await;
    let mut sa = Client::connect(&format!("ws://127.0.0.1:{}/ws", a.port), None).await;
    let mut sb = Client::connect(&format!("ws://127.0.0.1:{}/ws", b.port), None).await;
    sa.subscribe("chat:otel").await;
    sb.subscribe("chat:otel").await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let envelope =
        json!({"data": "traced", "traceparent": format!("00-{trace}-00f067aa0ba902b7-01")});
    redis
        .publish("roomcast:chat:otel", envelope.to_string().as_bytes())
        .await;
    assert_eq!(sa.next_message().await["data"], "traced");
    assert_eq!(sb.next_message().await["data"], "traced");
    let fanouts = spans_of(&spans, trace, "roomcast.fanout", 2).await;
    let mut nodes: Vec<&str> = fanouts.iter().map(|(n, _)| n.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["otel-a", "otel-b"]);
    for (_, attrs) in &fanouts {
        assert_eq!(attrs["channel"], "chat:otel");
        assert_eq!(attrs["subscribers"], "1");
    }

    // A client's publish starts a trace (sample_ratio = 1 here) that crosses nodes too.
    let mut publisher = Client::connect(&format!("ws://127.0.0.1:{}/ws", a.port), None).await;
    assert_eq!(
        publisher.publish("chat:otel", json!("from a client")).await["op"],
        "ok"
    );
    assert_eq!(sb.next_message().await["data"], "from a client");
    let publish_trace = {
        let mut found = None;
        for _ in 0..200 {
            found = spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.1 == "roomcast.publish")
                .map(|s| s.0.clone());
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.expect("a publish span")
    };
    let fanouts = spans_of(&spans, &publish_trace, "roomcast.fanout", 2).await;
    assert!(
        fanouts.iter().any(|(n, _)| n == "otel-b"),
        "node B's fan-out joins node A's trace"
    );

    // Metrics go out over OTLP too, read from the same counters as /metrics.
    for _ in 0..200 {
        let names = metric_names.lock().unwrap().clone();
        if [
            "roomcast_messages_delivered_total",
            "roomcast_connections",
            "roomcast_bus_connected",
        ]
        .iter()
        .all(|n| names.iter().any(|m| m == n))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metrics not exported: {:?}", metric_names.lock().unwrap());
}
