//! PostgreSQL: connect (TLS per `sslmode`), create the database if missing,
//! and run the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::settings::Settings;
use crate::tls::install_crypto_provider;

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The groups' functions, each file's current source (`db/functions/`),
/// applied after the migrations by [`apply_function_sources`].
pub const FUNCTION_SOURCES: [(&str, &str); 4] = [
    ("orders", include_str!("../../db/functions/orders.sql")),
    (
        "inventory",
        include_str!("../../db/functions/inventory.sql"),
    ),
    ("sales", include_str!("../../db/functions/sales.sql")),
    ("reported", include_str!("../../db/functions/reported.sql")),
];

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// `DATABASE_URL` could not be parsed (the URL itself is not repeated).
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(#[source] sqlx::Error),
    /// The server could not be reached or refused us.
    #[error(
        "cannot reach PostgreSQL at {address}: {error}. Start it, or set DATABASE_URL to a \
         server that runs (the main job and the tests start a private one when nothing answers \
         on the stock port and the server package is installed: see the README)"
    )]
    Unreachable {
        /// The host and port tried (never the user or password).
        address: String,
        /// What the client said.
        #[source]
        error: sqlx::Error,
    },
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A function's source (`db/functions/NAME.sql`) could not be applied.
    #[error("applying db/functions/{name}.sql failed: {error}")]
    FunctionSource {
        /// The file's name, without `.sql`.
        name: &'static str,
        /// What PostgreSQL said.
        #[source]
        error: sqlx::Error,
    },
}

/// Connects a pool of at most `max_connections`, creating the database first
/// when it does not exist, and applies pending migrations.
pub async fn connect_and_migrate(
    settings: &Settings,
    max_connections: u32,
) -> Result<PgPool, DatabaseError> {
    let pool = connect(settings, max_connections, true).await?;
    MIGRATOR.run(&pool).await?;
    apply_function_sources(&pool).await?;
    Ok(pool)
}

/// Applies each of [`FUNCTION_SOURCES`] whose text differs from the source
/// the database recorded, unless a build with newer migrations recorded
/// it; in one transaction, under an advisory lock, so processes starting
/// together apply each change once. Returns the names applied.
pub async fn apply_function_sources(pool: &PgPool) -> Result<Vec<&'static str>, DatabaseError> {
    /// The advisory lock serialising this across processes ("fnsource").
    const LOCK: i64 = 0x666e_736f_7572_6365;
    let newest = MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
    let failed = |name| move |error| DatabaseError::FunctionSource { name, error };
    let mut transaction = pool.begin().await.map_err(failed("(all)"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK)
        .execute(&mut *transaction)
        .await
        .map_err(failed("(all)"))?;
    let recorded: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT name, source, applied_by FROM switchyard_function_sources")
            .fetch_all(&mut *transaction)
            .await
            .map_err(failed("(all)"))?;
    let mut applied = Vec::new();
    for (name, source) in FUNCTION_SOURCES {
        let current = recorded.iter().find(|(recorded, ..)| recorded == name);
        let stale = match current {
            None => true,
            Some((_, text, applied_by)) => text != source && *applied_by <= newest,
        };
        if !stale {
            continue;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(source))
            .execute(&mut *transaction)
            .await
            .map_err(failed(name))?;
        sqlx::query(
            "INSERT INTO switchyard_function_sources (name, source, applied_by) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET source = $2, applied_by = $3, applied_at = now()",
        )
        .bind(name)
        .bind(source)
        .bind(newest)
        .execute(&mut *transaction)
        .await
        .map_err(failed(name))?;
        applied.push(name);
    }
    transaction.commit().await.map_err(failed("(all)"))?;
    if !applied.is_empty() {
        tracing::info!(functions = ?applied, "applied the groups' function sources (db/functions)");
    }
    Ok(applied)
}

