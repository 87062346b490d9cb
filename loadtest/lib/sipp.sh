# shellcheck shell=bash
# loadtest/lib/sipp.sh: run sipp non-interactively and read its results
# (source it, bash only).
#
#   sipp_bg OUTDIR NAME ARGS...      # start sipp in the background; sets SIPP_PID
#   sipp_fg OUTDIR NAME ARGS...      # run sipp in the foreground; returns sipp's exit code
#   sipp_stat OUTDIR/NAME.csv COLUMN # a column of the final statistics line,
#                                    # e.g. SuccessfulCall(C), FailedCall(C), CallRate(C)
#   sipp_elapsed OUTDIR/NAME.csv     # seconds from start to the last dump (3 decimals)
#   sipp_summary OUTDIR/NAME.csv     # "ok=N failed=N elapsed=S"
#
# Both add -nostdin -trace_stat -stf OUTDIR/NAME.csv -fd 1 -trace_err
# -error_file OUTDIR/NAME.err, and send the screen to OUTDIR/NAME.out.
# sipp exit codes: 0 all calls ok, 1 at least one failed, 97 exit on
# internal command, 99 no call processed, 255 fatal.

_sipp_common() { # outdir name -> args
	echo "-nostdin -trace_stat -stf $1/$2.csv -fd 1 -trace_err -error_file $1/$2.err"
}

sipp_bg() {
	local outdir=$1 name=$2
	shift 2
	mkdir -p "$outdir"
	# shellcheck disable=SC2046
	sipp "$@" $(_sipp_common "$outdir" "$name") >"$outdir/$name.out" 2>&1 &
	# shellcheck disable=SC2034 # read by the caller
	SIPP_PID=$!
}

sipp_fg() {
	local outdir=$1 name=$2
	shift 2
	mkdir -p "$outdir"
	# shellcheck disable=SC2046
	sipp "$@" $(_sipp_common "$outdir" "$name") >"$outdir/$name.out" 2>&1
}

sipp_stat() { # csv column
	awk -F';' -v col="$2" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $c }
		END { if (!c) { print "sipp_stat: no column " col > "/dev/stderr"; exit 1 } print last }' "$1"
}

sipp_elapsed() { # csv -> CurrentTime - StartTime of the last line, in seconds
	# (ElapsedTime(C) is HH:MM:SS, whole seconds; the time stamps end in epoch.frac)
	awk -F';' 'END { n = split($1, a, "\t"); m = split($3, b, "\t"); printf "%.3f\n", b[m] - a[n] }' "$1"
}

sipp_summary() { # csv
	printf 'ok=%s failed=%s elapsed=%ss\n' \
		"$(sipp_stat "$1" 'SuccessfulCall(C)')" "$(sipp_stat "$1" 'FailedCall(C)')" "$(sipp_elapsed "$1")"
}
