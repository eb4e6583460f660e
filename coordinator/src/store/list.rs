//! Listing jobs for `GET /v1/jobs`: one page of roots, of one tree, or of
//! one parent's children, by keyset, each shape served by its own index
//! (migration 0006).
//!
//! Every statement is a fixed string: the filters a caller leaves out are
//! not `$n is null or …` guards but another statement, so a generic plan
//! still picks the index that matches the filters (a guard would hide the
//! equality from the planner and send it to the unfiltered index).

use sqlx::PgPool;
use uuid::Uuid;

use super::{Result, trip};

/// Longest error text a listed job carries, in characters; the full text
/// is on `GET /v1/jobs/{id}`.
pub const LISTED_ERROR_CHARS: i32 = 512;

/// Which jobs a page lists, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// Roots, newest first, with ids below `before`.
    Roots {
        /// Keyset: only ids below this one (the previous page's last).
        before: Option<Uuid>,
    },
    /// Every job of one tree, root included, newest first.
    Tree {
        /// The root.
        root: Uuid,
        /// Keyset: only ids below this one.
        before: Option<Uuid>,
    },
    /// One parent's children in spawn order (fan-out, then index).
    Children {
        /// The parent.
        parent: Uuid,
        /// Keyset: only children after this `(parent_seq, child_index)`.
        after: Option<(i32, i64)>,
    },
}

/// One page's request: scope, filters, size.
#[derive(Debug, Clone)]
pub struct ListQuery<'a> {
    /// Which jobs, from where.
    pub scope: ListScope,
    /// Only this status.
    pub status: Option<&'a str>,
    /// Only this kind.
    pub kind: Option<&'a str>,
    /// Only ids at or above this one: the first id of the `created_after`
    /// millisecond (see [`uuid_floor`]).
    pub min_id: Option<Uuid>,
    /// Rows to read (the API asks for one more than it shows, to know
    /// whether another page follows).
    pub limit: i64,
}

/// A job as the listing shows it: no input, output or checkpoint, and the
/// error cut to [`LISTED_ERROR_CHARS`].
#[derive(Debug, sqlx::FromRow)]
pub struct ListedJob {
    /// The job.
    pub id: Uuid,
    /// Its tree.
    pub root_id: Uuid,
    /// Its parent.
    pub parent_id: Option<Uuid>,
    /// The fan-out of its parent that spawned it.
    pub parent_seq: Option<i32>,
    /// Its spawn index.
    pub child_index: Option<i64>,
    /// Kind.
    pub kind: String,
    /// Status.
    pub status: String,
    /// Current phase.
    pub phase: String,
    /// Phase status.
    pub phase_status: String,
    /// Attempt of the current phase.
    pub attempt: i32,
    /// Sealed child count of the current fan-out.
    pub children_expected: Option<i64>,
    /// Children counted in.
    pub children_total: i64,
    /// Completed.
    pub children_completed: i64,
    /// Failed.
    pub children_failed: i64,
    /// Cancelled.
    pub children_cancelled: i64,
    /// The error, cut to [`LISTED_ERROR_CHARS`].
    pub error: Option<String>,
    /// Whether `error` was cut.
    pub error_truncated: bool,
    /// Created, RFC 3339 UTC.
    pub created_at: String,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
    /// Finished, RFC 3339 UTC.
    pub finished_at: Option<String>,
    /// Created, ms since the epoch.
    pub created_ms: i64,
}

