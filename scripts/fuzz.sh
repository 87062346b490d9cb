#!/usr/bin/env bash
# Builds and runs the cargo-fuzz targets of fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 30; TARGETs default to all of them. Each
# target starts from a temporary copy of its committed seeds
# (fuzz/seeds/<target>/), so runs never write into the repository except
# crash reproducers, which libFuzzer leaves in fuzz/artifacts/<target>/.
# Prints executions and exec/s per target; exits 1 if any target crashed
# (panic escaping to the target, sanitizer report, timeout, OOM).
#
# Environment:
#   FUZZ_SANITIZER   address (default) or none. With address, the build uses
#                    -Zsanitizer=address on the stable toolchain through
#                    RUSTC_BOOTSTRAP=1; if that build fails the script says so
#                    and falls back to none.
#   FUZZ_TARGET_DIR  cargo target dir for the instrumented build
#                    (default fuzz/target; CI points it outside the clone).
#   FUZZ_KEEP_CORPUS 1 = keep the temporary working corpora and print where.
#   FUZZ_MAX_TOTAL   bound in seconds for the whole script (build included);
#                    0 (default) = none.
#
# cargo-fuzz is installed from crates.io when missing (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_PER_TARGET=${1:-30}
shift || true
ALL_TARGETS=(sip_message sdp ng_reply digest config proxy)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
case "$SECONDS_PER_TARGET" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

if [ "${FUZZ_MAX_TOTAL:-0}" != 0 ] && [ -z "${FUZZ_BOUNDED:-}" ]; then
  # Re-run ourselves under timeout(1) so the bound covers the build too
  # (timeout signals its whole process group: cargo and the fuzzer as well).
  FUZZ_BOUNDED=1 exec timeout --kill-after=30 "$FUZZ_MAX_TOTAL" \
    bash "$ROOT/scripts/fuzz.sh" "$SECONDS_PER_TARGET" "${TARGETS[@]}"
fi

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (one-off, a few minutes)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer, sancov passes); only
# the stable toolchain is available, so unlock them on it.
export RUSTC_BOOTSTRAP=1
# The instrumented build must not share the main workspace's target dir
# (different RUSTFLAGS would rebuild each other's artifacts).
unset CARGO_TARGET_DIR RUSTFLAGS
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}
SANITIZER=${FUZZ_SANITIZER:-address}

# -a: debug assertions and overflow checks on, so arithmetic overflow on
# hostile input shows up as a panic instead of silently wrapping.
fuzz_flags() { echo "-a --sanitizer $SANITIZER --target-dir $FUZZ_TARGET_DIR"; }

cd "$ROOT/fuzz"
echo "[fuzz] building ${TARGETS[*]} (sanitizer: $SANITIZER, target dir: $FUZZ_TARGET_DIR)"
build_ok=1
for t in "${TARGETS[@]}"; do
  # shellcheck disable=SC2046
  cargo fuzz build $(fuzz_flags) "$t" || { build_ok=0; break; }
done
if [ "$build_ok" = 0 ]; then
  if [ "$SANITIZER" = none ]; then
    echo "[fuzz] build failed" >&2
    exit 1
  fi
  echo "[fuzz] WARNING: the $SANITIZER-sanitized build failed; falling back to --sanitizer none" >&2
  SANITIZER=none
  for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2046
    cargo fuzz build $(fuzz_flags) "$t"
  done
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rtcgate-fuzz.XXXXXX")
if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then
  trap 'rm -rf "$WORK"' EXIT
fi

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  corpus="$WORK/corpus/$t"
  log="$WORK/$t.log"
  mkdir -p "$corpus" "$ROOT/fuzz/artifacts/$t"
  if [ -d "$ROOT/fuzz/seeds/$t" ]; then
    cp -r "$ROOT/fuzz/seeds/$t/." "$corpus/"
  fi
  echo "[fuzz] $t: ${SECONDS_PER_TARGET}s from $(find "$corpus" -type f | wc -l) seeds"
  dict=()
  if [ -f "$ROOT/fuzz/dicts/$t.dict" ]; then dict=(-dict="$ROOT/fuzz/dicts/$t.dict"); fi
  set +e
  # shellcheck disable=SC2046
  cargo fuzz run $(fuzz_flags) "$t" "$corpus" -- "${dict[@]}" \
    -max_total_time="$SECONDS_PER_TARGET" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  finals=$(find "$corpus" -type f | wc -l)
  line="$t: ${runs:-?} executions, ${speed:-?} exec/s, cov ${cov:-?}, corpus $finals"
  contained=$(grep -c '^CONTAINED PANIC' "$log" || true)
  if [ "$rc" != 0 ]; then
    line="$line, CRASH (exit $rc)"
    failed+=("$t")
    echo "[fuzz] $t CRASHED; log tail:" >&2
    grep -v '^#[0-9]' "$log" | tail -40 >&2
    grep -o "Test unit written to .*" "$log" >&2 || true
  fi
  if [ "$contained" != 0 ]; then
    # A panic caught by our own catch_unwind (third-party parser): handled,
    # but worth a look.
    line="$line, $contained contained panic site(s)"
    grep '^CONTAINED PANIC' "$log" | sort -u | sed 's/^/[fuzz]   /'
  fi
  echo "[fuzz] $line"
  summary+=("$line")
done

echo "[fuzz] summary (sanitizer: $SANITIZER, ${SECONDS_PER_TARGET}s per target):"
printf '[fuzz]   %s\n' "${summary[@]}"
if [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
  echo "[fuzz] working corpora and logs kept in $WORK"
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "[fuzz] crashes in: ${failed[*]} (reproducers in fuzz/artifacts/<target>/;" \
    "replay with: RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> <file> in fuzz/)" >&2
  exit 1
fi
