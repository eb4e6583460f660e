//! Operators' moves through the plan: cancel, pause, resume, rerun, and
//! the stop orders and subtree walks they leave behind.

use super::harness::*;
use crate::store::Action;

#[test]
fn cancel_ends_open_jobs_and_counts_them_into_the_parent() {
    let parent = row().waiting(2, 2, 1, 0);
    let running = row().child_of(&parent, 1);
    let run = Db::with(&[&parent, &running]).run_control(&[running.id], Action::Cancel);
    let c = run.job(running.id);
    assert_eq!(
        (c.status.as_str(), c.phase_status.as_str()),
        ("cancelled", "failed")
    );
    assert!(c.finished && !c.dispatch_pending);
    assert_eq!(c.error.as_deref(), Some("cancelled by an operator"));
    assert_eq!(
        run.stops,
        vec![token(&running)],
        "its worker is told to stop"
    );
    assert_eq!(
        run.phases.len(),
        1,
        "the abandoned execution is in the history"
    );
    // The parent's last child ended: its fan-in fires.
    let p = run.job(parent.id);
    assert_eq!(p.counts, [2, 1, 0, 1]);
    assert_eq!((p.status.as_str(), p.phase.as_str()), ("running", "merge"));
    assert_eq!(run.applied.fan_ins, 1);
    assert_eq!(run.walks.len(), 1, "its descendants are walked next");
    // The tree's counts by phase move with it: one job out of running in
    // phase "work" into cancelled; the parent from waiting in "work" to
    // running in "merge".
    let mut moved = run.phase_counts.clone();
    moved.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));
    let root = parent.root_id;
    use tributary_common::status::JobStatus as S;
    assert_eq!(
        moved,
        vec![
            (root, "merge".to_owned(), S::Running, 1),
            (root, "work".to_owned(), S::Running, -1),
            (root, "work".to_owned(), S::Waiting, -1),
            (root, "work".to_owned(), S::Cancelled, 1),
        ]
    );
}

#[test]
fn cancel_stops_only_what_a_worker_may_hold() {
    let published = row().status("pending", "not_started");
    let unpublished = row().status("pending", "not_started");
    let mut unpublished_row = unpublished.clone();
    unpublished_row.dispatch_pending = true;
    let waiting = row().waiting(3, 3, 0, 0);
    let done = row().status("completed", "completed");
    let db = Db::with(&[&published, &unpublished_row, &waiting, &done]);
    let ids = [published.id, unpublished.id, waiting.id, done.id];
    let run = db.run_control(&ids, Action::Cancel);
    assert_eq!(run.stops, vec![token(&published)]);
    for id in [published.id, unpublished.id, waiting.id] {
        assert_eq!(run.job(id).status, "cancelled");
    }
    assert_eq!(run.job(published.id).phase_status, "skipped");
    assert_eq!(
        run.job(waiting.id).phase_status,
        "completed",
        "its fan-out phase had ended"
    );
    assert!(
        !run.jobs.contains_key(&done.id),
        "an ended job is left alone"
    );
    // Idempotent: the same cancel again changes nothing.
    let mut db = db;
    db.commit(&run);
    let again = db.run_control(&ids, Action::Cancel);
    assert!(again.jobs.is_empty() && again.stops.is_empty());
}

#[test]
fn a_cancelled_jobs_late_reports_are_fenced_and_answered_with_stop() {
    let job = row();
    let mut db = Db::with(&[&job]);
    let run = db.run_control(&[job.id], Action::Cancel);
    db.commit(&run);
    let heartbeat = tributary_common::wire::ReportItem::Heartbeat {
        token: token(&job),
        lease_ms: 30_000,
    };
    let late = db.run(&[heartbeat, complete(token(&job))]);
    assert_eq!(late.applied.fenced, 2);
    assert_eq!(
        late.stops,
        vec![token(&job)],
        "the heartbeat's answer is a stop"
    );
    assert!(late.jobs.is_empty());
}

