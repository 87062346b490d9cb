#!/usr/bin/env bash
# CI smoke run of the fuzz targets (run by scripts/test.sh after the cargo
# tests): every target for a few seconds from its seeds, failing on any crash.
# The long runs and their figures are in docs/SECURITY.md.
#
#   RTCGATE_SKIP_FUZZ=1          skip it
#   FUZZ_SMOKE_SECONDS           seconds per target (default 15)
#   FUZZ_SMOKE_TIMEOUT           bound for the whole run, in seconds, once the
#                                instrumented build is cached (default 300)
#   FUZZ_SMOKE_COLD_TIMEOUT      the same bound when cargo-fuzz or the
#                                instrumented build is missing, i.e. the first
#                                run on a machine, which installs cargo-fuzz and
#                                builds every dependency with coverage
#                                instrumentation, or when the lock files changed
#                                since the last good run (default 3600)
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${RTCGATE_SKIP_FUZZ:-0}" = 1 ]; then
  echo "[fuzz-smoke] skipped (RTCGATE_SKIP_FUZZ=1)"
  exit 0
fi

# Like the main build cache: outside the clone, so a fresh checkout on the
# same machine reuses the instrumented dependencies.
export FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-${RTCGATE_CACHE:-$HOME/.cache/rtcgate}/fuzz-target}"
mkdir -p "$FUZZ_TARGET_DIR"

warm=1
cargo fuzz --version >/dev/null 2>&1 || warm=0
for t in sip_message sdp ng_reply digest config proxy; do
  [ -x "$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release/$t" ] || warm=0
done
# New or changed dependencies mean an instrumented rebuild of them: as slow as
# a first run. The stamp records the lock files of the last good run.
stamp="$FUZZ_TARGET_DIR/.deps-stamp"
deps="$(cat Cargo.lock fuzz/Cargo.lock 2>/dev/null | sha256sum | cut -d' ' -f1)"
[ "$(cat "$stamp" 2>/dev/null)" = "$deps" ] || warm=0
if [ "$warm" = 1 ]; then
  export FUZZ_MAX_TOTAL="${FUZZ_SMOKE_TIMEOUT:-300}"
else
  export FUZZ_MAX_TOTAL="${FUZZ_SMOKE_COLD_TIMEOUT:-3600}"
  echo "[fuzz-smoke] first run on this machine: installing/building first (bound ${FUZZ_MAX_TOTAL}s)"
fi

set +e
bash scripts/fuzz.sh "${FUZZ_SMOKE_SECONDS:-15}"
rc=$?
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "[fuzz-smoke] FAILED: exceeded the ${FUZZ_MAX_TOTAL}s bound" >&2
fi
if [ "$rc" = 0 ]; then
  echo "$deps" >"$stamp"
fi
exit "$rc"
