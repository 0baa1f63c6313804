"""Bounded fuzzing of the parsers that face the network and Redis (scripts/fuzz, cargo-fuzz
on the nightly toolchain): frames and messages, JSON and MessagePack commands, Redis
envelopes. Each target runs FUZZ_SECONDS (20) from the corpus kept in tests/fuzz/corpus;
what one codec accepts must be deliverable to every codec."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fuzz_targets_find_no_crash():
    run = subprocess.run([str(ROOT / "scripts/fuzz"), os.environ.get("FUZZ_SECONDS", "20")],
                         capture_output=True, text=True, timeout=2400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert run.stdout.count("Done ") == 4, run.stdout
