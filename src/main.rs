//! The `roomcast` binary: settings, logging, signals, and the exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use roomcast::node::Node;
use roomcast::settings::{Cli, Settings};

/// mimalloc returns freed memory to the system far more readily than glibc's malloc after
/// bursts (connection storms allocate handshake buffers that are freed a moment later), the
/// more so with a collect whenever a worker goes idle (see `collect_when_idle`): measured
/// in loadtest/README.md. It is built without asking for transparent huge pages (the
/// `no_thp` feature): on hosts whose THP mode is `always`, `MIMALLOC_ALLOW_THP=0` keeps
/// them off as well, and the container image sets it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs when a worker thread has nothing left to do: hands the memory its allocator heap
/// holds but no longer uses back to the system (mimalloc's `mi_collect`). Without it a
/// heap keeps the pages a burst of handshakes and subscribes freed (about 8 KB per
/// connection of a 5,000-client burst, still held after they left); with it they return
/// within a moment. Parking means idle, so the collect's cost (it visits the heap's
/// pages) is not on any message's path: node CPU per delivery did not change in the load
/// tests, at 2,000 messages/s in 2,000 rooms either (loadtest/README.md). A collect at
/// most every 10 or 100 ms kept more: after a burst, the skipped park can be the last.
fn collect_when_idle() {
    // SAFETY: `mi_collect` takes no pointers and frees only what this thread's heap no
    // longer uses; it is the allocator's own API, called on a thread it serves.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// EX_USAGE from sysexits.h: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(&cli, None) {
        Ok(settings) => settings,
        Err(error) => {
            // SettingsError's message already includes its cause, naming the key.
            eprintln!("roomcast: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.healthcheck {
        // With native TLS the main port speaks TLS only; the admin port stays plain.
        return match (settings.metrics.listen, settings.tls.cert_file.is_some()) {
            (Some(admin), _) => healthcheck(admin),
            (None, false) => healthcheck(settings.listen),
            (None, true) => {
                eprintln!("roomcast: --healthcheck with tls needs metrics.listen (plain HTTP)");
                ExitCode::FAILURE
            }
        };
    }
    // Decided once here: telemetry labels its exports with it before the node exists.
    settings.node_id = settings.node_id_or_generated();
    // Tracing is set up inside the runtime: the OTLP exporter may need one.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("roomcast: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _guard = runtime.enter();
        match roomcast::telemetry::init(&settings.log, &settings.otel, &settings.node_id) {
            Ok(t) => t,
            Err(error) => {
                let error = anyhow::Error::from(error);
                eprintln!("roomcast: configuration error: {error:#}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let result = runtime.block_on(run(settings, &telemetry));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "roomcast failed");
            eprintln!("roomcast: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, telemetry: &roomcast::telemetry::Telemetry) -> anyhow::Result<()> {
    let listen = settings.listen;
    let node = Node::new(settings).context("cannot start the node")?;
    telemetry.export_metrics(std::sync::Arc::clone(&node.metrics));
    let listener = bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    if let Some(admin) = node.settings.metrics.listen {
        let admin =
            bind(admin).with_context(|| format!("cannot listen on {admin} (metrics.listen)"))?;
        tokio::spawn(roomcast::server::serve_admin(
            admin,
            std::sync::Arc::clone(&node),
        ));
    }
    node.tasks
        .spawn(forward_sighup(std::sync::Arc::clone(&node)));
    let shutdown = node.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        shutdown.cancel();
    });
    roomcast::server::serve(listener, node).await;
    Ok(())
}

/// `GET /readyz` on the node's own address: exit 0 when it answers 200.
fn healthcheck(listen: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(2);
    let ready = std::net::TcpStream::connect_timeout(&addr, timeout).and_then(|mut s| {
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(&head[9..12] == b"200")
    });
    match ready {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// A listener with a deep accept backlog: connection storms (every client of a lost node
/// reconnecting at once) otherwise overflow the default queue and stall in SYN retries.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// SIGHUP: whatever the node serves from files (auth keys, TLS certificates) is read
/// again. Ends with the node's shutdown.
async fn forward_sighup(node: std::sync::Arc<Node>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP");
            return;
        }
    };
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading keys and certificates");
                node.reload.send_modify(|n| *n += 1);
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
