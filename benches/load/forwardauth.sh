#!/usr/bin/env bash
# Side-by-side load test of the forwardAuth path, on loopback only, bounded in time.
#
#   benches/load/forwardauth.sh                   # 1 round, 10 s per target
#   ROUNDS=3 DURATION=5s benches/load/forwardauth.sh
#
# Servers run pinned to CPU $SERVER_CPU (one worker each), wrk pinned to CPU $CLIENT_CPU
# with one thread and $CONNS connections. The same request bytes go to every target:
#   nginx     `return 200` with the sidecar's identity headers for the load token: the floor
#             for "parse this request, answer 200 with these headers"
#   actix     benches/src/bin/actix-floor.rs: plain actix-web answering the same, with the
#             sidecar's HttpServer settings: what actix-web itself costs
#   cached    the sidecar, one repeated token: a verification-cache hit per request
#   hs256, rs256, es256
#             the sidecar, a fresh token per request (minted here by load-tokens, each with
#             its own sub and jti; the RS256 and ES256 keys are made here by openssl): full
#             validation every time. A fresh run stops when its tokens are spent (FRESH_HS,
#             FRESH_RS, FRESH_ES per round), and the cache counters are read back to prove
#             no token hit the cache
# Targets alternate for ROUNDS rounds; medians are compared, so a burst of load from
# elsewhere hits all of them. Prints req/s, p99 and server CPU per request per target, every
# ratio against nginx and against actix, each fresh algorithm's CPU per request beside
# criterion's raw verify cost (from target/criterion, written by
# `cargo bench -p benches --bench jwt`), and a markdown block ready to paste.
# Needs: nginx, wrk, taskset (util-linux), curl, openssl; installed by .ci/run. Machines are
# noisy: compare the ratios of one run, not absolute numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-1}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
FRESH_HS=${FRESH_HS:-600000}
FRESH_ES=${FRESH_ES:-200000}
FRESH_RS=${FRESH_RS:-40000}
source benches/load/lib.sh
need_tools nginx wrk taskset curl openssl

build_release
build_bench_tools

load_keys_config

SIDECAR_PORT=$(free_port)
t0=$(date +%s%N)
RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" serve --config "$WORK/sidecar.yaml" --workers 1 \
  --listen "127.0.0.1:$SIDECAR_PORT" >"$WORK/sidecar.log" 2>&1 &
SIDECAR_PID=$!
PIDS+=("$SIDECAR_PID")
wait_up "http://127.0.0.1:$SIDECAR_PORT/readyz"
READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
IDLE_RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$SIDECAR_PID/status")

TOKEN=$("$BIN" mint --config "$WORK/sidecar.yaml" --sub load-user --role user --ttl 1h)
verify_lua "$TOKEN" >"$WORK/cached.lua"
# The identity headers the sidecar answers for the load token: both floors send the same.
mapfile -t IDENTITY < <(curl -fsS -D - -o /dev/null "http://127.0.0.1:$SIDECAR_PORT/verify" \
  -H "Authorization: Bearer $TOKEN" -H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: /api/v1/mcp/servers" \
  | tr -d '\r' | grep -i '^x-user-')
[ "${#IDENTITY[@]}" -gt 0 ] || { echo "the sidecar answered no identity headers" >&2; exit 1; }

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
{
  echo "worker_processes 1; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/logs/error.log warn;"
  echo "events { worker_connections 1024; }"
  echo "http { access_log off; server { listen 127.0.0.1:$NGINX_PORT; location / {"
  for h in "${IDENTITY[@]}"; do echo "  add_header ${h%%:*} \"${h#*: }\";"; done
  echo "  return 200; } } }"
} >"$WORK/nginx/nginx.conf"
taskset -c "$SERVER_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")
wait_up "http://127.0.0.1:$NGINX_PORT/"
# The worker does the work; count its CPU (the master only supervises).
NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)

