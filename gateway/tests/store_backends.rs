//! Store, LocationService, digest auth and registrar together, on SQLite, MariaDB and
//! PostgreSQL. Each test makes its own database (SQLite temp file, `rtcgate_t_<random>`
//! on the servers) and drops it. A missing server fails the test when `CI=true`,
//! otherwise the test prints why and passes without running.
//!
//! Server URLs: `RTCGATE_TEST_MYSQL` (default `mysql://root@127.0.0.1:3306/test`) and
//! `RTCGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`).

use std::future::Future;
use std::sync::Mutex;

use rtcgate::auth::{Algorithm, AuthConfig, DigestAuth, ha1, params::parse_auth_params, response};
use rtcgate::registrar::{self, RegisterContext, RegistrarConfig};
use rtcgate::rsip::{self, Header};
use rtcgate::store::{
    self, Binding, BindingChange, CallRecordUpdate, LocationService, NewCallRecord, Store,
    StoreError,
};
use sqlx::{AssertSqlSafe, Connection};

const REALM: &str = "127.0.0.1";
const T0: i64 = 1_700_000_000;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sqlite,
    MySql,
    Postgres,
}

struct TestDb {
    kind: Kind,
    url: String,
    admin_url: String,
    name: String,
    file: Option<std::path::PathBuf>,
}

fn random_name() -> String {
    format!("rtcgate_t_{:016x}", rand::random::<u64>())
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

async fn exec_admin(kind: Kind, admin_url: &str, sql: String) -> Result<(), sqlx::Error> {
    match kind {
        Kind::MySql => {
            let mut c = sqlx::MySqlConnection::connect(admin_url).await?;
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await?;
            c.close().await
        }
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(admin_url).await?;
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await?;
            c.close().await
        }
        Kind::Sqlite => Ok(()),
    }
}

impl TestDb {
    async fn create(kind: Kind) -> Option<Self> {
        let name = random_name();
        match kind {
            Kind::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                Some(Self {
                    kind,
                    url: format!("sqlite://{}?mode=rwc", file.display()),
                    admin_url: String::new(),
                    name,
                    file: Some(file),
                })
            }
            Kind::MySql | Kind::Postgres => {
                let (var, default) = match kind {
                    Kind::MySql => ("RTCGATE_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
                    _ => (
                        "RTCGATE_TEST_POSTGRES",
                        "postgres://postgres@127.0.0.1:5432/test",
                    ),
                };
                let admin_url = std::env::var(var).unwrap_or_else(|_| default.to_string());
                if let Err(e) =
                    exec_admin(kind, &admin_url, format!("CREATE DATABASE {name}")).await
                {
                    assert!(
                        !ci(),
                        "CI=true and {kind:?} server unavailable at {admin_url}: {e}"
                    );
                    eprintln!("skipping: {kind:?} server unavailable at {admin_url}: {e}");
                    return None;
                }
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(b, _)| b);
                Some(Self {
                    kind,
                    url: format!("{base}/{name}"),
                    admin_url,
                    name,
                    file: None,
                })
            }
        }
    }

    async fn drop_db(&self) {
        match self.kind {
            Kind::Sqlite => {
                if let Some(f) = &self.file {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
                    }
                }
            }
            Kind::MySql => {
                let _ = exec_admin(
                    self.kind,
                    &self.admin_url,
                    format!("DROP DATABASE IF EXISTS {}", self.name),
                )
                .await;
            }
            Kind::Postgres => {
                let _ = exec_admin(
                    self.kind,
                    &self.admin_url,
                    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                )
                .await;
            }
        }
    }
}

/// Runs `scenario` on a fresh database of `kind` and always drops the database.
async fn run<F, Fut>(kind: Kind, scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = TestDb::create(kind).await else {
        return;
    };
    let outcome = tokio::spawn(scenario(db.url.clone())).await;
    db.drop_db().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! on_all_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::run(super::Kind::Sqlite, super::$name).await } )* }
        mod mysql { $( #[tokio::test] async fn $name() { super::run(super::Kind::MySql, super::$name).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::run(super::Kind::Postgres, super::$name).await } )* }
    };
}

