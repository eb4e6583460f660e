//! The worker runtime: consumes the task queues of its kinds, runs one phase
//! per task, reports the outcome with a confirm, then acks the task.
//!
//! ```text
//!  {ns}.task.{kind} ──► decode ──► handler(phase, input, ctx) ──► outcome
//!        ▲ ack after the outcome is confirmed ◄── reporter ◄─────────┘
//! ```
//!
//! A malformed task is dead-lettered with a log line; an unknown kind fails
//! its job with a message naming the kind; a panicking handler fails its
//! phase (retryable). On shutdown the worker stops consuming, lets in-flight
//! phases finish within the grace period, and closes its connections, so
//! anything unfinished goes back to the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::select_all;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary_common::broker::{self, BrokerError};
use tributary_common::job::ENTRY_PHASE;
use tributary_common::topology::{DELIVERY_LIMIT, InvalidNamespace, Topology};
use tributary_common::wire::{
    self, Control, MAX_STOPS_PER_MESSAGE, Outcome, ReportItem, Task, Tasks,
};

use crate::context::Context;
use crate::job::{PhaseError, Step};
use crate::registry::Registry;
use crate::reporter::{self, Reporter};
use crate::stops::Stops;

/// How long a phase runs before its start is reported.
const STARTED_DELAY: Duration = Duration::from_millis(100);

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Queue and exchange prefix.
    pub namespace: String,
    /// The coordinator's HTTP API, for reading children results.
    pub coordinator_url: String,
    /// Phases run at once (also the prefetch).
    pub concurrency: usize,
    /// How long in-flight phases may run on after shutdown begins.
    pub grace: Duration,
    /// Fault injection: publish every report twice.
    pub duplicate_reports: bool,
    /// How often a running phase renews its lease; the lease asked for is
    /// three times this.
    pub heartbeat: Duration,
    /// How long a message may stay unacked before it is acked early (once
    /// its phases hold leases); keep it under RabbitMQ's consumer timeout.
    pub ack_after: Duration,
    /// Bearer token sent to the coordinator's API (the read token if the
    /// binary has one, else the API token); `Debug` shows `***`.
    pub api_token: Option<crate::settings::BearerToken>,
}

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Bad namespace.
    #[error(transparent)]
    Namespace(#[from] InvalidNamespace),
    /// No kinds registered.
    #[error("no job kinds registered")]
    NoKinds,
    /// The HTTP client for the coordinator's API could not be built.
    #[error("cannot build the HTTP client for the coordinator's API: {0}")]
    Http(String),
}

/// A worker serving the kinds of a [`Registry`].
pub struct Worker {
    registry: Registry,
    settings: WorkerSettings,
    topology: Topology,
    http: reqwest::Client,
    /// Sent in `Started` reports ([`crate::identity`]).
    identity: Arc<str>,
}

struct Links {
    publish: Connection,
    consume: Connection,
    channel: Channel,
    reporter: Reporter,
    tags: Vec<String>,
    /// Stop orders for this worker (its own queue on the control exchange).
    control: lapin::Consumer,
}

impl Worker {
    /// A worker; fails on a bad namespace or an empty registry.
    pub fn new(registry: Registry, settings: WorkerSettings) -> Result<Self, WorkerError> {
        if registry.kinds().is_empty() {
            return Err(WorkerError::NoKinds);
        }
        let topology = Topology::new(&settings.namespace)?;
        if let Some(token) = &settings.api_token {
            token.check().map_err(|e| {
                WorkerError::Http(format!(
                    "the worker's token (TRIBUTARY_READ_TOKEN or TRIBUTARY_API_TOKEN) is unusable (its value is not shown): {e}"
                ))
            })?;
        }
        // Phases read children results with it: it trusts TRIBUTARY_CA_FILE
        // and sends the bearer token, if any.
        let http = tributary_common::tls::http_client_with_token(
            settings.api_token.as_ref().map(|t| t.expose()),
        )
        .map_err(|e| WorkerError::Http(e.to_string()))?;
        Ok(Self {
            registry,
            settings,
            topology,
            http,
            identity: crate::identity::new().into(),
        })
    }

