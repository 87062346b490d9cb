#!/usr/bin/env bash
# Installs what rtcgate's demo and tests need on Debian 12, and nothing that
# is already there. Safe to run again. Needs root (or sudo) only when
# something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: rtpengine (media relay, userspace forwarding), sipp (SIP
# load/test tool), Chromium (browser tests), pkg-config for -sys crates, curl
# (the demo's readiness check).
APT_PACKAGES=(rtpengine-daemon sip-tester chromium pkg-config ca-certificates curl)

say() { printf '[setup] %s\n' "$*"; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; exit 1; fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  # No recommends: rtpengine would pull its kernel module (DKMS); we forward
  # media in userspace.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "Debian packages present: ${APT_PACKAGES[*]}"
fi

# The Debian rtpengine service is not ours: rtcgate's scripts start their own
# instance on loopback. Keep the packaged one from holding the ng port.
if [ -x /etc/init.d/rtpengine-daemon ] && pgrep -x rtpengine >/dev/null 2>&1 && [ ! -f run/rtpengine.pid ]; then
  say "note: an rtpengine not started by rtcgate is running"
fi

# Rust: the toolchain comes with the machine (rustup); we cannot fetch one.
if ! command -v cargo >/dev/null; then
  say "cargo not found: install Rust >= 1.94 (rustup) first"; exit 1
fi
rustc_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "${rustc_minor:-0}" -lt 94 ]; then
  say "rustc $(rustc --version) is too old: 1.94 or newer is needed (sqlx 0.9)"; exit 1
fi

# Node packages for the web demo and its browser tests (pinned by the lock file).
if [ -f web-demo/package.json ]; then
  if ! command -v npm >/dev/null; then
    say "installing Node.js and npm"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  if [ ! -d web-demo/node_modules ] || [ web-demo/package-lock.json -nt web-demo/node_modules/.package-lock.json ]; then
    say "installing npm packages for web-demo"
    (cd web-demo && npm ci --no-audit --no-fund --loglevel=error)
  else
    say "npm packages present"
  fi
fi

# Extra install steps of individual parts (kept beside the parts they serve).
for extra in scripts/setup.d/*.sh; do
  [ -e "$extra" ] || continue
  say "running $extra"
  bash "$extra"
done
say "done"
