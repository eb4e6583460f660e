//! The plan's rules, table by table: what carries "fan-in is exact".
//! Every batch runs through the same steps as `Applier::try_apply`, against
//! rows built by hand ([`harness`]).

mod control;
mod fan_in;
mod harness;
mod outcomes;

use serde_bytes::ByteBuf;
use tributary_common::job::DispatchToken;
use tributary_common::wire::ReportItem;

use crate::outcome::Applied;
use harness::*;

/// One item of each kind for `t`.
fn each_kind(t: DispatchToken) -> Vec<(&'static str, ReportItem)> {
    vec![
        (
            "Started",
            ReportItem::Started {
                token: t,
                phase: "work".into(),
                lease_ms: 30_000,
                worker: None,
            },
        ),
        (
            "Heartbeat",
            ReportItem::Heartbeat {
                token: t,
                lease_ms: 30_000,
            },
        ),
        ("Spawned", spawned(t, 0, 0, 2)),
        (
            "Checkpoint",
            ReportItem::Checkpoint {
                token: t,
                state: ByteBuf::from(vec![1]),
            },
        ),
        (
            "Progress",
            ReportItem::Progress {
                token: t,
                done: 1,
                total: 2,
                message: "half".into(),
            },
        ),
        (
            "Log",
            ReportItem::Log {
                token: t,
                level: "info".into(),
                message: "hello".into(),
            },
        ),
        ("Finished", complete(t)),
    ]
}

fn counts(applied: u64, fenced: u64, forged: u64) -> (u64, u64, u64) {
    (applied, fenced, forged)
}

fn seen(a: &Applied) -> (u64, u64, u64) {
    (a.applied, a.fenced, a.forged)
}

#[test]
fn a_current_token_applies_each_kind() {
    for i in 0..7 {
        // Started needs a phase not started yet; everything else a running one.
        let job = if i == 0 {
            row().status("pending", "not_started")
        } else {
            row()
        };
        let (kind, item) = each_kind(token(&job)).swap_remove(i);
        let run = Db::with(&[&job]).run(&[item]);
        assert_eq!(seen(&run.applied), counts(1, 0, 0), "{kind}");
        assert_eq!(run.jobs.contains_key(&job.id), kind != "Log", "{kind}");
        assert_eq!(run.logs.len(), usize::from(kind == "Log"), "{kind}");
        let children = if kind == "Spawned" { 2 } else { 0 };
        assert_eq!(run.children.id.len(), children, "{kind}");
    }
}

#[test]
fn stale_forged_and_late_tokens_are_fenced_for_every_kind() {
    // A job in phase 2, attempt 2. Stale tokens carry the nonce their own
    // (earlier) execution was published with.
    let running = row().at(2, 2);
    let current = token(&running);
    let stale_seq = DispatchToken {
        seq: 1,
        attempt: 1,
        nonce: OLD_NONCE,
        ..current
    };
    let stale_attempt = DispatchToken {
        attempt: 1,
        nonce: OLD_NONCE,
        ..current
    };
    let wrong_nonce = DispatchToken {
        nonce: 99,
        ..current
    };
    let completed = row().at(2, 2).status("completed", "completed");
    // (case, row, token, kind -> (applied, fenced, forged))
    type Expect = fn(&str) -> (u64, u64, u64);
    let cases: [(&str, &_, DispatchToken, Expect); 4] = [
        ("stale seq", &running, stale_seq, |_| counts(0, 1, 0)),
        ("stale attempt", &running, stale_attempt, |_| {
            counts(0, 1, 0)
        }),
        // Every kind, Spawned included, is counted as forged.
        ("wrong nonce", &running, wrong_nonce, |_| counts(0, 1, 1)),
        // The log of an ended job still takes lines from its last worker.
        (
            "terminal job",
            &completed,
            token(&completed),
            |kind| match kind {
                "Log" => counts(1, 0, 0),
                _ => counts(0, 1, 0),
            },
        ),
    ];
    for (case, job, t, expect) in cases {
        let t = DispatchToken {
            job_id: job.id,
            ..t
        };
        for (kind, item) in each_kind(t) {
            let run = Db::with(&[job]).run(&[item]);
            assert_eq!(seen(&run.applied), expect(kind), "{case}: {kind}");
            assert!(run.jobs.is_empty(), "{case}: {kind} wrote {:?}", run.jobs);
            assert!(run.children.id.is_empty(), "{case}: {kind} spawned");
            assert!(run.phases.is_empty(), "{case}: {kind} wrote a phase");
            let logs = usize::from(kind == "Log" && case == "terminal job");
            assert_eq!(run.logs.len(), logs, "{case}: {kind}");
        }
    }
}

