//! Retention: deletes what has outlived its use, in small batches, so no
//! sweep holds locks or bloats a transaction. Today that is idempotency
//! keys older than [`store::KEY_TTL`].

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::{self, StoreError};

/// How the pruning runs.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Time between sweeps (default 60 s: a key lives 24 h, so a minute
    /// late is nothing).
    pub interval: Duration,
    /// Rows deleted per statement (default 1000).
    pub batch: i64,
    /// Statements per sweep at most (default 100), so one sweep after a
    /// long outage stays bounded; the next sweep goes on.
    pub max_batches: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            batch: 1000,
            max_batches: 100,
        }
    }
}

/// Prunes expired rows on an interval.
pub struct Retention {
    pool: PgPool,
    config: RetentionConfig,
}

impl Retention {
    /// A pruner with `config`.
    pub fn new(pool: PgPool, config: RetentionConfig) -> Self {
        Self { pool, config }
    }

    /// One sweep: batches until a batch comes back short or the sweep's
    /// cap is reached; returns the rows deleted.
    pub async fn tick(&self) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for _ in 0..self.config.max_batches {
            let n = store::prune_idempotency_keys(&self.pool, self.config.batch).await?;
            deleted += n;
            if n < self.config.batch as u64 {
                break;
            }
        }
        if deleted > 0 {
            tracing::debug!(deleted, "pruned expired idempotency keys");
        }
        Ok(deleted)
    }

    /// Sweeps every interval until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!("retention: {e}");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}