/// Connects a pool; with `create_if_missing`, creates the database first.
pub async fn connect(
    settings: &Settings,
    max_connections: u32,
    create_if_missing: bool,
) -> Result<PgPool, DatabaseError> {
    install_crypto_provider();
    let url = settings.expose_database_url();
    let options = PgConnectOptions::from_str(url).map_err(DatabaseError::BadUrl)?;
    let address = format!("{}:{}", options.get_host(), options.get_port());
    let unreachable = |error| DatabaseError::Unreachable {
        address: address.clone(),
        error,
    };
    if create_if_missing && !Postgres::database_exists(url).await.map_err(unreachable)? {
        tracing::info!(
            database = options.get_database().unwrap_or_default(),
            "creating database"
        );
        Postgres::create_database(url).await.map_err(unreachable)?;
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        // sqlx already pings every connection when it is released and drops
        // a broken one; a second ping on acquire would cost every batch a
        // round trip. A connection that dies while idle fails its next
        // statement, which the workers treat as an outage (probe, resume).
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|connection, _| Box::pin(check_client_connection(connection)))
        .connect_with(options)
        .await
        .map_err(unreachable)
}

/// Makes a backend running one of our statements check every second that
/// we are still connected (`client_connection_check_interval`, PostgreSQL
/// 14+). A caller that gives up on a statement (a worker's batch deadline,
/// a request's timeout) drops the connection; without the check its
/// backend would go on waiting — for a lock, say, holding the advisory
/// locks of the aggregates it took — until it next writes to the closed
/// socket, and every try again would leave one more such backend behind.
/// A server older than 14 does not know the setting (SQLSTATE 42704) and
/// goes without it.
async fn check_client_connection(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    match sqlx::query("SET client_connection_check_interval = '1s'")
        .execute(connection)
        .await
    {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42704") => Ok(()),
        Err(error) => Err(error),
    }
}

/// `work`, or a `TimedOut` I/O error once `patience` has passed: bounds a
/// statement that a database which stopped answering (a network cut, a
/// hung server) would otherwise hold until TCP gives up. The caller drops
/// the connection the statement was on. `work` may fail with any error a
/// database error converts into.
pub async fn within<T, E: From<sqlx::Error>>(
    patience: Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(patience, work)
        .await
        .unwrap_or_else(|_| {
            Err(E::from(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the database did not answer within {} ms",
                    patience.as_millis()
                ),
            ))))
        })
}

/// `work` on a connection taken from `pool`, given up past `patience` (see
/// [`within`]). A connection whose work failed or was given up on is
/// closed, never given back: it may be mid-statement on a database that
/// stopped answering, and the pool's check of a returned connection (a
/// ping) would wait on it, holding its slot (5 s at most, by the patch in
/// `third_party/sqlx-core`; for good in stock sqlx 0.9).
pub async fn on_connection<T, E: From<sqlx::Error>>(
    pool: &PgPool,
    patience: Duration,
    work: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, E>,
) -> Result<T, E> {
    let mut connection = pool.acquire().await?;
    let result = within(patience, work(&mut connection)).await;
    if result.is_err() {
        connection.close_on_drop();
    }
    result
}

/// Longest a stopping process waits for its pool's connections to be given
/// back and closed. A connection left in a statement the database no longer
/// answers is never given back; it goes with the process.
pub const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// Closes `pool`, waiting at most [`CLOSE_PATIENCE`]: a stop never hangs on
/// a database that stopped answering.
pub async fn close(pool: &PgPool) {
    if tokio::time::timeout(CLOSE_PATIENCE, pool.close())
        .await
        .is_err()
    {
        tracing::warn!(
            "the database did not let every connection close within {} s; leaving them",
            CLOSE_PATIENCE.as_secs()
        );
    }
}

/// Whether `pool` answers `SELECT 1` within `patience` (readiness probes).
pub async fn responds(pool: &PgPool, patience: Duration) -> bool {
    tokio::time::timeout(patience, sqlx::query("SELECT 1").execute(pool))
        .await
        .is_ok_and(|result| result.is_ok())
}

/// Rows removed per statement by [`delete_in_chunks`]: a large purge never
/// holds many row locks, or one long transaction, at once.
pub const DELETE_CHUNK: i64 = 10_000;

/// Calls `delete` (which removes at most the given number of rows and says
/// how many it removed) until a call removes fewer; returns the total.
pub async fn delete_in_chunks<F, Fut>(mut delete: F) -> Result<u64, sqlx::Error>
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let removed = delete(DELETE_CHUNK).await?;
        total += removed;
        if removed < DELETE_CHUNK as u64 {
            return Ok(total);
        }
    }
}
