#!/usr/bin/env bash
# loadtest/bench_rtcgate_udp.sh: the UDP -> UDP call benchmark of
# loadtest/reference/bench_kamailio.sh, run through rtcgate + rtpengine, so
# the two stacks can be compared scenario for scenario.
#
#   loadtest/bench_rtcgate_udp.sh [-r CALLS_PER_S] [-m CALLS] [-d HOLD_MS]
#
# Starts rtpengine (userspace, loopback, --delete-delay=0), a sipp PBX
# (pbx_uas.xml) and a release rtcgate (UDP only, SQLite in a temp dir, the
# caller trusted, media through rtpengine) on free loopback ports, runs
# uac_call.xml at the given rate and prints calls ok/failed and the CPU
# seconds per 1000 calls of rtcgate and of rtpengine (utime+stime from
# /proc). Everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. loadtest/lib/ports.sh
. loadtest/lib/proc.sh

cps=200 calls=2000 hold=1000
while [ $# -gt 0 ]; do
	case "$1" in
	-r) cps=$2; shift 2 ;;
	-m) calls=$2; shift 2 ;;
	-d) hold=$2; shift 2 ;;
	*) echo "usage: $0 [-r cps] [-m calls] [-d hold_ms]" >&2; exit 2 ;;
	esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RTCGATE_CACHE:-$HOME/.cache/rtcgate}/target}"
cargo build --release -p rtcgate --quiet
BIN="$CARGO_TARGET_DIR/release/rtcgate"

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	echo "outputs in $work"
}
trap cleanup EXIT

ng=$(free_port 127.0.0.1 udp)
sip=$(free_port 127.0.0.1 udp)
pbx=$(free_port 127.0.0.1 udp)
rtpengine --foreground --log-stderr --log-level=4 --table=-1 --interface=127.0.0.1 \
	--listen-ng="127.0.0.1:$ng" --port-min=61000 --port-max=64999 --delete-delay=0 \
	--num-threads=2 >"$work/rtpengine.log" 2>&1 &
rtpe_pid=$!
pids+=("$rtpe_pid")

cat >"$work/rtcgate.toml" <<TOML
[general]
log = "warn"
[sip]
udp_listen = ["127.0.0.1:$sip"]
[websocket]
wss_listen = []
ws_listen = []
[database]
url = "sqlite://$work/rtcgate.db?mode=rwc"
[auth]
trusted = ["127.0.0.1"]
[rtpengine]
instances = [{ address = "127.0.0.1:$ng", weight = 1 }]
[[routes]]
prefix = "1"
destination = "127.0.0.1:$pbx"
TOML
"$BIN" run --config "$work/rtcgate.toml" >"$work/rtcgate.log" 2>&1 &
gw_pid=$!
pids+=("$gw_pid")

(cd "$work" && exec sipp -sf "$ROOT/loadtest/scenarios/pbx_uas.xml" -i 127.0.0.1 -p "$pbx" \
	-nostdin -trace_err >/dev/null 2>&1) &
pids+=($!)
sleep 1

g0=$(proc_ticks "$gw_pid"); r0=$(proc_ticks "$rtpe_pid")
set +e
(cd "$work" && sipp "127.0.0.1:$sip" -sf "$ROOT/loadtest/scenarios/uac_call.xml" -s 1001 \
	-i 127.0.0.1 -mi 127.0.0.1 -r "$cps" -m "$calls" -d "$hold" -l $((cps * (hold / 1000 + 3))) \
	-timeout $((calls / cps + hold / 1000 + 30))s -nostdin -trace_err \
	>"$work/caller.out" 2>&1)
rc=$?
set -e
sleep 1
g1=$(proc_ticks "$gw_pid"); r1=$(proc_ticks "$rtpe_pid")
per1000() { awk -v t="$1" -v n="$calls" 'BEGIN { printf "%.2f", t / 100 / n * 1000 }'; }
echo "rtcgate $(git -C "$ROOT" rev-parse --short HEAD) + rtpengine $(rtpengine --version 2>&1 | awk '{print $NF}'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "uac_call.xml -> rtcgate + rtpengine -> pbx_uas.xml: -r $cps -m $calls -d $hold (sipp rc=$rc: 0 = every call completed)"
grep -E "Successful call|Failed call" "$work/caller.out" | tail -2 || true
echo "rtcgate   CPU $(per1000 $((g1 - g0))) s per 1000 calls ($(( (g1 - g0) )) ticks)"
echo "rtpengine CPU $(per1000 $((r1 - r0))) s per 1000 calls"
echo "rtcgate RSS $(awk '/VmRSS/ {print $2, $3}' /proc/"$gw_pid"/status)"
