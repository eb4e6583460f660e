//! The HTTP API: submit jobs, read their status, page children, results and
//! logs, and Prometheus metrics.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/jobs` | submit `{kind, input, options?}`; answers `201 {"id"}` with `Location`; an `Idempotency-Key` replays (`200`) for 24 h |
//! | `GET /v1/jobs` | list roots newest first, a tree (`root`) or a parent's children (`parent`); `status`, `kind`, `created_after`, `limit`, `cursor` |
//! | `GET /v1/jobs/{id}` | status, phase, phases, children counts, output or error |
//! | `GET /v1/jobs/{id}/children` | children in spawn order (`after`, `limit`, `seq`, `format=json\|msgpack`), at most about 8 MiB a page |
//! | `GET /v1/jobs/{id}/tree` | counts by status for the job's whole tree and by phase and status, progress, elapsed time, rate over a sliding window and ETA ([`crate::rate`]) |
//! | `GET /v1/jobs/{id}/logs` | log lines (`after`, `limit`) |
//! | `GET /v1/jobs/{id}/waiting` | why the job is not progressing: open children by status, the oldest ones with attempt, last error and lease holder, queue depth and consumers of their kinds, stopped ancestors, a one-line `reason` |
//! | `GET /v1/jobs/{id}/timing` | latest fan-out: child latency p50/p99, fan-in latency |
//! | `GET /v1/jobs/{id}/events` | Server-Sent Events of the job's tree: `snapshot`, `status`, `counts`, `progress`, `log`; resume with `Last-Event-ID` or `?after=` |
//! | `POST /v1/jobs/{id}/cancel` | cancel the job and every open descendant (`{"reason"?}`); `202` |
//! | `POST /v1/jobs/{id}/pause` | hold dispatch for the job and its subtree; `202` |
//! | `POST /v1/jobs/{id}/resume` | release what a pause held; `202` |
//! | `POST /v1/jobs/{id}/retry` | run a failed or cancelled job again (`{"phase"?}`); `202`, `409` if it may not |
//! | `GET /v1/stats` | durable counters (fenced, forged, refused and poisoned reports) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | liveness (always open) |
//! | `GET /readyz` | readiness: the database answers (always open) |
//!
//! Every request passes, outermost first: the JSON error shape (every 4xx
//! and 5xx answers `{"error": reason}`, whoever produced it), the request
//! timeout (408), the bearer-token check ([`crate::auth`]) and the body
//! limit (413).
//!
//! - `control.rs`: cancel, pause, resume, retry.
//! - [`error`]: the error answer, how store failures map to statuses, and
//!   the middlewares that give every failure the one shape.
//! - [`waiting`]: `GET /v1/jobs/{id}/waiting` and its reason line.
//! - [`list`]: `GET /v1/jobs`, its parameters and cursors.
//! - [`idempotency`]: the `Idempotency-Key` header of a submission.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tributary_common::fanin::FailureAction;
use tributary_common::job::{DEFAULT_MAX_ATTEMPTS, ENTRY_PHASE, JobOptions};
use tributary_common::limits::{self, Limits};
use tributary_common::status::JobStatus;
use tributary_common::wire::{self, ChildResult};
use uuid::Uuid;

mod control;
pub mod error;
pub mod idempotency;
pub mod list;
pub mod waiting;

pub use self::error::ApiError;
use self::error::{bad, json_errors, no_route, request_timeout, unavailable};
use crate::auth::Tokens;
use crate::events::Hub;
use crate::metrics::Metrics;
use crate::outcome::Applier;
use crate::rate;
use crate::store::{self, NewRoot};

/// Largest request body when the input cap is small: room for the JSON
/// around an input (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most output and error bytes one page of `/children` carries (the first
/// child is always sent, whatever its size): the budget is kept by the
/// query itself, so the coordinator never holds more for one page.
pub const CHILDREN_PAGE_BYTES: i64 = 8 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub pool: PgPool,
    /// Process counters.
    pub metrics: Arc<Metrics>,
    /// Wakes the dispatch relay after a submission.
    pub relay_wake: Arc<tokio::sync::Notify>,
    /// Caps on submissions.
    pub limits: Limits,
    /// Who may call what.
    pub tokens: Arc<Tokens>,
    /// Longest a request may take from its headers to its response.
    pub request_timeout: Duration,
    /// Moves jobs for cancel, pause, resume and retry.
    pub applier: Applier,
    /// Live event streams.
    pub hub: Arc<Hub>,
    /// Task queues' depth and consumers, from the broker (`/waiting`).
    pub queues: Arc<crate::queues::QueueProbe>,
}