on_all_backends!(
    register_refresh_unregister,
    expiry_purge,
    wrong_password_is_403_and_writes_nothing,
    replayed_nonce_is_refused,
    stale_nonce_is_rechallenged,
    sha256_and_md5_both_accepted,
    sql_metacharacters_in_user_name,
    restart_keeps_live_registrations,
    flow_close_removes_its_bindings,
    register_finishing_after_its_flow_closed_leaves_no_binding,
    concurrent_updates_are_group_committed,
    subscriber_admin_and_typed_errors,
    call_records_insert_update_list,
    call_records_batch_from_accounting,
);

// ---------------------------------------------------------------- harness

/// A registrar node as the lead's server will assemble it.
struct Node {
    store: Store,
    location: LocationService,
    auth: Mutex<DigestAuth>,
    cfg: RegistrarConfig,
}

impl Node {
    async fn start(url: &str, now: i64) -> Self {
        let store = Store::connect(url).await.unwrap();
        let location = LocationService::load(store.clone(), "node-1", now)
            .await
            .unwrap();
        Self {
            store,
            location,
            auth: Mutex::new(DigestAuth::new(AuthConfig::new(REALM), [9; 32])),
            cfg: RegistrarConfig::default(),
        }
    }

    /// Authenticate then register, exactly the order the proxy uses.
    async fn handle(&self, req: &rsip::Request, now: i64, flow: &str) -> rsip::Response {
        let ok = match registrar::authenticate_request(&self.auth, &self.store, req, now).await {
            Ok(ok) => ok,
            Err(resp) => return resp,
        };
        let ctx = RegisterContext {
            now,
            // "" = over UDP (no flow).
            flow_id: (!flow.is_empty()).then_some(flow),
            source: Some("127.0.0.1:45730".parse().unwrap()),
            node_id: "node-1",
            authenticated_user: Some(&ok.username),
        };
        registrar::handle_register(&self.location, &self.cfg, req, &ctx).await
    }
}

/// A SIP.js-like UA: same Call-ID, increasing CSeq, answers challenges with qop=auth.
struct Ua {
    user: String,
    password: String,
    contact: String,
    cseq: u32,
    nc: u32,
    challenge: Option<(String, String, String)>, // nonce, opaque, algorithm
    prefer: Algorithm,
}

impl Ua {
    fn new(user: &str, password: &str, contact: &str) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
            contact: contact.into(),
            cseq: 1,
            nc: 0,
            challenge: None,
            prefer: Algorithm::Md5,
        }
    }

    fn aor_user(&self) -> String {
        // Percent-encode everything outside unreserved so the URI parses.
        self.user
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.!~*()".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn request(&mut self, expires: u32) -> rsip::Request {
        self.cseq += 1;
        let mut s = format!(
            "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bK{}\r\nTo: <sip:{u}@{REALM}>\r\nFrom: <sip:{u}@{REALM}>;tag=t1\r\nCall-ID: reg-call-1\r\nCSeq: {} REGISTER\r\nMax-Forwards: 70\r\nContact: <{}>;expires={expires}\r\nUser-Agent: SIP.js/0.21.1\r\n",
            self.cseq,
            self.cseq,
            self.contact,
            u = self.aor_user(),
        );
        if let Some((nonce, opaque, alg)) = &self.challenge {
            self.nc += 1;
            let alg_e = Algorithm::from_param(Some(alg)).unwrap();
            let h = ha1(alg_e, &self.user, REALM, &self.password);
            let nc = format!("{:08x}", self.nc);
            let uri = format!("sip:{REALM}");
            let r = response(
                alg_e,
                &h,
                nonce,
                "REGISTER",
                &uri,
                Some((&nc, "cn0", "auth")),
            );
            s.push_str(&format!(
                "Authorization: Digest username={}, realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={alg}, qop=auth, nc={nc}, cnonce=\"cn0\", opaque=\"{opaque}\"\r\n",
                rtcgate::auth::quote(&self.user)
            ));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        rsip::Request::try_from(s.as_bytes()).unwrap()
    }

    /// Takes the challenge for the preferred algorithm from a 401.
    fn take_challenge(&mut self, resp: &rsip::Response) {
        let want = format!("algorithm={}", self.prefer.as_str());
        let v = resp
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::WwwAuthenticate(w) => Some(w.value().to_string()),
                _ => None,
            })
            .find(|v| v.contains(&want))
            .expect("challenge for algorithm");
        let p = parse_auth_params(v.strip_prefix("Digest ").unwrap()).unwrap();
        let get = |n: &str| {
            p.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        self.challenge = Some((get("nonce"), get("opaque"), get("algorithm")));
        self.nc = 0;
    }

    /// REGISTER, answering one challenge if needed.
    async fn register(
        &mut self,
        node: &Node,
        expires: u32,
        now: i64,
        flow: &str,
    ) -> rsip::Response {
        let r = node.handle(&self.request(expires), now, flow).await;
        if r.status_code.code() != 401 {
            return r;
        }
        self.take_challenge(&r);
        node.handle(&self.request(expires), now, flow).await
    }
}

