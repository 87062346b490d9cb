#!/usr/bin/env bash
# The main job: installs what is missing, builds rtcgate, makes a dev
# certificate, starts rtpengine and rtcgate on this machine's loopback, and
# keeps them running until Ctrl-C, which stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/setup.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RTCGATE_CACHE:-$HOME/.cache/rtcgate}/target}"
echo "[demo] building rtcgate (release)"
cargo build --release -p rtcgate --quiet
BIN="$CARGO_TARGET_DIR/release/rtcgate"

mkdir -p run
"$BIN" cert generate --dir run/certs

# rtpengine: userspace forwarding on loopback, its own ng port and media ports.
RTPENGINE_NG_PORT="${RTPENGINE_NG_PORT:-2223}"
RTPENGINE_BIN="$(command -v rtpengine || echo /usr/bin/rtpengine)"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "[demo] stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f run/rtpengine.pid
}
trap cleanup INT TERM EXIT

"$RTPENGINE_BIN" --foreground --log-stderr --table=-1 \
  --interface=127.0.0.1 --listen-ng="127.0.0.1:$RTPENGINE_NG_PORT" \
  --port-min=30000 --port-max=34999 --delete-delay=0 \
  >run/rtpengine.log 2>&1 &
pids+=($!)
echo $! > run/rtpengine.pid
echo "[demo] rtpengine pid $! (ng 127.0.0.1:$RTPENGINE_NG_PORT, log run/rtpengine.log)"

CONFIG_ARGS=()
[ -f run/rtcgate.toml ] && CONFIG_ARGS=(--config run/rtcgate.toml)
WEB_ARGS=()
[ -d web-demo/dist ] && WEB_ARGS=(--web-root web-demo/dist)
"$BIN" run "${CONFIG_ARGS[@]}" "${WEB_ARGS[@]}" &
pids+=($!)
echo "[demo] rtcgate pid $!"

sleep 1
cat <<MSG

  rtcgate is running (Ctrl-C stops everything started here):
    SIP over WSS   wss://localhost:8443   (subprotocol "sip")
    HTTPS          https://localhost:8443/healthz
    SIP over UDP   127.0.0.1:5060
  The certificate is self-signed by a development CA: trust
    $ROOT/run/certs/ca.pem
  in your browser, or open https://localhost:8443/healthz once and accept it.

MSG
wait -n "${pids[@]}"
