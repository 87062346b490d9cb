//! Shared by every target: the panic policy.
//!
//! libfuzzer-sys installs a hook that aborts on *any* panic, even one our code
//! deliberately contains with `catch_unwind` (rsip in `sip::parse`,
//! webrtc-sdp in `rtcgate_sdp::inspect`: hostile input may cost one message,
//! never the process). That would report a handled case as a crash and stop
//! the run. So the hook is replaced by one that only prints (the first time
//! per location) and lets the panic unwind: a contained panic is then
//! swallowed where production swallows it, and a panic that escapes to the
//! target still reaches libfuzzer-sys' own `catch_unwind`, which aborts: a
//! crash, exactly as in the gateway (where it would kill a task or worse).
//! `scripts/fuzz.sh` greps the log for `CONTAINED PANIC` and reports them.

use std::collections::HashSet;
use std::sync::Mutex;

static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get_or_insert_with(HashSet::new)
            .insert(location.clone())
        {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            // If nothing catches it, libFuzzer reports the abort right after.
            eprintln!("CONTAINED PANIC (unless a crash follows) at {location}: {msg}");
        }
    }));
}
