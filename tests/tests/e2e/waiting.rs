//! Explaining a job that is not progressing (`GET /v1/jobs/{id}/waiting`,
//! `tributary why`), a tree's rate and ETA (`GET /v1/jobs/{id}/tree`), and
//! the CLI's exit codes, timeouts and logs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;
use tributary_tests::{ClusterOptions, TestCluster, bin};

/// Runs the CLI against `url`; returns (exit code, stdout, stderr).
async fn cli(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(bin("tributary"))
            .args(args)
            .env("TRIBUTARY_COORDINATOR_URL", url)
            .env_remove("TRIBUTARY_API_TOKEN")
            .env_remove("TRIBUTARY_CA_FILE")
            .env_remove("TRIBUTARY_CLI_TIMEOUT_SECS")
            .output(),
    )
    .await
    .expect("the CLI ended within 60 s")
    .expect("run the CLI");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `/waiting` of `id` until `pred` holds; returns that answer.
async fn waiting_until(
    c: &TestCluster,
    id: uuid::Uuid,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    c.eventually(what, Duration::from_secs(60), || async {
        let (status, body) = c.get(&format!("/v1/jobs/{id}/waiting")).await;
        assert_eq!(status, 200, "{body}");
        pred(&body).then_some(body)
    })
    .await
}

