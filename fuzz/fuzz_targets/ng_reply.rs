//! A datagram from an rtpengine (or anything that can reach our ng socket):
//! the reply decoding path of ngclient. Cookie split, depth pre-scan and
//! bencode decode (as `Core` does it), then every typed view the gateway
//! reads. Nothing here may panic or blow the stack.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use ngclient::wire;
use ngclient::{Reply, Value};

fuzz_target!(init: common::install_panic_hook(), |data: &[u8]| {
    let Ok((cookie, body)) = wire::split_cookie(data) else {
        return;
    };
    let _ = String::from_utf8_lossy(cookie);
    // The pre-scan alone, with a tight bound too.
    let _ = wire::check_depth(body, 3);
    let dict = match wire::decode_body(body) {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let reply = match Reply::from_dict(dict) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = (&reply.result, &reply.warning, reply.sdp.as_ref().map(Vec::len));
    let stats = reply.call_stats();
    for (tag, stream) in stats.streams() {
        let _ = (tag.len(), stream.local_port, stream.endpoint);
    }
    let _ = reply.calls();
    if let Some(s) = reply.statistics() {
        let _ = s.len();
    }
    let _ = reply.statistic("currentstatistics", "sessionsown");
    let _ = reply.statistic("totalstatistics", "managedsessions");
    if let Some(v) = reply.get("sdp") {
        let _ = v.as_byte_str().map(|b| b.len());
    }
    let _ = reply.get("calls").and_then(Value::as_list).map(Vec::len);
    match reply.into_result() {
        Ok(r) => {
            let _ = r.raw.len();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
