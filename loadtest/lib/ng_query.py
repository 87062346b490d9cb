#!/usr/bin/env python3
"""loadtest/lib/ng_query.py: one rtpengine ng command over UDP, reply as JSON.

    loadtest/lib/ng_query.py 127.0.0.1:22222 ping
    loadtest/lib/ng_query.py 127.0.0.1:22222 list            # call-ids of the open calls
    loadtest/lib/ng_query.py 127.0.0.1:22222 count           # number of open calls (list, limit 100000)
    loadtest/lib/ng_query.py 127.0.0.1:22222 statistics
    loadtest/lib/ng_query.py 127.0.0.1:22222 packets CALL-ID # per tag: RTP packets received (streams summed)

Used by the reference benchmark to check that no call leaked in rtpengine.
Standard library only; exits 1 on timeout or an error reply.
"""
import json
import os
import socket
import sys


def benc(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(benc(k) + benc(x) for k, x in v.items()) + b"e"
    raise TypeError(type(v))


def bdec(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l" or c == b"d":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            x, i = bdec(b, i)
            out.append(x)
        if c == b"l":
            return out, i + 1
        return dict(zip(out[0::2], out[1::2])), i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    s = b[j + 1:j + 1 + n]
    try:
        s = s.decode()
    except UnicodeDecodeError:
        s = s.hex()
    return s, j + 1 + n


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    host, port = sys.argv[1].rsplit(":", 1)
    cmd = sys.argv[2]
    if cmd in ("list", "count"):
        msg = {"command": "list", "limit": 100000}
    elif cmd == "packets":
        msg = {"command": "query", "call-id": sys.argv[3]}
    else:
        msg = {"command": cmd}
    cookie = b"%d_q" % os.getpid()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(cookie + b" " + benc(msg), (host, int(port)))
    try:
        data = s.recv(1 << 20)
    except socket.timeout:
        sys.exit("ng_query: no reply from %s" % sys.argv[1])
    reply, _ = bdec(data[data.index(b" ") + 1:])
    if reply.get("result") not in ("ok", "pong"):
        print(json.dumps(reply))
        sys.exit(1)
    if cmd == "count":
        print(len(reply.get("calls", [])))
    elif cmd == "packets":
        for tag, t in reply.get("tags", {}).items():
            n = sum(st.get("stats", {}).get("packets", 0) for m in t.get("medias", []) for st in m.get("streams", []))
            print("%s %d" % (tag, n))
    else:
        print(json.dumps(reply, indent=1))


if __name__ == "__main__":
    main()
