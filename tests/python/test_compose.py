"""End to end: the real `docker-compose.yml` cluster (Redis, three nodes, HAProxy), built
from the offline stand-in images on a machine without a registry. Skipped only where no
Docker engine answers."""

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

from conftest import free_port, roomcast_bin, target_dir

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "roomcast-e2e"


def docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not docker_ok(), reason="no Docker engine answers here")


def compose_cmd():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


class Cluster:
    def __init__(self, port):
        self.port = port
        self.project = PROJECT
        self.env = dict(os.environ, ROOMCAST_HTTP_PORT=str(port))

    def compose(self, *args, check=True, timeout=900):
        run = subprocess.run([*compose_cmd(), "-p", self.project, *args], cwd=ROOT, env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        if check and run.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
        return run.stdout

    def node_containers(self):
        return sorted(self.compose("ps", "-q", "node").split())

    def ip(self, container):
        return subprocess.check_output(
            ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container],
            text=True).strip()

    def redis_publish(self, channel, data):
        out = self.compose("exec", "-T", "redis", "redis-cli", "PUBLISH", f"roomcast:{channel}",
                           json.dumps({"data": data}))
        return int(out.strip())

    def wait_lb_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("the load balancer never answered ready\n" + self.compose("logs", "--tail", "50", check=False))


@pytest.fixture(scope="module")
def cluster():
    subprocess.run([str(ROOT / "deploy" / "offline-images.sh")], check=True, timeout=1800)
    c = Cluster(free_port())
    c.compose("down", "-v", "--remove-orphans", check=False)
    try:
        c.compose("up", "-d", "--build")
        c.wait_lb_ready()
        yield c
    finally:
        c.compose("down", "-v", "--remove-orphans", check=False)


