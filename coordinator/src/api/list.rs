//! `GET /v1/jobs`: find jobs without knowing their ids.
//!
//! | parameter | meaning |
//! |---|---|
//! | (none) | roots, newest first |
//! | `root=ID` | every job of that tree, root included, newest first |
//! | `parent=ID` | that job's children, in spawn order |
//! | `status=S` | only jobs in status S (`pending` … `cancelled`) |
//! | `kind=K` | only jobs of kind K |
//! | `created_after=T` | only jobs made at or after T (RFC 3339, or ms since the epoch), by the time in their UUID v7 id |
//! | `limit=N` | 1..=500 jobs a page (default 50) |
//! | `cursor=C` | the previous page's `next_cursor` |
//!
//! The answer is `{"jobs": [...], "next_cursor": C | null}`; `null` means
//! the last page. Paging is by keyset (the last id, or the last spawn
//! position for children), so jobs added while a client pages never
//! shift a page: each job that existed when paging began is listed once.
//! A cursor is opaque: it is checked, and one from another listing shape
//! is refused (the codec is in `list/cursor.rs`).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tributary_common::limits;
use tributary_common::status::JobStatus;
use utoipa::IntoParams;
use uuid::Uuid;

use self::cursor::Cursor;
use super::ApiState;
use super::answer::{self, ErrorBody, JobList, JobStatusName, ListedChildren};
use super::error::{ApiError, bad};
use crate::store::{self, ListQuery, ListScope, ListedJob};

mod cursor;

/// Jobs a page holds unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 50;
/// Most jobs a page may hold.
pub const MAX_LIMIT: i64 = 500;

/// The query string, as text: each value is checked here, so a bad one is
/// refused with a reason naming it. The document describes each as what
/// it must be.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatusName>)]
    status: Option<String>,
    /// Only jobs of this kind.
    #[param(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]+$")]
    kind: Option<String>,
    /// Every job of this tree (a root's id), root included, newest first;
    /// not with `parent`.
    #[param(value_type = Option<Uuid>)]
    root: Option<String>,
    /// This job's children, in spawn order; not with `root`.
    #[param(value_type = Option<Uuid>)]
    parent: Option<String>,
    /// Only jobs made at or after this time, by the time in their UUID v7
    /// id: RFC 3339 (`2026-11-23T14:00:00Z`, `…+01:00`) or milliseconds
    /// since the epoch (below 2^48), not before 1970.
    #[param(value_type = Option<TimeOrMillis>)]
    created_after: Option<String>,
    /// Jobs a page (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The previous page's `next_cursor`, unchanged, with the same
    /// parameters.
    #[param(pattern = r"^(01[0-9a-fA-F]{32}|02[0-9a-fA-F]{24})$")]
    cursor: Option<String>,
}

/// The schema of `created_after`: an RFC 3339 time or milliseconds since
/// the epoch.
pub(crate) struct TimeOrMillis;

impl utoipa::PartialSchema for TimeOrMillis {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        use utoipa::openapi::{KnownFormat, SchemaFormat};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some((1_u64 << 48) - 1)),
            )
            .into()
    }
}

impl utoipa::ToSchema for TimeOrMillis {}

/// A validated listing request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Listing {
    scope: ListScope,
    status: Option<JobStatus>,
    kind: Option<String>,
    min_id: Option<Uuid>,
    limit: i64,
}

fn invalid(reason: String) -> ApiError {
    bad(StatusCode::BAD_REQUEST, reason)
}

fn parse_uuid(name: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|e| invalid(format!("invalid {name} {text:?}: {e}")))
}

