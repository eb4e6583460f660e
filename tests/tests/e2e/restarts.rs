//! Real restarts of the shared RabbitMQ and Postgres servers mid-run. They
//! would disturb every other test, so they are ignored in the parallel run
//! and `scripts/test` runs them afterwards, one at a time. A guard restores
//! the server even when the test fails.

use std::time::{Duration, Instant};

use serde_json::json;
use tributary_tests::TestCluster;
use uuid::Uuid;

fn run(cmd: &str) {
    let status = std::process::Command::new("bash")
        .args(["-c", cmd])
        .status()
        .expect("bash");
    assert!(status.success(), "{cmd} failed");
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
        .is_ok()
}

/// Starts the server again on drop, whatever happened.
struct Restore(&'static str, u16);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args(["-c", self.0])
            .status();
        let started = Instant::now();
        while !port_open(self.1) && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const RABBIT_START: &str = "rabbitmqctl -q start_app";
const PG_START: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start 2>/dev/null || true";

async fn wait_progress(c: &TestCluster, id: Uuid, at_least: i64) {
    let started = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar("select children_completed from jobs where id = $1")
            .bind(id)
            .fetch_one(&c.pool)
            .await
            .unwrap_or(0);
        if done >= at_least {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "children did not progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "exclusive: restarts the shared RabbitMQ; scripts/test runs it alone"]
async fn restart_rabbitmq_mid_run() {
    let c = TestCluster::start().await;
    let n = 3000u64;
    let id = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 250, "sleep_ms": 5 }),
        )
        .await;
    wait_progress(&c, id, 300).await;
    {
        let _restore = Restore(RABBIT_START, 5672);
        run("rabbitmqctl -q stop_app");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(port_open(5672), "RabbitMQ is back");
    let job = c.wait_for(id, "completed", Duration::from_secs(300)).await;
    assert_eq!(job["output"]["sum"], n * (n - 1) / 2);
    assert_eq!(job["output"]["counted"], json!([n, n, 0]));
    c.assert_tree_exact(id).await;
    assert_eq!(c.task_queue_depth().await, 0);
    println!(
        "RELIABILITY scenario=rabbitmq-restart jobs={} kills=1 fenced={} lost=0",
        n + 1,
        c.fenced().await
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "exclusive: restarts the shared Postgres; scripts/test runs it alone"]
async fn restart_postgres_mid_run() {
    let c = TestCluster::start().await;
    let n = 3000u64;
    let id = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 250, "sleep_ms": 5 }),
        )
        .await;
    wait_progress(&c, id, 300).await;
    {
        let _restore = Restore(PG_START, 5432);
        run(
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main stop -m fast",
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(port_open(5432), "Postgres is back");
    // The harness's own pool reconnects lazily.
    let job = c.wait_for(id, "completed", Duration::from_secs(300)).await;
    assert_eq!(job["output"]["sum"], n * (n - 1) / 2);
    assert_eq!(job["output"]["counted"], json!([n, n, 0]));
    c.assert_tree_exact(id).await;
    assert_eq!(c.task_queue_depth().await, 0);
    println!(
        "RELIABILITY scenario=postgres-restart jobs={} kills=1 fenced={} lost=0",
        n + 1,
        c.fenced().await
    );
    c.shutdown().await;
}