def subscribe(url, channel):
    ws = websocket.create_connection(url, timeout=15)
    welcome = json.loads(ws.recv())
    assert welcome["op"] == "welcome"
    ws.send(json.dumps({"id": 1, "op": "subscribe", "channel": channel}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == 1:
            assert msg["op"] == "ok"
            return ws, welcome["node"]


def subscribe_retrying(url, channel, attempts=20):
    """Through the load balancer, which may still route to a node that just died until its
    health check marks it down (inter 1 s, fall 2)."""
    for _ in range(attempts - 1):
        try:
            return subscribe(url, channel)
        except Exception:
            time.sleep(0.5)
    return subscribe(url, channel)


def messages(ws, n):
    out = []
    while len(out) < n:
        msg = json.loads(ws.recv())
        if msg["op"] in ("message", "gap"):
            out.append(msg)
    return out


def wait_until(predicate, timeout=60, what=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out: {what}")


def test_cluster_end_to_end(cluster, browser):
    nodes = cluster.node_containers()
    assert len(nodes) == 3
    lb = f"ws://127.0.0.1:{cluster.port}/ws"

    # Through the load balancer and directly against each node.
    clients = [subscribe(lb, "chat:e2e")[0] for _ in range(4)]
    direct = {c: subscribe(f"ws://{cluster.ip(c)}:8080/ws", "chat:e2e") for c in nodes}
    seen_nodes = {node for _, node in direct.values()}
    assert len(seen_nodes) == 3, "three distinct node ids"
    everyone = clients + [ws for ws, _ in direct.values()]
    assert cluster.redis_publish("chat:e2e", "one") == 3
    for ws in everyone:
        assert [m["data"] for m in messages(ws, 1)] == ["one"]

    # Kill one node: the others keep delivering; its clients come back through the LB.
    victim = nodes[0]
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    direct[victim][0].close()
    survivors = [ws for c, (ws, _) in direct.items() if c != victim]
    assert cluster.redis_publish("chat:e2e", "two") >= 2
    for ws in survivors:
        assert [m["data"] for m in messages(ws, 1)] == ["two"]
    wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/readyz", timeout=2).status == 200,
               what="lb ready after a node kill")
    back, node = subscribe_retrying(lb, "chat:e2e")
    assert node != direct[victim][1]
    assert cluster.redis_publish("chat:e2e", "three") >= 2
    assert [m["data"] for m in messages(back, 1)] == ["three"]
    for ws in survivors:
        assert [m["data"] for m in messages(ws, 1)] == ["three"]
    for ws in clients:
        ws.close()

    # Restart Redis: every node resubscribes by itself and tells its clients `gap`.
    cluster.compose("restart", "redis")
    for ws in survivors + [back]:
        gap = messages(ws, 1)[0]
        assert gap == {"op": "gap", "channel": "chat:e2e"}
    wait_until(lambda: cluster.redis_publish("chat:e2e", "probe") >= 2, what="nodes resubscribed")
    for ws in survivors + [back]:
        assert [m["data"] for m in messages(ws, 1)] == ["probe"]

    # Stop a node: its clients get 1001 before the container is gone.
    stopping = [c for c in nodes if c != victim][0]
    ws, _ = direct[stopping]
    subprocess.run(["docker", "stop", stopping], check=True, capture_output=True, timeout=60)
    code = None
    try:
        while True:
            op, data = ws.recv_data()
            if op == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big")
                break
    except Exception:
        pass
    assert code == 1001

    # The demo page through the load balancer chats across two nodes.
    cluster.compose("up", "-d", "--no-recreate", "--scale", "node=3")
    wait_until(lambda: len(cluster.node_containers()) == 3, what="three nodes again")
    url = f"http://127.0.0.1:{cluster.port}/?room=e2e-browser"
    browser.get(url)
    tab_a = browser.current_window_handle
    status = lambda: browser.find_element("id", "status").text
    wait_until(lambda: status().startswith("connected to "), what="tab a connected")
    node_a = status().removeprefix("connected to ").split(" via ")[0]
    tab_b, node_b = None, None
    for _ in range(20):
        browser.switch_to.new_window("tab")
        browser.get(url)
        wait_until(lambda: status().startswith("connected to "), what="tab b connected")
        node_b = status().removeprefix("connected to ").split(" via ")[0]
        if node_b != node_a:
            tab_b = browser.current_window_handle
            break
        browser.close()
        browser.switch_to.window(tab_a)
    assert tab_b, "the load balancer spread two tabs over two nodes"
    from test_demo import join, say, log_lines
    join(browser, "bob")
    browser.switch_to.window(tab_a)
    join(browser, "alice")
    say(browser, "hello across nodes")
    browser.switch_to.window(tab_b)
    wait_until(lambda: "alice: hello across nodes" in log_lines(browser), what="message across nodes")


def test_loadtest_against_the_cluster(cluster):
    binary = Path(roomcast_bin()).parent / "roomcast-loadtest"
    redis_ip = cluster.ip(cluster.compose("ps", "-q", "redis").strip())
    out = subprocess.run([str(binary), "run", "--scenario", str(ROOT / "loadtest/scenarios/fanout.toml"),
                          "--targets", f"ws://127.0.0.1:{cluster.port}/ws", "--redis-url", f"redis://{redis_ip}:6379",
                          "--connections", "2000", "--duration", "5", "--rate", "10", "--quiet",
                          "--out", str(target_dir() / "compose-loadtest")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((target_dir() / "compose-loadtest" / "summary.json").read_text())
    assert summary["connected"] == 2000
    assert summary["lost"] == 0 and summary["duplicates"] == 0


def test_nodes_run_without_transparent_huge_pages(cluster):
    # The image sets MIMALLOC_ALLOW_THP=0: the allocator turns THP off for the process
    # (README "Memory"). Older kernels do not report it; then there is nothing to see.
    for container in cluster.node_containers():
        status = subprocess.check_output(["docker", "exec", container, "cat", "/proc/1/status"], text=True)
        if "THP_enabled" in status:
            assert "THP_enabled:\t0" in status, status


def test_event_source_curl_and_websocket_share_a_room_through_the_load_balancer(cluster, browser):
    """The issue's picture: a page with only `new EventSource(...)`, a shell with only
    curl, and the demo on WebSocket, in one room, through HAProxy."""
    from test_demo import join, log_lines, say
    base = f"http://127.0.0.1:{cluster.port}"
    browser.get(base + "/roomcast.js")
    browser.execute_script("""
        window.got = [];
        const es = new EventSource("/sse?channel=chat:doors");
        es.addEventListener("message", (ev) => window.got.push(JSON.parse(ev.data).data.text));
    """)
    tab_es = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(base + "/?room=doors")
    join(browser, "wendy")
    say(browser, "hi from ws")
    body = json.dumps({"id": 1, "op": "publish", "channel": "chat:doors",
                       "data": {"type": "say", "user": "curl", "text": "hi from curl"}})
    out = subprocess.run(["curl", "-sf", "-X", "POST", base + "/rpc", "-H", "Content-Type: application/json",
                          "-d", body], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout)["op"] == "ok", out.stdout + out.stderr
    wait_until(lambda: "curl: hi from curl" in log_lines(browser), what="curl's message in the demo")
    browser.switch_to.window(tab_es)
    wait_until(lambda: {"hi from ws", "hi from curl"} <= set(browser.execute_script("return window.got")),
               what="both in the EventSource page")
