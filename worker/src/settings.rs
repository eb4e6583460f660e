//! Configuration of the `tributary-worker` binary: environment variables,
//! overridden by flags. `--help` never shows environment values
//! (`hide_env_values`): the URLs carry passwords and the tokens are secrets.

use std::time::Duration;

use clap::Parser;
use tributary_common::config::{DEFAULT_AMQP_URL, DEFAULT_LISTEN, DEFAULT_NAMESPACE};

use crate::worker::WorkerSettings;

pub use tributary_common::token::Token as BearerToken;

/// Flags and variables of the worker binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tributary-worker",
    version,
    about = "Tributary worker: runs job phases"
)]
pub struct Settings {
    /// RabbitMQ URL.
    #[arg(long, env = "TRIBUTARY_AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true)]
    pub amqp_url: String,
    /// Prefix of every queue and exchange.
    #[arg(long, env = "TRIBUTARY_NAMESPACE", default_value = DEFAULT_NAMESPACE, hide_env_values = true)]
    pub namespace: String,
    /// The coordinator's HTTP API.
    #[arg(long, env = "TRIBUTARY_COORDINATOR_URL", default_value_t = format!("http://{DEFAULT_LISTEN}"), hide_env_values = true)]
    pub coordinator_url: String,
    /// Phases run at once.
    #[arg(
        long,
        env = "TRIBUTARY_CONCURRENCY",
        default_value_t = 32,
        hide_env_values = true
    )]
    pub concurrency: usize,
    /// Seconds in-flight phases may run on after SIGTERM.
    #[arg(
        long,
        env = "TRIBUTARY_GRACE_SECS",
        default_value_t = 30,
        hide_env_values = true
    )]
    pub grace_secs: u64,
    /// Seconds between heartbeats of a running phase (its lease is 3x this).
    #[arg(
        long,
        env = "TRIBUTARY_HEARTBEAT_SECS",
        default_value_t = 10,
        hide_env_values = true
    )]
    pub heartbeat_secs: u64,
    /// Seconds before a long phase's task message is acked early (its lease
    /// then owns recovery); under RabbitMQ's 30-minute consumer timeout.
    #[arg(
        long,
        env = "TRIBUTARY_ACK_AFTER_SECS",
        default_value_t = 300,
        hide_env_values = true
    )]
    pub ack_after_secs: u64,
    /// Fault injection for tests: publish every report twice.
    #[arg(
        long,
        env = "TRIBUTARY_FAULT_DUPLICATE_REPORTS",
        default_value_t = false,
        hide_env_values = true
    )]
    pub duplicate_reports: bool,
    /// Token for the coordinator's API, used when no read token is set.
    #[arg(long, env = "TRIBUTARY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<BearerToken>,
    /// Read-only token for the coordinator's API (preferred: a worker only
    /// reads children results).
    #[arg(long, env = "TRIBUTARY_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<BearerToken>,
    /// Print the served kinds and exit.
    #[arg(long)]
    pub list_kinds: bool,
}

impl Settings {
    /// The runtime settings.
    pub fn worker(&self) -> WorkerSettings {
        WorkerSettings {
            amqp_url: self.amqp_url.clone(),
            namespace: self.namespace.clone(),
            coordinator_url: self.coordinator_url.clone(),
            concurrency: self.concurrency,
            grace: Duration::from_secs(self.grace_secs),
            duplicate_reports: self.duplicate_reports,
            heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)),
            ack_after: Duration::from_secs(self.ack_after_secs.max(1)),
            api_token: self.read_token.clone().or_else(|| self.api_token.clone()),
        }
    }
}

/// Runs a worker process serving the built-in kinds until SIGTERM or
/// Ctrl-C (or, with `--list-kinds`, prints them).
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let registry = crate::kinds::builtin();
    if settings.list_kinds {
        for kind in registry.kinds() {
            println!("{kind}");
        }
        return Ok(());
    }
    tributary_common::telemetry::init("tributary-worker");
    let worker = crate::Worker::new(registry, settings.worker())?;
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(tributary_common::shutdown::cancel_on_signal(cancel.clone()));
    worker.run(cancel).await;
    tracing::info!("worker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_token_wins_and_neither_is_printed() {
        let s = Settings::try_parse_from([
            "tributary-worker",
            "--api-token",
            "s3cret-api",
            "--read-token",
            "s3cret-read",
        ])
        .expect("parse");
        assert!(!format!("{s:?}").contains("s3cret"));
        let w = s.worker();
        assert!(!format!("{w:?}").contains("s3cret"));
        assert_eq!(
            w.api_token.as_ref().map(BearerToken::expose),
            Some("s3cret-read")
        );
        let s = Settings::try_parse_from(["tributary-worker", "--api-token", "s3cret-api"])
            .expect("parse");
        assert_eq!(
            s.worker().api_token.as_ref().map(BearerToken::expose),
            Some("s3cret-api")
        );
        // A bad value parses (so the parser never echoes it) and is
        // refused by the check, whose message does not hold it.
        let bad = Settings::try_parse_from(["tributary-worker", "--read-token", "se cret"])
            .expect("parse");
        let err = bad.worker().api_token.map(|t| t.check()).expect("a token");
        assert!(err.is_err_and(|e| !e.to_string().contains("se cret")));
    }
}
