#!/usr/bin/env python3
"""loadtest/reference/ws_client.py: a minimal browser-like SIP-over-WebSocket UA
(RFC 7118, subprotocol "sip"), standard library only. It checks the WS half of
the reference config (and later of rtcgate) the way SIP.js uses it; it is a
smoke test, not a load generator (no media, one call at a time).

    ws_client.py --ws ws://127.0.0.1:8080/ --domain 127.0.0.1 --user 2000 --password s3cret \
                 [--call 1001] [--wait-incoming 15] [--ready-file PATH]

Steps (each printed as "OK ..." or "FAIL ..."; exit 1 on the first failure):
  1. WebSocket upgrade with Sec-WebSocket-Protocol: sip;
  2. REGISTER (Contact *.invalid;transport=ws) -> 401 -> digest -> 200;
  3. with --call EXT: INVITE with a WebRTC offer -> 407 -> ACK -> INVITE with
     Proxy-Authorization -> 1xx -> 200 whose SDP must be WebRTC again
     (UDP/TLS/RTP/SAVPF, ICE, fingerprint, rtcp-mux): ACK and BYE follow the
     Record-Route set -> 200;
  4. with --wait-incoming S: touch --ready-file, wait S seconds for an INVITE
     (from the PBX side), check its SDP is WebRTC, answer 180/200 with a
     WebRTC answer (a=setup:active), take the ACK, answer the caller's BYE.
  5. un-REGISTER (Expires: 0) and close.
"""
import argparse
import base64
import hashlib
import os
import random
import re
import socket
import string
import sys
import time
import urllib.parse


def rnd(n=10, chars=string.ascii_lowercase + string.digits):
    return "".join(random.choice(chars) for _ in range(n))


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("OK   " + msg, flush=True)


class WS:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=10)
        self.peer = self.sock.getsockname()
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
            "Origin: http://%s\r\n\r\n" % (u.path or "/", u.hostname, u.port or 80, key, u.hostname)
        )
        self.sock.sendall(req.encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = self.sock.recv(4096)
            if not chunk:
                fail("WebSocket: connection closed during the upgrade")
            resp += chunk
        head, self.buf = resp.split(b"\r\n\r\n", 1)
        head = head.decode(errors="replace")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if not head.startswith("HTTP/1.1 101") or accept not in head or not re.search(r"(?im)^sec-websocket-protocol:\s*sip\s*$", head):
            fail("WebSocket upgrade refused:\n" + head)
        ok("WebSocket upgrade (101, Sec-WebSocket-Protocol: sip)")

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        hdr = bytes([0x81])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            hdr += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            op = b0 & 0x0F
            if op == 1:
                return data.decode()
            if op == 8:
                raise EOFError
            if op == 9:  # ping -> pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)

    def close(self):
        try:
            self.sock.sendall(bytes([0x88, 0x82]) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))
        except OSError:
            pass
        self.sock.close()