#[test]
fn pause_holds_queued_phases_and_lets_running_ones_finish() {
    let queued = row().status("pending", "not_started");
    let running = row();
    let mut db = Db::with(&[&queued, &running]);
    let run = db.run_control(&[queued.id, running.id], Action::Pause);
    let q = run.job(queued.id);
    assert_eq!(
        (q.status.as_str(), q.phase_status.as_str()),
        ("paused", "paused")
    );
    assert!(!q.dispatch_pending);
    let r = run.job(running.id);
    assert_eq!(
        (r.status.as_str(), r.phase_status.as_str()),
        ("paused", "running")
    );
    assert_eq!(
        run.stops,
        vec![token(&queued)],
        "only the queued task is dropped"
    );
    db.commit(&run);

    // The running phase finishes: its next phase is held, not queued.
    let next = finished(
        token(&running),
        tributary_common::wire::Outcome::Next {
            phase: "second".into(),
        },
    );
    let ran = db.run(&[next]);
    let r = ran.job(running.id);
    assert_eq!(ran.applied.applied, 1, "the outcome is kept");
    assert_eq!((r.status.as_str(), r.phase.as_str()), ("paused", "second"));
    assert_eq!(r.phase_status, "paused");
    assert!(!r.dispatch_pending);
    db.commit(&ran);

    // Resume releases exactly what was held.
    let resumed = db.run_control(&[queued.id, running.id], Action::Resume);
    let q = resumed.job(queued.id);
    assert_eq!(
        (q.status.as_str(), q.phase_status.as_str()),
        ("pending", "not_started")
    );
    assert!(q.dispatch_pending);
    let r = resumed.job(running.id);
    assert_eq!(
        (r.status.as_str(), r.phase_status.as_str()),
        ("running", "not_started")
    );
    assert!(r.dispatch_pending);
    assert_eq!(resumed.applied.queued, 2);
}

#[test]
fn a_paused_job_completes_when_its_running_phase_does() {
    let parent = row().waiting(1, 1, 0, 0);
    let child = row().child_of(&parent, 1);
    let mut db = Db::with(&[&parent, &child]);
    let run = db.run_control(&[child.id], Action::Pause);
    db.commit(&run);
    let done = db.run(&[complete(token(&child))]);
    assert_eq!(done.job(child.id).status, "completed");
    assert_eq!(done.applied.fan_ins, 1, "counted into its parent");
}

#[test]
fn a_paused_parent_fans_in_on_resume_and_its_children_are_born_paused() {
    let parent = row();
    let mut db = Db::with(&[&parent]);
    let run = db.run_control(&[parent.id], Action::Pause);
    db.commit(&run);
    // Still running its phase: it spawns, then seals.
    let spawn = db.run(&[spawned(token(&parent), 0, 0, 2), wait(token(&parent), 2)]);
    assert_eq!(spawn.children.paused, vec![true, true], "born paused");
    assert!(
        spawn.phase_counts.contains(&(
            parent.root_id,
            "start".to_owned(),
            tributary_common::status::JobStatus::Paused,
            2
        )),
        "{:?}",
        spawn.phase_counts
    );
    let p = spawn.job(parent.id);
    assert_eq!(
        (p.status.as_str(), p.phase_status.as_str()),
        ("paused", "completed")
    );
    db.commit(&spawn);
    // Both children end while the parent is paused (the harness's commit
    // does not carry the resume phase).
    if let Some(r) = db.rows.get_mut(&parent.id) {
        r.children_completed = 2;
        r.resume_phase = Some("merge".into());
    }
    let resumed = db.run_control(&[parent.id], Action::Resume);
    let p = resumed.job(parent.id);
    assert_eq!((p.status.as_str(), p.phase.as_str()), ("running", "merge"));
    assert_eq!(resumed.applied.fan_ins, 1, "the fan-in fires on resume");
}

