//! Error answers: one shape, `{"error": reason}`, for every 4xx and 5xx;
//! how store failures map to statuses (without database text); and the
//! middlewares for the request timeout and the shape itself.

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::answer::ErrorBody;
use crate::store::StoreError;

/// An error answer: a status and a reason, as `{"error": reason}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self(status, reason.into())
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.0
    }

    /// Its reason.
    pub fn reason(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let error = store_error(&e);
        // The detail goes to the log only: database text can name tables,
        // hosts and values, none of which a client should see.
        if error.0.is_server_error() {
            tracing::error!("request failed: {e}");
        } else {
            tracing::info!("database refused a request's input: {e}");
        }
        error
    }
}

/// How a store failure is answered: input the database refuses (data
/// exceptions, class 22; constraint violations, 23; program limits, 54)
/// is the client's 422; a database that cannot be reached or is shedding
/// load is 503 "database unavailable"; anything else is our own 500.
fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::Db(sqlx::Error::Database(db)) => {
            sqlstate_error(db.code().as_deref().unwrap_or_default())
        }
        StoreError::Db(
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_),
        )
        | StoreError::Cancelled => unavailable(),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

pub(crate) fn unavailable() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
}

/// The answer for a Postgres SQLSTATE (pure, so it is tested directly).
fn sqlstate_error(code: &str) -> ApiError {
    let refused = |what: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the database refused the input: {what} (SQLSTATE {code})"),
        )
    };
    match code {
        "22021" => refused("text holds a NUL byte or is not valid UTF-8"),
        "22P05" => refused("text holds a character the database cannot store"),
        "22003" => refused("a number is out of range"),
        "22001" => refused("a value is too long"),
        c if c.starts_with("22") => refused("a value is invalid"),
        c if c.starts_with("23") => refused("a value breaks a constraint"),
        c if c.starts_with("54") => refused("a value is too large"),
        // Connection exceptions, resources, operator intervention (shutdown,
        // recovery), transaction rollbacks (deadlock, serialization), and a
        // database that is gone or refuses the login (3D, 28): the service
        // is unavailable, whatever the request.
        c if ["08", "53", "57", "40", "58", "3D", "28"]
            .iter()
            .any(|class| c.starts_with(class)) =>
        {
            unavailable()
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

/// A JSON object of type `T` from a request body: malformed JSON is a 400,
/// anything else that is not a `T` (an array among them, which serde
/// would read into a struct by position) a 422. `what` names the body.
pub(crate) fn from_json_object<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    let value: T = serde_json::from_slice(bytes).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        bad(status, format!("invalid {what}: {e}"))
    })?;
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid {what}: expected a JSON object"),
        ));
    }
    Ok(value)
}

pub(crate) fn bad(status: StatusCode, reason: impl Into<String>) -> ApiError {
    ApiError(status, reason.into())
}

pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    bad(
        StatusCode::NOT_FOUND,
        format!("no route {method} {}", uri.path()),
    )
}

/// Cuts a request off after `timeout` (reading its body included) with a
/// 408: a client trickling a body cannot hold a handler forever.
pub(crate) async fn request_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => bad(
            StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within {} s", timeout.as_secs()),
        )
        .into_response(),
    }
}

/// Refuses a body whose `Content-Length` is over `body_limit` at once, and
/// gives every 4xx and 5xx the one shape `{"error": reason}`, including the
/// ones axum's extractors and routing produce in plain text (bad query
/// strings, oversize bodies, wrong methods).
pub(crate) async fn json_errors(
    State(body_limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    // A body announced over the limit is refused before a byte of it is read.
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = announced
        && length > body_limit as u64
    {
        return bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {length} bytes is over the {body_limit}-byte limit"),
        )
        .into_response();
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let reason = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if allowed.is_empty() {
                format!("method {method} not allowed on {path}")
            } else {
                format!("method {method} not allowed on {path}; allowed: {allowed}")
            }
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request body over the {body_limit}-byte limit ({text})")
        }
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_lowercase(),
        _ => text,
    };
    let (_, body) = Json(ErrorBody { error: reason })
        .into_response()
        .into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_input_is_422_and_names_no_database_detail() {
        for code in [
            "22021", "22003", "22001", "22P02", "22P05", "23514", "54000",
        ] {
            let e = sqlstate_error(code);
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY, "{code}");
            assert!(e.reason().contains(code), "{code}: {}", e.reason());
        }
        assert!(sqlstate_error("22021").reason().contains("NUL"));
        assert!(sqlstate_error("22003").reason().contains("out of range"));
    }

    #[test]
    fn an_outage_is_503_database_unavailable() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "40001", "40P01", "3D000", "28P01",
        ] {
            let e = sqlstate_error(code);
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{code}");
            assert_eq!(e.reason(), "database unavailable");
        }
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            let answer = store_error(&StoreError::Db(e));
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(answer.reason(), "database unavailable");
        }
    }

    #[test]
    fn anything_else_is_a_bare_500() {
        for code in ["42P01", "42703", "XX000", ""] {
            let e = sqlstate_error(code);
            assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR, "{code}");
            assert_eq!(e.reason(), "internal error");
        }
        let e = store_error(&StoreError::Db(sqlx::Error::RowNotFound));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
