//! The `nodes` table: cluster membership. Every node upserts its own row on a
//! heartbeat; a row whose `expires_at` has passed names a dead node.

use super::model::BindingRow;
use super::{Binding, Store, StoreError, with_sql};

/// One node of the cluster as recorded in the `nodes` table.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    /// The node's `general.node_id`.
    pub node_id: String,
    /// Where other nodes send it SIP (`ip:port`, UDP): its `cluster.advertise`.
    pub sip_addr: String,
    /// When this incarnation started, unix seconds.
    pub started_at: i64,
    /// After this (unix seconds) the node counts as dead.
    pub expires_at: i64,
    /// Last heartbeat, unix seconds.
    pub updated_at: i64,
}

const UPSERT_NODE_SQLITE: &str = "INSERT INTO nodes (node_id, sip_addr, started_at, expires_at, updated_at) \
     VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET sip_addr = excluded.sip_addr, \
     started_at = excluded.started_at, expires_at = excluded.expires_at, updated_at = excluded.updated_at";
const UPSERT_NODE_MYSQL: &str = "INSERT INTO nodes (node_id, sip_addr, started_at, expires_at, updated_at) \
     VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE sip_addr = VALUES(sip_addr), \
     started_at = VALUES(started_at), expires_at = VALUES(expires_at), updated_at = VALUES(updated_at)";
const UPSERT_NODE_PG: &str = "INSERT INTO nodes (node_id, sip_addr, started_at, expires_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node_id) DO UPDATE SET sip_addr = excluded.sip_addr, \
     started_at = excluded.started_at, expires_at = excluded.expires_at, updated_at = excluded.updated_at";

const SELECT_REMOTE: &str = "SELECT aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at FROM location WHERE node_id <> ? AND expires_at > ?";
const SELECT_REMOTE_PG: &str = "SELECT aor, contact, expires_at, q, path, received, flow_id, node_id, instance, reg_id, user_agent, call_id, cseq, updated_at FROM location WHERE node_id <> $1 AND expires_at > $2";

impl Store {
    /// Inserts or refreshes a node's row (its heartbeat).
    pub async fn upsert_node(&self, node: &NodeRow) -> Result<(), StoreError> {
        with_sql!(
            self,
            [UPSERT_NODE_SQLITE, UPSERT_NODE_MYSQL, UPSERT_NODE_PG],
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&node.node_id)
                    .bind(&node.sip_addr)
                    .bind(node.started_at)
                    .bind(node.expires_at)
                    .bind(node.updated_at)
                    .execute(pool)
                    .await?;
            }
        );
        Ok(())
    }

    /// Nodes whose heartbeat has not expired at `now`, by node id.
    pub async fn live_nodes(&self, now: i64) -> Result<Vec<NodeRow>, StoreError> {
        Ok(with_sql!(
            self,
            [
                "SELECT node_id, sip_addr, started_at, expires_at, updated_at FROM nodes WHERE expires_at > ? ORDER BY node_id",
                "SELECT node_id, sip_addr, started_at, expires_at, updated_at FROM nodes WHERE expires_at > ? ORDER BY node_id",
                "SELECT node_id, sip_addr, started_at, expires_at, updated_at FROM nodes WHERE expires_at > $1 ORDER BY node_id"
            ],
            |pool, sql| sqlx::query_as::<_, NodeRow>(sql)
                .bind(now)
                .fetch_all(pool)
                .await?
        ))
    }

    /// Every node row, dead ones included (for `rtcgate` admin views and tests).
    pub async fn all_nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let sql = "SELECT node_id, sip_addr, started_at, expires_at, updated_at FROM nodes ORDER BY node_id";
        Ok(with_sql!(self, [sql, sql, sql], |pool, sql| {
            sqlx::query_as::<_, NodeRow>(sql).fetch_all(pool).await?
        }))
    }

    /// Removes a node's row (graceful leave); returns whether it existed.
    pub async fn remove_node(&self, node_id: &str) -> Result<bool, StoreError> {
        let n = with_sql!(
            self,
            [
                "DELETE FROM nodes WHERE node_id = ?",
                "DELETE FROM nodes WHERE node_id = ?",
                "DELETE FROM nodes WHERE node_id = $1"
            ],
            |pool, sql| sqlx::query(sql)
                .bind(node_id)
                .execute(pool)
                .await?
                .rows_affected()
        );
        Ok(n > 0)
    }

    /// Live bindings (at `now`) held by nodes other than `node_id`.
    pub async fn remote_bindings(
        &self,
        node_id: &str,
        now: i64,
    ) -> Result<Vec<Binding>, StoreError> {
        let rows = with_sql!(
            self,
            [SELECT_REMOTE, SELECT_REMOTE, SELECT_REMOTE_PG],
            |pool, sql| {
                sqlx::query_as::<_, BindingRow>(sql)
                    .bind(node_id)
                    .bind(now)
                    .fetch_all(pool)
                    .await?
            }
        );
        Ok(rows.into_iter().map(Binding::from).collect())
    }

    /// Deletes the flow-carried bindings of `node_id`: its flows did not survive a
    /// restart, and a new connection may reuse a flow id. Returns how many.
    pub async fn remove_node_flow_bindings(&self, node_id: &str) -> Result<u64, StoreError> {
        Ok(with_sql!(
            self,
            [
                "DELETE FROM location WHERE node_id = ? AND flow_id IS NOT NULL",
                "DELETE FROM location WHERE node_id = ? AND flow_id IS NOT NULL",
                "DELETE FROM location WHERE node_id = $1 AND flow_id IS NOT NULL"
            ],
            |pool, sql| sqlx::query(sql)
                .bind(node_id)
                .execute(pool)
                .await?
                .rows_affected()
        ))
    }
}