fn code(r: &rsip::Response) -> u16 {
    r.status_code.code()
}

fn www_values(r: &rsip::Response) -> Vec<String> {
    r.headers
        .iter()
        .filter_map(|h| match h {
            Header::WwwAuthenticate(w) => Some(w.value().to_string()),
            _ => None,
        })
        .collect()
}

fn contacts(r: &rsip::Response) -> Vec<String> {
    r.headers
        .iter()
        .filter_map(|h| match h {
            Header::Contact(c) => Some(c.value().to_string()),
            _ => None,
        })
        .collect()
}

const AOR: &str = "sip:2000@127.0.0.1";
const CONTACT: &str = "sip:c9gqccl3@8m1uf7495730.invalid;transport=ws";

async fn node_with_user(url: &str, now: i64) -> Node {
    let node = Node::start(url, now).await;
    node.store
        .add_subscriber("2000", REALM, "s3cret", false, now)
        .await
        .unwrap();
    node
}

// ---------------------------------------------------------------- scenarios

async fn register_refresh_unregister(url: String) {
    let node = node_with_user(&url, T0).await;
    let mut ua = Ua::new("2000", "s3cret", CONTACT);

    let first = node.handle(&ua.request(300), T0, "ws-1").await;
    assert_eq!(code(&first), 401);
    let ch = www_values(&first);
    assert_eq!(ch.len(), 2);
    assert!(ch[0].contains("algorithm=SHA-256") && ch[1].contains("algorithm=MD5"));
    assert!(node.store.list_bindings(AOR).await.unwrap().is_empty());

    ua.take_challenge(&first);
    let ok = node.handle(&ua.request(300), T0, "ws-1").await;
    assert_eq!(code(&ok), 200, "{ok}");
    assert_eq!(contacts(&ok), vec![format!("<{CONTACT}>;expires=300")]);
    let db = node.store.list_bindings(AOR).await.unwrap();
    assert_eq!(db.len(), 1);
    assert_eq!(db[0].expires_at, T0 + 300);
    assert_eq!(db[0].flow_id.as_deref(), Some("ws-1"));
    assert_eq!(db[0].node_id, "node-1");
    assert_eq!(db[0].received.as_deref(), Some("127.0.0.1:45730"));
    assert_eq!(node.location.lookup(AOR, T0).len(), 1);

    // Refresh re-uses the nonce with nc=2 (no new challenge) and extends the binding.
    let r = node.handle(&ua.request(600), T0 + 100, "ws-1").await;
    assert_eq!(code(&r), 200);
    assert_eq!(contacts(&r), vec![format!("<{CONTACT}>;expires=600")]);
    let db = node.store.list_bindings(AOR).await.unwrap();
    assert_eq!(
        (db.len(), db[0].expires_at, db[0].cseq),
        (1, T0 + 700, ua.cseq)
    );

    // Un-REGISTER.
    let r = node.handle(&ua.request(0), T0 + 200, "ws-1").await;
    assert_eq!(code(&r), 200);
    assert!(contacts(&r).is_empty());
    assert!(node.store.list_bindings(AOR).await.unwrap().is_empty());
    assert!(node.location.lookup(AOR, T0 + 200).is_empty());
    node.store.close().await;
}

