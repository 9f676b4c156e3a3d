#!/usr/bin/env bash
# The sidecar's footprint: release binary size (as built, without debug info, fully
# stripped), start-to-ready time and idle RSS, on loopback only, bounded in time.
#
#   benches/load/footprint.sh            # 5 starts
#   STARTS=11 benches/load/footprint.sh
#
# Each start runs `auth-sidecar serve` (one worker, the load config of lib.sh) and polls
# /readyz every 2 ms until it answers 200: start to ready is from the fork to that answer
# (so it includes up to one poll interval and curl's own start). Idle RSS is VmRSS after
# ready with no request served but the probes. Prints the medians and a markdown block.
# Goals (issue 11): idle RSS <= 15 MB, start to ready <= 100 ms. Needs: curl, strip
# (binutils). Compare on one machine: a loaded machine starts slower.
set -euo pipefail
cd "$(dirname "$0")/../.."

STARTS=${STARTS:-5}
source benches/load/lib.sh
need_tools curl strip

build_release
dev_config >"$WORK/sidecar.yaml"

size_of() { stat -c %s "$1"; }
cp "$BIN" "$WORK/debuginfo-stripped"; strip --strip-debug "$WORK/debuginfo-stripped"
cp "$BIN" "$WORK/stripped"; strip "$WORK/stripped"
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

READY=() RSS=()
for i in $(seq 1 "$STARTS"); do
  port=$(free_port)
  t0=$(date +%s%N)
  RUST_LOG=warn "$BIN" serve --config "$WORK/sidecar.yaml" --workers 1 --listen "127.0.0.1:$port" \
    >"$WORK/sidecar-$i.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  up=""
  for _ in $(seq 1 2500); do # 5 s at most
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then up=1; break; fi
    sleep 0.002
  done
  [ -n "$up" ] || { cat "$WORK/sidecar-$i.log"; echo "not ready within 5 s" >&2; exit 1; }
  READY+=($(( ($(date +%s%N) - t0) / 1000000 )))
  sleep 1 # idle: let start-up allocations settle
  RSS+=("$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "start $i: ready after ${READY[-1]} ms, idle RSS ${RSS[-1]} KiB"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

CONTEXT=$(print_context)
echo "$CONTEXT"
TABLE="| Measure | Value | Goal |
|---|---|---|
| release binary, as built (\`[profile.release]\` of Cargo.toml) | $(mib "$(size_of "$BIN")") | reported |
| release binary, debug info stripped (\`strip --strip-debug\`) | $(mib "$(size_of "$WORK/debuginfo-stripped")") | reported |
| release binary, fully stripped (\`strip\`) | $(mib "$(size_of "$WORK/stripped")") | reported |
| start to ready (median of $STARTS) | $(median "${READY[@]}") ms | <= 100 ms |
| idle RSS (median of $STARTS) | $(awk -v k="$(median "${RSS[@]}")" 'BEGIN {printf "%.1f MiB", k / 1024}') | <= 15 MB |"
echo
echo "== ready to paste (markdown)"
echo "\`benches/load/footprint.sh\` (STARTS=$STARTS), $(sed -n 's/^date: *//p' <<<"$CONTEXT"), commit \`$(sed -n 's/^commit: *//p' <<<"$CONTEXT")\`, $(sed -n 's/^cpu: *//p' <<<"$CONTEXT"), load average $(sed -n 's/^load: *\([^ ]*\).*/\1/p' <<<"$CONTEXT") before the run."
echo
echo "$TABLE"
