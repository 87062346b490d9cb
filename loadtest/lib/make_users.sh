#!/usr/bin/env bash
# loadtest/lib/make_users.sh: write a sipp injection CSV of N users.
#
#   loadtest/lib/make_users.sh N [FIRST_USER] [PASSWORD] > users.csv
#   loadtest/lib/make_users.sh 1000 > /tmp/users.csv          # 2000..2999, password s3cret
#
# Format (sipp -inf): first line SEQUENTIAL, then "user;password" per line;
# scenarios read [field0] (user) and [field1] (password). The same file feeds
# loadtest/reference/mkdb.sh (the Kamailio subscriber table), so the load and the
# registrar agree. Users default to 2000.. so they never collide with the 1xxx
# extensions routed to the PBX (keep N <= 8000 with the default FIRST_USER).
set -euo pipefail

n=${1:?usage: make_users.sh N [FIRST_USER] [PASSWORD]}
first=${2:-2000}
password=${3:-s3cret}
[[ $n =~ ^[0-9]+$ && $first =~ ^[0-9]+$ ]] || { echo "N and FIRST_USER must be numbers" >&2; exit 2; }
[[ $password != *";"* ]] || { echo "password must not contain ';'" >&2; exit 2; }

echo SEQUENTIAL
awk -v n="$n" -v first="$first" -v pw="$password" 'BEGIN { for (i = 0; i < n; i++) printf "%d;%s\n", first + i, pw }'
