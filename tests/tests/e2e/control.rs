//! Operators steer running trees: cancel stops a large tree within seconds
//! with nothing left running or queued, pause holds a subtree while its
//! running phases finish and resume releases exactly what was held, retry
//! runs an ended job again, `stop_all` cancels the siblings, and every
//! route refuses bad requests with a reason.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Row;
use tributary_tests::TestCluster;
use uuid::Uuid;

/// (open jobs, running phases) of a tree.
async fn open_and_running(c: &TestCluster, root: Uuid) -> (i64, i64) {
    let r = sqlx::query(
        "select count(*) filter (where status not in ('completed', 'failed', 'cancelled')),
                count(*) filter (where phase_status = 'running')
         from jobs where root_id = $1",
    )
    .bind(root)
    .fetch_one(&c.pool)
    .await
    .expect("count");
    (r.get(0), r.get(1))
}

async fn completed_children(c: &TestCluster, root: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from jobs where root_id = $1 and parent_id is not null and status = 'completed'")
        .bind(root)
        .fetch_one(&c.pool)
        .await
        .expect("count")
}

async fn wait_completed_children(c: &TestCluster, root: Uuid, n: i64) {
    c.eventually(
        &format!("{n} children completed"),
        Duration::from_secs(60),
        || async move { (completed_children(c, root).await >= n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn cancel_stops_a_large_tree_within_seconds_with_nothing_left() {
    let c = TestCluster::start().await;
    let n = 20_000;
    let root = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 100 }))
        .await;
    wait_completed_children(&c, root, 300).await;
    let asked = Instant::now();
    let (status, answer) = c
        .post(
            &format!("/v1/jobs/{root}/cancel"),
            Some(&json!({ "reason": "wrong input" })),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "cancelled");
    assert_eq!(answer["changed"], true);
    // Whatever committed before the cancel stays; nothing completes after
    // it, even where the walk has not reached yet.
    let completed_at_cancel = completed_children(&c, root).await;
    c.eventually(
        "every job of the tree ended, none running",
        Duration::from_secs(30),
        || async { (open_and_running(&c, root).await == (0, 0)).then_some(()) },
    )
    .await;
    let stopped = asked.elapsed();
    c.eventually("no task left queued", Duration::from_secs(30), || async {
        (c.task_queue_depth().await == 0).then_some(())
    })
    .await;
    let drained = asked.elapsed();
    eprintln!(
        "CONTROL cancel of a {n}-child tree: every job ended in {:.1} s, queues empty in {:.1} s",
        stopped.as_secs_f64(),
        drained.as_secs_f64()
    );
    c.assert_tree_exact(root).await;
    let job = c.job(root).await;
    assert_eq!(job["status"], "cancelled");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("wrong input"),
        "{job}"
    );
    let completed = completed_children(&c, root).await;
    assert_eq!(
        completed, completed_at_cancel,
        "no child completed after the cancel"
    );
    assert!(completed < n, "the tree was cancelled before it finished");
    // Idempotent: cancelling again answers the same and changes nothing.
    let (status, again) = c.post(&format!("/v1/jobs/{root}/cancel"), None).await;
    assert_eq!((status, &again["status"]), (202, &json!("cancelled")));
    assert_eq!(again["changed"], false);
    assert_eq!(completed_children(&c, root).await, completed);
    c.shutdown().await;
}

#[tokio::test]
async fn a_cancel_survives_the_coordinator_killed_mid_walk() {
    let mut c = TestCluster::start().await;
    let n = 10_000;
    let root = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 100 }))
        .await;
    wait_completed_children(&c, root, 200).await;
    let (status, _) = c.post(&format!("/v1/jobs/{root}/cancel"), None).await;
    assert_eq!(status, 202);
    // Killed before its walk reached every child; a new coordinator takes
    // the walk over once the dead one's claim runs out.
    c.kill_coordinator().await;
    c.start_coordinator().await;
    c.eventually(
        "every job of the tree ended after the restart",
        Duration::from_secs(90),
        || async { (open_and_running(&c, root).await == (0, 0)).then_some(()) },
    )
    .await;
    c.assert_tree_exact(root).await;
    assert_eq!(c.job(root).await["control_pending"], json!([]));
    c.report("cancel-coordinator-killed-mid-walk", 1).await;
    c.shutdown().await;
}

