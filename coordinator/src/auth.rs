//! Who may call the API: bearer tokens, checked in one middleware layer
//! before any handler runs.
//!
//! | token | grants |
//! |---|---|
//! | `TRIBUTARY_API_TOKEN` | every route and method |
//! | `TRIBUTARY_READ_TOKEN` | `GET` and `HEAD` only (403 on anything that writes) |
//! | `TRIBUTARY_METRICS_TOKEN` | `/metrics` (which is open while it is unset) |
//!
//! No token or an unknown one is 401 (with `WWW-Authenticate: Bearer`); a
//! valid token that does not grant the request is 403. `/healthz`,
//! `/readyz` and the dashboard's static files (`/ui/`) are always open. With neither the API nor the
//! read token configured the API is open (local development); the
//! coordinator refuses to listen beyond loopback that way (see
//! [`crate::StartError::Unprotected`]). Tokens are compared in constant
//! time and never printed: [`Token`]'s `Debug` shows `***`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;

pub use tributary_common::token::{InvalidToken, Token};

/// The tokens one coordinator accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// Grants everything.
    pub api: Option<Token>,
    /// Grants `GET` and `HEAD`.
    pub read: Option<Token>,
    /// Grants `/metrics` (the API token does too).
    pub metrics: Option<Token>,
}

