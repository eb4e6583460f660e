//! The `Idempotency-Key` header of `POST /v1/jobs`: the same key returns
//! the same job for 24 h ([`crate::store::KEY_TTL`]).
//!
//! - A new key: `201 {"id", "replayed": false}`, the job is made.
//! - The key again with the same request (same kind, input, and options
//!   once defaults are filled in): `200 {"id", "replayed": true}` with
//!   `Idempotent-Replayed: true` and the same `Location`; nothing is made.
//! - The key again with another request: `422`, naming the job the key
//!   already made (as the IETF idempotency-key draft answers a reused key).
//! - A key that is empty, over [`MAX_KEY_BYTES`], or not printable ASCII:
//!   `400`.

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::ApiState;
use super::answer::Submitted;
use super::error::{ApiError, bad};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The answer header marking a replay.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// The request's idempotency key, if it sent one, or why it is unusable.
pub(crate) fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "send one Idempotency-Key header, not several",
        ));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_BYTES {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!(
                "Idempotency-Key must be 1-{MAX_KEY_BYTES} bytes, not {}",
                bytes.len()
            ),
        ));
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be printable ASCII (space to ~); a UUID is a good key",
        ));
    }
    // Printable ASCII, checked above, is UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The submission in a normal form: what the job will be, not how the JSON
/// spelled it. Object keys come out sorted (serde_json's map is ordered),
/// and options carry their defaults, so `{}` and no options are one request.
pub(crate) fn fingerprint(
    kind: &str,
    input: &Value,
    phase: &str,
    max_attempts: u32,
    max_child_failures: Option<i32>,
    failure_action: &str,
) -> Vec<u8> {
    json!({
        "kind": kind,
        "input": input,
        "phase": phase,
        "max_attempts": max_attempts,
        "max_child_failures": max_child_failures,
        "failure_action": failure_action,
    })
    .to_string()
    .into_bytes()
}

/// The answer to a submission: `201` for a new job, `200` for a replay of
/// an idempotency key (`replayed` is `None` when no key was sent).
pub(crate) fn submitted(
    state: &ApiState,
    kind: &str,
    id: Uuid,
    replayed: Option<bool>,
) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(&format!("/v1/jobs/{id}"))
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if replayed == Some(true) {
        return Ok((
            StatusCode::OK,
            [
                (header::LOCATION, location),
                (
                    HeaderName::from_static(REPLAYED),
                    HeaderValue::from_static("true"),
                ),
            ],
            Json(Submitted {
                id,
                replayed: Some(true),
            }),
        )
            .into_response());
    }
    state.metrics.submitted();
    state.relay_wake.notify_one();
    tracing::info!(job = %id, %kind, "submitted");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Submitted { id, replayed }),
    )
        .into_response())
}

/// The 422 for a key reused with another request.
pub(crate) fn conflict(key: &str, job: Uuid) -> ApiError {
    bad(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "Idempotency-Key {key:?} was used in the last 24 h for another request (it made job {job}): send the same request to get that job back, or use a new key"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                HeaderName::from_static(HEADER),
                HeaderValue::from_bytes(v).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn keys_are_short_printable_ascii() {
        assert_eq!(key(&HeaderMap::new()).expect("none"), None);
        assert_eq!(
            key(&with(&[b"order-42 retry"])).expect("fine").as_deref(),
            Some("order-42 retry")
        );
        let longest = "k".repeat(MAX_KEY_BYTES);
        assert!(key(&with(&[longest.as_bytes()])).is_ok());
        for bad in [
            &b""[..],
            "k".repeat(MAX_KEY_BYTES + 1).as_bytes(),
            b"tab\there",
            "caf\u{e9}".as_bytes(),
        ] {
            let e = key(&with(&[bad])).expect_err("refused");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(e.reason().contains("Idempotency-Key"), "{}", e.reason());
        }
        assert!(key(&with(&[b"a", b"b"])).is_err());
    }

    #[test]
    fn the_fingerprint_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"n": 1, "m": [1, 2]}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"m": [1, 2], "n": 1}"#).expect("json");
        let c: Value = serde_json::from_str(r#"{"m": [2, 1], "n": 1}"#).expect("json");
        let print = |v: &Value| fingerprint("k", v, "start", 3, None, "continue");
        assert_eq!(print(&a), print(&b));
        assert_ne!(print(&a), print(&c));
        assert_ne!(
            print(&a),
            fingerprint("k", &a, "start", 4, None, "continue")
        );
        assert_ne!(
            print(&a),
            fingerprint("j", &a, "start", 3, None, "continue")
        );
    }
}