#[tokio::test]
async fn pause_and_resume_survive_a_worker_killed_while_paused() {
    let mut c = TestCluster::start().await;
    let n = 2000u64;
    let root = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 20 }))
        .await;
    wait_completed_children(&c, root, 100).await;
    let (status, _) = c.post(&format!("/v1/jobs/{root}/pause"), None).await;
    assert_eq!(status, 202);
    // A worker dies while the tree is held (its running phases with it);
    // another takes its place.
    c.kill_worker(0).await;
    c.start_worker().await;
    let (status, _) = c.post(&format!("/v1/jobs/{root}/resume"), None).await;
    assert_eq!(status, 202);
    let job = c
        .assert_fanout_exact(root, n, Duration::from_secs(120))
        .await;
    assert_eq!(job["output"]["sum"], json!((0..n).sum::<u64>()), "{job}");
    c.assert_tree_exact(root).await;
    c.report("pause-resume-worker-killed", 1).await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_retry_survives_the_coordinator_killed_right_after() {
    let mut c = TestCluster::start().await;
    let n = 500u64;
    let root = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 500 }))
        .await;
    wait_completed_children(&c, root, 20).await;
    let (status, _) = c.post(&format!("/v1/jobs/{root}/cancel"), None).await;
    assert_eq!(status, 202);
    c.eventually("the tree ended", Duration::from_secs(60), || async {
        (open_and_running(&c, root).await == (0, 0)).then_some(())
    })
    .await;
    let (status, _) = c.post(&format!("/v1/jobs/{root}/retry"), None).await;
    assert_eq!(status, 202);
    c.kill_coordinator().await;
    c.start_coordinator().await;
    let job = c
        .wait_for(root, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(job["output"]["sum"], json!((0..n).sum::<u64>()), "{job}");
    assert_eq!(job["output"]["completed"], json!(n), "{job}");
    assert_eq!(
        children_of(&c, root).await,
        n as i64,
        "nothing spawned anew"
    );
    c.assert_tree_exact(root).await;
    c.report("retry-coordinator-killed", 1).await;
    c.shutdown().await;
}

#[tokio::test]
async fn pause_holds_a_tree_and_resume_releases_exactly_what_was_held() {
    let c = TestCluster::start().await;
    let n = 400;
    let root = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 50 }))
        .await;
    wait_completed_children(&c, root, 40).await;
    let (status, answer) = c.post(&format!("/v1/jobs/{root}/pause"), None).await;
    assert_eq!(
        (status, &answer["status"]),
        (202, &json!("paused")),
        "{answer}"
    );
    // The pause reaches the whole subtree, running phases finish; then
    // nothing starts.
    c.eventually(
        "the pause carried down the tree",
        Duration::from_secs(30),
        || async {
            let job = c.job(root).await;
            (job["control_pending"] == json!([])).then_some(())
        },
    )
    .await;
    c.eventually(
        "no phase of the tree running",
        Duration::from_secs(30),
        || async { (open_and_running(&c, root).await.1 == 0).then_some(()) },
    )
    .await;
    let held = completed_children(&c, root).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        completed_children(&c, root).await,
        held,
        "nothing ran while paused"
    );
    assert!(held < n, "paused before the end");
    let (paused, odd): (i64, i64) = {
        let r = sqlx::query(
            "select count(*) filter (where status = 'paused' and phase_status = 'paused'),
                    count(*) filter (where status not in ('paused', 'completed'))
             from jobs where root_id = $1 and parent_id is not null",
        )
        .bind(root)
        .fetch_one(&c.pool)
        .await
        .expect("count");
        (r.get(0), r.get(1))
    };
    assert_eq!(paused, n - held, "every child not done is held");
    assert_eq!(odd, 0, "no child in another state");
    let (_, tree) = c.get(&format!("/v1/jobs/{root}/tree")).await;
    assert_eq!(tree["counts"]["paused"], json!(n - held + 1), "{tree}");
    assert_eq!(c.task_queue_depth().await, 0, "held tasks are not queued");

    let (status, answer) = c.post(&format!("/v1/jobs/{root}/resume"), None).await;
    assert_eq!(status, 202, "{answer}");
    let job = c
        .assert_fanout_exact(root, n as u64, Duration::from_secs(60))
        .await;
    assert_eq!(job["status"], "completed");
    let sum: u64 = (0..n as u64).sum();
    assert_eq!(job["output"]["sum"], json!(sum), "{job}");
    c.assert_tree_exact(root).await;
    c.shutdown().await;
}