#[test]
fn a_report_for_an_unknown_job_is_fenced() {
    let run = Db::default().run(&[complete(token(&row()))]);
    assert_eq!(seen(&run.applied), counts(0, 1, 0));
    assert!(run.jobs.is_empty());
}

#[test]
fn spawns_after_the_seal_are_taken_only_inside_the_sealed_count() {
    // Sealed at 3; batch 0 (two children) was counted before the Wait.
    let job = row().waiting(3, 2, 0, 0);
    let t = token(&job);
    // (first_index, children, accepted)
    let cases = [(2, 1, true), (2, 2, false), (3, 1, false), (0, 3, true)];
    for (first, n, taken) in cases {
        let run = Db::with(&[&job]).run(&[spawned(t, 1, first, n)]);
        let case = format!("first_index {first}, {n} children");
        if taken {
            assert_eq!(run.children.id.len(), n, "{case}");
            assert_eq!(run.applied.applied, 1, "{case}");
            let w = run.job(job.id);
            assert_eq!(w.counts[0], 2 + n as i64, "{case}");
            assert_eq!(w.status, "waiting", "{case}: children still running");
        } else {
            assert!(run.children.id.is_empty(), "{case}");
            assert_eq!(seen(&run.applied), counts(0, 1, 0), "{case}");
            assert!(run.jobs.is_empty(), "{case}");
        }
    }
}

#[test]
fn a_spawn_from_an_earlier_attempt_needs_its_recorded_nonce() {
    let job = row().at(1, 2);
    let earlier = DispatchToken {
        attempt: 1,
        nonce: OLD_NONCE,
        ..token(&job)
    };
    for recorded in [true, false] {
        let mut db = Db::with(&[&job]);
        if recorded {
            db.phase_nonces.insert((job.id, 1, 1, OLD_NONCE as i64));
        }
        let run = db.run(&[spawned(earlier, 0, 0, 3)]);
        if recorded {
            assert_eq!(run.children.id.len(), 3);
            assert_eq!(run.applied.applied, 1);
            assert_eq!(run.job(job.id).counts[0], 3);
            assert_eq!(run.children.parent_seq, vec![1; 3]);
            assert_eq!(run.children.child_index, vec![0, 1, 2]);
        } else {
            assert!(run.children.id.is_empty());
            assert_eq!(seen(&run.applied), counts(0, 1, 0));
        }
    }
}

#[test]
fn a_replayed_spawn_batch_creates_nothing() {
    let job = row();
    let mut db = Db::with(&[&job]);
    let batch = [spawned(token(&job), 0, 0, 2)];
    let first = db.run(&batch);
    assert_eq!(first.children.id.len(), 2);
    db.commit(&first);
    let replay = db.run(&batch);
    assert!(replay.children.id.is_empty());
    assert_eq!(seen(&replay.applied), counts(0, 1, 0));
    // And twice in one batch: once.
    let twice = Db::with(&[&job]).run(&[batch[0].clone(), batch[0].clone()]);
    assert_eq!(twice.children.id.len(), 2);
    assert_eq!(seen(&twice.applied), counts(1, 1, 0));
    assert_eq!(twice.job(job.id).counts[0], 2);
}

#[test]
fn a_child_of_an_earlier_fan_out_is_not_counted() {
    // The parent spawned in phase 1, moved on with Next, and is waiting on
    // its phase-3 fan-out (2 of 2 spawned, none ended).
    let parent = row().at(3, 1).waiting(2, 2, 0, 0);
    let old_child = row().child_of(&parent, 1);
    let run = Db::with(&[&parent, &old_child]).run(&[complete(token(&old_child))]);
    assert_eq!(run.applied.applied, 1);
    assert_eq!(run.job(old_child.id).status, "completed");
    assert!(!run.jobs.contains_key(&parent.id), "parent untouched");
    assert_eq!(run.applied.fan_ins, 0);
}

