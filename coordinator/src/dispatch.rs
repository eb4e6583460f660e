//! The dispatch relay: the only code that publishes tasks.
//!
//! The jobs table is the outbox. Each tick claims due rows
//! (`dispatch_pending`, `FOR UPDATE SKIP LOCKED`), publishes them all with
//! confirms in flight together, and clears their flag in the same
//! transaction. A crash before the commit leaves the rows pending, so they
//! are published again (at-least-once; the dispatch token fences the
//! duplicate); nothing committed is ever left unpublished.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::{Channel, Connection};
use serde_bytes::ByteBuf;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tributary_common::broker::{self, BrokerError};
use tributary_common::job::{ChildCounts, DispatchToken};
use tributary_common::topology::Topology;
use tributary_common::wire::{self, Control, Outcome, ReportItem, Task, Tasks};

use crate::metrics::Metrics;
use crate::outcome::Applier;
use crate::store::{self, DueJob, StoreError};

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most rows claimed per tick (default 1000).
    pub batch: i64,
    /// Most tasks bundled into one message (default 32; 1 disables bundling).
    pub max_bundle: usize,
    /// How often to look for due rows when nothing wakes the relay (default
    /// 200 ms): delayed retries and other replicas' work.
    pub poll: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 1000,
            max_bundle: 32,
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
    stops: Option<mpsc::UnboundedReceiver<Vec<DispatchToken>>>,
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
            stops: None,
        }
    }

    /// Also publishes the stop orders that arrive on `stops` to every
    /// worker (the control exchange).
    pub fn with_stops(mut self, stops: mpsc::UnboundedReceiver<Vec<DispatchToken>>) -> Self {
        self.stops = Some(stops);
        self
    }

    /// Publishes one stop order to every worker. Not retried: a worker that
    /// misses it learns from the fence on its next report.
    async fn publish_stops(
        &self,
        channel: &Channel,
        stop: Vec<DispatchToken>,
    ) -> Result<(), RelayError> {
        let body = wire::encode(&Control { stop })?;
        broker::publish(channel, &self.topology.control_exchange(), "", &body, false)
            .await?
            .confirmed()
            .await?;
        Ok(())
    }

    /// Publishes one batch of due jobs; returns how many rows it handled.
    pub async fn tick(&self, channel: &Channel) -> Result<usize, RelayError> {
        let mut tx = store::begin(&self.pool).await?;
        let due = store::claim_due(&mut tx, self.config.batch).await?;
        if due.is_empty() {
            return Ok(0);
        }
        // Bundle tasks of one kind when many are due, so a burst of trivial
        // children costs the broker a message per bundle, not per child;
        // a trickle still goes one task per message (no head-of-line wait).
        // Every publish draws a fresh nonce: only the worker that receives
        // the task can answer for it. It is stored with the dispatch below,
        // so a publish whose transaction never commits leaves no valid nonce.
        let due: Vec<(DueJob, u64)> = due
            .into_iter()
            .map(|job| (job, DispatchToken::new_nonce()))
            .collect();
        let mut by_kind: BTreeMap<&str, Vec<&(DueJob, u64)>> = BTreeMap::new();
        for entry in &due {
            by_kind
                .entry(entry.0.kind.as_str())
                .or_default()
                .push(entry);
        }
        let mut pending = Vec::new();
        for (kind, jobs) in by_kind {
            let size = bundle_size(jobs.len(), self.config.max_bundle);
            for bundle in bundles(&jobs, size) {
                let body = wire::encode(&Tasks {
                    tasks: bundle.iter().map(|(j, nonce)| task_of(j, *nonce)).collect(),
                })?;
                let p =
                    broker::publish(channel, &self.topology.tasks_exchange(), kind, &body, true)
                        .await?;
                pending.push((bundle, p));
            }
        }
        let mut published = 0;
        let mut unroutable = Vec::new();
        let (mut ids, mut nonces) = (Vec::with_capacity(due.len()), Vec::with_capacity(due.len()));
        for (bundle, p) in pending {
            match p.confirmed().await {
                Ok(()) => published += bundle.len(),
                Err(BrokerError::Unroutable(_)) => unroutable.extend(bundle.iter().copied()),
                Err(e) => return Err(e.into()),
            }
            // An unroutable task is marked too: its job is failed below with
            // the token (and nonce) stored here.
            ids.extend(bundle.iter().map(|(j, _)| j.id));
            nonces.extend(bundle.iter().map(|(_, nonce)| *nonce as i64));
        }
        store::mark_dispatched(&mut tx, &ids, &nonces).await?;
        store::commit(tx).await?;
        self.metrics.published(published as u64);
        if !unroutable.is_empty() {
            // No queue is bound for the kind: no worker has ever served it in
            // this namespace. Fail the job through the applier (the one
            // writer of statuses) with a message naming the kind.
            let items: Vec<ReportItem> = unroutable
                .iter()
                .map(|(job, nonce)| {
                    tracing::warn!(job = %job.id, kind = %job.kind, "unknown job kind: no worker serves it");
                    ReportItem::Finished {
                        token: token_of(job, *nonce),
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
    pub async fn run(mut self, amqp_url: String, cancel: CancellationToken) {
        let mut stops = self.stops.take();
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
            while let Some(stop) = stops.as_mut().and_then(|rx| rx.try_recv().ok()) {
                if let Err(e) = self.publish_stops(channel, stop).await {
                    tracing::warn!("cannot publish a stop order: {e}");
                }
            }
            match self.tick(channel).await {
                Ok(n) if n as i64 >= self.config.batch => continue,
                Ok(_) => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.wake.notified() => {}
                        Some(stop) = next_stop(&mut stops) => {
                            if let Err(e) = self.publish_stops(channel, stop).await {
                                tracing::warn!("cannot publish a stop order: {e}");
                            }
                        }
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

/// The next stop order, or never when there is no receiver.
async fn next_stop(
    stops: &mut Option<mpsc::UnboundedReceiver<Vec<DispatchToken>>>,
) -> Option<Vec<DispatchToken>> {
    match stops {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps for `d`, or less if `cancel` fires.
pub(crate) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Tasks per message for `due` tasks of one kind: one while few are due,
/// growing with the backlog up to `max`.
fn bundle_size(due: usize, max: usize) -> usize {
    (due / 64).clamp(1, max.max(1))
}

/// Most input bytes in one bundle: with a task's own input capped well
/// below the 16 MiB wire limit, a bundle stays under it too.
const BUNDLE_BYTES: usize = 4 * 1024 * 1024;

/// Splits `jobs` into bundles of at most `size` tasks and about
/// [`BUNDLE_BYTES`] of inputs and checkpoints (one task always fits).
fn bundles<'a>(jobs: &[&'a (DueJob, u64)], size: usize) -> Vec<Vec<&'a (DueJob, u64)>> {
    let mut out: Vec<Vec<&(DueJob, u64)>> = Vec::new();
    let mut bytes = 0;
    for entry in jobs {
        let job = &entry.0;
        let weight = job.input.len() + job.state.as_ref().map_or(0, Vec::len);
        match out.last_mut() {
            Some(last) if last.len() < size && bytes + weight <= BUNDLE_BYTES => {
                last.push(entry);
                bytes += weight;
            }
            _ => {
                out.push(vec![entry]);
                bytes = weight;
            }
        }
    }
    out
}

fn token_of(job: &DueJob, nonce: u64) -> DispatchToken {
    DispatchToken {
        job_id: job.id,
        seq: job.phase_seq as u32,
        attempt: job.attempt as u32,
        nonce,
    }
}

fn task_of(job: &DueJob, nonce: u64) -> Task {
    let children = job.fanout_seq.map(|_| ChildCounts {
        total: job.children_total as u64,
        completed: job.children_completed as u64,
        failed: job.children_failed as u64,
        cancelled: job.children_cancelled as u64,
    });
    Task {
        token: token_of(job, nonce),
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

#[cfg(test)]
mod tests {
    use super::bundle_size;

    #[test]
    fn bundles_grow_with_the_backlog() {
        assert_eq!(bundle_size(1, 32), 1);
        assert_eq!(bundle_size(100, 32), 1);
        assert_eq!(bundle_size(640, 32), 10);
        assert_eq!(bundle_size(100_000, 32), 32);
        assert_eq!(bundle_size(100_000, 1), 1);
        assert_eq!(bundle_size(100_000, 0), 1);
    }
}