#[tokio::test]
async fn stop_all_cancels_the_siblings_of_a_failed_child() {
    let c = TestCluster::start().await;
    let root = c
        .submit_with(
            "bench.fanout",
            json!({ "n": 300, "sleep_ms": 100, "fail_every": 100, "fail": "permanent" }),
            Some(json!({ "max_child_failures": 0, "failure_action": "stop_all" })),
        )
        .await;
    let job = c.wait_for(root, "failed", Duration::from_secs(60)).await;
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_child_failures"),
        "{job}"
    );
    c.eventually("the siblings ended", Duration::from_secs(30), || async {
        (open_and_running(&c, root).await == (0, 0)).then_some(())
    })
    .await;
    let cancelled: i64 = sqlx::query_scalar(
        "select count(*) from jobs where parent_id = $1 and status = 'cancelled'",
    )
    .bind(root)
    .fetch_one(&c.pool)
    .await
    .expect("count");
    assert!(cancelled > 0, "stop_all cancelled the open siblings");
    c.assert_tree_exact(root).await;
    c.shutdown().await;
}

#[tokio::test]
async fn retry_runs_a_cancelled_tree_again_to_the_right_answer() {
    let c = TestCluster::start().await;
    let root = c
        .submit("bench.fanout", json!({ "n": 20, "sleep_ms": 1500 }))
        .await;
    c.eventually("the fan-out sealed", Duration::from_secs(30), || async {
        (c.job(root).await["status"] == "waiting").then_some(())
    })
    .await;
    let (status, answer) = c.post(&format!("/v1/jobs/{root}/retry"), None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (&answer["status"], &answer["changed"]),
        (&json!("waiting"), &json!(false)),
        "a job that has not ended is left as it is"
    );
    let (status, _) = c.post(&format!("/v1/jobs/{root}/cancel"), None).await;
    assert_eq!(status, 202);
    c.eventually("the tree ended", Duration::from_secs(30), || async {
        (open_and_running(&c, root).await == (0, 0)).then_some(())
    })
    .await;
    let (status, answer) = c.post(&format!("/v1/jobs/{root}/retry"), None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["status"], "waiting",
        "it waits on its fan-out again: {answer}"
    );
    // Idempotent: a second retry finds it open again and does nothing.
    let (status, again) = c.post(&format!("/v1/jobs/{root}/retry"), None).await;
    assert_eq!((status, &again["changed"]), (202, &json!(false)), "{again}");
    let job = c.wait_for(root, "completed", Duration::from_secs(60)).await;
    assert_eq!(
        children_of(&c, root).await,
        20,
        "the cancelled children ran again; none was spawned anew"
    );
    let sum: u64 = (0..20u64).sum();
    assert_eq!(job["output"]["sum"], json!(sum), "{job}");
    assert_eq!(job["output"]["completed"], 20, "{job}");
    assert!(job["error"].is_null(), "the old error is gone: {job}");
    c.assert_tree_exact(root).await;
    // A completed job cannot be retried.
    let (status, answer) = c.post(&format!("/v1/jobs/{root}/retry"), None).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("completed")
    );
    c.shutdown().await;
}

