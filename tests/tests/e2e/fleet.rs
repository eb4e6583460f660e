//! `GET /v1/fleet`: the workers running phases (by the leases they hold),
//! the task queues of the kinds with work about, the outbox, dead letters,
//! fenced reports, and the jobs ended per minute over 15 minutes.

use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::TestCluster;

#[tokio::test]
async fn the_fleet_shows_workers_queues_backlog_and_throughput() {
    let c = TestCluster::start().await;
    let n = 600;
    let id = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 100 }))
        .await;
    // While the leaves run: the workers that run them, by host, and the
    // leaves' queue with its consumers.
    let fleet: Value = c
        .eventually(
            "workers running leaves",
            Duration::from_secs(30),
            || async {
                let (status, f) = c.get("/v1/fleet").await;
                assert_eq!(status, 200, "{f}");
                let runs_leaves = f["workers"].as_array().is_some_and(|ws| {
                    ws.iter().any(|w| {
                        w["kinds"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|k| k == "bench.leaf"))
                            && w["running"].as_i64().is_some_and(|r| r > 0)
                    })
                });
                runs_leaves.then_some(f)
            },
        )
        .await;
    for w in fleet["workers"].as_array().expect("workers") {
        let id = w["id"].as_str().expect("an id");
        assert_eq!(
            w["host"].as_str(),
            id.split_once('@').map(|(_, h)| h),
            "{w}"
        );
        assert!(w["host"].as_str().is_some_and(|h| !h.is_empty()), "{w}");
    }
    let running: i64 = fleet["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["running"].as_i64().unwrap_or(0))
        .sum();
    assert!(
        running <= 2 * 16,
        "more running than the workers' slots: {fleet}"
    );
    let leaves = fleet["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["kind"] == "bench.leaf")
        .unwrap_or_else(|| panic!("no bench.leaf queue: {fleet}"))
        .clone();
    assert_eq!(leaves["state"], "found", "{leaves}");
    assert_eq!(leaves["consumers"], 2, "two workers consume: {leaves}");
    assert_eq!(fleet["dead_letters"]["state"], "found", "{fleet}");
    assert_eq!(fleet["dead_letters"]["messages"], 0, "{fleet}");
    assert!(fleet["fenced_reports"].is_i64(), "{fleet}");
    assert!(fleet["outbox"]["due"].is_i64(), "{fleet}");
    assert_eq!(fleet["outbox"]["capped"], false, "{fleet}");

    // Once it is over: nobody runs anything, and every job of the tree is
    // counted in the last 15 minutes.
    c.wait_for(id, "completed", Duration::from_secs(120)).await;
    let (_, f) = c.get("/v1/fleet").await;
    assert_eq!(f["workers"], json!([]), "{f}");
    let minutes = f["throughput"].as_array().expect("throughput");
    assert_eq!(minutes.len(), 15, "{f}");
    let ended: i64 = minutes
        .iter()
        .map(|m| m["ended"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(ended, n + 1, "every job of the tree ended once: {f}");
    let times: Vec<i64> = minutes
        .iter()
        .filter_map(|m| m["minute_ms"].as_i64())
        .collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 60_000),
        "minutes in order: {times:?}"
    );
    c.shutdown().await;
}
