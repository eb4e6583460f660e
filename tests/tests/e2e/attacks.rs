//! The hardening issue's attacks, replayed against one cluster with tokens
//! set: each gets a clear 4xx, or fails its own job naming the rule, or is
//! fenced or dead-lettered. A healthy 1,000-child fan-out submitted right
//! after them completes exactly, and the coordinator stays within its memory.

use std::time::Duration;

use serde_json::{Value, json};
use tributary_common::job::DispatchToken;
use tributary_common::wire::{self, Outcome, Report, ReportItem};
use tributary_tests::{ClusterOptions, TestCluster, http_client};

const MINUTE: Duration = Duration::from_secs(60);
const API_TOKEN: &str = "attack-replay-api-token";
const READ_TOKEN: &str = "attack-replay-read-token";

/// Peak resident memory of a process, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024
}

/// Submits `kind` with `input` and waits for it to fail; returns its error.
async fn fails(c: &TestCluster, kind: &str, input: Value) -> String {
    let id = c.submit(kind, input).await;
    let job = c.wait_for(id, "failed", MINUTE).await;
    assert_eq!(job["attempt"], 1, "failed permanently, not retried: {job}");
    job["error"].as_str().expect("an error").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_replayed_attack_is_refused_and_healthy_work_completes_exactly() {
    let c = TestCluster::start_with(ClusterOptions {
        coordinator_env: vec![
            ("TRIBUTARY_API_TOKEN".into(), API_TOKEN.into()),
            ("TRIBUTARY_READ_TOKEN".into(), READ_TOKEN.into()),
        ],
        worker_env: vec![("TRIBUTARY_READ_TOKEN".into(), READ_TOKEN.into())],
        client_token: Some(API_TOKEN.into()),
        ..Default::default()
    })
    .await;

    // Nobody unauthorised gets in; a read token cannot write.
    let anonymous = http_client(None);
    let reader = http_client(Some(READ_TOKEN));
    let submit = json!({ "kind": "bench.leaf", "input": { "value": 1 } });
    let r = anonymous
        .post(format!("{}/v1/jobs", c.url))
        .json(&submit)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 401);
    let r = reader
        .post(format!("{}/v1/jobs", c.url))
        .json(&submit)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("JSON error");
    assert!(body["error"].is_string(), "{body}");

    // Wrapping and absurd options: 422 with a reason.
    for options in [
        json!({ "max_attempts": 2_147_483_648u64 }),
        json!({ "max_attempts": 0 }),
        json!({ "phase": "a\u{0}b" }),
    ] {
        let (status, body) = c
            .post_json(
                &json!({ "kind": "bench.leaf", "input": { "value": 1 }, "options": options }),
            )
            .await;
        assert_eq!(status, 422, "{options}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }

    // A NUL in worker text: the job fails readably, nothing stalls.
    let error = fails(&c, "bench.leaf", json!({ "value": "a\u{0}b" })).await;
    assert!(!error.contains('\0'), "{error:?}");
    let error = fails(&c, "demo.wordcount", json!({ "path": "a\u{0}b" })).await;
    assert!(!error.contains('\0'), "{error:?}");

    // The workers' files: outside the demo root is refused, naming it.
    for (kind, path) in [("demo.wordcount", "/etc"), ("demo.du", "/")] {
        let error = fails(&c, kind, json!({ "path": path })).await;
        assert!(error.contains("root"), "names the demo root: {error:?}");
    }

    // Size knobs that aborted a worker or flooded the database.
    let error = fails(
        &c,
        "demo.wordcount",
        json!({ "generate": { "files": 1, "words_per_file": 4_294_967_295u64, "vocabulary": 100, "seed": 1 } }),
    )
    .await;
    assert!(
        error.contains("words_per_file") && error.contains("cap"),
        "{error:?}"
    );
    let error = fails(&c, "bench.fanout", json!({ "n": 1_000_000_000_000u64 })).await;
    assert!(
        error.contains("bench.fanout n") && error.contains("cap"),
        "{error:?}"
    );
    let error = fails(&c, "bench.leaf", json!({ "value": 1, "work_us": u64::MAX })).await;
    assert!(
        error.contains("work_us") && error.contains("cap"),
        "{error:?}"
    );

    // Forged outcomes over the broker: guessable tokens are fenced.
    let victim = c
        .submit("bench.leaf", json!({ "value": 3, "sleep_ms": 1500 }))
        .await;
    let token = c.published_token(victim).await;
    let forged = |nonce: u64| ReportItem::Finished {
        token: DispatchToken { nonce, ..token },
        outcome: Outcome::Complete {
            output: wire::to_payload(&999u64).expect("encode"),
        },
    };
    c.publish_report(&Report {
        items: vec![
            forged(0),
            forged(token.nonce ^ 1),
            ReportItem::Log {
                token: DispatchToken { nonce: 0, ..token },
                level: "info".into(),
                message: "x\0".repeat(1 << 20),
            },
        ],
    })
    .await;
    let job = c.wait_for(victim, "completed", MINUTE).await;
    assert_eq!(job["output"], 3, "the forged outcome did not stand: {job}");
    assert!(c.counter("forged_reports").await >= 2);

    // Right after all of it: a healthy fan-out completes exactly.
    let id = c.submit("bench.fanout", json!({ "n": 1000 })).await;
    c.assert_fanout_exact(id, 1000, MINUTE).await;
    let pid = c.coordinator_pid().expect("coordinator running");
    let peak = peak_rss_mib(pid);
    assert!(peak < 150, "coordinator peak RSS {peak} MiB");
    println!("attack replay: coordinator peak RSS {peak} MiB");
    c.report("attack-replay", 14).await;
    c.shutdown().await;
}
