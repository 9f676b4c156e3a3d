#!/usr/bin/env bash
# A bounded soak of the sidecar at ~80% of its measured capacity, on loopback only.
#
#   benches/load/soak.sh                 # 10 minutes
#   benches/load/soak.sh --minutes 2     # shorter
#
# One release sidecar (one worker, CPU $SERVER_CPU) with two issuers: the HS256 dev issuer
# and an ES256 issuer whose keys come from a JWKS URL (served by python3's http.server from
# the scratch dir). Four wrk processes (CPU $CLIENT_CPU) send the mix:
#   cached  50%  one repeated token (a cache hit)
#   fresh   20%  HS256 tokens, each its own sub and jti, cycling through $FRESH of them (the
#                cache fills with distinct tokens and evicts)
#   denied  10%  HS256 tokens signed with another secret (401)
#   jwks    20%  ES256 tokens from the JWKS-backed issuer, cycling through $JWKS_TOKENS
# First the mix runs unthrottled for $PROBE to measure capacity; then each wrk is paced
# (wrk's `delay()`) to its share of 80% of it (the connections are scaled once after the
# first minute, the warm-up, to reach it) and restarted every minute, so every minute has
# its own latency distribution. The JWKS stream's tokens are fetched keys' first use, then
# cache hits; the fresh stream's are misses until the cycle wraps. RSS and open fds of the sidecar are sampled every 10 s.
# Reports: errors (a wrong status or socket error on any stream), RSS at start (after the
# first minute, the warm-up) and end (goal: <= 5% growth), fds at start and end, and each
# stream's p99 in the first and last minute (drift). Prints a markdown block to paste.
# Needs: wrk, taskset, curl, openssl, python3 (installed by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."

MINUTES=10
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes N]" >&2; exit 2 ;;
  esac
done
[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || { echo "--minutes: a whole number >= 1" >&2; exit 2; }
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PROBE=${PROBE:-5s}
FRESH=${FRESH:-200000}
JWKS_TOKENS=${JWKS_TOKENS:-2000}
LOAD=${LOAD:-0.8}
source benches/load/lib.sh
need_tools wrk taskset curl openssl python3

build_release
build_bench_tools

# The JWKS issuer's key, its JWKS (x, y: the last 64 bytes of the DER public key) and server.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/ec.pem"
openssl pkey -in "$WORK/ec.pem" -pubout -outform DER -out "$WORK/ec.pub.der"
mkdir -p "$WORK/www"
python3 - "$WORK/ec.pub.der" "$WORK/www/jwks.json" <<'PY'
import base64, json, sys
point = open(sys.argv[1], "rb").read()[-65:]
assert point[0] == 4, "uncompressed P-256 point"
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
json.dump({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "soak-es256",
                     "x": b64(point[1:33]), "y": b64(point[33:65])}]}, open(sys.argv[2], "w"))
PY
JWKS_PORT=$(free_port)
python3 -m http.server "$JWKS_PORT" --bind 127.0.0.1 --directory "$WORK/www" >"$WORK/jwks.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$JWKS_PORT/jwks.json"

SIDECAR_PORT=$(free_port)
cat >"$WORK/sidecar.yaml" <<YAML
listen: 127.0.0.1:$SIDECAR_PORT
workers: 1
issuers:
  - issuer: omni2-dev
    audiences: [omni2]
    keys:
      - {kid: dev-hs256, alg: HS256, secret_env: AUTH_SIDECAR_DEV_SECRET}
  - issuer: soak-idp
    audiences: [omni2]
    jwks_uri: http://127.0.0.1:$JWKS_PORT/jwks.json
rules:
  - {name: api, path_prefix: /api/v1, action: authenticated}
YAML
RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" serve --config "$WORK/sidecar.yaml" >"$WORK/sidecar.log" 2>&1 &
SIDECAR_PID=$!
PIDS+=("$SIDECAR_PID")
wait_up "http://127.0.0.1:$SIDECAR_PORT/readyz"

TOKEN=$("$BIN" mint --config "$WORK/sidecar.yaml" --sub soak-user --role user --ttl 2h)
"$MINT_TOKENS" --alg HS256 --secret-env AUTH_SIDECAR_DEV_SECRET --kid dev-hs256 --iss omni2-dev \
  --aud omni2 --count "$FRESH" --prefix fresh --out "$WORK/fresh.txt"
