//! All SQL lives here. Everything else calls these functions, re-exported
//! at `store::` whichever file holds them. The files are split by who owns
//! the transaction:
//!
//! - `mod.rs`: errors, round-trip counting, connecting (creating the
//!   database) and migrating under sqlx's advisory lock, `ping`.
//! - `batch.rs`: the outcome applier's batch: lock rows, record spawn
//!   batches, insert children, write changed jobs, history, logs, tree
//!   counts and counters, all in the applier's transaction.
//! - `control.rs`: subtree walks (cancel, pause, resume) and the level of
//!   children each step reads.
//! - `events.rs`: the event log behind the SSE streams (written with the
//!   tree counts, read by tree and id, pruned by age).
//! - `outbox.rs`: the dispatch queue: a submitted root, the relay's claim
//!   and mark, and the lease reaper's scan.
//! - `views.rs`: read-only queries for the HTTP API.
//! - `waiting.rs`: the read-only queries that explain a job that is not
//!   progressing (`GET /v1/jobs/{id}/waiting`).
//! - `list.rs`: pages of jobs for `GET /v1/jobs` (roots, a tree, a
//!   parent's children), each by its own index.
//! - `fleet.rs`: bounded read-only views of the fleet for `GET /v1/fleet`
//!   (running workers, outbox backlog, active kinds, jobs ended a minute).
//! - `idempotency.rs`: idempotency keys of submissions (the key and the
//!   job in one transaction) and their pruning.
//!
//! Bulk statements bind one array per column and `UNNEST` them, so a batch
//! of hundreds of outcomes or thousands of children is one round trip.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tributary_common::config::mask_url;

mod batch;
mod control;
mod events;
mod fleet;
mod idempotency;
mod list;
mod outbox;
mod views;
mod waiting;

pub use batch::*;
pub use control::*;
pub use events::*;
pub use fleet::*;
pub use idempotency::*;
pub use list::*;
pub use outbox::*;
pub use views::*;
pub use waiting::*;

/// What went wrong talking to Postgres.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed.
    #[error("Postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL could not be parsed.
    #[error("invalid database URL {url}: {reason}")]
    BadUrl {
        /// The URL, password masked.
        url: String,
        /// Why.
        reason: String,
    },
    /// Stopped while waiting for the database.
    #[error("stopped before Postgres could be reached")]
    Cancelled,
}

impl StoreError {
    /// Deadlocks and serialization failures: the transaction may simply be
    /// run again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }

    /// Whether the data itself was refused, so running the same statement
    /// again can never succeed: a data exception (class 22, e.g. a NUL byte
    /// in text), an integrity violation (23), a program limit (54), or a
    /// value that could not be encoded. Anything else (connection trouble,
    /// resources, a shutdown, a dropped database, a bad login, a schema
    /// that does not match after a botched deploy) is not the report's
    /// fault: the batch waits and is retried, never dead-lettered.
    pub fn is_poison(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => e.code().is_some_and(|code| {
                ["22", "23", "54"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
            Self::Db(sqlx::Error::Encode(_)) => true,
            _ => false,
        }
    }

    /// The SQLSTATE of a database error, for log lines and metrics (never
    /// the server's message, which may quote the refused data).
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Self::Db(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }
}

/// A `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Round trips to Postgres made by this process (statements, begins and
/// commits): the benchmark divides it by the children of a run.
static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

fn trip() {
    ROUND_TRIPS.fetch_add(1, Relaxed);
}

/// Round trips to Postgres so far.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(Relaxed)
}

/// Begins a transaction.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    trip();
    Ok(pool.begin().await?)
}

/// Commits a transaction.
pub async fn commit(tx: Transaction<'_, Postgres>) -> Result<()> {
    trip();
    Ok(tx.commit().await?)
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects (creating the database if it does not exist), retrying with
/// backoff and logging each failure in one line until `cancel` fires, then
/// runs the migrations under sqlx's advisory lock, so replicas starting
/// together migrate once.
pub async fn connect(
    url: &str,
    max_connections: u32,
    cancel: &CancellationToken,
) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
        url: mask_url(url),
        reason: e.to_string(),
    })?;
    let mut delay = Duration::from_millis(200);
    let mut tries = 0u32;
    loop {
        // A stop (SIGTERM) is answered at once, even mid-attempt.
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return Err(StoreError::Cancelled),
            attempt = try_connect(&options, max_connections) => attempt,
        };
        match attempt {
            Ok(pool) => {
                if tries > 0 {
                    tracing::info!(url = %mask_url(url), "connected to Postgres after {tries} failed tries");
                }
                match MIGRATOR.run(&pool).await {
                    Ok(()) => return Ok(pool),
                    // Lost the database mid-migration: the migrations are
                    // transactional and locked, so running them again is safe.
                    Err(sqlx::migrate::MigrateError::Execute(e))
                        if !matches!(e, sqlx::Error::Database(_)) =>
                    {
                        tries += 1;
                        tracing::warn!(
                            "lost Postgres while migrating ({e}); retry {tries} in {delay:?}"
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => {
                tries += 1;
                // Only a refused or lost connection suggests a server that
                // is down; a TLS or login failure says what it is itself.
                let hint = match &e {
                    StoreError::Db(sqlx::Error::Io(_)) => ": is it running?",
                    _ => "",
                };
                tracing::warn!(
                    "cannot reach Postgres at {}: {e}{hint}; retry {tries} in {delay:?}",
                    mask_url(url)
                );
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(StoreError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn try_connect(options: &PgConnectOptions, max_connections: u32) -> Result<PgPool> {
    let pool_options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10));
    match pool_options.clone().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            // The database does not exist yet: create it from the maintenance database.
            let name = options.get_database().unwrap_or("tributary").to_owned();
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone().database("postgres"))
                .await?;
            let sql = format!("create database \"{}\"", name.replace('"', "\"\""));
            match admin.execute(sqlx::AssertSqlSafe(sql)).await {
                Ok(_) => tracing::info!(database = %name, "created database"),
                // Another replica created it first.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
                Err(e) => return Err(e.into()),
            }
            admin.close().await;
            Ok(pool_options.connect_with(options.clone()).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Drops the database `url` names (for the benchmark's fresh runs).
pub async fn drop_database(url: &str) -> Result<()> {
    let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
        url: mask_url(url),
        reason: e.to_string(),
    })?;
    let name = options.get_database().unwrap_or("tributary").to_owned();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.database("postgres"))
        .await?;
    let sql = format!(
        "drop database if exists \"{}\" with (force)",
        name.replace('"', "\"\"")
    );
    admin.execute(sqlx::AssertSqlSafe(sql)).await?;
    admin.close().await;
    Ok(())
}

/// One round trip to the database: readiness.
pub async fn ping(pool: &PgPool) -> Result<()> {
    trip();
    sqlx::query("select 1").execute(pool).await?;
    Ok(())
}
