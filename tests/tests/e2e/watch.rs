//! `tributary watch` and `submit --wait` over the live event stream: with
//! stderr not a terminal they print plain lines (the job's moves, the
//! tree's counts), never an escape sequence, then the final JSON, and exit
//! 0, 1 or 2 as the job ended.

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{TestCluster, bin};

/// Runs `tributary args...` against the cluster, stdout and stderr piped.
async fn tributary(c: &TestCluster, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(bin("tributary"))
        .args(args)
        .env("TRIBUTARY_COORDINATOR_URL", &c.url)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("tributary ended within 2 minutes")
        .expect("run tributary")
}

fn final_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is the final JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn watch_follows_a_fanout_to_the_end_in_plain_lines() {
    let c = TestCluster::start().await;
    let n = 300;
    let root = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 50, "sleep_ms": 20 }),
        )
        .await;
    let out = tributary(&c, &["watch", &root.to_string()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains('\x1b'), "no escape sequences: {stderr:?}");
    let counts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("tree {root}: ")))
        .collect();
    assert!(!counts.is_empty(), "counts lines: {stderr}");
    let last = counts.last().copied().unwrap_or_default();
    assert!(
        last.contains(&format!("{0}/{0} ended", n + 1))
            && last.contains(&format!("completed {}", n + 1)),
        "the last counts line has every job ended: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "job {root} bench.fanout: completed, phase sum (completed)"
        )),
        "the job's moves, its end included: {stderr}"
    );
    let job = final_json(&out);
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["id"], json!(root));

    // `submit --wait` follows the same way.
    let out = tributary(
        &c,
        &[
            "submit",
            "bench.leaf",
            "--input",
            r#"{"value": 7, "sleep_ms": 200}"#,
            "--wait",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    let job = final_json(&out);
    assert_eq!(
        (&job["status"], &job["output"]),
        (&json!("completed"), &json!(7))
    );
    c.shutdown().await;
}

#[tokio::test]
async fn watch_exits_2_when_the_job_is_cancelled_and_1_for_an_unknown_id() {
    let c = TestCluster::start().await;
    let root = c
        .submit(
            "bench.fanout",
            json!({ "n": 200, "batch": 50, "sleep_ms": 60_000 }),
        )
        .await;
    let id = root.to_string();
    let watch = {
        let url = c.url.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::process::Command::new(bin("tributary"))
                .args(["watch", &id])
                .env("TRIBUTARY_COORDINATOR_URL", url)
                .kill_on_drop(true)
                .output()
                .await
                .expect("run tributary watch")
        })
    };
    c.eventually(
        "the fan-out waits on its children",
        Duration::from_secs(60),
        || async { (c.job(root).await["status"] == "waiting").then_some(()) },
    )
    .await;
    let (status, answer) = c.post(&format!("/v1/jobs/{root}/cancel"), None).await;
    assert_eq!(status, 202, "{answer}");
    let out = tokio::time::timeout(Duration::from_secs(60), watch)
        .await
        .expect("watch ended within a minute of the cancel")
        .expect("the watch task");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("job {root} was cancelled")),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert_eq!(final_json(&out)["status"], "cancelled");

    let unknown = uuid::Uuid::now_v7().to_string();
    let out = tributary(&c, &["watch", &unknown]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains(&format!("no job {unknown}")), "{stderr}");
    c.shutdown().await;
}

#[tokio::test]
async fn watch_resumes_after_the_coordinator_restarts() {
    let mut c = TestCluster::start().await;
    let n = 100;
    let root = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 50, "sleep_ms": 3000 }),
        )
        .await;
    let watch = {
        let url = c.url.clone();
        let id = root.to_string();
        tokio::spawn(async move {
            tokio::process::Command::new(bin("tributary"))
                .args(["watch", &id])
                .env("TRIBUTARY_COORDINATOR_URL", url)
                .kill_on_drop(true)
                .output()
                .await
                .expect("run tributary watch")
        })
    };
    c.eventually(
        "the fan-out waits on its children",
        Duration::from_secs(60),
        || async { (c.job(root).await["status"] == "waiting").then_some(()) },
    )
    .await;
    // Let the watch open its stream, then take the coordinator away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill_coordinator().await;
    c.start_coordinator().await;
    let out = tokio::time::timeout(Duration::from_secs(90), watch)
        .await
        .expect("watch ended")
        .expect("the watch task");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("event stream lost") && stderr.contains("reconnecting"),
        "the drop is told: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{0}/{0} ended", n + 1)),
        "the counts reach the end after the resume: {stderr}"
    );
    assert_eq!(final_json(&out)["status"], "completed");
    c.shutdown().await;
}