#[test]
fn rerun_runs_an_ended_job_again_and_takes_its_ending_back() {
    let parent = row().waiting(2, 2, 1, 1);
    let failed = row()
        .child_of(&parent, 1)
        .status("failed", "failed")
        .at(2, 3);
    let run = Db::with(&[&parent, &failed]).run_rerun(failed.id, None);
    assert_eq!(run.refusal, None);
    let f = run.job(failed.id);
    assert_eq!(
        (f.status.as_str(), f.phase_status.as_str()),
        ("pending", "not_started")
    );
    assert_eq!((f.phase.as_str(), f.phase_seq, f.attempt), ("work", 3, 1));
    assert!(f.dispatch_pending && f.error.is_none());
    assert_eq!(
        run.job(parent.id).counts,
        [2, 1, 0, 0],
        "the failure is taken back"
    );
    assert_eq!(run.job(parent.id).status, "waiting");

    let other = Db::with(&[&parent, &failed]).run_rerun(failed.id, Some("again"));
    assert_eq!(other.job(failed.id).phase, "again");
}

#[test]
fn rerun_refuses_what_it_cannot_do() {
    let running = row();
    let run = Db::with(&[&running]).run_rerun(running.id, None);
    assert!(
        run.refusal
            .as_deref()
            .unwrap_or_default()
            .contains("is running")
    );
    assert!(run.jobs.is_empty());

    let ended = row().status("failed", "completed");
    let orphan = row().child_of(&ended, 1).status("cancelled", "skipped");
    let run = Db::with(&[&ended, &orphan]).run_rerun(orphan.id, None);
    assert!(
        run.refusal
            .as_deref()
            .unwrap_or_default()
            .contains("retry the parent")
    );
}

#[test]
fn stop_all_failing_a_parent_walks_its_open_children() {
    let parent = row().waiting(3, 3, 0, 0).failures(0, "stop_all");
    let child = row().child_of(&parent, 1);
    let run = Db::with(&[&parent, &child]).run(&[fail(token(&child), false)]);
    assert_eq!(run.job(parent.id).status, "failed");
    assert_eq!(run.walks.len(), 1);
    assert_eq!(run.walks[0].0, parent.id);
    assert_eq!(run.walks[0].1, Action::Cancel);
}

#[test]
fn a_rerun_under_a_paused_parent_is_held() {
    let parent = row().waiting(2, 2, 1, 1).status("paused", "completed");
    let failed = row().child_of(&parent, 1).status("failed", "failed");
    let run = Db::with(&[&parent, &failed]).run_rerun(failed.id, None);
    assert_eq!(run.refusal, None);
    let f = run.job(failed.id);
    assert_eq!(
        (f.status.as_str(), f.phase_status.as_str()),
        ("paused", "paused")
    );
    assert!(!f.dispatch_pending, "held until the resume");
}

#[test]
fn a_child_reporting_under_a_cancelled_parent_is_cancelled_not_completed() {
    // The walk has not reached the child yet; its report arrives first.
    let parent = row().waiting(2, 2, 0, 0).status("cancelled", "completed");
    let child = row().child_of(&parent, 1);
    let run = Db::with(&[&parent, &child]).run(&[complete(token(&child))]);
    let c = run.job(child.id);
    assert_eq!(c.status, "cancelled");
    assert_eq!(
        c.error.as_deref(),
        Some(format!("cancelled: ancestor {} cancelled", parent.id).as_str())
    );
    assert!(!c.set_output, "its outcome is discarded");
    assert_eq!(run.applied.fenced, 1);
    assert_eq!(run.stops, vec![token(&child)]);
    assert_eq!(
        run.job(parent.id).counts,
        [2, 0, 0, 1],
        "it counts into the parent as cancelled"
    );
    assert_eq!(run.applied.fan_ins, 0);
}

