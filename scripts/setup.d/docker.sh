#!/usr/bin/env bash
# Tools that check docker/ without a Docker engine (gateway/tests/docker_files.rs):
# Debian's docker-compose (1.29, Python) validates docker/compose.yaml with
# `docker-compose config`. No recommends: they would pull the Docker engine.
# systemd-analyze (checks docker/rtcgate.service) comes with systemd.
set -euo pipefail

say() { printf '[setup] docker: %s\n' "$*"; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; exit 1; fi
}

if dpkg-query -W -f='${Status}' docker-compose 2>/dev/null | grep -q "install ok installed"; then
  say "docker-compose present"
else
  say "installing docker-compose (Debian, without the engine)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose
fi
