//! Chaos: the links to RabbitMQ and Postgres fail under a running fan-out,
//! through a [`FaultProxy`] between the processes and the server. Every
//! scenario asserts the exact result: the sum and the counters, the tree's
//! invariants, and no task left in a queue once the duplicates that
//! at-least-once dispatch may leave there have drained (fenced, changing
//! nothing).
//!
//! The timing of the faults is drawn from a seeded generator: set
//! `CHAOS_SEED` to replay a run (each test prints its seed).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tributary_tests::proxy::FaultProxy;
use tributary_tests::{ClusterOptions, TestCluster};
use uuid::Uuid;

const RABBITMQ: &str = "127.0.0.1:5672";
const POSTGRES: &str = "127.0.0.1:5432";
/// Children of each run.
const N: u64 = 2000;
/// The AMQP connections of a healthy cluster with two workers, by the
/// connection name each process gives RabbitMQ: the coordinator's relay
/// and applier, and a publish and a consume connection per worker.
const AMQP_PEERS: [(&str, usize); 4] = [
    ("tributary-coordinator-relay", 1),
    ("tributary-coordinator-applier", 1),
    ("tributary-worker-publish", 2),
    ("tributary-worker-consume", 2),
];
const AMQP_CONNECTIONS: usize = 6;

fn server(addr: &str) -> SocketAddr {
    addr.parse().expect("a socket address")
}

/// A small seeded generator (splitmix64), so fault timings replay.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Self {
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x7472_6962_7574_6172);
        eprintln!("{test}: CHAOS_SEED={seed}");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `[lo, hi]` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

fn amqp_through(proxy: &FaultProxy, query: &str) -> String {
    format!("amqp://guest:guest@{}/%2f{query}", proxy.addr())
}

async fn children_completed(c: &TestCluster, id: Uuid) -> i64 {
    sqlx::query_scalar("select children_completed from jobs where id = $1")
        .bind(id)
        .fetch_one(&c.pool)
        .await
        .expect("read the parent")
}

async fn is_open(c: &TestCluster, id: Uuid) -> bool {
    let status: String = sqlx::query_scalar("select status from jobs where id = $1")
        .bind(id)
        .fetch_one(&c.pool)
        .await
        .expect("read the parent");
    !matches!(status.as_str(), "completed" | "failed" | "cancelled")
}

