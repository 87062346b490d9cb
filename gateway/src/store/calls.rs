//! Call record operations: accounting writes finished calls (in batches),
//! `rtcgate cdr list` reads them.

use super::{Backend, CallRecord, CallRecordUpdate, NewCallRecord, Store, StoreError, with_sql};

const INSERT_QM: &str = "INSERT INTO call_records (call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const INSERT_PG: &str = "INSERT INTO call_records (call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const INSERT_PG_RETURNING: &str = "INSERT INTO call_records (call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id";

/// Binds the fields of `r` in the order of the INSERT statements.
macro_rules! bind_record {
    ($q:expr, $r:expr) => {
        $q.bind(&$r.call_id)
            .bind(&$r.caller)
            .bind(&$r.callee)
            .bind(&$r.destination)
            .bind($r.started_at_ms)
            .bind($r.answered_at_ms)
            .bind($r.ended_at_ms)
            .bind($r.disposition)
            .bind(&$r.media_stats)
            .bind(&$r.direction)
            .bind(&$r.reason)
    };
}

impl Store {
    /// Inserts a call record; returns its id.
    pub async fn insert_call_record(&self, r: &NewCallRecord) -> Result<i64, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => bind_record!(sqlx::query(INSERT_QM), r)
                .execute(pool)
                .await?
                .last_insert_rowid(),
            Backend::MySql(pool) => {
                let id = bind_record!(sqlx::query(INSERT_QM), r)
                    .execute(pool)
                    .await?
                    .last_insert_id();
                i64::try_from(id).unwrap_or(i64::MAX)
            }
            Backend::Postgres(pool) => {
                bind_record!(sqlx::query_scalar::<_, i64>(INSERT_PG_RETURNING), r)
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// Inserts many call records in one transaction (all or none); returns
    /// how many. Behind the circuit breaker: while the database is known to
    /// be down this fails at once ([`StoreError::CircuitOpen`]).
    pub async fn insert_call_records(&self, records: &[NewCallRecord]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        self.guarded(self.insert_call_records_now(records)).await
    }

    async fn insert_call_records_now(&self, records: &[NewCallRecord]) -> Result<u64, StoreError> {
        let mut n = 0;
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for r in records {
                    n += bind_record!(sqlx::query(INSERT_QM), r)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
            }
            Backend::MySql(pool) => {
                let mut tx = pool.begin().await?;
                for r in records {
                    n += bind_record!(sqlx::query(INSERT_QM), r)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for r in records {
                    n += bind_record!(sqlx::query(INSERT_PG), r)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
            }
        }
        Ok(n)
    }

    /// Updates the given fields of a call record; returns whether it exists.
    pub async fn update_call_record(
        &self,
        id: i64,
        u: &CallRecordUpdate,
    ) -> Result<bool, StoreError> {
        let n = with_sql!(
            self,
            [
                "UPDATE call_records SET destination = COALESCE(?, destination), answered_at_ms = COALESCE(?, answered_at_ms), ended_at_ms = COALESCE(?, ended_at_ms), disposition = COALESCE(?, disposition), media_stats = COALESCE(?, media_stats) WHERE id = ?",
                "UPDATE call_records SET destination = COALESCE(?, destination), answered_at_ms = COALESCE(?, answered_at_ms), ended_at_ms = COALESCE(?, ended_at_ms), disposition = COALESCE(?, disposition), media_stats = COALESCE(?, media_stats) WHERE id = ?",
                "UPDATE call_records SET destination = COALESCE($1, destination), answered_at_ms = COALESCE($2, answered_at_ms), ended_at_ms = COALESCE($3, ended_at_ms), disposition = COALESCE($4, disposition), media_stats = COALESCE($5, media_stats) WHERE id = $6"
            ],
            |pool, sql| sqlx::query(sql)
                .bind(&u.destination)
                .bind(u.answered_at_ms)
                .bind(u.ended_at_ms)
                .bind(u.disposition)
                .bind(&u.media_stats)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        );
        // MySQL counts only rows actually changed; an identical update still means "exists".
        if n == 0 && matches!(self.backend, Backend::MySql(_)) {
            return Ok(self.get_call_record(id).await?.is_some());
        }
        Ok(n > 0)
    }

    /// One call record by id.
    pub async fn get_call_record(&self, id: i64) -> Result<Option<CallRecord>, StoreError> {
        Ok(with_sql!(
            self,
            [
                "SELECT id, call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason FROM call_records WHERE id = ?",
                "SELECT id, call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason FROM call_records WHERE id = ?",
                "SELECT id, call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason FROM call_records WHERE id = $1"
            ],
            |pool, sql| sqlx::query_as::<_, CallRecord>(sql)
                .bind(id)
                .fetch_optional(pool)
                .await?
        ))
    }

    /// The newest call records (highest id first), at most `limit`, with id < `before_id` if given.
    pub async fn list_call_records(
        &self,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let before = before_id.unwrap_or(i64::MAX);
        Ok(with_sql!(
            self,
            [
                "SELECT id, call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason FROM call_records WHERE id < ? ORDER BY id DESC LIMIT ?",
                "SELECT id, call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason FROM call_records WHERE id < ? ORDER BY id DESC LIMIT ?",
                "SELECT id, call_id, caller, callee, destination, started_at_ms, answered_at_ms, ended_at_ms, disposition, media_stats, direction, reason FROM call_records WHERE id < $1 ORDER BY id DESC LIMIT $2"
            ],
            |pool, sql| sqlx::query_as::<_, CallRecord>(sql)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        ))
    }
}
