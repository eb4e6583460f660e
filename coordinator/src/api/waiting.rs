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
use serde_json::{Value, json};

use super::{ApiError, ApiState, no_job, parse_id};
use crate::queues::QueueState;
use crate::store::{self, OpenChildren, WaitingJob};
use reason::{Facts, Fanout, Group, Stage, Subject};

/// Open children listed in full.
pub const OLDEST: i64 = 10;

/// Most task queues asked about in one answer.
pub const MAX_KINDS: usize = 8;

/// The route's handler.
pub async fn waiting(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
) -> Value {
    let running = stage == Stage::Running;
    let open =
        job.children_total - job.children_completed - job.children_failed - job.children_cancelled;
    let children = job.fanout_seq.map(|seq| {
        let mut by_status = serde_json::Map::new();
        let mut by_stage = serde_json::Map::new();
        let (counted, oldest, complete) = match &children {
            Some(Some(c)) => {
                for g in &c.groups {
                    add(&mut by_status, &g.status, g.n);
                    add(&mut by_stage, &g.stage, g.n);
                }
                let counted: i64 = c.groups.iter().map(|g| g.n).sum();
                let oldest: Vec<Value> = c.oldest.iter().map(child).collect();
                (counted, oldest, counted < store::OPEN_SAMPLE)
            }
            Some(None) => (0, Vec::new(), false),
            None => (0, Vec::new(), true),
        };
        json!({
            "fanout_seq": seq,
            "expected": job.children_expected,
            "total": job.children_total,
            "completed": job.children_completed,
            "failed": job.children_failed,
            "cancelled": job.children_cancelled,
            "open": open,
            "open_by_status": by_status,
            "open_by_stage": by_stage,
            "counted": counted,
            "counted_all": complete,
            "oldest": oldest,
        })
    });
    let queues: Vec<Value> = queues
        .into_iter()
        .map(|(kind, state)| {
            let mut q = serde_json::to_value(&state).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut q {
                map.insert("kind".into(), json!(kind));
            }
            q
        })
        .collect();
    let ancestors: Vec<Value> = ancestors
        .iter()
        .map(|a| json!({ "id": a.id, "kind": a.kind, "status": a.status, "depth": a.depth }))
        .collect();
    json!({
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "phase": job.phase,
        "phase_status": job.phase_status,
        "stage": job.stage,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "available_at_ms": job.available_ms,
        "last_error": job.last_error,
        "error": job.error,
        "lease": running.then(|| json!({
            "holder": job.lease_holder,
            "started_ms": job.started_ms,
            "until_ms": job.lease_until_ms,
        })),
        "reason": reason,
        "children": children,
        "queues": queues,
        "stopped_ancestors": ancestors,
        "parent_id": job.parent_id,
        "now_ms": job.now_ms,
    })
}

fn add(map: &mut serde_json::Map<String, Value>, key: &str, n: i64) {
    let old = map.get(key).and_then(Value::as_i64).unwrap_or(0);
    map.insert(key.to_owned(), json!(old + n));
}

fn child(c: &store::OpenChild) -> Value {
    json!({
        "id": c.id,
        "index": c.child_index,
        "kind": c.kind,
        "status": c.status,
        "phase": c.phase,
        "phase_status": c.phase_status,
        "stage": c.stage,
        "attempt": c.attempt,
        "max_attempts": c.max_attempts,
        "available_at_ms": c.available_ms,
        "last_error": c.last_error,
        "lease_holder": c.lease_holder,
        "started_ms": c.started_ms,
        "lease_until_ms": c.lease_until_ms,
    })
}
