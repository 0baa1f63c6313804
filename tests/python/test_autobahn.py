"""The Autobahn|Testsuite against /echo (which reads through the same code as /ws): every
case OK, NON-STRICT or INFORMATIONAL, and at the default limits every oversize message of
group 9 ends with a 1009 close. Runs tests/autobahn/run.sh (Python 2.7, pinned suite)."""

import json
import subprocess
from pathlib import Path

from conftest import roomcast_bin

ROOT = Path(__file__).resolve().parents[2]


def test_autobahn_suite_against_echo():
    run = subprocess.run([str(ROOT / "tests/autobahn/run.sh"), roomcast_bin()],
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((ROOT / "tests/autobahn/summary.json").read_text())
    assert summary["failed"] == [] and summary["total"] >= 300
    assert summary["default_limits_group_9"]["not_closed_1009"] == []