async fn expiry_purge(url: String) {
    let node = node_with_user(&url, T0).await;
    let mut ua = Ua::new("2000", "s3cret", CONTACT);
    assert_eq!(code(&ua.register(&node, 60, T0, "ws-1").await), 200);
    assert_eq!(node.location.purge_expired(T0 + 59).await.unwrap(), 0);
    assert_eq!(node.location.lookup(AOR, T0 + 59).len(), 1);
    // Expired bindings stop routing at once, even before the purge.
    assert!(node.location.lookup(AOR, T0 + 60).is_empty());
    assert_eq!(node.location.purge_expired(T0 + 60).await.unwrap(), 1);
    assert!(node.location.is_empty());
    assert!(node.store.list_bindings(AOR).await.unwrap().is_empty());
    node.store.close().await;
}

async fn wrong_password_is_403_and_writes_nothing(url: String) {
    let node = node_with_user(&url, T0).await;
    let mut ua = Ua::new("2000", "not-the-password", CONTACT);
    let r = ua.register(&node, 300, T0, "ws-1").await;
    assert_eq!(code(&r), 403);
    assert!(node.store.list_bindings(AOR).await.unwrap().is_empty());
    assert!(node.location.lookup(AOR, T0).is_empty());
    // Unknown user: also 403 (no user enumeration), nothing written.
    let mut ghost = Ua::new("2999", "x", CONTACT);
    assert_eq!(code(&ghost.register(&node, 300, T0, "ws-1").await), 403);
    assert!(node.store.list_all_bindings(T0).await.unwrap().is_empty());
    node.store.close().await;
}

async fn replayed_nonce_is_refused(url: String) {
    let node = node_with_user(&url, T0).await;
    let mut ua = Ua::new("2000", "s3cret", CONTACT);
    let first = node.handle(&ua.request(300), T0, "ws-1").await;
    ua.take_challenge(&first);
    let req = ua.request(300);
    assert_eq!(code(&node.handle(&req, T0, "ws-1").await), 200);
    // The captured request replayed verbatim (same nonce, same nc) from another flow.
    let r = node.handle(&req, T0 + 1, "attacker").await;
    assert_eq!(code(&r), 401);
    assert!(www_values(&r).iter().all(|v| v.contains("stale=true")));
    let db = node.store.list_bindings(AOR).await.unwrap();
    assert_eq!(db.len(), 1);
    assert_eq!(db[0].flow_id.as_deref(), Some("ws-1"));
    // A lower nc is refused too (hex counter: 0x0a then 0x09).
    ua.nc = 9;
    assert_eq!(
        code(&node.handle(&ua.request(300), T0 + 2, "ws-1").await),
        200
    );
    ua.nc = 8;
    assert_eq!(
        code(&node.handle(&ua.request(300), T0 + 3, "ws-1").await),
        401
    );
    node.store.close().await;
}

async fn stale_nonce_is_rechallenged(url: String) {
    let node = node_with_user(&url, T0).await;
    let mut ua = Ua::new("2000", "s3cret", CONTACT);
    assert_eq!(code(&ua.register(&node, 3600, T0, "ws-1").await), 200);
    // 301 s later the nonce has expired: 401 stale=true, no change.
    let r = node.handle(&ua.request(3600), T0 + 301, "ws-1").await;
    assert_eq!(code(&r), 401);
    let v = www_values(&r);
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|v| v.contains("stale=true")));
    assert_eq!(
        node.store.list_bindings(AOR).await.unwrap()[0].expires_at,
        T0 + 3600
    );
    // The UA retries with the fresh nonce and succeeds.
    ua.take_challenge(&r);
    assert_eq!(
        code(&node.handle(&ua.request(3600), T0 + 301, "ws-1").await),
        200
    );
    assert_eq!(
        node.store.list_bindings(AOR).await.unwrap()[0].expires_at,
        T0 + 301 + 3600
    );
    node.store.close().await;
}

async fn sha256_and_md5_both_accepted(url: String) {
    let node = node_with_user(&url, T0).await;
    for (alg, contact) in [
        (Algorithm::Sha256, "sip:a@x.invalid;transport=ws"),
        (Algorithm::Md5, "sip:b@y.invalid;transport=ws"),
    ] {
        let mut ua = Ua::new("2000", "s3cret", contact);
        ua.prefer = alg;
        let r = ua.register(&node, 300, T0, contact).await;
        assert_eq!(code(&r), 200, "{alg:?}");
        assert_eq!(ua.challenge.as_ref().unwrap().2, alg.as_str());
    }
    assert_eq!(node.store.list_bindings(AOR).await.unwrap().len(), 2);
    node.store.close().await;
}

