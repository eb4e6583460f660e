//! One row per case of the reason line.

use super::*;

const NOW: i64 = 1_000_000_000;

fn job(stage: Stage) -> Subject {
    Subject {
        kind: "bench.fanout".into(),
        status: "running".into(),
        phase: "start".into(),
        stage,
        attempt: 1,
        max_attempts: 3,
        available_ms: NOW,
        started_ms: None,
        lease_until_ms: None,
        lease_holder: None,
        last_error: None,
    }
}

fn facts(job: Subject) -> Facts {
    Facts {
        now_ms: NOW,
        job,
        fanout: None,
        queues: BTreeMap::new(),
        stopped_ancestor: None,
    }
}

fn group(kind: &str, stage: Stage, n: i64) -> Group {
    Group {
        kind: kind.into(),
        stage,
        n,
        next_ms: None,
        oldest_started_ms: None,
        oldest_holder: None,
    }
}

/// A parent waiting on 20 children, 8 done, with these open ones.
fn waiting_on(groups: Vec<Group>) -> Facts {
    let mut f = facts(Subject {
        status: "waiting".into(),
        ..job(Stage::Waiting)
    });
    f.fanout = Some(Fanout {
        expected: Some(20),
        total: 20,
        terminal: 8,
        groups: Some(groups),
    });
    f
}

fn found(messages: u32, consumers: u32) -> QueueState {
    QueueState::Found {
        messages,
        consumers,
    }
}

fn with_queue(mut f: Facts, kind: &str, state: QueueState) -> Facts {
    f.queues.insert(kind.into(), state);
    f
}

