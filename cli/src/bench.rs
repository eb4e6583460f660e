//! `tributary bench`: the benchmark harness. Each run starts a fresh fleet
//! (coordinator + W workers as processes, fresh database and queues),
//! submits one `bench.fanout` parent with N trivial children and a sum
//! phase, checks the sum, and measures; then it measures the raw broker
//! ceiling on the same machine: N persistent messages published with
//! pipelined confirms to a quorum queue and consumed with acks by W
//! consumers.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tributary_common::broker;
use tributary_common::config::{DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, DEFAULT_NAMESPACE};
use tributary_common::topology::Topology;

use crate::client::Api;
use crate::fleet::{Fleet, FleetOptions, database_of, with_database};

/// Flags of `tributary bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Children under the one parent.
    #[arg(long, default_value_t = 100_000)]
    n: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Runs; the table shows each and their median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Simulated CPU work per child, in microseconds.
    #[arg(long, default_value_t = 0)]
    child_work_us: u64,
    /// Phases each worker runs at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print one JSON object per run as a line (and the median last).
    #[arg(long)]
    json: bool,
    /// Postgres URL; the harness drops and recreates database `--database`
    /// on its server for every run.
    #[arg(long, env = "TRIBUTARY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
    /// The database every run drops and recreates: never the one
    /// `--database-url` names.
    #[arg(long, default_value = "tributary_bench")]
    database: String,
    /// The namespace every run deletes and recreates (queues and
    /// exchanges): never `tributary`, the default of real fleets.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// RabbitMQ URL.
    #[arg(long, env = "TRIBUTARY_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    amqp_url: String,
}

const KEYS: [&str; 11] = [
    "wall_ms",
    "children_per_s",
    "fanin_latency_ms",
    "child_p50_ms",
    "child_p99_ms",
    "coordinator_peak_rss_mb",
    "worker_peak_rss_mb",
    "pg_roundtrips_per_child",
    "broker_msgs_per_s",
    "ratio",
    "phases",
];

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // The workers refuse inputs over the bench kinds' caps: say so before
    // starting a fleet.
    use tributary_worker::kinds::bench::{MAX_CHILDREN, MAX_WORK_US};
    anyhow::ensure!(
        args.n <= MAX_CHILDREN.max(),
        "--n {} is over bench.fanout's cap of {} children",
        args.n,
        MAX_CHILDREN.max()
    );
    anyhow::ensure!(
        args.child_work_us <= MAX_WORK_US.max(),
        "--child-work-us {} is over bench.leaf's cap of {} µs",
        args.child_work_us,
        MAX_WORK_US.max()
    );
    // Each run drops the database and deletes the namespace's queues:
    // refuse the ones a real fleet uses by default.
    Topology::new(&args.namespace)?;
    if args.namespace == DEFAULT_NAMESPACE {
        bail!(
            "--namespace {DEFAULT_NAMESPACE} is the default of real fleets, and the bench deletes its queues: pick another"
        );
    }
    if database_of(&args.database_url) == Some(args.database.as_str()) {
        bail!(
            "--database {} is the database --database-url (TRIBUTARY_DATABASE_URL) names, and the bench drops it: pick another",
            args.database
        );
    }
    let mut results = Vec::new();
    for run in 1..=args.runs {
        eprintln!(
            "run {run}/{}: n = {}, workers = {}",
            args.runs, args.n, args.workers
        );
        let r = one_run(&args).await?;
        if args.json {
            println!("{r}");
        }
        results.push(r);
    }
    let median = median_of(&results, &args);
    if args.json {
        println!("{median}");
    } else {
        print_table(&results, &median);
    }
    Ok(())
}

