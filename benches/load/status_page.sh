#!/usr/bin/env bash
# The status page's memory and CPU over time, in headless Chromium, with one delta per second
# (an admin "probe now" each second through Traefik), on loopback only, bounded in time.
#
#   benches/load/status_page.sh              # 30 minutes, a sample every 30 s
#   MINUTES=3 SAMPLE_SECONDS=15 benches/load/status_page.sh
#
# The stack is the status page tests' (tests/src/status.rs): two Python MCP servers, the
# release omni2 and auth-sidecar, real Traefik on the shipped config. Samples are Chromium's
# CDP Performance.getMetrics: JSHeapUsedSize, Nodes, JSEventListeners and TaskDuration
# (main-thread CPU seconds, shown per interval). It ends with the last sample against the
# first after warm-up; the goal is flat (~1.0x). Needs: chromium, chromedriver, traefik,
# python3 with mcp; installed by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."

MINUTES=${MINUTES:-30}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-30}
source benches/load/lib.sh
need_tools chromium chromedriver traefik python3

echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
echo "minutes: $MINUTES, sample every ${SAMPLE_SECONDS}s, one delta per second"
# The driver itself only sends one request a second and reads counters: a debug build is
# enough (and shares the tests' build); omni2 and the sidecar are the release binaries.
cargo build -q --release -p auth-sidecar --bin auth-sidecar -p omni2-core --bin omni2
cargo run -q -p e2e --bin status-page-soak -- \
  --minutes "$MINUTES" --sample-seconds "$SAMPLE_SECONDS"
