"""A killed node does not disturb the others; its browser clients move to another node."""

import json
import subprocess
import time


FAILOVER_CLIENT = """
const done = arguments[arguments.length - 1];
const [urls, channel] = [arguments[0], arguments[1]];
window.seen = [];
window.nodes = [];
const rc = new RoomcastClient(urls, {minBackoffMs: 100, maxBackoffMs: 500});
window.rc = rc;
rc.on("open", (w) => window.nodes.push(w.node));
rc.on("message", (m) => window.seen.push(m.data));
rc.subscribe(channel);
const wait = () => (rc.connected ? setTimeout(() => done(window.nodes), 300) : setTimeout(wait, 50));
wait();
"""


def publish(redis_server, channel, data):
    out = subprocess.run(["redis-cli", "-p", str(redis_server.port), "PUBLISH", f"roomcast:{channel}",
                          json.dumps({"data": data})], capture_output=True, text=True, timeout=10)
    return int(out.stdout.strip())


def wait_for(browser, expr, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = browser.execute_script("return " + expr)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {expr}: {browser.execute_script('return window.seen')}")


def open_client_page(browser, cluster):
    """A page of node B with roomcast.js loaded; returns both nodes' URLs, node A first."""
    a, b = cluster
    browser.get(b.url + "/healthz")
    browser.execute_script('const s = document.createElement("script"); s.src = "/roomcast.js";'
                           'document.head.appendChild(s);')
    wait_for(browser, "typeof RoomcastClient !== 'undefined'")
    return [f"ws://127.0.0.1:{a.port}/ws", f"ws://127.0.0.1:{b.port}/ws"]


def test_clients_of_a_killed_node_reconnect_elsewhere(cluster, redis_server, browser):
    a, b = cluster
    # The page comes from node B; the client starts on node A (first URL).
    urls = open_client_page(browser, cluster)
    nodes = browser.execute_async_script(FAILOVER_CLIENT, urls, "chat:failover")
    assert nodes == ["node-a"]

    # A client of node B that must not notice anything.
    import websocket
    steady = websocket.create_connection(f"ws://127.0.0.1:{b.port}/ws", timeout=10)
    json.loads(steady.recv())
    steady.send(json.dumps({"id": 1, "op": "subscribe", "channel": "chat:failover"}))
    assert json.loads(steady.recv())["op"] == "ok"

    assert publish(redis_server, "chat:failover", "one") == 2
    wait_for(browser, "window.seen.includes('one')")

    a.kill()
    wait_for(browser, "window.nodes.includes('node-b') && window.rc.connected")
    time.sleep(0.3)  # the resubscribe request follows the welcome
    assert publish(redis_server, "chat:failover", "two") == 1  # only node B is left
    wait_for(browser, "window.seen.includes('two')")

    got = [json.loads(steady.recv()) for _ in range(2)]
    assert [m["data"] for m in got] == ["one", "two"]
    steady.close()
