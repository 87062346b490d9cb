//! Location table operations (registrations). The in-memory front is
//! [`LocationService`](super::LocationService).

use super::batch::Coalesced;
use super::model::{BindingRow, join_path};
use super::{Backend, Binding, BindingChange, Store, StoreError, binding_key, with_sql};

const UPSERT_SQLITE: &str = "INSERT INTO location (id, aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, q = excluded.q, path = excluded.path, \
     received = excluded.received, flow_id = excluded.flow_id, node_id = excluded.node_id, instance = excluded.instance, \
     reg_id = excluded.reg_id, user_agent = excluded.user_agent, call_id = excluded.call_id, cseq = excluded.cseq, \
     updated_at = excluded.updated_at";
const UPSERT_MYSQL: &str = "INSERT INTO location (id, aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at), q = VALUES(q), path = VALUES(path), \
     received = VALUES(received), flow_id = VALUES(flow_id), node_id = VALUES(node_id), instance = VALUES(instance), \
     reg_id = VALUES(reg_id), user_agent = VALUES(user_agent), call_id = VALUES(call_id), cseq = VALUES(cseq), \
     updated_at = VALUES(updated_at)";
const UPSERT_PG: &str = "INSERT INTO location (id, aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, q = excluded.q, path = excluded.path, \
     received = excluded.received, flow_id = excluded.flow_id, node_id = excluded.node_id, instance = excluded.instance, \
     reg_id = excluded.reg_id, user_agent = excluded.user_agent, call_id = excluded.call_id, cseq = excluded.cseq, \
     updated_at = excluded.updated_at";

const DELETE_QM: &str = "DELETE FROM location WHERE id = ?";
const DELETE_PG: &str = "DELETE FROM location WHERE id = $1";

const SELECT_AOR_QM: &str = "SELECT aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at FROM location WHERE aor = ? ORDER BY q DESC, updated_at DESC, contact";
const SELECT_AOR_PG: &str = "SELECT aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at FROM location WHERE aor = $1 ORDER BY q DESC, updated_at DESC, contact";
const SELECT_ALL: &str = "SELECT aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at FROM location WHERE expires_at > ? ORDER BY aor, q DESC, updated_at DESC, contact";
const SELECT_ALL_PG: &str = "SELECT aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at FROM location WHERE expires_at > $1 ORDER BY aor, q DESC, updated_at DESC, contact";

/// Binds the 15 upsert parameters of a binding, in column order.
macro_rules! bind_binding {
    ($q:expr, $b:expr) => {
        $q.bind($b.key())
            .bind(&$b.aor)
            .bind(&$b.contact)
            .bind($b.expires_at)
            .bind(i64::from($b.q))
            .bind(join_path(&$b.path))
            .bind(&$b.received)
            .bind(&$b.flow_id)
            .bind(&$b.node_id)
            .bind(&$b.instance)
            .bind($b.reg_id.map(i64::from))
            .bind(&$b.user_agent)
            .bind(&$b.call_id)
            .bind(i64::from($b.cseq))
            .bind($b.updated_at)
    };
}

