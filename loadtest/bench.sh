#!/usr/bin/env bash
# Runs the benchmark matrix of loadtest/README.md on this machine and rewrites its results
# table (between the BENCH markers) from the summary.json files. One command:
#   loadtest/bench.sh            # results in loadtest/results/bench-<time>/
# Takes about 15 minutes; the machine should be otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p roomcast -p roomcast-loadtest
release="${CARGO_TARGET_DIR:-target}/release"
export ROOMCAST_BIN="$release/roomcast" LOADTEST_BIN="$release/roomcast-loadtest"
dir="loadtest/results/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$dir"
D="${BENCH_DURATION:-15}"

run() { # name scenario args...
  local name="$1"; shift
  echo "== $name"
  loadtest/run-local.sh "$@" --out "$dir/$name" --quiet | grep -vE '^ +report' || echo "   (run failed)"
}

run idle-5k-1node        storm  --connections 5000  --nodes 1
run burst-5k-1node       burst  --connections 5000  --nodes 1
run idle-19k-1node       storm  --connections 19000 --nodes 1
run idle-55k-3nodes      storm  --connections 55000 --nodes 3
run fanout-1k            fanout --connections 1000  --nodes 1 --rate 10 --duration "$D"
run fanout-10k           fanout --connections 10000 --nodes 1 --rate 10 --duration "$D"
run fanout-19k           fanout --connections 19000 --nodes 1 --rate 10 --duration "$D"
for rate in 20 40 60 80; do
  run "throughput-18k-${rate}ps" fanout --connections 18000 --nodes 1 --rate "$rate" --duration "$D"
done
run cluster-20k-3nodes   fanout --connections 20000 --nodes 3 --rate 10 --duration "$D"
run cluster-6.6k-1node   fanout --connections 6667  --nodes 1 --rate 10 --duration "$D"
run rooms-20k-2000rooms  rooms  --connections 20000 --nodes 3 --rate 2000 --duration "$D"
run churn-5k             churn  --connections 5000  --nodes 1 --rate 500 --duration "$D"

python3 loadtest/table.py "$dir" loadtest/README.md
echo "results: $dir"