/// What [`Tokens::decide`] says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Allow,
    /// 401: no token, or not one of ours.
    Unauthorized(&'static str),
    /// 403: a valid token that does not grant this.
    Forbidden(&'static str),
}

/// Routes that stay open whatever is configured: probes must work before
/// anyone holds a token.
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Whether `path` is open whatever is configured: the probes, and the
/// dashboard's page and assets (`/ui`, `/ui/…`: static files that hold no
/// data; the page asks for a token and sends it on every API call).
pub fn is_open(path: &str) -> bool {
    OPEN_PATHS.contains(&path)
        || path
            .strip_prefix(crate::api::ui::PREFIX)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Tokens {
    /// Whether the API itself asks for a token.
    pub fn api_protected(&self) -> bool {
        self.api.is_some() || self.read.is_some()
    }

    /// The rule: who may call `method path` holding `bearer`.
    pub fn decide(&self, method: &Method, path: &str, bearer: Option<&[u8]>) -> Decision {
        if is_open(path) {
            return Decision::Allow;
        }
        let is = |t: &Option<Token>| match (t, bearer) {
            (Some(t), Some(b)) => t.matches(b),
            _ => false,
        };
        if path == "/metrics" {
            return match &self.metrics {
                None => Decision::Allow,
                // Compare both, so the time does not say which one matched.
                Some(_) if is(&self.metrics) | is(&self.api) => Decision::Allow,
                // A valid token of too narrow a scope is 403, as for writes.
                Some(_) if is(&self.read) => Decision::Forbidden(
                    "the read-only token does not open /metrics: use TRIBUTARY_METRICS_TOKEN or TRIBUTARY_API_TOKEN",
                ),
                Some(_) => Decision::Unauthorized(if bearer.is_none() {
                    "missing bearer token: /metrics needs TRIBUTARY_METRICS_TOKEN or TRIBUTARY_API_TOKEN"
                } else {
                    "invalid bearer token for /metrics"
                }),
            };
        }
        if !self.api_protected() {
            return Decision::Allow;
        }
        if bearer.is_none() {
            return Decision::Unauthorized(
                "missing bearer token: send `Authorization: Bearer <TRIBUTARY_API_TOKEN or TRIBUTARY_READ_TOKEN>`",
            );
        }
        let (api, read, metrics) = (is(&self.api), is(&self.read), is(&self.metrics));
        if api {
            Decision::Allow
        } else if read {
            if matches!(*method, Method::GET | Method::HEAD) {
                Decision::Allow
            } else {
                Decision::Forbidden(
                    "the read-only token grants GET and HEAD only; this request needs TRIBUTARY_API_TOKEN",
                )
            }
        } else if metrics {
            Decision::Forbidden("the metrics token opens /metrics only")
        } else {
            Decision::Unauthorized("invalid bearer token")
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any
/// case). A header in another scheme, or unreadable, counts as none.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The middleware: answers 401 (with `WWW-Authenticate: Bearer`) or 403
/// with a JSON reason, or passes the request on.
pub async fn require_token(
    State(tokens): State<std::sync::Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    let decision = tokens.decide(
        request.method(),
        request.uri().path(),
        bearer(request.headers()),
    );
    match decision {
        Decision::Allow => next.run(request).await,
        Decision::Unauthorized(reason) => {
            let mut response =
                ApiError::new(axum::http::StatusCode::UNAUTHORIZED, reason).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
        Decision::Forbidden(reason) => {
            ApiError::new(axum::http::StatusCode::FORBIDDEN, reason).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Option<Token> {
        Some(s.parse().expect("token"))
    }

    fn all() -> Tokens {
        Tokens {
            api: tok("api-secret"),
            read: tok("read-secret"),
            metrics: tok("metrics-secret"),
        }
    }

    #[test]
    fn the_rules() {
        use Decision::*;
        let t = all();
        let get = Method::GET;
        let post = Method::POST;
        let (api, read, metrics) = (
            Some(&b"api-secret"[..]),
            Some(&b"read-secret"[..]),
            Some(&b"metrics-secret"[..]),
        );
        // Probes are open.
        assert_eq!(t.decide(&get, "/healthz", None), Allow);
        assert_eq!(t.decide(&get, "/readyz", None), Allow);
        // So are the dashboard's static files, and nothing that merely
        // starts with their prefix.
        assert_eq!(t.decide(&get, "/ui", None), Allow);
        assert_eq!(t.decide(&get, "/ui/", None), Allow);
        assert_eq!(t.decide(&get, "/ui/assets/app.0123.js", None), Allow);
        assert!(matches!(t.decide(&get, "/uinfo", None), Unauthorized(_)));
        // The API token grants everything.
        assert_eq!(t.decide(&post, "/v1/jobs", api), Allow);
        assert_eq!(t.decide(&get, "/v1/jobs/x", api), Allow);
        assert_eq!(t.decide(&get, "/metrics", api), Allow);
        // The read token reads, and only reads.
        assert_eq!(t.decide(&get, "/v1/jobs/x/children", read), Allow);
        assert_eq!(t.decide(&Method::HEAD, "/v1/jobs/x", read), Allow);
        assert!(matches!(t.decide(&post, "/v1/jobs", read), Forbidden(_)));
        assert!(matches!(
            t.decide(&Method::DELETE, "/v1/jobs/x", read),
            Forbidden(_)
        ));
        assert!(matches!(t.decide(&get, "/metrics", read), Forbidden(_)));
        // No token, or a wrong one; a token of another scope is 403.
        assert!(matches!(
            t.decide(&get, "/v1/jobs/x", None),
            Unauthorized(_)
        ));
        assert!(matches!(
            t.decide(&get, "/v1/jobs/x", metrics),
            Forbidden(_)
        ));
        assert!(matches!(
            t.decide(&get, "/nowhere", Some(b"nope")),
            Unauthorized(_)
        ));
        assert_eq!(t.decide(&get, "/metrics", metrics), Allow);
        assert!(matches!(t.decide(&get, "/metrics", None), Unauthorized(_)));
    }

    #[test]
    fn unconfigured_parts_are_open() {
        let none = Tokens::default();
        assert_eq!(
            none.decide(&Method::POST, "/v1/jobs", None),
            Decision::Allow
        );
        assert_eq!(none.decide(&Method::GET, "/metrics", None), Decision::Allow);
        let api_only = Tokens {
            api: tok("a"),
            ..Tokens::default()
        };
        assert_eq!(
            api_only.decide(&Method::GET, "/metrics", None),
            Decision::Allow
        );
        assert!(matches!(
            api_only.decide(&Method::GET, "/v1/stats", None),
            Decision::Unauthorized(_)
        ));
        let metrics_only = Tokens {
            metrics: tok("m"),
            ..Tokens::default()
        };
        assert_eq!(
            metrics_only.decide(&Method::POST, "/v1/jobs", None),
            Decision::Allow
        );
        assert!(matches!(
            metrics_only.decide(&Method::GET, "/metrics", None),
            Decision::Unauthorized(_)
        ));
    }

    #[test]
    fn bearer_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("value"));
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(
            header::AUTHORIZATION,
            "bearer  abc ".parse().expect("value"),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().expect("value"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bear".parse().expect("value"));
        assert_eq!(bearer(&h), None);
    }
}
