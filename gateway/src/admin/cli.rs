//! The CLI side of the admin API: `rtcgate stats|registrations|calls|sets|
//! rtpengine|reload|hangup`, as tables for people or JSON for scripts.

use std::fmt::Write as _;

use super::api::{
    CallView, ErrorBody, HangupOutcome, HangupReply, Registration, ReloadReport, RtpengineView,
    SetView, Stats,
};
use super::client::{AdminClient, ClientError};

/// One CLI command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `GET /api/stats`.
    Stats,
    /// `GET /api/registrations`.
    Registrations,
    /// `GET /api/calls`.
    Calls,
    /// `GET /api/sets`.
    Sets,
    /// `GET /api/rtpengine`.
    Rtpengine,
    /// `POST /api/reload`.
    Reload,
    /// `POST /api/calls/{id}/hangup`.
    Hangup(String),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Transport-level failure.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The API answered with an error.
    #[error("{0}")]
    Api(String),
    /// The API answered something unexpected.
    #[error("unexpected reply from the admin API: {0}")]
    Decode(String),
}

/// Runs `cmd`; returns what to print on stdout.
pub fn run(cmd: &Command, client: &AdminClient, json: bool) -> Result<String, CliError> {
    let (resp, hangup_id) = match cmd {
        Command::Stats => (client.get("/api/stats")?, None),
        Command::Registrations => (client.get("/api/registrations")?, None),
        Command::Calls => (client.get("/api/calls")?, None),
        Command::Sets => (client.get("/api/sets")?, None),
        Command::Rtpengine => (client.get("/api/rtpengine")?, None),
        Command::Reload => (client.post("/api/reload")?, None),
        Command::Hangup(id) => (
            client.post(&format!("/api/calls/{}/hangup", super::percent_encode(id)))?,
            Some(id),
        ),
    };
    // A failed reload still carries its report.
    let reload_report = *cmd == Command::Reload && resp.status == 500;
    if !(200..300).contains(&resp.status) && !reload_report {
        let msg = serde_json::from_str::<ErrorBody>(&resp.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| resp.body.trim().to_owned());
        return Err(CliError::Api(match resp.status {
            401 => format!(
                "unauthorized ({msg}): pass --token, or run with the --config that sets [admin] token"
            ),
            404 if hangup_id.is_some() => msg,
            s => format!("HTTP {s}: {msg}"),
        }));
    }
    if json {
        let mut body = resp.body;
        if !body.ends_with('\n') {
            body.push('\n');
        }
        if reload_report {
            return Err(CliError::Api(body));
        }
        return Ok(body);
    }
    fn decode<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, CliError> {
        serde_json::from_str(body).map_err(|e| CliError::Decode(e.to_string()))
    }
    match cmd {
        Command::Stats => Ok(stats(&decode(&resp.body)?)),
        Command::Registrations => Ok(registrations(&decode::<Vec<_>>(&resp.body)?)),
        Command::Calls => Ok(calls(&decode::<Vec<_>>(&resp.body)?, now_ms())),
        Command::Sets => Ok(sets(&decode::<Vec<_>>(&resp.body)?)),
        Command::Rtpengine => Ok(rtpengine(&decode::<Vec<_>>(&resp.body)?)),
        Command::Reload => {
            let report: ReloadReport = decode(&resp.body)?;
            let text = reload(&report);
            if report.ok() {
                Ok(text)
            } else {
                Err(CliError::Api(text.trim_end().to_owned()))
            }
        }
        Command::Hangup(_) => {
            let r: HangupReply = decode(&resp.body)?;
            Ok(match r.outcome {
                HangupOutcome::Bye => {
                    format!("{}: BYE sent to both sides, media deleted\n", r.call_id)
                }
                HangupOutcome::Cancelled => {
                    format!(
                        "{}: ringing call cancelled (the caller gets 487)\n",
                        r.call_id
                    )
                }
                HangupOutcome::NotFound => format!("{}: no such call\n", r.call_id),
            })
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Lays out rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{c:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for r in rows {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out
}

/// `1h02m03s`, `4m05s`, `12s`.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

fn pairs(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

fn stats(s: &Stats) -> String {
    let p = &s.proxy;
    let c = &p.calls;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  version {}  uptime {}{}",
        s.node_id,
        s.version,
        duration(s.uptime_s),
        if p.draining { "  DRAINING" } else { "" }
    );
    let rows = vec![
        vec![
            "websocket".into(),
            format!("{} open, {} accepted", s.ws_flows_open, s.ws_flows_accepted),
        ],
        vec![
            "registrations".into(),
            format!("{} active", s.registrations_active),
        ],
        vec![
            "calls".into(),
            format!(
                "{} established, {} ringing, {} attempts",
                p.dialogs_confirmed, p.dialogs_early, p.call_attempts
            ),
        ],
        vec![
            "outcomes".into(),
            format!(
                "answered {}  busy {}  cancelled {}  failed {}  rejected {}",
                c.answered, c.busy, c.cancelled, c.failed, c.rejected
            ),
        ],
        vec![
            "transactions".into(),
            format!(
                "{} live, {} requests pending",
                p.transactions, p.pending_requests
            ),
        ],
        vec![
            "media calls".into(),
            s.media_calls
                .map_or("- (no rtpengine)".into(), |n| n.to_string()),
        ],
        vec!["requests in".into(), pairs(&s.sip_requests)],
        vec!["responses out".into(), pairs(&s.sip_responses)],
        vec!["REGISTER".into(), pairs(&s.register_responses)],
    ];
    for r in rows {
        let _ = writeln!(out, "{:<14} {}", r[0], r[1]);
    }
    out
}

fn registrations(list: &[Registration]) -> String {
    if list.is_empty() {
        return "no registrations\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.aor.clone(),
                r.contact.clone(),
                format!("{}s", r.expires_in),
                r.received.clone().unwrap_or_else(|| "-".into()),
                r.flow.clone().unwrap_or_else(|| "-".into()),
                r.node_id.clone(),
            ]
        })
        .collect();
    table(
        &["AOR", "CONTACT", "EXPIRES", "FROM", "FLOW", "NODE"],
        &rows,
    )
}

fn calls(list: &[CallView], now_ms: i64) -> String {
    if list.is_empty() {
        return "no active calls\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.call_id.clone(),
                c.caller.clone(),
                c.callee.clone(),
                c.state.clone(),
                c.since_ms.map_or("-".into(), |t| {
                    duration(u64::try_from((now_ms - t).max(0) / 1000).unwrap_or(0))
                }),
            ]
        })
        .collect();
    table(&["CALL-ID", "CALLER", "CALLEE", "STATE", "FOR"], &rows)
}

