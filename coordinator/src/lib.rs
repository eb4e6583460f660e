//! The Tributary coordinator: owns Postgres, accepts submissions, publishes
//! runnable phases, applies workers' reports and fires fan-ins.
//!
//! ```text
//!   HTTP ──► api ──insert──► jobs (outbox) ──► dispatch (relay) ──► RabbitMQ tasks
//!                                  ▲
//!   RabbitMQ reports ──► outcome (batched applier: tokens, state machines, fan-in)
//! ```
//!
//! Any number of replicas may run against one database: the relay claims
//! rows with `FOR UPDATE SKIP LOCKED`, the applier locks the rows it moves.
//!
//! # Layout
//! - [`settings`]: configuration (environment variables, CLI overrides).
//! - [`api`]: the HTTP API.
//! - [`auth`]: bearer tokens, checked in a middleware layer.
//! - [`server`]: the HTTP server loop (connection cap, timeouts, drain).
//! - [`store`]: all SQL, split by who owns the transaction (connect and
//!   migrate, the applier's batch, the outbox, read-only views).
//! - [`dispatch`]: the relay that publishes committed dispatches.
//! - [`outcome`]: the batched outcome applier and fan-in.
//! - [`events`]: live events (SSE) over the durable event log.
//! - [`control`]: the sweeper that carries cancel, pause and resume down a
//!   subtree.
//! - [`lease`]: retries started phases whose lease (heartbeats) ran out.
//! - [`queues`]: a task queue's depth and consumers, asked of the broker.
//! - [`rate`]: a tree's completion rate over a sliding window, and its ETA.
//! - [`retention`]: prunes expired rows (idempotency keys) in batches.
//! - [`metrics`]: process counters on `/metrics`.

pub mod api;
pub mod auth;
pub mod control;
pub mod dispatch;
pub mod event_data;
pub mod events;
pub mod lease;
pub mod metrics;
pub mod outcome;
pub mod queues;
pub mod rate;
pub mod retention;
pub mod server;
pub mod settings;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tributary_common::topology::{InvalidNamespace, Topology};

use crate::dispatch::{Relay, RelayConfig};
use crate::metrics::Metrics;
use crate::outcome::{Applier, ApplierConfig};
pub use crate::settings::Settings;

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad namespace.
    #[error(transparent)]
    Namespace(#[from] InvalidNamespace),
    /// The database could not be reached or migrated.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Asked to listen beyond loopback with an open API.
    #[error(
        "refusing to serve an open API on {addr} (reachable from other machines): set TRIBUTARY_API_TOKEN (and give clients the same token), or listen on 127.0.0.1"
    )]
    Unprotected {
        /// The address.
        addr: String,
    },
    /// A configured token cannot be used (its value is never shown).
    #[error("{var} is unusable (its value is not shown): {reason}")]
    BadToken {
        /// The variable.
        var: &'static str,
        /// Why.
        reason: auth::InvalidToken,
    },
    /// Two roles share one token, so the narrower one would grant as much
    /// as the wider.
    #[error(
        "{narrow} equals TRIBUTARY_API_TOKEN, so it would grant everything: give it its own value (e.g. `openssl rand -hex 32`)"
    )]
    SharedToken {
        /// The narrower token's variable.
        narrow: &'static str,
    },
    /// A read token without an API token would lock every write out.
    #[error(
        "TRIBUTARY_READ_TOKEN is set but TRIBUTARY_API_TOKEN is not: set TRIBUTARY_API_TOKEN too (it is the one that may submit)"
    )]
    ReadTokenAlone,
}

/// Refuses configurations that would expose an open API: a listen address
/// that resolves to anything but loopback needs the API token.
async fn check_exposure(settings: &Settings) -> Result<(), StartError> {
    let tokens = settings.tokens();
    for (var, token) in [
        ("TRIBUTARY_API_TOKEN", &tokens.api),
        ("TRIBUTARY_READ_TOKEN", &tokens.read),
        ("TRIBUTARY_METRICS_TOKEN", &tokens.metrics),
    ] {
        if let Some(token) = token {
            token
                .check()
                .map_err(|reason| StartError::BadToken { var, reason })?;
        }
    }
    for (narrow, token) in [
        ("TRIBUTARY_READ_TOKEN", &tokens.read),
        ("TRIBUTARY_METRICS_TOKEN", &tokens.metrics),
    ] {
        if token.is_some() && *token == tokens.api {
            return Err(StartError::SharedToken { narrow });
        }
    }
    if tokens.read.is_some() && tokens.api.is_none() {
        return Err(StartError::ReadTokenAlone);
    }
    if tokens.api.is_some() {
        return Ok(());
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&settings.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: settings.listen.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(StartError::Unprotected {
            addr: settings.listen.clone(),
        });
    }
    Ok(())
}

/// A coordinator ready to run.
pub struct Application {
    listener: TcpListener,
    settings: Settings,
    topology: Topology,
    pool: sqlx::PgPool,
}

