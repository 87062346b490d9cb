#!/usr/bin/env bash
# The main job: installs what is missing, builds rtcgate, and runs the whole
# demo on this machine's loopback until Ctrl-C (which stops everything it
# started): rtpengine, a demo PBX (sipp answering every call and echoing its
# audio), rtcgate with SQLite and a self-signed certificate, demo users, and
# the SIP.js softphone page.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/setup.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RTCGATE_CACHE:-$HOME/.cache/rtcgate}/target}"
echo "[demo] building rtcgate (release; the first build takes several minutes)"
cargo build --release -p rtcgate --quiet
BIN="$CARGO_TARGET_DIR/release/rtcgate"

mkdir -p run
"$BIN" cert generate --dir run/certs

HTTPS_PORT="${RTCGATE_DEMO_PORT:-8443}"
SIP_PORT=5060
PBX_PORT=5080
BACKUP_PBX_PORT=5082
NG_PORT=2223

# The demo configuration (kept if you edit it).
if [ ! -f run/rtcgate.toml ]; then
  cat > run/rtcgate.toml <<TOML
# Demo configuration written by scripts/demo.sh (edit freely; see
# rtcgate.example.toml for every key).
[general]
domains = ["localhost", "127.0.0.1"]

[sip]
udp_listen = ["127.0.0.1:$SIP_PORT"]

[websocket]
wss_listen = ["127.0.0.1:$HTTPS_PORT"]
allowed_origins = ["https://localhost:$HTTPS_PORT", "https://127.0.0.1:$HTTPS_PORT"]

[database]
url = "sqlite://run/rtcgate.db?mode=rwc"

[auth]
# Browsers authenticate; SIP over UDP from this machine (the demo PBX and
# sipp callers) is trusted.
trusted = ["127.0.0.1"]

[rtpengine]
instances = [{ address = "127.0.0.1:$NG_PORT", weight = 1 }]

# Extensions 2xxx are on the demo PBX "freepbx": a primary and a backup,
# probed with OPTIONS; kill the primary and calls go to the backup.
[[routing.sets]]
name = "freepbx"
algorithm = "priority"
trusted_sources = ["127.0.0.1"]
failover_timeout_ms = 3000
destinations = [
  { address = "127.0.0.1:$PBX_PORT", priority = 0 },
  { address = "127.0.0.1:$BACKUP_PBX_PORT", priority = 1 },
]

[[routing.rules]]
name = "demo-pbx"
range = "2000-2999"
set = "freepbx"
TOML
fi
"$BIN" check-config run/rtcgate.toml >/dev/null

# Demo users (ignored when they exist already).
for u in 1001 1002 1003; do
  "$BIN" user add --config run/rtcgate.toml "$u" "demo$u" >/dev/null 2>&1 || true
done

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "[demo] stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

RTPENGINE_BIN="$(command -v rtpengine || echo /usr/bin/rtpengine)"
"$RTPENGINE_BIN" --foreground --log-stderr --table=-1 \
  --interface=127.0.0.1 --listen-ng="127.0.0.1:$NG_PORT" \
  --port-min=30000 --port-max=34999 --delete-delay=0 \
  >run/rtpengine.log 2>&1 &
pids+=($!)

# The demo PBXes: answer every INVITE with plain RTP and echo the audio;
# -aa answers the health probes (OPTIONS).
(cd run && exec sipp -sf "$ROOT/loadtest/scenarios/pbx_uas.xml" -i 127.0.0.1 -p "$PBX_PORT" \
  -mi 127.0.0.1 -mp 6000 -rtp_echo -aa -nostdin -trace_err > pbx.log 2>&1) &
pids+=($!)
(cd run && exec sipp -sf "$ROOT/loadtest/scenarios/pbx_uas.xml" -i 127.0.0.1 -p "$BACKUP_PBX_PORT" \
  -mi 127.0.0.1 -mp 6100 -rtp_echo -aa -nostdin -trace_err > pbx-backup.log 2>&1) &
pids+=($!)

"$BIN" run --config run/rtcgate.toml --web-root web-demo/dist &
RTCGATE_PID=$!
pids+=($RTCGATE_PID)

for _ in $(seq 1 50); do
  curl -sk "https://127.0.0.1:$HTTPS_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
cat <<MSG

  rtcgate demo is running (Ctrl-C stops everything started here).

    Softphone page    https://localhost:$HTTPS_PORT/
    Users             1001 / demo1001,  1002 / demo1002,  1003 / demo1003
    Call              2000 (the demo PBX set: answers and echoes your voice;
                      primary 127.0.0.1:$PBX_PORT, backup :$BACKUP_PBX_PORT)
                      1002 from 1001 (browser to browser)
    PBX calls you     sipp 127.0.0.1:$SIP_PORT -sf loadtest/scenarios/uac_call.xml -s 1001 \\
                        -i 127.0.0.1 -mi 127.0.0.1 -m 1 -d 10000 -rtp_echo -nostdin

  The certificate comes from a development CA: trust
    $ROOT/run/certs/ca.pem
  in your browser, or accept the warning once at https://localhost:$HTTPS_PORT/

MSG
# Runs until rtcgate stops (a PBX may be killed to watch the failover).
wait "$RTCGATE_PID"