ACTIX_PORT=$(free_port)
floor_args=()
for h in "${IDENTITY[@]}"; do floor_args+=(--header "$h"); done
taskset -c "$SERVER_CPU" "$FLOOR" --listen "127.0.0.1:$ACTIX_PORT" --workers 1 "${floor_args[@]}" &
ACTIX_PID=$!
PIDS+=("$ACTIX_PID")
wait_up "http://127.0.0.1:$ACTIX_PORT/"

mint() { # alg count round -> tokens file
  mint_tokens "$1" "$2" "$1-$3"
}

metric() { # port name -> value
  curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

declare -A RPS P99 CPU
run() { # name url pid lua [fresh]
  local name=$1 url=$2 pid=$3 lua=$4 fresh=${5:-}
  # Warm up (connections, caches), then measure. A fresh-token run needs no warm-up (and
  # must not spend its tokens on one).
  [ -n "$fresh" ] || taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d2s -s "$lua" "$url" >/dev/null
  local hits0 miss0
  [ -z "$fresh" ] || { hits0=$(metric "$SIDECAR_PORT" auth_sidecar_token_cache_hits_total); miss0=$(metric "$SIDECAR_PORT" auth_sidecar_token_cache_misses_total); }
  local before; before=$(cpu_ticks "$pid")
  local out; out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$lua" "$url")
  local after; after=$(cpu_ticks "$pid")
  local requests; requests=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers:"; echo "$out"; exit 1; fi
  local rps p99 cpu note=""
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  cpu=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$clk_tck" 'BEGIN {printf "%.2f", t / hz / n * 1e6}')
  if [ -n "$fresh" ]; then
    local hits misses
    hits=$(( $(metric "$SIDECAR_PORT" auth_sidecar_token_cache_hits_total) - hits0 ))
    misses=$(( $(metric "$SIDECAR_PORT" auth_sidecar_token_cache_misses_total) - miss0 ))
    # wrk stops a connection's last few requests late: a handful of repeats is expected.
    [ "$hits" -le "$CONNS" ] || { echo "$name: $hits cache hits: the fresh tokens ran out" >&2; exit 1; }
    note="  ($misses misses, $hits hits, in $(awk '/requests in/ {sub(",", "", $4); print $4}' <<<"$out"))"
  fi
  RPS[$name]+="$rps "; P99[$name]+="$p99 "; CPU[$name]+="$cpu "
  printf 'round %d %-7s %10s req/s   p99 %9s us   server CPU %6s us/req%s\n' "$ROUND" "$name" "$rps" "$p99" "$cpu" "$note"
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
raw_verify_us() { # alg (lowercase) -> criterion's mean raw verify, µs, or "n/a"
  local f="target/criterion/jwt_verify/${1}_raw_floor/new/estimates.json"
  [ -f "$f" ] || { echo "n/a"; return; }
  python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["mean"]["point_estimate"] / 1000))' "$f"
}

CONTEXT=$(print_context)
echo "$CONTEXT"
echo "== forwardAuth load: $ROUNDS round(s) of wrk -t1 -c$CONNS -d$DURATION per target; servers on CPU $SERVER_CPU (1 worker each), wrk on CPU $CLIENT_CPU"
echo "sidecar: start to ready ${READY_MS} ms, idle RSS $((IDLE_RSS_KB / 1024)) MiB (${IDLE_RSS_KB} KiB); identity headers: ${IDENTITY[*]}"
TARGETS=(nginx actix cached hs256 rs256 es256)
for ROUND in $(seq 1 "$ROUNDS"); do
  for alg in HS256 RS256 ES256; do
    count_var=FRESH_${alg:0:2}
    fresh_lua "$(mint "$alg" "${!count_var}" "$ROUND")" >"$WORK/${alg,,}-$ROUND.lua"
  done
  run nginx "http://127.0.0.1:$NGINX_PORT/verify" "$NGINX_WORKER" "$WORK/cached.lua"
  run actix "http://127.0.0.1:$ACTIX_PORT/verify" "$ACTIX_PID" "$WORK/cached.lua"
  run cached "http://127.0.0.1:$SIDECAR_PORT/verify" "$SIDECAR_PID" "$WORK/cached.lua"
  for alg in hs256 rs256 es256; do
    run "$alg" "http://127.0.0.1:$SIDECAR_PORT/verify" "$SIDECAR_PID" "$WORK/$alg-$ROUND.lua" fresh
  done