#[test]
fn reasons() {
    let cases: Vec<(&str, Facts, &str)> = vec![
        (
            "completed",
            facts(Subject {
                status: "completed".into(),
                ..job(Stage::Done)
            }),
            "the job is completed: nothing is waiting",
        ),
        (
            "failed",
            facts(Subject {
                status: "failed".into(),
                last_error: Some("boom".into()),
                ..job(Stage::Done)
            }),
            "the job failed: boom",
        ),
        (
            "paused",
            facts(Subject {
                status: "paused".into(),
                ..job(Stage::Paused)
            }),
            "the job is paused: resume it to go on",
        ),
        (
            "paused ancestor",
            Facts {
                stopped_ancestor: Some(("A".into(), "demo.du".into(), "paused".into())),
                ..facts(job(Stage::Queued))
            },
            "ancestor A (demo.du) is paused: nothing in its subtree starts until it resumes",
        ),
        (
            "cancelled ancestor",
            Facts {
                stopped_ancestor: Some(("A".into(), "demo.du".into(), "cancelled".into())),
                ..facts(job(Stage::Running))
            },
            "ancestor A (demo.du) is cancelled: this job will be cancelled too",
        ),
        (
            "retry scheduled",
            facts(Subject {
                attempt: 2,
                available_ms: NOW + 12_300,
                last_error: Some("timeout".into()),
                ..job(Stage::Scheduled)
            }),
            "a retry is scheduled in 12s (attempt 2 of 3); last error: timeout",
        ),
        (
            "delayed start",
            facts(Subject {
                available_ms: NOW + 500,
                ..job(Stage::Scheduled)
            }),
            "scheduled to start in 500ms",
        ),
        (
            "outbox",
            facts(Subject {
                available_ms: NOW - 2_000,
                ..job(Stage::Unpublished)
            }),
            "queued for dispatch: due 2s ago, not yet published (the relay publishes within a second while a coordinator runs)",
        ),
        (
            "queued, served",
            with_queue(facts(job(Stage::Queued)), "bench.fanout", found(7, 2)),
            "queued for a worker of kind bench.fanout: 7 tasks ready in its queue, 2 consumers serving it",
        ),
        (
            "queued, no consumer",
            with_queue(facts(job(Stage::Queued)), "bench.fanout", found(1, 0)),
            "queued for a worker of kind bench.fanout, but no worker consumes bench.fanout",
        ),
        (
            "queued, no queue",
            with_queue(
                facts(job(Stage::Queued)),
                "bench.fanout",
                QueueState::Missing,
            ),
            "queued for a worker of kind bench.fanout, but no worker consumes bench.fanout: no worker has ever served it (it has no queue)",
        ),
        (
            "queued, broker down",
            with_queue(
                facts(job(Stage::Queued)),
                "bench.fanout",
                QueueState::Unknown {
                    error: "refused".into(),
                },
            ),
            "queued for a worker of kind bench.fanout (the broker could not be asked: refused)",
        ),
        (
            "running",
            facts(Subject {
                started_ms: Some(NOW - 245_000),
                lease_until_ms: Some(NOW + 10_000),
                lease_holder: Some("42-ab@w1".into()),
                ..job(Stage::Running)
            }),
            "running phase start (attempt 1 of 3) on worker 42-ab@w1, started 4m05s ago",
        ),
        (
            "running, lease ran out",
            facts(Subject {
                started_ms: Some(NOW - 60_000),
                lease_until_ms: Some(NOW - 3_000),
                ..job(Stage::Running)
            }),
            "running phase start (attempt 1 of 3), started 1m00s ago; its lease ran out 3s ago: it will be retried",
        ),
        (
            "running, no consumer left",
            with_queue(
                facts(Subject {
                    lease_until_ms: Some(NOW + 1_000),
                    ..job(Stage::Running)
                }),
                "bench.fanout",
                found(0, 0),
            ),
            "running phase start (attempt 1 of 3); no worker consumes bench.fanout now: if its worker is gone, the lease runs out and it is retried",
        ),
        (
            "children of a kind nobody consumes",
            with_queue(
                waiting_on(vec![
                    group("bench.leaf", Stage::Queued, 10),
                    group("bench.leaf", Stage::Scheduled, 2),
                ]),
                "bench.leaf",
                found(10, 0),
            ),
            "12 children of kind bench.leaf queued, but no worker consumes bench.leaf",
        ),
        (
            "children of a kind with no queue",
            with_queue(
                waiting_on(vec![group("x", Stage::Queued, 12)]),
                "x",
                QueueState::Missing,
            ),
            "12 children of kind x queued, but no worker consumes x: no worker has ever served it (it has no queue)",
        ),
        (
            "paused children",
            waiting_on(vec![
                group("bench.leaf", Stage::Paused, 1),
                group("bench.leaf", Stage::Running, 11),
            ]),
            "1 child is paused: resume it to go on",
        ),
        (
            "running children",
            with_queue(
                waiting_on(vec![
                    Group {
                        oldest_started_ms: Some(NOW - 240_000),
                        oldest_holder: Some("7-01@w1".into()),
                        ..group("bench.leaf", Stage::Running, 3)
                    },
                    group("bench.leaf", Stage::Queued, 9),
                ]),
                "bench.leaf",
                found(9, 1),
            ),
            "waiting for 3 running children (oldest started 4m00s ago on worker 7-01@w1), 9 more open",
        ),
        (
            "children retrying",
            waiting_on(vec![
                Group {
                    next_ms: Some(NOW + 12_000),
                    ..group("bench.leaf", Stage::Scheduled, 2)
                },
                group("bench.leaf", Stage::Waiting, 10),
            ]),
            "waiting for 12 children: 2 have a retry scheduled (next in 12s)",
        ),
        (
            "children queued",
            with_queue(
                waiting_on(vec![
                    group("bench.leaf", Stage::Queued, 11),
                    group("bench.leaf", Stage::Unpublished, 1),
                ]),
                "bench.leaf",
                found(11, 4),
            ),
            "12 children of kind bench.leaf queued: 11 tasks ready in its queue, 4 consumers serving it",
        ),
        (
            "children waiting on theirs",
            waiting_on(vec![group("demo.du", Stage::Waiting, 12)]),
            "waiting for 12 children that wait on their own children (ask why on them)",
        ),
        (
            "too many to count",
            Facts {
                fanout: Some(Fanout {
                    expected: Some(20),
                    total: 20,
                    terminal: 8,
                    groups: None,
                }),
                ..waiting_on(vec![])
            },
            "waiting for 12 open children (too many to look at in time)",
        ),
        (
            "children not counted in yet",
            Facts {
                fanout: Some(Fanout {
                    expected: Some(20),
                    total: 15,
                    terminal: 15,
                    groups: Some(vec![]),
                }),
                ..waiting_on(vec![])
            },
            "waiting for 5 of 20 children the phase spawned that have not been counted in yet",
        ),
        (
            "fan-in due",
            Facts {
                fanout: Some(Fanout {
                    expected: Some(20),
                    total: 20,
                    terminal: 20,
                    groups: Some(vec![]),
                }),
                ..waiting_on(vec![])
            },
            "all 20 children are done: the fan-in is due",
        ),
    ];
    for (what, f, expected) in cases {
        assert_eq!(reason(&f), expected, "{what}");
    }
}

#[test]
fn spans_read_well() {
    for (ms, text) in [
        (-5, "0ms"),
        (850, "850ms"),
        (12_300, "12s"),
        (245_000, "4m05s"),
        (11_220_000, "3h07m"),
    ] {
        assert_eq!(span(ms), text);
    }
}

#[test]
fn stages_parse() {
    for (s, stage) in [
        ("scheduled", Stage::Scheduled),
        ("unpublished", Stage::Unpublished),
        ("queued", Stage::Queued),
        ("running", Stage::Running),
        ("waiting", Stage::Waiting),
        ("paused", Stage::Paused),
        ("done", Stage::Done),
        ("new-in-a-later-build", Stage::Queued),
    ] {
        assert_eq!(Stage::parse(s), stage);
    }
}
