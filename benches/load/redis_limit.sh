#!/usr/bin/env bash
# A cached decision on a rule whose rate limit is kept in Redis (`store: redis`) against the
# same rule with the in-process limiter (`store: local`), one run, on loopback only, bounded
# in time.
#
#   benches/load/redis_limit.sh                 # 3 rounds of local, redis, lease: 5 s each after 2 s warm-up
#   ROUNDS=5 DURATION=10s LEASE=32 benches/load/redis_limit.sh
#
# One release sidecar (one worker) with three rules that differ only in `store` and `lease`,
# a limit so high that every request is allowed (each still takes a token): `local`, `redis`
# (`lease: 1`, one script call per request) and `lease` (`lease: $LEASE`, one script call per
# $LEASE requests of an identity, the rest spent in the sidecar); one repeated token (a
# verification-cache hit). The sidecar and redis-server
# run pinned to CPU $SERVER_CPU, wrk to CPU $CLIENT_CPU (-t1 -c$CONNS). Concurrent checks
# share the pool's multiplexed connections, so Redis sees them pipelined (the script prints
# how many commands Redis read per socket read). Prints req/s, p50 and p99 per target, the
# added latency and the req/s ratios against `local` (goal >= 0.70x), and the Redis error
# count (must be 0). The targets alternate for ROUNDS rounds and the medians are
# compared, so a burst of load from elsewhere on the machine hits all. Needs: redis-server, redis-cli, wrk, taskset, curl (installed by .ci/run).
# Machines are noisy: compare the ratios of one run, not numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LEASE=${LEASE:-16}
TARGETS=(local redis lease)
source benches/load/lib.sh
need_tools redis-server redis-cli wrk taskset curl

build_release

REDIS_PORT=$(free_port)
taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
  --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
for _ in $(seq 1 200); do grep -q "Ready to accept connections" "$WORK/redis.log" && break; sleep 0.05; done
grep -q "Ready to accept connections" "$WORK/redis.log" || { cat "$WORK/redis.log"; exit 1; }

SIDECAR_PORT=$(free_port)
cat >"$WORK/sidecar.yaml" <<YAML
listen: 127.0.0.1:$SIDECAR_PORT
workers: 1
redis:
  url: redis://127.0.0.1:$REDIS_PORT
  # Above the 50 ms default: the machine is shared, and a timeout would be a deny here.
  command_timeout: 500ms
issuers:
  - issuer: omni2-dev
    audiences: [omni2]
    keys:
      - {kid: dev-hs256, alg: HS256, secret_env: AUTH_SIDECAR_DEV_SECRET}
rules:
  - name: local
    path_prefix: /api/local
    action: authenticated
    rate_limit: {requests: 1000000000, per: 1s, store: local}
  - name: redis
    path_prefix: /api/redis
    action: authenticated
    rate_limit: {requests: 1000000000, per: 1s, store: redis}
  - name: lease
    path_prefix: /api/lease
    action: authenticated
    rate_limit: {requests: 1000000000, per: 1s, store: redis, lease: $LEASE}
YAML
RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" serve --config "$WORK/sidecar.yaml" >"$WORK/sidecar.log" 2>&1 &
PIDS+=($!)
SIDECAR_PID=$!
wait_up "http://127.0.0.1:$SIDECAR_PORT/readyz"

TOKEN=$("$BIN" mint --config "$WORK/sidecar.yaml" --sub load-user --role user --ttl 1h 2>/dev/null)
for name in "${TARGETS[@]}"; do
  verify_lua "$TOKEN" "/api/$name/mcp/servers" >"$WORK/$name.lua"
done

