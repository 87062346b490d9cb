//! The configuration file (operator-written, but a typo must give an error
//! naming the key, never a panic): TOML parse, typed decode, validation, and
//! the error's Display, which computes line/column positions.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use rtcgate::config::Config;

fuzz_target!(init: common::install_panic_hook(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(cfg) => {
            let _ = cfg.sip.t1();
            let _ = cfg.websocket.origin_allowed(None);
            let _ = cfg.websocket.origin_allowed(Some("https://example.com/"));
            let _ = format!("{cfg:?}");
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = format!("{e:?}");
        }
    }
    // Without an origin, too (the prefix logic differs).
    if let Err(e) = Config::parse(text, "") {
        let _ = e.to_string();
    }
});