#[tokio::test]
async fn retrying_a_stop_all_failure_reruns_only_the_failed_and_cancelled_children() {
    let c = TestCluster::start().await;
    let n = 300u64;
    let root = c
        .submit_with(
            "bench.fanout",
            json!({ "n": n, "sleep_ms": 20, "fail_every": 100, "fail": "first_run" }),
            Some(json!({ "max_child_failures": 0, "failure_action": "stop_all" })),
        )
        .await;
    c.wait_for(root, "failed", Duration::from_secs(60)).await;
    c.eventually("the siblings ended", Duration::from_secs(30), || async {
        (open_and_running(&c, root).await == (0, 0)).then_some(())
    })
    .await;
    let kept = completed_children(&c, root).await;
    let (status, answer) = c.post(&format!("/v1/jobs/{root}/retry"), None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (&answer["status"], &answer["changed"]),
        (&json!("waiting"), &json!(true))
    );
    let job = c.wait_for(root, "completed", Duration::from_secs(60)).await;
    let sum: u64 = (0..n).sum();
    assert_eq!(job["output"]["sum"], json!(sum), "{job}");
    assert_eq!(job["output"]["completed"], json!(n), "{job}");
    assert_eq!(
        children_of(&c, root).await,
        n as i64,
        "nothing spawned anew"
    );
    // The children that had completed kept their results: only the rest
    // ran again, as phase 2.
    let rerun: i64 =
        sqlx::query_scalar("select count(*) from jobs where parent_id = $1 and phase_seq = 2")
            .bind(root)
            .fetch_one(&c.pool)
            .await
            .expect("count");
    assert_eq!(rerun, n as i64 - kept, "{kept} kept");
    c.assert_tree_exact(root).await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_racing_pauses_and_resumes_ends_resumed_and_exact() {
    let c = TestCluster::start().await;
    let n = 3000u64;
    let root = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 30 }))
        .await;
    wait_completed_children(&c, root, 100).await;
    // 200 calls from 16 tasks at once, then one last resume.
    let calls = futures_util::future::join_all((0..16).map(|t| {
        let c = &c;
        async move {
            for i in 0..13 {
                let action = if (t + i) % 2 == 0 { "pause" } else { "resume" };
                let (status, a) = c.post(&format!("/v1/jobs/{root}/{action}"), None).await;
                assert_eq!(status, 202, "{action}: {a}");
            }
        }
    }));
    calls.await;
    let (status, a) = c.post(&format!("/v1/jobs/{root}/resume"), None).await;
    assert_eq!(status, 202, "{a}");
    // The superseded walks are dropped, not walked one by one.
    c.eventually("every walk done", Duration::from_secs(60), || async {
        (c.job(root).await["control_pending"] == json!([])).then_some(())
    })
    .await;
    let job = c
        .wait_for(root, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(job["output"]["sum"], json!((0..n).sum::<u64>()), "{job}");
    c.assert_tree_exact(root).await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_child_under_a_paused_parent_is_not_resumed_alone() {
    let c = TestCluster::start().await;
    let root = c
        .submit("bench.fanout", json!({ "n": 200, "sleep_ms": 300 }))
        .await;
    wait_completed_children(&c, root, 10).await;
    let (status, _) = c.post(&format!("/v1/jobs/{root}/pause"), None).await;
    assert_eq!(status, 202);
    c.eventually(
        "the walk paused the children",
        Duration::from_secs(30),
        || async { (c.job(root).await["control_pending"] == json!([])).then_some(()) },
    )
    .await;
    let child: Uuid = sqlx::query_scalar(
        // Held, not a running phase finishing under the pause.
        "select id from jobs where parent_id = $1 and status = 'paused' and phase_status = 'paused' limit 1",
    )
    .bind(root)
    .fetch_one(&c.pool)
    .await
    .expect("a paused child");
    let (status, answer) = c.post(&format!("/v1/jobs/{child}/resume"), None).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("resume the parent"),
        "{answer}"
    );
    assert_eq!(c.job(child).await["status"], "paused");
    let (status, _) = c.post(&format!("/v1/jobs/{root}/resume"), None).await;
    assert_eq!(status, 202);
    c.wait_for(root, "completed", Duration::from_secs(60)).await;
    c.assert_tree_exact(root).await;
    c.shutdown().await;
}

