#!/usr/bin/env bash
# loadtest/callgrind_calls.sh BIN OUTDIR [N] [RATE]: instructions per call of the
# udp-calls path, deterministic enough to compare builds on a busy machine.
#
# Starts the loadtest/bench stack (rtcgate_stack.sh: real rtpengine, SQLite,
# the PBX address trusted) with BIN (a release rtcgate) under
# `valgrind --tool=callgrind`, sipp pbx_uas.xml as the PBX, 20 warm-up calls
# (uac_call.xml, hold 100 ms), zeroes the counters, runs N calls (default 300)
# at RATE calls/s (default 20, hold 500 ms), dumps. Ir per call = the
# `summary:` line of OUTDIR/cg.out.<pid>.1 divided by N:
#
#   loadtest/callgrind_calls.sh target/release/rtcgate /tmp/cg 300 20
#   grep summary /tmp/cg/cg.out.*.1
#   callgrind_annotate --inclusive=yes /tmp/cg/cg.out.*.1 | less
#
# CPU_ONLY=1: no valgrind; prints the utime+stime ticks (and context switches)
# of rtcgate over the N calls instead (noisy: compare runs interleaved).
set -uo pipefail
BIN=$1 OUT=$2 N=${3:-300} RATE=${4:-20}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
scen=$here/scenarios
# shellcheck source=lib/rtcgate_stack.sh
. "$here/lib/rtcgate_stack.sh"
# shellcheck source=lib/sipp.sh
. "$here/lib/sipp.sh"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
if [[ ${CPU_ONLY:-0} == 1 ]]; then
	run_prefix=""
else
	run_prefix="valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.out.%p --dump-instr=no"
fi
cat >"$OUT/wrap.sh" <<W
#!/bin/sh
if [ "\$1" = run ]; then exec $run_prefix "$BIN" "\$@"; fi
exec "$BIN" "\$@"
W
chmod +x "$OUT/wrap.sh"
GW_BIN=$OUT/wrap.sh
# shellcheck disable=SC2034 # read by rtcgate_stack.sh
GW_LOAD_BIN=/bin/true
users=$OUT/users.csv
"$here/lib/make_users.sh" 10 20000 >"$users"
gw_stack_start "$OUT/run" "$users" || { echo "stack did not start" >&2; gw_stack_stop; exit 1; }
ctxt() { cat /proc/"$GW_PID"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s }'; }
sipp_bg "$OUT" pbx -sf "$scen/pbx_uas.xml" -i "$GW_PBX_IP" -p "$GW_PBX_PORT" -mi "$GW_PBX_IP" \
	-mp "$(free_port "$GW_PBX_IP" udp)" -s 1001 -timeout 3600
uas=$SIPP_PID
sleep 0.5
sipp_fg "$OUT" warmup "$GW_IP:$GW_SIP_PORT" -sf "$scen/uac_call.xml" -s 1001 -i "$GW_PBX_IP" -mi "$GW_PBX_IP" \
	-mp "$(free_port "$GW_PBX_IP" udp)" -d 100 -r 10 -m 20 -timeout 60
echo "warm-up: $(sipp_summary "$OUT/warmup.csv")"
sleep 1
[[ ${CPU_ONLY:-0} == 1 ]] || callgrind_control -z "$GW_PID" >/dev/null 2>&1
t0=$(proc_ticks "$GW_PID") c0=$(ctxt)
sipp_fg "$OUT" calls "$GW_IP:$GW_SIP_PORT" -sf "$scen/uac_call.xml" -s 1001 -i "$GW_PBX_IP" -mi "$GW_PBX_IP" \
	-mp "$(free_port "$GW_PBX_IP" udp)" -d 500 -r "$RATE" -m "$N" -l $((RATE * 5)) -timeout 300
echo "calls: $(sipp_summary "$OUT/calls.csv")"
sleep 2
[[ ${CPU_ONLY:-0} == 1 ]] || callgrind_control -d "$GW_PID" >/dev/null 2>&1
echo "rtcgate ticks $(($(proc_ticks "$GW_PID") - t0)) context switches $(($(ctxt) - c0))"
sleep 1
kill "$uas" 2>/dev/null
gw_stack_stop
[[ ${CPU_ONLY:-0} == 1 ]] || grep -h '^summary' "$OUT"/cg.out.*.1
