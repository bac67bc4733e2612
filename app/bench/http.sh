#!/usr/bin/env bash
# The HTTP benchmark (not a test): `annals serve` and the plain baseline server
# (app/bench/baseline/: actix-web + an actor per account + sled group commit), one after the
# other with the same wrk settings. Each starts from a release build in durable mode on a fresh
# temporary data directory and gets bank commands over 10,000 accounts (app/bench/commands.lua);
# wrk's report of each is printed as it finishes, then both summaries side by side.
#
#   app/bench/http.sh [DURATION=10s] [CONNECTIONS=64] [THREADS=1]
#   ONLY=annals app/bench/http.sh     # one server only (or ONLY=baseline)
#   ANNALS_ARGS="--set runtime.arbiters=1" app/bench/http.sh   # more flags for annals serve
#   NO_BUILD=1 app/bench/http.sh      # use the binaries already built
#
# Binaries come from $CARGO_TARGET_DIR/release (target/release if it is not set). Needs wrk
# (Debian: apt-get install wrk) and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-10s}"
connections="${2:-64}"
threads="${3:-1}"
only="${ONLY:-}"
case "$only" in
  "" | annals | baseline) ;;
  *) echo "ONLY must be annals or baseline, not $only" >&2; exit 2 ;;
esac
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install $tool)" >&2; exit 2; }
done
bin="${CARGO_TARGET_DIR:-target}/release"
[ -n "${NO_BUILD:-}" ] || cargo build --release -p annals-app -p annals-bench-baseline --quiet

work="$(mktemp -d)"
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

# bench NAME COMMAND…: starts the server (which prints its URL on stderr), waits until
# /readyz answers, runs wrk, stops the server, and keeps wrk's summary in $work/NAME.
bench() {
  local name="$1" url=""
  local log="$work/$name.log"
  shift
  "$@" 2>"$log" &
  pid=$!
  for _ in $(seq 300); do
    url="$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 || true)"
    [ -n "$url" ] && curl -fs "$url/readyz" >/dev/null 2>&1 && break
    url=""
    sleep 0.1
  done
  [ -n "$url" ] || { echo "$name did not become ready:" >&2; cat "$log" >&2; exit 1; }
  echo "== $name: $url (durable), wrk -t$threads -c$connections -d$duration"
  wrk -t"$threads" -c"$connections" -d"$duration" --latency -s app/bench/commands.lua "$url" \
    | tee "$work/$name.wrk"
  if [ "$name" = annals ]; then
    curl -fs "$url/metrics" | grep -E '^annals_journal_(appends|fsyncs|batches)_total' || true
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
  # commands.lua's `done` prints "requests/s: N" and "latency p50 … ms, p90 …, p99 …, max …".
  local rate latency errors
  rate="$(sed -n 's/^requests\/s: //p' "$work/$name.wrk")"
  latency="$(sed -n 's/^latency //p' "$work/$name.wrk")"
  errors="$(sed -n 's/^non-2xx\/3xx responses: \([0-9]*\).*/\1/p' "$work/$name.wrk")"
  printf '%-9s %s req/s, %s; non-2xx: %s\n' "$name:" "$rate" "$latency" "$errors" \
    >"$work/$name.summary"
  echo
}

if [ "$only" != baseline ]; then
  bench annals "$bin/annals" serve --addr 127.0.0.1:0 --data-dir "$work/annals-store" \
    --set log.level=warn,annals_app=info ${ANNALS_ARGS:-}
fi
if [ "$only" != annals ]; then
  bench baseline "$bin/baseline" --addr 127.0.0.1:0 --data-dir "$work/baseline-store"
fi
echo "== wrk -t$threads -c$connections -d$duration, bank commands, durable (non-2xx: 422 rejections)"
cat "$work"/annals.summary "$work"/baseline.summary 2>/dev/null
