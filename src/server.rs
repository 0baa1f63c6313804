//! The HTTP front door: one port for `/ws`, `/echo`, the demo page, the browser client,
//! health and metrics. Accepts connections until shutdown, then drains the node. Routes
//! only: upgrades are the transport's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use subtle::ConstantTimeEq;

use crate::node::Node;
use crate::transport::head::{self, First};
use crate::transport::http::{Reply, full, text};
use crate::transport::socket::{IntoSocket, Prefixed};
use crate::transport::upgrade;

const INDEX_HTML: &str = include_str!("assets/index.html");
const ROOMCAST_JS: &str = include_str!("assets/roomcast.js");

/// Serves until `node.shutdown` is cancelled, then stops accepting and drains the node.
/// Takes a bound listener so that tests can use port 0.
pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    tracing::info!(addr = ?listener.local_addr().ok(), node = %node.id, "listening");
    // Cancelled once the listener is gone: idle keep-alive HTTP connections then end.
    let http_closing = CancellationToken::new();
    let accept = |accepted: std::io::Result<(TcpStream, SocketAddr)>| {
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let task = serve_stream(stream, peer, Arc::clone(&node), http_closing.clone());
                node.tasks.spawn(task);
            }
            Err(error) => {
                // Typically EMFILE (out of file descriptors): log it, and the caller backs off.
                tracing::warn!(%error, "accept failed");
                return false;
            }
        }
        true
    };
    loop {
        let accepted = tokio::select! {
            () = node.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        if !accept(accepted) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Drain: readiness turns 503 at once, but the port stays open during the window so
    // that load balancers see it and new WebSocket upgrades are told 503, not refused.
    node.begin_drain();
    let closing = node.close_clients();
    tokio::pin!(closing);
    loop {
        let accepted = tokio::select! {
            () = &mut closing => break,
            accepted = listener.accept() => accepted,
        };
        if !accept(accepted) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(listener);
    http_closing.cancel();
    node.finish().await;
    tracing::info!("drained");
}

/// Serves one accepted connection: over TLS when the node has it, else plain. This task
/// runs the connection, so what its future holds every connection keeps: the TLS branch
/// (a TLS stream is kilobytes inline) and hyper's are boxed.
async fn serve_stream(
    stream: TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
    closing: CancellationToken,
) {
    match node.tls.clone() {
        None => serve_first(stream, peer, node, closing).await,
        Some(tls) => Box::pin(serve_tls(stream, tls, peer, node, closing)).await,
    }
}

/// The TLS handshake, bounded by the same timeout as the request head, then the first
/// request.
async fn serve_tls(
    stream: TcpStream,
    tls: Arc<crate::tls::Tls>,
    peer: SocketAddr,
    node: Arc<Node>,
    closing: CancellationToken,
) {
    let timeout = Duration::from_millis(node.settings.limits.handshake_timeout_ms);
    match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_first(stream, peer, node, closing).await,
        Ok(Err(error)) => {
            node.metrics.tls_failures.inc();
            tracing::debug!(%error, %peer, "TLS handshake failed");
        }
        Err(_) => {
            node.metrics.handshake_timeouts.inc();
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Reads the connection's first request head: an upgrade to a WebSocket endpoint is
/// answered and served here, anything else goes to hyper.
async fn serve_first<S: IntoSocket>(
    mut stream: S,
    peer: SocketAddr,
    node: Arc<Node>,
    closing: CancellationToken,
) {
    let limits = &node.settings.limits;
    let timeout = Duration::from_millis(limits.handshake_timeout_ms);
    let first = tokio::select! {
        r = tokio::time::timeout(timeout, head::read_first(&mut stream, limits.max_header_bytes)) => r,
        () = closing.cancelled() => return,
    };
    let bytes = match first {
        Err(_) => {
            node.metrics.handshake_timeouts.inc();
            return tracing::debug!(%peer, "request head timed out");
        }
        Ok(Err(error)) => return tracing::debug!(%error, %peer, "request head not read"),
        Ok(Ok(First::Head {
            request,
            bytes,
            len,
        })) if upgrade::is_endpoint(&request, &node) => {
            // A copy of what followed the head, so the head's buffer goes now.
            let early = Bytes::copy_from_slice(&bytes[len..]);
            drop(bytes);
            return upgrade::serve(stream, request, early, node, peer).await;
        }
        Ok(Ok(First::Head { bytes, .. } | First::Other(bytes))) => bytes,
    };
    Box::pin(serve_http(
        Prefixed::new(bytes, stream),
        peer,
        node,
        closing,
    ))
    .await;
}

async fn serve_http<S>(stream: S, peer: SocketAddr, node: Arc<Node>, closing: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let node = Arc::clone(&node);
        hyper::service::service_fn(move |req| route(req, Arc::clone(&node), peer))
    };
    let limits = &node.settings.limits;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.handshake_timeout_ms))
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        if error.is_timeout() {
            node.metrics.handshake_timeouts.inc();
        } else if error.is_parse_too_large() {
            node.metrics.oversized_heads.inc();
        }
        tracing::debug!(%error, %peer, "http connection ended with an error");
    }
}

async fn route(
    req: Request<Incoming>,
    node: Arc<Node>,
    peer: SocketAddr,
) -> Result<Reply, Infallible> {
    let path = req.uri().path();
    if path.starts_with("/api/") {
        return Ok(crate::transport::api::serve(req, node, peer).await);
    }
    if path == "/rpc" {
        return Ok(match *req.method() {
            Method::POST => crate::transport::rpc::serve(req, node, peer).await,
            _ => crate::transport::query::method_not_allowed("POST"),
        });
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
    }
    let reply = match req.uri().path() {
        "/sse" => crate::transport::sse::serve(req, node, peer).await,
        "/poll" => crate::transport::poll::serve(req, node, peer).await,
        "/ws" => upgrade::through_hyper(req, node, peer),
        "/echo" if node.settings.echo => upgrade::through_hyper(req, node, peer),
        "/" | "/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
        "/roomcast.js" => asset("text/javascript; charset=utf-8", ROOMCAST_JS),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if node.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" if node.settings.metrics.public => metrics(&req, &node),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(reply)
}

fn metrics<B>(req: &Request<B>, node: &Node) -> Reply {
    if let Some(token) = &node.settings.metrics.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Constant time: how long a comparison takes tells nothing about the token.
        let matches = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
        if !matches {
            return text(StatusCode::UNAUTHORIZED, "metrics need a bearer token\n");
        }
    }
    let mut r = text(StatusCode::OK, &node.metrics.render());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// The admin port (`metrics.listen`): `/metrics`, `/healthz` and `/readyz` only, until
/// the node shuts down.
pub async fn serve_admin(listener: TcpListener, node: Arc<Node>) {
    tracing::info!(addr = ?listener.local_addr().ok(), "admin listening");
    loop {
        let accepted = tokio::select! {
            () = node.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let node = Arc::clone(&node);
                async move {
                    Ok::<_, Infallible>(match req.uri().path() {
                        "/metrics" => metrics(&req, &node),
                        "/healthz" => text(StatusCode::OK, "ok\n"),
                        "/readyz" if node.is_ready() => text(StatusCode::OK, "ready\n"),
                        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
                        _ => text(StatusCode::NOT_FOUND, "not found\n"),
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Reply {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
