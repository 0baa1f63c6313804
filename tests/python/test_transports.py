"""Every door into one room, in a real browser: a bare EventSource page receives messages
published over WebSocket, HTTP and Redis, and resumes through another node without a
loss when its node stops; a page whose WebSocket upgrade is stripped by a proxy falls back
by itself and chats with a WebSocket tab and a long-polling tab."""

import json
import time
import urllib.request

import pytest
import redis as redis_py
import websocket
from selenium.webdriver.common.by import By

from conftest import NodeProcess, free_port
from proxies import Proxy
from test_demo import join, log_lines, say, wait_for

KEY = "test-api-key-0123456789"


@pytest.fixture
def nodes(redis_server):
    extra = ["--bus", "redis", "--redis-url", redis_server.url, "--set", f"api.key={KEY}"]
    pair = [NodeProcess(free_port(), name, extra, env={"ROOMCAST_ALLOWED_ORIGINS": "*"})
            for name in ("node-a", "node-b")]
    for n in pair:
        n.start()
    yield pair
    for n in pair:
        if n.proc:
            n.stop()


def ws_publish(node, channel, data):
    ws = websocket.create_connection(f"ws://127.0.0.1:{node.port}/ws", timeout=10)
    assert json.loads(ws.recv())["op"] == "welcome"
    ws.send(json.dumps({"id": 1, "op": "publish", "channel": channel, "data": data}))
    while json.loads(ws.recv()).get("id") != 1:
        pass
    ws.close()


def http_post(url, body, key=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


EVENT_SOURCE_PAGE = """
window.got = [];
window.opens = 0;
const es = new EventSource("/sse?channel=chat:doors");
es.addEventListener("welcome", () => window.opens++);
es.addEventListener("message", (ev) => window.got.push(JSON.parse(ev.data).data));
"""


def test_a_bare_event_source_hears_every_door_and_resumes_on_another_node(nodes, redis_server, browser):
    a, b = nodes
    lb = Proxy(a.port)
    try:
        browser.get(lb.url + "/roomcast.js")
        browser.execute_script(EVENT_SOURCE_PAGE)
        wait_for(browser, lambda d: d.execute_script("return window.opens") == 1, what="stream open")
        backend = redis_py.Redis(port=redis_server.port)
        ws_publish(a, "chat:doors", "ws")
        http_post(a.url + "/rpc", {"id": 1, "op": "publish", "channel": "chat:doors", "data": "rpc"})
        http_post(b.url + "/api/publish", {"channel": "chat:doors", "data": "api"}, KEY)
        backend.fcall("roomcast_publish", 1, "roomcast:chat:doors", json.dumps({"data": "redis"}))
        wait_for(browser, lambda d: len(d.execute_script("return window.got")) == 4, what="four doors")
        # Node A goes away; the load balancer sends the reconnect to node B; what was
        # published meanwhile arrives, once.
        lb.retarget(b.port)
        a.stop()
        for n in range(5):
            backend.fcall("roomcast_publish", 1, "roomcast:chat:doors", json.dumps({"data": f"gone-{n}"}))
        wait_for(browser, lambda d: d.execute_script("return window.opens") == 2, what="reconnected", timeout=20)
        wait_for(browser, lambda d: len(d.execute_script("return window.got")) >= 9, what="the missed ones")
        time.sleep(0.3)
        got = browser.execute_script("return window.got")
        assert got == ["ws", "rpc", "api", "redis"] + [f"gone-{n}" for n in range(5)], got
    finally:
        lb.close()


def transport_of(driver):
    return driver.execute_script("return client.transport")


def test_a_page_behind_a_proxy_that_strips_upgrade_falls_back_and_chats(nodes, browser):
    a, _ = nodes
    stripping = Proxy(a.port, strip_upgrade=True)
    try:
        room = "/?room=doors"
        browser.get(stripping.url + room)
        join(browser, "sam")
        assert transport_of(browser) in ("sse", "poll")
        tab_sse = browser.current_window_handle

        browser.switch_to.new_window("tab")
        browser.get(a.url + room)
        join(browser, "wendy")
        assert transport_of(browser) == "websocket"
        tab_ws = browser.current_window_handle

        browser.switch_to.new_window("tab")
        browser.get(a.url + room + "&transport=poll")
        join(browser, "paula")
        assert transport_of(browser) == "poll"
        assert "via poll" in browser.find_element(By.ID, "status").text
        say(browser, "from poll")
        tab_poll = browser.current_window_handle

        browser.switch_to.window(tab_ws)
        say(browser, "from ws")
        browser.switch_to.window(tab_sse)
        say(browser, "from sse")
        for tab in (tab_sse, tab_ws, tab_poll):
            browser.switch_to.window(tab)
            for line in ("paula: from poll", "wendy: from ws", "sam: from sse"):
                wait_for(browser, lambda d, line=line: line in log_lines(d), what=f"{line!r} in every tab")
    finally:
        stripping.close()
