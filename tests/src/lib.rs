//! The end-to-end test harness: [`TestCluster`] runs the real coordinator
//! and worker binaries against the real RabbitMQ and Postgres of this
//! machine, each cluster on its own database and its own namespace, so
//! tests run in parallel and leave no residue.
//!
//! Set `TEST_LOG=1` to see the processes' logs on stderr.
//!
//! The binaries come from the same target directory as the test binary:
//! the README's test command (`scripts/test`) builds them first.

#![allow(missing_docs)]

pub mod browser;
pub mod proxy;
pub mod tls_proxy;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::Row;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tributary_common::topology::Topology;
use uuid::Uuid;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Every kind the worker binary serves, as its registry lists them
/// (`tributary-worker --list-kinds`): their queues are counted and deleted.
pub fn kinds() -> &'static [String] {
    static KINDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KINDS.get_or_init(|| {
        let out = std::process::Command::new(bin("tributary-worker"))
            .arg("--list-kinds")
            .output()
            .expect("run tributary-worker --list-kinds");
        assert!(out.status.success(), "tributary-worker --list-kinds failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

/// Where the binaries are: the target directory of this test binary.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; scripts/test does)",
        path.display()
    );
    path
}

fn log_target() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// Options of a cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    pub workers: usize,
    pub concurrency: usize,
    /// Extra environment for workers (fault switches).
    pub worker_env: Vec<(String, String)>,
    /// Extra environment for the coordinator.
    pub coordinator_env: Vec<(String, String)>,
    /// RabbitMQ URL given to the coordinator and the workers (default
    /// [`AMQP_URL`]), e.g. through a [`proxy::FaultProxy`]. The harness's
    /// own checks and cleanup always use [`AMQP_URL`].
    pub amqp_url: Option<String>,
    /// Postgres server URL, without a database, that the coordinator's
    /// database URL is built on (default [`PG_SERVER`]), e.g. through a
    /// [`proxy::FaultProxy`]. The harness's own pool always uses
    /// [`PG_SERVER`].
    pub pg_server: Option<String>,
    /// Bearer token the harness's own client ([`TestCluster::http`]) sends;
    /// give the processes theirs through `coordinator_env`/`worker_env`.
    pub client_token: Option<String>,
    /// Query parameters appended to the coordinator's database URL, e.g.
    /// `sslmode=require` (default none).
    pub pg_params: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            concurrency: 16,
            worker_env: Vec::new(),
            coordinator_env: Vec::new(),
            amqp_url: None,
            pg_server: None,
            client_token: None,
            pg_params: None,
        }
    }
}

/// A coordinator and workers on a fresh database and namespace.
pub struct TestCluster {
    pub namespace: String,
    pub database: String,
    pub database_url: String,
    /// The database URL the coordinator is given (equal to `database_url`
    /// unless [`ClusterOptions::pg_server`] is set).
    pub process_database_url: String,
    /// The RabbitMQ URL the processes are given.
    pub process_amqp_url: String,
    pub url: String,
    pub listen: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
    options: ClusterOptions,
    coordinator: Option<Child>,
    pub workers: Vec<Child>,
}

/// An HTTP client for a cluster's API, sending `token` as a bearer token
/// if given. No connection reuse: a refused oversize upload leaves its
/// connection broken, and the next request must not inherit it.
pub fn http_client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}")
                .parse()
                .expect("a token fit for a header"),
        );
    }
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .default_headers(headers)
        .build()
        .expect("http client")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

impl TestCluster {
    pub async fn start() -> Self {
        Self::start_with(ClusterOptions::default()).await
    }

