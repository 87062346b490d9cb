//! Fresh databases on the shared MariaDB and PostgreSQL servers for tests
//! that run a whole gateway on them (SQLite needs none: [`super::TestGateway`]
//! uses a file in its temp dir). A missing server skips the test, or fails
//! it with `CI=true` ([`super::require`]).
//!
//! Server URLs: `RTCGATE_TEST_MYSQL` (default `mysql://root@127.0.0.1:3306/test`)
//! and `RTCGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`).

use sqlx::{AssertSqlSafe, Connection};

/// Which database server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    MySql,
    Postgres,
}

impl Server {
    fn admin_url(self) -> String {
        let (var, default) = match self {
            Self::MySql => ("RTCGATE_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
            Self::Postgres => (
                "RTCGATE_TEST_POSTGRES",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
        };
        std::env::var(var).unwrap_or_else(|_| default.to_owned())
    }

    async fn exec(self, admin: &str, sql: String) -> Result<(), sqlx::Error> {
        match self {
            Self::MySql => {
                let mut c = sqlx::MySqlConnection::connect(admin).await?;
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await?;
                c.close().await
            }
            Self::Postgres => {
                let mut c = sqlx::PgConnection::connect(admin).await?;
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await?;
                c.close().await
            }
        }
    }
}

/// A database `rtcgate_t_<random>` created for one test and dropped when
/// this value goes (also when the test fails).
pub struct ServerDb {
    server: Server,
    admin: String,
    name: String,
    /// The URL for `database.url`.
    pub url: String,
}

impl ServerDb {
    /// Creates the database; `None` (test skipped) when the server is not
    /// there, a panic instead under `CI=true`.
    pub async fn create(server: Server) -> Option<Self> {
        let admin = server.admin_url();
        let name = format!("rtcgate_t_{:016x}", rand::random::<u64>());
        let made = server.exec(&admin, format!("CREATE DATABASE {name}")).await;
        if let Err(e) = &made {
            eprintln!("{server:?} at {admin}: {e}");
        }
        if !super::require(&format!("{server:?} at {admin}"), made.is_ok()) {
            return None;
        }
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Self {
            server,
            admin,
            name,
            url,
        })
    }
}

impl Drop for ServerDb {
    // The test's runtime may be unwinding: drop the database from a thread
    // with its own runtime.
    fn drop(&mut self) {
        let (server, admin) = (self.server, self.admin.clone());
        let sql = match server {
            Server::MySql => format!("DROP DATABASE IF EXISTS {}", self.name),
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        };
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(server.exec(&admin, sql));
            }
        })
        .join();
    }
}
