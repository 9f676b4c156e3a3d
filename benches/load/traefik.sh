#!/usr/bin/env bash
# forwardAuth through real Traefik on the shipped config, on loopback only, bounded in time.
#
#   benches/load/traefik.sh                 # 10 s per target after a 2 s warm-up
#   DURATION=5s WARMUP=1s RUNS=1 benches/load/traefik.sh
#
# Traefik, nginx and the sidecar run pinned to CPU $SERVER_CPU (one nginx worker, one
# sidecar worker, Traefik's Go runtime sees one CPU); wrk runs pinned to CPU $CLIENT_CPU
# with one thread and $CONNS connections. Traefik runs the shipped traefik/*.yml through the
# tests' transformation (`traefik-config --bench`: the rate limits are taken out of the
# chains, since one client IP with one token would only measure 429s, and a `bench-noauth`
# router with no middlewares is added). The backend is nginx `return 200` for every target:
#   noauth    GET /noauth/x: Traefik alone (router with no middlewares)
#   ideal     GET /api/v1/mcp/servers, the shipped omni2-api chain with forwardAuth to nginx
#             `return 200` with the sidecar's own identity headers for the token (read from
#             the sidecar first, byte for byte): the ideal auth server
#   sidecar   the same request and chain, forwardAuth to the release auth-sidecar on the
#             shipped compose/config/auth-sidecar.yaml, one token (a verification-cache hit)
# The three targets run $RUNS times (default 3), interleaved, so drift hits all of them.
# It prints req/s, p99 and server CPU per request (Traefik + nginx worker + sidecar), then
# sidecar / ideal (goal: >= 0.95 req/s, p99 <= 1.1). Needs: traefik, nginx, wrk, taskset,
# curl; installed by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
RUNS=${RUNS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
source benches/load/lib.sh
need_tools traefik nginx wrk taskset curl

build_release
cargo build -q -p e2e --bin traefik-config
CONFIG_BIN=$PWD/target/debug/traefik-config

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

# The ideal auth server answers with the very identity headers the sidecar sends for this
# token (same names, same bytes), so Traefik copies the same answer in both targets.
IDENTITY=$(curl -fsS -D - -o /dev/null -H "$AUTHZ" -H 'X-Forwarded-Method: GET' \
  -H 'X-Forwarded-Proto: http' -H 'X-Forwarded-Host: localhost' \
  -H 'X-Forwarded-Uri: /api/v1/mcp/servers' -H 'X-Forwarded-For: 127.0.0.1' \
  "http://127.0.0.1:$SIDECAR_PORT/verify" | tr -d '\r' | grep -iE '^x-(user|auth)-')
[ -n "$IDENTITY" ] || { echo "the sidecar sent no identity headers" >&2; exit 1; }
ADD_HEADERS=$(awk -F': ' '{printf "      add_header %s \"%s\";\n", $1, $2}' <<<"$IDENTITY")

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
$ADD_HEADERS
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
echo "ideal's identity headers (the sidecar's own for this token): $(cut -d: -f1 <<<"$IDENTITY" | paste -sd' ')"
echo "== through Traefik: wrk -t1 -c$CONNS -d$DURATION (after $WARMUP warm-up); servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU; backend nginx return 200; $RUNS rounds, targets interleaved"
RATIOS=()
for round in $(seq 1 "$RUNS"); do
  echo "-- round $round"
  start_traefik "127.0.0.1:$AUTH_PORT"
  run noauth /noauth/x "$TRAEFIK_PID" "$NGINX_WORKER"
  run ideal /api/v1/mcp/servers "$TRAEFIK_PID" "$NGINX_WORKER"
  stop_traefik
  start_traefik "127.0.0.1:$SIDECAR_PORT"
  d0=$(decisions "$SIDECAR_ADMIN")
  run sidecar /api/v1/mcp/servers "$TRAEFIK_PID" "$NGINX_WORKER" "$SIDECAR_PID"
  stop_traefik
  decided=$(( $(decisions "$SIDECAR_ADMIN") - d0 ))
  # Every request must have been decided by the sidecar (no Traefik-side shortcut).
  [ "$decided" -ge "$(awk -v r="${RPS[sidecar]}" -v d="${DURATION%s}" 'BEGIN {printf "%d", r * d}')" ] ||
    { echo "the sidecar decided only $decided requests" >&2; exit 1; }
  r=$(ratio "${RPS[sidecar]}" "${RPS[ideal]}")
  p=$(ratio "$(to_us "${P99[sidecar]}")" "$(to_us "${P99[ideal]}")")
  c=$(ratio "${CPU[sidecar]}" "${CPU[ideal]}")
  RATIOS+=("$r $p $c")
  echo "sidecar / ideal: req/s $r   p99 $p   CPU/req $c   (noauth / ideal req/s $(ratio "${RPS[noauth]}" "${RPS[ideal]}"); sidecar decided $decided requests incl. warm-up)"
done
echo
echo "== sidecar / ideal over $RUNS rounds (goal: req/s >= 0.95, p99 <= 1.10)"
printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{r[NR]=$1; p[NR]=$2; c[NR]=$3; line = line sprintf(" %s", $1)}
  END {m = int((NR + 1) / 2); printf "req/s ratios:%s   median req/s %s\n", line, r[m]}'
printf '%s\n' "${RATIOS[@]}" | awk '{print $2}' | sort -n | awk '{p[NR]=$1; line = line " " $1} END {printf "p99 ratios:  %s   median p99 %s\n", line, p[int((NR + 1) / 2)]}'
