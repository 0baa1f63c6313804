#!/usr/bin/env python3
"""Rewrites the results table in loadtest/README.md (between the BENCH markers) from the
summary.json files of one bench.sh run."""

import json
import sys
from pathlib import Path

runs_dir, readme = Path(sys.argv[1]), Path(sys.argv[2])
rows = ["| run | connections | nodes | msg/s | delivered/s | lost | dup | p50 ms | p99 ms | p99.9 ms | max ms | connect/s | failed | RSS B/conn | RSS B/conn kept after leaving | node CPU µs/delivery |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


def num(v, fmt):
    return "n/a" if v is None else format(v, fmt)


for d in sorted(p for p in runs_dir.iterdir() if (p / "summary.json").exists()):
    s = json.loads((d / "summary.json").read_text())
    lat = s["latency_ms"]
    rows.append("| {} | {} | {} | {:g} | {:.0f} | {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.0f} | {} | {} | {} | {} |".format(
        d.name, s["connected"], len(s["nodes"]), s["rate"], s["delivered_per_s"], s["lost"], s["duplicates"],
        lat["p50"], lat["p99"], lat["p999"], lat["max"], s["connect_rate"], s["connect_failures"],
        num(s.get("rss_bytes_per_connection"), ".0f"), num(s.get("rss_bytes_retained_per_connection"), ".0f"),
        num(s.get("node_cpu_us_per_delivery"), ".2f")))
machine = next((json.loads((d / "summary.json").read_text())["machine"]
                for d in runs_dir.iterdir() if (d / "summary.json").exists()), "")
table = "\n".join([f"Machine: {machine}. Source: `{runs_dir}`.", "", *rows])
text = readme.read_text()
start, end = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")
print(table)
