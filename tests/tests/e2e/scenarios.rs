//! Seeded fault scenarios over large fan-outs: repeated worker kills,
//! coordinator kills at random points, two coordinators with one killed,
//! and the coordinator down while a fan-in completes. Each checks the
//! invariants (every job terminal, counters equal to the children, each
//! phase applied once, the exact sum, no task left queued) and prints one
//! `RELIABILITY` line that `scripts/soak` collects into RELIABILITY.md.
//!
//! `TRIBUTARY_SOAK=1` scales them up (more kills, larger fan-outs);
//! `TRIBUTARY_SEED=n` replays a run.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::Child;
use tributary_tests::{ClusterOptions, TestCluster};
use uuid::Uuid;

fn soak() -> bool {
    std::env::var_os("TRIBUTARY_SOAK").is_some()
}

/// A small seeded generator (xorshift64*): runs are replayable by seed.
struct Rng(u64);

impl Rng {
    fn from_env(name: &str) -> Self {
        let seed = std::env::var("TRIBUTARY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_261_122u64);
        eprintln!("{name}: seed {seed}");
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn check(c: &TestCluster, name: &str, id: Uuid, n: u64, kills: u32, timeout: Duration) {
    c.assert_fanout_exact(id, n, timeout).await;
    c.report(name, kills).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_killed_again_and_again_during_a_large_fan_out() {
    let mut rng = Rng::from_env("worker kills");
    let (n, kills) = if soak() {
        (20_000u64, 100u32)
    } else {
        (5000, 20)
    };
    let mut c = TestCluster::start_with(ClusterOptions {
        workers: 3,
        concurrency: 16,
        ..Default::default()
    })
    .await;
    let id = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 500, "sleep_ms": 80 }),
        )
        .await;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
        let victim = rng.below(c.workers.len() as u64) as usize;
        c.kill_worker(victim).await;
        c.start_worker().await;
    }
    check(&c, "worker-sigkill", id, n, kills, Duration::from_secs(600)).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_killed_at_random_points_loses_nothing() {
    let mut rng = Rng::from_env("coordinator kills");
    let (n, kills) = if soak() {
        (20_000u64, 20u32)
    } else {
        (5000, 5)
    };
    let mut c = TestCluster::start().await;
    let id = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 250, "sleep_ms": 5 }),
        )
        .await;
    for k in 0..kills {
        // The first kill lands while children are being inserted and
        // dispatched; later ones while batches of outcomes are applied.
        let wait = if k == 0 {
            rng.below(300)
        } else {
            300 + rng.below(1200)
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        c.kill_coordinator().await;
        tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
        c.start_coordinator().await;
    }
    check(
        &c,
        "coordinator-sigkill",
        id,
        n,
        kills,
        Duration::from_secs(600),
    )
    .await;
    c.shutdown().await;
}

/// Starts a second coordinator on the cluster's database and namespace.
async fn second_coordinator(c: &TestCluster) -> Child {
    c.extra_coordinator().await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn two_coordinators_share_the_work_and_one_is_killed() {
    let n = if soak() { 20_000u64 } else { 5000 };
    let c = TestCluster::start().await;
    let mut second = second_coordinator(&c).await;
    let id = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 250, "sleep_ms": 5 }),
        )
        .await;
    c.wait_children_done(id, (n / 3) as i64).await;
    second.kill().await.expect("kill the second coordinator");
    check(
        &c,
        "two-coordinators-one-killed",
        id,
        n,
        1,
        Duration::from_secs(600),
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_in_that_completes_while_the_coordinator_is_down_moves_on_after_restart() {
    let mut c = TestCluster::start().await;
    // With children: they all start, the coordinator dies, they all finish.
    let with = c
        .submit("bench.fanout", json!({ "n": 40, "sleep_ms": 1500 }))
        .await;
    // Without children: the parent seals an empty fan-out while the
    // coordinator is down.
    let without = c
        .submit("bench.fanout", json!({ "n": 0, "pause_ms": 1500 }))
        .await;
    let started = Instant::now();
    loop {
        let dispatched: i64 = sqlx::query_scalar(
            "select count(*) from jobs where (parent_id = $1 or id = $2) and not dispatch_pending",
        )
        .bind(with)
        .bind(without)
        .fetch_one(&c.pool)
        .await
        .expect("count");
        if dispatched == 41 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "children were not dispatched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill_coordinator().await;
    // Every child (and the empty fan-out's seal) reports while it is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Nothing was applied meanwhile: the parent still waits, its children
    // still count as open in Postgres, their outcomes sit in the queue.
    let (status, done): (String, i64) =
        sqlx::query_as("select status, children_completed from jobs where id = $1")
            .bind(with)
            .fetch_one(&c.pool)
            .await
            .expect("parent");
    assert_eq!(status, "waiting");
    assert!(
        done < 40,
        "the children finished while the coordinator was down"
    );
    c.start_coordinator().await;
    let job = c.wait_for(with, "completed", Duration::from_secs(60)).await;
    assert_eq!(job["output"]["sum"], 39 * 40 / 2);
    let job = c
        .wait_for(without, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(job["output"]["counted"], json!([0, 0, 0]));
    c.assert_tree_exact(with).await;
    c.assert_tree_exact(without).await;
    println!(
        "RELIABILITY scenario=fan-in-while-coordinator-down jobs=43 kills=1 fenced={} lost=0",
        c.fenced().await
    );
    c.shutdown().await;
}
