//! The lease reaper: a started phase holds a lease its worker renews with
//! heartbeats. When a lease runs out (the worker died without its task
//! being redelivered, or hangs without dying), the reaper fails that
//! execution as retryable through the applier, which queues the next
//! attempt; the old worker's late outcome carries a stale token and is fenced.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tributary_common::wire::{Outcome, ReportItem};

use crate::outcome::Applier;
use crate::store::{self, StoreError};

/// Most expired leases handled per tick.
const BATCH: i64 = 500;

/// Retries phases whose lease ran out.
pub struct LeaseReaper {
    pool: PgPool,
    applier: Applier,
    interval: Duration,
}

impl LeaseReaper {
    /// A reaper looking every `interval`.
    pub fn new(pool: PgPool, applier: Applier, interval: Duration) -> Self {
        Self {
            pool,
            applier,
            interval,
        }
    }

    /// Fails the executions whose lease ran out; returns how many. Several
    /// replicas may race: the applier applies the first, fences the rest.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let expired = store::expired_leases(&self.pool, BATCH).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let items: Vec<ReportItem> = expired
            .iter()
            .map(|&token| {
                tracing::warn!(%token, "phase lease expired: no heartbeat; retrying");
                ReportItem::Finished {
                    token,
                    outcome: Outcome::Fail {
                        error: "lease expired: no heartbeat from the worker running this phase"
                            .into(),
                        retryable: true,
                    },
                }
            })
            .collect();
        self.applier.apply(&items).await?;
        Ok(items.len())
    }

    /// Ticks every `interval` until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!("lease reaper: {e}");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
