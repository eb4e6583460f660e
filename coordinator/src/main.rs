//! `tributary-coordinator`: parses settings, starts logging, runs until
//! SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tributary_coordinator::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    tributary_common::telemetry::init("tributary-coordinator");
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    let app = match Application::build(settings, &cancel).await {
        Ok(app) => app,
        Err(tributary_coordinator::StartError::Store(tributary_coordinator::store::StoreError::Cancelled)) => {
            return Ok(());
        }
        Err(e) => return Err(e).context("coordinator failed to start"),
    };
    let addr = app.local_addr().context("reading the bound address")?;
    // The first stdout line tells scripts and the test harness where we are.
    println!("listening on {addr}");
    tracing::info!(%addr, "coordinator listening");
    app.run_until_stopped(cancel).await.context("serving the API")?;
    tracing::info!("coordinator stopped");
    Ok(())
}

async fn stop_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
                cancel.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("stopping: finishing the current batch");
    cancel.cancel();
}