/// The request body limit for an input cap: twice the cap (JSON is
/// wordier than MessagePack) plus room for the envelope, and never under
/// [`MAX_BODY_BYTES`].
pub fn body_limit(limits: &Limits) -> usize {
    limits
        .max_input_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
        .max(MAX_BODY_BYTES)
}

/// The router, with its layers.
pub fn router(state: ApiState) -> Router {
    let tokens = state.tokens.clone();
    let timeout = state.request_timeout;
    let body_limit = body_limit(&state.limits);
    Router::new()
        .route("/v1/jobs", post(submit).get(list::list))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/children", get(children))
        .route("/v1/jobs/{id}/tree", get(tree))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/timing", get(timing))
        .route("/v1/jobs/{id}/waiting", get(waiting::waiting))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/cancel", post(control::cancel))
        .route("/v1/jobs/{id}/pause", post(control::pause))
        .route("/v1/jobs/{id}/resume", post(control::resume))
        .route("/v1/jobs/{id}/retry", post(control::retry))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            tokens,
            crate::auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(middleware::from_fn_with_state(body_limit, json_errors))
        .with_state(state)
}

async fn readyz(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    store::ping(&state.pool).await.map_err(|e| {
        tracing::warn!("not ready: {e}");
        unavailable()
    })?;
    Ok("ok")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    kind: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    options: Option<Value>,
}

/// Options, refusing fields this build does not know (a typo must not be
/// silently ignored at the edge).
fn parse_options(options: Option<Value>) -> Result<JobOptions, ApiError> {
    let Some(value) = options else {
        return Ok(JobOptions::default());
    };
    if let Some(map) = value.as_object()
        && let Some(unknown) = map
            .keys()
            .find(|k| !JobOptions::FIELDS.contains(&k.as_str()))
    {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "invalid job submission: options: unknown field `{unknown}`, expected one of {:?}",
                JobOptions::FIELDS
            ),
        ));
    }
    serde_json::from_value(value.clone()).map_err(|e| {
        // Name the field serde did not: try each one alone.
        let field = value.as_object().and_then(|map| {
            map.iter()
                .find(|(k, v)| {
                    serde_json::from_value::<JobOptions>(json!({ k.as_str(): v })).is_err()
                })
                .map(|(k, _)| format!(".{k}"))
        });
        bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "invalid job submission: options{}: {e}",
                field.unwrap_or_default()
            ),
        )
    })
}

async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !ct.starts_with("application/json") {
            return Err(bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-type must be application/json, not {ct:?}"),
            ));
        }
    }
    let key = idempotency::key(&headers)?;
    let sub: Submission = serde_json::from_slice(&body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        bad(status, format!("invalid job submission: {e}"))
    })?;
    if !limits::valid_kind(&sub.kind) {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "invalid kind {:?}: use 1-128 characters from A-Z a-z 0-9 . _ -",
                sub.kind
            ),
        ));
    }
    let options = parse_options(sub.options)?;
    let max_attempts = options.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=limits::MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "options.max_attempts must be between 1 and {}, not {max_attempts}",
                limits::MAX_ATTEMPTS
            ),
        ));
    }
    let phase = options.phase.as_deref().unwrap_or(ENTRY_PHASE);
    if !limits::valid_phase(phase) {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "invalid options.phase {phase:?}: use 1-{} bytes without control characters",
                limits::MAX_NAME_BYTES
            ),
        ));
    }
    let max_child_failures = options
        .max_child_failures
        .map(i32::try_from)
        .transpose()
        .map_err(|_| {
            bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("options.max_child_failures must be at most {}", i32::MAX),
            )
        })?;
    let input = wire::to_payload(&sub.input)
        .map_err(|e| bad(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    if input.len() > state.limits.max_input_bytes {
        return Err(bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "input is {} bytes as MessagePack, over the cap of {} bytes (TRIBUTARY_MAX_INPUT_BYTES)",
                input.len(),
                state.limits.max_input_bytes
            ),
        ));
    }
    let id = Uuid::now_v7();
    let action = match options.failure_action.unwrap_or_default() {
        FailureAction::Continue => "continue",
        FailureAction::StopAll => "stop_all",
        FailureAction::MarkWarning => "mark_warning",
    };
    let root = NewRoot {
        id,
        kind: &sub.kind,
        input: &input,
        phase,
        // In 1..=MAX_ATTEMPTS, checked above.
        max_attempts: max_attempts as i32,
        max_child_failures,
        failure_action: action,
    };
    let Some(key) = key else {
        store::insert_root(&state.pool, &root).await?;
        return idempotency::submitted(&state, &sub.kind, id, None);
    };
    let request = idempotency::fingerprint(
        &sub.kind,
        &sub.input,
        phase,
        max_attempts,
        max_child_failures,
        action,
    );
    match store::insert_root_once(&state.pool, &root, &key, &request).await? {
        store::Submitted::Created => idempotency::submitted(&state, &sub.kind, id, Some(false)),
        store::Submitted::Replayed(earlier) => {
            tracing::info!(job = %earlier, kind = %sub.kind, "submission replayed (idempotency key)");
            idempotency::submitted(&state, &sub.kind, earlier, Some(true))
        }
        store::Submitted::Conflict(earlier) => Err(idempotency::conflict(&key, earlier)),
    }
}

