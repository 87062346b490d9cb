# shellcheck shell=bash
# loadtest/reference/stack.sh: start/stop the reference stack (rtpengine +
# Kamailio with kamailio.cfg) on free loopback ports. Source it (bash), then:
#
#   ref_stack_start RUNDIR USERS_CSV   # sets the variables below, returns when both answer
#   ...                                # use $REF_SIP_PORT etc.
#   ref_stack_stop                     # SIGTERM (then SIGKILL) by PID, both daemons
#
# Addresses (override in the environment before calling):
#   REF_IP=127.0.0.1    Kamailio listeners and rtpengine's media interface
#   REF_PBX_IP=127.0.0.2  the trusted PBX (and the UDP callers in the benchmark)
#   REF_DOMAIN=REF_IP   the users' SIP domain (Kamailio alias, any port)
# Set by ref_stack_start:
#   REF_SIP_PORT (UDP SIP), REF_WS_PORT (ws://REF_IP:port/), REF_NG_PORT,
#   REF_PBX_PORT (where Kamailio sends 1xxx: run pbx_uas*.xml there),
#   REF_RTP_MIN/REF_RTP_MAX, REF_KAM_PID, REF_RTPE_PID, REF_RUNDIR
# Tunables: REF_KAM_CHILDREN (UDP workers, default 4), REF_KAM_SHM (MB, 256),
#   REF_RTP_PORTS (size of rtpengine's port range, default 10000 = 2500 calls
#   at 4 ports per plain call), REF_RTPE_THREADS (2).
#
# rtpengine: userspace only (--table=-1), --delete-delay=0 (the default 30 s
# keeps 4 ports per finished call and exhausts the range at high call rates),
# --dtls-passive (as in the fixtures: avoids the DTLS role race on browser calls).
# Logs: RUNDIR/kamailio.log, RUNDIR/rtpengine.log.

_REF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/ports.sh
. "$_REF_DIR/../lib/ports.sh"
# shellcheck source=../lib/proc.sh
. "$_REF_DIR/../lib/proc.sh"

REF_IP=${REF_IP:-127.0.0.1}
REF_PBX_IP=${REF_PBX_IP:-127.0.0.2}
# the SIP domain of the users (AOR sip:2000@REF_DOMAIN, digest realm): an alias
# without port, so sip:2000@127.0.0.1 (port 5060 implied) is "myself" although
# the listeners use other ports
REF_DOMAIN=${REF_DOMAIN:-$REF_IP}
REF_KAM_PID=
REF_RTPE_PID=

# subscriber table for auth_db from a make_users.sh CSV (user;password lines)
ref_make_db() { # csv db
	local csv=$1 db=$2 schema=/usr/share/kamailio/db_sqlite
	rm -f "$db"
	{
		cat "$schema/standard-create.sql" "$schema/auth_db-create.sql"
		echo "BEGIN;"
		awk -F';' 'NR > 1 && NF >= 2 { printf "INSERT INTO subscriber (username, domain, password) VALUES (%c%s%c, %c%c, %c%s%c);\n", 39, $1, 39, 39, 39, 39, $2, 39 }' "$csv"
		echo "COMMIT;"
	} | sqlite3 "$db"
}

_ref_wait_udp() { # ip port seconds
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		_port_in_use "$1" "$2" udp && return 0
		sleep 0.1
	done
	return 1
}

