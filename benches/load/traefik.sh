#!/usr/bin/env bash
# forwardAuth through real Traefik on the shipped config, on loopback only, bounded in time.
#
#   benches/load/traefik.sh                 # 10 s per target after a 2 s warm-up
#   DURATION=5s WARMUP=1s benches/load/traefik.sh
#
# Traefik, nginx and the sidecar run pinned to CPU $SERVER_CPU (one nginx worker, one
# sidecar worker, Traefik's Go runtime sees one CPU); wrk runs pinned to CPU $CLIENT_CPU
# with one thread and $CONNS connections. Traefik runs the shipped traefik/*.yml through the
# tests' transformation (`traefik-config --bench`: the rate limits are taken out of the
# chains, since one client IP with one token would only measure 429s, and a `bench-noauth`
# router with no middlewares is added). The backend is nginx `return 200` for every target:
#   noauth    GET /noauth/x: Traefik alone (router with no middlewares)
#   ideal     GET /api/v1/mcp/servers, the shipped omni2-api chain with forwardAuth to nginx
#             `return 200` (+ identity headers): the ideal auth server
#   sidecar   the same request and chain, forwardAuth to the release auth-sidecar on the
#             shipped compose/config/auth-sidecar.yaml, one token (a verification-cache hit)
# It prints req/s, p99 and server CPU per request (Traefik + nginx worker + sidecar), then
# sidecar / ideal (goal: >= 0.95 req/s, p99 <= 1.1). Needs: traefik, nginx, wrk, taskset,
# curl; installed by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
source benches/load/lib.sh
need_tools traefik nginx wrk taskset curl

# The same build as the e2e tests (tests/src/process.rs), so neither rebuilds the other's.
cargo build --release -q -p auth-sidecar --bin auth-sidecar -p omni2-core --bin omni2
cargo build -q -p e2e --bin traefik-config
BIN=$PWD/target/release/auth-sidecar
CONFIG_BIN=$PWD/target/debug/traefik-config

# One nginx worker: port AUTH is the ideal forwardAuth server, port BACKEND the backend.
AUTH_PORT=$(free_port)
BACKEND_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$AUTH_PORT;
    location / {
      add_header X-User-Id load-user;
      add_header X-User-Role user;
      return 200;
    }
  }
  server {
    listen 127.0.0.1:$BACKEND_PORT;
    location / { return 200; }
  }
}
NGINX
taskset -c "$SERVER_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGINX_MASTER=$!
wait_up "http://127.0.0.1:$BACKEND_PORT/"
NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)

# The release sidecar on the shipped config (secrets are throwaway test values).
export OMNI2_JWT_SECRET=load-jwt-secret-0123456789abcdefghijklmnopqrstuv
export OMNI2_IDENTITY_SECRET=load-identity-secret-0123456789abcdefghijklmno
SIDECAR_PORT=$(free_port)
SIDECAR_ADMIN=$(free_port)
AUTH_SIDECAR_LISTEN=127.0.0.1:$SIDECAR_PORT AUTH_SIDECAR_ADMIN_LISTEN=127.0.0.1:$SIDECAR_ADMIN \
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" serve --config compose/config/auth-sidecar.yaml \
  --workers 1 >"$WORK/sidecar.log" 2>&1 &
PIDS+=($!)
SIDECAR_PID=$!
wait_up "http://127.0.0.1:$SIDECAR_ADMIN/readyz"
TOKEN=$("$BIN" mint --config compose/config/auth-sidecar.yaml --sub load-user --role user --ttl 1h)
AUTHZ="Authorization: Bearer $TOKEN"

decisions() { # sum of auth_sidecar_decisions_total: one per /verify
  curl -fsS "http://127.0.0.1:$SIDECAR_ADMIN/metrics" |
    awk '$1 ~ /^auth_sidecar_decisions_total/ {s += $2} END {printf "%d", s}'
}

start_traefik() { # forwardAuth address -> sets TRAEFIK_PID, WEB
  local dir="$WORK/traefik-$1"
  local out; out=$("$CONFIG_BIN" --bench "$dir" "$1" "127.0.0.1:$BACKEND_PORT")
  WEB=$(awk -F= '$1 == "web" {print $2}' <<<"$out")
  taskset -c "$SERVER_CPU" traefik --configFile="$dir/traefik.yml" >"$dir/traefik.log" 2>&1 &
  TRAEFIK_PID=$!
  PIDS+=("$TRAEFIK_PID")
  wait_up "http://$WEB/api/v1/mcp/servers" -H "$AUTHZ"
  wait_up "http://$WEB/noauth/x"
}
stop_traefik() { kill "$TRAEFIK_PID"; wait "$TRAEFIK_PID" 2>/dev/null || true; }

declare -A RPS P99 CPU
run() { # name path pid...
  local name=$1 path=$2; shift 2
  local url="http://$WEB$path"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" -H "$AUTHZ" "$url" >/dev/null
  local before; before=$(cpu_ticks "$@")
  local out; out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "$AUTHZ" "$url")
  local after; after=$(cpu_ticks "$@")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "$name: errors or non-2xx answers:"; echo "$out"; exit 1; fi
  local requests; requests=$(awk '/requests in/ {print $1}' <<<"$out")
  RPS[$name]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  P99[$name]=$(awk '$1 == "99%" {print $2}' <<<"$out")
  CPU[$name]=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$clk_tck" 'BEGIN {printf "%.2f", t / hz / n * 1e6}')
  printf '%-8s %10s req/s   p99 %8s   server CPU %6s us/req\n' "$name" "${RPS[$name]}" "${P99[$name]}" "${CPU[$name]}"
}

print_context
echo "traefik $(traefik version | awk '/^Version/ {print $2}'), $(nginx -v 2>&1 | cut -d' ' -f3)"
echo "== through Traefik: wrk -t1 -c$CONNS -d$DURATION (after $WARMUP warm-up); servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU; backend nginx return 200"
start_traefik "127.0.0.1:$AUTH_PORT"
run noauth /noauth/x "$TRAEFIK_PID" "$NGINX_WORKER"
run ideal /api/v1/mcp/servers "$TRAEFIK_PID" "$NGINX_WORKER"
stop_traefik
start_traefik "127.0.0.1:$SIDECAR_PORT"
d0=$(decisions)
run sidecar /api/v1/mcp/servers "$TRAEFIK_PID" "$NGINX_WORKER" "$SIDECAR_PID"
echo "sidecar decided $(( $(decisions) - d0 )) requests (warm-up and measured run)"
echo
echo "== sidecar / ideal (goal: req/s >= 0.95, p99 <= 1.10); noauth / ideal shows what forwardAuth costs"
echo "req/s ratio $(ratio "${RPS[sidecar]}" "${RPS[ideal]}")   p99 ratio $(ratio "$(to_us "${P99[sidecar]}")" "$(to_us "${P99[ideal]}")")   CPU/req ratio $(ratio "${CPU[sidecar]}" "${CPU[ideal]}")"
echo "noauth / ideal req/s $(ratio "${RPS[noauth]}" "${RPS[ideal]}")"