/// The select list every listing shares (no blobs: only `left(error, …)`
/// reads a possibly long value, and only its first characters).
macro_rules! listed_columns {
    () => {
        "select id, root_id, parent_id, parent_seq, child_index, kind, status, phase, phase_status,
                attempt, children_expected, children_total, children_completed, children_failed,
                children_cancelled,
                left(error, $6) as error,
                coalesce(length(error) > $6, false) as error_truncated,
                to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') as created_at,
                to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') as updated_at,
                to_char(finished_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') as finished_at,
                (extract(epoch from created_at) * 1000)::int8 as created_ms
         from jobs "
    };
}

// Parameters, bound alike for every statement (sqlx sends their types, so
// a statement may leave some unused): $1 the scope's id, $2 the keyset
// bound, $3 the lowest id, $4 status, $5 kind, $6 error characters, $7 the
// limit. Roots and trees page on `$3 <= id < $2`; children on
// `(parent_seq, child_index) > ($2, $8)`.

const ROOTS: &str = concat!(
    listed_columns!(),
    "where parent_id is null and id < $2 and id >= $3
     order by id desc limit $7"
);
const ROOTS_BY_STATUS: &str = concat!(
    listed_columns!(),
    "where parent_id is null and status = $4 and id < $2 and id >= $3
     order by id desc limit $7"
);
const ROOTS_BY_KIND: &str = concat!(
    listed_columns!(),
    "where parent_id is null and kind = $5 and id < $2 and id >= $3
     order by id desc limit $7"
);
const ROOTS_BY_KIND_AND_STATUS: &str = concat!(
    listed_columns!(),
    "where parent_id is null and kind = $5 and status = $4 and id < $2 and id >= $3
     order by id desc limit $7"
);
// A tree's range of (root_id, id) bounds the scan; status and kind filter
// within it (an index per filter over every child would tax each child's
// insert and status change on the applier's hot path).
const TREE: &str = concat!(
    listed_columns!(),
    "where root_id = $1 and id < $2 and id >= $3
       and ($4::text is null or status = $4) and ($5::text is null or kind = $5)
     order by id desc limit $7"
);
const CHILDREN: &str = concat!(
    listed_columns!(),
    "where parent_id = $1 and (parent_seq, child_index) > ($2::int4, $8::int8) and id >= $3
       and ($4::text is null or status = $4) and ($5::text is null or kind = $5)
     order by parent_seq, child_index limit $7"
);

/// The lowest UUID v7 of the millisecond `ms` since the epoch: every id
/// made in that millisecond or later is at least this.
pub fn uuid_floor(ms: u64) -> Uuid {
    // 48 bits of milliseconds, then zeroes (below the version nibble, so
    // below any real v7 id of the same millisecond).
    Uuid::from_u128(u128::from(ms & 0xFFFF_FFFF_FFFF) << 80)
}

/// One page of jobs, in the scope's order.
pub async fn list_jobs(pool: &PgPool, q: &ListQuery<'_>) -> Result<Vec<ListedJob>> {
    trip();
    let min_id = q.min_id.unwrap_or(Uuid::nil());
    let rows = match &q.scope {
        ListScope::Roots { before } | ListScope::Tree { before, .. } => {
            let (sql, scope_id) = match (&q.scope, q.status, q.kind) {
                (ListScope::Tree { root, .. }, _, _) => (TREE, Some(*root)),
                (_, None, None) => (ROOTS, None),
                (_, Some(_), None) => (ROOTS_BY_STATUS, None),
                (_, None, Some(_)) => (ROOTS_BY_KIND, None),
                (_, Some(_), Some(_)) => (ROOTS_BY_KIND_AND_STATUS, None),
            };
            sqlx::query_as::<_, ListedJob>(sql)
                .bind(scope_id)
                .bind(before.unwrap_or(Uuid::max()))
                .bind(min_id)
                .bind(q.status)
                .bind(q.kind)
                .bind(LISTED_ERROR_CHARS)
                .bind(q.limit)
                .fetch_all(pool)
                .await?
        }
        ListScope::Children { parent, after } => {
            // Spawn indexes start at 0 and fan-outs at 1: (0, -1) is before all.
            let (seq, index) = after.unwrap_or((0, -1));
            sqlx::query_as::<_, ListedJob>(CHILDREN)
                .bind(*parent)
                .bind(seq)
                .bind(min_id)
                .bind(q.status)
                .bind(q.kind)
                .bind(LISTED_ERROR_CHARS)
                .bind(q.limit)
                .bind(index)
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_below_every_id_of_its_millisecond_and_above_earlier_ones() {
        let ms = 1_763_900_000_123u64;
        let floor = uuid_floor(ms);
        let ts = |ms: u64| {
            uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000)
        };
        assert!(Uuid::new_v7(ts(ms)) >= floor);
        assert!(Uuid::new_v7(ts(ms + 1)) > floor);
        assert!(Uuid::new_v7(ts(ms - 1)) < floor);
        assert_eq!(uuid_floor(0), Uuid::nil());
    }
}
