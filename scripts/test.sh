#!/usr/bin/env bash
# The whole test suite: setup (idempotent), formatting, lints, then every
# test of the workspace (unit, integration against real rtpengine, sipp,
# databases, browsers). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${RTCGATE_SKIP_SETUP:-0}" != 1 ]; then
  bash scripts/setup.sh
fi
bash scripts/services.sh

# Build cache outside the clone, so a fresh checkout on the same machine
# does not rebuild every dependency.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RTCGATE_CACHE:-$HOME/.cache/rtcgate}/target}"
mkdir -p "$CARGO_TARGET_DIR"
export RUST_BACKTRACE=1

echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "[test] cargo tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final --status-level fail
else
  cargo test --workspace --no-fail-fast
fi

for extra in scripts/test.d/*.sh; do
  [ -e "$extra" ] || continue
  echo "[test] $extra"
  bash "$extra"
done
