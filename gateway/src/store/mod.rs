//! Persistent storage: subscribers, location (registrations), cluster nodes and call records on
//! SQLite (embedded default), MariaDB/MySQL or PostgreSQL, chosen by URL.
//!
//! The three backends are held as concrete pools in an enum (no `Any` driver): each
//! operation carries its SQL per dialect and binds every value as a parameter.
//! Migrations are embedded per dialect and applied by [`Store::connect`].

mod admin;
mod batch;
mod breaker;
mod calls;
mod error;
mod location;
mod model;
mod nodes;
mod service;
mod subscribers;

pub use admin::{LocationRow, UserRow, location_show, user_add, user_list, user_passwd, user_rm};
use breaker::Admission;
pub use breaker::BreakerConfig;
pub use error::StoreError;
pub use model::{
    Binding, BindingChange, CallRecord, CallRecordUpdate, NewCallRecord, Subscriber, binding_key,
};
pub use nodes::NodeRow;
pub use service::LocationService;

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Runs `$body` with `$pool` bound to the concrete pool and `$sql` to that dialect's SQL.
macro_rules! with_sql {
    ($store:expr, [$lite:expr, $my:expr, $pg:expr], |$pool:ident, $sql:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => {
                let $sql: &'static str = $lite;
                $body
            }
            $crate::store::Backend::MySql($pool) => {
                let $sql: &'static str = $my;
                $body
            }
            $crate::store::Backend::Postgres($pool) => {
                let $sql: &'static str = $pg;
                $body
            }
        }
    };
}
pub(crate) use with_sql;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static MYSQL_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// SQLite (embedded).
    Sqlite,
    /// MariaDB or MySQL.
    MySql,
    /// PostgreSQL.
    Postgres,
}

impl BackendKind {
    /// The backend a URL selects (`sqlite:`, `mysql:`/`mariadb:`, `postgres:`/`postgresql:`).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "mysql" | "mariadb" => Ok(Self::MySql),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(StoreError::UnsupportedUrl),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
    Postgres(PgPool),
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Database URL, e.g. `sqlite://rtcgate.db?mode=rwc`,
    /// `mysql://root@127.0.0.1:3306/rtcgate`, `postgres://postgres@127.0.0.1/rtcgate`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a query waits for a connection before the store reports itself unavailable.
    pub acquire_timeout: Duration,
    /// SQLite busy timeout (time a writer waits for the lock).
    pub sqlite_busy_timeout: Duration,
    /// When to fail fast during an outage.
    pub breaker: BreakerConfig,
}

impl StoreOptions {
    /// Defaults for `url`: 10 connections, 3 s acquire timeout, 5 s SQLite busy timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            sqlite_busy_timeout: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Async access to the rtcgate database. Cheap to clone (pools and the
/// circuit breaker are shared).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) backend: Backend,
    breaker: std::sync::Arc<breaker::Guard>,
}

impl Store {
    /// Connects with default options and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(&StoreOptions::new(url)).await
    }

    /// Connects and applies the embedded migrations for the URL's dialect.
    pub async fn connect_with(opts: &StoreOptions) -> Result<Self, StoreError> {
        let backend = match BackendKind::from_url(&opts.url)? {
            BackendKind::Sqlite => {
                let conn = SqliteConnectOptions::from_str(&opts.url)?
                    .journal_mode(SqliteJournalMode::Wal)
                    // WAL + NORMAL: no fsync per commit (only at checkpoints); a
                    // power loss may lose the last registrations, never corrupt.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(opts.sqlite_busy_timeout)
                    .foreign_keys(true);
                // An in-memory database exists once per connection: keep exactly one.
                let memory = opts.url.contains(":memory:") || opts.url.contains("mode=memory");
                let pool = SqlitePoolOptions::new()
                    .max_connections(if memory { 1 } else { opts.max_connections })
                    .min_connections(if memory { 1 } else { 0 })
                    .idle_timeout(if memory {
                        None
                    } else {
                        Some(Duration::from_secs(600))
                    })
                    .max_lifetime(if memory {
                        None
                    } else {
                        Some(Duration::from_secs(1800))
                    })
                    .acquire_timeout(opts.acquire_timeout)
                    .connect_with(conn)
                    .await?;
                SQLITE_MIGRATOR.run(&pool).await?;
                Backend::Sqlite(pool)
            }
            BackendKind::MySql => {
                let pool = MySqlPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect(&opts.url)
                    .await?;
                MYSQL_MIGRATOR.run(&pool).await?;
                Backend::MySql(pool)
            }
            BackendKind::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect(&opts.url)
                    .await?;
                POSTGRES_MIGRATOR.run(&pool).await?;
                Backend::Postgres(pool)
            }
        };
        tracing::info!(backend = ?Self::kind_of(&backend), "store connected, migrations applied");
        Ok(Self {
            backend,
            breaker: std::sync::Arc::new(breaker::Guard::new(opts.breaker)),
        })
    }

    /// Runs `op` unless the circuit breaker says the database is down
    /// ([`StoreError::CircuitOpen`] at once), and tells the breaker how it went.
    /// Used on the paths every REGISTER takes (subscriber lookup, location
    /// writes), so an outage costs one acquire timeout, not one per request.
    pub(crate) async fn guarded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let probe = match self.breaker.admit() {
            Admission::Refuse(retry_in) => return Err(StoreError::CircuitOpen { retry_in }),
            Admission::Probe => true,
            Admission::Pass => false,
        };
        let r = op.await;
        let down = matches!(&r, Err(e) if e.is_unavailable());
        if probe && !down {
            tracing::info!("database reachable again");
        } else if down && !self.breaker.is_open() {
            tracing::warn!("database unavailable: failing requests fast until it answers");
        }
        self.breaker.record(down);
        r
    }

    fn kind_of(b: &Backend) -> BackendKind {
        match b {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::MySql(_) => BackendKind::MySql,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The engine in use.
    pub fn kind(&self) -> BackendKind {
        Self::kind_of(&self.backend)
    }

    /// Closes all pooled connections (waits for checked-out ones).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(p) => p.close().await,
            Backend::MySql(p) => p.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_sql!(self, ["SELECT 1", "SELECT 1", "SELECT 1"], |pool, sql| {
            sqlx::query(sql).execute(pool).await?;
        });
        Ok(())
    }
}
