#!/usr/bin/env bash
# scripts/setup.d/kamailio.sh: install what the reference benchmark
# (loadtest/reference/) needs on Debian 12, and nothing that is already there.
# Safe to run again; needs root (or sudo) only when something is missing.
#
# Kamailio 5.6 (Debian 5.6.3): core + websocket (WS listener) + extra
# (rtpengine module) + sqlite (auth_db's subscriber table) modules; sqlite3 to
# build that table; shellcheck for loadtest/ shell scripts. The packaged
# kamailio service is not ours: loadtest/reference/run_kamailio.sh starts its
# own instance on loopback, so the Debian one is stopped and disabled.
set -euo pipefail

APT_PACKAGES=(kamailio kamailio-websocket-modules kamailio-extra-modules kamailio-sqlite-modules sqlite3 shellcheck)

say() { printf '[setup kamailio] %s\n' "$*"; }
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
		say "need root to run: $*"
		exit 1
	fi
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
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
	say "Debian packages present: ${APT_PACKAGES[*]}"
fi

# keep the packaged service (default config, port 5060) from running
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
	if systemctl is-enabled --quiet kamailio 2>/dev/null || systemctl is-active --quiet kamailio 2>/dev/null; then
		say "stopping and disabling the Debian kamailio service"
		as_root systemctl disable --now kamailio
	fi
fi
for m in websocket rtpengine db_sqlite auth_db nathelper usrloc; do
	[ -f "/usr/lib/x86_64-linux-gnu/kamailio/modules/$m.so" ] || { say "module $m.so missing"; exit 1; }
done
say "kamailio $(kamailio -v | head -1 | awk '{print $3}') ready (not started)"