ref_stack_start() { # rundir users.csv
	REF_RUNDIR=$1
	local csv=$2
	mkdir -p "$REF_RUNDIR"
	REF_RUNDIR=$(cd "$REF_RUNDIR" && pwd)
	ref_make_db "$csv" "$REF_RUNDIR/subscriber.sqlite"

	REF_SIP_PORT=$(free_port "$REF_IP" both)
	REF_WS_PORT=$(free_port "$REF_IP" tcp)
	REF_NG_PORT=$(free_port "$REF_IP" udp)
	REF_PBX_PORT=$(free_port "$REF_PBX_IP" udp)
	REF_RTP_MIN=$(free_port_range "$REF_IP" "${REF_RTP_PORTS:-10000}")
	REF_RTP_MAX=$((REF_RTP_MIN + ${REF_RTP_PORTS:-10000} - 1))

	rtpengine --config-file=none --foreground --table=-1 \
		--pidfile="$REF_RUNDIR/rtpengine.pid" \
		--interface="$REF_IP" --listen-ng="$REF_IP:$REF_NG_PORT" \
		--port-min="$REF_RTP_MIN" --port-max="$REF_RTP_MAX" \
		--delete-delay=0 --timeout=60 --silent-timeout=600 --final-timeout=600 \
		--num-threads="${REF_RTPE_THREADS:-2}" --dtls-passive \
		--log-stderr --log-level=4 \
		>"$REF_RUNDIR/rtpengine.log" 2>&1 &
	REF_RTPE_PID=$!
	_ref_wait_udp "$REF_IP" "$REF_NG_PORT" 10 || { echo "rtpengine did not start, see $REF_RUNDIR/rtpengine.log" >&2; return 1; }

	kamailio -DD -E -f "$_REF_DIR/kamailio.cfg" -Y "$REF_RUNDIR" -P "$REF_RUNDIR/kamailio.pid" \
		-m "${REF_KAM_SHM:-256}" -M 16 -n "${REF_KAM_CHILDREN:-4}" \
		-l "udp:$REF_IP:$REF_SIP_PORT" -l "tcp:$REF_IP:$REF_WS_PORT" --alias="$REF_DOMAIN" \
		-A "PBX_IP=\"$REF_PBX_IP\"" -A "PBX_URI=\"sip:$REF_PBX_IP:$REF_PBX_PORT\"" -A "WS_PORT=$REF_WS_PORT" \
		-A "RTPE_SOCK=\"udp:$REF_IP:$REF_NG_PORT\"" \
		-A "DBURL=\"sqlite://$REF_RUNDIR/subscriber.sqlite\"" \
		-A "CTL_SOCK=\"unix:$REF_RUNDIR/kamailio_ctl\"" \
		>"$REF_RUNDIR/kamailio.log" 2>&1 &
	REF_KAM_PID=$!
	_ref_wait_udp "$REF_IP" "$REF_SIP_PORT" 15 || { echo "kamailio did not start, see $REF_RUNDIR/kamailio.log" >&2; return 1; }
	# the listener is up before the workers: wait for an answer to OPTIONS
	local i
	for ((i = 0; i < 20; i++)); do
		if sipp "$REF_IP:$REF_SIP_PORT" -sf "$_REF_DIR/../scenarios/uac_options.xml" -i "$REF_IP" \
			-m 1 -timeout 2 -nostdin >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$REF_KAM_PID" 2>/dev/null || break
		sleep 0.5
	done
	echo "kamailio does not answer OPTIONS, see $REF_RUNDIR/kamailio.log" >&2
	return 1
}

ref_stack_stop() {
	proc_stop "$REF_KAM_PID" kamailio
	REF_KAM_PID=
	proc_stop "$REF_RTPE_PID" rtpengine
	REF_RTPE_PID=
}

ref_stack_print() {
	cat <<EOT
kamailio  pid $REF_KAM_PID  SIP udp:$REF_IP:$REF_SIP_PORT  WS ws://$REF_IP:$REF_WS_PORT/
rtpengine pid $REF_RTPE_PID  ng udp:$REF_IP:$REF_NG_PORT  RTP ports $REF_RTP_MIN-$REF_RTP_MAX
PBX (run pbx_uas*.xml here): $REF_PBX_IP:$REF_PBX_PORT   trusted source IP: $REF_PBX_IP
run dir $REF_RUNDIR (logs, subscriber.sqlite, kamailio_ctl)
EOT
}