async fn children_of(c: &TestCluster, root: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from jobs where parent_id = $1")
        .bind(root)
        .fetch_one(&c.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn control_routes_refuse_bad_requests_with_a_reason() {
    let mut c = TestCluster::start_with(tributary_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let unknown = Uuid::now_v7();
    for action in ["cancel", "pause", "resume", "retry"] {
        let (status, body) = c.post(&format!("/v1/jobs/{unknown}/{action}"), None).await;
        assert_eq!(status, 404, "{action}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("no job")
        );
        let (status, body) = c.post(&format!("/v1/jobs/not-a-uuid/{action}"), None).await;
        assert_eq!(status, 400, "{action}: {body}");
    }
    let id = c.submit("bench.leaf", json!({ "value": 1 })).await;
    let cases: [(&str, Value, u16); 4] = [
        ("cancel", json!({ "reason": 5 }), 422),
        ("pause", json!({ "surprise": true }), 422),
        ("retry", json!({ "phase": "" }), 422),
        ("retry", json!({ "phase": "x\u{0}y" }), 422),
    ];
    for (action, body, want) in cases {
        let (status, answer) = c
            .post(&format!("/v1/jobs/{id}/{action}"), Some(&body))
            .await;
        assert_eq!(status, want, "{action} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let resp = c
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", c.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 400);
    let resp = c
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", c.url))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 415);
    // GET on a control route is not allowed.
    let (status, _) = c.get(&format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!(status, 405);
    // Pause while a phase runs: it runs on (the job shows paused), and
    // resume finds it running; both are idempotent.
    c.start_worker().await;
    let id = c
        .submit("bench.leaf", json!({ "value": 7, "sleep_ms": 2000 }))
        .await;
    c.eventually("the phase started", Duration::from_secs(30), || async {
        (c.job(id).await["phase_status"] == "running").then_some(())
    })
    .await;
    for _ in 0..2 {
        let (status, a) = c.post(&format!("/v1/jobs/{id}/pause"), None).await;
        assert_eq!((status, &a["status"]), (202, &json!("paused")), "{a}");
    }
    assert_eq!(c.job(id).await["phase_status"], "running");
    for _ in 0..2 {
        let (status, a) = c.post(&format!("/v1/jobs/{id}/resume"), None).await;
        assert_eq!(status, 202, "{a}");
        assert!(
            a["status"] == "running" || a["status"] == "completed",
            "{a}"
        );
    }
    let job = c.wait_for(id, "completed", Duration::from_secs(30)).await;
    assert_eq!(job["output"], 7);
    // The CLI: each action prints where the job stands; a refusal exits 1
    // with the coordinator's reason.
    let cli = |args: Vec<String>| {
        let url = c.url.clone();
        async move {
            tokio::process::Command::new(tributary_tests::bin("tributary"))
                .args(args)
                .env("TRIBUTARY_COORDINATOR_URL", url)
                .output()
                .await
                .expect("run tributary")
        }
    };
    let out = cli(vec!["cancel".into(), id.to_string()]).await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("cancel: job {id} is completed already; nothing to do")
    );
    let out = cli(vec!["retry".into(), id.to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("409") && err.contains("only a failed or cancelled job"),
        "{err}"
    );
    c.shutdown().await;
}
