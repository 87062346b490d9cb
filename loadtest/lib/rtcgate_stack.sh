# shellcheck shell=bash
# loadtest/lib/rtcgate_stack.sh: start/stop rtcgate (release build) + its own
# rtpengine on free loopback ports, the twin of loadtest/reference/stack.sh
# (same addresses, same rtpengine flags, same roles). Source it (bash), then:
#
#   gw_build                        # cargo build --release -p rtcgate -p loadtest
#   gw_stack_start RUNDIR USERS_CSV # sets the variables below, returns when it answers
#   gw_stack_stop                   # SIGTERM (then SIGKILL) by PID
#
# Addresses (override before calling): GW_IP=127.0.0.1 (listeners, media),
#   GW_PBX_IP=127.0.0.2 (the trusted PBX and UDP callers), GW_DOMAIN=GW_IP.
# Set by gw_stack_start: GW_SIP_PORT (UDP), GW_WS_PORT (ws://), GW_WSS_PORT
#   (wss://), GW_NG_PORT, GW_PBX_PORT (run pbx_uas*.xml there), GW_ADMIN_PORT,
#   GW_PID, GW_RTPE_PID, GW_RUNDIR, GW_CA (the dev CA to trust), GW_BIN,
#   GW_LOAD_BIN (rtcgate-load).
# Tunables: GW_BIN_OVERRIDE (binary to run), GW_RTP_PORTS (10000), GW_RTPE_THREADS (2), GW_LOG (warn),
#   GW_EXTRA_TOML (appended after the config's [limits] table: bare keys change
#   limits, e.g. "udp_rate = 5000"; further tables add sections).
# The config mirrors kamailio.cfg: users authenticate (REGISTER 401, INVITE
# 407), the PBX address is trusted, extensions 1xxx go to the PBX, call
# records off (Kamailio keeps none), per-IP connection caps lifted (the
# benchmarks open thousands of connections from a few loopback addresses).

_GW_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ports.sh
. "$_GW_DIR/ports.sh"
# shellcheck source=proc.sh
. "$_GW_DIR/proc.sh"

GW_IP=${GW_IP:-127.0.0.1}
GW_PBX_IP=${GW_PBX_IP:-127.0.0.2}
GW_DOMAIN=${GW_DOMAIN:-$GW_IP}
GW_PID=
GW_RTPE_PID=

gw_build() {
	export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RTCGATE_CACHE:-$HOME/.cache/rtcgate}/target}"
	(cd "$_GW_DIR/../.." && cargo build --release -p rtcgate -p loadtest --quiet) || return 1
	# GW_BIN_OVERRIDE: another rtcgate binary or a wrapper (e.g. under heaptrack).
	GW_BIN=${GW_BIN_OVERRIDE:-$CARGO_TARGET_DIR/release/rtcgate}
	# shellcheck disable=SC2034 # read by the caller
	GW_LOAD_BIN=$CARGO_TARGET_DIR/release/rtcgate-load
}

_gw_wait_tcp() { # ip port seconds
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		_port_in_use "$1" "$2" tcp && return 0
		sleep 0.1
	done
	return 1
}

