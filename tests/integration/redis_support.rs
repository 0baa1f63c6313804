//! A real `redis-server` per test, on a free port, and a TCP proxy that can go deaf.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub struct RedisServer {
    pub port: u16,
    /// `requirepass`, when set.
    pub password: Option<String>,
    /// With an append-only file here (fsync on every write), the data survives restarts.
    dir: Option<std::path::PathBuf>,
    child: Option<Child>,
}

/// `None` (after printing why) when `redis-server` is not installed, unless
/// `REQUIRE_REDIS=1`, which `scripts/test` sets so that CI never skips.
pub async fn redis() -> Option<RedisServer> {
    redis_with_password(None).await
}

pub async fn redis_with_password(password: Option<&str>) -> Option<RedisServer> {
    RedisServer::spawn(password, None).await
}

impl RedisServer {
    /// A Redis that keeps its data across restarts (append-only file, fsync always).
    pub async fn persistent() -> Option<RedisServer> {
        let dir = std::env::temp_dir().join(format!("roomcast-redis-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        Self::spawn(None, Some(dir)).await
    }

    async fn spawn(password: Option<&str>, dir: Option<std::path::PathBuf>) -> Option<RedisServer> {
        if !redis_installed() {
            return None;
        }
        let port = free_port();
        let mut server = RedisServer {
            port,
            password: password.map(str::to_string),
            dir,
            child: None,
        };
        server.start().await;
        Some(server)
    }
}

fn redis_installed() -> bool {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("REQUIRE_REDIS").is_err(),
            "redis-server is required (REQUIRE_REDIS is set) but not installed"
        );
        eprintln!("SKIPPED: redis-server not installed; `scripts/test` installs it");
        return false;
    }
    true
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub async fn start(&mut self) {
        let mut cmd = Command::new("redis-server");
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        match &self.dir {
            Some(dir) => cmd.args(["--dir", &dir.display().to_string()]).args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]),
            None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..500 {
            if let Ok(mut c) = self.client().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not come up on port {}", self.port);
    }

    /// Sends the server a signal: `STOP` freezes it with every connection open (a hung
    /// Redis: the kernel still accepts connections, nothing answers), `CONT` thaws it.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn client(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    pub async fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        let mut c = self.client().await.unwrap();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut c)
            .await
            .unwrap()
    }

    pub async fn numsub(&self, channel: &str) -> i64 {
        let mut c = self.client().await.unwrap();
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut c)
            .await
            .unwrap();
        n
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TCP proxy in front of Redis. `freeze` makes every connection open so far deaf in
/// both directions while keeping it open (what a failover or a dead middlebox looks
/// like); connections made afterwards work.
pub struct DeafProxy {
    pub addr: SocketAddr,
    epoch: Arc<AtomicU64>,
    /// New connections are dropped at once until this instant (ms since the epoch).
    refuse_until: Arc<AtomicU64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl DeafProxy {
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let epoch = Arc::new(AtomicU64::new(0));
        let current = Arc::clone(&epoch);
        let refuse_until = Arc::new(AtomicU64::new(0));
        let refusing = Arc::clone(&refuse_until);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if now_ms() < refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let born = current.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, Arc::clone(&current), born));
                tokio::spawn(pipe(sr, cw, Arc::clone(&current), born));
            }
        });
        Self {
            addr,
            epoch,
            refuse_until,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn freeze(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Cuts the link for `how_long`: open connections go deaf, new ones are refused.
    pub fn cut_for(&self, how_long: Duration) {
        self.refuse_until
            .store(now_ms() + how_long.as_millis() as u64, Ordering::SeqCst);
        self.freeze();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    epoch: Arc<AtomicU64>,
    born: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if epoch.load(Ordering::SeqCst) != born {
            // Deaf: swallow everything, keep both sockets open until the test ends.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
