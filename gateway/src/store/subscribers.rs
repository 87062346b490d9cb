//! Subscriber table operations.

use super::{Store, StoreError, Subscriber, with_sql};
use crate::auth::{Algorithm, ha1};

impl Store {
    /// Adds a subscriber; HA1s are computed with `domain` as the realm. The plaintext
    /// password is stored only if `keep_plaintext`. Fails with
    /// [`StoreError::AlreadyExists`] if (username, domain) exists.
    pub async fn add_subscriber(
        &self,
        username: &str,
        domain: &str,
        password: &str,
        keep_plaintext: bool,
        now: i64,
    ) -> Result<Subscriber, StoreError> {
        let sub = Subscriber {
            username: username.to_string(),
            domain: domain.to_string(),
            ha1_md5: ha1(Algorithm::Md5, username, domain, password),
            ha1_sha256: ha1(Algorithm::Sha256, username, domain, password),
            password: keep_plaintext.then(|| password.to_string()),
            created_at: now,
            updated_at: now,
        };
        with_sql!(
            self,
            [
                "INSERT INTO subscribers (username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                "INSERT INTO subscribers (username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                "INSERT INTO subscribers (username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ],
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&sub.username)
                    .bind(&sub.domain)
                    .bind(&sub.ha1_md5)
                    .bind(&sub.ha1_sha256)
                    .bind(&sub.password)
                    .bind(sub.created_at)
                    .bind(sub.updated_at)
                    .execute(pool)
                    .await?;
            }
        );
        Ok(sub)
    }

    /// Changes a subscriber's password (and HA1s). [`StoreError::NotFound`] if absent.
    pub async fn set_password(
        &self,
        username: &str,
        domain: &str,
        password: &str,
        keep_plaintext: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let md5 = ha1(Algorithm::Md5, username, domain, password);
        let sha = ha1(Algorithm::Sha256, username, domain, password);
        let plain = keep_plaintext.then(|| password.to_string());
        let n = with_sql!(
            self,
            [
                "UPDATE subscribers SET ha1_md5 = ?, ha1_sha256 = ?, password = ?, updated_at = ? WHERE username = ? AND domain = ?",
                "UPDATE subscribers SET ha1_md5 = ?, ha1_sha256 = ?, password = ?, updated_at = ? WHERE username = ? AND domain = ?",
                "UPDATE subscribers SET ha1_md5 = $1, ha1_sha256 = $2, password = $3, updated_at = $4 WHERE username = $5 AND domain = $6"
            ],
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&md5)
                    .bind(&sha)
                    .bind(&plain)
                    .bind(now)
                    .bind(username)
                    .bind(domain)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        );
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Removes a subscriber; returns whether it existed.
    pub async fn remove_subscriber(
        &self,
        username: &str,
        domain: &str,
    ) -> Result<bool, StoreError> {
        let n = with_sql!(
            self,
            [
                "DELETE FROM subscribers WHERE username = ? AND domain = ?",
                "DELETE FROM subscribers WHERE username = ? AND domain = ?",
                "DELETE FROM subscribers WHERE username = $1 AND domain = $2"
            ],
            |pool, sql| sqlx::query(sql)
                .bind(username)
                .bind(domain)
                .execute(pool)
                .await?
                .rows_affected()
        );
        Ok(n > 0)
    }

    /// Looks a subscriber up.
    pub async fn get_subscriber(
        &self,
        username: &str,
        domain: &str,
    ) -> Result<Option<Subscriber>, StoreError> {
        self.guarded(async {
            Ok(with_sql!(
                self,
                [
                    "SELECT username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at FROM subscribers WHERE username = ? AND domain = ?",
                    "SELECT username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at FROM subscribers WHERE username = ? AND domain = ?",
                    "SELECT username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at FROM subscribers WHERE username = $1 AND domain = $2"
                ],
                |pool, sql| sqlx::query_as::<_, Subscriber>(sql)
                    .bind(username)
                    .bind(domain)
                    .fetch_optional(pool)
                    .await?
            ))
        })
        .await
    }

    /// Lists subscribers, optionally of one domain, ordered by domain and name.
    pub async fn list_subscribers(
        &self,
        domain: Option<&str>,
    ) -> Result<Vec<Subscriber>, StoreError> {
        Ok(with_sql!(
            self,
            [
                "SELECT username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at FROM subscribers WHERE (? IS NULL OR domain = ?) ORDER BY domain, username",
                "SELECT username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at FROM subscribers WHERE (? IS NULL OR domain = ?) ORDER BY domain, username",
                "SELECT username, domain, ha1_md5, ha1_sha256, password, created_at, updated_at FROM subscribers WHERE ($1::text IS NULL OR domain = $1) ORDER BY domain, username"
            ],
            |pool, sql| {
                let q = sqlx::query_as::<_, Subscriber>(sql).bind(domain);
                // Postgres reuses $1; the other dialects need the value twice.
                let q = if matches!(self.backend, super::Backend::Postgres(_)) {
                    q
                } else {
                    q.bind(domain)
                };
                q.fetch_all(pool).await?
            }
        ))
    }
}
