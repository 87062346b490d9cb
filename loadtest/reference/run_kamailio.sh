#!/usr/bin/env bash
# loadtest/reference/run_kamailio.sh: run the reference stack (rtpengine +
# Kamailio 5.6 with kamailio.cfg) on free loopback ports, print the ports,
# and stop both (by PID) on exit.
#
#   loadtest/reference/run_kamailio.sh [-u USERS_CSV] [-d RUNDIR] [-- COMMAND ...]
#
# Without COMMAND it runs until Ctrl-C / SIGTERM. With COMMAND it runs it with
# REF_SIP_PORT, REF_WS_PORT, REF_PBX_PORT, REF_IP, REF_PBX_IP, REF_NG_PORT,
# REF_KAM_PID, REF_RTPE_PID, REF_RUNDIR exported, then stops the stack and
# exits with COMMAND's status. Default users: 100 users 2000..2099, password
# s3cret (loadtest/lib/make_users.sh). Default RUNDIR: a new temporary dir.
#
# Example:
#   loadtest/reference/run_kamailio.sh -- sh -c \
#     'sipp $REF_IP:$REF_SIP_PORT -sf loadtest/scenarios/uac_options.xml -m 1 -nostdin'
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=stack.sh
. "$here/stack.sh"

users=
rundir=
while [[ $# -gt 0 ]]; do
	case $1 in
	-u) users=$2; shift 2 ;;
	-d) rundir=$2; shift 2 ;;
	--) shift; break ;;
	-h | --help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 2 ;;
	esac
done
[[ -n $rundir ]] || rundir=$(mktemp -d /tmp/kamref.XXXXXX)
if [[ -z $users ]]; then
	users=$rundir/users.csv
	mkdir -p "$rundir"
	"$here/../lib/make_users.sh" 100 >"$users"
fi

trap ref_stack_stop EXIT
trap 'exit 130' INT TERM
ref_stack_start "$rundir" "$users"
ref_stack_print

export REF_IP REF_PBX_IP REF_SIP_PORT REF_WS_PORT REF_PBX_PORT REF_NG_PORT REF_KAM_PID REF_RTPE_PID REF_RUNDIR
if [[ $# -gt 0 ]]; then
	set +e
	"$@"
	rc=$?
	set -e
	exit "$rc"
fi
echo "running; Ctrl-C to stop"
while kill -0 "$REF_KAM_PID" 2>/dev/null && kill -0 "$REF_RTPE_PID" 2>/dev/null; do
	sleep 1
done
echo "a daemon exited; see $REF_RUNDIR/*.log" >&2
exit 1
