//! `tributary-worker`: serves the built-in demo and bench kinds until SIGTERM.

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tributary_worker::settings::Settings;
use tributary_worker::{Worker, kinds};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let registry = kinds::builtin();
    if settings.list_kinds {
        for kind in registry.kinds() {
            println!("{kind}");
        }
        return Ok(());
    }
    tributary_common::telemetry::init("tributary-worker");
    let worker = Worker::new(registry, settings.worker())?;
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    worker.run(cancel).await;
    tracing::info!("worker stopped");
    Ok(())
}

async fn stop_on_signal(cancel: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    cancel.cancel();
}
