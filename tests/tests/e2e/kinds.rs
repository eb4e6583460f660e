//! The built-in kinds are safe to ship: the demos read only under the
//! worker's demo root, every knob is capped with a permanent error, and
//! CPU-bound work does not hold up the worker's other phases.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tributary_tests::{ClusterOptions, TestCluster};
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);

/// A scratch tree: `root/` (the workers' demo root) with two small files,
/// and `outside/` beside it holding a secret. Removed on drop.
struct Tree {
    dir: PathBuf,
    /// `root/`, canonical: what the errors name.
    root: String,
}

impl Tree {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("trib-kinds-{tag}-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("root/sub")).expect("mkdir root");
        std::fs::create_dir_all(dir.join("outside")).expect("mkdir outside");
        std::fs::write(dir.join("root/a.txt"), "Alpha beta\n").expect("write");
        std::fs::write(dir.join("root/sub/b.txt"), "beta gamma\n").expect("write");
        std::fs::write(dir.join("outside/secret.txt"), "zzsecret zzsecret\n").expect("write");
        let root = std::fs::canonicalize(dir.join("root"))
            .expect("canonical root")
            .to_string_lossy()
            .into_owned();
        Self { dir, root }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    /// One worker whose demo root is `root/`.
    fn options(&self, concurrency: usize) -> ClusterOptions {
        ClusterOptions {
            workers: 1,
            concurrency,
            worker_env: vec![("TRIBUTARY_DEMO_ROOT".into(), self.path("root"))],
            ..ClusterOptions::default()
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for `id` to fail on its first attempt (a permanent failure: a
/// retryable one would take further attempts) and returns its error.
async fn fails_permanently(c: &TestCluster, id: Uuid) -> String {
    let job = c.wait_for(id, "failed", MINUTE).await;
    assert_eq!(
        job["attempt"], 1,
        "failed after a retry, not at once: {job}"
    );
    assert_eq!(job["output"], Value::Null, "{job}");
    job["error"].as_str().expect("an error").to_owned()
}

async fn children_of(c: &TestCluster, id: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from jobs where parent_id = $1")
        .bind(id)
        .fetch_one(&c.pool)
        .await
        .expect("count children")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_outside_the_root_fails_permanently_naming_the_root() {
    let t = Tree::new("outside");
    let c = TestCluster::start_with(t.options(8)).await;
    let outside = t.path("outside");
    let mut jobs = Vec::new();
    for path in ["/etc", outside.as_str(), "../outside", "sub/../../outside"] {
        jobs.push(c.submit("demo.wordcount", json!({ "path": path })).await);
        jobs.push(c.submit("demo.du", json!({ "path": path })).await);
    }
    for id in jobs {
        let error = fails_permanently(&c, id).await;
        assert!(
            error.contains(&t.root) && error.contains("outside the demo root"),
            "the error names the root: {error}"
        );
        assert_eq!(children_of(&c, id).await, 0);
    }
    // Relative paths resolve against the root, and the root itself is fine.
    let id = c.submit("demo.wordcount", json!({ "path": "." })).await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["files"], 2, "{job}");
    assert_eq!(job["output"]["total_words"], 4, "{job}");
    let id = c.submit("demo.du", json!({ "path": "sub" })).await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["files"], 1, "{job}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_inside_the_root_pointing_outside_fails() {
    let t = Tree::new("symlink");
    std::os::unix::fs::symlink(t.dir.join("outside"), t.dir.join("root/link")).expect("symlink");
    std::os::unix::fs::symlink(
        t.dir.join("outside/secret.txt"),
        t.dir.join("root/sub/leak.txt"),
    )
    .expect("symlink");
    let c = TestCluster::start_with(t.options(8)).await;
    let via_link = t.path("root/link");
    let mut jobs = Vec::new();
    for path in ["link", via_link.as_str(), "link/secret.txt"] {
        jobs.push(c.submit("demo.wordcount", json!({ "path": path })).await);
        jobs.push(c.submit("demo.du", json!({ "path": path })).await);
    }
    for id in jobs {
        let error = fails_permanently(&c, id).await;
        assert!(
            error.contains(&t.root) && error.contains("outside the demo root"),
            "the error names the root: {error}"
        );
    }
    // A walk of the root does not follow the symlinks: the secret is not read.
    let id = c.submit("demo.wordcount", json!({ "path": "." })).await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    let out = &job["output"];
    assert_eq!(
        (&out["files"], &out["total_words"], &out["distinct_words"]),
        (&json!(2), &json!(4), &json!(3)),
        "{job}"
    );
    assert!(!out.to_string().contains("zzsecret"), "{job}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_chunk_submission_cannot_read_files() {
    let t = Tree::new("chunk");
    let c = TestCluster::start_with(t.options(8)).await;
    let secret = t.path("outside/secret.txt");
    let mut jobs = Vec::new();
    for files in [
        json!(["/etc/passwd"]),
        json!(["../../../../../../etc/passwd"]),
        json!([secret]),
        json!(["../outside/secret.txt"]),
        // Even a file inside the root: file lists come only from a parent.
        json!(["a.txt"]),
    ] {
        jobs.push(
            c.submit("demo.wordcount.chunk", json!({ "Files": files }))
                .await,
        );
    }
    for id in jobs {
        let error = fails_permanently(&c, id).await;
        assert!(
            error.contains("only from a demo.wordcount parent"),
            "refused as a direct file list: {error}"
        );
        assert!(!error.contains("root:x:0") && !error.contains("zzsecret"));
    }
    // A generated chunk names no files: it may be submitted directly.
    let spec = json!({ "files": 4, "words_per_file": 100, "vocabulary": 50, "seed": 1 });
    let id = c
        .submit(
            "demo.wordcount.chunk",
            json!({ "Generated": { "spec": spec, "first": 1, "count": 3 } }),
        )
        .await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["files"], 3, "{job}");
    assert_eq!(job["output"]["total_words"], 300, "{job}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_cap_knob_fails_permanently_naming_the_cap_and_the_worker_lives_on() {
    let t = Tree::new("caps");
    let mut c = TestCluster::start_with(t.options(8)).await;
    let big_corpus = |files: u64, words: u64| json!({ "files": files, "words_per_file": words, "vocabulary": 100, "seed": 1 });
    let cases = [
        (
            "bench.fanout",
            json!({ "n": 1_000_000_000_000u64 }),
            "bench.fanout n",
            "10000000",
        ),
        (
            "bench.fanout",
            json!({ "n": 10, "batch": 1_000_000_000u64 }),
            "bench.fanout batch",
            "10000",
        ),
        (
            "bench.fanout",
            json!({ "n": 10, "work_us": 1_000_000_000u64 }),
            "work_us",
            "10000000",
        ),
        (
            "bench.fanout",
            json!({ "n": 10, "pause_ms": 1_000_000_000u64 }),
            "pause_ms",
            "3600000",
        ),
        (
            "bench.leaf",
            json!({ "value": 1, "work_us": 1_000_000_000_000u64 }),
            "work_us",
            "10000000",
        ),
        (
            "bench.leaf",
            json!({ "value": 1, "sleep_ms": 1_000_000_000_000u64 }),
            "sleep_ms",
            "3600000",
        ),
        (
            "demo.wordcount",
            json!({ "generate": big_corpus(1, 4_294_967_295) }),
            "words_per_file",
            "1000000",
        ),
        (
            "demo.wordcount",
            json!({ "generate": big_corpus(4_294_967_295, 10) }),
            "generate.files",
            "100000",
        ),
        (
            "demo.wordcount",
            json!({ "generate": big_corpus(100, 10), "chunk_files": 4_294_967_295u32 }),
            "chunk_files",
            "1000",
        ),
        (
            "demo.wordcount.chunk",
            json!({ "Generated": { "spec": big_corpus(8, 4_294_967_295), "first": 0, "count": 8 } }),
            "words_per_file",
            "1000000",
        ),
    ];
    let mut jobs = Vec::new();
    for (kind, input, knob, cap) in &cases {
        jobs.push((c.submit(kind, input.clone()).await, *knob, *cap));
    }
    for (id, knob, cap) in jobs {
        let error = fails_permanently(&c, id).await;
        assert!(
            error.contains(knob) && error.contains(&format!("cap of {cap}")),
            "the error names {knob} and its cap {cap}: {error}"
        );
        assert_eq!(children_of(&c, id).await, 0, "nothing was spawned");
    }
    assert!(
        matches!(c.workers[0].try_wait(), Ok(None)),
        "the worker is still running"
    );
    let id = c.submit("bench.fanout", json!({ "n": 10 })).await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["sum"], 45);
    let id = c
        .submit(
            "demo.wordcount",
            json!({ "generate": big_corpus(10, 1000), "chunk_files": 3 }),
        )
        .await;
    let job = c.wait_for(id, "completed", MINUTE).await;
    assert_eq!(job["output"]["total_words"], 10_000);
    assert_eq!(job["output"]["children"], 4);
    assert!(matches!(c.workers[0].try_wait(), Ok(None)));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_cpu_leaf_does_not_hold_up_a_quick_job_or_its_heartbeats() {
    // One worker, one runtime thread, two phases at once, a 3 s lease: busy
    // work on the runtime thread would starve the quick job and let the
    // long one's lease lapse (a second attempt).
    let c = TestCluster::start_with(ClusterOptions {
        workers: 1,
        concurrency: 2,
        worker_env: vec![
            ("TOKIO_WORKER_THREADS".into(), "1".into()),
            ("TRIBUTARY_HEARTBEAT_SECS".into(), "1".into()),
        ],
        ..ClusterOptions::default()
    })
    .await;
    let long = c
        .submit("bench.leaf", json!({ "value": 1, "work_us": 6_000_000 }))
        .await;
    let started = Instant::now();
    loop {
        let status: String = sqlx::query_scalar("select status from jobs where id = $1")
            .bind(long)
            .fetch_one(&c.pool)
            .await
            .expect("status");
        if status == "running" {
            break;
        }
        assert_eq!(
            status, "pending",
            "the long leaf never reported Started while it ran: its busy work held the worker's runtime"
        );
        assert!(started.elapsed() < MINUTE, "the long leaf did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quick = c.submit("bench.leaf", json!({ "value": 2 })).await;
    let submitted = Instant::now();
    let job = c.wait_for(quick, "completed", MINUTE).await;
    let took = submitted.elapsed();
    assert_eq!(job["output"], 2);
    let long_now = c.job(long).await;
    assert_eq!(
        long_now["status"], "running",
        "the quick job finished while the long one was still busy (after {took:?})"
    );
    assert!(took < Duration::from_secs(4), "the quick job took {took:?}");
    let job = c.wait_for(long, "completed", MINUTE).await;
    assert_eq!(
        job["attempt"], 1,
        "heartbeats went on during the busy work: the lease never lapsed: {job}"
    );
    c.shutdown().await;
}