fn sets(list: &[SetView]) -> String {
    if list.is_empty() {
        return "no PBX destination sets\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .flat_map(|s| {
            s.destinations.iter().map(|d| {
                vec![
                    s.name.clone(),
                    d.address.clone(),
                    d.state.clone(),
                    d.failures.to_string(),
                    d.last_code.map_or("-".into(), |c| c.to_string()),
                    duration(d.since_s),
                ]
            })
        })
        .collect();
    table(
        &["SET", "DESTINATION", "STATE", "FAILURES", "LAST", "FOR"],
        &rows,
    )
}

fn rtpengine(list: &[RtpengineView]) -> String {
    if list.is_empty() {
        return "rtpengine is not configured\n".into();
    }
    let ms = |v: Option<f64>| v.map_or("-".into(), |m| format!("{m:.1}ms"));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i.instance.clone(),
                if i.up { "up" } else { "down" }.into(),
                i.weight.to_string(),
                i.calls.to_string(),
                ms(i.last_rtt_ms),
                i.consecutive_timeouts.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "INSTANCE", "STATE", "WEIGHT", "CALLS", "LAST-RTT", "TIMEOUTS",
        ],
        &rows,
    );
    let cmds: Vec<Vec<String>> = list
        .iter()
        .flat_map(|i| {
            i.commands.iter().map(|c| {
                vec![
                    i.instance.clone(),
                    c.command.clone(),
                    c.requests.to_string(),
                    c.ok.to_string(),
                    (c.errors + c.load_limits).to_string(),
                    c.timeouts.to_string(),
                    c.retransmits.to_string(),
                    ms(c.p50_ms),
                    ms(c.p99_ms),
                ]
            })
        })
        .collect();
    if !cmds.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "INSTANCE", "COMMAND", "REQUESTS", "OK", "ERRORS", "TIMEOUTS", "RETRANS", "P50",
                "P99",
            ],
            &cmds,
        ));
    }
    out
}

fn reload(r: &ReloadReport) -> String {
    if r.items.is_empty() {
        return "nothing to reload\n".into();
    }
    r.items
        .iter()
        .map(|i| {
            format!(
                "{}: {} ({})\n",
                i.what,
                if i.ok { "ok" } else { "FAILED" },
                i.detail
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONG"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["p".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONG\nxyz  1\np    22\n");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m05s");
        assert_eq!(duration(3723), "1h02m03s");
    }
}