#[test]
fn an_execution_not_yet_published_takes_no_reports() {
    // Until the relay publishes an execution (and stores its fresh nonce),
    // the row holds the nonce of an earlier publish, or 0 for a new job:
    // no worker was given a token for it, so none may report for it.
    let mut fresh = row().status("pending", "not_started");
    fresh.nonce = 0;
    let mut retry = row().at(1, 2).status("running", "not_started");
    retry.nonce = OLD_NONCE as i64;
    let mut next = row().at(2, 1).status("running", "not_started");
    next.nonce = OLD_NONCE as i64;
    for (case, mut job) in [("new job", fresh), ("retry", retry), ("next phase", next)] {
        job.dispatch_pending = true;
        for (kind, item) in each_kind(token(&job)) {
            let run = Db::with(&[&job]).run(&[item]);
            assert_eq!(seen(&run.applied), counts(0, 1, 1), "{case}: {kind}");
            assert!(run.jobs.is_empty(), "{case}: {kind} wrote {:?}", run.jobs);
            assert!(run.children.id.is_empty(), "{case}: {kind} spawned");
            assert!(run.logs.is_empty(), "{case}: {kind} logged");
        }
    }
}

#[test]
fn a_late_spawn_of_the_failed_attempt_is_taken_while_its_retry_waits() {
    // Attempt 1 failed and its retry waits for the relay; a spawn batch that
    // attempt 1 sent before failing arrives now.
    let mut job = row().at(1, 2).status("running", "not_started");
    job.dispatch_pending = true;
    let mut db = Db::with(&[&job]);
    db.phase_nonces.insert((job.id, 1, 1, NONCE as i64));
    let earlier = DispatchToken {
        attempt: 1,
        ..token(&job)
    };
    let run = db.run(&[spawned(earlier, 0, 0, 2)]);
    assert_eq!(run.children.id.len(), 2);
    assert_eq!(seen(&run.applied), counts(1, 0, 0));
}

#[test]
fn leases_are_clamped_and_failure_actions_round_trip() {
    use super::fan_in::parse_action;
    use super::job::lease;
    use super::spawn::action_name;
    use tributary_common::fanin::FailureAction;

    for (asked, kept) in [
        (0, 1000),
        (999, 1000),
        (30_000, 30_000),
        (u64::MAX, 86_400_000),
    ] {
        assert_eq!(lease(asked), kept, "{asked}");
    }
    for action in [
        FailureAction::Continue,
        FailureAction::StopAll,
        FailureAction::MarkWarning,
    ] {
        assert_eq!(parse_action(action_name(action)), action);
    }
    assert_eq!(parse_action("unknown"), FailureAction::Continue);

    // A Started names the phase and takes the lease; a Heartbeat renews it.
    let job = row().status("pending", "not_started");
    let t = token(&job);
    let started = ReportItem::Started {
        token: t,
        phase: "resolved".into(),
        lease_ms: 5,
        // Cleaned before it is stored.
        worker: Some("41-ab@host one\n".into()),
    };
    let beat = ReportItem::Heartbeat {
        token: t,
        lease_ms: 90_000,
    };
    let run = Db::with(&[&job]).run(&[started.clone(), beat]);
    let w = run.job(job.id);
    assert_eq!(
        (w.status.as_str(), w.phase.as_str()),
        ("running", "resolved")
    );
    assert_eq!(
        (w.phase_status.as_str(), w.lease_ms),
        ("running", Some(90_000))
    );
    assert_eq!(w.lease_holder.as_deref(), Some("41-ab@host_one_"));
    // A second Started for a phase already running is fenced.
    let run = Db::with(&[&job]).run(&[started.clone(), started]);
    assert_eq!(seen(&run.applied), counts(1, 1, 0));
    assert_eq!(run.job(job.id).lease_ms, Some(1000));
}