/// Applies changes inside one transaction on a concrete pool.
macro_rules! apply_in_tx {
    ($pool:expr, $changes:expr, $upsert:expr, $delete:expr) => {{
        let mut tx = $pool.begin().await?;
        for c in $changes {
            match c {
                BindingChange::Upsert(b) => {
                    bind_binding!(sqlx::query($upsert), b)
                        .execute(&mut *tx)
                        .await?;
                }
                BindingChange::Remove { aor, contact } => {
                    sqlx::query($delete)
                        .bind(binding_key(aor, contact))
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
    }};
}

const COLUMNS: &str = "INSERT INTO location (id, aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at) ";
const ON_CONFLICT: &str = " ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, q = excluded.q, path = excluded.path, \
     received = excluded.received, flow_id = excluded.flow_id, node_id = excluded.node_id, instance = excluded.instance, \
     reg_id = excluded.reg_id, user_agent = excluded.user_agent, call_id = excluded.call_id, cseq = excluded.cseq, \
     updated_at = excluded.updated_at";
const ON_DUPLICATE: &str = " ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at), q = VALUES(q), path = VALUES(path), \
     received = VALUES(received), flow_id = VALUES(flow_id), node_id = VALUES(node_id), instance = VALUES(instance), \
     reg_id = VALUES(reg_id), user_agent = VALUES(user_agent), call_id = VALUES(call_id), cseq = VALUES(cseq), \
     updated_at = VALUES(updated_at)";
/// Rows per multi-row statement: 15 parameters each stays far below every
/// dialect's bind limit (SQLite 32766, MySQL and PostgreSQL 65535).
const ROWS_PER_STATEMENT: usize = 256;

/// Writes a [`Coalesced`] batch in one transaction on a concrete pool: multi-row
/// deletes, then multi-row upserts (the two sets never share a key).
macro_rules! apply_coalesced_in_tx {
    ($db:ty, $pool:expr, $folded:expr, $conflict:expr) => {{
        let mut tx = $pool.begin().await?;
        for keys in $folded.deletes.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<$db>::new("DELETE FROM location WHERE id IN (");
            let mut list = q.separated(", ");
            for k in keys {
                list.push_bind(k.as_str());
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        for rows in $folded.upserts.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<$db>::new(COLUMNS);
            q.push_values(rows, |mut t, b| {
                t.push_bind(b.key())
                    .push_bind(b.aor.as_str())
                    .push_bind(b.contact.as_str())
                    .push_bind(b.expires_at)
                    .push_bind(i64::from(b.q))
                    .push_bind(join_path(&b.path))
                    .push_bind(b.received.as_deref())
                    .push_bind(b.flow_id.as_deref())
                    .push_bind(b.node_id.as_str())
                    .push_bind(b.instance.as_deref())
                    .push_bind(b.reg_id.map(i64::from))
                    .push_bind(b.user_agent.as_deref())
                    .push_bind(b.call_id.as_str())
                    .push_bind(i64::from(b.cseq))
                    .push_bind(b.updated_at);
            });
            q.push($conflict);
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }};
}

impl Store {
    /// Inserts or refreshes one binding.
    pub async fn upsert_binding(&self, b: &Binding) -> Result<(), StoreError> {
        with_sql!(
            self,
            [UPSERT_SQLITE, UPSERT_MYSQL, UPSERT_PG],
            |pool, sql| {
                bind_binding!(sqlx::query(sql), b).execute(pool).await?;
            }
        );
        Ok(())
    }

    /// Applies registrar changes atomically (all or nothing).
    pub async fn apply_binding_changes(&self, changes: &[BindingChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.guarded(async {
            match &self.backend {
                Backend::Sqlite(p) => apply_in_tx!(p, changes, UPSERT_SQLITE, DELETE_QM),
                Backend::MySql(p) => apply_in_tx!(p, changes, UPSERT_MYSQL, DELETE_QM),
                Backend::Postgres(p) => apply_in_tx!(p, changes, UPSERT_PG, DELETE_PG),
            }
            Ok(())
        })
        .await
    }

    /// Writes a coalesced batch of registrar changes atomically (group commit).
    pub(crate) async fn apply_coalesced(&self, folded: &Coalesced) -> Result<(), StoreError> {
        if folded.upserts.is_empty() && folded.deletes.is_empty() {
            return Ok(());
        }
        self.guarded(async {
            match &self.backend {
                Backend::Sqlite(p) => apply_coalesced_in_tx!(sqlx::Sqlite, p, folded, ON_CONFLICT),
                Backend::MySql(p) => apply_coalesced_in_tx!(sqlx::MySql, p, folded, ON_DUPLICATE),
                Backend::Postgres(p) => {
                    apply_coalesced_in_tx!(sqlx::Postgres, p, folded, ON_CONFLICT)
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes the binding (`aor`, `contact`); returns whether it existed.
    pub async fn remove_binding(&self, aor: &str, contact: &str) -> Result<bool, StoreError> {
        let key = binding_key(aor, contact);
        let n = with_sql!(self, [DELETE_QM, DELETE_QM, DELETE_PG], |pool, sql| {
            sqlx::query(sql)
                .bind(&key)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Removes every binding carried by `flow_id` on `node_id`; returns how many.
    pub async fn remove_flow_bindings(
        &self,
        node_id: &str,
        flow_id: &str,
    ) -> Result<u64, StoreError> {
        self.guarded(async {
            Ok(with_sql!(
                self,
                [
                    "DELETE FROM location WHERE node_id = ? AND flow_id = ?",
                    "DELETE FROM location WHERE node_id = ? AND flow_id = ?",
                    "DELETE FROM location WHERE node_id = $1 AND flow_id = $2"
                ],
                |pool, sql| sqlx::query(sql)
                    .bind(node_id)
                    .bind(flow_id)
                    .execute(pool)
                    .await?
                    .rows_affected()
            ))
        })
        .await
    }

    /// All bindings of an AOR (expired ones included until purged), best q first.
    pub async fn list_bindings(&self, aor: &str) -> Result<Vec<Binding>, StoreError> {
        let rows = with_sql!(
            self,
            [SELECT_AOR_QM, SELECT_AOR_QM, SELECT_AOR_PG],
            |pool, sql| {
                sqlx::query_as::<_, BindingRow>(sql)
                    .bind(aor)
                    .fetch_all(pool)
                    .await?
            }
        );
        Ok(rows.into_iter().map(Binding::from).collect())
    }

    /// All bindings not expired at `now`, ordered by AOR.
    pub async fn list_all_bindings(&self, now: i64) -> Result<Vec<Binding>, StoreError> {
        let rows = with_sql!(
            self,
            [SELECT_ALL, SELECT_ALL, SELECT_ALL_PG],
            |pool, sql| {
                sqlx::query_as::<_, BindingRow>(sql)
                    .bind(now)
                    .fetch_all(pool)
                    .await?
            }
        );
        Ok(rows.into_iter().map(Binding::from).collect())
    }

    /// Deletes bindings expired at `now`; returns how many.
    pub async fn purge_expired_bindings(&self, now: i64) -> Result<u64, StoreError> {
        Ok(with_sql!(
            self,
            [
                "DELETE FROM location WHERE expires_at <= ?",
                "DELETE FROM location WHERE expires_at <= ?",
                "DELETE FROM location WHERE expires_at <= $1"
            ],
            |pool, sql| sqlx::query(sql)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        ))
    }
}