impl Listing {
    /// Checks every parameter; the first bad one is named in a 400.
    pub(crate) fn parse(p: ListParams) -> Result<Self, ApiError> {
        let status = p
            .status
            .map(|s| {
                JobStatus::parse(&s).ok_or_else(|| {
                    let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                    invalid(format!(
                        "invalid status {s:?}: use one of {}",
                        known.join(", ")
                    ))
                })
            })
            .transpose()?;
        if let Some(kind) = &p.kind
            && !limits::valid_kind(kind)
        {
            return Err(invalid(format!(
                "invalid kind {kind:?}: use 1-128 characters from A-Z a-z 0-9 . _ -"
            )));
        }
        let limit = match &p.limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    invalid(format!(
                        "invalid limit {text:?}: use a whole number from 1 to {MAX_LIMIT}"
                    ))
                })?,
        };
        let min_id = p
            .created_after
            .as_deref()
            .map(|text| {
                parse_time_ms(text).map(store::uuid_floor).map_err(|why| {
                    invalid(format!(
                        "invalid created_after {text:?}: {why}; use RFC 3339 (2026-11-23T14:00:00Z) or milliseconds since the epoch"
                    ))
                })
            })
            .transpose()?;
        let cursor = p
            .cursor
            .as_deref()
            .map(|text| {
                Cursor::decode(text).map_err(|why| {
                    invalid(format!(
                        "invalid cursor {text:?}: {why}; pass the next_cursor of the previous page unchanged"
                    ))
                })
            })
            .transpose()?;
        let root = p
            .root
            .as_deref()
            .map(|t| parse_uuid("root", t))
            .transpose()?;
        let parent = p
            .parent
            .as_deref()
            .map(|t| parse_uuid("parent", t))
            .transpose()?;
        let wrong_cursor = |shape: &str| {
            invalid(format!(
                "invalid cursor: it continues another kind of listing, not {shape}; pass the next_cursor of the previous page with the same parameters"
            ))
        };
        let scope = match (root, parent, cursor) {
            (Some(_), Some(_), _) => {
                return Err(invalid(
                    "give root or parent, not both: parent= lists one job's children, root= a whole tree".into(),
                ));
            }
            (None, Some(parent), None) => ListScope::Children {
                parent,
                after: None,
            },
            (None, Some(parent), Some(Cursor::After(seq, index))) => ListScope::Children {
                parent,
                after: Some((seq, index)),
            },
            (None, Some(_), Some(Cursor::Before(_))) => return Err(wrong_cursor("children")),
            (Some(root), None, None) => ListScope::Tree { root, before: None },
            (Some(root), None, Some(Cursor::Before(id))) => ListScope::Tree {
                root,
                before: Some(id),
            },
            (None, None, None) => ListScope::Roots { before: None },
            (None, None, Some(Cursor::Before(id))) => ListScope::Roots { before: Some(id) },
            (_, None, Some(Cursor::After(..))) => return Err(wrong_cursor("jobs by id")),
        };
        Ok(Self {
            scope,
            status,
            kind: p.kind,
            min_id,
            limit,
        })
    }

    /// For an empty page of a tree or of children: a 404 if the job named
    /// does not exist, and a 400 if `root=` names a job that is not a root
    /// (an empty list would hide the mistake).
    async fn check_subject(&self, state: &ApiState) -> Result<(), ApiError> {
        let (id, want_root) = match self.scope {
            ListScope::Roots { .. } => return Ok(()),
            ListScope::Tree { root, .. } => (root, true),
            ListScope::Children { parent, .. } => (parent, false),
        };
        match store::root_of(&state.pool, id).await? {
            None => Err(bad(StatusCode::NOT_FOUND, format!("no job {id}"))),
            Some(root) if want_root && root != id => Err(invalid(format!(
                "job {id} is not a root: its tree's root is {root} (root= takes a root; parent= lists a job's children)"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The cursor that continues after `last`.
    fn cursor_after(&self, last: &ListedJob) -> Cursor {
        match self.scope {
            ListScope::Children { .. } => Cursor::After(
                last.parent_seq.unwrap_or_default(),
                last.child_index.unwrap_or_default(),
            ),
            ListScope::Roots { .. } | ListScope::Tree { .. } => Cursor::Before(last.id),
        }
    }
}

/// Milliseconds since the epoch in `text`: a whole number of them, or an
/// RFC 3339 time (`2026-11-23T14:00:00Z`, `…14:00:00.250+01:00`).
pub(crate) fn parse_time_ms(text: &str) -> Result<u64, &'static str> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // A UUID v7 holds 48 bits of milliseconds (until the year 10889).
        return text
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms < 1 << 48)
            .ok_or("out of range");
    }
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let part = text.get(range).ok_or("not a time")?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse::<i64>().map_err(|_| "not a time")
        } else {
            Err("not a time")
        }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err("not a time");
    }
    if b[13] != b':' || b[16] != b':' {
        return Err("not a time");
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("not a time");
        }
        let ms_digits = &fraction[..digits.min(3)];
        millis = ms_digits.parse::<i64>().map_err(|_| "not a time")?
            * 10i64.pow(3 - ms_digits.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err("not a time"),
            };
            let field = |range: std::ops::Range<usize>| {
                rest.get(range)
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or("not a time")
            };
            let (hours, minutes) = (field(1..3)?, field(4..6)?);
            if hours > 23 || minutes > 59 {
                return Err("offset out of range");
            }
            sign * (hours * 60 + minutes)
        }
        _ => return Err("no time zone (end with Z or +hh:mm)"),
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err("month out of range"),
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err("a field is out of range");
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60) * 1000)
        + millis;
    u64::try_from(ms).map_err(|_| "before 1970")
}

