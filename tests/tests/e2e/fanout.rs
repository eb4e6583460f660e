//! Fan-out and fan-in: two phases, empty fan-outs, large fan-outs, nested
//! trees, retries, and the word-count demo against a shell pipeline.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{TestCluster, bin};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn two_phase_job_sums_its_children_exactly() {
    let c = TestCluster::start().await;
    let id = c
        .submit("bench.fanout", json!({ "n": 200, "batch": 64 }))
        .await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["sum"], 199 * 200 / 2);
    assert_eq!(job["output"]["completed"], 200);
    assert_eq!(job["output"]["counted"], json!([200, 200, 0]));
    assert_eq!(job["children"]["expected"], 200);
    let phases: Vec<&str> = job["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(phases, ["start", "sum"]);
    c.assert_tree_exact(id).await;
    assert_eq!(c.task_queue_depth().await, 0);
    let (status, tree) = c.get(&format!("/v1/jobs/{id}/tree")).await;
    assert_eq!(status, 200);
    assert_eq!(tree["counts"]["completed"], 201);
    assert_eq!(tree["progress"], 1.0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_fan_out_goes_straight_on() {
    let c = TestCluster::start().await;
    let id = c.submit("bench.fanout", json!({ "n": 0 })).await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["sum"], 0);
    assert_eq!(job["output"]["counted"], json!([0, 0, 0]));
    assert_eq!(job["phase"], "sum");
    c.assert_tree_exact(id).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_children_under_one_parent_count_exactly() {
    let c = TestCluster::start().await;
    let n: u64 = 10_000;
    let id = c.submit("bench.fanout", json!({ "n": n })).await;
    let job = c.wait_for(id, "completed", Duration::from_secs(240)).await;
    assert_eq!(job["output"]["sum"], n * (n - 1) / 2);
    assert_eq!(job["output"]["counted"], json!([n, n, 0]));
    c.assert_tree_exact(id).await;
    assert_eq!(c.task_queue_depth().await, 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_children_still_sum_exactly_and_permanent_failures_are_counted() {
    let c = TestCluster::start().await;
    // Every 3rd child fails its first attempt and succeeds on retry.
    let retried = c
        .submit(
            "bench.fanout",
            json!({ "n": 60, "fail_every": 3, "fail": "first_attempt" }),
        )
        .await;
    // Every 4th child fails for good; the parent continues (default policy).
    let failing = c
        .submit(
            "bench.fanout",
            json!({ "n": 40, "fail_every": 4, "fail": "permanent" }),
        )
        .await;
    let job = c.wait_for(retried, "completed", MINUTE).await;
    assert_eq!(job["output"]["sum"], 59 * 60 / 2);
    assert_eq!(job["output"]["counted"], json!([60, 60, 0]));
    let job = c.wait_for(failing, "completed", MINUTE).await;
    let failed_sum: u64 = (0..40).filter(|i| i % 4 == 0).sum();
    assert_eq!(job["output"]["sum"], 39 * 40 / 2 - failed_sum);
    assert_eq!(job["output"]["failed"], 10);
    assert_eq!(job["output"]["counted"], json!([40, 30, 10]));
    // A retried child shows its failed attempt in its phase history.
    let (_, page) = c.get(&format!("/v1/jobs/{retried}/children?limit=1")).await;
    let first = page["children"][0]["id"]
        .as_str()
        .expect("child id")
        .to_owned();
    let (_, child) = c.get(&format!("/v1/jobs/{first}")).await;
    let statuses: Vec<&str> = child["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["failed", "completed"], "{child}");
    c.assert_tree_exact(retried).await;
    c.assert_tree_exact(failing).await;
    c.shutdown().await;
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_tree_three_levels_sums_level_by_level() {
    let c = TestCluster::start().await;
    let dir = std::env::temp_dir().join(format!("trib-du-{}", c.namespace));
    let files = [
        ("top.txt", 10usize),
        ("a/one.txt", 100),
        ("a/x/two.txt", 1000),
        ("a/x/deep/three.txt", 7),
        ("a/x/deep/four.txt", 8),
        ("b/five.txt", 50),
        ("b/y/six.txt", 3),
    ];
    for (p, size) in files {
        write(&dir.join(p), &vec![b'x'; size]);
    }
    std::fs::create_dir_all(dir.join("b/empty")).expect("mkdir");
    let id = c
        .submit("demo.du", json!({ "path": dir.to_string_lossy() }))
        .await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    let out = &job["output"];
    assert_eq!(out["bytes"], files.iter().map(|f| f.1).sum::<usize>());
    assert_eq!(out["files"], files.len());
    // root, a, a/x, a/x/deep, b, b/y, b/empty
    assert_eq!(out["dirs"], 7);
    assert_eq!(out["depth"], 3);
    // The tree really is nested: a great-grandchild of the root exists.
    let depth3: i64 = sqlx::query_scalar(
        "select count(*) from jobs c join jobs p on c.parent_id = p.id join jobs g on p.parent_id = g.id
         where g.parent_id = $1",
    )
    .bind(id)
    .fetch_one(&c.pool)
    .await
    .expect("query");
    assert_eq!(
        depth3, 1,
        "a/x/deep is the one job three levels below the root"
    );
    c.assert_tree_exact(id).await;
    let _ = std::fs::remove_dir_all(&dir);
    c.shutdown().await;
}

fn corpus(dir: &Path) {
    // Deterministic text with mixed case, digits, punctuation and non-ASCII
    // bytes, in nested directories; every file ends with a newline.
    let words = [
        "Alpha", "beta", "GAMMA", "delta42", "x", "año", "e-mail", "it's", "rust2024", "Zeta",
    ];
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    for f in 0..24 {
        let mut text = Vec::new();
        for i in 0..(2000 + f * 150) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.extend_from_slice(words[(state % words.len() as u64) as usize].as_bytes());
            text.extend_from_slice(if i % 9 == 8 { b".\n" } else { b" " });
        }
        text.push(b'\n');
        write(
            &dir.join(format!("d{}/sub{}/f{f}.txt", f % 3, f % 2)),
            &text,
        );
    }
}

fn shell(script: &str) -> String {
    let out = std::process::Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_json_equals_a_shell_pipeline() {
    let dir = std::env::temp_dir().join(format!("trib-corpus-{}", std::process::id()));
    corpus(&dir);
    let d = dir.to_string_lossy();
    let words = format!(
        "export LC_ALL=C; find '{d}' -type f -print0 | xargs -0 cat | tr -cs 'A-Za-z0-9' '\\n' | tr 'A-Z' 'a-z' | grep -v '^$'"
    );
    let total: u64 = shell(&format!("{words} | wc -l"))
        .trim()
        .parse()
        .expect("total");
    let distinct: u64 = shell(&format!("{words} | sort -u | wc -l"))
        .trim()
        .parse()
        .expect("distinct");
    let top: Vec<Value> = shell(&format!(
        "{words} | sort | uniq -c | sort -k1,1nr -k2,2 | head -10"
    ))
    .lines()
    .map(|l| {
        let mut parts = l.split_whitespace();
        let n: u64 = parts.next().and_then(|n| n.parse().ok()).expect("count");
        json!([parts.next().expect("word"), n])
    })
    .collect();
    let files: u64 = shell(&format!("find '{d}' -type f | wc -l"))
        .trim()
        .parse()
        .expect("files");

    // A namespace and a database of its own: nothing another run (or a
    // coordinator of another version) left in `demo`/`tributary_demo` matters.
    let id = uuid::Uuid::now_v7().simple().to_string();
    let namespace = format!("d{}", &id[id.len() - 16..]);
    let database = format!("trib_{namespace}");
    let out = tokio::process::Command::new(bin("tributary"))
        .args(["demo", "--path", &d, "--json"])
        .args(["--namespace", &namespace, "--database", &database])
        .env(
            "TRIBUTARY_DATABASE_URL",
            format!("{}/tributary", tributary_tests::PG_SERVER),
        )
        .output()
        .await
        .expect("run tributary demo");
    tributary_tests::remove(&namespace, &database).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a last line");
    let result: Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(result["total_words"], total);
    assert_eq!(result["distinct_words"], distinct);
    assert_eq!(result["top"], Value::Array(top));
    assert_eq!(result["files"], files);
    assert!(result["children"].as_u64().unwrap_or(0) >= 1);
    assert!(
        result["job_id"].is_string() && result["wall_ms"].is_u64(),
        "{result}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
