//! Hostile reports: text the database refuses, reports it refuses for
//! reasons no sanitising foresaw, forged tokens, spawns past the caps, and a
//! flood of submits. Each is isolated (fenced, refused or dead-lettered),
//! its job ends readably, and healthy work next to it completes exactly.

use std::time::Duration;

use serde_json::json;
use tributary_common::job::DispatchToken;
use tributary_common::wire::{self, Outcome, Report, ReportItem};
use tributary_tests::{ClusterOptions, TestCluster};

const MINUTE: Duration = Duration::from_secs(60);

/// `TRIBUTARY_SOAK=1` injects many more hostile items per scenario.
fn soak() -> bool {
    std::env::var_os("TRIBUTARY_SOAK").is_some()
}

/// A job that sits in a running phase long enough to be reported on.
async fn sleeper(c: &TestCluster, value: u64) -> (uuid::Uuid, DispatchToken) {
    let id = c
        .submit("bench.leaf", json!({ "value": value, "sleep_ms": 4000 }))
        .await;
    (id, c.published_token(id).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_bytes_from_workers_are_stripped_and_never_stall_the_namespace() {
    let c = TestCluster::start().await;
    // An input the leaf cannot decode: its error quotes the NUL-bearing value.
    let bad = c
        .submit("bench.leaf", json!({ "value": "a\u{0}b", "fail": "never" }))
        .await;
    // Log and progress text with NUL, from the worker that holds the task.
    let (victim, token) = sleeper(&c, 5).await;
    let lines = if soak() { 200 } else { 1 };
    let mut items = vec![ReportItem::Progress {
        token,
        done: u64::MAX,
        total: u64::MAX,
        message: "half\0way".into(),
    }];
    items.extend((0..lines).map(|_| ReportItem::Log {
        token,
        level: "warn\0".into(),
        message: "a\0line ".repeat(5000),
    }));
    c.publish_report(&Report { items }).await;
    let failed = c.wait_for(bad, "failed", MINUTE).await;
    let error = failed["error"].as_str().expect("an error");
    assert!(!error.contains('\0'), "{error:?}");
    assert!(
        error.contains("bench.leaf"),
        "the error is readable: {error:?}"
    );
    let (message, level): (String, String) = c
        .eventually("the log line is stored", MINUTE, || async {
            sqlx::query_as("select message, level from job_logs where job_id = $1 limit 1")
                .bind(victim)
                .fetch_optional(&c.pool)
                .await
                .expect("read logs")
        })
        .await;
    assert!(!message.contains('\0'));
    assert!(message.len() <= 8 * 1024, "capped: {} bytes", message.len());
    assert!(message.starts_with("aline aline"), "{:?}", &message[..20]);
    assert_eq!(level, "info", "an unknown level is stored as info");
    let done = c.wait_for(victim, "completed", MINUTE).await;
    assert_eq!(done["output"], 5);
    let id = c.submit("bench.fanout", json!({ "n": 1000 })).await;
    c.assert_fanout_exact(id, 1000, MINUTE).await;
    c.report("nul-text-from-workers", 2 + lines).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_the_database_refuses_is_dead_lettered_across_a_restart_and_the_rest_applies() {
    let mut c = TestCluster::start().await;
    // A refusal no sanitising foresees: a constraint on this test's own
    // database that the coordinator cannot know about.
    sqlx::query(
        "alter table jobs add constraint poison_probe check (error is null or error not like '%POISON%')",
    )
    .execute(&c.pool)
    .await
    .expect("add the probe constraint");
    let n = 600u64;
    let fanout = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 5 }))
        .await;
    let victims = if soak() { 8 } else { 1 };
    let mut tokens = Vec::new();
    for v in 0..victims {
        tokens.push(sleeper(&c, v).await);
    }
    // The poisoned reports wait in the queue while the coordinator is down,
    // among healthy reports of the running fan-out.
    c.kill_coordinator().await;
    for (_, token) in &tokens {
        c.publish_report(&Report {
            items: vec![
                ReportItem::Progress {
                    token: *token,
                    done: 1,
                    total: 2,
                    message: "fine".into(),
                },
                ReportItem::Finished {
                    token: *token,
                    outcome: Outcome::Fail {
                        error: "POISON".into(),
                        retryable: false,
                    },
                },
            ],
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.start_coordinator().await;
    for (victim, _) in &tokens {
        let job = c.wait_for(*victim, "failed", MINUTE).await;
        let error = job["error"].as_str().expect("an error");
        assert!(
            error.contains("refused") && error.contains("dead-lettered"),
            "{error:?}"
        );
    }
    c.assert_fanout_exact(fanout, n, Duration::from_secs(120))
        .await;
    assert_eq!(c.counter("poisoned_reports").await, victims as i64);
    assert!(
        c.dead_letter_depth().await >= 1,
        "the messages were dead-lettered"
    );
    // The real workers' outcomes arrive later and are fenced, not applied.
    c.eventually("the workers' late outcomes are fenced", MINUTE, || async {
        (c.counter("fenced_reports").await >= victims as i64).then_some(())
    })
    .await;
    for (victim, _) in &tokens {
        assert_eq!(c.job(*victim).await["status"], "failed");
    }
    let (_, metrics) = c.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!("tributary_report_items_poisoned_total {victims}")),
        "{metrics}"
    );
    c.report("poisoned-report-across-restart", victims as u32 + 1)
        .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_outcomes_are_fenced_and_counted() {
    let c = TestCluster::start().await;
    let (victim, token) = sleeper(&c, 11).await;
    let forged = |nonce: u64| ReportItem::Finished {
        token: DispatchToken { nonce, ..token },
        outcome: Outcome::Complete {
            output: wire::to_payload(&999u64).expect("encode"),
        },
    };
    // Guessable tokens (the job id from the API, phase 1, attempt 1) with
    // no nonce or a wrong one; and a log line for the job.
    let k = if soak() { 500 } else { 3 };
    let mut items = vec![forged(0), forged(token.nonce.wrapping_add(1))];
    items.extend((2..k).map(|_| forged(DispatchToken::new_nonce())));
    items.push(ReportItem::Log {
        token: DispatchToken { nonce: 0, ..token },
        level: "info".into(),
        message: "forged".into(),
    });
    c.publish_report(&Report { items }).await;
    c.eventually("the forged items are counted", MINUTE, || async {
        (c.counter("forged_reports").await >= k as i64).then_some(())
    })
    .await;
    let job = c.wait_for(victim, "completed", MINUTE).await;
    assert_eq!(job["output"], 11, "the real worker's outcome stands: {job}");
    let logs: i64 = sqlx::query_scalar("select count(*) from job_logs where job_id = $1")
        .bind(victim)
        .fetch_one(&c.pool)
        .await
        .expect("count logs");
    assert_eq!(logs, 0, "a forged log line is not stored");
    c.report("forged-outcomes", k as u32 + 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spawns_past_the_caps_fail_the_parent_naming_the_cap() {
    let c = TestCluster::start_with(ClusterOptions {
        coordinator_env: vec![
            ("TRIBUTARY_MAX_CHILDREN_PER_JOB".into(), "300".into()),
            ("TRIBUTARY_MAX_JOBS_PER_TREE".into(), "500".into()),
        ],
        ..Default::default()
    })
    .await;
    let per_job = c
        .submit("bench.fanout", json!({ "n": 1000, "batch": 100 }))
        .await;
    let job = c.wait_for(per_job, "failed", MINUTE).await;
    let error = job["error"].as_str().expect("an error");
    assert!(
        error.contains("TRIBUTARY_MAX_CHILDREN_PER_JOB"),
        "{error:?}"
    );
    assert!(
        job["children"]["total"].as_i64().expect("total") <= 300,
        "nothing past the cap was created: {job}"
    );
    let created: i64 = sqlx::query_scalar("select count(*) from jobs where parent_id = $1")
        .bind(per_job)
        .fetch_one(&c.pool)
        .await
        .expect("count children");
    assert!(created <= 300, "{created} children created past the cap");
    // A healthy fan-out right after completes exactly.
    let ok = c.submit("bench.fanout", json!({ "n": 200 })).await;
    c.assert_fanout_exact(ok, 200, MINUTE).await;
    c.report("spawn-past-caps", 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tree_cap_counts_every_job_of_the_tree() {
    let c = TestCluster::start_with(ClusterOptions {
        coordinator_env: vec![("TRIBUTARY_MAX_JOBS_PER_TREE".into(), "100".into())],
        ..Default::default()
    })
    .await;
    let id = c
        .submit("bench.fanout", json!({ "n": 150, "batch": 50 }))
        .await;
    let job = c.wait_for(id, "failed", MINUTE).await;
    let error = job["error"].as_str().expect("an error");
    assert!(error.contains("TRIBUTARY_MAX_JOBS_PER_TREE"), "{error:?}");
    let (_, tree) = c.get(&format!("/v1/jobs/{id}/tree")).await;
    assert!(
        tree["jobs"].as_i64().expect("jobs") <= 100,
        "the tree stayed within its cap: {tree}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_submits_all_complete() {
    let c = TestCluster::start().await;
    let n = 1000u64;
    let ids = {
        use futures_util::StreamExt;
        let mut ids = Vec::with_capacity(n as usize);
        let mut pending = futures_util::stream::FuturesUnordered::new();
        for v in 0..n {
            pending.push(c.submit("bench.leaf", json!({ "value": v })));
            if pending.len() >= 64
                && let Some(id) = pending.next().await
            {
                ids.push(id);
            }
        }
        while let Some(id) = pending.next().await {
            ids.push(id);
        }
        ids
    };
    assert_eq!(ids.len(), n as usize);
    c.eventually(
        "every flooded job completes",
        Duration::from_secs(120),
        || async {
            let done: i64 =
                sqlx::query_scalar("select count(*) from jobs where status = 'completed'")
                    .fetch_one(&c.pool)
                    .await
                    .expect("count");
            (done == n as i64).then_some(())
        },
    )
    .await;
    c.report("submit-flood", 0).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_task_is_dead_lettered_and_the_worker_lives_on() {
    let c = TestCluster::start().await;
    let topology = tributary_common::topology::Topology::new(&c.namespace).expect("namespace");
    // Over the 16 MiB wire limit: refused before it is decoded.
    let body = vec![0x90u8; wire::MAX_MESSAGE_BYTES + 1024];
    c.publish_raw(&topology.task_queue("bench.leaf"), &body)
        .await;
    c.eventually("the oversize task is dead-lettered", MINUTE, || async {
        (c.dead_letter_depth().await >= 1).then_some(())
    })
    .await;
    let id = c.submit("bench.fanout", json!({ "n": 1000 })).await;
    c.assert_fanout_exact(id, 1000, MINUTE).await;
    c.report("oversize-task", 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_refuses_a_status_no_code_knows() {
    let c = TestCluster::start_with(ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let id = c.submit("bench.leaf", json!({ "value": 1 })).await;
    for (column, value) in [
        ("status", "bogus"),
        ("phase_status", "halfway"),
        ("failure_action", "shrug"),
    ] {
        let sql = format!("update jobs set {column} = $1 where id = $2");
        let err = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .bind(id)
            .execute(&c.pool)
            .await
            .expect_err("an unknown value is refused");
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("23514"), "{column}: {err}");
    }
    c.shutdown().await;
}
