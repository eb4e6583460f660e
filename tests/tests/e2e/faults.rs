//! Faults the core must survive: duplicate and stale reports, killed
//! workers, a killed coordinator, poison messages, graceful stops.

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tributary_common::broker;
use tributary_common::job::DispatchToken;
use tributary_common::topology::Topology;
use tributary_common::wire::{self, Outcome, Report, ReportItem};
use tributary_tests::{AMQP_URL, ClusterOptions, TestCluster};
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);

async fn publish_raw(queue: &str, body: &[u8]) {
    let cancel = CancellationToken::new();
    let conn = broker::connect(AMQP_URL, "test-publisher", &cancel)
        .await
        .expect("connect");
    let ch = broker::confirm_channel(&conn).await.expect("channel");
    broker::publish(&ch, "", queue, body, true)
        .await
        .expect("publish")
        .confirmed()
        .await
        .expect("confirmed");
    let _ = conn.close(200, "done".into()).await;
}

async fn queue_depth(queue: &str) -> u32 {
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_report_delivered_twice_still_counts_exactly() {
    let c = TestCluster::start_with(ClusterOptions {
        worker_env: vec![("TRIBUTARY_FAULT_DUPLICATE_REPORTS".into(), "true".into())],
        ..Default::default()
    })
    .await;
    let n = 500u64;
    let id = c
        .submit("bench.fanout", json!({ "n": n, "batch": 100 }))
        .await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["sum"], n * (n - 1) / 2);
    assert_eq!(job["output"]["counted"], json!([n, n, 0]));
    c.assert_tree_exact(id).await;
    // Each child's Finished arrives twice: at least n duplicates were fenced.
    assert!(c.fenced().await >= n as i64, "fenced {}", c.fenced().await);
    c.report("every-report-twice", 0).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_outcome_changes_nothing_and_is_counted() {
    let c = TestCluster::start().await;
    let id = c.submit("bench.fanout", json!({ "n": 10 })).await;
    let before = c.wait_for(id, "completed", MINUTE).await;
    let (child, seq, attempt, nonce): (Uuid, i32, i32, i64) = sqlx::query_as(
        "select id, phase_seq, attempt, nonce from jobs where parent_id = $1 order by child_index limit 1",
    )
    .bind(id)
    .fetch_one(&c.pool)
    .await
    .expect("a child");
    let fenced_before = c.fenced().await;
    let token = DispatchToken {
        job_id: child,
        seq: seq as u32,
        attempt: attempt as u32,
        nonce: nonce as u64,
    };
    let stale = Report {
        items: vec![
            ReportItem::Finished {
                token,
                outcome: Outcome::Complete {
                    output: wire::to_payload(&999u64).expect("encode"),
                },
            },
            ReportItem::Finished {
                token,
                outcome: Outcome::Fail {
                    error: "late".into(),
                    retryable: false,
                },
            },
        ],
    };
    let topology = Topology::new(&c.namespace).expect("ns");
    publish_raw(
        &topology.reports_queue(),
        &wire::encode(&stale).expect("encode"),
    )
    .await;
    c.eventually(
        "the stale outcomes are counted",
        Duration::from_secs(20),
        || async { (c.fenced().await >= fenced_before + 2).then_some(()) },
    )
    .await;
    let after = c.job(id).await;
    assert_eq!(after["children"], before["children"]);
    let (_, child_view) = c.get(&format!("/v1/jobs/{child}")).await;
    assert_eq!(child_view["status"], "completed");
    assert_eq!(
        child_view["output"], 0,
        "the child's output is still its own"
    );
    c.assert_tree_exact(id).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_phase_loses_nothing() {
    let mut c = TestCluster::start_with(ClusterOptions {
        concurrency: 8,
        ..Default::default()
    })
    .await;
    let n = 300u64;
    let id = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 100 }))
        .await;
    // Kill a worker while it holds running phases.
    c.wait_children_done(id, 40).await;
    c.kill_worker(0).await;
    c.start_worker().await;
    c.assert_fanout_exact(id, n, Duration::from_secs(120)).await;
    c.report("worker-sigkill-mid-phase", 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_killed_mid_fan_out_loses_nothing() {
    let mut c = TestCluster::start().await;
    let n = 3000u64;
    let id = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 250, "sleep_ms": 2 }),
        )
        .await;
    c.wait_children_done(id, 200).await;
    c.kill_coordinator().await;
    // Workers keep finishing phases while the coordinator is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.start_coordinator().await;
    c.assert_fanout_exact(id, n, Duration::from_secs(180)).await;
    c.report("coordinator-sigkill-mid-fan-out", 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_messages_are_dead_lettered_and_the_run_completes() {
    let c = TestCluster::start().await;
    let topology = Topology::new(&c.namespace).expect("ns");
    let wrong_version = rmp_serde::to_vec_named(&(99u16, "from the future")).expect("encode");
    for queue in [topology.reports_queue(), topology.task_queue("bench.leaf")] {
        publish_raw(&queue, b"\x00\x01garbage").await;
        publish_raw(&queue, &wrong_version).await;
    }
    let id = c.submit("bench.fanout", json!({ "n": 50 })).await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["sum"], 49 * 50 / 2);
    c.eventually(
        "the poison messages are dead-lettered",
        Duration::from_secs(20),
        || async { (c.dead_letter_depth().await >= 4).then_some(()) },
    )
    .await;
    assert_eq!(c.dead_letter_depth().await, 4);
    c.assert_tree_exact(id).await;
    c.report("poison-messages", 0).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_processes_cleanly_and_work_resumes() {
    let mut c = TestCluster::start_with(ClusterOptions {
        workers: 1,
        concurrency: 4,
        ..Default::default()
    })
    .await;
    let id = c
        .submit("bench.fanout", json!({ "n": 40, "sleep_ms": 300 }))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The worker finishes its in-flight phases within the grace period and exits 0.
    let status = c.terminate_worker(0).await;
    assert!(status.success(), "worker exit: {status:?}");
    // Its in-flight phases were finished and reported, not dropped: once the
    // coordinator has applied the reports, none is left running (a dropped
    // one would stay running until its 30 s lease ran out).
    let started = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from jobs where root_id = $1 and phase_status = 'running'",
        )
        .bind(id)
        .fetch_one(&c.pool)
        .await
        .expect("count");
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a drained worker left {open} phases running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = c.terminate_coordinator().await;
    assert!(status.success(), "coordinator exit: {status:?}");
    c.start_coordinator().await;
    c.start_worker().await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["sum"], 39 * 40 / 2);
    c.assert_tree_exact(id).await;
    c.report("sigterm-worker-and-coordinator", 2).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_redelivered_too_often_fails_that_attempt_instead_of_dead_lettering() {
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    use tributary_common::wire::{Task, Tasks};

    let c = TestCluster::start().await;
    let id = c
        .submit("bench.leaf", json!({ "value": 7, "sleep_ms": 2000 }))
        .await;
    // The same execution, as the broker would hand it out on its tenth
    // delivery (quorum queues count deliveries in x-delivery-count).
    let input = wire::to_payload(&json!({ "value": 7, "sleep_ms": 2000 })).expect("encode");
    // The token as the relay published it, nonce included.
    let task = Task {
        token: c.published_token(id).await,
        kind: "bench.leaf".into(),
        phase: "start".into(),
        root_id: id,
        parent_id: None,
        input,
        state: None,
        children: None,
        fanout_seq: None,
    };
    let body = wire::encode(&Tasks { tasks: vec![task] }).expect("encode");
    let mut headers = FieldTable::default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(9));
    let cancel = CancellationToken::new();
    let conn = broker::connect(AMQP_URL, "test-redelivery", &cancel)
        .await
        .expect("connect");
    let ch = broker::confirm_channel(&conn).await.expect("channel");
    let topology = Topology::new(&c.namespace).expect("ns");
    ch.basic_publish(
        "".into(),
        topology.task_queue("bench.leaf").as_str().into(),
        BasicPublishOptions::default(),
        &body,
        broker::message_properties().with_headers(headers),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let _ = conn.close(200, "done".into()).await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"], 7);
    assert_eq!(
        job["attempt"], 2,
        "the over-delivered attempt failed and a fresh one ran: {job}"
    );
    let error = job["phases"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("delivered 10 times"), "{job}");
    assert_eq!(
        queue_depth(&topology.dead_letter_queue()).await,
        0,
        "nothing was dead-lettered"
    );
    c.assert_tree_exact(id).await;
    c.shutdown().await;
}
