#!/usr/bin/env bash
# loadtest/scenarios/check_scenarios.sh: prove every scenario against a real peer.
#
#   loadtest/scenarios/check_scenarios.sh [N] [--no-proxy|--proxy-only]
#
# 1. sipp to sipp on loopback, no proxy: each UAC against its UAS
#    (uac_call/pbx_uas, uac_call_wait_bye/pbx_uas_bye, uac_busy/pbx_uas_busy,
#    uac_cancel/pbx_uas_ringing_forever), N calls each (default 10).
# 2. the same pairs through the reference stack (Kamailio + rtpengine,
#    loadtest/reference/stack.sh), then uac_register_digest (N users, and the
#    same users with a wrong password: must all fail), uac_options; after
#    each call pair rtpengine must hold no call (no leaked session); one call
#    with RTP (uac_call_rtp.xml -> pbx_uas.xml -rtp_echo) must show packets
#    from both sides in rtpengine.
# Prints one line per check and exits non-zero if any failed. Everything it
# starts is stopped by PID on exit. Outputs stay in a temporary directory
# (printed at the end).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib=$here/../lib
# shellcheck source=../lib/ports.sh
. "$lib/ports.sh"
# shellcheck source=../lib/sipp.sh
. "$lib/sipp.sh"
# shellcheck source=../reference/stack.sh
. "$here/../reference/stack.sh"

n=10
mode=both
for a in "$@"; do
	case $a in
	--no-proxy) mode=direct ;;
	--proxy-only) mode=proxy ;;
	[0-9]*) n=$a ;;
	*) echo "usage: $0 [N] [--no-proxy|--proxy-only]" >&2; exit 2 ;;
	esac
done

out=$(mktemp -d /tmp/check_scenarios.XXXXXX)
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

fails=0
report() { # ok(0/1) label detail
	if [[ $1 == 0 ]]; then echo "PASS  $2  $3"; else echo "FAIL  $2  $3"; fails=$((fails + 1)); fi
}

# pair LABEL UAS.xml UAC.xml UAS_IP UAS_PORT TARGET UAC_IP DURATION_MS
pair() {
	local label=$1 uas=$2 uac=$3 uas_ip=$4 uas_port=$5 target=$6 uac_ip=$7 d=$8 rc urc
	sipp_bg "$out" "$label-uas" -sf "$here/$uas" -i "$uas_ip" -p "$uas_port" \
		-mi "$uas_ip" -mp "$(free_port "$uas_ip" udp)" -rtp_echo -s 1001 -d "$d" -m "$n" -timeout 60
	uas_pid=$SIPP_PID
	sleep 0.3
	rc=0
	sipp_fg "$out" "$label-uac" "$target" -sf "$here/$uac" -s 1001 -i "$uac_ip" \
		-mi "$uac_ip" -mp "$(free_port "$uac_ip" udp)" -d "$d" -r 20 -m "$n" -timeout 60 || rc=$?
	urc=0
	# the UAS exits by itself after N calls (+ its timewait)
	for _ in $(seq 50); do kill -0 "$uas_pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$uas_pid" 2>/dev/null; then kill "$uas_pid"; urc=1; fi
	wait "$uas_pid" || urc=$?
	uas_pid=
	local ok=1
	[[ $rc == 0 && $urc == 0 && $(sipp_stat "$out/$label-uac.csv" 'SuccessfulCall(C)') == "$n" &&
		$(sipp_stat "$out/$label-uas.csv" 'SuccessfulCall(C)') == "$n" ]] && ok=0
	report $ok "$label" "uac(rc=$rc $(sipp_summary "$out/$label-uac.csv")) uas(rc=$urc $(sipp_summary "$out/$label-uas.csv"))"
}

pairs=(
	"call pbx_uas.xml uac_call.xml 200"
	"pbx-bye pbx_uas_bye.xml uac_call_wait_bye.xml 200"
	"busy pbx_uas_busy.xml uac_busy.xml 0"
	"cancel pbx_uas_ringing_forever.xml uac_cancel.xml 200"
)

if [[ $mode != proxy ]]; then
	for p in "${pairs[@]}"; do
		read -r label uas uac d <<<"$p"
		port=$(free_port 127.0.0.2 udp)
		pair "direct-$label" "$uas" "$uac" 127.0.0.2 "$port" "127.0.0.2:$port" 127.0.0.3 "$d"
	done
