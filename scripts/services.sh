#!/usr/bin/env bash
# Makes sure the database servers the storage tests use are running
# (PostgreSQL and MariaDB on loopback). Starts them when installed but
# stopped; never installs or reconfigures them. Tests themselves fail in CI
# when a server is missing.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! up 5432 && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  echo "[services] starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! up 3306 && [ -x /usr/sbin/mariadbd ]; then
  echo "[services] starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 50); do up 3306 && break; sleep 0.2; done
fi
for p in 5432 3306; do
  if up "$p"; then echo "[services] port $p up"; else echo "[services] port $p DOWN"; fi
done
exit 0
