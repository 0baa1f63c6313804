"""Smoke test of the load-test harness: a small run over three local nodes, zero loss.
Asserts no timing; speed lives in loadtest/README.md."""

import json
import os
import subprocess
from pathlib import Path

from conftest import roomcast_bin

ROOT = Path(__file__).resolve().parents[2]


def run_local(tmp_path, *args):
    """loadtest/run-local.sh with the debug binaries; returns the run's summary."""
    env = dict(os.environ,
               ROOMCAST_BIN=roomcast_bin(),
               LOADTEST_BIN=str(Path(roomcast_bin()).parent / "roomcast-loadtest"))
    out = tmp_path / "report"
    run = subprocess.run([str(ROOT / "loadtest/run-local.sh"), *args, "--out", str(out), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads((out / "summary.json").read_text()), out


def test_fanout_smoke_over_three_nodes(tmp_path):
    summary, out = run_local(tmp_path, "fanout", "--connections", "500", "--nodes", "3",
                             "--duration", "5", "--rate", "20")
    assert summary["connected"] == 500 and summary["connect_failures"] == 0
    assert summary["published"] == 100
    assert summary["expected"] == 500 * 100
    assert summary["lost"] == 0
    assert summary["duplicates"] == 0
    assert summary["out_of_order"] == 0
    assert summary["latency_ms"]["samples"] == 500 * 100
    assert len(summary["nodes"]) == 3 and summary["rss_bytes_per_connection"] is not None
    assert (out / "report.md").exists()
    assert (out / "latency.svg").read_text().startswith("<svg")


def test_resume_loses_and_duplicates_nothing(tmp_path):
    """Clients keep reconnecting to other nodes and recovering, under steady publishing."""
    summary, _ = run_local(tmp_path, "resume", "--connections", "600", "--nodes", "3",
                           "--duration", "6", "--rate", "60")
    assert summary["connected"] == 600 and summary["connect_failures"] == 0
    assert summary["churn_reconnects"] >= 150 and summary["churn_failures"] == 0, summary
    assert summary["expected"] > 0
    assert summary["lost"] == 0
    assert summary["duplicates"] == 0
    assert summary["out_of_order"] == 0


def test_sse_and_long_poll_subscribers_are_measured_like_websocket(tmp_path):
    for transport in ("sse", "poll"):
        summary, _ = run_local(tmp_path / transport, "fanout", "--connections", "300", "--nodes", "2",
                               "--duration", "4", "--rate", "10", "--transport", transport)
        assert summary["transport"] == transport
        assert summary["connected"] == 300 and summary["connect_failures"] == 0
        assert summary["expected"] == 300 * 40
        assert summary["lost"] == 0 and summary["duplicates"] == 0 and summary["out_of_order"] == 0, summary
        assert summary["latency_ms"]["samples"] == 300 * 40


def test_against_a_three_shard_redis_cluster(tmp_path):
    """`--redis cluster`: nodes on bus = "redis-cluster", the publisher SPUBLISH/FCALL by
    slot, and each redis-server's CPU in the report."""
    for via in ("redis", "history"):
        summary, out = run_local(tmp_path / via, "rooms", "--connections", "400", "--nodes", "2",
                                 "--duration", "3", "--rate", "200", "--redis", "cluster", "--via", via)
        assert summary["connected"] == 400 and summary["connect_failures"] == 0
        assert summary["published"] == 600 and summary["lost"] == 0, summary
        assert summary["duplicates"] == 0 and summary["out_of_order"] == 0
        assert len(summary["redis"]) == 3, summary["redis"]
        assert all(r["cpu_seconds_publishing"] is not None for r in summary["redis"])
        assert summary["redis_cpu_us_per_message"] > 0
        assert "redis cpu per published message" in (out / "report.md").read_text()


def test_a_burst_reports_memory_during_and_after(tmp_path):
    """Every client connects at once; the report gives the node's RSS per connection while
    they are connected and what it kept after they left, and CPU per delivery elsewhere."""
    summary, out = run_local(tmp_path, "burst", "--connections", "300", "--nodes", "1")
    assert summary["connected"] == 300 and summary["connect_failures"] == 0
    assert summary["rss_bytes_per_connection"] is not None
    assert summary["rss_bytes_retained_per_connection"] is not None
    assert summary["nodes"][0]["rss_bytes_after_leave"] > 0
    assert "kept per connection after the clients left" in (out / "report.md").read_text()
    summary, _ = run_local(tmp_path / "fanout", "fanout", "--connections", "200", "--nodes", "1",
                           "--duration", "2", "--rate", "10")
    assert summary["node_cpu_us_per_delivery"] > 0