fn listed(j: ListedJob) -> answer::ListedJob {
    answer::ListedJob {
        id: j.id,
        root_id: j.root_id,
        parent_id: j.parent_id,
        child_index: j.child_index,
        terminal: JobStatus::parse(&j.status).is_some_and(JobStatus::is_terminal),
        kind: j.kind,
        status: j.status,
        phase: j.phase,
        phase_status: j.phase_status,
        attempt: j.attempt,
        children: ListedChildren {
            expected: j.children_expected,
            total: j.children_total,
            completed: j.children_completed,
            failed: j.children_failed,
            cancelled: j.children_cancelled,
        },
        error: j.error,
        error_truncated: j.error_truncated,
        created_at: j.created_at,
        updated_at: j.updated_at,
        finished_at: j.finished_at,
        created_ms: j.created_ms,
    }
}

/// Find jobs: roots newest first, a tree (`root`) or a parent's children
/// (`parent`), filtered by `status`, `kind` and `created_after`.
///
/// Pages by keyset: pass each answer's `next_cursor` back as `cursor` with
/// the same parameters until it is null. `root` with `parent`, a cursor of
/// another listing, or `root` naming a job that is not a root is a 400.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "A bad or unknown parameter, `root` with `parent`, a cursor of another listing, or `root` naming a child", body = ErrorBody),
        (status = 404, description = "No job `root` or `parent`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    Query(params): Query<ListParams>,
) -> Result<Json<JobList>, ApiError> {
    let listing = Listing::parse(params)?;
    let mut rows = store::list_jobs(
        &state.pool,
        &ListQuery {
            scope: listing.scope.clone(),
            status: listing.status.map(JobStatus::as_str),
            kind: listing.kind.as_deref(),
            min_id: listing.min_id,
            // One more than shown: whether it comes says if a page follows.
            limit: listing.limit + 1,
        },
    )
    .await?;
    if rows.is_empty() {
        listing.check_subject(&state).await?;
    }
    let more = rows.len() as i64 > listing.limit;
    rows.truncate(listing.limit as usize);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(listing.cursor_after(last).encode()),
        _ => None,
    };
    Ok(Json(JobList {
        jobs: rows.into_iter().map(listed).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> ListParams {
        let query: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let uri: axum::http::Uri = format!("/v1/jobs?{query}").parse().expect("a URI");
        Query::<ListParams>::try_from_uri(&uri)
            .expect("a query string")
            .0
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        match Listing::parse(params(pairs)) {
            Ok(l) => panic!("{pairs:?} accepted as {l:?}"),
            Err(e) => {
                assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{pairs:?}");
                e.reason().to_owned()
            }
        }
    }

    #[test]
    fn defaults_list_roots_fifty_at_a_time() {
        let l = Listing::parse(ListParams::default()).expect("no parameters");
        assert_eq!(l.scope, ListScope::Roots { before: None });
        assert_eq!(
            (l.limit, l.status, l.kind, l.min_id),
            (50, None, None, None)
        );
    }

    #[test]
    fn parameters_pick_the_scope_and_filters() {
        let id = Uuid::now_v7();
        let text = id.to_string();
        let l = Listing::parse(params(&[
            ("parent", &text),
            ("status", "failed"),
            ("limit", "500"),
        ]))
        .expect("valid");
        assert_eq!(
            l.scope,
            ListScope::Children {
                parent: id,
                after: None
            }
        );
        assert_eq!((l.status, l.limit), (Some(JobStatus::Failed), 500));
        let cursor = Cursor::Before(id).encode();
        let l = Listing::parse(params(&[
            ("root", &text),
            ("cursor", &cursor),
            ("kind", "bench.leaf"),
        ]))
        .expect("valid");
        assert_eq!(
            l.scope,
            ListScope::Tree {
                root: id,
                before: Some(id)
            }
        );
        assert_eq!(l.kind.as_deref(), Some("bench.leaf"));
        let l = Listing::parse(params(&[("created_after", "1000")])).expect("valid");
        assert_eq!(l.min_id, Some(store::uuid_floor(1000)));
    }

    #[test]
    fn bad_parameters_are_refused_naming_them() {
        let id = Uuid::now_v7().to_string();
        let children_cursor = Cursor::After(1, 5).encode();
        let id_cursor = Cursor::Before(Uuid::now_v7()).encode();
        for (pairs, names) in [
            (vec![("status", "done")], "invalid status"),
            (vec![("kind", "has%20space")], "invalid kind"),
            (vec![("limit", "0")], "invalid limit"),
            (vec![("limit", "501")], "invalid limit"),
            (vec![("limit", "ten")], "invalid limit"),
            (vec![("root", "nope")], "invalid root"),
            (vec![("parent", "1234")], "invalid parent"),
            (vec![("cursor", "nope")], "invalid cursor"),
            (
                vec![("created_after", "yesterday")],
                "invalid created_after",
            ),
            (
                vec![("created_after", "2026-13-01T00:00:00Z")],
                "invalid created_after",
            ),
            (vec![("root", &id), ("parent", &id)], "not both"),
            (
                vec![("cursor", &children_cursor)],
                "another kind of listing",
            ),
            (
                vec![("parent", &id), ("cursor", &id_cursor)],
                "another kind of listing",
            ),
        ] {
            let reason = refused(&pairs);
            assert!(reason.contains(names), "{pairs:?}: {reason}");
        }
    }

    #[test]
    fn times_parse_as_rfc_3339_or_milliseconds() {
        assert_eq!(parse_time_ms("0"), Ok(0));
        assert_eq!(parse_time_ms("281474976710655"), Ok((1 << 48) - 1));
        assert_eq!(parse_time_ms("1763906400000"), Ok(1_763_906_400_000));
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time_ms("2025-11-23T14:00:00Z"), Ok(1_763_906_400_000));
        assert_eq!(
            parse_time_ms("2025-11-23T14:00:00.25Z"),
            Ok(1_763_906_400_250)
        );
        assert_eq!(
            parse_time_ms("2025-11-23T14:00:00.123456Z"),
            Ok(1_763_906_400_123)
        );
        assert_eq!(
            parse_time_ms("2025-11-23T15:30:00+01:30"),
            Ok(1_763_906_400_000)
        );
        assert_eq!(parse_time_ms("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "",
            "2025-11-23",
            "2025-11-23T14:00:00",
            "2025-02-29T00:00:00Z",
            "2025-11-23T24:00:00Z",
            "2025-11-23T14:00:00.Z",
            "2025-11-23T14:00:00+1:00",
            "1969-12-31T23:59:59Z",
            "99999999999999999999999",
            "281474976710656",
            "2025-11-23T14:00:00Zjunk",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad:?} parsed");
        }
    }
}
