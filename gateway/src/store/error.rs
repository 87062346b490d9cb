//! Typed store errors.

use thiserror::Error;

/// Errors from [`Store`](super::Store) operations.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; retry later
    /// (the SIP layer answers 503 with Retry-After).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database was found unavailable moments ago; the request was not
    /// tried (the circuit breaker probes again in `retry_in`).
    #[error("database unavailable (failing fast, next probe in {retry_in:?})")]
    CircuitOpen {
        /// Until the next probe may go.
        retry_in: std::time::Duration,
    },
    /// A row with the same key already exists.
    #[error("already exists")]
    AlreadyExists,
    /// Another constraint (not null, check, foreign key) was violated.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// The database URL is not one of sqlite:, mysql:, postgres:.
    #[error("unsupported database url (expected sqlite:, mysql: or postgres:)")]
    UnsupportedUrl,
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Any other database error (bad SQL, decode error...): a bug, not a retry case.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// True when retrying later may succeed (answer 503 + Retry-After).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::CircuitOpen { .. })
    }
}

/// SQLSTATE / vendor codes that mean "try again later" rather than "your data is wrong".
fn transient_code(code: &str) -> bool {
    code.starts_with("08") // PostgreSQL/SQL standard: connection exception
        || code == "53300" // too_many_connections
        || code == "57P01" || code == "57P02" || code == "57P03" // shutdown / cannot connect now
        || code == "40001" || code == "40P01" // serialization failure / deadlock
        || code == "1040" || code == "1205" || code == "1213" // MySQL: too many conns, lock wait, deadlock
        || code == "5" || code == "6" // SQLite BUSY / LOCKED
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Unavailable(e),
            sqlx::Error::Database(ref db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match db.kind() {
                    ErrorKind::UniqueViolation => Self::AlreadyExists,
                    ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
                    | ErrorKind::ExclusionViolation => Self::Constraint(db.message().to_string()),
                    _ if transient_code(&code) => Self::Unavailable(e),
                    _ => Self::Database(e),
                }
            }
            other => Self::Database(other),
        }
    }
}
