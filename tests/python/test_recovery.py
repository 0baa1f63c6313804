"""roomcast.js recovers by itself: its node is killed in the middle of a publish burst, it
reconnects to another node, and the application sees every message once, in order."""

import json
import threading
import time

import redis as redis_py

from test_failover import open_client_page, wait_for

RECOVERING_CLIENT = """
const done = arguments[arguments.length - 1];
const [urls, channel] = [arguments[0], arguments[1]];
window.seen = [];
window.nodes = [];
window.gaps = 0;
const rc = new RoomcastClient(urls, {minBackoffMs: 100, maxBackoffMs: 400});
window.rc = rc;
rc.on("open", (w) => window.nodes.push(w.node));
rc.on("message", (m) => window.seen.push(m.data.seq));
rc.on("gap", () => window.gaps++);
rc.subscribe(channel);
const wait = () => (rc.positions.has(channel) ? done(window.nodes) : setTimeout(wait, 50));
wait();
"""


def test_roomcast_js_loses_nothing_when_its_node_is_killed(cluster, redis_server, browser):
    a, b = cluster
    urls = open_client_page(browser, cluster)
    assert browser.execute_async_script(RECOVERING_CLIENT, urls, "chat:burst") == ["node-a"]

    backend = redis_py.Redis(port=redis_server.port)
    total = 120

    def burst():
        for seq in range(total):
            backend.fcall("roomcast_publish", 1, "roomcast:chat:burst", json.dumps({"data": {"seq": seq}}))
            time.sleep(0.02)

    publisher = threading.Thread(target=burst)
    publisher.start()
    wait_for(browser, "window.seen.length >= 20")
    a.kill()
    publisher.join()
    wait_for(browser, f"window.seen.length >= {total}", timeout=30)
    time.sleep(0.3)
    seen = browser.execute_script("return window.seen")
    assert seen == list(range(total)), seen
    assert browser.execute_script("return window.nodes") == ["node-a", "node-b"]
    assert browser.execute_script("return window.gaps") == 0
