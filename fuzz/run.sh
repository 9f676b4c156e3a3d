#!/usr/bin/env bash
# Builds the fuzz targets and runs each one for a bounded time, one after the other.
# Exits non-zero on the first crash, leak, timeout or failed property; libFuzzer leaves
# the input under fuzz/artifacts/<target>/ (replay: cargo fuzz run -s none <target> <file>).
#
#   fuzz/run.sh [seconds per target] [target...]     default: 20 s, every target
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(path_normalize forwarded_for token_verify config_load)
fi

# cargo-fuzz passes -Z flags; the stable compiler accepts them with this.
export RUSTC_BOOTSTRAP=1
# No sanitizer: the sidecar forbids unsafe code, and without ASan the same time buys ~2x
# the executions. Coverage guidance and the targets' assertions are what find bugs here.
cargo fuzz build -s none

for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  # New inputs land in corpus/<target>/ next to the committed seeds (git ignores them).
  timeout --signal=KILL $((seconds + 120)) \
    cargo fuzz run -s none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1
done
