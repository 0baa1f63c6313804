//! `bus = "redis-cluster"` against a real Redis Cluster: three `redis-server
//! --cluster-enabled yes` primaries on free ports, joined with `redis-cli --cluster
//! create`. Channels spread over every shard; each node subscribes (SSUBSCRIBE) only on
//! the shards of the channels it hosts.

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::redis_support::free_port;
use crate::support::TestNode;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct RedisCluster {
    pub ports: Vec<u16>,
    procs: Vec<Proc>,
    dir: std::path::PathBuf,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster bus port (+10,000) is free too, never handed out before in
/// this test process (clusters of tests running in parallel would collide otherwise).
fn cluster_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = free_port();
        let mut given = GIVEN.lock().unwrap();
        let taken = |p: u16| {
            given
                .iter()
                .any(|g| *g == p || *g + 10_000 == p || p + 10_000 == *g)
        };
        if port < 55_000
            && !taken(port)
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            given.push(port);
            return port;
        }
    }
}

pub async fn client(port: u16) -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    for _ in 0..400 {
        if let Ok(conn) = c.get_multiplexed_async_connection().await {
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing answers on {port}");
}

impl RedisCluster {
    pub async fn start(primaries: usize) -> Option<Self> {
        Self::start_with_replicas(primaries, 0).await
    }

    /// `primaries` shards, each with `replicas` replicas; a primary that stops answering
    /// for 1 s is replaced by one of its replicas.
    pub async fn start_with_replicas(primaries: usize, replicas: usize) -> Option<Self> {
        crate::redis_support::redis().await?;
        let dir = std::env::temp_dir().join(format!("roomcast-cluster-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<u16> = (0..primaries * (1 + replicas))
            .map(|_| cluster_port())
            .collect();
        let procs = ports
            .iter()
            .map(|port| {
                let child = Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .args(["--cluster-node-timeout", "1000"])
                    // A replica's first sync starts at once rather than after Redis's
                    // default 5 s wait for more replicas to sync along.
                    .args(["--repl-diskless-sync-delay", "0"])
                    .args(["--dir", &dir.display().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server starts");
                Proc(child)
            })
            .collect();
        for port in &ports {
            client(*port).await;
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &ports {
            let mut c = client(*port).await;
            let mut ok = false;
            for _ in 0..400 {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(ok, "the cluster never became ok on {port}");
        }
        Some(Self { ports, procs, dir })
    }

    /// Kills the server on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.ports.iter().position(|p| *p == port) {
            let _ = self.procs[i].0.kill();
            let _ = self.procs[i].0.wait();
            self.ports.remove(i);
            self.procs.remove(i);
        }
    }

    pub fn seeds(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        seeds.join(",")
    }

    /// The port of the primary that owns `key`'s slot, from `CLUSTER SLOTS`.
    pub async fn owner(&self, key: &str) -> u16 {
        let mut c = client(self.ports[0]).await;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        let ranges: Vec<(i64, i64, (String, i64))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Vec<redis::Value>>(&mut c)
            .await
            .unwrap()
            .into_iter()
            .map(|range| {
                let redis::Value::Array(items) = range else {
                    panic!("a slot range")
                };
                let start: i64 = redis::from_redis_value(items[0].clone()).unwrap();
                let end: i64 = redis::from_redis_value(items[1].clone()).unwrap();
                let redis::Value::Array(primary) = items[2].clone() else {
                    panic!("a primary")
                };
                let ip: String = redis::from_redis_value(primary[0].clone()).unwrap();
                let port: i64 = redis::from_redis_value(primary[1].clone()).unwrap();
                (start, end, (ip, port))
            })
            .collect();
        let (_, _, (_, port)) = ranges
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("every slot is served");
        port as u16
    }
}

/// Waits until the primary on `port` has a replica online that acknowledged every write,
/// and holds the `len` entries of `stream`. Up to 30 s: on a loaded 2-core machine a
/// replica's first sync took longer than 10 s.
async fn caught_up(port: u16, stream: &str, len: i64) {
    let mut c = client(port).await;
    for _ in 0..1200 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .unwrap();
        let field = |line: &str, key: &str| {
            line.split(',')
                .find_map(|kv| kv.strip_prefix(key))
                .map(str::to_string)
        };
        let master: Option<String> = info
            .lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .map(str::to_string);
        let replica = info.lines().find(|l| l.starts_with("slave0:"));
        if let (Some(master), Some(replica)) = (master, replica)
            && field(replica, "state=").as_deref() == Some("online")
            && field(replica, "offset=") == Some(master)
            && let Some(Ok(replica_port)) = field(replica, "port=").map(|p| p.parse::<u16>())
        {
            let mut r = client(replica_port).await;
            // Reads on a replica answer `MOVED` unless the connection says READONLY.
            let _: () = redis::cmd("READONLY").query_async(&mut r).await.unwrap();
            let held: i64 = redis::cmd("XLEN")
                .arg(stream)
                .query_async(&mut r)
                .await
                .unwrap_or(0);
            if held == len {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Say what each side holds, so that a Redis that did not replicate is told apart.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    panic!("the replica of {port} never held {len} entries of {stream}; the primary has {keys:?}");
}

pub async fn node_on_cluster(cluster: &RedisCluster, id: &str) -> TestNode {
    let (seeds, id) = (cluster.seeds(), id.to_string());
    let node = TestNode::start_with(move |s| {
        s.bus = roomcast::settings::BusKind::RedisCluster;
        s.redis_url = seeds;
        s.node_id = id;
        s.redis.prefix = "rc".into();
        s.redis.probe_interval_ms = 100;
        s.redis.probe_timeout_ms = 1_000;
        s.redis.reconnect_min_ms = 20;
        s.redis.reconnect_max_ms = 200;
        s.limits.publish_rate = 1e6;
        s.limits.publish_burst = 1e6;
        s.namespaces.insert(
            "live".into(),
            roomcast::settings::NamespacePolicy {
                publish: true,
                ..Default::default()
            },
        );
    })
    .await;
    crate::cluster::ready(&node).await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_three_shards_deliver_every_message_once_in_order() {
    let Some(cluster) = RedisCluster::start(3).await else {
        return;
    };
    let nodes = [
        node_on_cluster(&cluster, "ca").await,
        node_on_cluster(&cluster, "cb").await,
        node_on_cluster(&cluster, "cc").await,
    ];
    let channels: Vec<String> = (0..9)
        .map(|i| {
            if i % 2 == 0 {
                format!("chat:s{i}")
            } else {
                format!("live:s{i}")
            }
        })
        .collect();
    let mut shards = HashSet::new();
    for ch in &channels {
        shards.insert(cluster.owner(&format!("rc:{ch}")).await);
    }
    assert_eq!(shards.len(), 3, "the channels cover every shard");
    let mut subs = Vec::new();
    for node in &nodes {
        for ch in &channels {
            let mut c = node.json().await;
            c.subscribe(ch).await;
            subs.push((ch.clone(), c));
        }
    }
    let mut publisher = nodes[0].json().await;
    for n in 0..20 {
        for ch in &channels {
            let reply = publisher.publish(ch, json!(n)).await;
            assert_eq!(reply["op"], "ok", "{reply}");
        }
    }
    for (ch, c) in &mut subs {
        for n in 0..20 {
            let msg = c.next_message().await;
            assert_eq!(
                (msg["channel"].as_str(), msg["data"].as_u64()),
                (Some(ch.as_str()), Some(n))
            );
        }
    }
    // Each channel is subscribed on its own shard, by the three nodes, and nowhere else.
    for ch in &channels {
        let key = format!("rc:{ch}");
        let owner = cluster.owner(&key).await;
        for port in &cluster.ports {
            let mut c = client(*port).await;
            let counts: BTreeMap<String, i64> = redis::cmd("PUBSUB")
                .arg("SHARDNUMSUB")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            let expected = if *port == owner { 3 } else { 0 };
            assert_eq!(counts.get(&key), Some(&expected), "{key} on {port}");
        }
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_subscribes_only_the_shards_of_the_channels_it_hosts() {
    let Some(cluster) = RedisCluster::start(3).await else {
        return;
    };
    let a = node_on_cluster(&cluster, "only").await;
    let mut c = a.json().await;
    c.subscribe("live:only-this").await;
    let key = "rc:live:only-this";
    let owner = cluster.owner(key).await;
    let mut on_owner = client(owner).await;
    let counts: BTreeMap<String, i64> = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(key)
        .query_async(&mut on_owner)
        .await
        .unwrap();
    assert_eq!(counts.get(key), Some(&1));
    // A backend publishes with SPUBLISH, from any node of the cluster through the
    // cluster-aware client, and the subscriber hears it.
    let seeds: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let backend = redis::cluster::ClusterClient::new(seeds).unwrap();
    let mut backend = backend.get_async_connection().await.unwrap();
    let _: i64 = redis::cmd("SPUBLISH")
        .arg(key)
        .arg(r#"{"data":"from a backend"}"#)
        .query_async(&mut backend)
        .await
        .unwrap();
    assert_eq!(c.next_message().await["data"], "from a backend");
    c.request(json!({"op": "unsubscribe", "channel": "live:only-this"}))
        .await;
    let mut gone = false;
    for _ in 0..100 {
        let counts: BTreeMap<String, i64> = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(key)
            .query_async(&mut on_owner)
            .await
            .unwrap();
        if counts.get(key) == Some(&0) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "SUNSUBSCRIBE on the last local subscriber");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_failing_over_loses_nothing_with_history_and_says_gap_without() {
    let Some(mut cluster) = RedisCluster::start_with_replicas(3, 1).await else {
        return;
    };
    let node = node_on_cluster(&cluster, "fo").await;
    // A channel with history and one without on the shard that fails, one elsewhere.
    let mut by_shard: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for i in 0..60 {
        let ch = format!("chat:f{i}");
        by_shard
            .entry(cluster.owner(&format!("rc:{ch}")).await)
            .or_default()
            .push(ch);
    }
    let (&victim, on_victim) = by_shard.iter().next().unwrap();
    let doomed = on_victim[0].clone();
    let other = by_shard.iter().find(|(p, _)| **p != victim).unwrap().1[0].clone();
    let mut live = None;
    for i in 0..200 {
        let ch = format!("live:f{i}");
        if cluster.owner(&format!("rc:{ch}")).await == victim {
            live = Some(ch);
            break;
        }
    }
    let live = live.expect("a live channel on the same shard");
    let mut sub = node.json().await;
    for ch in [&doomed, &other, &live] {
        sub.subscribe(ch).await;
    }
    let mut publisher = node.json().await;
    for n in 0..5 {
        publisher.publish(&doomed, json!(n)).await;
    }
    let mut doomed_seen = Vec::new();
    while doomed_seen.len() < 5 {
        let m = sub.next_message().await;
        doomed_seen.push(m["data"].as_u64().unwrap());
    }
    // Let the replica catch up (its initial sync done and every write acknowledged: a
    // `WAIT` from a client that wrote nothing proves nothing), then kill the primary.
    caught_up(victim, &format!("{{rc:{doomed}}}:s"), 5).await;
    let killed = std::time::Instant::now();
    cluster.kill(victim);
    // Another shard's channel never notices: published and delivered at once.
    let reply = publisher.publish(&other, json!("unbothered")).await;
    assert_eq!(reply["op"], "ok", "{reply}");
    let other_ok = killed.elapsed();
    // Publishes to the failed shard succeed once a replica is promoted.
    let mut n = 5;
    let mut promoted = None;
    while n < 10 {
        let reply = publisher.publish(&doomed, json!(n)).await;
        if reply["op"] == "ok" {
            promoted.get_or_insert(killed.elapsed());
            n += 1;
        } else {
            assert_eq!(reply["code"], "unavailable", "{reply}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no failover");
    }
    let mut got_other = false;
    let mut gaps = Vec::new();
    while doomed_seen.len() < 10 || !got_other {
        let Ok(m) = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await else {
            panic!("stuck: {doomed} {doomed_seen:?}, {other} seen: {got_other}, gaps {gaps:?}");
        };
        match (m["op"].as_str(), m["channel"].as_str()) {
            (Some("message"), Some(ch)) if ch == doomed => {
                doomed_seen.push(m["data"].as_u64().unwrap())
            }
            (Some("message"), Some(ch)) if ch == other => got_other = true,
            (Some("gap"), Some(ch)) if ch == other => panic!("{other} is on another shard"),
            (Some("gap"), Some(ch)) => gaps.push(ch.to_string()),
            _ => {}
        }
    }
    assert_eq!(
        doomed_seen,
        (0..10).collect::<Vec<_>>(),
        "history covered the failover"
    );
    // A channel whose history could not be read back yet when the link returned is told
    // `gap` too: a false alarm at worst, never a silent loss.
    // Without history, what may have been missed is said, not hidden.
    while !gaps.contains(&live) {
        let m = sub.recv().await;
        if m["op"] == "gap" {
            gaps.push(m["channel"].as_str().unwrap_or_default().to_string());
        }
    }
    eprintln!(
        "shard failover: publishes on the shard succeeded again after {:?}, on another shard after {other_ok:?}",
        promoted.unwrap_or_default()
    );
    node.stop().await;
}
