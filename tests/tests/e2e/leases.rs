//! Long and hung phases: leases renewed by heartbeats, early acks for long
//! phases, and the reaper that retries a phase whose worker went silent.
//! Intervals are shortened to seconds.

use std::time::{Duration, Instant};

use serde_json::json;
use tributary_tests::{ClusterOptions, TestCluster};
use uuid::Uuid;

fn short_leases(workers: usize) -> ClusterOptions {
    ClusterOptions {
        workers,
        concurrency: 8,
        worker_env: vec![
            ("TRIBUTARY_HEARTBEAT_SECS".into(), "1".into()),
            ("TRIBUTARY_ACK_AFTER_SECS".into(), "1".into()),
        ],
        coordinator_env: vec![("TRIBUTARY_LEASE_SWEEP_MS".into(), "200".into())],
        // A hung worker's connection is closed by the broker after two
        // missed heartbeats; its unacked tasks then go to the live worker.
        amqp_url: Some(format!("{}?heartbeat=2", tributary_tests::AMQP_URL)),
        ..Default::default()
    }
}

fn signal(pid: Option<u32>, sig: &str) {
    let pid = pid.expect("a running process");
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn wait_running(c: &TestCluster, root: Uuid, at_least: i64) {
    let started = Instant::now();
    loop {
        let running: i64 = sqlx::query_scalar(
            "select count(*) from jobs where root_id = $1 and parent_id is not null and phase_status = 'running'",
        )
        .bind(root)
        .fetch_one(&c.pool)
        .await
        .expect("count");
        if running >= at_least {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "children did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attempts(c: &TestCluster, root: Uuid) -> Vec<i32> {
    sqlx::query_scalar("select attempt from jobs where parent_id = $1 order by child_index")
        .bind(root)
        .fetch_all(&c.pool)
        .await
        .expect("attempts")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_phase_past_the_ack_window_runs_exactly_once() {
    let c = TestCluster::start_with(short_leases(1)).await;
    // Each child runs 4 s: past the 1 s early-ack window and across four
    // heartbeats, well past a lease without them (3 s).
    let id = c
        .submit("bench.fanout", json!({ "n": 3, "sleep_ms": 4000 }))
        .await;
    let job = c.wait_for(id, "completed", Duration::from_secs(60)).await;
    assert_eq!(job["output"]["sum"], 3);
    assert_eq!(attempts(&c, id).await, [1, 1, 1], "no phase ran twice");
    assert_eq!(c.fenced().await, 0, "no duplicate outcome was produced");
    c.assert_tree_exact(id).await;
    assert_eq!(c.task_queue_depth().await, 0);
    c.report("long-phase-past-ack-window", 0).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_after_the_early_ack_is_recovered_by_its_lease() {
    let mut c = TestCluster::start_with(short_leases(1)).await;
    let id = c
        .submit("bench.fanout", json!({ "n": 3, "sleep_ms": 5000 }))
        .await;
    wait_running(&c, id, 3).await;
    // Past the ack window: the broker no longer holds these tasks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.kill_worker(0).await;
    c.start_worker().await;
    let job = c.wait_for(id, "completed", Duration::from_secs(60)).await;
    assert_eq!(job["output"]["sum"], 3);
    assert_eq!(
        attempts(&c, id).await,
        [2, 2, 2],
        "each child was retried once, by its lease"
    );
    let errors: Vec<String> = sqlx::query_scalar(
        "select error from phases where job_id in (select id from jobs where parent_id = $1) and status = 'failed'",
    )
    .bind(id)
    .fetch_all(&c.pool)
    .await
    .expect("phases");
    assert_eq!(errors.len(), 3);
    assert!(
        errors.iter().all(|e| e.contains("lease expired")),
        "{errors:?}"
    );
    c.assert_tree_exact(id).await;
    c.report("worker-killed-after-early-ack", 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_worker_is_detected_and_its_late_outcomes_change_nothing() {
    let mut c = TestCluster::start_with(short_leases(1)).await;
    let id = c
        .submit("bench.fanout", json!({ "n": 4, "sleep_ms": 3000 }))
        .await;
    wait_running(&c, id, 4).await;
    // The worker hangs without dying: its connections stay open, so the
    // broker redelivers nothing; only the missing heartbeats tell.
    let hung = c.workers[0].id();
    signal(hung, "STOP");
    c.start_worker().await;
    let job = c.wait_for(id, "completed", Duration::from_secs(60)).await;
    assert_eq!(job["output"]["sum"], 6);
    assert_eq!(attempts(&c, id).await, [2, 2, 2, 2]);
    // Woken up, the hung worker finds its connections closed by the broker
    // (missed heartbeats): whatever its stale executions report is either
    // undeliverable or fenced. Either way nothing changes.
    signal(hung, "CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        c.workers[0].try_wait().expect("status").is_none(),
        "the woken worker carries on"
    );
    assert_eq!(c.job(id).await["output"], job["output"]);
    c.assert_tree_exact(id).await;
    c.report("hung-worker", 1).await;
    c.shutdown().await;
}
