//! `Finished` outcomes that retry or fail, and refused reports.

use tributary_common::job::DispatchToken;
use tributary_common::wire::{Outcome, ReportItem};

use super::harness::*;

#[test]
fn a_retryable_failure_retries_with_backoff_until_attempts_run_out() {
    // (attempt, max_attempts, retryable, retried)
    let cases = [
        (1, 3, true, true),
        (2, 3, true, true),
        (3, 3, true, false),
        (1, 3, false, false),
        (1, 1, true, false),
    ];
    for (attempt, max, retryable, retried) in cases {
        let parent = row().waiting(1, 1, 0, 0);
        let mut job = row().child_of(&parent, 1).at(1, attempt);
        job.max_attempts = max;
        let run = Db::with(&[&parent, &job]).run(&[fail(token(&job), retryable)]);
        let case = format!("attempt {attempt} of {max}, retryable {retryable}");
        let w = run.job(job.id);
        // Either way the execution's phase row says it failed, with the error.
        let history = (
            job.id,
            1,
            attempt,
            "failed".to_owned(),
            Some("boom".to_owned()),
        );
        assert_eq!(run.phases, vec![history], "{case}");
        if retried {
            assert_eq!(
                (w.status.as_str(), w.phase_status.as_str()),
                ("running", "not_started")
            );
            assert_eq!((w.phase_seq, w.attempt), (1, attempt + 1), "{case}");
            assert!(w.dispatch_pending, "{case}");
            // Backoff: uniform in [c/2, c], c = 500 ms · 2^(retry-1).
            let c = 500 << (attempt - 1);
            let delay = w.delay_ms.unwrap_or(-1);
            assert!((c / 2..=c).contains(&delay), "{case}: delay {delay}");
            assert_eq!(w.error, None, "{case}");
            assert_eq!(run.applied.queued, 1, "{case}");
            assert!(!run.jobs.contains_key(&parent.id), "{case}: parent waits");
        } else {
            assert_eq!(
                (w.status.as_str(), w.phase_status.as_str()),
                ("failed", "failed")
            );
            assert_eq!((w.attempt, w.dispatch_pending), (attempt, false), "{case}");
            assert_eq!(w.error.as_deref(), Some("boom"), "{case}");
            assert!(w.finished, "{case}");
            assert_eq!(run.applied.queued, 1, "{case}: the parent's fan-in");
            assert_eq!(run.job(parent.id).counts, [1, 0, 1, 0], "{case}");
        }
    }
}

#[test]
fn a_retry_fences_the_failed_attempts_later_reports() {
    let job = row();
    let t = token(&job);
    let run = Db::with(&[&job]).run(&[
        fail(t, true),
        ReportItem::Heartbeat {
            token: t,
            lease_ms: 30_000,
        },
        complete(t),
    ]);
    assert_eq!((run.applied.applied, run.applied.fenced), (1, 2));
    assert_eq!(run.job(job.id).attempt, 2);
}