    pub async fn start_with(options: ClusterOptions) -> Self {
        let id = Uuid::now_v7().simple().to_string();
        let namespace = format!("t{}", &id[id.len() - 16..]);
        let database = format!("trib_{namespace}");
        let database_url = format!("{PG_SERVER}/{database}");
        let listen = format!("127.0.0.1:{}", free_port());
        let url = format!("http://{listen}");
        let process_database_url = format!(
            "{}/{database}{}",
            options.pg_server.as_deref().unwrap_or(PG_SERVER),
            options
                .pg_params
                .as_deref()
                .map(|p| format!("?{p}"))
                .unwrap_or_default()
        );
        let process_amqp_url = options.amqp_url.clone().unwrap_or_else(|| AMQP_URL.into());
        let mut cluster = Self {
            namespace,
            database,
            database_url: database_url.clone(),
            process_database_url,
            process_amqp_url,
            url,
            listen,
            pool: PgPool::connect_lazy(&database_url).expect("pool"),
            http: http_client(options.client_token.as_deref()),
            options: options.clone(),
            coordinator: None,
            workers: Vec::new(),
        };
        cluster.start_coordinator().await;
        cluster.pool = PgPool::connect(&database_url)
            .await
            .expect("connect to the test database");
        for _ in 0..options.workers {
            cluster.start_worker().await;
        }
        cluster
    }

    /// Starts (or restarts) the coordinator on the cluster's port; returns
    /// once it listens.
    pub async fn start_coordinator(&mut self) {
        let mut child = Command::new(bin("tributary-coordinator"))
            .env("TRIBUTARY_LISTEN", &self.listen)
            .env("TRIBUTARY_DATABASE_URL", &self.process_database_url)
            .env("TRIBUTARY_AMQP_URL", &self.process_amqp_url)
            .env("TRIBUTARY_NAMESPACE", &self.namespace)
            .envs(self.options.coordinator_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log_target())
            .kill_on_drop(true)
            .spawn()
            .expect("start the coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the coordinator did not start within 60 s")
            .expect("read coordinator stdout");
        assert!(
            matches!(&line, Some(l) if l.starts_with("listening on")),
            "coordinator said {line:?}"
        );
        // Keep draining stdout so the process never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.coordinator = Some(child);
    }

    /// Starts another coordinator on the same database and namespace, on
    /// a port of its own; returns it and its base URL.
    pub async fn extra_coordinator(&self) -> (tokio::process::Child, String) {
        let mut child = Command::new(bin("tributary-coordinator"))
            .env("TRIBUTARY_LISTEN", "127.0.0.1:0")
            .env("TRIBUTARY_DATABASE_URL", &self.process_database_url)
            .env("TRIBUTARY_AMQP_URL", &self.process_amqp_url)
            .env("TRIBUTARY_NAMESPACE", &self.namespace)
            .envs(self.options.coordinator_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log_target())
            .kill_on_drop(true)
            .spawn()
            .expect("start another coordinator");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the other coordinator did not start within 60 s")
            .expect("read its stdout");
        let addr = match line
            .as_deref()
            .and_then(|l| l.strip_prefix("listening on "))
        {
            Some(addr) => addr.trim().to_owned(),
            None => panic!("the other coordinator said {line:?}"),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, format!("http://{addr}"))
    }

