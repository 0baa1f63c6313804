#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client against a roomcast node's /echo, twice:
#  1. every case but 12.* and 13.* (permessage-deflate is not offered), with
#     limits.max_message_size at 16 MiB so group 9 fits: each case must be OK, NON-STRICT
#     or INFORMATIONAL;
#  2. group 9 at the default limits: each case over the limit must end with a clean 1009
#     close from the node, never a dropped connection.
# Writes tests/autobahn/summary.json (kept in the repo) and exits non-zero on a failure.
#   tests/autobahn/run.sh [ROOMCAST_BIN]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-${ROOMCAST_BIN:-${CARGO_TARGET_DIR:-target}/debug/roomcast}}"
venv=.venv-autobahn

if [ ! -x "$venv/bin/wstest" ]; then
  py27="$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python"
  [ -x "$py27" ] || py27="$(command -v python2.7 || true)"
  [ -n "$py27" ] && [ -x "$py27" ] || { echo "autobahn: Python 2.7 is needed (pyenv install 2.7.18)" >&2; exit 69; }
  "$py27" -m pip install -q --disable-pip-version-check "virtualenv<20.22" 2>/dev/null
  "$py27" -m virtualenv -q "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/autobahn/requirements.txt 2>/dev/null
fi

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

run() { # name cases exclude node-args...
  local name="$1" cases="$2" exclude="$3"; shift 3
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$bin" --listen "127.0.0.1:$port" --node-id autobahn "$@" >"$work/$name-node.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
  cat >"$work/$name.json" <<JSON
{"outdir": "$work/$name", "servers": [{"agent": "roomcast", "url": "ws://127.0.0.1:$port/echo"}],
 "cases": $cases, "exclude-cases": $exclude, "exclude-agent-cases": {}}
JSON
  timeout 900 "$venv/bin/wstest" -m fuzzingclient -s "$work/$name.json" >"$work/$name.log" 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

run full '["*"]' '["12.*", "13.*"]' --set limits.max_message_size=16777216 --set limits.outbox_max_bytes=33554432
run limits '["9.*"]' '[]'
python3 tests/autobahn/check.py "$work/full" "$work/limits" tests/autobahn/summary.json
