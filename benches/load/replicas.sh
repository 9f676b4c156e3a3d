#!/usr/bin/env bash
# Aggregate forwardAuth throughput of 1, 2 and 3 sidecar replicas on this machine, on
# loopback only, bounded in time.
#
#   benches/load/replicas.sh             # 3 rounds of 3 s per measurement
#   DURATION=10s ROUNDS=5 benches/load/replicas.sh
#
# Each replica is its own process (one worker, like a pod with one core's worth of work),
# on its own port; CLIENTS wrk processes (one thread, CONNS/CLIENTS connections each) run at
# the same time spread round-robin over the replicas, and their req/s are summed: the client
# spreads over the replicas the way a Service does, and is the same for every N. Nothing is pinned: servers and wrk share every core, so on a 2-core machine
# the replicas compete with each other AND with wrk for the cores; that bounds the scaling,
# not anything the replicas share (they share nothing: a cached token is verified from each
# replica's own cache). The floor, measured in the same run with the same client setup:
# nginx `return 200` with N worker processes, so "sidecar N / nginx N" says how much of
# the machine's capacity at N the sidecar gets, and "N / 1" how it scales.
# For each N, nginx and the sidecars are measured alternately ROUNDS times and the median of
# each is kept, so a burst of other work on the machine hits both sides alike.
# Needs: nginx, wrk, curl (installed by .ci/run). Compare ratios within one run.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-48}
MAX=${MAX:-3}
CLIENTS=${CLIENTS:-3}
source benches/load/lib.sh
need_tools nginx wrk curl

build_release
dev_config >"$WORK/sidecar.yaml"
TOKEN=$("$BIN" mint --config "$WORK/sidecar.yaml" --sub load-user --role user --ttl 1h)
verify_lua "$TOKEN" >"$WORK/cached.lua"

# Sums the req/s of CLIENTS wrk processes running at once, the i-th on URL i mod N: the
# client side is the same whatever N, so only the servers change. Fails on any non-2xx.
warm() { # url...
  local urls=("$@") conns=$((CONNS / CLIENTS)) i pids=()
  for i in $(seq 0 $((CLIENTS - 1))); do
    wrk -t1 -c"$conns" -d1s -s "$WORK/cached.lua" "${urls[i % ${#urls[@]}]}" >/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
}
aggregate() { # url...
  local urls=("$@") conns=$((CONNS / CLIENTS)) i pids=()
  for i in $(seq 0 $((CLIENTS - 1))); do
    wrk -t1 -c"$conns" -d"$DURATION" -s "$WORK/cached.lua" "${urls[i % ${#urls[@]}]}" >"$WORK/wrk.$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  if grep -q "Non-2xx" "$WORK"/wrk.*; then cat "$WORK"/wrk.*; exit 1; fi
  awk '/Requests\/sec/ {s += $2} END {printf "%.0f", s}' "$WORK"/wrk.*
  rm -f "$WORK"/wrk.*
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

declare -A NGINX SIDECAR
start_nginx() { # workers -> sets NGINX_PORT, NGINX_PID
  NGINX_PORT=$(free_port)
  mkdir -p "$WORK/nginx$1/logs"
  cat >"$WORK/nginx$1/nginx.conf" <<NGINX
worker_processes $1;
pid $WORK/nginx$1/nginx.pid;
error_log $WORK/nginx$1/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  # The default (1000) closes each connection every 1000 requests; wrk keeps them open.
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    location / { add_header X-User-Id alice; add_header X-User-Role user; return 200; }
  }
}
NGINX
  nginx -p "$WORK/nginx$1" -c "$WORK/nginx$1/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_up "http://127.0.0.1:$NGINX_PORT/"
}

SIDECAR_URLS=()
start_replica() {
  local port; port=$(free_port)
  RUST_LOG=warn "$BIN" serve --config "$WORK/sidecar.yaml" --workers 1 \
    --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$port/readyz"
  SIDECAR_URLS+=("http://127.0.0.1:$port/verify")
}

print_context
echo "== aggregate throughput, cached token: $CLIENTS x wrk -t1 -c$((CONNS / CLIENTS)) -d$DURATION round-robin over the replicas, median of $ROUNDS alternating rounds, nothing pinned, $(nproc) cores"
for n in $(seq 1 "$MAX"); do
  start_nginx "$n"
  urls=(); for _ in $(seq 1 "$n"); do urls+=("http://127.0.0.1:$NGINX_PORT/verify"); done
  start_replica
  warm "${urls[@]}"; warm "${SIDECAR_URLS[@]}"
  ng=(); sc=()
  for _ in $(seq 1 "$ROUNDS"); do
    ng+=("$(aggregate "${urls[@]}")")
    sc+=("$(aggregate "${SIDECAR_URLS[@]}")")
  done
  NGINX[$n]=$(median "${ng[@]}")
  SIDECAR[$n]=$(median "${sc[@]}")
  kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
  printf 'N=%d  nginx (%d workers) %8s req/s   sidecar (%d replicas) %8s req/s   sidecar/nginx %s\n' \
    "$n" "$n" "${NGINX[$n]}" "$n" "${SIDECAR[$n]}" "$(ratio "${SIDECAR[$n]}" "${NGINX[$n]}")"
done
echo
echo "== scaling against one replica (nginx's scaling is what this machine allows)"
for n in $(seq 2 "$MAX"); do
  echo "N=$n  sidecar ${n}/1 $(ratio "${SIDECAR[$n]}" "${SIDECAR[1]}")   nginx ${n}/1 $(ratio "${NGINX[$n]}" "${NGINX[1]}")"
done
