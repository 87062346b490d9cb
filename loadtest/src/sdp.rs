//! WebRTC-shaped SDP as Chrome writes it (one audio m-line, BUNDLE, ICE,
//! DTLS fingerprint, rtcp-mux, UDP/TLS/RTP/SAVPF), so rtpengine does the
//! same work for a generated call as for a browser's.

use rand::Rng;
use std::net::IpAddr;

fn hex_fingerprint() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02X}", rng.random::<u8>()))
        .collect::<Vec<_>>()
        .join(":")
}

fn common(ip: IpAddr, port: u16, payloads: &str, setup: &str) -> String {
    let mut rng = rand::rng();
    let session: u64 = rng.random_range(1_000_000_000_000..9_000_000_000_000);
    let ufrag = crate::sip::token(4);
    let pwd = crate::sip::token(24);
    let stream = crate::sip::token(12);
    let track = crate::sip::token(12);
    let ssrc: u32 = rng.random();
    let fp = hex_fingerprint();
    let ipv = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut rtpmaps = String::new();
    for pt in payloads.split(' ') {
        let line = match pt {
            "111" => {
                "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
            }
            "0" => "a=rtpmap:0 PCMU/8000\r\n",
            "8" => "a=rtpmap:8 PCMA/8000\r\n",
            "101" => "a=rtpmap:101 telephone-event/8000\r\n",
            "126" => "a=rtpmap:126 telephone-event/8000\r\n",
            _ => "",
        };
        rtpmaps.push_str(line);
    }
    format!(
        "v=0\r\n\
         o=- {session} 2 IN {ipv} 127.0.0.1\r\n\
         s=-\r\n\
         t=0 0\r\n\
         a=group:BUNDLE 0\r\n\
         a=extmap-allow-mixed\r\n\
         a=msid-semantic: WMS {stream}\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF {payloads}\r\n\
         c=IN IP4 0.0.0.0\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=candidate:1467250027 1 udp 2122260223 {ip} {port} typ host generation 0 network-id 1\r\n\
         a=ice-ufrag:{ufrag}\r\n\
         a=ice-pwd:{pwd}\r\n\
         a=ice-options:trickle\r\n\
         a=fingerprint:sha-256 {fp}\r\n\
         a=setup:{setup}\r\n\
         a=mid:0\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=sendrecv\r\n\
         a=msid:{stream} {track}\r\n\
         a=rtcp-mux\r\n\
         {rtpmaps}\
         a=ssrc:{ssrc} cname:{stream}\r\n"
    )
}

/// A browser's offer: opus, PCMU, PCMA, telephone-event/8000 as 126, one
/// host candidate at `ip:port`.
pub fn webrtc_offer(ip: IpAddr, port: u16) -> String {
    common(ip, port, "111 0 8 126", "actpass")
}

/// A browser's answer to `offer`: the first of opus/PCMU/PCMA the offer has
/// (PCMU when it names none) plus its telephone-event, `a=setup:active`.
pub fn webrtc_answer(offer: &str, ip: IpAddr, port: u16) -> String {
    let offered: Vec<&str> = offer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .map(|m| m.split_whitespace().skip(2).collect())
        .unwrap_or_default();
    let codec = ["111", "0", "8"]
        .into_iter()
        .find(|pt| offered.contains(pt))
        .unwrap_or("0");
    let dtmf = offer.lines().find_map(|l| {
        let rest = l.strip_prefix("a=rtpmap:")?;
        let (pt, enc) = rest.split_once(' ')?;
        enc.starts_with("telephone-event/8000").then_some(pt)
    });
    let payloads = match dtmf {
        Some(pt) if pt == "101" || pt == "126" => format!("{codec} {pt}"),
        _ => codec.to_string(),
    };
    common(ip, port, &payloads, "active")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_is_webrtc_shaped() {
        let o = webrtc_offer("127.0.1.1".parse().unwrap(), 50000);
        for needle in [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 126\r\n",
            "a=fingerprint:sha-256 ",
            "a=ice-ufrag:",
            "a=rtcp-mux\r\n",
            "a=setup:actpass\r\n",
            "typ host",
            "a=rtpmap:126 telephone-event/8000\r\n",
        ] {
            assert!(o.contains(needle), "{needle} missing in\n{o}");
        }
        let fp = o
            .lines()
            .find_map(|l| l.strip_prefix("a=fingerprint:sha-256 "))
            .unwrap();
        assert_eq!(fp.split(':').count(), 32);
    }

    #[test]
    fn answer_picks_offered_codec_and_dtmf() {
        let pbx_offer = "v=0\r\nm=audio 4000 UDP/TLS/RTP/SAVPF 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let a = webrtc_answer(pbx_offer, "127.0.0.1".parse().unwrap(), 4);
        assert!(a.contains("m=audio 9 UDP/TLS/RTP/SAVPF 0 101\r\n"), "{a}");
        assert!(a.contains("a=setup:active"));
        let a = webrtc_answer("m=audio 1 RTP/AVP 8\r\n", "127.0.0.1".parse().unwrap(), 4);
        assert!(a.contains("SAVPF 8\r\n"));
    }
}
