"""Fixtures for the browser tests: a real roomcast node and Debian's headless Chromium."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def target_dir() -> Path:
    """Cargo's target directory: CARGO_TARGET_DIR when set, as cargo itself reads it."""
    return Path(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))


def roomcast_bin() -> str:
    path = os.environ.get("ROOMCAST_BIN", str(target_dir() / "debug" / "roomcast"))
    if not Path(path).exists():
        pytest.fail(f"roomcast binary not found at {path}; run `cargo build` first")
    return path


class NodeProcess:
    """A roomcast node as a child process; can be stopped and started on the same port."""

    def __init__(self, port: int, node_id: str, extra=(), env=None, ssl_context=None):
        self.port = port
        self.node_id = node_id
        self.extra = list(extra)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        # Set for a node with native TLS: its port then speaks https only.
        self.ssl_context = ssl_context

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self):
        args = [roomcast_bin(), "--listen", f"127.0.0.1:{self.port}", "--node-id", self.node_id,
                "--set", "metrics.public=true", "--set", "shutdown.drain_window_ms=200", "--set", "shutdown.grace_ms=1000", *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1, context=self.ssl_context) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        _, err = self.proc.communicate()
        self.proc = None
        raise RuntimeError("roomcast did not become ready:\n" + err.decode(errors="replace")[-4000:])

    def kill(self):
        """SIGKILL: no drain, no goodbye."""
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode if self.proc else None
        self.proc = None
        return code


@pytest.fixture
def node():
    n = NodeProcess(free_port(), "browser-a")
    n.start()
    yield n
    n.stop()


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium not installed (apt-get install chromium chromium-driver)")


def make_browser(profile, extra_flags=()):
    """Headless Chromium with a fresh profile; `extra_flags` for tests that need more."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium_path()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1000,800",
                 *extra_flags):
        opts.add_argument(flag)
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_script_timeout(20)
    return driver


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="roomcast-chromium-")
    driver = make_browser(profile)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class RedisProcess:
    """A real redis-server on a free port, for the cluster tests."""

    def __init__(self):
        self.port = free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        if not shutil.which("redis-server"):
            pytest.fail("redis-server not installed (scripts/test installs it)")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis as redis_py
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                redis_py.Redis(port=self.port).ping()
                return
            except redis_py.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server():
    r = RedisProcess()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def cluster(redis_server):
    """Two nodes on the Redis bus."""
    # Pages of one node talk to the other, as they would behind one load balancer's host.
    nodes = [NodeProcess(free_port(), name, ["--bus", "redis", "--redis-url", redis_server.url],
                         env={"ROOMCAST_ALLOWED_ORIGINS": "*"})
             for name in ("node-a", "node-b")]
    for n in nodes:
        n.start()
    yield nodes
    for n in nodes:
        if n.proc:
            n.stop()
