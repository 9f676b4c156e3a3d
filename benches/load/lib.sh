# Shared by the load scripts in this directory; source it from the repo root after
# `set -euo pipefail`. Gives a scratch dir ($WORK), a PID list that the EXIT trap kills and
# reaps ($PIDS: append every process you start), and small helpers.

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

need_tools() { # tool...
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { # url [curl args...]: 200 within 10 s, or fail
  local url=$1; shift
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0; sleep 0.05; done
  echo "not up: $url" >&2; return 1
}
clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # pid... -> utime + stime, summed
  local sum=0 pid
  for pid in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$sum"
}
to_us() { # wrk latency (e.g. 1.23ms, 850.00us, 1.01s) -> microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else m = 1000000; printf "%.1f", n * m }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
# The machine beside the numbers: compare ratios within one run, not numbers across runs.
print_context() {
  echo "date:   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
  echo "cpu:    $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}') ($(nproc) cores)"
  echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
}
# A wrk script for one forwardAuth call as Traefik makes it: GET /verify with Traefik's
# X-Forwarded-* headers for URI (default /api/v1/mcp/servers) and, unless TOKEN is empty,
# the bearer token. Any further arguments are extra Lua lines, appended as given.
verify_lua() { # token [uri] [lua line...] -> the script, on stdout
  local token=$1 uri=${2:-/api/v1/mcp/servers}
  shift $(($# < 2 ? $# : 2))
  cat <<LUA
wrk.method = "GET"
wrk.path = "/verify"
wrk.headers["X-Forwarded-Method"] = "GET"
wrk.headers["X-Forwarded-Uri"] = "$uri"
wrk.headers["X-Forwarded-Host"] = "api.example.test"
wrk.headers["X-Forwarded-Proto"] = "https"
wrk.headers["X-Forwarded-For"] = "203.0.113.9"
LUA
  [ -z "$token" ] || echo "wrk.headers[\"Authorization\"] = \"Bearer $token\""
  [ $# -eq 0 ] || printf '%s\n' "$@"
}
# The release binaries, built the way the e2e tests build them (tests/src/process.rs: both
# binaries in one cargo run), so neither rebuilds the other's with other features. Sets BIN.
build_release() {
  cargo build --release -q -p auth-sidecar --bin auth-sidecar -p omni2-core --bin omni2
  BIN=$PWD/target/release/auth-sidecar
}
# The load config: the HS256 dev issuer (its secret in AUTH_SIDECAR_DEV_SECRET, throwaway)
# and one authenticated `api` rule on /api/v1. Any arguments are further top-level YAML
# lines, appended as given.
export AUTH_SIDECAR_DEV_SECRET=load-test-secret-0123456789abcdefghijklmnop
dev_config() { # [yaml line...] -> the config, on stdout
  cat <<YAML
realm: omni2
issuers:
  - issuer: omni2-dev
    audiences: [omni2]
    keys:
      - {kid: dev-hs256, alg: HS256, secret_env: AUTH_SIDECAR_DEV_SECRET}
rules:
  - {name: api, path_prefix: /api/v1, action: authenticated}
YAML
  [ $# -eq 0 ] || printf '%s\n' "$@"
}
# The bench helpers of benches/src/bin: the actix-web floor (FLOOR) and the token minter
# (MINT_TOKENS), release builds.
build_bench_tools() {
  cargo build --release -q -p benches --bin actix-floor --bin load-tokens
  FLOOR=$PWD/target/release/actix-floor
  MINT_TOKENS=$PWD/target/release/load-tokens
}
# A wrk script that sends each token of FILE once (a fresh token per request) and stops
# when they are spent, so no token is sent twice (a cache hit) however long DURATION is.
fresh_lua() { # tokens-file -> the script, on stdout
  verify_lua ""
  cat <<LUA
local tokens, i = {}, 0
for line in io.lines("$1") do tokens[#tokens + 1] = "Bearer " .. line end
request = function()
  i = i + 1
  wrk.headers["Authorization"] = tokens[i] or tokens[#tokens]
  return wrk.format()
end
response = function()
  if i >= #tokens then wrk.thread:stop() end
end
LUA
}

# The RS256 and ES256 load keys, made here by openssl in $WORK, and $WORK/sidecar.yaml: the
# dev issuer with those two keys beside its HS256 secret and the `api` rule. Any arguments
# are further top-level YAML lines, appended as given.
load_keys_config() { # [yaml line...]
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa.pem" 2>/dev/null
  openssl pkey -in "$WORK/rsa.pem" -pubout -out "$WORK/rsa.pub.pem"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/ec.pem"
  openssl pkey -in "$WORK/ec.pem" -pubout -out "$WORK/ec.pub.pem"
  cat >"$WORK/sidecar.yaml" <<YAML
realm: omni2
issuers:
  - issuer: omni2-dev
    audiences: [omni2]
    keys:
      - {kid: dev-hs256, alg: HS256, secret_env: AUTH_SIDECAR_DEV_SECRET}
      - {kid: load-rs256, alg: RS256, pem_file: $WORK/rsa.pub.pem}
      - {kid: load-es256, alg: ES256, pem_file: $WORK/ec.pub.pem}
rules:
  - {name: api, path_prefix: /api/v1, action: authenticated}
YAML
  [ $# -eq 0 ] || printf '%s\n' "$@" >>"$WORK/sidecar.yaml"
}

# COUNT fresh tokens of ALG for load_keys_config's issuer (each its own sub and jti, by
# $MINT_TOKENS), written to $WORK/NAME.txt; prints that path.
mint_tokens() { # alg count name -> tokens file
  local file="$WORK/$3.txt" key=()
  case $1 in
    HS256) key=(--secret-env AUTH_SIDECAR_DEV_SECRET --kid dev-hs256) ;;
    RS256) key=(--key "$WORK/rsa.pem" --kid load-rs256) ;;
    ES256) key=(--key "$WORK/ec.pem" --kid load-es256) ;;
  esac
  "$MINT_TOKENS" --alg "$1" "${key[@]}" --iss omni2-dev --aud omni2 --count "$2" \
    --prefix "$3" --out "$file"
  echo "$file"
}

decisions() { # sidecar port -> the sum of auth_sidecar_decisions_total: one per /verify
  curl -fsS "http://127.0.0.1:$1/metrics" |
    awk '$1 ~ /^auth_sidecar_decisions_total/ {s += $2} END {printf "%d", s}'
}
