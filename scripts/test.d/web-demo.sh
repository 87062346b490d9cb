#!/usr/bin/env bash
# Web demo: unit tests of the page's pure parts and real-browser tests
# (Debian's Chromium via playwright-core) against the prebuilt debug rtcgate
# ($RTCGATE_BIN, else $CARGO_TARGET_DIR/debug/rtcgate, else
# ~/.cache/rtcgate/target/debug/rtcgate). With CI=true a missing binary or
# browser fails the run. End-to-end call tests run with RTCGATE_E2E=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -d web-demo/node_modules ]; then
  echo "[test] web-demo: node_modules missing; running npm ci"
  (cd web-demo && npm ci --no-audit --no-fund --loglevel=error)
fi
bash scripts/setup.d/web-demo.sh
cd web-demo
exec node --test --test-concurrency=1 tests/
