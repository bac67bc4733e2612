#!/usr/bin/env bash
# The HTTP benchmark of `annals serve` (not a test): starts a release build in durable mode on
# a fresh temp data directory, runs wrk with 64 connections over 10,000 accounts, prints wrk's
# report, then stops the server and checks with `annals stats` that the store holds the events.
#
#   app/bench/http.sh [DURATION=20s] [CONNECTIONS=64] [THREADS=2]
#
# Needs wrk (Debian: apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-20s}"
connections="${2:-64}"
threads="${3:-2}"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
[ -n "${NO_BUILD:-}" ] || cargo build --release -p annals-app --quiet
data="$(mktemp -d)"
log="$(mktemp)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data" "$log"' EXIT
target/release/annals serve --addr 127.0.0.1:0 --data-dir "$data/store" \
  --set log.level=warn,annals_app=info 2>"$log" &
pid=$!
for _ in $(seq 100); do
  url="$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 || true)"
  [ -n "$url" ] && curl -fs "$url/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "server: $url (durable), wrk -t$threads -c$connections -d$duration"
wrk -t"$threads" -c"$connections" -d"$duration" --latency -s app/bench/commands.lua "$url"
curl -fs "$url/metrics" | grep -E '^annals_journal_(appends|fsyncs|batches)_total' || true
kill -TERM "$pid"
wait "$pid"
target/release/annals stats --data-dir "$data/store" 2>/dev/null | head -20 || true