/// 404 unless job `id` exists: a sub-resource of an unknown job is not an
/// empty list.
async fn require_job(pool: &PgPool, id: Uuid) -> Result<(), ApiError> {
    if store::job_exists(pool, id).await? {
        Ok(())
    } else {
        Err(no_job(id))
    }
}

fn no_job(id: Uuid) -> ApiError {
    bad(StatusCode::NOT_FOUND, format!("no job {id}"))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|e| {
        bad(
            StatusCode::BAD_REQUEST,
            format!("invalid job id {id:?}: {e}"),
        )
    })
}

/// MessagePack as JSON where it can be; binary data cannot.
fn payload_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => wire::from_payload::<Value>(b).unwrap_or_else(
            |_| json!({ "msgpack_bytes": b.len(), "note": "not representable as JSON" }),
        ),
    }
}

async fn job(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let Some(j) = store::job(&state.pool, id).await? else {
        return Err(no_job(id));
    };
    let history = store::phases(&state.pool, id).await?;
    let current_recorded = history
        .iter()
        .any(|p| p.seq == j.phase_seq && p.attempt == j.attempt);
    let mut phases: Vec<Value> = history
        .into_iter()
        .map(|p| {
            json!({ "seq": p.seq, "attempt": p.attempt, "name": p.name, "status": p.status,
                    "error": p.error, "finished_ms": p.finished_ms })
        })
        .collect();
    // History keeps finished executions that were followed by more; the
    // current (or last) one lives on the job row.
    if !current_recorded {
        phases.push(json!({ "seq": j.phase_seq, "attempt": j.attempt, "name": j.phase, "status": j.phase_status,
                            "error": null, "finished_ms": j.finished_ms }));
    }
    let terminal = j.children_completed + j.children_failed + j.children_cancelled;
    let walking = store::walks_of(&state.pool, id).await?;
    Ok(Json(json!({
        "id": j.id,
        "root_id": j.root_id,
        "parent_id": j.parent_id,
        "child_index": j.child_index,
        "kind": j.kind,
        "status": j.status,
        "terminal": JobStatus::parse(&j.status).is_some_and(JobStatus::is_terminal),
        "phase": j.phase,
        "phase_seq": j.phase_seq,
        "attempt": j.attempt,
        "phase_status": j.phase_status,
        "phases": phases,
        "children": {
            "expected": j.children_expected,
            "total": j.children_total,
            "completed": j.children_completed,
            "failed": j.children_failed,
            "cancelled": j.children_cancelled,
            "open": j.children_total - terminal,
        },
        "progress": j.progress_total.map(|t| json!({
            "done": j.progress_done, "total": t, "message": j.progress_message })),
        "output": payload_json(j.output.as_deref()),
        "error": j.error,
        "warning": j.warning,
        // Actions still being carried down the job's subtree.
        "control_pending": walking,
        "created_ms": j.created_ms,
        "updated_ms": j.updated_ms,
        "finished_ms": j.finished_ms,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    after: Option<i64>,
}

/// `GET /v1/jobs/{id}/events`: the tree's events as Server-Sent Events,
/// from `Last-Event-ID` (or `?after=`), else from a snapshot of now.
async fn events(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    bad(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID must be an event id (a non-negative integer)",
                    )
                })?,
        ),
        None => q.after,
    };
    if resume.is_some_and(|n| n < 0) {
        return Err(bad(StatusCode::BAD_REQUEST, "after must be non-negative"));
    }
    let Some(root) = store::root_of(&state.pool, id).await? else {
        return Err(no_job(id));
    };
    Ok(state.hub.stream(root, id, resume).await?.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    seq: Option<i32>,
    #[serde(default)]
    format: Option<String>,
}

async fn children(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 10000",
        ));
    }
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "msgpack") {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!("format must be json or msgpack, not {format:?}"),
        ));
    }
    let rows = store::children(
        &state.pool,
        id,
        q.seq,
        q.after.unwrap_or(-1),
        limit,
        CHILDREN_PAGE_BYTES,
    )
    .await?;
    if rows.is_empty() {
        require_job(&state.pool, id).await?;
    }
    if format == "msgpack" {
        let results: Vec<ChildResult> = rows
            .into_iter()
            .map(|r| ChildResult {
                id: r.id,
                index: r.child_index as u64,
                status: r.status,
                output: r.output.map(serde_bytes::ByteBuf::from),
                error: r.error,
            })
            .collect();
        let body = wire::encode(&results)
            .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        return Ok(([(header::CONTENT_TYPE, "application/msgpack")], body).into_response());
    }
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({ "id": r.id, "index": r.child_index, "kind": r.kind, "status": r.status,
                    "output": payload_json(r.output.as_deref()), "error": r.error })
        })
        .collect();
    Ok(Json(json!({ "children": items })).into_response())
}

