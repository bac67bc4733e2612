#!/usr/bin/env bash
# Three `annals serve` nodes on one PostgreSQL database behind nginx, on this machine: the
# README's "Running several nodes", as a script that CI runs (so the walk-through stays true).
#
#   app/deploy/cluster.sh [ANNALS_BINARY]
#
# It starts nodes on 127.0.0.1:8081-8083 (schema annals_cluster_demo in the database `test`),
# nginx on 127.0.0.1:8080 with nginx.conf and upstreams.local.conf, runs `annals load` through
# nginx with --verify, kills one node (kill -9), runs it again, and checks that the read side
# moved to the survivors. Needs nginx (installed from Debian's packages if missing) and the
# PostgreSQL server of .ci/postgres. Everything it starts is stopped on exit.
set -euo pipefail
deploy="$(cd "$(dirname "$0")" && pwd)"
# The binary, relative to where the script is called from (default: the debug build).
annals="${1:-$deploy/../../target/debug/annals}"
annals="$(cd "$(dirname "$annals")" && pwd)/$(basename "$annals")"
cd "$deploy"
url="${ANNALS_CLUSTER_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
schema=annals_cluster_demo
work="$(mktemp -d)"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
  psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! command -v nginx >/dev/null 2>&1; then
  echo "nginx is missing; installing Debian's nginx-light" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >/dev/null
fi
psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null

# 1. Three nodes, each with its own name, all on the same schema.
for i in 1 2 3; do
  "$annals" serve --addr "127.0.0.1:808$i" \
    --set store.backend=postgres \
    --set store.postgres_url="$url" \
    --set store.postgres_schema="$schema" \
    --set store.postgres_node_id="node$i" \
    --set store.postgres_lease_timeout_ms=3000 \
    >"$work/node$i.log" 2>&1 &
  pids+=("$!")
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:808$i/readyz" >/dev/null && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:808$i/readyz" >/dev/null || { cat "$work/node$i.log"; exit 1; }
done

# 2. nginx in front, with the same nginx.conf as the compose file.
mkdir -p "$work/nginx/tmp"
cp "$deploy/nginx.conf" "$work/nginx/nginx.conf"
cp "$deploy/upstreams.local.conf" "$work/nginx/upstreams.conf"
nginx -t -q -c "$work/nginx/nginx.conf" -p "$work/nginx"
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
for _ in $(seq 1 50); do
  curl -sf http://127.0.0.1:8080/readyz >/dev/null && break
  sleep 0.1
done

# 3. Orders through nginx, verified: nothing acknowledged lost, every saga decided, read
#    models equal to the log.
"$annals" load --target http://127.0.0.1:8080 --workload orders --aggregates 50 \
  --concurrency 16 --commands 300 --verify

# 4. Kill the node that runs the read side; the others take it over.
owner="$(curl -sf http://127.0.0.1:8080/v1/projections | grep -o '"owner":"node[0-9]"' | head -1 | grep -o 'node[0-9]')"
index="${owner#node}"
echo "killing $owner (kill -9), which runs the read side"
kill -9 "${pids[$((index - 1))]}"
"$annals" load --target http://127.0.0.1:8080 --workload orders --aggregates 50 \
  --concurrency 16 --commands 300 --verify
survivor=$(( index % 3 + 1 ))
owners="$(curl -sf "http://127.0.0.1:808$survivor/v1/projections" | grep -o '"owner":"node[0-9]"' | sort -u)"
echo "owners now: $owners"
if echo "$owners" | grep -q "\"$owner\""; then
  echo "FAILED: the killed node still owns part of the read side" >&2
  exit 1
fi
echo "cluster walk-through ok"
