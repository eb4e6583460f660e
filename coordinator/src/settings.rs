//! Coordinator configuration: environment variables, overridden by flags.
//!
//! Every argument hides its environment value in `--help`
//! (`hide_env_values`): the URLs carry passwords and the tokens are secrets.

use std::time::Duration;

use clap::{Args, Parser};
use tributary_common::config::{
    DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, DEFAULT_LISTEN, DEFAULT_NAMESPACE,
};
use tributary_common::limits::Limits;

use crate::auth::{Token, Tokens};

/// Settings of one coordinator process. `Debug` shows tokens as `***`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tributary-coordinator",
    version,
    about = "Tributary coordinator: API, dispatch and fan-in"
)]
pub struct Settings {
    /// Address the HTTP API listens on (port 0 picks a free port). Beyond
    /// loopback it needs TRIBUTARY_API_TOKEN.
    #[arg(long, env = "TRIBUTARY_LISTEN", default_value = DEFAULT_LISTEN, hide_env_values = true)]
    pub listen: String,
    /// Postgres URL; the database is created if missing.
    #[arg(long, env = "TRIBUTARY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// RabbitMQ URL.
    #[arg(long, env = "TRIBUTARY_AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true)]
    pub amqp_url: String,
    /// Prefix of every queue and exchange.
    #[arg(long, env = "TRIBUTARY_NAMESPACE", default_value = DEFAULT_NAMESPACE, hide_env_values = true)]
    pub namespace: String,
    /// Most report deliveries applied in one transaction.
    #[arg(
        long,
        env = "TRIBUTARY_MAX_BATCH",
        default_value_t = 500,
        hide_env_values = true
    )]
    pub max_batch: usize,
    /// Most tasks the relay publishes per transaction.
    #[arg(
        long,
        env = "TRIBUTARY_RELAY_BATCH",
        default_value_t = 1000,
        hide_env_values = true
    )]
    pub relay_batch: i64,
    /// Most tasks bundled into one message under load (1 disables bundling).
    #[arg(
        long,
        env = "TRIBUTARY_MAX_BUNDLE",
        default_value_t = 32,
        hide_env_values = true
    )]
    pub max_bundle: usize,
    /// How often to look for phases whose lease (heartbeats) ran out, in ms.
    #[arg(
        long,
        env = "TRIBUTARY_LEASE_SWEEP_MS",
        default_value_t = 1000,
        hide_env_values = true
    )]
    pub lease_sweep_ms: u64,
    /// How long the event log keeps events for SSE resumes, in seconds.
    #[arg(
        long,
        env = "TRIBUTARY_EVENTS_RETENTION_SECS",
        default_value_t = 86_400,
        hide_env_values = true
    )]
    pub events_retention_secs: u64,
    /// Postgres connections in the pool.
    #[arg(
        long,
        env = "TRIBUTARY_DB_MAX_CONNECTIONS",
        default_value_t = 8,
        hide_env_values = true
    )]
    pub db_max_connections: u32,
    /// Who may call the API.
    #[command(flatten)]
    pub tokens: TokenSettings,
    /// HTTP timeouts and the connection cap.
    #[command(flatten)]
    pub http: HttpSettings,
    /// Caps on what a submission or a worker may send.
    #[command(flatten)]
    pub limits: LimitSettings,
}

/// Bearer tokens (see [`crate::auth`]). Prefer the environment to flags:
/// flags show in the process list.
#[derive(Debug, Clone, Args)]
pub struct TokenSettings {
    /// Grants every route. Required to listen beyond loopback; without it
    /// (and without a read token) the API is open.
    #[arg(long, env = "TRIBUTARY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Token>,
    /// Grants GET and HEAD only (workers reading children results).
    /// Needs TRIBUTARY_API_TOKEN as well.
    #[arg(long, env = "TRIBUTARY_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<Token>,
    /// Protects /metrics (which the API token also opens); unset, /metrics
    /// is open.
    #[arg(long, env = "TRIBUTARY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Token>,
}

