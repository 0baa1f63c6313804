"""The publisher examples in examples/ publish over Redis and reach WebSocket clients."""

import json
import os
import subprocess
from pathlib import Path

import websocket

from conftest import roomcast_bin

ROOT = Path(__file__).resolve().parents[2]


def subscriber(node, channel):
    ws = websocket.create_connection(f"ws://127.0.0.1:{node.port}/ws", timeout=10)
    assert json.loads(ws.recv())["op"] == "welcome"
    ws.send(json.dumps({"id": 1, "op": "subscribe", "channel": channel}))
    reply = json.loads(ws.recv())
    # `chat` keeps history: the reply says where the subscription starts.
    assert reply["op"] == "ok" and reply["id"] == 1 and "offset" in reply and "epoch" in reply, reply
    return ws


def next_message(ws):
    while True:
        msg = json.loads(ws.recv())
        if msg["op"] == "message":
            return msg


def test_every_example_publisher_reaches_every_node(cluster, redis_server):
    subs = [subscriber(node, "chat:examples") for node in cluster]
    env = dict(os.environ, REDIS_URL=redis_server.url)
    rust_example = Path(roomcast_bin()).parent / "examples" / "publish"
    assert rust_example.exists(), "scripts/test builds the examples"
    commands = {
        "shell": ["sh", str(ROOT / "examples" / "publish.sh")],
        "python": [str(Path(os.sys.executable)), str(ROOT / "examples" / "publish.py")],
        "rust": [str(rust_example)],
    }
    for offset, (name, cmd) in enumerate(commands.items(), start=1):
        data = {"from": name, "text": "hi"}
        out = subprocess.run([*cmd, "chat:examples", json.dumps(data)], env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert str(offset) in out.stdout, out.stdout  # each example prints the offset
        for ws in subs:
            msg = next_message(ws)
            assert msg == {"op": "message", "channel": "chat:examples", "data": data,
                           "offset": offset, "epoch": msg["epoch"]}
    for ws in subs:
        ws.close()


def test_readme_redis_cli_command(cluster, redis_server):
    """README: redis-cli PUBLISH roomcast:chat:lobby '{"data":{"text":"hi"}}'"""
    subs = [subscriber(node, "chat:lobby") for node in cluster]
    out = subprocess.run(["redis-cli", "-p", str(redis_server.port), "PUBLISH", "roomcast:chat:lobby",
                          '{"data":{"text":"hi"}}'], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "2", out  # both nodes host the channel
    for ws in subs:
        assert next_message(ws) == {"op": "message", "channel": "chat:lobby", "data": {"text": "hi"}}
        ws.close()