#[test]
fn a_refused_report_fails_its_job_unless_its_token_is_stale() {
    let bad_next = |t| {
        finished(
            t,
            Outcome::Next {
                phase: "bad\nname".into(),
            },
        )
    };
    let bad_start = |t| ReportItem::Started {
        token: t,
        phase: String::new(),
        lease_ms: 30_000,
        worker: None,
    };
    let bad_kind = |t| {
        let mut item = spawned(t, 0, 0, 2);
        if let ReportItem::Spawned { children, .. } = &mut item {
            children[1].kind = "no spaces".into();
        }
        item
    };
    type Make = fn(DispatchToken) -> ReportItem;
    let cases: [(&str, Make, &str); 3] = [
        (
            "Finished",
            bad_next,
            "report refused: the next phase has an invalid name \"bad\\nname\"",
        ),
        (
            "Started",
            bad_start,
            "report refused: the worker reported an invalid phase name \"\"",
        ),
        (
            "Spawned",
            bad_kind,
            "report refused: child 1 of a spawn batch: invalid kind \"no spaces\": use 1-128 characters from A-Z a-z 0-9 . _ -",
        ),
    ];
    for (kind, make, error) in cases {
        let job = if kind == "Started" {
            row().status("pending", "not_started")
        } else {
            row()
        };
        // Current: the job fails with the reason, nothing of the item applies.
        let run = Db::with(&[&job]).run(&[make(token(&job))]);
        assert_eq!((run.applied.refused, run.applied.applied), (1, 0), "{kind}");
        let w = run.job(job.id);
        assert_eq!(
            (w.status.as_str(), w.phase_status.as_str()),
            ("failed", "failed")
        );
        assert_eq!(w.error.as_deref(), Some(error), "{kind}");
        assert!(run.children.id.is_empty(), "{kind}");

        // Stale (an earlier attempt, not recorded): fenced, the job untouched.
        let job = job.at(1, 2);
        let stale = DispatchToken {
            attempt: 1,
            nonce: OLD_NONCE,
            ..token(&job)
        };
        let run = Db::with(&[&job]).run(&[make(stale)]);
        assert_eq!((run.applied.refused, run.applied.fenced), (0, 1), "{kind}");
        assert!(run.jobs.is_empty(), "{kind}");
    }
}

#[test]
fn a_spawn_past_the_tree_cap_is_refused() {
    let job = row();
    let mut db = Db::with(&[&job]);
    db.limits.max_jobs_per_tree = 10;
    db.tree_sizes.insert(job.root_id, 9);
    let run = db.run(&[spawned(token(&job), 0, 0, 1), spawned(token(&job), 1, 1, 1)]);
    // The first batch fits, the second would pass the cap: refused, failing the job.
    assert_eq!(run.children.id.len(), 1);
    assert_eq!(run.applied.refused, 1);
    let w = run.job(job.id);
    assert_eq!(w.status, "failed");
    assert!(
        w.error
            .as_deref()
            .unwrap_or_default()
            .contains("TRIBUTARY_MAX_JOBS_PER_TREE")
    );
}

#[test]
fn a_poisoned_spawn_fails_its_job_even_after_the_wait() {
    // Sealed at 4 with batch 0 (2 children, both done) counted; batch 1,
    // inside the seal, arrived after the Wait and the database refused it:
    // its 2 children will never exist.
    let parent = row().waiting(1, 1, 0, 0);
    let job = row().child_of(&parent, 1).waiting(4, 2, 2, 0);
    let t = token(&job);
    let db = Db::with(&[&parent, &job]);
    // A Finished under the spawn's token (how poison used to fail a job)
    // is not current for a waiting job: fenced, and the job waits forever.
    let run = db.run(&[fail(t, false)]);
    assert_eq!((run.applied.applied, run.applied.fenced), (0, 1));
    assert!(run.jobs.is_empty());
    // Failing the spawner ends it, and its parent counts it.
    let run = db.run_poisoned_spawn(&t, "refused");
    let w = run.job(job.id);
    assert_eq!(
        (w.status.as_str(), w.error.as_deref()),
        ("failed", Some("refused"))
    );
    assert!(!w.dispatch_pending);
    assert_eq!(run.job(parent.id).counts, [1, 0, 1, 0]);
    assert_eq!(run.applied.fan_ins, 1, "the parent's fan-in fires");

    // A running spawner fails with its phase; an ended or moved-on one is
    // left alone.
    let running = row();
    let run = Db::with(&[&running]).run_poisoned_spawn(&token(&running), "refused");
    let w = run.job(running.id);
    assert_eq!(
        (w.status.as_str(), w.phase_status.as_str()),
        ("failed", "failed")
    );
    assert_eq!(run.phases.len(), 1);
    let done = row().status("completed", "completed");
    assert!(
        Db::with(&[&done])
            .run_poisoned_spawn(&token(&done), "x")
            .jobs
            .is_empty()
    );
    let moved = row().at(2, 1);
    let old = DispatchToken {
        seq: 1,
        ..token(&moved)
    };
    assert!(
        Db::with(&[&moved])
            .run_poisoned_spawn(&old, "x")
            .jobs
            .is_empty()
    );
}
