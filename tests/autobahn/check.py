"""Reads the Autobahn|Testsuite reports of tests/autobahn/run.sh, writes the summary kept in
the repo, and exits 1 unless every case passed as the runner's header says."""

import collections
import glob
import json
import os
import sys

full, limits, out = sys.argv[1:4]
cases = json.load(open(os.path.join(full, "index.json")))["roomcast"]
by_behavior = collections.Counter(v["behavior"] for v in cases.values())
failed = sorted(k for k, v in cases.items() if v["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL"))

over_limit, not_1009 = 0, []
for path in sorted(glob.glob(os.path.join(limits, "roomcast_case_9_*.json"))):
    case = json.load(open(path))
    if case["behavior"] == "OK":
        continue  # within the default limit: echoed
    over_limit += 1
    if case.get("remoteCloseCode") != 1009 or not case.get("wasClean"):
        not_1009.append(case["id"])

summary = {
    "suite": "Autobahn|Testsuite 0.8.2 fuzzingclient against /echo",
    "cases": "* except 12.* and 13.*, limits.max_message_size = 16 MiB",
    "total": len(cases),
    "behavior": dict(sorted(by_behavior.items())),
    "failed": failed,
    "default_limits_group_9": {"over_the_limit": over_limit, "closed_1009_cleanly": over_limit - len(not_1009),
                               "not_closed_1009": not_1009},
}
with open(out, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
line = ", ".join(f"{n} {b}" for b, n in sorted(by_behavior.items()))
print(f"autobahn: {len(cases)} cases: {line}; group 9 at default limits: "
      f"{over_limit - len(not_1009)} of {over_limit} over the limit closed with 1009")
sys.exit(1 if failed or not_1009 or not cases else 0)
