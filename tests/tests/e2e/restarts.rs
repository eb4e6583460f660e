//! Real restarts of the shared RabbitMQ and Postgres servers mid-run. They
//! would disturb every other test, so they are ignored in the parallel run
//! and `scripts/test` runs them afterwards, one at a time. A guard restores
//! the server even when the test fails.

use std::time::{Duration, Instant};

use serde_json::json;
use tributary_tests::TestCluster;

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

/// Runs a 3,000-child fan-out, stops a server with `stop` once 300
/// children are done, starts it again with `start` after 3 s, and checks
/// the run completes exactly.
async fn survive(name: &str, stop: &str, start: &'static str, port: u16) {
    let c = TestCluster::start().await;
    let n = 3000u64;
    let id = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 250, "sleep_ms": 5 }),
        )
        .await;
    c.wait_children_done(id, 300).await;
    {
        let _restore = Restore(start, port);
        run(stop);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(port_open(port), "the server is back");
    c.assert_fanout_exact(id, n, Duration::from_secs(300)).await;
    c.report(name, 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "exclusive: restarts the shared RabbitMQ; scripts/test runs it alone"]
async fn restart_rabbitmq_mid_run() {
    survive(
        "rabbitmq-restart",
        "rabbitmqctl -q stop_app",
        RABBIT_START,
        5672,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "exclusive: restarts the shared Postgres; scripts/test runs it alone"]
async fn restart_postgres_mid_run() {
    let stop = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main stop -m fast";
    survive("postgres-restart", stop, PG_START, 5432).await;
}
