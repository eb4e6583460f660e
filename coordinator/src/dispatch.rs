//! The dispatch relay: the only code that publishes tasks.
//!
//! The jobs table is the outbox. Each tick claims due rows
//! (`dispatch_pending`, `FOR UPDATE SKIP LOCKED`), publishes them all with
//! confirms in flight together, and clears their flag in the same
//! transaction. A crash before the commit leaves the rows pending, so they
//! are published again (at-least-once; the dispatch token fences the
//! duplicate); nothing committed is ever left unpublished.

use std::sync::Arc;
use std::time::Duration;

use lapin::{Channel, Connection};
use serde_bytes::ByteBuf;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tributary_common::broker::{self, BrokerError};
use tributary_common::job::{ChildCounts, DispatchToken};
use tributary_common::topology::Topology;
use tributary_common::wire::{self, Outcome, ReportItem, Task};

use crate::metrics::Metrics;
use crate::outcome::Applier;
use crate::store::{self, DueJob, StoreError};

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most rows claimed per tick (default 1000).
    pub batch: i64,
    /// How often to look for due rows when nothing wakes the relay (default
    /// 200 ms): delayed retries and other replicas' work.
    pub poll: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 1000,
            poll: Duration::from_millis(200),
        }
    }
}

/// What went wrong in a tick.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// RabbitMQ failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A task could not be encoded.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
}

/// Publishes committed dispatches.
pub struct Relay {
    pool: PgPool,
    topology: Topology,
    config: RelayConfig,
    applier: Applier,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

impl Relay {
    /// A relay over `pool`; `wake` makes it tick at once.
    pub fn new(
        pool: PgPool,
        topology: Topology,
        config: RelayConfig,
        applier: Applier,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            topology,
            config,
            applier,
            metrics,
            wake,
        }
    }

    /// Publishes one batch of due jobs; returns how many rows it handled.
    pub async fn tick(&self, channel: &Channel) -> Result<usize, RelayError> {
        let mut tx = store::begin(&self.pool).await?;
        let due = store::claim_due(&mut tx, self.config.batch).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut pending = Vec::with_capacity(due.len());
        for job in &due {
            let body = wire::encode(&task_of(job))?;
            pending.push(
                broker::publish(
                    channel,
                    &self.topology.tasks_exchange(),
                    &job.kind,
                    &body,
                    true,
                )
                .await?,
            );
        }
        let mut published = Vec::with_capacity(due.len());
        let mut unroutable = Vec::new();
        for (job, p) in due.iter().zip(pending) {
            match p.confirmed().await {
                Ok(()) => published.push(job.id),
                Err(BrokerError::Unroutable(_)) => unroutable.push(job),
                Err(e) => return Err(e.into()),
            }
        }
        store::mark_dispatched(&mut tx, &published).await?;
        store::commit(tx).await?;
        self.metrics.published(published.len() as u64);
        if !unroutable.is_empty() {
            // No queue is bound for the kind: no worker has ever served it in
            // this namespace. Fail the job through the applier (the one
            // writer of statuses) with a message naming the kind.
            let items: Vec<ReportItem> = unroutable
                .iter()
                .map(|job| {
                    tracing::warn!(job = %job.id, kind = %job.kind, "unknown job kind: no worker serves it");
                    ReportItem::Finished {
                        token: token_of(job),
                        outcome: Outcome::Fail {
                            error: format!(
                                "unknown job kind {:?}: no worker in namespace {:?} serves it",
                                job.kind,
                                self.topology.namespace()
                            ),
                            retryable: false,
                        },
                    }
                })
                .collect();
            self.applier.apply(&items).await?;
        }
        Ok(due.len())
    }

    /// Ticks until `cancel` fires: at once when woken or after a full batch,
    /// else every `poll`. Reconnects to the broker with backoff.
    pub async fn run(self, amqp_url: String, cancel: CancellationToken) {
        let mut conn: Option<(Connection, Channel)> = None;
        while !cancel.is_cancelled() {
            if conn
                .as_ref()
                .is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected())
            {
                match self.open(&amqp_url, &cancel).await {
                    Ok(c) => conn = Some(c),
                    Err(BrokerError::Cancelled) => break,
                    Err(e) => {
                        tracing::warn!("dispatch relay cannot set up RabbitMQ: {e}");
                        conn = None;
                        sleep_or_cancel(Duration::from_millis(500), &cancel).await;
                        continue;
                    }
                }
            }
            let Some((_, channel)) = conn.as_ref() else {
                continue;
            };
            match self.tick(channel).await {
                Ok(n) if n as i64 >= self.config.batch => continue,
                Ok(_) => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.config.poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("dispatch relay tick failed: {e}; retrying");
                    if matches!(e, RelayError::Broker(_)) {
                        conn = None;
                    }
                    sleep_or_cancel(Duration::from_millis(500), &cancel).await;
                }
            }
        }
    }

    async fn open(
        &self,
        amqp_url: &str,
        cancel: &CancellationToken,
    ) -> Result<(Connection, Channel), BrokerError> {
        let conn = broker::connect(amqp_url, "tributary-coordinator-relay", cancel).await?;
        let channel = broker::confirm_channel(&conn).await?;
        broker::declare_base(&channel, &self.topology).await?;
        Ok((conn, channel))
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

fn token_of(job: &DueJob) -> DispatchToken {
    DispatchToken {
        job_id: job.id,
        seq: job.phase_seq as u32,
        attempt: job.attempt as u32,
    }
}

fn task_of(job: &DueJob) -> Task {
    let children = job.fanout_seq.map(|_| ChildCounts {
        total: job.children_total as u64,
        completed: job.children_completed as u64,
        failed: job.children_failed as u64,
        cancelled: job.children_cancelled as u64,
    });
    Task {
        token: token_of(job),
        kind: job.kind.clone(),
        phase: job.phase.clone(),
        root_id: job.root_id,
        parent_id: job.parent_id,
        input: ByteBuf::from(job.input.clone()),
        state: job.state.clone().map(ByteBuf::from),
        children,
        fanout_seq: job.fanout_seq.map(|s| s as u32),
    }
}
