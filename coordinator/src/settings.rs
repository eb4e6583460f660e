//! Coordinator configuration: environment variables, overridden by flags.

use clap::Parser;
use tributary_common::config::{
    DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, DEFAULT_LISTEN, DEFAULT_NAMESPACE,
};

/// Settings of one coordinator process.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tributary-coordinator",
    version,
    about = "Tributary coordinator: API, dispatch and fan-in"
)]
pub struct Settings {
    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "TRIBUTARY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Postgres URL; the database is created if missing.
    #[arg(long, env = "TRIBUTARY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// RabbitMQ URL.
    #[arg(long, env = "TRIBUTARY_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Prefix of every queue and exchange.
    #[arg(long, env = "TRIBUTARY_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Most report deliveries applied in one transaction.
    #[arg(long, env = "TRIBUTARY_MAX_BATCH", default_value_t = 500)]
    pub max_batch: usize,
    /// Most tasks the relay publishes per transaction.
    #[arg(long, env = "TRIBUTARY_RELAY_BATCH", default_value_t = 1000)]
    pub relay_batch: i64,
    /// Most tasks bundled into one message under load (1 disables bundling).
    #[arg(long, env = "TRIBUTARY_MAX_BUNDLE", default_value_t = 32)]
    pub max_bundle: usize,
    /// How often to look for phases whose lease (heartbeats) ran out, in ms.
    #[arg(long, env = "TRIBUTARY_LEASE_SWEEP_MS", default_value_t = 1000)]
    pub lease_sweep_ms: u64,
    /// Postgres connections in the pool.
    #[arg(long, env = "TRIBUTARY_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,
}
