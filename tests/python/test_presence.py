"""Presence outlives no node: the members of a node killed with SIGKILL vanish within the
presence TTL, and watchers are told they left."""

import json
import time

import websocket

from conftest import NodeProcess, free_port


def client(node):
    ws = websocket.create_connection(f"ws://127.0.0.1:{node.port}/ws", timeout=10)
    assert json.loads(ws.recv())["op"] == "welcome"
    return ws


def request(ws, body):
    ws.send(json.dumps(body))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == body["id"] and msg["op"] in ("ok", "error"):
            return msg


def test_members_of_a_killed_node_vanish_within_the_ttl(redis_server):
    ttl_ms = 1500
    args = ["--bus", "redis", "--redis-url", redis_server.url, "--set", f"presence.ttl_ms={ttl_ms}"]
    a = NodeProcess(free_port(), "node-a", args)
    b = NodeProcess(free_port(), "node-b", args)
    a.start()
    b.start()
    try:
        doomed = client(a)
        request(doomed, {"id": 1, "op": "subscribe", "channel": "chat:pk", "info": {"user": "doomed"}})
        watcher = client(b)
        request(watcher, {"id": 1, "op": "subscribe", "channel": "chat:pk", "info": {"user": "w"},
                          "join_leave": True})
        assert request(watcher, {"id": 2, "op": "presence_count", "channel": "chat:pk"})["count"] == 2
        killed_at = time.time()
        a.kill()
        watcher.settimeout(ttl_ms / 1000 * 3)
        while True:
            msg = json.loads(watcher.recv())
            if msg["op"] == "leave":
                break
        gone_after = time.time() - killed_at
        # Expired at most one TTL after the last refresh, seen at the next refresh (a third).
        assert gone_after < ttl_ms / 1000 * 4 / 3 + 0.5, gone_after
        assert request(watcher, {"id": 3, "op": "presence_count", "channel": "chat:pk"})["count"] == 1
        members = request(watcher, {"id": 4, "op": "presence", "channel": "chat:pk"})["clients"]
        assert [m["info"]["user"] for m in members] == ["w"]
        print(f"killed node's member gone after {gone_after:.2f} s (ttl {ttl_ms} ms)")
    finally:
        b.stop()
        if a.proc:
            a.stop()