impl Application {
    /// Connects to Postgres (retrying until `cancel`), migrates, and binds
    /// the listener.
    pub async fn build(settings: Settings, cancel: &CancellationToken) -> Result<Self, StartError> {
        check_exposure(&settings).await?;
        let topology = Topology::new(&settings.namespace)?;
        let pool =
            store::connect(&settings.database_url, settings.db_max_connections, cancel).await?;
        let listener = TcpListener::bind(&settings.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: settings.listen.clone(),
                source,
            })?;
        Ok(Self {
            listener,
            settings,
            topology,
            pool,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the API and runs the relay and the applier until `cancel`
    /// fires; then lets the applier finish its batch and returns.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> std::io::Result<()> {
        let metrics = Arc::new(Metrics::default());
        let wake = Arc::new(Notify::new());
        let sweep_wake = Arc::new(Notify::new());
        let (stops_tx, stops_rx) = tokio::sync::mpsc::unbounded_channel();
        let applier = Applier::new(
            self.pool.clone(),
            ApplierConfig {
                max_batch: self.settings.max_batch,
                limits: self.settings.limits(),
                ..ApplierConfig::default()
            },
            metrics.clone(),
            wake.clone(),
        )
        .with_control(stops_tx, sweep_wake.clone());
        let relay = Relay::new(
            self.pool.clone(),
            self.topology.clone(),
            RelayConfig {
                batch: self.settings.relay_batch,
                max_bundle: self.settings.max_bundle,
                ..RelayConfig::default()
            },
            applier.clone(),
            metrics.clone(),
            wake.clone(),
        )
        .with_stops(stops_rx);
        let sweeper = control::Sweeper::new(self.pool.clone(), applier.clone(), sweep_wake);
        let sweeper_task = tokio::spawn(sweeper.run(cancel.clone()));
        let hub = events::Hub::new(self.pool.clone(), cancel.clone());
        let listen_task = tokio::spawn(hub.clone().listen());
        let prune_task = tokio::spawn(events::prune(
            self.pool.clone(),
            std::time::Duration::from_secs(self.settings.events_retention_secs),
            cancel.clone(),
        ));
        let reaper = lease::LeaseReaper::new(
            self.pool.clone(),
            applier.clone(),
            std::time::Duration::from_millis(self.settings.lease_sweep_ms),
        );
        let reaper_task = tokio::spawn(reaper.run(cancel.clone()));
        let retention = retention::Retention::new(self.pool.clone(), Default::default());
        let retention_task = tokio::spawn(retention.run(cancel.clone()));
        let relay_task = tokio::spawn(relay.run(self.settings.amqp_url.clone(), cancel.clone()));
        let applier_task = tokio::spawn(applier.clone().run(
            self.settings.amqp_url.clone(),
            self.topology.clone(),
            cancel.clone(),
        ));
        let server = self.settings.server();
        let app = api::router(api::ApiState {
            pool: self.pool.clone(),
            metrics,
            relay_wake: wake,
            limits: self.settings.limits(),
            tokens: Arc::new(self.settings.tokens()),
            request_timeout: server.request_timeout,
            applier: applier.clone(),
            hub,
            queues: Arc::new(queues::QueueProbe::new(
                self.settings.amqp_url.clone(),
                self.topology.clone(),
            )),
        });
        server::serve(self.listener, app, &server, cancel.clone()).await;
        let _ = relay_task.await;
        let _ = reaper_task.await;
        let _ = sweeper_task.await;
        let _ = listen_task.await;
        let _ = prune_task.await;
        let _ = retention_task.await;
        let _ = applier_task.await;
        self.pool.close().await;
        Ok(())
    }
}

/// How the API is protected, for the start-up log line (never the tokens).
fn settings_summary(settings: &Settings) -> &'static str {
    let tokens = settings.tokens();
    match (tokens.api_protected(), tokens.metrics.is_some()) {
        (true, true) => "bearer tokens; /metrics protected",
        (true, false) => "bearer tokens; /metrics open",
        (false, true) => "open API (loopback only); /metrics protected",
        (false, false) => "open API (loopback only)",
    }
}

/// Runs a coordinator process: builds the application, prints
/// `listening on ADDR` as the first line on stdout (scripts and the test
/// harness read it), and serves until SIGTERM or Ctrl-C, then drains.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    use anyhow::Context;
    let cancel = CancellationToken::new();
    tokio::spawn(tributary_common::shutdown::cancel_on_signal(cancel.clone()));
    let app = match Application::build(settings, &cancel).await {
        Ok(app) => app,
        Err(StartError::Store(store::StoreError::Cancelled)) => return Ok(()),
        Err(e) => return Err(e).context("coordinator failed to start"),
    };
    let addr = app.local_addr().context("reading the bound address")?;
    println!("listening on {addr}");
    let tokens = settings_summary(&app.settings);
    // Where to point a browser (the page asks for a token if the API has one).
    let ui = format!("http://{addr}{}/", api::ui::PREFIX);
    tracing::info!(%addr, auth = %tokens, %ui, "coordinator listening; dashboard at {ui}");
    app.run_until_stopped(cancel)
        .await
        .context("serving the API")?;
    tracing::info!("coordinator stopped");
    Ok(())
}
