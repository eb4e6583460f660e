//! `GET /v1/fleet`: the fleet at a glance, for the dashboard's fleet page
//! and for operators: workers running phases now, task queues of the kinds
//! with work about, the outbox's backlog, dead letters, the fenced-report
//! count, and jobs ended per minute over the last 15 minutes.
//!
//! Every part is a bounded read ([`crate::store::FLEET_SCAN_CAP`] rows of
//! a partial index at most, or the events of the last 15 minutes), and the
//! broker's answers come within [`crate::queues::PROBE_TIMEOUT`] each
//! (`unknown` past it), so the route stays cheap on a busy system.
//!
//! Workers are known by the leases of the phases they run (`Started`
//! reports name the worker): an idle worker does not show here, but its
//! kinds' queues count it among their consumers.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::answer::ErrorBody;
use super::error::ApiError;
use crate::queues::QueueState;
use crate::store;

/// Minutes of throughput the answer covers.
pub const THROUGHPUT_MINUTES: i32 = 15;

/// `GET /v1/fleet`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    /// Workers running phases now, by `pid-rand@host`.
    pub workers: Vec<FleetWorker>,
    /// The task queues of the kinds with work about (running, waiting in
    /// the outbox, or the kind of one of the latest 200 roots).
    pub queues: Vec<super::answer::Queue>,
    /// Dispatches committed and not yet published.
    pub outbox: FleetOutbox,
    /// The dead-letter queue (`{ns}.dead`).
    pub dead_letters: QueueState,
    /// Stale, duplicate or forged report items the coordinators fenced
    /// (as `GET /v1/stats`).
    pub fenced_reports: i64,
    /// Jobs ended per minute, oldest first, the current minute last.
    pub throughput: Vec<FleetMinute>,
    /// The database's clock, ms since the epoch.
    pub now_ms: i64,
}

/// A worker running phases.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetWorker {
    /// `pid-rand@host` (`unknown` when its `Started` did not say).
    pub id: String,
    /// The host part of its id.
    #[schema(required = true)]
    pub host: Option<String>,
    /// The kinds of the phases it runs.
    pub kinds: Vec<String>,
    /// Phases it runs now.
    pub running: i64,
    /// When the oldest of them started, ms since the epoch.
    #[schema(required = true)]
    pub since_ms: Option<i64>,
    /// The latest of its leases runs until, ms since the epoch.
    #[schema(required = true)]
    pub lease_until_ms: Option<i64>,
}

/// The outbox's backlog.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetOutbox {
    /// Due now, waiting for the relay.
    pub due: i64,
    /// Waiting out a retry's backoff.
    pub delayed: i64,
    /// The oldest due row's due time, ms since the epoch.
    #[schema(required = true)]
    pub oldest_due_ms: Option<i64>,
    /// Whether the counts stopped at 100,000 (there are at least that many).
    pub capped: bool,
}

/// Jobs ended in one minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetMinute {
    /// The minute's start, ms since the epoch.
    pub minute_ms: i64,
    /// Jobs of every tree that ended in it.
    pub ended: i64,
}

/// The fleet: workers running phases, queue depths per kind, the outbox
/// backlog, dead letters, fenced reports and jobs ended per minute over
/// the last 15 minutes.
#[utoipa::path(
    get,
    path = "/v1/fleet",
    tag = "service",
    responses(
        (status = 200, description = "The fleet now", body = Fleet),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
pub(crate) async fn fleet(State(state): State<ApiState>) -> Result<Json<Fleet>, ApiError> {
    let workers: Vec<FleetWorker> = store::running_workers(&state.pool)
        .await?
        .into_iter()
        .map(|w| FleetWorker {
            host: w.holder.split_once('@').map(|(_, host)| host.to_owned()),
            id: w.holder,
            kinds: w.kinds,
            running: w.running,
            since_ms: w.since_ms,
            lease_until_ms: w.lease_until_ms,
        })
        .collect();
    // The kinds the workers shown run are shown too, whatever the second
    // read finds running by then.
    let mut kinds = store::active_kinds(&state.pool).await?;
    kinds.extend(workers.iter().flat_map(|w| w.kinds.iter().cloned()));
    kinds.sort_unstable();
    kinds.dedup();
    let mut queues = Vec::with_capacity(kinds.len());
    // A broker that did not answer once is not asked again for this answer:
    // the rest are `unknown` with the same reason, so the route stays
    // within one probe's time limit.
    let mut unreachable: Option<QueueState> = None;
    for kind in kinds {
        let queue_state = match &unreachable {
            Some(state) => state.clone(),
            None => state.queues.kind(&kind).await,
        };
        if matches!(queue_state, QueueState::Unknown { .. }) {
            unreachable = Some(queue_state.clone());
        }
        queues.push(super::answer::Queue {
            kind,
            state: queue_state,
        });
    }
    let dead_letters = match unreachable {
        Some(state) => state,
        None => state.queues.dead_letters().await,
    };
    let outbox = store::outbox_backlog(&state.pool).await?;
    let throughput: Vec<FleetMinute> = store::ended_per_minute(&state.pool, THROUGHPUT_MINUTES)
        .await?
        .into_iter()
        .map(|m| FleetMinute {
            minute_ms: m.minute_ms,
            ended: m.ended,
        })
        .collect();
    Ok(Json(Fleet {
        workers,
        queues,
        outbox: FleetOutbox {
            due: outbox.due,
            delayed: outbox.delayed,
            oldest_due_ms: outbox.oldest_due_ms,
            capped: outbox.capped,
        },
        dead_letters,
        fenced_reports: store::counter(&state.pool, "fenced_reports").await?,
        throughput,
        now_ms: store::now_ms(&state.pool).await?,
    }))
}
