//! Counting children into parents and the fan-in rule, through whole
//! batches: failure actions, empty and nested fan-outs, late parents.

use super::harness::*;
use crate::outcome::plan::Plan;
use tributary_common::retry::Backoff;

#[test]
fn a_grandparent_outside_the_batch_is_named_then_counted() {
    // grandparent ─ parent (mark_warning, no failure tolerated) ─ child
    let grandparent = row().waiting(1, 1, 0, 0);
    let parent = row()
        .child_of(&grandparent, 1)
        .waiting(1, 1, 0, 0)
        .failures(0, "mark_warning");
    let child = row().child_of(&parent, 1);
    // The batch locks the child and its parent only.
    let mut plan = Plan::new(vec![child.clone(), parent.clone()], Backoff::default());
    let items = [fail(token(&child), false)];
    let refused = plan.refusals(&items, &Default::default());
    plan.apply_items(&items, &refused, &Default::default());
    plan.settle_fan_ins();
    assert_eq!(plan.missing_parents(), vec![grandparent.id]);
    plan.add_late_parents(vec![grandparent.clone()]);
    plan.settle_fan_ins();
    assert!(plan.missing_parents().is_empty());
    assert_eq!(plan.applied().fan_ins, 1, "the grandparent resumes");

    // The same through the harness's lock-and-settle loop.
    let db = Db::with(&[&grandparent, &parent, &child]);
    let run = db.run(&items);
    let p = run.job(parent.id);
    assert_eq!(p.status, "completed");
    assert!(
        p.warning
            .as_deref()
            .unwrap_or_default()
            .contains("phase \"merge\" skipped")
    );
    let g = run.job(grandparent.id);
    assert_eq!(g.counts, [1, 1, 0, 0]);
    assert_eq!((g.status.as_str(), g.phase.as_str()), ("running", "merge"));
    assert_eq!(g.phase_seq, 2);
    assert!(g.dispatch_pending);
}

#[test]
fn a_late_parent_that_no_longer_exists_counts_nothing() {
    let gone = row().waiting(1, 1, 0, 0);
    let parent = row()
        .child_of(&gone, 1)
        .waiting(1, 1, 0, 0)
        .failures(0, "stop_all");
    let child = row().child_of(&parent, 1);
    let run = Db::with(&[&parent, &child]).run(&[fail(token(&child), false)]);
    assert_eq!(run.job(parent.id).status, "failed");
    assert!(!run.jobs.contains_key(&gone.id));
}

