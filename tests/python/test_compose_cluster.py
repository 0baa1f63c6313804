"""End to end: the compose file's redis-cluster profile (six cluster-mode Redis servers
joined into 3 primaries with a replica each, three nodes on bus = "redis-cluster", HAProxy),
with the unchanged compose file and deploy/redis-cluster.env. Skipped only where no Docker
engine answers."""

import json
import subprocess
from pathlib import Path

import pytest

from conftest import free_port, roomcast_bin, target_dir
from test_compose import Cluster, docker_ok, messages, subscribe_retrying

ROOT = Path(__file__).resolve().parents[2]
SHARDS = ["redis-c1", "redis-c2", "redis-c3", "redis-c4", "redis-c5", "redis-c6"]

pytestmark = pytest.mark.skipif(not docker_ok(), reason="no Docker engine answers here")


class ShardedCluster(Cluster):
    PROJECT_ARGS = ["--env-file", str(ROOT / "deploy" / "redis-cluster.env"), "--profile", "redis-cluster"]

    def compose(self, *args, check=True, timeout=900):
        return super().compose(*self.PROJECT_ARGS, *args, check=check, timeout=timeout)

    def redis_cli(self, *args):
        return self.compose("exec", "-T", "redis-c1", "redis-cli", "-c", *args).strip()

    def seeds(self):
        return ",".join(f"redis://{self.ip(self.compose('ps', '-q', s).strip())}:6379" for s in SHARDS[:3])


@pytest.fixture(scope="module")
def sharded():
    subprocess.run([str(ROOT / "deploy" / "offline-images.sh")], check=True, timeout=1800)
    c = ShardedCluster(free_port())
    c.project = "roomcast-e2e-rc"
    c.compose("down", "-v", "--remove-orphans", check=False)
    try:
        c.compose("up", "-d", "--build")
        c.wait_lb_ready(timeout=180)
        yield c
    finally:
        c.compose("down", "-v", "--remove-orphans", check=False)


def test_rooms_on_every_shard_through_the_load_balancer(sharded):
    info = sharded.redis_cli("cluster", "info")
    assert "cluster_state:ok" in info and "cluster_size:3" in info, info
    url = f"ws://127.0.0.1:{sharded.port}/ws"
    channels = [f"chat:shard{i}" for i in range(6)]
    slots = {int(sharded.redis_cli("cluster", "keyslot", f"roomcast:{ch}")) for ch in channels}
    assert len(slots) == 6
    subs = [subscribe_retrying(url, ch) for ch in channels]
    # A backend publishes with SPUBLISH through a cluster-aware client (redis-cli -c).
    for ch in channels:
        body = json.dumps({"data": {"type": "say", "user": "backend", "text": ch}})
        sharded.redis_cli("SPUBLISH", f"roomcast:{ch}", body)
    for (ws, _node), ch in zip(subs, channels):
        (msg,) = messages(ws, 1)
        assert msg["op"] == "message" and msg["data"]["text"] == ch, msg
        ws.close()


def test_loadtest_against_the_sharded_cluster(sharded):
    binary = Path(roomcast_bin()).parent / "roomcast-loadtest"
    out_dir = target_dir() / "compose-cluster-loadtest"
    out = subprocess.run([str(binary), "run", "--scenario", str(ROOT / "loadtest/scenarios/rooms.toml"),
                          "--targets", f"ws://127.0.0.1:{sharded.port}/ws", "--redis-url", sharded.seeds(),
                          "--connections", "2000", "--duration", "5", "--rate", "500", "--quiet",
                          "--out", str(out_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["connected"] == 2000
    assert summary["lost"] == 0 and summary["duplicates"] == 0, summary
