//! `GET /v1/jobs/{id}/waiting`: why a job is not progressing.
//!
//! The answer gathers, in a few bounded reads:
//! - the job: its stage (scheduled, unpublished, queued, running, waiting,
//!   paused, done), attempt, last error (phase history) and lease holder;
//! - its current fan-out: the children outstanding (the parent's counters)
//!   and, by status and stage, at most 10,000 open ones, with the first ten
//!   in spawn order (attempt, last error, lease holder);
//! - the task queues of the kinds involved (depth and live consumers, from
//!   the broker, [`crate::queues`]);
//! - its paused or cancelled ancestors;
//! - a one-line `reason`, from a pure function of all that (`waiting/reason.rs`).

mod reason;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};

use super::answer::{
    ErrorBody, Lease, OpenChild, Queue, StoppedAncestor, Waiting, WaitingChildren,
};
use super::{ApiError, ApiState, JobId, no_job, parse_id};
use crate::queues::QueueState;
use crate::store::{self, OpenChildren, WaitingJob};
use reason::{Facts, Fanout, Group, Stage, Subject};

/// Open children listed in full.
pub const OLDEST: i64 = 10;

/// Most task queues asked about in one answer.
pub const MAX_KINDS: usize = 8;

/// Why the job is not progressing: its stage, attempt, last error and
/// lease; its current fan-out's open children by status and stage, with the
/// oldest ones; the task queues of the kinds involved; stopped ancestors;
/// and a one-line `reason`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/waiting",
    tag = "jobs",
    params(JobId),
    responses(
        (status = 200, description = "Why the job waits", body = Waiting),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
pub async fn waiting(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Waiting>, ApiError> {
    let id = parse_id(&id)?;
    let Some(job) = store::waiting_job(&state.pool, id).await? else {
        return Err(no_job(id));
    };
    let ancestors = store::stopped_ancestors(&state.pool, id).await?;
    let open =
        job.children_total - job.children_completed - job.children_failed - job.children_cancelled;
    let stage = Stage::parse(&job.stage);
    // The children index is read only when the counters say some are open.
    let children = match job.fanout_seq {
        Some(seq) if open > 0 && stage != Stage::Done => {
            Some(store::open_children(&state.pool, id, seq, OLDEST).await?)
        }
        _ => None,
    };
    let mut kinds: Vec<String> = Vec::new();
    if matches!(
        stage,
        Stage::Scheduled | Stage::Unpublished | Stage::Queued | Stage::Running
    ) {
        kinds.push(job.kind.clone());
    }
    if let Some(Some(c)) = &children {
        for g in &c.groups {
            if !kinds.contains(&g.kind) && Stage::parse(&g.stage) != Stage::Done {
                kinds.push(g.kind.clone());
            }
        }
    }
    kinds.truncate(MAX_KINDS);
    let mut queues = BTreeMap::new();
    for kind in kinds {
        let q = state.queues.kind(&kind).await;
        queues.insert(kind, q);
    }
    let facts = facts(&job, stage, children.as_ref(), &queues, &ancestors);
    let reason = reason::reason(&facts);
    Ok(Json(answer(
        &job, stage, &reason, children, queues, &ancestors,
    )))
}

fn facts(
    job: &WaitingJob,
    stage: Stage,
    children: Option<&Option<OpenChildren>>,
    queues: &BTreeMap<String, QueueState>,
    ancestors: &[store::Ancestor],
) -> Facts {
    let fanout = job.fanout_seq.map(|_| Fanout {
        expected: job.children_expected,
        total: job.children_total,
        terminal: job.children_completed + job.children_failed + job.children_cancelled,
        groups: match children {
            // Counted: the open ones by kind and stage.
            Some(Some(c)) => Some(
                c.groups
                    .iter()
                    .map(|g| Group {
                        kind: g.kind.clone(),
                        stage: Stage::parse(&g.stage),
                        n: g.n,
                        next_ms: g.next_ms,
                        oldest_started_ms: g.oldest_started_ms,
                        oldest_holder: g.oldest_holder.clone(),
                    })
                    .collect(),
            ),
            // Too slow to count.
            Some(None) => None,
            // Not looked at: the counters say none is open.
            None => Some(Vec::new()),
        },
    });
    Facts {
        now_ms: job.now_ms,
        job: Subject {
            kind: job.kind.clone(),
            status: job.status.clone(),
            phase: job.phase.clone(),
            stage,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            available_ms: job.available_ms,
            started_ms: job.started_ms,
            lease_until_ms: job.lease_until_ms,
            lease_holder: job.lease_holder.clone(),
            last_error: job.error.clone().or_else(|| job.last_error.clone()),
        },
        fanout,
        queues: queues.clone(),
        stopped_ancestor: ancestors
            .first()
            .map(|a| (a.id.to_string(), a.kind.clone(), a.status.clone())),
    }
}

fn answer(
    job: &WaitingJob,
    stage: Stage,
    reason: &str,
    children: Option<Option<OpenChildren>>,
    queues: BTreeMap<String, QueueState>,
    ancestors: &[store::Ancestor],
) -> Waiting {
    let running = stage == Stage::Running;
    let open =
        job.children_total - job.children_completed - job.children_failed - job.children_cancelled;
    let children = job.fanout_seq.map(|seq| {
        let mut open_by_status = BTreeMap::new();
        let mut open_by_stage = BTreeMap::new();
        let (counted, oldest, counted_all) = match &children {
            Some(Some(c)) => {
                for g in &c.groups {
                    *open_by_status.entry(g.status.clone()).or_default() += g.n;
                    *open_by_stage.entry(g.stage.clone()).or_default() += g.n;
                }
                let counted: i64 = c.groups.iter().map(|g| g.n).sum();
                let oldest = c.oldest.iter().map(child).collect();
                (counted, oldest, counted < store::OPEN_SAMPLE)
            }
            Some(None) => (0, Vec::new(), false),
            None => (0, Vec::new(), true),
        };
        WaitingChildren {
            fanout_seq: seq,
            expected: job.children_expected,
            total: job.children_total,
            completed: job.children_completed,
            failed: job.children_failed,
            cancelled: job.children_cancelled,
            open,
            open_by_status,
            open_by_stage,
            counted,
            counted_all,
            oldest,
        }
    });
    Waiting {
        id: job.id,
        kind: job.kind.clone(),
        status: job.status.clone(),
        phase: job.phase.clone(),
        phase_status: job.phase_status.clone(),
        stage: job.stage.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        available_at_ms: job.available_ms,
        last_error: job.last_error.clone(),
        error: job.error.clone(),
        lease: running.then(|| Lease {
            holder: job.lease_holder.clone(),
            started_ms: job.started_ms,
            until_ms: job.lease_until_ms,
        }),
        reason: reason.to_owned(),
        children,
        queues: queues
            .into_iter()
            .map(|(kind, state)| Queue { kind, state })
            .collect(),
        stopped_ancestors: ancestors
            .iter()
            .map(|a| StoppedAncestor {
                id: a.id,
                kind: a.kind.clone(),
                status: a.status.clone(),
                depth: a.depth,
            })
            .collect(),
        parent_id: job.parent_id,
        now_ms: job.now_ms,
    }
}

fn child(c: &store::OpenChild) -> OpenChild {
    OpenChild {
        id: c.id,
        index: c.child_index,
        kind: c.kind.clone(),
        status: c.status.clone(),
        phase: c.phase.clone(),
        phase_status: c.phase_status.clone(),
        stage: c.stage.clone(),
        attempt: c.attempt,
        max_attempts: c.max_attempts,
        available_at_ms: c.available_ms,
        last_error: c.last_error.clone(),
        lease_holder: c.lease_holder.clone(),
        started_ms: c.started_ms,
        lease_until_ms: c.lease_until_ms,
    }
}