async fn sql_metacharacters_in_user_name(url: String) {
    let evil = "o'brien\"; DROP TABLE x;--";
    let node = Node::start(&url, T0).await;
    node.store
        .add_subscriber(evil, REALM, "pw'\";--", true, T0)
        .await
        .unwrap();
    let s = node
        .store
        .get_subscriber(evil, REALM)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.username, evil);
    assert_eq!(s.password.as_deref(), Some("pw'\";--"));
    assert_eq!(s.ha1_md5, ha1(Algorithm::Md5, evil, REALM, "pw'\";--"));
    assert!(
        node.store
            .get_subscriber("o'brien", REALM)
            .await
            .unwrap()
            .is_none()
    );
    // Case matters (MariaDB would compare case-insensitively without utf8mb4_bin).
    assert!(
        node.store
            .get_subscriber(&evil.to_uppercase(), REALM)
            .await
            .unwrap()
            .is_none()
    );
    // Full digest + register round trip with the escaped quoted user name.
    let mut ua = Ua::new(evil, "pw'\";--", "sip:evil@z.invalid;transport=ws");
    let r = ua.register(&node, 300, T0, "flow'\";--").await;
    assert_eq!(code(&r), 200, "{r}");
    let aor = registrar::aor_for(evil, REALM);
    let b = node.store.list_bindings(&aor).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].flow_id.as_deref(), Some("flow'\";--"));
    assert_eq!(node.location.flow_closed("flow'\";--").await.unwrap(), 1);
    let users = store::user_list(&node.store, None).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].username, evil);
    assert!(users[0].has_plaintext);
    node.store.close().await;
}

async fn restart_keeps_live_registrations(url: String) {
    {
        let node = node_with_user(&url, T0).await;
        let mut long = Ua::new("2000", "s3cret", "sip:long@a.invalid");
        let mut short = Ua::new("2000", "s3cret", "sip:short@b.invalid");
        let mut browser = Ua::new("2000", "s3cret", "sip:tab@c.invalid;transport=ws");
        assert_eq!(code(&long.register(&node, 3600, T0, "").await), 200);
        assert_eq!(code(&short.register(&node, 60, T0, "").await), 200);
        assert_eq!(code(&browser.register(&node, 3600, T0, "1").await), 200);
        assert_eq!(node.location.lookup(AOR, T0).len(), 3);
        node.store.close().await;
    }
    // New process: new Store and LocationService on the same database, 2 minutes later.
    let store = Store::connect(&url).await.unwrap();
    let location = LocationService::load(store.clone(), "node-1", T0 + 120)
        .await
        .unwrap();
    // The UDP phone's live binding survives; the browser's died with its
    // WebSocket (flow ids start over: flow 1 is someone else now).
    let live = location.lookup(AOR, T0 + 120);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].contact, "sip:long@a.invalid");
    assert_eq!(live[0].expires_at, T0 + 3600);
    assert_eq!(live[0].user_agent.as_deref(), Some("SIP.js/0.21.1"));
    let stored = store.list_bindings(AOR).await.unwrap();
    assert!(stored.iter().all(|b| b.flow_id.is_none()), "{stored:?}");
    // The subscriber survived too.
    assert!(store.get_subscriber("2000", REALM).await.unwrap().is_some());
    let shown = store::location_show(&store, Some(AOR), T0 + 120)
        .await
        .unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].expires_in, 3480);
    store.close().await;
}

/// The contacts of `AOR` in the table (not the cache).
async fn stored_contacts(store: &Store) -> Vec<String> {
    store
        .list_bindings(AOR)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.contact)
        .collect()
}

