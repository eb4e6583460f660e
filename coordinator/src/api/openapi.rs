//! `GET /openapi.json`: the API's OpenAPI 3.1 document, derived from the
//! handlers' `#[utoipa::path]` annotations and the answer types
//! ([`super::answer`]), and built once.
//!
//! What the layers in front of the handlers add is described here, on
//! every operation at once (`Layers`), not on each handler: the bearer
//! token and its 401 and 403 on every route but the probes (`/metrics`
//! takes a token only when `TRIBUTARY_METRICS_TOKEN` is set), 408 (the
//! request timeout) on every route, and 413 (a body over the limit) on
//! every route that takes a body.
//!
//! The document sits behind the same read access as the API (the read
//! token opens it): it is harmless metadata, but one rule for every route
//! but the probes is easier to reason about than exceptions, and a
//! scanner without a token learns nothing of the routes.
//!
//! `scripts/schemathesis` fuzzes a live coordinator against this document.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response as Answer, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi};

use super::answer::ErrorBody;
use super::error::{ApiError, bad};
use crate::auth::OPEN_PATHS;

/// The document's definition: every handler, and what the layers add.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tributary coordinator API",
        description = "Submit jobs that fan out into child jobs and fan back in; read their status, children, tree, logs and events; steer them (cancel, pause, resume, retry). Every 4xx and 5xx answers `{\"error\": reason}`; an unknown route is 404 and a wrong method 405 (with `Allow`), in the same shape.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::submit,
        super::list::list,
        super::job,
        super::children,
        super::tree,
        super::logs,
        super::timing,
        super::waiting::waiting,
        super::events,
        super::control::cancel,
        super::control::pause,
        super::control::resume,
        super::control::retry,
        super::stats,
        super::fleet::fleet,
        super::metrics,
        super::healthz,
        super::readyz,
        document,
    ),
    components(schemas(
        ErrorBody,
        super::list::TimeOrMillis,
        super::ChildrenFormat,
        crate::event_data::SnapshotData,
        crate::event_data::CountsData,
        crate::event_data::JobEventData<crate::event_data::StatusChange>,
        crate::event_data::JobEventData<crate::event_data::ProgressChange>,
        crate::event_data::JobEventData<crate::event_data::LogLine>,
    )),
    modifiers(&Layers),
    tags(
        (name = "jobs", description = "Submit, find and read jobs"),
        (name = "control", description = "Cancel, pause, resume and retry a job and its subtree"),
        (name = "service", description = "Probes, counters, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// The name of the bearer-token security scheme.
const BEARER: &str = "bearer";

/// Adds what the layers in front of the handlers do to every operation:
/// security, 401/403, 408 and 413.
struct Layers;

impl Modify for Layers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`TRIBUTARY_API_TOKEN` grants everything; `TRIBUTARY_READ_TOKEN` GET and HEAD only (anything else is 403); `TRIBUTARY_METRICS_TOKEN` /metrics only. With neither the API nor the read token set, the API is open (loopback only).",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let open = OPEN_PATHS.contains(&path.as_str());
            let optional = path == "/metrics";
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                describe_layers(op, open, optional);
                optional_body(op);
            }
        }
    }
}

/// An `Option<T>` body comes out of the derive as `oneOf [T, null]`; but
/// for these handlers an optional body is an absent one (`null` is refused
/// as a body of the wrong shape): the body is `T`, not required.
fn optional_body(op: &mut Operation) {
    let Some(RefOr::T(body)) = &mut op.request_body else {
        return;
    };
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else {
            continue;
        };
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let is_null = |s: &RefOr<Schema>| {
            matches!(s, RefOr::T(Schema::Object(o))
                if o.schema_type == SchemaType::Type(Type::Null))
        };
        let mut items = one_of.items.iter().filter(|s| !is_null(s));
        if let (Some(only), None) = (items.next(), items.next())
            && one_of.items.iter().any(is_null)
        {
            content.schema = Some(only.clone());
            body.required = Some(Required::False);
        }
    }
}

fn describe_layers(op: &mut Operation, open: bool, optional_token: bool) {
    let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
    op.security = Some(if open {
        Vec::new()
    } else if optional_token {
        vec![SecurityRequirement::default(), bearer]
    } else {
        vec![bearer]
    });
    let answers = &mut op.responses.responses;
    if !open {
        answers.insert(
            "401".into(),
            RefOr::T(
                ResponseBuilder::from(error_answer(
                    "No bearer token, or not one of the coordinator's",
                ))
                .header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some("`Bearer`"))
                        .build(),
                )
                .build(),
            ),
        );
        answers.insert(
            "403".into(),
            RefOr::T(error_answer(
                "A valid token that does not grant this request (the read token writing, the metrics token on the API)",
            )),
        );
    }
    answers.insert(
        "408".into(),
        RefOr::T(error_answer(
            "Not completed within `TRIBUTARY_HTTP_REQUEST_TIMEOUT_SECS` (body and handler)",
        )),
    );
    if op.request_body.is_some() {
        answers.insert(
            "413".into(),
            RefOr::T(error_answer(
                "A body over the limit (twice `TRIBUTARY_MAX_INPUT_BYTES` plus 64 KiB, at least 1 MiB)",
            )),
        );
    }
}