SOAK_WRONG_SECRET=not-the-dev-secret-0123456789abcdefghijklmnop "$MINT_TOKENS" --alg HS256 \
  --secret-env SOAK_WRONG_SECRET --kid dev-hs256 --iss omni2-dev --aud omni2 --count 1000 \
  --prefix denied --out "$WORK/denied.txt"
"$MINT_TOKENS" --alg ES256 --key "$WORK/ec.pem" --kid soak-es256 --iss soak-idp --aud omni2 \
  --count "$JWKS_TOKENS" --prefix jwks --out "$WORK/jwks.txt"

stream_lua() { # name delay_ms -> the script (tokens cycle; delay 0: unthrottled)
  if [ "$1" = cached ]; then
    verify_lua "$TOKEN"
  else
    verify_lua ""
    cat <<LUA
local tokens, i = {}, 0
for line in io.lines("$WORK/$1.txt") do tokens[#tokens + 1] = "Bearer " .. line end
request = function()
  i = i + 1
  wrk.headers["Authorization"] = tokens[(i - 1) % #tokens + 1]
  return wrk.format()
end
LUA
  fi
  [ "$2" = 0 ] || echo "delay = function() return $2 end"
}
STREAMS=(cached fresh denied jwks)
declare -A SHARE=([cached]=0.5 [fresh]=0.2 [denied]=0.1 [jwks]=0.2)
URL="http://127.0.0.1:$SIDECAR_PORT/verify"

check_out() { # name wrk-output -> number of errors (wrong statuses, socket errors)
  local requests non2xx sock
  requests=$(awk '/requests in/ {print $1}' <<<"$2")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$2"); non2xx=${non2xx:-0}
  sock=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$2"); sock=${sock:-0}
  if [ "$1" = denied ]; then echo $((requests - non2xx + sock)); else echo $((non2xx + sock)); fi
}

print_context
echo "== capacity: the mix unthrottled for $PROBE (16 connections per stream)"
for s in "${STREAMS[@]}"; do stream_lua "$s" 0 >"$WORK/$s-probe.lua"; done
# Capacity: the requests of all four over the wall time from the first start to the last
# end (each wrk's own req/s would overlap imperfectly: they load their tokens first).
t0=$(date +%s%N)
started=()
for s in "${STREAMS[@]}"; do
  taskset -c "$CLIENT_CPU" wrk -t1 -c16 -d"$PROBE" -s "$WORK/$s-probe.lua" "$URL" >"$WORK/$s-probe.out" &
  started+=($!)
done
PIDS+=("${started[@]}")
wait "${started[@]}"
t1=$(date +%s%N)
served=0
for s in "${STREAMS[@]}"; do
  n=$(awk '/requests in/ {print $1}' "$WORK/$s-probe.out")
  echo "  $s: $n requests"
  served=$((served + n))
done
CAPACITY=$(awk -v n="$served" -v ns=$((t1 - t0)) 'BEGIN {printf "%d", n / (ns / 1e9)}')
TARGET=$(awk -v c="$CAPACITY" -v l="$LOAD" 'BEGIN {printf "%d", c * l}')
echo "capacity ${CAPACITY} req/s; soak target ${TARGET} req/s (x$LOAD) for $MINUTES min"

# Pacing: each connection waits DELAY ms between requests, so a stream's rate is about
# conns x 1000 / DELAY (less by its latency, which the minute's req/s shows).
DELAY=${DELAY:-1}
declare -A CONNS
for s in "${STREAMS[@]}"; do
  CONNS[$s]=$(awk -v t="$TARGET" -v f="${SHARE[$s]}" -v d="$DELAY" 'BEGIN {c = int(t * f * d / 1000 + 0.5); print (c < 1) ? 1 : c}')
  stream_lua "$s" "$DELAY" >"$WORK/$s.lua"
done

sample() { # every 10 s: seconds rss_kib fds
  local t0=$SECONDS
  while kill -0 "$SIDECAR_PID" 2>/dev/null; do
    echo "$((SECONDS - t0)) $(awk '/VmRSS/ {print $2}' "/proc/$SIDECAR_PID/status") $(ls "/proc/$SIDECAR_PID/fd" | wc -l)"
    sleep 10
  done
}
sample >"$WORK/samples.txt" &
SAMPLER=$!
PIDS+=("$SAMPLER")

ERRORS=0
declare -A FIRST_P99 LAST_P99
for minute in $(seq 1 "$MINUTES"); do
  started=()
  for s in "${STREAMS[@]}"; do
    taskset -c "$CLIENT_CPU" wrk -t1 -c"${CONNS[$s]}" -d60s --latency -s "$WORK/$s.lua" "$URL" >"$WORK/$s-$minute.out" &
    started+=($!)
  done
  PIDS+=("${started[@]}")
  wait "${started[@]}"
  line="minute $minute:"
  total=0
  for s in "${STREAMS[@]}"; do
    out=$(cat "$WORK/$s-$minute.out")
    errors=$(check_out "$s" "$out")
    ERRORS=$((ERRORS + errors))
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    rps=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
    total=$((total + rps))
    [ "$minute" != 1 ] || FIRST_P99[$s]=$p99
    LAST_P99[$s]=$p99
    line+="  $s ${rps}/s p99 ${p99} us err $errors;"
  done
  LAST_TOTAL=$total
  echo "$line  total ${total}/s; RSS $(awk '/VmRSS/ {print $2}' "/proc/$SIDECAR_PID/status") KiB"
  # The first minute is the warm-up: latency adds to the pacing delay, so scale the
  # connections once (by at most 1.5x: past that the client, not the sidecar, is short) to
  # reach the target from the second minute on.
  if [ "$minute" = 1 ] && [ "$total" -gt 0 ]; then
    for s in "${STREAMS[@]}"; do
      CONNS[$s]=$(awk -v c="${CONNS[$s]}" -v t="$TARGET" -v n="$total" 'BEGIN {f = t / n; if (f > 1.5) f = 1.5; c = int(c * f + 0.5); print (c < 1) ? 1 : c}')
    done
  fi
done
kill "$SAMPLER" 2>/dev/null || true

# RSS after warm-up: the first sample at or after 60 s; end: the last sample.
read -r _ RSS_START FD_START < <(awk '$1 >= 70 {print; exit}' "$WORK/samples.txt")
[ -n "${RSS_START:-}" ] || read -r _ RSS_START FD_START < <(head -1 "$WORK/samples.txt")
read -r _ RSS_END FD_END < <(tail -1 "$WORK/samples.txt")
read -r _ RSS_FIRST FD_FIRST < <(head -1 "$WORK/samples.txt")
growth=$(awk -v a="$RSS_END" -v b="$RSS_START" 'BEGIN {printf "%+.1f%%", (a - b) / b * 100}')
echo
echo "samples (s rss_kib fds): $(tr '\n' ';' <"$WORK/samples.txt")"
echo
echo "== ready to paste (markdown)"
CONTEXT=$(print_context)
echo "\`benches/load/soak.sh --minutes $MINUTES\`, $(sed -n 's/^date: *//p' <<<"$CONTEXT"), commit \`$(sed -n 's/^commit: *//p' <<<"$CONTEXT")\`, $(sed -n 's/^cpu: *//p' <<<"$CONTEXT"), load average $(sed -n 's/^load: *\([^ ]*\).*/\1/p' <<<"$CONTEXT") at the end. Capacity of the mix (unthrottled, same run): ${CAPACITY} req/s; soak at ${TARGET} req/s target (x$LOAD): 50% cached, 20% fresh HS256 (cycling $FRESH), 10% denied, 20% JWKS-backed ES256 (cycling $JWKS_TOKENS)."
echo
echo "| Measure | Value |"
echo "|---|---|"
echo "| load reached, last minute | ${LAST_TOTAL} req/s ($(ratio "$LAST_TOTAL" "$CAPACITY")x capacity; target ${LOAD}x) |"
echo "| errors (wrong status or socket error) | $ERRORS |"
echo "| RSS at start (after the capacity probe) / after warm-up (1 min) / end | $((RSS_FIRST / 1024)) / $((RSS_START / 1024)) / $((RSS_END / 1024)) MiB ($growth after warm-up; goal <= +5%) |"
echo "| open fds after warm-up / end | $FD_START / $FD_END |"
for s in "${STREAMS[@]}"; do
  echo "| p99 $s, first / last minute | ${FIRST_P99[$s]} / ${LAST_P99[$s]} µs ($(ratio "${LAST_P99[$s]}" "${FIRST_P99[$s]}")x) |"
done
[ "$ERRORS" = 0 ] || { echo "errors during the soak" >&2; exit 1; }