fi

if [[ $mode != direct ]]; then
	"$lib/make_users.sh" "$n" >"$out/users.csv"
	ref_stack_start "$out/ref" "$out/users.csv"
	ref_stack_print | sed 's/^/      /'
	ng="$REF_IP:$REF_NG_PORT"
	for p in "${pairs[@]}"; do
		read -r label uas uac d <<<"$p"
		# callers come from the trusted PBX address (no digest for them)
		pair "kamailio-$label" "$uas" "$uac" "$REF_PBX_IP" "$REF_PBX_PORT" "$REF_IP:$REF_SIP_PORT" "$REF_PBX_IP" "$d"
		left=$("$lib/ng_query.py" "$ng" count)
		report "$([[ $left == 0 ]] && echo 0 || echo 1)" "kamailio-$label-rtpengine" "calls left in rtpengine: $left"
	done

	# media: one call with g711a.pcap played by the caller, echoed by the PBX
	sipp_bg "$out" rtp-uas -sf "$here/pbx_uas.xml" -i "$REF_PBX_IP" -p "$REF_PBX_PORT" \
		-mi "$REF_PBX_IP" -mp "$(free_port "$REF_PBX_IP" udp)" -rtp_echo -s 1001 -m 1 -timeout 30
	uas_pid=$SIPP_PID
	sleep 0.3
	sipp_bg "$out" rtp-uac "$REF_IP:$REF_SIP_PORT" -sf "$here/uac_call_rtp.xml" -s 1001 -i "$REF_PBX_IP" \
		-mi "$REF_PBX_IP" -mp "$(free_port "$REF_PBX_IP" udp)" -d 2500 -m 1 -timeout 30
	uac_pid=$SIPP_PID
	sleep 2
	cid=$("$lib/ng_query.py" "$ng" list | grep -o '"[^"]*@[^"]*"' | head -1 | tr -d '"' || true)
	pk=$("$lib/ng_query.py" "$ng" packets "$cid" 2>&1 | paste -sd' ' || true)
	rc=0
	wait "$uac_pid" || rc=$?
	urc=0
	wait "$uas_pid" || urc=$?
	uas_pid=
	# both tags (caller, PBX echo) must have sent packets into rtpengine
	[[ $rc == 0 && $urc == 0 ]] && awk '{ for (i = 2; i <= NF; i += 2) if ($i < 20) bad = 1; if (NF < 4) bad = 1; exit bad }' <<<"$pk"
	report $? kamailio-rtp-echo "uac rc=$rc uas rc=$urc; packets into rtpengine per tag after 2 s: $pk"

	rc=0
	sipp_fg "$out" reg "$REF_IP:$REF_SIP_PORT" -sf "$here/uac_register_digest.xml" -inf "$out/users.csv" \
		-i 127.0.0.3 -r 50 -m "$n" -timeout 30 || rc=$?
	report "$([[ $rc == 0 ]] && echo 0 || echo 1)" kamailio-register-digest "rc=$rc $(sipp_summary "$out/reg.csv")"

	sed 's/;s3cret$/;wrong/' "$out/users.csv" >"$out/users-bad.csv"
	rc=0
	sipp_fg "$out" reg-bad "$REF_IP:$REF_SIP_PORT" -sf "$here/uac_register_digest.xml" -inf "$out/users-bad.csv" \
		-i 127.0.0.3 -r 50 -m "$n" -timeout 10 -recv_timeout 2000 || rc=$?
	bad_ok=$(sipp_stat "$out/reg-bad.csv" 'SuccessfulCall(C)')
	report "$([[ $rc != 0 && $bad_ok == 0 ]] && echo 0 || echo 1)" kamailio-register-wrong-password "rc=$rc (must fail) $(sipp_summary "$out/reg-bad.csv")"

	rc=0
	sipp_fg "$out" options "$REF_IP:$REF_SIP_PORT" -sf "$here/uac_options.xml" -i 127.0.0.3 -m 1 -timeout 10 || rc=$?
	report "$([[ $rc == 0 ]] && echo 0 || echo 1)" kamailio-options "rc=$rc $(sipp_summary "$out/options.csv")"
fi

echo "outputs: $out"
[[ $fails == 0 ]]
