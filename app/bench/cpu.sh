#!/usr/bin/env bash
# CPU per command (not a test): starts one server from a release build (`annals serve`, or the
# plain baseline when BIN is a binary named `baseline`) on a fresh durable data directory, runs
# the same wrk load as http.sh (bank commands, 64 connections, 10 s) under
# `perf stat -e task-clock,context-switches -p PID`, and prints the rate, the latencies, and the
# server's CPU time and context switches per command.
#
#   app/bench/cpu.sh BIN [annals serve flags…]
#   app/bench/cpu.sh target/release/annals --set runtime.arbiters=1
#   app/bench/cpu.sh target/release/baseline
#   PERF_RECORD=out.data app/bench/cpu.sh BIN   # also a perf profile of 7 s (call graphs by
#                                               # frame pointers; PERF_CG="--call-graph dwarf")
#
# Needs wrk, curl and perf (Debian: apt-get install wrk curl linux-perf).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:?usage: app/bench/cpu.sh BIN [flags…]}"
shift
for tool in wrk curl perf; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 2; }
done
work="$(mktemp -d)"
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
if [ "$(basename "$bin")" = baseline ]; then
  "$bin" --addr 127.0.0.1:0 --data-dir "$work/data" 2>"$work/log" &
else
  "$bin" serve --addr 127.0.0.1:0 --data-dir "$work/data" --set log.level=warn,annals_app=info "$@" 2>"$work/log" &
fi
pid=$!
url=""
for _ in $(seq 300); do
  url="$(grep -o 'http://127.0.0.1:[0-9]*' "$work/log" | head -1 || true)"
  [ -n "$url" ] && curl -fs "$url/readyz" >/dev/null 2>&1 && break
  url=""
  sleep 0.1
done
[ -n "$url" ] || { echo "the server did not become ready:" >&2; cat "$work/log" >&2; exit 1; }
recorder=""
if [ -n "${PERF_RECORD:-}" ]; then
  # shellcheck disable=SC2086 # PERF_CG is a list of arguments
  (sleep 2; timeout 7 perf record -F 999 ${PERF_CG:--g} -o "$PERF_RECORD" -p "$pid" \
    >/dev/null 2>&1 || true) &
  recorder=$!
fi
perf stat -e task-clock,context-switches -p "$pid" -o "$work/stat" -- \
  wrk -t1 -c64 -d10s --latency -s app/bench/commands.lua "$url" >"$work/wrk"
[ -z "$recorder" ] || wait "$recorder"
rate="$(sed -n 's/^requests\/s: //p' "$work/wrk")"
latency="$(sed -n 's/^latency //p' "$work/wrk")"
ms="$(awk '/task-clock/ {gsub(",", "", $1); print $1}' "$work/stat")"
switches="$(awk '/context-switches/ {gsub(",", "", $1); print $1}' "$work/stat")"
python3 -c "
rate, ms, switches = float('$rate'), float('$ms'), float('$switches')
print(f'{rate:.0f} req/s, $latency; CPU {ms * 1000 / (rate * 10):.1f} us/cmd, '
      f'{switches / (rate * 10):.2f} context switches/cmd')"