class Msg:
    def __init__(self, text):
        head, _, self.body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.first = lines[0]
        self.headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip(), value.strip()))
        self.is_response = self.first.startswith("SIP/2.0")
        self.status = int(self.first.split()[1]) if self.is_response else 0
        self.method = None if self.is_response else self.first.split()[0]

    def get(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def all(self, name):
        """every value of a header, comma-separated values split (URIs in <>)"""
        out = []
        for n, v in self.headers:
            if n.lower() == name.lower():
                out += [x.strip() for x in re.findall(r"[^,<]*<[^>]*>[^,]*|[^,]+", v)]
        return out


def digest(chal, method, uri, user, password):
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', chal))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(("%s:%s:%s" % (user, realm, password)).encode()).hexdigest()
    ha2 = hashlib.md5(("%s:%s" % (method, uri)).encode()).hexdigest()
    extra = ""
    if "qop" in params:
        cnonce, nc = rnd(8), "00000001"
        resp = hashlib.md5(("%s:%s:%s:%s:auth:%s" % (ha1, nonce, nc, cnonce, ha2)).encode()).hexdigest()
        extra = ", qop=auth, nc=%s, cnonce=\"%s\"" % (nc, cnonce)
    else:
        resp = hashlib.md5(("%s:%s:%s" % (ha1, nonce, ha2)).encode()).hexdigest()
    return 'Digest algorithm=MD5, username="%s", realm="%s", nonce="%s", uri="%s", response="%s"%s' % (
        user, realm, nonce, uri, resp, extra)


def webrtc_sdp(mid="0", setup="actpass", pts="111 0 8 126"):
    fp = ":".join("%02X" % b for b in os.urandom(32))
    lines = [
        "v=0", "o=- %d 2 IN IP4 127.0.0.1" % random.randint(1, 1 << 40), "s=-", "t=0 0",
        "a=group:BUNDLE %s" % mid, "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF %s" % pts, "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 %d typ host generation 0" % random.randint(40000, 60000),
        "a=ice-ufrag:%s" % rnd(4), "a=ice-pwd:%s" % rnd(24), "a=ice-options:trickle",
        "a=fingerprint:sha-256 %s" % fp, "a=setup:%s" % setup, "a=mid:%s" % mid, "a=sendrecv", "a=rtcp-mux",
    ]
    rtpmap = {"111": "opus/48000/2", "0": "PCMU/8000", "8": "PCMA/8000", "126": "telephone-event/8000",
              "101": "telephone-event/8000"}
    for pt in pts.split():
        lines.append("a=rtpmap:%s %s" % (pt, rtpmap.get(pt, "PCMU/8000")))
    return "\r\n".join(lines) + "\r\n"


def check_webrtc(sdp, what):
    need = ["UDP/TLS/RTP/SAVPF", "a=ice-ufrag:", "a=fingerprint:", "a=rtcp-mux", "a=candidate:"]
    missing = [n for n in need if n not in sdp]
    if missing:
        fail("%s SDP is not WebRTC, missing %s:\n%s" % (what, missing, sdp))
    ok("%s SDP is WebRTC (UDP/TLS/RTP/SAVPF, ICE, fingerprint, rtcp-mux)" % what)


class UA:
    def __init__(self, a):
        self.a = a
        self.ws = WS(a.ws)
        self.host = rnd(12) + ".invalid"
        self.contact = "<sip:%s@%s;transport=ws>" % (rnd(8), self.host)
        self.cseq = 1

    def via(self):
        return "Via: SIP/2.0/WS %s;branch=z9hG4bK%s" % (self.host, rnd(12))

    def request(self, method, ruri, from_, to, call_id, cseq, extra=(), body="", via=None):
        hdrs = [
            "%s %s SIP/2.0" % (method, ruri), via or self.via(), "Max-Forwards: 70",
            "To: %s" % to, "From: %s" % from_, "Call-ID: %s" % call_id, "CSeq: %d %s" % (cseq, method),
        ]
        hdrs += list(extra)
        if body:
            hdrs.append("Content-Type: application/sdp")
        hdrs.append("Content-Length: %d" % len(body.encode()))
        text = "\r\n".join(hdrs) + "\r\n\r\n" + body
        self.ws.send(text)
        return text

    def wait(self, pred, timeout, what):
        end = time.time() + timeout
        while time.time() < end:
            try:
                m = Msg(self.ws.recv(max(0.05, end - time.time())))
            except socket.timeout:
                break
            except EOFError:
                fail("%s: WebSocket closed" % what)
            if pred(m):
                return m
            if m.is_response and m.status >= 300 and not pred(m):
                fail("%s: unexpected %s" % (what, m.first))
        fail("%s: timeout" % what)

    def register(self, expires=300):
        a = self.a
        aor = "sip:%s@%s" % (a.user, a.domain)
        call_id, tag = rnd(20), rnd(10)
        extra = ["Contact: %s;expires=%d" % (self.contact, expires), "Expires: %d" % expires, "Supported: path, outbound, gruu"]
        ruri = "sip:%s" % a.domain
        self.cseq += 1
        self.request("REGISTER", ruri, "<%s>;tag=%s" % (aor, tag), "<%s>" % aor, call_id, self.cseq, extra)
        m = self.wait(lambda m: m.is_response and m.status in (200, 401), 5, "REGISTER")
        if m.status == 401:
            auth = digest(m.get("WWW-Authenticate"), "REGISTER", ruri, a.user, a.password)
            self.cseq += 1
            self.request("REGISTER", ruri, "<%s>;tag=%s" % (aor, tag), "<%s>" % aor, call_id, self.cseq,
                         extra + ["Authorization: " + auth])
            m = self.wait(lambda m: m.is_response and m.status >= 200 and m.get("CSeq").startswith(str(self.cseq)), 5, "REGISTER+auth")
        if m.status != 200:
            fail("REGISTER: %s" % m.first)
        ok("REGISTER expires=%d -> 401 -> 200" % expires)

    def call(self, ext):
        a = self.a
        ruri = "sip:%s@%s" % (ext, a.domain)
        from_ = '"%s" <sip:%s@%s>;tag=%s' % (a.user, a.user, a.domain, rnd(10))
        to = "<%s>" % ruri
        call_id = rnd(20)
        sdp = webrtc_sdp()
        extra = ["Contact: <%s;ob>" % self.contact[1:-1], "Allow: INVITE,ACK,CANCEL,BYE,OPTIONS", "Supported: outbound"]
        via = self.via()
        self.request("INVITE", ruri, from_, to, call_id, 1, extra, sdp, via)
        m = self.wait(lambda m: m.is_response and m.status >= 200, 5, "INVITE")
        if m.status != 407:
            fail("INVITE: expected 407, got %s" % m.first)
        self.request("ACK", ruri, from_, m.get("To"), call_id, 1, via=via)
        auth = digest(m.get("Proxy-Authenticate"), "INVITE", ruri, a.user, a.password)
        self.request("INVITE", ruri, from_, to, call_id, 2, extra + ["Proxy-Authorization: " + auth], sdp)
        provisional = []
        m = self.wait(lambda m: (m.is_response and (provisional.append(m.status) or m.status >= 200)), 10, "INVITE+auth")
        if m.status != 200:
            fail("INVITE+auth: %s" % m.first)
        ok("INVITE %s -> 407 -> INVITE+auth -> %s -> 200" % (ext, "/".join(str(s) for s in provisional[:-1])))
        check_webrtc(m.body, "200 OK (answer to the browser)")
        route = list(reversed(m.all("Record-Route")))
        target = re.search(r"<([^>]*)>", m.get("Contact")).group(1)
        to_tagged = m.get("To")
        dlg = ["Route: %s" % r for r in route]
        self.request("ACK", target, from_, to_tagged, call_id, 2, dlg)
        ok("ACK sent to %s via %d Route(s)" % (target, len(route)))
        time.sleep(0.3)
        self.request("BYE", target, from_, to_tagged, call_id, 3, dlg)
        m = self.wait(lambda m: m.is_response and m.get("CSeq") == "3 BYE" and m.status >= 200, 5, "BYE")
        if m.status != 200:
            fail("BYE: %s" % m.first)
        ok("BYE -> 200")

    def reply(self, req, code, reason, to_tag, body="", extra=()):
        hdrs = ["SIP/2.0 %d %s" % (code, reason)]
        for name in ("Via", "Record-Route"):
            hdrs += ["%s: %s" % (n, v) for n, v in req.headers if n.lower() == name.lower()]
        to = req.get("To")
        if to_tag and "tag=" not in to:
            to += ";tag=" + to_tag
        hdrs += ["From: %s" % req.get("From"), "To: %s" % to, "Call-ID: %s" % req.get("Call-ID"), "CSeq: %s" % req.get("CSeq")]
        hdrs += list(extra)
        if body:
            hdrs.append("Content-Type: application/sdp")
        hdrs.append("Content-Length: %d" % len(body.encode()))
        self.ws.send("\r\n".join(hdrs) + "\r\n\r\n" + body)

    def incoming(self, timeout):
        if self.a.ready_file:
            open(self.a.ready_file, "w").close()
        inv = self.wait(lambda m: m.method == "INVITE", timeout, "incoming INVITE")
        ok("incoming INVITE from %s" % inv.get("From"))
        check_webrtc(inv.body, "INVITE (offer to the browser)")
        mid = (re.search(r"a=mid:(\S+)", inv.body) or [None, "0"])[1]
        pts = re.search(r"m=audio \d+ \S+ ([\d ]+)", inv.body).group(1).split()
        keep = [p for p in pts if p in ("0", "8")][:1] + [p for p in pts if re.search(r"a=rtpmap:%s telephone-event" % p, inv.body)][:1]
        tag = rnd(10)
        contact = ["Contact: %s" % self.contact]
        self.reply(inv, 180, "Ringing", tag, extra=contact)
        self.reply(inv, 200, "OK", tag, webrtc_sdp(mid=mid, setup="active", pts=" ".join(keep)), contact)
        self.wait(lambda m: m.method == "ACK", 5, "ACK for the incoming call")
        ok("incoming call answered (180, 200 with a=setup:active), ACK received")
        bye = self.wait(lambda m: m.method == "BYE", 30, "BYE for the incoming call")
        self.reply(bye, 200, "OK", None)
        ok("incoming BYE -> 200")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ws", required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--call")
    p.add_argument("--wait-incoming", type=float)
    p.add_argument("--ready-file")
    a = p.parse_args()
    ua = UA(a)
    ua.register()
    if a.call:
        ua.call(a.call)
    if a.wait_incoming:
        ua.incoming(a.wait_incoming)
    ua.register(expires=0)
    ua.ws.close()
    ok("done")


if __name__ == "__main__":
    main()