#[tokio::test]
async fn names_lease_holders_then_the_kind_no_worker_consumes() {
    let mut c = TestCluster::start_with(ClusterOptions {
        workers: 1,
        // A lease of 3 s: a dead worker's children are retried soon.
        worker_env: vec![("TRIBUTARY_HEARTBEAT_SECS".into(), "1".into())],
        ..ClusterOptions::default()
    })
    .await;
    let pid = c.workers[0].id().expect("the worker runs");
    let id = c
        .submit("bench.fanout", json!({ "n": 12, "sleep_ms": 600_000 }))
        .await;

    // The children run on the one worker: the answer names it.
    let w = waiting_until(&c, id, "children running with a lease holder", |w| {
        w["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("waiting for 12 running children"))
            && w["children"]["oldest"][0]["lease_holder"].is_string()
    })
    .await;
    let holder = w["children"]["oldest"][0]["lease_holder"]
        .as_str()
        .expect("a holder");
    assert!(holder.starts_with(&format!("{pid}-")), "{holder}");
    assert!(
        w["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("on worker {holder}"))),
        "{w}"
    );
    assert_eq!(w["children"]["open_by_status"], json!({ "running": 12 }));
    assert_eq!(w["children"]["oldest"].as_array().map(Vec::len), Some(10));
    assert_eq!(w["children"]["oldest"][0]["index"], 0);
    // The tree is running: a rate and an ETA once children end; elapsed at least.
    let (_, tree) = c.get(&format!("/v1/jobs/{id}/tree")).await;
    assert!(tree["elapsed_ms"].as_i64().is_some_and(|e| e > 0), "{tree}");
    assert_eq!(tree["remaining"], 13);

    // The worker dies: its children's leases run out, their retries are
    // queued, and nobody consumes bench.leaf any more.
    c.kill_worker(0).await;
    let w = waiting_until(&c, id, "the reason to name the kind nobody consumes", |w| {
        w["reason"].as_str().is_some_and(|r| {
            r.ends_with("of kind bench.leaf queued, but no worker consumes bench.leaf")
        })
    })
    .await;
    let leaf = w["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["kind"] == "bench.leaf"))
        .expect("bench.leaf's queue was asked about");
    assert_eq!(
        (&leaf["state"], &leaf["consumers"]),
        (&json!("found"), &json!(0)),
        "{w}"
    );
    assert!(
        w["children"]["oldest"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("lease")),
        "the lease's end is the last error: {w}"
    );

    // `tributary why` says the same, first.
    let (code, out, err) = cli(&c.url, &["why", &id.to_string()]).await;
    assert_eq!(code, Some(0), "{err}");
    let second = out.lines().nth(1).unwrap_or_default();
    assert!(
        second.starts_with("why: ") && second.contains("no worker consumes bench.leaf"),
        "{out}"
    );
    let (code, out, _) = cli(&c.url, &["why", &id.to_string(), "--output", "json"]).await;
    assert_eq!(code, Some(0));
    let json: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["id"], json!(id));
    c.shutdown().await;
}

#[tokio::test]
async fn a_scheduled_retry_and_the_routes_errors() {
    let c = TestCluster::start_with(ClusterOptions {
        workers: 1,
        ..ClusterOptions::default()
    })
    .await;
    // Backoffs grow to seconds by the fourth retry: the answer catches one.
    let id = c
        .submit_with(
            "bench.leaf",
            json!({ "value": 7, "fail": "always" }),
            Some(json!({ "max_attempts": 6 })),
        )
        .await;
    let w = waiting_until(&c, id, "a scheduled retry", |w| {
        w["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("a retry is scheduled in"))
    })
    .await;
    assert_eq!(w["stage"], "scheduled", "{w}");
    assert!(
        w["reason"]
            .as_str()
            .is_some_and(|r| r.contains("last error: leaf 7 failed on attempt")),
        "{w}"
    );
    assert!(w["children"].is_null());
    c.wait_for(id, "failed", Duration::from_secs(120)).await;
    let (_, w) = c.get(&format!("/v1/jobs/{id}/waiting")).await;
    assert!(
        w["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("the job failed: leaf 7 failed")),
        "{w}"
    );

    let unknown = uuid::Uuid::now_v7();
    let (status, body) = c.get(&format!("/v1/jobs/{unknown}/waiting")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], format!("no job {unknown}"));
    let (status, body) = c.get("/v1/jobs/not-an-id/waiting").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid job id"))
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_tree_has_a_rate_and_an_eta_while_it_runs_and_eta_0_at_the_end() {
    let c = TestCluster::start().await;
    let id = c
        .submit("bench.fanout", json!({ "n": 400, "sleep_ms": 300 }))
        .await;
    let tree = c
        .eventually("a rate and an ETA", Duration::from_secs(60), || async {
            let (_, t) = c.get(&format!("/v1/jobs/{id}/tree")).await;
            (t["rate_per_s"].as_f64().is_some_and(|r| r > 0.0)
                && t["eta_ms"].as_i64().is_some_and(|e| e > 0)
                && t["remaining"].as_i64().is_some_and(|r| r > 0))
            .then_some(t)
        })
        .await;
    assert_eq!(tree["rate_window"], "the last 20 to 60 s");
    c.assert_fanout_exact(id, 400, Duration::from_secs(120))
        .await;
    let (_, done) = c.get(&format!("/v1/jobs/{id}/tree")).await;
    assert_eq!(
        (&done["eta_ms"], &done["remaining"]),
        (&json!(0), &json!(0)),
        "{done}"
    );
    // Elapsed stops when the root ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, again) = c.get(&format!("/v1/jobs/{id}/tree")).await;
    assert_eq!(again["elapsed_ms"], done["elapsed_ms"]);
    assert!(done["elapsed_ms"].as_i64().is_some_and(|e| e > 0));
    c.shutdown().await;
}

#[tokio::test]
async fn the_cli_exits_by_how_the_job_ended_and_reads_logs() {
    let c = TestCluster::start_with(ClusterOptions {
        workers: 1,
        ..ClusterOptions::default()
    })
    .await;
    let (code, out, err) = cli(
        &c.url,
        &[
            "submit",
            "bench.leaf",
            "--input",
            r#"{"value": 1}"#,
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = cli(
        &c.url,
        &[
            "submit",
            "bench.leaf",
            "--input",
            r#"{"value": 2, "fail": "permanent"}"#,
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("failed: leaf 2 failed for good"), "{err}");

    // Logs: UTC timestamps; --follow returns once the job ends.
    let input =
        json!({ "generate": { "files": 4, "words_per_file": 10, "vocabulary": 5, "seed": 1 } });
    let id = c.submit("demo.wordcount", input).await.to_string();
    let (code, out, err) = cli(&c.url, &["logs", &id, "--follow"]).await;
    assert_eq!(code, Some(0), "{err}");
    let first = out.lines().next().unwrap_or_default();
    let stamp = first.split(' ').next().unwrap_or_default();
    assert!(
        stamp.len() == 24 && stamp.starts_with("20") && stamp.ends_with('Z') && stamp.contains('T'),
        "{out}"
    );
    assert_eq!(c.job(id.parse().expect("an id")).await["terminal"], true);

    // An unknown id fails, naming it.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, _, err) = cli(&c.url, &["logs", &unknown]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("no job {unknown}")), "{err}");
    let (code, _, err) = cli(&c.url, &["why", &unknown]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("no job {unknown}")), "{err}");
    c.shutdown().await;
}

#[tokio::test]
async fn the_cli_gives_up_on_a_coordinator_that_never_answers() {
    // Accepts connections and reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("http://{addr}");
    let id = uuid::Uuid::now_v7().to_string();
    for args in [
        vec!["--timeout-secs", "2", "status", id.as_str()],
        vec!["--timeout-secs", "2", "logs", id.as_str(), "--follow"],
        vec!["--timeout-secs", "2", "submit", "bench.leaf", "--wait"],
        vec!["--timeout-secs", "2", "watch", id.as_str()],
    ] {
        let started = Instant::now();
        let (code, _, err) = cli(&url, &args).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "the coordinator at {url} did not answer within 2s"
            )),
            "{args:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(15), "{args:?}");
    }
    silent.abort();
}
