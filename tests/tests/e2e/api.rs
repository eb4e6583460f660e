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

fn no_workers(coordinator_env: &[(&str, &str)]) -> tributary_tests::ClusterOptions {
    tributary_tests::ClusterOptions {
        workers: 0,
        coordinator_env: coordinator_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

/// Sends `method path` (with an optional raw body); returns the status, the
/// content type and the body.
async fn raw(
    c: &TestCluster,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, String, serde_json::Value) {
    let mut req = c.http.request(method, format!("{}{path}", c.url));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        ct,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_status_has_the_json_shape() {
    let c = TestCluster::start_with(no_workers(&[])).await;
    let unknown = uuid::Uuid::now_v7();
    let get = reqwest::Method::GET;
    let cases: Vec<(reqwest::Method, String, Option<Vec<u8>>, u16)> = vec![
        (get.clone(), "/no/such/route".into(), None, 404),
        (get.clone(), "/v1".into(), None, 404),
        (
            reqwest::Method::DELETE,
            format!("/v1/jobs/{unknown}"),
            None,
            405,
        ),
        (reqwest::Method::PUT, "/v1/jobs".into(), None, 405),
        (get.clone(), "/v1/jobs?limit=abc".into(), None, 400),
        (reqwest::Method::PUT, "/healthz".into(), None, 405),
        (
            get.clone(),
            format!("/v1/jobs/{unknown}/children?limit=abc"),
            None,
            400,
        ),
        (
            get.clone(),
            format!("/v1/jobs/{unknown}/children?bogus=1"),
            None,
            400,
        ),
        (
            get.clone(),
            format!("/v1/jobs/{unknown}/children?limit=0"),
            None,
            400,
        ),
        (
            get.clone(),
            format!("/v1/jobs/{unknown}/logs?after=x"),
            None,
            400,
        ),
        (get.clone(), "/v1/jobs/not-a-uuid/tree".into(), None, 400),
        (get.clone(), format!("/v1/jobs/{unknown}"), None, 404),
        (
            get.clone(),
            format!("/v1/jobs/{unknown}/children"),
            None,
            404,
        ),
        (
            get.clone(),
            format!("/v1/jobs/{unknown}/children?format=msgpack"),
            None,
            404,
        ),
        (get.clone(), format!("/v1/jobs/{unknown}/tree"), None, 404),
        (get.clone(), format!("/v1/jobs/{unknown}/logs"), None, 404),
        (get.clone(), format!("/v1/jobs/{unknown}/timing"), None, 404),
    ];
    for (method, path, body, want) in cases {
        let (status, ct, answer) = raw(&c, method.clone(), &path, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert!(
            ct.starts_with("application/json"),
            "{method} {path}: content-type {ct:?}"
        );
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty(),
            "{method} {path}: no {{\"error\": reason}} in {answer}"
        );
        if want == 404 && path.contains(&unknown.to_string()) {
            assert!(error.contains("no job"), "{path}: {error}");
        }
    }
    // 413: announce a body over the limit (the answer comes before the body
    // is read, so a client still sending it would race the close).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(&c.listen)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\nConnection: close\r\n\r\n{",
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("limit")),
        "{text}"
    );
    assert!(
        text.to_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_job_has_a_location() {
    let c = TestCluster::start_with(no_workers(&[])).await;
    let resp = c
        .http
        .post(format!("{}/v1/jobs", c.url))
        .json(&json!({ "kind": "bench.leaf", "input": {} }))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 201);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned();
    let body: serde_json::Value = resp.json().await.expect("json");
    let id = body["id"].as_str().expect("id");
    assert_eq!(location, format!("/v1/jobs/{id}"));
    let (status, job) = c.get(&location).await;
    assert_eq!(status, 200);
    assert_eq!(job["id"], id);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn options_and_input_are_capped() {
    let c = TestCluster::start_with(no_workers(&[("TRIBUTARY_MAX_INPUT_BYTES", "1000")])).await;
    let cases = [
        (json!({ "max_attempts": 0 }), 422, "max_attempts"),
        (json!({ "max_attempts": 101 }), 422, "max_attempts"),
        (
            json!({ "max_attempts": 2_147_483_648u64 }),
            422,
            "max_attempts",
        ),
        (
            json!({ "max_attempts": 4_294_967_296u64 }),
            422,
            "max_attempts",
        ),
        (json!({ "max_attempts": -1 }), 422, "max_attempts"),
        (json!({ "phase": "a\u{0}b" }), 422, "phase"),
        (json!({ "phase": "line\nbreak" }), 422, "phase"),
        (json!({ "phase": "" }), 422, "phase"),
        (json!({ "phase": "p".repeat(129) }), 422, "phase"),
        (
            json!({ "max_child_failures": 2_147_483_648u64 }),
            422,
            "max_child_failures",
        ),
        (
            json!({ "max_attempts": 100, "phase": "start", "max_child_failures": 2_147_483_647u64 }),
            201,
            "",
        ),
    ];
    for (options, want, reason) in cases {
        let (status, answer) = c
            .post_json(&json!({ "kind": "bench.leaf", "input": {}, "options": options }))
            .await;
        assert_eq!(status, want, "{options} -> {answer}");
        if want != 201 {
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(
                error.contains(reason),
                "{options}: {error:?} lacks {reason:?}"
            );
        }
    }
    // The input cap counts MessagePack bytes and names the setting.
    let (status, answer) = c
        .post_json(&json!({ "kind": "bench.leaf", "input": "x".repeat(2000) }))
        .await;
    assert_eq!(status, 413, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("TRIBUTARY_MAX_INPUT_BYTES") && error.contains("1000"),
        "{error}"
    );
    let (status, answer) = c
        .post_json(&json!({ "kind": "bench.leaf", "input": "x".repeat(900) }))
        .await;
    assert_eq!(status, 201, "{answer}");
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&c.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 2, "only the accepted submissions made jobs");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c =
        TestCluster::start_with(no_workers(&[("TRIBUTARY_HTTP_HEADER_TIMEOUT_SECS", "1")])).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(&c.listen)
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let mut closed = false;
    // One byte every 100 ms would take 9 s; the server must hang up first.
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!(
                "answered a trickled request: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    assert!(closed, "the connection outlived the header timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off after {:?}",
        started.elapsed()
    );
    // The server itself is fine.
    let (status, _) = c.get("/healthz").await;
    assert_eq!(status, 200);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_their_turn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = TestCluster::start_with(no_workers(&[("TRIBUTARY_HTTP_MAX_CONNECTIONS", "2")])).await;
    // Two idle connections take both places.
    let hold1 = tokio::net::TcpStream::connect(&c.listen)
        .await
        .expect("connect");
    let hold2 = tokio::net::TcpStream::connect(&c.listen)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third connects (the kernel's backlog) but is not served...
    let mut third = tokio::net::TcpStream::connect(&c.listen)
        .await
        .expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "served beyond the cap: {}",
        String::from_utf8_lossy(&answer)
    );
    // ...until a place frees up.
    drop(hold1);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("served once a connection closed")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(hold2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_children_page_keeps_to_its_byte_budget() {
    let c = TestCluster::start_with(no_workers(&[])).await;
    // A parent with six children of 3 MiB outputs each, written straight
    // into the database (no worker needed to make big outputs).
    let parent = uuid::Uuid::now_v7();
    let output = tributary_common::wire::to_payload(&"o".repeat(3 * 1024 * 1024))
        .expect("encode")
        .into_vec();
    sqlx::query(
        "insert into jobs (id, root_id, kind, input, phase, max_attempts, fanout_seq, status)
         values ($1, $1, 'bench.fanout', '\\x80', 'sum', 3, 1, 'waiting')",
    )
    .bind(parent)
    .execute(&c.pool)
    .await
    .expect("insert parent");
    for i in 0..6i64 {
        sqlx::query(
            "insert into jobs (id, root_id, parent_id, parent_seq, child_index, kind, input, phase,
                               max_attempts, status, output)
             values ($1, $2, $2, 1, $3, 'bench.leaf', '\\x80', 'start', 3, 'completed', $4)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(parent)
        .bind(i)
        .bind(&output)
        .execute(&c.pool)
        .await
        .expect("insert child");
    }
    // JSON: a page holds at most about 8 MiB whatever the limit, and paging
    // after the last index visits every child once.
    let mut after = -1i64;
    let mut seen = Vec::new();
    loop {
        let (status, page) = c
            .get(&format!(
                "/v1/jobs/{parent}/children?limit=10000&after={after}"
            ))
            .await;
        assert_eq!(status, 200);
        let items = page["children"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        assert!(items.len() <= 2, "a page of {} 3 MiB children", items.len());
        for item in &items {
            let index = item["index"].as_i64().expect("index");
            assert_eq!(item["output"].as_str().map(str::len), Some(3 * 1024 * 1024));
            seen.push(index);
            after = index;
        }
    }
    assert_eq!(seen, (0..6).collect::<Vec<_>>());
    // MessagePack alike, and the body stays under the budget.
    let resp = c
        .http
        .get(format!(
            "{}/v1/jobs/{parent}/children?limit=10000&format=msgpack",
            c.url
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.bytes().await.expect("body");
    assert!(body.len() <= 8 * 1024 * 1024 + 4096, "{} bytes", body.len());
    let page: Vec<tributary_common::wire::ChildResult> =
        tributary_common::wire::decode(&body).expect("decode");
    assert_eq!(page.len(), 2);
    // A child larger than the budget still comes, alone.
    let huge = tributary_common::wire::to_payload(&"h".repeat(9 * 1024 * 1024))
        .expect("encode")
        .into_vec();
    sqlx::query("update jobs set output = $1 where parent_id = $2 and child_index = 0")
        .bind(&huge)
        .bind(parent)
        .execute(&c.pool)
        .await
        .expect("update");
    let (status, page) = c
        .get(&format!("/v1/jobs/{parent}/children?limit=10000"))
        .await;
    assert_eq!(status, 200);
    let items = page["children"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "the oversize first child comes alone");
    assert_eq!(items[0]["index"], 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_trickles_its_body_gets_a_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c =
        TestCluster::start_with(no_workers(&[("TRIBUTARY_HTTP_REQUEST_TIMEOUT_SECS", "1")])).await;
    let mut stream = tokio::net::TcpStream::connect(&c.listen)
        .await
        .expect("connect");
    stream
        .write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\":")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("application/json") && text.contains("\"error\""),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    c.shutdown().await;
}
