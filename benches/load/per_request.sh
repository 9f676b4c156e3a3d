#!/usr/bin/env bash
# Deterministic per-request costs of the forwardAuth path, for a noisy or shared machine
# (no wall clock, no hardware counters): instructions (callgrind Ir), heap allocations
# (calls into malloc/calloc/realloc/posix_memalign, counted by the same callgrind profile)
# and syscalls (strace -c), each divided by the requests answered in the window.
#
#   benches/load/per_request.sh                       # REQUESTS=20000, SLOW=3000
#   OUT=/tmp/prof benches/load/per_request.sh         # keep the callgrind and strace files
#   MODES=callgrind TARGETS="cached hs256" benches/load/per_request.sh
#
# Targets, as in forwardauth.sh and with its request bytes: `actix` (the actix-web floor,
# benches/src/bin/actix-floor.rs, answering the sidecar's identity headers), `cached` (one
# repeated token), and fresh `hs256`, `rs256`, `es256` tokens (one per request). Before the
# fresh targets, FILL fresh HS256 tokens (default: the cache's capacity + 10%) are
# sent unmeasured, so every measured miss inserts into a full cache and evicts, as in a
# long run. Servers run one worker; the client sends exactly the target's count of
# requests (benches/load/send.py, CONNS connections, one request in flight on each; 600 s
# at most). A measured window starts after warm-up
# (`callgrind_control -z`, or strace attaching) and ends with a dump or detach.
# Needs: valgrind (callgrind_control), strace, python3, curl, openssl.
set -euo pipefail
cd "$(dirname "$0")/../.."

REQUESTS=${REQUESTS:-20000}
SLOW=${SLOW:-3000}
# CACHE_ENTRIES: the verification cache's max_entries (default: the sidecar's, 100000); a
# smaller cache fills with fewer requests, which matters under callgrind.
CACHE_ENTRIES=${CACHE_ENTRIES:-100000}
FILL=${FILL:-$((CACHE_ENTRIES + CACHE_ENTRIES / 10))}
CONNS=${CONNS:-4}
MODES=${MODES:-callgrind strace}
TARGETS=${TARGETS:-actix cached hs256 rs256 es256}
source benches/load/lib.sh
export RUST_LOG=warn
need_tools valgrind callgrind_control strace python3 curl openssl

# NO_BUILD=1: use the release binaries already built (BIN, FLOOR, MINT_TOKENS may name
# others, e.g. a copy of an earlier build to compare against).
if [ -n "${NO_BUILD:-}" ]; then
  BIN=${BIN:-$PWD/target/release/auth-sidecar} FLOOR=${FLOOR:-$PWD/target/release/actix-floor}
  MINT_TOKENS=${MINT_TOKENS:-$PWD/target/release/load-tokens}
else
  build_release
  build_bench_tools
fi

load_keys_config "cache: {max_entries: $CACHE_ENTRIES}"

TOKEN=$("$BIN" mint --config "$WORK/sidecar.yaml" --sub load-user --role user --ttl 1h)
# port count (tokens-file | --token T) -> answers; every answer must be a 200.
load() {
  local out
  out=$(python3 benches/load/send.py "$1" "$2" "$CONNS" "${@:3}")
  [ "$out" = "200 $2" ] || { echo "answers: $out (wanted 200 $2)" >&2; exit 1; }
  echo "$2"
}

# One measured window while PID serves on PORT: COUNT requests with the given tokens.
# MODE callgrind: zero, load, dump; MODE strace: attach, load, detach.
declare -A IR ALLOCS SYSCALLS
measure() { # mode pid port name count (tokens-file | --token T)
  local mode=$1 pid=$2 port=$3 name=$4 count=$5 n
  shift 5
  if [ "$mode" = callgrind ]; then
    callgrind_control -z "$pid" >/dev/null 2>&1
    n=$(load "$port" "$count" "$@")
    callgrind_control -d "$name" "$pid" >/dev/null 2>&1
    local file; file=$(ls -t "$WORK"/callgrind.out.* | head -1)
    read -r ir allocs < <(python3 - "$file" <<'PY'
import re, sys
alloc = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}
names, cfn, calls, total = {}, None, 0, 0
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        kind, ident, name = m.groups()
        if name:
            names[ident] = name.strip().split("'")[0]
        if kind == "cfn":
            cfn = names.get(ident)
    elif line.startswith("calls=") and cfn in alloc:
        calls += int(line.split()[0][6:])
    elif line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
print(total, calls)
PY
    )
    [ -z "${OUT:-}" ] || cp "$file" "$OUT/callgrind.$name"
    IR[$name]=$(awk -v a="$ir" -v n="$n" 'BEGIN {printf "%.0f", a / n}')
    ALLOCS[$name]=$(awk -v a="$allocs" -v n="$n" 'BEGIN {printf "%.1f", a / n}')
    echo "callgrind $name: $n requests, $ir Ir, $allocs allocations" >&2
  else
    local tids=()
    for t in /proc/"$pid"/task/*; do tids+=(-p "${t##*/}"); done
    strace -c -f -o "$WORK/strace.$name" "${tids[@]}" 2>/dev/null &
    local strace_pid=$!
    sleep 1
    n=$(load "$port" "$count" "$@")
    kill -INT "$strace_pid"; wait "$strace_pid" || true
    local calls; calls=$(awk '$NF == "total" {print $4}' "$WORK/strace.$name")
    [ -z "${OUT:-}" ] || cp "$WORK/strace.$name" "$OUT/strace.$name"
    SYSCALLS[$name]=$(awk -v a="$calls" -v n="$n" 'BEGIN {printf "%.2f", a / n}')
    echo "strace $name: $n requests, $calls syscalls" >&2
  fi
}

