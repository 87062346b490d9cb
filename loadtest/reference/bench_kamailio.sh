#!/usr/bin/env bash
# loadtest/reference/bench_kamailio.sh: benchmark the reference stack
# (Kamailio 5.6 + rtpengine, kamailio.cfg) with sipp on loopback.
#
#   loadtest/reference/bench_kamailio.sh [-r CPS] [-m CALLS] [-d HOLD_MS]
#                                        [-R REG_RATE] [-n REGS] [--calls-only|--reg-only]
#   defaults: -r 200 -m 2000 -d 1000 -R 500 -n 3000
#
# (a) calls: uac_call.xml (UDP caller at the trusted PBX address, plain SDP)
#     -> Kamailio (record-route, rtpengine offer/answer/delete with the
#     RTP/AVP leg flags) -> pbx_uas.xml; CALLS calls at CPS calls/s, hold
#     HOLD_MS. Signalling and ng control only: no RTP is sent.
# (b) registrations: uac_register_digest.xml, REGS users (make_users.sh),
#     each REGISTER -> 401 -> REGISTER with Authorization -> 200 (auth_db on
#     SQLite, usrloc in memory), at REG_RATE users/s.
# Reports calls/registrations ok/failed, achieved rate, and CPU seconds
# (utime+stime from /proc, Kamailio summed over all its processes, rtpengine
# over all its threads) per 1000 calls / registrations, sampled just before
# and after each run. Also the sipp processes' own CPU, the load average, and
# rtpengine's open calls after the run (must be 0). A warm-up of 20 calls
# runs first and is not counted. Everything started is stopped by PID on
# exit. Outputs (sipp CSV/err files, daemon logs, summary.txt) go to a
# temporary directory printed at the end.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib=$here/../lib
scen=$here/../scenarios
# shellcheck source=stack.sh
. "$here/stack.sh"
# shellcheck source=../lib/proc.sh
. "$lib/proc.sh"
# shellcheck source=../lib/sipp.sh
. "$lib/sipp.sh"

cps=200 calls=2000 hold=1000 reg_rate=500 regs=3000 do_calls=1 do_regs=1
while [[ $# -gt 0 ]]; do
	case $1 in
	-r) cps=$2; shift 2 ;;
	-m) calls=$2; shift 2 ;;
	-d) hold=$2; shift 2 ;;
	-R) reg_rate=$2; shift 2 ;;
	-n) regs=$2; shift 2 ;;
	--calls-only) do_regs=0; shift ;;
	--reg-only) do_calls=0; shift ;;
	-h | --help) sed -n '2,26p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 2 ;;
	esac
done