#[test]
fn a_child_of_a_failed_parent_is_cancelled_on_its_next_report() {
    let parent = row().waiting(2, 2, 0, 1).status("failed", "completed");
    let child = row().child_of(&parent, 1).status("pending", "not_started");
    let started = tributary_common::wire::ReportItem::Started {
        token: token(&child),
        phase: "work".into(),
        lease_ms: 30_000,
        worker: None,
    };
    let run = Db::with(&[&parent, &child]).run(&[started]);
    assert_eq!(run.job(child.id).status, "cancelled");
    assert_eq!(run.job(child.id).phase_status, "skipped");
    assert_eq!(run.stops, vec![token(&child)]);
}

#[test]
fn a_child_starting_under_a_paused_parent_is_held_but_a_running_one_finishes() {
    let parent = row().waiting(2, 2, 0, 0).status("paused", "completed");
    let queued = row().child_of(&parent, 1).status("pending", "not_started");
    let running = row().child_of(&parent, 1);
    let started = tributary_common::wire::ReportItem::Started {
        token: token(&queued),
        phase: "work".into(),
        lease_ms: 30_000,
        worker: None,
    };
    let run = Db::with(&[&parent, &queued, &running]).run(&[started, complete(token(&running))]);
    let q = run.job(queued.id);
    assert_eq!(
        (q.status.as_str(), q.phase_status.as_str()),
        ("paused", "paused")
    );
    assert!(!q.dispatch_pending, "held until the resume");
    assert_eq!(run.stops, vec![token(&queued)]);
    assert_eq!(
        run.job(running.id).status,
        "completed",
        "a running phase's outcome is kept"
    );
    assert_eq!(run.job(parent.id).counts, [2, 1, 0, 0]);
}

#[test]
fn retrying_a_fan_in_failure_reruns_only_the_failed_children_and_holds_the_fan_in() {
    // stop_all failed the parent: one child completed, one failed, one
    // was cancelled by the walk.
    let parent = row()
        .waiting(3, 3, 1, 1)
        .failures(0, "stop_all")
        .status("failed", "completed");
    let mut parent_row = parent.clone();
    parent_row.children_cancelled = 1;
    let done = row().child_of(&parent, 1).status("completed", "completed");
    let failed = row().child_of(&parent, 1).status("failed", "failed");
    let cancelled = row().child_of(&parent, 1).status("cancelled", "skipped");
    let mut db = Db::with(&[&parent_row, &done, &failed, &cancelled]);

    let run = db.run_rerun(parent.id, None);
    assert_eq!(run.refusal, None);
    let p = run.job(parent.id);
    assert_eq!(
        (p.status.as_str(), p.phase.as_str(), p.phase_seq),
        ("waiting", "work", 1),
        "it waits on the same fan-out; its spawning phase does not run again"
    );
    assert_eq!(p.counts, [3, 1, 1, 1], "the children move back one by one");
    assert!(p.error.is_none());
    assert_eq!(run.walks, vec![(parent.id, Action::Retry, String::new())]);
    db.commit(&run);

    // The walk reaches the failed child first; it runs and completes while
    // the cancelled one still counts as ended: the fan-in would fire (and
    // fail again), but the walk holds it.
    let step = db.run_retry_walk(&[failed.id, done.id]);
    assert_eq!(step.job(failed.id).status, "pending");
    assert!(
        !step.jobs.contains_key(&done.id),
        "a completed child keeps its result"
    );
    assert_eq!(step.job(parent.id).counts, [3, 1, 0, 1]);
    db.commit(&step);
    let mut rerun = failed.clone();
    rerun.phase_seq = 2;
    rerun.status = "running".into();
    rerun.phase_status = "running".into();
    db.rows.insert(failed.id, rerun.clone());
    let ended = db.run(&[complete(token(&rerun))]);
    assert_eq!(ended.job(parent.id).status, "waiting", "held by the walk");
    assert_eq!(ended.applied.fan_ins, 0);
    db.commit(&ended);

    let step = db.run_retry_walk(&[cancelled.id]);
    assert_eq!(step.job(cancelled.id).status, "pending");
    assert_eq!(step.job(parent.id).counts, [3, 2, 0, 0]);
    db.commit(&step);
    let mut rerun = cancelled.clone();
    rerun.phase_seq = 2;
    rerun.status = "running".into();
    rerun.phase_status = "running".into();
    db.rows.insert(cancelled.id, rerun.clone());
    let ended = db.run(&[complete(token(&rerun))]);
    assert_eq!(ended.job(parent.id).counts, [3, 3, 0, 0]);
    assert_eq!(
        ended.applied.fan_ins, 0,
        "still held: the walk has not ended"
    );
    db.commit(&ended);

    // The walk's end releases the fan-in, in the same transaction.
    let walked = db.run_retry_walked(parent.id);
    let p = walked.job(parent.id);
    assert_eq!((p.status.as_str(), p.phase.as_str()), ("running", "merge"));
    assert_eq!(walked.applied.fan_ins, 1);
}

