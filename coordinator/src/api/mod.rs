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
//! | `GET /v1/fleet` | workers running phases, queue depths per kind, outbox backlog, dead letters, fenced reports, jobs ended per minute over 15 min ([`fleet`]) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | liveness (always open) |
//! | `GET /readyz` | readiness: the database answers (always open) |
//! | `GET /openapi.json` | this API's OpenAPI document ([`openapi`]) |
//! | `GET /ui/` | the dashboard ([`ui`]): static files, open; the page sends a token |
//!
//! Every request passes, outermost first: the JSON error shape (every 4xx
//! and 5xx answers `{"error": reason}`, whoever produced it), the request
//! timeout (408), the bearer-token check ([`crate::auth`]) and the body
//! limit (413).
//!
//! - `control.rs`: cancel, pause, resume, retry.
//! - [`answer`]: the JSON bodies of the answers, as types (serialized and
//!   described in the OpenAPI document from one definition).
//! - [`openapi`]: the OpenAPI document, derived from the handlers'
//!   annotations.
//! - [`error`]: the error answer, how store failures map to statuses, and
//!   the middlewares that give every failure the one shape.
//! - [`waiting`]: `GET /v1/jobs/{id}/waiting` and its reason line.
//! - [`list`]: `GET /v1/jobs`, its parameters and cursors.
//! - [`idempotency`]: the `Idempotency-Key` header of a submission.
//! - [`fleet`]: `GET /v1/fleet`, the fleet at a glance.
//! - [`ui`]: the dashboard's embedded page and assets at `/ui/`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tributary_common::fanin::FailureAction;
use tributary_common::job::{DEFAULT_MAX_ATTEMPTS, ENTRY_PHASE, JobOptions};
use tributary_common::limits::{self, Limits};
use tributary_common::status::JobStatus;
use tributary_common::wire::{self, ChildResult};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub mod answer;
mod control;
pub mod error;
pub mod fleet;
pub mod idempotency;
pub mod list;
pub mod openapi;
pub mod ui;
pub mod waiting;

use self::answer::{
    Child, ChildCounts, Children, ErrorBody, Job, LogLine, Logs, PhaseRun, Progress, Stats,
    StreamEvent, Submitted, Timing, Tree,
};
pub use self::error::ApiError;
use self::error::{bad, from_json_object, json_errors, no_route, request_timeout, unavailable};
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

/// One route: the method and path it serves, and its handler.
pub(crate) struct Route {
    /// The method (`GET` also answers `HEAD`).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the document's test"))]
    pub(crate) method: MethodFilter,
    /// The path, with `{id}` for the job's id.
    pub(crate) path: &'static str,
    handler: MethodRouter<ApiState>,
}

fn route<H, T>(method: MethodFilter, path: &'static str, handler: H) -> Route
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    Route {
        method,
        path,
        handler: routing::on(method, handler),
    }
}

/// Every route the API serves. The router is built from this list, and a
/// test checks that the OpenAPI document describes each entry, so a route
/// cannot be added without its description.
pub(crate) fn routes() -> Vec<Route> {
    use MethodFilter as M;
    vec![
        route(M::POST, "/v1/jobs", submit),
        route(M::GET, "/v1/jobs", list::list),
        route(M::GET, "/v1/jobs/{id}", job),
        route(M::GET, "/v1/jobs/{id}/children", children),
        route(M::GET, "/v1/jobs/{id}/tree", tree),
        route(M::GET, "/v1/jobs/{id}/logs", logs),
        route(M::GET, "/v1/jobs/{id}/timing", timing),
        route(M::GET, "/v1/jobs/{id}/waiting", waiting::waiting),
        route(M::GET, "/v1/jobs/{id}/events", events),
        route(M::POST, "/v1/jobs/{id}/cancel", control::cancel),
        route(M::POST, "/v1/jobs/{id}/pause", control::pause),
        route(M::POST, "/v1/jobs/{id}/resume", control::resume),
        route(M::POST, "/v1/jobs/{id}/retry", control::retry),
        route(M::GET, "/v1/stats", stats),
        route(M::GET, "/v1/fleet", fleet::fleet),
        route(M::GET, "/metrics", metrics),
        route(M::GET, "/healthz", healthz),
        route(M::GET, "/readyz", readyz),
        route(M::GET, "/openapi.json", openapi::document),
    ]
}

/// The router, with its layers.
pub fn router(state: ApiState) -> Router {
    let tokens = state.tokens.clone();
    let timeout = state.request_timeout;
    let body_limit = body_limit(&state.limits);
    routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .merge(ui::routes())
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

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain", example = "ok")),
)]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain", example = "ok"),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ),
)]
async fn readyz(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    store::ping(&state.pool).await.map_err(|e| {
        tracing::warn!("not ready: {e}");
        unavailable()
    })?;
    Ok("ok")
}