async fn delete_namespace(amqp_url: &str, namespace: &str) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let conn = broker::connect(amqp_url, "tributary-bench-cleanup", &cancel).await?;
    let ch = conn.create_channel().await?;
    let t = Topology::new(namespace)?;
    // Every kind the workers serve has a queue to clear.
    let mut queues: Vec<String> = tributary_worker::kinds::builtin()
        .kinds()
        .iter()
        .map(|k| t.task_queue(k))
        .collect();
    queues.extend([
        t.reports_queue(),
        t.dead_letter_queue(),
        format!("{namespace}.ceiling"),
    ]);
    for q in queues {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// Peak resident set (VmHWM) of a process, in MiB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn metric(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("metric {name} missing"))
}

async fn one_run(args: &BenchArgs) -> anyhow::Result<Value> {
    let namespace = args.namespace.as_str();
    let database_url = with_database(&args.database_url, &args.database);
    tributary_coordinator::store::drop_database(&database_url)
        .await
        .context("recreating the bench database")?;
    delete_namespace(&args.amqp_url, namespace).await?;
    let fleet = Fleet::start(&FleetOptions {
        database_url,
        amqp_url: args.amqp_url.clone(),
        namespace: namespace.to_owned(),
        workers: args.workers,
        concurrency: args.concurrency,
        demo_root: None,
    })
    .await?;
    let result = measure_fleet(&fleet, args).await;
    let (coordinator, workers) = fleet.pids();
    let coordinator_rss = coordinator.map_or(0.0, peak_rss_mb);
    let worker_rss = workers.into_iter().map(peak_rss_mb).fold(0.0, f64::max);
    fleet.stop().await?;
    let mut r = result?;
    r["coordinator_peak_rss_mb"] = json!(round1(coordinator_rss));
    r["worker_peak_rss_mb"] = json!(round1(worker_rss));
    let broker = broker_ceiling(&args.amqp_url, namespace, args.n, args.workers).await?;
    r["broker_msgs_per_s"] = json!(broker.round());
    let cps = r["children_per_s"].as_f64().unwrap_or(0.0);
    r["ratio"] = json!(if broker > 0.0 {
        (cps / broker * 1000.0).round() / 1000.0
    } else {
        0.0
    });
    delete_namespace(&args.amqp_url, namespace).await?;
    Ok(r)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

async fn measure_fleet(fleet: &Fleet, args: &BenchArgs) -> anyhow::Result<Value> {
    let http = reqwest::Client::builder()
        .connect_timeout(crate::client::CONNECT_TIMEOUT)
        .timeout(crate::client::DEFAULT_TIMEOUT)
        .build()?;
    let api = Api::new(&fleet.url);
    let trips_before = metric(&http, &fleet.url, "tributary_pg_round_trips_total").await?;
    let input = json!({ "n": args.n, "work_us": args.child_work_us, "batch": 2000 });
    let id = api.submit("bench.fanout", &input, None).await?;
    let job = loop {
        let job = api.job(&id).await?;
        if job["terminal"].as_bool().unwrap_or(false) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if job["status"] != "completed" {
        bail!("bench job {id} ended {}: {}", job["status"], job["error"]);
    }
    let n = args.n;
    let expected_sum = n * n.saturating_sub(1) / 2;
    if job["output"]["sum"] != expected_sum || job["output"]["completed"] != n {
        bail!(
            "wrong result: {} (expected sum {expected_sum} over {n} children)",
            job["output"]
        );
    }
    let trips_after = metric(&http, &fleet.url, "tributary_pg_round_trips_total").await?;
    let timing: Value = http
        .get(format!("{}/v1/jobs/{id}/timing", fleet.url))
        .send()
        .await?
        .json()
        .await?;
    let wall_ms =
        job["finished_ms"].as_i64().unwrap_or(0) - job["created_ms"].as_i64().unwrap_or(0);
    let phases = job["phases"].as_array().cloned().unwrap_or_default();
    Ok(json!({
        "n": n,
        "workers": args.workers,
        "child_work_us": args.child_work_us,
        "job_id": id,
        "wall_ms": wall_ms,
        "children_per_s": (n as f64 / (wall_ms.max(1) as f64 / 1000.0)).round(),
        "fanin_latency_ms": timing["fanin_latency_ms"].as_f64().map(round1),
        "child_p50_ms": timing["child_p50_ms"].as_f64().map(round1),
        "child_p99_ms": timing["child_p99_ms"].as_f64().map(round1),
        "pg_roundtrips_per_child": ((trips_after - trips_before) / n.max(1) as f64 * 1000.0).round() / 1000.0,
        "phases": phases.len(),
    }))
}

/// Publishes `n` persistent messages with pipelined confirms to a quorum
/// queue while `consumers` consumers ack them; messages/s from the first
/// publish to the last ack.
async fn broker_ceiling(
    amqp_url: &str,
    namespace: &str,
    n: u64,
    consumers: usize,
) -> anyhow::Result<f64> {
    let cancel = CancellationToken::new();
    let queue = format!("{namespace}.ceiling");
    let conn = broker::connect(amqp_url, "tributary-bench-publish", &cancel).await?;
    let ch = broker::confirm_channel(&conn).await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        queue.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..consumers.max(1) {
        let share =
            n / consumers.max(1) as u64 + u64::from((i as u64) < n % consumers.max(1) as u64);
        let url = amqp_url.to_owned();
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let conn = broker::connect(&url, "tributary-bench-consume", &cancel).await?;
            let ch = conn.create_channel().await?;
            ch.basic_qos(256, BasicQosOptions::default()).await?;
            let mut consumer = ch
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut got = 0u64;
            while got < share {
                let Some(d) = consumer.next().await else {
                    break;
                };
                d?.ack(BasicAckOptions::default()).await?;
                got += 1;
            }
            let _ = conn.close(200, "done".into()).await;
            anyhow::Ok(())
        }));
    }
    // A body the size of a small task.
    let body = vec![0x5au8; 160];
    let mut window = Vec::with_capacity(1000);
    for _ in 0..n {
        window.push(broker::publish(&ch, "", &queue, &body, true).await?);
        if window.len() == 1000 {
            for p in window.drain(..) {
                p.confirmed().await?;
            }
        }
    }
    for p in window.drain(..) {
        p.confirmed().await?;
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = conn.close(200, "done".into()).await;
    Ok(n as f64 / elapsed.max(1e-9))
}