done

declare -A M_RPS M_P99 M_CPU
for t in "${TARGETS[@]}"; do
  M_RPS[$t]=$(median "${RPS[$t]}"); M_P99[$t]=$(median "${P99[$t]}"); M_CPU[$t]=$(median "${CPU[$t]}")
done
echo
echo "== medians; ratios against nginx and against actix (goals: cached >= 0.90 nginx and >= 0.97 actix req/s, CPU <= 1.2 nginx, p99 <= 1.3 nginx; hs256 >= 0.50 nginx req/s)"
TABLE="| Target | req/s | vs nginx | vs actix | server CPU/req | vs nginx | vs actix | p99 | vs nginx | vs actix |
|---|---|---|---|---|---|---|---|---|---|"
for t in "${TARGETS[@]}"; do
  TABLE+=$'\n'"| $t | ${M_RPS[$t]} | $(ratio "${M_RPS[$t]}" "${M_RPS[nginx]}")x | $(ratio "${M_RPS[$t]}" "${M_RPS[actix]}")x | ${M_CPU[$t]} µs | $(ratio "${M_CPU[$t]}" "${M_CPU[nginx]}")x | $(ratio "${M_CPU[$t]}" "${M_CPU[actix]}")x | ${M_P99[$t]} µs | $(ratio "${M_P99[$t]}" "${M_P99[nginx]}")x | $(ratio "${M_P99[$t]}" "${M_P99[actix]}")x |"
done
echo "$TABLE"
echo
echo "== fresh tokens: server CPU/req against the cached path plus criterion's raw verify (goal rs256, es256: CPU <= cached + 1.2 x raw)"
VERIFY="| Algorithm | server CPU/req | cached CPU/req | raw verify (criterion) | CPU - cached | (CPU - cached) / raw |
|---|---|---|---|---|---|"
for alg in hs256 rs256 es256; do
  raw=$(raw_verify_us "$alg")
  extra=$(awk -v a="${M_CPU[$alg]}" -v b="${M_CPU[cached]}" 'BEGIN {printf "%.2f", a - b}')
  per=$([ "$raw" = n/a ] && echo "n/a (run cargo bench -p benches --bench jwt first)" || echo "$(ratio "$extra" "$raw")x")
  VERIFY+=$'\n'"| $alg | ${M_CPU[$alg]} µs | ${M_CPU[cached]} µs | $raw$([ "$raw" = n/a ] || echo " µs") | $extra µs | $per |"
done
echo "$VERIFY"
echo
echo "== ready to paste (markdown)"
cat <<MD
\`benches/load/forwardauth.sh\` (ROUNDS=$ROUNDS, DURATION=$DURATION, CONNS=$CONNS; medians), $(sed -n 's/^date: *//p' <<<"$CONTEXT"), commit \`$(sed -n 's/^commit: *//p' <<<"$CONTEXT")\`, $(sed -n 's/^cpu: *//p' <<<"$CONTEXT"), load average $(sed -n 's/^load: *\([^ ]*\).*/\1/p' <<<"$CONTEXT") before the run. Floors in the same run: nginx \`return 200\` and a plain actix-web handler, both answering the sidecar's identity headers.

$TABLE

$VERIFY

Sidecar start to ready: ${READY_MS} ms; idle RSS: $((IDLE_RSS_KB / 1024)) MiB.
MD
