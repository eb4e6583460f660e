//! Operators steer a job and its subtree: cancel, pause, resume, retry.
//!
//! Each answers `202` with the job's status after the action, and whether
//! the request moved it. Each is idempotent: cancelling a cancelled job,
//! pausing a paused one, resuming a running one or retrying a job that is
//! running again changes nothing and answers `changed: false`. Only a
//! retry of a completed job is refused (`409`). The job itself moves in
//! the request's transaction; its descendants follow through the sweeper
//! ([`crate::control`]), recorded in that same transaction.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use tributary_common::limits;
use tributary_common::status::JobStatus;
use utoipa::ToSchema;
use uuid::Uuid;

use super::answer::{ErrorBody, Steered};
use super::error::{ApiError, bad, from_json_object};
use super::{ApiState, JobId, no_job, parse_id};
use crate::store::{self, Action};

/// Longest operator-given reason kept, in bytes.
const MAX_REASON_BYTES: usize = 512;

/// The optional body of cancel, pause and resume.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ControlBody {
    /// Why (kept, on one line and cut to 512 bytes, as a cancelled job's
    /// error; pause and resume ignore it).
    reason: Option<String>,
}

/// The optional body of retry.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBody {
    /// The phase to run again (default: the one the job ended in): 1-128
    /// bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    phase: Option<String>,
}

/// An empty body is the default; anything else must be a JSON object of
/// the expected shape, sent as `application/json`.
fn body<T: Default + for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with("application/json") {
        return Err(bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a request body must be application/json, not {ct:?}"),
        ));
    }
    from_json_object(bytes, "request body")
}

/// Cancel the job and every open job below it (idempotent).
///
/// The job moves at once; its descendants follow through a sweeper. The
/// body is optional.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "control",
    params(JobId),
    request_body(content = Option<ControlBody>, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the job's status after the action", body = Steered),
        (status = 400, description = "Not a job id, or malformed JSON", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 415, description = "A body that is not application/json", body = ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
pub(super) async fn cancel(
    state: State<ApiState>,
    id: Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Steered>), ApiError> {
    let b: ControlBody = body(&headers, &bytes)?;
    let reason = match b.reason {
        Some(r) => format!(
            "cancelled by an operator: {}",
            limits::one_line(&r, MAX_REASON_BYTES)
        ),
        None => "cancelled by an operator".to_owned(),
    };
    steer(state, id, Action::Cancel, &reason).await
}

/// Hold the job and its subtree: no new phase starts (idempotent).
///
/// The job moves at once; its descendants follow through a sweeper. The
/// body is optional.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/pause",
    tag = "control",
    params(JobId),
    request_body(content = Option<ControlBody>, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the job's status after the action", body = Steered),
        (status = 400, description = "Not a job id, or malformed JSON", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 415, description = "A body that is not application/json", body = ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
pub(super) async fn pause(
    state: State<ApiState>,
    id: Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Steered>), ApiError> {
    let _: ControlBody = body(&headers, &bytes)?;
    steer(state, id, Action::Pause, "").await
}

/// Release exactly what a pause held (idempotent).
///
/// The job moves at once; its descendants follow through a sweeper. The
/// body is optional. A paused job whose parent is paused too is refused
/// (`409`): resume the parent.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/resume",
    tag = "control",
    params(JobId),
    request_body(content = Option<ControlBody>, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the job's status after the action", body = Steered),
        (status = 400, description = "Not a job id, or malformed JSON", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Its parent is paused: resume the parent", body = ErrorBody),
        (status = 415, description = "A body that is not application/json", body = ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
pub(super) async fn resume(
    state: State<ApiState>,
    id: Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Steered>), ApiError> {
    let _: ControlBody = body(&headers, &bytes)?;
    steer(state, id, Action::Resume, "").await
}

/// Moves the job now and records the walk of its descendants.
async fn steer(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    action: Action,
    reason: &str,
) -> Result<(StatusCode, Json<Steered>), ApiError> {
    let id = parse_id(&id)?;
    let before = store::job_status(&state.pool, id)
        .await?
        .ok_or_else(|| no_job(id))?;
    if let Err(why) = state.applier.steer(id, action, reason).await? {
        return Err(bad(StatusCode::CONFLICT, why));
    }
    answer(&state, id, action.as_str(), before).await
}

/// Run a failed or cancelled job again (idempotent).
///
/// It runs from the phase it ended in (or `phase`) with a fresh attempt
/// budget. A job that ended while waiting on its children (`stop_all`, or
/// a cancel) waits again instead, and only its failed and cancelled
/// children run again. A job that is open already (running again) is left
/// as it is: `changed: false`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "control",
    params(JobId),
    request_body(content = Option<RetryBody>, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the job's status after the action", body = Steered),
        (status = 409, description = "The job completed, or its parent ended (the reason says why)", body = ErrorBody),
        (status = 400, description = "Not a job id, or malformed JSON", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 415, description = "A body that is not application/json", body = ErrorBody),
        (status = 422, description = "A body of the wrong shape, or a bad phase name", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
pub(super) async fn retry(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Steered>), ApiError> {
    let id = parse_id(&id)?;
    let b: RetryBody = body(&headers, &bytes)?;
    if let Some(phase) = &b.phase
        && !limits::valid_phase(phase)
    {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "invalid phase {:?}: use 1-{} bytes without control characters",
                limits::one_line(phase, 64),
                limits::MAX_NAME_BYTES
            ),
        ));
    }
    let before = store::job_status(&state.pool, id)
        .await?
        .ok_or_else(|| no_job(id))?;
    // Running again already (a repeated retry), or never ended: nothing
    // to do. The plan decides the rest under the row lock.
    if before.is_terminal()
        && let Err(reason) = state.applier.rerun(id, b.phase.as_deref()).await?
    {
        return Err(bad(StatusCode::CONFLICT, reason));
    }
    answer(&state, id, "retry", before).await
}

async fn answer(
    state: &ApiState,
    id: Uuid,
    action: &str,
    before: JobStatus,
) -> Result<(StatusCode, Json<Steered>), ApiError> {
    let status = store::job_status(&state.pool, id)
        .await?
        .ok_or_else(|| no_job(id))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Steered {
            id,
            action: action.to_owned(),
            status: status.as_str().to_owned(),
            changed: status != before,
        }),
    ))
}
