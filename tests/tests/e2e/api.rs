//! The HTTP API refuses bad requests with a 4xx and a reason, and an
//! unknown job kind fails its job with a message naming the kind.

use std::time::Duration;

use serde_json::json;
use tributary_tests::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_4xx_with_a_reason() {
    let c = TestCluster::start_with(tributary_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let cases: Vec<(Vec<u8>, Option<&str>, u16, &str)> = vec![
        (
            br#"{"kind":"bench.leaf","input":{},"bogus":1}"#.to_vec(),
            Some("application/json"),
            422,
            "unknown field `bogus`",
        ),
        (
            br#"{"input":{}}"#.to_vec(),
            Some("application/json"),
            422,
            "missing field `kind`",
        ),
        (
            b"this is not json".to_vec(),
            Some("application/json"),
            400,
            "invalid job submission",
        ),
        (
            br#"{"kind":"bench.leaf","input":"#.to_vec(),
            None,
            400,
            "EOF",
        ),
        (
            br#"{"kind":"has space"}"#.to_vec(),
            Some("application/json"),
            422,
            "invalid kind",
        ),
        (
            br#"{"kind":"bench.leaf","options":{"max_attempts":0}}"#.to_vec(),
            Some("application/json"),
            422,
            "max_attempts",
        ),
        (
            br#"{"kind":"bench.leaf","options":{"retries":2}}"#.to_vec(),
            Some("application/json"),
            422,
            "unknown field `retries`",
        ),
        (
            br#"{"kind":"bench.leaf"}"#.to_vec(),
            Some("text/plain"),
            415,
            "content-type",
        ),
    ];
    for (body, ct, want, reason) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (status, answer) = c.post_raw(body, ct).await;
        assert_eq!(status, want, "{shown} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{shown}: error {error:?} should mention {reason:?}"
        );
    }
    let big = format!(
        r#"{{"kind":"bench.leaf","input":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (status, _) = c.post_raw(big.into_bytes(), Some("application/json")).await;
    assert_eq!(status, 413);

    let (status, answer) = c.get("/v1/jobs/not-a-uuid").await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid job id")
    );
    let (status, _) = c.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404);
    let (status, _) = c
        .get(&format!(
            "/v1/jobs/{}/children?format=xml",
            uuid::Uuid::now_v7()
        ))
        .await;
    assert_eq!(status, 400);
    // Nothing was created by the refused requests.
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&c.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_job_kind_fails_naming_the_kind() {
    let c = TestCluster::start().await;
    let id = c.submit("no.such.kind", json!({ "x": 1 })).await;
    let job = c.wait_for(id, "failed", Duration::from_secs(30)).await;
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("no.such.kind"), "{error}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn input_that_does_not_fit_the_kind_fails_the_job_permanently() {
    let c = TestCluster::start().await;
    let id = c.submit("bench.fanout", json!({ "n": "many" })).await;
    let job = c.wait_for(id, "failed", Duration::from_secs(30)).await;
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("bench.fanout"),
        "{job}"
    );
    assert_eq!(job["attempt"], 1, "a permanent failure is not retried");
    c.shutdown().await;
}
