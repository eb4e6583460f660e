//! `tributary demo`: a local fleet runs the word-count job (or the `du`
//! job) with live progress, prints the result and the wall time, and stops.
//! With `--ui` it prints the dashboard's URL of the job and keeps the fleet
//! up after the job until Ctrl-C.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tributary_common::config::{DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL};

use crate::client::{self, Api};
use crate::fleet::{Fleet, FleetOptions, with_database};

#[derive(Clone, Copy, ValueEnum)]
pub enum Which {
    /// Count words over a corpus: ingest, one child per chunk, aggregate.
    Wordcount,
    /// Sizes and counts of a directory tree, one child per subdirectory.
    Du,
}

/// Flags of `tributary demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Which demo.
    #[arg(value_enum, default_value = "wordcount")]
    which: Which,
    /// A directory to read (default for wordcount: a generated corpus;
    /// required for du).
    #[arg(long)]
    path: Option<String>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Postgres URL; the fleet uses database `--database` on its server.
    #[arg(long, env = "TRIBUTARY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
    /// The fleet's database (created if missing).
    #[arg(long, default_value = "tributary_demo")]
    database: String,
    /// The fleet's namespace (prefix of its queues and exchanges).
    #[arg(long, default_value = "demo")]
    namespace: String,
    /// RabbitMQ URL.
    #[arg(long, env = "TRIBUTARY_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    amqp_url: String,
    /// Print the dashboard's URL (the job's page) before the job starts,
    /// and keep the fleet up after it ends until Ctrl-C.
    #[arg(long)]
    ui: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The workers read only under their demo root: with --path it is that
    // directory; the generated corpus is made in memory and needs none.
    let root = args.path.as_deref().map(absolute).transpose()?;
    let (kind, input) = match (args.which, &root) {
        (Which::Wordcount, Some(p)) => ("demo.wordcount", json!({ "path": p })),
        (Which::Wordcount, None) => (
            "demo.wordcount",
            json!({ "generate": { "files": 200, "words_per_file": 5000, "vocabulary": 20000, "seed": 42 } }),
        ),
        (Which::Du, Some(p)) => ("demo.du", json!({ "path": p })),
        (Which::Du, None) => anyhow::bail!("the du demo needs --path DIR"),
    };
    tributary_common::topology::Topology::new(&args.namespace)?;
    eprintln!("starting a coordinator and {} workers…", args.workers);
    let fleet = Fleet::start(&FleetOptions {
        database_url: with_database(&args.database_url, &args.database),
        amqp_url: args.amqp_url.clone(),
        namespace: args.namespace.clone(),
        workers: args.workers,
        concurrency: 4,
        demo_root: root.as_ref().map(PathBuf::from),
    })
    .await?;
    if args.ui {
        eprintln!("dashboard: {}/ui/", fleet.url);
    }
    let result = run_job(&fleet, kind, &input, args.ui).await;
    if args.ui {
        match &result {
            Ok((id, job, _)) => eprintln!(
                "job {id} ended {}; the dashboard stays up at {}/ui/#/job/{id}: press Ctrl-C to stop the fleet",
                job["status"], fleet.url
            ),
            Err(e) => eprintln!(
                "{e:#}; the dashboard stays up at {}/ui/: press Ctrl-C to stop the fleet",
                fleet.url
            ),
        }
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    eprintln!("stopping the fleet (logs in {})", fleet.log_dir.display());
    fleet.stop().await?;
    let (id, job, wall_ms) = result?;
    if job["status"] != "completed" {
        anyhow::bail!(
            "job {id} ended {}: {}",
            job["status"],
            job["error"].as_str().unwrap_or("no error recorded")
        );
    }
    let mut output = job["output"].clone();
    if args.json {
        if let Value::Object(map) = &mut output {
            let mut out = serde_json::Map::new();
            out.insert("job_id".into(), json!(id));
            out.extend(map.clone());
            out.insert("wall_ms".into(), json!(wall_ms));
            println!("{}", Value::Object(out));
        }
        return Ok(());
    }
    print_human(args.which, &id, &output, wall_ms);
    Ok(())
}

fn absolute(p: &str) -> anyhow::Result<String> {
    let path = std::fs::canonicalize(p).with_context(|| format!("cannot open {p}"))?;
    anyhow::ensure!(path.is_dir(), "{} is not a directory", path.display());
    Ok(path.to_string_lossy().into_owned())
}

async fn run_job(
    fleet: &Fleet,
    kind: &str,
    input: &Value,
    ui: bool,
) -> anyhow::Result<(String, Value, u128)> {
    let api = Api::new(&fleet.url);
    let started = Instant::now();
    let id = api.submit(kind, input, None).await?;
    eprintln!("submitted {kind} job {id}");
    if ui {
        // Printed on stdout too, alone on its line, for scripts to open.
        println!("{}/ui/#/job/{id}", fleet.url);
    }
    let job = client::watch(&api, &id).await?;
    Ok((id, job, started.elapsed().as_millis()))
}

fn print_human(which: Which, id: &str, out: &Value, wall_ms: u128) {
    println!("job {id} completed in {wall_ms} ms");
    match which {
        Which::Wordcount => {
            println!(
                "{} files, {} words, {} distinct, {} children",
                out["files"], out["total_words"], out["distinct_words"], out["children"]
            );
            println!("top words:");
            for pair in out["top"].as_array().into_iter().flatten() {
                println!(
                    "  {:>10}  {}",
                    pair[1].as_u64().unwrap_or(0),
                    pair[0].as_str().unwrap_or("")
                );
            }
        }
        Which::Du => {
            println!(
                "{}: {} bytes in {} files, {} directories, {} levels deep",
                out["path"].as_str().unwrap_or(""),
                out["bytes"],
                out["files"],
                out["dirs"],
                out["depth"]
            );
        }
    }
}
