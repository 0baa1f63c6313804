"""Native TLS in a real browser: Chromium chats over wss:// with a Python client, the
certificate is swapped on disk and reloaded on SIGHUP, and the browser's connection made
before the swap stays up while new connections get the new certificate."""

import json
import shutil
import signal
import ssl
import tempfile
import time
from pathlib import Path

import pytest
import websocket
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import NodeProcess, free_port, make_browser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tls"


def served_certificate(port):
    """The certificate the node shows a new connection, as DER."""
    ctx = ssl.create_default_context(cafile=str(FIXTURES / "ca.pem"))
    with ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", port)), server_hostname="localhost") as s:
        return s.getpeercert(binary_form=True)


def der(name):
    return ssl.PEM_cert_to_DER_cert((FIXTURES / name).read_text())


@pytest.fixture
def tls_node():
    workdir = Path(tempfile.mkdtemp(prefix="roomcast-tls-"))
    shutil.copy(FIXTURES / "server-a.pem", workdir / "cert.pem")
    shutil.copy(FIXTURES / "server-a-key.pem", workdir / "key.pem")
    ctx = ssl.create_default_context(cafile=str(FIXTURES / "ca.pem"))
    ctx.check_hostname = False
    node = NodeProcess(free_port(), "tls-a", ssl_context=ctx, extra=[
        "--set", f"tls.cert_file={workdir / 'cert.pem'}", "--set", f"tls.key_file={workdir / 'key.pem'}"])
    node.start()
    yield node, workdir
    node.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def tls_browser():
    profile = tempfile.mkdtemp(prefix="roomcast-chromium-")
    # The test CA is not in Chromium's store; the certificate itself is checked above.
    driver = make_browser(profile, ["--ignore-certificate-errors"])
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def python_client(port):
    ws = websocket.create_connection(
        f"wss://localhost:{port}/ws", timeout=10, sslopt={"ca_certs": str(FIXTURES / "ca.pem")})
    assert json.loads(ws.recv())["op"] == "welcome"
    return ws


def publish(ws, data, rid):
    ws.send(json.dumps({"id": rid, "op": "publish", "channel": "chat:tls", "data": data}))
    while True:
        reply = json.loads(ws.recv())
        if reply.get("id") == rid:
            assert reply["op"] == "ok", reply
            return


def test_browser_over_wss_survives_a_certificate_reload(tls_node, tls_browser):
    node, workdir = tls_node
    assert served_certificate(node.port) == der("server-a.pem")
    # The demo page loads roomcast.js over https (and chats over wss:// itself).
    tls_browser.get(node.url + "/?room=tls-demo")
    WebDriverWait(tls_browser, 15).until(
        lambda d: d.find_element(By.ID, "status").text.startswith("connected"), message="demo connected over wss")
    tls_browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        window.got = [];
        window.rc = new RoomcastClient("wss://" + location.host + "/ws");
        rc.on("message", (m) => got.push(m.data));
        rc.on("open", () => rc.subscribe("chat:tls").then(() => done(true)));
    """)
    first_client = tls_browser.execute_script("return rc.welcome.client")
    sender = python_client(node.port)
    publish(sender, "before", 1)
    deadline = time.time() + 10
    while "before" not in tls_browser.execute_script("return got") and time.time() < deadline:
        time.sleep(0.05)
    assert "before" in tls_browser.execute_script("return got")

    shutil.copy(FIXTURES / "server-b.pem", workdir / "cert.pem")
    shutil.copy(FIXTURES / "server-b-key.pem", workdir / "key.pem")
    node.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while served_certificate(node.port) != der("server-b.pem"):
        assert time.time() < deadline, "the new certificate was never served"
        time.sleep(0.1)

    publish(sender, "after", 2)
    deadline = time.time() + 10
    while "after" not in tls_browser.execute_script("return got") and time.time() < deadline:
        time.sleep(0.05)
    assert tls_browser.execute_script("return got") == ["before", "after"]
    # The same connection: no reconnect happened.
    assert tls_browser.execute_script("return rc.welcome.client") == first_client
    sender.close()