async fn flow_close_removes_its_bindings(url: String) {
    let node = node_with_user(&url, T0).await;
    let mut a = Ua::new("2000", "s3cret", "sip:a@a.invalid;transport=ws");
    let mut b = Ua::new("2000", "s3cret", "sip:b@b.invalid;transport=ws");
    assert_eq!(code(&a.register(&node, 300, T0, "flow-a").await), 200);
    assert_eq!(code(&b.register(&node, 300, T0, "flow-b").await), 200);
    // A binding of the same flow id held by another node is not ours to remove.
    let foreign = Binding {
        aor: AOR.into(),
        contact: "sip:c@c.invalid".into(),
        expires_at: T0 + 300,
        q: 1000,
        path: vec!["<sip:edge;lr>".into(), "<sip:edge2;lr>".into()],
        received: None,
        flow_id: Some("flow-a".into()),
        node_id: "node-2".into(),
        instance: Some("<urn:uuid:1>".into()),
        reg_id: Some(1),
        user_agent: None,
        call_id: "x".into(),
        cseq: 1,
        updated_at: T0,
    };
    node.store
        .apply_binding_changes(&[BindingChange::Upsert(foreign.clone())])
        .await
        .unwrap();
    assert_eq!(node.location.flow_closed("flow-a").await.unwrap(), 1);
    let live = node.location.lookup(AOR, T0);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].contact, "sip:b@b.invalid;transport=ws");
    let mut db = stored_contacts(&node.store).await;
    db.sort();
    assert_eq!(
        db,
        vec![
            "sip:b@b.invalid;transport=ws".to_string(),
            "sip:c@c.invalid".to_string()
        ]
    );
    let round = node
        .store
        .list_bindings(AOR)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.node_id == "node-2")
        .unwrap();
    assert_eq!(round, foreign);
    node.store.close().await;
}

/// A REGISTER whose WebSocket closed before its binding was written (the
/// browser went away mid-REGISTER): no binding in the cache or the table,
/// so no call waits on a dead flow until the registration expires.
async fn register_finishing_after_its_flow_closed_leaves_no_binding(url: String) {
    let node = node_with_user(&url, T0).await;
    let mut gone = Ua::new("2000", "s3cret", "sip:gone@a.invalid;transport=ws");
    let mut alive = Ua::new("2000", "s3cret", "sip:alive@b.invalid;transport=ws");
    node.location.flow_closed("flow-gone").await.unwrap();
    assert_eq!(code(&gone.register(&node, 300, T0, "flow-gone").await), 200);
    assert_eq!(
        code(&alive.register(&node, 300, T0, "flow-alive").await),
        200
    );
    let live: Vec<String> = node
        .location
        .lookup(AOR, T0)
        .into_iter()
        .map(|b| b.contact)
        .collect();
    assert_eq!(live, ["sip:alive@b.invalid;transport=ws"]);
    assert_eq!(
        stored_contacts(&node.store).await,
        ["sip:alive@b.invalid;transport=ws"]
    );
    node.store.close().await;
}

/// Many REGISTERs at once go through the group-commit writer: each waits for
/// its own commit, the batch holds upserts and removals of many AORs (and a
/// job that writes the same row twice), and the table ends exactly as the
/// changes applied one by one would leave it.
async fn concurrent_updates_are_group_committed(url: String) {
    let node = Node::start(&url, T0).await;
    let binding = |aor: &str, contact: &str, cseq: u32| Binding {
        aor: aor.into(),
        contact: contact.into(),
        expires_at: T0 + 300,
        q: 1000,
        path: vec![],
        received: Some("127.0.0.1:5060".into()),
        flow_id: Some(format!("flow-{aor}")),
        node_id: "node-1".into(),
        instance: None,
        reg_id: None,
        user_agent: Some("ua".into()),
        call_id: "c".into(),
        cseq,
        updated_at: T0,
    };
    let aors: Vec<String> = (0..200).map(|i| format!("sip:u{i}@example.com")).collect();
    // Round 1: two contacts per AOR, the first written twice in the same job.
    let writes = aors.iter().map(|aor| {
        let (node, aor) = (&node, aor.clone());
        async move {
            node.location
                .update(&aor, |_| {
                    (
                        vec![
                            BindingChange::Upsert(binding(&aor, "sip:a@h", 1)),
                            BindingChange::Upsert(binding(&aor, "sip:b@h", 1)),
                            BindingChange::Upsert(binding(&aor, "sip:a@h", 2)),
                        ],
                        (),
                    )
                })
                .await
        }
    });
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    // Round 2: every other AOR drops contact b; the rest refresh it.
    let writes = aors.iter().enumerate().map(|(i, aor)| {
        let (node, aor) = (&node, aor.clone());
        async move {
            node.location
                .update(&aor, |_| {
                    let c = if i % 2 == 0 {
                        BindingChange::Remove {
                            aor: aor.clone(),
                            contact: "sip:b@h".into(),
                        }
                    } else {
                        BindingChange::Upsert(binding(&aor, "sip:b@h", 3))
                    };
                    (vec![c], ())
                })
                .await
        }
    });
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    for (i, aor) in aors.iter().enumerate() {
        let mut db = node.store.list_bindings(aor).await.unwrap();
        db.sort_by(|x, y| x.contact.cmp(&y.contact));
        let mut want = vec![binding(aor, "sip:a@h", 2)];
        if i % 2 == 1 {
            want.push(binding(aor, "sip:b@h", 3));
        }
        assert_eq!(db, want, "{aor}");
        let mut cached = node.location.lookup(aor, T0);
        cached.sort_by(|x, y| x.contact.cmp(&y.contact));
        assert_eq!(cached, want, "{aor} (cache)");
    }
    node.store.close().await;
}