serve() { # mode name cmd... -> pid in SERVER_PID (appended to PIDS)
  local mode=$1 name=$2; shift 2
  if [ "$mode" = callgrind ]; then
    (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.$name.%p" "$@") \
      >"$WORK/$name.$mode.log" 2>&1 &
  else
    "$@" >"$WORK/$name.$mode.log" 2>&1 &
  fi
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# The floor answers the sidecar's identity headers for the load token (as in forwardauth.sh).
port=$(free_port)
serve plain probe "$BIN" serve --config "$WORK/sidecar.yaml" --workers 1 \
  --listen "127.0.0.1:$port"
wait_up "http://127.0.0.1:$port/readyz"
floor_args=()
while read -r h; do floor_args+=(--header "$h"); done < <(curl -fsS -D - -o /dev/null \
  "http://127.0.0.1:$port/verify" -H "Authorization: Bearer $TOKEN" -H "X-Forwarded-Method: GET" \
  -H "X-Forwarded-Uri: /api/v1/mcp/servers" | tr -d '\r' | grep -i '^x-user-')
[ "${#floor_args[@]}" -gt 0 ] || { echo "the sidecar answered no identity headers" >&2; exit 1; }
stop "$SERVER_PID"
wanted() { [[ " $TARGETS " == *" $1 "* ]]; }
for mode in $MODES; do
  if wanted actix; then
    port=$(free_port)
    serve "$mode" actix "$FLOOR" --listen "127.0.0.1:$port" --workers 1 "${floor_args[@]}"
    wait_up "http://127.0.0.1:$port/"
    load "$port" 500 --token "$TOKEN" >/dev/null
    measure "$mode" "$SERVER_PID" "$port" actix "$REQUESTS" --token "$TOKEN"
    stop "$SERVER_PID"
  fi

  port=$(free_port)
  serve "$mode" sidecar "$BIN" serve --config "$WORK/sidecar.yaml" --workers 1 \
    --listen "127.0.0.1:$port"
  wait_up "http://127.0.0.1:$port/readyz"
  load "$port" 500 --token "$TOKEN" >/dev/null
  ! wanted cached || measure "$mode" "$SERVER_PID" "$port" cached "$REQUESTS" --token "$TOKEN"
  filled=
  for alg in HS256 RS256 ES256; do
    name=${alg,,}
    wanted "$name" || continue
    if [ -z "$filled" ]; then
      load "$port" "$FILL" "$(mint_tokens HS256 "$FILL" "fill-$mode")" >/dev/null
      filled=1
    fi
    count=$([ "$alg" = HS256 ] && echo "$REQUESTS" || echo "$SLOW")
    measure "$mode" "$SERVER_PID" "$port" "$name" "$count" "$(mint_tokens "$alg" "$count" "$name-$mode")"
  done
  stop "$SERVER_PID"
done

echo
echo "== per request: callgrind instructions and allocations, strace syscalls ($(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' dirty'); REQUESTS=$REQUESTS, SLOW=$SLOW, CACHE_ENTRIES=$CACHE_ENTRIES, FILL=$FILL, CONNS=$CONNS)"
echo "| Target | Ir/req | vs actix | allocations/req | syscalls/req |"
echo "|---|---|---|---|---|"
for t in $TARGETS; do
  vs=$([ -n "${IR[$t]:-}" ] && [ -n "${IR[actix]:-}" ] && echo "$(ratio "${IR[$t]}" "${IR[actix]}")x" || echo -)
  echo "| $t | ${IR[$t]:--} | $vs | ${ALLOCS[$t]:--} | ${SYSCALLS[$t]:--} |"
done