/// HTTP hygiene: how long a client may take, and how many connections are
/// served at once.
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Seconds a client has to send a request's headers, counted from when
    /// the connection is ready for a request; an idle keep-alive connection
    /// is closed after this long too.
    #[arg(
        long,
        env = "TRIBUTARY_HTTP_HEADER_TIMEOUT_SECS",
        default_value_t = 10,
        hide_env_values = true
    )]
    pub http_header_timeout_secs: u64,
    /// Seconds from a request's headers to its response: reading the body
    /// and running the handler (408 after that).
    #[arg(
        long,
        env = "TRIBUTARY_HTTP_REQUEST_TIMEOUT_SECS",
        default_value_t = 30,
        hide_env_values = true
    )]
    pub http_request_timeout_secs: u64,
    /// Seconds a connection may go without moving a byte either way (a
    /// client that stops reading a response) before it is closed.
    #[arg(
        long,
        env = "TRIBUTARY_HTTP_IDLE_TIMEOUT_SECS",
        default_value_t = 60,
        hide_env_values = true
    )]
    pub http_idle_timeout_secs: u64,
    /// Connections served at once; more wait in the listen backlog. Each
    /// open event stream holds one (keep the process's file limit above).
    #[arg(
        long,
        env = "TRIBUTARY_HTTP_MAX_CONNECTIONS",
        default_value_t = 4096,
        hide_env_values = true
    )]
    pub http_max_connections: usize,
}

/// The tunable caps of [`tributary_common::limits::Limits`].
#[derive(Debug, Clone, Args)]
pub struct LimitSettings {
    /// Largest job input, MessagePack bytes (at submit and per child).
    #[arg(long, env = "TRIBUTARY_MAX_INPUT_BYTES", default_value_t = Limits::default().max_input_bytes, hide_env_values = true)]
    pub max_input_bytes: usize,
    /// Largest output or checkpoint a phase may report, MessagePack bytes.
    #[arg(long, env = "TRIBUTARY_MAX_OUTPUT_BYTES", default_value_t = Limits::default().max_output_bytes, hide_env_values = true)]
    pub max_output_bytes: usize,
    /// Most children one job may spawn in one fan-out.
    #[arg(long, env = "TRIBUTARY_MAX_CHILDREN_PER_JOB", default_value_t = Limits::default().max_children_per_job, hide_env_values = true)]
    pub max_children_per_job: u64,
    /// Most jobs in one tree, root included.
    #[arg(long, env = "TRIBUTARY_MAX_JOBS_PER_TREE", default_value_t = Limits::default().max_jobs_per_tree, hide_env_values = true)]
    pub max_jobs_per_tree: u64,
}

impl Settings {
    /// The caps the API and the applier enforce.
    pub fn limits(&self) -> Limits {
        Limits {
            max_input_bytes: self.limits.max_input_bytes,
            max_output_bytes: self.limits.max_output_bytes,
            max_children_per_job: self.limits.max_children_per_job,
            max_jobs_per_tree: self.limits.max_jobs_per_tree,
        }
    }

    /// The tokens the API accepts.
    pub fn tokens(&self) -> Tokens {
        Tokens {
            api: self.tokens.api_token.clone(),
            read: self.tokens.read_token.clone(),
            metrics: self.tokens.metrics_token.clone(),
        }
    }

    /// The HTTP server's timeouts and cap.
    pub fn server(&self) -> crate::server::ServerConfig {
        crate::server::ServerConfig {
            header_timeout: Duration::from_secs(self.http.http_header_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(self.http.http_request_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.http.http_idle_timeout_secs.max(1)),
            max_connections: self.http.http_max_connections.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = Settings::try_parse_from(["tributary-coordinator"]).expect("defaults parse");
        assert_eq!(s.limits(), Limits::default());
        let server = s.server();
        assert_eq!(server.header_timeout, Duration::from_secs(10));
        assert_eq!(server.request_timeout, Duration::from_secs(30));
        assert_eq!(server.idle_timeout, Duration::from_secs(60));
        assert_eq!(server.max_connections, 4096);
    }

    #[test]
    fn tokens_are_redacted_in_debug() {
        let s = Settings::try_parse_from([
            "tributary-coordinator",
            "--api-token",
            "s3cret-api",
            "--read-token",
            "s3cret-read",
        ])
        .expect("parse");
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            s.tokens().api.as_ref().map(Token::expose),
            Some("s3cret-api")
        );
    }
}