/// An answer with the error body.
fn error_answer(description: &str) -> Answer {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// The document as JSON, built on first use.
static DOCUMENT: LazyLock<Result<Bytes, String>> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .map(Bytes::from)
        .map_err(|e| e.to_string())
});

/// This API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", body = Object, content_type = "application/json"),
        (status = 500, description = "The document could not be written", body = ErrorBody),
    ),
)]
pub(crate) async fn document() -> Result<Response, ApiError> {
    match &*DOCUMENT {
        Ok(json) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response())
        }
        Err(e) => Err(bad(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the OpenAPI document: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::routing::MethodFilter;
    use serde_json::Value;

    use super::*;
    use crate::api::routes;

    fn document() -> Value {
        let json = ApiDoc::openapi().to_json().expect("the document as JSON");
        serde_json::from_str(&json).expect("the document parses")
    }

    fn method_name(m: MethodFilter) -> &'static str {
        if m == MethodFilter::GET {
            "get"
        } else if m == MethodFilter::POST {
            "post"
        } else {
            panic!("a route with a method the document test does not know: {m:?}")
        }
    }

    #[test]
    fn every_route_is_in_the_document_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let documented: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("a path item")
                    .keys()
                    .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "delete" | "patch"))
                    .map(|m| (m.clone(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let served: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (method_name(r.method).to_owned(), r.path.to_owned()))
            .collect();
        let missing: Vec<_> = served.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes missing from the document: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(extra.is_empty(), "documented but not served: {extra:?}");
    }

    #[test]
    fn every_operation_describes_its_errors_and_security() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let answers = op["responses"].as_object().expect("responses");
                let name = format!("{method} {path}");
                assert!(answers.contains_key("408"), "{name}: no 408");
                let open = OPEN_PATHS.contains(&path.as_str());
                assert_eq!(answers.contains_key("401"), !open, "{name}: 401");
                assert_eq!(answers.contains_key("403"), !open, "{name}: 403");
                let security = op["security"].as_array().expect("security");
                assert_eq!(security.is_empty(), open, "{name}: security");
                for (status, answer) in answers {
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if is_error {
                        assert_eq!(
                            answer["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{name} {status}: not the error body"
                        );
                    }
                }
                if path.starts_with("/v1/jobs/{id}") {
                    let params = op["parameters"].as_array().expect("parameters");
                    assert!(
                        params.iter().any(|p| p["name"] == "id"
                            && p["in"] == "path"
                            && p["schema"]["format"] == "uuid"),
                        "{name}: no uuid id parameter"
                    );
                    assert!(answers.contains_key("404"), "{name}: no 404");
                }
                if op.get("requestBody").is_some() {
                    assert!(answers.contains_key("413"), "{name}: no 413");
                }
            }
        }
    }

    #[test]
    fn the_options_schema_names_the_fields_the_handler_reads() {
        let doc = document();
        let options = &doc["components"]["schemas"]["SubmitOptions"]["properties"];
        let names: BTreeSet<&str> = options
            .as_object()
            .expect("options properties")
            .keys()
            .map(String::as_str)
            .collect();
        let fields: BTreeSet<&str> = tributary_common::job::JobOptions::FIELDS
            .into_iter()
            .collect();
        assert_eq!(names, fields);
    }

    #[tokio::test]
    async fn the_document_is_served_as_json() {
        let response = super::document().await.expect("the document");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body");
        let doc: Value = serde_json::from_slice(&body).expect("JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    }

    #[test]
    fn every_event_names_a_typed_schema_for_its_data() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let described = schemas["StreamEvent"].to_string();
        for name in [
            "SnapshotData",
            "CountsData",
            "JobEventData_StatusChange",
            "JobEventData_ProgressChange",
            "JobEventData_LogLine",
        ] {
            assert!(
                schemas[name]["properties"].is_object(),
                "{name}: {}",
                schemas[name]
            );
            assert!(described.contains(name), "StreamEvent does not name {name}");
        }
        let status = &schemas["JobEventData_StatusChange"]["properties"]["data"]["properties"];
        for field in [
            "status",
            "phase",
            "phase_seq",
            "attempt",
            "phase_status",
            "error",
            "warning",
        ] {
            assert!(status[field].is_object(), "StatusChange.{field}");
        }
    }
}