/// Waits until the parent counts `at_least` completed children.
async fn wait_children(c: &TestCluster, id: Uuid, at_least: i64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let done = children_completed(c, id).await;
        if done >= at_least {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "only {done} children completed after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every process holds its AMQP connections through the proxy
/// again; names the ones that do not.
async fn wait_reconnected(proxy: &FaultProxy) {
    let timeout = Duration::from_secs(30);
    let started = Instant::now();
    loop {
        let missing: Vec<String> = AMQP_PEERS
            .iter()
            .filter_map(|&(name, want)| {
                let got = proxy.open_matching(name.as_bytes());
                (got < want).then(|| format!("{name} ({got} of {want})"))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "not reconnected to RabbitMQ within {timeout:?}: {}",
            missing.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fan_out() -> serde_json::Value {
    json!({ "n": N, "batch": 250, "sleep_ms": 50 })
}

/// The run completed with the exact result and left nothing behind.
///
/// Dispatch is at-least-once: a fault between the relay's publish and its
/// commit publishes the same tasks again, and those duplicates may still be
/// queued when the run completes. They must drain (each one runs and its
/// reports are fenced) without changing anything.
async fn assert_exact(c: &TestCluster, id: Uuid) {
    let job = c.wait_for(id, "completed", Duration::from_secs(180)).await;
    assert_eq!(job["output"]["sum"], N * (N - 1) / 2, "{job}");
    assert_eq!(job["output"]["completed"], N, "{job}");
    assert_eq!(job["output"]["failed"], 0, "{job}");
    assert_eq!(job["output"]["counted"], json!([N, N, 0]), "{job}");
    c.assert_tree_exact(id).await;
    let left = c.task_queue_depth().await;
    let started = Instant::now();
    let mut depth = left;
    while depth > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{depth} tasks still queued 60 s after the run completed ({left} at completion)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        depth = c.task_queue_depth().await;
    }
    eprintln!(
        "{left} duplicate tasks queued at completion, drained in {:?}; {} reports fenced",
        started.elapsed(),
        c.fenced().await
    );
    let after = c.job(id).await;
    assert_eq!(after["status"], "completed");
    assert_eq!(
        after["output"], job["output"],
        "duplicates changed the output"
    );
    assert_eq!(
        after["children"], job["children"],
        "duplicates changed the counts"
    );
    c.assert_tree_exact(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_connections_cut_repeatedly_mid_fan_out_lose_nothing() {
    let mut rng = Rng::new("broker cuts");
    let proxy = FaultProxy::start(server(RABBITMQ));
    let c = TestCluster::start_with(ClusterOptions {
        concurrency: 8,
        amqp_url: Some(amqp_through(&proxy, "")),
        ..Default::default()
    })
    .await;
    // The coordinator's relay and applier connect after it listens.
    wait_reconnected(&proxy).await;
    let id = c.submit("bench.fanout", fan_out()).await;
    wait_children(&c, id, 50, Duration::from_secs(60)).await;
    let mut cuts = 0u32;
    while cuts < 4 && is_open(&c, id).await {
        proxy.cut();
        cuts += 1;
        // Every process reconnects (and redeclares its topology) before
        // the next cut.
        wait_reconnected(&proxy).await;
        tokio::time::sleep(rng.millis(700, 1300)).await;
    }
    assert!(cuts >= 3, "the run ended after {cuts} cuts: make it longer");
    assert!(proxy.accepted() as usize >= AMQP_CONNECTIONS * (cuts as usize + 1));
    assert_exact(&c, id).await;
    c.report("chaos_broker_cuts", cuts).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_link_silent_past_the_heartbeat_loses_nothing() {
    let mut rng = Rng::new("broker stall");
    let proxy = FaultProxy::start(server(RABBITMQ));
    // A 2 s heartbeat: both ends give up on a link silent for about 4 s.
    let c = TestCluster::start_with(ClusterOptions {
        concurrency: 8,
        amqp_url: Some(amqp_through(&proxy, "?heartbeat=2")),
        ..Default::default()
    })
    .await;
    wait_reconnected(&proxy).await;
    let id = c.submit("bench.fanout", fan_out()).await;
    wait_children(&c, id, 50, Duration::from_secs(60)).await;
    let accepted = proxy.accepted();
    proxy.stall();
    // Nothing reaches the applier while the link is silent: once the batch
    // in hand is applied, the count stands still.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen = children_completed(&c, id).await;
    tokio::time::sleep(rng.millis(5000, 6000)).await;
    assert_eq!(
        children_completed(&c, id).await,
        frozen,
        "reports were applied over a stalled link"
    );
    assert!(is_open(&c, id).await, "the run ended during the stall");
    proxy.resume();
    wait_reconnected(&proxy).await;
    assert!(
        proxy.accepted() >= accepted + AMQP_CONNECTIONS as u64,
        "the processes did not reconnect"
    );
    assert_exact(&c, id).await;
    c.report("chaos_broker_stall", 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_connections_cut_repeatedly_mid_fan_out_lose_nothing() {
    let mut rng = Rng::new("postgres cuts");
    let proxy = FaultProxy::start(server(POSTGRES));
    let c = TestCluster::start_with(ClusterOptions {
        concurrency: 8,
        pg_server: Some(format!("postgres://postgres@{}", proxy.addr())),
        ..Default::default()
    })
    .await;
    let id = c.submit("bench.fanout", fan_out()).await;
    wait_children(&c, id, 50, Duration::from_secs(60)).await;
    let mut cuts = 0u32;
    while cuts < 4 && is_open(&c, id).await {
        let accepted = proxy.accepted();
        proxy.cut();
        cuts += 1;
        tokio::time::sleep(rng.millis(700, 1300)).await;
        // The coordinator's pool opened new connections in the meantime.
        let started = Instant::now();
        while proxy.accepted() == accepted && is_open(&c, id).await {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the coordinator did not reconnect to Postgres"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(cuts >= 3, "the run ended after {cuts} cuts: make it longer");
    assert_exact(&c, id).await;
    c.report("chaos_postgres_cuts", cuts).await;
    c.shutdown().await;
}
