//! `tributary`: the command line. Talks to a coordinator's HTTP API
//! (`submit`, `status`, `watch`, `logs`, `why`, `jobs ls`, `cancel`,
//! `pause`, `resume`, `retry`), runs a local fleet (`demo`), and also is the
//! coordinator and the worker (`coordinator`, `worker`), so one binary is
//! enough on a laptop.
//!
//! Exit codes: 0; 1 for an error, or a job that failed (`submit --wait`,
//! `watch`); 2 for a job that was cancelled, or an unusable configuration
//! (`TRIBUTARY_CA_FILE`).

mod bench;
mod client;
mod demo;
mod ending;
mod fleet;
mod jobs;
mod logs;
mod watch;
mod why;

use std::time::Duration;

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
    /// Longest one request to the coordinator may take, connecting
    /// included (seconds).
    #[arg(long, global = true, env = "TRIBUTARY_CLI_TIMEOUT_SECS", default_value_t = client::DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..), hide_env_values = true)]
    timeout_secs: u64,
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
    /// Submit a job; prints its id (or, with --wait, its final state: exit
    /// 1 if it failed, 2 if it was cancelled).
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
    /// Follow a job until it ends over its event stream, with live bars
    /// (plain lines when stderr is not a terminal; exit 1 if it
    /// failed, 2 if it was cancelled).
    Watch {
        /// Job id.
        id: String,
    },
    /// Print a job's log, with UTC timestamps.
    Logs {
        /// Job id.
        id: String,
        /// Keep printing new lines until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Why a job is not progressing: the reason, then the details (open
    /// children, their queues and workers, stopped ancestors).
    Why {
        /// Job id.
        id: String,
        /// Text for people, or the API's JSON.
        #[arg(long, value_enum, default_value = "text")]
        output: why::Output,
    },
    /// Cancel a job and every open job below it; running phases are told
    /// to stop.
    Cancel {
        /// Job id.
        id: String,
        /// Why (kept as the job's error).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Pause a job and its subtree: no new phase starts; running phases
    /// finish.
    Pause {
        /// Job id.
        id: String,
    },
    /// Resume a paused job and its subtree.
    Resume {
        /// Job id.
        id: String,
    },
    /// Run a failed or cancelled job again, from the phase it ended in (or
    /// --phase), with a fresh attempt budget.
    Retry {
        /// Job id.
        id: String,
        /// The phase to run again.
        #[arg(long)]
        phase: Option<String>,
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
            tributary_coordinator::serve(settings).await.map(|()| 0)
        }
        Command::Worker(settings) => tributary_worker::settings::serve(settings)
            .await
            .map(|()| 0),
        Command::Demo(args) => demo::run(args).await.map(|()| 0),
        Command::Bench(args) => bench::run(args).await.map(|()| 0),
        command => {
            let token = cli.api_token.as_deref().filter(|t| !t.is_empty());
            let timeout = Duration::from_secs(cli.timeout_secs);
            let api =
                client::Api::build(&cli.coordinator_url, token, timeout).unwrap_or_else(|e| {
                    // An unusable CA file or token: a configuration error.
                    eprintln!("error: {e:#}");
                    std::process::exit(2)
                });
            run_client(&api, command).await
        }
    };
    match result {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(ending::FAILED);
        }
    }
}

/// The commands that talk to a coordinator's API; returns the exit code.
async fn run_client(api: &client::Api, command: Command) -> anyhow::Result<i32> {
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
        Command::Jobs(command) => jobs::run(api, command).await.map(|()| 0),
        Command::Status { id } => {
            let job = api.job(&id).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(0)
        }
        Command::Watch { id } => {
            let job = client::watch(api, &id).await?;
            Ok(ended(&job)?)
        }
        Command::Logs { id, follow } => logs::print(api, &id, follow).await.map(|()| 0),
        Command::Why { id, output } => why::run(api, &id, output).await.map(|()| 0),
        Command::Cancel { id, reason } => {
            let body = reason.map(|r| serde_json::json!({ "reason": r }));
            steer(api, &id, "cancel", body).await.map(|()| 0)
        }
        Command::Pause { id } => steer(api, &id, "pause", None).await.map(|()| 0),
        Command::Resume { id } => steer(api, &id, "resume", None).await.map(|()| 0),
        Command::Retry { id, phase } => {
            let body = phase.map(|p| serde_json::json!({ "phase": p }));
            steer(api, &id, "retry", body).await.map(|()| 0)
        }
        Command::Demo(_) | Command::Bench(_) | Command::Coordinator(_) | Command::Worker(_) => {
            anyhow::bail!("not an API command")
        }
    }
}

/// Sends a control action and prints where the job stands now.
async fn steer(
    api: &client::Api,
    id: &str,
    action: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let answer = api.steer(id, action, body.as_ref()).await?;
    let status = answer["status"].as_str().unwrap_or("unknown");
    if answer["changed"] == false {
        println!("{action}: job {id} is {status} already; nothing to do");
    } else {
        println!("{action}: job {id} is {status}");
    }
    Ok(())
}

async fn submit(
    api: &client::Api,
    kind: &str,
    input: &str,
    options: Option<&str>,
    idempotency_key: Option<&str>,
    wait: bool,
) -> anyhow::Result<i32> {
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
        ended(&job)
    } else {
        println!("{id}");
        Ok(0)
    }
}

/// Prints a job that ended and returns its exit code ([`ending`]).
fn ended(job: &serde_json::Value) -> anyhow::Result<i32> {
    println!("{}", serde_json::to_string_pretty(job)?);
    let (code, line) = ending::ending(job);
    if let Some(line) = line {
        eprintln!("{line}");
    }
    Ok(code)
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