#[test]
fn failure_actions_past_max_child_failures() {
    // Each parent tolerates no failed child; one of its children fails.
    // (action, sealed, status, phase, seq, dispatched, error, warning)
    type Case = (&'static str, bool, &'static str, &'static str, i32, bool);
    let cases: [Case; 4] = [
        // continue: the fan-in fires with the failure visible.
        ("continue", true, "running", "merge", 2, true),
        // stop_all: fails at once, sealed or not.
        ("stop_all", true, "failed", "work", 1, false),
        ("stop_all", false, "failed", "work", 1, false),
        // mark_warning: completes with a warning, the next phase skipped.
        ("mark_warning", true, "completed", "work", 1, false),
    ];
    for (action, sealed, status, phase, seq, dispatched) in cases {
        let parent = if sealed {
            // Two sealed and spawned, one already completed.
            row().waiting(2, 2, 1, 0)
        } else {
            // Still running its phase: two spawned so far, none ended.
            let mut r = row();
            r.fanout_seq = Some(1);
            r.children_total = 2;
            r
        }
        .failures(0, action);
        let child = row().child_of(&parent, 1);
        let run = Db::with(&[&parent, &child]).run(&[fail(token(&child), false)]);
        let case = format!("{action}, sealed {sealed}");
        let p = run.job(parent.id);
        assert_eq!(p.status, status, "{case}");
        assert_eq!((p.phase.as_str(), p.phase_seq), (phase, seq), "{case}");
        assert_eq!(p.dispatch_pending, dispatched, "{case}");
        assert_eq!(p.counts[2], 1, "{case}: the failure is counted");
        assert_eq!(
            run.applied.fan_ins,
            u64::from(status == "running"),
            "{case}"
        );
        match action {
            "stop_all" => assert_eq!(
                p.error.as_deref(),
                Some("1 children failed, more than max_child_failures = 0"),
                "{case}"
            ),
            "mark_warning" => assert_eq!(
                p.warning.as_deref(),
                Some(
                    "1 children failed, more than max_child_failures = 0; phase \"merge\" skipped"
                ),
                "{case}"
            ),
            _ => assert_eq!((&p.error, &p.warning), (&None, &None), "{case}"),
        }
        if action == "stop_all" && !sealed {
            // Its running phase ends failed in the history.
            let failed = (parent.id, 1, 1, "failed".to_owned());
            assert!(
                run.phases
                    .iter()
                    .any(|(id, seq, a, s, _)| (*id, *seq, *a, s.clone()) == failed)
            );
            assert_eq!(p.phase_status, "failed");
        }
    }
}

#[test]
fn under_the_limit_a_failure_only_counts() {
    let parent = row().waiting(2, 2, 0, 0).failures(1, "stop_all");
    let child = row().child_of(&parent, 1);
    let run = Db::with(&[&parent, &child]).run(&[fail(token(&child), false)]);
    let p = run.job(parent.id);
    assert_eq!((p.status.as_str(), p.counts), ("waiting", [2, 0, 1, 0]));
    assert_eq!(run.applied.fan_ins, 0);
}

#[test]
fn an_empty_fan_out_resumes_at_once() {
    let job = row();
    let run = Db::with(&[&job]).run(&[wait(token(&job), 0)]);
    let w = run.job(job.id);
    assert_eq!((w.status.as_str(), w.phase.as_str()), ("running", "merge"));
    assert_eq!(
        (w.phase_seq, w.attempt, w.phase_status.as_str()),
        (2, 1, "not_started")
    );
    assert!(w.dispatch_pending);
    assert_eq!((w.fanout_seq, w.children_expected), (Some(1), Some(0)));
    assert_eq!((run.applied.fan_ins, run.applied.queued), (1, 1));
    assert_eq!(run.phases, vec![(job.id, 1, 1, "completed".into(), None)]);
}

#[test]
fn a_wait_before_its_children_are_counted_keeps_waiting() {
    // Sealed at 3 while only 2 spawned batches' children are counted: a late
    // batch may still come, so the fan-in must not fire on 2 of 2 ended.
    let mut job = row();
    job.fanout_seq = Some(1);
    job.children_total = 2;
    job.children_completed = 2;
    let run = Db::with(&[&job]).run(&[wait(token(&job), 3)]);
    let w = run.job(job.id);
    assert_eq!(w.status, "waiting");
    assert_eq!((w.children_expected, w.counts), (Some(3), [2, 2, 0, 0]));
    assert_eq!(run.applied.fan_ins, 0);
}

#[test]
fn a_child_completing_fires_its_parents_fan_in_exactly_once() {
    let parent = row().waiting(2, 2, 1, 0);
    let child = row().child_of(&parent, 1);
    let mut db = Db::with(&[&parent, &child]);
    let batch = [complete(token(&child))];
    let run = db.run(&batch);
    assert_eq!(run.job(child.id).status, "completed");
    assert!(run.job(child.id).set_output);
    let p = run.job(parent.id);
    assert_eq!(
        (p.status.as_str(), p.phase.as_str(), p.phase_seq),
        ("running", "merge", 2)
    );
    assert_eq!(p.counts, [2, 2, 0, 0]);
    assert!(p.dispatch_pending);
    assert_eq!((run.applied.fan_ins, run.applied.queued), (1, 1));

    // The same batch again (a redelivery after commit): fenced, no fan-in.
    db.commit(&run);
    let replay = db.run(&batch);
    assert_eq!((replay.applied.applied, replay.applied.fenced), (0, 1));
    assert_eq!((replay.applied.fan_ins, replay.applied.queued), (0, 0));
    assert!(replay.jobs.is_empty());
}

#[test]
fn two_children_ending_in_one_batch_fire_the_fan_in_once() {
    let parent = row().waiting(2, 2, 0, 0);
    let a = row().child_of(&parent, 1);
    let b = row().child_of(&parent, 1);
    let run = Db::with(&[&parent, &a, &b]).run(&[complete(token(&a)), complete(token(&b))]);
    assert_eq!(run.job(parent.id).counts, [2, 2, 0, 0]);
    assert_eq!(run.job(parent.id).phase_seq, 2);
    assert_eq!((run.applied.fan_ins, run.applied.queued), (1, 1));
}