async fn subscriber_admin_and_typed_errors(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let row = store::user_add(&store, "1001", "example.com", "pw", false, T0)
        .await
        .unwrap();
    assert!(!row.has_plaintext);
    assert!(matches!(
        store::user_add(&store, "1001", "example.com", "pw", false, T0).await,
        Err(StoreError::AlreadyExists)
    ));
    store::user_add(&store, "1002", "other.org", "pw", false, T0)
        .await
        .unwrap();
    assert_eq!(store::user_list(&store, None).await.unwrap().len(), 2);
    assert_eq!(
        store::user_list(&store, Some("example.com"))
            .await
            .unwrap()
            .len(),
        1
    );
    store::user_passwd(&store, "1001", "example.com", "new", false, T0 + 5)
        .await
        .unwrap();
    let s = store
        .get_subscriber("1001", "example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.ha1_sha256,
        ha1(Algorithm::Sha256, "1001", "example.com", "new")
    );
    assert_eq!((s.created_at, s.updated_at), (T0, T0 + 5));
    assert!(matches!(
        store::user_passwd(&store, "nobody", "example.com", "x", false, T0).await,
        Err(StoreError::NotFound)
    ));
    store::user_rm(&store, "1001", "example.com").await.unwrap();
    assert!(matches!(
        store::user_rm(&store, "1001", "example.com").await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .get_subscriber("1001", "example.com")
            .await
            .unwrap()
            .is_none()
    );
    // Migrations are idempotent: a second connect on the same database works.
    let again = Store::connect(&url).await.unwrap();
    again.ping().await.unwrap();
    again.close().await;
    store.close().await;
    // A closed pool reports "unavailable" (503 material), not a generic error.
    let e = store.get_subscriber("1002", "other.org").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
}

async fn call_records_insert_update_list(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let id1 = store
        .insert_call_record(&NewCallRecord {
            call_id: "c1".into(),
            caller: "sip:2000@127.0.0.1".into(),
            callee: "sip:1001@127.0.0.1".into(),
            destination: None,
            started_at_ms: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let id2 = store
        .insert_call_record(&NewCallRecord {
            call_id: "c2".into(),
            caller: "a".into(),
            callee: "b".into(),
            destination: Some("pbx1".into()),
            started_at_ms: 2_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(id2 > id1);
    let upd = CallRecordUpdate {
        answered_at_ms: Some(1_500),
        destination: Some("udp:127.0.0.1:5180".into()),
        ..Default::default()
    };
    assert!(store.update_call_record(id1, &upd).await.unwrap());
    assert!(
        store.update_call_record(id1, &upd).await.unwrap(),
        "identical update still finds the row"
    );
    let fin = CallRecordUpdate {
        ended_at_ms: Some(9_000),
        disposition: Some(200),
        media_stats: Some(r#"{"packets":10}"#.into()),
        ..Default::default()
    };
    assert!(store.update_call_record(id1, &fin).await.unwrap());
    assert!(!store.update_call_record(id2 + 100, &fin).await.unwrap());
    let r = store.get_call_record(id1).await.unwrap().unwrap();
    assert_eq!(r.answered_at_ms, Some(1_500));
    assert_eq!(r.ended_at_ms, Some(9_000));
    assert_eq!(r.disposition, Some(200));
    assert_eq!(r.destination.as_deref(), Some("udp:127.0.0.1:5180"));
    assert_eq!(r.media_stats.as_deref(), Some(r#"{"packets":10}"#));
    let all = store.list_call_records(10, None).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id2, id1]);
    assert_eq!(
        store.list_call_records(10, Some(id2)).await.unwrap().len(),
        1
    );
    store.close().await;
}

/// Finished records as accounting writes them: one transaction per batch,
/// every column (direction, reason, media JSON) round-trips, newest first.
async fn call_records_batch_from_accounting(url: String) {
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.insert_call_records(&[]).await.unwrap(), 0);
    let answered = NewCallRecord {
        call_id: "a1@browser".into(),
        caller: "2000@example.org".into(),
        callee: "1001@example.org".into(),
        destination: Some("udp:192.0.2.10:5060".into()),
        started_at_ms: 1_700_000_000_000,
        answered_at_ms: Some(1_700_000_002_500),
        ended_at_ms: Some(1_700_000_062_500),
        disposition: Some(200),
        media_stats: Some(r#"{"legs":[{"leg":"caller","packets":3000}]}"#.into()),
        direction: Some("browser_to_pbx".into()),
        reason: Some("bye_callee".into()),
    };
    let busy = NewCallRecord {
        call_id: "b1'; DROP TABLE call_records; --".into(),
        caller: "sipp@127.0.0.1".into(),
        callee: "1001@127.0.0.1".into(),
        started_at_ms: 1_700_000_100_000,
        ended_at_ms: Some(1_700_000_100_300),
        disposition: Some(486),
        direction: Some("pbx_to_pbx".into()),
        reason: Some("busy".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .insert_call_records(&[answered.clone(), busy.clone()])
            .await
            .unwrap(),
        2
    );
    let rows = store.list_call_records(10, None).await.unwrap();
    assert_eq!(rows.len(), 2);
    let (b, a) = (&rows[0], &rows[1]);
    assert!(b.id > a.id);
    assert_eq!(
        (a.call_id.as_str(), a.caller.as_str(), a.callee.as_str()),
        ("a1@browser", "2000@example.org", "1001@example.org")
    );
    assert_eq!(a.destination, answered.destination);
    assert_eq!(a.started_at_ms, answered.started_at_ms);
    assert_eq!(a.answered_at_ms, answered.answered_at_ms);
    assert_eq!(a.ended_at_ms, answered.ended_at_ms);
    assert_eq!(a.disposition, Some(200));
    assert_eq!(a.media_stats, answered.media_stats);
    assert_eq!(a.direction.as_deref(), Some("browser_to_pbx"));
    assert_eq!(a.reason.as_deref(), Some("bye_callee"));
    assert_eq!(a.duration_ms(), Some(60_000));
    assert_eq!(b.call_id, busy.call_id);
    assert_eq!(b.disposition, Some(486));
    assert_eq!(b.reason.as_deref(), Some("busy"));
    assert_eq!(b.duration_ms(), None);
    assert_eq!(b.destination, None);
    // A batch is all or nothing: a closed pool writes nothing and says so.
    store.close().await;
    let e = store.insert_call_records(&[busy]).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
}

// ---------------------------------------------------------------- no database needed

#[tokio::test]
async fn unreachable_server_is_unavailable_and_bad_url_rejected() {
    for url in [
        "mysql://root@127.0.0.1:1/x",
        "postgres://postgres@127.0.0.1:1/x",
    ] {
        let mut o = store::StoreOptions::new(url);
        o.acquire_timeout = std::time::Duration::from_secs(2);
        let e = Store::connect_with(&o).await.unwrap_err();
        assert!(e.is_unavailable(), "{url}: {e:?}");
    }
    assert!(matches!(
        Store::connect("redis://x").await,
        Err(StoreError::UnsupportedUrl)
    ));
}
