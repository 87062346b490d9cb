use super::*;
use rsipstack::rsip::HeadersExt;

const FIX: &str = "/work/shared/fixtures/sip/";

fn fixture(name: &str) -> Option<rsip::Request> {
    let raw = std::fs::read(format!("{FIX}{name}")).ok()?;
    Some(rsip::Request::try_from(raw.as_slice()).unwrap())
}

fn register(contacts: &[&str], extra: &str, cseq: u32, call_id: &str) -> rsip::Request {
    let mut s = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/WSS h.invalid;branch=z9hG4bK{cseq}\r\nTo: <sip:alice@example.com>\r\nFrom: <sip:alice@example.com>;tag=ft\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\nUser-Agent: test\r\n"
    );
    for c in contacts {
        s.push_str(&format!("Contact: {c}\r\n"));
    }
    s.push_str(extra);
    s.push_str("Content-Length: 0\r\n\r\n");
    rsip::Request::try_from(s.as_bytes()).unwrap()
}

fn ctx(now: i64, flow: &'static str) -> RegisterContext<'static> {
    RegisterContext {
        now,
        flow_id: Some(flow),
        source: Some("192.0.2.1:5555".parse().unwrap()),
        node_id: "n1",
        authenticated_user: None,
    }
}

fn apply(current: &mut Vec<Binding>, changes: &[BindingChange]) {
    for c in changes {
        match c {
            BindingChange::Upsert(b) => {
                current.retain(|x| x.contact != b.contact);
                current.push(b.clone());
            }
            BindingChange::Remove { contact, .. } => current.retain(|x| &x.contact != contact),
        }
    }
}

fn code(o: &RegisterOutcome) -> u16 {
    o.response.status_code.code()
}

fn contacts_of(r: &rsip::Response) -> Vec<String> {
    r.headers
        .iter()
        .filter_map(|h| match h {
            Header::Contact(c) => Some(c.value().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn sipjs_register_and_unregister_fixtures() {
    let (Some(reg), Some(unreg)) = (
        fixture("reg-03_REGISTER-auth_browser-to-proxy_ws.sip"),
        fixture("unreg-01_REGISTER-expires0_browser-to-proxy_ws.sip"),
    ) else {
        eprintln!("fixtures missing, skipping");
        return;
    };
    let cfg = RegistrarConfig::default();
    assert_eq!(register_aor(&reg).unwrap(), "sip:2000@127.0.0.1");
    let mut c = ctx(1000, "ws-1");
    c.authenticated_user = Some("2000");
    let o = process_register(&cfg, &reg, &c, &[]);
    assert_eq!(code(&o), 200);
    assert_eq!(o.changes.len(), 1);
    let BindingChange::Upsert(b) = &o.changes[0] else {
        panic!()
    };
    assert_eq!(b.contact, "sip:c9gqccl3@8m1uf7495730.invalid;transport=ws");
    assert_eq!(b.expires_at, 1300);
    assert_eq!(b.flow_id.as_deref(), Some("ws-1"));
    assert_eq!(b.cseq, 3);
    assert_eq!(b.user_agent.as_deref(), Some("SIP.js/0.21.1"));
    assert_eq!(
        contacts_of(&o.response),
        vec!["<sip:c9gqccl3@8m1uf7495730.invalid;transport=ws>;expires=300"]
    );
    let to = o.response.to_header().unwrap().value().to_string();
    assert!(to.contains(";tag="), "{to}");
    assert_eq!(
        o.response.call_id_header().unwrap().value(),
        "gtjv8gdh5din4kisr98v"
    );
    let current = o.bindings.clone();

    // Retransmission with the same CSeq after processing: out of order, nothing changes.
    let again = process_register(&cfg, &reg, &ctx(1001, "ws-1"), &current);
    assert_eq!(code(&again), 500);
    assert!(again.changes.is_empty());

    let o = process_register(&cfg, &unreg, &ctx(1010, "ws-1"), &current);
    assert_eq!(code(&o), 200);
    assert_eq!(o.changes.len(), 1);
    assert!(
        matches!(&o.changes[0], BindingChange::Remove { contact, .. } if contact == &b.contact)
    );
    assert!(contacts_of(&o.response).is_empty());

    // Authenticated as someone else: 403.
    let mut c = ctx(1000, "ws-1");
    c.authenticated_user = Some("2001");
    assert_eq!(code(&process_register(&cfg, &reg, &c, &[])), 403);
}

#[test]
fn expires_rules() {
    let cfg = RegistrarConfig::default();
    let c = ctx(0, "f");
    let o = process_register(
        &cfg,
        &register(&["<sip:a@h>;expires=30"], "", 1, "c"),
        &c,
        &[],
    );
    assert_eq!(code(&o), 423);
    assert_eq!(
        o.response
            .headers
            .iter()
            .find_map(|h| match h {
                Header::MinExpires(m) => Some(m.value().to_string()),
                _ => None,
            })
            .as_deref(),
        Some("60")
    );
    assert!(o.changes.is_empty());
    // Header Expires applies when the contact has none; too long is clamped; default otherwise.
    let o = process_register(
        &cfg,
        &register(&["<sip:a@h>"], "Expires: 99999\r\n", 1, "c"),
        &c,
        &[],
    );
    assert_eq!(contacts_of(&o.response), vec!["<sip:a@h>;expires=3600"]);
    let o = process_register(&cfg, &register(&["<sip:a@h>"], "", 1, "c"), &c, &[]);
    assert_eq!(contacts_of(&o.response), vec!["<sip:a@h>;expires=600"]);
    let o = process_register(
        &cfg,
        &register(&["<sip:a@h>;expires=120"], "Expires: 30\r\n", 1, "c"),
        &c,
        &[],
    );
    assert_eq!(contacts_of(&o.response), vec!["<sip:a@h>;expires=120"]);
}

#[test]
fn star_query_refresh_and_limits() {
    let cfg = RegistrarConfig {
        max_contacts: 2,
        ..Default::default()
    };
    let mut cur = Vec::new();
    let o = process_register(
        &cfg,
        &register(&["<sip:a@h>;q=0.5", "<sip:b@h>"], "", 1, "c1"),
        &ctx(0, "f1"),
        &cur,
    );
    assert_eq!(code(&o), 200);
    apply(&mut cur, &o.changes);
    assert_eq!(cur.len(), 2);
    assert!(contacts_of(&o.response).contains(&"<sip:a@h>;expires=600;q=0.500".to_string()));
    // A third contact from another UA exceeds the limit.
    let o = process_register(
        &cfg,
        &register(&["<sip:c@h>"], "", 1, "c2"),
        &ctx(1, "f2"),
        &cur,
    );
    assert_eq!(code(&o), 403);
    assert!(o.changes.is_empty());
    // Query: no Contact, lists both with remaining time.
    let o = process_register(&cfg, &register(&[], "", 2, "c1"), &ctx(100, "f1"), &cur);
    assert_eq!(code(&o), 200);
    assert!(o.changes.is_empty());
    assert_eq!(contacts_of(&o.response).len(), 2);
    assert!(contacts_of(&o.response).contains(&"<sip:b@h>;expires=500".to_string()));
    // Refresh from a new Call-ID is accepted even with a lower CSeq.
    let o = process_register(
        &cfg,
        &register(&["<sip:b@h>;expires=100"], "", 1, "other"),
        &ctx(100, "f3"),
        &cur,
    );
    assert_eq!(code(&o), 200);
    apply(&mut cur, &o.changes);
    let b = cur.iter().find(|b| b.contact == "sip:b@h").unwrap();
    assert_eq!((b.expires_at, b.flow_id.as_deref()), (200, Some("f3")));
    // '*' needs Expires: 0 and no other contact.
    assert_eq!(
        code(&process_register(
            &cfg,
            &register(&["*"], "", 9, "c1"),
            &ctx(100, "f1"),
            &cur
        )),
        400
    );
    assert_eq!(
        code(&process_register(
            &cfg,
            &register(&["*"], "Expires: 5\r\n", 9, "c1"),
            &ctx(100, "f1"),
            &cur
        )),
        400
    );
    assert_eq!(
        code(&process_register(
            &cfg,
            &register(&["*", "<sip:a@h>"], "Expires: 0\r\n", 9, "c1"),
            &ctx(100, "f1"),
            &cur
        )),
        400
    );
    // '*' with a stale CSeq for a binding of the same Call-ID fails.
    assert_eq!(
        code(&process_register(
            &cfg,
            &register(&["*"], "Expires: 0\r\n", 1, "c1"),
            &ctx(100, "f1"),
            &cur
        )),
        500
    );
    let o = process_register(
        &cfg,
        &register(&["*"], "Expires: 0\r\n", 9, "c1"),
        &ctx(100, "f1"),
        &cur,
    );
    assert_eq!(code(&o), 200);
    assert_eq!(o.changes.len(), 2);
    apply(&mut cur, &o.changes);
    assert!(cur.is_empty());
    // Garbage contact: 400.
    assert_eq!(
        code(&process_register(
            &cfg,
            &register(&["<sip:a@h"], "", 1, "x"),
            &ctx(0, "f"),
            &[]
        )),
        400
    );
}

#[test]
fn outbound_instance_reg_id_replacement_and_path() {
    let cfg = RegistrarConfig::default();
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
    let mut cur = Vec::new();
    let o = process_register(
        &cfg,
        &register(
            &[&format!("<sip:x1@a.invalid;transport=ws>;{inst};reg-id=1")],
            "Supported: outbound, path\r\n",
            1,
            "c",
        ),
        &ctx(0, "flow-A"),
        &cur,
    );
    assert_eq!(code(&o), 200);
    assert!(
        o.response
            .headers
            .iter()
            .any(|h| matches!(h, Header::Require(r) if r.value() == "outbound"))
    );
    assert!(contacts_of(&o.response)[0].contains("reg-id=1"));
    apply(&mut cur, &o.changes);
    // Same instance + reg-id over a new flow with a new contact: the old binding goes.
    let o = process_register(
        &cfg,
        &register(
            &[&format!("<sip:x2@b.invalid;transport=ws>;{inst};reg-id=1")],
            "",
            1,
            "c-new",
        ),
        &ctx(10, "flow-B"),
        &cur,
    );
    assert_eq!(code(&o), 200);
    apply(&mut cur, &o.changes);
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].contact, "sip:x2@b.invalid;transport=ws");
    assert_eq!(cur[0].flow_id.as_deref(), Some("flow-B"));
    // A different reg-id of the same instance is a second flow, kept side by side.
    let o = process_register(
        &cfg,
        &register(
            &[&format!("<sip:x3@c.invalid;transport=ws>;{inst};reg-id=2")],
            "",
            2,
            "c-new",
        ),
        &ctx(11, "flow-C"),
        &cur,
    );
    apply(&mut cur, &o.changes);
    assert_eq!(cur.len(), 2);
    // Outbound behind another proxy without its ;ob Path: 439.
    let extra = "Via: SIP/2.0/UDP edge.example;branch=z9hG4bKedge\r\nPath: <sip:edge.example;lr>\r\nSupported: path\r\n";
    let o = process_register(
        &cfg,
        &register(&[&format!("<sip:y@d>;{inst};reg-id=1")], extra, 1, "p"),
        &ctx(0, "f"),
        &[],
    );
    assert_eq!(code(&o), 439);
    // With ;ob the Path is stored and echoed (Supported: path).
    let extra = "Via: SIP/2.0/UDP edge.example;branch=z9hG4bKedge\r\nPath: <sip:edge.example;lr;ob>\r\nSupported: path\r\n";
    let o = process_register(
        &cfg,
        &register(&[&format!("<sip:y@d>;{inst};reg-id=1")], extra, 1, "p"),
        &ctx(0, "f"),
        &[],
    );
    assert_eq!(code(&o), 200);
    let BindingChange::Upsert(b) = &o.changes[0] else {
        panic!()
    };
    assert_eq!(b.path, vec!["<sip:edge.example;lr;ob>"]);
    assert!(
        o.response
            .headers
            .iter()
            .any(|h| matches!(h, Header::Path(p) if p.value() == "<sip:edge.example;lr;ob>"))
    );
}
