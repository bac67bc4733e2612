#!/usr/bin/env bash
# Runs `annals load` at several concurrencies, in-process and over HTTP against a fresh
# `annals serve` (durable, bank workload over 10,000 accounts), writes each --json report to
# target/bench-reports/, and draws app/bench/chart.svg from them.
#
#   app/bench/sweep.sh [DURATION=10s]
#
# Release build; takes about 8 × DURATION plus start-up.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-10s}"
out=target/bench-reports
mkdir -p "$out"
rm -f "$out"/*.json
[ -n "${NO_BUILD:-}" ] || cargo build --release -p annals-app --quiet
bin=target/release/annals

for c in 1 16 64 256 1024; do
  echo "== in-process, $c clients"
  "$bin" load --target inproc --workload bank --aggregates 10000 --concurrency "$c" \
    --duration "$duration" --quiet --json "$out/inproc-$c.json" | grep -E 'throughput|latency' || true
done

data="$(mktemp -d)"
log="$(mktemp)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data" "$log"' EXIT
"$bin" serve --addr 127.0.0.1:0 --data-dir "$data/store" --set log.level=warn,annals_app=info 2>"$log" &
pid=$!
for _ in $(seq 100); do
  url="$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 || true)"
  [ -n "$url" ] && curl -fs "$url/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
for c in 1 16 64 256; do
  echo "== HTTP, $c clients"
  "$bin" load --target "$url" --workload bank --aggregates 10000 --concurrency "$c" \
    --duration "$duration" --quiet --json "$out/http-$c.json" | grep -E 'throughput|latency' || true
done
kill -TERM "$pid"
wait "$pid" || true
python3 app/bench/chart.py app/bench/chart.svg "$out"/*.json
echo "wrote app/bench/chart.svg"