#[test]
fn a_retry_walk_leaves_children_of_an_earlier_fan_out_alone() {
    let parent = row()
        .at(2, 1)
        .waiting(1, 1, 0, 0)
        .status("waiting", "completed");
    let old = row().child_of(&parent, 1).status("failed", "failed");
    let run = Db::with(&[&parent, &old]).run_retry_walk(&[old.id]);
    assert!(run.jobs.is_empty(), "nothing would count it");
}

#[test]
fn a_job_that_failed_in_a_phase_reruns_that_phase_even_after_a_fan_out() {
    // The phase after the fan-in failed: it runs again, not the fan-out.
    let job = row().at(2, 3).status("failed", "failed");
    let mut job_row = job.clone();
    job_row.fanout_seq = Some(1);
    job_row.children_expected = Some(5);
    job_row.phase = "merge".into();
    let run = Db::with(&[&job_row]).run_rerun(job.id, None);
    let j = run.job(job.id);
    assert_eq!((j.status.as_str(), j.phase.as_str()), ("pending", "merge"));
    assert!(run.walks.is_empty());
}

#[test]
fn a_cancelled_phase_that_never_ran_writes_no_history_row() {
    let queued = row().status("pending", "not_started");
    let run = Db::with(&[&queued]).run_control(&[queued.id], Action::Cancel);
    assert_eq!(run.job(queued.id).phase_status, "skipped");
    assert!(run.phases.is_empty(), "the job row says it all");
}

#[test]
fn a_rerun_keeps_the_skipped_phase_in_the_history() {
    let cancelled = row().status("cancelled", "skipped");
    let run = Db::with(&[&cancelled]).run_rerun(cancelled.id, None);
    assert_eq!(
        run.phases,
        vec![(
            cancelled.id,
            1,
            1,
            "skipped".into(),
            Some("cancelled before it ran".into())
        )]
    );
    assert_eq!(run.job(cancelled.id).phase_seq, 2);
}

#[test]
fn repeating_an_action_records_no_second_walk() {
    let job = row();
    let mut db = Db::with(&[&job]);
    let run = db.run_control(&[job.id], Action::Pause);
    assert_eq!(run.walks.len(), 1);
    db.commit(&run);
    let plan_again = db.run_control(&[job.id], Action::Pause);
    assert!(plan_again.jobs.is_empty(), "nothing moved");
    assert!(plan_again.walks.is_empty(), "and nothing is walked again");
}

#[test]
fn a_job_under_a_paused_parent_cannot_be_resumed_alone() {
    let parent = row().waiting(1, 1, 0, 0).status("paused", "completed");
    let child = row().child_of(&parent, 1).status("paused", "paused");
    let db = Db::with(&[&parent, &child]);
    let run = db.run_steer(child.id, Action::Resume);
    assert!(
        run.refusal
            .as_deref()
            .unwrap_or_default()
            .contains("resume the parent"),
        "{:?}",
        run.refusal
    );
    assert!(run.jobs.is_empty());
}
