#!/usr/bin/env bash
# What auditing every allow costs on the cached verify path, on loopback only, bounded.
#
#   benches/load/audit.sh                  # 10 s per run after a 2 s warm-up, 2 rounds
#   DURATION=5s ROUNDS=3 benches/load/audit.sh
#   SIDECAR_BIN=/tmp/auth-sidecar-before benches/load/audit.sh   # a saved binary, not built
#   INSTRUCTIONS=1 benches/load/audit.sh   # instructions per audited event, under callgrind
#
# Two sidecars with the same config but `audit.allows`: `none` (denials only: this load has
# none, so nothing is written) and `all` (one JSON line per request, file sink in the same
# scratch directory, so on the same disk). Both serve one repeated token: a cache hit per
# request. Each is pinned to CPU $SERVER_CPU with one worker (its audit writer thread shares
# that CPU: the cost is counted); wrk runs on CPU $CLIENT_CPU. Runs alternate none/all for
# ROUNDS rounds and the best of each is compared, so drift on a shared machine hits both.
# Goal: all >= 0.95x none req/s; the server CPU per request is printed too (on a busy shared
# machine it is the steadier of the two). The audit file's line count and the dropped counter are read
# back: a run that dropped events did not audit every allow (printed). INSTRUCTIONS=1 runs
# each sidecar under callgrind instead (steady on a shared machine, no hardware counters
# needed): instructions per request over all threads (worker and writer) for none and all,
# after a warm-up, over DURATION of wrk -c4; their difference is one audited event's cost.
# Needs: wrk, taskset, curl (installed by .ci/run); valgrind for INSTRUCTIONS=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
source benches/load/lib.sh
need_tools wrk taskset curl

if [ -n "${SIDECAR_BIN:-}" ]; then
  # Before/after comparisons: a binary saved from another commit, as given.
  BIN=$SIDECAR_BIN
else
  build_release
fi
config() { # allows -> a config file path
  local dir="$WORK/$1"
  # The audit file in a directory of its own, as deployed: the config's directory is watched.
  mkdir -p "$dir/log"
  dev_config "audit:" "  sink: file" "  file: log/audit.log" "  max_bytes: 1GiB" \
    "  keep: 1" "  allows: $1" >"$dir/sidecar.yaml"
  echo "$dir/sidecar.yaml"
}

declare -A PORT PID
for allows in none all; do
  PORT[$allows]=$(free_port)
  pre=()
  [ -z "${INSTRUCTIONS:-}" ] || pre=(valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$WORK/$allows.cg")
  RUST_LOG=warn taskset -c "$SERVER_CPU" "${pre[@]}" "$BIN" serve --config "$(config "$allows")" \
    --workers 1 --listen "127.0.0.1:${PORT[$allows]}" >/dev/null 2>&1 &
  PID[$allows]=$!
  PIDS+=("${PID[$allows]}")
  # Under callgrind the start takes seconds, not milliseconds.
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:${PORT[$allows]}/readyz" 2>/dev/null && break
    sleep 0.1
  done
  wait_up "http://127.0.0.1:${PORT[$allows]}/readyz"
done

TOKEN=$("$BIN" mint --config "$WORK/none/sidecar.yaml" --sub load-user --role user --ttl 1h)
verify_lua "$TOKEN" "/api/v1/mcp/servers?page=2" 'wrk.headers["X-Request-Id"] = "load-0123456789abcdef"' >"$WORK/cached.lua"

metric() { # port name -> value (0 when absent)
  curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {v = $2} END {print v + 0}'
}

if [ -n "${INSTRUCTIONS:-}" ]; then
  need_tools valgrind callgrind_control
  print_context
  echo "== instructions per request under callgrind: wrk -t1 -c4 -d$DURATION, after a 2 s warm-up"
  declare -A IR
  for allows in none all; do
    url="http://127.0.0.1:${PORT[$allows]}/verify"
    taskset -c "$CLIENT_CPU" wrk -t1 -c4 -d2s -s "$WORK/cached.lua" "$url" >/dev/null
    d0=$(decisions "${PORT[$allows]}")
    callgrind_control -z "${PID[$allows]}" >/dev/null 2>&1
    taskset -c "$CLIENT_CPU" wrk -t1 -c4 -d"$DURATION" -s "$WORK/cached.lua" "$url" >/dev/null
    callgrind_control -d "${PID[$allows]}" >/dev/null 2>&1
    # The metrics read itself is outside the counted window (zeroed, then dumped, first).
    n=$(( $(decisions "${PORT[$allows]}") - d0 ))
    total=$(cat "$WORK/$allows.cg".1-* | awk '/^totals:/ {s += $2} END {printf "%d", s}')
    IR[$allows]=$(( total / n ))
    echo "allows: $allows  requests $n  instructions $total  per request ${IR[$allows]}"
  done
  echo "one audited event: $(( IR[all] - IR[none] )) instructions ($(ratio "${IR[all]}" "${IR[none]}")x per request)"
  exit 0
fi

declare -A BEST BEST_CPU
run() { # allows round
  local allows=$1 url="http://127.0.0.1:${PORT[$1]}/verify"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d2s -s "$WORK/cached.lua" "$url" >/dev/null
  local before; before=$(cpu_ticks "${PID[$allows]}")
  local out; out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/cached.lua" "$url")
  local after; after=$(cpu_ticks "${PID[$allows]}")
  if grep -q "Non-2xx" <<<"$out"; then echo "$allows: non-2xx answers:"; echo "$out"; exit 1; fi
  local requests; requests=$(awk '/requests in/ {print $1}' <<<"$out")
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local p99; p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  # Server CPU per request (worker and audit writer threads): less sensitive than req/s to
  # other processes taking the CPU away.
  local cpu; cpu=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$clk_tck" 'BEGIN {printf "%.2f", t / hz / n * 1e6}')
  printf 'round %s  allows: %-4s %10s req/s   p99 %8s   server CPU %6s us/req\n' "$2" "$allows" "$rps" "$p99" "$cpu"
  if [ -z "${BEST[$allows]:-}" ] || awk -v a="$rps" -v b="${BEST[$allows]}" 'BEGIN {exit !(a > b)}'; then
    BEST[$allows]=$rps
  fi
  if [ -z "${BEST_CPU[$allows]:-}" ] || awk -v a="$cpu" -v b="${BEST_CPU[$allows]}" 'BEGIN {exit !(a < b)}'; then
    BEST_CPU[$allows]=$cpu
  fi
}

print_context
echo "== audit cost on the cached verify path: wrk -t1 -c$CONNS -d$DURATION x $ROUNDS rounds; sidecars on CPU $SERVER_CPU (1 worker), wrk on CPU $CLIENT_CPU"
for round in $(seq 1 "$ROUNDS"); do
  run none "$round"
  run all "$round"
done
for allows in none all; do
  written=$(metric "${PORT[$allows]}" 'auth_sidecar_audit_events_total{result="written"}')
  dropped=$(metric "${PORT[$allows]}" auth_sidecar_audit_dropped_total)
  failed=$(metric "${PORT[$allows]}" 'auth_sidecar_audit_events_total{result="failed"}')
  lines=$(find "$WORK/$allows" -name 'audit.log*' -exec cat {} + | wc -l)
  echo "allows: $allows  events written $written (file lines $lines), dropped $dropped, failed $failed"
done
echo
echo "== ratio (goal: all >= 0.95x none req/s)"
echo "best all / best none req/s:       $(ratio "${BEST[all]}" "${BEST[none]}")"
echo "lowest all / lowest none CPU/req:  $(ratio "${BEST_CPU[all]}" "${BEST_CPU[none]}")"
