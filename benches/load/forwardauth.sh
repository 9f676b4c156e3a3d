#!/usr/bin/env bash
# Side-by-side load test of the forwardAuth path, on loopback only, bounded in time.
#
#   benches/load/forwardauth.sh            # 10 s per target (the issue's setting)
#   DURATION=5s benches/load/forwardauth.sh
#
# Servers run pinned to CPU 0 (one nginx worker, one sidecar worker); wrk runs pinned to
# CPU 1 with one thread and 64 connections. Three targets in the same run:
#   nginx     `return 200` with two headers, sent the same request bytes: the floor for
#             "parse this request, answer 200 with headers"
#   cached    the sidecar, one repeated token: a verification-cache hit per request
#   uncached  the sidecar, a fresh token per request (a wrk Lua script rotates through
#             pre-minted HS256 tokens, each with its own sub and jti): full validation every
#             time; the cache hit/miss counters are read back to prove it
# It prints req/s, p99 latency and server CPU per request for each, then the ratios against
# nginx. Needs: nginx, wrk, taskset (util-linux), curl; installed by .ci/run. Machines are
# noisy: compare the ratios of one run, not absolute numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
source benches/load/lib.sh
need_tools nginx wrk taskset curl

build_release
dev_config >"$WORK/sidecar.yaml"

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      add_header X-User-Id alice;
      add_header X-User-Role user;
      return 200;
    }
  }
}
NGINX
taskset -c "$SERVER_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_up "http://127.0.0.1:$NGINX_PORT/"
# The worker does the work; count its CPU (the master only supervises).
NGINX_WORKER=$(pgrep -P "${PIDS[0]}" | head -1)

start_sidecar() { # config -> sets SIDECAR_PID, SIDECAR_PORT
  SIDECAR_PORT=$(free_port)
  local t0; t0=$(date +%s%N)
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" serve --config "$1" --workers 1 \
    --listen "127.0.0.1:$SIDECAR_PORT" >/dev/null 2>&1 &
  SIDECAR_PID=$!
  PIDS+=("$SIDECAR_PID")
  wait_up "http://127.0.0.1:$SIDECAR_PORT/readyz"
  READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
  IDLE_RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$SIDECAR_PID/status")
}

TOKEN=$("$BIN" mint --config "$WORK/sidecar.yaml" --sub load-user --role user --ttl 1h)
HEADERS=$(verify_lua "")
verify_lua "$TOKEN" >"$WORK/cached.lua"

# Fresh tokens: more than the uncached run can use (checked below from the cache counters).
FRESH=${FRESH:-800000}
python3 - "$WORK/tokens.txt" "$FRESH" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
secret = os.environ["AUTH_SIDECAR_DEV_SECRET"].encode()
head = b64(json.dumps({"alg": "HS256", "kid": "dev-hs256", "typ": "JWT"}).encode())
now = int(time.time())
with open(sys.argv[1], "wb") as out:
    for i in range(int(sys.argv[2])):
        claims = {"iss": "omni2-dev", "aud": "omni2", "sub": f"user-{i}", "role": "user",
                  "jti": f"load-{i}", "iat": now, "exp": now + 3600}
        signing = head + b"." + b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = b64(hmac.new(secret, signing, hashlib.sha256).digest())
        out.write(signing + b"." + sig + b"\n")
PY
cat >"$WORK/fresh.lua" <<LUA
$HEADERS
local tokens, i = {}, 0
for line in io.lines("$WORK/tokens.txt") do tokens[#tokens + 1] = "Bearer " .. line end
request = function()
  i = i + 1
  wrk.headers["Authorization"] = tokens[(i - 1) % #tokens + 1]
  return wrk.format()
end
LUA

metric() { # port name -> value
  curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

declare -A RPS P99 CPU
run() { # name url pid [lua]
  local name=$1 url=$2 pid=$3 lua=${4:-}
  local args=(-t1 -c"$CONNS" -d"$DURATION" --latency)
  [ -n "$lua" ] && args+=(-s "$lua")
  # Warm up (connections, caches), then measure. The fresh-token run needs no warm-up
  # (and must not spend its tokens on one).
  [ "$name" = uncached ] || taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d2s ${lua:+-s "$lua"} "$url" >/dev/null
  local before; before=$(cpu_ticks "$pid")
  local out; out=$(taskset -c "$CLIENT_CPU" wrk "${args[@]}" "$url")
  local after; after=$(cpu_ticks "$pid")
  local requests; requests=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers:"; echo "$out"; exit 1; fi
  RPS[$name]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  P99[$name]=$(awk '$1 == "99%" {print $2}' <<<"$out")
  CPU[$name]=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$clk_tck" 'BEGIN {printf "%.2f", t / hz / n * 1e6}')
  printf '%-9s %10s req/s   p99 %8s   server CPU %6s us/req\n' "$name" "${RPS[$name]}" "${P99[$name]}" "${CPU[$name]}"
}

print_context
echo "== forwardAuth load: wrk -t1 -c$CONNS -d$DURATION; servers on CPU $SERVER_CPU (1 worker), wrk on CPU $CLIENT_CPU"
# The same request bytes to every target: nginx gets (and ignores) the sidecar's headers.
run nginx "http://127.0.0.1:$NGINX_PORT/verify" "$NGINX_WORKER" "$WORK/cached.lua"
start_sidecar "$WORK/sidecar.yaml"
echo "sidecar: start to ready ${READY_MS} ms, idle RSS $((IDLE_RSS_KB / 1024)) MiB (${IDLE_RSS_KB} KiB)"
run cached "http://127.0.0.1:$SIDECAR_PORT/verify" "$SIDECAR_PID" "$WORK/cached.lua"
hits0=$(metric "$SIDECAR_PORT" auth_sidecar_token_cache_hits_total)
miss0=$(metric "$SIDECAR_PORT" auth_sidecar_token_cache_misses_total)
run uncached "http://127.0.0.1:$SIDECAR_PORT/verify" "$SIDECAR_PID" "$WORK/fresh.lua"
hits=$(( $(metric "$SIDECAR_PORT" auth_sidecar_token_cache_hits_total) - hits0 ))
misses=$(( $(metric "$SIDECAR_PORT" auth_sidecar_token_cache_misses_total) - miss0 ))
echo "uncached run: $misses cache misses, $hits hits (hits > 0 means FRESH=$FRESH tokens ran out)"
echo
echo "== ratios against nginx (targets: cached >= 0.90 req/s, CPU <= 1.2, p99 <= 1.3; uncached >= 0.50 req/s)"
echo "cached   req/s ratio $(ratio "${RPS[cached]}" "${RPS[nginx]}")   CPU/req ratio $(ratio "${CPU[cached]}" "${CPU[nginx]}")   p99 ratio $(ratio "$(to_us "${P99[cached]}")" "$(to_us "${P99[nginx]}")")"
echo "uncached req/s ratio $(ratio "${RPS[uncached]}" "${RPS[nginx]}")   CPU/req ratio $(ratio "${CPU[uncached]}" "${CPU[nginx]}")   p99 ratio $(ratio "$(to_us "${P99[uncached]}")" "$(to_us "${P99[nginx]}")")"
