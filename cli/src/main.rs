//! `tributary`: the command line. Talks to a coordinator's HTTP API
//! (`submit`, `status`, `watch`, `logs`, `jobs ls`), runs a local fleet (`demo`), and
//! also is the coordinator and the worker (`coordinator`, `worker`), so
//! one binary is enough on a laptop.

mod bench;
mod client;
mod demo;
mod fleet;
mod jobs;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tributary_common::config::DEFAULT_LISTEN;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Tributary: fan-out / fan-in jobs over RabbitMQ and Postgres"
)]
struct Cli {
    /// The coordinator's HTTP API.
    #[arg(long, global = true, env = "TRIBUTARY_COORDINATOR_URL", default_value_t = format!("http://{DEFAULT_LISTEN}"), hide_env_values = true)]
    coordinator_url: String,
    /// Bearer token for the coordinator's API (prefer the environment: a
    /// flag shows in the process list).
    #[arg(
        long,
        global = true,
        env = "TRIBUTARY_API_TOKEN",
        hide_env_values = true
    )]
    api_token: Option<String>,
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
        /// Idempotency key: submitting again with the same key and request
        /// within 24 h returns the first job instead of making another.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Find jobs: list roots, a tree, or a job's children.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
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

/// `cmd` with every argument of every subcommand hiding its environment
/// value in `--help` (database and broker URLs carry passwords; tokens are
/// secrets), including the demo's, the bench's, the coordinator's and the
/// worker's.
fn hide_env_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| a.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

#[tokio::main]
async fn main() {
    let matches = hide_env_values(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Coordinator(settings) => {
            tributary_common::telemetry::init("tributary-coordinator");
            tributary_coordinator::serve(settings).await
        }
        Command::Worker(settings) => tributary_worker::settings::serve(settings).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        command => {
            let token = cli.api_token.as_deref();
            match client::Api::new(&cli.coordinator_url).with_token(token) {
                Ok(api) => run_client(&api, command).await,
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The commands that talk to a coordinator's API.
async fn run_client(api: &client::Api, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Submit {
            kind,
            input,
            options,
            wait,
            idempotency_key,
        } => {
            let key = idempotency_key.as_deref();
            submit(api, &kind, &input, options.as_deref(), key, wait).await
        }
        Command::Jobs(command) => jobs::run(api, command).await,
        Command::Status { id } => {
            let job = api.job(&id).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(())
        }
        Command::Watch { id } => {
            let job = client::watch(api, &id).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(())
        }
        Command::Logs { id } => api.logs(&id).await,
        Command::Demo(_) | Command::Bench(_) | Command::Coordinator(_) | Command::Worker(_) => {
            anyhow::bail!("not an API command")
        }
    }
}

async fn submit(
    api: &client::Api,
    kind: &str,
    input: &str,
    options: Option<&str>,
    idempotency_key: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let input: serde_json::Value = serde_json::from_str(input).context("--input is not JSON")?;
    let options: Option<serde_json::Value> = options
        .map(serde_json::from_str)
        .transpose()
        .context("--options is not JSON")?;
    let id = api
        .submit_once(kind, &input, options.as_ref(), idempotency_key)
        .await?;
    if wait {
        let job = client::watch(api, &id).await?;
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        println!("{id}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{Cli, hide_env_values};

    /// Every argument of every subcommand (the coordinator's and the
    /// worker's included) hides its environment value in `--help`.
    #[test]
    fn help_never_shows_environment_values() {
        fn check(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                if arg.get_env().is_some() {
                    assert!(
                        arg.is_hide_env_values_set(),
                        "{} --{} shows its environment value in --help",
                        cmd.get_name(),
                        arg.get_id()
                    );
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub);
            }
        }
        let mut cmd = hide_env_values(Cli::command());
        cmd.build();
        cmd.clone().debug_assert();
        check(&cmd);
    }
}