fn median_of(results: &[Value], args: &BenchArgs) -> Value {
    let mut m = json!({ "n": args.n, "workers": args.workers, "child_work_us": args.child_work_us, "runs": results.len(), "median": true });
    for key in KEYS {
        let mut xs: Vec<f64> = results.iter().filter_map(|r| r[key].as_f64()).collect();
        xs.sort_by(f64::total_cmp);
        if !xs.is_empty() {
            m[key] = json!(xs[xs.len() / 2]);
        }
    }
    m
}

fn print_table(results: &[Value], median: &Value) {
    let cols = [
        ("wall_ms", "wall ms"),
        ("children_per_s", "children/s"),
        ("fanin_latency_ms", "fan-in ms"),
        ("child_p50_ms", "child p50"),
        ("child_p99_ms", "child p99"),
        ("coordinator_peak_rss_mb", "coord MB"),
        ("worker_peak_rss_mb", "worker MB"),
        ("pg_roundtrips_per_child", "pg/child"),
        ("broker_msgs_per_s", "broker msg/s"),
        ("ratio", "ratio"),
    ];
    print!("{:<8}", "run");
    for (_, h) in cols {
        print!("{h:>13}");
    }
    println!();
    let row = |label: &str, r: &Value| {
        print!("{label:<8}");
        for (k, _) in cols {
            print!(
                "{:>13}",
                r[k].as_f64().map_or("-".to_owned(), |v| format!("{v}"))
            );
        }
        println!();
    };
    for (i, r) in results.iter().enumerate() {
        row(&format!("{}", i + 1), r);
    }
    row("median", median);
}
