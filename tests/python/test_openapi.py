"""The HTTP API and /rpc against proto/openapi.yaml: schemathesis generates valid and
invalid requests from the document and checks every answer (status, content type, body
schema, no 5xx) against it. /sse and /poll stream or hold, and are checked by the Rust
tests instead (tests/integration/http_transports.rs)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NodeProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-api-key-0123456789"


@pytest.fixture
def api_node():
    node = NodeProcess(free_port(), "openapi", extra=[
        "--set", f"api.key={KEY}",
        "--set", "limits.publish_rate=1000000", "--set", "limits.publish_burst=1000000",
        # Channels without a namespace keep history and presence here, so that generated
        # requests reach the success paths too.
        "--set", "default_namespace.history_size=10", "--set", "default_namespace.presence=true",
    ])
    node.start()
    yield node
    node.stop()


def test_every_api_answer_matches_the_openapi_document(api_node, tmp_path):
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(schemathesis), "run", str(ROOT / "proto" / "openapi.yaml"),
         "--url", api_node.url, "-H", f"Authorization: Bearer {KEY}",
         "--exclude-path", "/sse", "--exclude-path", "/poll",
         "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "60")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout, result.stdout[-3000:]
