# shellcheck shell=bash
# loadtest/lib/proc.sh: CPU accounting for processes we started (source it, bash only).
#
#   . loadtest/lib/proc.sh
#   t0=$(proc_tree_ticks "$kam_pid")   # utime+stime (clock ticks) of pid + all descendants
#   ... run load ...
#   t1=$(proc_tree_ticks "$kam_pid")
#   ticks_to_seconds $((t1 - t0))       # -> "1.23"
#
# /proc/<pid>/stat fields 14 (utime) and 15 (stime) include all threads of the
# process (rtpengine is one multi-threaded process). Kamailio forks worker
# processes, so its cost is the sum over the whole process tree. Children that
# exit between two samples take their ticks with them (the parent's cutime is
# not used): fine for Kamailio and rtpengine, whose workers live as long as the
# daemon.

proc_ticks() { # pid -> utime+stime of that process (all its threads), 0 if gone
	local stat rest
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return 0; }
	rest=${stat##*) } # drop "pid (comm) "; comm may contain spaces or ')'
	# rest starts at field 3 (state): utime is field 14 -> index 11, stime 15 -> 12
	local -a f
	read -r -a f <<<"$rest"
	echo $((f[11] + f[12]))
}

proc_descendants() { # pid -> pid and all its descendants, one a line
	local p kids
	echo "$1"
	kids=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)
	for p in $kids; do
		proc_descendants "$p"
	done
}

proc_tree_ticks() { # pid -> sum of utime+stime over pid and its descendants
	local sum=0 p
	for p in $(proc_descendants "$1"); do
		sum=$((sum + $(proc_ticks "$p")))
	done
	echo "$sum"
}

ticks_to_seconds() { # ticks -> seconds with 2 decimals
	awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f\n", t / hz }'
}

proc_stop() { # pid name: SIGTERM, up to 5 s, then SIGKILL; reaps it (our child)
	local pid=$1 i
	[[ -n $pid ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	echo "$2 ($pid) did not stop on SIGTERM, sending SIGKILL" >&2
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