out=$(mktemp -d /tmp/bench_kamailio.XXXXXX)
uas_pid=
cleanup() {
	if [[ -n $uas_pid ]] && kill -0 "$uas_pid" 2>/dev/null; then
		kill "$uas_pid" 2>/dev/null || true
		wait "$uas_pid" 2>/dev/null || true
	fi
	ref_stack_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary=$out/summary.txt
say() { echo "$*" | tee -a "$summary"; }
per1000() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1000 / n; else print "n/a" }'; }
pct() { awk -v t="$1" -v s="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (s > 0) printf "%.0f%%", t / hz / s * 100; else print "n/a" }'; }
now() { date +%s.%N; }
hms_ms() { awk -F: '{ printf "%.1f ms", ($1 * 3600 + $2 * 60 + $3) * 1000 + $4 / 1000 }' <<<"$1"; } # sipp HH:MM:SS:usec

"$lib/make_users.sh" "$((regs > 100 ? regs : 100))" >"$out/users.csv"
ref_stack_start "$out/ref" "$out/users.csv"
ref_stack_print >"$out/stack.txt"
ng=$REF_IP:$REF_NG_PORT

say "reference benchmark $(date -u +%FT%TZ) on $(nproc) cores, $(uname -r)"
say "kamailio $(kamailio -v 2>/dev/null | head -1 | awk '{print $3}') (${REF_KAM_CHILDREN:-4} UDP workers), rtpengine $(rtpengine --version 2>&1 | awk '{print $NF}') (userspace, ${REF_RTPE_THREADS:-2} threads), sipp $(sipp -v 2>/dev/null | grep -o 'v[0-9.]*' | head -1)"
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $do_calls == 1 ]]; then
	sipp_bg "$out" pbx -sf "$scen/pbx_uas.xml" -i "$REF_PBX_IP" -p "$REF_PBX_PORT" \
		-mi "$REF_PBX_IP" -mp "$(free_port "$REF_PBX_IP" udp)" -s 1001 -timeout 600
	uas_pid=$SIPP_PID
	sleep 0.5
	sipp_fg "$out" warmup "$REF_IP:$REF_SIP_PORT" -sf "$scen/uac_call.xml" -s 1001 -i "$REF_PBX_IP" \
		-mi "$REF_PBX_IP" -mp "$(free_port "$REF_PBX_IP" udp)" -d 100 -r 20 -m 20 -timeout 30 ||
		{ echo "warm-up calls failed: $(sipp_summary "$out/warmup.csv")" >&2; exit 1; }

	k0=$(proc_tree_ticks "$REF_KAM_PID") r0=$(proc_ticks "$REF_RTPE_PID") p0=$(proc_ticks "$uas_pid") t0=$(now)
	rc=0
	sipp_bg "$out" calls "$REF_IP:$REF_SIP_PORT" -sf "$scen/uac_call.xml" -s 1001 -i "$REF_PBX_IP" \
		-mi "$REF_PBX_IP" -mp "$(free_port "$REF_PBX_IP" udp)" -d "$hold" -r "$cps" -m "$calls" \
		-timeout "$((calls / cps + hold / 1000 + 60))"
	uac_pid=$SIPP_PID
	c0=$(proc_ticks "$uac_pid") c1=$c0
	# sample the caller's CPU while it lives (its /proc entry goes with it)
	while kill -0 "$uac_pid" 2>/dev/null; do
		c=$(proc_ticks "$uac_pid")
		[[ $c -gt 0 ]] && c1=$c
		sleep 0.2
	done
	wait "$uac_pid" || rc=$?
	t1=$(now)
	k1=$(proc_tree_ticks "$REF_KAM_PID") r1=$(proc_ticks "$REF_RTPE_PID") p1=$(proc_ticks "$uas_pid")
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	ok=$(sipp_stat "$out/calls.csv" 'SuccessfulCall(C)')
	failed=$(sipp_stat "$out/calls.csv" 'FailedCall(C)')
	rtd=$(sipp_stat "$out/calls.csv" 'ResponseTime1(C)')
	left=$("$lib/ng_query.py" "$ng" count)
	say ""
	say "(a) calls: uac_call.xml -> Kamailio + rtpengine -> pbx_uas.xml, -r $cps -m $calls -d $hold (sipp rc=$rc)"
	say "    calls ok $ok, failed $failed; wall $wall s (includes the last hold + BYE); call setup (INVITE sent -> 200 received) mean $(hms_ms "$rtd")"
	say "    kamailio  CPU $(ticks_to_seconds $((k1 - k0))) s = $(per1000 $((k1 - k0)) "$ok") s per 1000 calls ($(pct $((k1 - k0)) "$wall") of one core over the run)"
	say "    rtpengine CPU $(ticks_to_seconds $((r1 - r0))) s = $(per1000 $((r1 - r0)) "$ok") s per 1000 calls ($(pct $((r1 - r0)) "$wall") of one core)"
	say "    sipp caller CPU $(ticks_to_seconds $((c1 - c0))) s, sipp PBX CPU $(ticks_to_seconds $((p1 - p0))) s"
	say "    rtpengine calls left open after the run: $left"
	say "    load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
	kill "$uas_pid" 2>/dev/null || true
	wait "$uas_pid" 2>/dev/null || true
	uas_pid=
fi

if [[ $do_regs == 1 ]]; then
	k0=$(proc_tree_ticks "$REF_KAM_PID") t0=$(now)
	rc=0
	sipp_bg "$out" reg "$REF_IP:$REF_SIP_PORT" -sf "$scen/uac_register_digest.xml" -inf "$out/users.csv" \
		-i 127.0.0.3 -r "$reg_rate" -m "$regs" -timeout "$((regs / reg_rate + 60))"
	reg_pid=$SIPP_PID
	c0=$(proc_ticks "$reg_pid") c1=$c0
	while kill -0 "$reg_pid" 2>/dev/null; do
		c=$(proc_ticks "$reg_pid")
		[[ $c -gt 0 ]] && c1=$c
		sleep 0.2
	done
	wait "$reg_pid" || rc=$?
	t1=$(now)
	k1=$(proc_tree_ticks "$REF_KAM_PID")
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	ok=$(sipp_stat "$out/reg.csv" 'SuccessfulCall(C)')
	failed=$(sipp_stat "$out/reg.csv" 'FailedCall(C)')
	rtd=$(sipp_stat "$out/reg.csv" 'ResponseTime1(C)')
	aors=$(kamcmd -s "unix:$REF_RUNDIR/kamailio_ctl" stats.get_statistics usrloc: 2>&1 | grep -E "registered_users|location_contacts" | paste -sd" " || true)
	say ""
	say "(b) registrations: uac_register_digest.xml (REGISTER, 401, REGISTER+Authorization, 200), -r $reg_rate -m $regs (sipp rc=$rc)"
	say "    registrations ok $ok, failed $failed; wall $wall s = $(awk -v n="$ok" -v w="$wall" 'BEGIN { printf "%.0f", n / w }') registrations/s ($(awk -v n="$ok" -v w="$wall" 'BEGIN { printf "%.0f", 2 * n / w }') REGISTER requests/s); REGISTER ... 200 (both round trips) mean $(hms_ms "$rtd")"
	say "    kamailio CPU $(ticks_to_seconds $((k1 - k0))) s = $(per1000 $((k1 - k0)) "$ok") s per 1000 registrations ($(pct $((k1 - k0)) "$wall") of one core); $aors"
	say "    sipp CPU $(ticks_to_seconds $((c1 - c0))) s"
	say "    load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

say ""
say "outputs: $out"