    fn worker_command(&self) -> Command {
        let mut cmd = Command::new(bin("tributary-worker"));
        cmd.env("TRIBUTARY_AMQP_URL", &self.process_amqp_url)
            .env("TRIBUTARY_NAMESPACE", &self.namespace)
            .env("TRIBUTARY_COORDINATOR_URL", &self.url)
            .env(
                "TRIBUTARY_CONCURRENCY",
                self.options.concurrency.to_string(),
            )
            .env("TRIBUTARY_GRACE_SECS", "10")
            // The demo kinds read only under their root: tests build their
            // trees in the temp directory (`worker_env` may narrow it).
            .env("TRIBUTARY_DEMO_ROOT", std::env::temp_dir())
            .envs(self.options.worker_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Starts one more worker and waits until it consumes.
    pub async fn start_worker(&mut self) {
        let mut child = self
            .worker_command()
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a worker");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let show = std::env::var_os("TEST_LOG").is_some();
        let ready = async {
            while let Ok(Some(l)) = lines.next_line().await {
                if show {
                    eprintln!("{l}");
                }
                if l.contains("worker consuming") {
                    return true;
                }
            }
            false
        };
        let ok = tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .unwrap_or(false);
        assert!(ok, "a worker did not start consuming within 60 s");
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                if show {
                    eprintln!("{l}");
                }
            }
        });
        self.workers.push(child);
    }

    /// SIGKILLs worker `i` and waits for it to die.
    pub async fn kill_worker(&mut self, i: usize) {
        let mut w = self.workers.remove(i);
        w.kill().await.expect("kill worker");
    }

    /// SIGKILLs the coordinator.
    /// The coordinator process's id, while it runs.
    pub fn coordinator_pid(&self) -> Option<u32> {
        self.coordinator.as_ref().and_then(Child::id)
    }

    pub async fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            c.kill().await.expect("kill coordinator");
        }
    }

    /// SIGTERMs the coordinator and returns its exit status.
    pub async fn terminate_coordinator(&mut self) -> std::process::ExitStatus {
        let mut c = self.coordinator.take().expect("a running coordinator");
        signal(&c, "TERM");
        tokio::time::timeout(Duration::from_secs(30), c.wait())
            .await
            .expect("coordinator exits on SIGTERM")
            .expect("wait")
    }

    /// SIGTERMs worker `i` and returns its exit status.
    pub async fn terminate_worker(&mut self, i: usize) -> std::process::ExitStatus {
        let mut w = self.workers.remove(i);
        signal(&w, "TERM");
        tokio::time::timeout(Duration::from_secs(30), w.wait())
            .await
            .expect("worker exits on SIGTERM")
            .expect("wait")
    }

    pub async fn submit(&self, kind: &str, input: Value) -> Uuid {
        self.submit_with(kind, input, None).await
    }

    pub async fn submit_with(&self, kind: &str, input: Value, options: Option<Value>) -> Uuid {
        let mut body = json!({ "kind": kind, "input": input });
        if let Some(o) = options {
            body["options"] = o;
        }
        let (status, answer) = self.post_json(&body).await;
        assert_eq!(status, 201, "submission refused: {answer}");
        answer["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("an id")
    }

    pub async fn post_json(&self, body: &Value) -> (u16, Value) {
        self.post_raw(body.to_string().into_bytes(), Some("application/json"))
            .await
    }

    pub async fn post_raw(&self, body: Vec<u8>, content_type: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/v1/jobs", self.url)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("POST /v1/jobs");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POSTs `body` (none: an empty body) to `path`; the status and the
    /// answer as JSON (or as a string if it is not JSON).
    pub async fn post(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Polls `probe` every 50 ms until it returns `Some`, or panics naming
    /// `what` once `timeout` has passed.
    pub async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let started = Instant::now();
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GETs `path` and returns the status and the body as text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    pub async fn job(&self, id: Uuid) -> Value {
        let (status, body) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "GET job {id}: {body}");
        body
    }

    /// Waits until job `id` is terminal; panics unless it ended `status`.
    /// Survives the coordinator being down for a while (polls the database).
    pub async fn wait_for(&self, id: Uuid, status: &str, timeout: Duration) -> Value {
        let what = format!("job {id} to end as {status}");
        self.eventually(&what, timeout, || async {
            let row: Option<(String,)> = sqlx::query_as("select status from jobs where id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten();
            row.filter(|(s,)| matches!(s.as_str(), "completed" | "failed" | "cancelled"))
                .map(|_| ())
        })
        .await;
        let job = self.job(id).await;
        assert_eq!(job["status"], status, "job {id} ended otherwise: {job}");
        job
    }

    /// Waits (at most a minute) until at least `at_least` children of
    /// `parent` have completed or failed.
    pub async fn wait_children_done(&self, parent: Uuid, at_least: i64) {
        let started = Instant::now();
        loop {
            let done: i64 = sqlx::query_scalar(
                "select children_completed + children_failed from jobs where id = $1",
            )
            .bind(parent)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(0);
            if done >= at_least {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "children of {parent} did not progress"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for a `bench.fanout` of `n` children to complete and checks it:
    /// the exact sum and counters, the tree's invariants, no task queued.
    pub async fn assert_fanout_exact(&self, id: Uuid, n: u64, timeout: Duration) -> Value {
        let job = self.wait_for(id, "completed", timeout).await;
        assert_eq!(
            job["output"]["sum"],
            n * n.saturating_sub(1) / 2,
            "the aggregate is exact"
        );
        assert_eq!(
            job["output"]["counted"],
            json!([n, n, 0]),
            "the counters are exact"
        );
        self.assert_tree_exact(id).await;
        // Duplicates a fault re-published (fenced when they run) may still
        // be draining: wait for the queues to empty.
        let started = Instant::now();
        while self.task_queue_depth().await > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "tasks are left queued"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        job
    }

    /// Prints the line `scripts/soak` collects into RELIABILITY.md. Call it
    /// after the invariants were checked (so `lost=0` is a checked fact).
    /// Prints the RELIABILITY line `scripts/soak` collects; `kills` counts
    /// every fault injected (process kills, cuts, hostile messages).
    pub async fn report(&self, scenario: &str, kills: u32) {
        let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
            .fetch_one(&self.pool)
            .await
            .expect("count jobs");
        println!(
            "RELIABILITY scenario={scenario} jobs={jobs} kills={kills} fenced={} lost=0",
            self.fenced().await
        );
    }

    /// Checks the invariants over the tree of `root`: every job terminal,
    /// every parent's counters equal to its children's states, tree summary
    /// equal to the rows, each phase completed at most once.
    pub async fn assert_tree_exact(&self, root: Uuid) {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from jobs where root_id = $1 and status not in ('completed', 'failed', 'cancelled')",
        )
        .bind(root)
        .fetch_one(&self.pool)
        .await
        .expect("count open");
        assert_eq!(open, 0, "jobs of tree {root} are not terminal");
        let rows = sqlx::query(
            "select p.id, p.children_total, p.children_completed, p.children_failed, p.children_cancelled,
                    count(c.id), count(c.id) filter (where c.status = 'completed'),
                    count(c.id) filter (where c.status = 'failed'), count(c.id) filter (where c.status = 'cancelled')
             from jobs p join jobs c on c.parent_id = p.id and c.parent_seq = p.fanout_seq
             where p.root_id = $1
             group by p.id",
        )
        .bind(root)
        .fetch_all(&self.pool)
        .await
        .expect("counters");
        for r in rows {
            let id: Uuid = r.get(0);
            let counters: (i64, i64, i64, i64) = (r.get(1), r.get(2), r.get(3), r.get(4));
            let actual: (i64, i64, i64, i64) = (r.get(5), r.get(6), r.get(7), r.get(8));
            assert_eq!(
                counters, actual,
                "parent {id}: counters (total, completed, failed, cancelled) differ from its children"
            );
        }
        let twice: i64 = sqlx::query_scalar(
            "select count(*) from (select job_id, seq from phases
                                   where status = 'completed' and job_id in (select id from jobs where root_id = $1)
                                   group by job_id, seq having count(*) > 1) t",
        )
        .bind(root)
        .fetch_one(&self.pool)
        .await
        .expect("phases");
        assert_eq!(twice, 0, "a phase of tree {root} completed more than once");
        let summary = sqlx::query(
            "select pending, running, waiting, paused, completed, failed, cancelled from tree_summary where root_id = $1",
        )
        .bind(root)
        .fetch_one(&self.pool)
        .await
        .expect("tree summary");
        let actual = sqlx::query(
            "select count(*) filter (where status = 'completed'), count(*) filter (where status = 'failed'),
                    count(*) filter (where status = 'cancelled'), count(*)
             from jobs where root_id = $1",
        )
        .bind(root)
        .fetch_one(&self.pool)
        .await
        .expect("actual");
        let got: Vec<i64> = (0..7).map(|i| summary.get::<i64, _>(i)).collect();
        assert_eq!(
            got[..4],
            [0, 0, 0, 0],
            "tree summary shows open jobs: {got:?}"
        );
        assert_eq!(
            (got[4], got[5], got[6]),
            (
                actual.get::<i64, _>(0),
                actual.get::<i64, _>(1),
                actual.get::<i64, _>(2)
            ),
            "tree summary differs from the rows"
        );
    }

    /// Messages left in the task queues.
    pub async fn task_queue_depth(&self) -> u32 {
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        let topology = Topology::new(&self.namespace).expect("namespace");
        let mut depth = 0;
        for kind in kinds() {
            let q = ch
                .queue_declare(
                    topology.task_queue(kind).into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if let Ok(q) = q {
                depth += q.message_count();
            } else {
                break;
            }
        }
        let _ = conn.close(200, "done".into()).await;
        depth
    }

    pub async fn fenced(&self) -> i64 {
        self.counter("fenced_reports").await
    }

    /// A durable counter of the coordinator (0 when never written).
    pub async fn counter(&self, name: &str) -> i64 {
        sqlx::query_scalar::<_, i64>("select value from counters where name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .expect("read counter")
            .unwrap_or(0)
    }

    /// Publishes `report` to the namespace's reports queue, as a worker (or
    /// an attacker on the vhost) would, and waits for the confirm.
    pub async fn publish_report(&self, report: &tributary_common::wire::Report) {
        let body = tributary_common::wire::encode(report).expect("encode report");
        let topology = Topology::new(&self.namespace).expect("namespace");
        self.publish_raw(&topology.reports_queue(), &body).await;
    }

    /// Publishes raw bytes to `queue` through the default exchange.
    pub async fn publish_raw(&self, queue: &str, body: &[u8]) {
        let cancel = CancellationToken::new();
        let conn = tributary_common::broker::connect(AMQP_URL, "test-publisher", &cancel)
            .await
            .expect("connect");
        let ch = tributary_common::broker::confirm_channel(&conn)
            .await
            .expect("channel");
        tributary_common::broker::publish(&ch, "", queue, body, true)
            .await
            .expect("publish")
            .confirmed()
            .await
            .expect("confirmed");
        let _ = conn.close(200, "done".into()).await;
    }

    /// Messages in the namespace's dead-letter queue.
    pub async fn dead_letter_depth(&self) -> u32 {
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        let topology = Topology::new(&self.namespace).expect("namespace");
        let depth = ch
            .queue_declare(
                topology.dead_letter_queue().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        let _ = conn.close(200, "done".into()).await;
        depth
    }

    /// The dispatch token the relay last published for `id`, once it has.
    pub async fn published_token(&self, id: Uuid) -> tributary_common::job::DispatchToken {
        let (seq, attempt, nonce) = self
            .eventually("the job's task is published", Duration::from_secs(60), || async {
                sqlx::query_as::<_, (i32, i32, i64)>(
                    "select phase_seq, attempt, nonce from jobs where id = $1 and not dispatch_pending and nonce <> 0",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .expect("read token")
            })
            .await;
        tributary_common::job::DispatchToken {
            job_id: id,
            seq: seq as u32,
            attempt: attempt as u32,
            nonce: nonce as u64,
        }
    }

    /// Stops every process, deletes the namespace's queues and exchanges
    /// and drops the database.
    pub async fn shutdown(mut self) {
        for w in &mut self.workers {
            let _ = w.kill().await;
        }
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill().await;
        }
        self.pool.close().await;
        remove(&self.namespace, &self.database).await;
    }
}

/// Deletes `namespace`'s queues and exchanges and drops `database`: what a
/// cluster (or a `tributary demo --namespace --database` run) leaves.
pub async fn remove(namespace: &str, database: &str) {
    let cancel = CancellationToken::new();
    if let Ok(conn) = tributary_common::broker::connect(AMQP_URL, "test-cleanup", &cancel).await
        && let Ok(ch) = conn.create_channel().await
    {
        let topology = Topology::new(namespace).expect("namespace");
        let mut queues: Vec<String> = kinds().iter().map(|k| topology.task_queue(k)).collect();
        queues.extend([topology.reports_queue(), topology.dead_letter_queue()]);
        for q in queues {
            let _ = ch
                .queue_delete(q.into(), QueueDeleteOptions::default())
                .await;
        }
        for e in [
            topology.tasks_exchange(),
            topology.dead_letter_exchange(),
            topology.control_exchange(),
        ] {
            let _ = ch
                .exchange_delete(e.into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
    if let Ok(admin) = PgPool::connect(&format!("{PG_SERVER}/postgres")).await {
        let sql = format!("drop database if exists \"{database}\" with (force)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
        admin.close().await;
    }
}

fn signal(child: &Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status();
    }
}
