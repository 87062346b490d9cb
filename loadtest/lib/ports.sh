# shellcheck shell=bash
# loadtest/lib/ports.sh: find free loopback ports (source it, bash only).
#
#   . loadtest/lib/ports.sh
#   port=$(free_port 127.0.0.1 udp)        # a UDP port nobody listens on
#   port=$(free_port 127.0.0.1 both)       # free for UDP *and* TCP (SIP over UDP+WS)
#   base=$(free_port_range 127.0.0.1 2000) # first port of 2000 consecutive free UDP ports
#
# Ports are picked at random in 20000-59999 and checked with `ss`; there is the
# usual race between the check and the bind, so callers should still fail loudly
# if the daemon cannot bind. Nothing here binds a socket itself.

_port_in_use() { # ip port proto(udp|tcp)
	local ip=$1 port=$2 proto=$3 flag=-u
	[[ $proto == tcp ]] && flag=-t
	# Any listener on that port on this ip or on the wildcard address counts.
	ss -Hln "$flag" "sport = :$port" 2>/dev/null | awk -v ip="$ip" '
		{ split($4, a, ":"); host = substr($4, 1, length($4) - length(a[length(a)]) - 1) }
		host == ip || host == "0.0.0.0" || host == "*" || host == "[::]" || host == "[::ffff:" ip "]" { found = 1 }
		END { exit found ? 0 : 1 }'
}

free_port() { # ip [udp|tcp|both]
	local ip=$1 proto=${2:-udp} port i
	for ((i = 0; i < 200; i++)); do
		port=$((20000 + RANDOM % 40000))
		case $proto in
		udp | tcp) _port_in_use "$ip" "$port" "$proto" && continue ;;
		both) { _port_in_use "$ip" "$port" udp || _port_in_use "$ip" "$port" tcp; } && continue ;;
		*) echo "free_port: bad proto $proto" >&2; return 2 ;;
		esac
		echo "$port"
		return 0
	done
	echo "free_port: no free port found on $ip" >&2
	return 1
}

free_port_range() { # ip count -> first port of `count` consecutive free UDP ports
	local ip=$1 count=$2 base i used
	for ((i = 0; i < 50; i++)); do
		base=$((20000 + (RANDOM % ((60000 - 20000 - count) / 100)) * 100))
		used=$(ss -Hlnu 2>/dev/null | awk -v lo="$base" -v hi="$((base + count - 1))" '
			{ n = split($4, a, ":"); p = a[n] + 0; if (p >= lo && p <= hi) c++ } END { print c + 0 }')
		if [[ $used == 0 ]]; then
			echo "$base"
			return 0
		fi
	done
	echo "free_port_range: no free range of $count ports" >&2
	return 1
}
