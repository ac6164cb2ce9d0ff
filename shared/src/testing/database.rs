//! Throw-away PostgreSQL databases: one per test, migrated, dropped after.

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::database::connect_and_migrate;
use crate::settings::Settings;

/// A freshly created and migrated database with a unique name, dropped
/// (connections and all) when this value is dropped.
pub struct TestDatabase {
    /// A pool on the new database.
    pub pool: PgPool,
    /// Settings whose `DATABASE_URL` points at the new database.
    pub settings: Settings,
    name: String,
}

impl TestDatabase {
    /// Creates `switchyard_test_<uuid>` on the server of `DATABASE_URL`.
    pub async fn create() -> Self {
        let base = super::environment_settings();
        Self::create_with(base).await
    }

    /// Creates a fresh database on the server of `base`'s `DATABASE_URL`,
    /// keeping the rest of `base`.
    pub async fn create_with(base: Settings) -> Self {
        let name = format!("switchyard_test_{}", uuid::Uuid::now_v7().simple());
        let url = replace_database(base.expose_database_url(), &name);
        let mut settings = base;
        settings.database_url = url.into();
        let pool = connect_and_migrate(&settings, 4)
            .await
            .expect("create test database");
        Self {
            pool,
            settings,
            name,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Locks `tables` (each a plain table name) in ACCESS EXCLUSIVE mode in
    /// a transaction of its own, held until it is rolled back or dropped:
    /// every statement on them waits, as on a database that stopped
    /// answering.
    pub async fn lock_exclusively(
        &self,
        tables: &[&str],
    ) -> sqlx::Transaction<'static, sqlx::Postgres> {
        assert!(
            tables.iter().all(|table| {
                !table.is_empty() && table.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            }),
            "plain table names: {tables:?}"
        );
        let mut holder = self.pool.begin().await.expect("begin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.join(", ")
        )))
        .execute(&mut *holder)
        .await
        .expect("lock the tables");
        holder
    }
}

/// The database URL of `settings` (tests only: it may carry a password).
pub fn database_url(settings: &Settings) -> String {
    settings.database_url.expose_secret().to_owned()
}

/// `url` with its database path replaced by `database` (query kept).
fn replace_database(url: &str, database: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority_end = before_query
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| before_query[start..].find('/').map(|slash| start + slash))
        .unwrap_or(before_query.len());
    let mut replaced = format!("{}/{database}", &before_query[..authority_end]);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    replaced
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = replace_database(self.settings.database_url.expose_secret(), "postgres");
        let name = self.name.clone();
        let teardown = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // The pool's connections belong to the test's runtime, which is
            // blocked in this drop: leave them to FORCE, which ends them.
            runtime.block_on(async move {
                let Ok(options) = admin_url.parse::<PgConnectOptions>() else {
                    return;
                };
                let Ok(admin) = PgPool::connect_with(options).await else {
                    return;
                };
                let drop_sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop_sql))
                    .execute(&admin)
                    .await;
                admin.close().await;
            });
        });
        let _ = teardown.join();
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn the_database_path_is_replaced_and_the_query_kept() {
        assert_eq!(
            replace_database("postgres://u:p@h:5432/app?sslmode=require", "x"),
            "postgres://u:p@h:5432/x?sslmode=require"
        );
        assert_eq!(replace_database("postgres://h", "x"), "postgres://h/x");
    }
}