/// A submission: a job of `kind` on `input`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Submission {
    /// The job's kind: 1-128 characters from `A-Z a-z 0-9 . _ -`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]+$")]
    kind: String,
    /// The job's input: any JSON (default null), at most
    /// `TRIBUTARY_MAX_INPUT_BYTES` (1 MiB) as MessagePack.
    #[serde(default)]
    input: Value,
    /// How the job runs; every field has a default.
    #[serde(default)]
    #[schema(value_type = Option<SubmitOptions>)]
    options: Option<Value>,
}

/// A submission's options, as the document describes them: the handler
/// reads them as [`JobOptions`] (its [`JobOptions::FIELDS`]; a test keeps
/// the two alike) and checks the bounds given here.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only its schema is used")]
pub(crate) struct SubmitOptions {
    /// The entry phase (default `start`): 1-128 bytes, no control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    phase: Option<String>,
    /// Executions allowed per phase before the job fails (default 3).
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<u32>,
    /// Failed children tolerated before `failure_action` applies (default:
    /// unlimited).
    #[schema(minimum = 0, maximum = 2147483647)]
    max_child_failures: Option<u32>,
    /// What a parent does once more children failed than it tolerates
    /// (default `continue`).
    #[schema(value_type = Option<FailureActionName>)]
    failure_action: Option<FailureAction>,
}

/// The name of a [`FailureAction`], as the API and the database spell it.
fn failure_action_name(action: FailureAction) -> &'static str {
    match action {
        FailureAction::Continue => "continue",
        FailureAction::StopAll => "stop_all",
        FailureAction::MarkWarning => "mark_warning",
    }
}

/// The schema of a failure action's name.
pub(crate) struct FailureActionName;

impl utoipa::PartialSchema for FailureActionName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names = [
            FailureAction::Continue,
            FailureAction::StopAll,
            FailureAction::MarkWarning,
        ]
        .map(failure_action_name);
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for FailureActionName {}

/// Options, refusing fields this build does not know (a typo must not be
/// silently ignored at the edge).
fn parse_options(options: Option<Value>) -> Result<JobOptions, ApiError> {
    let Some(value) = options else {
        return Ok(JobOptions::default());
    };
    // serde reads a struct from an array too (by position): refuse it.
    if !value.is_object() {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid job submission: options must be an object",
        ));
    }
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

