//! Operations behind the `rtcgate user ...` and `rtcgate location show` commands.
//! They return data; printing is the CLI's job.

use super::{Binding, Store, StoreError, Subscriber};

/// One line of `rtcgate user list` (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// User name.
    pub username: String,
    /// Domain (realm).
    pub domain: String,
    /// Whether a plaintext password is stored.
    pub has_plaintext: bool,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Last change, unix seconds.
    pub updated_at: i64,
}

impl From<Subscriber> for UserRow {
    fn from(s: Subscriber) -> Self {
        Self {
            username: s.username,
            domain: s.domain,
            has_plaintext: s.password.is_some(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// One line of `rtcgate location show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationRow {
    /// Address of record.
    pub aor: String,
    /// Contact URI.
    pub contact: String,
    /// Seconds until expiry.
    pub expires_in: u32,
    /// Source address.
    pub received: Option<String>,
    /// Flow id.
    pub flow_id: Option<String>,
    /// Node holding the flow.
    pub node_id: String,
    /// User-Agent.
    pub user_agent: Option<String>,
}

impl LocationRow {
    fn new(b: Binding, now: i64) -> Self {
        Self {
            expires_in: b.remaining(now),
            aor: b.aor,
            contact: b.contact,
            received: b.received,
            flow_id: b.flow_id,
            node_id: b.node_id,
            user_agent: b.user_agent,
        }
    }
}

/// `rtcgate user add USER DOMAIN` (HA1 only unless `keep_plaintext`).
pub async fn user_add(
    store: &Store,
    username: &str,
    domain: &str,
    password: &str,
    keep_plaintext: bool,
    now: i64,
) -> Result<UserRow, StoreError> {
    Ok(store
        .add_subscriber(username, domain, password, keep_plaintext, now)
        .await?
        .into())
}

/// `rtcgate user passwd USER DOMAIN`.
pub async fn user_passwd(
    store: &Store,
    username: &str,
    domain: &str,
    password: &str,
    keep_plaintext: bool,
    now: i64,
) -> Result<(), StoreError> {
    store
        .set_password(username, domain, password, keep_plaintext, now)
        .await
}

/// `rtcgate user rm USER DOMAIN`: also drops the user's registrations in the store.
pub async fn user_rm(store: &Store, username: &str, domain: &str) -> Result<(), StoreError> {
    if !store.remove_subscriber(username, domain).await? {
        return Err(StoreError::NotFound);
    }
    let aor = crate::registrar::aor_for(username, domain);
    for b in store.list_bindings(&aor).await? {
        store.remove_binding(&b.aor, &b.contact).await?;
    }
    Ok(())
}

/// `rtcgate user list [DOMAIN]`.
pub async fn user_list(store: &Store, domain: Option<&str>) -> Result<Vec<UserRow>, StoreError> {
    Ok(store
        .list_subscribers(domain)
        .await?
        .into_iter()
        .map(UserRow::from)
        .collect())
}

/// `rtcgate location show [AOR]`: live bindings read from the store (the CLI runs
/// outside the server process, so it cannot see the server's cache).
pub async fn location_show(
    store: &Store,
    aor: Option<&str>,
    now: i64,
) -> Result<Vec<LocationRow>, StoreError> {
    let bindings = match aor {
        Some(a) => store.list_bindings(a).await?,
        None => store.list_all_bindings(now).await?,
    };
    Ok(bindings
        .into_iter()
        .filter(|b| !b.is_expired(now))
        .map(|b| LocationRow::new(b, now))
        .collect())
}