async fn tree(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    // Only the root is needed: not the job's output, which may be megabytes.
    let Some(root_id) = store::root_of(&state.pool, id).await? else {
        return Err(no_job(id));
    };
    let Some(view) = store::tree(&state.pool, root_id).await? else {
        return Err(no_job(id));
    };
    let counts = &view.counts;
    let mut phases = serde_json::Map::new();
    for (phase, status, n) in store::tree_phases(&state.pool, root_id).await? {
        if let Value::Object(m) = phases.entry(phase).or_insert_with(|| json!({})) {
            m.insert(status, json!(n));
        }
    }
    let total = counts.total();
    let done = counts.terminal();
    let mut by_status = serde_json::Map::new();
    for (status, n) in counts.iter() {
        by_status.insert(status.as_str().to_owned(), json!(n));
    }
    let rate = view.window.per_second();
    let now = view.window.now_ms;
    Ok(Json(json!({
        "root_id": root_id,
        "jobs": total,
        "counts": by_status,
        // Where the jobs are: counts by status within each phase.
        "phases": phases,
        "progress": if total > 0 { done as f64 / total as f64 } else { 0.0 },
        "remaining": total - done,
        "elapsed_ms": rate::elapsed_ms(view.created_ms, view.finished_ms, now),
        "rate_per_s": rate,
        "rate_window": rate::WINDOW,
        "eta_ms": rate::eta_ms(total - done, rate),
    })))
}

async fn logs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = store::logs(&state.pool, id, q.after.unwrap_or(0), limit).await?;
    if rows.is_empty() {
        require_job(&state.pool, id).await?;
    }
    let lines: Vec<Value> = rows
        .into_iter()
        .map(|l| json!({ "id": l.id, "level": l.level, "message": l.message, "at_ms": l.at_ms }))
        .collect();
    Ok(Json(json!({ "logs": lines })))
}

async fn timing(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let t = store::fanout_timing(&state.pool, id).await?;
    if t.children == 0 {
        require_job(&state.pool, id).await?;
    }
    Ok(Json(json!({
        "children": t.children,
        "child_p50_ms": t.child_p50_ms,
        "child_p99_ms": t.child_p99_ms,
        "fanin_latency_ms": t.fanin_latency_ms,
    })))
}

async fn stats(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let mut out = serde_json::Map::new();
    for name in [
        "fenced_reports",
        "forged_reports",
        "refused_reports",
        "poisoned_reports",
    ] {
        out.insert(
            name.to_owned(),
            json!(store::counter(&state.pool, name).await?),
        );
    }
    Ok(Json(Value::Object(out)))
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_limit_follows_the_input_cap() {
        let cap = |max_input_bytes| Limits {
            max_input_bytes,
            ..Limits::default()
        };
        assert_eq!(body_limit(&cap(1000)), MAX_BODY_BYTES);
        assert_eq!(body_limit(&cap(1024 * 1024)), 2 * 1024 * 1024 + 64 * 1024);
        assert_eq!(body_limit(&cap(usize::MAX)), usize::MAX);
    }
}