/// Submit a job.
///
/// With an `Idempotency-Key`, the same key returns the same job for 24 h:
/// the first request answers `201 {"id", "replayed": false}`, the same
/// request again `200 {"id", "replayed": true}` (and makes nothing), the key
/// with another request `422`.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    params(
        (
            "Idempotency-Key" = Option<String>, Header,
            description = "1-255 printable ASCII bytes (a UUID is a good key): the same request with the same key within 24 h returns the same job",
            min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$", nullable = false
        ),
    ),
    request_body(content = Submission, content_type = "application/json"),
    responses(
        (status = 201, description = "Submitted (`replayed` is false with a key, absent without)", body = Submitted,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 200, description = "The idempotency key's earlier submission, replayed: nothing was made", body = Submitted,
            headers(
                ("Location" = String, description = "`/v1/jobs/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true`"),
            )),
        (status = 400, description = "Malformed JSON, or an unusable Idempotency-Key", body = ErrorBody),
        (status = 413, description = "The input is over `TRIBUTARY_MAX_INPUT_BYTES` as MessagePack", body = ErrorBody),
        (status = 415, description = "A content type other than application/json", body = ErrorBody),
        (status = 422, description = "A submission of the wrong shape, a bad kind or option, input the database refuses, or an idempotency key used for another request", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
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
    let sub: Submission = from_json_object(&body, "job submission")?;
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
    let action = failure_action_name(options.failure_action.unwrap_or_default());
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

/// A job: status, current phase, phase history, children counts, progress,
/// output or error.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(JobId),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
async fn job(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    let Some(j) = store::job(&state.pool, id).await? else {
        return Err(no_job(id));
    };
    let history = store::phases(&state.pool, id).await?;
    let current_recorded = history
        .iter()
        .any(|p| p.seq == j.phase_seq && p.attempt == j.attempt);
    let mut phases: Vec<PhaseRun> = history
        .into_iter()
        .map(|p| PhaseRun {
            seq: p.seq,
            attempt: p.attempt,
            name: p.name,
            status: p.status,
            error: p.error,
            finished_ms: Some(p.finished_ms),
        })
        .collect();
    // History keeps finished executions that were followed by more; the
    // current (or last) one lives on the job row.
    if !current_recorded {
        phases.push(PhaseRun {
            seq: j.phase_seq,
            attempt: j.attempt,
            name: j.phase.clone(),
            status: j.phase_status.clone(),
            error: None,
            finished_ms: j.finished_ms,
        });
    }
    let terminal = j.children_completed + j.children_failed + j.children_cancelled;
    // Actions still being carried down the job's subtree.
    let walking = store::walks_of(&state.pool, id).await?;
    Ok(Json(Job {
        id: j.id,
        root_id: j.root_id,
        parent_id: j.parent_id,
        child_index: j.child_index,
        terminal: JobStatus::parse(&j.status).is_some_and(JobStatus::is_terminal),
        kind: j.kind,
        status: j.status,
        phase: j.phase,
        phase_seq: j.phase_seq,
        attempt: j.attempt,
        phase_status: j.phase_status,
        phases,
        children: ChildCounts {
            expected: j.children_expected,
            total: j.children_total,
            completed: j.children_completed,
            failed: j.children_failed,
            cancelled: j.children_cancelled,
            open: j.children_total - terminal,
        },
        progress: j.progress_total.map(|total| Progress {
            done: j.progress_done,
            total,
            message: j.progress_message,
        }),
        output: payload_json(j.output.as_deref()),
        error: j.error,
        warning: j.warning,
        control_pending: walking,
        created_ms: j.created_ms,
        updated_ms: j.updated_ms,
        finished_ms: j.finished_ms,
    }))
}

/// The `{id}` of every `/v1/jobs/{id}` route: a job's id, a UUID (any
/// other text is a 400).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only its parameter description is used")]
pub(crate) struct JobId {
    /// The job's id.
    id: Uuid,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Resume after this event id (as `Last-Event-ID`, which wins).
    #[serde(default)]
    #[param(minimum = 0, maximum = 9223372036854775807i64)]
    after: Option<i64>,
}

/// The tree's events as Server-Sent Events: `snapshot` first (unless
/// resuming), then `status`, `counts`, `progress` and `log`.
///
/// Resume from `Last-Event-ID` (or `?after=`); a position older than the
/// log keeps, or one this tree never reached, gets a fresh `snapshot` with
/// `"reset": true`. Each event's `data` is one JSON object. The stream
/// does not end while the client listens (a comment every 15 s keeps it
/// alive).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    params(
        JobId,
        EventsQuery,
        (
            "Last-Event-ID" = Option<i64>, Header,
            description = "Resume after this event id (a non-negative integer)",
            minimum = 0, maximum = 9223372036854775807i64, nullable = false
        ),
    ),
    responses(
        (status = 200, description = "The event stream", body = StreamEvent, content_type = "text/event-stream"),
        (status = 400, description = "Not a job id, or a bad `Last-Event-ID` or `after`", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
async fn events(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // Refused whether or not `Last-Event-ID` (which wins) is sent too.
    if q.after.is_some_and(|n| n < 0) {
        return Err(bad(StatusCode::BAD_REQUEST, "after must be non-negative"));
    }
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

/// Children of a job, in spawn order, with their results.
///
/// Page on with `after` = the last index until a page is empty. A page
/// carries at most about 8 MiB of outputs (always at least one child).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/children",
    tag = "jobs",
    params(
        JobId,
        ("after" = Option<i64>, Query, description = "Children after this index (default -1: from the first)",
            minimum = -9223372036854775808i64, maximum = 9223372036854775807i64),
        ("limit" = Option<i64>, Query, description = "Children a page (default 1000)", minimum = 1, maximum = 10000),
        ("seq" = Option<i32>, Query, description = "The fan-out (phase position) to read (default: the latest)",
            minimum = -2147483648, maximum = 2147483647),
        ("format" = Option<ChildrenFormat>, Query, description = "`json` (default) or `msgpack` (the wire's `ChildResult` list)"),
    ),
    responses(
        (status = 200, description = "A page of children", content(
            (Children = "application/json"),
            (MsgpackBody = "application/msgpack"),
        )),
        (status = 400, description = "Not a job id, or a bad parameter", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
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
    let children = rows
        .into_iter()
        .map(|r| Child {
            id: r.id,
            index: r.child_index,
            kind: r.kind,
            status: r.status,
            output: payload_json(r.output.as_deref()),
            error: r.error,
        })
        .collect();
    Ok(Json(Children { children }).into_response())
}

/// The schema of a MessagePack body: bytes, not JSON.
pub(crate) struct MsgpackBody;

impl utoipa::PartialSchema for MsgpackBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .content_media_type("application/msgpack")
            .description(Some(
                "A MessagePack array of the wire's `ChildResult` (docs/protocol.md)",
            ))
            .into()
    }
}

impl ToSchema for MsgpackBody {}

/// The format of `/children`.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[expect(dead_code, reason = "only its schema is used")]
pub(crate) enum ChildrenFormat {
    /// JSON (the default).
    Json,
    /// MessagePack.
    Msgpack,
}

/// Counts for the job's whole tree: by status, by phase and status,
/// progress, elapsed time, rate and ETA.
///
/// One read of the tree's summary row, whatever the tree's size; jobs not
/// spawned yet are not counted.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/tree",
    tag = "jobs",
    params(JobId),
    responses(
        (status = 200, description = "The tree's counts", body = Tree),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
async fn tree(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Tree>, ApiError> {
    let id = parse_id(&id)?;
    // Only the root is needed: not the job's output, which may be megabytes.
    let Some(root_id) = store::root_of(&state.pool, id).await? else {
        return Err(no_job(id));
    };
    let Some(view) = store::tree(&state.pool, root_id).await? else {
        return Err(no_job(id));
    };
    let counts = &view.counts;
    // Where the jobs are: counts by status within each phase.
    let mut phases: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (phase, status, n) in &view.phases {
        phases
            .entry(phase.clone())
            .or_default()
            .insert(status.clone(), *n);
    }
    let total = counts.total();
    let done = counts.terminal();
    let rate = view.window.per_second();
    let now = view.window.now_ms;
    Ok(Json(Tree {
        root_id,
        jobs: total,
        counts: counts
            .iter()
            .map(|(status, n)| (status.as_str().to_owned(), n))
            .collect(),
        phases,
        progress: if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        },
        remaining: total - done,
        elapsed_ms: rate::elapsed_ms(view.created_ms, view.finished_ms, now),
        rate_per_s: rate,
        rate_window: rate::WINDOW.to_owned(),
        eta_ms: rate::eta_ms(total - done, rate),
    }))
}

/// A job's log lines, oldest first: page on with `after` = the last id.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/logs",
    tag = "jobs",
    params(
        JobId,
        ("after" = Option<i64>, Query, description = "Lines after this id (default 0: from the first)",
            minimum = -9223372036854775808i64, maximum = 9223372036854775807i64),
        ("limit" = Option<i64>, Query, description = "Lines a page (default 100; clamped to 1-10000)",
            minimum = -9223372036854775808i64, maximum = 9223372036854775807i64),
    ),
    responses(
        (status = 200, description = "A page of log lines", body = Logs),
        (status = 400, description = "Not a job id, or a bad parameter", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
async fn logs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Logs>, ApiError> {
    let id = parse_id(&id)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = store::logs(&state.pool, id, q.after.unwrap_or(0), limit).await?;
    if rows.is_empty() {
        require_job(&state.pool, id).await?;
    }
    let logs = rows
        .into_iter()
        .map(|l| LogLine {
            id: l.id,
            level: l.level,
            message: l.message,
            at_ms: l.at_ms,
        })
        .collect();
    Ok(Json(Logs { logs }))
}

/// The latest fan-out's latencies: child p50/p99, fan-in latency.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/timing",
    tag = "jobs",
    params(JobId),
    responses(
        (status = 200, description = "The latest fan-out's latencies", body = Timing),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
async fn timing(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Timing>, ApiError> {
    let id = parse_id(&id)?;
    let t = store::fanout_timing(&state.pool, id).await?;
    if t.children == 0 {
        require_job(&state.pool, id).await?;
    }
    Ok(Json(Timing {
        children: t.children,
        child_p50_ms: t.child_p50_ms,
        child_p99_ms: t.child_p99_ms,
        fanin_latency_ms: t.fanin_latency_ms,
    }))
}

/// Durable counters of reports the coordinator fenced, refused or
/// dead-lettered.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "service",
    responses(
        (status = 200, description = "The counters", body = Stats),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
async fn stats(State(state): State<ApiState>) -> Result<Json<Stats>, ApiError> {
    let counter = |name| store::counter(&state.pool, name);
    Ok(Json(Stats {
        fenced_reports: counter("fenced_reports").await?,
        forged_reports: counter("forged_reports").await?,
        refused_reports: counter("refused_reports").await?,
        poisoned_reports: counter("poisoned_reports").await?,
    }))
}

/// Prometheus counters (open unless `TRIBUTARY_METRICS_TOKEN` is set).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
    ),
)]
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
