//! `tributary`: the command line. Talks to a coordinator's HTTP API
//! (`submit`, `status`, `watch`, `logs`), runs a local fleet (`demo`), and
//! also is the coordinator and the worker (`coordinator`, `worker`), so
//! one binary is enough on a laptop.

mod bench;
mod client;
mod demo;
mod fleet;

use clap::{Parser, Subcommand};
use tributary_common::config::DEFAULT_LISTEN;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Tributary: fan-out / fan-in jobs over RabbitMQ and Postgres"
)]
struct Cli {
    /// The coordinator's HTTP API.
    #[arg(long, global = true, env = "TRIBUTARY_COORDINATOR_URL", default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    coordinator_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local coordinator and two workers, run the word-count demo
    /// (or the `du` demo), show live progress, print the result, stop.
    Demo(demo::DemoArgs),
    /// Benchmark: a local fleet runs one parent with N trivial children and
    /// a sum phase; prints wall time, children/s, latencies, RSS, Postgres
    /// round trips per child, and the raw broker ceiling.
    Bench(bench::BenchArgs),
    /// Submit a job; prints its id (or, with --wait, its final state).
    Submit {
        /// Job kind, e.g. demo.wordcount.
        kind: String,
        /// Input as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// Options as JSON, e.g. '{"max_attempts": 5}'.
        #[arg(long)]
        options: Option<String>,
        /// Wait for the job to end, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Print a job's status as JSON.
    Status {
        /// Job id.
        id: String,
    },
    /// Follow a job until it ends, with a live progress line.
    Watch {
        /// Job id.
        id: String,
    },
    /// Print a job's log.
    Logs {
        /// Job id.
        id: String,
    },
    /// Run a coordinator (same flags and variables as tributary-coordinator).
    Coordinator(tributary_coordinator::Settings),
    /// Run a worker with the built-in kinds (same flags as tributary-worker).
    Worker(tributary_worker::settings::Settings),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Coordinator(settings) => {
            tributary_common::telemetry::init("tributary-coordinator");
            tributary_coordinator::serve(settings).await
        }
        Command::Worker(settings) => tributary_worker::settings::serve(settings).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Submit {
            kind,
            input,
            options,
            wait,
        } => {
            let api = client::Api::new(&cli.coordinator_url);
            submit(&api, &kind, &input, options.as_deref(), wait).await
        }
        Command::Status { id } => {
            let api = client::Api::new(&cli.coordinator_url);
            api.job(&id)
                .await
                .map(|j| println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default()))
        }
        Command::Watch { id } => {
            let api = client::Api::new(&cli.coordinator_url);
            client::watch(&api, &id)
                .await
                .map(|j| println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default()))
        }
        Command::Logs { id } => {
            let api = client::Api::new(&cli.coordinator_url);
            api.logs(&id).await
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn submit(
    api: &client::Api,
    kind: &str,
    input: &str,
    options: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let input: serde_json::Value = serde_json::from_str(input).context("--input is not JSON")?;
    let options: Option<serde_json::Value> = options
        .map(serde_json::from_str)
        .transpose()
        .context("--options is not JSON")?;
    let id = api.submit(kind, &input, options.as_ref()).await?;
    if wait {
        let job = client::watch(api, &id).await?;
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        println!("{id}");
    }
    Ok(())
}