metric() { # name -> value
  curl -fsS "http://127.0.0.1:$SIDECAR_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
redis_stat() { # INFO stats field -> value
  redis-cli -p "$REDIS_PORT" INFO stats | tr -d '\r' | awk -F: -v f="$1" '$1 == f {print $2}'
}

declare -A RPS P50 P99 CPU SCPU CALLS PERREAD
run() { # store round
  local name=$1 round=$2 url="http://127.0.0.1:$SIDECAR_PORT/verify"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" -s "$WORK/$name.lua" "$url" >/dev/null
  local before; before=$(cpu_ticks "$SIDECAR_PID" "$REDIS_PID")
  local sbefore; sbefore=$(cpu_ticks "$SIDECAR_PID")
  local cmds0 reads0 calls0
  cmds0=$(redis_stat total_commands_processed); reads0=$(redis_stat total_reads_processed)
  calls0=$(metric 'auth_sidecar_redis_command_duration_seconds_count{operation="rate_limit"}')
  local out; out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/$name.lua" "$url")
  local after; after=$(cpu_ticks "$SIDECAR_PID" "$REDIS_PID")
  local safter; safter=$(cpu_ticks "$SIDECAR_PID")
  local cmds1 reads1 calls1
  cmds1=$(redis_stat total_commands_processed); reads1=$(redis_stat total_reads_processed)
  calls1=$(metric 'auth_sidecar_redis_command_duration_seconds_count{operation="rate_limit"}')
  local requests; requests=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers:"; echo "$out"; exit 1; fi
  local rps p50 p99 cpu scpu calls perread
  # Script calls per request, and commands Redis took per socket read (its pipelining depth;
  # INFO itself adds one command and one read on either side).
  calls=$(awk -v c=$((calls1 - calls0)) -v n="$requests" 'BEGIN {printf "%.3f", c / n}')
  perread=$(awk -v c=$((cmds1 - cmds0 - 2)) -v r=$((reads1 - reads0 - 2)) 'BEGIN {printf "%.1f", (r > 0) ? c / r : 0}')
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  cpu=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$clk_tck" 'BEGIN {printf "%.2f", t / hz / n * 1e6}')
  scpu=$(awk -v t=$((safter - sbefore)) -v n="$requests" -v hz="$clk_tck" 'BEGIN {printf "%.2f", t / hz / n * 1e6}')
  RPS[$name]+="$rps "; P50[$name]+="$p50 "; P99[$name]+="$p99 "; CPU[$name]+="$cpu "; SCPU[$name]+="$scpu "
  CALLS[$name]+="$calls "; PERREAD[$name]+="$perread "
  printf 'round %d %-6s %10s req/s   p50 %8s us   p99 %8s us   CPU us/req: sidecar + redis %6s, sidecar %6s   script calls/req %s, commands/read %s\n' \
    "$round" "$name" "$rps" "$p50" "$p99" "$cpu" "$scpu" "$calls" "$perread"
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

print_context
echo "== cached decision, store: local vs store: redis (lease: 1) vs store: redis, lease: $LEASE: $ROUNDS rounds of wrk -t1 -c$CONNS -d$DURATION each; sidecar (1 worker) and redis-server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
for round in $(seq 1 "$ROUNDS"); do
  for name in "${TARGETS[@]}"; do run "$name" "$round"; done
done
errors=$(metric 'auth_sidecar_redis_errors_total{operation="rate_limit"}')
checks=$(metric 'auth_sidecar_redis_command_duration_seconds_count{operation="rate_limit"}')
echo "redis: $checks script calls, $errors errors"
[ "$errors" = 0 ] || { echo "Redis errors during the run: the numbers are not of the allow path" >&2; exit 1; }
for name in "${TARGETS[@]}"; do
  printf 'median %-6s %10s req/s   p50 %8s us   p99 %8s us   CPU us/req: sidecar + redis %6s, sidecar %6s   script calls/req %s\n' "$name" \
    "$(median "${RPS[$name]}")" "$(median "${P50[$name]}")" "$(median "${P99[$name]}")" "$(median "${CPU[$name]}")" "$(median "${SCPU[$name]}")" "$(median "${CALLS[$name]}")"
done
echo
echo "== against local, medians (goal: req/s ratio >= 0.70)"
for name in redis lease; do
  p50_added=$(awk -v a="$(median "${P50[$name]}")" -v b="$(median "${P50[local]}")" 'BEGIN {printf "%.1f", a - b}')
  p99_added=$(awk -v a="$(median "${P99[$name]}")" -v b="$(median "${P99[local]}")" 'BEGIN {printf "%.1f", a - b}')
  # On a busy machine the servers are not CPU-bound and req/s follows their share of the CPU;
  # CPU per request is the cost: its inverse is the req/s ratio of a CPU-bound sidecar.
  printf '%-6s req/s ratio %s   added latency p50 %s us, p99 %s us   CPU/req ratio: sidecar + redis %s, sidecar alone %s\n' "$name" \
    "$(ratio "$(median "${RPS[$name]}")" "$(median "${RPS[local]}")")" "$p50_added" "$p99_added" \
    "$(ratio "$(median "${CPU[$name]}")" "$(median "${CPU[local]}")")" "$(ratio "$(median "${SCPU[$name]}")" "$(median "${SCPU[local]}")")"
done
