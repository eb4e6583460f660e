//! Bearer tokens: the API token may do everything, the read token only
//! GET/HEAD, no or a wrong token gets 401; probes stay open; /metrics is
//! open unless it has a token of its own; a worker holding only the read
//! token still pages its children's results; and an open API refuses to
//! listen beyond loopback.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{ClusterOptions, TestCluster, bin, http_client};

const API: &str = "api-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";
const METRICS: &str = "metrics-token-0123456789abcdef";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A cluster whose coordinator wants tokens, whose workers hold only the
/// read token, and whose harness client holds the API token.
async fn protected(workers: usize, metrics: bool) -> TestCluster {
    let mut coordinator = vec![("TRIBUTARY_API_TOKEN", API), ("TRIBUTARY_READ_TOKEN", READ)];
    if metrics {
        coordinator.push(("TRIBUTARY_METRICS_TOKEN", METRICS));
    }
    TestCluster::start_with(ClusterOptions {
        workers,
        coordinator_env: env(&coordinator),
        worker_env: env(&[("TRIBUTARY_READ_TOKEN", READ)]),
        client_token: Some(API.to_owned()),
        ..Default::default()
    })
    .await
}

/// Sends `method path` with `token`; returns the status, the
/// `WWW-Authenticate` header and the body as JSON (or a JSON string).
async fn call(
    c: &TestCluster,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut req = http_client(token).request(method, format!("{}{path}", c.url));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_error_shape(what: &str, body: &Value) {
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: expected {{\"error\": reason}}, got {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_decide_who_reads_and_who_writes() {
    let c = protected(0, false).await;
    let submission = json!({ "kind": "bench.leaf", "input": {} });
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // No token, or a wrong one: 401 with a challenge and a JSON reason,
    // on known and unknown routes alike.
    for (path, token) in [
        ("/v1/stats", None),
        ("/v1/stats", Some("wrong-token")),
        ("/v1/jobs/not-even-a-uuid", None),
        ("/no/such/route", None),
        ("/v1/stats", Some(METRICS)),
    ] {
        let (status, challenge, body) = call(&c, get.clone(), path, token, None).await;
        assert_eq!(status, 401, "GET {path} with {token:?}: {body}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "GET {path}");
        assert_error_shape(path, &body);
    }
    let (status, challenge, body) =
        call(&c, post.clone(), "/v1/jobs", None, Some(submission.clone())).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"));

    // The API token does everything.
    let (status, _, body) = call(
        &c,
        post.clone(),
        "/v1/jobs",
        Some(API),
        Some(submission.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    for path in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/children"),
        format!("/v1/jobs/{id}/tree"),
        format!("/v1/jobs/{id}/logs"),
        format!("/v1/jobs/{id}/timing"),
        "/v1/stats".to_owned(),
        "/metrics".to_owned(),
    ] {
        let (status, _, body) = call(&c, get.clone(), &path, Some(API), None).await;
        assert_eq!(status, 200, "GET {path} with the API token: {body}");
    }

    // The read token reads, and is refused (403, JSON) anything that writes.
    for path in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/children?format=msgpack"),
        "/v1/stats".to_owned(),
    ] {
        let (status, _, body) = call(&c, get.clone(), &path, Some(READ), None).await;
        assert_eq!(status, 200, "GET {path} with the read token: {body}");
    }
    let (status, _, _) = call(
        &c,
        reqwest::Method::HEAD,
        &format!("/v1/jobs/{id}"),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(status, 200, "HEAD with the read token");
    let (status, _, body) = call(&c, post, "/v1/jobs", Some(READ), Some(submission)).await;
    assert_eq!(status, 403, "POST with the read token: {body}");
    assert_error_shape("403", &body);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("TRIBUTARY_API_TOKEN"),
        "{body}"
    );
    let (status, _, body) = call(
        &c,
        reqwest::Method::DELETE,
        &format!("/v1/jobs/{id}"),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(status, 403, "DELETE with the read token: {body}");

    // Probes need no token.
    for path in ["/healthz", "/readyz"] {
        let (status, _, _) = call(&c, get.clone(), path, None, None).await;
        assert_eq!(status, 200, "{path} is open");
    }
    // Only the API token's submission made a job.
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&c.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_only_the_read_token_pages_children_results() {
    let c = protected(2, false).await;
    // bench.fanout's aggregate reads every child's result through
    // GET /v1/jobs/{id}/children with the worker's token.
    let id = c.submit("bench.fanout", json!({ "n": 300 })).await;
    c.assert_fanout_exact(id, 300, Duration::from_secs(60))
        .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_open_unless_they_have_a_token() {
    let get = reqwest::Method::GET;
    let c = protected(0, false).await;
    let (status, _, body) = call(&c, get.clone(), "/metrics", None, None).await;
    assert_eq!(status, 200, "/metrics open without TRIBUTARY_METRICS_TOKEN");
    assert!(body.as_str().unwrap_or_default().contains("tributary_"));
    c.shutdown().await;

    let c = protected(0, true).await;
    for (token, want) in [
        (None, 401),
        (Some("wrong"), 401),
        (Some(READ), 403),
        (Some(METRICS), 200),
        (Some(API), 200),
    ] {
        let (status, challenge, body) = call(&c, get.clone(), "/metrics", token, None).await;
        assert_eq!(status, want, "/metrics with {token:?}: {body}");
        if want == 401 {
            assert_eq!(challenge.as_deref(), Some("Bearer"));
        }
        if want != 200 {
            assert_error_shape("/metrics", &body);
        }
    }
    // The metrics token opens /metrics and nothing else.
    let (status, _, body) = call(&c, get, "/v1/stats", Some(METRICS), None).await;
    assert_eq!(status, 403, "{body}");
    assert_error_shape("/v1/stats with the metrics token", &body);
    c.shutdown().await;
}

/// Runs the coordinator binary with `env` (and no token from this
/// process's environment); returns its exit status and stderr.
async fn run_coordinator(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let child = tokio::process::Command::new(bin("tributary-coordinator"))
        .env_remove("TRIBUTARY_API_TOKEN")
        .env_remove("TRIBUTARY_READ_TOKEN")
        .env_remove("TRIBUTARY_METRICS_TOKEN")
        // Unreachable on purpose: the refusal must come before any connect.
        .env(
            "TRIBUTARY_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .env("TRIBUTARY_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the coordinator");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the coordinator exits at once")
        .expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_api_beyond_loopback_refuses_to_start() {
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (status, stderr) = run_coordinator(&[("TRIBUTARY_LISTEN", listen)]).await;
        assert!(!status.success(), "{listen}: exited {status}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{listen}: one line, got {stderr:?}");
        for needle in ["TRIBUTARY_API_TOKEN", "127.0.0.1", listen] {
            assert!(
                lines[0].contains(needle),
                "{listen}: {:?} lacks {needle}",
                lines[0]
            );
        }
    }
    // A read token alone would lock writes out: refused too, in one line.
    let (status, stderr) = run_coordinator(&[
        ("TRIBUTARY_LISTEN", "127.0.0.1:0"),
        ("TRIBUTARY_READ_TOKEN", READ),
    ])
    .await;
    assert!(!status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("TRIBUTARY_API_TOKEN"), "{stderr}");
    assert!(
        !stderr.contains(READ),
        "the token is never printed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_or_shared_tokens_refuse_to_start_without_showing_them() {
    // A trailing newline (from `echo` or a secret file) is the usual slip.
    for (var, value) in [
        ("TRIBUTARY_API_TOKEN", "0123456789abcdefSECRET\n"),
        ("TRIBUTARY_METRICS_TOKEN", "SECRETmetrics tok"),
    ] {
        let mut env = vec![("TRIBUTARY_LISTEN", "127.0.0.1:0"), (var, value)];
        if var != "TRIBUTARY_API_TOKEN" {
            env.push(("TRIBUTARY_API_TOKEN", API));
        }
        let (status, stderr) = run_coordinator(&env).await;
        assert!(!status.success(), "{var}: exited {status}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
        assert!(stderr.contains(var), "names the variable: {stderr}");
        assert!(!stderr.contains("SECRET"), "never the value: {stderr}");
    }
    // A read token equal to the API token would grant everything.
    let (status, stderr) = run_coordinator(&[
        ("TRIBUTARY_LISTEN", "127.0.0.1:0"),
        ("TRIBUTARY_API_TOKEN", API),
        ("TRIBUTARY_READ_TOKEN", API),
    ])
    .await;
    assert!(!status.success());
    assert!(stderr.contains("TRIBUTARY_READ_TOKEN equals"), "{stderr}");
    assert!(!stderr.contains(API), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn help_shows_no_environment_values() {
    for name in ["tributary-coordinator", "tributary-worker", "tributary"] {
        let out = tokio::process::Command::new(bin(name))
            .arg("--help")
            .env("TRIBUTARY_API_TOKEN", API)
            .env("TRIBUTARY_READ_TOKEN", READ)
            .env(
                "TRIBUTARY_DATABASE_URL",
                "postgres://u:hunter2-db@127.0.0.1/x",
            )
            .env("TRIBUTARY_AMQP_URL", "amqp://u:hunter2-mq@127.0.0.1/%2f")
            .output()
            .await
            .expect("run --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} --help: {text}");
        for secret in [API, READ, "hunter2"] {
            assert!(!text.contains(secret), "{name} --help shows {secret}");
        }
    }
}