    /// Runs until `cancel` fires, reconnecting (with backoff) whenever the
    /// broker goes away, then drains in-flight phases within the grace period.
    pub async fn run(self, cancel: CancellationToken) {
        let http = self.http.clone();
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let tracker = TaskTracker::new();
        let phase_cancel = CancellationToken::new();
        let stops = Arc::new(Stops::default());
        let control_exchange = self.topology.control_exchange();
        let mut links: Option<Links> = None;
        'outer: while !cancel.is_cancelled() {
            let (mut stream, current) = match self.connect(&cancel).await {
                Ok(x) => x,
                Err(BrokerError::Cancelled) => break,
                Err(e) => {
                    tracing::warn!("worker cannot set up RabbitMQ: {e}; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            tracing::info!(worker = %self.identity, kinds = ?self.registry.kinds(), concurrency = self.settings.concurrency, "worker consuming");
            let reporter = current.reporter.clone();
            let mut control = current.control.clone();
            links = Some(current);
            let mut health = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break 'outer,
                    _ = health.tick() => {
                        if links.as_ref().is_some_and(|l| !l.publish.status().connected() || !l.consume.status().connected()) {
                            tracing::warn!("lost RabbitMQ; reconnecting");
                            break;
                        }
                    }
                    order = control.next() => match order {
                        Some(Ok(delivery)) => heed(&stops, delivery, &control_exchange).await,
                        Some(Err(e)) => {
                            tracing::warn!("control consumer failed: {e}; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!("control consumer stopped; reconnecting");
                            break;
                        }
                    },
                    next = stream.next() => match next {
                        Some(Ok(delivery)) => {
                            // Prefetch bounds the messages held; the permits
                            // bound the phases running at once.
                            let run = Execution {
                                registry: self.registry.clone(),
                                reporter: reporter.clone(),
                                http: http.clone(),
                                coordinator_url: self.settings.coordinator_url.clone(),
                                cancel: phase_cancel.clone(),
                                stops: stops.clone(),
                                permits: permits.clone(),
                                heartbeat: self.settings.heartbeat,
                                ack_after: self.settings.ack_after,
                                identity: self.identity.clone(),
                            };
                            tracker.spawn(run.execute(delivery));
                        }
                        Some(Err(e)) => {
                            tracing::warn!("consumer failed: {e}; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!("consumer stopped; reconnecting");
                            break;
                        }
                    }
                }
            }
            links = None;
        }
        // Shutdown: stop taking tasks, let in-flight phases finish, then
        // close (unacked tasks go back to the queue).
        if let Some(l) = &links {
            for tag in &l.tags {
                let _ = l
                    .channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
            }
        }
        tracker.close();
        let in_flight = self.settings.concurrency - permits.available_permits();
        tracing::info!(in_flight, grace = ?self.settings.grace, "stopping: letting in-flight phases finish");
        if tokio::time::timeout(self.settings.grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; unfinished phases go back to the queue");
            phase_cancel.cancel();
        }
        if let Some(l) = links {
            let _ = l.consume.close(200, "worker stopping".into()).await;
            let _ = l.publish.close(200, "worker stopping".into()).await;
        }
    }

    async fn connect(
        &self,
        cancel: &CancellationToken,
    ) -> Result<(futures_util::stream::SelectAll<lapin::Consumer>, Links), BrokerError> {
        let publish =
            broker::connect(&self.settings.amqp_url, "tributary-worker-publish", cancel).await?;
        let pub_channel = broker::confirm_channel(&publish).await?;
        broker::declare_base(&pub_channel, &self.topology).await?;
        let reporter = reporter::start(
            pub_channel,
            self.topology.clone(),
            self.settings.duplicate_reports,
            CancellationToken::new(),
        );
        let consume =
            broker::connect(&self.settings.amqp_url, "tributary-worker-consume", cancel).await?;
        let channel = consume.create_channel().await?;
        let prefetch = u16::try_from(self.settings.concurrency)
            .unwrap_or(u16::MAX)
            .max(1);
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await?;
        let mut consumers = Vec::new();
        let mut tags = Vec::new();
        for kind in self.registry.kinds() {
            broker::declare_task_queue(&channel, &self.topology, kind).await?;
            let consumer = channel
                .basic_consume(
                    self.topology.task_queue(kind).into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tags.push(consumer.tag().to_string());
            consumers.push(consumer);
        }
        let control_queue = broker::declare_control_queue(&channel, &self.topology).await?;
        let control = channel
            .basic_consume(
                control_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tags.push(control.tag().to_string());
        Ok((
            select_all(consumers),
            Links {
                publish,
                consume,
                channel,
                reporter,
                tags,
                control,
            },
        ))
    }
}

/// Takes one stop order: remembers its tokens and cancels their running
/// executions. An unreadable order is dead-lettered with a log line, and so
/// is one that did not come through the control exchange: anyone who may
/// publish reports (the default exchange) could address a worker's queue
/// by name, but only coordinators may publish on `{ns}.control`.
async fn heed(stops: &Stops, delivery: Delivery, exchange: &str) {
    if delivery.exchange.as_str() != exchange {
        tracing::error!(
            exchange = %delivery.exchange,
            "dead-lettering a stop order that did not come through the control exchange"
        );
        settle(delivery.reject(BasicRejectOptions { requeue: false })).await;
        return;
    }
    match wire::decode::<Control>(&delivery.data) {
        Ok(order) if order.stop.len() <= MAX_STOPS_PER_MESSAGE => {
            let running = stops.stop(&order.stop);
            tracing::debug!(tokens = order.stop.len(), running, "stop order received");
            if running > 0 {
                tracing::info!(
                    running,
                    "stopping executions whose job was cancelled, paused or moved on"
                );
            }
            settle(delivery.ack(BasicAckOptions::default())).await;
        }
        Ok(order) => {
            tracing::error!(
                tokens = order.stop.len(),
                "dead-lettering a stop order over {MAX_STOPS_PER_MESSAGE} tokens"
            );
            settle(delivery.reject(BasicRejectOptions { requeue: false })).await;
        }
        Err(e) => {
            tracing::error!(
                "dead-lettering a stop order that cannot be read ({} bytes): {e}",
                delivery.data.len()
            );
            settle(delivery.reject(BasicRejectOptions { requeue: false })).await;
        }
    }
}

/// Everything one task message's execution needs.
#[derive(Clone)]
struct Execution {
    registry: Registry,
    reporter: Reporter,
    http: reqwest::Client,
    coordinator_url: String,
    cancel: CancellationToken,
    stops: Arc<Stops>,
    permits: Arc<Semaphore>,
    heartbeat: Duration,
    ack_after: Duration,
    identity: Arc<str>,
}

/// Acks, nacks and rejects with a timeout: a channel that died while one
/// was sent must not leave this execution hanging (the health check then
/// reconnects, and the broker redelivers what was not settled).
async fn settle(op: impl std::future::Future<Output = lapin::Result<bool>>) {
    if let Err(e) = broker::settle(op).await {
        tracing::warn!("{e}");
    }
}

/// Acks a task message whose outcomes were all confirmed; otherwise returns
/// it to the queue (phases that did finish are fenced when they run again).
async fn finish_message(delivery: &Delivery, all_reported: bool) {
    if all_reported {
        settle(delivery.ack(BasicAckOptions::default())).await;
    } else {
        settle(delivery.nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        }))
        .await;
    }
}

/// Task states within one message.
const RUNNING: u8 = 0;
const LEASED: u8 = 1;
const DONE: u8 = 2;
const LOST: u8 = 3;

impl Execution {
    /// Runs every task of one message, then acks it once every outcome is
    /// confirmed (or returns it to the queue if one is not: the tasks that
    /// did finish are fenced when they run again).
    async fn execute(self, delivery: Delivery) {
        let bundle: Tasks = match wire::decode(&delivery.data) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(
                    "dead-lettering a task that cannot be read ({} bytes): {e}",
                    delivery.data.len()
                );
                settle(delivery.reject(BasicRejectOptions { requeue: false })).await;
                return;
            }
        };
        // A message the broker delivered again and again without an outcome
        // (workers died running it each time) would soon be dead-lettered,
        // and its jobs left waiting for nothing. Fail this execution of each
        // task instead (retryable: the coordinator queues the next attempt,
        // or fails the job once attempts are spent) and take the message.
        let deliveries = broker::delivery_count(&delivery);
        if deliveries + 2 >= DELIVERY_LIMIT {
            tracing::warn!(
                deliveries,
                tasks = bundle.tasks.len(),
                "task message redelivered too often; failing this attempt"
            );
            let mut reported = true;
            for task in &bundle.tasks {
                let error = format!(
                    "the task was delivered {} times without an outcome: a worker died running it each time",
                    deliveries + 1
                );
                let outcome = Outcome::Fail {
                    error,
                    retryable: true,
                };
                reported &= self
                    .reporter
                    .send_confirmed(ReportItem::Finished {
                        token: task.token,
                        outcome,
                    })
                    .await
                    .is_ok();
            }
            finish_message(&delivery, reported).await;
            return;
        }
        // One state per task: the message may be acked early once every
        // task has either finished or holds a lease (see `ack_after`).
        let states: Arc<Vec<AtomicU8>> = Arc::new(
            bundle
                .tasks
                .iter()
                .map(|_| AtomicU8::new(RUNNING))
                .collect(),
        );
        let runs = bundle.tasks.into_iter().enumerate().map(|(i, task)| {
            let this = self.clone();
            let states = states.clone();
            async move {
                let Ok(_permit) = this.permits.clone().acquire_owned().await else {
                    return false;
                };
                let ok = this.run_task(task, &states[i]).await;
                states[i].store(if ok { DONE } else { LOST }, Relaxed);
                ok
            }
        });
        let all = futures_util::future::join_all(runs);
        tokio::pin!(all);
        let ack_after = tokio::time::sleep(self.ack_after);
        tokio::pin!(ack_after);
        let mut acked = false;
        let results = loop {
            tokio::select! {
                results = &mut all => break results,
                _ = &mut ack_after, if !acked => {
                    // A long phase: RabbitMQ would close the channel after its
                    // consumer timeout (30 min by default) and redeliver. Once
                    // every task is leased or done, the coordinator's lease
                    // owns recovery, so the message can go.
                    if states.iter().all(|s| matches!(s.load(Relaxed), LEASED | DONE)) {
                        settle(delivery.ack(BasicAckOptions::default())).await;
                        acked = true;
                    } else {
                        ack_after.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        };
        if acked {
            return;
        }
        finish_message(&delivery, results.into_iter().all(|ok| ok)).await;
    }

    /// Runs one task; true once its outcome is confirmed by the broker.
    async fn run_task(self, task: Task, state: &AtomicU8) -> bool {
        let token = task.token;
        if self.stops.is_stopped(&token) {
            // Cancelled or held before it started: nothing waits for it.
            tracing::debug!(%token, "dropping a task its coordinator stopped");
            return true;
        }
        let stops = self.stops.clone();
        let outcome = match self.registry.get(&task.kind) {
            None => Outcome::Fail {
                error: format!(
                    "unknown job kind {:?}: this worker serves {:?}",
                    task.kind,
                    self.registry.kinds()
                ),
                retryable: false,
            },
            Some(job) => {
                let phase = if task.phase == ENTRY_PHASE {
                    job.start().to_owned()
                } else {
                    task.phase.clone()
                };
                // Report the start only if the phase is still running after
                // STARTED_DELAY (a fast phase's outcome implies its start,
                // which saves a report item and a database write per leaf);
                // from then on, renew the lease with heartbeats.
                let leased = Arc::new(tokio::sync::Notify::new());
                let liveness = {
                    let reporter = self.reporter.clone();
                    let phase = phase.clone();
                    let heartbeat = self.heartbeat;
                    let lease_ms = (heartbeat * 3).as_millis() as u64;
                    let leased = leased.clone();
                    let worker = Some(self.identity.to_string());
                    tokio::spawn(async move {
                        tokio::time::sleep(STARTED_DELAY).await;
                        if reporter
                            .send_confirmed(ReportItem::Started {
                                token,
                                phase,
                                lease_ms,
                                worker,
                            })
                            .await
                            .is_ok()
                        {
                            leased.notify_one();
                        }
                        loop {
                            tokio::time::sleep(heartbeat).await;
                            reporter.send(ReportItem::Heartbeat { token, lease_ms });
                        }
                    })
                };
                let input = task.input.to_vec();
                // Cancelled on shutdown (after the grace period) or by a stop
                // order for this execution.
                let cancel = self.cancel.child_token();
                let _running = stops.running(token, cancel.clone());
                let mut ctx = Context::new(
                    task,
                    self.reporter.clone(),
                    self.http,
                    self.coordinator_url,
                    cancel,
                );
                let timeout = job.timeout();
                let run =
                    tokio::spawn(async move {
                        let step =
                            match tokio::time::timeout(timeout, job.run(&phase, &input, &mut ctx))
                                .await
                            {
                                Ok(step) => step,
                                Err(_) => Err(PhaseError::retryable(format!(
                                    "phase timed out after {timeout:?}"
                                ))),
                            };
                        (step, ctx)
                    });
                let mut run = run;
                let ran = tokio::select! {
                    ran = &mut run => ran,
                    _ = leased.notified() => {
                        state.store(LEASED, Relaxed);
                        run.await
                    }
                };
                liveness.abort();
                match ran {
                    Ok((Ok(step), mut ctx)) => match step {
                        Step::Complete(output) => Outcome::Complete { output },
                        Step::Next(phase) => Outcome::Next { phase },
                        Step::Wait { then } => Outcome::Wait {
                            then,
                            children: ctx.into_spawned(),
                        },
                        Step::Spawn { children, then } => match ctx.spawn(children).await {
                            Ok(()) => Outcome::Wait {
                                then,
                                children: ctx.into_spawned(),
                            },
                            Err(e) => Outcome::Fail {
                                error: e.message().to_owned(),
                                retryable: e.is_retryable(),
                            },
                        },
                    },
                    Ok((Err(e), _)) => Outcome::Fail {
                        error: e.message().to_owned(),
                        retryable: e.is_retryable(),
                    },
                    Err(join) => Outcome::Fail {
                        error: format!("phase panicked: {join}"),
                        retryable: true,
                    },
                }
            }
        };
        if stops.is_stopped(&token) {
            // Its job was cancelled (or it was held, or moved on) while it
            // ran: the coordinator would fence this outcome.
            tracing::info!(%token, "execution stopped by a stop order; outcome discarded");
            return true;
        }
        if let Outcome::Fail { error, .. } = &outcome {
            // A handler's error may quote its input: log a bounded prefix.
            let error = tributary_common::limits::one_line(error, 512);
            tracing::warn!(%token, "phase failed: {error}");
        }
        match self
            .reporter
            .send_confirmed(ReportItem::Finished { token, outcome })
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%token, "outcome not delivered ({e}); the task goes back to the queue");
                false
            }
        }
    }
}