gw_stack_start() { # rundir users.csv
	GW_RUNDIR=$1
	local csv=$2 i
	[[ -n ${GW_BIN:-} ]] || gw_build || return 1
	mkdir -p "$GW_RUNDIR"
	GW_RUNDIR=$(cd "$GW_RUNDIR" && pwd)
	rm -f "$GW_RUNDIR"/rtcgate.db*
	"$GW_BIN" cert generate --dir "$GW_RUNDIR/certs" >/dev/null || return 1
	# shellcheck disable=SC2034 # read by the caller
	GW_CA=$GW_RUNDIR/certs/ca.pem

	GW_SIP_PORT=$(free_port "$GW_IP" udp)
	GW_WS_PORT=$(free_port "$GW_IP" tcp)
	GW_WSS_PORT=$(free_port "$GW_IP" tcp)
	GW_ADMIN_PORT=$(free_port "$GW_IP" tcp)
	GW_NG_PORT=$(free_port "$GW_IP" udp)
	GW_PBX_PORT=$(free_port "$GW_PBX_IP" udp)
	GW_RTP_MIN=$(free_port_range "$GW_IP" "${GW_RTP_PORTS:-10000}")
	GW_RTP_MAX=$((GW_RTP_MIN + ${GW_RTP_PORTS:-10000} - 1))

	rtpengine --config-file=none --foreground --table=-1 \
		--pidfile="$GW_RUNDIR/rtpengine.pid" \
		--interface="$GW_IP" --listen-ng="$GW_IP:$GW_NG_PORT" \
		--port-min="$GW_RTP_MIN" --port-max="$GW_RTP_MAX" \
		--delete-delay=0 --timeout=60 --silent-timeout=600 --final-timeout=600 \
		--num-threads="${GW_RTPE_THREADS:-2}" --dtls-passive \
		--log-stderr --log-level=4 \
		>"$GW_RUNDIR/rtpengine.log" 2>&1 &
	GW_RTPE_PID=$!

	cat >"$GW_RUNDIR/rtcgate.toml" <<TOML
[general]
node_id = "bench"
domains = ["$GW_DOMAIN"]
log = "${GW_LOG:-warn}"
[sip]
udp_listen = ["$GW_IP:$GW_SIP_PORT"]
[websocket]
wss_listen = ["$GW_IP:$GW_WSS_PORT"]
ws_listen = ["$GW_IP:$GW_WS_PORT"]
allowed_origins = ["https://127.0.0.1", "https://localhost"]
max_connections_per_ip = 60000
[tls]
cert = "$GW_RUNDIR/certs/cert.pem"
key = "$GW_RUNDIR/certs/key.pem"
[database]
url = "sqlite://$GW_RUNDIR/rtcgate.db?mode=rwc"
[auth]
trusted = ["$GW_PBX_IP"]
# sipp answers one MD5 challenge (Kamailio sends only that one too)
udp_algorithms = ["MD5"]
[accounting]
enabled = false
[admin]
enabled = true
listen = "$GW_IP:$GW_ADMIN_PORT"
[rtpengine]
instances = [{ address = "$GW_IP:$GW_NG_PORT", weight = 1 }]
[[routes]]
prefix = "1"
destination = "$GW_PBX_IP:$GW_PBX_PORT"
[limits]
# sipp's REGISTER load (3000+/s from one address) would be banned by the
# default udp_rate; Kamailio's reference config has no pike either
trusted = ["127.0.0.3"]
${GW_EXTRA_TOML:-}
TOML
	"$GW_BIN" check-config "$GW_RUNDIR/rtcgate.toml" >/dev/null || return 1
	"$GW_BIN" run --config "$GW_RUNDIR/rtcgate.toml" >"$GW_RUNDIR/rtcgate.log" 2>&1 &
	GW_PID=$!
	_gw_wait_tcp "$GW_IP" "$GW_WSS_PORT" 20 || { echo "rtcgate did not start, see $GW_RUNDIR/rtcgate.log" >&2; return 1; }
	for ((i = 0; i < 50; i++)); do
		[[ -f $GW_RUNDIR/rtcgate.db ]] && break
		sleep 0.1
	done
	python3 "$_GW_DIR/provision_rtcgate.py" "$GW_RUNDIR/rtcgate.db" "$GW_DOMAIN" "$csv" >/dev/null || return 1
	for ((i = 0; i < 20; i++)); do
		if sipp "$GW_IP:$GW_SIP_PORT" -sf "$_GW_DIR/../scenarios/uac_options.xml" -i "$GW_PBX_IP" \
			-m 1 -timeout 2 -nostdin >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$GW_PID" 2>/dev/null || break
		sleep 0.5
	done
	echo "rtcgate does not answer OPTIONS, see $GW_RUNDIR/rtcgate.log" >&2
	return 1
}

gw_stack_stop() {
	proc_stop "$GW_PID" rtcgate
	GW_PID=
	proc_stop "$GW_RTPE_PID" rtpengine
	GW_RTPE_PID=
}

gw_stack_print() {
	cat <<EOT
rtcgate   pid $GW_PID  SIP udp:$GW_IP:$GW_SIP_PORT  ws://$GW_IP:$GW_WS_PORT/  wss://$GW_IP:$GW_WSS_PORT/  admin http://$GW_IP:$GW_ADMIN_PORT/
rtpengine pid $GW_RTPE_PID  ng udp:$GW_IP:$GW_NG_PORT  RTP ports $GW_RTP_MIN-$GW_RTP_MAX
PBX (run pbx_uas*.xml here): $GW_PBX_IP:$GW_PBX_PORT   trusted source IP: $GW_PBX_IP
run dir $GW_RUNDIR (logs, rtcgate.db, certs/ca.pem)
EOT
}
