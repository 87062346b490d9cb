#!/usr/bin/env bash
# loadtest/reference/ws_smoke.sh: end-to-end check of the WebSocket half of
# the reference config (Kamailio + rtpengine) with ws_client.py as the browser
# and sipp as the PBX and as the PBX-side caller.
#
#   loadtest/reference/ws_smoke.sh
#
#   browser (ws_client.py, user 2000) --WS--> Kamailio --UDP--> pbx_uas.xml (1001)
#   uac_call.xml (at the trusted PBX IP) --UDP--> Kamailio --WS--> browser (2000)
#
# Checks: REGISTER digest over WS; browser->PBX call (407, WebRTC answer back
# to the browser, plain RTP/AVP without ICE/DTLS towards the PBX); PBX->browser
# call (WebRTC offer to the browser, plain answer to the caller); BYE both
# ways; no call left in rtpengine. Exit 0 = all passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib=$here/../lib
scen=$here/../scenarios
# shellcheck source=stack.sh
. "$here/stack.sh"
# shellcheck source=../lib/sipp.sh
. "$lib/sipp.sh"

out=$(mktemp -d /tmp/ws_smoke.XXXXXX)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
		wait "$p" 2>/dev/null || true
	done
	ref_stack_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fails=0
check() { # label cond-result(0/1) detail
	if [[ $2 == 0 ]]; then echo "PASS  $1  $3"; else echo "FAIL  $1  $3"; fails=$((fails + 1)); fi
}

"$lib/make_users.sh" 10 >"$out/users.csv"
ref_stack_start "$out/ref" "$out/users.csv"
ref_stack_print | sed 's/^/      /'

pbx_pid=
sipp_bg "$out" pbx -sf "$scen/pbx_uas.xml" -i "$REF_PBX_IP" -p "$REF_PBX_PORT" -mi "$REF_PBX_IP" \
	-mp "$(free_port "$REF_PBX_IP" udp)" -s 1001 -m 1 -timeout 60 -trace_msg -message_file "$out/pbx.msg"
pbx_pid=$SIPP_PID
pids+=("$pbx_pid")
sleep 0.3

"$here/ws_client.py" --ws "ws://$REF_IP:$REF_WS_PORT/" --domain "$REF_IP" --user 2000 --password s3cret \
	--call 1001 --wait-incoming 20 --ready-file "$out/ready" >"$out/browser.log" 2>&1 &
browser=$!
pids+=("$browser")
for _ in $(seq 100); do [[ -e $out/ready ]] && break; kill -0 "$browser" 2>/dev/null || break; sleep 0.1; done

rc=0
if [[ -e $out/ready ]]; then
	sipp_fg "$out" caller "$REF_IP:$REF_SIP_PORT" -sf "$scen/uac_call.xml" -s 2000 -i "$REF_PBX_IP" \
		-mi "$REF_PBX_IP" -mp "$(free_port "$REF_PBX_IP" udp)" -d 500 -m 1 -timeout 20 \
		-trace_msg -message_file "$out/caller.msg" || rc=$?
else
	rc=1
fi
brc=0
wait "$browser" || brc=$?
sed 's/^/      browser: /' "$out/browser.log"
check browser "$brc" "ws_client.py exit $brc (REGISTER, call to 1001, incoming call, un-REGISTER)"
# the PBX exits after its one call (+ 2 s timewait)
for _ in $(seq 50); do kill -0 "$pbx_pid" 2>/dev/null || break; sleep 0.1; done
prc=0
wait "$pbx_pid" 2>/dev/null || prc=$?
check pbx "$([[ $prc == 0 && $(sipp_stat "$out/pbx.csv" 'SuccessfulCall(C)') == 1 ]] && echo 0 || echo 1)" "pbx_uas.xml: $(sipp_summary "$out/pbx.csv")"
check caller "$rc" "uac_call.xml to 2000: $( [[ -e $out/caller.csv ]] && sipp_summary "$out/caller.csv")"

# what the legacy side saw: plain RTP/AVP, no ICE, no DTLS
inv=$(awk '/message received/{p=0} /^INVITE /{p=1} p' "$out/pbx.msg" 2>/dev/null || true)
grep -q 'm=audio [0-9]* RTP/AVP ' <<<"$inv" && ! grep -qE 'a=(ice-ufrag|fingerprint|candidate)' <<<"$inv"
check pbx-offer $? "INVITE to the PBX carries RTP/AVP without ICE/DTLS"
ans=$(awk '/message sent/{p=0} /^SIP\/2.0 200 OK/{p=1} p' "$out/caller.msg" 2>/dev/null | sed -n '/CSeq: 1 INVITE/,/a=sendrecv/p' || true)
grep -q 'm=audio [0-9]* RTP/AVP ' <<<"$ans" && ! grep -qE 'a=(ice-ufrag|fingerprint|candidate)' <<<"$ans"
check caller-answer $? "200 to the UDP caller carries RTP/AVP without ICE/DTLS"
left=$("$lib/ng_query.py" "$REF_IP:$REF_NG_PORT" count)
check rtpengine "$([[ $left == 0 ]] && echo 0 || echo 1)" "calls left open in rtpengine: $left"

echo "outputs: $out"
[[ $fails == 0 ]]
