//! Finding jobs (`GET /v1/jobs`, `tributary jobs ls`) and idempotent
//! submission (`Idempotency-Key`).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{ClusterOptions, TestCluster, bin};
use uuid::Uuid;

/// Every page of `query` (a query string without `cursor`), `limit` at a
/// time, in order; checks each page's size and that a page is last
/// exactly when it says so.
async fn all_pages(c: &TestCluster, query: &str, limit: usize) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("/v1/jobs?limit={limit}");
        if !query.is_empty() {
            path = format!("{path}&{query}");
        }
        if let Some(cursor) = &cursor {
            path = format!("{path}&cursor={cursor}");
        }
        let (status, page) = c.get(&path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let listed = page["jobs"].as_array().expect("a job list").clone();
        assert!(listed.len() <= limit, "{path}: page over its limit");
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_some() {
            assert_eq!(
                listed.len(),
                limit,
                "{path}: a short page that is not the last"
            );
        }
        jobs.extend(listed);
        if cursor.is_none() {
            return jobs;
        }
    }
    panic!("{query}: paging never ended");
}

fn ids(jobs: &[Value]) -> Vec<Uuid> {
    jobs.iter()
        .map(|j| {
            j["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .expect("an id")
        })
        .collect()
}

/// Ids newest first (UUID v7 order), as roots and trees are listed.
fn newest_first(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_trees_children_and_the_cli() {
    let c = TestCluster::start().await;
    let mut leaves = Vec::new();
    let mut failed = Vec::new();
    for i in 0..20u64 {
        let fail = if i % 5 == 0 { "permanent" } else { "never" };
        let id = c
            .submit("bench.leaf", json!({ "value": i, "fail": fail }))
            .await;
        if i % 5 == 0 {
            failed.push(id);
        }
        leaves.push(id);
    }
    // Every leaf's id is from an earlier millisecond than the mark.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mark = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut fanouts = Vec::new();
    for _ in 0..3 {
        fanouts.push(
            c.submit("bench.fanout", json!({ "n": 5, "batch": 2 }))
                .await,
        );
    }
    for id in &leaves {
        let status = if failed.contains(id) {
            "failed"
        } else {
            "completed"
        };
        c.wait_for(*id, status, Duration::from_secs(60)).await;
    }
    for id in &fanouts {
        c.wait_for(*id, "completed", Duration::from_secs(60)).await;
    }
    let roots: Vec<Uuid> = leaves.iter().chain(&fanouts).copied().collect();

    // Roots only, newest first, whatever the page size.
    for limit in [1, 7, 23, 500] {
        let listed = all_pages(&c, "", limit).await;
        assert_eq!(ids(&listed), newest_first(roots.clone()), "limit {limit}");
    }
    let listed = all_pages(&c, "status=failed", 4).await;
    assert_eq!(ids(&listed), newest_first(failed.clone()));
    assert!(
        listed
            .iter()
            .all(|j| j["status"] == "failed" && j["error"].is_string())
    );
    let listed = all_pages(&c, "kind=bench.fanout", 2).await;
    assert_eq!(ids(&listed), newest_first(fanouts.clone()));
    let completed_leaves: Vec<Uuid> = leaves
        .iter()
        .filter(|id| !failed.contains(id))
        .copied()
        .collect();
    let listed = all_pages(&c, "kind=bench.leaf&status=completed", 5).await;
    assert_eq!(ids(&listed), newest_first(completed_leaves));
    let listed = all_pages(&c, &format!("created_after={mark}"), 50).await;
    assert_eq!(ids(&listed), newest_first(fanouts.clone()));
    assert!(all_pages(&c, "status=paused", 10).await.is_empty());

    // What a listed job carries: counts, times, never a blob.
    let fanout = fanouts[0];
    let listed = all_pages(&c, "kind=bench.fanout", 10).await;
    let job = listed
        .iter()
        .find(|j| j["id"] == fanout.to_string())
        .expect("listed");
    for field in ["input", "output", "state"] {
        assert!(job.get(field).is_none(), "{field} listed: {job}");
    }
    assert_eq!(job["children"]["expected"], 5, "{job}");
    assert_eq!(job["children"]["completed"], 5, "{job}");
    assert_eq!(job["root_id"], fanout.to_string());
    assert!(job["parent_id"].is_null());
    assert!(
        job["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{job}"
    );
    assert!(job["finished_at"].is_string(), "{job}");

    // A long error is cut.
    sqlx::query("update jobs set error = repeat('boom ', 10000) where id = $1")
        .bind(failed[0])
        .execute(&c.pool)
        .await
        .expect("a long error");
    let listed = all_pages(&c, "status=failed", 500).await;
    let long = listed
        .iter()
        .find(|j| j["id"] == failed[0].to_string())
        .expect("listed");
    assert_eq!(long["error"].as_str().map(|e| e.chars().count()), Some(512));
    assert_eq!(long["error_truncated"], true);
    assert!(
        listed
            .iter()
            .filter(|j| j["id"] != long["id"])
            .all(|j| j["error_truncated"] == false)
    );

    // A parent's children in spawn order, and a whole tree newest first.
    let children = all_pages(&c, &format!("parent={fanout}"), 2).await;
    let indexes: Vec<i64> = children
        .iter()
        .map(|j| j["child_index"].as_i64().expect("an index"))
        .collect();
    assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
    assert!(children.iter().all(|j| j["parent_id"] == fanout.to_string()
        && j["root_id"] == fanout.to_string()
        && j["kind"] == "bench.leaf"));
    let tree = all_pages(&c, &format!("root={fanout}"), 4).await;
    let mut expected = ids(&children);
    expected.push(fanout);
    assert_eq!(ids(&tree), newest_first(expected));
    let filtered = all_pages(&c, &format!("root={fanout}&kind=bench.fanout"), 4).await;
    assert_eq!(ids(&filtered), vec![fanout]);
    let (status, body) = c.get(&format!("/v1/jobs?root={}", ids(&children)[0])).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("is not a root"),
        "{body}"
    );
    let (status, body) = c.get(&format!("/v1/jobs?parent={}", Uuid::now_v7())).await;
    assert_eq!(status, 404, "{body}");

    // The CLI: a table, and JSON across every page.
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(bin("tributary"));
        cmd.args(args)
            .env("TRIBUTARY_COORDINATOR_URL", &c.url)
            .env_remove("TRIBUTARY_API_TOKEN");
        let out = cmd.output().expect("run tributary");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "tributary {args:?}: {stderr}");
        (stdout, stderr)
    };
    let (table, hint) = cli(&["jobs", "ls", "--kind", "bench.fanout", "--limit", "2"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for column in ["ID", "KIND", "STATUS", "PHASE", "CHILDREN", "AGE"] {
        assert!(lines[0].contains(column), "{table}");
    }
    let newest = newest_first(fanouts.clone());
    assert!(lines[1].starts_with(&newest[0].to_string()), "{table}");
    assert!(
        lines[1].contains("bench.fanout") && lines[1].contains("completed"),
        "{table}"
    );
    assert!(lines[1].contains("5/5"), "{table}");
    assert!(hint.contains("--all"), "{hint}");
    let (json_out, _) = cli(&["jobs", "ls", "--all", "--limit", "3", "--output", "json"]);
    let answer: Value = serde_json::from_str(&json_out).expect("JSON");
    assert_eq!(
        ids(answer["jobs"].as_array().expect("jobs")),
        newest_first(roots.clone())
    );
    assert!(answer["next_cursor"].is_null());
    let (children_table, _) = cli(&[
        "jobs",
        "ls",
        "--parent",
        &fanout.to_string(),
        "--status",
        "completed",
    ]);
    assert_eq!(children_table.lines().count(), 6, "{children_table}");
    let out = std::process::Command::new(bin("tributary"))
        .args(["jobs", "ls", "--status", "done"])
        .env("TRIBUTARY_COORDINATOR_URL", &c.url)
        .output()
        .expect("run tributary");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid status"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_while_jobs_arrive_has_no_gap_and_no_duplicate() {
    let c = TestCluster::start_with(ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let mut before = Vec::new();
    for i in 0..60 {
        before.push(c.submit("bench.leaf", json!({ "value": i })).await);
    }
    let adding = {
        let http = c.http.clone();
        let url = c.url.clone();
        tokio::spawn(async move {
            let mut added = Vec::new();
            for i in 0..40 {
                let answer: Value = http
                    .post(format!("{url}/v1/jobs"))
                    .json(&json!({ "kind": "bench.leaf", "input": { "value": i } }))
                    .send()
                    .await
                    .expect("POST")
                    .json()
                    .await
                    .expect("JSON");
                added.push(answer["id"].as_str().map(str::to_owned).expect("an id"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            added
        })
    };
    let listed = ids(&all_pages(&c, "", 3).await);
    let added = adding.await.expect("the submitter");
    let unique: HashSet<Uuid> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a job listed twice");
    assert_eq!(listed, newest_first(listed.clone()), "not newest first");
    for id in &before {
        assert!(
            unique.contains(id),
            "{id} existed before paging began but was skipped"
        );
    }
    // Jobs added while paging are either listed or newer than the first page.
    assert!(listed.len() <= before.len() + added.len());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_list_parameters_get_4xx_with_a_reason() {
    let c = TestCluster::start_with(ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let id = c.submit("bench.leaf", json!({ "value": 1 })).await;
    for (query, want, reason) in [
        ("status=done", 400, "invalid status"),
        ("kind=a%20b", 400, "invalid kind"),
        ("limit=0", 400, "invalid limit"),
        ("limit=501", 400, "invalid limit"),
        ("limit=-3", 400, "invalid limit"),
        ("root=xyz", 400, "invalid root"),
        ("parent=xyz", 400, "invalid parent"),
        ("cursor=zz", 400, "invalid cursor"),
        ("cursor=01ff", 400, "invalid cursor"),
        ("created_after=noon", 400, "invalid created_after"),
        ("bogus=1", 400, "unknown field"),
        ("status=failed&status=running", 400, "duplicate field"),
    ] {
        let (status, body) = c.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(status, want, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{query}: {error:?} should say {reason:?}"
        );
    }
    let both = format!("root={id}&parent={id}");
    let (status, body) = c.get(&format!("/v1/jobs?{both}")).await;
    assert_eq!(status, 400, "{body}");
    // A roots cursor does not continue a children listing.
    let (_, page) = c.get("/v1/jobs?limit=1").await;
    assert!(page["next_cursor"].is_null(), "one root, one page: {page}");
    c.submit("bench.leaf", json!({ "value": 2 })).await;
    let (_, page) = c.get("/v1/jobs?limit=1").await;
    let cursor = page["next_cursor"].as_str().expect("a cursor").to_owned();
    let (status, body) = c
        .get(&format!("/v1/jobs?parent={id}&cursor={cursor}"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("another kind of listing")
    );
    c.shutdown().await;
}

async fn post_keyed(c: &TestCluster, key: &[u8], body: &Value) -> (u16, Value, Option<String>) {
    let response = c
        .http
        .post(format!("{}/v1/jobs", c.url))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("POST /v1/jobs");
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut answer: Value = response.json().await.expect("JSON");
    if let Some(location) = location {
        answer["location"] = json!(location);
    }
    (status, answer, replayed)
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_make_one_job() {
    let mut c = TestCluster::start_with(ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let body = json!({ "kind": "bench.leaf", "input": { "value": 7, "sleep_ms": 1 } });
    let (status, first, replayed) = post_keyed(&c, b"order-42", &body).await;
    assert_eq!((status, replayed), (201, None), "{first}");
    assert_eq!(first["replayed"], false);
    let id = first["id"].as_str().expect("an id").to_owned();
    assert_eq!(first["location"], format!("/v1/jobs/{id}"));
    // The same request, spelled otherwise (key order, explicit defaults).
    let same = json!({ "input": { "sleep_ms": 1, "value": 7 }, "kind": "bench.leaf",
                       "options": { "max_attempts": 3 } });
    let (status, again, replayed) = post_keyed(&c, b"order-42", &same).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (200, Some("true")),
        "{again}"
    );
    assert_eq!(
        (&again["id"], &again["replayed"]),
        (&json!(id), &json!(true))
    );
    assert_eq!(again["location"], format!("/v1/jobs/{id}"));
    // Another request under the same key is refused, naming the job.
    let other = json!({ "kind": "bench.leaf", "input": { "value": 8 } });
    let (status, refused, _) = post_keyed(&c, b"order-42", &other).await;
    assert_eq!(status, 422, "{refused}");
    let reason = refused["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&id) && reason.contains("Idempotency-Key"),
        "{reason}"
    );
    // Unusable keys.
    for key in [
        &b""[..],
        &[b'k'; 256][..],
        "caf\u{e9}".as_bytes(),
        &b"a\tb"[..],
    ] {
        let (status, answer, _) = post_keyed(&c, key, &body).await;
        assert_eq!(status, 400, "{key:?}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains("Idempotency-Key")
        );
    }

    // Concurrent submissions with one key make one job.
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let http = c.http.clone();
            let url = c.url.clone();
            tokio::spawn(async move {
                let response = http
                    .post(format!("{url}/v1/jobs"))
                    .header("idempotency-key", "race")
                    .json(&json!({ "kind": "bench.leaf", "input": { "value": 1 } }))
                    .send()
                    .await
                    .expect("POST");
                let status = response.status().as_u16();
                let answer: Value = response.json().await.expect("JSON");
                (status, answer["id"].as_str().map(str::to_owned))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for racer in racers {
        answers.push(racer.await.expect("a racer"));
    }
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let replays = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, replays), (1, 15), "{answers:?}");
    let race_ids: HashSet<_> = answers.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(race_ids.len(), 1, "{answers:?}");
    let roots: i64 = sqlx::query_scalar("select count(*) from jobs where parent_id is null")
        .fetch_one(&c.pool)
        .await
        .expect("count");
    assert_eq!(roots, 2, "one job per key");

    // After 24 h a key is free again, and the retention loop prunes it.
    sqlx::query("update idempotency_keys set created_at = now() - interval '25 hours' where key = 'order-42'")
        .execute(&c.pool)
        .await
        .expect("age the key");
    let (status, fresh, _) = post_keyed(&c, b"order-42", &other).await;
    assert_eq!(status, 201, "{fresh}");
    assert_ne!(fresh["id"], json!(id));
    sqlx::query(
        "insert into idempotency_keys (key, job_id, request_hash, created_at)
         select 'old-' || i, gen_random_uuid(), '\\x00', now() - interval '2 days'
         from generate_series(1, 2500) i",
    )
    .execute(&c.pool)
    .await
    .expect("expired keys");
    c.terminate_coordinator().await;
    c.start_coordinator().await;
    c.eventually("expired keys pruned", Duration::from_secs(30), || async {
        let left: i64 = sqlx::query_scalar("select count(*) from idempotency_keys")
            .fetch_one(&c.pool)
            .await
            .ok()?;
        (left == 2).then_some(())
    })
    .await;

    // The CLI sends the key.
    let submit = || {
        let out = std::process::Command::new(bin("tributary"))
            .args([
                "submit",
                "bench.leaf",
                "--input",
                r#"{"value": 3}"#,
                "--idempotency-key",
                "cli-1",
            ])
            .env("TRIBUTARY_COORDINATOR_URL", &c.url)
            .env_remove("TRIBUTARY_API_TOKEN")
            .output()
            .expect("run tributary");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (a, b) = (submit(), submit());
    assert!(Uuid::parse_str(&a).is_ok(), "{a}");
    assert_eq!(a, b);
    c.shutdown().await;
}
